//! The session traffic of `kelvin-bench reshard`: an open-loop load at a fixed rate
//! through [`ClusterClient`], and what it measured per second.
//!
//! Request `i` is scheduled at `start + i / rate`; worker `w` of `W` sends the requests
//! `i ≡ w (mod W)` at their scheduled time or, when it is behind, at once. Latency runs
//! from the scheduled time, so a stall counts for every request it delays (no
//! coordinated omission). Which session a request reads or touches follows one of two
//! laws ([`Popularity`]): a Zipf law (s = 0.99) over the loaded sessions, ranks scattered
//! over the key space so the hot set spans every slot range; or the rhythms of users
//! ([`Rhythms`]: pollers, readers and bursts of clicks that stop). 80% of the requests
//! read a session (HGETALL), 15% touch one (HSET last_seen), 5% are new logins (HSET of
//! a whole session, then EXPIRE so they expire within the run).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::planner::trace::exp;
use crate::slotclient::{ClusterClient, Failure, Reply, SlotMap};

/// Zipf exponent of the session popularity.
const ZIPF_S: f64 = 0.99;

/// Most ranks the Zipf table holds (8 bytes each): beyond, ranks are drawn from the
/// table's range and scattered over all sessions.
const MAX_ZIPF_RANKS: usize = 1 << 21;

/// Seconds a new login lives (so that some expire while the run goes on).
pub const LOGIN_TTL_SECS: u64 = 5;

/// Sessions are `session:<9 digits>`.
pub fn session_key(id: u64) -> String {
    format!("session:{id:09}")
}

/// The HSET arguments of a whole session of about `bytes` bytes (field names and values).
pub fn session_fields(id: u64, bytes: usize, now_ms: u128) -> Vec<Vec<u8>> {
    let head: Vec<Vec<u8>> = vec![
        b"user".to_vec(),
        format!("user{id}").into_bytes(),
        b"created".to_vec(),
        now_ms.to_string().into_bytes(),
        b"last_seen".to_vec(),
        now_ms.to_string().into_bytes(),
        b"data".to_vec(),
    ];
    let used: usize = head.iter().map(Vec::len).sum();
    let mut fields = head;
    fields.push(padding(id, bytes.saturating_sub(used).max(1)));
    fields
}

/// `len` letters that do not compress (Redis's DUMP and RDB compress with LZF), the same
/// for the same `id`.
fn padding(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// Zipf(s) over `n` ranks, as a cumulative table.
pub struct Zipf {
    cdf: Vec<f64>,
    sessions: u64,
    /// Multiplier coprime with `sessions`: rank -> session id is a bijection.
    scatter: u64,
}

impl Zipf {
    pub fn new(sessions: u64) -> Zipf {
        let sessions = sessions.max(1);
        let n = (sessions as usize).min(MAX_ZIPF_RANKS);
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(ZIPF_S);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        let mut scatter = 2_654_435_761 % sessions;
        while gcd(scatter.max(1), sessions) != 1 {
            scatter += 1;
        }
        Zipf {
            cdf,
            sessions,
            scatter: scatter.max(1),
        }
    }

    /// A session id.
    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        let u: f64 = rng.gen();
        let rank = self.cdf.partition_point(|&c| c < u) as u64;
        // Ranks past the table (very large data sets) share its tail.
        let spread = self.sessions / self.cdf.len() as u64;
        let rank = if spread > 1 {
            rank * spread + rng.gen_range(0..spread)
        } else {
            rank
        };
        (rank % self.sessions) * self.scatter % self.sessions
    }

    /// The share of requests that go to the `fraction` most popular sessions.
    pub fn hot_share(&self, fraction: f64) -> f64 {
        let k = ((self.cdf.len() as f64 * fraction) as usize).clamp(1, self.cdf.len());
        self.cdf[k - 1]
    }
}

/// Which loaded session each request reads or touches.
pub enum Popularity {
    Zipf(Zipf),
    Rhythms(Rhythms),
}

impl Popularity {
    /// The session of request `i` (a read or a touch).
    fn session(&self, rng: &mut SmallRng, i: u64) -> u64 {
        match self {
            Popularity::Zipf(z) => z.sample(rng),
            Popularity::Rhythms(r) => r.session(i),
        }
    }
}

/// Users with rhythms, at the bench's time scale (minutes of load, not hours): each
/// arrives at random, takes a loaded session (at random) and comes back to it on its
/// own schedule until it leaves: a third poll (a tab asking every 2-8 s, for a minute on
/// average), a third read (a page every 5-20 s on average, irregular, for two minutes),
/// and the rest click in bursts (about every 0.5 s for 15 s on average, then gone). A
/// burst touches its session more often than a poll does, and stops: a key's counter
/// tells how often it was touched, its rhythm against its idle time whether it will be
/// back ([`crate::reshard`]'s `kelvin` plans with the learned model where that beats the
/// counter). Request `i` reads or touches the session of the `i`-th access of the users
/// merged in time (made before the run for [`Rhythms::HORIZON`]; then over again).
pub struct Rhythms {
    schedule: Vec<u32>,
}

impl Rhythms {
    /// How long a schedule is made for (at the load's rate).
    pub const HORIZON: Duration = Duration::from_secs(600);
    /// The users' mean accesses each (for the arrival rate that gives the load's rate):
    /// a third of 60 s / 5 s, a third of 120 s / 12.5 s, a third of 15 s / 0.5 s.
    const MEAN_ACCESSES: f64 = (12.0 + 9.6 + 30.0) / 3.0;
    /// Users arrive this long before the load starts, so that it starts with as many
    /// under way as later.
    const LEAD_MS: f64 = 300_000.0;

    /// The schedule of `rate` accesses a second over `sessions` loaded sessions.
    pub fn new(sessions: u64, rate: u64, seed: u64) -> Rhythms {
        let mut rng = SmallRng::seed_from_u64(seed);
        let horizon_ms = Self::HORIZON.as_millis() as f64;
        let arrivals_per_ms = rate as f64 / Self::MEAN_ACCESSES / 1000.0;
        let mut accesses: Vec<(u32, u32)> = Vec::new();
        let mut t = -Self::LEAD_MS;
        loop {
            t += exp(&mut rng, 1.0 / arrivals_per_ms.max(1e-9));
            if t >= horizon_ms {
                break;
            }
            let session = rng.gen_range(0..sessions.max(1)) as u32;
            let kind = rng.gen_range(0..3u8);
            let (lifetime, period, mean_gap) = match kind {
                0 => (
                    exp(&mut rng, 60_000.0),
                    rng.gen_range(2_000.0..8_000.0),
                    0.0,
                ),
                1 => (
                    exp(&mut rng, 120_000.0),
                    0.0,
                    rng.gen_range(5_000.0..20_000.0),
                ),
                _ => (exp(&mut rng, 15_000.0), 0.0, 500.0),
            };
            let end = (t + lifetime).min(horizon_ms);
            let mut at = t;
            loop {
                at += match kind {
                    0 => period * rng.gen_range(0.9..1.1),
                    _ => exp(&mut rng, mean_gap),
                };
                if at >= end {
                    break;
                }
                if at >= 0.0 {
                    accesses.push((at as u32, session));
                }
            }
        }
        accesses.sort_unstable_by_key(|a| a.0);
        Rhythms {
            schedule: accesses.into_iter().map(|a| a.1).collect(),
        }
    }

    /// The session of request `i`.
    fn session(&self, i: u64) -> u64 {
        match self.schedule.len() {
            0 => 0,
            n => u64::from(self.schedule[(i % n as u64) as usize]),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One request as it went: when it was due (ms from the start), how long it took from
/// then (µs), and how it failed if it did.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub due_ms: u32,
    pub latency_us: u32,
    pub failure: Option<Failure>,
    /// What it was: `b'r'` a read, `b't'` a touch, `b'l'` a new login.
    pub op: u8,
    /// The client port of the node that answered (its slot map's owner of the key after
    /// the request): which node's latency this was.
    pub port: u16,
}

impl Sample {
    pub fn done_ms(&self) -> u32 {
        self.due_ms + self.latency_us / 1000
    }
}

/// The load's settings.
#[derive(Clone)]
pub struct Workload {
    pub value_bytes: usize,
    /// Requests per second.
    pub rate: u64,
    pub workers: u64,
    /// The load stops by itself after this long even if nobody stops it.
    pub max_duration: Duration,
}

/// A running load: stop it with [`Load::finish`].
pub struct Load {
    pub start: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Sample>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

/// Most failed requests whose description a run keeps.
const MAX_FAILURE_NOTES: usize = 20;

impl Load {
    pub fn start(map: Arc<SlotMap>, w: &Workload, popularity: Arc<Popularity>) -> Load {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..w.workers)
            .map(|id| {
                let (map, w, popularity, stop) =
                    (map.clone(), w.clone(), popularity.clone(), stop.clone());
                let notes = failures.clone();
                std::thread::spawn(move || worker(id, map, &w, &popularity, start, &stop, &notes))
            })
            .collect();
        Load {
            start,
            stop,
            workers,
            failures,
        }
    }

    /// Milliseconds since the load started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Stops the workers and returns every request's sample, and what the first failed
    /// requests were.
    pub fn finish(self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for h in self.workers {
            if let Ok(samples) = h.join() {
                all.extend(samples);
            }
        }
        all.sort_by_key(|s| s.due_ms);
        let notes = std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        (all, notes)
    }
}

fn worker(
    id: u64,
    map: Arc<SlotMap>,
    w: &Workload,
    popularity: &Popularity,
    start: Instant,
    stop: &AtomicBool,
    notes: &Mutex<Vec<String>>,
) -> Vec<Sample> {
    let mut rng = SmallRng::seed_from_u64(0x5e55_1011 ^ id);
    let mut client = ClusterClient::new(map);
    let mut samples = Vec::new();
    let step_ns = 1_000_000_000 / w.rate.max(1);
    let max_requests = w.rate.saturating_mul(w.max_duration.as_secs().max(1)) / w.workers.max(1);
    for n in 0..max_requests {
        let i = n * w.workers + id;
        let due = start + Duration::from_nanos(i * step_ns);
        if stop.load(Ordering::Relaxed) || due > start + w.max_duration {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let (op, port, result) = request(&mut client, &mut rng, w, popularity, i);
        let due_ms = due.duration_since(start).as_millis() as u32;
        let failure = result.as_ref().err().map(|(f, _)| *f);
        if let Err((f, what)) = result {
            let mut notes = notes.lock().unwrap_or_else(|e| e.into_inner());
            if notes.len() < MAX_FAILURE_NOTES {
                notes.push(format!("{} at {due_ms} ms: {what}", f.name()));
            }
        }
        samples.push(Sample {
            due_ms,
            latency_us: due.elapsed().as_micros().min(u32::MAX as u128) as u32,
            failure,
            op,
            port,
        });
        client.refresh_after_moved();
    }
    samples
}

/// One session request: a read, a touch, or a new login. A failure comes with what the
/// request was.
fn request(
    client: &mut ClusterClient,
    rng: &mut SmallRng,
    w: &Workload,
    popularity: &Popularity,
    i: u64,
) -> (u8, u16, Result<(), (Failure, String)>) {
    let (op, key, what, result) = session_request(client, rng, w, popularity, i);
    (op, client.port_of(&key), result.map_err(|f| (f, what)))
}

fn session_request(
    client: &mut ClusterClient,
    rng: &mut SmallRng,
    w: &Workload,
    popularity: &Popularity,
    i: u64,
) -> (u8, String, String, Result<(), Failure>) {
    let roll: u32 = rng.gen_range(0..100);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    if roll < 80 {
        let key = session_key(popularity.session(rng, i));
        let result = match client.exec(&[b"HGETALL", key.as_bytes()]) {
            // A loaded session never expires: an empty reply is a lost session.
            Ok(Reply::Array(Some(items))) if !items.is_empty() => Ok(()),
            Ok(_) => Err(Failure::SessionMissing),
            Err(f) => Err(f),
        };
        let what = format!("HGETALL {key} (slot port {})", client.port_of(&key));
        (b'r', key, what, result)
    } else if roll < 95 {
        let key = session_key(popularity.session(rng, i));
        let now = now_ms.to_string();
        let result = client
            .exec(&[b"HSET", key.as_bytes(), b"last_seen", now.as_bytes()])
            .map(drop);
        let what = format!("HSET {key} last_seen");
        (b't', key, what, result)
    } else {
        let key = format!("login:{i:012}");
        let fields = session_fields(i, w.value_bytes, now_ms);
        let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
        args.extend(fields.iter().map(Vec::as_slice));
        let ttl = LOGIN_TTL_SECS.to_string();
        let result = client.exec(&args).and_then(|_| {
            client
                .exec(&[b"EXPIRE", key.as_bytes(), ttl.as_bytes()])
                .map(drop)
        });
        let what = format!("HSET {key} (new login) + EXPIRE");
        (b'l', key, what, result)
    }
}

/// One second of the run, by completion time for throughput and by due time for
/// latency.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub t: u32,
    pub ops: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// The `q` quantile (0..1) of `us`, in milliseconds; 0 if empty. Sorts `us`.
pub fn quantile_ms(us: &mut [u32], q: f64) -> f64 {
    if us.is_empty() {
        return 0.0;
    }
    us.sort_unstable();
    let idx = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
    f64::from(us[idx]) / 1000.0
}

/// Per-second throughput and latency of `samples`.
pub fn per_second(samples: &[Sample]) -> Vec<Second> {
    let last = samples.iter().map(Sample::done_ms).max().unwrap_or(0) / 1000;
    let mut secs: Vec<Second> = (0..=last)
        .map(|t| Second {
            t,
            ..Default::default()
        })
        .collect();
    let mut lat: Vec<Vec<u32>> = vec![Vec::new(); secs.len()];
    for s in samples {
        let done = (s.done_ms() / 1000) as usize;
        match s.failure {
            None => secs[done].ops += 1,
            Some(_) => secs[done].errors += 1,
        }
        lat[(s.due_ms / 1000) as usize].push(s.latency_us);
    }
    for (sec, l) in secs.iter_mut().zip(&mut lat) {
        sec.p50_ms = quantile_ms(l, 0.5);
        sec.p99_ms = quantile_ms(l, 0.99);
        sec.p999_ms = quantile_ms(l, 0.999);
    }
    secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_covers_the_sessions() {
        let z = Zipf::new(10_000);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let id = z.sample(&mut rng);
            assert!(id < 10_000);
            seen.insert(id);
        }
        assert!(seen.len() > 1000);
        assert!(z.hot_share(0.01) > 0.3);
    }

    #[test]
    fn rhythms_run_at_about_the_rate_and_come_back_to_their_sessions() {
        let rate = 2000;
        let r = Rhythms::new(100_000, rate, 7);
        let per_sec = r.schedule.len() as f64 / Rhythms::HORIZON.as_secs_f64();
        assert!(
            (per_sec - rate as f64).abs() < rate as f64 * 0.2,
            "{per_sec} accesses a second"
        );
        // Users come back: far fewer sessions than accesses in a minute (11.5k of 120k
        // with this seed), and many of those touched in one minute are touched again in
        // the next two (57%: bursts do not come back).
        let minute = 60 * rate as usize;
        let first: std::collections::HashSet<u32> = r.schedule[..minute].iter().copied().collect();
        assert!(first.len() * 4 < minute, "{} sessions", first.len());
        let next: std::collections::HashSet<u32> =
            r.schedule[minute..3 * minute].iter().copied().collect();
        let back = first.iter().filter(|s| next.contains(s)).count();
        assert!(back * 3 > first.len(), "{back} of {} back", first.len());
        assert!(r.schedule.iter().all(|&s| s < 100_000));
        assert_eq!(r.session(3), r.session(3 + r.schedule.len() as u64));
    }

    #[test]
    fn quantiles_and_seconds() {
        let mut v: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile_ms(&mut v, 0.99), 0.99);
        let samples = [
            Sample {
                due_ms: 10,
                latency_us: 2_000_000,
                failure: None,
                op: b'r',
                port: 7000,
            },
            Sample {
                due_ms: 20,
                latency_us: 500,
                failure: Some(Failure::Timeout),
                op: b'r',
                port: 7000,
            },
        ];
        let s = per_second(&samples);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].ops, s[0].errors, s[2].ops), (0, 1, 1));
        assert_eq!(s[0].p999_ms, 2000.0);
    }
}
