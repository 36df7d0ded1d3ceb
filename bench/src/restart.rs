//! `kelvin-bench restart`: how long a server takes to come back with N keys.
//!
//! Loads N keys (pipelined MSET over a few connections), optionally compacts what is on
//! disk (Kelvin: `SAVE`, a snapshot plus log compaction; Redis: `BGREWRITEAOF`, which
//! with the default `aof-use-rdb-preamble yes` rewrites the AOF as an RDB image), stops
//! the server with SHUTDOWN, starts it again on the same directory and times from spawn
//! until `DBSIZE` returns N, polling every 10 ms.
//!
//! Redis runs with `--appendonly yes`, so at startup it loads the AOF and ignores any
//! `dump.rdb`: `SAVE` would not shorten its restart, `BGREWRITEAOF` does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::memory::key;
use crate::servers::{
    command, connect, environment_note, free_port, info_field, push_command, save_result, Kind,
    Programs, ServerGuard, Spec,
};
use crate::throughput::median;

pub struct Options {
    pub programs: Programs,
    pub keys: u64,
    pub value_size: usize,
    /// Keys per MSET.
    pub chunk: u64,
    /// Loading connections.
    pub connections: u64,
    pub rounds: u32,
    /// Longest a restart (or a SAVE, a rewrite, a SHUTDOWN) may take.
    pub timeout: Duration,
}

/// What is on disk when the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    /// Kelvin: SAVE. Redis: BGREWRITEAOF (RDB preamble).
    Compacted,
    /// Kelvin: the log as written. Redis: the AOF as written, automatic rewrites off.
    Log,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Compacted => {
                "after compaction (Kelvin `SAVE`: snapshot; Redis `BGREWRITEAOF`: RDB-preamble AOF)"
            }
            State::Log => "log replay (no SAVE / no rewrite)",
        }
    }
}

struct Sample {
    restart: f64,
    compact: f64,
    load: f64,
    disk: u64,
}

type Samples = BTreeMap<(State, Kind), Vec<Sample>>;

pub fn run(opts: &Options) -> Result<String> {
    let mut samples = Samples::new();
    for round in 0..opts.rounds {
        let order = if round % 2 == 0 {
            [Kind::Kelvin, Kind::Redis]
        } else {
            [Kind::Redis, Kind::Kelvin]
        };
        for state in [State::Compacted, State::Log] {
            for kind in order {
                eprintln!(
                    "round {}/{}: {} {}",
                    round + 1,
                    opts.rounds,
                    kind.name(),
                    state.label()
                );
                let sample = measure(opts, kind, state)
                    .with_context(|| format!("{} {}", kind.name(), state.label()))?;
                eprintln!(
                    "    load {:.1}s, compaction {:.1}s, {} on disk, restart {:.3}s",
                    sample.load,
                    sample.compact,
                    mib(sample.disk),
                    sample.restart
                );
                samples.entry((state, kind)).or_default().push(sample);
            }
        }
    }

    let mut report = String::new();
    report.push_str("# Restart: Kelvin vs Redis\n\n");
    report.push_str(&environment_note(&opts.programs));
    report.push_str(&format!(
        "- {} keys `key:0000000001`.., {}-byte pseudo-random hex values, loaded with MSET of {} keys over {} \
         connections; stopped with SHUTDOWN; restart time is from spawn until DBSIZE \
         returns {} (polled every 10 ms); median of {} round(s); Kelvin with \
         `--appendfsync everysec`, Redis with `--appendonly yes --appendfsync everysec \
         --save '' --auto-aof-rewrite-percentage 0` (no automatic rewrites)\n\n",
        opts.keys, opts.value_size, opts.chunk, opts.connections, opts.keys, opts.rounds
    ));
    report.push_str(&render(&samples));
    report.push_str("\nAll samples (restart seconds, in round order):\n\n");
    for ((state, kind), values) in &samples {
        report.push_str(&format!(
            "- {} {}: {}\n",
            kind.name(),
            state.label(),
            values
                .iter()
                .map(|s| format!("{:.3}", s.restart))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let path = save_result("restart", &report)?;
    eprintln!("written to {}", path.display());
    Ok(report)
}

fn render(samples: &Samples) -> String {
    let med = |state: State, kind: Kind, f: fn(&Sample) -> f64| {
        samples
            .get(&(state, kind))
            .and_then(|v| median(&v.iter().map(f).collect::<Vec<_>>()))
    };
    let disk = |state: State, kind: Kind| med(state, kind, |s| s.disk as f64);
    let mut s = String::from(
        "| on disk at shutdown | Kelvin restart | Redis restart | Kelvin/Redis | Kelvin on disk | Redis on disk | Kelvin SAVE / Redis rewrite |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for state in [State::Compacted, State::Log] {
        let k = med(state, Kind::Kelvin, |s| s.restart);
        let r = med(state, Kind::Redis, |s| s.restart);
        if k.is_none() && r.is_none() {
            continue;
        }
        let secs = |v: Option<f64>| v.map(|x| format!("{x:.2}s")).unwrap_or_else(|| "-".into());
        let ratio = match (k, r) {
            (Some(k), Some(r)) if r > 0.0 => format!("{:.2}", k / r),
            _ => "-".into(),
        };
        let size = |v: Option<f64>| v.map(|x| mib(x as u64)).unwrap_or_else(|| "-".into());
        let compact = match state {
            State::Compacted => format!(
                "{} / {}",
                secs(med(state, Kind::Kelvin, |s| s.compact)),
                secs(med(state, Kind::Redis, |s| s.compact))
            ),
            State::Log => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            state.label(),
            secs(k),
            secs(r),
            ratio,
            size(disk(state, Kind::Kelvin)),
            size(disk(state, Kind::Redis)),
            compact
        ));
    }
    s
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One load, compaction, shutdown and restart of a fresh server.
fn measure(opts: &Options, kind: Kind, state: State) -> Result<Sample> {
    // Redis: no automatic AOF rewrite, so that the only rewrite is the benchmark's own.
    let spec = Spec {
        no_auto_rewrite: true,
        ..Spec::new(kind)
    };
    let mut guard = ServerGuard::start_spec(&spec, &opts.programs)?;
    let started = Instant::now();
    load(guard.port, opts)?;
    let load_secs = started.elapsed().as_secs_f64();
    let dbsize = dbsize(guard.port)?;
    if dbsize != opts.keys {
        bail!("DBSIZE is {dbsize} after loading {} keys", opts.keys);
    }
    guard.check_alive()?;
    let started = Instant::now();
    if state == State::Compacted {
        match kind {
            Kind::Kelvin => {
                let mut s = connect(guard.port, opts.timeout)?;
                let reply = command(&mut s, &["SAVE"])
                    .with_context(|| format!("SAVE; log:\n{}", guard.log_tail()))?;
                if reply != "OK" {
                    bail!("SAVE replied {reply:?}");
                }
            }
            Kind::Redis => rewrite_aof(guard.port, opts.timeout)?,
        }
    }
    let compact = started.elapsed().as_secs_f64();
    guard.check_alive()?;
    let dir = guard.shutdown(opts.timeout)?;
    let disk = dir_size(&dir);

    let port = free_port()?;
    let started = Instant::now();
    let mut guard = ServerGuard::spawn_in(&spec, &opts.programs, dir, port)?;
    let deadline = started + opts.timeout;
    let mut last;
    loop {
        match ready_size(port) {
            Ok(n) if n == opts.keys => break,
            Ok(n) => last = format!("DBSIZE {n}"),
            Err(e) => last = format!("{e:#}"),
        }
        if let Err(e) = guard.check_alive() {
            return Err(e.context("the server died while restarting"));
        }
        if Instant::now() > deadline {
            bail!(
                "not back with {} keys within {:?} (last: {last}); log:\n{}",
                opts.keys,
                opts.timeout,
                guard.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let restart = started.elapsed().as_secs_f64();
    drop(guard);
    Ok(Sample {
        restart,
        compact,
        load: load_secs,
        disk,
    })
}

/// PING then DBSIZE on a new connection; an error while the server is not answering
/// yet, or answers `-LOADING`.
fn ready_size(port: u16) -> Result<u64> {
    let mut s = connect(port, Duration::from_secs(1))?;
    let pong = command(&mut s, &["PING"])?;
    if pong != "PONG" {
        bail!("PING replied {pong:?}");
    }
    Ok(command(&mut s, &["DBSIZE"])?.parse()?)
}

fn dbsize(port: u16) -> Result<u64> {
    let mut s = connect(port, Duration::from_secs(30))?;
    Ok(command(&mut s, &["DBSIZE"])?.parse()?)
}

/// BGREWRITEAOF (after any rewrite already running), then waits until no rewrite is
/// running or scheduled.
fn rewrite_aof(port: u16, timeout: Duration) -> Result<()> {
    let mut s = connect(port, Duration::from_secs(30))?;
    let deadline = Instant::now() + timeout;
    loop {
        match command(&mut s, &["BGREWRITEAOF"]) {
            Ok(_) => break,
            Err(e) if e.to_string().contains("already in progress") => {
                if Instant::now() > deadline {
                    bail!("an AOF rewrite still running after {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.context("BGREWRITEAOF")),
        }
    }
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let info = command(&mut s, &["INFO", "persistence"])?;
        let running = info_field(&info, "aof_rewrite_in_progress") != Some("0")
            || info_field(&info, "aof_rewrite_scheduled") != Some("0");
        if !running {
            let status = info_field(&info, "aof_last_bgrewrite_status").unwrap_or("?");
            if status != "ok" {
                bail!("BGREWRITEAOF finished with status {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("BGREWRITEAOF still running after {timeout:?}");
        }
    }
}

/// A value of `size` pseudo-random hex digits derived from `i` (splitmix64): unlike
/// repeated digits, it does not shrink under Redis's RDB (LZF) compression, so both
/// servers write about the same bytes.
pub fn random_value(i: u64, size: usize) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for nibble in 0..16 {
            if out.len() == size {
                break;
            }
            out.push(b"0123456789abcdef"[((z >> (nibble * 4)) & 0xf) as usize]);
        }
    }
    out
}

/// Bytes of all files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Loads keys 1..=opts.keys with MSETs of `opts.chunk` keys, over `opts.connections`
/// connections each with a few MSETs in flight, checking every reply.
fn load(port: u16, opts: &Options) -> Result<()> {
    let conns = opts.connections.clamp(1, 64);
    let per = opts.keys.div_ceil(conns);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                let first = c * per + 1;
                let last = ((c + 1) * per).min(opts.keys);
                scope.spawn(move || load_range(port, opts, first, last))
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a loading thread panicked"))??;
        }
        Ok(())
    })
}

/// MSETs in flight per connection.
const DEPTH: usize = 4;

fn load_range(port: u16, opts: &Options, first: u64, last: u64) -> Result<()> {
    if first > last {
        return Ok(());
    }
    let mut writer = connect(port, Duration::from_secs(120))?;
    let mut reader = BufReader::new(writer.try_clone()?);
    let mut buf = Vec::new();
    let mut line = String::new();
    let mut next = first;
    while next <= last {
        buf.clear();
        let mut sent = 0;
        while sent < DEPTH && next <= last {
            let end = (next + opts.chunk - 1).min(last);
            let pairs: Vec<(String, Vec<u8>)> = (next..=end)
                .map(|i| (key(i), random_value(i, opts.value_size)))
                .collect();
            let mut args: Vec<&[u8]> = vec![b"MSET"];
            for (k, v) in &pairs {
                args.push(k.as_bytes());
                args.push(v);
            }
            push_command(&mut buf, &args);
            next = end + 1;
            sent += 1;
        }
        writer.write_all(&buf)?;
        for _ in 0..sent {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("connection closed by the server");
            }
            if line != "+OK\r\n" {
                bail!("unexpected reply to MSET: {:?}", line.trim_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values() {
        assert_eq!(random_value(1, 100).len(), 100);
        assert_eq!(random_value(1, 7), random_value(1, 7));
        assert_ne!(random_value(1, 100), random_value(2, 100));
        assert!(random_value(3, 100).iter().all(u8::is_ascii_hexdigit));
    }
}
