//! `kelvin-cli cluster ...`: forming a cluster, in the manner of `redis-cli --cluster`.
//!
//! ```text
//! kelvin-cli cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 --replicas 3 --yes
//! ```
//! asks every node its id (`CLUSTER MYID`) and cluster port (`CONFIG GET cluster-port`),
//! shows the plan, sends each node the member list (`CLUSTER KELVIN-BOOTSTRAP`), and
//! waits until the group has elected a leader.
//!
//! ```text
//! kelvin-cli cluster status 127.0.0.1:7001
//! ```
//! reads the topology from the seed (`CLUSTER SHARDS`), asks every node it names for the
//! groups it hosts (`CLUSTER KELVIN-GROUPS`), and prints a table of groups (slots, leader,
//! replicas up, term, applied index, keys, bytes, health) and one of nodes.

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

pub(crate) fn connect(addr: &str, pass: Option<&str>) -> anyhow::Result<Client> {
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

pub(crate) fn text(frame: Frame, addr: &str, what: &str) -> anyhow::Result<String> {
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
        Some("status") if args.len() == 2 => status(&args[1], pass),
        Some("rebalance") if args.len() == 2 => rebalance(&args[1], pass),
        Some("rebalance") if args.len() == 3 && args[2] == "--slots" => {
            crate::reshard::rebalance(&args[1], pass)
        }
        Some("heat") if args.len() == 2 || args.len() == 4 => {
            let top = match args.get(2..4) {
                Some([kw, n]) if kw == "--top" => n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("[ERR] --top takes a number"))?,
                _ => 10,
            };
            crate::heat::heat(&args[1], pass, top)
        }
        Some("reshard") if args.len() >= 2 => crate::reshard::reshard(&args[1..], pass),
        Some("migrations") if args.len() == 2 => crate::reshard::migrations(&args[1], pass),
        Some("add-node") if args.len() >= 3 => {
            confirm(args, &format!("Add {} to the cluster of {}?", args[1], args[2]))?;
            admin(&args[2], pass).add_node(&args[1])
        }
        Some("remove-node") if args.len() >= 3 => {
            confirm(
                args,
                &format!(
                    "Move {}'s replicas away, remove it from the cluster of {} and shut it down?",
                    args[1], args[2]
                ),
            )?;
            admin(&args[2], pass).remove_node(&args[1])
        }
        Some("add-replica") if args.len() >= 4 => {
            admin(&args[3], pass).add_replica(group_number(&args[1])?, &args[2])
        }
        Some("remove-replica") if args.len() >= 4 => {
            admin(&args[3], pass).remove_replica(group_number(&args[1])?, &args[2])
        }
        _ => anyhow::bail!(
            "usage: kelvin-cli cluster create HOST:PORT... [--replicas N] [--groups G] [--yes]\n       kelvin-cli cluster status HOST:PORT\n       kelvin-cli cluster rebalance HOST:PORT [--slots]\n       kelvin-cli cluster heat HOST:PORT [--top N]\n       kelvin-cli cluster reshard SEED_HOST:PORT --slots N --to NODE [--from NODE,...] [--yes] [--wait-drained]\n       kelvin-cli cluster reshard SEED_HOST:PORT --slot-ranges RANGES --to NODE [--yes] [--wait-drained]\n       kelvin-cli cluster reshard SEED_HOST:PORT --wait-drained\n       kelvin-cli cluster migrations SEED_HOST:PORT\n       kelvin-cli cluster add-node NEW_HOST:PORT SEED_HOST:PORT [--yes]\n       kelvin-cli cluster remove-node NODE SEED_HOST:PORT [--yes]\n       kelvin-cli cluster add-replica GROUP NODE SEED_HOST:PORT\n       kelvin-cli cluster remove-replica GROUP NODE SEED_HOST:PORT\n(NODE: HOST:PORT or node id)"
        ),
    }
}

fn admin<'a>(seed: &str, pass: Option<&'a str>) -> crate::members::Admin<'a> {
    crate::members::Admin {
        seed: seed.to_string(),
        pass,
    }
}

fn group_number(arg: &str) -> anyhow::Result<u64> {
    arg.parse().map_err(|_| {
        anyhow::anyhow!("[ERR] {arg}: expected a group number (see kelvin-cli cluster status)")
    })
}

/// Asks before a change, unless `--yes` is among `args`.
fn confirm(args: &[String], question: &str) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "--yes") {
        return Ok(());
    }
    print!("{question} (type 'yes' to accept): ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        anyhow::bail!("[ERR] Aborted");
    }
    Ok(())
}

fn create(args: &[String], pass: Option<&str>) -> anyhow::Result<()> {
    let mut addrs = Vec::new();
    let mut replicas = None;
    let mut groups = 1usize;
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
            "--groups" => {
                groups = it
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|g| (1..=16384).contains(g))
                    .ok_or_else(|| {
                        anyhow::anyhow!("[ERR] --groups needs a number from 1 to 16384")
                    })?;
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
    if replicas == 0 || replicas > addrs.len() {
        anyhow::bail!(
            "[ERR] --replicas {replicas} with {} nodes: each group needs from 1 to {} replicas (one per node); give --replicas {} or fewer, or more nodes",
            addrs.len(),
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
    if let Some(epoch) = already_formed(&nodes, pass) {
        println!(
            "[OK] These {} nodes already form a cluster (topology epoch {epoch}): nothing to do.",
            nodes.len()
        );
        return Ok(());
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
    let plan = plan_groups(nodes.len(), groups, replicas);
    for (g, (a, b), reps) in &plan {
        let names: Vec<&str> = reps.iter().map(|&i| nodes[i].addr.as_str()).collect();
        println!(
            "Group {g}: slots {a}-{b}, replicas {} (first stands for leader)",
            names.join(" ")
        );
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
    for (g, (a, b), reps) in &plan {
        let ids: Vec<&str> = reps.iter().map(|&i| nodes[i].id.as_str()).collect();
        members.extend([
            "GROUP".to_string(),
            g.to_string(),
            format!("{a}-{b}"),
            ids.join(","),
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
    println!(">>> Waiting for every group to elect a leader");
    let deadline = Instant::now() + ELECTION_WAIT;
    let mut led: std::collections::BTreeMap<i64, String> = Default::default();
    loop {
        for n in &nodes {
            let Ok(Frame::Array(gs)) =
                connect(&n.addr, pass).and_then(|mut c| c.call(&["CLUSTER", "KELVIN-GROUPS"]))
            else {
                continue;
            };
            for g in gs.iter().map(fields) {
                if field_text(&g, "role") == "leader" {
                    led.entry(field_int(&g, "group"))
                        .or_insert_with(|| n.addr.clone());
                }
            }
        }
        if led.len() == plan.len() {
            for (g, addr) in &led {
                println!("[OK] Group {g}: leader {addr}");
            }
            println!("[OK] All 16384 slots covered.");
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("[ERR] {} of {} groups without a leader after {ELECTION_WAIT:?}: check that the nodes reach each other's cluster ports and share the cluster secret", plan.len() - led.len(), plan.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The topology epoch if every node already belongs to one cluster of exactly these
/// nodes (a `create` run again, e.g. by a compose file's init service on restart).
fn already_formed(nodes: &[NodeInfo], pass: Option<&str>) -> Option<u64> {
    let want: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut epoch = None;
    for n in nodes {
        let reply = connect(&n.addr, pass)
            .and_then(|mut c| c.call(&["CLUSTER", "KELVIN-TOPOLOGY"]))
            .ok()?;
        let t = crate::members::Topology::parse(&text(reply, &n.addr, "").ok()?).ok()?;
        let have: std::collections::BTreeSet<&str> =
            t.members.iter().map(|m| m.0.as_str()).collect();
        if t.epoch == 0 || have != want {
            return None;
        }
        epoch = Some(epoch.map_or(t.epoch, |e: u64| e.max(t.epoch)));
    }
    epoch
}

/// A port setting of a node (`CONFIG GET name`); 0 if it has none.
pub(crate) fn config_port(c: &mut Client, addr: &str, name: &str) -> anyhow::Result<u16> {
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

/// A map reply (RESP2: a flat array of pairs) as name -> value.
pub(crate) fn fields(frame: &Frame) -> Vec<(String, Frame)> {
    let name = |f: &Frame| match f {
        Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Frame::Simple(s) => s.clone(),
        other => format_frame(other),
    };
    match frame {
        Frame::Map(pairs) => pairs.iter().map(|(k, v)| (name(k), v.clone())).collect(),
        Frame::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (name(&c[0]), c[1].clone()))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn field<'a>(fields: &'a [(String, Frame)], name: &str) -> Option<&'a Frame> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub(crate) fn field_text(fields: &[(String, Frame)], name: &str) -> String {
    match field(fields, name) {
        Some(Frame::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Frame::Simple(s)) => s.clone(),
        Some(Frame::Integer(i)) => i.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn field_int(fields: &[(String, Frame)], name: &str) -> i64 {
    match field(fields, name) {
        Some(Frame::Integer(i)) => *i,
        _ => 0,
    }
}

pub(crate) fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n >= (1u64 << 30) as f64 => format!("{:.1} GiB", n / (1u64 << 30) as f64),
        n if n >= (1u64 << 20) as f64 => format!("{:.1} MiB", n / (1u64 << 20) as f64),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}

/// One node as CLUSTER SHARDS names it, and what it said of its groups.
pub(crate) struct StatusNode {
    pub(crate) id: String,
    pub(crate) addr: String,
    /// `None`: unreachable.
    groups: Option<Vec<Vec<(String, Frame)>>>,
}

/// What a cluster looks like from `seed`: the slots covered, every node CLUSTER SHARDS
/// names (with what it says of its groups), and each shard's first slot and replica ids.
pub(crate) struct Survey {
    covered: i64,
    pub(crate) nodes: Vec<StatusNode>,
    shard_replicas: Vec<(i64, Vec<String>)>,
}

pub(crate) fn survey(seed: &str, pass: Option<&str>) -> anyhow::Result<Survey> {
    let mut c = connect(seed, pass)?;
    let shards = match c.call(&["CLUSTER", "SHARDS"])? {
        Frame::Array(s) => s,
        Frame::Error(e) => anyhow::bail!("[ERR] {seed}: CLUSTER SHARDS: {e}"),
        other => anyhow::bail!(
            "[ERR] {seed}: unexpected CLUSTER SHARDS reply {}",
            format_frame(&other)
        ),
    };
    if shards.is_empty() {
        anyhow::bail!(
            "[ERR] {seed} is not part of a formed cluster: run kelvin-cli cluster create first"
        );
    }
    let mut covered = 0i64;
    let mut nodes: Vec<StatusNode> = Vec::new();
    // Per shard (group): its first slot and its replicas' ids.
    let mut shard_replicas: Vec<(i64, Vec<String>)> = Vec::new();
    for shard in &shards {
        let f = fields(shard);
        let mut first = -1;
        if let Some(Frame::Array(ranges)) = field(&f, "slots") {
            for r in ranges.chunks(2) {
                if let [Frame::Integer(a), Frame::Integer(b)] = r {
                    covered += b - a + 1;
                    if first < 0 {
                        first = *a;
                    }
                }
            }
        }
        let mut ids = Vec::new();
        if let Some(Frame::Array(list)) = field(&f, "nodes") {
            for n in list {
                let nf = fields(n);
                let id = field_text(&nf, "id");
                ids.push(id.clone());
                if nodes.iter().any(|x| x.id == id) {
                    continue;
                }
                let addr = format!("{}:{}", field_text(&nf, "ip"), field_text(&nf, "port"));
                let groups = connect(&addr, pass)
                    .and_then(|mut c| c.call(&["CLUSTER", "KELVIN-GROUPS"]))
                    .ok()
                    .and_then(|r| match r {
                        Frame::Array(gs) => Some(gs.iter().map(fields).collect()),
                        _ => None,
                    });
                nodes.push(StatusNode { id, addr, groups });
            }
        }
        shard_replicas.push((first, ids));
    }
    Ok(Survey {
        covered,
        nodes,
        shard_replicas,
    })
}

/// `kelvin-cli cluster status SEED`.
fn status(seed: &str, pass: Option<&str>) -> anyhow::Result<()> {
    let Survey {
        covered,
        nodes,
        shard_replicas,
    } = survey(seed, pass)?;
    let mut group_ids: Vec<i64> = nodes
        .iter()
        .flat_map(|n| n.groups.iter().flatten())
        .map(|g| field_int(g, "group"))
        .collect();
    group_ids.sort_unstable();
    group_ids.dedup();
    println!(
        ">>> {} nodes, {} group(s), {covered}/16384 slots covered",
        nodes.len(),
        group_ids.len()
    );
    println!(
        "{:<6} {:<12} {:<22} {:<9} {:>5} {:>9} {:>9} {:>10}  HEALTH",
        "GROUP", "SLOTS", "LEADER", "REPLICAS", "TERM", "APPLIED", "KEYS", "BYTES"
    );
    let mut healthy = true;
    for gid in &group_ids {
        let reports: Vec<(&StatusNode, &Vec<(String, Frame)>)> = nodes
            .iter()
            .filter_map(|n| {
                n.groups
                    .as_ref()?
                    .iter()
                    .find(|g| field_int(g, "group") == *gid)
                    .map(|g| (n, g))
            })
            .collect();
        // The group's replicas are the nodes of its shard (found by its first slot); the
        // unreachable count as down.
        let first_slot: i64 = reports
            .first()
            .and_then(|(_, g)| {
                field_text(g, "slots")
                    .split(['-', ','])
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(-1);
        let total = shard_replicas
            .iter()
            .find(|(first, _)| *first == first_slot)
            .map_or(nodes.len(), |(_, ids)| ids.len());
        let up = reports.len();
        let leader = reports
            .iter()
            .find(|(_, g)| field_text(g, "role") == "leader");
        // A replica the topology lists that the group's configuration (as its leader
        // knows it) does not hold: a membership change stopped half-way (run it again).
        let outside: Vec<String> = leader
            .map(|(_, g)| {
                let members = field_text(g, "members");
                let members: Vec<&str> = members.split(',').filter(|m| !m.is_empty()).collect();
                field_text(g, "replicas")
                    .split(',')
                    .filter(|r| !r.is_empty() && !members.is_empty() && !members.contains(r))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let health = match leader {
            Some(_) if !outside.is_empty() => format!(
                "degraded: {} listed but not in the group's configuration (a membership change stopped half-way: run it again)",
                outside.join(",")
            ),
            Some(_) if up == total => "ok".to_string(),
            Some(_) => "degraded: replicas down".to_string(),
            None => "down: no leader".to_string(),
        };
        healthy &= health == "ok";
        let (addr, term, applied, keys, bytes, slots) = match leader {
            Some((n, g)) => (
                n.addr.clone(),
                field_int(g, "term"),
                field_int(g, "applied"),
                field_int(g, "keys"),
                field_int(g, "bytes"),
                field_text(g, "slots"),
            ),
            None => ("-".to_string(), 0, 0, 0, 0, String::from("?")),
        };
        println!(
            "{gid:<6} {slots:<12} {addr:<22} {:<9} {term:>5} {applied:>9} {keys:>9} {:>10}  {health}",
            format!("{up}/{total} up"),
            human_bytes(bytes)
        );
    }
    println!("{:<40} {:<22} STATE", "NODE", "ADDRESS");
    for n in &nodes {
        let state = match &n.groups {
            None => "unreachable".to_string(),
            Some(gs) => gs
                .iter()
                .map(|g| format!("group {} {}", field_int(g, "group"), field_text(g, "role")))
                .collect::<Vec<_>>()
                .join(", "),
        };
        healthy &= n.groups.is_some();
        println!("{:<40} {:<22} {state}", n.id, n.addr);
    }
    if healthy && covered == 16384 {
        println!("[OK] All 16384 slots covered, every group has a leader and all its replicas.");
        Ok(())
    } else {
        anyhow::bail!("[WARN] The cluster is not fully healthy (see above).")
    }
}

/// Splits the 16384 slots into `groups` contiguous ranges (the remainder spread over the
/// first ones, as `redis-cli --cluster create` does) and gives group `g` the `replicas`
/// nodes from `g` on (round robin), so each node is listed first, and so stands for leader,
/// in as many groups as the others. Returns (group id, slot range, node indexes).
fn plan_groups(
    nodes: usize,
    groups: usize,
    replicas: usize,
) -> Vec<(usize, (usize, usize), Vec<usize>)> {
    let per = 16384 / groups;
    let extra = 16384 % groups;
    let mut start = 0;
    (0..groups)
        .map(|g| {
            let len = per + usize::from(g < extra);
            let range = (start, start + len - 1);
            start += len;
            let reps = (0..replicas).map(|k| (g + k) % nodes).collect();
            (g, range, reps)
        })
        .collect()
}

/// How long `rebalance` waits for one group's leadership to move.
const TRANSFER_WAIT: Duration = Duration::from_secs(20);
/// How often `rebalance` asks again: raft-rs gives a transfer up after an election
/// timeout if the target has not caught up by then (a node just restarted may not have).
const TRANSFER_RETRY: Duration = Duration::from_secs(2);

/// `kelvin-cli cluster rebalance SEED`: hands the leadership of every group back to its
/// preferred replica (the first of its replicas, as `create` planned them, so leaders are
/// spread over the nodes), one group at a time, through `CLUSTER KELVIN-TRANSFER` on the
/// current leader.
fn rebalance(seed: &str, pass: Option<&str>) -> anyhow::Result<()> {
    let mut moved = 0;
    let first = survey(seed, pass)?;
    let mut groups: Vec<(i64, String)> = Vec::new();
    for g in first.nodes.iter().flat_map(|n| n.groups.iter().flatten()) {
        let id = field_int(g, "group");
        let preferred = field_text(g, "replicas")
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string();
        if !groups.iter().any(|(x, _)| *x == id) {
            groups.push((id, preferred));
        }
    }
    groups.sort();
    for (gid, preferred) in &groups {
        let now = survey(seed, pass)?;
        let leader = now.nodes.iter().find(|n| {
            n.groups
                .iter()
                .flatten()
                .any(|g| field_int(g, "group") == *gid && field_text(g, "role") == "leader")
        });
        let Some(leader) = leader else {
            println!("[WARN] Group {gid} has no leader now: skipped");
            continue;
        };
        if &leader.id == preferred {
            continue;
        }
        let Some(target) = now.nodes.iter().find(|n| &n.id == preferred) else {
            println!("[WARN] Group {gid}: its preferred replica {preferred} is not in the cluster");
            continue;
        };
        if target.groups.is_none() {
            println!(
                "[WARN] Group {gid}: its preferred replica {} is unreachable: skipped",
                target.addr
            );
            continue;
        }
        println!(
            ">>> Group {gid}: leadership {} -> {}",
            leader.addr, target.addr
        );
        let deadline = Instant::now() + TRANSFER_WAIT;
        let mut asked: Option<Instant> = None;
        loop {
            if asked.is_none_or(|at| at.elapsed() >= TRANSFER_RETRY) {
                asked = Some(Instant::now());
                let mut c = connect(&leader.addr, pass)?;
                match c.call(&["CLUSTER", "KELVIN-TRANSFER", &gid.to_string(), preferred])? {
                    // It moved meanwhile (the old leader no longer leads): wait and see.
                    Frame::Error(e) if e.contains("does not lead") => {}
                    Frame::Error(e) => anyhow::bail!("[ERR] {}: {e}", leader.addr),
                    _ => {}
                }
            }
            let led = connect(&target.addr, pass)
                .and_then(|mut c| c.call(&["CLUSTER", "KELVIN-GROUPS"]))
                .ok()
                .and_then(|r| match r {
                    Frame::Array(gs) => Some(gs.iter().map(fields).any(|g| {
                        field_int(&g, "group") == *gid && field_text(&g, "role") == "leader"
                    })),
                    _ => None,
                })
                .unwrap_or(false);
            if led {
                moved += 1;
                break;
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "[ERR] Group {gid}: {} did not take over within {TRANSFER_WAIT:?}",
                    target.addr
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("[OK] {moved} group(s) moved; every group is led by its preferred replica.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::plan_groups;

    #[test]
    fn groups_cover_every_slot_once_and_spread_their_first_replica() {
        let plan = plan_groups(3, 3, 3);
        assert_eq!(plan[0].1, (0, 5461));
        assert_eq!(plan[1].1, (5462, 10922));
        assert_eq!(plan[2].1, (10923, 16383));
        let firsts: Vec<usize> = plan.iter().map(|p| p.2[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
        let plan = plan_groups(5, 7, 2);
        let covered: usize = plan.iter().map(|p| p.1 .1 - p.1 .0 + 1).sum();
        assert_eq!(covered, 16384);
        assert!(plan.iter().all(|p| p.2.len() == 2 && p.2[0] != p.2[1]));
        assert_eq!(plan_groups(1, 1, 1), vec![(0, (0, 16383), vec![0])]);
    }
}
