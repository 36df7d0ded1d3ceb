//! What the keyspace holds in bytes: the figure `maxmemory` is compared with.
//!
//! How it fits: every [`super::Keyspace`] keeps a running total of [`entry_bytes`] over
//! its keys. `insert`, `remove`, `drop_slot` and `clear` adjust it themselves; a command
//! that changes a value in place (APPEND, HSET, LPUSH on an existing key...) is
//! bracketed by the state machine with a [`Bracket`]: its keys are measured before and
//! after, and the database's total is set to what it was plus the difference. So the
//! total is the sum of [`entry_bytes`] over the keys, kept without walking them.
//!
//! The figure is the store's own estimate (sizes, capacities, a fixed cost per table
//! slot and per allocation), not the allocator's: it is what a replica can compute the
//! same way for the same data, and what INFO's `used_memory` shows. Collections larger
//! than [`MEASURE_SAMPLES`] elements are measured from their first elements in iteration
//! order and extrapolated, so a write to a big hash costs a bounded measurement; an
//! unchanged value always measures the same, so the total does not drift.

use std::mem::size_of;

use bytes::Bytes;

use super::slotmap::{ENTRY_BYTES, INDEX_BUCKET_BYTES};
use super::{Blob, Entry, SlotTable, Store, Value};
use crate::cmd::CommandSpec;

/// What one key costs besides its value, in its slot's [`super::SlotMap`]: its place in
/// the entries (key inline if short, value header, expiry, heat), the eighth of a place
/// the entries' spare room averages (they grow by a quarter), and two index buckets
/// (hashbrown's load runs from 7/16 to 7/8, about half on average).
pub const ENTRY_OVERHEAD: usize = ENTRY_BYTES + ENTRY_BYTES / 8 + 2 * INDEX_BUCKET_BYTES;

/// What the allocator adds to each heap block (size class rounding and headers, as
/// jemalloc's and glibc's small classes do on average).
pub const ALLOC_OVERHEAD: usize = 16;

/// Elements of a collection measured one by one; a larger collection's element bytes
/// are extrapolated from these (Redis's MEMORY USAGE samples 5 the same way).
pub const MEASURE_SAMPLES: usize = 64;

/// A database's fixed cost once used: its 16384 slot tables and write marks.
pub const KEYSPACE_BYTES: usize =
    kelvin_protocol::SLOT_COUNT * (size_of::<SlotTable>() + size_of::<u64>());

/// A heap block of `n` bytes (none for `n == 0`).
fn block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n + ALLOC_OVERHEAD
    }
}

/// Bytes of `len` elements whose first ones `sizes` yields: exact up to
/// [`MEASURE_SAMPLES`], extrapolated beyond.
fn elements(len: usize, sizes: impl Iterator<Item = usize>) -> usize {
    let (mut seen, mut sum) = (0usize, 0usize);
    for s in sizes.take(MEASURE_SAMPLES) {
        seen += 1;
        sum += s;
    }
    if seen == 0 || seen >= len {
        return sum;
    }
    sum / seen * len
}

/// Bytes of a hash table of `capacity` buckets of `T`.
fn table<T>(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        block(capacity * (size_of::<T>() + 1))
    }
}

/// Bytes a value holds on the heap, beyond the entry itself.
pub fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Str(s) => block(s.capacity()),
        Value::Hash(h) => {
            block(size_of::<hashbrown::HashMap<Blob, Blob>>())
                + table::<(Blob, Blob)>(h.capacity())
                + elements(
                    h.len(),
                    h.iter().map(|(k, v)| block(k.len()) + block(v.len())),
                )
        }
        Value::Set(s) => {
            block(size_of::<hashbrown::HashSet<Blob>>())
                + table::<Blob>(s.capacity())
                + elements(s.len(), s.iter().map(|m| block(m.len())))
        }
        Value::ZSet(z) => {
            // A score table entry and an ordered-tree entry (key copy and score) each.
            let per = size_of::<(Blob, f64)>() + 1 + size_of::<(f64, Blob)>() + 16;
            block(size_of::<crate::zset::ZSet>())
                + z.len() * per
                + elements(z.len(), z.iter().map(|(m, _)| 2 * block(m.len())))
        }
        Value::List(l) => {
            block(size_of::<std::collections::VecDeque<Blob>>())
                + block(l.capacity() * size_of::<Blob>())
                + elements(l.len(), l.iter().map(|e| block(e.len())))
        }
    }
}

/// Bytes a key costs in total: its bucket, a key too long to live inline, its value.
pub fn entry_bytes(key: &[u8], entry: &Entry) -> usize {
    let key_heap = if key.len() > super::INLINE_KEY_LEN {
        block(key.len())
    } else {
        0
    };
    ENTRY_OVERHEAD + key_heap + value_bytes(&entry.value)
}

/// Bytes of `key` in database `db` (0 if absent; expired keys count until deleted).
pub fn key_bytes(store: &Store, db: usize, key: &[u8]) -> usize {
    store
        .db_ref(db)
        .and_then(|ks| ks.raw_get(key))
        .map_or(0, |e| entry_bytes(key, e))
}

/// Accounting for one write command that may change its keys' values in place: see the
/// module documentation. Scripts are not bracketed (their `redis.call`s are, one by one),
/// nor are keyless commands (FLUSHDB and SWAPDB keep the totals right themselves).
pub struct Bracket {
    db: usize,
    keys: Vec<Bytes>,
    before_keys: usize,
    before_total: usize,
    /// Per slot of the keys: its count before the command, and its keys' bytes then.
    before_slots: Vec<(usize, usize, usize)>,
}

impl Bracket {
    /// Measures the keys `spec` names in `argv`, before the command runs; `None` for a
    /// command that needs no bracket.
    pub fn open(store: &mut Store, db: usize, spec: &CommandSpec, argv: &[Bytes]) -> Option<Self> {
        if !spec.is_write()
            || spec.flags & crate::cmd::flags::WHOLE_VALUE != 0
            || matches!(spec.name, "eval" | "evalsha" | "fcall")
        {
            return None;
        }
        let mut keys: Vec<Bytes> = Vec::new();
        for i in spec.keys_in(argv) {
            if let Some(k) = argv.get(i) {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        if keys.is_empty() {
            return None;
        }
        let before_total = store.db(db).used_bytes();
        let before_slots = slot_counts(store, db, &keys);
        let before_keys = before_slots.iter().map(|s| s.2).sum();
        Some(Bracket {
            db,
            keys,
            before_keys,
            before_total,
            before_slots,
        })
    }

    /// Measures the keys again after the command and sets the database's total and
    /// their slots' counts.
    pub fn close(self, store: &mut Store) {
        let after_slots = slot_counts(store, self.db, &self.keys);
        let after: usize = after_slots.iter().map(|s| s.2).sum();
        let total = (self.before_total + after).saturating_sub(self.before_keys);
        let slots: Vec<(usize, usize)> = self
            .before_slots
            .iter()
            .zip(&after_slots)
            .map(|(&(slot, count, before), &(_, _, after))| {
                (slot, (count + after).saturating_sub(before))
            })
            .collect();
        store.db(self.db).set_used_bytes(total, &slots);
    }
}

/// Per distinct slot of `keys`, in order: (slot, its count now, the bytes of those of
/// `keys` in it now).
fn slot_counts(store: &mut Store, db: usize, keys: &[Bytes]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for k in keys {
        let slot = kelvin_protocol::key_slot(k) as usize;
        let bytes = key_bytes(store, db, k);
        match out.iter_mut().find(|s| s.0 == slot) {
            Some(s) => s.2 += bytes,
            None => out.push((slot, store.db(db).slot(slot).used, bytes)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total_by_walk(store: &Store) -> usize {
        store
            .dbs()
            .map(|(_, ks)| ks.iter().map(|(k, e)| entry_bytes(k, e)).sum::<usize>())
            .sum()
    }

    fn run(store: &mut Store, words: &[&str]) {
        let argv: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let spec = crate::cmd::lookup(&argv[0]).expect("known command");
        let crate::cmd::Handler::Data(handler) = spec.handler else {
            panic!("data command expected");
        };
        let bracket = Bracket::open(store, 0, spec, &argv);
        let mut out = kelvin_protocol::ReplyWriter::default();
        let (mut events, mut lazy) = (Vec::new(), Vec::new());
        let mut ex = crate::cmd::Exec {
            store: &mut *store,
            db: 0,
            now_ms: 1000,
            out: &mut out,
            events: &mut events,
            lazy_expired: &mut lazy,
            may_block: false,
            local_read: false,
            block: None,
        };
        let _ = handler(&mut ex, &argv);
        if let Some(b) = bracket {
            b.close(store);
        }
    }

    #[test]
    fn the_running_total_is_the_sum_over_keys() {
        let mut s = Store::default();
        let steps: &[&[&str]] = &[
            &["SET", "a", "hello"],
            &["APPEND", "a", "more bytes that grow the string in place"],
            &["RPUSH", "l", "x", "y", "z"],
            &["LPUSH", "l", "w"],
            &["HSET", "h", "f", "v", "g", "w"],
            &["SADD", "s", "m1", "m2"],
            &["ZADD", "z", "1", "a", "2", "b"],
            &["RENAME", "a", "a-key-longer-than-twenty-two-bytes"],
            &["LPOP", "l", "4"],
            &["MSET", "x", "1", "x", "2", "y", "3"],
            &["DEL", "h", "nope"],
            &["COPY", "s", "s2"],
            &["SETEX", "e", "100", "a value with a ttl"],
            &["PSETEX", "e", "100000", "v"],
            &["SET", "e", "longer value, kept ttl", "KEEPTTL", "GET"],
            &["EXPIRE", "e", "1000"],
            &["PERSIST", "e"],
            &["PEXPIRE", "x", "0"],
            &["UNLINK", "y", "e"],
            // A script's writes are bracketed one `redis.call` at a time.
            &[
                "EVAL",
                "redis.call('APPEND', KEYS[1], 'xyz') redis.call('RPUSH', 'l2', 'a', 'b') return 1",
                "1",
                "s3",
            ],
        ];
        for step in steps {
            run(&mut s, step);
            assert_eq!(s.db(0).used_bytes(), total_by_walk(&s), "after {step:?}");
            // Each slot's count is its own keys' bytes too (a migration drops a slot by it).
            for slot in 0..kelvin_protocol::SLOT_COUNT {
                let t = s.db(0).slot(slot);
                let walked: usize = t.map.iter().map(|(k, e)| entry_bytes(k, e)).sum();
                assert_eq!(t.used, walked, "slot {slot} after {step:?}");
            }
        }
        for i in 0..300 {
            run(&mut s, &["HSET", "big", &format!("field{i}"), "value"]);
        }
        assert_eq!(s.db(0).used_bytes(), total_by_walk(&s));
        run(&mut s, &["FLUSHDB"]);
        assert_eq!(s.db(0).used_bytes(), 0);
    }

    #[test]
    fn bigger_values_measure_bigger() {
        let small = Entry::new(Value::Str(vec![0; 10]));
        let big = Entry::new(Value::Str(vec![0; 1000]));
        assert!(entry_bytes(b"k", &big) >= entry_bytes(b"k", &small) + 990);
        assert_eq!(
            entry_bytes(b"k", &small),
            ENTRY_OVERHEAD + 10 + ALLOC_OVERHEAD
        );
    }
}
