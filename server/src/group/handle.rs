//! The group's public face: [`GroupStatus`], what connections read without asking the
//! group, and [`GroupHandle`], how the node talks to a running group.

use super::*;

/// What connections can see of the group without asking it.
pub struct GroupStatus {
    pub node_id: u64,
    leader: AtomicU64,
    /// Nanoseconds since `epoch` until which local reads are linearizable; 0 = no lease.
    pub(super) lease_until: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) stopped: AtomicBool,
    /// Current term and applied index, for INFO.
    pub term: AtomicU64,
    pub applied: AtomicU64,
    /// Snapshots this group wrote since it started.
    pub snapshots: AtomicU64,
    /// Bytes the Raft log holds in memory (entries not applied yet, and the term and
    /// place in the WAL of each entry since the last snapshot), for INFO.
    pub log_memory: AtomicU64,
    /// Whether the store may hold migrations (set under the store lock after each apply,
    /// before any reply goes out; `true` until the first apply): when `false`, a
    /// connection skips the store lock that the migration check of a request takes.
    pub(super) migrating: AtomicBool,
    /// Whether a transaction across groups may be prepared here (set like
    /// `migrating`): when `false`, a connection skips the lock check of a request.
    pub(super) transacting: AtomicBool,
    /// The membership and the replicas' progress, refreshed every tick.
    pub conf: parking_lot::Mutex<ConfView>,
}

impl GroupStatus {
    pub(super) fn new(node_id: u64) -> Self {
        GroupStatus {
            node_id,
            leader: AtomicU64::new(0),
            lease_until: AtomicU64::new(0),
            epoch: Instant::now(),
            stopped: AtomicBool::new(false),
            term: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            log_memory: AtomicU64::new(0),
            migrating: AtomicBool::new(true),
            transacting: AtomicBool::new(true),
            conf: parking_lot::Mutex::new(ConfView::default()),
        }
    }

    /// Whether a request must be checked against locks of transactions across groups
    /// (as [`GroupStatus::may_migrate`]: the check at apply backs a stale `false`).
    pub fn in_transaction(&self) -> bool {
        self.transacting.load(Ordering::Acquire)
    }

    /// Whether a request must be checked against the group's migrations. A `false` seen
    /// just before a migration's first step applies is harmless: the same check at apply
    /// refuses what it must, and the connection runs it again.
    pub fn may_migrate(&self) -> bool {
        self.migrating.load(Ordering::Acquire)
    }

    /// The leader's id, if there is one.
    pub fn leader(&self) -> Option<u64> {
        Some(self.leader.load(Ordering::Acquire)).filter(|&l| l != 0)
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// May this node answer a read from its own keyspace right now?
    pub fn can_read_locally(&self) -> bool {
        let until = self.lease_until.load(Ordering::Acquire);
        until != 0 && (self.epoch.elapsed().as_nanos() as u64) < until && self.is_leader()
    }

    pub(super) fn set_leader(&self, leader: u64) {
        if self.leader.swap(leader, Ordering::AcqRel) != leader {
            self.lease_until.store(0, Ordering::Release);
        }
    }
}

/// A running group.
pub struct GroupHandle {
    pub group_id: u64,
    /// The group's state machine: the keyspace of the slots it owns. Connections read it
    /// (under the lock) where the group may serve reads; only the group's task writes.
    pub store: Arc<Mutex<Store>>,
    /// The store's running script, read without its lock (BUSY, SCRIPT KILL).
    pub scripts: Arc<crate::script::busy::ScriptWatch>,
    pub(super) tx: UnboundedSender<GroupMsg>,
    pub status: Arc<GroupStatus>,
    /// Signalled when the group's task has finished (and fsynced).
    pub(super) done: parking_lot::Mutex<Option<mpsc::Receiver<()>>>,
}

impl GroupHandle {
    /// Queues a proposal. Never blocks. A stopped group answers `Stopped`.
    pub fn propose(&self, p: Proposal) {
        if let Err(SendError(GroupMsg::Propose(p))) = self.tx.send(GroupMsg::Propose(p)) {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(ProposeError::Stopped));
            }
        }
    }

    /// Proposes the node's own housekeeping commands (expiry, eviction), none of them a
    /// client's; `None` if there are none. The receiver answers once they are applied.
    pub fn propose_housekeeping(
        &self,
        commands: Vec<LogCommand>,
    ) -> Option<oneshot::Receiver<ProposalResult>> {
        if commands.is_empty() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.propose(Proposal {
            commands,
            version: kelvin_protocol::RespVersion::Resp2,
            reply: Some(tx),
        });
        Some(rx)
    }

    /// A Raft message from a peer.
    pub fn step(&self, msg: Message) {
        let _ = self.tx.send(GroupMsg::Raft(msg));
    }

    pub fn snapshot_sent(&self, to: u64, ok: bool) {
        let _ = self.tx.send(GroupMsg::SnapshotSent { to, ok });
    }

    pub fn unreachable(&self, peer: u64) {
        let _ = self.tx.send(GroupMsg::Unreachable { peer });
    }

    /// Asks the group, if this replica leads it, to hand leadership to replica `to`
    /// (raft-rs's leader transfer: `to` is brought up to date, then campaigns at once).
    pub fn transfer_leader(&self, to: u64) {
        let _ = self.tx.send(GroupMsg::TransferLeader(to));
    }

    /// Asks the group, if this replica leads it, to propose a membership change. Waits
    /// (bounded) for the group to say whether it did.
    pub fn change_conf(&self, op: ConfOp) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(GroupMsg::ConfChange(op, tx))
            .map_err(|_| "the group is stopped".to_string())?;
        blocking(|| rx.recv_timeout(STOP_WAIT))
            .map_err(|_| "the group did not answer in time".to_string())?
    }

    /// Asks for a snapshot now (BGSAVE), or waits for it (SAVE, when `wait`): the log
    /// index it covers.
    pub fn snapshot(&self, wait: Option<Duration>) -> Result<u64, String> {
        let Some(timeout) = wait else {
            let _ = self.tx.send(GroupMsg::Snapshot(None));
            return Ok(0);
        };
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(GroupMsg::Snapshot(Some(tx)))
            .map_err(|_| "the group is stopped".to_string())?;
        rx.recv_timeout(timeout)
            .map_err(|_| "the snapshot did not finish in time".to_string())?
    }

    /// Stops the group after it finishes its current turn (fsyncing what it wrote), and
    /// waits for that (bounded).
    pub fn stop(&self) {
        let _ = self.tx.send(GroupMsg::Stop);
        if let Some(done) = self.done.lock().take() {
            // The task signals before it lets go of the node, so a handle dropped by the
            // task itself finds the signal already there.
            let _ = blocking(|| done.recv_timeout(STOP_WAIT));
        }
    }
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
