//! Participants that resolve themselves: every [`CHECK_EVERY`], for each group this
//! node leads, a transaction prepared there for longer than
//! [`super::RESOLVE_AFTER_MS`] (its coordinator died, or lost touch) is decided at its
//! record group, DECIDE ABORT, which answers COMMIT instead if the coordinator's COMMIT
//! was logged first, and finished here with that decision. Whatever moment the
//! coordinator stopped at, every participant ends the same way: before the decision all
//! abort, after it all commit.

use std::time::Duration;

use bytes::Bytes;

use super::coord::Groups;
use super::TxId;

/// How often a node looks for transactions left prepared.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What the resolver needs of the node besides reaching groups.
pub trait Stale: Groups {
    /// Transactions prepared too long in the groups this node leads: (group, id,
    /// record group).
    fn stale(&self) -> Vec<(u64, TxId, u64)>;
}

/// Runs until `shutdown` turns true.
pub async fn run<S: Stale>(mut s: S, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        for (group, tx, record) in s.stale() {
            resolve(&mut s, group, tx, record).await;
        }
    }
}

/// Decides `tx` at `record` (ABORT unless COMMIT is there) and finishes it in `group`.
pub async fn resolve<G: Groups>(g: &mut G, group: u64, tx: TxId, record: u64) {
    let id = |op: &'static [u8], last: &'static [u8]| {
        vec![
            Bytes::from_static(b"KELVIN.TX"),
            Bytes::from_static(op),
            Bytes::from(tx.origin.to_string()),
            Bytes::from(tx.seq.to_string()),
            Bytes::from_static(last),
        ]
    };
    let decided = g.on_group(record, id(b"DECIDE", b"ABORT")).await;
    let decision: &'static [u8] = if super::coord::is_commit(&decided) {
        b"COMMIT"
    } else if decided.starts_with(b"+ABORT") {
        b"ABORT"
    } else {
        // The record group did not answer: next round.
        tracing::debug!(%tx, record, "no decision yet for a transaction left prepared");
        return;
    };
    let mut finish = id(b"FINISH", decision);
    // A replicated transaction's COMMIT comes with its view, which its FINISH needs.
    finish.extend(super::coord::commit_view(&decided));
    let finished = g.on_group(group, finish).await;
    tracing::info!(%tx, group, record, decision = %String::from_utf8_lossy(decision),
        finished = finished.first() != Some(&b'-'), "resolved a transaction left prepared");
}
