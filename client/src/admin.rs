//! `kelvin-cli cluster ...`: forming a cluster, in the manner of `redis-cli --cluster`.
//!
//! ```text
//! kelvin-cli cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 --replicas 3 --yes
//! ```
//! asks every node its id (`CLUSTER MYID`) and cluster port (`CONFIG GET cluster-port`),
//! shows the plan, sends each node the member list (`CLUSTER KELVIN-BOOTSTRAP`), and
//! waits until the group has elected a leader.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crate::{format_frame, Client, Frame};

/// How long `create` waits for the new group to elect a leader.
pub const ELECTION_WAIT: Duration = Duration::from_secs(20);

struct NodeInfo {
    addr: String,
    host: String,
    port: u16,
    id: String,
    cport: u16,
    /// Its `--redirect-port`, 0 if none.
    rport: u16,
}

fn connect(addr: &str, pass: Option<&str>) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr, Some(Duration::from_secs(5)))
        .map_err(|e| anyhow::anyhow!("[ERR] Could not connect to {addr}: {e}"))?;
    if let Some(p) = pass {
        let r = c.call(&["AUTH", p])?;
        if let Frame::Error(e) = r {
            anyhow::bail!("[ERR] {addr}: AUTH failed: {e}");
        }
    }
    Ok(c)
}

fn text(frame: Frame, addr: &str, what: &str) -> anyhow::Result<String> {
    match frame {
        Frame::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Frame::Simple(s) => Ok(s),
        other => anyhow::bail!(
            "[ERR] {addr}: unexpected reply to {what}: {}",
            format_frame(&other)
        ),
    }
}

/// Runs `kelvin-cli cluster <args>`.
pub fn cluster(args: &[String], pass: Option<&str>) -> anyhow::Result<()> {
    match args.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("create") => create(&args[1..], pass),
        _ => anyhow::bail!("usage: kelvin-cli cluster create HOST:PORT... [--replicas N] [--yes]"),
    }
}

fn create(args: &[String], pass: Option<&str>) -> anyhow::Result<()> {
    let mut addrs = Vec::new();
    let mut replicas = None;
    let mut yes = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--replicas" => {
                let n = it
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| anyhow::anyhow!("[ERR] --replicas needs a number"))?;
                replicas = Some(n);
            }
            "--yes" => yes = true,
            _ if a.starts_with("--") => anyhow::bail!("[ERR] unknown option {a}"),
            _ => addrs.push(a.clone()),
        }
    }
    if addrs.is_empty() {
        anyhow::bail!("[ERR] give the nodes: kelvin-cli cluster create HOST:PORT... --replicas N");
    }
    let replicas = replicas.unwrap_or(addrs.len());
    if replicas != addrs.len() {
        anyhow::bail!(
            "[ERR] --replicas {replicas} with {} nodes: this release forms one group replicated on every node; give --replicas {}",
            addrs.len(),
            addrs.len()
        );
    }
    let mut nodes = Vec::new();
    for addr in &addrs {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("[ERR] {addr}: expected HOST:PORT"))?;
        let mut c = connect(addr, pass)?;
        let id = text(c.call(&["CLUSTER", "MYID"])?, addr, "CLUSTER MYID")?;
        let cport = config_port(&mut c, addr, "cluster-port")?;
        let rport = config_port(&mut c, addr, "redirect-port")?;
        if cport == 0 {
            anyhow::bail!("[ERR] Node {addr} has no cluster port: start it with --cluster-port PORT --cluster-secret SECRET");
        }
        if nodes.iter().any(|n: &NodeInfo| n.id == id) {
            anyhow::bail!("[ERR] Node {addr} is listed twice (same node id {id})");
        }
        nodes.push(NodeInfo {
            addr: addr.clone(),
            host,
            port,
            id,
            cport,
            rport,
        });
    }
    println!(
        ">>> Forming one Raft group over {} nodes, all 16384 slots:",
        nodes.len()
    );
    for n in &nodes {
        if n.rport != 0 {
            println!(
                "M: {} {} (cluster port {}, redirect port {})",
                n.id, n.addr, n.cport, n.rport
            );
        } else {
            println!("M: {} {} (cluster port {})", n.id, n.addr, n.cport);
        }
    }
    if !yes {
        print!("Can I set the above configuration? (type 'yes' to accept): ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "yes" {
            anyhow::bail!("[ERR] Aborted");
        }
    }
    let mut members: Vec<String> = Vec::new();
    for n in &nodes {
        members.extend([
            n.id.clone(),
            n.host.clone(),
            n.port.to_string(),
            n.cport.to_string(),
            n.rport.to_string(),
        ]);
    }
    for n in &nodes {
        let mut c = connect(&n.addr, pass)?;
        let mut cmd = vec!["CLUSTER".to_string(), "KELVIN-BOOTSTRAP".to_string()];
        cmd.extend(members.iter().cloned());
        if let Frame::Error(e) = c.call(&cmd)? {
            anyhow::bail!("[ERR] Node {}: {e}", n.addr);
        }
    }
    println!(">>> Waiting for the group to elect a leader");
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        for n in &nodes {
            let Ok(mut c) = connect(&n.addr, pass) else {
                continue;
            };
            let Ok(info) = c.call(&["INFO", "raft"]) else {
                continue;
            };
            let info = text(info, &n.addr, "INFO").unwrap_or_default();
            if info.lines().any(|l| l.trim() == "raft_role:leader") {
                println!("[OK] Leader elected: {} {}", n.id, n.addr);
                println!("[OK] All 16384 slots covered.");
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("[ERR] No leader after {ELECTION_WAIT:?}: check that the nodes reach each other's cluster ports and share the cluster secret");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A port setting of a node (`CONFIG GET name`); 0 if it has none.
fn config_port(c: &mut Client, addr: &str, name: &str) -> anyhow::Result<u16> {
    Ok(match c.call(&["CONFIG", "GET", name])? {
        Frame::Array(v) if v.len() == 2 => text(v[1].clone(), addr, "CONFIG GET")?
            .parse::<u16>()
            .unwrap_or(0),
        Frame::Map(v) if v.len() == 1 => text(v[0].1.clone(), addr, "CONFIG GET")?
            .parse::<u16>()
            .unwrap_or(0),
        _ => 0,
    })
}
