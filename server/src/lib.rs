//! Kelvin: a Redis-compatible session store.
//!
//! How it fits (see docs/ARCHITECTURE.md):
//! - [`node`]: shared state, listener, expiry sweep, shutdown;
//! - [`conn`]: one task per client, pipelined batches, MULTI queueing, pub/sub pushes;
//! - [`cmd`]: the command table, one family per file;
//! - [`store`]: 16 databases of per-slot tables, deterministic writes;
//! - [`pubsub`], [`notify`]: channels, patterns, keyspace notifications;
//! - [`config`]: flags, config file, CONFIG GET/SET;
//! - [`transport`]: the authenticated node-to-node channel for Raft messages and snapshots.

pub mod bgsnap;
pub mod cluster;
pub mod cmd;
pub mod cmdstats;
pub mod config;
pub mod conn;
pub mod evict;
pub mod failpoint;
pub mod geohash;
pub mod group;
pub mod learning;
pub mod machine;
pub mod migrate;
pub mod node;
pub mod notify;
pub mod pause;
pub mod pubsub;
pub mod raftlog;
pub mod rdb;
pub mod redis_params;
pub mod relay;
pub mod script;
pub mod snapshot;
pub mod store;
pub mod transport;
pub mod txn;
pub mod zset;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Args, Settings};
pub use node::Node;

/// A running server, for tests and embedding: the bound address and the node.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub node: Arc<Node>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds the listener from `settings` (port 0 picks a free one), opens the data group
/// (loading its snapshot; the log replays on the group's thread) and serves in the
/// background. With a cluster port, the node-to-node transport starts too, and the group
/// only if this node already belongs to a cluster (`cluster.conf`); otherwise it waits
/// for `CLUSTER KELVIN-BOOTSTRAP`.
pub async fn start(settings: Settings) -> anyhow::Result<Server> {
    let listener = TcpListener::bind((settings.bind, settings.port)).await?;
    let addr = listener.local_addr()?;
    let mut settings = settings;
    let redirect = match settings.redirect_port {
        Some(p) => {
            let l = TcpListener::bind((settings.bind, p)).await?;
            // Port 0 picked a free one: remember which.
            settings.redirect_port = Some(l.local_addr()?.port());
            Some(l)
        }
        None => None,
    };
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
    let cluster = settings
        .cluster_port
        .map(|p| (p, settings.cluster_secret.clone(), settings.bind));
    let node = Node::new(settings, addr);
    match cluster {
        None => {
            let node = node.clone();
            tokio::task::spawn_blocking(move || {
                node.start_group(cluster::Membership::default(), node::Start::Bootstrap)
            })
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open the log in {}: {e}", data_dir.display()))?;
        }
        Some((cport, secret, bind)) => {
            let id = cluster::load_or_create_id(&data_dir)?;
            node.node_id.store(id, std::sync::atomic::Ordering::Relaxed);
            let (tx, rx) = tokio::sync::mpsc::channel(transport::INBOUND_QUEUE_LEN);
            let snap_root = data_dir.clone();
            let transport = transport::Transport::start(
                transport::TransportConfig {
                    node_id: id,
                    listen: std::net::SocketAddr::new(bind, cport),
                    secret: secret.into_bytes(),
                    snapshot_dir: std::sync::Arc::new(move |group| {
                        node::group_dir(&snap_root, group).join("snap")
                    }),
                },
                tx,
            )
            .await?;
            let _ = node.raft_sender.set(Arc::new(transport));
            tokio::spawn(deliver_inbound(node.clone(), rx));
            tokio::spawn(migrate::driver::run(
                conn::Internal::new(&node),
                node.leaders_changed.subscribe(),
                node.shutdown_signal(),
            ));
            tokio::spawn(learning::run(node.clone(), node.shutdown_signal()));
            tokio::spawn(txn::resolve::run(
                conn::Internal::new(&node),
                node.shutdown_signal(),
            ));
            if let Some(m) = cluster::Membership::load(&data_dir)? {
                let node = node.clone();
                tokio::task::spawn_blocking(move || node.start_group(m, node::Start::Restart))
                    .await?
                    .map_err(|e| {
                        anyhow::anyhow!("cannot open the log in {}: {e}", data_dir.display())
                    })?;
            }
        }
    }
    let task = tokio::spawn(node::serve(node.clone(), listener, redirect));
    Ok(Server { addr, node, task })
}

/// Hands what the transport received to the group.
async fn deliver_inbound(node: Arc<Node>, mut rx: tokio::sync::mpsc::Receiver<transport::Inbound>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            transport::Inbound::Raft { group, msg } => {
                if let Some(g) = node.hosted(group) {
                    g.step(msg);
                }
            }
            transport::Inbound::SnapshotSent { group, to, ok } => {
                if let Some(g) = node.hosted(group) {
                    g.snapshot_sent(to, ok);
                }
            }
            transport::Inbound::Publish { channel, message } => {
                node.pubsub.publish(&channel, &message);
            }
            transport::Inbound::Unreachable { peer } => {
                if let Some(groups) = node.groups() {
                    for g in groups.hosted.values() {
                        g.unreachable(peer);
                    }
                }
                if let Some(meta) = node.meta() {
                    meta.unreachable(peer);
                }
            }
        }
    }
}

impl group::RaftSender for transport::Transport {
    fn send(&self, group: u64, msg: raft::eraftpb::Message) {
        transport::Transport::send(self, group, msg)
    }

    fn set_peer(&self, id: u64, addr: std::net::SocketAddr) {
        transport::Transport::set_peer(self, id, addr)
    }

    fn publish(&self, channel: &[u8], message: &[u8]) {
        transport::Transport::publish(self, channel, message)
    }

    fn shutdown(&self) {
        transport::Transport::shutdown(self)
    }
}
