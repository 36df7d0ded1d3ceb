//! The state machine: applies committed log entries to the keyspace, identically on
//! every replica.
//!
//! How it fits: the group task hands every committed [`LogBatch`] here, in log order,
//! under the store lock. The result depends only on the store, the entry and its index:
//! time is the batch's `now_ms` (never earlier than the previous entry's, so a leader
//! with a slow clock cannot move time backwards), the rng is reseeded from the index,
//! and a read inside a transaction that finds an expired key deletes it right there, on
//! every replica alike. Replies are written only where someone waits for them (the
//! proposing node); elsewhere they go to a scratch buffer that is thrown away.

use bytes::Bytes;
use kelvin_protocol::log::{LogBatch, LogCommand, TxItem};
use kelvin_protocol::{key_slot, ReplyWriter};

use crate::cmd::{self, BlockOn, Exec, Handler};
use crate::notify::KeyEvent;
use crate::store::prefetch::PREFETCH_KEYS;
use crate::store::{Store, DATABASES};

/// Where the replies of an entry's commands go: `writers[owner[i]]` takes the reply of
/// command `i` (one writer per waiting client, its commands' replies in order).
pub struct Replies<'a> {
    pub writers: &'a mut [ReplyWriter],
    pub owner: &'a [usize],
}

/// Applies `batch`, committed at log `index`. `replies` is `None` where nobody waits
/// (the replies are written to a scratch buffer and dropped). Returns, per command,
/// whether a blocking command found nothing and wants to wait (only the last command of
/// a proposal can block; the proposer guarantees that).
pub fn apply_batch(
    store: &mut Store,
    index: u64,
    batch: &LogBatch,
    events: &mut Vec<KeyEvent>,
    mut replies: Option<Replies<'_>>,
) -> Vec<Option<BlockOn>> {
    let now_ms = batch.now_ms.max(store.last_apply_ms);
    store.last_apply_ms = now_ms;
    store.apply_index = index;
    let mut scratch = ReplyWriter::default();
    let mut blocks = Vec::with_capacity(batch.commands.len());
    for (pos, command) in batch.commands.iter().enumerate() {
        if pos % PREFETCH_KEYS == 0 {
            // The next commands' keys load together, not one miss after another
            // (`store::prefetch`): an entry holds the writes of many connections.
            let ahead = batch.commands[pos..].iter().take(PREFETCH_KEYS);
            store.prefetch(ahead.filter_map(|c| match c {
                LogCommand::Single { db, argv } => Some((*db as usize, &argv.get(1)?[..])),
                _ => None,
            }));
        }
        store
            .rng
            .reseed(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ pos as u64);
        let out = match replies
            .as_mut()
            .and_then(|r| r.owner.get(pos).copied().map(|w| (w, &mut *r.writers)))
        {
            Some((w, writers)) if w < writers.len() => &mut writers[w],
            _ => {
                scratch.buf.clear();
                &mut scratch
            }
        };
        blocks.push(apply_command(store, now_ms, command, out, events));
    }
    blocks
}

/// `KELVIN.TOPOLOGY <expected epoch> <cluster.conf text>`: see
/// [`crate::cluster::apply_topology`].
pub const META_TOPOLOGY: &[u8] = b"KELVIN.TOPOLOGY";

fn apply_command(
    store: &mut Store,
    now_ms: u64,
    command: &LogCommand,
    out: &mut ReplyWriter,
    events: &mut Vec<KeyEvent>,
) -> Option<BlockOn> {
    match command {
        LogCommand::Single { argv, .. } if argv.first().is_some_and(|a| a == META_TOPOLOGY) => {
            // The meta group's one command. Clients cannot send it (it is not in the
            // command table); only the node proposes it, and only to the meta group.
            match crate::cluster::apply_topology(store, argv) {
                Ok(()) => out.ok(),
                Err(e) => out.error(&format!("ERR {e}")),
            }
            None
        }
        LogCommand::Single { db, argv } => run(store, *db, now_ms, argv, out, events, true),
        LogCommand::Migrate(op) => {
            crate::migrate::apply::apply(store, op, now_ms, out);
            None
        }
        LogCommand::Transaction {
            watch_since,
            watch,
            items,
        } => {
            let touched = watch.iter().any(|(db, key)| {
                store.written_since(*db as usize, key_slot(key) as usize, *watch_since)
            });
            if touched {
                out.null_array();
                return None;
            }
            // All or nothing: a transaction touching a slot this group may not apply to
            // now is refused whole.
            let refused = items.iter().find_map(|item| match item {
                TxItem::Data { db, argv } => {
                    argv.first().and_then(|n| cmd::lookup(n)).and_then(|spec| {
                        crate::migrate::apply::refusal(store, *db as usize, spec, argv)
                    })
                }
                TxItem::Literal(_) => None,
            });
            if let Some(err) = refused {
                out.error(err);
                return None;
            }
            // A key a transaction across groups holds: the whole transaction waits.
            let locked = !store.tx.is_idle()
                && (watch
                    .iter()
                    .any(|(db, key)| store.tx.holder(*db, key).is_some())
                    || items.iter().any(|item| match item {
                        TxItem::Data { db, argv } => argv
                            .first()
                            .and_then(|n| cmd::lookup(n))
                            .is_some_and(|spec| {
                                crate::txn::waits_for_lock(store, *db as usize, spec, argv)
                            }),
                        TxItem::Literal(_) => false,
                    }));
            if locked {
                out.error(crate::txn::LOCKED);
                return None;
            }
            out.array(items.len());
            for item in items {
                match item {
                    TxItem::Data { db, argv } => {
                        run(store, *db, now_ms, argv, out, events, false);
                    }
                    TxItem::Literal(reply) => out.buf.extend_from_slice(reply),
                }
            }
            None
        }
        LogCommand::EvictKeys { db, keys } => {
            evict_keys(store, *db as usize, keys, now_ms, out, events);
            None
        }
        LogCommand::ExpireKeys { db, keys } => {
            if (*db as usize) < DATABASES {
                let mut lazy = Vec::new();
                let mut ex = exec(store, *db as usize, now_ms, out, events, &mut lazy, false);
                for key in keys {
                    // A key a transaction holds expires once it finished (a later sweep).
                    if ex.store.tx.holder(*db, key).is_none() {
                        ex.expire_if_needed(key);
                    }
                }
            }
            None
        }
    }
}

/// Deletes the keys the leader chose to evict (those still present), each with its
/// `evicted` notification, as Redis's `performEvictions`.
fn evict_keys(
    store: &mut Store,
    db: usize,
    keys: &[Bytes],
    now_ms: u64,
    out: &mut ReplyWriter,
    events: &mut Vec<KeyEvent>,
) {
    if db >= DATABASES {
        return;
    }
    let mut lazy = Vec::new();
    let mut ex = exec(store, db, now_ms, out, events, &mut lazy, false);
    for key in keys {
        // A key a transaction across groups holds stays until it finishes.
        if ex.store.tx.holder(db as u8, key).is_some() {
            continue;
        }
        if ex.ks().remove(key).is_some() {
            ex.store.evicted_keys += 1;
            ex.notify(crate::notify::EVICTED, "evicted", key);
        }
    }
}

fn exec<'a>(
    store: &'a mut Store,
    db: usize,
    now_ms: u64,
    out: &'a mut ReplyWriter,
    events: &'a mut Vec<KeyEvent>,
    lazy_expired: &'a mut Vec<(usize, crate::store::Blob)>,
    may_block: bool,
) -> Exec<'a> {
    Exec {
        store,
        db,
        now_ms,
        out,
        events,
        lazy_expired,
        may_block,
        local_read: false,
        block: None,
    }
}

/// Runs the commands of a transaction across groups that committed here
/// ([`crate::txn`]), their replies as one array (as EXEC's), after its locks are gone.
pub fn run_items(
    store: &mut Store,
    now_ms: u64,
    items: &[(u8, Vec<Bytes>)],
    out: &mut ReplyWriter,
    events: &mut Vec<KeyEvent>,
) {
    out.array(items.len());
    for (db, argv) in items {
        run(store, *db, now_ms, argv, out, events, false);
    }
}

/// Runs one data command. An error reply takes back whatever the command wrote.
fn run(
    store: &mut Store,
    db: u8,
    now_ms: u64,
    argv: &[Bytes],
    out: &mut ReplyWriter,
    events: &mut Vec<KeyEvent>,
    may_block: bool,
) -> Option<BlockOn> {
    let db = db as usize;
    let (spec, handler) = match argv.first().and_then(|name| cmd::lookup(name)) {
        Some(spec) if db < DATABASES && spec.arity_ok(argv.len()) => match spec.handler {
            Handler::Data(handler) => (spec, handler),
            Handler::Conn(_) => {
                out.error("ERR command cannot run from the log");
                return None;
            }
        },
        // Proposers check commands before proposing; an entry from a newer version that
        // this one does not know is answered, not applied, the same on every replica.
        _ => {
            out.error("ERR unknown command in log entry");
            return None;
        }
    };
    if let Some(err) = crate::migrate::apply::refusal(store, db, spec, argv) {
        out.error(err);
        return None;
    }
    if crate::txn::waits_for_lock(store, db, spec, argv) {
        out.error(crate::txn::LOCKED);
        return None;
    }
    let mark = out.buf.len();
    let mut lazy = Vec::new();
    let bracket = crate::store::memory::Bracket::open(store, db, spec, argv);
    let mut ex = exec(store, db, now_ms, out, events, &mut lazy, may_block);
    let started = std::time::Instant::now();
    let result = handler(&mut ex, argv);
    let block = ex.block;
    let usec = started.elapsed().as_micros() as u64;
    if let Some(bracket) = bracket {
        bracket.close(ex.store);
    }
    match result {
        Err(err) => {
            crate::cmdstats::call(spec.name, usec, Some(&err.0));
            ex.out.buf.truncate(mark);
            ex.out.error(&err.0);
        }
        Ok(()) => {
            crate::cmdstats::call(spec.name, usec, None);
            crate::migrate::apply::settle_written(store, db, spec, argv);
        }
    }
    // Reads inside the log (transactions) delete what they found expired, right here,
    // the same on every replica.
    if !lazy.is_empty() {
        let mut scratch = ReplyWriter::default();
        let mut none = Vec::new();
        for (db, key) in std::mem::take(&mut lazy) {
            exec(store, db, now_ms, &mut scratch, events, &mut none, false).expire_if_needed(&key);
        }
    }
    block
}

/// Applies `cmds` as the entry at `index` of log time `now_ms`; each command's reply.
#[cfg(test)]
pub fn apply(store: &mut Store, index: u64, now_ms: u64, cmds: Vec<LogCommand>) -> Vec<Vec<u8>> {
    let batch = LogBatch {
        now_ms,
        commands: cmds,
    };
    let n = batch.commands.len();
    let mut writers: Vec<ReplyWriter> = (0..n).map(|_| ReplyWriter::default()).collect();
    let owner: Vec<usize> = (0..n).collect();
    let mut events = Vec::new();
    apply_batch(
        store,
        index,
        &batch,
        &mut events,
        Some(Replies {
            writers: &mut writers,
            owner: &owner,
        }),
    );
    writers.into_iter().map(|o| o.buf).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn single(words: &[&str]) -> LogCommand {
        LogCommand::Single {
            db: 0,
            argv: argv(words),
        }
    }

    #[test]
    fn replicas_applying_the_same_log_agree_including_randomness() {
        let log = [
            vec![single(&["SADD", "s", "a", "b", "c", "d", "e", "f"])],
            vec![single(&["SPOP", "s", "2"]), single(&["INCR", "n"])],
            vec![single(&["SET", "t", "v", "PX", "10"])],
        ];
        let mut a = Store::default();
        let mut b = Store::default();
        let mut replies = Vec::new();
        for (i, cmds) in log.iter().enumerate() {
            let ra = apply(&mut a, i as u64 + 1, 1000 + i as u64, cmds.clone());
            let rb = apply(&mut b, i as u64 + 1, 1000 + i as u64, cmds.clone());
            assert_eq!(ra, rb);
            replies.push(ra);
        }
        assert_eq!(replies[1][1], b":1\r\n");
        let members = |s: &mut Store| match s.db(0).raw_get(b"s").map(|e| e.value.clone()) {
            Some(crate::store::Value::Set(set)) => {
                let mut v: Vec<_> = set.iter().map(|m| m.to_vec()).collect();
                v.sort();
                v
            }
            _ => Vec::new(),
        };
        assert_eq!(members(&mut a), members(&mut b));
        assert_eq!(members(&mut a).len(), 4);
    }

    #[test]
    fn time_never_goes_backwards_across_entries() {
        let mut s = Store::default();
        apply(
            &mut s,
            1,
            5000,
            vec![single(&["SET", "k", "v", "PX", "100"])],
        );
        // A leader with a clock 10 s behind: the key is still expired at 5100.
        apply(&mut s, 2, 0, vec![single(&["SET", "other", "x"])]);
        let r = apply(&mut s, 3, 5100, vec![single(&["GET", "k"])]);
        assert_eq!(r[0], b"$-1\r\n");
    }

    #[test]
    fn a_watched_slot_written_after_watch_aborts_the_transaction() {
        let mut s = Store::default();
        apply(&mut s, 1, 1, vec![single(&["SET", "w", "1"])]);
        let tx = |since| LogCommand::Transaction {
            watch_since: since,
            watch: vec![(0, Bytes::from_static(b"w"))],
            items: vec![
                TxItem::Data {
                    db: 0,
                    argv: argv(&["INCR", "w"]),
                },
                TxItem::Literal(Bytes::from_static(b"+PONG\r\n")),
            ],
        };
        // Watched at index 1, nothing written since: runs.
        let r = apply(&mut s, 2, 2, vec![tx(1)]);
        assert_eq!(r[0], b"*2\r\n:2\r\n+PONG\r\n");
        // Watched at index 1, but index 2 wrote `w`: aborts, nothing applied.
        let r = apply(&mut s, 3, 3, vec![tx(1)]);
        assert_eq!(r[0], b"*-1\r\n");
        let r = apply(&mut s, 4, 4, vec![single(&["GET", "w"])]);
        assert_eq!(r[0], b"$1\r\n2\r\n");
    }

    #[test]
    fn evict_keys_deletes_what_is_there_and_counts_it() {
        let mut s = Store::default();
        s.notify_flags = crate::notify::KEYEVENT | crate::notify::EVICTED;
        apply(&mut s, 1, 100, vec![single(&["SET", "a", "1"])]);
        let before = s.used_memory();
        let keys = vec![Bytes::from_static(b"a"), Bytes::from_static(b"gone")];
        let batch = LogBatch {
            now_ms: 200,
            commands: vec![LogCommand::EvictKeys { db: 0, keys }],
        };
        let mut events = Vec::new();
        apply_batch(&mut s, 2, &batch, &mut events, None);
        assert!(s.db(0).raw_get(b"a").is_none());
        assert_eq!(s.evicted_keys, 1);
        assert!(s.used_memory() < before);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "evicted");
    }

    #[test]
    fn expire_keys_deletes_only_what_is_still_expired() {
        let mut s = Store::default();
        apply(&mut s, 1, 100, vec![single(&["SET", "a", "1", "PX", "10"])]);
        apply(&mut s, 2, 100, vec![single(&["SET", "b", "1"])]);
        let keys = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        apply(&mut s, 3, 200, vec![LogCommand::ExpireKeys { db: 0, keys }]);
        assert!(s.db(0).raw_get(b"a").is_none());
        assert!(s.db(0).raw_get(b"b").is_some());
        assert_eq!(s.expired_keys, 1);
    }
}
