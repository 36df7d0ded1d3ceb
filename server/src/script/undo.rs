//! The undo log that makes a script's writes all or nothing.
//!
//! How it fits: before `redis.call` runs a write, the entries it may change are copied
//! here, each key once per script (the first copy is the state before the script). If
//! the script is stopped by its instruction budget or its memory bound, [`UndoLog::undo`]
//! puts every recorded key back, newest record first, so the store is as if the script
//! never ran, on every replica alike. A script that ends, even with an error, keeps its
//! writes, as in Redis. Keyless writes (FLUSHDB, FLUSHALL) record every key of the
//! databases they clear; SWAPDB records the swap.

use std::collections::HashSet;
use std::ops::Range;

use bytes::Bytes;

use crate::cmd::CommandSpec;
use crate::store::{Blob, Entry, Store, DATABASES};

enum Record {
    /// `key` (its bytes in [`UndoLog::keys`]) of `db` held `entry` (or nothing) before
    /// the script touched it.
    Key {
        db: usize,
        key: Range<usize>,
        entry: Option<Entry>,
    },
    /// The script swapped these databases.
    Swap(usize, usize),
}

/// Up to this many key records, whether a key is already recorded is found by a scan of
/// the records (a script touches a few keys); past it, by a set.
const SCAN_RECORDS: usize = 16;

/// See the module documentation.
#[derive(Default)]
pub struct UndoLog {
    records: Vec<Record>,
    /// The recorded keys' bytes one after another (a record holds its range), so a
    /// record costs no allocation of its own once the log is warm.
    keys: Vec<u8>,
    /// Records from here on are of the current database layout (after the last SWAPDB).
    since_swap: usize,
    /// The keys recorded since the last swap, once there are more than [`SCAN_RECORDS`].
    seen: HashSet<(usize, Blob)>,
}

impl UndoLog {
    /// Whether `key` of `db` is recorded since the last swap; records it in `seen` if not.
    fn first_touch(&mut self, db: usize, key: &[u8]) -> bool {
        let recent = &self.records[self.since_swap..];
        let keys = &self.keys;
        if recent.len() < SCAN_RECORDS {
            return !recent.iter().any(
                |r| matches!(r, Record::Key { db: d, key: k, .. } if *d == db && keys[k.clone()] == *key),
            );
        }
        if self.seen.is_empty() {
            for r in recent {
                if let Record::Key { db, key, .. } = r {
                    self.seen.insert((*db, keys[key.clone()].into()));
                }
            }
        }
        self.seen.insert((db, key.into()))
    }

    fn key(&mut self, store: &Store, db: usize, key: &[u8]) {
        if db >= DATABASES || !self.first_touch(db, key) {
            return;
        }
        let entry = store.db_ref(db).and_then(|ks| ks.raw_get(key)).cloned();
        let start = self.keys.len();
        self.keys.extend_from_slice(key);
        self.records.push(Record::Key {
            db,
            key: start..self.keys.len(),
            entry,
        });
    }

    fn whole_db(&mut self, store: &Store, db: usize) {
        let Some(ks) = store.db_ref(db) else {
            return;
        };
        let keys: Vec<Blob> = (0..kelvin_protocol::SLOT_COUNT)
            .flat_map(|s| ks.slot(s).map.keys().map(|k| Blob::from(&k[..])))
            .collect();
        for key in keys {
            self.key(store, db, &key);
        }
    }

    /// Records what the write `argv` (of `spec`, run in `db`) may change.
    pub fn before_write(&mut self, store: &Store, db: usize, spec: &CommandSpec, argv: &[Bytes]) {
        let db_arg = |a: &Bytes| -> Option<usize> { std::str::from_utf8(a).ok()?.parse().ok() };
        match spec.name {
            "flushdb" => self.whole_db(store, db),
            "flushall" => (0..DATABASES).for_each(|d| self.whole_db(store, d)),
            "swapdb" => {
                if let (Some(a), Some(b)) = (db_arg(&argv[1]), db_arg(&argv[2])) {
                    if a < DATABASES && b < DATABASES {
                        self.records.push(Record::Swap(a, b));
                        // Keys recorded before the swap live in the other database now.
                        self.since_swap = self.records.len();
                        self.seen.clear();
                    }
                }
            }
            "move" => {
                if let Some(to) = db_arg(&argv[2]) {
                    self.key(store, to, &argv[1]);
                }
            }
            "copy" => {
                let target = argv
                    .iter()
                    .position(|a| crate::cmd::is(a, "db"))
                    .and_then(|i| argv.get(i + 1))
                    .and_then(db_arg);
                if let Some(to) = target {
                    self.key(store, to, &argv[2]);
                }
            }
            _ => {}
        }
        for p in spec.keys_in(argv) {
            self.key(store, db, &argv[p]);
        }
    }

    /// Forgets every record (the script kept its writes), keeping the room for the next.
    pub fn clear(&mut self) {
        self.records.clear();
        self.keys.clear();
        self.since_swap = 0;
        self.seen.clear();
    }

    /// Gives back the room of the records past about `bytes` (after a run that wrote many
    /// keys).
    pub fn shrink_to(&mut self, bytes: usize) {
        let records = bytes / std::mem::size_of::<Record>();
        if self.records.capacity() > records {
            self.records.shrink_to(records);
        }
        if self.keys.capacity() > bytes {
            self.keys = Vec::new();
        }
        if self.seen.capacity() > records {
            self.seen = HashSet::new();
        }
    }

    /// Puts back everything recorded, newest first, and forgets it.
    pub fn undo(&mut self, store: &mut Store) {
        self.since_swap = 0;
        self.seen.clear();
        for record in self.records.drain(..).rev() {
            match record {
                Record::Key { db, key, entry } => {
                    let key = &self.keys[key];
                    let ks = store.db(db);
                    ks.remove(key);
                    if let Some(entry) = entry {
                        ks.insert(key, entry);
                    }
                }
                Record::Swap(a, b) => store.swap_dbs(a, b),
            }
        }
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Value;

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn undo_restores_changed_created_and_flushed_keys() {
        let mut store = Store::default();
        store
            .db(0)
            .insert(b"a", Entry::new(Value::Str(b"1".to_vec())));
        store
            .db(1)
            .insert(b"b", Entry::new(Value::Str(b"2".to_vec())));
        let mut undo = UndoLog::default();
        let set = crate::cmd::lookup(b"set").unwrap();
        undo.before_write(&store, 0, set, &argv(&["set", "a", "x"]));
        store
            .db(0)
            .insert(b"a", Entry::new(Value::Str(b"x".to_vec())));
        undo.before_write(&store, 0, set, &argv(&["set", "new", "y"]));
        store
            .db(0)
            .insert(b"new", Entry::new(Value::Str(b"y".to_vec())));
        let flushall = crate::cmd::lookup(b"flushall").unwrap();
        undo.before_write(&store, 0, flushall, &argv(&["flushall"]));
        store.clear_all();
        undo.undo(&mut store);
        let get = |s: &Store, db: usize, k: &[u8]| match s.db_ref(db).and_then(|ks| ks.raw_get(k)) {
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => Some(v.clone()),
            _ => None,
        };
        assert_eq!(get(&store, 0, b"a"), Some(b"1".to_vec()));
        assert_eq!(get(&store, 1, b"b"), Some(b"2".to_vec()));
        assert_eq!(get(&store, 0, b"new"), None);
        assert_eq!(store.db(0).len(), 1);
    }

    #[test]
    fn keys_past_the_scan_are_recorded_once_each() {
        let mut store = Store::default();
        let set = crate::cmd::lookup(b"set").unwrap();
        let mut undo = UndoLog::default();
        for round in 0..2 {
            for i in 0..(SCAN_RECORDS * 3) {
                let key = format!("k{i}");
                if round == 0 && i % 2 == 0 {
                    store
                        .db(0)
                        .insert(key.as_bytes(), Entry::new(Value::Str(b"old".to_vec())));
                }
                undo.before_write(&store, 0, set, &argv(&["set", &key, "new"]));
                store
                    .db(0)
                    .insert(key.as_bytes(), Entry::new(Value::Str(b"new".to_vec())));
            }
        }
        assert_eq!(undo.records.len(), SCAN_RECORDS * 3);
        undo.undo(&mut store);
        assert_eq!(store.db(0).len(), SCAN_RECORDS * 3 / 2);
        for i in (0..(SCAN_RECORDS * 3)).step_by(2) {
            let entry = store.db(0).raw_get(format!("k{i}").as_bytes()).cloned();
            assert!(matches!(entry, Some(Entry { value: Value::Str(v), .. }) if v == b"old"));
        }
    }
}
