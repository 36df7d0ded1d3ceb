//! Prefetching a pipeline's keys: the cache misses of many lookups at once, not one after
//! another.
//!
//! How it fits: a lookup misses the cache three to five times in a row, each load waiting
//! for the one before (the slot's table, its index bucket, the entry, then the key's and
//! the value's heap blocks), and with 100,000 keys none of them is in the cache. A
//! pipelined batch names all its keys before the first runs, so the connection
//! ([`crate::conn`]) hands them to [`Store::prefetch`] first, which walks the chain one
//! link at a time for every key, issuing prefetches and waiting on nothing, so the misses
//! of one key overlap those of the others (what Redis 8's `memory_prefetch.c` does for
//! its batches). The lookups that follow find their lines loaded. Nothing here changes
//! the store, counts a hit, or touches a key's heat: the lookup that follows does.

use smallvec::SmallVec;

use super::{Entry, Key, SlotTable, Store, Value};

/// Most keys one [`Store::prefetch`] starts loading: a batch of 16 (redis-benchmark
/// `-P 16`) fits; far more would evict the first keys' lines before their lookups ran.
pub const PREFETCH_KEYS: usize = 32;

/// Starts loading the cache line holding `p` into every cache level; returns at once.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and reads or writes nothing the
    // program can observe, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] for every line `value` spans (at most two for the types here).
#[inline(always)]
fn prefetch_value<T>(value: &T) {
    let start: *const T = value;
    prefetch(start);
    prefetch(
        start
            .cast::<u8>()
            .wrapping_add(std::mem::size_of::<T>() - 1),
    );
}

impl Value {
    /// The heap block a read of this value reads first.
    fn heap_block(&self) -> *const u8 {
        match self {
            Value::Str(v) => v.as_ptr(),
            Value::Hash(b) => (&**b as *const hashbrown::HashMap<_, _>).cast(),
            Value::Set(b) => (&**b as *const hashbrown::HashSet<_>).cast(),
            Value::ZSet(b) => (&**b as *const crate::zset::ZSet).cast(),
            Value::List(b) => (&**b as *const std::collections::VecDeque<_>).cast(),
        }
    }
}

impl Store {
    /// Starts loading what looking up `keys` (the first [`PREFETCH_KEYS`], each with its
    /// database) will read, for all of them at once; returns without waiting for any.
    /// Names that are not keys only cost their own probe.
    pub fn prefetch<'a>(&self, keys: impl Iterator<Item = (usize, &'a [u8])>) {
        // One link of every key's chain per pass: each pass reads lines the one before
        // started loading.
        let tables: SmallVec<[(&SlotTable, &[u8]); PREFETCH_KEYS]> = keys
            .filter_map(|(db, key)| {
                let table = self.db_ref(db)?.table(key);
                prefetch_value(table);
                Some((table, key))
            })
            .take(PREFETCH_KEYS)
            .collect();
        for (table, key) in &tables {
            table
                .map
                .for_each_candidate(key, prefetch_value::<(Key, Entry)>);
        }
        for (table, key) in &tables {
            table.map.for_each_candidate(key, |(k, e)| {
                if k.is_heap() {
                    prefetch(k.as_bytes().as_ptr());
                }
                prefetch(e.value.heap_block());
            });
        }
    }
}
