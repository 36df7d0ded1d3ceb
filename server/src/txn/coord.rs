//! The coordinator of a transaction across groups, on the node the client sent EXEC to:
//! PREPARE in every participant group (at once), DECIDE COMMIT at the record group (the
//! lowest-numbered participant), FINISH COMMIT in every participant (at once), then
//! FORGET at the record group. Three log round trips more than a transaction in one
//! group; a refusal (a key locked by another transaction, a slot moving) aborts and
//! tries again with a new id until the deadline; a watched key written since the WATCH
//! aborts for good (EXEC answers nil).
//!
//! Safety does not depend on this task finishing: a participant left prepared asks the
//! record group for the decision itself ([`super::resolve`]), and the first decision
//! logged there wins.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use kelvin_protocol::log::{LogBatch, LogCommand, TxItem};

use super::TxId;

/// How the coordinator reaches groups: Kelvin's own connection to itself
/// ([`crate::conn::Internal`]), routed and relayed to each group's leader.
pub trait Groups: Send + Sized + 'static {
    /// Another connection like this one (for the participants' steps at once).
    fn fork(&self) -> Self;
    /// Runs `argv` on `group`'s leader (`KELVIN.ON <group> ...`); its reply.
    fn on_group(&mut self, group: u64, argv: Vec<Bytes>) -> impl Future<Output = Vec<u8>> + Send;
    /// Runs `argv` as a client's request in database `db`, routed by its keys (a read of
    /// a key still at a migration's source pulls it first); its reply.
    fn call(&mut self, db: u8, argv: Vec<Bytes>) -> impl Future<Output = Vec<u8>> + Send;
}

/// One participant's share of a transaction.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// Its commands, in the client's order: (database, argv).
    pub items: Vec<(u8, Vec<Bytes>)>,
    /// Its watched keys and the index of its log they were watched at.
    pub watch: Vec<(u8, Bytes)>,
    pub watch_since: u64,
    /// A replicated transaction (a command's keys span groups): `items` is every command
    /// of it and these are the keys this group holds ([`super::replicated`]).
    pub own: Option<Vec<(u8, Bytes)>>,
}

/// How a transaction ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// Committed: each participant's FINISH reply (an array of its commands' replies).
    Committed(BTreeMap<u64, Vec<u8>>),
    /// A watched key was written: nothing ran (EXEC answers nil).
    Watched,
    /// Nothing ran; this error answers EXEC.
    Refused(String),
    /// The decision could not be learned in time: it may or may not have committed.
    Unknown,
}

/// Runs the transaction made of `parts` (at least one), with a new id from `next_id`
/// for each try, until `deadline`.
pub async fn run<G: Groups>(
    groups: &mut G,
    mut next_id: impl FnMut() -> TxId,
    parts: BTreeMap<u64, Part>,
    deadline: tokio::time::Instant,
) -> Ended {
    let Some(&record) = parts.keys().next() else {
        return Ended::Committed(BTreeMap::new());
    };
    let mut attempt = 0u32;
    loop {
        let tx = next_id();
        let prepared = each(groups, &parts, |_, part| prepare(tx, record, part)).await;
        let mut retry = None;
        let mut view = Vec::new();
        for (g, reply) in &prepared {
            if reply.starts_with(b"+PREPARED") {
                continue;
            }
            // A replicated transaction's PREPARE answers its own keys' values.
            if let Some(own) = parts.get(g).and_then(|p| p.own.as_ref()) {
                if let Some(values) =
                    crate::migrate::replies::pull_reply(reply).filter(|v| v.len() == own.len())
                {
                    for ((db, key), value) in own.iter().zip(values) {
                        view.push((*db, key.clone(), value));
                    }
                    continue;
                }
            }
            let text = text(reply);
            if reply.starts_with(b"-TXWATCH") {
                abort(groups, tx, &parts).await;
                return Ended::Watched;
            }
            if !retryable(reply) {
                abort(groups, tx, &parts).await;
                tracing::debug!(%tx, group = g, reply = %text, "transaction refused");
                return Ended::Refused(text);
            }
            if reply.starts_with(UNSETTLED) {
                // Keys a migration has not brought to this group yet: read them once
                // (which pulls them from the source) rather than wait for the drain.
                if let Some(part) = parts.get(g) {
                    pull(groups, part).await;
                }
            }
            retry = Some(text);
        }
        let replicated = parts.values().any(|p| p.own.is_some());
        let view = replicated.then(|| Bytes::from(super::state::encode_view(&view)));
        let decided = match retry {
            Some(_) => None,
            None => {
                crate::failpoint::boundary("tx-after-prepare").await;
                decide(groups, tx, record, view.clone(), deadline).await
            }
        };
        match decided {
            Some(true) => {
                crate::failpoint::boundary("tx-after-decide").await;
                let finished = finish(groups, tx, &parts, view, deadline).await;
                // Every participant finished: the record group may forget the decision
                // (one that did not answer may still need it, and its view).
                if finished.values().all(|r| r.starts_with(b"*")) {
                    let forget = tx_args(b"FORGET", tx);
                    let mut g = groups.fork();
                    tokio::spawn(async move { g.on_group(record, forget).await });
                }
                return Ended::Committed(finished);
            }
            // The decision is not known: the participants learn it from the record.
            None if retry.is_none() => return Ended::Unknown,
            // Refused somewhere, or a resolver decided ABORT first: undo, and again.
            _ => abort(groups, tx, &parts).await,
        }
        let why = retry.unwrap_or_else(|| "the transaction was aborted".into());
        attempt += 1;
        let pause = tokio::time::Duration::from_millis(backoff_ms(attempt, tx.seq));
        if tokio::time::Instant::now() + pause >= deadline {
            return Ended::Refused(why);
        }
        tokio::time::sleep(pause).await;
    }
}

/// The refusal of a PREPARE on a key still to be moved to its group
/// ([`crate::migrate::apply::UNSETTLED`]).
const UNSETTLED: &[u8] = b"-TXMOVING TRYAGAIN the key is still being moved";

/// Sends the keys of `part` a `KELVIN.SETTLE` (a write that changes nothing), so that a
/// migration's target pulls and writes the ones it does not hold yet.
async fn pull<G: Groups>(groups: &mut G, part: &Part) {
    let mut keys: Vec<(u8, Bytes)> = part.own.clone().unwrap_or_default();
    if part.own.is_none() {
        for (db, argv) in &part.items {
            if let Some(spec) = argv.first().and_then(|n| crate::cmd::lookup(n)) {
                keys.extend(spec.keys_in(argv).iter().map(|&p| (*db, argv[p].clone())));
            }
        }
    }
    let mut dbs: Vec<u8> = keys.iter().map(|(db, _)| *db).collect();
    dbs.sort_unstable();
    dbs.dedup();
    for db in dbs {
        let mut argv = vec![Bytes::from_static(b"KELVIN.SETTLE")];
        argv.extend(
            keys.iter()
                .filter(|(d, _)| *d == db)
                .map(|(_, k)| k.clone()),
        );
        groups.call(db, argv).await;
    }
}

/// A pause before try `attempt`: up to 2^attempt ms (at most 64), spread by `seed`, so
/// that two transactions that keep refusing each other stop meeting.
fn backoff_ms(attempt: u32, seed: u64) -> u64 {
    let cap = 1u64 << attempt.min(6);
    1 + seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % cap
}

/// Whether a refused PREPARE may succeed if tried again: a lock, a moving slot, a
/// leader being elected, or a relay that lost the request.
fn retryable(reply: &[u8]) -> bool {
    [
        &b"-TXLOCKED"[..],
        b"-TXMOVING",
        b"-TRYAGAIN",
        b"-CLUSTERDOWN",
        b"-LOADING",
    ]
    .iter()
    .any(|p| reply.starts_with(p))
        || memchr::memmem::find(reply, b"outcome is unknown").is_some()
        || memchr::memmem::find(reply, b"did not answer").is_some()
}

fn text(reply: &[u8]) -> String {
    let t = String::from_utf8_lossy(reply);
    t.trim_start_matches(['-', '+'])
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

fn tx_args(op: &'static [u8], tx: TxId) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"KELVIN.TX"),
        Bytes::from_static(op),
        Bytes::from(tx.origin.to_string()),
        Bytes::from(tx.seq.to_string()),
    ]
}

fn prepare(tx: TxId, record: u64, part: &Part) -> Vec<Bytes> {
    let mut encoded = Vec::new();
    LogBatch {
        now_ms: 0,
        commands: vec![LogCommand::Transaction {
            watch_since: part.watch_since,
            watch: part.watch.clone(),
            items: part
                .items
                .iter()
                .map(|(db, argv)| TxItem::Data {
                    db: *db,
                    argv: argv.clone(),
                })
                .collect(),
        }],
    }
    .encode(&mut encoded);
    let mut argv = tx_args(b"PREPARE", tx);
    argv.push(Bytes::from(record.to_string()));
    argv.push(Bytes::from(encoded));
    if let Some(own) = &part.own {
        argv.push(Bytes::from_static(b"OWN"));
        for (db, key) in own {
            argv.push(Bytes::from(db.to_string()));
            argv.push(key.clone());
        }
    }
    argv
}

/// The view a DECIDE answered with its COMMIT (`[+COMMIT, view]`), if it did.
pub fn commit_view(reply: &[u8]) -> Option<Bytes> {
    let rest = reply.strip_prefix(b"*2\r\n+COMMIT\r\n$")?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let body = rest.get(end + 2..end + 2 + len)?;
    Some(Bytes::copy_from_slice(body))
}

/// Whether a DECIDE answered COMMIT (with a view or without).
pub fn is_commit(reply: &[u8]) -> bool {
    reply.starts_with(b"+COMMIT") || reply.starts_with(b"*2\r\n+COMMIT\r\n")
}

/// Runs one request per participant at once; their replies by group.
async fn each<G: Groups>(
    groups: &G,
    parts: &BTreeMap<u64, Part>,
    request: impl Fn(u64, &Part) -> Vec<Bytes>,
) -> BTreeMap<u64, Vec<u8>> {
    let handles: Vec<_> = parts
        .iter()
        .map(|(&g, part)| {
            let argv = request(g, part);
            let mut conn = groups.fork();
            (g, tokio::spawn(async move { conn.on_group(g, argv).await }))
        })
        .collect();
    let mut replies = BTreeMap::new();
    for (g, h) in handles {
        let reply = h
            .await
            .unwrap_or_else(|_| b"-ERR the participant's step failed\r\n".to_vec());
        replies.insert(g, reply);
    }
    replies
}

/// FINISH ABORT everywhere (a participant that never prepared remembers it as aborted;
/// one that cannot be reached now is resolved by its own leader later).
async fn abort<G: Groups>(groups: &G, tx: TxId, parts: &BTreeMap<u64, Part>) {
    let mut argv = tx_args(b"FINISH", tx);
    argv.push(Bytes::from_static(b"ABORT"));
    each(groups, parts, |_, _| argv.clone()).await;
}

/// DECIDE COMMIT at the record group, asked again while the answer is unknown; the
/// decision recorded (a resolver's ABORT may have come first), `None` if unknown.
async fn decide<G: Groups>(
    groups: &mut G,
    tx: TxId,
    record: u64,
    view: Option<Bytes>,
    deadline: tokio::time::Instant,
) -> Option<bool> {
    let mut argv = tx_args(b"DECIDE", tx);
    argv.push(Bytes::from_static(b"COMMIT"));
    argv.extend(view);
    loop {
        let reply = groups.on_group(record, argv.clone()).await;
        if is_commit(&reply) {
            return Some(true);
        }
        if reply.starts_with(b"+ABORT") {
            return Some(false);
        }
        tracing::debug!(%tx, record, reply = %text(&reply), "decision not recorded yet");
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;
    }
}

/// FINISH COMMIT everywhere, each asked again while its answer is unknown (until the
/// deadline); each participant's reply, an array of its commands' replies (or the
/// error that took its place).
async fn finish<G: Groups>(
    groups: &G,
    tx: TxId,
    parts: &BTreeMap<u64, Part>,
    view: Option<Bytes>,
    deadline: tokio::time::Instant,
) -> BTreeMap<u64, Vec<u8>> {
    let mut argv = tx_args(b"FINISH", tx);
    argv.push(Bytes::from_static(b"COMMIT"));
    argv.extend(view);
    let mut replies = each(groups, parts, |_, _| argv.clone()).await;
    for (&g, reply) in replies.iter_mut() {
        let mut conn = groups.fork();
        while !reply.starts_with(b"*") && tokio::time::Instant::now() < deadline {
            if memchr::memmem::find(reply, b"already committed").is_some() {
                // Its resolver finished it first: committed, its replies are gone.
                break;
            }
            tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;
            *reply = conn.on_group(g, argv.clone()).await;
        }
    }
    replies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepare_names_the_keys_it_would_lock() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let tx = TxId { origin: 1, seq: 2 };
        let mut part = Part {
            watch: vec![(0, b("w"))],
            watch_since: 7,
            items: vec![
                (0, vec![b("SET"), b("a"), b("1")]),
                (0, vec![b("MSET"), b("b"), b("2"), b("c"), b("3")]),
            ],
            ..Part::default()
        };
        let keys = crate::cmd::txn::prepare_keys(&prepare(tx, 0, &part));
        assert_eq!(keys, Some(vec![b("w"), b("a"), b("b"), b("c")]));
        // Replicated: its own keys only (the commands name other groups' keys too).
        part.own = Some(vec![(0, b("a")), (3, b("z"))]);
        let keys = crate::cmd::txn::prepare_keys(&prepare(tx, 0, &part));
        assert_eq!(keys, Some(vec![b("w"), b("a"), b("z")]));
        // Not a PREPARE, or not one that decodes: nothing to check.
        assert_eq!(crate::cmd::txn::prepare_keys(&tx_args(b"FINISH", tx)), None);
        let mut bad = prepare(tx, 0, &part);
        bad[5] = b("not a batch");
        assert_eq!(crate::cmd::txn::prepare_keys(&bad), None);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for seed in 0..100 {
            assert!((1..=2).contains(&backoff_ms(1, seed)));
            assert!((1..=64).contains(&backoff_ms(30, seed)));
        }
    }

    #[test]
    fn refusals_that_may_pass_later_are_retried() {
        assert!(retryable(b"-TXLOCKED a key is locked\r\n"));
        assert!(retryable(b"-TRYAGAIN the key's slot moved\r\n"));
        let unsettled = format!("-TXMOVING {}\r\n", crate::migrate::apply::UNSETTLED);
        assert!(unsettled.as_bytes().starts_with(UNSETTLED));
        assert!(retryable(
            b"-ERR the leader was lost: the command's outcome is unknown\r\n"
        ));
        assert!(!retryable(b"-TXWATCH a watched key was written\r\n"));
        assert!(!retryable(
            b"-ERR KELVIN.TX PREPARE: a command that cannot run\r\n"
        ));
    }
}
