//! The cluster under test: the compose cluster of `docker/`, driven with docker-compose,
//! docker and (for partitions) iptables run inside each node's network namespace.
//!
//! How it fits: [`Cluster::up`] starts `docker/compose-N.yml` from a clean state (its
//! `init` service forms the cluster), the nemesis calls the fault primitives here
//! ([`Cluster::kill`], [`Cluster::pause`], [`Cluster::partition`]...), and the run ends
//! with [`Cluster::heal`], the final checks and [`Cluster::down`]. Every fault is on the
//! project's own containers; clients reach the nodes on the private network from the host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kelvin_client::members::Topology;

/// The client port of every node (as the compose files set it).
pub const CLIENT_PORT: u16 = 6379;
/// How long `up` waits for the compose cluster to form itself.
pub const FORM_WAIT: Duration = Duration::from_secs(180);

/// One node: its compose service name and its address on the private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
}

impl Node {
    pub fn client_addr(&self) -> String {
        format!("{}:{CLIENT_PORT}", self.ip)
    }
}

/// One group as a node's `CLUSTER KELVIN-GROUPS` shows it (-1 for a missing number).
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: i64,
    /// This node leads it.
    pub leads: bool,
}

/// A running compose cluster.
pub struct Cluster {
    project: String,
    compose_file: PathBuf,
    /// The image the nodes run (`KELVIN_IMAGE` of the compose files).
    image: String,
    /// `target/release/kelvin-cli` of this checkout (admin commands from the host).
    cli: PathBuf,
    pub nodes: Vec<Node>,
    /// Container ids by node, looked up once (they stay across kill and start; asking
    /// docker-compose each time costs about a second).
    ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Nodes out of the cluster (removed by a membership change, not yet back): `heal`
    /// leaves them stopped.
    removed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Logs of containers replaced by [`Cluster::recreate`]: (node, log).
    old_logs: std::sync::Mutex<Vec<(String, String)>>,
}

/// Runs a command, failing with its output if it fails.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// Brings `docker/compose-<nodes>.yml` up from a clean state (anything left by an
    /// earlier run of `project` is removed with its data first) and waits until its
    /// `init` service has formed the cluster.
    pub fn up(
        repo: &Path,
        project: &str,
        image: &str,
        nodes: usize,
        cli: PathBuf,
    ) -> anyhow::Result<Cluster> {
        let compose_file = repo.join(format!("docker/compose-{nodes}.yml"));
        if !compose_file.exists() {
            bail!("{} does not exist (3 or 5 nodes)", compose_file.display());
        }
        let subnet = if nodes == 3 { 30 } else { 31 };
        let cluster = Cluster {
            project: project.to_string(),
            compose_file,
            image: image.to_string(),
            cli,
            nodes: (1..=nodes)
                .map(|i| Node {
                    name: format!("n{i}"),
                    ip: Ipv4Addr::new(172, subnet, 0, 10 + i as u8),
                })
                .collect(),
            ids: Default::default(),
            removed: Default::default(),
            old_logs: Default::default(),
        };
        cluster.down();
        run(cluster.compose().args(["up", "-d"]))?;
        let deadline = Instant::now() + FORM_WAIT;
        loop {
            let id = run(cluster.compose().args(["ps", "-q", "init"]))?;
            let id = id.trim();
            if !id.is_empty() {
                let state = run(Command::new("docker").args([
                    "inspect",
                    "-f",
                    "{{.State.Status}} {{.State.ExitCode}}",
                    id,
                ]))?;
                match state.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["exited", "0"] => break,
                    ["exited", code] => {
                        let logs = run(cluster.compose().args(["logs", "--no-color", "init"]))
                            .unwrap_or_default();
                        bail!("the cluster did not form (init exited {code}):\n{logs}");
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                bail!("the cluster did not form within {FORM_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(cluster)
    }

    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.env("KELVIN_IMAGE", &self.image)
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.compose_file);
        c
    }

    /// Stops and removes the containers, the network and the data (best effort).
    pub fn down(&self) {
        let _ = run(self
            .compose()
            .args(["down", "-v", "--remove-orphans", "-t", "2"]));
    }

    fn container(&self, node: &Node) -> anyhow::Result<String> {
        if let Some(id) = self
            .ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(&node.name).cloned())
        {
            return Ok(id);
        }
        let id = run(self.compose().args(["ps", "-q", &node.name]))?;
        let id = id.trim().to_string();
        if id.is_empty() {
            bail!("no container for {}", node.name);
        }
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(node.name.clone(), id.clone());
        }
        Ok(id)
    }

    /// SIGKILL: the process dies at once, as in a crash; its disk stays.
    pub fn kill(&self, node: &Node) -> anyhow::Result<()> {
        let id = self.container(node)?;
        // Already stopped is fine: the nemesis may kill a node twice.
        let _ = run(Command::new("docker").args(["kill", "-s", "KILL", &id]));
        Ok(())
    }

    /// Starts a killed node again (a no-op for a running one).
    pub fn start(&self, node: &Node) -> anyhow::Result<()> {
        run(Command::new("docker").args(["start", &self.container(node)?])).map(|_| ())
    }

    /// SIGSTOP (docker pause: the cgroup freezer): the process stops answering.
    pub fn pause(&self, node: &Node) -> anyhow::Result<()> {
        let id = self.container(node)?;
        let _ = run(Command::new("docker").args(["pause", &id]));
        Ok(())
    }

    pub fn resume(&self, node: &Node) -> anyhow::Result<()> {
        let id = self.container(node)?;
        let paused = run(Command::new("docker").args(["inspect", "-f", "{{.State.Paused}}", &id]))?;
        if paused.trim() == "true" {
            run(Command::new("docker").args(["unpause", &id]))?;
        }
        Ok(())
    }

    /// Whether the node's process runs (docker's view: not exited, not being killed).
    pub fn is_running(&self, node: &Node) -> anyhow::Result<bool> {
        let id = self.container(node)?;
        let state = run(Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &id]))?;
        Ok(state.trim() == "true")
    }

    /// Whether the node's container is frozen (docker pause).
    pub fn is_paused(&self, node: &Node) -> anyhow::Result<bool> {
        let id = self.container(node)?;
        let state = run(Command::new("docker").args(["inspect", "-f", "{{.State.Paused}}", &id]))?;
        Ok(state.trim() == "true")
    }

    /// Whether `node` drops what comes from every one of `from` (the rules
    /// [`Cluster::partition`] installs, read back with `iptables -S INPUT`); `None` if
    /// the node does not run.
    pub fn drops_from(&self, node: &Node, from: &[Node]) -> anyhow::Result<Option<bool>> {
        let Some(pid) = self.pid(node)? else {
            return Ok(None);
        };
        let rules =
            run(Command::new("nsenter").args(["-t", &pid, "-n", "iptables", "-S", "INPUT"]))?;
        Ok(Some(from.iter().all(|o| {
            let rule = format!("-A INPUT -s {}/32 -j DROP", o.ip);
            rules.lines().any(|l| l.trim() == rule)
        })))
    }

    fn pid(&self, node: &Node) -> anyhow::Result<Option<String>> {
        let id = self.container(node)?;
        let pid = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &id]))?;
        let pid = pid.trim().to_string();
        Ok((pid != "0").then_some(pid))
    }

    fn iptables(&self, node: &Node, args: &[&str]) -> anyhow::Result<()> {
        let Some(pid) = self.pid(node)? else {
            return Ok(()); // Not running: nothing to cut (rules go with its netns).
        };
        run(Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables"])
            .args(args))
        .map(|_| ())
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways (each drops
    /// what comes from the other side). The host keeps reaching every node, so clients
    /// see a partitioned node as slow or failing, not gone.
    pub fn partition(&self, a: &[Node], b: &[Node]) -> anyhow::Result<()> {
        for (x, others) in a.iter().map(|x| (x, b)).chain(b.iter().map(|x| (x, a))) {
            for o in others {
                self.iptables(x, &["-A", "INPUT", "-s", &o.ip.to_string(), "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Ends every fault: partitions removed, paused nodes resumed, killed nodes started
    /// (not the nodes a membership change took out of the cluster).
    pub fn heal(&self) -> anyhow::Result<()> {
        for n in &self.nodes {
            if self.is_removed(n) {
                continue;
            }
            self.resume(n)?;
            self.start(n)?;
            self.iptables(n, &["-F", "INPUT"])?;
        }
        Ok(())
    }

    /// Marks a node as out of the cluster (or back in it).
    pub fn set_removed(&self, node: &Node, removed: bool) {
        if let Ok(mut r) = self.removed.lock() {
            if removed {
                r.insert(node.name.clone());
            } else {
                r.remove(&node.name);
            }
        }
    }

    pub fn is_removed(&self, node: &Node) -> bool {
        self.removed
            .lock()
            .map(|r| r.contains(&node.name))
            .unwrap_or(false)
    }

    /// Replaces the node's container with a new one on an empty data volume (as a new
    /// machine at the old address), keeping the old container's log, and waits until it
    /// answers.
    pub fn recreate(&self, node: &Node) -> anyhow::Result<()> {
        if let Ok(log) = self.logs(node) {
            if let Ok(mut old) = self.old_logs.lock() {
                old.push((node.name.clone(), log));
            }
        }
        run(self.compose().args([
            "up",
            "-d",
            "--no-deps",
            "--force-recreate",
            "--renew-anon-volumes",
            &node.name,
        ]))?;
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(&node.name);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = crate::workload::connect(&node.client_addr())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok());
            if up.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} does not answer after being recreated", node.name);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Logs of the containers [`Cluster::recreate`] replaced.
    pub fn old_logs(&self) -> Vec<(String, String)> {
        self.old_logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `CLUSTER <args>` on a node, its reply as it came.
    pub fn query(&self, node: &Node, args: &[&str]) -> anyhow::Result<redis::Value> {
        let mut c = crate::workload::connect(&node.client_addr())
            .with_context(|| format!("{} does not answer", node.name))?;
        redis::cmd("CLUSTER")
            .arg(args)
            .query::<redis::Value>(&mut c)
            .with_context(|| format!("CLUSTER {} on {}", args.join(" "), node.name))
    }

    /// `CLUSTER <args>` on a node, its reply as text.
    pub fn call(&self, node: &Node, args: &[&str]) -> anyhow::Result<String> {
        let v = self.query(node, args)?;
        Ok(match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::SimpleString(s) => s,
            redis::Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    }

    /// The groups the node hosts; `None` if it does not answer.
    pub fn groups(&self, node: &Node) -> Option<Vec<GroupView>> {
        let mut c = crate::workload::connect(&node.client_addr())?;
        let groups = redis::cmd("CLUSTER")
            .arg("KELVIN-GROUPS")
            .query::<Vec<Vec<redis::Value>>>(&mut c)
            .ok()?;
        Some(
            groups
                .iter()
                .map(|g| {
                    let field = |name: &str| {
                        g.chunks(2)
                            .find(|kv| matches!(&kv[0], redis::Value::BulkString(b) if b == name.as_bytes()))
                            .map(|kv| &kv[1])
                    };
                    let int = |name: &str| match field(name) {
                        Some(redis::Value::Int(i)) => *i,
                        _ => -1,
                    };
                    GroupView {
                        group: int("group"),
                        leads: matches!(field("role"), Some(redis::Value::BulkString(r)) if r == b"leader"),
                    }
                })
                .collect(),
        )
    }

    /// The topology, as the first node that answers has it.
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let mut last = anyhow::anyhow!("no node");
        for n in self.nodes.iter().filter(|n| !self.is_removed(n)) {
            match self.call(n, &["KELVIN-TOPOLOGY"]) {
                Ok(text) => return Topology::parse(&text),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The node at `id` in the topology.
    pub fn node_of(&self, t: &Topology, id: &str) -> Option<Node> {
        let addr = t.addr(id)?;
        self.nodes.iter().find(|n| n.client_addr() == addr).cloned()
    }

    /// The node's log so far (stdout and stderr).
    pub fn logs(&self, node: &Node) -> anyhow::Result<String> {
        let id = self.container(node)?;
        let out = Command::new("docker")
            .args(["logs", &id])
            .output()
            .context("docker logs")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(text)
    }

    /// `kelvin-cli <args>` from the host.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        // No backtrace after its error (RUST_BACKTRACE set around the harness would put
        // one there): a fault's detail is the error's last line.
        run(Command::new(&self.cli)
            .args(args)
            .env("RUST_BACKTRACE", "0"))
    }

    /// Waits until `cluster status` says every group has a leader and all its replicas.
    pub fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let seed = self.nodes[0].client_addr();
        loop {
            match self.cli(&["cluster", "status", &seed]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("the cluster is not healthy after {within:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}
