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
use crate::cmd::flags;
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

/// Pulls `fault.keys` from the source and writes them through the target's log (absent
/// ones are settled as absent). `Err` is the reply for the requests that waited.
pub(super) async fn fault_in(
    node: &Arc<Node>,
    client: &mut ClientState,
    version: RespVersion,
    fault: &Fault,
) -> Result<(), String> {
    let began = std::time::Instant::now();
    let result = match pull_and_write(node, client, version, fault).await {
        // The migration finished meanwhile (the target first, then the source): the keys
        // are ordinary ones of the target now, and the requests run again as such.
        Err(_) if !importing(node, fault) => Ok(()),
        result => result,
    };
    node.migrations.faultin(fault.keys.len(), began.elapsed());
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

async fn pull_and_write(
    node: &Arc<Node>,
    client: &mut ClientState,
    version: RespVersion,
    fault: &Fault,
) -> Result<(), String> {
    let mut pull = vec![
        Bytes::from_static(b"KELVIN.MIGRATE-PULL"),
        Bytes::from(fault.migration.to_string()),
        Bytes::from(fault.db.to_string()),
    ];
    pull.extend(fault.keys.iter().cloned());
    let reply = internal(node, client, version, pin(fault.source, pull)).await;
    let Some(values) = pulled(&reply, version).filter(|v| v.len() == fault.keys.len()) else {
        tracing::debug!(
            migration = fault.migration,
            reply = %String::from_utf8_lossy(&reply),
            "fault-in: the source did not give the keys"
        );
        return Err(UNREACHABLE.to_string());
    };
    // Batches under the log's entry bound; a value over it goes in parts.
    let keys = fault.keys.iter().zip(values).map(|(key, value)| {
        let (expire_at, payload) = value.unwrap_or((0, Bytes::new()));
        (key.clone(), expire_at, payload)
    });
    let batches = crate::migrate::moves::requests(fault.migration, fault.db, keys);
    for batch in batches {
        let reply = internal(node, client, version, pin(fault.group, batch)).await;
        if !reply.starts_with(b":") {
            tracing::debug!(
                migration = fault.migration,
                reply = %String::from_utf8_lossy(&reply),
                "fault-in: the target did not take the keys"
            );
            return Err(UNREACHABLE.to_string());
        }
    }
    Ok(())
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

/// The values of a `KELVIN.MIGRATE-PULL` reply: per key, `None` (absent) or its absolute
/// expiry and DUMP payload. `None` if the reply is not that.
fn pulled(reply: &[u8], version: RespVersion) -> Option<Vec<Option<(u64, Bytes)>>> {
    array_elements(reply, version)?
        .into_iter()
        .map(|e| {
            if e.starts_with(b"$-1") || e.starts_with(b"_") || e.starts_with(b"*-1") {
                return Some(None);
            }
            let [expire_at, payload] = <[&[u8]; 2]>::try_from(array_elements(e, version)?).ok()?;
            let expire_at = std::str::from_utf8(expire_at.strip_prefix(b":")?)
                .ok()?
                .trim_end()
                .parse()
                .ok()?;
            Some(Some((
                expire_at,
                Bytes::copy_from_slice(bulk_body(payload)?),
            )))
        })
        .collect()
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
        [SEALED, NOT_YET, UNSETTLED]
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
    wait_leader_change(node, deadline).await;
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
        let got = pulled(resp2, RespVersion::Resp2).unwrap();
        assert_eq!(
            got,
            vec![
                Some((0, Bytes::from_static(b"abc"))),
                None,
                Some((17, Bytes::from_static(b"x")))
            ]
        );
        let resp3 = b"*2\r\n_\r\n*2\r\n:5\r\n$2\r\nyz\r\n";
        let got = pulled(resp3, RespVersion::Resp3).unwrap();
        assert_eq!(got, vec![None, Some((5, Bytes::from_static(b"yz")))]);
        assert!(pulled(b"-ERR no\r\n", RespVersion::Resp2).is_none());
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
