//! Commands over several groups on the main port: how they are cut into parts
//! (split by key, broadcast to every group) and how the parts' replies merge into one.

use bytes::Bytes;
use kelvin_protocol::{ReplyWriter, RespVersion};

use crate::cmd::{self, CommandSpec};
use crate::node::Node;

use super::route::*;
use super::*;

/// How the replies of a multi-key command split across groups become one.
pub enum Merge {
    /// MGET, split into one single-key MGET per key: an array of their elements.
    Elements(usize),
    /// DEL, UNLINK, EXISTS, TOUCH, split by group: the sum of their integers.
    Sum,
    /// MSET, split by group (and FLUSHDB/FLUSHALL, run on each): OK if every part said OK.
    Ok,
    /// KEYS on every group: one array of all their elements.
    Concat,
    /// RANDOMKEY on every group: the first key one of them found.
    FirstKey,
    /// SCAN on the group owning the run of slots `start..end`: its keys in that run, and
    /// its cursor, unless it finished the run or went past it: then the cursor is the
    /// run's end, where the next owner takes over (0 at the last slot). A group's store
    /// may hold keys of slots it does not own (a source not yet drained), and may own
    /// other runs further on: those are its own SCAN's to return, not this one's.
    Scan { start: usize, end: usize },
}

impl Merge {
    /// Writes the merged reply of `parts` (the parts' replies, in order) to `out`; the
    /// first error among them, if any, is the reply.
    pub(super) fn write(&self, parts: &[u8], out: &mut ReplyWriter) {
        let replies = split_replies(parts, out.version);
        if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
            out.buf.extend_from_slice(err);
            return;
        }
        match self {
            Merge::Elements(n) => {
                out.array(*n);
                for r in &replies {
                    // Each is `*1\r\n<element>`.
                    out.buf.extend_from_slice(r.get(4..).unwrap_or_default());
                }
            }
            Merge::Sum => {
                let sum: i64 = replies
                    .iter()
                    .filter_map(|r| std::str::from_utf8(r.get(1..r.len().saturating_sub(2))?).ok())
                    .filter_map(|n| n.parse::<i64>().ok())
                    .sum();
                out.int(sum);
            }
            Merge::Ok => out.ok(),
            Merge::Concat => {
                let elements: Vec<&[u8]> = replies
                    .iter()
                    .filter_map(|r| array_elements(r, out.version))
                    .flatten()
                    .collect();
                out.array(elements.len());
                for e in elements {
                    out.buf.extend_from_slice(e);
                }
            }
            Merge::FirstKey => match replies
                .iter()
                .find(|r| r.first() == Some(&b'$') && !r.starts_with(b"$-1"))
            {
                Some(r) => out.buf.extend_from_slice(r),
                None => out.null(),
            },
            Merge::Scan { start, end } => {
                let Some(reply) = replies.first() else {
                    out.error("ERR SCAN got no reply");
                    return;
                };
                let parsed = array_elements(reply, out.version)
                    .and_then(|e| <[&[u8]; 2]>::try_from(e).ok())
                    .and_then(|[cursor, keys]| {
                        let cursor: u64 =
                            std::str::from_utf8(bulk_body(cursor)?).ok()?.parse().ok()?;
                        Some((cursor, array_elements(keys, out.version)?))
                    });
                let Some((cursor, keys)) = parsed else {
                    out.buf.extend_from_slice(reply);
                    return;
                };
                let bits = crate::store::CURSOR_HASH_BITS;
                let cursor = match cursor {
                    c if c != 0 && ((c >> bits) as usize) < *end => c,
                    _ if *end >= kelvin_protocol::SLOT_COUNT => 0,
                    _ => (*end as u64) << bits,
                };
                let keys: Vec<&[u8]> = keys
                    .into_iter()
                    .filter(|k| {
                        bulk_body(k).is_some_and(|k| {
                            (*start..*end).contains(&(kelvin_protocol::key_slot(k) as usize))
                        })
                    })
                    .collect();
                out.array(2);
                out.bulk(cursor.to_string().as_bytes());
                out.array(keys.len());
                for k in keys {
                    out.buf.extend_from_slice(k);
                }
            }
        }
    }
}

/// The elements of an array reply (each as its bytes), or `None` if it is not one.
pub(super) fn array_elements(reply: &[u8], version: RespVersion) -> Option<Vec<&[u8]>> {
    let rest = reply.strip_prefix(b"*")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let body = rest.get(end + 2..)?;
    let elements = split_replies(body, version);
    (elements.len() == n).then_some(elements)
}

/// The payload of a bulk string reply (`$3\r\nabc\r\n` -> `abc`).
pub(super) fn bulk_body(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    rest.get(end + 2..end + 2 + n)
}

/// The complete replies in `buf`, each as its bytes.
pub(super) fn split_replies(mut buf: &[u8], version: RespVersion) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(used) = reply_len(buf, version) {
        out.push(&buf[..used]);
        buf = &buf[used..];
    }
    out
}

/// The length of the complete reply at the start of `buf`, if there is one.
pub(super) fn reply_len(buf: &[u8], version: RespVersion) -> Option<usize> {
    let used = match version {
        RespVersion::Resp2 => kelvin_protocol::frames::resp2::decode::decode(buf)
            .ok()
            .flatten()
            .map(|(_, u)| u),
        RespVersion::Resp3 => kelvin_protocol::frames::resp3::decode::complete::decode(buf)
            .ok()
            .flatten()
            .map(|(_, u)| u),
    };
    used.filter(|&u| u > 0)
}

/// Complete replies at the start of `buf`.
pub(super) fn count_replies(buf: &[u8], version: RespVersion) -> usize {
    split_replies(buf, version).len()
}

/// A plain client's MGET, DEL, UNLINK, EXISTS or TOUCH over keys in several groups, cut
/// into parts each group can run (not atomically, as Redis Cluster proxies do; Redis
/// gives them no more than per-key atomicity towards a reader): MGET one key at a time,
/// the others one command per group. `None` for anything else (and on
/// the redirect port or inside MULTI, where it is CROSSSLOT).
pub(super) fn split(
    node: &Node,
    client: &ClientState,
    argv: &[Bytes],
) -> Option<(Vec<Vec<Bytes>>, Merge)> {
    if client.redirect || client.multi.is_some() {
        return None;
    }
    let groups = node.groups()?;
    let group_of = |k: &[u8]| groups.for_slot(kelvin_protocol::key_slot(k) as usize).0;
    let name = cmd::lookup(&argv[0])?.name;
    let by_group = |step: usize| {
        let mut parts: Vec<(u64, Vec<Bytes>)> = Vec::new();
        for chunk in argv[1..].chunks(step) {
            let g = group_of(&chunk[0]);
            match parts.iter_mut().find(|(pg, _)| *pg == g) {
                Some((_, part)) => part.extend(chunk.iter().cloned()),
                None => {
                    let mut part = vec![argv[0].clone()];
                    part.extend(chunk.iter().cloned());
                    parts.push((g, part));
                }
            }
        }
        parts.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    match name {
        "mget" => Some((
            argv[1..]
                .iter()
                .map(|k| vec![argv[0].clone(), k.clone()])
                .collect(),
            Merge::Elements(argv.len() - 1),
        )),
        "del" | "unlink" | "exists" | "touch" => Some((by_group(1), Merge::Sum)),
        // (MSET, like every other command over several groups, runs atomically as a
        // transaction across them: `super::crosstx`.)
        _ => None,
    }
}

/// On the main port with several groups, a keyless command over the whole keyspace runs
/// on every group, and the replies merge as a proxy would: DBSIZE sums, KEYS
/// concatenates, RANDOMKEY takes the first key found, FLUSHDB/FLUSHALL answer OK once all
/// did, SWAPDB too (one group after the other, not atomically), SCRIPT LOAD/FLUSH load
/// or drop a script in every group's cache. SCAN walks the runs of
/// slots in slot order: its cursor names a slot, the group owning the run of slots from
/// there scans it, and when it is done the cursor is the next run's first slot
/// ([`Merge::Scan`]), so every key is seen once, whatever the groups' slot ranges.
pub(super) fn broadcast(
    node: &Node,
    client: &ClientState,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Option<(Vec<Vec<Bytes>>, Merge)> {
    if client.redirect || client.multi.is_some() {
        return None;
    }
    let groups = node.groups()?;
    if groups.only.is_some() {
        return None;
    }
    // Every group, by its lowest slot.
    let mut order: Vec<u64> = Vec::new();
    for &g in &groups.slot_group {
        if !order.contains(&g) {
            order.push(g);
        }
    }
    let each = |merge| {
        let parts = order.iter().map(|&g| pin(g, argv.to_vec())).collect();
        Some((parts, merge))
    };
    match spec.name {
        "dbsize" => each(Merge::Sum),
        "keys" => each(Merge::Concat),
        "randomkey" => each(Merge::FirstKey),
        // Not atomic across groups (Redis Cluster has no SWAPDB at all).
        "flushdb" | "flushall" | "swapdb" => each(Merge::Ok),
        // Every group keeps its own script cache (scripts run where their keys are).
        "script" if argv.get(1).is_some_and(|a| cmd::is(a, "load")) => each(Merge::FirstKey),
        "script" if argv.get(1).is_some_and(|a| cmd::is(a, "flush")) => each(Merge::Ok),
        "function" if argv.get(1).is_some_and(|a| cmd::is(a, "load")) => each(Merge::FirstKey),
        "function"
            if argv
                .get(1)
                .is_some_and(|a| ["flush", "delete", "restore"].iter().any(|s| cmd::is(a, s))) =>
        {
            each(Merge::Ok)
        }
        "scan" => {
            let cursor = std::str::from_utf8(argv.get(1)?)
                .ok()?
                .parse::<u64>()
                .ok()?;
            let start = (cursor >> crate::store::CURSOR_HASH_BITS) as usize;
            let g = *groups.slot_group.get(start)?;
            let end = (start..kelvin_protocol::SLOT_COUNT)
                .find(|&s| groups.slot_group[s] != g)
                .unwrap_or(kelvin_protocol::SLOT_COUNT);
            Some((vec![pin(g, argv.to_vec())], Merge::Scan { start, end }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(merge: Merge, version: RespVersion, parts: &[u8]) -> Vec<u8> {
        let mut out = ReplyWriter::new(version);
        merge.write(parts, &mut out);
        out.buf.to_vec()
    }

    #[test]
    fn split_command_replies_merge_into_one() {
        let v2 = RespVersion::Resp2;
        assert_eq!(
            merged(
                Merge::Elements(3),
                v2,
                b"*1\r\n$1\r\na\r\n*1\r\n$-1\r\n*1\r\n$2\r\nbc\r\n"
            ),
            b"*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n"
        );
        assert_eq!(
            merged(
                Merge::Elements(2),
                RespVersion::Resp3,
                b"*1\r\n_\r\n*1\r\n$1\r\nx\r\n"
            ),
            b"*2\r\n_\r\n$1\r\nx\r\n"
        );
        assert_eq!(merged(Merge::Sum, v2, b":2\r\n:0\r\n:5\r\n"), b":7\r\n");
        assert_eq!(merged(Merge::Ok, v2, b"+OK\r\n+OK\r\n"), b"+OK\r\n");
        // The first error among the parts is the reply.
        assert_eq!(
            merged(Merge::Sum, v2, b":1\r\n-ERR boom\r\n-ERR two\r\n"),
            b"-ERR boom\r\n"
        );
        assert_eq!(
            count_replies(b":1\r\n$3\r\nabc\r\n*2\r\n:1\r\n:2\r\n$5\r\nab", v2),
            3
        );
    }

    #[test]
    fn keyless_replies_of_every_group_merge_into_one() {
        let v2 = RespVersion::Resp2;
        let v3 = RespVersion::Resp3;
        assert_eq!(
            merged(
                Merge::Concat,
                v2,
                b"*1\r\n$1\r\na\r\n*0\r\n*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
            ),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(
            merged(Merge::FirstKey, v2, b"$-1\r\n$1\r\nk\r\n$1\r\nj\r\n"),
            b"$1\r\nk\r\n"
        );
        assert_eq!(merged(Merge::FirstKey, v3, b"_\r\n_\r\n"), b"_\r\n");
        // SCAN: a group that is done with its run hands over at the run's end...
        let ks = kelvin_protocol::key_slot(b"k") as usize;
        let done = b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n";
        let end = ks + 1;
        let cursor = ((end as u64) << crate::store::CURSOR_HASH_BITS).to_string();
        let handed = format!("*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n", cursor.len());
        assert_eq!(
            merged(Merge::Scan { start: 0, end }, v2, done),
            handed.as_bytes()
        );
        // ...the last run ends the iteration, and a cursor inside the run is kept.
        let last = Merge::Scan {
            start: 0,
            end: kelvin_protocol::SLOT_COUNT,
        };
        assert_eq!(merged(last, v2, done), done);
        let mid = b"*2\r\n$2\r\n17\r\n*0\r\n";
        assert_eq!(merged(Merge::Scan { start: 0, end: 1 }, v2, mid), mid);
        // A group that went on past its run (its 1024-slot stop fell in the next
        // group's range: found with 3 groups) gives back the run's end, and keys of
        // slots outside the run (another run of its own, or not yet drained) are left
        // for the SCAN that covers them.
        let beyond = (((ks + 3) as u64) << crate::store::CURSOR_HASH_BITS).to_string();
        let past = format!("*2\r\n${}\r\n{beyond}\r\n*1\r\n$1\r\nk\r\n", beyond.len());
        let cut = ((ks as u64) << crate::store::CURSOR_HASH_BITS).to_string();
        let expect = format!("*2\r\n${}\r\n{cut}\r\n*0\r\n", cut.len());
        let merge = Merge::Scan { start: 0, end: ks };
        if ks > 0 {
            assert_eq!(merged(merge, v2, past.as_bytes()), expect.as_bytes());
        }
    }
}
