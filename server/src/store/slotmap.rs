//! One slot's keys: the entries stored densely in a vector, found through a compact index.
//!
//! How it fits: a hash slot holds its keys in a [`SlotMap`] (inside
//! [`super::SlotTable`]). A hashbrown map keeps each key and entry in its bucket, and its
//! buckets run between 7/16 and 7/8 full, so every empty bucket costs a whole entry: with
//! 1,000,000 keys over 16384 slots (about 61 each, just past the 56 a 64-bucket table
//! holds) most tables sat at half load and the buckets cost 116 bytes per key. Here the
//! hash table holds only a position into `entries`: 2 bytes (3 with its control byte)
//! while the slot has fewer than 65536 keys, 4 past that. `entries` grows by a quarter at
//! a time, so its spare places cost about an eighth of an entry per key.
//!
//! Positions are not stable: removing a key moves the last entry into its place. Nothing
//! keeps a position across calls (SCAN orders a slot's keys by [`super::cursor_hash`],
//! not by place), and iteration order is no more defined than a hash map's.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry as IndexEntry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::{Entry, Key};

/// `entries` grows by `capacity / ENTRIES_GROWTH_DIVISOR` places (at least
/// [`ENTRIES_MIN_GROWTH`]) when full. Each growth frees the old vector, and what the
/// allocator has not handed out again by the time RSS is read counts too:
/// `kelvin-bench memory` (1,000,000 keys, about 61 a slot) measured 191.5 bytes per key
/// growing by an eighth (slot tables 66.0, allocator and the rest 9.4), 186.9 by a
/// quarter (69.0 and 1.8) and 194.2 by a half (doubling: 76.8 and 1.3).
pub const ENTRIES_GROWTH_DIVISOR: usize = 4;

/// Fewest places `entries` grows by, so small slots do not reallocate on every insert.
pub const ENTRIES_MIN_GROWTH: usize = 4;

/// One key's place in `entries`: the key (inline if short) and its entry.
pub const ENTRY_BYTES: usize = std::mem::size_of::<(Key, Entry)>();

/// One bucket of a slot's index while the slot has fewer than 65536 keys: a 2-byte
/// position and hashbrown's control byte.
pub const INDEX_BUCKET_BYTES: usize = std::mem::size_of::<u16>() + 1;

/// A position into `entries`, as an index bucket holds it.
trait Position: Copy {
    fn new(i: usize) -> Self;
    fn get(self) -> usize;
}

impl Position for u16 {
    fn new(i: usize) -> Self {
        // Narrow indexes hold fewer than 2^16 entries (`SlotMap::insert` widens first).
        i as u16
    }
    fn get(self) -> usize {
        self as usize
    }
}

impl Position for u32 {
    fn new(i: usize) -> Self {
        // A slot would need 2^32 keys (240 GiB of entries) to overflow.
        i as u32
    }
    fn get(self) -> usize {
        self as usize
    }
}

/// The positions of a slot's entries, hashed by their keys' bytes: 2 bytes each while
/// they fit, 4 past that.
enum Index {
    Narrow(HashTable<u16>),
    Wide(HashTable<u32>),
}

impl Default for Index {
    fn default() -> Self {
        Index::Narrow(HashTable::new())
    }
}

/// The operations of [`SlotMap`] on an index of either width.
struct Probe<'a> {
    entries: &'a [(Key, Entry)],
    hasher: &'a DefaultHashBuilder,
    key: &'a [u8],
    hash: u64,
}

impl Probe<'_> {
    fn find<P: Position>(&self, index: &HashTable<P>) -> Option<usize> {
        index
            .find(self.hash, |&p| {
                self.entries[p.get()].0.as_bytes() == self.key
            })
            .map(|p| p.get())
    }

    /// The key's position, or `None` after recording it at the end of `entries`.
    fn find_or_push<P: Position>(&self, index: &mut HashTable<P>) -> Option<usize> {
        let (entries, hasher) = (self.entries, self.hasher);
        match index.entry(
            self.hash,
            |&p| entries[p.get()].0.as_bytes() == self.key,
            |&p| hasher.hash_one(entries[p.get()].0.as_bytes()),
        ) {
            IndexEntry::Occupied(o) => Some(o.get().get()),
            IndexEntry::Vacant(v) => {
                v.insert(P::new(entries.len()));
                None
            }
        }
    }

    /// Takes the key out of the index and points the last entry's bucket at the place
    /// it moves to; returns that place.
    fn remove<P: Position>(&self, index: &mut HashTable<P>) -> Option<usize> {
        let found = index
            .find_entry(self.hash, |&p| {
                self.entries[p.get()].0.as_bytes() == self.key
            })
            .ok()?;
        let i = found.remove().0.get();
        let last = self.entries.len() - 1;
        if i != last {
            let moved = self.hasher.hash_one(self.entries[last].0.as_bytes());
            let place = index
                .find_mut(moved, |&p| p.get() == last)
                // Every entry's position is in the index under its key's hash.
                .expect("the last entry is indexed");
            *place = P::new(i);
        }
        Some(i)
    }
}

/// A slot's keys and entries. See the module documentation.
#[derive(Default)]
pub struct SlotMap {
    index: Index,
    entries: Vec<(Key, Entry)>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl SlotMap {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn probe<'a>(&'a self, key: &'a [u8]) -> Probe<'a> {
        Probe {
            entries: &self.entries,
            hasher: &self.hasher,
            key,
            hash: self.hasher.hash_one(key),
        }
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        let probe = self.probe(key);
        match &self.index {
            Index::Narrow(t) => probe.find(t),
            Index::Wide(t) => probe.find(t),
        }
    }

    /// Calls `visit` on every entry whose bucket `key`'s probe compares (its own entry
    /// and those whose hashes share its 7 control bits), without comparing keys: what
    /// [`super::prefetch`] starts loading.
    pub(super) fn for_each_candidate(&self, key: &[u8], mut visit: impl FnMut(&(Key, Entry))) {
        let hash = self.hasher.hash_one(key);
        let mut at = |p: usize| {
            visit(&self.entries[p]);
            false
        };
        match &self.index {
            Index::Narrow(t) => drop(t.find(hash, |&p| at(p.get()))),
            Index::Wide(t) => drop(t.find(hash, |&p| at(p.get()))),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// The place of `key`'s entry and the entry: [`SlotMap::holds_at`] checks the place
    /// later, for a second look without a second probe.
    pub fn find(&self, key: &[u8]) -> Option<(usize, &Entry)> {
        self.position(key).map(|i| (i, &self.entries[i].1))
    }

    /// Whether place `i` holds `key` (places move as keys are removed).
    pub fn holds_at(&self, i: usize, key: &[u8]) -> bool {
        self.entries
            .get(i)
            .is_some_and(|(k, _)| k.as_bytes() == key)
    }

    pub fn get_index_mut(&mut self, i: usize) -> Option<&mut Entry> {
        self.entries.get_mut(i).map(|(_, e)| e)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// The key and entry at place `i` (`0..len()`, in iteration order): a random pick
    /// without a walk.
    pub fn get_index(&self, i: usize) -> Option<(&Key, &Entry)> {
        self.entries.get(i).map(|(k, e)| (k, e))
    }

    /// Rebuilds a narrow index with 4-byte positions, before the 65537th key.
    fn widen(&mut self) {
        let (entries, hasher) = (&self.entries, &self.hasher);
        let mut wide = HashTable::with_capacity(entries.len() + 1);
        for (i, (k, _)) in entries.iter().enumerate() {
            wide.insert_unique(hasher.hash_one(k.as_bytes()), u32::new(i), |&p| {
                hasher.hash_one(entries[p.get()].0.as_bytes())
            });
        }
        self.index = Index::Wide(wide);
    }

    /// Stores `entry` under `key` in one probe, replacing what was there; returns the old
    /// entry.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        if matches!(self.index, Index::Narrow(_)) && self.entries.len() > u16::MAX as usize {
            self.widen();
        }
        let probe = Probe {
            entries: &self.entries,
            hasher: &self.hasher,
            key,
            hash: self.hasher.hash_one(key),
        };
        // (`self.probe` would borrow all of `self`, the index too.)
        let found = match &mut self.index {
            Index::Narrow(t) => probe.find_or_push(t),
            Index::Wide(t) => probe.find_or_push(t),
        };
        if let Some(i) = found {
            return Some(std::mem::replace(&mut self.entries[i].1, entry));
        }
        if self.entries.len() == self.entries.capacity() {
            let grow = (self.entries.capacity() / ENTRIES_GROWTH_DIVISOR).max(ENTRIES_MIN_GROWTH);
            self.entries.reserve_exact(grow);
        }
        self.entries.push((Key::from(key), entry));
        None
    }

    /// Removes `key`; the last entry moves into its place.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let probe = Probe {
            entries: &self.entries,
            hasher: &self.hasher,
            key,
            hash: self.hasher.hash_one(key),
        };
        let i = match &mut self.index {
            Index::Narrow(t) => probe.remove(t),
            Index::Wide(t) => probe.remove(t),
        }?;
        Some(self.entries.swap_remove(i).1)
    }

    /// Makes room for `additional` more keys at once (loading a snapshot).
    pub fn reserve(&mut self, additional: usize) {
        if self.entries.len() + additional > u16::MAX as usize + 1 {
            if let Index::Narrow(_) = self.index {
                self.widen();
            }
        }
        let (entries, hasher) = (&self.entries, &self.hasher);
        let rehash = |p: usize| hasher.hash_one(entries[p].0.as_bytes());
        match &mut self.index {
            Index::Narrow(t) => t.reserve(additional, |&p| rehash(p.get())),
            Index::Wide(t) => t.reserve(additional, |&p| rehash(p.get())),
        }
        self.entries.reserve_exact(additional);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter().map(|(k, e)| (k, e))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The keys and entries, the index dropped (for freeing them a few at a time).
    pub fn into_entries(self) -> Vec<(Key, Entry)> {
        self.entries
    }

    /// Bytes allocated: the index's buckets and every place of `entries`, used or not.
    pub fn allocation_size(&self) -> usize {
        let index = match &self.index {
            Index::Narrow(t) => t.allocation_size(),
            Index::Wide(t) => t.allocation_size(),
        };
        index + self.entries.capacity() * ENTRY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Value;
    use std::collections::BTreeMap;

    fn entry(v: u64) -> Entry {
        let mut e = Entry::new(Value::Str(Vec::new()));
        e.expire_at = v;
        e
    }

    #[test]
    fn follows_a_btreemap_through_inserts_replaces_and_removes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(18);
        let mut map = SlotMap::default();
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for step in 0..20_000u64 {
            // Short and long keys (inline and on the heap), few enough to collide often.
            let n: u32 = rng.gen_range(0..600);
            let key = if n.is_multiple_of(3) {
                format!("a-long-key-past-the-inline-length:{n}")
            } else {
                format!("k{n}")
            }
            .into_bytes();
            if rng.gen_bool(0.6) {
                let old = map.insert(&key, entry(step)).map(|e| e.expire_at);
                assert_eq!(old, model.insert(key, step));
            } else {
                let old = map.remove(&key).map(|e| e.expire_at);
                assert_eq!(old, model.remove(&key));
            }
            assert_eq!(map.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(map.get(k).map(|e| e.expire_at), Some(*v));
        }
        let mut walked: Vec<(Vec<u8>, u64)> =
            map.iter().map(|(k, e)| (k.to_vec(), e.expire_at)).collect();
        walked.sort();
        assert_eq!(walked, model.into_iter().collect::<Vec<_>>());
        for i in 0..map.len() {
            let (k, e) = map.get_index(i).expect("in range");
            assert_eq!(map.get(k).map(|f| f.expire_at), Some(e.expire_at));
        }
    }

    #[test]
    fn an_index_widens_past_65536_keys() {
        let mut map = SlotMap::default();
        let n = u16::MAX as u32 + 5000;
        for i in 0..n {
            assert!(map.insert(&i.to_be_bytes(), entry(i.into())).is_none());
        }
        assert!(matches!(map.index, Index::Wide(_)));
        for i in (0..n).step_by(2) {
            assert_eq!(
                map.remove(&i.to_be_bytes()).map(|e| e.expire_at),
                Some(i.into())
            );
        }
        assert_eq!(map.len(), n as usize / 2);
        for i in 0..n {
            let want = (!i.is_multiple_of(2)).then_some(u64::from(i));
            assert_eq!(map.get(&i.to_be_bytes()).map(|e| e.expire_at), want);
        }
        // A snapshot's load reserves past the narrow index at once.
        let mut loaded = SlotMap::default();
        loaded.reserve(n as usize);
        assert!(matches!(loaded.index, Index::Wide(_)));
    }

    #[test]
    fn an_entry_is_56_bytes() {
        // A 16-byte key (inline up to 15 bytes), the value's 24-byte header, the expiry
        // and the heat: what a key costs in its slot besides the index.
        assert_eq!(ENTRY_BYTES, 56);
    }

    #[test]
    fn entries_grow_by_a_quarter() {
        let mut map = SlotMap::default();
        for i in 0..1000u32 {
            map.insert(&i.to_be_bytes(), entry(1));
            let spare = map.entries.capacity() - map.len();
            assert!(spare <= (map.len() / ENTRIES_GROWTH_DIVISOR).max(ENTRIES_MIN_GROWTH));
        }
        assert!(map.allocation_size() >= 1000 * ENTRY_BYTES);
    }
}
