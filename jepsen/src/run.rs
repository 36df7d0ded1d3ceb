//! `kelvin-jepsen run`: one test end to end.
//!
//! How it fits: builds the image (`docker/build.sh`), brings the compose cluster up from a
//! clean state, runs the workers and the nemesis for the time limit (and until every
//! fault has been tried), heals, reads every key once more, gathers the run's facts
//! (worker panics, the faults and whether each took effect, every replica's contents
//! digest per slot, panics in the nodes' logs), checks them with the history
//! ([`kelvin_jepsen::check_run`]), writes the results folder, tears the cluster down, and
//! ends with the line `valid: true` or `valid: false`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kelvin_jepsen::checker::run::{
    FaultOutcome, ReplicaContents, SlotDigests, FINAL_READ_PROCESS, KEY_TYPES,
};
use kelvin_jepsen::history::{Kind, Op, Recorder, Value, F};
use kelvin_jepsen::{Options, RunFacts};

use crate::cluster::Cluster;
use crate::nemesis::{Event, Fault, Nemesis};
use crate::workload::{connect, generation, key_name, value_of, Worker, KEYS};

/// The settings of one run.
pub struct RunOptions {
    pub repo: PathBuf,
    pub nodes: usize,
    pub workers: u64,
    pub time_limit: Duration,
    pub faults: Vec<Fault>,
    pub seed: u64,
    pub results: PathBuf,
    pub build_image: bool,
    /// Most operations each worker makes.
    pub ops_per_worker: u64,
}

/// The image of the nodes under test: kelvin-server with its fail points compiled in
/// (`KELVIN_FEATURES=failpoints docker/build.sh`); `KELVIN_JEPSEN_IMAGE` names another.
pub const JEPSEN_IMAGE: &str = "kelvin:jepsen";

/// Fewest `ok` operations each kind of key must have for the run to count.
pub const OK_FLOOR: usize = 200;

/// How long the replicas get to reach the same log index and contents at the end.
const REPLICA_WAIT: Duration = Duration::from_secs(60);

/// How long the cluster gets to recover once healed.
const RECOVERY_WAIT: Duration = Duration::from_secs(90);

/// Runs the test; `Ok(valid)`.
pub fn run(opts: RunOptions) -> anyhow::Result<bool> {
    let image = std::env::var("KELVIN_JEPSEN_IMAGE").unwrap_or_else(|_| JEPSEN_IMAGE.into());
    if opts.build_image {
        let status = std::process::Command::new(opts.repo.join("docker/build.sh"))
            .env("KELVIN_IMAGE", &image)
            .env("KELVIN_FEATURES", "failpoints")
            .status()
            .context("docker/build.sh")?;
        anyhow::ensure!(status.success(), "docker/build.sh failed");
    }
    let cli = std::env::var_os("KELVIN_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| opts.repo.join("target/release/kelvin-cli"));
    anyhow::ensure!(
        cli.exists(),
        "{} missing: cargo build --release -p kelvin-client",
        cli.display()
    );
    std::fs::create_dir_all(&opts.results)?;
    println!(
        "kelvin-jepsen: {} nodes, {} workers, {:?}, faults {}, seed {}, results in {}",
        opts.nodes,
        opts.workers,
        opts.time_limit,
        opts.faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        opts.seed,
        opts.results.display()
    );
    let cluster = Arc::new(Cluster::up(
        &opts.repo,
        "kelvin-jepsen",
        &image,
        opts.nodes,
        cli,
    )?);
    let outcome = exercise(&cluster, &opts);
    // Logs before the containers go.
    for n in &cluster.nodes {
        if let Ok(log) = cluster.logs(n) {
            let _ = std::fs::write(opts.results.join(format!("{}.log", n.name)), log);
        }
    }
    for (i, (name, log)) in cluster.old_logs().into_iter().enumerate() {
        let _ = std::fs::write(opts.results.join(format!("{name}.{i}.log")), log);
    }
    cluster.down();
    outcome
}

fn exercise(cluster: &Arc<Cluster>, opts: &RunOptions) -> anyhow::Result<bool> {
    let recorder = Arc::new(Recorder::new());
    // The nemesis's times and the history's count from the same instant.
    let began = recorder.started();
    let until = began + opts.time_limit;
    let stop = Arc::new(AtomicBool::new(false));
    let round_done = Arc::new(AtomicBool::new(opts.faults.is_empty()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let hot = Arc::new(crate::reshard::Hot::default());
    let workers: Vec<_> = (0..opts.workers)
        .map(|i| {
            Worker {
                index: i,
                workers: opts.workers,
                nodes: addrs.clone(),
                recorder: recorder.clone(),
                stop: stop.clone(),
                faults_done: round_done.clone(),
                until,
                began,
                max_ops: opts.ops_per_worker,
                seed: opts.seed.wrapping_add(i + 1),
                hot: hot.clone(),
            }
            .spawn()
        })
        .collect();
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        faults: opts.faults.clone(),
        stop: stop.clone(),
        round_done,
        until,
        began,
        seed: opts.seed,
        events: events.clone(),
        hot,
    }
    .spawn();
    let mut facts = RunFacts {
        ok_floor: OK_FLOOR,
        key_types: KEY_TYPES.to_vec(),
        requested: opts.faults.iter().map(|f| f.name().to_string()).collect(),
        ..RunFacts::default()
    };
    for (i, w) in workers.into_iter().enumerate() {
        if let Err(panic) = w.join() {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            facts.worker_panics.push(format!("worker {i}: {what}"));
        }
    }
    match nemesis.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => facts.cluster.push(format!("nemesis: {e:#}")),
        Err(_) => facts.cluster.push("the nemesis thread panicked".into()),
    }
    cluster.heal()?;
    if let Err(e) = cluster.wait_healthy(RECOVERY_WAIT) {
        facts.cluster.push(format!("after healing: {e}"));
    }
    final_reads(&recorder, &addrs, generation(began.elapsed()));
    match replica_contents(cluster) {
        Ok(replicas) => facts.replicas = replicas,
        Err(e) => facts
            .cluster
            .push(format!("replicas: no topology to find them in: {e:#}")),
    }
    for n in &cluster.nodes {
        let log = cluster.logs(n).unwrap_or_default();
        if log.contains("panicked") {
            facts
                .cluster
                .push(format!("{} panicked (see {}.log)", n.name, n.name));
        }
    }
    for (i, (name, log)) in cluster.old_logs().iter().enumerate() {
        if log.contains("panicked") {
            facts
                .cluster
                .push(format!("{name} panicked (see {name}.{i}.log)"));
        }
    }
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    facts.faults = events
        .iter()
        .map(|e| FaultOutcome {
            fault: e.fault.name().to_string(),
            took_effect: e.took_effect,
            detail: e.detail.clone(),
            window_ns: ((e.start * 1e9) as u64, (e.end * 1e9) as u64),
        })
        .collect();
    let recorder =
        Arc::try_unwrap(recorder).map_err(|_| anyhow::anyhow!("recorder still shared"))?;
    let ops = recorder.into_ops();
    let report = kelvin_jepsen::check_run(&ops, &facts, &Options::default());
    write_results(&opts.results, &ops, &report, &events)?;
    let counts = |k: Kind| ops.iter().filter(|o| o.kind == k).count();
    let in_effect = events.iter().filter(|e| e.took_effect).count();
    println!(
        "history: {} operations ({} ok, {} fail, {} info); {in_effect} faults took effect, {} \
         were no-ops",
        counts(Kind::Invoke),
        counts(Kind::Ok),
        counts(Kind::Fail),
        counts(Kind::Info),
        events.len() - in_effect
    );
    for e in &events {
        println!(
            "  {:>6.1}s..{:>6.1}s {} {}{}",
            e.start,
            e.end,
            e.fault.name(),
            e.detail,
            if e.took_effect { "" } else { " (no-op)" }
        );
    }
    let groups: std::collections::BTreeSet<u64> = facts.replicas.iter().map(|r| r.group).collect();
    println!(
        "replicas: {} of {} groups compared by contents digest",
        facts.replicas.len(),
        groups.len()
    );
    for (name, v) in report.parts() {
        println!("{name}: {}", if v.valid { "valid" } else { "INVALID" });
        for p in v.problems.iter().take(10) {
            println!("  {p}");
        }
    }
    Ok(report.valid())
}

/// One more read of every key, on a healed cluster, so that the checkers see the final
/// state (list-append: every acknowledged append must be in it).
fn final_reads(recorder: &Recorder, addrs: &[String], last_gen: u64) {
    let process = FINAL_READ_PROCESS;
    let reads = (0..=last_gen).flat_map(|g| {
        (0..KEYS).flat_map(move |k| {
            [
                (F::Read, key_name("r", k, g), "GET"),
                (F::Read, key_name("c", k, g), "GET"),
                (F::ReadList, key_name("l", k, g), "LRANGE"),
                (F::ReadStr, key_name("a", k, g), "GET"),
                (F::HGetAll, key_name("s", k, g), "HGETALL"),
            ]
        })
    });
    for gen in 0..=last_gen {
        crate::bank::final_read(recorder, addrs, process, gen, 20);
    }
    for (f, key, name) in reads {
        for attempt in 0..20 {
            let Some(mut c) = connect(&addrs[attempt % addrs.len()]) else {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            };
            let mut cmd = redis::cmd(name);
            cmd.arg(&key);
            if f == F::ReadList {
                cmd.arg(0).arg(-1);
            }
            let op = recorder.invoke(process, f, key.clone(), Value::None);
            match cmd.query::<redis::Value>(&mut c) {
                Ok(v) => {
                    recorder.ok(&op, value_of(f, v));
                    break;
                }
                Err(e) => {
                    recorder.fail(&op, Value::Str(e.to_string()));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

/// Every replica of every group in the topology, asked for its contents digest (`CLUSTER
/// KELVIN-DIGEST`) until the replicas of each group report the same log index and the
/// same digests (bounded). A replica that never answers is reported as such: the
/// checker counts it against the run, never skips it.
fn replica_contents(cluster: &Cluster) -> anyhow::Result<Vec<ReplicaContents>> {
    let deadline = Instant::now() + REPLICA_WAIT;
    loop {
        let t = cluster.topology()?;
        let mut all = Vec::new();
        let mut settled = true;
        for (group, _, replicas) in &t.groups {
            let mut views: Vec<(i64, ReplicaContents)> = Vec::new();
            for id in replicas {
                let (applied, contents) = match cluster.node_of(&t, id) {
                    Some(node) => match digest(cluster, &node, *group) {
                        Ok((applied, d)) => (applied, Ok(d)),
                        Err(e) => (-1, Err(format!("{e:#}"))),
                    },
                    None => (-1, Err(format!("node {id} is not one of the cluster's"))),
                };
                let node = cluster
                    .node_of(&t, id)
                    .map_or_else(|| id.clone(), |n| n.name);
                views.push((
                    applied,
                    ReplicaContents {
                        group: *group,
                        node,
                        contents,
                    },
                ));
            }
            settled &= views.iter().all(|(a, v)| {
                *a == views[0].0 && v.contents.is_ok() && v.contents == views[0].1.contents
            });
            all.extend(views.into_iter().map(|(_, v)| v));
        }
        if settled || Instant::now() >= deadline {
            return Ok(all);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `CLUSTER KELVIN-DIGEST <group>` on `node`: its applied index and digests per slot.
fn digest(
    cluster: &Cluster,
    node: &crate::cluster::Node,
    group: u64,
) -> anyhow::Result<(i64, SlotDigests)> {
    let reply = cluster.query(node, &["KELVIN-DIGEST", &group.to_string()])?;
    let redis::Value::Array(items) = reply else {
        anyhow::bail!("KELVIN-DIGEST on {}: not an array: {reply:?}", node.name);
    };
    let mut items = items.into_iter();
    let Some(redis::Value::Int(applied)) = items.next() else {
        anyhow::bail!("KELVIN-DIGEST on {}: no applied index", node.name);
    };
    let mut slots = SlotDigests::new();
    for item in items {
        let (slot, keys, digest): (u16, u64, String) = redis::from_redis_value(&item)
            .map_err(|e| anyhow::anyhow!("KELVIN-DIGEST on {}: {e}", node.name))?;
        slots.insert(slot, (keys, digest));
    }
    Ok((applied, slots))
}

fn write_results(
    dir: &Path,
    ops: &[Op],
    report: &kelvin_jepsen::Report,
    events: &[Event],
) -> anyhow::Result<()> {
    let history = std::fs::File::create(dir.join("history.jsonl"))?;
    kelvin_jepsen::write_jsonl(std::io::BufWriter::new(history), ops)?;
    let mut verdict = String::new();
    for (name, v) in report.parts() {
        verdict.push_str(&format!(
            "{name}: {}\n",
            if v.valid { "valid" } else { "invalid" }
        ));
        for p in &v.problems {
            verdict.push_str(&format!("  {p}\n"));
        }
    }
    verdict.push_str(&format!("valid: {}\n", report.valid()));
    std::fs::write(dir.join("verdict.txt"), verdict)?;
    std::fs::write(dir.join("timeline.svg"), timeline(ops, events))?;
    Ok(())
}

/// The latency of every operation over time (a dot per completion: green ok, red fail,
/// orange unknown) on the fault windows (grey bands, named).
fn timeline(ops: &[Op], events: &[Event]) -> String {
    let (w, h, left, bottom) = (1200.0, 500.0, 60.0, 40.0);
    let mut invoked: std::collections::HashMap<u64, u64> = Default::default();
    let mut dots = Vec::new();
    for op in ops {
        match op.kind {
            Kind::Invoke => {
                invoked.insert(op.process, op.time_ns);
            }
            kind => {
                if let Some(start) = invoked.remove(&op.process) {
                    let latency_ms = (op.time_ns.saturating_sub(start)) as f64 / 1e6;
                    dots.push((op.time_ns as f64 / 1e9, latency_ms.max(0.01), kind));
                }
            }
        }
    }
    let t_max = dots.iter().map(|d| d.0).fold(1.0, f64::max);
    let x = |t: f64| left + (t / t_max) * (w - left - 10.0);
    // Latency on a log scale from 0.01 ms to 10 s.
    let y = |ms: f64| {
        let l = (ms.log10() + 2.0) / 6.0;
        (h - bottom) - l.clamp(0.0, 1.0) * (h - bottom - 10.0)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for e in events {
        // A no-op's band is paler and says so.
        let (fill, note) = if e.took_effect {
            ("#ddd", "")
        } else {
            ("#f4f4f4", " (no-op)")
        };
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"/><text x=\"{:.1}\" y=\"22\">{}{note}</text>\n",
            x(e.start),
            (x(e.end) - x(e.start)).max(1.0),
            h - bottom - 10.0,
            x(e.start) + 2.0,
            e.fault.name()
        ));
    }
    for (t, ms, kind) in &dots {
        let color = match kind {
            Kind::Ok => "#2a2",
            Kind::Fail => "#d22",
            _ => "#f90",
        };
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"{color}\"/>\n",
            x(*t),
            y(*ms)
        ));
    }
    for (ms, label) in [
        (0.1, "0.1 ms"),
        (1.0, "1 ms"),
        (10.0, "10 ms"),
        (100.0, "100 ms"),
        (1000.0, "1 s"),
    ] {
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{w}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"4\" y=\"{0:.1}\">{label}</text>\n",
            y(ms)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{:.1}\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\">{t_max:.0} s</text>\n</svg>\n",
        h - 10.0,
        w - 60.0,
        h - 10.0
    ));
    svg
}
