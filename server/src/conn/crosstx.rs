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
    /// A blocking command outside MULTI (BLMOVE, BLPOP... over several groups): the
    /// command and its timeout. It runs as its non-blocking self (a command in a
    /// transaction does not block); a nil reply parks the connection until a write in
    /// one of its groups, then it runs again ([`wake_on`]).
    pub blocking: Option<(Vec<Bytes>, Option<std::time::Duration>)>,
    /// What was planned (the transaction, its watches, the connection's group), to plan
    /// again when a participant says the slot map changed under it
    /// ([`crate::txn::PREPARE_MOVED`]).
    source: (LogCommand, Watch, u64),
}

/// EXEC's reply when its keys kept moving between groups through every plan (nothing
/// was applied).
pub const SLOTS_MOVED: &str =
    "TRYAGAIN the transaction's keys moved between groups while it ran; send it again";

/// How many times one EXEC plans its transaction again after a participant refused it
/// for a key that another group holds now (a migration handed slots over meanwhile).
const REPLANS: usize = 8;

/// Whether `argv`, a request pinned to `group`, is a `KELVIN.TX PREPARE` of a key that
/// this node's slot map puts in another group: the coordinator's map was older.
pub(super) fn prepared_elsewhere(node: &Node, group: u64, argv: &[Bytes]) -> bool {
    let (Some(keys), Some(groups)) = (crate::cmd::txn::prepare_keys(argv), node.groups()) else {
        return false;
    };
    keys.iter()
        .any(|k| groups.for_slot(kelvin_protocol::key_slot(k) as usize).0 != group)
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
    let blocking = blocking_timeout(&argv).map(|t| (argv.clone(), t));
    let tx = LogCommand::Transaction {
        watch_since: 0,
        watch: Vec::new(),
        items: vec![TxItem::Data { db: db as u8, argv }],
    };
    let mut plan = plan(node, &tx, &Watch::default(), current)?;
    plan.single = true;
    plan.blocking = blocking;
    Ok(plan)
}

/// A blocking command's timeout (`None` inside: forever), if `argv` is one with a
/// valid timeout (an invalid one gets its error when the command runs).
fn blocking_timeout(argv: &[Bytes]) -> Option<Option<std::time::Duration>> {
    let spec = cmd::lookup(argv.first()?)?;
    if spec.flags & cmd::flags::BLOCKING == 0 {
        return None;
    }
    let at = match spec.name {
        "blmpop" | "bzmpop" => 1,
        "blmove" => 5,
        "brpoplpush" => 3,
        _ => argv.len().checked_sub(1)?,
    };
    crate::cmd::list::timeout_arg(argv.get(at)?).ok()
}

/// Whether `reply` is a blocking command's "nothing there" (nil, or a nil array).
pub(super) fn is_nil(reply: &[u8]) -> bool {
    matches!(reply, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n")
}

/// How often a parked blocking command over groups that this node holds no replica of
/// runs again (no signal from them reaches it).
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A receiver that changes on every list, sorted-set or generic write to a group of
/// `plan` (their `Store::list_ready`, for the groups this node holds a replica of;
/// every [`POLL`] for the others). Subscribed before the command runs, so a write after
/// its nil is not missed. The forwarding tasks end when the receiver is dropped.
pub(super) fn wake_on(node: &Node, plan: &CrossTx) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let tx = Arc::new(tx);
    let mut poll = false;
    for g in plan.parts.keys() {
        let Some(group) = node.hosted(*g) else {
            poll = true;
            continue;
        };
        let mut ready = group.store.lock().list_ready.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    changed = ready.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tx.send_modify(|v| *v = v.wrapping_add(1));
                    }
                }
            }
        });
    }
    if poll {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(POLL) => tx.send_modify(|v| *v = v.wrapping_add(1)),
                }
            }
        });
    }
    rx
}

/// [`plan`] again, over this node's slot map now.
fn replan(node: &Node, old: &CrossTx) -> Result<CrossTx, NotRun> {
    let (tx, watch, current) = &old.source;
    let mut plan = plan(node, tx, watch, *current)?;
    plan.single = old.single;
    plan.blocking = old.blocking.clone();
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
        let mut plan = replicated(node, items, parts, current)?;
        plan.source = (tx.clone(), watch.clone(), current);
        return Ok(plan);
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
        blocking: None,
        source: (tx.clone(), watch.clone(), current),
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
        blocking: None,
        source: (
            LogCommand::Transaction {
                watch_since: 0,
                watch: Vec::new(),
                items: Vec::new(),
            },
            Watch::default(),
            current,
        ),
    })
}

/// A keyless data command (DBSIZE, FLUSHALL...) in a transaction that has to run in every
/// participant: it would see only the transaction's keys there.
pub const KEYLESS_REPLICATED: &str = "CROSSSLOT a command without keys cannot run in a transaction with a command whose keys are in several groups";

/// Runs `plan` to its end and writes EXEC's reply.
pub(super) async fn run(node: &Arc<Node>, out: &mut ReplyWriter, mut plan: CrossTx) {
    let deadline = tokio::time::Instant::now() + super::drive::LEADER_WAIT;
    let mut groups = Internal::with_version(node, out.version);
    let mut replans = 0;
    let (ended, replicated) = loop {
        let parts = std::mem::take(&mut plan.parts);
        let replicated = parts.values().any(|p| p.own.is_some());
        let ended =
            crate::txn::coord::run(&mut groups, || node.tx_ids.next(), parts, deadline).await;
        // A participant's map says a key moved since the plan: aborted everywhere (no
        // decision was asked for); plan again over this node's map, once it has caught
        // up with the participant's.
        let moved = matches!(&ended, Ended::Refused(t) if t.starts_with("TXMOVED"));
        if !moved || replans == REPLANS || tokio::time::Instant::now() >= deadline {
            break (ended, replicated);
        }
        replans += 1;
        tokio::time::sleep(tokio::time::Duration::from_millis(10 << replans.min(5))).await;
        match replan(node, &plan) {
            Ok(again) => plan = again,
            Err(NotRun::Nil) => return out.null_array(),
            Err(NotRun::Error(e)) => return out.error(e),
        }
    };
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
        // Still moving when the wait ran out: the migration's own TRYAGAIN.
        Ended::Refused(text) if text.starts_with("TXMOVING ") => {
            out.error(&text["TXMOVING ".len()..])
        }
        Ended::Refused(text) if text.starts_with("TXMOVED") => out.error(SLOTS_MOVED),
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
