//! `kelvin-bench reshard`: the same scale-out on Kelvin and on Redis Cluster, side by
//! side, under the same open-loop session traffic ([`crate::openloop`]).
//!
//! Per data size and system: 3 nodes hold N sessions, a 4th empty node joins and takes
//! 4096 slots while the load runs, before (steady), during and after the move.
//! - Redis Cluster: 3 masters (`redis-cli --cluster create --cluster-replicas 0`),
//!   `--cluster add-node`, `--cluster reshard --cluster-from all --cluster-to NEW
//!   --cluster-slots 4096 --cluster-yes --cluster-pipeline P`. A slot changes owner once
//!   its keys have moved, so the handover and the completion are the command's end.
//! - Kelvin: `cluster create --replicas R --groups 3`, `add-node`, `cluster reshard
//!   --slots 4096 --to NEW` (returns at the handover, which it prints), then
//!   `--wait-drained`; the driver's figures from `cluster migrations`. R = 1, and R = 3
//!   (`kelvin-r3`: every write goes to three nodes, three times the writing). Every
//!   Kelvin node's learned planner has a label window of [`PLANNER_WINDOW_MS`] (5 s),
//!   set once the steady load runs (its training data starts there, not in the bulk
//!   load), and the steady phase goes on until every formed node has a model judged on
//!   200 held-out keys (at most `PLANNER_WAIT`); `kelvin` plans with the model if it beats the heat
//!   counter on held-out keys, `kelvin-heat` (R = 1, `kelvin-planner heat`) always by
//!   heat: the same move, the two plans, at the same budget.
//!
//! Writes `summary.json`, `runs.json` (per-second figures and details), `table.md` and
//! the PNG plots (`bench/plot_reshard.py`, matplotlib) to the output directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::group::{cluster_secret, run_with_timeout, Group};
use crate::openloop::{per_second, quantile_ms, session_fields, session_key, Load, Sample};
use crate::openloop::{Popularity, Rhythms, Workload, Zipf};
use crate::servers::{command, connect, workspace_root, Kind, Programs, ServerGuard, Spec, HOST};
use crate::slotclient::{ClusterClient, Conn, Failure, Reply, SlotMap};

pub struct Options {
    pub programs: Programs,
    pub redis_cli: PathBuf,
    /// The data sizes of the sweep, in sessions.
    pub sizes: Vec<u64>,
    /// The systems each size runs on, in this order.
    pub systems: Vec<System>,
    pub value_bytes: usize,
    /// Requests per second of the load.
    pub rate: u64,
    /// Load before the move (the steady figures) and after it.
    pub steady: Duration,
    pub after: Duration,
    /// `redis-cli --cluster reshard --cluster-pipeline`.
    pub redis_pipeline: u32,
    pub out: PathBuf,
    /// `kelvin-migration-drain-rate` set on every Kelvin node before the move (bytes/s;
    /// `None`: the server's default).
    pub kelvin_drain_rate: Option<u64>,
    /// Fewer than this many requests in a run proves nothing: the run fails.
    pub min_requests: usize,
    /// Which sessions the load reads and touches: Zipf popularity, or users' rhythms.
    pub rhythms: bool,
}

/// Slots the new node gets (a quarter).
const MOVE_SLOTS: usize = 4096;

/// Longest a reshard (or its drain) may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Sessions per pipelined batch while loading.
const LOAD_BATCH: usize = 500;

/// The read timeout of the benchmark's client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The read timeout while loading or checking sessions in pipelined batches (a node
/// busy taking a snapshot of a large store may hold a batch for seconds).
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    RedisCluster,
    Kelvin,
    /// Kelvin with the eager plan ranked by the heat counter only (`kelvin-planner heat`),
    /// to compare the learned model's plan with at the same budget.
    KelvinHeat,
    KelvinR3,
}

impl System {
    const ALL: [System; 4] = [
        System::RedisCluster,
        System::Kelvin,
        System::KelvinHeat,
        System::KelvinR3,
    ];

    fn name(self) -> &'static str {
        match self {
            System::RedisCluster => "redis-cluster",
            System::Kelvin => "kelvin",
            System::KelvinHeat => "kelvin-heat",
            System::KelvinR3 => "kelvin-r3",
        }
    }

    fn is_kelvin(self) -> bool {
        self != System::RedisCluster
    }
}

/// The learned planner's label window on the Kelvin nodes (`kelvin-planner-window`):
/// about how long the keys of a move wait for the drain here.
const PLANNER_WINDOW_MS: u64 = 5_000;
/// How long the steady phase may go on past its length for every source to have a
/// trained model (the same wait for `kelvin` and `kelvin-heat`; a node without one
/// plans by heat, which the summary's `planner` says).
const PLANNER_WAIT: Duration = Duration::from_secs(60);

/// The systems named (all of them when none is).
pub fn systems(names: &[String]) -> Result<Vec<System>> {
    if names.is_empty() {
        return Ok(System::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            System::ALL
                .into_iter()
                .find(|s| s.name() == n.trim())
                .with_context(|| {
                    format!("unknown system {n:?} (redis-cluster, kelvin, kelvin-heat, kelvin-r3)")
                })
        })
        .collect()
}

/// What one run measured. Times in ms from the load's start.
struct Run {
    system: System,
    sessions: u64,
    data_bytes: u64,
    reshard_at: u64,
    handover_at: u64,
    complete_at: u64,
    end_at: u64,
    samples: Vec<Sample>,
    moved_bytes: u64,
    /// Kelvin: bytes pushed at or before the handover, fault-ins, and the driver's lines.
    kelvin: Option<(u64, u64, String)>,
    /// Kelvin: what each source's planner ranked by when the move began.
    planner: String,
    redirects: [u64; 5],
    /// The first failed requests, described.
    failures: Vec<String>,
    /// Loaded sessions that no longer exist after the move.
    lost_sessions: u64,
    /// The client ports of the 3 formed nodes, then the new one's (to read the notes).
    client_ports: Vec<u16>,
}

pub fn run(opts: &Options) -> Result<String> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut runs = Vec::new();
    for &sessions in &opts.sizes {
        for &system in &opts.systems {
            eprintln!(
                "{}: {sessions} sessions of ~{} B, {} req/s",
                system.name(),
                opts.value_bytes,
                opts.rate
            );
            let run = run_one(opts, system, sessions)?;
            eprintln!("    {}", one_line(&run));
            runs.push(run);
            // After each run, so that a run that fails later leaves the earlier ones.
            write_results(opts, &runs)?;
        }
    }
    plot(&opts.out)?;
    Ok(table(opts, &runs))
}

/// `summary.json`, `runs.json` and `table.md` of the runs so far.
fn write_results(opts: &Options, runs: &[Run]) -> Result<()> {
    let summary = json!({ "runs": runs.iter().map(record).collect::<Vec<_>>() });
    write_json(&opts.out.join("summary.json"), &summary)?;
    let details = json!({
        "rate": opts.rate,
        "value_bytes": opts.value_bytes,
        "steady_s": opts.steady.as_secs_f64(),
        "redis_pipeline": opts.redis_pipeline,
        "runs": runs.iter().map(details).collect::<Vec<_>>(),
    });
    write_json(&opts.out.join("runs.json"), &details)?;
    std::fs::write(opts.out.join("table.md"), table(opts, runs))?;
    // KELVIN_BENCH_SAMPLES: every request too (`due_ms,latency_us,failed,op,port`), one CSV per
    // run, to find when a slow second's slow requests were sent.
    if std::env::var_os("KELVIN_BENCH_SAMPLES").is_some() {
        for r in runs {
            let mut csv = String::from("due_ms,latency_us,failed,op,port\n");
            for s in &r.samples {
                csv += &format!(
                    "{},{},{},{},{}\n",
                    s.due_ms,
                    s.latency_us,
                    u8::from(s.failure.is_some()),
                    char::from(s.op),
                    s.port
                );
            }
            let name = format!("samples-{}-{}.csv", r.system.name(), r.sessions);
            std::fs::write(opts.out.join(name), csv)?;
        }
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Draws the PNGs with `bench/plot_reshard.py DIR`.
fn plot(out: &Path) -> Result<()> {
    let script = workspace_root().join("bench/plot_reshard.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(out);
    let (ok, text) = run_with_timeout(&mut cmd, Duration::from_secs(300))?;
    if !ok {
        bail!(
            "{} failed (pip install matplotlib):\n{text}",
            script.display()
        );
    }
    eprint!("{text}");
    Ok(())
}

/// The servers of one run: the 3 formed nodes and the one that joins.
struct Cluster {
    group: Group,
    new: ServerGuard,
}

impl Cluster {
    /// The port the client talks to on a node: Kelvin's redirect port, Redis's port.
    fn client_port(node: &ServerGuard) -> u16 {
        node.redirect_port.unwrap_or(node.port)
    }

    fn seed(&self) -> String {
        format!("{HOST}:{}", self.group.nodes[0].port)
    }

    fn new_addr(&self) -> String {
        format!("{HOST}:{}", self.new.port)
    }
}

fn start(opts: &Options, system: System) -> Result<Cluster> {
    let p = &opts.programs;
    match system {
        System::RedisCluster => {
            let spec = Spec::new(Kind::Redis);
            let group = Group::start_redis(p, &opts.redis_cli, &spec, 3)?;
            let new = ServerGuard::start_spec(
                &Spec {
                    cluster_enabled: true,
                    ..spec
                },
                p,
            )?;
            let c = Cluster { group, new };
            let mut cmd = Command::new(&opts.redis_cli);
            cmd.args(["--cluster", "add-node", &c.new_addr(), &c.seed()]);
            tool(&mut cmd, Duration::from_secs(60))?;
            // redis-cli --cluster reshard wants every node to agree first.
            wait_for(Duration::from_secs(30), "the new node known to all", || {
                let mut all = c.group.nodes.iter().chain([&c.new]);
                Ok(all.all(|n| known_nodes(n.port).unwrap_or(0) == 4))
            })?;
            Ok(c)
        }
        System::Kelvin | System::KelvinHeat | System::KelvinR3 => {
            let replicas = if system == System::KelvinR3 { 3 } else { 1 };
            let spec = Spec {
                redirect_port: true,
                cluster_secret: Some(cluster_secret()),
                ..Spec::new(Kind::Kelvin)
            };
            let group = Group::start_kelvin_replicas(p, &spec, 3, replicas, 3)?;
            let new = ServerGuard::start_spec(&spec, p)?;
            let c = Cluster { group, new };
            let mut cmd = Command::new(p.kelvin_cli()?);
            cmd.args(["cluster", "add-node", &c.new_addr(), &c.seed(), "--yes"]);
            tool(&mut cmd, Duration::from_secs(60))?;
            let planner = if system == System::KelvinHeat {
                "heat"
            } else {
                "model"
            };
            for node in c.group.nodes.iter().chain([&c.new]) {
                let mut s = connect(node.port, Duration::from_secs(2))?;
                command(&mut s, &["CONFIG", "SET", "kelvin-planner", planner])?;
            }
            Ok(c)
        }
    }
}

/// Sets the planner's label window on every Kelvin node, which starts each node's
/// training data over: called once the steady load runs, so that the models learn from
/// it and not from the bulk load before (every key written once and never again, where
/// a recent key is a key not touched again: the opposite of the steady load).
fn start_learning(c: &Cluster) -> Result<()> {
    for node in c.group.nodes.iter().chain([&c.new]) {
        let mut s = connect(node.port, Duration::from_secs(2))?;
        let window = PLANNER_WINDOW_MS.to_string();
        command(&mut s, &["CONFIG", "SET", "kelvin-planner-window", &window])?;
    }
    Ok(())
}

/// Waits (at most [`PLANNER_WAIT`]) until every formed node has trained a model judged
/// on enough held-out keys to be used (200, `learn::model::MIN_HELD_OUT`); what
/// each plans by then, one `node: ranking (reason), model AUC a vs counter h` per node.
fn wait_for_models(c: &Cluster) -> String {
    let info = |port: u16| -> String {
        connect(port, Duration::from_secs(2))
            .and_then(|mut s| command(&mut s, &["INFO", "planner"]))
            .unwrap_or_default()
    };
    let field = |text: &str, name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or("-")
            .trim()
            .to_string()
    };
    let deadline = Instant::now() + PLANNER_WAIT;
    while Instant::now() < deadline {
        let trained = c.group.nodes.iter().all(|n| {
            let t = info(n.port);
            field(&t, "planner_model") == "logistic_regression"
                && field(&t, "planner_model_held_out")
                    .parse::<u64>()
                    .unwrap_or(0)
                    >= 200
        });
        if trained {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    c.group
        .nodes
        .iter()
        .map(|n| {
            let t = info(n.port);
            format!(
                "{}: {} ({}), held-out touched keys in a 10% plan: model {} vs heat {}, \
                 AUC {} vs {}, {} samples",
                n.port,
                field(&t, "planner_ranking"),
                field(&t, "planner_ranking_reason"),
                field(&t, "planner_model_hits"),
                field(&t, "planner_heuristic_hits"),
                field(&t, "planner_model_auc"),
                field(&t, "planner_heuristic_auc"),
                field(&t, "planner_samples"),
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Lines of CLUSTER NODES on `port`.
fn known_nodes(port: u16) -> Result<usize> {
    let mut s = connect(port, Duration::from_secs(2))?;
    Ok(command(&mut s, &["CLUSTER", "NODES"])?.lines().count())
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for {what}")
}

/// Runs a tool; its output, or an error with it.
fn tool(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let what = format!("{cmd:?}");
    let (ok, text) = run_with_timeout(cmd, timeout).context(what.clone())?;
    if !ok {
        bail!("{what} failed:\n{text}");
    }
    Ok(text)
}

/// Loads `sessions` sessions with pipelined HSETs, one thread per node.
fn load_sessions(map: &Arc<SlotMap>, sessions: u64, value_bytes: usize) -> Result<()> {
    per_node(map, sessions, |id| {
        let fields = session_fields(id, value_bytes, 0);
        let mut args = vec![b"HSET".to_vec(), session_key(id).into_bytes()];
        args.extend(fields);
        args
    })
    .map(drop)
}

/// How many of the loaded sessions are gone (EXISTS, pipelined per node).
fn missing_sessions(map: &Arc<SlotMap>, sessions: u64) -> Result<u64> {
    let found = per_node(map, sessions, |id| {
        vec![b"EXISTS".to_vec(), session_key(id).into_bytes()]
    })?;
    Ok(sessions - found)
}

/// Sends `command(id)` for every session id to the node the map gives its key, batched
/// and pipelined, one thread per node; returns the sum of the integer replies.
fn per_node(
    map: &Arc<SlotMap>,
    sessions: u64,
    command: impl Fn(u64) -> Vec<Vec<u8>> + Sync,
) -> Result<u64> {
    let command = &command;
    let mut by_port: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    for id in 0..sessions {
        let key = session_key(id);
        let port = map.port(kelvin_protocol::slot::key_slot(key.as_bytes()));
        by_port.entry(port).or_default().push(id);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = by_port
            .into_iter()
            .map(|(port, ids)| {
                scope.spawn(move || -> Result<u64> {
                    let mut conn = Conn::open(port, BATCH_TIMEOUT)?;
                    let mut client = ClusterClient::new(map.clone());
                    let mut sum = 0;
                    for chunk in ids.chunks(LOAD_BATCH) {
                        let mut buf = Vec::new();
                        for &id in chunk {
                            let args = command(id);
                            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                            crate::servers::push_command(&mut buf, &args);
                        }
                        conn.send(&buf)?;
                        for &id in chunk {
                            match conn.read()? {
                                Reply::Int(n) => sum += n.max(0) as u64,
                                // A group's leader moved (an election): this one goes
                                // again through the cluster client, which follows it.
                                Reply::Error(e) if e.starts_with("MOVED ") => {
                                    let args = command(id);
                                    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                                    match client.exec(&args) {
                                        Ok(Reply::Int(n)) => sum += n.max(0) as u64,
                                        other => bail!("on port {port}, then: {other:?}"),
                                    }
                                }
                                other => bail!("on port {port}: {other:?}"),
                            }
                        }
                    }
                    Ok(sum)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| anyhow::anyhow!("a loader thread panicked"))??;
        }
        Ok(total)
    })
}

fn run_one(opts: &Options, system: System, sessions: u64) -> Result<Run> {
    let cluster = start(opts, system)?;
    let seed_port = Cluster::client_port(&cluster.group.nodes[0]);
    let map = SlotMap::load(seed_port, CLIENT_TIMEOUT)?;
    let t = Instant::now();
    load_sessions(&map, sessions, opts.value_bytes)?;
    let session_bytes: usize = session_fields(0, opts.value_bytes, 0)
        .iter()
        .map(Vec::len)
        .sum();
    eprintln!(
        "    loaded in {:.1} s; load at {} req/s for {:?}, then the move",
        t.elapsed().as_secs_f64(),
        opts.rate,
        opts.steady
    );
    let workload = Workload {
        value_bytes: opts.value_bytes,
        rate: opts.rate,
        workers: 16,
        max_duration: opts.steady + PLANNER_WAIT + opts.after + MOVE_TIMEOUT,
    };
    let popularity = Arc::new(match opts.rhythms {
        true => Popularity::Rhythms(Rhythms::new(sessions, opts.rate, sessions ^ opts.rate)),
        false => Popularity::Zipf(Zipf::new(sessions)),
    });
    let load = Load::start(map.clone(), &workload, popularity);
    let mut planner = String::new();
    let outcome = (|| -> Result<(u64, u64, u64)> {
        if system.is_kelvin() {
            start_learning(&cluster)?;
        }
        std::thread::sleep(opts.steady);
        if system.is_kelvin() {
            planner = wait_for_models(&cluster);
        }
        let reshard_at = load.now_ms();
        let (handover_at, complete_at) = match system {
            System::RedisCluster => {
                let id = {
                    let mut s = connect(cluster.new.port, Duration::from_secs(2))?;
                    command(&mut s, &["CLUSTER", "MYID"])?
                };
                let mut cmd = Command::new(&opts.redis_cli);
                cmd.args(["--cluster", "reshard", &cluster.seed()])
                    .args(["--cluster-from", "all", "--cluster-to", &id])
                    .args(["--cluster-slots", &MOVE_SLOTS.to_string(), "--cluster-yes"])
                    .args(["--cluster-pipeline", &opts.redis_pipeline.to_string()]);
                tool(&mut cmd, MOVE_TIMEOUT)?;
                let done = load.now_ms();
                (done, done)
            }
            System::Kelvin | System::KelvinHeat | System::KelvinR3 => {
                if let Some(rate) = opts.kelvin_drain_rate {
                    for node in cluster.group.nodes.iter().chain([&cluster.new]) {
                        let mut s = connect(node.port, Duration::from_secs(2))?;
                        let set = ["CONFIG", "SET", "kelvin-migration-drain-rate"];
                        command(&mut s, &[set[0], set[1], set[2], &rate.to_string()])?;
                    }
                }
                let cli = opts.programs.kelvin_cli()?;
                let mut cmd = Command::new(cli);
                cmd.args(["cluster", "reshard", &cluster.seed()])
                    .args(["--slots", &MOVE_SLOTS.to_string(), "--to"])
                    .args([&cluster.new_addr(), "--yes"]);
                let out = tool(&mut cmd, MOVE_TIMEOUT)?;
                let handover_ms =
                    handover_ms(&out).with_context(|| format!("no handover time in:\n{out}"))?;
                let mut cmd = Command::new(cli);
                cmd.args(["cluster", "reshard", &cluster.seed(), "--wait-drained"]);
                tool(&mut cmd, MOVE_TIMEOUT)?;
                (reshard_at + handover_ms, load.now_ms())
            }
        };
        std::thread::sleep(opts.after);
        Ok((reshard_at, handover_at, complete_at))
    })();
    let end_at = load.now_ms();
    let (samples, failures) = load.finish();
    let (reshard_at, handover_at, complete_at) = outcome.with_context(|| {
        format!(
            "{}: node logs:\n{}\n--- new node:\n{}",
            system.name(),
            cluster.group.log_tails(),
            cluster.new.log_tail()
        )
    })?;
    let client_ports: Vec<u16> = cluster
        .group
        .nodes
        .iter()
        .chain([&cluster.new])
        .map(Cluster::client_port)
        .collect();
    // Every loaded session still there (through a fresh map: the moved slots' new owner).
    map.refresh(seed_port)?;
    let lost_sessions = missing_sessions(&map, sessions)?;
    let r = &map.redirects;
    let redirects = [
        r.moved.load(Ordering::Relaxed),
        r.ask.load(Ordering::Relaxed),
        r.tryagain.load(Ordering::Relaxed),
        r.reconnects.load(Ordering::Relaxed),
        r.refreshes.load(Ordering::Relaxed),
    ];
    let (moved_bytes, kelvin) = match system {
        System::RedisCluster => (redis_moved_bytes(cluster.new.port)?, None),
        _ => {
            let mut cmd = Command::new(opts.programs.kelvin_cli()?);
            cmd.args(["cluster", "migrations", &cluster.seed()]);
            let text = tool(&mut cmd, Duration::from_secs(60))?;
            let f = KelvinFigures::parse(&text);
            (f.moved_bytes(), Some((f.eager_bytes(), f.fault_ins, text)))
        }
    };
    if samples.len() < opts.min_requests {
        bail!(
            "{}: only {} requests ran (want at least {}): the run proves nothing",
            system.name(),
            samples.len(),
            opts.min_requests
        );
    }
    Ok(Run {
        system,
        sessions,
        data_bytes: sessions * session_bytes as u64,
        reshard_at,
        handover_at,
        complete_at,
        end_at,
        samples,
        moved_bytes,
        kelvin,
        redirects,
        failures,
        lost_sessions,
        client_ports,
        planner,
    })
}

/// `[OK] Handover: group 3 owns 4096 more slots after 212 ms; ...` -> 212.
fn handover_ms(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.contains("[OK] Handover"))?;
    let rest = line.split(" after ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Redis moves each key as a DUMP payload (MIGRATE sends RESTORE): the keys the new node
/// holds times the mean DUMP size of a sample of them.
fn redis_moved_bytes(port: u16) -> Result<u64> {
    let mut conn = Conn::open(port, CLIENT_TIMEOUT)?;
    let keys = match conn.call(&[b"DBSIZE"])? {
        Reply::Int(n) => n.max(0) as u64,
        other => bail!("DBSIZE: {other:?}"),
    };
    let (mut total, mut n) = (0u64, 0u64);
    for _ in 0..50 {
        let Reply::Bulk(Some(key)) = conn.call(&[b"RANDOMKEY"])? else {
            break;
        };
        if let Reply::Bulk(Some(dump)) = conn.call(&[b"DUMP", &key])? {
            total += dump.len() as u64 + key.len() as u64;
            n += 1;
        }
    }
    Ok(keys * total.checked_div(n).unwrap_or(0))
}

/// The sums of what `kelvin-cli cluster migrations` printed, over every migration.
#[derive(Debug, Default, PartialEq)]
struct KelvinFigures {
    critical_bytes: u64,
    eager_bytes: u64,
    drained_bytes: u64,
    fault_ins: u64,
}

impl KelvinFigures {
    fn parse(text: &str) -> KelvinFigures {
        let mut f = KelvinFigures::default();
        // A migration's record can show on more than one node (a driver that took over):
        // the last line per id counts.
        let mut per_id: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.split(": migration ").nth(1) {
                let id = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let bytes = |class: &str| {
                    number_after(rest, &format!("planned {class} "), " keys ")
                        .or_else(|| number_after(rest, &format!(", {class} "), " keys "))
                };
                per_id.insert(
                    id,
                    (
                        bytes("critical").unwrap_or(0),
                        bytes("eager").unwrap_or(0),
                        number_after(rest, "drained ", " keys, ").unwrap_or(0),
                    ),
                );
            } else if let Some((_, rest)) = line.split_once(": ") {
                let count = rest
                    .split_once(" fault-ins (")
                    .map(|(n, _)| n.parse::<u64>());
                if let Some(Ok(n)) = count {
                    f.fault_ins += n;
                }
            }
        }
        for (c, e, d) in per_id.values() {
            f.critical_bytes += c;
            f.eager_bytes += e;
            f.drained_bytes += d;
        }
        f
    }

    /// Pushed at or before the handover: the critical and the eager classes.
    fn eager_bytes(&self) -> u64 {
        self.critical_bytes + self.eager_bytes
    }

    fn moved_bytes(&self) -> u64 {
        self.eager_bytes() + self.drained_bytes
    }
}

/// In `text`, after `start` and a count followed by `mid`, the number that follows:
/// `number_after("eager 10 keys 2000 bytes", "eager ", " keys ")` is 2000.
fn number_after(text: &str, start: &str, mid: &str) -> Option<u64> {
    let rest = text.split(start).nth(1)?;
    let rest = rest.split_once(mid)?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Samples due in `[from, to)` ms.
fn window(samples: &[Sample], from: u64, to: u64) -> impl Iterator<Item = &Sample> {
    samples
        .iter()
        .filter(move |s| u64::from(s.due_ms) >= from && u64::from(s.due_ms) < to)
}

fn p(samples: &[Sample], from: u64, to: u64, q: f64) -> f64 {
    let mut us: Vec<u32> = window(samples, from, to).map(|s| s.latency_us).collect();
    quantile_ms(&mut us, q)
}

/// The first whole second of load is left out of the steady figures (connections open).
const WARMUP_MS: u64 = 1000;

/// The summary's record of one run.
fn record(r: &Run) -> Value {
    let secs = per_second(&r.samples);
    let steady_s = (r.reshard_at.saturating_sub(WARMUP_MS)) as f64 / 1000.0;
    let steady_ok = window(&r.samples, WARMUP_MS, r.reshard_at)
        .filter(|s| s.failure.is_none())
        .count();
    // Whole seconds that overlap the move (at least the one it started in).
    let (first, last) = (r.reshard_at / 1000, r.complete_at.max(r.reshard_at) / 1000);
    let during_min = secs
        .iter()
        .filter(|s| u64::from(s.t) >= first && u64::from(s.t) <= last)
        .map(|s| s.ops)
        .min()
        .unwrap_or(0);
    let during_to = r.complete_at.max(r.reshard_at + 1);
    let mut v = json!({
        "system": r.system.name(),
        "sessions": r.sessions,
        "data_bytes": r.data_bytes,
        "handover_ms": r.handover_at - r.reshard_at,
        "complete_ms": r.complete_at - r.reshard_at,
        "p99_steady_ms": p(&r.samples, WARMUP_MS, r.reshard_at, 0.99),
        "p99_during_ms": p(&r.samples, r.reshard_at, during_to, 0.99),
        "p999_during_ms": p(&r.samples, r.reshard_at, during_to, 0.999),
        "throughput_steady": steady_ok as f64 / steady_s.max(0.001),
        "throughput_during_min": during_min,
        // Failed requests, and sessions the move lost (users logged out for good).
        "errors": r.samples.iter().filter(|s| s.failure.is_some()).count() as u64
            + r.lost_sessions,
        "moved_bytes": r.moved_bytes,
    });
    if let Some((eager, fault_ins, _)) = &r.kelvin {
        let post = window(&r.samples, r.handover_at, r.end_at).count() as u64;
        // Each fault-in was caused by (at least) one request after the handover: the
        // requests that needed none are at least the rest.
        let served = match post {
            0 => 0.0,
            n => n.saturating_sub(*fault_ins) as f64 / n as f64,
        };
        let o = v.as_object_mut().expect("json! of an object is an object");
        o.insert("eager_bytes".into(), json!(eager));
        o.insert("fault_ins".into(), json!(fault_ins));
        o.insert("served_without_fault_in".into(), json!(served));
        o.insert("planner".into(), json!(r.planner));
    }
    v
}

/// The per-second figures and the rest of what a run saw, for the plots and readers.
fn details(r: &Run) -> Value {
    let secs = per_second(&r.samples);
    let mut errors = serde_json::Map::new();
    for kind in Failure::ALL {
        let n = r.samples.iter().filter(|s| s.failure == Some(kind)).count();
        errors.insert(kind.name().into(), json!(n));
    }
    json!({
        "system": r.system.name(),
        "sessions": r.sessions,
        "summary": record(r),
        "requests": r.samples.len(),
        "reshard_at_ms": r.reshard_at,
        "handover_at_ms": r.handover_at,
        "complete_at_ms": r.complete_at,
        "end_at_ms": r.end_at,
        "errors_by_kind": errors,
        "first_errors": r.failures,
        "lost_sessions": r.lost_sessions,
        "client_ports": { "formed": &r.client_ports[..3], "new": r.client_ports[3] },
        "redirects": {
            "moved": r.redirects[0], "ask": r.redirects[1],
            "tryagain_or_clusterdown": r.redirects[2], "reconnects": r.redirects[3],
            "map_reloads": r.redirects[4],
        },
        "kelvin_migrations": r.kelvin.as_ref().map(|k| k.2.clone()),
        "seconds": secs.iter().map(|s| json!({
            "t": s.t, "ops": s.ops, "errors": s.errors,
            "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "p999_ms": s.p999_ms,
        })).collect::<Vec<_>>(),
    })
}

fn one_line(r: &Run) -> String {
    let v = record(r);
    let first = match r.failures.first() {
        Some(f) => format!(" (first: {f})"),
        None => String::new(),
    };
    format!(
        "handover {} ms, complete {} ms, p99 steady {} ms / during {} ms, errors {}{first}, \
         lost sessions {}, moved {} B; redirects MOVED {} ASK {} TRYAGAIN {}, map reloads {}",
        v["handover_ms"],
        v["complete_ms"],
        v["p99_steady_ms"],
        v["p99_during_ms"],
        v["errors"],
        r.lost_sessions,
        v["moved_bytes"],
        r.redirects[0],
        r.redirects[1],
        r.redirects[2],
        r.redirects[4]
    )
}

/// The markdown table of the runs.
fn table(opts: &Options, runs: &[Run]) -> String {
    let largest = opts.sizes.iter().copied().max().unwrap_or(1);
    let keys = match opts.rhythms {
        true => "sessions by users' rhythms: a third polling every 2-8 s for a minute, a \
                 third reading every 5-20 s for two, the rest clicking every 0.5 s for 15 s"
            .to_string(),
        false => format!(
            "Zipf keys: the 1% most popular sessions get {:.0}% of the requests at {largest} \
             sessions",
            Zipf::new(largest).hot_share(0.01) * 100.0
        ),
    };
    let mut s = format!(
        "Open loop at {} req/s (80% HGETALL, 15% HSET, 5% new logins with a {} s TTL; \
         {keys}), sessions of ~{} B, 4096 of 16384 slots moved to a 4th node; Redis \
         `--cluster-pipeline {}`; `kelvin-r3` keeps three copies of every group (three \
         times the writing); `kelvin-heat` plans the eager push by the heat counter only, \
         `kelvin` with the learned model where it beats the counter.\n\n",
        opts.rate,
        crate::openloop::LOGIN_TTL_SECS,
        opts.value_bytes,
        opts.redis_pipeline
    );
    s.push_str(
        "| system | sessions | data MB | handover ms | complete ms | p99 steady ms | \
         p99 during ms | p99.9 during ms | ops/s steady | min ops/s during | errors | \
         moved MB | eager MB | fault-ins | served w/o fault-in |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let v = record(r);
        let mb = |x: &Value| format!("{:.1}", x.as_f64().unwrap_or(0.0) / 1e6);
        let f = |x: &Value| format!("{:.2}", x.as_f64().unwrap_or(0.0));
        let opt = |k: &str, g: &dyn Fn(&Value) -> String| match v.get(k) {
            Some(x) => g(x),
            None => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            r.system.name(),
            r.sessions,
            mb(&v["data_bytes"]),
            v["handover_ms"],
            v["complete_ms"],
            f(&v["p99_steady_ms"]),
            f(&v["p99_during_ms"]),
            f(&v["p999_during_ms"]),
            v["throughput_steady"].as_f64().unwrap_or(0.0),
            v["throughput_during_min"],
            v["errors"],
            mb(&v["moved_bytes"]),
            opt("eager_bytes", &mb),
            opt("fault_ins", &|x: &Value| x.to_string()),
            opt("served_without_fault_in", &|x: &Value| format!(
                "{:.4}",
                x.as_f64().unwrap_or(0.0)
            )),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_handover_line() {
        let out = ">>> Migration 1: slots 0-10 of group 0 -> group 3\n[OK] Handover: group 3 owns 4096 more slots after 212 ms; cold keys";
        assert_eq!(handover_ms(out), Some(212));
        assert_eq!(handover_ms("nothing"), None);
    }

    #[test]
    fn sums_the_driver_figures() {
        let text = "\
migration 1: group 0 -> group 3 (led by x), slots 0-10, draining
127.0.0.1:1: migration 1 group 0 -> 3 (1365 slots), done: handover 40 ms; planned critical 2 keys 300 bytes, eager 10 keys 2000 bytes, lazy 5 keys 700 bytes, skip 0 keys 0 bytes; moved critical 2, eager 10 in 3 ms; drained 5 keys, 800 bytes in 9 ms (0 MB/s)
127.0.0.1:2: migration 2 group 1 -> 3 (1365 slots), done: handover 41 ms; planned critical 0 keys 0 bytes, eager 1 keys 100 bytes, lazy 5 keys 700 bytes, skip 0 keys 0 bytes; moved critical 0, eager 1 in 3 ms; drained 7 keys, 1000 bytes in 9 ms (0 MB/s)
127.0.0.1:2: 4 fault-ins (4 keys, 3 reads answered from the pull), mean 300 us; <=1ms 4, <=10ms 0, <=100ms 0, <=1s 0, over 0
127.0.0.1:3: 1 fault-ins (2 keys), mean 300 us; <=1ms 1, <=10ms 0, <=100ms 0, <=1s 0, over 0
";
        let f = KelvinFigures::parse(text);
        assert_eq!(
            f,
            KelvinFigures {
                critical_bytes: 300,
                eager_bytes: 2100,
                drained_bytes: 1800,
                fault_ins: 5
            }
        );
        assert_eq!((f.eager_bytes(), f.moved_bytes()), (2400, 4200));
    }
}
