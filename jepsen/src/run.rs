//! `kelvin-jepsen run`: one test end to end.
//!
//! How it fits: builds the image (`docker/build.sh`), brings the compose cluster up from a
//! clean state, runs the workers and the nemesis for the time limit, heals, reads every
//! key once more, checks the history ([`kelvin_jepsen::check`]) and what the nodes say of
//! themselves (no panic in any log, every group's replicas identical), writes the results
//! folder, tears the cluster down, and ends with the line `valid: true` or `valid: false`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kelvin_jepsen::history::{Kind, Op, Recorder, Value, F};

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
}

/// The image of the nodes under test: kelvin-server with its fail points compiled in
/// (`KELVIN_FEATURES=failpoints docker/build.sh`).
pub const JEPSEN_IMAGE: &str = "kelvin:jepsen";

/// How long the cluster gets to recover once healed.
const RECOVERY_WAIT: Duration = Duration::from_secs(90);

/// Runs the test; `Ok(valid)`.
pub fn run(opts: RunOptions) -> anyhow::Result<bool> {
    if opts.build_image {
        let status = std::process::Command::new(opts.repo.join("docker/build.sh"))
            .env("KELVIN_IMAGE", JEPSEN_IMAGE)
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
        JEPSEN_IMAGE,
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
    let began = Instant::now();
    let until = began + opts.time_limit;
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(Mutex::new(Vec::new()));
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let workers: Vec<_> = (0..opts.workers)
        .map(|i| {
            Worker {
                index: i,
                workers: opts.workers,
                nodes: addrs.clone(),
                recorder: recorder.clone(),
                stop: stop.clone(),
                until,
                began,
                seed: opts.seed.wrapping_add(i + 1),
            }
            .spawn()
        })
        .collect();
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        faults: opts.faults.clone(),
        stop: stop.clone(),
        until,
        began,
        seed: opts.seed,
        events: events.clone(),
    }
    .spawn();
    for w in workers {
        let _ = w.join();
    }
    let nemesis_result = nemesis
        .join()
        .map_err(|_| anyhow::anyhow!("the nemesis thread panicked"))?;
    let mut problems = Vec::new();
    if let Err(e) = nemesis_result {
        problems.push(format!("nemesis: {e}"));
    }
    cluster.heal()?;
    if let Err(e) = cluster.wait_healthy(RECOVERY_WAIT) {
        problems.push(format!("after healing: {e}"));
    }
    final_reads(&recorder, &addrs, generation(began.elapsed()));
    problems.extend(replicas_identical(cluster));
    for n in &cluster.nodes {
        let log = cluster.logs(n).unwrap_or_default();
        if log.contains("panicked") {
            problems.push(format!("{} panicked (see {}.log)", n.name, n.name));
        }
    }
    for (i, (name, log)) in cluster.old_logs().iter().enumerate() {
        if log.contains("panicked") {
            problems.push(format!("{name} panicked (see {name}.{i}.log)"));
        }
    }
    let recorder =
        Arc::try_unwrap(recorder).map_err(|_| anyhow::anyhow!("recorder still shared"))?;
    let ops = recorder.into_ops();
    let report = kelvin_jepsen::check(&ops);
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    write_results(&opts.results, &ops, &report, &events, &problems)?;
    let counts = |k: Kind| ops.iter().filter(|o| o.kind == k).count();
    println!(
        "history: {} operations ({} ok, {} fail, {} info); {} faults",
        counts(Kind::Invoke),
        counts(Kind::Ok),
        counts(Kind::Fail),
        counts(Kind::Info),
        events.len()
    );
    for e in &events {
        println!(
            "  {:>6.1}s..{:>6.1}s {} {}",
            e.start,
            e.end,
            e.fault.name(),
            e.detail
        );
    }
    for (name, v) in report.parts() {
        println!("{name}: {}", if v.valid { "valid" } else { "INVALID" });
        for p in v.problems.iter().take(10) {
            println!("  {p}");
        }
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(report.valid() && problems.is_empty())
}

/// One more read of every key, on a healed cluster, so that the checkers see the final
/// state (list-append: every acknowledged append must be in it).
fn final_reads(recorder: &Recorder, addrs: &[String], last_gen: u64) {
    // A process id no worker reaches (workers count up from 0 by their number).
    let process = u64::MAX / 2;
    let reads = (0..=last_gen).flat_map(|g| {
        (0..KEYS).flat_map(move |k| {
            [
                (F::Read, key_name("r", k, g), "GET"),
                (F::Read, key_name("c", k, g), "GET"),
                (F::ReadList, key_name("l", k, g), "LRANGE"),
                (F::HGetAll, key_name("s", k, g), "HGETALL"),
            ]
        })
    });
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

/// Every group's replicas hold the same keys and bytes once they have applied the same
/// log (waits, bounded, for them to catch up).
fn replicas_identical(cluster: &Cluster) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // group -> per node (applied, keys, bytes)
        let mut seen: std::collections::BTreeMap<i64, Vec<(String, i64, i64, i64)>> =
            Default::default();
        for n in &cluster.nodes {
            for g in cluster.groups(n).unwrap_or_default() {
                seen.entry(g.group)
                    .or_default()
                    .push((n.name.clone(), g.applied, g.keys, g.bytes));
            }
        }
        let caught_up = seen.values().all(|r| r.iter().all(|x| x.1 == r[0].1));
        if caught_up || Instant::now() >= deadline {
            let mut problems = Vec::new();
            for (g, r) in &seen {
                if r.iter()
                    .any(|x| (x.1, x.2, x.3) != (r[0].1, r[0].2, r[0].3))
                {
                    problems.push(format!(
                        "group {g}: replicas differ (node, applied, keys, bytes): {r:?}"
                    ));
                }
            }
            return problems;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn write_results(
    dir: &Path,
    ops: &[Op],
    report: &kelvin_jepsen::Report,
    events: &[Event],
    problems: &[String],
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
    for p in problems {
        verdict.push_str(&format!("problem: {p}\n"));
    }
    verdict.push_str(&format!(
        "valid: {}\n",
        report.valid() && problems.is_empty()
    ));
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
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ddd\"/><text x=\"{:.1}\" y=\"22\">{}</text>\n",
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
