//! One slot's keys: the entries stored densely in a vector, found through a compact index.
//!
//! How it fits: a hash slot holds its keys in a [`SlotMap`] (inside
//! [`super::SlotTable`]). A hashbrown map keeps each key and entry in its bucket, and its
//! buckets run between 7/16 and 7/8 full, so every empty bucket costs a whole entry: with
//! 1,000,000 keys over 16384 slots (about 61 each, just past the 56 a 64-bucket table
//! holds) most tables sat at half load and the buckets cost 116 bytes per key. Here the
//! hash table holds only a 4-byte position into `entries` (5 bytes with its control
//! byte), and `entries` grows by an eighth at a time, so an empty bucket costs 5 bytes and
//! the spare places at the end of `entries` about a sixteenth of an entry per key.
//!
//! Positions are not stable: removing a key moves the last entry into its place. Nothing
//! keeps a position across calls (SCAN orders a slot's keys by [`super::cursor_hash`],
//! not by place), and iteration order is no more defined than a hash map's.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry as IndexEntry;
use hashbrown::HashTable;

use super::{Entry, Key};

/// `entries` grows by `capacity / ENTRIES_GROWTH_DIVISOR` places (at least
/// [`ENTRIES_MIN_GROWTH`]) when full: an eighth keeps the spare places small (about a
/// sixteenth on average) for eight moves of each entry over its life, amortized.
pub const ENTRIES_GROWTH_DIVISOR: usize = 8;

/// Fewest places `entries` grows by, so small slots do not reallocate on every insert.
pub const ENTRIES_MIN_GROWTH: usize = 4;

/// One key's place in `entries`: the key (inline if short) and its entry.
pub const ENTRY_BYTES: usize = std::mem::size_of::<(Key, Entry)>();

/// One bucket of the index: a position into `entries` and hashbrown's control byte.
pub const INDEX_BUCKET_BYTES: usize = std::mem::size_of::<u32>() + 1;

/// A slot's keys and entries. See the module documentation.
#[derive(Default)]
pub struct SlotMap {
    /// Positions into `entries`, hashed by their key's bytes.
    index: HashTable<u32>,
    entries: Vec<(Key, Entry)>,
    hasher: hashbrown::DefaultHashBuilder,
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

    fn position(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        self.index
            .find(hash, |&i| entries[i as usize].0.as_bytes() == key)
            .map(|&i| i as usize)
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// The key and entry at place `i` (`0..len()`, in iteration order): a random pick
    /// without a walk.
    pub fn get_index(&self, i: usize) -> Option<(&Key, &Entry)> {
        self.entries.get(i).map(|(k, e)| (k, e))
    }

    /// Stores `entry` under `key` in one probe, replacing what was there; returns the old
    /// entry.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        let hash = self.hasher.hash_one(key);
        let (entries, hasher) = (&self.entries, &self.hasher);
        let found = self.index.entry(
            hash,
            |&i| entries[i as usize].0.as_bytes() == key,
            |&i| hasher.hash_one(entries[i as usize].0.as_bytes()),
        );
        match found {
            IndexEntry::Occupied(o) => {
                let i = *o.get() as usize;
                Some(std::mem::replace(&mut self.entries[i].1, entry))
            }
            IndexEntry::Vacant(v) => {
                // A slot would need 2^32 keys (256 GiB of entries) to overflow.
                v.insert(self.entries.len() as u32);
                if self.entries.len() == self.entries.capacity() {
                    let grow = (self.entries.capacity() / ENTRIES_GROWTH_DIVISOR)
                        .max(ENTRIES_MIN_GROWTH);
                    self.entries.reserve_exact(grow);
                }
                self.entries.push((Key::from(key), entry));
                None
            }
        }
    }

    /// Removes `key`; the last entry moves into its place.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let found = self
            .index
            .find_entry(hash, |&i| entries[i as usize].0.as_bytes() == key)
            .ok()?;
        let i = found.remove().0 as usize;
        let last = self.entries.len() - 1;
        if i != last {
            let moved = self.hasher.hash_one(self.entries[last].0.as_bytes());
            let place = self
                .index
                .find_mut(moved, |&j| j as usize == last)
                // Every entry's position is in the index under its key's hash.
                .expect("the last entry is indexed");
            *place = i as u32;
        }
        Some(self.entries.swap_remove(i).1)
    }

    /// Makes room for `additional` more keys at once (loading a snapshot).
    pub fn reserve(&mut self, additional: usize) {
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.reserve(additional, |&i| {
            hasher.hash_one(entries[i as usize].0.as_bytes())
        });
        self.entries.reserve_exact(additional);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter().map(|(k, e)| (k, e))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Bytes allocated: the index's buckets and every place of `entries`, used or not.
    pub fn allocation_size(&self) -> usize {
        self.index.allocation_size() + self.entries.capacity() * ENTRY_BYTES
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
            let key = if n % 3 == 0 {
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
    fn entries_grow_by_an_eighth() {
        let mut map = SlotMap::default();
        for i in 0..1000u32 {
            map.insert(&i.to_be_bytes(), entry(1));
            let spare = map.entries.capacity() - map.len();
            assert!(spare <= (map.len() / ENTRIES_GROWTH_DIVISOR).max(ENTRIES_MIN_GROWTH));
        }
        assert!(map.allocation_size() >= 1000 * ENTRY_BYTES);
    }
}
