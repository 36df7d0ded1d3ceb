//! The node: shared state, the listener and the background tasks.
//!
//! How it fits: [`Node`] holds what every connection shares (the store behind its lock,
//! settings, clients, pub/sub, counters). [`serve`] accepts connections, bounded by
//! `maxclients`, and runs the active expiry sweep; a shutdown signal stops the listener,
//! tells every connection to finish, and returns once they have.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use kelvin_protocol::log::LogCommand;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use crate::cluster::Membership;
use crate::config::Settings;
use crate::group::{GroupConfig, GroupHandle, ProposalResult, RaftSender};
use crate::pubsub::Hub;

/// How often the active expiry sweep runs (Redis's `hz 10`).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Most entries one sweep tick examines, so it never holds the store lock for long.
pub const SWEEP_BUDGET: usize = 20_000;

/// What CLIENT LIST and CLIENT INFO show about a connection, and the handle to kill it.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub name: Mutex<Option<String>>,
    pub lib_name: Mutex<Option<String>>,
    pub lib_ver: Mutex<Option<String>>,
    pub last_cmd: Mutex<&'static str>,
    pub last_active: Mutex<Instant>,
    pub db: AtomicUsize,
    pub resp: AtomicUsize,
    pub subs: AtomicUsize,
    pub psubs: AtomicUsize,
    /// Commands queued in MULTI, or -1 (as `multi=` shows).
    pub multi: Mutex<i64>,
    /// Parked in a blocking command (INFO's `blocked_clients` counts these).
    pub blocked: AtomicBool,
    killed: AtomicBool,
    kill_signal: Notify,
    /// CLIENT UNBLOCK's request to the blocked command: [`UNBLOCK_NONE`],
    /// [`UNBLOCK_TIMEOUT`] or [`UNBLOCK_ERROR`].
    unblock: AtomicU8,
    unblock_signal: Notify,
    /// The connection's buffers, as CLIENT LIST shows them.
    pub memory: ClientMemory,
}

/// A connection's buffer figures, published by its task after each turn.
#[derive(Debug, Default)]
pub struct ClientMemory {
    /// Query buffer: bytes received and not yet run, and its free room.
    pub qbuf: AtomicUsize,
    pub qbuf_free: AtomicUsize,
    /// The reply buffer's allocation, and the bytes of it not yet written to the socket.
    pub obuf: AtomicUsize,
    pub omem: AtomicUsize,
}

/// No CLIENT UNBLOCK pending.
/// How long a connection refused for `maxclients` is kept open, reading and dropping
/// what the client sends, after its error line ([`reject`]).
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// Most refused connections kept open so at once; past it they close at once.
const MAX_REJECTS_LINGERING: usize = 64;

/// Answers a connection past `maxclients` with Redis's error line and closes it. The
/// client may have sent a request already (redis-py sends `CLIENT SETINFO` as it
/// connects): closed with it unread, the connection is reset and the client may see a
/// broken pipe instead of the error line. So the write side is shut and what comes is
/// read and dropped until the client closes, for at most [`REJECT_LINGER`], and for at
/// most [`MAX_REJECTS_LINGERING`] connections at once.
async fn reject(mut socket: tokio::net::TcpStream, lingering: Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if socket
        .write_all(b"-ERR max number of clients reached\r\n")
        .await
        .is_err()
    {
        return;
    }
    if lingering.fetch_add(1, Ordering::AcqRel) < MAX_REJECTS_LINGERING {
        let _ = socket.shutdown().await;
        let _ = tokio::time::timeout(REJECT_LINGER, async {
            let mut buf = [0u8; 4096];
            while let Ok(1..) = socket.read(&mut buf).await {}
        })
        .await;
    }
    lingering.fetch_sub(1, Ordering::AcqRel);
}

pub const UNBLOCK_NONE: u8 = 0;
/// CLIENT UNBLOCK id [TIMEOUT]: the command answers as if its timeout passed.
pub const UNBLOCK_TIMEOUT: u8 = 1;
/// CLIENT UNBLOCK id ERROR: the command answers `-UNBLOCKED`.
pub const UNBLOCK_ERROR: u8 = 2;

impl ClientInfo {
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr) -> Self {
        let now = Instant::now();
        ClientInfo {
            id,
            addr,
            laddr,
            created: now,
            name: Mutex::new(None),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            last_cmd: Mutex::new("NULL"),
            last_active: Mutex::new(now),
            db: AtomicUsize::new(0),
            resp: AtomicUsize::new(2),
            subs: AtomicUsize::new(0),
            psubs: AtomicUsize::new(0),
            multi: Mutex::new(-1),
            blocked: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            kill_signal: Notify::new(),
            unblock: AtomicU8::new(UNBLOCK_NONE),
            unblock_signal: Notify::new(),
            memory: ClientMemory::default(),
        }
    }

    /// CLIENT UNBLOCK: asks the connection's blocked command to answer now, as on its
    /// timeout or with an error (`how`: [`UNBLOCK_TIMEOUT`] or [`UNBLOCK_ERROR`]).
    pub fn request_unblock(&self, how: u8) {
        self.unblock.store(how, Ordering::Release);
        self.unblock_signal.notify_one();
    }

    /// Takes the pending CLIENT UNBLOCK request, [`UNBLOCK_NONE`] if there is none.
    pub fn take_unblock(&self) -> u8 {
        self.unblock.swap(UNBLOCK_NONE, Ordering::AcqRel)
    }

    /// Waits for a CLIENT UNBLOCK request (the signal may be stale: check
    /// [`ClientInfo::take_unblock`]).
    pub async fn unblock_requested(&self) {
        self.unblock_signal.notified().await
    }

    /// Asks the connection to close (CLIENT KILL, a pub/sub client that lags).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill_signal.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub async fn killed(&self) {
        self.kill_signal.notified().await
    }

    /// One line of CLIENT LIST, in Redis's field order.
    pub fn describe(&self) -> String {
        let now = Instant::now();
        let flags = if self.subs.load(Ordering::Relaxed) + self.psubs.load(Ordering::Relaxed) > 0 {
            "P"
        } else if *self.multi.lock() >= 0 {
            "x"
        } else if self.blocked.load(Ordering::Relaxed) {
            "b"
        } else {
            "N"
        };
        let m = &self.memory;
        let qbuf = m.qbuf.load(Ordering::Relaxed);
        let qbuf_free = m.qbuf_free.load(Ordering::Relaxed);
        let (obuf, omem) = (
            m.obuf.load(Ordering::Relaxed),
            m.omem.load(Ordering::Relaxed),
        );
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.name.lock().as_deref().unwrap_or(""),
            now.duration_since(self.created).as_secs(),
            now.duration_since(*self.last_active.lock()).as_secs(),
            flags,
            self.db.load(Ordering::Relaxed),
            self.subs.load(Ordering::Relaxed),
            self.psubs.load(Ordering::Relaxed),
            *self.multi.lock(),
            qbuf,
            qbuf_free,
            omem,
            qbuf + qbuf_free + obuf,
            self.last_cmd.lock(),
            self.resp.load(Ordering::Relaxed),
            self.lib_name.lock().as_deref().unwrap_or(""),
            self.lib_ver.lock().as_deref().unwrap_or(""),
        )
    }
}

/// Counters INFO reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
}

/// How a node starts its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new cluster (`CLUSTER KELVIN-BOOTSTRAP`), or the embedded node: a group whose
    /// log is new is created with the replicas the topology lists as its voters.
    Bootstrap,
    /// A restart from `cluster.conf`: every log keeps its own membership; a log that is
    /// still empty waits for its leader.
    Restart,
    /// Added to a running cluster (`CLUSTER KELVIN-JOIN`): an empty meta replica, no data
    /// group until the topology gives it one.
    Join,
}

/// The data groups a node takes part in, and which group owns each slot.
pub struct Groups {
    /// This node's replicas, by group id.
    pub hosted: std::collections::BTreeMap<u64, Arc<GroupHandle>>,
    /// The group owning each slot.
    pub slot_group: Vec<u64>,
    /// The group owning every slot, when there is only one (the embedded node, a cluster
    /// of one group): routing needs no slot then.
    pub only: Option<u64>,
}

impl Groups {
    fn new(hosted: std::collections::BTreeMap<u64, Arc<GroupHandle>>, m: &Membership) -> Groups {
        let slot_group = m.slot_groups();
        let only = Some(slot_group[0]).filter(|g| slot_group.iter().all(|s| s == g));
        Groups {
            hosted,
            slot_group,
            only,
        }
    }

    /// The group owning `slot`, and this node's replica of it if it has one.
    pub fn for_slot(&self, slot: usize) -> (u64, Option<&Arc<GroupHandle>>) {
        let id = self.slot_group.get(slot).copied().unwrap_or(0);
        (id, self.hosted.get(&id))
    }
}

/// Everything the connections of one node share.
pub struct Node {
    pub settings: RwLock<Settings>,
    /// `maxmemory`, `maxmemory-policy`, `maxmemory-samples`, as atomics (see
    /// [`crate::evict`]); CONFIG SET changes them with the settings.
    pub memory: crate::evict::Limits,
    /// Wakes the evictor ([`crate::evict::task`]) at once: a write found its group over
    /// `maxmemory`.
    pub evict_wanted: Notify,
    /// Bumped after every pass of the evictor; writes waiting for eviction watch it.
    pub evictions: watch::Sender<u64>,
    pub clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    pub pubsub: Hub,
    pub stats: Stats,
    /// CLIENT PAUSE.
    pub pause: crate::pause::ClientPause,
    pub started: Instant,
    /// 40 hex characters, new each start, as Redis's `run_id`.
    pub run_id: String,
    pub local_addr: SocketAddr,
    next_client_id: AtomicU64,
    shutdown_tx: watch::Sender<bool>,
    /// This node's Raft id ([`crate::cluster::EMBEDDED_NODE_ID`] when not clustered).
    pub node_id: AtomicU64,
    /// The data groups this node replicates, once it is part of a cluster: replaced as a
    /// whole when the topology changes.
    groups: RwLock<Option<Arc<Groups>>>,
    /// This node's replica of the meta group, which holds the topology (clustered nodes).
    meta: OnceLock<Arc<GroupHandle>>,
    /// Held while the node starts or changes the groups it hosts.
    reconciling: Mutex<()>,
    /// The members and groups of the cluster, for relaying and redirecting.
    pub membership: RwLock<Membership>,
    /// Where Raft messages go (the cluster transport; nowhere for a single node).
    pub raft_sender: OnceLock<Arc<dyn RaftSender>>,
    /// Bumped whenever any group of this node sees its leader change, for requests
    /// waiting out an election.
    pub leaders_changed: watch::Sender<u64>,
    /// What this node measured of the migrations it drove and the fault-ins it served.
    pub migrations: crate::migrate::figures::Log,
    /// The sources' filters of the keys of the migrations this node leads the target of
    /// (fault-ins of keys a source never held need no pull).
    pub absent: crate::migrate::absent::Absent,
    /// Ids for the transactions across groups this node coordinates.
    pub tx_ids: crate::txn::TxIds,
    /// Relay connections Kelvin's own connections keep between uses.
    pub relay_pool: crate::conn::RelayPool,
}

impl Node {
    pub fn new(settings: Settings, local_addr: SocketAddr) -> Arc<Node> {
        use rand::Rng;
        let run_id: String = {
            let mut rng = rand::thread_rng();
            (0..40)
                .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let (shutdown_tx, _) = watch::channel(false);
        let memory = crate::evict::Limits::default();
        memory.set(settings.memory_limit());
        Arc::new(Node {
            settings: RwLock::new(settings),
            memory,
            evict_wanted: Notify::new(),
            evictions: watch::channel(0).0,
            clients: Mutex::new(HashMap::new()),
            pubsub: Hub::default(),
            stats: Stats::default(),
            pause: Default::default(),
            started: Instant::now(),
            run_id,
            local_addr,
            next_client_id: AtomicU64::new(1),
            shutdown_tx,
            node_id: AtomicU64::new(crate::cluster::EMBEDDED_NODE_ID),
            groups: RwLock::new(None),
            meta: OnceLock::new(),
            reconciling: Mutex::new(()),
            membership: RwLock::new(Membership::default()),
            raft_sender: OnceLock::new(),
            leaders_changed: watch::channel(0).0,
            migrations: Default::default(),
            tx_ids: Default::default(),
            relay_pool: Default::default(),
            absent: Default::default(),
        })
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a graceful shutdown (SHUTDOWN, SIGTERM, SIGINT).
    pub fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
        // The groups' tasks hold the node: stop them here, or neither would ever go.
        // Stopping fsyncs what the log holds and answers what still waits.
        if let Some(groups) = self.groups() {
            for group in groups.hosted.values() {
                group.stop();
            }
        }
        if let Some(meta) = self.meta.get() {
            meta.stop();
        }
        if let Some(sender) = self.raft_sender.get() {
            sender.shutdown();
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Publishes keyspace notifications that commands queued.
    pub fn publish_events(&self, events: &mut Vec<crate::notify::KeyEvent>) {
        if events.is_empty() {
            return;
        }
        if self.pubsub.is_idle() {
            events.clear();
            return;
        }
        let flags = self.settings.read().notify_flags;
        for ev in events.drain(..) {
            if flags & crate::notify::KEYSPACE != 0 {
                let mut channel = format!("__keyspace@{}__:", ev.db).into_bytes();
                channel.extend_from_slice(&ev.key);
                self.pubsub.publish(&channel, ev.event.as_bytes());
            }
            if flags & crate::notify::KEYEVENT != 0 {
                let channel = format!("__keyevent@{}__:{}", ev.db, ev.event);
                self.pubsub.publish(channel.as_bytes(), &ev.key);
            }
        }
    }

    /// The lowest-numbered group this node replicates (the only one while a cluster is a
    /// single group): what keyless commands and INFO use.
    pub fn group(&self) -> Option<Arc<GroupHandle>> {
        self.groups.read().as_ref()?.hosted.values().next().cloned()
    }

    /// The data groups, once the node is part of a cluster.
    pub fn groups(&self) -> Option<Arc<Groups>> {
        self.groups.read().clone()
    }

    /// This node's replica of group `id` (the meta group included).
    pub fn hosted(&self, id: u64) -> Option<Arc<GroupHandle>> {
        if id == crate::cluster::META_GROUP {
            return self.meta.get().cloned();
        }
        self.groups.read().as_ref()?.hosted.get(&id).cloned()
    }

    /// This node's replica of the meta group.
    pub fn meta(&self) -> Option<&Arc<GroupHandle>> {
        self.meta.get()
    }

    pub fn id(&self) -> u64 {
        self.node_id.load(Ordering::Relaxed)
    }

    /// The client address of member `id`.
    pub fn peer_client_addr(&self, id: u64) -> Option<SocketAddr> {
        self.membership.read().member(id).map(|m| m.client_addr())
    }

    /// Starts the embedded node's group, or this node's replica of every group of
    /// `membership` it belongs to, and of the meta group.
    pub fn start_group(self: &Arc<Self>, membership: Membership, how: Start) -> Result<(), String> {
        self.start_cluster(membership, how)
    }

    /// See [`Start`] for what each way of starting creates.
    pub fn start_cluster(
        self: &Arc<Self>,
        membership: Membership,
        how: Start,
    ) -> Result<(), String> {
        let joining = how == Start::Join;
        let _busy = self.reconciling.lock();
        if self.groups.read().is_some() {
            return Err("this node is already part of a group".into());
        }
        let sender = self.raft_sender.get_or_init(|| Arc::new(NoPeers)).clone();
        for m in &membership.members {
            if m.id != self.id() {
                sender.set_peer(m.id, m.cluster_addr());
            }
        }
        if !membership.members.is_empty() {
            // A cluster.conf from before the meta group (epoch 0) bootstraps it once.
            let voters = match how {
                Start::Bootstrap => membership.voters(),
                Start::Restart if membership.epoch == 0 => membership.voters(),
                Start::Restart | Start::Join => Vec::new(),
            };
            let meta = self.open_group(crate::cluster::META_GROUP, voters)?;
            let _ = self.meta.set(meta);
        }
        let mine: Vec<(u64, Vec<u64>)> = if membership.members.is_empty() {
            vec![(crate::cluster::DATA_GROUP, vec![self.id()])]
        } else if joining {
            Vec::new()
        } else {
            membership
                .groups
                .iter()
                .filter(|g| g.replicas.contains(&self.id()))
                .map(|g| (g.id, g.replicas.clone()))
                .collect()
        };
        let mut hosted = std::collections::BTreeMap::new();
        for (id, voters) in mine {
            // Only a new cluster creates its groups' memberships; after that each group's
            // log holds its own, and a replica whose log is still empty (added, never
            // sent its snapshot) must wait for its leader, not found a group of its own.
            let voters = match how {
                Start::Bootstrap => voters,
                Start::Restart | Start::Join => Vec::new(),
            };
            hosted.insert(id, self.open_group(id, voters)?);
        }
        let groups = Groups::new(hosted, &membership);
        *self.membership.write() = membership;
        *self.groups.write() = Some(Arc::new(groups));
        Ok(())
    }

    /// Opens (or creates, with `voters`) this node's replica of group `id`.
    fn open_group(self: &Arc<Self>, id: u64, voters: Vec<u64>) -> Result<Arc<GroupHandle>, String> {
        let sender = self.raft_sender.get_or_init(|| Arc::new(NoPeers)).clone();
        let (data_dir, fsync) = {
            let s = self.settings.read();
            (s.data_dir.clone(), s.appendfsync)
        };
        crate::group::start(
            self.clone(),
            GroupConfig {
                node_id: self.id(),
                group_id: id,
                dir: group_dir(&data_dir, id),
                voters,
                fsync,
                snapshot_log_bytes: crate::group::SNAPSHOT_LOG_BYTES,
            },
            sender,
        )
        .map_err(|e| format!("group {id}: {e}"))
    }

    /// The meta group applied something: catch up with the topology it holds, off the
    /// group's task (starting and stopping groups does file I/O and waits).
    pub fn topology_changed(self: &Arc<Self>) {
        let node = self.clone();
        let run = move || node.reconcile();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(run)),
            Err(_) => drop(std::thread::spawn(run)),
        }
    }

    /// Brings the groups this node hosts, its peers and `cluster.conf` in line with the
    /// topology the meta group holds, if that is newer than what the node runs:
    /// - a group the topology now gives this node starts (empty if it never ran here: the
    ///   group's leader adds it as a learner and sends it a snapshot);
    /// - a group it no longer gives this node stops, and its folder is deleted (its
    ///   leader removed this replica from the group's Raft membership first);
    /// - the slot map and the addresses of members follow.
    pub fn reconcile(self: &Arc<Self>) {
        let _busy = self.reconciling.lock();
        let Some(meta) = self.meta.get() else {
            return;
        };
        let new = match crate::cluster::stored_topology(&mut meta.store.lock()) {
            None => return,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::error!(cause = %e, "the meta group holds a topology that does not parse");
                return;
            }
        };
        let Some(current) = self.groups() else {
            return;
        };
        if new.epoch <= self.membership.read().epoch.max(1) {
            return;
        }
        let sender = self.raft_sender.get_or_init(|| Arc::new(NoPeers)).clone();
        for m in &new.members {
            if m.id != self.id() {
                sender.set_peer(m.id, m.cluster_addr());
            }
        }
        let mut hosted = std::collections::BTreeMap::new();
        for g in new
            .groups
            .iter()
            .filter(|g| g.replicas.contains(&self.id()))
        {
            // A group new to the topology whose only replica is this node (a resharding
            // target made for it) is founded here; any other new replica waits for its
            // group's leader to add it.
            let founder = g.replicas == [self.id()]
                && self.membership.read().group(g.id).is_none()
                && !group_dir(&self.settings.read().data_dir, g.id).exists();
            let voters = match founder {
                true => vec![self.id()],
                false => Vec::new(),
            };
            let handle = match current.hosted.get(&g.id) {
                Some(h) => h.clone(),
                None => match self.open_group(g.id, voters) {
                    Ok(h) => {
                        tracing::info!(
                            group = g.id,
                            epoch = new.epoch,
                            "replica added to this node"
                        );
                        h
                    }
                    Err(e) => {
                        // Retried at the next change or restart; meanwhile the group is
                        // reached through its other replicas.
                        tracing::error!(group = g.id, cause = %e, "cannot start a replica the topology gives this node");
                        continue;
                    }
                },
            };
            hosted.insert(g.id, handle);
        }
        let removed: Vec<Arc<GroupHandle>> = current
            .hosted
            .iter()
            .filter(|(id, _)| !hosted.contains_key(id))
            .map(|(_, h)| h.clone())
            .collect();
        let groups = Groups::new(hosted, &new);
        let data_dir = self.settings.read().data_dir.clone();
        if let Err(e) = new.save(&data_dir) {
            tracing::error!(cause = %e, "cannot write cluster.conf");
        }
        tracing::info!(epoch = new.epoch, "topology changed");
        *self.membership.write() = new;
        *self.groups.write() = Some(Arc::new(groups));
        // Requests waiting for a leader or for this topology route again.
        self.leaders_changed.send_modify(|n| *n += 1);
        for h in removed {
            h.stop();
            let dir = group_dir(&data_dir, h.group_id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(group = h.group_id, "replica removed from this node"),
                Err(e) => {
                    tracing::warn!(group = h.group_id, cause = %e, "cannot delete the removed replica's folder")
                }
            }
        }
    }

    /// Whether the meta replica here holds a newer topology than the one this node
    /// routes by (applied, not yet reconciled): a redirect waits for it.
    pub fn topology_pending(&self) -> bool {
        let Some(meta) = self.meta.get() else {
            return false;
        };
        let stored = crate::cluster::stored_epoch(&mut meta.store.lock());
        matches!(stored, Some(epoch) if epoch > self.membership.read().epoch)
    }

    /// Once the meta group has a leader here and holds no topology yet (a new cluster, or
    /// one formed before the meta group existed), proposes this node's: the first to be
    /// applied wins, the others find the epoch taken. Also catches up with a topology the
    /// node missed (a snapshot loaded at start).
    pub fn meta_housekeeping(self: &Arc<Self>) {
        let Some(meta) = self.meta.get() else {
            return;
        };
        // A script holding the store: next time (this runs periodically).
        let Some(mut meta_store) = meta.store.try_lock() else {
            return;
        };
        let stored = crate::cluster::stored_topology(&mut meta_store);
        drop(meta_store);
        match stored {
            Some(Ok(m)) if m.epoch > self.membership.read().epoch.max(1) => self.topology_changed(),
            Some(_) => {}
            None if meta.status.is_leader() && self.groups.read().is_some() => {
                let mut m = self.membership.read().clone();
                m.epoch = m.epoch.max(1);
                self.propose_topology(0, &m);
            }
            None => {}
        }
    }

    /// Proposes `KELVIN.TOPOLOGY expected <m>` to the meta group (this node must lead it).
    /// Nobody waits for the answer: callers read the topology back.
    pub fn propose_topology(&self, expected: u64, m: &Membership) {
        if let Some(meta) = self.meta.get() {
            meta.propose(crate::group::Proposal {
                commands: vec![LogCommand::Single {
                    db: 0,
                    argv: vec![
                        bytes::Bytes::from_static(crate::machine::META_TOPOLOGY),
                        bytes::Bytes::from(expected.to_string()),
                        bytes::Bytes::from(m.render()),
                    ],
                }],
                version: kelvin_protocol::RespVersion::Resp2,
                reply: None,
            });
        }
    }

    /// One tick of the active expiry sweep, on the leader only: walks slots with expiring
    /// keys from where the last tick stopped, stops after [`SWEEP_BUDGET`] entries, and
    /// proposes the deletion of what it found expired (replicas delete when the entry is
    /// applied, never on their own clock). Each group this node leads is swept. Returns
    /// the proposals to wait for.
    pub fn sweep_expired(&self, now_ms: u64) -> Vec<oneshot::Receiver<ProposalResult>> {
        let Some(groups) = self.groups() else {
            return Vec::new();
        };
        groups
            .hosted
            .values()
            .filter_map(|g| sweep_group(g, now_ms))
            .collect()
    }
}

/// [`Node::sweep_expired`] for one group.
fn sweep_group(group: &GroupHandle, now_ms: u64) -> Option<oneshot::Receiver<ProposalResult>> {
    {
        if !group.status.is_leader() {
            return None;
        }
        let mut commands = Vec::new();
        {
            // A script holding the store (it may run for a while): skip this tick rather
            // than block the runtime worker.
            let mut store = group.store.try_lock()?;
            let dbs: Vec<usize> = store
                .dbs()
                .filter(|(_, k)| k.expires_count() > 0)
                .map(|(i, _)| i)
                .collect();
            for db in dbs {
                let mut budget = SWEEP_BUDGET;
                let mut doomed = Vec::new();
                let ks = store.db(db);
                let mut visited_slots = 0;
                while budget > 0 && visited_slots < kelvin_protocol::SLOT_COUNT {
                    let slot = ks.sweep_slot;
                    ks.sweep_slot = (slot + 1) % kelvin_protocol::SLOT_COUNT;
                    visited_slots += 1;
                    let table = ks.slot(slot);
                    if table.expires == 0 {
                        continue;
                    }
                    budget = budget.saturating_sub(table.map.len());
                    doomed.extend(
                        table
                            .map
                            .iter()
                            .filter(|(_, e)| e.is_expired(now_ms))
                            .map(|(k, _)| bytes::Bytes::copy_from_slice(k.as_bytes())),
                    );
                }
                if !doomed.is_empty() {
                    commands.push(LogCommand::ExpireKeys {
                        db: db as u8,
                        keys: doomed,
                    });
                }
            }
        }
        group.propose_housekeeping(commands)
    }
}

/// The sender of a node without peers.
struct NoPeers;

impl RaftSender for NoPeers {
    fn send(&self, _group: u64, _msg: raft::eraftpb::Message) {}
}

/// Accepts connections until shutdown, then waits for them to finish.
/// Accepts on the main listener and, if given, the redirect listener (`--redirect-port`).
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    redirect: Option<TcpListener>,
) -> anyhow::Result<()> {
    let mut shutdown = node.shutdown_signal();
    let active = Arc::new(AtomicUsize::new(0));
    let lingering = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());

    let sweeper = {
        let node = node.clone();
        let mut shutdown = node.shutdown_signal();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        node.meta_housekeeping();
                        // One sweep proposal at a time: the next tick waits for it.
                        for done in node.sweep_expired(crate::cmd::unix_ms()) {
                            let _ = done.await;
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    let evictor = tokio::spawn(crate::evict::task::run(node.clone()));

    loop {
        let accepted = tokio::select! {
            res = listener.accept() => res,
            res = async {
                match &redirect {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => res,
            _ = shutdown.changed() => break,
        };
        let (socket, addr) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        node.stats
            .connections_received
            .fetch_add(1, Ordering::Relaxed);
        let _ = socket.set_nodelay(true);
        let maxclients = node.settings.read().maxclients;
        if active.load(Ordering::Acquire) >= maxclients {
            node.stats
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            let lingering = lingering.clone();
            tokio::spawn(reject(socket, lingering));
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let node = node.clone();
        let active = active.clone();
        let all_done = all_done.clone();
        tokio::spawn(async move {
            crate::conn::Connection::run(node, socket, addr).await;
            if active.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_done.notify_waiters();
            }
        });
    }
    tracing::info!("shutting down: waiting for connections to close");
    // Connections watch the same signal; give them a bounded time to flush replies.
    let drain = async {
        while active.load(Ordering::Acquire) > 0 {
            let notified = all_done.notified();
            if active.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    sweeper.abort();
    evictor.abort();
    Ok(())
}

/// Where group `id` keeps its log and snapshots: `<data-dir>/group-<id>`, and
/// `<data-dir>/meta` for the meta group.
pub fn group_dir(data_dir: &std::path::Path, id: u64) -> std::path::PathBuf {
    if id == crate::cluster::META_GROUP {
        return data_dir.join("meta");
    }
    data_dir.join(format!("group-{id}"))
}
