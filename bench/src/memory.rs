//! `kelvin-bench memory`: load the same keys into Kelvin and redis-server and compare the
//! resident memory each process needs for them, and break Kelvin's down by where the
//! bytes go (its INFO memory figures: slot tables, keys' and values' heap blocks, the
//! Raft log in memory; the rest of the RSS growth is allocator overhead and the process).

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::servers::{
    command, connect, environment_note, info_field, rss_bytes, save_result, Kind, Programs,
    ServerGuard,
};

pub struct Options {
    pub programs: Programs,
    pub keys: u64,
    pub value_size: usize,
    /// Commands per pipelined write.
    pub chunk: u64,
    /// Wait after loading before RSS is read.
    pub settle: Duration,
}

struct Measurement {
    kind: Kind,
    before: u64,
    after: u64,
    load_secs: f64,
    /// INFO memory after loading.
    info: String,
}

impl Measurement {
    fn delta(&self) -> u64 {
        self.after.saturating_sub(self.before)
    }
}

pub fn run(opts: &Options) -> Result<String> {
    let mut results = Vec::new();
    // One server at a time: each gets the machine to itself.
    for kind in [Kind::Kelvin, Kind::Redis] {
        let mut guard = ServerGuard::start(kind, &opts.programs)?;
        eprintln!(
            "{} on port {} (pid {})",
            kind.name(),
            guard.port,
            guard.pid()
        );
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_bytes(guard.pid())?;
        let started = Instant::now();
        load(guard.port, opts).with_context(|| format!("loading keys into {}", kind.name()))?;
        let load_secs = started.elapsed().as_secs_f64();
        guard.check_alive()?;
        std::thread::sleep(opts.settle);
        let after = rss_bytes(guard.pid())?;
        let info = command(
            &mut connect(guard.port, Duration::from_secs(10))?,
            &["INFO", "memory"],
        )?;
        eprintln!(
            "    loaded {} keys in {load_secs:.1}s; RSS {} -> {}",
            opts.keys,
            mib(before),
            mib(after)
        );
        results.push(Measurement {
            kind,
            before,
            after,
            load_secs,
            info,
        });
        drop(guard);
    }

    let mut report = String::new();
    report.push_str("# Memory: Kelvin vs Redis\n\n");
    report.push_str(&environment_note(&opts.programs));
    report.push_str(&format!(
        "- {} keys `key:0000000001`.., {}-byte values, loaded with pipelined SET \
         ({} per write); RSS is VmRSS of the server process, read {:?} after loading\n\n",
        opts.keys, opts.value_size, opts.chunk, opts.settle
    ));
    report.push_str(
        "| server | RSS before | RSS after | RSS delta | bytes/key (delta) | bytes/key (absolute) | load time |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in &results {
        report.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1}s |\n",
            m.kind.name(),
            mib(m.before),
            mib(m.after),
            mib(m.delta()),
            m.delta() as f64 / opts.keys as f64,
            m.after as f64 / opts.keys as f64,
            m.load_secs
        ));
    }
    let per_key = |kind: Kind| {
        results
            .iter()
            .find(|m| m.kind == kind)
            .map(|m| m.delta() as f64 / opts.keys as f64)
    };
    if let (Some(k), Some(r)) = (per_key(Kind::Kelvin), per_key(Kind::Redis)) {
        if r > 0.0 {
            report.push_str(&format!(
                "\nKelvin/Redis bytes per key (delta): **{:.2}**\n",
                k / r
            ));
        }
    }
    if let Some(k) = results.iter().find(|m| m.kind == Kind::Kelvin) {
        report.push_str(&breakdown(k, opts.keys));
    }
    let path = save_result("memory", &report)?;
    eprintln!("written to {}", path.display());
    Ok(report)
}

/// Kelvin's bytes per key by where they go, from its INFO memory figures.
fn breakdown(m: &Measurement, keys: u64) -> String {
    let field = |name: &str| -> u64 {
        info_field(&m.info, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (tables, heap, raft_log) = (
        field("mem_keyspace_tables"),
        field("mem_keyspace_heap"),
        field("mem_raft_log"),
    );
    let rest = m.delta().saturating_sub(tables + heap + raft_log);
    let per = |b: u64| b as f64 / keys as f64;
    let mut text = format!(
        "\nKelvin's bytes per key by where they go (INFO memory after loading):\n\n\
         | part | bytes | bytes/key |\n|---|---:|---:|\n\
         | slot tables (entries of {} B: key inline, value header, expiry 8, heat 8; index buckets of {} B; spare places and empty buckets included) | {} | {:.1} |\n\
         | keys' and values' heap blocks (store's count) | {} | {:.1} |\n\
         | Raft log in memory (unapplied entries, term and place of each since the snapshot) | {} | {:.1} |\n\
         | allocator overhead and the rest (RSS delta minus the above) | {} | {:.1} |\n",
        field("mem_entry_bytes"),
        field("mem_index_bucket_bytes"),
        mib(tables),
        per(tables),
        mib(heap),
        per(heap),
        mib(raft_log),
        per(raft_log),
        mib(rest),
        per(rest),
    );
    text.push_str(&format!(
        "| **RSS delta** | {} | {:.1} |\n",
        mib(m.delta()),
        per(m.delta())
    ));
    text
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn key(i: u64) -> String {
    format!("key:{i:010}")
}

/// A value of exactly `size` bytes that differs from key to key.
pub fn value(i: u64, size: usize) -> Vec<u8> {
    let digits = format!("{i:020}");
    digits.bytes().cycle().take(size).collect()
}

/// Appends one RESP `SET key value` to `buf`.
fn push_set(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    for part in [key, value] {
        buf.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        buf.extend_from_slice(part);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Loads keys 1..=opts.keys in pipelined chunks, checking every reply.
fn load(port: u16, opts: &Options) -> Result<()> {
    let mut writer = connect(port, Duration::from_secs(60))?;
    let mut reader = BufReader::new(writer.try_clone()?);
    let mut buf = Vec::with_capacity((opts.chunk as usize) * (opts.value_size + 64));
    let mut line = String::new();
    let mut next = 1u64;
    while next <= opts.keys {
        let end = (next + opts.chunk - 1).min(opts.keys);
        buf.clear();
        for i in next..=end {
            push_set(&mut buf, key(i).as_bytes(), &value(i, opts.value_size));
        }
        writer.write_all(&buf)?;
        for _ in next..=end {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            if line != "+OK\r\n" {
                bail!("unexpected reply to SET: {:?}", line.trim_end());
            }
        }
        next = end + 1;
    }
    // Spot check: the last key reads back.
    let last = key(opts.keys);
    let mut cmd = Vec::new();
    cmd.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    cmd.extend_from_slice(format!("${}\r\n{last}\r\n", last.len()).as_bytes());
    writer.write_all(&cmd)?;
    line.clear();
    reader.read_line(&mut line)?;
    let expected = value(opts.keys, opts.value_size);
    if line.trim_end() != format!("${}", expected.len()) {
        bail!("GET {last}: unexpected reply {:?}", line.trim_end());
    }
    let mut data = vec![0u8; expected.len() + 2];
    reader.read_exact(&mut data)?;
    if data[..expected.len()] != expected[..] {
        bail!("GET {last}: wrong value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(key(1), "key:0000000001");
        assert_eq!(key(1_000_000), "key:0001000000");
        assert_eq!(value(7, 100).len(), 100);
        assert_ne!(value(7, 100), value(8, 100));
    }

    #[test]
    fn resp_set() {
        let mut buf = Vec::new();
        push_set(&mut buf, b"k", b"vv");
        assert_eq!(buf, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }
}
