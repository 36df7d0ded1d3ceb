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
use kelvin_protocol::log::{MigrateOp, MovedKey};
use kelvin_protocol::ReplyWriter;

use super::state::{SealProof, Serve, SlotRole};
use crate::cmd::CommandSpec;
use crate::store::{Entry, Store};

/// The reply to a command applied after its slot was sealed here (the client's node
/// routes it again to the new owner).
pub const SEALED: &str = "TRYAGAIN the key's slot moved to another group; send the command again";
/// The reply to a command on a slot whose import waits for the source's seal.
pub const NOT_YET: &str =
    "TRYAGAIN the key's slot is being handed over to this group; send the command again";

/// Applies one migration op at log time `now_ms`. Errors are replies, the same on every
/// replica.
pub fn apply(store: &mut Store, op: &MigrateOp, now_ms: u64, out: &mut ReplyWriter) {
    let result = match op {
        MigrateOp::Seal {
            migration,
            target,
            slots,
        } => match store.tx.holds_any_slot(slots) {
            true => Err(crate::migrate::state::MigrationError::Locked),
            false => store.migrations.seal(*migration, slots, *target),
        },
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
        MigrateOp::Keys {
            migration,
            db,
            keys,
        } => {
            match moved_keys(store, *migration, *db, keys, now_ms) {
                Ok(written) => out.int(written as i64),
                Err(e) => out.error(&format!("ERR {e}")),
            }
            return;
        }
        MigrateOp::Finish { migration } => {
            let began = std::time::Instant::now();
            let r = finish(store, *migration);
            tracing::info!(
                migration,
                us = began.elapsed().as_micros() as u64,
                "migration finished in this group"
            );
            r
        }
        MigrateOp::Part {
            migration,
            db,
            key,
            expire_at,
            offset,
            total,
            chunk,
        } => {
            let part = Part {
                key,
                expire_at: *expire_at,
                offset: *offset,
                total: *total,
                chunk,
            };
            match moved_part(store, *migration, *db, part, now_ms) {
                Ok(written) => out.int(written as i64),
                Err(e) => out.error(&format!("ERR {e}")),
            }
            return;
        }
    };
    if result.is_ok() && matches!(op, MigrateOp::Seal { .. }) {
        // Clients blocked here (BLPOP...) on keys of the sealed slots run again: they
        // wait for the new owner and block there instead.
        store.list_ready.bump();
    }
    match result {
        Ok(()) => out.ok(),
        Err(e) => out.error(&format!("ERR {e}")),
    }
}

/// Writes keys copied from the source, each only if this group has no word of its own
/// on it yet (never over a key written or deleted here since the seal, never twice), and
/// not if it expired by the log's time (the later of this entry's and the seal's). No
/// keyspace notification, no WATCH signal: the key's value did not change, only its
/// place. Returns how many keys were written.
fn moved_keys(
    store: &mut Store,
    migration: u64,
    db: u8,
    keys: &[MovedKey],
    now_ms: u64,
) -> Result<usize, String> {
    if db as usize >= crate::store::DATABASES {
        return Err("moved keys for a database out of range".into());
    }
    // All or nothing: every key must belong to this migration's import.
    let seals = keys
        .iter()
        .map(|k| seal_ms(store, migration, &k.key))
        .collect::<Result<Vec<u64>, String>>()?;
    let mut written = 0;
    for (k, seal_ms) in keys.iter().zip(seals) {
        if k.expire_at != 0 && k.expire_at <= now_ms.max(seal_ms) {
            // Expired at the source's time already: it never comes back here.
            store.migrations.accept_moved(db, &k.key);
            continue;
        }
        if k.payload.is_empty() {
            // Absent at the source: settled here as absent.
            store.migrations.accept_moved(db, &k.key);
            continue;
        }
        // A payload that does not restore settles nothing: the key stays to be pulled.
        let Ok(value) = crate::rdb::restore(&k.payload) else {
            continue;
        };
        if !store.migrations.accept_moved(db, &k.key) {
            continue;
        }
        let mut entry = Entry::new(value);
        entry.expire_at = k.expire_at;
        entry.heat.touch(now_ms, false);
        store.db(db as usize).insert(&k.key, entry);
        written += 1;
    }
    Ok(written)
}

/// The seal's log time of `migration` if it imports `key`'s slot here (0 before the
/// proof), else the error that refuses a moved key.
fn seal_ms(store: &Store, migration: u64, key: &[u8]) -> Result<u64, String> {
    let slot = kelvin_protocol::key_slot(key);
    match store.migrations.role(slot) {
        Some(SlotRole::Importing {
            migration: m,
            proof,
            ..
        }) if m == migration => Ok(proof.map_or(0, |p| p.log_ms)),
        _ => Err(format!(
            "key of slot {slot} is not imported by migration {migration}"
        )),
    }
}

/// A part of a key whose payload is too big for one entry ([`MigrateOp::Part`]).
struct Part<'a> {
    key: &'a Bytes,
    expire_at: u64,
    offset: u64,
    total: u64,
    chunk: &'a Bytes,
}

/// Stages a part of a moved key; with its last part the key lands as [`moved_keys`]
/// lands one (1 if written). A key settled here meanwhile drops its parts (0).
fn moved_part(
    store: &mut Store,
    migration: u64,
    db: u8,
    p: Part<'_>,
    now_ms: u64,
) -> Result<usize, String> {
    if db as usize >= crate::store::DATABASES {
        return Err("moved keys for a database out of range".into());
    }
    seal_ms(store, migration, p.key)?;
    if store.migrations.is_settled(db, p.key) {
        store.migrations.drop_parts(db, p.key);
        return Ok(0);
    }
    let staged = store
        .migrations
        .add_part(db, p.key, p.expire_at, p.offset, p.total, p.chunk)?;
    let Some(whole) = staged else {
        return Ok(0);
    };
    let key = MovedKey {
        key: p.key.clone(),
        expire_at: whole.expire_at,
        payload: Bytes::from(whole.bytes),
    };
    moved_keys(store, migration, db, &[key], now_ms)
}

/// The end of a migration here: a source drops the keys of the slots it sealed (the
/// target holds them now); a target's slots become its own.
fn finish(store: &mut Store, migration: u64) -> Result<(), super::state::MigrationError> {
    let sealed: Vec<u16> = store
        .migrations
        .slots()
        .filter(
            |(_, role)| matches!(role, SlotRole::Sealed { migration: m, .. } if *m == migration),
        )
        .map(|(s, _)| s)
        .collect();
    store.migrations.finish(migration)?;
    let dbs: Vec<usize> = store.dbs().map(|(db, _)| db).collect();
    let mut dropped = Vec::new();
    for db in dbs {
        for &slot in &sealed {
            dropped.push(store.db(db).drop_slot(slot as usize));
        }
    }
    crate::store::drop_later(dropped.into_iter().flat_map(|t| t.map.into_entries()));
    Ok(())
}

/// The reply to a command applied on a key of an importing slot that was neither pulled
/// from the source first nor replaced whole (the connection pulls before it proposes;
/// this is the guard for what slipped past, never a wrong answer).
pub const UNSETTLED: &str =
    "TRYAGAIN the key is still being moved to this group; send the command again";

/// What a data command needs before it may run on a group with migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Run it here.
    Run,
    /// Its slot is sealed here (the target serves it) or imported without the seal's
    /// proof yet: the answer to give if the routing does not catch up.
    Wait(&'static str),
    /// These keys of database `db` of `migration` must be pulled from `source` first
    /// (one migration and one database at a time; the command is checked again after
    /// the pull).
    Pull {
        migration: u64,
        source: u64,
        db: usize,
        keys: Vec<Bytes>,
    },
}

/// Whether `argv` replaces its keys whole, whatever they held, with a reply that does
/// not depend on them: such a write settles a key of an importing slot without a pull.
/// SET without NX, XX, GET or KEEPTTL; SETEX, PSETEX, MSET.
pub fn replaces_whole(spec: &CommandSpec, argv: &[Bytes]) -> bool {
    match spec.name {
        "setex" | "psetex" | "mset" => true,
        "set" => !argv.iter().skip(3).any(|a| {
            ["nx", "xx", "get", "keepttl"]
                .iter()
                .any(|o| a.eq_ignore_ascii_case(o.as_bytes()))
        }),
        _ => false,
    }
}

/// The key a command reads or writes in another database than its own, and that
/// database: MOVE's key in the database it moves to (MOVE fails if it is there), COPY's
/// destination with `DB` (COPY without REPLACE fails if it is there).
fn other_database_key(spec: &CommandSpec, argv: &[Bytes]) -> Option<(usize, Bytes)> {
    let number = |a: &Bytes| std::str::from_utf8(a).ok()?.parse::<usize>().ok();
    let (db, key) = match spec.name {
        "move" => (number(argv.get(2)?)?, argv.get(1)?),
        "copy" => {
            let at = argv
                .iter()
                .skip(3)
                .position(|a| a.eq_ignore_ascii_case(b"db"))?;
            (number(argv.get(3 + at + 1)?)?, argv.get(2)?)
        }
        _ => return None,
    };
    (db < crate::store::DATABASES).then(|| (db, key.clone()))
}

/// What `argv` (a data command on database `db`) needs before it may run here.
pub fn need(store: &Store, db: usize, spec: &CommandSpec, argv: &[Bytes]) -> Need {
    if store.migrations.is_empty() {
        return Need::Run;
    }
    let keys = spec.keys_in(argv);
    let mine = keys.iter().map(|&p| (db, &argv[p]));
    // Then the key it touches in another database, once its own are here.
    let other = other_database_key(spec, argv);
    let mut pull: Option<(u64, u64, usize, Vec<Bytes>)> = None;
    for (db, key) in mine.chain(other.as_ref().map(|(d, k)| (*d, k))) {
        let slot = kelvin_protocol::key_slot(key);
        match store.migrations.serve(slot) {
            Serve::Normal => {}
            Serve::Moved { .. } => return Need::Wait(SEALED),
            Serve::NotYet { .. } => return Need::Wait(NOT_YET),
            Serve::Importing { source } => {
                if replaces_whole(spec, argv) || store.migrations.is_settled(db as u8, key) {
                    continue;
                }
                let Some(SlotRole::Importing { migration, .. }) = store.migrations.role(slot)
                else {
                    continue;
                };
                match &mut pull {
                    None => pull = Some((migration, source, db, vec![key.clone()])),
                    Some((m, _, d, keys)) if *m == migration && *d == db && !keys.contains(key) => {
                        keys.push(key.clone())
                    }
                    Some(_) => {}
                }
            }
        }
    }
    match pull {
        None => Need::Run,
        Some((migration, source, db, keys)) => Need::Pull {
            migration,
            source,
            db,
            keys,
        },
    }
}

/// Why a data command may not be applied here now, if it may not.
pub fn refusal(
    store: &Store,
    db: usize,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Option<&'static str> {
    match need(store, db, spec, argv) {
        Need::Run => None,
        Need::Wait(text) => Some(text),
        Need::Pull { .. } => Some(UNSETTLED),
    }
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
        assert_eq!(refusal(&store, 0, get, &argv(&["GET", "sess:1"])), None);
        let mut out = ReplyWriter::default();
        apply(
            &mut store,
            &MigrateOp::Seal {
                migration: 4,
                target: 2,
                slots: vec![slot],
            },
            0,
            &mut out,
        );
        assert_eq!(out.buf, b"+OK\r\n");
        assert_eq!(
            refusal(&store, 0, get, &argv(&["GET", "sess:1"])),
            Some(SEALED)
        );
        if kelvin_protocol::key_slot(b"other") != slot {
            assert_eq!(refusal(&store, 0, get, &argv(&["GET", "other"])), None);
        }
        let mut out = ReplyWriter::default();
        apply(&mut store, &MigrateOp::Finish { migration: 4 }, 0, &mut out);
        assert_eq!(out.buf, b"+OK\r\n");
        assert!(store.db(0).raw_get(key).is_none() && store.db(3).raw_get(key).is_none());
        assert_eq!((store.db(0).len(), store.db(3).len()), (1, 0));
        assert_eq!(refusal(&store, 0, get, &argv(&["GET", "sess:1"])), None);
        let mut out = ReplyWriter::default();
        apply(&mut store, &MigrateOp::Finish { migration: 4 }, 0, &mut out);
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
            0,
            &mut out,
        );
        let set = crate::cmd::lookup(b"SET").unwrap();
        let cmd = argv(&["SET", "k", "v"]);
        assert_eq!(refusal(&store, 0, set, &cmd), Some(NOT_YET));
        apply(
            &mut store,
            &MigrateOp::Proof {
                migration: 1,
                index: 10,
                log_ms: 5,
            },
            0,
            &mut out,
        );
        assert_eq!(refusal(&store, 0, set, &cmd), None);
        settle_written(&mut store, 0, set, &cmd);
        assert!(store.migrations.is_settled(0, b"k"));
        assert!(!store.migrations.accept_moved(0, b"k"));
    }

    /// Seen in tests/python/test_reshard_races.py: MOVE and COPY ... DB ran at the
    /// target without the key of the other database, answered as if it were absent, and
    /// the drain then landed the source's old copy over what they wrote there.
    #[test]
    fn moves_between_databases_pull_the_other_databases_key() {
        let mut store = Store::default();
        let slot = kelvin_protocol::key_slot(b"{m}k");
        store.migrations.import(1, &[slot], 7).unwrap();
        store
            .migrations
            .prove_seal(
                1,
                SealProof {
                    index: 3,
                    log_ms: 0,
                },
            )
            .unwrap();
        let run = |store: &Store, words: &[&str]| {
            let argv = argv(words);
            need(store, 0, crate::cmd::lookup(&argv[0]).unwrap(), &argv)
        };
        let pull = |db: usize, keys: &[&str]| Need::Pull {
            migration: 1,
            source: 7,
            db,
            keys: argv(keys),
        };
        assert_eq!(run(&store, &["MOVE", "{m}k", "1"]), pull(0, &["{m}k"]));
        store.migrations.accept_moved(0, b"{m}k");
        assert_eq!(run(&store, &["MOVE", "{m}k", "1"]), pull(1, &["{m}k"]));
        store.migrations.accept_moved(1, b"{m}k");
        assert_eq!(run(&store, &["MOVE", "{m}k", "1"]), Need::Run);
        let copy = ["COPY", "{m}k", "{m}d", "REPLACE", "DB", "2"];
        assert_eq!(run(&store, &copy), pull(0, &["{m}d"]));
        store.migrations.accept_moved(0, b"{m}d");
        assert_eq!(run(&store, &copy), pull(2, &["{m}d"]));
        // A database out of range or not a number: the command answers its own error.
        store.migrations.accept_moved(0, b"{m}x");
        assert_eq!(run(&store, &["MOVE", "{m}x", "99"]), Need::Run);
        assert_eq!(run(&store, &["MOVE", "{m}x", "one"]), Need::Run);
    }

    /// Keys of slot `slot` that move: a value, one settled by a target write meanwhile,
    /// one expired at the seal, one whose payload is damaged.
    #[test]
    fn moved_keys_land_once_never_over_target_writes_never_expired() {
        let mut store = Store::default();
        let slot = kelvin_protocol::key_slot(b"{s}a");
        let mut out = ReplyWriter::default();
        let ops = [
            MigrateOp::Import {
                migration: 3,
                source: 1,
                slots: vec![slot],
            },
            MigrateOp::Proof {
                migration: 3,
                index: 7,
                log_ms: 1000,
            },
        ];
        for op in &ops {
            apply(&mut store, op, 900, &mut out);
        }
        let payload = |v: &str| {
            Bytes::from(crate::rdb::dump(&crate::store::Value::Str(
                v.as_bytes().to_vec(),
            )))
        };
        // The target wrote {s}b itself after the seal.
        store.db(0).insert(
            b"{s}b",
            Entry::new(crate::store::Value::Str(b"mine".to_vec())),
        );
        store.migrations.settle(0, b"{s}b");
        let moved = |key: &str, expire_at: u64, payload: Bytes| MovedKey {
            key: Bytes::copy_from_slice(key.as_bytes()),
            expire_at,
            payload,
        };
        let keys = MigrateOp::Keys {
            migration: 3,
            db: 0,
            keys: vec![
                moved("{s}a", 5000, payload("va")),
                moved("{s}b", 0, payload("old")),
                moved("{s}c", 999, payload("gone")),
                moved("{s}d", 0, Bytes::from_static(b"not a dump")),
            ],
        };
        let mut out = ReplyWriter::default();
        apply(&mut store, &keys, 950, &mut out);
        assert_eq!(out.buf, b":1\r\n");
        let ks = store.db(0);
        assert_eq!(ks.raw_get(b"{s}a").map(|e| e.expire_at), Some(5000));
        assert!(
            matches!(&ks.raw_get(b"{s}b").unwrap().value, crate::store::Value::Str(v) if v == b"mine")
        );
        assert!(ks.raw_get(b"{s}c").is_none() && ks.raw_get(b"{s}d").is_none());
        assert!(store.migrations.is_settled(0, b"{s}c"));
        assert!(!store.migrations.is_settled(0, b"{s}d"));
        // A second copy of {s}a does not land again.
        let mut out = ReplyWriter::default();
        let again = MigrateOp::Keys {
            migration: 3,
            db: 0,
            keys: vec![moved("{s}a", 0, payload("stale"))],
        };
        apply(&mut store, &again, 960, &mut out);
        assert_eq!(out.buf, b":0\r\n");
        assert_eq!(
            store.db(0).raw_get(b"{s}a").map(|e| e.expire_at),
            Some(5000)
        );
        // Keys of a slot this migration does not import are refused whole.
        let mut out = ReplyWriter::default();
        let stray = MigrateOp::Keys {
            migration: 3,
            db: 0,
            keys: vec![moved("elsewhere", 0, payload("x"))],
        };
        apply(&mut store, &stray, 960, &mut out);
        if kelvin_protocol::key_slot(b"elsewhere") != slot {
            assert!(out.buf.starts_with(b"-ERR key of slot"));
        }
    }
}
