//! The nemesis: faults on a schedule. Each [`Fault`] knows how to start on the cluster
//! and how it ends; the schedule alternates a fault with a quiet spell, and every start
//! and end goes into the timeline. Each fault confirms it took effect (the killed
//! process is gone, the paused container frozen, the partition's rules read back, the
//! leadership moved, the skewed clock seen in `TIME`, the member gone from the
//! topology, the moving slots' `migrate` line or new owner seen in the topology); one
//! that did not is a no-op, said so in the timeline and not counted. The first round tries
//! every fault until it took effect (at most [`FAULT_ATTEMPTS`] times), and the run lasts
//! until that round is over, however long the time limit.
//!
//! How it fits: `run` runs [`Nemesis::run`] on its own thread while the workers record the
//! history. A new kind of fault is one more [`Fault`] variant with its `start` (and its
//! [`Undo`]), and joins the schedule by name; `reshard`'s are in [`moves`], its choices
//! in [`crate::reshard`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::{IteratorRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use kelvin_client::members::Topology;

use crate::cluster::{Cluster, Node};
use crate::reshard::Hot;
use moves::Resharding;

mod moves;

/// Replicas per group in the compose clusters (`--replicas 3`).
const REPLICAS: usize = 3;

/// The id of the member at `node`'s address, if it is a member.
fn node_id_at(t: &Topology, node: &Node) -> Option<String> {
    t.find(&node.client_addr())
}

/// The last line of an error (kelvin-cli prints its steps before the failure), a
/// backtrace after it left out.
fn last_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let text = text.split("Stack backtrace:").next().unwrap_or("");
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Tries of one fault in the first round before its no-ops are left to fail the run.
pub const FAULT_ATTEMPTS: usize = 3;

/// How far a skewed node's `TIME` may be from the skew asked for (or a tenth of it, if
/// more) for the skew to count as in effect: the request's own time, and rounding.
const SKEW_TOLERANCE_MS: i64 = 250;

/// How long a killed node's container gets to be seen stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How long a transferred leadership gets to move before the transfer counts as a no-op.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// How long a fault lasts, and the quiet spell after it.
pub const FAULT_TIME: Duration = Duration::from_secs(6);
pub const QUIET_TIME: Duration = Duration::from_secs(4);

/// A fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the leader of a random group, restart it at the end.
    KillLeader,
    /// SIGKILL a random node.
    KillRandom,
    /// SIGKILL a majority of the nodes.
    KillMajority,
    /// SIGKILL every node.
    KillAll,
    /// SIGSTOP a random node (the cgroup freezer), SIGCONT at the end.
    Pause,
    /// Split the nodes into a majority and a minority.
    PartitionMajority,
    /// Cut the leader of a random group off from every other node.
    IsolateLeader,
    /// Hand a random group's leadership to another replica.
    TransferLeader,
    /// Shift the wall clock of a few nodes (the `clock-skew` fail point) by up to a
    /// minute either way, and move leaderships around every second meanwhile (so that
    /// leaders with different clocks follow each other); clocks back at the end.
    ClockSkew,
    /// Remove a random replica of a random group (`kelvin-cli cluster remove-replica`);
    /// add it back at the end (`add-replica`: a learner that catches up, then a voter).
    MemberReplica,
    /// Remove a random node from the cluster (`kelvin-cli cluster remove-node`, which
    /// shuts it down); at the end it comes back as a new machine with an empty disk at
    /// the same address (`add-node`, then `add-replica` for every group short of
    /// replicas).
    MemberNode,
    /// Move slot ranges that hold the workers' keys from a group to another (an existing
    /// one, or a new one on a node that leads none) with `kelvin-cli cluster reshard
    /// --slot-ranges`, and back again at the end (a new group, emptied, is removed); a
    /// kill, pause or isolation of the source's, the target's or the meta group's leader
    /// (or the driver's process ending at a phase boundary) goes with one of the two
    /// moves, at a random moment or while the driver holds at a phase boundary. The end
    /// waits for every migration to finish or roll back.
    Reshard,
}

impl Fault {
    pub const ALL: [Fault; 12] = [
        Fault::KillLeader,
        Fault::KillRandom,
        Fault::KillMajority,
        Fault::KillAll,
        Fault::Pause,
        Fault::PartitionMajority,
        Fault::IsolateLeader,
        Fault::TransferLeader,
        Fault::ClockSkew,
        Fault::MemberReplica,
        Fault::MemberNode,
        Fault::Reshard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillRandom => "kill-random",
            Fault::KillMajority => "kill-majority",
            Fault::KillAll => "kill-all",
            Fault::Pause => "pause",
            Fault::PartitionMajority => "partition-majority",
            Fault::IsolateLeader => "isolate-leader",
            Fault::TransferLeader => "transfer-leader",
            Fault::ClockSkew => "clock-skew",
            Fault::MemberReplica => "member-replica",
            Fault::MemberNode => "member-node",
            Fault::Reshard => "reshard",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One fault as it happened: when it started and ended (seconds since the test began),
/// and on what.
#[derive(Debug, Clone)]
pub struct Event {
    pub fault: Fault,
    pub start: f64,
    pub end: f64,
    pub detail: String,
    /// Confirmed in effect; `false` for a no-op.
    pub took_effect: bool,
}

/// A fault just started: what it did, how it ends, and whether it was confirmed.
struct Started {
    detail: String,
    undo: Undo,
    took_effect: bool,
}

impl Started {
    fn new(detail: impl Into<String>, undo: Undo, took_effect: bool) -> Started {
        Started {
            detail: detail.into(),
            undo,
            took_effect,
        }
    }
}

/// What ends a fault besides [`Cluster::heal`].
#[derive(Debug)]
enum Undo {
    Nothing,
    /// Switch the `clock-skew` fail point off on these nodes.
    ClockSkew(Vec<Node>),
    /// Add the replica back; if its removal failed, finish the removal first.
    Replica {
        group: u64,
        node: Node,
        finish: bool,
    },
    /// Bring the node back on an empty disk and give it replicas; if its removal
    /// failed, finish the removal first.
    Node {
        node: Node,
        finish: bool,
    },
    /// Wait for the move, move the slots back, remove an emptied new group.
    Reshard(Box<Resharding>),
}

/// How long the end of a membership fault may take (each step of it retried).
const UNDO_WAIT: Duration = Duration::from_secs(120);

pub struct Nemesis {
    pub cluster: Arc<Cluster>,
    pub faults: Vec<Fault>,
    pub stop: Arc<AtomicBool>,
    /// Set once every fault has been tried in the first round (the workers run until
    /// then).
    pub round_done: Arc<AtomicBool>,
    pub until: Instant,
    pub began: Instant,
    pub seed: u64,
    pub events: Arc<Mutex<Vec<Event>>>,
    /// The keys in the slots `reshard` moves, announced to the workers.
    pub hot: Arc<Hot>,
}

impl Nemesis {
    pub fn spawn(self) -> std::thread::JoinHandle<anyhow::Result<()>> {
        std::thread::spawn(move || self.run())
    }

    /// Quiet, fault, quiet, fault... until the time is up and every fault has been
    /// tried; ends with everything healed.
    pub fn run(self) -> anyhow::Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        // The first round: every fault in a random order, each again (up to
        // FAULT_ATTEMPTS tries) while it turns out a no-op. Then rounds of every fault
        // once until the time is up.
        let mut owed: Vec<(Fault, usize)> = self.faults.iter().map(|&f| (f, 1)).collect();
        owed.shuffle(&mut rng);
        self.round_done.store(owed.is_empty(), Ordering::Relaxed);
        let mut deck: Vec<Fault> = Vec::new();
        let result = (|| {
            while self.sleep(QUIET_TIME) {
                let (fault, attempt) = match owed.pop() {
                    Some(next) => (next.0, Some(next.1)),
                    None if Instant::now() >= self.until => break,
                    None => {
                        if deck.is_empty() {
                            deck = self.faults.clone();
                            deck.shuffle(&mut rng);
                        }
                        let Some(fault) = deck.pop() else {
                            break;
                        };
                        (fault, None)
                    }
                };
                let start = self.began.elapsed().as_secs_f64();
                let started = self.start(fault, &mut rng)?;
                let detail = started.detail;
                tracing::info!(fault = fault.name(), %detail, took_effect = started.took_effect, "fault started");
                if fault == Fault::ClockSkew {
                    self.move_leaders(&mut rng, FAULT_TIME);
                } else {
                    self.sleep(FAULT_TIME);
                }
                let (confirmed, detail) = match self.undo(started.undo) {
                    Ok((confirmed, more)) if more.is_empty() => (confirmed, detail),
                    Ok((confirmed, more)) => (confirmed, format!("{detail}; {more}")),
                    Err(e) => {
                        // In the timeline before it fails the run.
                        self.push(Event {
                            fault,
                            start,
                            end: self.began.elapsed().as_secs_f64(),
                            detail: format!("{detail}; FAILED: {}", last_line(&e)),
                            took_effect: started.took_effect,
                        });
                        return Err(e);
                    }
                };
                let took_effect = started.took_effect && confirmed;
                self.cluster.heal()?;
                let end = self.began.elapsed().as_secs_f64();
                tracing::info!(fault = fault.name(), took_effect, "fault healed");
                if let Some(n) = attempt.filter(|&n| !took_effect && n < FAULT_ATTEMPTS) {
                    owed.insert(0, (fault, n + 1));
                }
                if owed.is_empty() {
                    self.round_done.store(true, Ordering::Relaxed);
                }
                self.push(Event {
                    fault,
                    start,
                    end,
                    detail,
                    took_effect,
                });
            }
            Ok(())
        })();
        self.round_done.store(true, Ordering::Relaxed);
        self.cluster.heal()?;
        result
    }

    fn push(&self, event: Event) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }

    /// For up to `d`: every second, a random group's leadership goes to another of its
    /// replicas (under clock skew: leaders with different clocks follow each other).
    fn move_leaders(&self, rng: &mut impl Rng, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && self.sleep(Duration::from_secs(1)) {
            let _ = self.transfer_leader(rng);
        }
    }

    /// Hands a random group's leadership to a random other node (a no-op, said in the
    /// answer, when that node is not a voter of the group); true once the old leader
    /// no longer leads the group.
    fn transfer_leader(&self, rng: &mut impl Rng) -> (String, bool) {
        let Some((g, n)) = self.leader(rng) else {
            return ("no leader known".into(), false);
        };
        // Another replica of the group, as the topology lists them (a node that is not
        // one refuses the transfer: with 5 nodes and 3 replicas, half the nodes); any
        // other node if the topology cannot be read.
        let replicas: Option<Vec<String>> = self.cluster.topology().ok().and_then(|t| {
            t.groups
                .iter()
                .find(|(id, ..)| i64::try_from(*id).ok() == Some(g))
                .map(|(.., r)| r.clone())
        });
        let leader_id = self.node_id(&n);
        let to = self
            .cluster
            .nodes
            .iter()
            .filter(|x| **x != n)
            .filter_map(|x| self.node_id(x))
            .filter(|id| Some(id) != leader_id.as_ref())
            .filter(|id| replicas.as_ref().is_none_or(|r| r.contains(id)))
            .collect::<Vec<_>>();
        match to.choose(rng).cloned() {
            Some(id) => {
                let r = self
                    .cluster
                    .call(&n, &["KELVIN-TRANSFER", &g.to_string(), &id]);
                // Refused when the target is not a voter of that group: the fault is then
                // a no-op, and says so.
                let moved = r.is_ok() && self.stops_leading(&n, g);
                let r = r
                    .map(|_| {
                        if moved {
                            "moved"
                        } else {
                            "accepted, not moved"
                        }
                        .to_string()
                    })
                    .unwrap_or_else(|e| last_line(&e));
                (format!("group {g} from {}: {r}", n.name), moved)
            }
            None => ("no target".into(), false),
        }
    }

    /// Waits (up to [`TRANSFER_WAIT`]) until `node` no longer leads `group`.
    fn stops_leading(&self, node: &Node, group: i64) -> bool {
        let deadline = Instant::now() + TRANSFER_WAIT;
        while Instant::now() < deadline {
            // A node that does not answer proves nothing.
            let leads = self
                .cluster
                .groups(node)
                .map(|gs| gs.iter().any(|g| g.group == group && g.leads));
            if leads == Some(false) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Sleeps up to `d`; false once the run is over (stopped, or the time is up and the
    /// first round done).
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            let over = Instant::now() >= self.until && self.round_done.load(Ordering::Relaxed);
            if self.stop.load(Ordering::Relaxed) || over {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    fn start(&self, fault: Fault, rng: &mut impl Rng) -> anyhow::Result<Started> {
        match fault {
            Fault::ClockSkew => return self.skew(rng),
            Fault::MemberReplica => return self.remove_replica(rng),
            Fault::MemberNode => return self.remove_node(rng),
            Fault::Reshard => return self.reshard(rng),
            _ => {}
        }
        let nodes = &self.cluster.nodes;
        let c = &self.cluster;
        let names = |ns: &[Node]| {
            ns.iter()
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let kill = |victims: &[Node]| self.kill(victims);
        let cut = |a: &[Node], b: &[Node]| self.cut(a, b);
        let random = nodes.choose(rng).cloned();
        let started = match fault {
            Fault::KillLeader => match self.leader(rng) {
                Some((g, n)) => {
                    let dead = kill(std::slice::from_ref(&n))?;
                    Started::new(
                        format!("{} (leader of group {g})", n.name),
                        Undo::Nothing,
                        dead,
                    )
                }
                None => Started::new("no leader known", Undo::Nothing, false),
            },
            Fault::KillRandom => match random {
                Some(n) => {
                    let dead = kill(std::slice::from_ref(&n))?;
                    Started::new(n.name, Undo::Nothing, dead)
                }
                None => Started::new("no node", Undo::Nothing, false),
            },
            Fault::KillMajority | Fault::KillAll => {
                let mut victims = nodes.clone();
                victims.shuffle(rng);
                if fault == Fault::KillMajority {
                    victims.truncate(nodes.len() / 2 + 1);
                }
                let dead = kill(&victims)?;
                Started::new(names(&victims), Undo::Nothing, dead)
            }
            Fault::Pause => match random {
                Some(n) => {
                    c.pause(&n)?;
                    let frozen = c.is_paused(&n)?;
                    Started::new(n.name, Undo::Nothing, frozen)
                }
                None => Started::new("no node", Undo::Nothing, false),
            },
            Fault::PartitionMajority => {
                let mut all = nodes.clone();
                all.shuffle(rng);
                let minority = all.split_off(nodes.len() / 2 + 1);
                let done = cut(&all, &minority)?;
                Started::new(
                    format!("{} | {}", names(&all), names(&minority)),
                    Undo::Nothing,
                    done,
                )
            }
            Fault::IsolateLeader => match self.leader(rng) {
                Some((g, n)) => {
                    let others: Vec<Node> = nodes.iter().filter(|x| **x != n).cloned().collect();
                    let done = cut(std::slice::from_ref(&n), &others)?;
                    Started::new(
                        format!("{} (leader of group {g})", n.name),
                        Undo::Nothing,
                        done,
                    )
                }
                None => Started::new("no leader known", Undo::Nothing, false),
            },
            Fault::TransferLeader => {
                let (detail, moved) = self.transfer_leader(rng);
                Started::new(detail, Undo::Nothing, moved)
            }
            Fault::ClockSkew | Fault::MemberReplica | Fault::MemberNode | Fault::Reshard => {
                Started::new("", Undo::Nothing, false)
            }
        };
        Ok(started)
    }

    /// SIGKILL; true once every victim's container process is gone (docker notes the
    /// exit a moment after the signal, so it gets a few seconds).
    fn kill(&self, victims: &[Node]) -> anyhow::Result<bool> {
        let c = &self.cluster;
        for n in victims {
            c.kill(n)?;
        }
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let mut all_dead = true;
            for n in victims {
                all_dead &= !c.is_running(n)?;
            }
            if all_dead || Instant::now() >= deadline {
                return Ok(all_dead);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Cuts `a` from `b`; true once every running node on either side drops the other
    /// side (read back).
    fn cut(&self, a: &[Node], b: &[Node]) -> anyhow::Result<bool> {
        let c = &self.cluster;
        c.partition(a, b)?;
        let mut cut_any = false;
        for (x, others) in a.iter().map(|x| (x, b)).chain(b.iter().map(|x| (x, a))) {
            match c.drops_from(x, others)? {
                Some(true) => cut_any = true,
                Some(false) => return Ok(false),
                None => {}
            }
        }
        Ok(cut_any)
    }

    /// A few nodes' wall clocks shifted: each by a few hundred ms to a minute, ahead or
    /// behind.
    fn skew(&self, rng: &mut impl Rng) -> anyhow::Result<Started> {
        let mut victims = self.cluster.nodes.clone();
        victims.shuffle(rng);
        victims.truncate(rng.gen_range(1..=self.cluster.nodes.len() / 2 + 1));
        let mut detail = Vec::new();
        let mut skewed = Vec::new();
        for n in &victims {
            let magnitude = if rng.gen_bool(0.5) {
                rng.gen_range(200..2_000)
            } else {
                rng.gen_range(5_000..60_000)
            };
            let ms: i64 = if rng.gen_bool(0.5) {
                magnitude
            } else {
                -magnitude
            };
            let r = self.cluster.call(
                n,
                &["KELVIN-FAILPOINT", "clock-skew", &format!("return({ms})")],
            );
            match r {
                // In effect once the node's TIME shows the shift (the containers share the
                // host's clock, so the host's time is the reference).
                Ok(_) => match self.clock_offset_ms(n) {
                    Some(offset) if (offset - ms).abs() <= SKEW_TOLERANCE_MS.max(ms.abs() / 10) => {
                        detail.push(format!("{} {ms:+} ms", n.name));
                        skewed.push(n.clone());
                    }
                    offset => detail.push(format!(
                        "{} {ms:+} ms not in effect (TIME off by {offset:?} ms)",
                        n.name
                    )),
                },
                // Refused for want of the fail point is a broken setup, not a fault.
                Err(e) if e.to_string().contains("not compiled in") => return Err(e),
                Err(e) => detail.push(format!("{}: {e}", n.name)),
            }
        }
        let took_effect = !skewed.is_empty();
        Ok(Started::new(
            detail.join(", "),
            Undo::ClockSkew(skewed),
            took_effect,
        ))
    }

    /// How far the node's clock (its `TIME`) is from the host's, in ms; `None` if it
    /// does not answer.
    fn clock_offset_ms(&self, node: &Node) -> Option<i64> {
        let host_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let mut c = crate::workload::connect(&node.client_addr())?;
        let before = host_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut c).ok()?;
        let after = host_ms();
        Some(secs * 1000 + micros / 1000 - (before + after) / 2)
    }

    /// A node that answers other than `not`, as the seed of `kelvin-cli cluster ...`.
    fn seed(&self, not: &Node) -> Option<String> {
        self.cluster
            .nodes
            .iter()
            .filter(|n| *n != not && !self.cluster.is_removed(n))
            .find(|n| crate::workload::connect(&n.client_addr()).is_some())
            .map(Node::client_addr)
    }

    fn remove_replica(&self, rng: &mut impl Rng) -> anyhow::Result<Started> {
        let t = self.cluster.topology()?;
        let Some((group, _, replicas)) = t.groups.iter().filter(|g| g.2.len() > 1).choose(rng)
        else {
            return Ok(Started::new(
                "no group with two replicas",
                Undo::Nothing,
                false,
            ));
        };
        let Some(node) = replicas
            .choose(rng)
            .and_then(|id| self.cluster.node_of(&t, id))
        else {
            return Ok(Started::new("replica not found", Undo::Nothing, false));
        };
        let seed = self.seed(&node).unwrap_or_default();
        let g = group.to_string();
        let addr = node.client_addr();
        let r = self
            .cluster
            .cli(&["cluster", "remove-replica", &g, &addr, &seed]);
        // Failed half-way or not: the end puts the replica back either way. In effect
        // once the topology no longer lists the node among the group's replicas.
        let gone = r.is_ok()
            && self.cluster.topology().is_ok_and(|t| {
                node_id_at(&t, &node)
                    .is_none_or(|id| !t.replicas(*group).is_some_and(|r| r.contains(&id)))
            });
        let detail = format!(
            "group {group} on {}: {}",
            node.name,
            r.map(|_| if gone { "removed" } else { "still listed" }.to_string())
                .unwrap_or_else(|e| last_line(&e))
        );
        Ok(Started::new(
            detail,
            Undo::Replica {
                group: *group,
                node,
                finish: !gone,
            },
            gone,
        ))
    }

    fn remove_node(&self, rng: &mut impl Rng) -> anyhow::Result<Started> {
        let Some(node) = self.cluster.nodes.choose(rng).cloned() else {
            return Ok(Started::new("no node", Undo::Nothing, false));
        };
        let seed = self.seed(&node).unwrap_or_default();
        let r = self.cluster.cli(&[
            "cluster",
            "remove-node",
            &node.client_addr(),
            &seed,
            "--yes",
        ]);
        let (detail, gone) = match r {
            Ok(_) => {
                self.cluster.set_removed(&node, true);
                // SHUTDOWN ends the container; stop it should SHUTDOWN not have arrived.
                self.cluster.kill(&node)?;
                // In effect once the topology no longer lists it.
                let gone = self
                    .cluster
                    .topology()
                    .is_ok_and(|t| node_id_at(&t, &node).is_none());
                let what = if gone { "removed" } else { "still listed" };
                (format!("{} {what}", node.name), gone)
            }
            Err(e) => (format!("{}: {}", node.name, last_line(&e)), false),
        };
        Ok(Started::new(
            detail,
            Undo::Node {
                node,
                finish: !gone,
            },
            gone,
        ))
    }

    /// Ends a fault's own part; the membership steps are retried until they hold.
    /// Returns false if the end shows the fault was a no-op after all, and what the end
    /// did, to add to the fault's detail (empty if nothing worth saying).
    fn undo(&self, undo: Undo) -> anyhow::Result<(bool, String)> {
        if let Undo::Reshard(r) = undo {
            return self.end_reshard(*r);
        }
        self.undo_other(undo).map(|done| (done, String::new()))
    }

    fn undo_other(&self, undo: Undo) -> anyhow::Result<bool> {
        match undo {
            Undo::Nothing | Undo::Reshard(_) => Ok(true),
            Undo::ClockSkew(nodes) => {
                for n in &nodes {
                    // A node killed since has lost its fail points with its process.
                    let _ = self
                        .cluster
                        .call(n, &["KELVIN-FAILPOINT", "clock-skew", "off"]);
                }
                Ok(true)
            }
            Undo::Replica {
                group,
                node,
                finish,
            } => {
                // Heal first: a membership change needs the other faults gone.
                self.cluster.heal()?;
                if finish {
                    // A remove-replica that failed may have stopped half-way (found by a
                    // campaign: the group's Raft configuration without the replica, the
                    // topology still listing it, a stale copy left on the node). Each
                    // step is safe to run again: finish it, as an operator would, then
                    // add the replica back.
                    self.retry(
                        &format!("remove-replica {group} {} (finishing)", node.name),
                        || {
                            let t = self.cluster.topology()?;
                            let listed = node_id_at(&t, &node).is_some_and(|id| {
                                t.replicas(group).is_some_and(|r| r.contains(&id))
                            });
                            if !listed {
                                return Ok(());
                            }
                            let seed = self.seed(&node).unwrap_or_default();
                            let g = group.to_string();
                            let addr = node.client_addr();
                            self.cluster
                                .cli(&["cluster", "remove-replica", &g, &addr, &seed])?;
                            Ok(())
                        },
                    )?;
                }
                self.retry(&format!("add-replica {group} {}", node.name), || {
                    let t = self.cluster.topology()?;
                    let id = node_id_at(&t, &node);
                    if id
                        .as_ref()
                        .is_some_and(|id| t.replicas(group).is_some_and(|r| r.contains(id)))
                        && self
                            .cluster
                            .cli(&["cluster", "status", &node.client_addr()])
                            .is_ok()
                    {
                        return Ok(());
                    }
                    self.add_replica(group, &node)
                })?;
                Ok(true)
            }
            Undo::Node { node, finish } => {
                self.cluster.heal()?;
                if finish && node_id_at(&self.cluster.topology()?, &node).is_some() {
                    // remove-node failed: it may have stopped after the node left the
                    // meta group but before the topology let it go (found by a campaign:
                    // the node then never learns another topology). Finish it (each step
                    // is safe to run again), then bring the node back as a new one.
                    self.cluster.start(&node)?;
                    self.retry(&format!("remove-node {} (finishing)", node.name), || {
                        if node_id_at(&self.cluster.topology()?, &node).is_none() {
                            return Ok(());
                        }
                        let seed = self.seed(&node).unwrap_or_default();
                        let addr = node.client_addr();
                        self.cluster
                            .cli(&["cluster", "remove-node", &addr, &seed, "--yes"])?;
                        Ok(())
                    })?;
                    self.cluster.set_removed(&node, true);
                    self.cluster.kill(&node)?;
                }
                let t = self.cluster.topology()?;
                if node_id_at(&t, &node).is_some() {
                    // remove-node failed before the node left: finish what it began by
                    // giving back the replicas it may have lost.
                    self.cluster.start(&node)?;
                } else {
                    self.cluster.recreate(&node)?;
                    self.cluster.set_removed(&node, false);
                    let addr = node.client_addr();
                    self.retry(&format!("add-node {}", node.name), || {
                        let t = self.cluster.topology()?;
                        if node_id_at(&t, &node).is_some()
                            && self.cluster.call(&node, &["KELVIN-RAFT", "META"]).is_ok()
                        {
                            return Ok(());
                        }
                        let seed = self.seed(&node).unwrap_or_default();
                        self.cluster
                            .cli(&["cluster", "add-node", &addr, &seed, "--yes"])?;
                        Ok(())
                    })?;
                }
                // Every group back to the replication it had (3, or all nodes if fewer).
                let want = REPLICAS.min(self.cluster.nodes.len());
                let short: Vec<u64> = self
                    .cluster
                    .topology()?
                    .groups
                    .iter()
                    .filter(|g| g.2.len() < want)
                    .map(|g| g.0)
                    .collect();
                for group in short {
                    self.retry(&format!("add-replica {group} {}", node.name), || {
                        let t = self.cluster.topology()?;
                        if t.replicas(group).is_some_and(|r| r.len() >= want) {
                            return Ok(());
                        }
                        self.add_replica(group, &node)
                    })?;
                }
                Ok(true)
            }
        }
    }

    /// `kelvin-cli cluster add-replica GROUP NODE SEED`.
    fn add_replica(&self, group: u64, node: &Node) -> anyhow::Result<()> {
        let seed = self.seed(node).unwrap_or_default();
        let group = group.to_string();
        self.cluster
            .cli(&["cluster", "add-replica", &group, &node.client_addr(), &seed])?;
        Ok(())
    }

    /// Runs `step` until it succeeds, for up to [`UNDO_WAIT`].
    fn retry(
        &self,
        what: &str,
        mut step: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + UNDO_WAIT;
        loop {
            match step() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    anyhow::bail!("{what} did not succeed within {UNDO_WAIT:?}: {e:#}")
                }
                Err(e) => {
                    tracing::info!(what, error = %last_line(&e), "retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn node_id(&self, node: &Node) -> Option<String> {
        self.cluster.call(node, &["MYID"]).ok()
    }

    /// A random group and the node leading it, as the nodes report it.
    fn leader(&self, rng: &mut impl Rng) -> Option<(i64, Node)> {
        self.leaders().choose(rng).cloned()
    }

    /// Every group with the node leading it, as the nodes report it.
    fn leaders(&self) -> Vec<(i64, Node)> {
        let mut leaders = Vec::new();
        for n in &self.cluster.nodes {
            for g in self.cluster.groups(n).unwrap_or_default() {
                if g.leads {
                    leaders.push((g.group, n.clone()));
                }
            }
        }
        leaders
    }
}
