//! Access traces for `planner-eval`: one access per line, `t_ms,op,key,bytes,ttl_ms`
//! (`op` r = read, w = a whole-value write, d = delete; `ttl_ms` 0 = none), read from a
//! file or made by a built-in generator of one of three shapes:
//!
//! - `sessions` (the default): web sessions. Users arrive at random; each has an `auth:`
//!   key (~100 B), a `sess:` key (0.5-2 KB) and, for half of them, a `cart:` key (2-20 KB).
//!   A request reads `auth:` and `sess:` (or rewrites `sess:`, 20%) and sometimes the
//!   cart. Three kinds of user: pollers (a tab polling every 10-60 s for ~20 min), readers
//!   (a page every 1-5 min on average, irregular, for ~40 min) and bursts (clicks ~3 s
//!   apart for ~2 min, then gone). Sessions and auth keys live an hour after their last
//!   write; a third of pollers and readers log out (deletes).
//! - `zipf`: a fixed set of keys, requests Zipf-distributed over them (s = 0.99), 80%
//!   reads, log-uniform sizes 100 B-10 KB: stationary popularity, no rhythm.
//! - `drift`: like `zipf`, but the popularity ranking moves on: every minute a tenth of
//!   the hottest ranks go to keys that were cold (news items, campaigns).

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One access.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub t_ms: u64,
    pub op: Op,
    pub key: u32,
    pub bytes: u32,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Delete,
}

/// A trace: accesses in time order, keys as indexes into `names`.
#[derive(Debug)]
pub struct Trace {
    pub names: Vec<String>,
    pub accesses: Vec<Access>,
}

/// Most lines a trace file may have.
pub const MAX_TRACE_LINES: usize = 50_000_000;

impl Trace {
    /// Reads a trace file; an error names the line that is wrong.
    pub fn read(path: &Path) -> Result<Trace> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut names = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut accesses = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("t_ms")) {
                continue;
            }
            if accesses.len() >= MAX_TRACE_LINES {
                bail!("{}: more than {MAX_TRACE_LINES} accesses", path.display());
            }
            let bad = || {
                format!(
                    "{}:{}: want t_ms,op,key,bytes,ttl_ms: {line}",
                    path.display(),
                    n + 1
                )
            };
            let f: Vec<&str> = line.split(',').collect();
            let [t, op, key, bytes, ttl] = f[..] else {
                bail!(bad());
            };
            let op = match op {
                "r" => Op::Read,
                "w" => Op::Write,
                "d" => Op::Delete,
                _ => bail!(bad()),
            };
            let next = names.len() as u32;
            let key = *index.entry(key.to_string()).or_insert_with(|| {
                names.push(key.to_string());
                next
            });
            accesses.push(Access {
                t_ms: t.parse().with_context(bad)?,
                op,
                key,
                bytes: bytes.parse().with_context(bad)?,
                ttl_ms: ttl.parse().with_context(bad)?,
            });
        }
        // Stable: accesses at the same ms keep the file's order.
        accesses.sort_by_key(|a| a.t_ms);
        Ok(Trace { names, accesses })
    }

    /// Writes the trace in the file format.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "t_ms,op,key,bytes,ttl_ms")?;
        for a in &self.accesses {
            let op = match a.op {
                Op::Read => 'r',
                Op::Write => 'w',
                Op::Delete => 'd',
            };
            let name = &self.names[a.key as usize];
            writeln!(out, "{},{op},{name},{},{}", a.t_ms, a.bytes, a.ttl_ms)?;
        }
        Ok(())
    }
}

/// What the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Sessions,
    Zipf,
    Drift,
}

impl Shape {
    pub fn parse(s: &str) -> Result<Shape> {
        Ok(match s {
            "sessions" => Shape::Sessions,
            "zipf" => Shape::Zipf,
            "drift" => Shape::Drift,
            _ => bail!("unknown trace shape {s:?} (sessions, zipf, drift)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Sessions => "sessions",
            Shape::Zipf => "zipf",
            Shape::Drift => "drift",
        }
    }
}

/// Generates `duration_ms` of a trace of `shape`; `scale` sets its size (users arriving
/// per second for `sessions`, thousands of keys for the others).
pub fn generate(shape: Shape, duration_ms: u64, scale: f64, seed: u64) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut g = Gen::default();
    match shape {
        Shape::Sessions => sessions(&mut g, &mut rng, duration_ms, scale),
        Shape::Zipf => popular(&mut g, &mut rng, duration_ms, scale, false),
        Shape::Drift => popular(&mut g, &mut rng, duration_ms, scale, true),
    }
    g.accesses.sort_by_key(|a| a.t_ms);
    Trace {
        names: g.names,
        accesses: g.accesses,
    }
}

#[derive(Default)]
struct Gen {
    names: Vec<String>,
    accesses: Vec<Access>,
}

impl Gen {
    fn key(&mut self, name: String) -> u32 {
        self.names.push(name);
        (self.names.len() - 1) as u32
    }

    fn push(&mut self, t_ms: u64, op: Op, key: u32, bytes: u32, ttl_ms: u64) {
        self.accesses.push(Access {
            t_ms,
            op,
            key,
            bytes,
            ttl_ms,
        });
    }
}

/// An exponential draw with mean `mean`.
pub(crate) fn exp(rng: &mut SmallRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.gen::<f64>()).ln()
}

fn log_uniform(rng: &mut SmallRng, lo: f64, hi: f64) -> u32 {
    (lo * (hi / lo).powf(rng.gen::<f64>())) as u32
}

const SESSION_TTL_MS: u64 = 3_600_000;

fn sessions(g: &mut Gen, rng: &mut SmallRng, duration_ms: u64, users_per_sec: f64) {
    let mut t = 0.0;
    let mut uid = 0u64;
    loop {
        t += exp(rng, 1000.0 / users_per_sec.max(0.001));
        if t >= duration_ms as f64 {
            break;
        }
        uid += 1;
        let kind = rng.gen::<f64>();
        // (gap between requests, ms, as a closure; lifetime ms; cart share; logs out)
        let (lifetime, cart_share, logout) = match kind {
            k if k < 0.25 => (exp(rng, 1_200_000.0), 0.02, rng.gen_bool(0.33)),
            k if k < 0.60 => (exp(rng, 2_400_000.0), 0.10, rng.gen_bool(0.33)),
            _ => (exp(rng, 120_000.0), 0.30, false),
        };
        let period = rng.gen_range(10_000.0..60_000.0);
        let mean_gap = rng.gen_range(60_000.0..300_000.0);
        let auth = g.key(format!("auth:{uid}"));
        let sess = g.key(format!("sess:{uid}"));
        let cart = rng.gen_bool(0.5).then(|| g.key(format!("cart:{uid}")));
        let auth_bytes = rng.gen_range(80..150);
        let mut sess_bytes = log_uniform(rng, 500.0, 2000.0);
        let cart_bytes = log_uniform(rng, 2000.0, 20_000.0);
        let start = t as u64;
        g.push(start, Op::Write, auth, auth_bytes, SESSION_TTL_MS);
        g.push(start, Op::Write, sess, sess_bytes, SESSION_TTL_MS);
        if let Some(cart) = cart {
            g.push(start, Op::Write, cart, cart_bytes, 0);
        }
        let end = t + lifetime;
        let mut at = t;
        loop {
            at += match kind {
                k if k < 0.25 => period * rng.gen_range(0.9..1.1),
                k if k < 0.60 => exp(rng, mean_gap),
                _ => exp(rng, 3_000.0),
            };
            if at >= end || at >= duration_ms as f64 {
                break;
            }
            let now = at as u64;
            g.push(now, Op::Read, auth, auth_bytes, 0);
            if rng.gen_bool(0.2) {
                sess_bytes = (sess_bytes as f64 * rng.gen_range(0.9..1.15)) as u32;
                g.push(now, Op::Write, sess, sess_bytes.max(100), SESSION_TTL_MS);
            } else {
                g.push(now, Op::Read, sess, sess_bytes, 0);
            }
            if let Some(cart) = cart.filter(|_| rng.gen_bool(cart_share)) {
                let op = if rng.gen_bool(0.3) {
                    Op::Write
                } else {
                    Op::Read
                };
                g.push(now, op, cart, cart_bytes, 0);
            }
        }
        if logout && end < duration_ms as f64 {
            g.push(end as u64, Op::Delete, sess, 0, 0);
            g.push(end as u64, Op::Delete, auth, 0, 0);
        }
    }
}

/// Zipf-like popularity over `thousands` x 1000 keys (s = 0.99), 20 requests per key an
/// hour on average; `drift`: every minute a tenth of the 1000 hottest ranks are given to
/// cold keys.
fn popular(g: &mut Gen, rng: &mut SmallRng, duration_ms: u64, thousands: f64, drift: bool) {
    let n = ((thousands * 1000.0) as usize).max(100);
    let keys: Vec<u32> = (0..n).map(|i| g.key(format!("item:{i}"))).collect();
    let sizes: Vec<u32> = (0..n).map(|_| log_uniform(rng, 100.0, 10_000.0)).collect();
    // rank -> key; the cumulative weights of the ranks.
    let mut by_rank: Vec<usize> = (0..n).collect();
    let weights: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(0.99)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(n);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    for (i, &k) in keys.iter().enumerate() {
        g.push(0, Op::Write, k, sizes[i], 0);
    }
    let rate_per_ms = n as f64 * 20.0 / 3_600_000.0;
    let mut t = 0.0;
    let mut next_drift = 60_000.0;
    loop {
        t += exp(rng, 1.0 / rate_per_ms);
        if t >= duration_ms as f64 {
            break;
        }
        if drift && t >= next_drift {
            next_drift += 60_000.0;
            for _ in 0..100 {
                let hot = rng.gen_range(0..1000.min(n));
                let cold = rng.gen_range(n / 2..n);
                by_rank.swap(hot, cold);
            }
        }
        let u: f64 = rng.gen();
        let rank = cumulative.partition_point(|&c| c < u).min(n - 1);
        let i = by_rank[rank];
        let op = if rng.gen_bool(0.8) {
            Op::Read
        } else {
            Op::Write
        };
        g.push(t as u64, op, keys[i], sizes[i], 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_trace_round_trips_through_its_file() {
        let t = generate(Shape::Sessions, 120_000, 2.0, 1);
        assert!(t.accesses.len() > 100, "{}", t.accesses.len());
        assert!(t.accesses.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        let dir = std::env::temp_dir().join(format!("kelvin-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv");
        t.write(&path).unwrap();
        let back = Trace::read(&path).unwrap();
        assert_eq!(back.accesses.len(), t.accesses.len());
        for (a, b) in back.accesses.iter().zip(&t.accesses) {
            assert_eq!(
                (a.t_ms, a.op, a.bytes, a.ttl_ms),
                (b.t_ms, b.op, b.bytes, b.ttl_ms)
            );
            assert_eq!(back.names[a.key as usize], t.names[b.key as usize]);
        }
        std::fs::write(&path, "t_ms,op,key,bytes,ttl_ms\n5,x,k,1,0\n").unwrap();
        assert!(Trace::read(&path).unwrap_err().to_string().contains(":2:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
