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

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, Node};

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
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::KillLeader,
        Fault::KillRandom,
        Fault::KillMajority,
        Fault::KillAll,
        Fault::Pause,
        Fault::PartitionMajority,
        Fault::IsolateLeader,
        Fault::TransferLeader,
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
        let result = (|| {
            while self.sleep(QUIET_TIME) {
                let Some(&fault) = self.faults.choose(&mut rng) else {
                    break;
                };
                let start = self.began.elapsed().as_secs_f64();
                let detail = self.start(fault, &mut rng)?;
                tracing::info!(fault = fault.name(), %detail, "fault started");
                self.sleep(FAULT_TIME);
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

    fn start(&self, fault: Fault, rng: &mut impl Rng) -> anyhow::Result<String> {
        let nodes = &self.cluster.nodes;
        let c = &self.cluster;
        let names = |ns: &[Node]| {
            ns.iter()
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let random = || nodes.choose(&mut rand::thread_rng()).cloned();
        Ok(match fault {
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
            Fault::TransferLeader => match self.leader(rng) {
                Some((g, n)) => {
                    let to = nodes.iter().filter(|x| **x != n).collect::<Vec<_>>();
                    match to.choose(rng).and_then(|t| self.node_id(t)) {
                        Some(id) => {
                            // Refused when the target is not a voter of that group: fine,
                            // the fault is then a no-op, and says so.
                            let r =
                                self.call(&n, &["CLUSTER", "KELVIN-TRANSFER", &g.to_string(), &id]);
                            format!("group {g} from {}: {}", n.name, r.unwrap_or_else(|e| e))
                        }
                        None => "no target".into(),
                    }
                }
                None => "no leader known".into(),
            },
        })
    }

    fn call(&self, node: &Node, args: &[&str]) -> Result<String, String> {
        let mut c = crate::workload::connect(&node.client_addr()).ok_or("unreachable")?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut c) {
            Ok(v) => Ok(format!("{v:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn node_id(&self, node: &Node) -> Option<String> {
        let mut c = crate::workload::connect(&node.client_addr())?;
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query::<String>(&mut c)
            .ok()
    }

    /// A random group and the node leading it, as the nodes report it.
    fn leader(&self, rng: &mut impl Rng) -> Option<(i64, Node)> {
        let mut leaders = Vec::new();
        for n in &self.cluster.nodes {
            let Some(mut c) = crate::workload::connect(&n.client_addr()) else {
                continue;
            };
            let Ok(groups) = redis::cmd("CLUSTER")
                .arg("KELVIN-GROUPS")
                .query::<Vec<Vec<redis::Value>>>(&mut c)
            else {
                continue;
            };
            for g in groups {
                let field = |name: &str| {
                    g.chunks(2)
                        .find(|kv| matches!(&kv[0], redis::Value::BulkString(b) if b == name.as_bytes()))
                        .map(|kv| kv[1].clone())
                };
                let led =
                    matches!(field("role"), Some(redis::Value::BulkString(r)) if r == b"leader");
                if let (true, Some(redis::Value::Int(id))) = (led, field("group")) {
                    leaders.push((id, n.clone()));
                }
            }
        }
        leaders.choose(rng).cloned()
    }
}
