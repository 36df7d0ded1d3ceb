//! CLUSTER: the Redis Cluster view of this node's topology (SLOTS, SHARDS, NODES, INFO,
//! the slot key counts), and how `kelvin-cli cluster create` forms a cluster.
//!
//! Today the cluster is one Raft group replicated on every member, owning all 16384
//! slots: Redis Cluster's "master" of the slots is the group's leader, the other members
//! its replicas. Endpoints are the members' advertised ports (`--redirect-port` where
//! given), so cluster-aware clients connect where they are told `-MOVED`.

use bytes::Bytes;

use crate::cluster::{node_name, parse_node_name, Member, Membership};
use crate::cmd::{conn, int_arg, is, CmdError, CmdResult, CommandSpec};
use crate::conn::ConnCtx;
use crate::node::Node;

pub static COMMANDS: &[CommandSpec] = &[
    conn(
        "cluster",
        -2,
        0,
        "cluster",
        "A container for Redis Cluster commands.",
        cluster,
    ),
    conn(
        "asking",
        1,
        crate::cmd::flags::FAST,
        "cluster",
        "Sent by cluster clients after an -ASK redirect.",
        asking,
    ),
];

/// Slots in Redis Cluster.
const SLOTS: i64 = 16384;

/// ASKING: accepted; nothing is migrating yet, so it changes nothing.
fn asking(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    if ctx.node.settings.read().cluster_port.is_none() {
        return Err(CmdError::err("This instance has cluster support disabled"));
    }
    ctx.out.ok();
    Ok(())
}

/// A group as Redis Cluster shows a shard: its master (the group's leader if this node
/// knows it: it replicates the group; otherwise the first replica, which redirects on)
/// first, then the other replicas in id order.
struct Shard {
    group: u64,
    slots: Vec<(u16, u16)>,
    members: Vec<Member>,
    /// The group's Raft term, if this node replicates it (Redis's config epoch).
    term: u64,
    leader_known: bool,
}

/// Every group of the cluster, by id. Empty until the cluster is formed.
fn shards_of(node: &Node) -> Vec<Shard> {
    let membership = node.membership.read();
    let mut shards = Vec::new();
    for g in &membership.groups {
        let mut members: Vec<Member> = g
            .replicas
            .iter()
            .filter_map(|&r| membership.member(r).cloned())
            .collect();
        members.sort_by_key(|m| m.id);
        let (leader, term) = match node.hosted(g.id) {
            Some(h) => (
                h.status.leader(),
                h.status.term.load(std::sync::atomic::Ordering::Relaxed),
            ),
            None => (None, 0),
        };
        if let Some(pos) = leader.and_then(|l| members.iter().position(|m| m.id == l)) {
            let m = members.remove(pos);
            members.insert(0, m);
        }
        shards.push(Shard {
            group: g.id,
            slots: g.slots.clone(),
            members,
            term,
            leader_known: leader.is_some() || node.hosted(g.id).is_none(),
        });
    }
    shards.sort_by_key(|s| s.group);
    shards
}

fn slots_count(slots: &[(u16, u16)]) -> i64 {
    slots.iter().map(|&(a, b)| (b - a) as i64 + 1).sum()
}

fn cluster_enabled(node: &Node) -> Result<(), CmdError> {
    match node.settings.read().cluster_port {
        Some(_) => Ok(()),
        None => Err(CmdError::err("This instance has cluster support disabled")),
    }
}

fn slot_arg(arg: &[u8], err: &str) -> Result<usize, CmdError> {
    let slot = int_arg(arg)?;
    if !(0..SLOTS).contains(&slot) {
        return Err(CmdError::err(err));
    }
    Ok(slot as usize)
}

/// CLUSTER SLOTS: `[start, end, master, replicas...]` per slot range, each node
/// `[host, port, id, {}]`.
fn slots(ctx: &mut ConnCtx<'_>) {
    let shards = shards_of(ctx.node);
    let ranges: usize = shards.iter().map(|s| s.slots.len()).sum();
    ctx.out.array(ranges);
    for shard in &shards {
        for &(a, b) in &shard.slots {
            ctx.out.array(2 + shard.members.len());
            ctx.out.int(a as i64);
            ctx.out.int(b as i64);
            for m in &shard.members {
                ctx.out.array(4);
                ctx.out.bulk(m.host.to_string().as_bytes());
                ctx.out.int(m.advertised_port() as i64);
                ctx.out.bulk(node_name(m.id).as_bytes());
                ctx.out.map(0);
            }
        }
    }
}

/// CLUSTER SHARDS: per group `{slots: [start, end, ...], nodes: [{id, port, ip, endpoint,
/// role, replication-offset, health}]}`.
fn shards(ctx: &mut ConnCtx<'_>) {
    let shards = shards_of(ctx.node);
    ctx.out.array(shards.len());
    for shard in &shards {
        let applied = ctx.node.hosted(shard.group).map_or(0, |g| {
            g.status.applied.load(std::sync::atomic::Ordering::Relaxed)
        });
        ctx.out.map(2);
        ctx.out.bulk(b"slots");
        ctx.out.array(2 * shard.slots.len());
        for &(a, b) in &shard.slots {
            ctx.out.int(a as i64);
            ctx.out.int(b as i64);
        }
        ctx.out.bulk(b"nodes");
        ctx.out.array(shard.members.len());
        for (i, m) in shard.members.iter().enumerate() {
            let host = m.host.to_string();
            ctx.out.map(7);
            ctx.out.bulk(b"id");
            ctx.out.bulk(node_name(m.id).as_bytes());
            ctx.out.bulk(b"port");
            ctx.out.int(m.advertised_port() as i64);
            ctx.out.bulk(b"ip");
            ctx.out.bulk(host.as_bytes());
            ctx.out.bulk(b"endpoint");
            ctx.out.bulk(host.as_bytes());
            ctx.out.bulk(b"role");
            ctx.out
                .bulk(if i == 0 { &b"master"[..] } else { b"replica" });
            ctx.out.bulk(b"replication-offset");
            // Only this node's own applied index is known here.
            ctx.out.int(if m.id == ctx.node.id() {
                applied as i64
            } else {
                0
            });
            ctx.out.bulk(b"health");
            ctx.out.bulk(b"online");
        }
    }
}

/// CLUSTER NODES, in Redis's text format (one line per node, each ending in `\n`):
/// `<id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
/// <link-state> <slot-range>...`. A node that is the master of some groups shows as a
/// master of their slots; one that leads none, as a replica of the master of the first
/// group it replicates.
fn nodes_text(node: &Node) -> String {
    let shards = shards_of(node);
    let me = node.id();
    let now = crate::cmd::unix_ms();
    let mut text = String::new();
    let members = node.membership.read().members.clone();
    if members.is_empty() {
        // Not formed yet: just this node, a master without slots, as Redis shows itself.
        let s = node.settings.read();
        text.push_str(&format!(
            "{} {}:{}@{} myself,master - 0 0 0 connected\n",
            node_name(me),
            s.bind,
            s.redirect_port.unwrap_or(s.port),
            s.cluster_port.unwrap_or(0)
        ));
        return text;
    }
    for m in &members {
        let led: Vec<&Shard> = shards.iter().filter(|s| s.members[0].id == m.id).collect();
        let (role, of, epoch, slots) = if !led.is_empty() {
            let slots: String = led
                .iter()
                .flat_map(|s| s.slots.iter())
                .map(|&(a, b)| {
                    if a == b {
                        format!(" {a}")
                    } else {
                        format!(" {a}-{b}")
                    }
                })
                .collect();
            let epoch = led.iter().map(|s| s.term).max().unwrap_or(0);
            ("master", "-".to_string(), epoch, slots)
        } else {
            match shards
                .iter()
                .find(|s| s.members.iter().any(|x| x.id == m.id))
            {
                Some(s) => ("slave", node_name(s.members[0].id), s.term, String::new()),
                None => ("master", "-".to_string(), 0, String::new()),
            }
        };
        let flags = if m.id == me {
            format!("myself,{role}")
        } else {
            role.to_string()
        };
        text.push_str(&format!(
            "{} {}:{}@{} {flags} {of} 0 {now} {epoch} connected{slots}\n",
            node_name(m.id),
            m.host,
            m.advertised_port(),
            m.cport,
        ));
    }
    text
}

/// CLUSTER KELVIN-GROUPS (for `kelvin-cli cluster status`): per group this node hosts, a
/// map of `group`, `slots`, `replicas` (node ids, the preferred leader first), `role`,
/// `leader` (node id, empty if none), `term`, `applied`,
/// `keys` (all databases), `bytes` (a rough count of keys and values held) and `members`
/// (node ids in the group's Raft configuration as this replica knows it: voters, old
/// voters while joint, learners; what `status` holds the topology's replicas against).
fn kelvin_groups(ctx: &mut ConnCtx<'_>) {
    let Some(groups) = ctx.node.groups() else {
        ctx.out.array(0);
        return;
    };
    let membership = ctx.node.membership.read().clone();
    ctx.out.array(groups.hosted.len());
    for (id, group) in &groups.hosted {
        let status = &group.status;
        let (keys, bytes) = {
            let mut store = group.store.lock();
            let dbs: Vec<usize> = store.dbs().map(|(i, _)| i).collect();
            let mut keys = 0;
            let mut bytes = 0;
            for db in dbs {
                let ks = store.db(db);
                keys += ks.len();
                bytes += ks.approx_bytes();
            }
            (keys, bytes)
        };
        let role = if status.is_stopped() {
            "stopped"
        } else if status.is_leader() {
            "leader"
        } else {
            "follower"
        };
        let slots = membership
            .group(*id)
            .map_or_else(|| "0-16383".to_string(), |g| g.slots_text());
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let replicas: Vec<String> = membership
            .group(*id)
            .map(|g| g.replicas.iter().map(|&r| node_name(r)).collect())
            .unwrap_or_else(|| vec![node_name(ctx.node.id())]);
        let members: Vec<String> = {
            let conf = status.conf.lock();
            let mut ids: Vec<u64> = conf
                .voters
                .iter()
                .chain(&conf.voters_outgoing)
                .chain(&conf.learners)
                .copied()
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter().map(node_name).collect()
        };
        ctx.out.map(10);
        ctx.out.bulk(b"group");
        ctx.out.int(*id as i64);
        ctx.out.bulk(b"slots");
        ctx.out.bulk(slots.as_bytes());
        ctx.out.bulk(b"replicas");
        ctx.out.bulk(replicas.join(",").as_bytes());
        ctx.out.bulk(b"role");
        ctx.out.bulk(role.as_bytes());
        ctx.out.bulk(b"leader");
        ctx.out.bulk(
            status
                .leader()
                .map(node_name)
                .unwrap_or_default()
                .as_bytes(),
        );
        ctx.out.bulk(b"term");
        ctx.out.int(status.term.load(relaxed) as i64);
        ctx.out.bulk(b"applied");
        ctx.out.int(status.applied.load(relaxed) as i64);
        ctx.out.bulk(b"keys");
        ctx.out.int(keys as i64);
        ctx.out.bulk(b"bytes");
        ctx.out.int(bytes as i64);
        ctx.out.bulk(b"members");
        ctx.out.bulk(members.join(",").as_bytes());
    }
}

/// CLUSTER KELVIN-DIGEST <group>: what this node's replica of a data group holds, for
/// comparing replicas (leader or follower alike; see [`crate::store::digest`]).
///
/// ```text
/// 1) (integer) applied log index the contents are at
/// 2) 1) (integer) slot          one entry per slot holding keys, by slot
///    2) (integer) keys
///    3) "digest"               16 hex digits
/// ...
/// ```
fn kelvin_digest(ctx: &mut ConnCtx<'_>, group: &[u8]) -> CmdResult {
    let id = group_arg(group)?;
    let Some(group) = ctx.node.hosted(id) else {
        return Err(CmdError::err("this node hosts no replica of that group"));
    };
    let (applied, slots) = {
        let store = group.store.lock();
        (
            store.apply_index,
            crate::store::digest::slot_digests(&store),
        )
    };
    ctx.out.array(slots.len() + 1);
    ctx.out.int(applied as i64);
    for (slot, d) in slots {
        ctx.out.array(3);
        ctx.out.int(i64::from(slot));
        ctx.out.int(d.keys as i64);
        ctx.out.bulk(format!("{:016x}", d.digest).as_bytes());
    }
    Ok(())
}

/// A group argument: a data group's number, or `meta`.
fn group_arg(arg: &[u8]) -> Result<u64, CmdError> {
    if arg.eq_ignore_ascii_case(b"meta") {
        return Ok(crate::cluster::META_GROUP);
    }
    std::str::from_utf8(arg)
        .ok()
        .and_then(|a| a.parse().ok())
        .filter(|&g| g != crate::cluster::META_GROUP)
        .ok_or_else(|| CmdError::err("bad group: give a group number or META"))
}

fn node_arg(arg: &[u8]) -> Result<u64, CmdError> {
    parse_node_name(&String::from_utf8_lossy(arg)).ok_or_else(|| CmdError::err("bad node id"))
}

/// CLUSTER KELVIN-TOPOLOGY: the topology the meta group holds (the text of
/// `cluster.conf`, with its epoch); this node's own while the meta group holds none yet.
fn kelvin_topology(ctx: &mut ConnCtx<'_>) -> CmdResult {
    cluster_enabled(ctx.node)?;
    let stored = ctx
        .node
        .meta()
        .and_then(|m| crate::cluster::stored_topology(&mut m.store.lock()));
    let text = match stored {
        Some(Ok(m)) => m.render(),
        Some(Err(e)) => return Err(CmdError::err(e)),
        None => ctx.node.membership.read().render(),
    };
    ctx.out.bulk(text.as_bytes());
    Ok(())
}

/// CLUSTER KELVIN-TOPOLOGY SET <expected epoch> <text>: proposes a new topology to the
/// meta group, which this node must lead. It is applied only if the topology's epoch is
/// still `expected` (a compare-and-set: two admins cannot overwrite each other). Answers
/// once proposed; read the topology back to see it applied.
fn kelvin_topology_set(ctx: &mut ConnCtx<'_>, expected: &[u8], text: &[u8]) -> CmdResult {
    let expected = u64::try_from(int_arg(expected)?).map_err(|_| CmdError::err("bad epoch"))?;
    let new = Membership::parse(&String::from_utf8_lossy(text)).map_err(CmdError::err)?;
    if new.epoch <= expected {
        return Err(CmdError::err(format!(
            "the new topology's epoch must be above {expected}"
        )));
    }
    let Some(meta) = ctx.node.meta() else {
        return Err(CmdError::err("this node is not part of a cluster yet"));
    };
    if !meta.status.is_leader() {
        return Err(not_leader(ctx.node, "meta", meta.status.leader()));
    }
    ctx.node.propose_topology(expected, &new);
    ctx.out.ok();
    Ok(())
}

/// "this node does not lead ..." naming the leader's client address.
fn not_leader(node: &crate::node::Node, group: &str, leader: Option<u64>) -> CmdError {
    let at = leader
        .and_then(|l| node.peer_client_addr(l))
        .map(|a| format!("its leader is {a}"))
        .unwrap_or_else(|| "it has no leader yet, try again".into());
    CmdError::err(format!("this node does not lead group {group}: {at}"))
}

/// CLUSTER KELVIN-RAFT <group|META>: the group's Raft membership as this replica sees it:
/// role, leader, voters, outgoing voters (joint configuration), learners, and on the
/// leader its last index and each replica's matched index.
fn kelvin_raft(ctx: &mut ConnCtx<'_>, group: &[u8]) -> CmdResult {
    let gid = group_arg(group)?;
    let Some(handle) = ctx.node.hosted(gid) else {
        return Err(CmdError::err("this node does not replicate that group"));
    };
    let status = &handle.status;
    let view = status.conf.lock().clone();
    let ids = |v: &[u64]| {
        v.iter()
            .map(|&i| node_name(i))
            .collect::<Vec<_>>()
            .join(",")
    };
    let role = if status.is_stopped() {
        "stopped"
    } else if status.is_leader() {
        "leader"
    } else {
        "follower"
    };
    let matched: Vec<String> = view
        .matched
        .iter()
        .map(|(id, m)| format!("{}={m}", node_name(*id)))
        .collect();
    ctx.out.map(8);
    ctx.out.bulk(b"role");
    ctx.out.bulk(role.as_bytes());
    ctx.out.bulk(b"leader");
    ctx.out.bulk(
        status
            .leader()
            .map(node_name)
            .unwrap_or_default()
            .as_bytes(),
    );
    ctx.out.bulk(b"applied");
    ctx.out
        .int(status.applied.load(std::sync::atomic::Ordering::Relaxed) as i64);
    ctx.out.bulk(b"voters");
    ctx.out.bulk(ids(&view.voters).as_bytes());
    ctx.out.bulk(b"voters_outgoing");
    ctx.out.bulk(ids(&view.voters_outgoing).as_bytes());
    ctx.out.bulk(b"learners");
    ctx.out.bulk(ids(&view.learners).as_bytes());
    ctx.out.bulk(b"last_index");
    ctx.out.int(view.last_index as i64);
    ctx.out.bulk(b"matched");
    ctx.out.bulk(matched.join(",").as_bytes());
    Ok(())
}

/// CLUSTER KELVIN-CONF <group|META> ADD-LEARNER|PROMOTE|REMOVE <node-id> | LEAVE-JOINT:
/// proposes one Raft membership change to the group, which this node must lead.
/// Answers once proposed; `KELVIN-RAFT` shows it applied.
fn kelvin_conf(ctx: &mut ConnCtx<'_>, args: &[Bytes]) -> CmdResult {
    use crate::group::ConfOp;
    let gid = group_arg(&args[0])?;
    let op = match (&args[1][..], args.get(2)) {
        (o, Some(n)) if o.eq_ignore_ascii_case(b"add-learner") => ConfOp::AddLearner(node_arg(n)?),
        (o, Some(n)) if o.eq_ignore_ascii_case(b"promote") => ConfOp::Promote(node_arg(n)?),
        (o, Some(n)) if o.eq_ignore_ascii_case(b"remove") => ConfOp::Remove(node_arg(n)?),
        (o, None) if o.eq_ignore_ascii_case(b"leave-joint") => ConfOp::LeaveJoint,
        _ => {
            return Err(CmdError::err(
                "expected ADD-LEARNER <node>, PROMOTE <node>, REMOVE <node> or LEAVE-JOINT",
            ))
        }
    };
    let Some(handle) = ctx.node.hosted(gid) else {
        return Err(CmdError::err("this node does not replicate that group"));
    };
    if !handle.status.is_leader() {
        let name = if gid == crate::cluster::META_GROUP {
            "meta".to_string()
        } else {
            gid.to_string()
        };
        return Err(not_leader(ctx.node, &name, handle.status.leader()));
    }
    handle.change_conf(op).map_err(CmdError::err)?;
    ctx.out.ok();
    Ok(())
}

/// CLUSTER KELVIN-JOIN <topology text> (`kelvin-cli cluster add-node`): this empty node
/// joins a running cluster whose topology already lists it. Its meta replica starts
/// empty; the meta leader then adds it as a learner and promotes it.
fn kelvin_join(ctx: &mut ConnCtx<'_>, text: &[u8]) -> CmdResult {
    let node = ctx.node;
    let m = Membership::parse(&String::from_utf8_lossy(text)).map_err(CmdError::err)?;
    check_new_member(node, &m, "to add it")?;
    let dir = node.settings.read().data_dir.clone();
    m.save(&dir)
        .map_err(|e| CmdError::err(format!("cannot write cluster.conf: {e}")))?;
    node.start_cluster(m, crate::node::Start::Join)
        .map_err(CmdError::err)?;
    ctx.out.ok();
    Ok(())
}

/// Whether this node may take `m` as its first topology: in cluster mode, listed in it,
/// and part of no cluster yet (`purpose` ends the error that says to empty it).
fn check_new_member(node: &crate::node::Node, m: &Membership, purpose: &str) -> CmdResult {
    if node.settings.read().cluster_port.is_none() {
        return Err(CmdError::err(
            "This instance has cluster support disabled: start it with --cluster-port",
        ));
    }
    if m.member(node.id()).is_none() {
        return Err(CmdError::err(format!(
            "this node ({}) is not among the members",
            node_name(node.id())
        )));
    }
    if node.groups().is_some() {
        return Err(CmdError::err(format!(
            "Node is not empty. It already belongs to a cluster (see INFO raft); start it with an empty --data-dir {purpose}"
        )));
    }
    Ok(())
}

/// CLUSTER KELVIN-TRANSFER <group> <node-id> (`kelvin-cli cluster rebalance`): asks the
/// group, which this node must lead, to hand leadership to that replica. Answers once
/// asked; the new leader takes over within an election's time.
fn kelvin_transfer(ctx: &mut ConnCtx<'_>, group: &[u8], to: &[u8]) -> CmdResult {
    let gid = group_arg(group)?;
    let to = node_arg(to)?;
    let Some(handle) = ctx.node.hosted(gid) else {
        return Err(CmdError::err(format!(
            "this node does not replicate group {gid}"
        )));
    };
    // A voter, as the group itself sees it (the meta group's voters are the members).
    let is_replica = handle.status.conf.lock().voters.contains(&to);
    if !is_replica {
        return Err(CmdError::err(format!(
            "node {} is not a replica of group {gid}",
            node_name(to)
        )));
    }
    if !handle.status.is_leader() {
        let leader = handle
            .status
            .leader()
            .map_or_else(|| "none yet".to_string(), node_name);
        return Err(CmdError::err(format!(
            "this node does not lead group {gid} (its leader: {leader}): ask the leader"
        )));
    }
    handle.transfer_leader(to);
    ctx.out.ok();
    Ok(())
}

/// CLUSTER INFO, Redis's fields.
fn info_text(node: &Node) -> String {
    let shards = shards_of(node);
    let members = node.membership.read().members.len();
    let assigned: i64 = shards.iter().map(|s| slots_count(&s.slots)).sum();
    // Groups this node does not replicate are taken as served (it cannot see them).
    let ok: i64 = shards
        .iter()
        .filter(|s| s.leader_known)
        .map(|s| slots_count(&s.slots))
        .sum();
    let epoch = shards.iter().map(|s| s.term).max().unwrap_or(0);
    let fields = [
        (
            "cluster_state",
            if ok == SLOTS { "ok" } else { "fail" }.to_string(),
        ),
        ("cluster_slots_assigned", assigned.to_string()),
        ("cluster_slots_ok", ok.to_string()),
        ("cluster_slots_pfail", "0".into()),
        ("cluster_slots_fail", (assigned - ok).to_string()),
        ("cluster_known_nodes", members.max(1).to_string()),
        ("cluster_size", shards.len().to_string()),
        ("cluster_current_epoch", epoch.to_string()),
        ("cluster_my_epoch", epoch.to_string()),
        ("cluster_stats_messages_sent", "0".into()),
        ("cluster_stats_messages_received", "0".into()),
        ("total_cluster_links_buffer_limit_exceeded", "0".into()),
    ];
    fields.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect()
}

fn cluster(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let topology = [
        "slots",
        "shards",
        "nodes",
        "info",
        "countkeysinslot",
        "getkeysinslot",
    ];
    if topology.iter().any(|s| is(sub, s)) {
        cluster_enabled(ctx.node)?;
    }
    if is(sub, "slots") && argv.len() == 2 {
        slots(ctx);
    } else if is(sub, "shards") && argv.len() == 2 {
        shards(ctx);
    } else if is(sub, "nodes") && argv.len() == 2 {
        ctx.out.verbatim("txt", nodes_text(ctx.node).as_bytes());
    } else if is(sub, "info") && argv.len() == 2 {
        ctx.out.verbatim("txt", info_text(ctx.node).as_bytes());
    } else if is(sub, "countkeysinslot") && argv.len() == 3 {
        let slot = slot_arg(&argv[2], "Invalid slot")?;
        let n = ctx
            .node
            .groups()
            .and_then(|gs| gs.for_slot(slot).1.cloned())
            .map_or(0, |g| g.store.lock().db(0).slot(slot).map.len());
        ctx.out.int(n as i64);
    } else if is(sub, "getkeysinslot") && argv.len() == 4 {
        let err = "Invalid slot or number of keys";
        let slot = int_arg(&argv[2])?;
        let count = int_arg(&argv[3])?;
        if !(0..SLOTS).contains(&slot) || count < 0 {
            return Err(CmdError::err(err));
        }
        let Some(group) = ctx
            .node
            .groups()
            .and_then(|gs| gs.for_slot(slot as usize).1.cloned())
        else {
            ctx.out.array(0);
            return Ok(());
        };
        let mut store = group.store.lock();
        let keys: Vec<Bytes> = store
            .db(0)
            .slot(slot as usize)
            .map
            .keys()
            .take(count as usize)
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        drop(store);
        ctx.out.bulks(keys.iter().map(|k| &k[..]));
    } else if is(sub, "kelvin-heat") {
        crate::cmd::heat::kelvin_heat(ctx, &argv[2..])?;
    } else if is(sub, "kelvin-migrations") && argv.len() == 2 {
        crate::cmd::migrate::kelvin_migrations(ctx);
    } else if is(sub, "kelvin-groups") && argv.len() == 2 {
        kelvin_groups(ctx);
    } else if is(sub, "kelvin-digest") && argv.len() == 3 {
        kelvin_digest(ctx, &argv[2])?;
    } else if is(sub, "kelvin-topology") && argv.len() == 2 {
        kelvin_topology(ctx)?;
    } else if is(sub, "kelvin-topology") && argv.len() == 5 && is(&argv[2], "set") {
        kelvin_topology_set(ctx, &argv[3], &argv[4])?;
    } else if is(sub, "kelvin-raft") && argv.len() == 3 {
        kelvin_raft(ctx, &argv[2])?;
    } else if is(sub, "kelvin-conf") && (argv.len() == 4 || argv.len() == 5) {
        kelvin_conf(ctx, &argv[2..])?;
    } else if is(sub, "kelvin-join") && argv.len() == 3 {
        kelvin_join(ctx, &argv[2])?;
    } else if is(sub, "kelvin-transfer") && argv.len() == 4 {
        kelvin_transfer(ctx, &argv[2], &argv[3])?;
    } else if is(sub, "kelvin-failpoint") && argv.len() == 4 {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        crate::failpoint::configure(&text(&argv[2]), &text(&argv[3])).map_err(CmdError::err)?;
        tracing::warn!(name = %text(&argv[2]), actions = %text(&argv[3]), "fail point set");
        ctx.out.ok();
    } else if is(sub, "kelvin-failpoint-hits") && argv.len() == 3 {
        let name = String::from_utf8_lossy(&argv[2]).into_owned();
        let hits = crate::failpoint::hits(&name).map_err(CmdError::err)?;
        ctx.out.int(hits as i64);
    } else if is(sub, "myid") && argv.len() == 2 {
        ctx.out.bulk(node_name(ctx.node.id()).as_bytes());
    } else if is(sub, "keyslot") && argv.len() == 3 {
        ctx.out.int(kelvin_protocol::key_slot(&argv[2]) as i64);
    } else if is(sub, "kelvin-bootstrap") && argv.len() > 2 {
        bootstrap(ctx, &argv[2..])?;
    } else if is(sub, "help") && argv.len() == 2 {
        ctx.out.simples(&[
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "COUNTKEYSINSLOT <slot>",
            "    Return the number of keys in <slot>.",
            "GETKEYSINSLOT <slot> <count>",
            "    Return key names stored by current node in a slot.",
            "INFO",
            "    Return information about the cluster.",
            "MYID",
            "    Return the node id.",
            "NODES",
            "    Return cluster configuration seen by node.",
            "SHARDS",
            "    Return information about slot range mappings and the nodes associated with them.",
            "SLOTS",
            "    Return information about slots range mappings.",
            "KEYSLOT <key>",
            "    Return the hash slot for <key>.",
            "KELVIN-GROUPS",
            "    The Raft groups this node hosts: id, slots, replicas, role, leader, term, applied index, keys, bytes.",
            "KELVIN-DIGEST <group>",
            "    Return the applied index of this node's replica of <group> and, per slot, its keys and a digest of their values and TTLs.",
            "KELVIN-TRANSFER <group> <node-id>",
            "    Hand the leadership of <group>, which this node leads, to replica <node-id>.",
            "KELVIN-FAILPOINT <name> <actions|OFF>",
            "    Set a fail point of this node (fault tests; builds with the failpoints feature).",
            "KELVIN-FAILPOINT-HITS <name>",
            "    Return how many times the fail point was reached with an action set.",
            "KELVIN-BOOTSTRAP <node-id> <host> <port> <cluster-port> <redirect-port> [...]",
            "    Form the group with these members (kelvin-cli cluster create sends it).",
            "KELVIN-TOPOLOGY [SET <expected-epoch> <text>]",
            "    Return the topology the meta group holds, or propose a new one (on the meta leader).",
            "KELVIN-MIGRATIONS",
            "    Return what this node measured of the migrations it drove and the fault-ins it served.",
            "KELVIN-RAFT <group|META>",
            "    Return the group's Raft membership and, on its leader, each replica's progress.",
            "KELVIN-CONF <group|META> ADD-LEARNER|PROMOTE|REMOVE <node-id> | LEAVE-JOINT",
            "    Propose a membership change to the group, which this node leads.",
            "KELVIN-JOIN <topology>",
            "    Join a running cluster whose topology lists this node (kelvin-cli cluster add-node sends it).",
            "HELP",
            "    Print this help.",
        ]);
    } else if [
        "myid",
        "keyslot",
        "kelvin-bootstrap",
        "kelvin-groups",
        "kelvin-digest",
        "kelvin-migrations",
        "kelvin-topology",
        "kelvin-raft",
        "kelvin-conf",
        "kelvin-join",
        "kelvin-transfer",
        "kelvin-failpoint",
        "kelvin-failpoint-hits",
        "help",
    ]
    .iter()
    .chain(topology.iter())
    .any(|s| is(sub, s))
    {
        return Err(CmdError::arity(&format!(
            "cluster|{}",
            String::from_utf8_lossy(sub).to_lowercase()
        )));
    } else {
        return Err(CmdError::unknown_subcommand(sub, "cluster"));
    }
    Ok(())
}

fn bootstrap(ctx: &mut ConnCtx<'_>, args: &[Bytes]) -> CmdResult {
    let node = ctx.node;
    let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
    let membership = Membership::from_args(&args).map_err(CmdError::err)?;
    check_new_member(node, &membership, "to form a new one")?;
    let dir = node.settings.read().data_dir.clone();
    // The groups' logs first (their memberships made durable), then cluster.conf: a
    // restart from cluster.conf never creates a membership (see `Start::Restart`).
    node.start_group(membership.clone(), crate::node::Start::Bootstrap)
        .map_err(CmdError::err)?;
    membership
        .save(&dir)
        .map_err(|e| CmdError::err(format!("cannot write cluster.conf: {e}")))?;
    ctx.out.ok();
    Ok(())
}
