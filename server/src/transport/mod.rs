//! The node-to-node channel: Raft messages and snapshot files between Kelvin nodes.
//!
//! How it fits: each Raft group's task hands the messages of a `Ready` to
//! [`Transport::send`], which never waits: it pushes onto a bounded queue for the
//! destination node and returns. One writer task per peer owns the outbound connection,
//! drains its queue in batches and writes each batch with one `write` + `flush`. Each
//! accepted connection gets a reader task that authenticates the connector and forwards
//! the messages it carries into the [`Inbound`] channel, which the node routes to groups.
//! Raft itself retransmits, so a message dropped on a full queue or a broken connection
//! costs a round trip, never correctness; the transport tells Raft about those failures
//! through [`Inbound::Unreachable`] and [`Inbound::SnapshotSent`].
//!
//! Every connection carries traffic one way only: a node sends on the connection it
//! opened and receives on the ones it accepted. The frames are those of
//! [`kelvin_protocol::peer`]:
//!
//! ```text
//! frame = len:u32 BE (kind + body) | kind:u8 | body
//!
//! connector                                   acceptor
//!    | ---------------- TCP connect ------------> |
//!    | <-- Challenge { nonce_a } ----------------- |
//!    | --- Hello { id_c, nonce_c,                  |
//!    |       proof = H(secret|nonce_a|id_c|"kelvin-peer-hello") } --> |   checked in constant time;
//!    | <-- Welcome { id_a,                          |   wrong => warn, close
//!    |       proof = H(secret|nonce_c|id_a|"kelvin-peer-welcome") } - |
//!    | --- Raft { group, eraftpb::Message bytes } -> |   forwarded to Inbound::Raft
//!    | --- SnapshotChunk { group, name, offset, data, last } ... -->  |   appended to <dir>/<name>.part
//!    | --- Raft { group, MsgSnapshot (data = name) } --------------> |   after <name>.part -> <name>
//! ```
//!
//! H is SHA-256, ids are little-endian u64 inside the hash. The handshake is bounded by
//! [`HANDSHAKE_TIMEOUT`] and its frames by `MAX_HANDSHAKE_FRAME_BYTES`, so a stranger can
//! neither hold a reader nor make it buffer much. Nothing from a connection is delivered
//! before its Hello proof checks out.
//!
//! Snapshots: a `MsgSnapshot`'s `snapshot.data` carries a file name relative to
//! `(snapshot_dir)(group)`. The writer streams the file in [`SNAPSHOT_CHUNK_BYTES`] chunks
//! ahead of the message itself, so the receiver has the whole file, renamed and fsynced,
//! before Raft sees the message.
//!
//! Here: the configuration, [`Transport`] and the frame helpers; [`outbound`] holds the
//! writers, [`inbound`] the accept loop, the readers and the snapshot receiver.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kelvin_protocol::peer::{
    self, PeerFrame, PeerFrameError, MAX_HANDSHAKE_FRAME_BYTES, MAX_PEER_FRAME_BYTES,
};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

use inbound::accept_loop;
use outbound::PeerWriter;

/// Messages waiting for one peer's writer. Past this, [`Transport::send`] drops (and
/// counts) instead of waiting: Raft retransmits, and a stalled peer must not stall the
/// group tasks or grow memory without bound.
/// Inbound messages buffered between the transport and the groups.
pub const INBOUND_QUEUE_LEN: usize = 4096;
pub const PEER_QUEUE_LEN: usize = 4096;

/// First wait before reconnecting to a peer after a failure; doubles per failure.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest wait between reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Bound on connecting plus the whole handshake, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the pieces a snapshot file is streamed in (and the most of it held in memory).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// What the transport needs to know about this node.
#[derive(Clone)]
pub struct TransportConfig {
    /// This node's id, announced in the handshake.
    pub node_id: u64,
    /// Address to accept peer connections on (port 0 picks one).
    pub listen: SocketAddr,
    /// The cluster secret both ends prove knowledge of.
    pub secret: Vec<u8>,
    /// Directory holding the snapshot files of a group, on both the sending and the
    /// receiving side.
    pub snapshot_dir: Arc<dyn Fn(u64) -> PathBuf + Send + Sync>,
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What the transport hands to the node.
#[derive(Debug)]
pub enum Inbound {
    /// A message for group `group`, from an authenticated peer.
    Raft { group: u64, msg: Message },
    /// A snapshot for `to` in `group` was streamed (`ok`) or could not be: tell Raft
    /// `report_snapshot(to, Finish | Failure)`.
    SnapshotSent { group: u64, to: u64, ok: bool },
    /// A PUBLISH made on a peer, for this node's subscribers.
    Publish { channel: Bytes, message: Bytes },
    /// The connection to `peer` failed: tell every group `report_unreachable(peer)`.
    /// Sent once per failure episode, i.e. again only after a successful reconnection.
    Unreachable { peer: u64 },
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Raft messages written to a peer connection (snapshot messages included).
    pub sent: u64,
    /// Raft messages dropped: queue full, unknown peer, broken connection, unreadable
    /// snapshot, unencodable message.
    pub dropped: u64,
    /// Successful connections to a peer after an earlier connection or failed attempt.
    pub reconnects: u64,
    /// Accepted connections that failed the handshake.
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why a connection or handshake ended.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] PeerFrameError),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("peer failed to prove the cluster secret")]
    BadProof,
    #[error("expected node {expected}, reached node {got}")]
    WrongPeer { expected: u64, got: u64 },
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    #[error("connection closed by peer")]
    Closed,
    #[error("undecodable raft message: {0}")]
    BadMessage(#[from] protobuf::ProtobufError),
}

/// One outgoing message: a Raft message of a group, or a PUBLISH for the peer's
/// subscribers.
enum Outgoing {
    Raft(u64, Message),
    Publish(Bytes, Bytes),
}

struct PeerHandle {
    queue: mpsc::Sender<Outgoing>,
    addr: watch::Sender<SocketAddr>,
    /// Cancels this peer's writer (child of the transport's token).
    stop: CancellationToken,
}

struct Shared {
    node_id: u64,
    secret: Vec<u8>,
    snapshot_dir: Arc<dyn Fn(u64) -> PathBuf + Send + Sync>,
    local_addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    /// Never held across an await: `send` and `set_peer` only look up or insert.
    peers: Mutex<HashMap<u64, PeerHandle>>,
    shutdown: CancellationToken,
    counters: Counters,
}

/// The node-to-node channel; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl Transport {
    /// Binds `cfg.listen` and starts accepting peer connections in the background.
    pub async fn start(
        cfg: TransportConfig,
        inbound: mpsc::Sender<Inbound>,
    ) -> io::Result<Transport> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            node_id: cfg.node_id,
            secret: cfg.secret,
            snapshot_dir: cfg.snapshot_dir,
            local_addr,
            inbound,
            peers: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            counters: Counters::default(),
        });
        let span = info_span!("peer_listener", node = shared.node_id, addr = %local_addr);
        tokio::spawn(accept_loop(shared.clone(), listener).instrument(span));
        Ok(Transport { shared })
    }

    /// The address peer connections are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Adds peer `id` at `addr`, or moves it there (the writer reconnects).
    pub fn set_peer(&self, id: u64, addr: SocketAddr) {
        if self.shared.shutdown.is_cancelled() {
            return;
        }
        let mut peers = self.shared.peers.lock();
        if let Some(handle) = peers.get(&id) {
            handle.addr.send_if_modified(|current| {
                let changed = *current != addr;
                *current = addr;
                changed
            });
            return;
        }
        let (queue_tx, queue_rx) = mpsc::channel(PEER_QUEUE_LEN);
        let (addr_tx, addr_rx) = watch::channel(addr);
        let stop = self.shared.shutdown.child_token();
        let writer = PeerWriter::new(self.shared.clone(), id, queue_rx, addr_rx);
        let span = info_span!("peer_writer", node = self.shared.node_id, peer = id);
        let task_stop = stop.clone();
        tokio::spawn(
            async move {
                task_stop.run_until_cancelled(writer.run()).await;
            }
            .instrument(span),
        );
        peers.insert(
            id,
            PeerHandle {
                queue: queue_tx,
                addr: addr_tx,
                stop,
            },
        );
    }

    /// Forgets peer `id`: its writer stops and its queued messages are dropped.
    pub fn remove_peer(&self, id: u64) {
        if let Some(handle) = self.shared.peers.lock().remove(&id) {
            handle.stop.cancel();
        }
    }

    /// Queues `msg` (for `msg.to`) in group `group`. Never blocks: if that peer's queue
    /// is full, or the peer is unknown, the message is dropped and counted.
    pub fn send(&self, group: u64, msg: Message) {
        let to = msg.to;
        let result =
            match self.shared.peers.lock().get(&to) {
                Some(handle) => handle
                    .queue
                    .try_send(Outgoing::Raft(group, msg))
                    .map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "peer stopped",
                    }),
                None => Err("unknown peer"),
            };
        if let Err(reason) = result {
            Counters::bump(&self.shared.counters.dropped, 1);
            debug!(peer = to, group, reason, "dropped outgoing raft message");
        }
    }

    /// Queues a PUBLISH for every peer's subscribers. Never blocks: a peer whose queue is
    /// full misses it (pub/sub delivers at most once, as in Redis).
    pub fn publish(&self, channel: &[u8], message: &[u8]) {
        let channel = Bytes::copy_from_slice(channel);
        let message = Bytes::copy_from_slice(message);
        for handle in self.shared.peers.lock().values() {
            if handle
                .queue
                .try_send(Outgoing::Publish(channel.clone(), message.clone()))
                .is_err()
            {
                Counters::bump(&self.shared.counters.dropped, 1);
            }
        }
    }

    /// Stops accepting, closes every connection and stops every writer.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.peers.lock().clear();
    }

    /// Counters since start.
    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        TransportStats {
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers

/// Reads until one whole frame (at most `max` bytes) is buffered and returns it.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<PeerFrame, TransportError> {
    loop {
        if let Some(frame) = peer::decode_with_limit(buf, max)? {
            return Ok(frame);
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(TransportError::Closed);
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &PeerFrame,
) -> Result<(), TransportError> {
    let mut buf = BytesMut::new();
    peer::encode(frame, &mut buf)?;
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}
