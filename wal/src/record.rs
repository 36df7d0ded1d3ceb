//! WAL record framing: `[len u32 LE][crc32 u32 LE of type+payload][type u8][payload]`.

use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};

use crate::WalError;

pub(crate) const HEADER_LEN: usize = 9;

pub(crate) const ENTRIES: u8 = 1;
pub(crate) const HARD_STATE: u8 = 2;
pub(crate) const CONF_STATE: u8 = 3;
pub(crate) const SNAPSHOT: u8 = 4;
pub(crate) const COMPACT: u8 = 5;

/// `Snapshot` record kinds.
pub(crate) const SNAP_CREATED: u8 = 0;
pub(crate) const SNAP_APPLIED: u8 = 1;

pub(crate) fn le_u32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn le_u64(data: &[u8], off: usize) -> Option<u64> {
    let b = data.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Appends one framed record to `buf`; `body` writes the payload.
fn put(
    buf: &mut Vec<u8>,
    ty: u8,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), WalError>,
) -> Result<(), WalError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(ty);
    body(buf)?;
    let len = u32::try_from(buf.len() - start - HEADER_LEN)
        .map_err(|_| WalError::Invalid("record larger than 4 GiB".into()))?;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends `msg` prefixed by its length as u32 LE.
fn put_msg(buf: &mut Vec<u8>, msg: &impl Message) -> Result<(), WalError> {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    msg.write_to_vec(buf)?;
    let n = u32::try_from(buf.len() - at - 4)
        .map_err(|_| WalError::Invalid("message larger than 4 GiB".into()))?;
    buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

pub(crate) fn put_entries(buf: &mut Vec<u8>, ents: &[Entry]) -> Result<(), WalError> {
    put(buf, ENTRIES, |b| {
        ents.iter().try_for_each(|e| put_msg(b, e))
    })
}

pub(crate) fn put_hard_state(buf: &mut Vec<u8>, hs: &HardState) -> Result<(), WalError> {
    put(buf, HARD_STATE, |b| Ok(hs.write_to_vec(b)?))
}

pub(crate) fn put_conf_state(buf: &mut Vec<u8>, cs: &ConfState) -> Result<(), WalError> {
    put(buf, CONF_STATE, |b| Ok(cs.write_to_vec(b)?))
}

pub(crate) fn put_snapshot(
    buf: &mut Vec<u8>,
    kind: u8,
    meta: &SnapshotMetadata,
    name: &str,
) -> Result<(), WalError> {
    put(buf, SNAPSHOT, |b| {
        b.push(kind);
        put_msg(b, meta)?;
        b.extend_from_slice(name.as_bytes());
        Ok(())
    })
}

pub(crate) fn put_compact(buf: &mut Vec<u8>, index: u64, term: u64) -> Result<(), WalError> {
    put(buf, COMPACT, |b| {
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&term.to_le_bytes());
        Ok(())
    })
}

/// A decoded record payload.
pub(crate) enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    ConfState(ConfState),
    Snapshot {
        kind: u8,
        meta: SnapshotMetadata,
        name: String,
    },
    Compact {
        index: u64,
        term: u64,
    },
}

/// Result of reading the record at some offset.
pub(crate) enum Scan<'a> {
    End,
    Record {
        ty: u8,
        payload: &'a [u8],
        end: usize,
    },
    /// Damaged framing. `torn` says whether it looks like an interrupted final write.
    Bad {
        reason: String,
        torn: bool,
    },
}

pub(crate) fn scan(data: &[u8], off: usize) -> Scan<'_> {
    let rest = &data[off.min(data.len())..];
    // The end of the file, or of the records in a preallocated segment: only zeros
    // follow (no record is all zeros: a record's type is never 0).
    if rest.iter().all(|&b| b == 0) {
        return Scan::End;
    }
    let (Some(len), Some(crc), Some(&ty)) = (le_u32(rest, 0), le_u32(rest, 4), rest.get(8)) else {
        return Scan::Bad {
            reason: format!("record header cut short ({} bytes left)", rest.len()),
            torn: true,
        };
    };
    let end = HEADER_LEN.saturating_add(len as usize);
    if end > rest.len() {
        // An interrupted final write leaves nothing valid behind it; a damaged length
        // in the middle of the file has intact records after it, which must not be cut.
        return Scan::Bad {
            reason: format!(
                "record of {len} bytes extends past end of file ({} bytes left)",
                rest.len()
            ),
            torn: !intact_record_after(rest, 1),
        };
    }
    let actual = crc32fast::hash(&rest[8..end]);
    if actual != crc {
        return Scan::Bad {
            reason: format!("CRC mismatch (stored {crc:#010x}, computed {actual:#010x})"),
            // A final write cut short in a preallocated segment leaves zeros after it.
            torn: rest[end..].iter().all(|&b| b == 0),
        };
    }
    Scan::Record {
        ty,
        payload: &rest[HEADER_LEN..end],
        end: off + end,
    }
}

/// Is there a record with a valid CRC at any offset from `from` on? Used only on the
/// rare damaged record found at open, to tell a torn tail from corruption.
fn intact_record_after(rest: &[u8], from: usize) -> bool {
    (from..rest.len()).any(|p| {
        let r = &rest[p..];
        let (Some(len), Some(crc), Some(&ty)) = (le_u32(r, 0), le_u32(r, 4), r.get(8)) else {
            return false;
        };
        let end = HEADER_LEN.saturating_add(len as usize);
        (ENTRIES..=COMPACT).contains(&ty) && end <= r.len() && crc32fast::hash(&r[8..end]) == crc
    })
}

fn parse_msg<M: Message>(data: &[u8], what: &str) -> Result<M, String> {
    M::parse_from_bytes(data).map_err(|e| format!("bad {what}: {e}"))
}

/// Decodes a CRC-checked payload; errors are reasons for [`WalError::Corrupt`].
pub(crate) fn decode(ty: u8, p: &[u8]) -> Result<Record, String> {
    Ok(match ty {
        ENTRIES => {
            let mut ents = Vec::new();
            let mut off = 0;
            while off < p.len() {
                let n = le_u32(p, off).ok_or("entry length cut short")? as usize;
                let body = p
                    .get(off + 4..off + 4 + n)
                    .ok_or("entry extends past record")?;
                ents.push(parse_msg::<Entry>(body, "entry")?);
                off += 4 + n;
            }
            if ents.is_empty() {
                return Err("empty entries record".into());
            }
            if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
                return Err("entries record is not contiguous".into());
            }
            Record::Entries(ents)
        }
        HARD_STATE => Record::HardState(parse_msg(p, "hard state")?),
        CONF_STATE => Record::ConfState(parse_msg(p, "conf state")?),
        SNAPSHOT => {
            let kind = *p.first().ok_or("empty snapshot record")?;
            if kind != SNAP_CREATED && kind != SNAP_APPLIED {
                return Err(format!("unknown snapshot record kind {kind}"));
            }
            let n = le_u32(p, 1).ok_or("snapshot metadata length cut short")? as usize;
            let meta = p
                .get(5..5 + n)
                .ok_or("snapshot metadata extends past record")?;
            let name = std::str::from_utf8(&p[5 + n..])
                .map_err(|_| "snapshot file name is not utf8")?
                .to_owned();
            Record::Snapshot {
                kind,
                meta: parse_msg(meta, "snapshot metadata")?,
                name,
            }
        }
        COMPACT => match (le_u64(p, 0), le_u64(p, 8), p.len()) {
            (Some(index), Some(term), 16) => Record::Compact { index, term },
            _ => return Err("compact record must be 16 bytes".into()),
        },
        _ => return Err(format!("unknown record type {ty}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        let hs = HardState {
            term: 7,
            ..Default::default()
        };
        put_hard_state(&mut buf, &hs).unwrap();
        let e = Entry {
            index: 3,
            data: b"xyz".to_vec().into(),
            ..Default::default()
        };
        put_entries(&mut buf, &[e]).unwrap();
        put_compact(&mut buf, 2, 1).unwrap();
        buf
    }

    fn records(buf: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        let mut off = 0;
        while let Scan::Record { ty, end, payload } = scan(buf, off) {
            assert!(decode(ty, payload).is_ok());
            out.push((ty, off));
            off = end;
        }
        out
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let recs = records(&buf);
        assert_eq!(
            recs.iter().map(|r| r.0).collect::<Vec<_>>(),
            [HARD_STATE, ENTRIES, COMPACT]
        );
        let Scan::Record { ty, payload, .. } = scan(&buf, recs[1].1) else {
            panic!()
        };
        let Ok(Record::Entries(ents)) = decode(ty, payload) else {
            panic!()
        };
        assert_eq!((ents[0].index, &ents[0].data[..]), (3, &b"xyz"[..]));
    }

    #[test]
    fn torn_versus_corrupt() {
        let buf = sample();
        let last = records(&buf)[2].1;
        for cut in last + 1..buf.len() {
            assert!(
                matches!(scan(&buf[..cut], last), Scan::Bad { torn: true, .. }),
                "{cut}"
            );
        }
        // A damaged length in the middle (records intact after it) is corruption, not a
        // torn tail, even though the record now seems to run past the end of the file.
        let mut long = buf.clone();
        let mid = records(&buf)[1].1;
        long[mid + 3] = 0x7f;
        assert!(matches!(scan(&long, mid), Scan::Bad { torn: false, .. }));
        // Bad CRC on the final record: torn. The same record followed by data: corrupt.
        let mut flipped = buf.clone();
        flipped[last + HEADER_LEN] ^= 1;
        assert!(matches!(scan(&flipped, last), Scan::Bad { torn: true, .. }));
        let mut middle = buf.clone();
        middle[HEADER_LEN] ^= 1;
        assert!(matches!(scan(&middle, 0), Scan::Bad { torn: false, .. }));
        // Zeros to the end of the file: the unused tail of a preallocated segment.
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 64]);
        assert!(matches!(scan(&zeros, buf.len()), Scan::End));
        // The final record cut short (or with a bad CRC) and zeros after it: a torn write
        // into a preallocated segment.
        // (A cut that only loses zero bytes leaves the record whole.)
        for cut in (last + 1..buf.len()).filter(|&c| buf[c..].iter().any(|&b| b != 0)) {
            let mut torn = buf[..cut].to_vec();
            torn.resize(buf.len() + 64, 0);
            assert!(
                matches!(scan(&torn, last), Scan::Bad { torn: true, .. }),
                "{cut}"
            );
        }
        let mut flipped_then_zeros = flipped.clone();
        flipped_then_zeros.extend_from_slice(&[0; 64]);
        assert!(matches!(
            scan(&flipped_then_zeros, last),
            Scan::Bad { torn: true, .. }
        ));
        // A zeroed block in the middle with records after it: corrupt.
        let mut hole = buf.clone();
        hole[mid..last].fill(0);
        assert!(matches!(scan(&hole, mid), Scan::Bad { torn: false, .. }));
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        for ty in [ENTRIES, HARD_STATE, CONF_STATE, SNAPSHOT, COMPACT, 99] {
            for p in [
                &b""[..],
                &[0xff; 3][..],
                &[5, 0, 0, 0, 1][..],
                &[1, 200, 0, 0, 0][..],
            ] {
                let _ = decode(ty, p);
            }
        }
        assert!(decode(ENTRIES, &[]).is_err());
        assert!(decode(COMPACT, &[0; 15]).is_err());
    }
}
