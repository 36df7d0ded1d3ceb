//! The drive loop: runs a batch to its end, awaiting proposals, relaying to leaders,
//! waiting out elections, running split commands' parts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kelvin_protocol::ReplyWriter;

use crate::cmd::{self, flags};
use crate::group::{ProposalResult, ProposeError};
use crate::node::Node;
use crate::relay::Relay;
use tokio::sync::oneshot;

use super::batch::*;
use super::merge::*;
use super::*;

/// How long requests wait for a leader (an election, or a leader that moved) before
/// they are answered with an error.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Longest a request waits for a lock before looking again (the release is signalled;
/// this bounds a missed one).
const TX_NAP: Duration = Duration::from_millis(50);

/// The error a request gets when no leader turned up within [`LEADER_WAIT`].
pub const NO_LEADER: &str = "CLUSTERDOWN The cluster is down: no leader was elected in time";

/// Runs a batch to its end: proposals are awaited, relays done, elections waited out.
pub(super) async fn drive(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    mut batch: Vec<Vec<Bytes>>,
) {
    let queued_write = client
        .multi
        .as_ref()
        .is_some_and(|m| m.queue.iter().any(|(spec, _)| spec.is_write()));
    node.pause
        .wait(&batch, client.multi.is_some(), queued_write)
        .await;
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        // The topology and leaders this pass routes by: a change from here on wakes a
        // wait below at once, even one made before the wait begins.
        let seen = *node.leaders_changed.borrow();
        match process_batch(node, client, out, batch) {
            Step::Done => return,
            Step::Propose {
                rx,
                retry,
                replies,
                blocking,
                rest,
            } => {
                let result = rx.await.unwrap_or(Err(ProposeError::Stopped));
                match result {
                    Ok(applied)
                        if applied.blocked.is_none()
                            && tokio::time::Instant::now() < deadline
                            && super::faultin::refused_by_migration(&applied.out, out.version) =>
                    {
                        // Proposed before a seal or a fault-in caught up: those requests
                        // run again, routed anew, and their replies take their places.
                        super::faultin::redo_refused(
                            node,
                            client,
                            out,
                            &applied.out,
                            &retry,
                            deadline,
                            seen,
                        )
                        .await;
                        batch = rest;
                    }
                    Ok(applied) => {
                        out.buf.extend_from_slice(&applied.out);
                        if let (Some((block, ready)), Some(argv)) = (applied.blocked, blocking) {
                            // A CLIENT UNBLOCK meant for an earlier block is void.
                            client.info.take_unblock();
                            client.info.blocked.store(true, Ordering::Relaxed);
                            client.blocked = Some(Blocked {
                                argv,
                                deadline: block.timeout.map(|t| tokio::time::Instant::now() + t),
                                ready,
                            });
                            client.pending.extend(rest);
                            return;
                        }
                        batch = rest;
                    }
                    Err(ProposeError::NotLeader(_))
                        if !retry.is_empty() && tokio::time::Instant::now() < deadline =>
                    {
                        // Nothing was written: run the requests again where the leader is.
                        wait_leader_change(node, deadline, seen).await;
                        batch = retry;
                        batch.extend(rest);
                    }
                    Err(err) => {
                        for _ in 0..replies {
                            out.error(err.reply_text());
                        }
                        batch = rest;
                    }
                }
            }
            Step::Forward {
                leader,
                requests,
                rest,
            } => {
                if let Some(from) = client.relayed {
                    // Relayed here by a node with a newer topology: route by that one,
                    // not back where the requests came from.
                    if node.membership.read().epoch < from.epoch
                        && tokio::time::Instant::now() < deadline
                    {
                        wait_leader_change(node, deadline, seen).await;
                        batch = requests;
                        batch.extend(rest);
                        continue;
                    }
                    if from.hops >= crate::relay::MAX_RELAY_HOPS {
                        for _ in &requests {
                            out.error(TOO_MANY_HOPS);
                        }
                        batch = rest;
                        continue;
                    }
                }
                match relay(node, client, out, leader, &requests).await {
                    Relayed::Done => batch = rest,
                    // The leader could not be reached: nothing was sent, so the requests
                    // wait for the next leader like during an election.
                    Relayed::NotSent if tokio::time::Instant::now() < deadline => {
                        wait_leader_change(node, deadline, seen).await;
                        batch = requests;
                        batch.extend(rest);
                    }
                    Relayed::NotSent => {
                        for _ in &requests {
                            out.error(NO_LEADER);
                        }
                        batch = rest;
                    }
                }
            }
            Step::AwaitLeader { requests, rest } => {
                if tokio::time::Instant::now() >= deadline {
                    for _ in &requests {
                        out.error(NO_LEADER);
                    }
                    batch = rest;
                } else {
                    wait_leader_change(node, deadline, seen).await;
                    batch = requests;
                    batch.extend(rest);
                }
            }
            Step::AwaitMigration {
                why,
                requests,
                rest,
            } => {
                if tokio::time::Instant::now() >= deadline {
                    for _ in &requests {
                        out.error(why);
                    }
                    batch = rest;
                } else {
                    wait_leader_change(node, deadline, seen).await;
                    batch = requests;
                    batch.extend(rest);
                }
            }
            Step::WatchBarrier { groups, requests } => {
                for group in groups {
                    let floor =
                        super::faultin::leader_index(node, client, out.version, group).await;
                    // No answer: the local index, as before (a spurious abort at worst).
                    client.watch_floor.push((group, floor.unwrap_or(0)));
                }
                batch = requests;
            }
            Step::FaultIn {
                fault,
                requests,
                rest,
            } => {
                let pulled = match tokio::time::Instant::now() < deadline {
                    true => super::faultin::fault_in(node, client, out, &fault, &requests).await,
                    false => Err(super::faultin::UNREACHABLE.to_string()),
                };
                match pulled {
                    Ok(super::faultin::Faulted::Served) => batch = rest,
                    Ok(super::faultin::Faulted::Written) => {
                        batch = requests;
                        batch.extend(rest);
                    }
                    Err(text) => {
                        for _ in &requests {
                            out.error(&text);
                        }
                        batch = rest;
                    }
                }
            }
            Step::AwaitEviction { requests, rest } => {
                crate::evict::task::await_eviction(node).await;
                client.eviction_waited = true;
                batch = requests;
                batch.extend(rest);
            }
            Step::Keyless { keyless, rest } => {
                super::keyless::run(node, client, out, keyless).await;
                batch = rest;
            }
            Step::Split { parts, merge, rest } => {
                // Each part goes to its own group like any request; their replies are
                // then merged into the one reply the client expects.
                let mut sub = ReplyWriter::new(out.version);
                Box::pin(drive(node, client, &mut sub, parts)).await;
                merge.write(&sub.buf, out);
                batch = rest;
            }
            Step::CrossTx { plan, rest } => {
                let blocking = plan.blocking.clone();
                let ready = blocking
                    .as_ref()
                    .map(|_| super::crosstx::wake_on(node, &plan));
                let mark = out.buf.len();
                Box::pin(super::crosstx::run(node, out, plan)).await;
                if let (Some((argv, timeout)), Some(ready)) = (blocking, ready) {
                    if super::crosstx::is_nil(&out.buf[mark..]) {
                        // Nothing to take yet: parked as any blocking command.
                        out.buf.truncate(mark);
                        client.info.take_unblock();
                        client.info.blocked.store(true, Ordering::Relaxed);
                        client.blocked = Some(Blocked {
                            argv,
                            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
                            ready,
                        });
                        client.pending.extend(rest);
                        return;
                    }
                }
                batch = rest;
            }
            Step::AwaitTx {
                mut released,
                requests,
                rest,
            } => {
                if tokio::time::Instant::now() >= deadline {
                    for _ in &requests {
                        out.error(crate::txn::LOCKED);
                    }
                    batch = rest;
                } else {
                    // Until a transaction finishes in the group (or a while: a lock
                    // may also go with a snapshot or a leader change).
                    let nap = (tokio::time::Instant::now() + TX_NAP).min(deadline);
                    let _ = tokio::time::timeout_at(nap, released.changed()).await;
                    batch = requests;
                    batch.extend(rest);
                }
            }
            Step::Migrate { argv, rest } => {
                super::migrate_cmd::run(node, client, out, &argv).await;
                batch = rest;
            }
        }
    }
}

impl Step {
    /// This step with `tail` run after everything it holds; `Err(tail)` if it holds
    /// nothing more to do (`Done`).
    pub(super) fn then(self, tail: Vec<Vec<Bytes>>) -> Result<Step, Vec<Vec<Bytes>>> {
        let mut step = self;
        match &mut step {
            Step::Done => return Err(tail),
            Step::Propose { rest, .. }
            | Step::Forward { rest, .. }
            | Step::AwaitLeader { rest, .. }
            | Step::AwaitEviction { rest, .. }
            | Step::AwaitMigration { rest, .. }
            | Step::FaultIn { rest, .. }
            | Step::WatchBarrier { requests: rest, .. }
            | Step::Keyless { rest, .. }
            | Step::Split { rest, .. }
            | Step::CrossTx { rest, .. }
            | Step::AwaitTx { rest, .. }
            | Step::Migrate { rest, .. } => rest.extend(tail),
        }
        Ok(step)
    }
}

/// Waits until a group's leader or the topology changes from what `seen` (a value of
/// `leaders_changed` read before the routing decision) stood for, a short while, or
/// `deadline`. A change between that decision and this wait returns at once: subscribing
/// only here missed it, and the request slept the whole nap (a request to a slot sealed
/// at its source waited 200 ms right after a handover whose topology came meanwhile).
pub(super) async fn wait_leader_change(node: &Node, deadline: tokio::time::Instant, seen: u64) {
    // Any group of this node (the requests waiting may be for any of them); a group it
    // does not replicate has no signal here, hence the short nap at most.
    wait_changed(&node.leaders_changed, deadline, seen).await;
}

/// [`wait_leader_change`] on the signal `changes`.
async fn wait_changed(
    changes: &tokio::sync::watch::Sender<u64>,
    deadline: tokio::time::Instant,
    seen: u64,
) {
    let mut changed = changes.subscribe();
    if *changed.borrow_and_update() != seen {
        return;
    }
    let nap = tokio::time::Instant::now() + Duration::from_millis(200);
    let _ = tokio::time::timeout_at(nap.min(deadline), changed.changed()).await;
}

/// How a relay went.
pub(super) enum Relayed {
    /// Replies (or errors for an unknown outcome) are in `out`.
    Done,
    /// The leader could not be reached; nothing was sent.
    NotSent,
}

/// Relays requests to the leader through the client's relay connection.
pub(super) async fn relay(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    leader: u64,
    requests: &[Vec<Bytes>],
) -> Relayed {
    let at = match client.relays.iter().position(|r| r.leader == leader) {
        Some(at) => at,
        None => {
            let Some(addr) = node.peer_client_addr(leader) else {
                return Relayed::NotSent;
            };
            let password = node.settings.read().requirepass.clone();
            let hops = client.relayed.map_or(0, |r| r.hops).saturating_add(1);
            let epoch = node.membership.read().epoch;
            match Relay::connect(leader, addr, password.as_deref(), out.version, hops, epoch).await
            {
                Ok(r) => client.relays.push(r),
                Err(err) => {
                    tracing::debug!(leader, cause = %err, "leader unreachable");
                    return Relayed::NotSent;
                }
            }
            client.relays.len() - 1
        }
    };
    let relay = &mut client.relays[at];
    let blocking = requests
        .iter()
        .any(|r| cmd::lookup(&r[0]).is_some_and(|s| s.flags & flags::BLOCKING != 0));
    let mut replies = Vec::new();
    let fut = relay.forward(client.db, out.version, requests, &mut replies);
    let result = if blocking {
        fut.await
    } else {
        tokio::time::timeout(crate::relay::RELAY_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the leader did not answer in time")))
    };
    match result {
        Ok(()) => out.buf.extend_from_slice(&replies),
        Err(err) => {
            tracing::debug!(leader, cause = %err, "relay failed");
            client.relays.remove(at);
            // Replies that did arrive are good; the rest may or may not have happened.
            out.buf.extend_from_slice(&replies);
            let answered = count_replies(&replies, out.version);
            for _ in answered..requests.len() {
                out.error(ProposeError::Unknown.reply_text());
            }
        }
    }
    Relayed::Done
}

/// What the connection must do after [`process_batch`] stopped.
pub enum Step {
    /// Every request was answered (or the connection parked in a blocking command).
    Done,
    /// Wait for this proposal, write its replies, then go on with `rest`. `retry` holds
    /// the requests to run again if the node turns out not to be the leader, or a
    /// migration refused them at apply (a transaction's is its `KELVIN.EXEC` request).
    Propose {
        rx: oneshot::Receiver<ProposalResult>,
        retry: Vec<Vec<Bytes>>,
        replies: usize,
        blocking: Option<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// Relay these requests to the leader, `leader`, then go on with `rest`.
    Forward {
        leader: u64,
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// No leader is known: wait for an election, then run `requests` again (or answer
    /// them with an error if none comes), then `rest`.
    AwaitLeader {
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// The group is over `maxmemory`: wait (bounded) for the leader's evictor, then run
    /// `requests` again, then `rest`.
    AwaitEviction {
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// A slot in migration must catch up: sealed by this group and not yet moved in the
    /// topology, or imported here before the seal's proof arrived. Wait, then run
    /// `requests` again (routed anew); `why` answers them if it does not in time.
    AwaitMigration {
        why: &'static str,
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// A WATCH of keys in groups led elsewhere: fetch each leader's apply index first
    /// (the WATCH's floors, `ClientState::watch_floor`), then run `requests`.
    WatchBarrier {
        groups: Vec<u64>,
        requests: Vec<Vec<Bytes>>,
    },
    /// Keys this group imports must be pulled from the source first
    /// ([`super::faultin`]); then `requests` run again, then `rest`.
    FaultIn {
        fault: super::faultin::Fault,
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// DBSIZE, KEYS, SCAN or RANDOMKEY on the main port while slots move: answered
    /// with the migrations' keys ([`super::keyless`]), then go on with `rest`.
    Keyless {
        keyless: super::keyless::Keyless,
        rest: Vec<Vec<Bytes>>,
    },
    /// A multi-key command whose keys are in several groups, on the main port: run
    /// `parts` (one per group or key), merge their replies, then go on with `rest`.
    Split {
        parts: Vec<Vec<Bytes>>,
        merge: Merge,
        rest: Vec<Vec<Bytes>>,
    },
    /// EXEC of a transaction whose keys are in several groups, on the main port: its
    /// two-phase commit ([`super::crosstx`]), then go on with `rest`.
    CrossTx {
        plan: super::crosstx::CrossTx,
        rest: Vec<Vec<Bytes>>,
    },
    /// A key is locked by a transaction across groups prepared in its group: wait for a
    /// transaction to finish there (`released` changes), then run `requests` again
    /// (answered with [`crate::txn::LOCKED`] past the deadline), then `rest`.
    AwaitTx {
        released: tokio::sync::watch::Receiver<u64>,
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// MIGRATE: talks to its target ([`super::migrate_cmd`]), then go on with `rest`.
    Migrate {
        argv: Vec<Bytes>,
        rest: Vec<Vec<Bytes>>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    /// A change made after the routing decision (after `seen` was read) but before the
    /// wait began ends the wait at once; without one it waits for the next change.
    #[tokio::test]
    async fn a_change_before_the_wait_is_not_missed() {
        let (changes, _keep) = tokio::sync::watch::channel(0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut cx = Context::from_waker(Waker::noop());
        let seen = *changes.borrow();
        changes.send_modify(|n| *n += 1);
        let early = std::pin::pin!(wait_changed(&changes, deadline, seen));
        assert!(early.poll(&mut cx).is_ready());
        // Nothing changed since `seen`: pending until something does.
        let seen = *changes.borrow();
        let mut waiting = std::pin::pin!(wait_changed(&changes, deadline, seen));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        changes.send_modify(|n| *n += 1);
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
