//! Raft-level tests of the data group: several nodes in one process, their groups joined
//! by an in-memory network that can cut links, isolate nodes and drop messages (in the
//! manner of raft-rs's `harness/src/network.rs`).
//!
//! Each node is a real [`Node`] with its own keyspace and its own group started by
//! [`group::start`] on its own temp dir; nothing goes through TCP. Snapshots travel the
//! way the TCP transport carries them: the file named by `msg.snapshot.data` is copied
//! from the sender's `<group dir>/snap/` to the receiver's, then the message is delivered
//! and the sender's group is told the snapshot was sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kelvin_protocol::log::LogCommand;
use kelvin_protocol::RespVersion;
use kelvin_server::config::AppendFsync;
use kelvin_server::group::{self, GroupConfig, GroupHandle, Proposal, ProposeError, RaftSender};
use kelvin_server::store::Value;
use kelvin_server::{Node, Settings};
use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{Message, MessageType};
use rand::{Rng, SeedableRng};

const GROUP: u64 = 0;
/// Longest any wait in these tests may take before it is a failure.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------

/// An in-memory [`RaftSender`] shared by every group of a cluster.
struct Network {
    handles: RwLock<HashMap<u64, Arc<GroupHandle>>>,
    /// Group dir of each node (snapshot files live in `<dir>/snap`).
    dirs: HashMap<u64, PathBuf>,
    /// Directed links that drop everything.
    cut: Mutex<HashSet<(u64, u64)>>,
    /// Percentage of messages dropped at random (on links that are not cut).
    drop_pct: AtomicU32,
    rng: Mutex<rand::rngs::StdRng>,
    delivered: AtomicU64,
    dropped: AtomicU64,
    snapshots_sent: AtomicU64,
}

impl Network {
    fn new(dirs: HashMap<u64, PathBuf>, seed: u64) -> Arc<Network> {
        Arc::new(Network {
            handles: RwLock::new(HashMap::new()),
            dirs,
            cut: Mutex::new(HashSet::new()),
            drop_pct: AtomicU32::new(0),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
        })
    }

    /// Cuts both directions between `a` and `b`.
    fn cut(&self, a: u64, b: u64) {
        let mut cut = self.cut.lock();
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Cuts every link of `n`.
    fn isolate(&self, n: u64) {
        let ids: Vec<u64> = self.dirs.keys().copied().collect();
        for other in ids {
            if other != n {
                self.cut(n, other);
            }
        }
    }

    /// Restores every link and stops dropping messages.
    fn heal(&self) {
        self.cut.lock().clear();
        self.drop_pct.store(0, Ordering::Relaxed);
    }

    fn set_drop(&self, pct: u32) {
        self.drop_pct.store(pct, Ordering::Relaxed);
    }

    fn passes(&self, from: u64, to: u64) -> bool {
        if self.cut.lock().contains(&(from, to)) {
            return false;
        }
        let pct = self.drop_pct.load(Ordering::Relaxed);
        pct == 0 || self.rng.lock().gen_range(0..100) >= pct
    }

    /// What the transport does before delivering a `MsgSnapshot`: puts the file it names
    /// into the receiver's snapshot dir.
    fn copy_snapshot(&self, msg: &Message) -> std::io::Result<()> {
        let name = String::from_utf8_lossy(msg.get_snapshot().get_data()).into_owned();
        let missing = |id| std::io::Error::other(format!("no node {id}"));
        let src = self.dirs.get(&msg.from).ok_or_else(|| missing(msg.from))?;
        let dst = self.dirs.get(&msg.to).ok_or_else(|| missing(msg.to))?;
        let dst_dir = dst.join("snap");
        std::fs::create_dir_all(&dst_dir)?;
        let part = dst_dir.join(format!("{name}.part"));
        std::fs::copy(src.join("snap").join(&name), &part)?;
        std::fs::rename(part, dst_dir.join(&name))
    }
}

impl RaftSender for Network {
    fn send(&self, group: u64, msg: Message) {
        assert_eq!(group, GROUP, "one group per node in these tests");
        let (from, to) = (msg.from, msg.to);
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let handles = self.handles.read();
        let (Some(dst), sender) = (handles.get(&to), handles.get(&from)) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.passes(from, to) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if is_snapshot {
                if let Some(s) = sender {
                    s.snapshot_sent(to, false);
                }
            }
            return;
        }
        if is_snapshot {
            let ok = self.copy_snapshot(&msg).is_ok();
            if let Some(s) = sender {
                s.snapshot_sent(to, ok);
            }
            if !ok {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        dst.step(msg);
    }
}

// ---------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------

struct Cluster {
    net: Arc<Network>,
    nodes: BTreeMap<u64, Arc<Node>>,
    /// For the oneshot replies (timeouts).
    rt: tokio::runtime::Runtime,
    voters: Vec<u64>,
    snapshot_log_bytes: u64,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes, ids 1..=n, all voters of one new group.
    fn start(n: u64, seed: u64) -> Cluster {
        Cluster::start_with(n, seed, group::SNAPSHOT_LOG_BYTES)
    }

    /// [`Cluster::start`] with a snapshot taken every `snapshot_log_bytes` of log.
    fn start_with(n: u64, seed: u64, snapshot_log_bytes: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids: Vec<u64> = (1..=n).collect();
        let dirs: HashMap<u64, PathBuf> = ids
            .iter()
            .map(|&id| (id, dir.path().join(format!("node-{id}")).join("group-0")))
            .collect();
        let net = Network::new(dirs, seed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mut c = Cluster {
            net,
            nodes: BTreeMap::new(),
            rt,
            voters: ids.clone(),
            snapshot_log_bytes,
            _dir: dir,
        };
        for id in ids {
            c.start_node(id);
        }
        c
    }

    /// Starts node `id` (a new `Node`, its group on its dir: a restart if the dir holds a
    /// log).
    fn start_node(&mut self, id: u64) {
        let group_dir = self.net.dirs[&id].clone();
        let data_dir = group_dir.parent().expect("node dir").to_path_buf();
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let settings = Settings {
            port: 0,
            data_dir,
            appendfsync: AppendFsync::No,
            ..Settings::default()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let node = Node::new(settings, addr);
        node.node_id.store(id, Ordering::Relaxed);
        let handle = group::start(
            node.clone(),
            GroupConfig {
                node_id: id,
                group_id: GROUP,
                dir: group_dir,
                voters: self.voters.clone(),
                fsync: AppendFsync::No,
                snapshot_log_bytes: self.snapshot_log_bytes,
            },
            self.net.clone(),
        )
        .expect("group starts");
        self.net.handles.write().insert(id, handle);
        self.nodes.insert(id, node);
    }

    /// Stops node `id` (its group fsyncs and exits); messages to it are dropped.
    fn stop_node(&mut self, id: u64) {
        let handle = self.net.handles.write().remove(&id);
        if let Some(h) = handle {
            h.stop();
        }
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown();
        }
    }

    fn restart_node(&mut self, id: u64) {
        self.stop_node(id);
        self.start_node(id);
    }

    fn handle(&self, id: u64) -> Arc<GroupHandle> {
        self.net.handles.read()[&id].clone()
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn applied(&self, id: u64) -> u64 {
        self.handle(id).status.applied.load(Ordering::Relaxed)
    }

    fn term(&self, id: u64) -> u64 {
        self.handle(id).status.term.load(Ordering::Relaxed)
    }

    /// Nodes (among `among`) that think they lead.
    fn leaders(&self, among: &[u64]) -> Vec<u64> {
        among
            .iter()
            .copied()
            .filter(|&id| self.handle(id).status.is_leader())
            .collect()
    }

    /// Waits until exactly one of `among` leads and the others follow it; returns it.
    fn wait_leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders = self.leaders(among);
            if let [l] = leaders[..] {
                let agreed = among
                    .iter()
                    .all(|&id| self.handle(id).status.leader() == Some(l));
                if agreed {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single agreed leader among {among:?} after {WAIT:?}: leaders {leaders:?}, views {:?}",
                among
                    .iter()
                    .map(|&id| (id, self.handle(id).status.leader()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `argv` (db 0) to node `id`'s group without waiting for the answer.
    fn propose_async(
        &self,
        id: u64,
        argv: &[&str],
    ) -> tokio::sync::oneshot::Receiver<group::ProposalResult> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle(id).propose(Proposal {
            commands: vec![LogCommand::Single {
                db: 0,
                argv: argv
                    .iter()
                    .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                    .collect(),
            }],
            version: RespVersion::Resp2,
            reply: Some(tx),
        });
        rx
    }

    /// Waits up to `timeout` for the answer of a proposal: `None` if it did not come.
    fn wait_reply(
        &self,
        rx: tokio::sync::oneshot::Receiver<group::ProposalResult>,
        timeout: Duration,
    ) -> Option<Result<Vec<u8>, ProposeError>> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, rx).await })
        {
            Ok(Ok(result)) => Some(result.map(|a| a.out)),
            Ok(Err(_)) => Some(Err(ProposeError::Stopped)),
            Err(_) => None,
        }
    }

    /// Proposes `argv` at node `id` and waits (up to `timeout`) for the reply bytes.
    fn propose(
        &self,
        id: u64,
        argv: &[&str],
        timeout: Duration,
    ) -> Option<Result<Vec<u8>, ProposeError>> {
        let rx = self.propose_async(id, argv);
        self.wait_reply(rx, timeout)
    }

    /// SET through the current leader of `among`, retrying (SET is idempotent) until
    /// it is acknowledged with `+OK`.
    fn set_acked(&self, among: &[u64], key: &str, value: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.wait_leader(among);
            match self.propose(leader, &["SET", key, value], Duration::from_secs(3)) {
                Some(Ok(out)) => {
                    assert_eq!(out, b"+OK\r\n", "SET {key} at {leader}");
                    return;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "SET {key} not acknowledged within {WAIT:?}; last answer {other:?}"
                ),
            }
        }
    }

    /// Database 0 of node `id`, every value rendered as a string.
    fn dump(&self, id: u64) -> BTreeMap<String, String> {
        let store = self.net.handles.read()[&id].store.clone();
        let store = store.lock();
        let mut out = BTreeMap::new();
        for (db, ks) in store.dbs() {
            for (key, entry) in ks.iter() {
                let key = String::from_utf8_lossy(key.as_bytes()).into_owned();
                let value = match &entry.value {
                    Value::Str(s) => String::from_utf8_lossy(s).into_owned(),
                    other => format!("<{}>", other.type_name()),
                };
                let key = if db == 0 {
                    key
                } else {
                    format!("db{db}:{key}")
                };
                out.insert(key, value);
            }
        }
        out
    }

    /// Waits until every node of `among` applied the same index (and it holds still for
    /// a moment), then checks their keyspaces are identical; returns that keyspace.
    fn wait_converged(&self, among: &[u64]) -> BTreeMap<String, String> {
        let deadline = Instant::now() + WAIT;
        let mut stable_since: Option<(Vec<u64>, Instant)> = None;
        loop {
            let applied: Vec<u64> = among.iter().map(|&id| self.applied(id)).collect();
            let same = applied.windows(2).all(|w| w[0] == w[1]);
            if same {
                match &stable_since {
                    Some((prev, at)) if *prev == applied => {
                        if at.elapsed() >= Duration::from_millis(300) {
                            let first = self.dump(among[0]);
                            let all_same = among[1..].iter().all(|&id| self.dump(id) == first);
                            if all_same {
                                return first;
                            }
                            assert!(
                                Instant::now() < deadline,
                                "stores differ at applied index {applied:?}: {}",
                                among
                                    .iter()
                                    .map(|&id| format!("\n node {id}: {:?}", self.dump(id)))
                                    .collect::<String>()
                            );
                        }
                    }
                    _ => stable_since = Some((applied.clone(), Instant::now())),
                }
            } else {
                stable_since = None;
            }
            assert!(
                Instant::now() < deadline,
                "applied indexes never matched within {WAIT:?}: {:?}",
                among
                    .iter()
                    .map(|&id| (id, self.applied(id), self.term(id)))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every group (the group threads hold the nodes).
    fn stop(&self) {
        let handles: Vec<Arc<GroupHandle>> = self.net.handles.read().values().cloned().collect();
        for h in &handles {
            h.stop();
        }
        for node in self.nodes.values() {
            node.shutdown();
        }
        self.net.handles.write().clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn assert_contains_all(store: &BTreeMap<String, String>, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        assert_eq!(
            store.get(k),
            Some(v),
            "acknowledged write {k}={v} is missing from the converged store"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Three nodes elect one leader; 100 SETs through it reach every node.
#[test]
fn three_nodes_elect_one_leader_and_replicate() {
    let c = Cluster::start(3, 1);
    let ids = c.ids();
    let leader = c.wait_leader(&ids);
    // Hold for a few election timeouts: still exactly one leader, same one.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.leaders(&ids), vec![leader], "a second leader appeared");

    let mut acked = BTreeMap::new();
    for i in 0..100 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        let out = c
            .propose(leader, &["SET", &k, &v], Duration::from_secs(5))
            .unwrap_or_else(|| panic!("SET {k} got no answer in 5 s"))
            .unwrap_or_else(|e| panic!("SET {k} failed on a healthy cluster: {e:?}"));
        assert_eq!(out, b"+OK\r\n");
        acked.insert(k, v);
    }
    // A reply the machine writes: INCR on a replicated key.
    let out = c
        .propose(leader, &["INCR", "counter"], Duration::from_secs(5))
        .expect("INCR answered")
        .expect("INCR applied");
    assert_eq!(out, b":1\r\n");
    acked.insert("counter".into(), "1".into());

    // A follower refuses proposals, naming the leader.
    let follower = *ids.iter().find(|&&id| id != leader).unwrap();
    let err = c
        .propose(follower, &["SET", "x", "y"], Duration::from_secs(5))
        .expect("follower answers at once");
    assert_eq!(err, Err(ProposeError::NotLeader(Some(leader))));

    let store = c.wait_converged(&ids);
    assert_eq!(store, acked);
    assert_eq!(c.leaders(&ids), vec![leader]);
}

/// The leader is isolated: the majority elects another and goes on; what the old leader
/// accepted meanwhile never succeeds; after healing it follows and converges.
#[test]
fn isolated_leader_is_replaced_and_converges() {
    let c = Cluster::start(3, 2);
    let ids = c.ids();
    let old = c.wait_leader(&ids);
    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let (k, v) = (format!("before{i}"), format!("v{i}"));
        c.set_acked(&ids, &k, &v);
        acked.insert(k, v);
    }
    c.wait_converged(&ids);

    c.net.isolate(old);
    // Proposed at once, before check_quorum makes it step down: appended to its log,
    // never committed.
    let doomed: Vec<_> = (0..5)
        .map(|i| {
            let k = format!("doomed{i}");
            c.propose_async(old, &["SET", &k, "lost"])
        })
        .collect();

    let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != old).collect();
    let new = c.wait_leader(&rest);
    assert_ne!(new, old);
    // Stale reads: once the new leader commits a write, the old one's read lease must
    // be over (or it would serve reads missing that write).
    c.set_acked(&rest, "lease-probe", "1");
    acked.insert("lease-probe".to_string(), "1".to_string());
    assert!(
        !c.handle(old).status.can_read_locally(),
        "the isolated old leader {old} still holds a read lease after {new} committed a write"
    );
    for i in 0..20 {
        let (k, v) = (format!("during{i}"), format!("v{i}"));
        c.set_acked(&rest, &k, &v);
        acked.insert(k, v);
    }
    // The old leader stepped down on its own (check_quorum), and refuses writes.
    let deadline = Instant::now() + WAIT;
    while c.handle(old).status.is_leader() {
        assert!(
            Instant::now() < deadline,
            "isolated old leader {old} never stepped down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let late = c.propose(old, &["SET", "doomed-late", "lost"], Duration::from_secs(2));
    if let Some(Ok(out)) = late {
        panic!(
            "isolated old leader acknowledged a write: {}",
            String::from_utf8_lossy(&out)
        );
    }

    c.net.heal();
    let leader = c.wait_leader(&ids);
    assert_ne!(
        leader, old,
        "the old leader came back as leader without the others' log"
    );
    for i in 0..5 {
        let (k, v) = (format!("after{i}"), format!("v{i}"));
        c.set_acked(&ids, &k, &v);
        acked.insert(k, v);
    }
    // Every doomed proposal ends in an error (Dropped / Unknown / NotLeader), never OK.
    for (i, rx) in doomed.into_iter().enumerate() {
        match c.wait_reply(rx, Duration::from_secs(15)) {
            Some(Ok(out)) => panic!(
                "doomed{i}, proposed at the isolated leader, was acknowledged: {}",
                String::from_utf8_lossy(&out)
            ),
            Some(Err(e)) => eprintln!("doomed{i}: {e:?}"),
            None => panic!("doomed{i} was never answered (PROPOSAL_TIMEOUT is 10 s)"),
        }
    }
    let store = c.wait_converged(&ids);
    assert_contains_all(&store, &acked);
    let stray: Vec<&String> = store.keys().filter(|k| k.starts_with("doomed")).collect();
    assert!(stray.is_empty(), "unacknowledged writes applied: {stray:?}");
    assert_eq!(store, acked);
}

/// A follower cut off while the leader writes more than KEEP_ENTRIES entries and
/// compacts its log catches up from a snapshot once the link is back.
#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let c = Cluster::start(3, 3);
    let ids = c.ids();
    let leader = c.wait_leader(&ids);
    let lagger = *ids.iter().find(|&&id| id != leader).unwrap();
    let mut acked = BTreeMap::new();
    c.set_acked(&ids, "first", "1");
    acked.insert("first".to_string(), "1".to_string());
    c.wait_converged(&ids);
    let lagger_applied = c.applied(lagger);

    c.net.isolate(lagger);
    let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != lagger).collect();
    // One proposal at a time: one entry each (concurrent ones would share entries).
    let entries = group::KEEP_ENTRIES + 500;
    let started = Instant::now();
    let mut leader = c.wait_leader(&rest);
    for i in 0..entries {
        let (k, v) = (format!("k{}", i % 2000), format!("v{i}"));
        loop {
            match c.propose(leader, &["SET", &k, &v], Duration::from_secs(5)) {
                Some(Ok(_)) => break,
                _ => leader = c.wait_leader(&rest),
            }
        }
        acked.insert(k, v);
    }
    eprintln!("{entries} sequential entries in {:?}", started.elapsed());
    let leader = c.wait_leader(&rest);
    let snap_index = c
        .handle(leader)
        .snapshot(Some(Duration::from_secs(10)))
        .expect("leader snapshot");
    assert!(
        snap_index >= lagger_applied + group::KEEP_ENTRIES,
        "snapshot at {snap_index} does not compact past the lagger's {lagger_applied}"
    );
    assert_eq!(
        c.applied(lagger),
        lagger_applied,
        "isolated node applied entries"
    );

    c.net.heal();
    let store = c.wait_converged(&ids);
    assert!(
        c.net.snapshots_sent.load(Ordering::Relaxed) >= 1,
        "the lagger caught up without a snapshot (the log was not compacted enough?)"
    );
    let snaps: Vec<_> = std::fs::read_dir(c.net.dirs[&lagger].join("snap"))
        .expect("lagger snap dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert!(!snaps.is_empty(), "no snapshot file on the lagger");
    assert_contains_all(&store, &acked);
    assert_eq!(store, acked);

    // And it keeps following from the log after the snapshot.
    let leader = c.wait_leader(&ids);
    c.set_acked(&ids, "after-snapshot", "yes");
    let store = c.wait_converged(&ids);
    assert_eq!(
        store.get("after-snapshot").map(String::as_str),
        Some("yes"),
        "leader {leader}"
    );
}

/// 20% of messages dropped at random: writes still get through, and once the network is
/// healthy every node holds every acknowledged write.
#[test]
fn lossy_network_makes_progress_and_converges() {
    let c = Cluster::start(3, 4);
    let ids = c.ids();
    c.wait_leader(&ids);
    c.net.set_drop(20);
    let mut acked = BTreeMap::new();
    let started = Instant::now();
    for i in 0..100 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        c.set_acked(&ids, &k, &v);
        acked.insert(k, v);
    }
    eprintln!(
        "100 writes under 20% loss in {:?} ({} delivered, {} dropped)",
        started.elapsed(),
        c.net.delivered.load(Ordering::Relaxed),
        c.net.dropped.load(Ordering::Relaxed)
    );
    assert!(
        c.net.dropped.load(Ordering::Relaxed) > 0,
        "nothing was dropped"
    );
    c.net.heal();
    let store = c.wait_converged(&ids);
    assert_contains_all(&store, &acked);
    assert_eq!(store, acked);
}

/// A minority cut from the majority (2 of 5 nodes) cannot commit; the majority can.
#[test]
fn minority_partition_cannot_commit() {
    let c = Cluster::start(5, 5);
    let ids = c.ids();
    let leader = c.wait_leader(&ids);
    // Put the leader in the minority with one other node.
    let buddy = *ids.iter().find(|&&id| id != leader).unwrap();
    let minority = [leader, buddy];
    let majority: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    for &a in &minority {
        for &b in &majority {
            c.net.cut(a, b);
        }
    }
    let doomed = c.propose_async(leader, &["SET", "minority", "lost"]);
    let new = c.wait_leader(&majority);
    assert!(majority.contains(&new));
    let mut acked = BTreeMap::new();
    c.set_acked(&majority, "majority", "won");
    acked.insert("majority".to_string(), "won".to_string());
    // The minority never elects a leader of its own that can commit.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(l) = c.leaders(&minority).first() {
            if let Some(Ok(out)) = c.propose(
                *l,
                &["SET", "minority2", "lost"],
                Duration::from_millis(300),
            ) {
                panic!(
                    "minority node {l} acknowledged a write: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.net.heal();
    let leader = c.wait_leader(&ids);
    assert!(
        majority.contains(&leader),
        "minority node {leader} (log missing committed entries) won after healing"
    );
    match c.wait_reply(doomed, Duration::from_secs(15)) {
        Some(Ok(out)) => panic!(
            "write at the minority leader acknowledged: {}",
            String::from_utf8_lossy(&out)
        ),
        Some(Err(_)) => {}
        None => panic!("write at the minority leader never answered"),
    }
    let store = c.wait_converged(&ids);
    assert_eq!(store, acked);
}

/// Nodes restart on their own dirs (log replay, hard state): a follower while the others
/// write, then a follower that caught up by snapshot (snapshot file + log after it), then
/// the whole cluster at once.
#[test]
fn restarted_nodes_keep_their_state() {
    let mut c = Cluster::start(3, 6);
    let ids = c.ids();
    let leader = c.wait_leader(&ids);
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let (k, v) = (format!("a{i}"), format!("v{i}"));
        c.set_acked(&ids, &k, &v);
        acked.insert(k, v);
    }
    c.wait_converged(&ids);

    // A follower restarts while writes go on without it.
    let follower = *ids.iter().find(|&&id| id != leader).unwrap();
    c.stop_node(follower);
    let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != follower).collect();
    for i in 0..30 {
        let (k, v) = (format!("b{i}"), format!("v{i}"));
        c.set_acked(&rest, &k, &v);
        acked.insert(k, v);
    }
    c.start_node(follower);
    let store = c.wait_converged(&ids);
    assert_eq!(store, acked, "after restarting follower {follower}");

    // A follower catches up by snapshot, then restarts: it must come back from the
    // snapshot it installed plus the log after it.
    let leader = c.wait_leader(&ids);
    let lagger = *ids.iter().find(|&&id| id != leader).unwrap();
    c.net.isolate(lagger);
    let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != lagger).collect();
    let mut leader = c.wait_leader(&rest);
    for i in 0..group::KEEP_ENTRIES + 200 {
        let (k, v) = (format!("c{}", i % 500), format!("v{i}"));
        loop {
            match c.propose(leader, &["SET", &k, &v], Duration::from_secs(5)) {
                Some(Ok(_)) => break,
                _ => leader = c.wait_leader(&rest),
            }
        }
        acked.insert(k, v);
    }
    c.handle(leader)
        .snapshot(Some(Duration::from_secs(10)))
        .expect("leader snapshot");
    let sent = c.net.snapshots_sent.load(Ordering::Relaxed);
    c.net.heal();
    c.wait_converged(&ids);
    assert!(
        c.net.snapshots_sent.load(Ordering::Relaxed) > sent,
        "no snapshot was sent"
    );
    for i in 0..10 {
        let (k, v) = (format!("d{i}"), format!("v{i}"));
        c.set_acked(&ids, &k, &v);
        acked.insert(k, v);
    }
    c.wait_converged(&ids);
    c.restart_node(lagger);
    let store = c.wait_converged(&ids);
    assert_eq!(
        store, acked,
        "after restarting {lagger}, which installed a snapshot"
    );
    assert_eq!(c.dump(lagger), acked);

    // The leader, which compacted its log, restarts too.
    let leader = c.wait_leader(&ids);
    c.restart_node(leader);
    for i in 0..10 {
        let (k, v) = (format!("e{i}"), format!("v{i}"));
        c.set_acked(&ids, &k, &v);
        acked.insert(k, v);
    }
    let store = c.wait_converged(&ids);
    assert_eq!(store, acked, "after restarting the old leader {leader}");

    // Everyone at once.
    for &id in &ids {
        c.stop_node(id);
    }
    for &id in &ids {
        c.start_node(id);
    }
    c.wait_leader(&ids);
    c.set_acked(&ids, "f", "after-full-restart");
    acked.insert("f".into(), "after-full-restart".into());
    let store = c.wait_converged(&ids);
    assert_eq!(store, acked, "after restarting the whole cluster");
}

/// Random partitions, isolations and message loss while clients RPUSH unique values at
/// random nodes. Afterwards: every acknowledged value is in the list exactly once, at the
/// position its reply (the list length) said; a proposal answered NotLeader or Dropped
/// ("nothing was written") is not in the list at all; no value appears twice.
#[test]
fn chaos_rpush_outcomes_match_replies() {
    // CHAOS_SEEDS=100 for a longer hunt.
    let seeds: u64 = std::env::var("CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for seed in 11..11 + seeds {
        chaos_round(seed);
    }
}

fn chaos_round(seed: u64) {
    let c = Cluster::start(3, seed);
    let ids = c.ids();
    c.wait_leader(&ids);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pending = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(5) {
        // Heal about every 1.5 s, so partitions outlast election timeouts.
        match rng.gen_range(0..50) {
            0 => c.net.heal(),
            1 => c.net.isolate(ids[rng.gen_range(0..ids.len())]),
            2 => {
                let a = ids[rng.gen_range(0..ids.len())];
                let b = ids[rng.gen_range(0..ids.len())];
                if a != b {
                    c.net.cut(a, b);
                }
            }
            3 => c.net.set_drop(rng.gen_range(0..40)),
            _ => {}
        }
        for _ in 0..3 {
            // Mostly at a node that thinks it leads (two may, across a partition).
            let leaders = c.leaders(&ids);
            let at = if !leaders.is_empty() && rng.gen_bool(0.8) {
                leaders[rng.gen_range(0..leaders.len())]
            } else {
                ids[rng.gen_range(0..ids.len())]
            };
            let value = format!("v{n}");
            n += 1;
            pending.push((
                value.clone(),
                at,
                c.propose_async(at, &["RPUSH", "log", &value]),
            ));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    c.net.heal();
    c.wait_leader(&ids);
    let mut outcomes = BTreeMap::new();
    for (value, at, rx) in pending {
        let got = c
            .wait_reply(rx, group::PROPOSAL_TIMEOUT + Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{value} (at node {at}) never answered"));
        outcomes.insert(value, got);
    }
    c.wait_converged(&ids);
    let list: Vec<String> = {
        let store = c.net.handles.read()[&ids[0]].store.clone();
        let store = store.lock();
        match store
            .db_ref(0)
            .and_then(|ks| ks.raw_get(b"log"))
            .map(|e| &e.value)
        {
            Some(Value::List(l)) => l
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            None => Vec::new(),
            Some(other) => panic!("log is a {}", other.type_name()),
        }
    };
    let mut positions = BTreeMap::new();
    for (i, v) in list.iter().enumerate() {
        if let Some(prev) = positions.insert(v.clone(), i) {
            panic!("seed {seed}: {v} applied twice (positions {prev} and {i})");
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (value, got) in &outcomes {
        let pos = positions.get(value);
        match got {
            Ok(out) => {
                *counts.entry("ok").or_default() += 1;
                let pos = pos.unwrap_or_else(|| {
                    panic!("seed {seed}: {value} was acknowledged but is not in the list")
                });
                let expected = format!(":{}\r\n", pos + 1);
                assert_eq!(
                    String::from_utf8_lossy(out),
                    expected,
                    "seed {seed}: RPUSH {value} answered a length that does not match its position"
                );
            }
            Err(e @ (ProposeError::NotLeader(_) | ProposeError::Dropped)) => {
                *counts.entry("not written").or_default() += 1;
                assert!(
                    pos.is_none(),
                    "seed {seed}: {value} was answered {e:?} (nothing written) but is in the list at {pos:?}"
                );
            }
            Err(_) => *counts.entry("unknown").or_default() += 1,
        }
    }
    eprintln!(
        "seed {seed}: {} proposals, {counts:?}, list length {}, {} msgs dropped",
        outcomes.len(),
        list.len(),
        c.net.dropped.load(Ordering::Relaxed)
    );
}

/// Regression: the snapshot trigger once compared the whole log on disk (the active
/// segment always stays) with the threshold, so past it every turn wrote a full snapshot
/// (a 1M-key load took 198 s instead of 3). Now it counts the log written since the last
/// snapshot, and (since snapshots are written by a forked child) waits for as much log
/// as the keyspace holds: 200 writes of 1 KiB with a 32 KiB threshold make a few
/// snapshots (at ~32, ~64, ~128 KiB), each recorded once its child is done.
#[test]
fn snapshots_follow_log_growth_not_log_size() {
    let c = Cluster::start_with(1, 7, 32 << 10);
    let leader = c.wait_leader(&[1]);
    let value = "v".repeat(1024);
    for i in 0..200 {
        c.set_acked(&[leader], &format!("k{i}"), &value);
    }
    // The last child may still be writing: its snapshot counts once recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut snapshots = 0;
    while std::time::Instant::now() < deadline {
        snapshots = c.handle(1).status.snapshots.load(Ordering::Relaxed);
        if snapshots >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        (2..=20).contains(&snapshots),
        "{snapshots} snapshots for ~200 KiB of log at a 32 KiB threshold"
    );
    assert_eq!(c.dump(1).len(), 200);
    c.stop();
}
