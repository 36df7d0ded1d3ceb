//! The leader's read lease ([`Lease`]) and the log's fdatasync running beside the group
//! ([`DetachedSync`]).

use super::*;

/// The leader's read lease: when to ask a quorum again, and which answers count.
///
/// A ReadIndex answered by a quorum for a request asked at `t` means no other leader can
/// be elected before `t + election timeout`: followers ignore votes while they hear from
/// a leader. A leadership transfer is the exception: the target campaigns at once (raft-rs
/// `TimeoutNow`) and the voters grant it their votes whatever they heard. So handing over
/// ends the lease there and then, and no answer to a request asked before the hand-over
/// (nor during it) grants one (found by kelvin-jepsen: reads on a leader that had just
/// handed over missed a write the new leader had acknowledged).
#[derive(Debug, Default)]
pub(super) struct Lease {
    /// When the outstanding lease ReadIndex was asked.
    asked: Option<Instant>,
    /// Nanoseconds since `GroupStatus::epoch` of the last hand-over: answers to requests
    /// asked up to then grant nothing.
    fence: u64,
}

impl Lease {
    pub(super) fn renew<S: Storage>(
        &mut self,
        raw: &mut RawNode<S>,
        status: &GroupStatus,
        ticks: u64,
    ) {
        if raw.raft.state != StateRole::Leader || raw.raft.lead_transferee.is_some() {
            self.asked = None;
            return;
        }
        let stale = self
            .asked
            .is_none_or(|at| at.elapsed() >= TICK * ELECTION_TICKS as u32);
        if stale && ticks.is_multiple_of(HEARTBEAT_TICKS as u64) || self.asked.is_none() {
            let at = Instant::now();
            let ctx = (at - status.epoch).as_nanos() as u64;
            raw.read_index(ctx.to_le_bytes().to_vec());
            self.asked = Some(at);
        }
    }

    /// `caught_up`: the leader has applied the first entry of its term.
    pub(super) fn on_read_states<S: Storage>(
        &mut self,
        raw: &RawNode<S>,
        status: &GroupStatus,
        states: Vec<raft::ReadState>,
        caught_up: bool,
    ) {
        for rs in states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            let asked = u64::from_le_bytes(bytes);
            self.asked = None;
            if raw.raft.state == StateRole::Leader
                && raw.raft.lead_transferee.is_none()
                && caught_up
                && asked > self.fence
            {
                let until = asked + LEASE.as_nanos() as u64;
                status.lease_until.fetch_max(until, Ordering::AcqRel);
            }
        }
    }

    /// Hands leadership to `to`: the lease ends first.
    pub(super) fn hand_over<S: Storage>(
        &mut self,
        raw: &mut RawNode<S>,
        status: &GroupStatus,
        to: u64,
    ) {
        self.fence = status.epoch.elapsed().as_nanos() as u64;
        self.asked = None;
        status.lease_until.store(0, Ordering::Release);
        raw.transfer_leader(to);
    }
}

/// An fdatasync of the log running on the blocking pool ([`DiskStorage::begin_sync`]):
/// the group goes on meanwhile and asks for its end each turn.
pub(super) struct DetachedSync(tokio::sync::oneshot::Receiver<Result<(), kelvin_wal::WalError>>);

impl DetachedSync {
    /// Starts syncing what the log wrote so far, if anything.
    pub(super) fn start(log: &mut DiskStorage) -> Result<Option<DetachedSync>, GroupError> {
        let Some(pending) = log.begin_sync()? else {
            return Ok(None);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(pending.run());
        });
        Ok(Some(DetachedSync(rx)))
    }

    /// Whether the sync in `slot` still runs; once it ended it is taken out, and its
    /// failure returned.
    pub(super) fn pending(slot: &mut Option<DetachedSync>) -> Result<bool, GroupError> {
        let Some(sync) = slot else {
            return Ok(false);
        };
        match sync.poll() {
            None => Ok(true),
            Some(result) => {
                *slot = None;
                result.map(|()| false)
            }
        }
    }

    /// Waits for its end (a failure is the log's, fatal).
    pub(super) async fn wait(self) -> Result<(), GroupError> {
        match self.0.await {
            Ok(result) => result.map_err(GroupError::from),
            Err(_) => Err(Self::lost()),
        }
    }

    /// The sync's task ended without an outcome (it panicked).
    pub(super) fn lost() -> GroupError {
        GroupError::Entry {
            index: 0,
            cause: "the fsync task failed".into(),
        }
    }

    /// `None` while it runs; then its outcome, a failure being the log's (fatal).
    pub(super) fn poll(&mut self) -> Option<Result<(), GroupError>> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.0.try_recv() {
            Err(TryRecvError::Empty) => None,
            Ok(result) => Some(result.map_err(GroupError::from)),
            Err(TryRecvError::Closed) => Some(Err(Self::lost())),
        }
    }
}
