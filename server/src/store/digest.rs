//! Contents digests: per hash slot, a number that two replicas share iff (with
//! overwhelming likelihood) they hold the same keys, values and TTLs there.
//!
//! How it fits: `CLUSTER KELVIN-DIGEST <group>` answers [`slot_digests`] of a group's
//! store on any replica, leader or follower, so the fault tests (`kelvin-jepsen`) can
//! compare what every replica holds once they have applied the same log. The digest of a
//! key covers its database, name, absolute expiry (`expire_at`, replicated as such) and
//! value; a slot's digest is the wrapping sum of its keys', so the order of the tables
//! (and of a hash's fields or a set's members, which hash tables keep in no fixed order)
//! does not matter. Heat is left out: reads touch it on each replica apart.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use super::{Store, Value};

/// One slot's figures: keys in it (every database) and their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotDigest {
    pub keys: u64,
    pub digest: u64,
}

/// The hash of `parts`, each written with its length: `DefaultHasher::new()` has fixed
/// keys, so every node running this binary computes the same.
fn hash_of(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    tag.hash(&mut h);
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// The digest of a value, independent of the order of unordered collections.
fn value_digest(value: &Value) -> u64 {
    match value {
        Value::Str(s) => hash_of(0, &[s]),
        Value::Hash(h) => h
            .iter()
            .map(|(f, v)| hash_of(1, &[f, v]))
            .fold(hash_of(1, &[&h.len().to_le_bytes()]), u64::wrapping_add),
        Value::Set(s) => s
            .iter()
            .map(|m| hash_of(2, &[m]))
            .fold(hash_of(2, &[&s.len().to_le_bytes()]), u64::wrapping_add),
        Value::ZSet(z) => z
            .iter()
            .map(|(m, score)| hash_of(3, &[m, &score.to_bits().to_le_bytes()]))
            .fold(hash_of(3, &[&z.len().to_le_bytes()]), u64::wrapping_add),
        Value::List(l) => {
            let mut h = DefaultHasher::new();
            4u8.hash(&mut h);
            l.len().hash(&mut h);
            for e in l.iter() {
                e.hash(&mut h);
            }
            h.finish()
        }
    }
}

/// Per slot holding keys (in any database): the keys and their digest. Keys logically
/// expired but not yet deleted count: their deletion goes through the log like any write.
pub fn slot_digests(store: &Store) -> BTreeMap<u16, SlotDigest> {
    let mut out: BTreeMap<u16, SlotDigest> = BTreeMap::new();
    for (db, keyspace) in store.dbs() {
        for (key, entry) in keyspace.iter() {
            let slot = kelvin_protocol::key_slot(key);
            let key_digest = hash_of(
                5,
                &[
                    &(db as u64).to_le_bytes(),
                    key,
                    &entry.expire_at.to_le_bytes(),
                    &value_digest(&entry.value).to_le_bytes(),
                ],
            );
            let s = out.entry(slot).or_insert(SlotDigest { keys: 0, digest: 0 });
            s.keys += 1;
            s.digest = s.digest.wrapping_add(key_digest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Entry;

    fn hash(pairs: &[(&str, &str)]) -> Value {
        Value::Hash(Box::new(
            pairs
                .iter()
                .map(|(f, v)| (f.as_bytes().into(), v.as_bytes().into()))
                .collect(),
        ))
    }

    fn store_with(entries: &[(usize, &str, Value, u64)]) -> Store {
        let mut store = Store::default();
        for (db, key, value, expire_at) in entries {
            let mut e = Entry::new(value.clone());
            e.expire_at = *expire_at;
            store.db(*db).insert(key.as_bytes(), e);
        }
        store
    }

    #[test]
    fn equal_contents_in_any_order_give_equal_digests() {
        let a = store_with(&[
            (0, "s1", hash(&[("a", "1"), ("b", "2")]), 0),
            (0, "k", Value::Str(b"v".to_vec()), 5000),
        ]);
        let b = store_with(&[
            (0, "k", Value::Str(b"v".to_vec()), 5000),
            (0, "s1", hash(&[("b", "2"), ("a", "1")]), 0),
        ]);
        assert_eq!(slot_digests(&a), slot_digests(&b));
        assert_eq!(slot_digests(&a).values().map(|s| s.keys).sum::<u64>(), 2);
    }

    #[test]
    fn a_value_a_ttl_a_database_or_a_missing_key_changes_the_slot_digest() {
        let base = [
            (0, "s1", hash(&[("a", "1")]), 0),
            (0, "k", Value::Str(b"v".to_vec()), 0),
        ];
        let reference = slot_digests(&store_with(&base));
        let variants = [
            store_with(&[base[0].clone(), (0, "k", Value::Str(b"w".to_vec()), 0)]),
            store_with(&[base[0].clone(), (0, "k", Value::Str(b"v".to_vec()), 7)]),
            store_with(&[base[0].clone(), (1, "k", Value::Str(b"v".to_vec()), 0)]),
            store_with(&[(0, "s1", hash(&[("a", "2")]), 0), base[1].clone()]),
            store_with(&[base[0].clone()]),
        ];
        for v in variants {
            let d = slot_digests(&v);
            let slot = kelvin_protocol::key_slot(b"k");
            let s1 = kelvin_protocol::key_slot(b"s1");
            assert!(
                d.get(&slot) != reference.get(&slot) || d.get(&s1) != reference.get(&s1),
                "{d:?} vs {reference:?}"
            );
        }
    }
}
