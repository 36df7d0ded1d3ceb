//! The clients: worker threads that call a node with real Redis requests (the `redis`
//! crate, plain connections to the nodes' main ports, so every node relays to its groups'
//! leaders) and record each call in the history.
//!
//! How it fits: `run` starts [`spawn`] workers next to the nemesis; each picks a node and
//! an operation at random, records the invocation, sends the request and records `Ok`,
//! `Fail` (an error reply that leaves no effect) or `Info` (unknown: a timeout, a broken
//! connection, or Kelvin's "outcome is unknown"). After an `Info` the worker takes a new
//! process id, as Jepsen does: the old one may still have an operation in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelvin_jepsen::history::{Pending, Recorder, Value, F};

use crate::reshard::Hot;
use rand::{Rng, SeedableRng};

/// A request gets this long before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys per workload at a time: few, so that operations on one key overlap.
pub const KEYS: usize = 6;
/// Each key is used this long, then the workers move to new ones (as Jepsen's
/// independent keys): the linearizability search stays small per key.
pub const KEY_LIFETIME: Duration = Duration::from_secs(5);

/// The generation of keys in use `elapsed` after the start.
pub fn generation(elapsed: Duration) -> u64 {
    elapsed.as_secs() / KEY_LIFETIME.as_secs()
}

/// Key `k` of generation `gen` of a workload (`prefix`: r register, c counter, l list,
/// a string appended to, s session, b bank account).
pub fn key_name(prefix: &str, k: usize, gen: u64) -> String {
    format!("{prefix}{k}.{gen}")
}
/// One operation in this many is a bank operation ([`crate::bank`]).
pub const BANK_SHARE: u32 = 10;
/// The longest TTL an `EXPIRE` sets, in seconds (shorter than a key's lifetime).
pub const EXPIRE_MAX_SECS: i64 = 4;
/// Most operations one worker makes unless `run --ops-per-worker` says otherwise: a
/// bound on the history's size (about 300 bytes of memory per operation), far above what
/// a worker makes in the default run. A run whose workers reach it before the faults end
/// is invalid (`FaultWithoutLoad`).
pub const MAX_OPS_PER_WORKER: u64 = 400_000;

/// What one worker does.
pub struct Worker {
    pub index: u64,
    pub workers: u64,
    pub nodes: Vec<String>,
    pub recorder: Arc<Recorder>,
    pub stop: Arc<AtomicBool>,
    /// Set once the nemesis has tried every fault: the workers run until then, past
    /// `until` if need be.
    pub faults_done: Arc<AtomicBool>,
    pub until: Instant,
    pub began: Instant,
    /// Most operations this worker makes.
    pub max_ops: u64,
    pub seed: u64,
    /// The keys in slots the nemesis moves: a third of the operations of a kind of key
    /// go to one of them while there are any.
    pub hot: Arc<Hot>,
}

/// How an error reply is recorded. Kelvin's TRYAGAIN says the write was not applied (a
/// leader change dropped it); anything else from a write might have happened.
fn outcome_of_error(f: F, err: &redis::RedisError) -> bool {
    let reads = matches!(f, F::Read | F::ReadList | F::ReadStr | F::HGetAll);
    reads || err.code() == Some("TRYAGAIN") || err.code() == Some("WRONGTYPE")
}

impl Worker {
    pub fn spawn(self) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || self.run())
    }

    fn run(self) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut process = self.index;
        let mut conn: Option<(usize, redis::Connection)> = None;
        let mut seq: u64 = 0;
        while !self.stop.load(Ordering::Relaxed)
            && (Instant::now() < self.until || !self.faults_done.load(Ordering::Relaxed))
            && seq < self.max_ops
        {
            seq += 1;
            // Unique values: process and sequence number.
            let unique = (process << 24) | seq;
            if conn.is_none() || rng.gen_ratio(1, 50) {
                let n = rng.gen_range(0..self.nodes.len());
                conn = connect(&self.nodes[n]).map(|c| (n, c));
            }
            let Some((_, c)) = conn.as_mut() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let k = rng.gen_range(0..KEYS);
            let gen = generation(self.began.elapsed());
            let (to_hot, pick) = (rng.gen_ratio(1, 3), rng.gen::<usize>());
            let key = |prefix: &str| {
                let hot = to_hot.then(|| self.hot.pick(prefix, gen, pick)).flatten();
                key_name(prefix, hot.unwrap_or(k), gen)
            };
            // One operation in ten is the bank's: accounts in several groups.
            if rng.gen_ratio(1, BANK_SHARE) {
                let hot = to_hot
                    .then(|| self.hot.pick(crate::bank::PREFIX, gen, pick))
                    .flatten();
                let sent =
                    crate::bank::operate(c, &self.recorder, &mut rng, process, gen, unique, hot);
                if !sent.known {
                    process += self.workers;
                }
                if !sent.keep {
                    conn = None;
                }
                continue;
            }
            // INCR has keys of its own (counters): mixed with SET's unique values it
            // defeats the checker's reductions.
            let roll = rng.gen_range(0..100);
            if (30..=33).contains(&roll) {
                // WATCH/GET/MULTI/SET/EXEC: a transaction that only runs on an unchanged key.
                let op = self
                    .recorder
                    .invoke(process, F::Cas, key("r"), Value::Int(unique as i64));
                let (known, keep) = self.cas(c, &op, unique as i64);
                if !known {
                    process += self.workers;
                }
                if !keep {
                    conn = None;
                }
                continue;
            }
            let (f, key, arg, mut cmd) = match roll {
                0..=15 => (F::Read, key("r"), Value::None, redis::cmd("GET")),
                16..=27 => (
                    F::Write,
                    key("r"),
                    Value::Int(unique as i64),
                    redis::cmd("SET"),
                ),
                28..=29 => (F::Delete, key("r"), Value::None, redis::cmd("DEL")),
                34..=37 => (F::Read, key("c"), Value::None, redis::cmd("GET")),
                38..=41 => (F::Incr, key("c"), Value::None, redis::cmd("INCR")),
                42..=55 => (
                    F::Append,
                    key("l"),
                    Value::Int(unique as i64),
                    redis::cmd("RPUSH"),
                ),
                56..=67 => (F::ReadList, key("l"), Value::None, redis::cmd("LRANGE")),
                68..=71 => (
                    F::AppendStr,
                    key("a"),
                    Value::Int(unique as i64),
                    redis::cmd("APPEND"),
                ),
                72..=75 => (F::ReadStr, key("a"), Value::None, redis::cmd("GET")),
                84..=86 => (
                    F::HIncrBy,
                    key("s"),
                    Value::map([("n", 1)]),
                    redis::cmd("HINCRBY"),
                ),
                76..=83 => (
                    F::HSet,
                    key("s"),
                    Value::map([(
                        format!("f{}", rng.gen_range(0..4)),
                        Value::Int(unique as i64),
                    )]),
                    redis::cmd("HSET"),
                ),
                87..=94 => (F::HGetAll, key("s"), Value::None, redis::cmd("HGETALL")),
                // Sessions expire within a key's lifetime: expiry runs under the faults
                // (clock skew among them).
                95..=97 => (
                    F::Expire,
                    key("s"),
                    Value::Int(rng.gen_range(1..=EXPIRE_MAX_SECS)),
                    redis::cmd("EXPIRE"),
                ),
                _ => (F::Del, key("s"), Value::None, redis::cmd("DEL")),
            };
            cmd.arg(&key);
            match (&f, &arg) {
                (F::Write | F::Append | F::Expire, Value::Int(v)) => {
                    cmd.arg(*v);
                }
                (F::AppendStr, Value::Int(v)) => {
                    cmd.arg(format!("{v},"));
                }
                (F::HIncrBy, Value::Map(m)) => {
                    for (k, v) in m {
                        cmd.arg(k).arg(v.to_string());
                    }
                }
                (F::ReadList, _) => {
                    cmd.arg(0).arg(-1);
                }
                (F::HSet, Value::Map(m)) => {
                    for (k, v) in m {
                        cmd.arg(k).arg(v.to_string());
                    }
                }
                _ => {}
            }
            let op = self.recorder.invoke(process, f, key, arg);
            let result = cmd.query::<redis::Value>(c);
            if !self.record(&op, f, result) {
                // Unknown outcome: this process may still have the request in flight.
                process += self.workers;
                conn = None;
            }
        }
    }

    /// `WATCH key`, `GET key`, `MULTI`, `SET key new`, `EXEC`, recorded as one `cas`
    /// (see [`kelvin_jepsen::history`]). Returns (outcome known, connection reusable).
    fn cas(&self, c: &mut redis::Connection, op: &Pending, new: i64) -> (bool, bool) {
        let key = op.key.as_str();
        let before_exec = (|| -> redis::RedisResult<redis::Value> {
            redis::cmd("WATCH").arg(key).query::<()>(c)?;
            let old = redis::cmd("GET").arg(key).query::<redis::Value>(c)?;
            redis::cmd("MULTI").query::<()>(c)?;
            redis::cmd("SET").arg(key).arg(new).query::<()>(c)?;
            Ok(old)
        })();
        let old = match before_exec {
            Ok(old) => value_of(F::Read, old),
            Err(e) => {
                // EXEC never went out: nothing was written. The connection may be left
                // inside MULTI or with a WATCH: not reused.
                self.recorder.fail(op, Value::Str(e.to_string()));
                return (true, false);
            }
        };
        match redis::cmd("EXEC").query::<redis::Value>(c) {
            Ok(redis::Value::Nil) => {
                // Aborted: the key changed since the WATCH.
                self.recorder.fail(op, Value::None);
                (true, true)
            }
            Ok(redis::Value::Array(_)) => {
                self.recorder.ok(op, old);
                (true, true)
            }
            Err(e) if e.code() == Some("TRYAGAIN") || e.code() == Some("EXECABORT") => {
                self.recorder.fail(op, Value::Str(e.to_string()));
                (true, false)
            }
            // Unknown: the value read under WATCH goes with it (see the history's docs).
            _ => {
                self.recorder.info(op, old);
                (false, false)
            }
        }
    }

    /// Records the outcome; false if it is unknown.
    fn record(&self, op: &Pending, f: F, result: redis::RedisResult<redis::Value>) -> bool {
        match result {
            Ok(v) => {
                self.recorder.ok(op, value_of(f, v));
                true
            }
            Err(e) if e.kind() == redis::ErrorKind::ResponseError || e.code().is_some() => {
                if outcome_of_error(f, &e) {
                    self.recorder.fail(op, Value::Str(e.to_string()));
                    true
                } else {
                    self.recorder.info(op, Value::Str(e.to_string()));
                    false
                }
            }
            Err(e) => {
                // Timeout, refused or broken connection: a read did nothing, a write may
                // or may not have been applied.
                if matches!(f, F::Read | F::ReadList | F::ReadStr | F::HGetAll) {
                    self.recorder.fail(op, Value::Str(e.to_string()));
                    return false;
                }
                self.recorder.info(op, Value::Str(e.to_string()));
                false
            }
        }
    }
}

/// A connection with the request timeout, or `None` if the node does not answer
/// within it.
///
/// The `redis` crate's handshake (`CLIENT SETINFO`, sent on connecting) reads with no
/// timeout, so a connection to a paused node would hold its caller until the node
/// wakes, the nemesis included, which is the one to wake it: the connection is made on
/// a thread of its own, abandoned (blocked until the node wakes) after the timeout.
pub fn connect(addr: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = client
            .get_connection_with_timeout(REQUEST_TIMEOUT)
            .ok()
            .filter(|c| {
                c.set_read_timeout(Some(REQUEST_TIMEOUT)).is_ok()
                    && c.set_write_timeout(Some(REQUEST_TIMEOUT)).is_ok()
            });
        let _ = tx.send(c);
    });
    rx.recv_timeout(REQUEST_TIMEOUT * 2).ok().flatten()
}

/// The history value of a reply.
pub fn value_of(f: F, v: redis::Value) -> Value {
    fn text(v: &redis::Value) -> Value {
        match v {
            redis::Value::BulkString(b) => Value::Str(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Value::Str(s.clone()),
            redis::Value::Int(i) => Value::Int(*i),
            _ => Value::None,
        }
    }
    match (f, v) {
        (F::Read | F::ReadStr | F::Incr | F::HIncrBy | F::Delete | F::Expire | F::Del, v) => {
            text(&v)
        }
        (F::ReadList, redis::Value::Array(items)) => Value::list(items.iter().map(text)),
        (F::HGetAll, redis::Value::Array(items)) => {
            Value::map(items.chunks(2).filter(|c| c.len() == 2).map(|c| {
                let k = match text(&c[0]) {
                    Value::Str(s) => s,
                    other => other.to_string(),
                };
                (k, text(&c[1]))
            }))
        }
        (F::HGetAll, redis::Value::Map(pairs)) => Value::map(pairs.iter().map(|(k, v)| {
            let k = match text(k) {
                Value::Str(s) => s,
                other => other.to_string(),
            };
            (k, text(v))
        })),
        _ => Value::None,
    }
}
