//! The requests that write moved keys at the target, bounded in size: keys go in
//! `KELVIN.MIGRATE KEYS` batches of at most [`MOVE_BATCH_BYTES`], and a key whose DUMP
//! payload is bigger goes alone in `KELVIN.MIGRATE PART`s of that size, in order, so no
//! log entry nears the log's bound ([`crate::group::MAX_COMMAND_BYTES`]) nor a Raft
//! message the transport's frame limit, whatever the size of a value.
//!
//! The fault-in (`conn/faultin.rs`) and the driver's push and drain build their writes
//! here; each request's reply is an integer (keys written), and a key in parts counts
//! once, with its last part.

use bytes::Bytes;

/// Most payload bytes in one KEYS request, and in one PART.
pub const MOVE_BATCH_BYTES: usize = 16 << 20;

/// Bytes a key adds to a batch besides its payload (its name and the framing).
fn cost(key: &Bytes, payload: &Bytes) -> usize {
    key.len() + payload.len() + 32
}

/// The writes of `keys` (`(key, expire_at, payload)`; an empty payload: absent at the
/// source) of database `db` for `migration`, in order.
pub fn requests(
    migration: u64,
    db: usize,
    keys: impl IntoIterator<Item = (Bytes, u64, Bytes)>,
) -> Vec<Vec<Bytes>> {
    requests_sized(migration, db, keys, MOVE_BATCH_BYTES)
}

fn requests_sized(
    migration: u64,
    db: usize,
    keys: impl IntoIterator<Item = (Bytes, u64, Bytes)>,
    limit: usize,
) -> Vec<Vec<Bytes>> {
    let (m, d) = (
        Bytes::from(migration.to_string()),
        Bytes::from(db.to_string()),
    );
    let head = |op: &'static [u8]| {
        vec![
            Bytes::from_static(b"KELVIN.MIGRATE"),
            Bytes::from_static(op),
            m.clone(),
            d.clone(),
        ]
    };
    let mut out: Vec<Vec<Bytes>> = Vec::new();
    // Bytes in the KEYS batch being filled (the last request), if it is one.
    let mut filling: Option<usize> = None;
    for (key, expire_at, payload) in keys {
        if payload.len() > limit {
            filling = None;
            let total = Bytes::from(payload.len().to_string());
            let expire = Bytes::from(expire_at.to_string());
            for offset in (0..payload.len()).step_by(limit) {
                let end = (offset + limit).min(payload.len());
                let mut part = head(b"PART");
                part.extend([
                    key.clone(),
                    expire.clone(),
                    Bytes::from(offset.to_string()),
                    total.clone(),
                    payload.slice(offset..end),
                ]);
                out.push(part);
            }
            continue;
        }
        let bytes = cost(&key, &payload);
        match filling {
            Some(size) if size + bytes <= limit => filling = Some(size + bytes),
            _ => {
                out.push(head(b"KEYS"));
                filling = Some(bytes);
            }
        }
        if let Some(batch) = out.last_mut() {
            batch.extend([key, Bytes::from(expire_at.to_string()), payload]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, size: usize) -> (Bytes, u64, Bytes) {
        (
            Bytes::copy_from_slice(name.as_bytes()),
            7,
            Bytes::from(vec![b'v'; size]),
        )
    }

    #[test]
    fn batches_stay_under_the_limit_and_big_payloads_go_in_parts() {
        let keys = vec![
            key("a", 10),
            key("b", 10),
            key("c", 60),
            key("big", 250),
            key("d", 0),
        ];
        let reqs = requests_sized(9, 2, keys, 100);
        let ops: Vec<&[u8]> = reqs.iter().map(|r| &r[1][..]).collect();
        assert_eq!(
            ops,
            [&b"KEYS"[..], b"KEYS", b"PART", b"PART", b"PART", b"KEYS"]
        );
        // a and b together (84 bytes with framing), c alone (a third would pass 100).
        assert_eq!(reqs[0].len(), 4 + 6);
        assert_eq!(reqs[1].len(), 4 + 3);
        assert_eq!(&reqs[1][4][..], b"c");
        // Parts: key, expire_at, offset, total, chunk; the chunks make the payload.
        let mut whole = Vec::new();
        for (i, part) in reqs[2..5].iter().enumerate() {
            assert_eq!(&part[2][..], b"9");
            assert_eq!(&part[3][..], b"2");
            assert_eq!(&part[4][..], b"big");
            assert_eq!(&part[5][..], b"7");
            assert_eq!(part[6], Bytes::from((i * 100).to_string()));
            assert_eq!(&part[7][..], b"250");
            whole.extend_from_slice(&part[8]);
        }
        assert_eq!(whole, vec![b'v'; 250]);
        // An absent key (empty payload) still travels, in a batch after the parts.
        assert_eq!(&reqs[5][4][..], b"d");
        assert!(requests(1, 0, Vec::new()).is_empty());
    }
}
