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

use bytes::Bytes;

use crate::cmd::CommandSpec;
use crate::store::{Blob, Entry, Store, DATABASES};

enum Record {
    /// `key` of `db` held `entry` (or nothing) before the script touched it.
    Key {
        db: usize,
        key: Blob,
        entry: Option<Entry>,
    },
    /// The script swapped these databases.
    Swap(usize, usize),
}

/// See the module documentation.
#[derive(Default)]
pub struct UndoLog {
    records: Vec<Record>,
    seen: HashSet<(usize, Blob)>,
}

impl UndoLog {
    fn key(&mut self, store: &Store, db: usize, key: &[u8]) {
        if db >= DATABASES || !self.seen.insert((db, key.into())) {
            return;
        }
        let entry = store.db_ref(db).and_then(|ks| ks.raw_get(key)).cloned();
        self.records.push(Record::Key {
            db,
            key: key.into(),
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

    /// Puts back everything recorded, newest first.
    pub fn undo(self, store: &mut Store) {
        for record in self.records.into_iter().rev() {
            match record {
                Record::Key { db, key, entry } => {
                    let ks = store.db(db);
                    ks.remove(&key);
                    if let Some(entry) = entry {
                        ks.insert(&key, entry);
                    }
                }
                Record::Swap(a, b) => store.swap_dbs(a, b),
            }
        }
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
}
