//! One Raft group: the thread that owns its `RawNode`, its log on disk and the order in
//! which writes reach the keyspace.
//!
//! How it fits: connections send [`Proposal`]s (write commands, or reads that need the
//! log) through [`GroupHandle::propose`]; peers' Raft messages arrive through
//! [`GroupHandle::step`]. The group thread drains everything that arrived since its last
//! turn, packs all proposals into ONE log entry (group commit: one append, one fsync for
//! many clients), and runs raft-rs's ready loop in its exact order: send, apply snapshot,
//! apply committed, append, persist hard state, fsync (per `appendfsync`), send persisted
//! messages, advance. A proposal is answered once its entry is committed and applied;
//! the reply bytes were written by [`crate::machine`] in the client's protocol version.
//!
//! The group is a task on the node's runtime: a proposal, its entry and its reply pass
//! between tasks, often on one worker, without waking OS threads (an OS thread per group
//! cost a context switch each way and halved write throughput). The blocking steps,
//! fsync and snapshots, step aside with `block_in_place`, so the worker's other tasks
//! move on meanwhile.
//!
//! Reads: the leader serves reads from its own keyspace while it holds a lease: it asks
//! for a ReadIndex every other tick, and a quorum's answer to a request sent at `t`
//! proves no other leader can exist before `t + election timeout` (followers with
//! `check_quorum` ignore votes while they hear from a leader). The lease is cut short of
//! that by a margin for clock drift, and only starts once the leader has applied the
//! first entry of its term. Without a lease, a read goes through the log like a write.
//!
//! Parts: `apply` (committed entries into the keyspace), `conf` (membership
//! changes), `lease` (the read lease, the detached fdatasync), `snapshots` (taking,
//! recording and installing snapshots); the turn itself is here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelvin_protocol::log::{LogBatch, LogCommand};
use kelvin_protocol::{ReplyWriter, RespVersion};
use kelvin_wal::{DiskStorage, SnapshotReader, SnapshotWriter, WalOptions};
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};
use tokio::sync::mpsc::error::SendError;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{oneshot, watch};

mod apply;
mod conf;
mod handle;
mod lease;
mod snapshots;

pub use handle::{GroupHandle, GroupStatus};

use conf::step_down_if_removed;
use lease::{DetachedSync, Lease};

use crate::cmd::BlockOn;
use crate::config::AppendFsync;
use crate::node::Node;
use crate::store::Store;
use parking_lot::Mutex;

/// One Raft tick.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader before a follower campaigns (randomised up to twice this).
pub const ELECTION_TICKS: usize = 10;
/// Ticks between leader heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;
/// The read lease: a fraction of the minimum election timeout, the rest is margin for
/// clock drift between nodes.
pub const LEASE: Duration = Duration::from_millis(100 * ELECTION_TICKS as u64 * 8 / 10);
/// Largest log entry the group packs proposals into.
pub const MAX_ENTRY_BYTES: usize = 4 << 20;
/// Largest encoded command (or transaction) one proposal may carry: a log entry travels
/// to the followers whole in one peer frame, next to at most `MAX_ENTRY_BYTES` of other
/// proposals, and a frame over `MAX_PEER_FRAME_BYTES` (64 MiB) would be dropped by the
/// transport, stalling the group. Larger writes are refused at once ([`TOO_LARGE`]).
pub const MAX_COMMAND_BYTES: usize =
    kelvin_protocol::peer::MAX_PEER_FRAME_BYTES - MAX_ENTRY_BYTES - (1 << 20);
/// The reply to a write over [`MAX_COMMAND_BYTES`] (59 MiB).
pub const TOO_LARGE: &str = "ERR the write is too large to replicate: Kelvin's log takes at most 59 MiB (61865984 bytes) per command or transaction";
/// A proposal whose fate is still unknown after this long is answered with an error.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// With `appendfsync everysec`, the longest the log goes without an fsync.
pub const EVERYSEC: Duration = Duration::from_secs(1);
/// Take a snapshot (and compact the log) after this many entries...
pub const SNAPSHOT_ENTRIES: u64 = 500_000;
/// ...or this many bytes of log written since the last one, and at least as many as the
/// keys that snapshot held.
pub const SNAPSHOT_LOG_BYTES: u64 = 64 << 20;
/// How far the log may grow since the last snapshot while the group takes part in a
/// migration (see [`Group::maybe_snapshot`]).
pub const MIGRATING_SNAPSHOT_LOG_BYTES: u64 = 1 << 30;
/// Entries kept after an automatic snapshot, so a follower a little behind catches up
/// from the log. (SAVE keeps none: it is asked for to free the disk.)
/// Counted in entries, which group commit makes up to `MAX_ENTRY_BYTES` each, so few.
pub const KEEP_ENTRIES: u64 = 100;

/// Where the group sends its Raft messages: the TCP transport, or an in-memory network
/// in tests.
pub trait RaftSender: Send + Sync + 'static {
    fn send(&self, group: u64, msg: Message);
    /// Learns (or updates) where peer `id` listens.
    fn set_peer(&self, _id: u64, _addr: std::net::SocketAddr) {}
    /// Sends a PUBLISH to every peer's subscribers.
    fn publish(&self, _channel: &[u8], _message: &[u8]) {}
    /// Stops sending and receiving (node shutdown).
    fn shutdown(&self) {}
}

/// What a group needs to start.
pub struct GroupConfig {
    /// This node's Raft id (non-zero).
    pub node_id: u64,
    pub group_id: u64,
    /// The group's folder (log segments and snapshots).
    pub dir: PathBuf,
    /// Voters of a brand-new group; ignored when the log already exists.
    pub voters: Vec<u64>,
    pub fsync: AppendFsync,
    /// Log bytes written since the last snapshot that trigger the next
    /// ([`SNAPSHOT_LOG_BYTES`]; tests make it small).
    pub snapshot_log_bytes: u64,
}

/// Why a proposal got no reply from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader (the leader's id, if known): nothing was written.
    NotLeader(Option<u64>),
    /// Leadership changed and another entry took this one's place: nothing was written.
    Dropped,
    /// The entry may or may not have been applied (timeout, snapshot skipped past it).
    Unknown,
    /// The group stopped.
    Stopped,
    /// Over [`MAX_COMMAND_BYTES`]: refused, nothing was written.
    TooLarge,
}

impl ProposeError {
    /// The error reply a client gets.
    pub fn reply_text(&self) -> &'static str {
        match self {
            ProposeError::NotLeader(_) | ProposeError::Dropped => {
                "TRYAGAIN the shard's leader changed before the write was committed; it was not applied"
            }
            ProposeError::Unknown => {
                "ERR the write's outcome is unknown: the shard's leader changed or timed out before answering"
            }
            ProposeError::Stopped => "CLUSTERDOWN the shard is not available",
            ProposeError::TooLarge => TOO_LARGE,
        }
    }
}

/// The answer to a proposal: the replies of its commands, concatenated.
#[derive(Debug)]
pub struct Applied {
    pub out: Vec<u8>,
    /// The last command blocked (BLPOP found nothing): wait on `ready`, then retry.
    pub blocked: Option<(BlockOn, watch::Receiver<u64>)>,
}

pub type ProposalResult = Result<Applied, ProposeError>;

/// Commands one client wants in the log, answered together.
pub struct Proposal {
    pub commands: Vec<LogCommand>,
    pub version: RespVersion,
    /// `None`: nobody waits (expiry deletes).
    pub reply: Option<oneshot::Sender<ProposalResult>>,
}

enum GroupMsg {
    Propose(Proposal),
    Raft(Message),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Unreachable {
        peer: u64,
    },
    /// Hand leadership to this replica (if this one leads).
    TransferLeader(u64),
    /// SAVE/BGSAVE: write a snapshot now; the answer is its log index.
    Snapshot(Option<std::sync::mpsc::Sender<Result<u64, String>>>),
    /// Propose a membership change (if this replica leads); the answer says whether it
    /// was proposed, not applied ([`GroupStatus::conf`] shows that).
    ConfChange(ConfOp, std::sync::mpsc::Sender<Result<(), String>>),
    Stop,
}

/// A change to a group's Raft membership, one step at a time, as `kelvin-cli cluster
/// add-node`/`add-replica`/`remove-*` drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfOp {
    /// Add a replica that receives the log but does not vote (it starts empty and gets a
    /// snapshot, then the entries after it).
    AddLearner(u64),
    /// Make a learner a voter, through joint consensus: the group enters the joint
    /// configuration (old voters and new voters must both agree), then leaves it.
    Promote(u64),
    /// Take a replica out (a voter through joint consensus, a learner at once).
    Remove(u64),
    /// Leave a joint configuration (raft-rs leaves on its own, unless the leader changed
    /// before it could).
    LeaveJoint,
}

/// A group's membership as its leader sees it, for `CLUSTER KELVIN-RAFT`.
#[derive(Debug, Clone, Default)]
pub struct ConfView {
    pub voters: Vec<u64>,
    /// The old voters while in a joint configuration (empty otherwise).
    pub voters_outgoing: Vec<u64>,
    pub learners: Vec<u64>,
    /// The leader's last log index, and how far each replica's log matches it (leader
    /// only; empty on followers).
    pub last_index: u64,
    pub matched: Vec<(u64, u64)>,
}

/// Errors that stop a group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Wal(#[from] kelvin_wal::WalError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("log entry {index}: {cause}")]
    Entry { index: u64, cause: String },
}

/// Opens the group's log, loads its newest snapshot into the node's keyspace, and starts
/// its thread. Replaying the log after the snapshot happens on the thread, through the
/// normal apply path, before it answers anything.
pub fn start(
    node: Arc<Node>,
    cfg: GroupConfig,
    sender: Arc<dyn RaftSender>,
) -> Result<Arc<GroupHandle>, GroupError> {
    let started = Instant::now();
    let opts = WalOptions {
        preallocate: cfg.fsync == AppendFsync::Always,
        ..WalOptions::default()
    };
    let mut storage = DiskStorage::open(&cfg.dir, opts)?;
    let fresh = !storage.is_initialized();
    if fresh {
        storage.initialize(ConfState {
            voters: cfg.voters.clone(),
            ..Default::default()
        })?;
    }
    let store = {
        let mut s = Store::default();
        let settings = node.settings.read();
        s.notify_flags = settings.notify_flags;
        s.hll_sparse_max_bytes = settings.hll_sparse_max_bytes();
        Arc::new(Mutex::new(s))
    };
    let mut applied = 0;
    if let Some((meta, path)) = storage.snapshot_file() {
        let keys = load_snapshot(&store, &path)?;
        applied = meta.index;
        store.lock().apply_index = applied;
        tracing::info!(group = cfg.group_id, index = applied, keys, file = %path.display(), "snapshot loaded");
    }
    let single = storage.conf_state().voters == [cfg.node_id];
    let config = raft_config(cfg.node_id, applied);
    config.validate()?;
    let logger = crate::raftlog::logger(cfg.group_id);
    let mut raw = RawNode::new(&config, storage, &logger)?;
    if single || (fresh && cfg.voters.first() == Some(&cfg.node_id)) {
        // One voter: no one to wait for, lead at once. A new group of several: its first
        // replica stands first, so that groups listing different nodes first start with
        // their leaders spread (if the others are not up yet, a normal election follows).
        raw.campaign()?;
    }
    let status = Arc::new(GroupStatus::new(cfg.node_id));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut group = Group {
        group_id: cfg.group_id,
        node,
        store: store.clone(),
        raw,
        sender,
        status: status.clone(),
        fsync: cfg.fsync,
        last_sync: Instant::now(),
        syncing: None,
        batch_seq: rand::random::<u64>() >> 16,
        pending: BTreeMap::new(),
        term_start: u64::MAX,
        lease: Lease::default(),
        ticks: 0,
        encode_buf: Vec::new(),
        turn_commands: Vec::new(),
        log_bytes_after_snapshot: 0,
        log_bytes_at_snapshot_index: 0,
        snapshot_log_bytes: cfg.snapshot_log_bytes,
        bgsnap: None,
        bgsnap_sync: None,
        bgsnap_failed: None,
        snapshot_base_bytes: 0,
        started,
        replayed: false,
        gather: Gather::default(),
        last_turn: TurnSize::default(),
    };
    let (done_tx, done_rx) = mpsc::channel();
    let task = async move {
        let id = group.group_id;
        if let Err(err) = group.run(&mut rx).await {
            tracing::error!(group = id, cause = %err, "raft group stopped on an error");
        }
        group.status.stopped.store(true, Ordering::Release);
        group.status.set_leader(0);
        group.fail_all(ProposeError::Stopped);
        let _ = done_tx.send(());
    };
    // On the node's runtime, so that a proposal, its entry and its reply pass between
    // tasks without waking OS threads; fsync and snapshots step aside with
    // `block_in_place`. Without a runtime (some tests), on a thread of its own.
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(task);
        }
        Err(_) => {
            std::thread::Builder::new()
                .name(format!("raft-{}", cfg.group_id))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(task),
                        Err(err) => {
                            tracing::error!(cause = %err, "cannot start the group's runtime")
                        }
                    }
                })
                .map_err(|e| GroupError::Entry {
                    index: 0,
                    cause: format!("cannot start the group thread: {e}"),
                })?;
        }
    }
    let scripts = store.lock().scripts.watch.clone();
    Ok(Arc::new(GroupHandle {
        group_id: cfg.group_id,
        scripts,
        store,
        tx,
        status,
        done: parking_lot::Mutex::new(Some(done_rx)),
    }))
}

/// Appends an entry if this replica leads: its index, or `None` if nothing was proposed.
///
/// Only a leader may propose. A replica that stopped leading during the turn (a higher
/// term arrived with the messages the turn gathered) would otherwise, in raft-rs (which
/// has no switch for it), forward the entry to the new leader as `MsgPropose` while its
/// clients are told "not the leader" and send their requests again: the new leader would
/// apply both. Found by kelvin-jepsen: a paused leader's INCR and HSET applied twice.
fn propose_entry<S: raft::Storage>(
    raw: &mut RawNode<S>,
    context: Vec<u8>,
    data: Vec<u8>,
) -> Option<u64> {
    if raw.raft.state != StateRole::Leader {
        return None;
    }
    let before = raw.raft.raft_log.last_index();
    match raw.propose(context, data) {
        Ok(()) if raw.raft.raft_log.last_index() > before => Some(raw.raft.raft_log.last_index()),
        _ => None,
    }
}

/// The Raft settings of every group.
fn raft_config(id: u64, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    }
}

/// How long after a failed background snapshot the next is tried.
const BGSNAP_RETRY: Duration = Duration::from_secs(1);

/// How long `stop` waits for the group to finish its turn.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Runs blocking work (fsync, snapshots) from the group's task without stalling the
/// other tasks of its runtime worker.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Clears the keyspace and loads a snapshot file into it. Returns the keys loaded.
fn load_snapshot(store: &Mutex<Store>, path: &std::path::Path) -> Result<usize, GroupError> {
    let reader = SnapshotReader::open(path)?;
    let mut store = store.lock();
    store.clear_all();
    let mut keys = 0;
    for chunk in reader.chunks() {
        keys += crate::snapshot::load_chunk(&mut store, chunk)?;
    }
    Ok(keys)
}

/// One client's share of a log entry.
struct Waiter {
    reply: Option<oneshot::Sender<ProposalResult>>,
    version: RespVersion,
    commands: usize,
}

/// A proposed entry waiting to be applied. It keeps the commands it was made of, so
/// the proposer applies them without decoding its own entry.
struct PendingEntry {
    context: Vec<u8>,
    waiters: Vec<Waiter>,
    batch: LogBatch,
    at: Instant,
}

struct Group {
    group_id: u64,
    node: Arc<Node>,
    store: Arc<Mutex<Store>>,
    raw: RawNode<DiskStorage>,
    sender: Arc<dyn RaftSender>,
    status: Arc<GroupStatus>,
    fsync: AppendFsync,
    last_sync: Instant,
    /// `appendfsync everysec`'s fdatasync running on the blocking pool, if one is
    /// ([`Group::sync_everysec`]).
    syncing: Option<DetachedSync>,
    /// Numbers this node's entries; the context of an entry is (node id, number), so an
    /// applied entry is recognised as ours, or as the one that took our entry's place.
    batch_seq: u64,
    /// Our proposed entries by log index.
    pending: BTreeMap<u64, PendingEntry>,
    /// Index of the first entry of our term as leader; reads wait until it is applied.
    term_start: u64,
    lease: Lease,
    ticks: u64,
    encode_buf: Vec<u8>,
    /// The commands encoded into `encode_buf` this turn.
    turn_commands: Vec<LogCommand>,
    /// Log bytes on disk right after the last snapshot's compaction (the active segment
    /// stays): growth beyond it is what triggers the next snapshot.
    log_bytes_after_snapshot: u64,
    /// The log's size when the snapshot being written was taken (at its index): what
    /// the log grew by meanwhile counts towards the next one.
    log_bytes_at_snapshot_index: u64,
    snapshot_log_bytes: u64,
    /// The snapshot a forked child is writing ([`crate::bgsnap`]).
    bgsnap: Option<crate::bgsnap::Pending>,
    /// The fdatasync of the log up to what [`Self::bgsnap`] covers, started at the fork:
    /// the log is compacted below the snapshot only once both ended.
    bgsnap_sync: Option<DetachedSync>,
    /// When the last child failed (the next waits [`BGSNAP_RETRY`]).
    bgsnap_failed: Option<Instant>,
    /// The keys' bytes the newest snapshot holds: the log may grow as much before the
    /// next.
    snapshot_base_bytes: u64,
    started: Instant,
    replayed: bool,
    gather: Gather,
    last_turn: TurnSize,
}

/// The size of the last entry this node proposed: the next turn's buffers start that
/// big (up to [`TurnSize::MAX_BYTES`]) instead of growing from empty by doubling, which
/// took half a dozen reallocs, copies included, per entry of 50 SETs (~300 instructions
/// per SET).
#[derive(Default, Clone, Copy)]
struct TurnSize {
    bytes: usize,
    commands: usize,
    waiters: usize,
}

impl TurnSize {
    /// Largest capacity a hint asks for: a turn after a big one (a bulk load's) should
    /// not reserve megabytes for a single command.
    const MAX_BYTES: usize = 64 << 10;
    const MAX_ITEMS: usize = 1024;

    fn waiters<T>(&self) -> Vec<T> {
        Vec::with_capacity(self.waiters.min(Self::MAX_ITEMS))
    }
}

/// Whether the group commit's first yield is worth making this turn. A yield lets the
/// connections that are ready run first, so their proposals join the entry; it also
/// costs a trip through the runtime's driver (an `epoll_wait` that finds nothing). With
/// one client at a time nobody else is ever ready: every yield found nothing, a sixth of
/// the syscalls of a SET. So after [`Gather::MISSES_TO_SKIP`] turns in a row whose yield
/// brought nothing, the group yields only every [`Gather::PROBE_EVERY`] turns, until one
/// brings something again (with 50 clients nearly every yield does).
#[derive(Default)]
struct Gather {
    misses: u32,
    turns: u32,
}

impl Gather {
    const MISSES_TO_SKIP: u32 = 8;
    const PROBE_EVERY: u32 = 16;

    /// Whether to make this turn's first yield.
    fn worth_yielding(&mut self) -> bool {
        self.turns = self.turns.wrapping_add(1);
        self.misses < Self::MISSES_TO_SKIP || self.turns.is_multiple_of(Self::PROBE_EVERY)
    }

    /// What the turn's first yield brought: proposals or nothing.
    fn brought(&mut self, proposals: bool) {
        self.misses = match proposals {
            true => 0,
            false => self.misses.saturating_add(1),
        };
    }
}

impl Group {
    async fn run(
        &mut self,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<GroupMsg>,
    ) -> Result<(), GroupError> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A single voter campaigned before the task started: act on it at once.
        self.on_ready().await?;
        self.publish_conf();
        loop {
            let mut batch = self.last_turn.waiters();
            let mut tick = false;
            tokio::select! {
                msg = rx.recv() => match msg {
                    None | Some(GroupMsg::Stop) => return self.sync_on_stop(),
                    Some(msg) => self.handle(msg, &mut batch)?,
                },
                _ = ticker.tick() => tick = true,
            }
            // Group commit: everything that arrives meanwhile joins the same entry. While
            // proposals keep coming, let the connections that are ready run first (a
            // woken task otherwise runs next on its worker: one proposal per entry,
            // ping-pong), for a few rounds at most; while yields find nobody, not at all
            // (see `Gather`).
            let mut rounds = 0;
            let mut yielding = None;
            'gather: loop {
                let before = batch.len();
                if !batch.is_empty()
                    && *yielding.get_or_insert_with(|| self.gather.worth_yielding())
                {
                    if rounds == GATHER_ROUNDS {
                        break;
                    }
                    rounds += 1;
                    tokio::task::yield_now().await;
                }
                while let Ok(msg) = rx.try_recv() {
                    if let GroupMsg::Stop = msg {
                        self.propose_batch(batch)?;
                        self.on_ready().await?;
                        return self.sync_on_stop();
                    }
                    self.handle(msg, &mut batch)?;
                    if self.encode_buf.len() >= MAX_ENTRY_BYTES {
                        break 'gather;
                    }
                }
                if rounds == 1 {
                    self.gather.brought(batch.len() > before);
                }
                if batch.len() == before {
                    break;
                }
            }
            self.propose_batch(batch)?;
            // CONFIG SET appendfsync takes effect at the next turn.
            self.fsync = self.node.settings.read().appendfsync;
            // Zeros ahead of the log's end help only an fdatasync per write.
            self.raw
                .mut_store()
                .set_preallocate(self.fsync == AppendFsync::Always);
            if tick {
                self.raw.tick();
                self.ticks += 1;
                self.renew_lease();
                self.expire_pending();
                self.publish_conf();
            }
            self.on_ready().await?;
            self.sync_everysec()?;
            self.maybe_snapshot()?;
        }
    }

    fn handle(&mut self, msg: GroupMsg, batch: &mut Vec<Waiter>) -> Result<(), GroupError> {
        match msg {
            GroupMsg::Propose(p) => {
                if self.raw.raft.state != StateRole::Leader {
                    let leader = Some(self.raw.raft.leader_id).filter(|&l| l != 0);
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(ProposeError::NotLeader(leader)));
                    }
                    return Ok(());
                }
                if self.encode_buf.is_empty() {
                    // Header written when the entry is cut; reserve its room now.
                    self.encode_buf.resize(BATCH_HEADER, 0);
                }
                let mark = self.encode_buf.len();
                for c in &p.commands {
                    c.encode(&mut self.encode_buf);
                }
                if self.encode_buf.len() - mark > MAX_COMMAND_BYTES {
                    // No entry may outgrow a peer frame: refuse it whole, unwritten.
                    self.encode_buf.truncate(mark);
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(ProposeError::TooLarge));
                    }
                    return Ok(());
                }
                batch.push(Waiter {
                    reply: p.reply,
                    version: p.version,
                    commands: p.commands.len(),
                });
                self.turn_commands.extend(p.commands);
            }
            GroupMsg::Raft(m) => {
                if let Err(err) = self.raw.step(m) {
                    tracing::debug!(group = self.group_id, cause = %err, "raft message ignored");
                }
            }
            GroupMsg::SnapshotSent { to, ok } => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            GroupMsg::Unreachable { peer } => self.raw.report_unreachable(peer),
            GroupMsg::TransferLeader(to) => {
                if self.raw.raft.state == StateRole::Leader && to != self.raw.raft.id {
                    tracing::info!(group = self.group_id, to, "transferring leadership");
                    self.lease.hand_over(&mut self.raw, &self.status, to);
                }
            }
            GroupMsg::ConfChange(op, reply) => {
                let result = self.change_conf(op);
                if let Err(err) = &result {
                    tracing::info!(group = self.group_id, ?op, cause = %err, "membership change refused");
                }
                let _ = reply.send(result);
            }
            GroupMsg::Snapshot(reply) => {
                let result = blocking(|| self.snapshot_now(0)).map_err(|e| e.to_string());
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            GroupMsg::Stop => {}
        }
        Ok(())
    }

    /// Cuts the proposals gathered this turn into one entry.
    fn propose_batch(&mut self, waiters: Vec<Waiter>) -> Result<(), GroupError> {
        if waiters.is_empty() {
            return Ok(());
        }
        self.last_turn = TurnSize {
            bytes: self.encode_buf.len(),
            commands: self.turn_commands.len(),
            waiters: waiters.len(),
        };
        let hint = self.last_turn;
        let mut data = std::mem::replace(
            &mut self.encode_buf,
            Vec::with_capacity(hint.bytes.min(TurnSize::MAX_BYTES)),
        );
        let commands = std::mem::replace(
            &mut self.turn_commands,
            Vec::with_capacity(hint.commands.min(TurnSize::MAX_ITEMS)),
        );
        let count: usize = waiters.iter().map(|w| w.commands).sum();
        let now_ms = crate::cmd::unix_ms();
        data[0] = kelvin_protocol::log::LOG_FORMAT_VERSION;
        data[1..9].copy_from_slice(&now_ms.to_le_bytes());
        data[9..13].copy_from_slice(&(count as u32).to_le_bytes());
        self.batch_seq += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.status.node_id.to_le_bytes());
        context.extend_from_slice(&self.batch_seq.to_le_bytes());
        match propose_entry(&mut self.raw, context.clone(), data) {
            Some(index) => {
                let entry = PendingEntry {
                    context,
                    waiters,
                    batch: LogBatch { now_ms, commands },
                    at: Instant::now(),
                };
                // An older proposal of ours at this index was cut off the log by another
                // leader before we applied that index: it will never be applied.
                if let Some(old) = self.pending.insert(index, entry) {
                    fail(old.waiters, ProposeError::Dropped);
                }
            }
            None => {
                let leader = Some(self.raw.raft.leader_id).filter(|&l| l != 0);
                for w in waiters {
                    if let Some(reply) = w.reply {
                        let _ = reply.send(Err(ProposeError::NotLeader(leader)));
                    }
                }
            }
        }
        Ok(())
    }

    fn renew_lease(&mut self) {
        self.lease.renew(&mut self.raw, &self.status, self.ticks);
    }

    fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        let caught_up = self.applied() >= self.term_start;
        self.lease
            .on_read_states(&self.raw, &self.status, states, caught_up);
    }

    fn applied(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// Answers proposals that have waited too long (a partitioned old leader).
    fn expire_pending(&mut self) {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.at.elapsed() >= PROPOSAL_TIMEOUT)
            .map(|(&i, _)| i)
            .collect();
        for i in late {
            if let Some(p) = self.pending.remove(&i) {
                fail(p.waiters, ProposeError::Unknown);
            }
        }
    }

    fn fail_all(&mut self, err: ProposeError) {
        for (_, p) in std::mem::take(&mut self.pending) {
            fail(p.waiters, err.clone());
        }
    }

    /// Makes everything written to the log durable. The fdatasync runs on the blocking
    /// pool while this task waits, so the worker goes on serving connections (whose
    /// proposals make the next entry).
    async fn sync_now(&mut self) -> Result<(), GroupError> {
        if let Some(sync) = DetachedSync::start(self.raw.mut_store())? {
            sync.wait().await?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// `appendfsync everysec`: once a second, an fdatasync of what the log wrote since
    /// the last one, on the blocking pool while the group goes on (as Redis's background
    /// fsync): a drain or a bulk load writing a hundred MB a second made the fsync take
    /// a tenth of a second and more, and every request of the group waited for it. The
    /// next one starts once this one ended; its failure is the log's, as in turn.
    fn sync_everysec(&mut self) -> Result<(), GroupError> {
        if DetachedSync::pending(&mut self.syncing)? {
            return Ok(());
        }
        if self.fsync != AppendFsync::Everysec || self.last_sync.elapsed() < EVERYSEC {
            return Ok(());
        }
        self.last_sync = Instant::now();
        self.syncing = DetachedSync::start(self.raw.mut_store())?;
        Ok(())
    }

    /// Makes everything written to the log durable before the turn goes on
    /// (`appendfsync always`, votes, before a snapshot): the fdatasync blocks this worker
    /// thread, as Redis's blocks its event loop. Connections on this worker wait meanwhile,
    /// and their requests make the next entry, one fsync for all of them; measured here,
    /// this beats running the fsync on a helper thread (two thread switches per fsync,
    /// smaller entries).
    fn sync_in_turn(&mut self) -> Result<(), GroupError> {
        self.raw.mut_store().sync()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.sender.send(self.group_id, m);
        }
    }

    /// raft-rs's ready loop, in its order.
    async fn on_ready(&mut self) -> Result<(), GroupError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.status.set_leader(ss.leader_id);
            self.node
                .leaders_changed
                .send_modify(|v| *v = v.wrapping_add(1));
            if ss.raft_state == StateRole::Leader {
                self.term_start = self.raw.raft.raft_log.last_index();
                tracing::info!(
                    group = self.group_id,
                    term = self.raw.raft.term,
                    "became leader"
                );
            } else {
                self.term_start = u64::MAX;
            }
        }
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        if *ready.snapshot() != Snapshot::default() {
            let snap = ready.snapshot().clone();
            blocking(|| self.install_snapshot(snap))?;
        }
        self.apply(ready.take_committed_entries())?;
        // This Ready's entries and hard states reach the OS in one write, at the flush
        // below (before anything says they are persisted, or answers a write).
        self.raw.mut_store().hold_writes();
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries())?;
        }
        let mut vote_changed = false;
        if let Some(hs) = ready.hs() {
            let before = self.raw.store().hard_state();
            vote_changed = hs.term != before.term || hs.vote != before.vote;
            self.raw.mut_store().set_hard_state(hs.clone())?;
        }
        let read_states = ready.take_read_states();
        if self.fsync == AppendFsync::Always || vote_changed {
            // A vote or term change is made durable before it is announced, whatever the
            // policy: forgetting a vote could elect two leaders in one term.
            if self.node.groups().is_some_and(|g| g.hosted.len() > 1) {
                // Several groups on this node: in turn they would fsync one after another
                // on the same worker; on the blocking pool their fsyncs overlap. Measured
                // (3 nodes, 3 groups, `always`, redis-benchmark --cluster SET, alternated
                // runs): ~18.5k against ~14k ops/s in turn.
                self.sync_now().await?;
            } else {
                self.sync_in_turn()?;
            }
        }
        if !ready.persisted_messages().is_empty() {
            self.raw.mut_store().flush()?;
            self.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.store().hard_state().clone();
            hs.commit = commit;
            self.raw.mut_store().set_hard_state(hs)?;
        }
        self.raw.mut_store().flush()?;
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        // Applied entries leave memory; the WAL keeps them for a follower that lags.
        let applied = self.applied();
        self.raw.mut_store().release(applied);
        self.after_ready(read_states);
        Ok(())
    }

    fn after_ready(&mut self, read_states: Vec<raft::ReadState>) {
        self.status
            .term
            .store(self.raw.raft.term, Ordering::Relaxed);
        self.status.applied.store(self.applied(), Ordering::Relaxed);
        self.status
            .log_memory
            .store(self.raw.store().memory_bytes(), Ordering::Relaxed);
        self.on_read_states(read_states);
        if !self.replayed && self.applied() >= self.raw.raft.raft_log.committed {
            self.replayed = true;
            tracing::info!(
                group = self.group_id,
                applied = self.applied(),
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "log replayed"
            );
        }
    }

    /// Stopping: make the whole log durable now, whatever the policy.
    fn sync_on_stop(&mut self) -> Result<(), GroupError> {
        let store = self.raw.mut_store();
        blocking(|| store.sync_all())?;
        Ok(())
    }
}

/// Group commit: how many times a turn lets the connections run before it cuts the
/// entry, while each round brings more proposals. Measured with 50 clients under
/// `appendfsync always` (with the WAL's zeros ahead): 1 round ran at about 0.8 of Redis's
/// throughput, 3 to 8 rounds at about parity, 5 a little ahead of the others.
const GATHER_ROUNDS: usize = 5;

/// Bytes before the first command of a batch: version, now_ms, count.
const BATCH_HEADER: usize = 1 + 8 + 4;

/// Hands memory freed by a compaction (the log's entries, the snapshot's buffers) back
/// to the OS: glibc keeps freed heap otherwise, and RSS would stay at its high-water mark.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Decodes a protobuf payload of the entry at `index` (a membership change).
fn decode_pb<M: protobuf::Message + Default>(index: u64, data: &[u8]) -> Result<M, GroupError> {
    let mut m = M::default();
    m.merge_from_bytes(data).map_err(|e| GroupError::Entry {
        index,
        cause: e.to_string(),
    })?;
    Ok(m)
}

fn fail(waiters: Vec<Waiter>, err: ProposeError) {
    for w in waiters {
        if let Some(reply) = w.reply {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
