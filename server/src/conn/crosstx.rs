//! EXEC of a transaction whose keys live in several groups, on the main port: which of
//! its commands go to which group and where each reply goes in EXEC's array ([`plan`]),
//! then the two-phase commit of [`crate::txn::coord`] and the reply put together in the
//! client's order ([`run`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use kelvin_protocol::log::{LogCommand, TxItem};
use kelvin_protocol::ReplyWriter;

use super::merge::split_replies;
use super::route::command_group;
use super::*;
use crate::txn::coord::{Ended, Part};

/// A transaction across groups, planned.
#[derive(Debug)]
pub struct CrossTx {
    parts: BTreeMap<u64, Part>,
    order: Vec<Slot>,
    /// One command outside MULTI (its keys in several groups): its reply is the
    /// command's, not an array.
    single: bool,
}

/// Where one element of EXEC's reply comes from.
#[derive(Debug)]
enum Slot {
    /// A connection command's reply, rendered at EXEC.
    Literal(Bytes),
    /// Reply `index` of group `group`'s commands.
    Item { group: u64, index: usize },
}

/// Why a transaction is answered without running.
#[derive(Debug, PartialEq)]
pub enum NotRun {
    /// Watched in a group whose log no longer holds the keys (their slot moved): nil.
    Nil,
    /// This error answers EXEC.
    Error(&'static str),
}

/// Plans one command whose keys are in several groups (RENAME, MSETNX, SMOVE, EVAL...)
/// as a transaction of its own, answered with the command's reply.
pub(super) fn plan_command(
    node: &Node,
    db: usize,
    argv: Vec<Bytes>,
    current: u64,
) -> Result<CrossTx, NotRun> {
    let tx = LogCommand::Transaction {
        watch_since: 0,
        watch: Vec::new(),
        items: vec![TxItem::Data { db: db as u8, argv }],
    };
    let mut plan = plan(node, &tx, &Watch::default(), current)?;
    plan.single = true;
    Ok(plan)
}

/// Plans `tx` (a `LogCommand::Transaction`) over the groups of its keys. When every
/// command's keys are in one group, each group gets its own commands (a keyless data
/// command the lowest group's); when a command's keys span groups, the transaction is
/// replicated: every participant gets every command and the keys it holds
/// ([`crate::txn::replicated`]; a keyless data command is refused then). Each group
/// holding a watched key is a participant that checks its own watched keys against its
/// own index (`watch`, not the entry's), even with no command of its own; a key watched
/// in another group than its own now (its slot moved) answers nil.
pub(super) fn plan(
    node: &Node,
    tx: &LogCommand,
    watch: &Watch,
    current: u64,
) -> Result<CrossTx, NotRun> {
    let LogCommand::Transaction { items, .. } = tx else {
        return Err(NotRun::Error("ERR not a transaction"));
    };
    let groups = node.groups().ok_or(NotRun::Error(CLUSTER_DOWN))?;
    let group_of = |key: &[u8]| groups.for_slot(kelvin_protocol::key_slot(key) as usize).0;
    let mut parts: BTreeMap<u64, Part> = BTreeMap::new();
    for key in &watch.keys {
        let g = group_of(&key.key);
        if key.group.is_some_and(|w| w != g) {
            return Err(NotRun::Nil);
        }
        let part = parts.entry(g).or_default();
        // One group's keys watched at different times: the earliest index.
        part.watch_since = match part.watch.is_empty() {
            true => key.since,
            false => part.watch_since.min(key.since),
        };
        part.watch.push((key.db, key.key.clone()));
    }
    // Replicated when some command's own keys span groups.
    let spans = items.iter().any(|item| match item {
        TxItem::Data { argv, .. } => {
            argv.first()
                .and_then(|n| cmd::lookup(n))
                .is_some_and(|spec| {
                    !spec.keys_in(argv).is_empty()
                        && command_group(node, spec, argv, current).is_none()
                })
        }
        TxItem::Literal(_) => false,
    });
    if spans {
        return replicated(node, items, parts, current);
    }
    let mut order = Vec::with_capacity(items.len());
    let mut keyless = Vec::new();
    for item in items {
        match item {
            TxItem::Literal(reply) => order.push(Slot::Literal(reply.clone())),
            TxItem::Data { db, argv } => {
                let spec = argv
                    .first()
                    .and_then(|n| cmd::lookup(n))
                    .ok_or(NotRun::Error("ERR unknown command in transaction"))?;
                if spec.keys_in(argv).is_empty() {
                    keyless.push(order.len());
                    order.push(Slot::Item {
                        group: u64::MAX,
                        index: 0,
                    });
                    parts
                        .entry(u64::MAX)
                        .or_default()
                        .items
                        .push((*db, argv.clone()));
                    continue;
                }
                let g = command_group(node, spec, argv, current)
                    .ok_or(NotRun::Error(CROSSSLOT_GROUPS))?;
                let part = parts.entry(g).or_default();
                order.push(Slot::Item {
                    group: g,
                    index: part.items.len(),
                });
                part.items.push((*db, argv.clone()));
            }
        }
    }
    // Keyless commands run in the lowest group with keys, after its own commands.
    if let Some(loose) = parts.remove(&u64::MAX) {
        let lowest = *parts.keys().next().unwrap_or(&current);
        let part = parts.entry(lowest).or_default();
        let base = part.items.len();
        for (i, &at) in keyless.iter().enumerate() {
            order[at] = Slot::Item {
                group: lowest,
                index: base + i,
            };
        }
        part.items.extend(loose.items);
    }
    Ok(CrossTx {
        parts,
        order,
        single: false,
    })
}

/// [`plan`] of a transaction with a command whose keys span groups: every participant
/// (each group holding a key or a watched key) runs every command; the replies are taken
/// from the lowest one.
fn replicated(
    node: &Node,
    items: &[TxItem],
    mut parts: BTreeMap<u64, Part>,
    current: u64,
) -> Result<CrossTx, NotRun> {
    let groups = node.groups().ok_or(NotRun::Error(CLUSTER_DOWN))?;
    let mut data = Vec::new();
    let mut own: BTreeMap<u64, Vec<(u8, Bytes)>> = BTreeMap::new();
    for item in items {
        let TxItem::Data { db, argv } = item else {
            continue;
        };
        let spec = argv
            .first()
            .and_then(|n| cmd::lookup(n))
            .ok_or(NotRun::Error("ERR unknown command in transaction"))?;
        let keys = spec.keys_in(argv);
        if keys.is_empty() {
            return Err(NotRun::Error(KEYLESS_REPLICATED));
        }
        for p in keys {
            let g = groups
                .for_slot(kelvin_protocol::key_slot(&argv[p]) as usize)
                .0;
            let mine = own.entry(g).or_default();
            if !mine.iter().any(|(d, k)| d == db && *k == argv[p]) {
                mine.push((*db, argv[p].clone()));
            }
        }
        data.push((*db, argv.clone()));
    }
    for g in own.keys() {
        parts.entry(*g).or_default();
    }
    let record = *parts.keys().next().unwrap_or(&current);
    for (g, part) in parts.iter_mut() {
        part.items = data.clone();
        part.own = Some(own.remove(g).unwrap_or_default());
    }
    let mut index = 0;
    let order = items
        .iter()
        .map(|item| match item {
            TxItem::Literal(reply) => Slot::Literal(reply.clone()),
            TxItem::Data { .. } => {
                index += 1;
                Slot::Item {
                    group: record,
                    index: index - 1,
                }
            }
        })
        .collect();
    Ok(CrossTx {
        parts,
        order,
        single: false,
    })
}

/// A keyless data command (DBSIZE, FLUSHALL...) in a transaction that has to run in every
/// participant: it would see only the transaction's keys there.
pub const KEYLESS_REPLICATED: &str = "CROSSSLOT a command without keys cannot run in a transaction with a command whose keys are in several groups";

/// Runs `plan` to its end and writes EXEC's reply.
pub(super) async fn run(node: &Arc<Node>, out: &mut ReplyWriter, plan: CrossTx) {
    let deadline = tokio::time::Instant::now() + super::drive::LEADER_WAIT;
    let mut groups = Internal::with_version(node, out.version);
    let replicated = plan.parts.values().any(|p| p.own.is_some());
    let ended =
        crate::txn::coord::run(&mut groups, || node.tx_ids.next(), plan.parts, deadline).await;
    match ended {
        Ended::Committed(replies) => {
            let version = out.version;
            let elements: BTreeMap<u64, Result<Vec<&[u8]>, &[u8]>> = replies
                .iter()
                .map(|(&g, r)| (g, array_elements(r, version).ok_or(r.as_slice())))
                .collect();
            // A replicated transaction's replies are the same in every participant:
            // another's stand in for the record group's if those were lost.
            let stand_in = elements.values().find_map(|e| e.as_ref().ok());
            if !plan.single {
                out.array(plan.order.len());
            }
            for slot in &plan.order {
                let elements = match (elements.get(&slot_group(slot)), stand_in) {
                    (Some(Err(_)), Some(other)) if replicated => Some(Ok(other.clone())),
                    (e, _) => e.cloned(),
                };
                match slot {
                    Slot::Literal(reply) => out.buf.extend_from_slice(reply),
                    Slot::Item { index, .. } => match elements.as_ref() {
                        Some(Ok(e)) if *index < e.len() => out.buf.extend_from_slice(e[*index]),
                        // The group's FINISH answered an error (or its replies were
                        // lost after it committed): that error in each of its places.
                        Some(Err(err)) if err.starts_with(b"-") => out.buf.extend_from_slice(err),
                        _ => out.error(crate::txn::REPLY_LOST),
                    },
                }
            }
        }
        Ended::Watched => out.null_array(),
        Ended::Refused(text) if text.starts_with("TXLOCKED") => out.error(crate::txn::LOCKED),
        Ended::Refused(text) => out.error(&text),
        Ended::Unknown => out.error(crate::group::ProposeError::Unknown.reply_text()),
    }
}

fn slot_group(slot: &Slot) -> u64 {
    match slot {
        Slot::Item { group, .. } => *group,
        Slot::Literal(_) => u64::MAX,
    }
}

/// The elements of an array reply (`*n` then the elements), if `reply` is one.
fn array_elements(reply: &[u8], version: kelvin_protocol::RespVersion) -> Option<Vec<&[u8]>> {
    let rest = reply.strip_prefix(b"*")?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    let n: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let elements = split_replies(&rest[end + 2..], version);
    (elements.len() == n).then_some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_replies_split_into_their_elements() {
        let v = kelvin_protocol::RespVersion::Resp2;
        let r = b"*3\r\n+OK\r\n$-1\r\n*2\r\n:1\r\n:2\r\n";
        let e = array_elements(r, v).unwrap();
        assert_eq!(e, vec![&b"+OK\r\n"[..], b"$-1\r\n", b"*2\r\n:1\r\n:2\r\n"]);
        assert_eq!(array_elements(b"-ERR x\r\n", v), None);
        assert_eq!(array_elements(b"*2\r\n+OK\r\n", v), None);
    }
}
