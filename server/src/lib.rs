//! Kelvin: a Redis-compatible session store.
//!
//! How it fits (see docs/ARCHITECTURE.md):
//! - [`node`]: shared state, listener, expiry sweep, shutdown;
//! - [`conn`]: one task per client, pipelined batches, MULTI queueing, pub/sub pushes;
//! - [`cmd`]: the command table, one family per file;
//! - [`store`]: 16 databases of per-slot tables, deterministic writes;
//! - [`pubsub`], [`notify`]: channels, patterns, keyspace notifications;
//! - [`config`]: flags, config file, CONFIG GET/SET.

pub mod cmd;
pub mod config;
pub mod conn;
pub mod node;
pub mod notify;
pub mod pubsub;
pub mod snapshot;
pub mod store;
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

/// Binds the listener from `settings` (port 0 picks a free one) and serves in the
/// background.
pub async fn start(settings: Settings) -> anyhow::Result<Server> {
    let listener = TcpListener::bind((settings.bind, settings.port)).await?;
    let addr = listener.local_addr()?;
    let node = Node::new(settings, addr);
    let task = tokio::spawn(node::serve(node.clone(), listener));
    Ok(Server { addr, node, task })
}
