//! Scratch stores: commands run over a few keys outside a group's own keyspace (a
//! replicated transaction's FINISH, `txn::replicated`; a read answered from the values a
//! fault-in pulled, `conn::faultin`). A new [`Store`] costs a table for each of the 16384
//! slots (about a quarter of a millisecond here, and as much again to free), so each
//! thread keeps the last one it used, emptied.

use std::cell::RefCell;

use super::Store;

thread_local! {
    static SCRATCH: RefCell<Option<Store>> = const { RefCell::new(None) };
}

/// This thread's scratch store (a new one if it has none): no key in it; its counters
/// (hits, misses...) are whatever its last use left.
pub fn take() -> Store {
    SCRATCH.with(|s| s.borrow_mut().take()).unwrap_or_default()
}

/// Takes `keys` (database, key) out of `scratch` and keeps it for this thread's next
/// [`take`] if that leaves no key in it at all (a script may have written keys it did
/// not declare: then it is dropped, so that nothing of one use reaches the next).
pub fn give_back<'a>(mut scratch: Store, keys: impl IntoIterator<Item = (usize, &'a [u8])>) {
    for (db, key) in keys {
        let ks = scratch.db(db);
        ks.remove(key);
        ks.track_new = false;
        ks.new_keys.clear();
    }
    if (0..super::DATABASES).all(|db| scratch.db_ref(db).is_none_or(|ks| ks.is_empty())) {
        SCRATCH.with(|s| *s.borrow_mut() = Some(scratch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, Value};

    #[test]
    fn a_scratch_store_comes_back_empty_or_not_at_all() {
        let mut s = take();
        s.db(0).insert(b"k", Entry::new(Value::Str(b"v".to_vec())));
        // A mark the same store carries back (a new one starts at 0).
        s.keyspace_hits = 7;
        give_back(s, [(0, b"k".as_slice())]);
        let mut s = take();
        assert_eq!(s.keyspace_hits, 7, "the emptied store was kept");
        assert!(s.db_ref(0).is_none_or(|ks| ks.is_empty()));
        // A key left behind: the store is not kept.
        s.db(3)
            .insert(b"other", Entry::new(Value::Str(b"v".to_vec())));
        give_back(s, [(0, b"k".as_slice())]);
        let s = take();
        assert_eq!(s.keyspace_hits, 0, "a store left holding a key is not kept");
        assert!(s.db_ref(3).is_none_or(|ks| ks.is_empty()));
    }
}
