//! `kelvin-bench crosstx`: what a transaction across groups costs (issue 19) against the
//! same within one group, on a 3-node cluster of 3 groups (each replicated on every node,
//! `appendfsync always`), one plain client on node 1's main port sending one request at
//! a time: a SET (one log round trip of the group node 1 leads: the unit), a MULTI/EXEC
//! of two SETs and a RENAME, each within that group, within a group led elsewhere
//! (relayed), and across two groups (two-phase commit). The table gives each one's
//! latency and, for the ones across groups, how many log round trips (local SETs) they
//! cost more than the same within the local group.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::group::Group;
use crate::servers::{connect, push_command, read_reply, Kind, Programs, Spec};

pub struct Options {
    pub programs: Programs,
    /// Requests per row.
    pub ops: usize,
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// Highest slot of groups 0 and 1 (`cluster create --groups 3`).
const BOUNDS: [u16; 2] = [5461, 10922];

pub fn run(opts: &Options) -> Result<String> {
    let group = Group::start_kelvin(
        &opts.programs,
        &Spec::new(Kind::Kelvin).appendfsync("always"),
        3,
        3,
    )?;
    let mut s = connect(group.nodes[0].port, TIMEOUT)?;
    // A key per group, and the group node 1 leads (its SET is the fastest: no relay).
    let mut keys: Vec<String> = Vec::new();
    for g in 0..3 {
        let mut i = 0;
        let key = loop {
            let k = format!("k{g}:{i}");
            if group_of(&mut s, &k)? == g {
                break k;
            }
            i += 1;
        };
        keys.push(key);
    }
    let mut set = Vec::new();
    for key in &keys {
        set.push(timed(opts.ops.min(500), || {
            one(&mut s, &[&["SET", key, "v"]])
        })?);
    }
    let local = (0..3)
        .min_by(|&a, &b| set[a].mean().total_cmp(&set[b].mean()))
        .unwrap_or(0);
    let remote = (local + 1) % 3;
    let (l, r) = (keys[local].clone(), keys[remote].clone());
    let tag = |k: &str, s: &str| format!("{{{k}}}{s}");
    let mut rows: Vec<(String, Stats)> = Vec::new();
    rows.push((
        "SET (the local group's log round trip)".into(),
        timed(opts.ops, || one(&mut s, &[&["SET", &l, "v"]]))?,
    ));
    rows.push((
        "SET relayed to another group's leader".into(),
        timed(opts.ops, || one(&mut s, &[&["SET", &r, "v"]]))?,
    ));
    let (la, lb) = (tag(&l, "a"), tag(&l, "b"));
    let (ra, rb) = (tag(&r, "a"), tag(&r, "b"));
    rows.push((
        "MULTI/EXEC, 2 SETs, local group".into(),
        timed(opts.ops, || {
            one(
                &mut s,
                &[
                    &["MULTI"],
                    &["SET", &la, "1"],
                    &["SET", &lb, "2"],
                    &["EXEC"],
                ],
            )
        })?,
    ));
    rows.push((
        "MULTI/EXEC, 2 SETs, another group (relayed)".into(),
        timed(opts.ops, || {
            one(
                &mut s,
                &[
                    &["MULTI"],
                    &["SET", &ra, "1"],
                    &["SET", &rb, "2"],
                    &["EXEC"],
                ],
            )
        })?,
    ));
    rows.push((
        "MULTI/EXEC, 2 SETs, across 2 groups".into(),
        timed(opts.ops, || {
            one(
                &mut s,
                &[
                    &["MULTI"],
                    &["SET", &la, "1"],
                    &["SET", &ra, "2"],
                    &["EXEC"],
                ],
            )
        })?,
    ));
    let (lx, ly) = (tag(&l, "x"), tag(&l, "y"));
    one(&mut s, &[&["SET", &lx, "v"]])?;
    let mut flip = false;
    rows.push((
        "RENAME, local group".into(),
        timed(opts.ops, || {
            flip = !flip;
            let (from, to) = if flip { (&lx, &ly) } else { (&ly, &lx) };
            one(&mut s, &[&["RENAME", from, to]])
        })?,
    ));
    let rx = tag(&r, "x");
    crate::servers::command(&mut s, &["DEL", &ly])?;
    let mut flip = false;
    rows.push((
        "RENAME, across 2 groups".into(),
        timed(opts.ops, || {
            flip = !flip;
            let (from, to) = if flip { (&lx, &rx) } else { (&rx, &lx) };
            one(&mut s, &[&["RENAME", from, to]])
        })?,
    ));
    // Check afterwards that the data is really there: the last RENAME left the value
    // at one of its two keys (an even count brings it back to `lx`).
    let at = if opts.ops.is_multiple_of(2) { &lx } else { &rx };
    let v = crate::servers::command(&mut s, &["GET", at])?;
    if v != "v" {
        bail!("after the RENAMEs {at} holds {v:?}, not \"v\"");
    }
    let unit = rows[0].1.mean();
    let mut out = format!(
        "kelvin-bench crosstx: 3 nodes, 3 groups (each on every node, appendfsync always), \
         one client on node 1's main port, {} requests a row, one at a time. Node 1 leads \
         group {local}; \"another group\" is group {remote}.\n\n\
         | request | mean µs | p50 µs | p99 µs | log round trips more than within the local group |\n\
         |---|---:|---:|---:|---:|\n",
        opts.ops
    );
    let more = |row: usize, base: usize| (rows[row].1.mean() - rows[base].1.mean()) / unit;
    for (i, (name, st)) in rows.iter().enumerate() {
        let extra = match i {
            4 => format!("{:.2}", more(4, 2)),
            6 => format!("{:.2}", more(6, 5)),
            _ => String::new(),
        };
        out += &format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {extra} |\n",
            st.mean(),
            st.quantile(0.5),
            st.quantile(0.99)
        );
    }
    Ok(out)
}

/// The group of `key` by its slot (`CLUSTER KEYSLOT`).
fn group_of(s: &mut TcpStream, key: &str) -> Result<usize> {
    let slot: u16 = crate::servers::command(s, &["CLUSTER", "KEYSLOT", key])?.parse()?;
    Ok(BOUNDS.iter().filter(|&&b| slot > b).count())
}

/// Sends `commands` in one write and reads their replies; the last one is an error, or
/// an array (EXEC) whose elements must all be OK, or must be OK.
fn one(s: &mut TcpStream, commands: &[&[&str]]) -> Result<()> {
    let mut buf = Vec::new();
    for c in commands {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
        push_command(&mut buf, &args);
    }
    s.write_all(&buf)?;
    for _ in 1..commands.len() {
        read_reply(s)?;
    }
    let line = crate::servers::read_line(s)?;
    if let Some(n) = line.strip_prefix('*') {
        let n: i64 = n.parse().context("array header")?;
        if n < 0 {
            bail!("EXEC answered nil");
        }
        for _ in 0..n {
            let r = read_reply(s)?;
            if r != "OK" {
                bail!("a transaction's command answered {r:?}");
            }
        }
        return Ok(());
    }
    match line.strip_prefix('-') {
        Some(e) => bail!("{e}"),
        None if line == "+OK" => Ok(()),
        None => bail!("unexpected reply {line:?}"),
    }
}

/// Latencies of `n` calls of `f`, in µs.
fn timed(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    Ok(Stats(us))
}

struct Stats(Vec<f64>);

impl Stats {
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }

    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.0.len().max(1) - 1) as f64 * q) as usize;
        self.0.get(i).copied().unwrap_or(0.0)
    }
}
