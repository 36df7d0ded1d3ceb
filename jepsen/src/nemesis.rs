//! The nemesis: faults on a schedule. Each [`Fault`] knows how to start on the cluster
//! and how it ends; the schedule alternates a fault with a quiet spell, and every start
//! and end goes into the timeline.
//!
//! How it fits: `run` runs [`Nemesis::run`] on its own thread while the workers record the
//! history. A new kind of fault (resharding's "move slots during faults") is one more
//! [`Fault`] variant with its `start`, and joins the schedule by name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::{IteratorRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use kelvin_client::members::Topology;

use crate::cluster::{Cluster, Node};

/// Replicas per group in the compose clusters (`--replicas 3`).
const REPLICAS: usize = 3;

/// The id of the member at `node`'s address, if it is a member.
fn node_id_at(t: &Topology, node: &Node) -> Option<String> {
    t.find(&node.client_addr())
}

/// The last line of an error (kelvin-cli prints its steps before the failure).
fn last_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

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
}

impl Fault {
    pub const ALL: [Fault; 11] = [
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
}

/// What ends a fault besides [`Cluster::heal`].
#[derive(Debug)]
enum Undo {
    Nothing,
    /// Switch the `clock-skew` fail point off on these nodes.
    ClockSkew(Vec<Node>),
    /// Add the replica back.
    Replica {
        group: u64,
        node: Node,
    },
    /// Bring the node back on an empty disk and give it replicas.
    Node(Node),
}

/// How long the end of a membership fault may take (each step of it retried).
const UNDO_WAIT: Duration = Duration::from_secs(120);

pub struct Nemesis {
    pub cluster: Arc<Cluster>,
    pub faults: Vec<Fault>,
    pub stop: Arc<AtomicBool>,
    pub until: Instant,
    pub began: Instant,
    pub seed: u64,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Nemesis {
    pub fn spawn(self) -> std::thread::JoinHandle<anyhow::Result<()>> {
        std::thread::spawn(move || self.run())
    }

    /// Quiet, fault, quiet, fault... until the time is up; ends with everything healed.
    pub fn run(self) -> anyhow::Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        // Rounds: every fault once in a random order, then again, so that a run long
        // enough for one round has met every fault.
        let mut deck: Vec<Fault> = Vec::new();
        let result = (|| {
            while self.sleep(QUIET_TIME) {
                if deck.is_empty() {
                    deck = self.faults.clone();
                    deck.shuffle(&mut rng);
                }
                let Some(fault) = deck.pop() else {
                    break;
                };
                let start = self.began.elapsed().as_secs_f64();
                let (detail, undo) = self.start(fault, &mut rng)?;
                tracing::info!(fault = fault.name(), %detail, "fault started");
                if fault == Fault::ClockSkew {
                    self.move_leaders(&mut rng, FAULT_TIME);
                } else {
                    self.sleep(FAULT_TIME);
                }
                self.undo(undo)?;
                self.cluster.heal()?;
                let end = self.began.elapsed().as_secs_f64();
                tracing::info!(fault = fault.name(), "fault healed");
                if let Ok(mut e) = self.events.lock() {
                    e.push(Event {
                        fault,
                        start,
                        end,
                        detail,
                    });
                }
            }
            Ok(())
        })();
        self.cluster.heal()?;
        result
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
    /// answer, when that node is not a voter of the group).
    fn transfer_leader(&self, rng: &mut impl Rng) -> String {
        let Some((g, n)) = self.leader(rng) else {
            return "no leader known".into();
        };
        let to = self
            .cluster
            .nodes
            .iter()
            .filter(|x| **x != n)
            .collect::<Vec<_>>();
        match to.choose(rng).and_then(|t| self.node_id(t)) {
            Some(id) => {
                let r = self
                    .cluster
                    .call(&n, &["KELVIN-TRANSFER", &g.to_string(), &id]);
                // Refused when the target is not a voter of that group: the fault is then
                // a no-op, and says so.
                let r = r
                    .map(|_| "ok".to_string())
                    .unwrap_or_else(|e| last_line(&e));
                format!("group {g} from {}: {r}", n.name)
            }
            None => "no target".into(),
        }
    }

    /// Sleeps up to `d`; false once the run is over.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    fn start(&self, fault: Fault, rng: &mut impl Rng) -> anyhow::Result<(String, Undo)> {
        match fault {
            Fault::ClockSkew => return self.skew(rng),
            Fault::MemberReplica => return self.remove_replica(rng),
            Fault::MemberNode => return self.remove_node(rng),
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
        let random = || nodes.choose(&mut rand::thread_rng()).cloned();
        let detail = match fault {
            Fault::KillLeader => match self.leader(rng) {
                Some((g, n)) => {
                    c.kill(&n)?;
                    format!("{} (leader of group {g})", n.name)
                }
                None => "no leader known".into(),
            },
            Fault::KillRandom => match random() {
                Some(n) => {
                    c.kill(&n)?;
                    n.name
                }
                None => String::new(),
            },
            Fault::KillMajority | Fault::KillAll => {
                let mut victims = nodes.clone();
                victims.shuffle(rng);
                if fault == Fault::KillMajority {
                    victims.truncate(nodes.len() / 2 + 1);
                }
                for n in &victims {
                    c.kill(n)?;
                }
                names(&victims)
            }
            Fault::Pause => match random() {
                Some(n) => {
                    c.pause(&n)?;
                    n.name
                }
                None => String::new(),
            },
            Fault::PartitionMajority => {
                let mut all = nodes.clone();
                all.shuffle(rng);
                let minority = all.split_off(nodes.len() / 2 + 1);
                c.partition(&all, &minority)?;
                format!("{} | {}", names(&all), names(&minority))
            }
            Fault::IsolateLeader => match self.leader(rng) {
                Some((g, n)) => {
                    let others: Vec<Node> = nodes.iter().filter(|x| **x != n).cloned().collect();
                    c.partition(std::slice::from_ref(&n), &others)?;
                    format!("{} (leader of group {g})", n.name)
                }
                None => "no leader known".into(),
            },
            Fault::TransferLeader => self.transfer_leader(rng),
            Fault::ClockSkew | Fault::MemberReplica | Fault::MemberNode => String::new(),
        };
        Ok((detail, Undo::Nothing))
    }

    /// A few nodes' wall clocks shifted: each by a few hundred ms to a minute, ahead or
    /// behind.
    fn skew(&self, rng: &mut impl Rng) -> anyhow::Result<(String, Undo)> {
        let mut victims = self.cluster.nodes.clone();
        victims.shuffle(rng);
        victims.truncate(rng.gen_range(1..=self.cluster.nodes.len() / 2 + 1));
        let mut detail = Vec::new();
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
                Ok(_) => detail.push(format!("{} {ms:+} ms", n.name)),
                // Refused for want of the fail point is a broken setup, not a fault.
                Err(e) if e.to_string().contains("not compiled in") => return Err(e),
                Err(e) => detail.push(format!("{}: {e}", n.name)),
            }
        }
        Ok((detail.join(", "), Undo::ClockSkew(victims)))
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

    fn remove_replica(&self, rng: &mut impl Rng) -> anyhow::Result<(String, Undo)> {
        let t = self.cluster.topology()?;
        let Some((group, _, replicas)) = t.groups.iter().filter(|g| g.2.len() > 1).choose(rng)
        else {
            return Ok(("no group with two replicas".into(), Undo::Nothing));
        };
        let Some(node) = replicas
            .choose(rng)
            .and_then(|id| self.cluster.node_of(&t, id))
        else {
            return Ok(("replica not found".into(), Undo::Nothing));
        };
        let seed = self.seed(&node).unwrap_or_default();
        let g = group.to_string();
        let addr = node.client_addr();
        let r = self
            .cluster
            .cli(&["cluster", "remove-replica", &g, &addr, &seed]);
        // Failed half-way or not: the end puts the replica back either way.
        let detail = format!(
            "group {group} on {}: {}",
            node.name,
            r.map(|_| "removed".to_string())
                .unwrap_or_else(|e| last_line(&e))
        );
        Ok((
            detail,
            Undo::Replica {
                group: *group,
                node,
            },
        ))
    }

    fn remove_node(&self, rng: &mut impl Rng) -> anyhow::Result<(String, Undo)> {
        let Some(node) = self.cluster.nodes.choose(rng).cloned() else {
            return Ok((String::new(), Undo::Nothing));
        };
        let seed = self.seed(&node).unwrap_or_default();
        let r = self.cluster.cli(&[
            "cluster",
            "remove-node",
            &node.client_addr(),
            &seed,
            "--yes",
        ]);
        let detail = match r {
            Ok(_) => {
                self.cluster.set_removed(&node, true);
                // SHUTDOWN ends the container; stop it should SHUTDOWN not have arrived.
                self.cluster.kill(&node)?;
                format!("{} removed", node.name)
            }
            Err(e) => format!("{}: {}", node.name, last_line(&e)),
        };
        Ok((detail, Undo::Node(node)))
    }

    /// Ends a fault's own part; the membership steps are retried until they hold.
    fn undo(&self, undo: Undo) -> anyhow::Result<()> {
        match undo {
            Undo::Nothing => Ok(()),
            Undo::ClockSkew(nodes) => {
                for n in &nodes {
                    // A node killed since has lost its fail points with its process.
                    let _ = self
                        .cluster
                        .call(n, &["KELVIN-FAILPOINT", "clock-skew", "off"]);
                }
                Ok(())
            }
            Undo::Replica { group, node } => {
                // Heal first: a membership change needs the other faults gone.
                self.cluster.heal()?;
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
                })
            }
            Undo::Node(node) => {
                self.cluster.heal()?;
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
                Ok(())
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
        let mut leaders = Vec::new();
        for n in &self.cluster.nodes {
            for g in self.cluster.groups(n).unwrap_or_default() {
                if g.leads {
                    leaders.push((g.group, n.clone()));
                }
            }
        }
        leaders.choose(rng).cloned()
    }
}
