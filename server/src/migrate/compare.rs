//! A migration's plan against the heat planner's, after the fact (issue 15): when the
//! learned model ranked the eager keys, would the heat planner's plan at the same budget
//! have left more fault-ins or fewer?
//!
//! ```text
//!  source, at each plan chunk (KELVIN.MIGRATE-PLAN ... FILTER, the model ranking):
//!    both plans; the keys only the model's pushes go to the target with the plan,
//!    the keys only the heat planner's would have pushed stay here (bounded)
//!  source, at each pull (KELVIN.MIGRATE-PULL): a pull of one of those is a fault-in
//!    (the eager push pulls only the model's keys), counted once per key
//!  target's driver, once the drain is done:
//!    read  = the model-only keys read or written since they arrived (KELVIN.MIGRATE-TOUCHED:
//!            the profiler saw them again after the write that brought them)
//!    faulted = the heat-only keys that faulted in (KELVIN.MIGRATE-COMPARE at the source)
//!  the heat planner's plan would have had read - faulted more fault-ins than the model's
//! ```
//!
//! Every first access between the handover and the end of the drain is counted as if
//! nothing were drained (as `kelvin-bench planner-eval` scores), and only keys in one
//! plan but not the other can make a difference. Figures, not state: a leader change
//! of the source loses its counts (the comparison then says it could not be made); one
//! of the target loses the profile of the reads served there (reads touch the leader's
//! only), which undercounts the model-only keys read and is not flagged; a model-only
//! key that faulted in before its push reached it counts as read (the model's plan
//! missed it too); a chunk planned again after its keys were pulled counts them again.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::cluster::MigrationSpec;
use crate::cmd::migrate::MAX_MOVE_BATCH;
use crate::migrate::driver::{args, text, Cluster};
use crate::migrate::replies::integers;

/// Most migrations whose heat-only keys a source keeps (the oldest go first).
pub const MAX_MIGRATIONS: usize = 16;
/// Most heat-only keys a source keeps per migration; more are counted, not kept.
pub const MAX_KEYS: usize = 200_000;

/// What a source keeps of one migration's plans.
#[derive(Debug, Default)]
struct Kept {
    /// Per database, the keys only the heat planner's plan would have pushed, not
    /// pulled yet.
    heat_only: HashMap<usize, HashSet<Vec<u8>>>,
    /// Heat-only keys planned, kept or not.
    planned: u64,
    /// Heat-only keys pulled (each a fault-in).
    pulled: u64,
    /// Heat-only keys not kept for lack of room.
    dropped: u64,
}

static KEPT: Mutex<VecDeque<(u64, Kept)>> = Mutex::new(VecDeque::new());

/// Held by the tests that use [`KEPT`] (it is process-wide, and one of them pushes every
/// other migration out of it).
#[cfg(test)]
pub static TESTS_USING_KEPT: Mutex<()> = Mutex::new(());

/// At the source: the model ranked a chunk of `migration`; `heat_only` are the keys
/// the heat planner's plan held and the model's did not.
pub fn planned(migration: u64, heat_only: impl IntoIterator<Item = (usize, Vec<u8>)>) {
    let mut kept = KEPT.lock();
    if !kept.iter().any(|(m, _)| *m == migration) {
        if kept.len() == MAX_MIGRATIONS {
            kept.pop_front();
        }
        kept.push_back((migration, Kept::default()));
    }
    let Some((_, k)) = kept.iter_mut().find(|(m, _)| *m == migration) else {
        return;
    };
    let mut held: usize = k.heat_only.values().map(HashSet::len).sum();
    for (db, key) in heat_only {
        if held >= MAX_KEYS {
            k.dropped += 1;
            k.planned += 1;
            continue;
        }
        // A chunk planned again (a retried push) adds nothing twice.
        if k.heat_only.entry(db).or_default().insert(key) {
            held += 1;
            k.planned += 1;
        }
    }
}

/// At the source: `keys` of `db` were pulled for `migration`.
pub fn pulled<'a>(migration: u64, db: usize, keys: impl IntoIterator<Item = &'a [u8]>) {
    let mut kept = KEPT.lock();
    let Some((_, k)) = kept.iter_mut().find(|(m, _)| *m == migration) else {
        return;
    };
    let Some(set) = k.heat_only.get_mut(&db) else {
        return;
    };
    for key in keys {
        if set.remove(key) {
            k.pulled += 1;
        }
    }
}

/// At the source: (heat-only keys planned, of them pulled, of them not kept) for
/// `migration`, if the model ranked any chunk of it here.
pub fn counts(migration: u64) -> Option<(u64, u64, u64)> {
    KEPT.lock()
        .iter()
        .find(|(m, _)| *m == migration)
        .map(|(_, k)| (k.planned, k.pulled, k.dropped))
}

/// The comparison as the target's driver makes it (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Keys only the model's plan pushed, and of them those touched since they arrived.
    pub model_only: u64,
    pub model_only_read: u64,
    /// Keys only the heat planner's plan would have pushed, and of them those that
    /// faulted in.
    pub heat_only: u64,
    pub heat_only_faulted: u64,
}

impl Comparison {
    /// How many more fault-ins the heat planner's plan would have left (negative:
    /// fewer).
    pub fn heat_minus_model(&self) -> i64 {
        self.model_only_read as i64 - self.heat_only_faulted as i64
    }
}

/// At the target's driver, once the drain is done: the comparison, from the model-only
/// keys the source's plans named, or why it could not be made.
pub async fn after_the_fact<C: Cluster>(
    c: &mut C,
    m: &MigrationSpec,
    model_only: &[(usize, Bytes)],
) -> Result<Comparison, String> {
    let id = m.id.to_string();
    let mut cmp = Comparison {
        model_only: model_only.len() as u64,
        ..Comparison::default()
    };
    let mut dbs: Vec<usize> = model_only.iter().map(|k| k.0).collect();
    dbs.sort_unstable();
    dbs.dedup();
    for db in dbs {
        let keys: Vec<&Bytes> = model_only
            .iter()
            .filter(|k| k.0 == db)
            .map(|k| &k.1)
            .collect();
        for batch in keys.chunks(MAX_MOVE_BATCH) {
            let mut argv = args(&["KELVIN.MIGRATE-TOUCHED", &id, &db.to_string()]);
            argv.extend(batch.iter().map(|k| (*k).clone()));
            let reply = c.on_group(m.target, argv).await;
            cmp.model_only_read += integers(&reply)
                .and_then(|v| v.first().copied())
                .ok_or_else(|| format!("group {}: {}", m.target, text(&reply)))?;
        }
    }
    let reply = c
        .on_group(m.source, args(&["KELVIN.MIGRATE-COMPARE", &id]))
        .await;
    match integers(&reply).as_deref() {
        Some(&[planned, pulled, 0]) => {
            cmp.heat_only = planned;
            cmp.heat_only_faulted = pulled;
            Ok(cmp)
        }
        Some(&[planned, _, dropped]) => Err(format!(
            "{dropped} of the {planned} keys only the heat planner would have pushed were not kept to be counted"
        )),
        _ => Err(format!("group {}: {}", m.source, text(&reply))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_only_keys_are_counted_once_when_pulled_and_bounded() {
        let _alone = TESTS_USING_KEPT.lock();
        let m = 9_000_001;
        assert_eq!(counts(m), None);
        planned(
            m,
            [(0, b"a".to_vec()), (0, b"b".to_vec()), (1, b"a".to_vec())],
        );
        // Planned again (a retried chunk): nothing counted twice.
        planned(m, [(0, b"a".to_vec())]);
        assert_eq!(counts(m), Some((3, 0, 0)));
        pulled(m, 0, [&b"a"[..], b"zz"]);
        pulled(m, 0, [&b"a"[..]]);
        pulled(m, 2, [&b"a"[..]]);
        pulled(m + 1, 1, [&b"a"[..]]);
        assert_eq!(counts(m), Some((3, 1, 0)));
        pulled(m, 1, [&b"a"[..]]);
        assert_eq!(counts(m), Some((3, 2, 0)));
        // Other migrations push the oldest out.
        for other in 0..MAX_MIGRATIONS as u64 {
            planned(9_100_000 + other, []);
        }
        assert_eq!(counts(m), None);
        let c = Comparison {
            model_only: 10,
            model_only_read: 4,
            heat_only: 12,
            heat_only_faulted: 1,
        };
        assert_eq!(c.heat_minus_model(), 3);
    }
}
