//! The evictor: on every group this node leads, while the group's store is over
//! `maxmemory`, pick victims ([`super::pick_victims`]) and propose their deletion
//! through the log, one proposal per group in flight at a time (as the expiry sweep).
//!
//! How it fits: one task per node, started by [`crate::node::serve`], woken every
//! [`EVICT_INTERVAL`] or at once by a write that found its group over the limit
//! ([`crate::node::Node::evict_wanted`]). Such a write waits for the next pass, at most
//! [`EVICTION_WAIT`], then goes ahead (Redis lets a command run while evictions are
//! under way; only a store where nothing can be evicted refuses it with OOM).

use std::sync::Arc;
use std::time::Duration;

use kelvin_protocol::log::LogCommand;
use tokio::sync::oneshot;

use super::{pick_victims, Pressure};
use crate::group::{GroupHandle, ProposalResult};
use crate::node::Node;
use crate::store::Store;

/// How often the evictor looks at the groups without being woken (Redis's `hz 10`).
pub const EVICT_INTERVAL: Duration = Duration::from_millis(100);

/// Longest a write that found its group over `maxmemory` waits for the evictor.
pub const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Passes of one wake-up (each waits for its proposals to apply) before the evictor
/// sleeps again, so a group it cannot bring under the limit does not keep it spinning.
pub const PASSES_PER_WAKE: usize = 64;

/// Where group `gid` stands against `maxmemory` once `pending` bytes of writes gathered
/// but not yet proposed land, read from `locked` if the caller holds the group's store
/// already.
pub fn pressure(node: &Node, gid: u64, locked: Option<&Store>, pending: usize) -> Pressure {
    let limit = node.memory.get();
    if limit.maxmemory == 0 {
        return Pressure::Fine;
    }
    match locked {
        Some(store) => limit.pressure(store, pending),
        None => node
            .hosted(gid)
            .map_or(Pressure::Fine, |g| limit.pressure(&g.store.lock(), pending)),
    }
}

/// Wakes the evictor and waits for its next pass, at most [`EVICTION_WAIT`].
pub async fn await_eviction(node: &Node) {
    let mut passes = node.evictions.subscribe();
    node.evict_wanted.notify_one();
    let _ = tokio::time::timeout(EVICTION_WAIT, passes.changed()).await;
}

/// The evictor's loop; ends at shutdown.
pub async fn run(node: Arc<Node>) {
    let mut shutdown = node.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVICT_INTERVAL) => {}
            _ = node.evict_wanted.notified() => {}
            _ = shutdown.changed() => return,
        }
        for _ in 0..PASSES_PER_WAKE {
            let pending = pass(&node);
            let proposed = !pending.is_empty();
            for done in pending {
                let _ = done.await;
            }
            node.evictions.send_modify(|n| *n = n.wrapping_add(1));
            if !proposed {
                break;
            }
        }
    }
}

/// One pass: an eviction proposal for each group this node leads that is over the
/// limit. Returns the proposals to wait for.
fn pass(node: &Node) -> Vec<oneshot::Receiver<ProposalResult>> {
    let limit = node.memory.get();
    if limit.maxmemory == 0 || limit.policy == super::Policy::NoEviction {
        return Vec::new();
    }
    let Some(groups) = node.groups() else {
        return Vec::new();
    };
    groups
        .hosted
        .values()
        .filter(|g| g.status.is_leader())
        .filter_map(|g| evict_group(g, limit))
        .collect()
}

/// Proposes the eviction of enough keys of `group` to bring it under `limit`.
fn evict_group(
    group: &GroupHandle,
    limit: super::Limit,
) -> Option<oneshot::Receiver<ProposalResult>> {
    let commands: Vec<LogCommand> = {
        // A script holding the store: the next round (this runs periodically).
        let store = group.store.try_lock()?;
        let excess = limit.excess(&store);
        if excess == 0 {
            return None;
        }
        let now = crate::cmd::unix_ms().max(store.last_apply_ms);
        pick_victims(&store, limit, excess, now, &mut rand::thread_rng())
            .into_iter()
            .map(|(db, keys)| LogCommand::EvictKeys { db: db as u8, keys })
            .collect()
    };
    group.propose_housekeeping(commands)
}
