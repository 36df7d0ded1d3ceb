//! Fault-in: a request at the target of a live migration, for a key not moved yet, is
//! held while the key is pulled from the source, written through the target's log, then
//! served (DESIGN.md "Resharding, step by step").
//!
//! How it fits: [`super::batch`] asks [`crate::migrate::apply::need`] before it runs a
//! data command on a group that has migrations; a key that must come first becomes a
//! [`Step::FaultIn`](super::Step::FaultIn), which [`super::drive`] hands to
//! [`fault_in`]. The pull (`KELVIN.MIGRATE-PULL`, pinned to the source group) and the
//! write (`KELVIN.MIGRATE KEYS`, pinned to the target group) are ordinary requests of
//! this connection: routed, relayed and waited for like any other. The write lands only
//! on keys nobody settled meanwhile, so racing fault-ins, pushes and client writes never
//! clobber one another.
//!
//! Also here: requests a migration refused at apply (proposed just before a seal, or
//! before their fault-in) run again, so a client never sees those refusals
//! ([`redo_refused`]).

use bytes::Bytes;
use kelvin_protocol::{ReplyWriter, RespVersion};

use super::drive::*;
use super::merge::*;
use super::route::*;
use super::*;
use crate::cmd::{self, flags};
use crate::migrate::apply::{NOT_YET, SEALED, UNSETTLED};
use crate::migrate::state::SlotRole;

/// The answer when the source could not give a key in time (unreachable, no leader):
/// the request may be sent again; it is never answered as if the key were absent.
pub const UNREACHABLE: &str =
    "TRYAGAIN the key is being moved to this group and its previous group did not answer in time; send the command again";

/// Keys one request needs from the source.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The importing (target) group.
    pub group: u64,
    pub migration: u64,
    pub source: u64,
    pub db: usize,
    pub keys: Vec<Bytes>,
}

/// How a fault-in ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Faulted {
    /// The keys are written here: the requests run again.
    Written,
    /// The one waiting request was a read, answered from the pulled values; the keys
    /// go through the target's log meanwhile ([`serve_pulled`]).
    Served,
}

/// Pulls `fault.keys` from the source and writes them through the target's log (absent
/// ones are settled as absent), or answers the one read that waited from what was
/// pulled and writes them in the background. `Err` is the reply for the requests that
/// waited.
pub(super) async fn fault_in(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    fault: &Fault,
    requests: &[Vec<Bytes>],
) -> Result<Faulted, String> {
    let began = std::time::Instant::now();
    // Keys the source surely never held (its filter says so) are not pulled: they
    // settle here as absent, and this is no fault-in (the old owner is not asked).
    let absent = fault
        .keys
        .iter()
        .all(|k| node.absent.surely_absent(fault.migration, fault.db, k));
    let mut pulled = Pulled::default();
    let result = match pull_and_write(node, client, out, fault, requests, absent, &mut pulled).await
    {
        // The migration finished meanwhile (the target first, then the source): the keys
        // are ordinary ones of the target now, and the requests run again as such.
        Err(_) if !importing(node, fault) => Ok(Faulted::Written),
        result => result,
    };
    match absent {
        true => node.migrations.settled_absent(fault.keys.len()),
        false => {
            let served = matches!(result, Ok(Faulted::Served));
            tracing::debug!(
                migration = fault.migration,
                keys = fault.keys.len(),
                found = pulled.found,
                first = %String::from_utf8_lossy(fault.keys.first().map_or(&b""[..], |k| &k[..])),
                us = began.elapsed().as_micros() as u64,
                pull_us = pulled.took.as_micros() as u64,
                "faulted in"
            );
            node.migrations
                .faultin(fault.keys.len(), began.elapsed(), pulled.took, served)
        }
    }
    result
}

/// Whether this node's replica of the target group still imports a key of `fault` in
/// its migration (the node led the group when it asked for the fault-in; the target's
/// FINISH is applied before the source's is sent).
fn importing(node: &Node, fault: &Fault) -> bool {
    let Some(group) = node.hosted(fault.group) else {
        return false;
    };
    let store = group.store.lock();
    fault.keys.iter().any(|k| {
        matches!(
            store.migrations.role(kelvin_protocol::key_slot(k)),
            Some(SlotRole::Importing { migration, .. }) if migration == fault.migration
        )
    })
}

/// What a fault-in's pull took and found (for its debug line: which keys fault in, and
/// whether the source held them).
#[derive(Default)]
struct Pulled {
    took: std::time::Duration,
    found: usize,
}

async fn pull_and_write(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    fault: &Fault,
    requests: &[Vec<Bytes>],
    absent: bool,
    pulled: &mut Pulled,
) -> Result<Faulted, String> {
    let values = match absent {
        true => vec![None; fault.keys.len()],
        false => {
            let asked = std::time::Instant::now();
            let values = pull(node, client, out.version, fault).await;
            pulled.took = asked.elapsed();
            values?
        }
    };
    pulled.found = values.iter().filter(|v| v.is_some()).count();
    let served = match requests {
        [argv] => serve_pulled(node, client, out, fault, argv, &values),
        _ => false,
    };
    // Batches under the log's entry bound; a value over it goes in parts.
    let keys = fault.keys.iter().zip(values).map(|(key, value)| {
        let (expire_at, payload) = value.unwrap_or((0, Bytes::new()));
        (key.clone(), expire_at, payload)
    });
    let batches = crate::migrate::moves::requests(fault.migration, fault.db, keys);
    if served {
        // The reader has its answer; the keys land as any fault-in's do, and until they
        // have, a request for them pulls them again (the source's copy does not change:
        // its slots are sealed).
        install_later(node, fault.migration, fault.group, batches);
        return Ok(Faulted::Served);
    }
    if let [batch] = &batches[..] {
        if let Some(ahead) = propose_ahead(node, client, out.version, fault, requests, batch) {
            client.settle_ahead = Some(ahead);
            return Ok(Faulted::Written);
        }
    }
    for batch in batches {
        let reply = internal(node, client, out.version, pin(fault.group, batch)).await;
        if !reply.starts_with(b":") {
            tracing::debug!(
                migration = fault.migration,
                reply = %String::from_utf8_lossy(&reply),
                "fault-in: the target did not take the keys"
            );
            return Err(UNREACHABLE.to_string());
        }
    }
    Ok(Faulted::Written)
}

/// For one write waiting on a fault-in, on the target's leader: proposes the pulled keys'
/// write (`batch`, one entry) and returns what lets the waiting write be proposed right
/// behind it, so the two share a log round instead of taking one each. The log keeps
/// their order; a write applied on keys that did not land is refused there and runs again
/// ([`redo_refused`]).
fn propose_ahead(
    node: &Node,
    client: &ClientState,
    version: RespVersion,
    fault: &Fault,
    requests: &[Vec<Bytes>],
    batch: &[Bytes],
) -> Option<Fault> {
    let [argv] = requests else {
        return None;
    };
    let spec = cmd::lookup(argv.first()?)?;
    if !matches!(spec.handler, cmd::Handler::Data(_))
        || !spec.through_log()
        || client.multi.is_some()
        || client.db != fault.db
    {
        return None;
    }
    let group = node.hosted(fault.group).filter(|g| g.status.is_leader())?;
    group.propose(crate::group::Proposal {
        commands: vec![LogCommand::Single {
            db: client.db as u8,
            argv: batch.to_vec(),
        }],
        version,
        reply: None,
    });
    Some(fault.clone())
}

/// The values of `fault.keys` at the source (`KELVIN.MIGRATE-PULL`, pinned to it).
async fn pull(
    node: &Arc<Node>,
    client: &mut ClientState,
    version: RespVersion,
    fault: &Fault,
) -> Result<Vec<Option<(u64, Bytes)>>, String> {
    let mut pull = vec![
        Bytes::from_static(b"KELVIN.MIGRATE-PULL"),
        Bytes::from(fault.migration.to_string()),
        Bytes::from(fault.db.to_string()),
    ];
    pull.extend(fault.keys.iter().cloned());
    let reply = internal(node, client, version, pin(fault.source, pull)).await;
    crate::migrate::replies::pull_reply(&reply)
        .filter(|v| v.len() == fault.keys.len())
        .ok_or_else(|| {
            tracing::debug!(
                migration = fault.migration,
                reply = %String::from_utf8_lossy(&reply),
                "fault-in: the source did not give the keys"
            );
            UNREACHABLE.to_string()
        })
}

/// Writes the batches of a fault-in through `group`'s log on a task of its own (a
/// function apart from [`pull_and_write`], whose future the task's would hold).
fn install_later(node: &Arc<Node>, migration: u64, group: u64, batches: Vec<Vec<Bytes>>) {
    let mut own = super::Internal::new(node);
    tokio::spawn(async move {
        for batch in batches {
            let reply = own.call_on_group(group, batch).await;
            if !reply.starts_with(b":") {
                tracing::debug!(
                    migration,
                    reply = %String::from_utf8_lossy(&reply),
                    "fault-in: the target did not take the keys of a read served"
                );
                return;
            }
        }
    });
}

/// Answers `argv`, a read whose keys are all among `fault.keys`, from the values just
/// pulled, if this node may answer it now: it leads the target group with a read lease
/// and none of the keys was settled here meanwhile. Then no write to them has been
/// acknowledged here (it would have settled them) and the source's copies, sealed, are
/// their values: the read is what a read of the written keys would answer, one log round
/// sooner. `false`: nothing was written to `out`, the keys are written first.
fn serve_pulled(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    fault: &Fault,
    argv: &[Bytes],
    values: &[Option<(u64, Bytes)>],
) -> bool {
    let Some(spec) = cmd::lookup(&argv[0]) else {
        return false;
    };
    let cmd::Handler::Data(handler) = spec.handler else {
        return false;
    };
    if !is_read(spec)
        || spec.flags & flags::BLOCKING != 0
        || client.multi.is_some()
        || client.db != fault.db
        || !spec.arity_ok(argv.len())
    {
        return false;
    }
    let keys = spec.keys_in(argv);
    if keys.is_empty() || !keys.iter().all(|&i| fault.keys.contains(&argv[i])) {
        return false;
    }
    let Some(group) = node.hosted(fault.group) else {
        return false;
    };
    if !group.status.can_read_locally() {
        return false;
    }
    // Restored before the store's lock is taken: requests for other keys do not wait
    // for this one's decoding.
    let mut restored = Vec::with_capacity(values.len());
    for (key, value) in fault.keys.iter().zip(values) {
        let Some((expire_at, payload)) = value else {
            continue;
        };
        let Ok(value) = crate::rdb::restore(payload) else {
            return false;
        };
        let mut entry = crate::store::Entry::new(value);
        entry.expire_at = *expire_at;
        restored.push((key, entry));
    }
    let at = {
        let store = group.store.lock();
        // Every key still to be pulled, for this migration: none was settled meanwhile.
        // The read takes effect here: a write settling them later is ordered after it.
        match crate::migrate::apply::need(&store, fault.db, spec, argv) {
            crate::migrate::apply::Need::Pull {
                migration, keys: k, ..
            } if migration == fault.migration && keys.iter().all(|&i| k.contains(&argv[i])) => {}
            _ => return false,
        }
        cmd::unix_ms().max(store.last_apply_ms)
    };
    // One that expires by now: the log decides it (the write settles it as absent).
    if restored
        .iter()
        .any(|(_, e)| e.expire_at != 0 && e.expire_at <= at)
    {
        return false;
    }
    let mut scratch = crate::store::scratch::take();
    let (hits, misses) = (scratch.keyspace_hits, scratch.keyspace_misses);
    for (key, entry) in restored {
        scratch.db(fault.db).insert(key, entry);
    }
    run_data(
        &mut scratch,
        client,
        out,
        (spec.name, handler),
        argv,
        at,
        false,
    );
    let (hits, misses) = (
        scratch.keyspace_hits.saturating_sub(hits),
        scratch.keyspace_misses.saturating_sub(misses),
    );
    crate::store::scratch::give_back(scratch, fault.keys.iter().map(|k| (fault.db, &k[..])));
    let mut store = group.store.lock();
    store.keyspace_hits += hits;
    store.keyspace_misses += misses;
    true
}

/// The apply index of `group`'s leader (`KELVIN.APPLIED`, pinned to the group).
pub(super) async fn leader_index(
    node: &Arc<Node>,
    client: &mut ClientState,
    version: RespVersion,
    group: u64,
) -> Option<u64> {
    let request = pin(group, vec![Bytes::from_static(b"KELVIN.APPLIED")]);
    let reply = internal(node, client, version, request).await;
    std::str::from_utf8(reply.strip_prefix(b":")?)
        .ok()?
        .trim_end()
        .parse()
        .ok()
}

/// Runs one of Kelvin's own requests on this connection, as the main port would (relayed
/// to the leader that must run it), and returns its reply.
pub(super) async fn internal(
    node: &Arc<Node>,
    client: &mut ClientState,
    version: RespVersion,
    request: Vec<Bytes>,
) -> Vec<u8> {
    let saved = (client.redirect, client.readonly);
    client.redirect = false;
    client.readonly = false;
    let mut sub = ReplyWriter::new(version);
    Box::pin(drive(node, client, &mut sub, vec![request])).await;
    (client.redirect, client.readonly) = saved;
    sub.buf.to_vec()
}

/// Whether a migration refusal (see [`crate::migrate::apply::refusal`]) is among the
/// replies.
pub(super) fn refused_by_migration(replies: &[u8], version: RespVersion) -> bool {
    memchr::memmem::find(replies, b"-TRYAGAIN ").is_some()
        && split_replies(replies, version)
            .iter()
            .any(|r| is_refusal(r))
}

fn is_refusal(reply: &[u8]) -> bool {
    reply.strip_prefix(b"-").is_some_and(|text| {
        [SEALED, NOT_YET, UNSETTLED, crate::txn::LOCKED]
            .iter()
            .any(|r| text.starts_with(r.as_bytes()))
    })
}

/// Writes the replies of a proposal to `out`, with the requests a migration refused at
/// apply run again (routed anew, pulled first if need be) and their replies in their
/// places. `retry` holds the proposal's requests, in order.
pub(super) async fn redo_refused(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    applied: &[u8],
    retry: &[Vec<Bytes>],
    deadline: tokio::time::Instant,
    seen: u64,
) {
    let replies = split_replies(applied, out.version);
    let blocking = retry.iter().any(|r| {
        let argv = if is_pinned(r) {
            r.get(2..).unwrap_or_default()
        } else {
            r
        };
        argv.first()
            .and_then(|n| cmd::lookup(n))
            .is_some_and(|s| s.flags & flags::BLOCKING != 0)
    });
    if replies.len() != retry.len() || blocking {
        out.buf.extend_from_slice(applied);
        return;
    }
    let refused: Vec<usize> = (0..replies.len())
        .filter(|&i| is_refusal(replies[i]))
        .collect();
    wait_leader_change(node, deadline, seen).await;
    let mut sub = ReplyWriter::new(out.version);
    let again: Vec<Vec<Bytes>> = refused.iter().map(|&i| retry[i].clone()).collect();
    Box::pin(drive(node, client, &mut sub, again)).await;
    let mut again = split_replies(&sub.buf, out.version).into_iter();
    for (i, reply) in replies.iter().enumerate() {
        let redone = match refused.contains(&i) {
            true => again.next(),
            false => None,
        };
        out.buf.extend_from_slice(redone.unwrap_or(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_replies_parse_in_both_protocols() {
        let resp2 = b"*3\r\n*2\r\n:0\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:17\r\n$1\r\nx\r\n";
        let pulled = crate::migrate::replies::pull_reply;
        let got = pulled(resp2).unwrap();
        assert_eq!(
            got,
            vec![
                Some((0, Bytes::from_static(b"abc"))),
                None,
                Some((17, Bytes::from_static(b"x")))
            ]
        );
        let resp3 = b"*2\r\n_\r\n*2\r\n:5\r\n$2\r\nyz\r\n";
        let got = pulled(resp3).unwrap();
        assert_eq!(got, vec![None, Some((5, Bytes::from_static(b"yz")))]);
        assert!(pulled(b"-ERR no\r\n").is_none());
        assert_eq!(pulled(b"*1\r\n*-1\r\n").unwrap(), vec![None]);
        assert!(pulled(b"*2\r\n_\r\n").is_none(), "one element short");
        let mut refused = b"+OK\r\n-".to_vec();
        refused.extend_from_slice(SEALED.as_bytes());
        refused.extend_from_slice(b"\r\n");
        assert!(refused_by_migration(&refused, RespVersion::Resp2));
        assert!(!refused_by_migration(
            b"+OK\r\n-TRYAGAIN other\r\n",
            RespVersion::Resp2
        ));
    }
}
