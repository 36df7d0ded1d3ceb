//! The steps of a transaction across groups ([`crate::txn`]), each through the log of the
//! group it is pinned to (`KELVIN.ON <group> KELVIN.TX ...`), applied on every replica:
//!
//! ```text
//! KELVIN.TX PREPARE <origin> <seq> <record group> <encoded transaction> [OWN <db> <key> ...]
//!     -> +PREPARED: its keys are locked here until FINISH
//!        (with OWN, a replicated transaction, whose commands run in every participant:
//!        the OWN keys are this group's, locked, and the reply is their values now, per
//!        key nil or [expire_at, DUMP payload], as KELVIN.MIGRATE-PULL answers)
//!      | -TXWATCH ...  a watched key's slot was written since the watch (final: EXEC is nil)
//!      | -TXLOCKED ... another transaction holds one of its keys (the coordinator retries)
//!      | -TXMOVING ... a migration holds one of its slots (likewise; a key still to be
//!        moved here is pulled by the coordinator first)
//! KELVIN.TX DECIDE <origin> <seq> COMMIT|ABORT [view]     (the record group)
//!     -> +COMMIT | +ABORT: the decision recorded (the first one logged wins); a
//!        replicated transaction's COMMIT carries its view (every key's value as read at
//!        PREPARE), kept with it and answered as [+COMMIT, view]
//! KELVIN.TX FINISH <origin> <seq> COMMIT|ABORT [view]
//!     -> COMMIT: the replies of its commands here, an array (a replicated one runs its
//!        commands over the view, `crate::txn::state::View`, and keeps its own keys);
//!        ABORT: +ABORTED
//!        (an ABORT of a transaction not prepared here marks it aborted, so that a late
//!        PREPARE of it is refused)
//! KELVIN.TX FORGET <origin> <seq>                  (the record group) -> +OK
//! ```
//!
//! The encoded transaction is a log batch of one `LogCommand::Transaction` (as
//! `KELVIN.EXEC` carries): this group's watch index, its watched keys and its commands
//! (none when the group holds only watched keys: it locks and checks them, and commits
//! as a no-op).
//! Kelvin's own commands: a client has no use for them.

use bytes::Bytes;
use kelvin_protocol::log::{LogBatch, LogCommand, TxItem};

use crate::cmd::migrate::number;
use crate::cmd::{data, flags::*, CmdError, CmdResult, CommandSpec, Exec, NO_KEYS};
use crate::migrate::state::Serve;
use crate::txn::state::Prepared;
use crate::txn::{TxId, PREPARE_WATCHED};

pub const COMMANDS: &[CommandSpec] = &[
    data(
        "kelvin.tx",
        -4,
        WRITE | NOSCRIPT,
        NO_KEYS,
        "transactions",
        "A step of a transaction across groups, through the log of the group it is pinned to (Kelvin: prepare, decide, finish, forget).",
        kelvin_tx,
    ),
    data(
        "kelvin.settle",
        -2,
        WRITE | NOSCRIPT,
        crate::cmd::ALL_KEYS,
        "transactions",
        "Changes nothing; as a write of its keys it brings those a migration has not moved yet to their new group first (Kelvin: what a transaction's coordinator sends before preparing them).",
        kelvin_settle,
    ),
];

/// `KELVIN.SETTLE key [key ...]`: a write of its keys that changes nothing. Its point is
/// on the way: routed like any write, it waits for a key a migration has not moved to
/// its group yet to be pulled and written there (a read would be answered from the pull
/// without waiting). Answers how many keys it named.
fn kelvin_settle(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ex.out.int((argv.len() - 1) as i64);
    Ok(())
}

fn commit(arg: &[u8]) -> Result<bool, CmdError> {
    if arg.eq_ignore_ascii_case(b"commit") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"abort") {
        Ok(false)
    } else {
        Err(CmdError::SYNTAX)
    }
}

fn kelvin_tx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let tx = TxId {
        origin: number(&argv[2])?,
        seq: number(&argv[3])?,
    };
    let op = &argv[1];
    match &argv[4..] {
        [record, encoded, own @ ..] if op.eq_ignore_ascii_case(b"prepare") => {
            let own = match own {
                [] => None,
                [word, pairs @ ..] if word.eq_ignore_ascii_case(b"own") && pairs.len() % 2 == 0 => {
                    Some(
                        pairs
                            .chunks(2)
                            .map(|p| Ok((database(&p[0])?, p[1].clone())))
                            .collect::<Result<Vec<_>, CmdError>>()?,
                    )
                }
                _ => return Err(CmdError::SYNTAX),
            };
            prepare(ex, tx, number(record)?, encoded, own)
        }
        [decision, view @ ..] if op.eq_ignore_ascii_case(b"decide") && view.len() <= 1 => {
            let view = view.first().cloned();
            let (recorded, view) = ex
                .store
                .tx
                .decide_with(tx, commit(decision)?, view, ex.now_ms);
            let word = if recorded { "COMMIT" } else { "ABORT" };
            match view {
                Some(view) => {
                    ex.out.array(2);
                    ex.out.simple(word);
                    ex.out.bulk(&view);
                }
                None => ex.out.simple(word),
            }
            Ok(())
        }
        [decision, view @ ..] if op.eq_ignore_ascii_case(b"finish") && view.len() <= 1 => {
            finish(ex, tx, commit(decision)?, view.first())
        }
        [] if op.eq_ignore_ascii_case(b"forget") => {
            ex.store.tx.forget(tx);
            ex.out.ok();
            Ok(())
        }
        _ => Err(CmdError::SYNTAX),
    }
}

/// The keys a `KELVIN.TX PREPARE` (its arguments `argv`) would lock: its own keys
/// (`OWN`) or its commands' keys, and its watched keys. `None` if `argv` is no PREPARE
/// that could be applied (the command refuses it then).
pub fn prepare_keys(argv: &[Bytes]) -> Option<Vec<Bytes>> {
    if !argv.get(1)?.eq_ignore_ascii_case(b"prepare") {
        return None;
    }
    let [_record, encoded, own @ ..] = argv.get(4..)? else {
        return None;
    };
    let batch = LogBatch::decode(encoded).ok()?;
    let [LogCommand::Transaction { watch, items, .. }] = &batch.commands[..] else {
        return None;
    };
    let mut keys: Vec<Bytes> = watch.iter().map(|(_, k)| k.clone()).collect();
    match own {
        [] => {
            for item in items {
                if let TxItem::Data { argv, .. } = item {
                    let spec = argv.first().and_then(|n| crate::cmd::lookup(n))?;
                    keys.extend(spec.keys_in(argv).iter().map(|&p| argv[p].clone()));
                }
            }
        }
        [_word, pairs @ ..] => keys.extend(pairs.chunks(2).filter_map(|p| p.get(1).cloned())),
    }
    Some(keys)
}

/// A PREPARE refused by a migration: `TXMOVING` and the migration's refusal. Not the
/// refusal itself, which a connection takes as its cue to run the request again until
/// the move is done: the coordinator decides what to do (pull the keys, try again).
fn moving(refusal: &str) -> CmdError {
    CmdError::raw(format!("{} {refusal}", crate::txn::PREPARE_MOVING))
}

fn database(arg: &[u8]) -> Result<u8, CmdError> {
    // Below DATABASES (16): the cast does not truncate.
    Ok(crate::cmd::migrate::database(arg)? as u8)
}

fn prepare(
    ex: &mut Exec<'_>,
    tx: TxId,
    record: u64,
    encoded: &[u8],
    own: Option<Vec<(u8, Bytes)>>,
) -> CmdResult {
    let batch = LogBatch::decode(encoded)
        .map_err(|e| CmdError::err(format!("KELVIN.TX: not a transaction: {e}")))?;
    let Ok(
        [LogCommand::Transaction {
            watch_since,
            watch,
            items,
        }],
    ) = <[LogCommand; 1]>::try_from(batch.commands)
    else {
        return Err(CmdError::err(
            "KELVIN.TX PREPARE takes one encoded transaction",
        ));
    };
    let mut commands = Vec::with_capacity(items.len());
    let mut keys: Vec<(u8, Bytes)> = Vec::new();
    let mut lock = |db: u8, key: &Bytes| {
        if !keys.iter().any(|(d, k)| *d == db && k == key) {
            keys.push((db, key.clone()));
        }
    };
    for item in items {
        let TxItem::Data { db, argv } = item else {
            return Err(CmdError::err(
                "KELVIN.TX PREPARE: connection commands stay with the coordinator",
            ));
        };
        let spec = argv
            .first()
            .and_then(|n| crate::cmd::lookup(n))
            .filter(|s| s.arity_ok(argv.len()) && (db as usize) < crate::store::DATABASES)
            .ok_or_else(|| CmdError::err("KELVIN.TX PREPARE: a command that cannot run"))?;
        // (A replicated transaction's commands also name other groups' keys: only its
        // own keys are checked, below.)
        if own.is_none() {
            if let Some(refusal) =
                crate::migrate::apply::refusal(ex.store, db as usize, spec, &argv)
            {
                return Err(moving(refusal));
            }
            for p in spec.keys_in(&argv) {
                lock(db, &argv[p]);
            }
        }
        commands.push((db, argv));
    }
    if let Some(own) = &own {
        // Each own key is read here now (its value goes to every participant): it must
        // be settled here, as for a read.
        let get = crate::cmd::lookup(b"get").ok_or_else(|| CmdError::err("no GET"))?;
        for (db, key) in own {
            let argv = [Bytes::from_static(b"GET"), key.clone()];
            if let Some(refusal) =
                crate::migrate::apply::refusal(ex.store, *db as usize, get, &argv)
            {
                return Err(moving(refusal));
            }
            lock(*db, key);
        }
    }
    // The watched keys (a group may hold nothing else of the transaction: it runs no
    // command, and FINISH COMMIT answers an empty array). One whose slot this group has
    // sealed for a migration is written at the target now, whose log this index says
    // nothing of: as written (EXEC answers nil, as for a key watched in a group its slot
    // has left).
    for (_, k) in &watch {
        match ex.store.migrations.serve(kelvin_protocol::key_slot(k)) {
            Serve::Moved { .. } => return Err(CmdError::raw(PREPARE_WATCHED)),
            Serve::NotYet { .. } => return Err(moving(crate::migrate::apply::NOT_YET)),
            Serve::Normal | Serve::Importing { .. } => {}
        }
    }
    let slot = |k: &[u8]| kelvin_protocol::key_slot(k) as usize;
    if watch
        .iter()
        .any(|(db, k)| ex.store.written_since(*db as usize, slot(k), watch_since))
    {
        return Err(CmdError::raw(PREPARE_WATCHED));
    }
    for (db, k) in &watch {
        lock(*db, k);
    }
    let prepared = Prepared {
        record,
        prepared_ms: ex.now_ms,
        keys,
        items: commands,
        replicated: own.is_some(),
        own: own.clone().unwrap_or_default(),
    };
    ex.store.tx.prepare(tx, prepared).map_err(CmdError::raw)?;
    match own {
        None => ex.out.simple("PREPARED"),
        Some(own) => {
            ex.out.array(own.len());
            for (db, key) in &own {
                crate::cmd::migrate::entry_reply(ex, *db as usize, key, false);
            }
        }
    }
    Ok(())
}

fn finish(ex: &mut Exec<'_>, tx: TxId, commit: bool, view: Option<&Bytes>) -> CmdResult {
    // A replicated transaction commits over its view: checked before anything changes.
    let view = match ex.store.tx.prepared(tx) {
        Some(p) if p.replicated && commit => {
            let view = view.ok_or_else(|| {
                CmdError::err(format!("transaction {tx} needs its view to commit here"))
            })?;
            Some(crate::txn::state::decode_view(view).map_err(CmdError::err)?)
        }
        _ => None,
    };
    let Some(p) = ex.store.tx.finish(tx, commit) else {
        return match (ex.store.tx.outcome(tx), commit) {
            (Some(done), _) => Err(CmdError::err(format!(
                "transaction {tx} already {} here",
                if done { "committed" } else { "aborted" }
            ))),
            (None, false) => {
                // Never prepared here (its PREPARE was lost or refused): remembered as
                // aborted, so that a PREPARE arriving late locks nothing.
                ex.store.tx.mark_aborted(tx);
                ex.out.simple("ABORTED");
                Ok(())
            }
            (None, true) => Err(CmdError::err(format!(
                "transaction {tx} is not prepared here"
            ))),
        };
    };
    ex.store.tx_released.send_modify(|v| *v = v.wrapping_add(1));
    match (commit, view) {
        (true, Some(view)) => crate::txn::replicated::run(ex, tx, &p, &view),
        (true, None) => crate::machine::run_items(ex.store, ex.now_ms, &p.items, ex.out, ex.events),
        (false, _) => ex.out.simple("ABORTED"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use kelvin_protocol::log::MigrateOp;

    fn words(w: &[&str]) -> Vec<Bytes> {
        w.iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn apply(store: &mut Store, index: u64, command: LogCommand) -> Vec<u8> {
        crate::machine::apply(store, index, index, vec![command]).remove(0)
    }

    fn single(argv: Vec<Bytes>) -> LogCommand {
        LogCommand::Single { db: 0, argv }
    }

    /// PREPARE of a group that holds only watched keys of the transaction.
    fn prepare_watching(seq: u64, key: &str, since: u64) -> LogCommand {
        let mut encoded = Vec::new();
        LogBatch {
            now_ms: 0,
            commands: vec![LogCommand::Transaction {
                watch_since: since,
                watch: vec![(0, Bytes::copy_from_slice(key.as_bytes()))],
                items: Vec::new(),
            }],
        }
        .encode(&mut encoded);
        let mut argv = words(&["KELVIN.TX", "PREPARE", "7", &seq.to_string(), "0"]);
        argv.push(Bytes::from(encoded));
        single(argv)
    }

    fn finish(seq: u64, decision: &str) -> LogCommand {
        single(words(&[
            "KELVIN.TX",
            "FINISH",
            "7",
            &seq.to_string(),
            decision,
        ]))
    }

    #[test]
    fn a_group_holding_only_watched_keys_locks_checks_and_commits_nothing() {
        let mut s = Store::default();
        apply(&mut s, 1, single(words(&["SET", "w", "1"])));
        // Untouched since index 1: prepared, and the key is locked until FINISH.
        assert_eq!(
            apply(&mut s, 2, prepare_watching(1, "w", 1)),
            b"+PREPARED\r\n"
        );
        let locked = apply(&mut s, 3, single(words(&["SET", "w", "2"])));
        assert!(locked.starts_with(b"-TRYAGAIN Key locked"), "{locked:?}");
        // Its commit runs nothing: an empty array, the key as it was.
        assert_eq!(apply(&mut s, 4, finish(1, "COMMIT")), b"*0\r\n");
        assert_eq!(
            apply(&mut s, 5, single(words(&["GET", "w"]))),
            b"$1\r\n1\r\n"
        );
        // Written after the watch (index 6 > 5): refused for good, nothing locked.
        apply(&mut s, 6, single(words(&["SET", "w", "3"])));
        let refused = apply(&mut s, 7, prepare_watching(2, "w", 5));
        assert_eq!(refused, format!("-{PREPARE_WATCHED}\r\n").as_bytes());
        assert_eq!(s.tx.holder(0, b"w"), None);
        assert_eq!(apply(&mut s, 8, finish(2, "ABORT")), b"+ABORTED\r\n");
    }

    #[test]
    fn a_watched_key_whose_slot_this_group_sealed_counts_as_written() {
        let mut s = Store::default();
        apply(&mut s, 1, single(words(&["SET", "w", "1"])));
        let seal = MigrateOp::Seal {
            migration: 4,
            target: 2,
            slots: vec![kelvin_protocol::key_slot(b"w")],
        };
        assert_eq!(apply(&mut s, 2, LogCommand::Migrate(seal)), b"+OK\r\n");
        // Nothing written here since index 2, but the key's writes go to group 2 now.
        let refused = apply(&mut s, 3, prepare_watching(1, "w", 2));
        assert_eq!(refused, format!("-{PREPARE_WATCHED}\r\n").as_bytes());
    }
}
