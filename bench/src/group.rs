//! Servers that work as one: a Kelvin Raft group formed with `kelvin-cli cluster create`,
//! or a Redis Cluster formed with `redis-cli --cluster create`. Dropping a [`Group`]
//! stops all its servers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::servers::{
    command, connect, info_field, temp_dir, Kind, Programs, ServerGuard, Spec, HOST,
};

/// How long forming a group (the CLI, then the election or the slot agreement) may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Running servers of one kind that were formed into one group or cluster.
pub struct Group {
    pub kind: Kind,
    pub nodes: Vec<ServerGuard>,
}

impl Group {
    /// `size` Kelvin nodes started as `spec` says, each with a `--cluster-port` and one
    /// shared `--cluster-secret`, formed with `kelvin-cli cluster create ... --replicas
    /// <size> --groups <groups> --yes` (each group replicated on every node, leaders
    /// spread). Returns once every node reports `cluster_state:ok` and one reports
    /// `raft_role:leader`.
    pub fn start_kelvin(
        programs: &Programs,
        spec: &Spec,
        size: usize,
        groups: usize,
    ) -> Result<Group> {
        Group::start_kelvin_replicas(programs, spec, size, size, groups)
    }

    /// As [`Group::start_kelvin`], with `--replicas <replicas>` (copies of each group).
    pub fn start_kelvin_replicas(
        programs: &Programs,
        spec: &Spec,
        size: usize,
        replicas: usize,
        groups: usize,
    ) -> Result<Group> {
        let spec = Spec {
            cluster_secret: Some(cluster_secret()),
            ..spec.clone()
        };
        let group = Group::start_nodes(programs, &spec, size)?;
        let (replicas, groups) = (replicas.to_string(), groups.to_string());
        group.form(
            programs.kelvin_cli()?,
            &["cluster", "create"],
            &["--replicas", &replicas, "--groups", &groups, "--yes"],
        )?;
        group.wait_cluster_ok(FORM_TIMEOUT)?;
        group.leader(FORM_TIMEOUT)?;
        Ok(group)
    }

    /// `size` redis-server masters started as `spec` says with `--cluster-enabled yes`,
    /// formed with `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`
    /// (each master holds a share of the slots, nothing is replicated). Returns once
    /// every node reports `cluster_state:ok`.
    pub fn start_redis(
        programs: &Programs,
        redis_cli: &Path,
        spec: &Spec,
        size: usize,
    ) -> Result<Group> {
        let spec = Spec {
            cluster_enabled: true,
            ..spec.clone()
        };
        let group = Group::start_nodes(programs, &spec, size)?;
        group.form(
            redis_cli,
            &["--cluster", "create"],
            &["--cluster-replicas", "0", "--cluster-yes"],
        )?;
        group.wait_cluster_ok(FORM_TIMEOUT)?;
        Ok(group)
    }

    fn start_nodes(programs: &Programs, spec: &Spec, size: usize) -> Result<Group> {
        let mut nodes = Vec::new();
        for _ in 0..size {
            nodes.push(ServerGuard::start_spec(spec, programs)?);
        }
        Ok(Group {
            kind: spec.kind,
            nodes,
        })
    }

    /// Runs `program BEFORE... 127.0.0.1:PORT... AFTER...` over the nodes' main ports.
    fn form(&self, program: &Path, before: &[&str], after: &[&str]) -> Result<()> {
        let mut cmd = Command::new(program);
        cmd.args(before);
        for n in &self.nodes {
            cmd.arg(format!("{HOST}:{}", n.port));
        }
        cmd.args(after);
        let what = format!("{} {}", program.display(), before.join(" "));
        let (ok, output) = run_with_timeout(&mut cmd, FORM_TIMEOUT).context(what.clone())?;
        if !ok {
            bail!("{what} failed:\n{output}\nnode logs:\n{}", self.log_tails());
        }
        Ok(())
    }

    /// Waits until every node reports `cluster_state:ok` in CLUSTER INFO.
    pub fn wait_cluster_ok(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for n in &self.nodes {
            loop {
                let state = cluster_info(n.port, "cluster_state");
                if state.as_ref().ok().map(String::as_str) == Some("ok") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} node on port {} does not report cluster_state:ok after {timeout:?} \
                         ({state:?}); logs:\n{}",
                        self.kind.name(),
                        n.port,
                        self.log_tails()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Kelvin: the index of the node that reports `raft_role:leader`, waiting up to
    /// `timeout`.
    pub fn leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if role(n.port).ok().as_deref() == Some("leader") {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no node of the group reports raft_role:leader after {timeout:?}; logs:\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The masters that CLUSTER NODES on the first node shows, with their replicas.
    pub fn masters(&self) -> Result<Vec<Master>> {
        let mut s = connect(self.nodes[0].port, Duration::from_secs(2))?;
        let text = command(&mut s, &["CLUSTER", "NODES"])?;
        Ok(parse_masters(&text))
    }

    pub fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            n.check_alive()?;
        }
        Ok(())
    }

    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let redirect = n
                    .redirect_port
                    .map(|p| format!(", redirect port {p}"))
                    .unwrap_or_default();
                format!(
                    "--- {} node on port {} (cluster port {}{redirect}):\n{}",
                    self.kind.name(),
                    n.port,
                    n.cluster_port.unwrap_or(0),
                    n.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A master of CLUSTER NODES: its advertised address, how many slots it serves and how
/// many nodes replicate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub host: String,
    pub port: u16,
    pub slots: u32,
    pub replicas: usize,
}

/// The masters with slots in a CLUSTER NODES reply (`<id> <ip:port@cport> <flags>
/// <master> <ping> <pong> <epoch> <link> <slot>...`), in the order of the reply.
pub fn parse_masters(text: &str) -> Vec<Master> {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8)
        .collect();
    let mut masters = Vec::new();
    for f in &lines {
        let flags: Vec<&str> = f[2].split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|x| x.starts_with("fail")) {
            continue;
        }
        let slots: u32 = f[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                    (Ok(a), Ok(b)) if b >= a => b - a + 1,
                    _ => 0,
                },
                None => u32::from(r.parse::<u32>().is_ok()),
            })
            .sum();
        let addr = f[1].split('@').next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        if slots == 0 {
            continue;
        }
        masters.push(Master {
            host: host.to_string(),
            port,
            slots,
            replicas: lines.iter().filter(|g| g[3] == f[0]).count(),
        });
    }
    masters
}

/// The `--cluster-secret` of the Kelvin nodes this process starts (a node that joins
/// later needs the same).
pub fn cluster_secret() -> String {
    format!("kelvin-bench-{}", std::process::id())
}

/// A field of CLUSTER INFO.
fn cluster_info(port: u16, field: &str) -> Result<String> {
    let mut s = connect(port, Duration::from_secs(2))?;
    let info = command(&mut s, &["CLUSTER", "INFO"])?;
    info_field(&info, field)
        .map(str::to_string)
        .with_context(|| format!("no {field} in CLUSTER INFO"))
}

/// `raft_role` from `INFO raft`.
fn role(port: u16) -> Result<String> {
    let mut s = connect(port, Duration::from_secs(2))?;
    let info = command(&mut s, &["INFO", "raft"])?;
    info_field(&info, "raft_role")
        .map(str::to_string)
        .context("no raft_role in INFO raft")
}

/// Runs `cmd` to completion (killed after `timeout`); returns (success, stdout+stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(bool, String)> {
    let dir = temp_dir(Kind::Kelvin)?;
    let out_path = dir.join("out");
    let out = std::fs::File::create(&out_path)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(status) => Ok((status.success(), text)),
        None => bail!("did not finish within {timeout:?}; killed; output:\n{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_of_a_kelvin_group() {
        let text = "\
a 127.0.0.1:7302@7202 master - 0 1 1 connected 0-16383
b 127.0.0.1:7303@7203 slave a 0 1 1 connected
c 127.0.0.1:7301@7201 myself,slave a 0 1 1 connected
";
        assert_eq!(
            parse_masters(text),
            vec![Master {
                host: "127.0.0.1".into(),
                port: 7302,
                slots: 16384,
                replicas: 2
            }]
        );
    }

    #[test]
    fn masters_of_a_redis_cluster() {
        let text = "\
x 127.0.0.1:6001@16001 myself,master - 0 0 1 connected 0-5460
y 127.0.0.1:6002@16002 master - 0 0 2 connected 5461-10922 [5461->-z]
z 127.0.0.1:6003@16003 master - 0 0 3 connected 10923-16382 16383
w 127.0.0.1:6004@16004 master,fail - 0 0 4 disconnected
v 127.0.0.1:6005@16005 master - 0 0 5 connected
";
        let m = parse_masters(text);
        assert_eq!(
            m.iter().map(|m| (m.port, m.slots)).collect::<Vec<_>>(),
            vec![(6001, 5461), (6002, 5462), (6003, 5461)]
        );
        assert!(m.iter().all(|m| m.replicas == 0));
    }
}
