//! The session mix, a row of `kelvin-bench throughput`: what a web tier does to its
//! session store. 90% of operations read a session and slide its expiry (`GET` +
//! `EXPIRE`, sent together), 10% write one (`SET ... EX`); keys follow a Zipf law
//! (a few users are very active), over a keyspace loaded first. redis-benchmark cannot
//! mix commands or draw Zipf keys, so this is its own small load generator: one thread
//! and one connection per client, `pipeline` operations in flight on each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::servers::{connect, push_command};

/// Share of operations that read (GET + EXPIRE); the others write (SET EX).
pub const READ_PERCENT: u64 = 90;
/// The Zipf exponent of key popularity (YCSB's default).
pub const ZIPF_EXPONENT: f64 = 0.99;
/// The sessions' time to live, seconds (set on write, slid on read).
pub const TTL_SECS: &str = "1800";
/// Bytes per session value.
pub const VALUE_BYTES: usize = 256;

pub struct Mix {
    pub clients: u32,
    /// Operations per run in all (a read counts once, for its two commands).
    pub operations: u64,
    pub pipeline: u32,
    pub keyspace: u64,
    /// Longest one run may take.
    pub timeout: Duration,
}

/// `sess:<n>`.
fn key(n: u64) -> String {
    format!("sess:{n:08}")
}

/// The cumulative Zipf distribution over ranks `0..n`.
pub fn zipf_cdf(n: u64, exponent: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n as usize);
    let mut sum = 0.0;
    for rank in 1..=n {
        sum += 1.0 / (rank as f64).powf(exponent);
        cdf.push(sum);
    }
    for p in &mut cdf {
        *p /= sum;
    }
    cdf
}

/// xorshift64*: a tiny, seedable generator (the bench crate has no rand).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Loads every session of the keyspace (SET EX), so reads find them.
pub fn preload(port: u16, keyspace: u64) -> Result<()> {
    let mut stream = connect(port, Duration::from_secs(60))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let value = vec![b'v'; VALUE_BYTES];
    let mut buf = Vec::new();
    let mut line = String::new();
    for chunk in (0..keyspace).collect::<Vec<_>>().chunks(1000) {
        buf.clear();
        for &n in chunk {
            let k = key(n);
            push_command(
                &mut buf,
                &[b"SET", k.as_bytes(), &value, b"EX", TTL_SECS.as_bytes()],
            );
        }
        stream.write_all(&buf)?;
        for _ in chunk {
            line.clear();
            reader.read_line(&mut line)?;
            if line != "+OK\r\n" {
                bail!("preload: unexpected reply {:?}", line.trim_end());
            }
        }
    }
    Ok(())
}

/// Runs the mix once; returns operations per second.
pub fn run(port: u16, mix: &Mix) -> Result<f64> {
    let cdf = Arc::new(zipf_cdf(mix.keyspace.max(1), ZIPF_EXPONENT));
    let per_client = mix.operations / mix.clients.max(1) as u64;
    let deadline = Instant::now() + mix.timeout;
    let started = Instant::now();
    let workers: Vec<_> = (0..mix.clients.max(1))
        .map(|c| {
            let cdf = cdf.clone();
            let pipeline = mix.pipeline.max(1) as u64;
            std::thread::spawn(move || client(port, c as u64, per_client, pipeline, &cdf, deadline))
        })
        .collect();
    let mut done = 0u64;
    for w in workers {
        done += w
            .join()
            .map_err(|_| anyhow::anyhow!("a session client panicked"))??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// One client: `operations` operations, `pipeline` at a time; returns how many it did.
fn client(
    port: u16,
    seed: u64,
    operations: u64,
    pipeline: u64,
    cdf: &[f64],
    deadline: Instant,
) -> Result<u64> {
    let mut stream = connect(port, Duration::from_secs(30))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let value = vec![b'w'; VALUE_BYTES];
    let mut buf = Vec::new();
    let mut done = 0;
    while done < operations {
        if Instant::now() > deadline {
            bail!("the session mix took too long");
        }
        let n = pipeline.min(operations - done);
        buf.clear();
        let mut replies = 0;
        for _ in 0..n {
            let u = rng.unit();
            let rank = cdf.partition_point(|&p| p < u) as u64;
            let k = key(rank.min(cdf.len() as u64 - 1));
            if rng.next() % 100 < READ_PERCENT {
                push_command(&mut buf, &[b"GET", k.as_bytes()]);
                push_command(&mut buf, &[b"EXPIRE", k.as_bytes(), TTL_SECS.as_bytes()]);
                replies += 2;
            } else {
                push_command(
                    &mut buf,
                    &[b"SET", k.as_bytes(), &value, b"EX", TTL_SECS.as_bytes()],
                );
                replies += 1;
            }
        }
        stream.write_all(&buf)?;
        for _ in 0..replies {
            skip_reply(&mut reader)?;
        }
        done += n;
    }
    Ok(done)
}

/// Reads one reply (simple, integer, bulk or nil); an error reply is an error.
fn skip_reply(reader: &mut BufReader<TcpStream>) -> Result<()> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("connection closed by the server");
    }
    match line.as_bytes().first() {
        Some(b'+' | b':') => Ok(()),
        Some(b'$') => {
            let len: i64 = line[1..].trim_end().parse().context("bulk length")?;
            if len >= 0 {
                let mut data = vec![0u8; len as usize + 2];
                reader.read_exact(&mut data)?;
            }
            Ok(())
        }
        _ => bail!("unexpected reply {:?}", line.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_sums_to_one() {
        let cdf = zipf_cdf(1000, ZIPF_EXPONENT);
        assert!((cdf[999] - 1.0).abs() < 1e-9);
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        // The top 1% of keys take a large share of accesses.
        assert!(cdf[9] > 0.3, "{}", cdf[9]);
        let mut rng = Rng(42);
        let hot = (0..10_000)
            .filter(|_| {
                let u = rng.unit();
                cdf.partition_point(|&p| p < u) < 10
            })
            .count();
        assert!((3000..5000).contains(&hot), "{hot}");
    }
}
