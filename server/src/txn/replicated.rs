//! The commit of a replicated transaction in one participant: one with a command whose
//! keys span groups (RENAME to another group's slot, SMOVE, MSETNX, a script...), which
//! no single group can run alone. Every participant runs every command of it, in order,
//! over a scratch store holding the transaction's keys as their groups read them at
//! PREPARE (the view; locked since, so still their values), then keeps what the commands
//! did to its own keys and drops the rest. Every participant computes the same: the same
//! commands over the same keys, the rng seeded from the transaction's id; time is each
//! group's own (a TTL set lands at that group's log time, as any write's).
//!
//! The scratch store isolates everything else a command touches in a store (migration
//! state, write indexes, memory counts, notifications): the real store sees only its own
//! keys replaced or deleted, each signalled to WATCH and notified like a write.

use super::state::{Prepared, View};
use super::TxId;
use crate::cmd::Exec;
use crate::store::Entry;

/// Runs `p`'s commands over `view` and keeps its own keys; their replies, an array, go
/// to `ex.out`.
pub fn run(ex: &mut Exec<'_>, tx: TxId, p: &Prepared, view: &View) {
    let mut scratch = crate::store::scratch::take();
    scratch.notify_flags = ex.store.notify_flags;
    scratch.hll_sparse_max_bytes = ex.store.hll_sparse_max_bytes;
    scratch.last_apply_ms = ex.store.last_apply_ms;
    scratch.apply_index = ex.store.apply_index;
    // The same draws in every participant (SPOP, SRANDMEMBER... over the same keys).
    scratch
        .rng
        .reseed(tx.origin ^ tx.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for (db, key, value) in view {
        let Some((expire_at, payload)) = value else {
            continue;
        };
        // A payload its own group dumped restores (a corrupt one leaves the key absent
        // here alike on every replica: the view is the same in every FINISH entry).
        if let Ok(value) = crate::rdb::restore(payload) {
            let mut entry = Entry::new(value);
            entry.expire_at = *expire_at;
            scratch.db(*db as usize).insert(key, entry);
        }
    }
    // The loaded scripts, for EVALSHA and FCALL among the commands.
    std::mem::swap(&mut scratch.scripts, &mut ex.store.scripts);
    let mut events = Vec::new();
    crate::machine::run_items(&mut scratch, ex.now_ms, &p.items, ex.out, &mut events);
    std::mem::swap(&mut scratch.scripts, &mut ex.store.scripts);
    for (db, key) in &p.own {
        let before = view
            .iter()
            .find(|(d, k, _)| d == db && k == key)
            .and_then(|(_, _, v)| v.as_ref());
        let after = scratch.db(*db as usize).raw_get(key).cloned();
        let unchanged = match (&after, before) {
            (None, None) => true,
            (Some(e), Some((expire_at, payload))) => {
                e.expire_at == *expire_at && crate::rdb::dump(&e.value) == payload[..]
            }
            _ => false,
        };
        if unchanged {
            continue;
        }
        let ks = ex.store.db(*db as usize);
        match after {
            Some(mut entry) => {
                entry.heat.touch(ex.now_ms, true);
                ks.insert(key, entry);
            }
            None => {
                ks.remove(key);
            }
        }
        ex.store.signal_modified(*db as usize, key);
    }
    ex.events.extend(events.into_iter().filter(|e| {
        p.own
            .iter()
            .any(|(d, k)| *d as usize == e.db && k[..] == e.key[..])
    }));
    crate::store::scratch::give_back(
        scratch,
        view.iter().map(|(db, key, _)| (*db as usize, &key[..])),
    );
}
