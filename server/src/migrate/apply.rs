//! Applying migration entries, the same on every replica of a group.
//!
//! How it fits: the state machine ([`crate::machine`]) hands every
//! [`LogCommand::Migrate`](kelvin_protocol::log::LogCommand::Migrate) op here, and asks
//! [`refusal`] before it applies a data command: a command on a key of a slot this
//! group sealed, or imports without the seal's proof yet, is refused at apply (it was
//! proposed before the seal, or routed by an old map), never applied on both sides.
//! A write applied to a key of an importing slot settles it ([`settle_written`]), so a
//! copy from the source that arrives later never overwrites it.

use bytes::Bytes;
use kelvin_protocol::log::MigrateOp;
use kelvin_protocol::ReplyWriter;

use super::state::{SealProof, Serve};
use crate::cmd::CommandSpec;
use crate::store::Store;

/// The reply to a command applied after its slot was sealed here (the client's node
/// routes it again to the new owner).
pub const SEALED: &str = "TRYAGAIN the key's slot moved to another group; send the command again";
/// The reply to a command on a slot whose import waits for the source's seal.
pub const NOT_YET: &str =
    "TRYAGAIN the key's slot is being handed over to this group; send the command again";

/// Applies one migration op. Errors are replies, the same on every replica.
pub fn apply(store: &mut Store, op: &MigrateOp, out: &mut ReplyWriter) {
    let result = match op {
        MigrateOp::Seal {
            migration,
            target,
            slots,
        } => store.migrations.seal(*migration, slots, *target),
        MigrateOp::Import {
            migration,
            source,
            slots,
        } => store.migrations.import(*migration, slots, *source),
        MigrateOp::Proof {
            migration,
            index,
            log_ms,
        } => store.migrations.prove_seal(
            *migration,
            SealProof {
                index: *index,
                log_ms: *log_ms,
            },
        ),
        MigrateOp::Keys { .. } => {
            // Restoring moved values needs the DUMP format (issue 17's rdb module).
            out.error("ERR moving keys is not part of this build yet");
            return;
        }
        MigrateOp::Finish { migration } => finish(store, *migration),
    };
    match result {
        Ok(()) => out.ok(),
        Err(e) => out.error(&format!("ERR {e}")),
    }
}

/// The end of a migration here: a source drops the keys of the slots it sealed (the
/// target holds them now); a target's slots become its own.
fn finish(store: &mut Store, migration: u64) -> Result<(), super::state::MigrationError> {
    let sealed: Vec<u16> = store
        .migrations
        .slots()
        .filter(|(_, role)| {
            matches!(role, super::state::SlotRole::Sealed { migration: m, .. } if *m == migration)
        })
        .map(|(s, _)| s)
        .collect();
    store.migrations.finish(migration)?;
    let dbs: Vec<usize> = store.dbs().map(|(db, _)| db).collect();
    for db in dbs {
        for &slot in &sealed {
            store.db(db).drop_slot(slot as usize);
        }
    }
    Ok(())
}

/// Why a data command may not be applied here now, if it may not.
pub fn refusal(store: &Store, spec: &CommandSpec, argv: &[Bytes]) -> Option<&'static str> {
    if store.migrations.is_empty() {
        return None;
    }
    spec.keys_in(argv).into_iter().find_map(|p| {
        match store.migrations.serve(kelvin_protocol::key_slot(&argv[p])) {
            Serve::Moved { .. } => Some(SEALED),
            Serve::NotYet { .. } => Some(NOT_YET),
            Serve::Normal | Serve::Importing { .. } => None,
        }
    })
}

/// After a write was applied: its keys in importing slots are settled here.
pub fn settle_written(store: &mut Store, db: usize, spec: &CommandSpec, argv: &[Bytes]) {
    if store.migrations.is_empty() || !spec.is_write() {
        return;
    }
    for p in spec.keys_in(argv) {
        store.migrations.settle(db as u8, &argv[p]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, Value};

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn a_sealed_slot_refuses_commands_and_finish_drops_its_keys() {
        let mut store = Store::default();
        let key = b"sess:1";
        let slot = kelvin_protocol::key_slot(key);
        store
            .db(0)
            .insert(key, Entry::new(Value::Str(b"v".to_vec())));
        store
            .db(3)
            .insert(key, Entry::new(Value::Str(b"v".to_vec())));
        store
            .db(0)
            .insert(b"other", Entry::new(Value::Str(b"v".to_vec())));
        let get = crate::cmd::lookup(b"GET").unwrap();
        assert_eq!(refusal(&store, get, &argv(&["GET", "sess:1"])), None);
        let mut out = ReplyWriter::default();
        apply(
            &mut store,
            &MigrateOp::Seal {
                migration: 4,
                target: 2,
                slots: vec![slot],
            },
            &mut out,
        );
        assert_eq!(out.buf, b"+OK\r\n");
        assert_eq!(
            refusal(&store, get, &argv(&["GET", "sess:1"])),
            Some(SEALED)
        );
        if kelvin_protocol::key_slot(b"other") != slot {
            assert_eq!(refusal(&store, get, &argv(&["GET", "other"])), None);
        }
        let mut out = ReplyWriter::default();
        apply(&mut store, &MigrateOp::Finish { migration: 4 }, &mut out);
        assert_eq!(out.buf, b"+OK\r\n");
        assert!(store.db(0).raw_get(key).is_none() && store.db(3).raw_get(key).is_none());
        assert_eq!((store.db(0).len(), store.db(3).len()), (1, 0));
        assert_eq!(refusal(&store, get, &argv(&["GET", "sess:1"])), None);
        let mut out = ReplyWriter::default();
        apply(&mut store, &MigrateOp::Finish { migration: 4 }, &mut out);
        assert_eq!(out.buf, b"-ERR no migration 4 here\r\n");
    }

    #[test]
    fn an_import_waits_for_the_proof_then_writes_settle_keys() {
        let mut store = Store::default();
        let slot = kelvin_protocol::key_slot(b"k");
        let mut out = ReplyWriter::default();
        apply(
            &mut store,
            &MigrateOp::Import {
                migration: 1,
                source: 9,
                slots: vec![slot],
            },
            &mut out,
        );
        let set = crate::cmd::lookup(b"SET").unwrap();
        let cmd = argv(&["SET", "k", "v"]);
        assert_eq!(refusal(&store, set, &cmd), Some(NOT_YET));
        apply(
            &mut store,
            &MigrateOp::Proof {
                migration: 1,
                index: 10,
                log_ms: 5,
            },
            &mut out,
        );
        assert_eq!(refusal(&store, set, &cmd), None);
        settle_written(&mut store, 0, set, &cmd);
        assert!(store.migrations.is_settled(0, b"k"));
        assert!(!store.migrations.accept_moved(0, b"k"));
    }
}
