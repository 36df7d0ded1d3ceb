//! `kelvin-bench throughput`: redis-benchmark against Kelvin and redis-server, same
//! machine, alternating servers, median of several rounds. Besides redis-benchmark's own
//! tests, an EVALSHA row: a small read-modify-write Lua script ([`RMW_SCRIPT`]) loaded
//! on both servers first, and a SESSION row: the session mix of [`crate::session`]
//! (GET + EXPIRE or SET EX, 90/10, Zipf keys) over sessions loaded first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::servers::{environment_note, save_result, Kind, Programs, ServerGuard, HOST};

pub struct Options {
    pub programs: Programs,
    pub redis_benchmark: PathBuf,
    /// Requests per run, per pipeline depth.
    pub requests: Vec<(u32, u64)>,
    pub clients: u32,
    pub rounds: u32,
    pub keyspace: u64,
    pub tests: String,
    /// Longest one redis-benchmark run may take before it is killed.
    pub run_timeout: Duration,
    /// Kelvin with its key profiler on (the `Kelvin` samples) against the same server
    /// with it off (the `Redis` samples), instead of Kelvin against Redis.
    pub profiler_ab: bool,
}

/// The EVALSHA row's script: read a counter, add to it, write it back, return it.
pub const RMW_SCRIPT: &str =
    "local v = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1]) \
     redis.call('SET', KEYS[1], v) return v";

/// Loads `script` with SCRIPT LOAD over a plain socket; returns its SHA1.
fn script_load(port: u16, script: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((HOST, port)).context("connect for SCRIPT LOAD")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = format!(
        "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n${}\r\n{script}\r\n",
        script.len()
    );
    s.write_all(req.as_bytes())?;
    // `$40\r\n<sha>\r\n`
    let mut reply = [0u8; 47];
    s.read_exact(&mut reply).context("SCRIPT LOAD reply")?;
    let text = String::from_utf8_lossy(&reply);
    match text.strip_prefix("$40\r\n") {
        Some(rest) => Ok(rest[..40].to_string()),
        None => bail!("SCRIPT LOAD answered {text:?}"),
    }
}

/// ops/s samples per (test, pipeline, server).
type Samples = BTreeMap<(String, u32, Kind), Vec<f64>>;

pub fn run(opts: &Options) -> Result<String> {
    if opts.profiler_ab {
        return run_profiler_ab(opts);
    }
    let mut kelvin = ServerGuard::start(Kind::Kelvin, &opts.programs)?;
    let mut redis = ServerGuard::start(Kind::Redis, &opts.programs)?;
    eprintln!(
        "Kelvin on port {} (pid {}), Redis on port {} (pid {})",
        kelvin.port,
        kelvin.pid(),
        redis.port,
        redis.pid()
    );

    let sha = script_load(kelvin.port, RMW_SCRIPT)?;
    if script_load(redis.port, RMW_SCRIPT)? != sha {
        bail!("Kelvin and Redis disagree on the script's SHA1");
    }
    for guard in [&kelvin, &redis] {
        crate::session::preload(guard.port, opts.keyspace).context("session preload")?;
    }
    let mut samples = Samples::new();
    for round in 0..opts.rounds {
        for &(pipeline, requests) in &opts.requests {
            for kind in Kind::alternating(round) {
                let guard = match kind {
                    Kind::Kelvin => &mut kelvin,
                    Kind::Redis => &mut redis,
                };
                guard.check_alive()?;
                eprintln!(
                    "round {}/{}: {} -P {pipeline} -n {requests}",
                    round + 1,
                    opts.rounds,
                    kind.name()
                );
                let mut results = benchmark(opts, guard.port, pipeline, requests)
                    .with_context(|| format!("redis-benchmark against {}", kind.name()))?;
                results.extend(
                    evalsha_benchmark(opts, guard.port, &sha, pipeline, requests)
                        .with_context(|| format!("EVALSHA against {}", kind.name()))?,
                );
                let mix = crate::session::Mix {
                    clients: opts.clients,
                    operations: requests / 2,
                    pipeline,
                    keyspace: opts.keyspace,
                    timeout: opts.run_timeout,
                };
                let rps = crate::session::run(guard.port, &mix)
                    .with_context(|| format!("session mix against {}", kind.name()))?;
                results.push(("SESSION".to_string(), rps));
                for (test, rps) in results {
                    eprintln!("    {test}: {rps:.0} ops/s");
                    samples.entry((test, pipeline, kind)).or_default().push(rps);
                }
                guard.check_alive()?;
            }
        }
    }

    let table = render(&samples);
    let mut report = String::new();
    report.push_str("# Throughput: Kelvin vs Redis (redis-benchmark)\n\n");
    report.push_str(&environment_note(&opts.programs));
    report.push_str(&format!(
        "- redis-benchmark -h {HOST} -c {} -r {} -t {} --csv; requests per run: {}; \
         EVALSHA: a read-modify-write script (`{}`) on the same keyspace; \
         SESSION: session operations/s, {}% GET+EXPIRE / SET EX of {}-byte values, Zipf({}) \
         keys over {} loaded sessions, half the requests per run, -P = operations in flight \
         per client; median of {} round(s); Redis with appendonly yes, appendfsync everysec; \
         Kelvin with --appendfsync everysec\n\n",
        opts.clients,
        opts.keyspace,
        opts.tests,
        opts.requests
            .iter()
            .map(|(p, n)| format!("-P {p}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        RMW_SCRIPT,
        crate::session::READ_PERCENT,
        crate::session::VALUE_BYTES,
        crate::session::ZIPF_EXPONENT,
        opts.keyspace,
        opts.rounds
    ));
    report.push_str(&table);
    let path = save_result("throughput", &report)?;
    eprintln!("written to {}", path.display());
    drop(kelvin);
    drop(redis);
    Ok(report)
}

/// One Kelvin, its profiler switched on and off between runs (alternating which goes
/// first each round): what the profiler costs, on the same process and data.
fn run_profiler_ab(opts: &Options) -> Result<String> {
    let mut kelvin = ServerGuard::start(Kind::Kelvin, &opts.programs)?;
    eprintln!("Kelvin on port {} (pid {})", kelvin.port, kelvin.pid());
    let mut samples = Samples::new();
    for round in 0..opts.rounds {
        for &(pipeline, requests) in &opts.requests {
            // `Kelvin` = profiler on, `Redis` = off.
            for kind in Kind::alternating(round) {
                let on = kind == Kind::Kelvin;
                set_profiler(kelvin.port, on)?;
                kelvin.check_alive()?;
                eprintln!(
                    "round {}/{}: profiler {} -P {pipeline} -n {requests}",
                    round + 1,
                    opts.rounds,
                    if on { "on" } else { "off" }
                );
                for (test, rps) in benchmark(opts, kelvin.port, pipeline, requests)? {
                    eprintln!("    {test}: {rps:.0} ops/s");
                    samples.entry((test, pipeline, kind)).or_default().push(rps);
                }
            }
        }
    }
    set_profiler(kelvin.port, true)?;
    let mut report = String::from("# Throughput: Kelvin's key profiler on vs off\n\n");
    report.push_str(&environment_note(&opts.programs));
    report.push_str(&format!(
        "- one Kelvin (--appendfsync everysec), CONFIG SET kelvin-profile-keys yes|no \
         between runs, alternating; redis-benchmark -h {HOST} -c {} -r {} -t {}; \
         median of {} round(s)\n\n",
        opts.clients, opts.keyspace, opts.tests, opts.rounds
    ));
    report.push_str(&render(&samples).replace(
        "Kelvin ops/s | Redis ops/s | Kelvin/Redis",
        "profiler on ops/s | profiler off ops/s | on/off",
    ));
    let path = save_result("throughput-profiler", &report)?;
    eprintln!("written to {}", path.display());
    Ok(report)
}

/// `CONFIG SET kelvin-profile-keys yes|no` on the server at `port`.
fn set_profiler(port: u16, on: bool) -> Result<()> {
    use std::io::{Read, Write};
    let value = if on { "yes" } else { "no" };
    let mut s = std::net::TcpStream::connect((HOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$19\r\nkelvin-profile-keys\r\n${}\r\n{value}\r\n",
        value.len()
    )?;
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply)?;
    if !reply[..n].starts_with(b"+OK") {
        bail!(
            "CONFIG SET kelvin-profile-keys {value}: {}",
            String::from_utf8_lossy(&reply[..n]).trim_end()
        );
    }
    Ok(())
}

/// Runs redis-benchmark once and returns (test, ops/s) pairs.
fn benchmark(
    opts: &Options,
    port: u16,
    pipeline: u32,
    requests: u64,
) -> Result<Vec<(String, f64)>> {
    let args = [
        "-c".to_string(),
        opts.clients.to_string(),
        "-n".into(),
        requests.to_string(),
        "-t".into(),
        opts.tests.clone(),
        "-P".into(),
        pipeline.to_string(),
        "-r".into(),
        opts.keyspace.to_string(),
    ];
    redis_benchmark(&opts.redis_benchmark, port, &args, opts.run_timeout)
}

/// Runs redis-benchmark once with `EVALSHA sha 1 rmw:__rand_int__ 1` as its command;
/// returns one ("EVALSHA", ops/s) pair.
fn evalsha_benchmark(
    opts: &Options,
    port: u16,
    sha: &str,
    pipeline: u32,
    requests: u64,
) -> Result<Vec<(String, f64)>> {
    let args: Vec<String> = [
        "-c",
        &opts.clients.to_string(),
        "-n",
        &requests.to_string(),
        "-P",
        &pipeline.to_string(),
        "-r",
        &opts.keyspace.to_string(),
        "EVALSHA",
        sha,
        "1",
        "rmw:__rand_int__",
        "1",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let results = redis_benchmark(&opts.redis_benchmark, port, &args, opts.run_timeout)?;
    Ok(results
        .into_iter()
        .take(1)
        .map(|(_, rps)| ("EVALSHA".to_string(), rps))
        .collect())
}

/// Runs `redis-benchmark -h 127.0.0.1 -p PORT --csv -q ARGS...` once, kills it after
/// `timeout`, and returns (test, ops/s) pairs.
pub fn redis_benchmark(
    program: &Path,
    port: u16,
    args: &[String],
    timeout: Duration,
) -> Result<Vec<(String, f64)>> {
    let mut child = Command::new(program)
        .args(["-h", HOST])
        .args(["-p", &port.to_string()])
        // Before `args`: a custom command (EVALSHA ...) must come last.
        .args(["--csv", "-q"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    // Read the pipes on threads so the child never blocks on a full pipe while we wait.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("redis-benchmark took longer than {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    if !status.success() {
        bail!("redis-benchmark failed ({status}): {err}{out}");
    }
    let results = parse_csv(&out);
    if results.is_empty() {
        bail!("no results in redis-benchmark output:\n{out}\n{err}");
    }
    Ok(results)
}

/// Parses redis-benchmark `--csv` output: an optional header line `"test","rps",...`
/// then `"SET","123456.79",...` lines. Other lines (warnings) are skipped.
pub fn parse_csv(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<String> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect();
        if fields.len() < 2 || fields[0].eq_ignore_ascii_case("test") {
            continue;
        }
        let name = fields[0].clone();
        if name.is_empty() || !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            continue;
        }
        if let Ok(rps) = fields[1].parse::<f64>() {
            if rps.is_finite() && rps > 0.0 {
                // "GET" / "SET"; redis-benchmark may append details ("SET: rps=...")
                let name = name.split(':').next().unwrap_or(&name).trim().to_string();
                out.push((name, rps));
            }
        }
    }
    out
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `-t TESTS -c CLIENTS -n REQUESTS -r KEYSPACE -d VALUE_SIZE`, for [`redis_benchmark`].
pub fn load_args(
    tests: &str,
    clients: u32,
    requests: u64,
    keyspace: u64,
    value_size: usize,
) -> Vec<String> {
    [
        "-t",
        tests,
        "-c",
        &clients.to_string(),
        "-n",
        &requests.to_string(),
        "-r",
        &keyspace.to_string(),
        "-d",
        &value_size.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// A markdown table row: the `labels` cells, then Kelvin's and Redis's ops/s and their
/// ratio.
pub fn table_row(labels: &[&str], kelvin: Option<f64>, redis: Option<f64>) -> String {
    format!(
        "| {} | {} | {} | {} |\n",
        labels.join(" | "),
        ops_cell(kelvin),
        ops_cell(redis),
        ratio_cell(kelvin, redis)
    )
}

/// A table cell for a median ops/s figure: whole numbers, `-` for none.
pub fn ops_cell(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

/// A table cell for Kelvin/Redis: two decimals, `-` if either is missing.
pub fn ratio_cell(kelvin: Option<f64>, redis: Option<f64>) -> String {
    match (kelvin, redis) {
        (Some(k), Some(r)) if r > 0.0 => format!("{:.2}", k / r),
        _ => "-".into(),
    }
}

/// The "All samples" part of a report: one `- LABEL: v1, v2, ...` line per series.
pub fn samples_list<'a>(series: impl Iterator<Item = (String, &'a Vec<f64>)>) -> String {
    let mut s = String::from("\nAll samples (ops/s, in round order):\n\n");
    for (label, values) in series {
        let values: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        s.push_str(&format!("- {label}: {}\n", values.join(", ")));
    }
    s
}

fn render(samples: &Samples) -> String {
    let mut rows: BTreeMap<(u32, String), (Option<f64>, Option<f64>)> = BTreeMap::new();
    for ((test, pipeline, kind), values) in samples {
        let entry = rows.entry((*pipeline, test.clone())).or_default();
        match kind {
            Kind::Kelvin => entry.0 = median(values),
            Kind::Redis => entry.1 = median(values),
        }
    }
    let mut s = String::from(
        "| test | pipeline | Kelvin ops/s | Redis ops/s | Kelvin/Redis |\n|---|---:|---:|---:|---:|\n",
    );
    // SET before GET within each pipeline depth, as redis-benchmark runs them
    let mut keys: Vec<&(u32, String)> = rows.keys().collect();
    keys.sort_by_key(|(p, t)| (*p, if t == "SET" { 0 } else { 1 }, t.clone()));
    for key in keys {
        let (k, r) = rows[key];
        s.push_str(&table_row(&[&key.1, &key.0.to_string()], k, r));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                    \"SET\",\"123456.79\",\"0.200\",\"0.050\"\n\
                    \"GET\",\"98765.43\",\"0.180\",\"0.040\"\n";
        assert_eq!(
            parse_csv(text),
            vec![
                ("SET".to_string(), 123456.79),
                ("GET".to_string(), 98765.43)
            ]
        );
    }

    #[test]
    fn skips_noise_and_old_format() {
        let text = "WARNING: Could not fetch server CONFIG\r\n\"SET\",\"1000.00\"\r\n\r\n";
        assert_eq!(parse_csv(text), vec![("SET".to_string(), 1000.0)]);
        assert!(parse_csv("").is_empty());
        assert!(parse_csv("\"SET\",\"n/a\"").is_empty());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn renders_table() {
        let mut s = Samples::new();
        s.insert(("GET".into(), 1, Kind::Kelvin), vec![100.0, 300.0, 200.0]);
        s.insert(("GET".into(), 1, Kind::Redis), vec![100.0]);
        s.insert(("SET".into(), 1, Kind::Kelvin), vec![50.0]);
        let t = render(&s);
        assert!(t.contains("| SET | 1 | 50 | - | - |"));
        assert!(t.contains("| GET | 1 | 200 | 100 | 2.00 |"));
        assert!(t.find("SET").unwrap() < t.find("GET").unwrap());
    }
}
