//! `kelvin-cli cluster add-node / remove-node / add-replica / remove-replica`: changing
//! who is in the cluster and where each group's replicas live, one Raft step at a time.
//!
//! The topology (members, groups, replicas, slots, with an epoch) lives in the meta
//! group; every node follows it. A group's Raft membership lives in the group's own log.
//! Each change is made in an order that is safe to stop at any step and run again:
//!
//! ```text
//! add-replica G N:    topology: N replicates G   (N starts an empty replica of G)
//!                     G's leader: ADD-LEARNER N  (N gets a snapshot, then the log)
//!                     ... wait until N has caught up ...
//!                     G's leader: PROMOTE N      (joint consensus: old and new voters
//!                                                 both agree, then the group leaves it)
//! remove-replica G N: G's leader hands over first if it is N, then REMOVE N (joint)
//!                     topology: N no longer replicates G (N stops and deletes it)
//! add-node NEW SEED:  topology: NEW is a member; NEW: KELVIN-JOIN (empty meta replica);
//!                     meta leader: ADD-LEARNER NEW, wait, PROMOTE NEW
//! remove-node N SEED: each group N replicates gets a replica on another node first (if
//!                     one is free), then loses N's (a group whose only replica is on N
//!                     gives its slots to the other groups by live resharding instead,
//!                     and goes); then N leaves the meta group and the topology, and is
//!                     shut down
//! ```

use std::time::{Duration, Instant};

use crate::admin::{connect, field_text, fields, text};
use crate::Frame;

/// How long one step (a membership change, a learner catching up) may take.
pub const STEP_WAIT: Duration = Duration::from_secs(60);
/// A joint configuration that lasts longer than this is left explicitly (raft-rs leaves
/// on its own, unless the leader changed before it could).
const JOINT_WAIT: Duration = Duration::from_secs(3);

/// How long a wait goes on while no member answers (the seed killed, restarting...).
pub const UNREACHABLE_WAIT: Duration = Duration::from_secs(30);

/// The topology as `CLUSTER KELVIN-TOPOLOGY` gives it: the lines of `cluster.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub epoch: u64,
    /// (id, host, port, cluster port, redirect port)
    pub members: Vec<(String, String, u16, u16, u16)>,
    /// (id, slot ranges, replica ids)
    pub groups: Vec<(u64, String, Vec<String>)>,
    /// Live migrations: (id, source group, target group, slot ranges, phase).
    pub migrations: Vec<(u64, u64, u64, String, String)>,
}

impl Topology {
    pub fn parse(text: &str) -> anyhow::Result<Topology> {
        let mut t = Topology {
            epoch: 0,
            members: Vec::new(),
            groups: Vec::new(),
            migrations: Vec::new(),
        };
        for line in text.lines().map(str::trim) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad = || anyhow::anyhow!("[ERR] unexpected topology line {line:?}");
            match f.as_slice() {
                [] => {}
                [c, ..] if c.starts_with('#') => {}
                ["epoch", e] => t.epoch = e.parse().map_err(|_| bad())?,
                ["node", id, host, port, cport, rport] => t.members.push((
                    id.to_string(),
                    host.to_string(),
                    port.parse().map_err(|_| bad())?,
                    cport.parse().map_err(|_| bad())?,
                    rport.parse().map_err(|_| bad())?,
                )),
                ["group", id, slots, replicas] => t.groups.push((
                    id.parse().map_err(|_| bad())?,
                    slots.to_string(),
                    replicas.split(',').map(str::to_string).collect(),
                )),
                ["migrate", id, source, target, slots, phase] => t.migrations.push((
                    id.parse().map_err(|_| bad())?,
                    source.parse().map_err(|_| bad())?,
                    target.parse().map_err(|_| bad())?,
                    slots.to_string(),
                    phase.to_string(),
                )),
                _ => return Err(bad()),
            }
        }
        Ok(t)
    }

    pub fn render(&self) -> String {
        let mut s = format!("epoch {}\n", self.epoch);
        for (id, host, port, cport, rport) in &self.members {
            s.push_str(&format!("node {id} {host} {port} {cport} {rport}\n"));
        }
        for (id, slots, replicas) in &self.groups {
            s.push_str(&format!("group {id} {slots} {}\n", replicas.join(",")));
        }
        for (id, source, target, slots, phase) in &self.migrations {
            s.push_str(&format!("migrate {id} {source} {target} {slots} {phase}\n"));
        }
        s
    }

    pub fn addr(&self, id: &str) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.0 == id)
            .map(|m| format!("{}:{}", m.1, m.2))
    }

    /// A member by id or by HOST:PORT.
    pub fn find(&self, who: &str) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.0 == who || format!("{}:{}", m.1, m.2) == who)
            .map(|m| m.0.clone())
    }

    /// The replicas (node ids) of `group`.
    pub fn replicas(&self, group: u64) -> Option<&Vec<String>> {
        self.groups.iter().find(|g| g.0 == group).map(|g| &g.2)
    }
}

/// The cluster as seen through `seed`, with the password for every node.
pub struct Admin<'a> {
    pub seed: String,
    pub pass: Option<&'a str>,
}

/// A group: a data group's number, or the meta group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Data(u64),
    Meta,
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Group::Data(g) => write!(f, "{g}"),
            Group::Meta => f.write_str("meta"),
        }
    }
}

/// A group's Raft membership as its leader reported it.
struct RaftView {
    voters: Vec<String>,
    outgoing: Vec<String>,
    learners: Vec<String>,
    last_index: u64,
    matched: Vec<(String, u64)>,
}

fn ids(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

impl Admin<'_> {
    pub(crate) fn call(&self, addr: &str, cmd: &[&str]) -> anyhow::Result<Frame> {
        connect(addr, self.pass)?.call(cmd)
    }

    /// The topology the meta group holds, read from `seed` (or any member it knows).
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let t = text(
            self.call(&self.seed, &["CLUSTER", "KELVIN-TOPOLOGY"])?,
            &self.seed,
            "CLUSTER KELVIN-TOPOLOGY",
        )?;
        Topology::parse(&t)
    }

    /// The topology while waiting on the cluster: from the seed, or while it cannot be
    /// reached, from any member of the last topology read (a node killed during a change
    /// must not end the wait: the cluster goes on without it). An error once no member
    /// has answered for [`UNREACHABLE_WAIT`].
    pub fn watch(&self, last: &mut Option<Topology>) -> anyhow::Result<Topology> {
        let began = Instant::now();
        loop {
            let err = match self.topology() {
                Ok(t) => {
                    *last = Some(t.clone());
                    return Ok(t);
                }
                Err(e) => e,
            };
            let others = last.iter().flat_map(|t| t.members.iter());
            for (_, host, port, ..) in others {
                let other = Admin {
                    seed: format!("{host}:{port}"),
                    pass: self.pass,
                };
                if let Ok(t) = other.topology() {
                    *last = Some(t.clone());
                    return Ok(t);
                }
            }
            if began.elapsed() >= UNREACHABLE_WAIT {
                return Err(err.context(format!("no member answered for {UNREACHABLE_WAIT:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address of the node that leads `group`, asking its replicas (for the meta
    /// group, every member). Waits out an election.
    pub(crate) fn leader(&self, t: &Topology, group: Group) -> anyhow::Result<String> {
        let asked: Vec<String> = match group {
            Group::Meta => t.members.iter().map(|m| m.0.clone()).collect(),
            Group::Data(g) => t.replicas(g).cloned().unwrap_or_default(),
        };
        let deadline = Instant::now() + STEP_WAIT;
        loop {
            for id in &asked {
                let Some(addr) = t.addr(id) else { continue };
                let Ok(reply) = self.call(&addr, &["CLUSTER", "KELVIN-RAFT", &group.to_string()])
                else {
                    continue;
                };
                let f = fields(&reply);
                let leader = field_text(&f, "leader");
                if let Some(a) = t.addr(&leader) {
                    return Ok(a);
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("[ERR] Group {group} has no leader reachable: check its replicas with kelvin-cli cluster status");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn raft(&self, addr: &str, group: Group) -> anyhow::Result<RaftView> {
        let reply = self.call(addr, &["CLUSTER", "KELVIN-RAFT", &group.to_string()])?;
        if let Frame::Error(e) = reply {
            anyhow::bail!("[ERR] {addr}: {e}");
        }
        let f = fields(&reply);
        Ok(RaftView {
            voters: ids(&field_text(&f, "voters")),
            outgoing: ids(&field_text(&f, "voters_outgoing")),
            learners: ids(&field_text(&f, "learners")),
            last_index: field_text(&f, "last_index").parse().unwrap_or(0),
            matched: field_text(&f, "matched")
                .split(',')
                .filter_map(|p| {
                    let (id, m) = p.split_once('=')?;
                    Some((id.to_string(), m.parse().ok()?))
                })
                .collect(),
        })
    }

    /// Changes the topology with `change` (a compare-and-set on its epoch, retried if
    /// someone else changed it meanwhile) and waits until the meta group applied it.
    pub fn change_topology(
        &self,
        what: &str,
        change: impl Fn(&mut Topology) -> anyhow::Result<()>,
    ) -> anyhow::Result<Topology> {
        let deadline = Instant::now() + STEP_WAIT;
        let mut last = None;
        loop {
            let now = self.watch(&mut last)?;
            let mut new = now.clone();
            change(&mut new)?;
            if new == now {
                return Ok(now);
            }
            new.epoch = now.epoch + 1;
            let leader = self.leader(&now, Group::Meta)?;
            let sent = self.call(
                &leader,
                &[
                    "CLUSTER",
                    "KELVIN-TOPOLOGY",
                    "SET",
                    &now.epoch.to_string(),
                    &new.render(),
                ],
            );
            let reply = match sent {
                Ok(reply) => reply,
                // The leader lost on the way: try again (the change is read back first).
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Frame::Error(e) = &reply {
                if !e.contains("does not lead") {
                    anyhow::bail!("[ERR] {leader}: {e}");
                }
                // Not proposed (leadership moved, or a stale answer): ask again at once
                // instead of waiting to read back a change that was never made.
                if Instant::now() >= deadline {
                    anyhow::bail!("[ERR] {leader}: {e}");
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            // Read it back from the leader until applied (or overtaken by another change,
            // or the leader lost: then from the top, where the change may be found done).
            // A proposal the leader dropped (a leadership transfer under way) is never
            // applied: after a second it is proposed again (the epoch check at apply
            // keeps a change from landing twice).
            let applied_by = Instant::now() + Duration::from_secs(1);
            while Instant::now() < applied_by {
                let Ok(reply) = self.call(&leader, &["CLUSTER", "KELVIN-TOPOLOGY"]) else {
                    break;
                };
                let t = text(reply, &leader, "CLUSTER KELVIN-TOPOLOGY")?;
                let t = Topology::parse(&t)?;
                if t == new {
                    println!("[OK] Topology epoch {}: {what}", new.epoch);
                    return Ok(t);
                }
                if t.epoch != now.epoch {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() >= deadline {
                anyhow::bail!("[ERR] The meta group did not apply the topology change ({what}) within {STEP_WAIT:?}");
            }
        }
    }

    /// Proposes one membership change to `group`'s leader, then waits until `done` holds
    /// on the leader's view (leaving a lingering joint configuration if needed).
    fn conf(
        &self,
        group: Group,
        op: &str,
        node: &str,
        done: impl Fn(&RaftView) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP_WAIT;
        let mut asked = false;
        let mut joint_since: Option<Instant> = None;
        loop {
            let t = self.topology()?;
            let leader = self.leader(&t, group)?;
            let view = self.raft(&leader, group)?;
            if done(&view) && view.outgoing.is_empty() {
                return Ok(());
            }
            if !view.outgoing.is_empty() {
                let since = *joint_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= JOINT_WAIT {
                    let _ = self.call(
                        &leader,
                        &["CLUSTER", "KELVIN-CONF", &group.to_string(), "LEAVE-JOINT"],
                    )?;
                    joint_since = None;
                }
            } else if !asked || !done(&view) {
                match self.call(
                    &leader,
                    &["CLUSTER", "KELVIN-CONF", &group.to_string(), op, node],
                )? {
                    Frame::Error(e)
                        if e.contains("does not lead") || e.contains("still being applied") => {}
                    Frame::Error(e) => anyhow::bail!("[ERR] Group {group}, {op} {node}: {e}"),
                    _ => asked = true,
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "[ERR] Group {group}: {op} {node} did not complete within {STEP_WAIT:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Adds `node` to `group`'s Raft membership: as a learner, caught up, then a voter.
    fn join_group(&self, group: Group, node: &str) -> anyhow::Result<()> {
        self.conf(group, "ADD-LEARNER", node, |v| {
            v.learners.iter().any(|l| l == node) || v.voters.iter().any(|l| l == node)
        })?;
        // Caught up: its log matches the leader's last index as it was once it joined.
        let deadline = Instant::now() + STEP_WAIT;
        let t = self.topology()?;
        let target = self.raft(&self.leader(&t, group)?, group)?.last_index;
        loop {
            let t = self.topology()?;
            let view = self.raft(&self.leader(&t, group)?, group)?;
            let matched = view
                .matched
                .iter()
                .find(|(id, _)| id == node)
                .map_or(0, |m| m.1);
            if view.voters.iter().any(|v| v == node) || matched >= target {
                break;
            }
            if Instant::now() >= deadline {
                anyhow::bail!("[ERR] Group {group}: the new replica did not catch up within {STEP_WAIT:?} (at {matched} of {target}); is its cluster port reachable?");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("[OK] Group {group}: learner caught up; promoting it through joint consensus");
        self.conf(group, "PROMOTE", node, |v| {
            v.voters.iter().any(|l| l == node)
        })
    }

    /// Takes `node` out of `group`'s Raft membership (handing leadership over first if it
    /// leads).
    fn leave_group(&self, group: Group, node: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP_WAIT;
        loop {
            let t = self.topology()?;
            let leader = self.leader(&t, group)?;
            if t.addr(node).as_deref() != Some(leader.as_str()) {
                break;
            }
            let view = self.raft(&leader, group)?;
            let Some(to) = view.voters.iter().find(|v| *v != node) else {
                anyhow::bail!("[ERR] Group {group}: {node} is its only voter");
            };
            let _ = self.call(
                &leader,
                &["CLUSTER", "KELVIN-TRANSFER", &group.to_string(), to],
            )?;
            if Instant::now() >= deadline {
                anyhow::bail!("[ERR] Group {group}: {node} still leads after {STEP_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.conf(group, "REMOVE", node, |v| {
            !v.voters.iter().any(|l| l == node) && !v.learners.iter().any(|l| l == node)
        })
    }

    /// `cluster add-replica GROUP NODE`.
    pub fn add_replica(&self, group: u64, node: &str) -> anyhow::Result<()> {
        let t = self.topology()?;
        let node = t.find(node).ok_or_else(|| {
            anyhow::anyhow!(
                "[ERR] {node} is not a member: add it first with kelvin-cli cluster add-node"
            )
        })?;
        if t.replicas(group).is_none() {
            anyhow::bail!("[ERR] There is no group {group} (see kelvin-cli cluster status)");
        }
        println!(">>> Adding a replica of group {group} on {node}");
        self.change_topology(&format!("{node} replicates group {group}"), |t| {
            let reps = t.groups.iter_mut().find(|g| g.0 == group).map(|g| &mut g.2);
            if let Some(reps) = reps.filter(|r| !r.contains(&node)) {
                reps.push(node.clone());
            }
            Ok(())
        })?;
        self.join_group(Group::Data(group), &node)?;
        println!("[OK] Group {group}: {node} is a voting replica");
        Ok(())
    }

    /// `cluster remove-replica GROUP NODE`.
    pub fn remove_replica(&self, group: u64, node: &str) -> anyhow::Result<()> {
        let t = self.topology()?;
        let node = t
            .find(node)
            .ok_or_else(|| anyhow::anyhow!("[ERR] {node} is not a member"))?;
        let reps = t
            .replicas(group)
            .ok_or_else(|| anyhow::anyhow!("[ERR] There is no group {group}"))?;
        if reps.iter().all(|r| *r == node) {
            anyhow::bail!("[ERR] {node} holds the only replica of group {group}: add another first (kelvin-cli cluster add-replica {group} NODE SEED)");
        }
        println!(">>> Removing {node}'s replica of group {group}");
        self.leave_group(Group::Data(group), &node)?;
        self.change_topology(&format!("{node} no longer replicates group {group}"), |t| {
            if let Some(g) = t.groups.iter_mut().find(|g| g.0 == group) {
                g.2.retain(|r| *r != node);
            }
            Ok(())
        })?;
        Ok(())
    }

    /// `cluster add-node NEW SEED`.
    pub fn add_node(&self, new: &str) -> anyhow::Result<()> {
        let mut c = connect(new, self.pass)?;
        let id = text(c.call(&["CLUSTER", "MYID"])?, new, "CLUSTER MYID")?;
        let cport = crate::admin::config_port(&mut c, new, "cluster-port")?;
        let rport = crate::admin::config_port(&mut c, new, "redirect-port")?;
        if cport == 0 {
            anyhow::bail!("[ERR] Node {new} has no cluster port: start it with --cluster-port PORT --cluster-secret SECRET");
        }
        let (host, port) = new
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("[ERR] {new}: expected HOST:PORT"))?;
        let t = self.topology()?;
        let member = t.members.iter().any(|m| m.0 == id);
        if !member {
            if let Frame::Array(gs) = c.call(&["CLUSTER", "KELVIN-GROUPS"])? {
                if !gs.is_empty() {
                    anyhow::bail!("[ERR] Node {new} is not empty: it already belongs to a cluster. Start it with an empty --data-dir");
                }
            }
        }
        println!(
            ">>> Adding node {new} ({id}) to the cluster of {}",
            self.seed
        );
        let t = self.change_topology(&format!("{new} is a member"), |t| {
            if !t.members.iter().any(|m| m.0 == id) {
                t.members
                    .push((id.clone(), host.clone(), port, cport, rport));
            }
            Ok(())
        })?;
        match c.call(&["CLUSTER", "KELVIN-JOIN", &t.render()])? {
            // Told to join before (this command interrupted, run again): it knows this
            // cluster's members already.
            Frame::Error(e) if e.contains("already belongs") => {
                let theirs = Topology::parse(&text(
                    c.call(&["CLUSTER", "KELVIN-TOPOLOGY"])?,
                    new,
                    "CLUSTER KELVIN-TOPOLOGY",
                )?)?;
                let ours = |id: &String| t.members.iter().any(|m| &m.0 == id);
                if !member
                    && !theirs
                        .members
                        .iter()
                        .filter(|m| m.0 != id)
                        .any(|m| ours(&m.0))
                {
                    anyhow::bail!("[ERR] {new}: {e}");
                }
            }
            Frame::Error(e) => anyhow::bail!("[ERR] {new}: {e}"),
            _ => {}
        }
        self.join_group(Group::Meta, &id)?;
        println!("[OK] {new} joined the meta group as a voter. It holds no data yet: give it replicas with kelvin-cli cluster add-replica GROUP {new} {}", self.seed);
        Ok(())
    }

    /// `cluster remove-node NODE SEED`.
    pub fn remove_node(&self, who: &str) -> anyhow::Result<()> {
        let t = self.topology()?;
        let node = t.find(who).ok_or_else(|| {
            anyhow::anyhow!("[ERR] {who} is not a member (see kelvin-cli cluster status)")
        })?;
        let addr = t.addr(&node).unwrap_or_default();
        if t.members.len() == 1 {
            anyhow::bail!("[ERR] {who} is the last member");
        }
        println!(">>> Removing node {addr} ({node})");
        for (g, _, reps) in t.groups.iter().filter(|g| g.2.contains(&node)) {
            let now = self.topology()?;
            // Its only replica is here: its slots move to the other groups by live
            // resharding (handover first, no copy of the group made before), and the
            // empty group goes.
            let others = now
                .groups
                .iter()
                .any(|o| o.0 != *g && o.2.iter().any(|r| *r != node));
            if reps.len() == 1 && others {
                crate::reshard::empty_group(self, *g, &node)?;
                continue;
            }
            // A replacement keeps the group's replication: the member with the fewest
            // replicas that has none of this group.
            let load = |id: &str| {
                now.groups
                    .iter()
                    .filter(|g| g.2.iter().any(|r| r == id))
                    .count()
            };
            let spare = now
                .members
                .iter()
                .map(|m| &m.0)
                .filter(|m| **m != node && !reps.contains(m))
                .min_by_key(|m| load(m));
            match spare {
                Some(s) => self.add_replica(*g, s)?,
                None if reps.len() > 1 => println!(
                    "[WARN] Group {g}: no other node to move its replica to; it keeps {} replicas",
                    reps.len() - 1
                ),
                None => anyhow::bail!(
                    "[ERR] Group {g} has its only replica on {addr} and no other node can take it"
                ),
            }
            self.remove_replica(*g, &node)?;
        }
        self.leave_group(Group::Meta, &node)?;
        self.change_topology(&format!("{addr} is no longer a member"), |t| {
            t.members.retain(|m| m.0 != node);
            Ok(())
        })?;
        // As redis-cli --cluster del-node does: the removed node goes away.
        let _ = self.call(&addr, &["SHUTDOWN"]);
        println!("[OK] {addr} left the cluster and was shut down");
        Ok(())
    }
}
