//! Where a command goes: the group owning its keys, this node's role in it, the
//! redirect port's answers, and the `KELVIN.ON` pin.

use bytes::Bytes;

use crate::cmd::{self, CmdError, CommandSpec, Handler};
use crate::node::Node;
use kelvin_protocol::log::LogCommand;

use super::*;

/// Where this node stands for the data commands of a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// This node leads the group: reads run here, writes are proposed here.
    Leader,
    /// Another node leads: relay to it.
    Forward(u64),
    /// An election is on.
    NoLeader,
    /// The node is not part of a formed cluster yet, or its group stopped.
    Down,
}

/// Where this node stands for group `gid`. A group it does not replicate is reached
/// through one of its replicas (which relays or redirects again if it does not lead).
pub(super) fn route(node: &Node, gid: u64) -> Route {
    let Some(groups) = node.groups() else {
        return Route::Down;
    };
    let Some(group) = groups.hosted.get(&gid) else {
        return match node
            .membership
            .read()
            .group(gid)
            .and_then(|g| g.replicas.first())
        {
            Some(&r) => Route::Forward(r),
            None => Route::Down,
        };
    };
    let status = &group.status;
    if status.is_stopped() {
        return Route::Down;
    }
    match status.leader() {
        Some(l) if l == status.node_id => Route::Leader,
        Some(l) => Route::Forward(l),
        None => Route::NoLeader,
    }
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// A command whose keys live in different groups, on the main port.
pub const CROSSSLOT_GROUPS: &str =
    "CROSSSLOT Keys in request belong to different groups of this cluster: use keys with the same {hash tag}";

/// On the redirect port, as Redis Cluster's `getNodeByQuery`: keys in different slots are
/// `-CROSSSLOT`; a slot another node leads is `-MOVED slot host:port` (the leader's
/// advertised port), unless `replica_read`: a READONLY read this node's replica answers
/// (see `batch::replica_serves`). `None`: run it here (keyless, led here, or no leader
/// yet: the request waits for one like any other).
pub(super) fn redirection(
    node: &Node,
    spec: &CommandSpec,
    argv: &[Bytes],
    here: Route,
    replica_read: bool,
) -> Option<String> {
    let mut slot = None;
    for p in spec.keys_in(argv) {
        let s = kelvin_protocol::key_slot(&argv[p]);
        match slot {
            None => slot = Some(s),
            Some(first) if first != s => return Some(CROSSSLOT.to_string()),
            Some(_) => {}
        }
    }
    let slot = slot?;
    let Route::Forward(leader) = here else {
        return None;
    };
    if replica_read {
        return None;
    }
    let membership = node.membership.read();
    let m = membership.member(leader)?;
    Some(format!("MOVED {slot} {}:{}", m.host, m.advertised_port()))
}

/// Commands relayed to the leader along with data commands: the transaction commands,
/// whose state must live where the data is.
pub(super) fn forwarded(spec: &CommandSpec) -> bool {
    matches!(spec.handler, Handler::Data(_))
        || matches!(
            spec.name,
            "multi" | "exec" | "discard" | "watch" | "unwatch"
        )
}

pub(super) fn is_read(spec: &CommandSpec) -> bool {
    matches!(spec.handler, Handler::Data(_)) && !spec.through_log()
}

/// The group a command goes to: the owner of its keys' slots; for a keyless command,
/// `current` (the group the batch is already talking to). Keys in different groups cannot
/// be served by one group: `None`.
pub(super) fn command_group(
    node: &Node,
    spec: &CommandSpec,
    argv: &[Bytes],
    current: u64,
) -> Option<u64> {
    let Some(groups) = node.groups() else {
        return Some(current);
    };
    if let Some(only) = groups.only {
        return Some(only);
    }
    let mut group = None;
    for p in spec.keys_in(argv) {
        let g = groups
            .for_slot(kelvin_protocol::key_slot(&argv[p]) as usize)
            .0;
        if *group.get_or_insert(g) != g {
            return None;
        }
    }
    Some(group.unwrap_or(current))
}

/// The group of a transaction: that of its first key (the rest, watched keys included,
/// must share it: a watch is checked against its group's writes only).
pub(super) fn transaction_group(
    node: &Node,
    tx: &LogCommand,
    current: u64,
) -> Result<u64, CmdError> {
    let LogCommand::Transaction { items, watch, .. } = tx else {
        return Ok(current);
    };
    let mut group = None;
    if let Some(groups) = node.groups() {
        for (_, key) in watch {
            let g = groups.for_slot(kelvin_protocol::key_slot(key) as usize).0;
            if *group.get_or_insert(g) != g {
                return Err(CmdError::raw(CROSSSLOT));
            }
        }
    }
    for item in items {
        let kelvin_protocol::log::TxItem::Data { argv, .. } = item else {
            continue;
        };
        let Some(spec) = cmd::lookup(&argv[0]) else {
            continue;
        };
        if spec.keys_in(argv).is_empty() {
            continue;
        }
        let g = command_group(node, spec, argv, current).ok_or(CmdError::raw(CROSSSLOT))?;
        if *group.get_or_insert(g) != g {
            return Err(CmdError::raw(CROSSSLOT));
        }
    }
    Ok(group.unwrap_or(current))
}

/// Whether the cluster has more than one group (routing then looks at every key).
pub(super) fn several_groups(node: &Node) -> bool {
    node.groups().is_some_and(|g| g.only.is_none())
}

/// The group keyless data commands (DBSIZE, KEYS, SCAN, RANDOMKEY, FLUSHALL...) act on:
/// the lowest-numbered group this node leads, else the lowest it replicates. (Redis Cluster
/// clients send those to every master; with leaders spread one group per node, that covers
/// every group. A node leading several groups answers for one of them.)
pub(super) fn default_group(node: &Node) -> u64 {
    let Some(groups) = node.groups() else {
        return crate::cluster::DATA_GROUP;
    };
    groups
        .hosted
        .values()
        .find(|g| g.status.is_leader())
        .or_else(|| groups.hosted.values().next())
        .map_or(crate::cluster::DATA_GROUP, |g| g.group_id)
}

/// `KELVIN.ON <group> <keyless command...>`: runs the command on that group (its leader,
/// relayed if need be). How a node on the main port spreads DBSIZE, KEYS, SCAN,
/// RANDOMKEY, FLUSHDB and FLUSHALL over every group ([`broadcast`]); the pin travels with
/// the request when it is relayed, since the leader may lead several groups.
pub const PIN: &[u8] = b"KELVIN.ON";

pub(super) fn is_pinned(argv: &[Bytes]) -> bool {
    argv.first().is_some_and(|a| a.eq_ignore_ascii_case(PIN))
}

pub(super) fn pin(group: u64, argv: Vec<Bytes>) -> Vec<Bytes> {
    let mut pinned = vec![Bytes::from_static(PIN), Bytes::from(group.to_string())];
    pinned.extend(argv);
    pinned
}

/// The group and the command of a `KELVIN.ON` request.
pub(super) fn unpin(
    node: &Node,
    client: &ClientState,
    argv: &[Bytes],
) -> Result<(u64, Vec<Bytes>), CmdError> {
    if argv.len() < 3 {
        return Err(CmdError::arity("kelvin.on"));
    }
    if client.multi.is_some() {
        return Err(CmdError::err("KELVIN.ON inside MULTI is not allowed"));
    }
    let group = std::str::from_utf8(&argv[1])
        .ok()
        .and_then(|g| g.parse::<u64>().ok())
        .filter(|g| {
            node.groups().is_some_and(|gs| gs.hosted.contains_key(g))
                || node.membership.read().group(*g).is_some()
        })
        .ok_or_else(|| CmdError::err("KELVIN.ON: no such group"))?;
    let inner = argv[2..].to_vec();
    match cmd::lookup(&inner[0]) {
        Some(spec) if spec.keys_in(&inner).is_empty() => Ok((group, inner)),
        Some(_) => Err(CmdError::err(
            "KELVIN.ON takes keyless commands (a key goes to its own group)",
        )),
        None => Err(cmd::unknown_command(&inner)),
    }
}
