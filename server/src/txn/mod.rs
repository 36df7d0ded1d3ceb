//! Transactions across groups (issue 19): a two-phase commit over the groups' own Raft
//! logs, so that a MULTI/EXEC whose keys live in several groups runs all or nothing and
//! no client sees part of it.
//!
//! How it fits:
//! - [`state`]: what a group's store knows of transactions (replicated state, changed
//!   only by applying log entries, carried by snapshots): the transactions prepared here
//!   and the keys they lock, the decisions this group records, and the outcomes of the
//!   transactions that finished here. Pure and deterministic.
//! - `KELVIN.TX` (`cmd/txn.rs`): the steps, each a data command through the log of the
//!   group it is pinned to (`KELVIN.ON <group> ...`): PREPARE, DECIDE, FINISH, FORGET.
//! - [`coord`]: the coordinator, on the node the client sent EXEC to: prepare in every
//!   participant, record the decision in the record group, finish everywhere, assemble
//!   EXEC's reply in the client's order.
//! - [`resolve`]: every node's look at the groups it leads: a transaction prepared for
//!   longer than [`RESOLVE_AFTER_MS`] (its coordinator died or lost touch) is decided at
//!   its record group (ABORT unless COMMIT is recorded there already) and finished here.
//! - Locks: a key a prepared transaction holds is neither written nor read by anyone
//!   else until the transaction finishes in its group: a command reaching it at apply is
//!   refused with [`LOCKED`] (the proposing connection runs it again once the lock is
//!   gone, as after a migration's refusal), and a leader's lease read waits first.
//!
//! Lower layers only: this module reads and changes the store; the coordinator and the
//! resolver talk to groups through [`crate::conn::Internal`], never the node's insides.

pub mod coord;
pub mod replicated;
pub mod resolve;
pub mod state;

/// The refusal a command gets at apply when one of its keys is locked by a prepared
/// transaction (the connection waits for it to finish and runs the command again; the
/// client sees this only if it does not finish within the connection's wait).
pub const LOCKED: &str = "TRYAGAIN Key locked by a transaction in progress across groups";

/// EXEC's element for a command whose group committed but whose reply was lost (a
/// resolver finished the group first, or its FINISH never answered).
pub const REPLY_LOST: &str =
    "ERR the transaction committed but this command's reply was lost on the way";

/// A PREPARE's refusal when a key it would lock is held by another transaction.
pub const PREPARE_LOCKED: &str = "TXLOCKED a key is locked by another transaction";

/// A PREPARE's refusal when a migration holds a slot of its keys (the migration's own
/// refusal follows).
pub const PREPARE_MOVING: &str = "TXMOVING";

/// A PREPARE's refusal, at the leader it reaches, when one of the keys it would lock is
/// in a slot that this node's slot map gives to another group: the coordinator planned
/// over a map that a migration has changed since (the slot's old owner, its migration
/// over, would otherwise take the PREPARE and lock, read and write keys it no longer
/// holds). Not retried as such: the coordinator plans the transaction again.
pub const PREPARE_MOVED: &str =
    "TXMOVED a key of this transaction is in a slot of another group now";

/// A PREPARE's refusal when a watched key's slot was written after the WATCH.
pub const PREPARE_WATCHED: &str = "TXWATCH a watched key was written";

/// How long a transaction may stay prepared in a group before the group's leader
/// resolves it itself (log time, ms). Well under the connections' wait for a lock
/// ([`crate::conn::LEADER_WAIT`]), so writers behind a dead coordinator's locks get
/// through instead of an error.
pub const RESOLVE_AFTER_MS: u64 = 2_000;

/// Where a node's coordinators take transaction ids from.
pub struct TxIds {
    origin: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Default for TxIds {
    fn default() -> Self {
        TxIds {
            origin: rand::random::<u64>(),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

impl TxIds {
    pub fn next(&self) -> TxId {
        TxId {
            origin: self.origin,
            seq: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A transaction's id: the coordinator's random origin (drawn at its start) and its
/// sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId {
    pub origin: u64,
    pub seq: u64,
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{}", self.origin, self.seq)
    }
}

/// Whether `argv` must wait for a transaction prepared in this group: one of its keys is
/// locked, or it would change every key of a database (FLUSHDB, FLUSHALL, SWAPDB) while
/// any transaction is prepared.
pub fn waits_for_lock(
    store: &crate::store::Store,
    db: usize,
    spec: &crate::cmd::CommandSpec,
    argv: &[bytes::Bytes],
) -> bool {
    if store.tx.is_idle() {
        return false;
    }
    let keys = spec.keys_in(argv);
    if keys.is_empty() {
        return matches!(spec.name, "flushdb" | "flushall" | "swapdb");
    }
    keys.iter()
        .any(|&p| store.tx.holder(db as u8, &argv[p]).is_some())
}
