//! `maxmemory`: the limit, the policies, and which keys to evict.
//!
//! How it fits: every group's [`Store`] keeps its own byte total
//! ([`crate::store::memory`]). When a group's total passes `maxmemory`, its leader picks
//! victims here, by sampling as Redis does (`maxmemory-samples` keys at a time into a
//! pool of the 16 best candidates, the best one evicted per round) from the heat each
//! key carries ([`crate::store::Heat`]: last access for LRU, the decayed counter for
//! LFU) or its expiry (volatile-ttl), and proposes their deletion through the log
//! ([`kelvin_protocol::log::LogCommand::EvictKeys`]): every replica deletes the same keys,
//! as with expiry. [`task`] runs that on the leader; the connection refuses writes that
//! grow memory with Redis's OOM error when nothing can be evicted (`noeviction`, or a
//! volatile policy without keys that have a TTL).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use bytes::Bytes;
use hashbrown::HashSet;
use rand::Rng;

use crate::store::{memory, Entry, Store};

pub mod task;

/// The error a write that would grow memory gets when nothing can be evicted (Redis 7's
/// `shared.oomerr`, without its code prefix's dash).
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Candidates kept between samplings (Redis's `EVPOOL_SIZE`).
pub const POOL_SIZE: usize = 16;

/// Most keys one eviction proposal deletes; more are proposed in the next round.
pub const EVICT_BATCH_KEYS: usize = 1024;

/// Once over the limit, evict down to this share of it below (1/`HEADROOM_DIVISOR`):
/// each eviction is a log round trip, so it frees room for more than the one write
/// that found the store full (Redis evicts to the limit, synchronously, per command).
pub const HEADROOM_DIVISOR: u64 = 100;

/// Random slot probes per sample before a linear search for a slot with candidates
/// (a nearly empty keyspace has mostly empty slots).
pub const SLOT_PROBES: usize = 32;

/// Redis 7's `maxmemory-policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    NoEviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    const ALL: [Policy; 8] = [
        Policy::NoEviction,
        Policy::AllkeysLru,
        Policy::AllkeysLfu,
        Policy::AllkeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllkeysLru => "allkeys-lru",
            Policy::AllkeysLfu => "allkeys-lfu",
            Policy::AllkeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// Only keys with a TTL are candidates.
    pub fn volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    /// How much `entry` deserves eviction now: higher goes first.
    ///
    /// LRU: idle seconds, ties (the clock has one-second steps, as Redis's LRU clock)
    /// broken by the lower access counter. LFU: the counter decayed to now, inverted,
    /// ties broken by idle time. TTL: the nearest expiry. Random: a random draw.
    pub fn score(self, entry: &Entry, now_ms: u64, rng: &mut impl Rng) -> u64 {
        let idle = entry.heat.idle_secs(now_ms).min(u64::MAX >> 16);
        let counter = entry.heat.counter_at(now_ms) as u64;
        match self {
            Policy::NoEviction => 0,
            Policy::AllkeysLru | Policy::VolatileLru => (idle << 8) | (255 - counter),
            Policy::AllkeysLfu | Policy::VolatileLfu => ((255 - counter) << 48) | idle,
            Policy::VolatileTtl => u64::MAX - entry.expire_at,
            Policy::AllkeysRandom | Policy::VolatileRandom => rng.gen(),
        }
    }
}

/// The node's memory settings, read on every write that may grow memory: atomics, so
/// a connection never takes the settings lock for them.
#[derive(Debug)]
pub struct Limits {
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicU32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            maxmemory: AtomicU64::new(0),
            policy: AtomicU8::new(0),
            samples: AtomicU32::new(DEFAULT_SAMPLES),
        }
    }
}

/// Redis's `maxmemory-samples` default.
pub const DEFAULT_SAMPLES: u32 = 5;

/// A copy of [`Limits`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Bytes per group; 0 = no limit.
    pub maxmemory: u64,
    pub policy: Policy,
    pub samples: u32,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            maxmemory: 0,
            policy: Policy::NoEviction,
            samples: DEFAULT_SAMPLES,
        }
    }
}

impl Limits {
    pub fn get(&self) -> Limit {
        let policy = self.policy.load(Ordering::Relaxed) as usize;
        Limit {
            maxmemory: self.maxmemory.load(Ordering::Relaxed),
            policy: Policy::ALL
                .get(policy)
                .copied()
                .unwrap_or(Policy::NoEviction),
            samples: self.samples.load(Ordering::Relaxed),
        }
    }

    pub fn set(&self, limit: Limit) {
        let policy = Policy::ALL
            .iter()
            .position(|p| *p == limit.policy)
            .unwrap_or(0);
        self.maxmemory.store(limit.maxmemory, Ordering::Relaxed);
        self.policy.store(policy as u8, Ordering::Relaxed);
        self.samples.store(limit.samples.max(1), Ordering::Relaxed);
    }
}

/// What a write that grows memory may do in a group now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Under the limit (or no limit).
    Fine,
    /// Over, and keys can be evicted: wait (bounded) for the leader's eviction.
    Evicting,
    /// Over, and nothing can be evicted: refuse with [`OOM`].
    Refuse,
}

impl Limit {
    /// Where `store` stands against this limit once `pending` more bytes land.
    pub fn pressure(&self, store: &Store, pending: usize) -> Pressure {
        if self.maxmemory == 0 || (store.used_memory() + pending) as u64 <= self.maxmemory {
            return Pressure::Fine;
        }
        if candidates(store, self.policy) == 0 {
            Pressure::Refuse
        } else {
            Pressure::Evicting
        }
    }

    /// Bytes to evict: none while under the limit; once over, down to
    /// [`HEADROOM_DIVISOR`] below it.
    pub fn excess(&self, store: &Store) -> u64 {
        let used = store.used_memory() as u64;
        match self.maxmemory {
            0 => 0,
            max if used <= max => 0,
            max => used - (max - max / HEADROOM_DIVISOR),
        }
    }
}

/// Keys `policy` may evict.
fn candidates(store: &Store, policy: Policy) -> usize {
    match policy {
        Policy::NoEviction => 0,
        p if p.volatile() => store.dbs().map(|(_, ks)| ks.expires_count()).sum(),
        _ => store.dbs().map(|(_, ks)| ks.len()).sum(),
    }
}

/// A candidate in the pool: its score, database and key.
type Candidate = (u64, usize, Bytes);

/// Victims worth at least `need` bytes (or [`EVICT_BATCH_KEYS`] of them), by database,
/// chosen as Redis's `performEvictions` does: each round samples `samples` keys of every
/// database into a pool of the [`POOL_SIZE`] best and takes the best one left.
pub fn pick_victims(
    store: &Store,
    limit: Limit,
    need: u64,
    now_ms: u64,
    rng: &mut impl Rng,
) -> Vec<(usize, Vec<Bytes>)> {
    let mut pool: Vec<Candidate> = Vec::with_capacity(POOL_SIZE + 1);
    let mut chosen: Vec<(usize, Bytes)> = Vec::new();
    let mut taken: HashSet<(usize, Bytes)> = HashSet::new();
    let mut freed = 0u64;
    let left = candidates(store, limit.policy);
    while freed < need && chosen.len() < EVICT_BATCH_KEYS.min(left) {
        for (db, _) in store.dbs() {
            for _ in 0..limit.samples {
                let Some((key, entry)) = sample(store, db, limit.policy, rng) else {
                    break;
                };
                if pool.iter().any(|(_, d, k)| *d == db && k[..] == key[..])
                    || taken.contains(&(db, Bytes::copy_from_slice(key)))
                {
                    continue;
                }
                let score = limit.policy.score(entry, now_ms, rng);
                let at = pool.partition_point(|(s, _, _)| *s >= score);
                if at < POOL_SIZE {
                    pool.insert(at, (score, db, Bytes::copy_from_slice(key)));
                    pool.truncate(POOL_SIZE);
                }
            }
        }
        if pool.is_empty() {
            break;
        }
        let (_, db, key) = pool.remove(0);
        freed += memory::key_bytes(store, db, &key) as u64;
        taken.insert((db, key.clone()));
        chosen.push((db, key));
    }
    let mut by_db: Vec<(usize, Vec<Bytes>)> = Vec::new();
    for (db, key) in chosen {
        match by_db.iter_mut().find(|(d, _)| *d == db) {
            Some((_, keys)) => keys.push(key),
            None => by_db.push((db, vec![key])),
        }
    }
    by_db
}

/// One random candidate of database `db` under `policy`: a random slot holding
/// candidates, a random key in it (a key with a TTL for volatile policies). Slots in a
/// migration are left alone: a sealed slot's keys are on their way to the target, and
/// an importing slot's key evicted before it moved would be brought back by the move.
fn sample<'a>(
    store: &'a Store,
    db: usize,
    policy: Policy,
    rng: &mut impl Rng,
) -> Option<(&'a [u8], &'a Entry)> {
    let ks = store.db_ref(db)?;
    let volatile = policy.volatile();
    if (volatile && ks.expires_count() == 0) || ks.is_empty() {
        return None;
    }
    let moving = !store.migrations.is_empty();
    let has = |slot: usize| {
        let t = ks.slot(slot);
        if moving && store.migrations.role(slot as u16).is_some() {
            return false;
        }
        if volatile {
            t.expires > 0
        } else {
            !t.map.is_empty()
        }
    };
    let slots = kelvin_protocol::SLOT_COUNT;
    let start = rng.gen_range(0..slots);
    let slot = (0..SLOT_PROBES)
        .map(|_| rng.gen_range(0..slots))
        .find(|&s| has(s))
        .or_else(|| (0..slots).map(|i| (start + i) % slots).find(|&s| has(s)))?;
    let table = &ks.slot(slot).map;
    let eligible = |e: &Entry| !volatile || e.expire_at != 0;
    let n = if volatile {
        ks.slot(slot).expires
    } else {
        table.len()
    };
    let nth = rng.gen_range(0..n);
    if !volatile {
        // Every key is eligible: its place, without a walk.
        return table.get_index(nth).map(|(k, e)| (k.as_bytes(), e));
    }
    table
        .iter()
        .filter(|(_, e)| eligible(e))
        .nth(nth)
        .map(|(k, e)| (k.as_bytes(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Heat, Value};
    use rand::SeedableRng;

    const NOW: u64 = 1_700_000_000_000;

    fn key(store: &mut Store, name: &str, idle_secs: u64, counter: u8, expire_at: u64) {
        let mut e = Entry::new(Value::Str(vec![b'v'; 100]));
        e.heat = Heat::default()
            .with_idle(NOW, idle_secs)
            .with_counter(counter);
        e.expire_at = expire_at;
        store.db(0).insert(name.as_bytes(), e);
    }

    fn limit(policy: Policy) -> Limit {
        Limit {
            maxmemory: 1,
            policy,
            samples: 5,
        }
    }

    fn victims(store: &Store, policy: Policy, n: usize) -> Vec<String> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut names = Vec::new();
        // One key's worth at a time, so the picks come out in the policy's order.
        let one = memory::key_bytes(store, 0, b"k0") as u64;
        let picked = pick_victims(store, limit(policy), one * n as u64, NOW, &mut rng);
        for (_, keys) in picked {
            names.extend(keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()));
        }
        names
    }

    /// A keyspace where `k<i>` has been idle `i` minutes, counts `255 - i` accesses and
    /// expires in `100 - i` seconds (odd keys only), for 100 keys.
    fn graded() -> Store {
        let mut s = Store::default();
        for i in 0..100u64 {
            let expire = if i % 2 == 1 {
                NOW + (100 - i) * 1000
            } else {
                0
            };
            key(&mut s, &format!("k{i}"), i * 60, 255 - i as u8, expire);
        }
        s
    }

    fn index(name: &str) -> u64 {
        name[1..].parse().unwrap()
    }

    #[test]
    fn lru_picks_among_the_idlest() {
        let s = graded();
        let v = victims(&s, Policy::AllkeysLru, 10);
        assert_eq!(v.len(), 10);
        // Sampling is approximate (as in Redis), but with a pool of 16 the victims are
        // far older than the median key.
        let mean = v.iter().map(|k| index(k)).sum::<u64>() / v.len() as u64;
        assert!(mean > 60, "{v:?}");
    }

    #[test]
    fn lfu_picks_the_least_used_and_ttl_the_nearest_expiry() {
        let s = graded();
        let lfu = victims(&s, Policy::AllkeysLfu, 10);
        let mean = lfu.iter().map(|k| index(k)).sum::<u64>() / lfu.len() as u64;
        assert!(mean > 60, "{lfu:?}");
        let ttl = victims(&s, Policy::VolatileTtl, 10);
        assert!(
            ttl.iter().all(|k| index(k) % 2 == 1),
            "only keys with a TTL: {ttl:?}"
        );
        let mean = ttl.iter().map(|k| index(k)).sum::<u64>() / ttl.len() as u64;
        assert!(
            mean > 60,
            "nearest expiries are the highest indexes: {ttl:?}"
        );
    }

    #[test]
    fn volatile_policies_never_pick_keys_without_ttl() {
        let s = graded();
        for p in [
            Policy::VolatileLru,
            Policy::VolatileLfu,
            Policy::VolatileRandom,
        ] {
            let v = victims(&s, p, 30);
            assert_eq!(v.len(), 30, "{p:?}");
            assert!(v.iter().all(|k| index(k) % 2 == 1), "{p:?}: {v:?}");
        }
        let mut plain = Store::default();
        key(&mut plain, "p", 10, 5, 0);
        let l = limit(Policy::VolatileLru);
        assert_eq!(l.pressure(&plain, 0), Pressure::Refuse);
        assert!(victims(&plain, Policy::VolatileLru, 1).is_empty());
        assert_eq!(
            limit(Policy::AllkeysLru).pressure(&plain, 0),
            Pressure::Evicting
        );
        assert_eq!(
            limit(Policy::NoEviction).pressure(&plain, 0),
            Pressure::Refuse
        );
        let roomy = Limit {
            maxmemory: plain.used_memory() as u64 + 100,
            ..limit(Policy::NoEviction)
        };
        assert_eq!(roomy.pressure(&plain, 100), Pressure::Fine);
        assert_eq!(roomy.pressure(&plain, 101), Pressure::Refuse);
        assert_eq!(roomy.excess(&plain), 0);
    }

    #[test]
    fn slots_in_a_migration_are_never_evicted_from() {
        let mut s = Store::default();
        key(&mut s, "moving", 100, 5, 0);
        let slot = kelvin_protocol::key_slot(b"moving");
        s.migrations.seal(1, &[slot], 2).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let all = |s: &Store, rng: &mut rand::rngs::SmallRng| {
            pick_victims(s, limit(Policy::AllkeysLru), u64::MAX, NOW, rng)
        };
        assert!(all(&s, &mut rng).is_empty());
        key(&mut s, "staying", 0, 5, 0);
        let picked = all(&s, &mut rng);
        assert_eq!(picked, vec![(0, vec![Bytes::from_static(b"staying")])]);
    }

    #[test]
    fn victims_are_distinct_and_bounded_by_the_keyspace() {
        let s = graded();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let picked = pick_victims(&s, limit(Policy::AllkeysRandom), u64::MAX, NOW, &mut rng);
        let keys: Vec<&Bytes> = picked.iter().flat_map(|(_, k)| k).collect();
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys.len() <= 100);
    }

    #[test]
    fn policies_parse_as_redis_names_them() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.as_str()), Some(p));
        }
        assert_eq!(Policy::parse("ALLKEYS-LRU"), Some(Policy::AllkeysLru));
        assert_eq!(Policy::parse("lru"), None);
        let limits = Limits::default();
        let l = Limit {
            maxmemory: 20 << 20,
            policy: Policy::VolatileTtl,
            samples: 10,
        };
        limits.set(l);
        assert_eq!(limits.get(), l);
    }
}
