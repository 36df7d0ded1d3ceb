//! Per-command and per-error counters: INFO's `commandstats` and `errorstats` sections
//! and `total_error_replies`, as Redis 7 keeps them.
//!
//! How it fits: one set of counters per process (a node is a process; the in-process
//! test clusters share them, which only their INFO shows). Commands are counted where
//! they run: connection commands and local reads in the connection, commands through
//! the Raft log where each replica applies them (so a replica counts the writes it
//! applies, as a Redis replica counts what its master sends). A command refused before
//! it runs (arity, authentication, CROSSSLOT...) is a `rejected_call`; one that ran and
//! answered an error a `failed_call`. The command table is fixed, so the per-command
//! counters are plain atomics in a map built once: counting takes no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;

use hashbrown::HashMap;
use parking_lot::Mutex;

/// How many distinct error codes `errorstats` tracks (Redis's `ERROR_STATS_NUMBER`);
/// codes past it are counted in `total_error_replies` only.
pub const MAX_ERROR_CODES: usize = 128;

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    usec: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

struct Stats {
    commands: HashMap<&'static str, Counters>,
    errors: Mutex<HashMap<String, u64>>,
    total_errors: AtomicU64,
}

static STATS: LazyLock<Stats> = LazyLock::new(|| Stats {
    commands: crate::cmd::all()
        .map(|spec| (spec.name, Counters::default()))
        .collect(),
    errors: Mutex::new(HashMap::new()),
    total_errors: AtomicU64::new(0),
});

/// Counts an error reply by its code (the first word: `ERR`, `WRONGTYPE`...).
pub fn error(text: &str) {
    STATS.total_errors.fetch_add(1, Relaxed);
    let code = text.split(' ').next().unwrap_or(text);
    let mut errors = STATS.errors.lock();
    if let Some(n) = errors.get_mut(code) {
        *n += 1;
    } else if errors.len() < MAX_ERROR_CODES {
        errors.insert(code.to_string(), 1);
    }
}

/// Counts a command that ran for `usec` microseconds; `error` is its error reply.
pub fn call(name: &str, usec: u64, error: Option<&str>) {
    if let Some(c) = STATS.commands.get(name) {
        c.calls.fetch_add(1, Relaxed);
        c.usec.fetch_add(usec, Relaxed);
        if error.is_some() {
            c.failed.fetch_add(1, Relaxed);
        }
    }
    if let Some(text) = error {
        self::error(text);
    }
}

/// Counts a command refused before it ran (`name` is `None` for an unknown command),
/// with its error reply.
pub fn reject(name: Option<&str>, text: &str) {
    if let Some(c) = name.and_then(|n| STATS.commands.get(n)) {
        c.rejected.fetch_add(1, Relaxed);
    }
    error(text);
}

/// The text of an error reply in `buf` (`-CODE message\r\n`), if it is one.
pub fn error_in(buf: &[u8]) -> Option<&str> {
    let line = buf.strip_prefix(b"-")?;
    let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
    std::str::from_utf8(&line[..end]).ok()
}

/// `total_error_replies` of INFO's stats section.
pub fn total_error_replies() -> u64 {
    STATS.total_errors.load(Relaxed)
}

/// CONFIG RESETSTAT.
pub fn reset() {
    for c in STATS.commands.values() {
        c.calls.store(0, Relaxed);
        c.usec.store(0, Relaxed);
        c.rejected.store(0, Relaxed);
        c.failed.store(0, Relaxed);
    }
    STATS.errors.lock().clear();
    STATS.total_errors.store(0, Relaxed);
}

/// INFO's `# Commandstats`: a line per command that was called or refused, by name.
pub fn commandstats_section() -> String {
    let mut rows: Vec<_> = STATS
        .commands
        .iter()
        .map(|(name, c)| {
            let calls = c.calls.load(Relaxed);
            let usec = c.usec.load(Relaxed);
            let rejected = c.rejected.load(Relaxed);
            let failed = c.failed.load(Relaxed);
            (*name, calls, usec, rejected, failed)
        })
        .filter(|r| r.1 + r.3 > 0)
        .collect();
    rows.sort_unstable_by_key(|r| r.0);
    let mut text = String::from("# Commandstats\r\n");
    for (name, calls, usec, rejected, failed) in rows {
        let per_call = if calls == 0 {
            0.0
        } else {
            usec as f64 / calls as f64
        };
        let _ = write!(
            text,
            "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n"
        );
    }
    text.push_str("\r\n");
    text
}

/// INFO's `# Errorstats`: a line per error code.
pub fn errorstats_section() -> String {
    let mut rows: Vec<(String, u64)> = STATS
        .errors
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    rows.sort_unstable();
    let mut text = String::from("# Errorstats\r\n");
    for (code, count) in rows {
        let _ = write!(text, "errorstat_{code}:count={count}\r\n");
    }
    text.push_str("\r\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_found_and_counted_by_code() {
        assert_eq!(error_in(b"-ERR bad thing\r\n"), Some("ERR bad thing"));
        assert_eq!(error_in(b"+OK\r\n"), None);
        assert_eq!(error_in(b""), None);
        let before = total_error_replies();
        call("geoadd", 5, Some("WRONGTYPE Operation against a key"));
        reject(
            Some("geodist"),
            "ERR wrong number of arguments for 'geodist' command",
        );
        assert!(total_error_replies() >= before + 2);
        let cmds = commandstats_section();
        assert!(cmds.contains("cmdstat_geoadd:calls="), "{cmds}");
        assert!(cmds.contains("cmdstat_geodist:calls=0,usec=0,usec_per_call=0.00,rejected_calls="));
        assert!(errorstats_section().contains("errorstat_WRONGTYPE:count="));
    }
}
