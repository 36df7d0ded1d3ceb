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
        let writer = PeerWriter {
            shared: self.shared.clone(),
            peer: id,
            queue: queue_rx,
            addr: addr_rx,
            batch: Vec::new(),
            buf: BytesMut::new(),
        };
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

// ---------------------------------------------------------------------------------------
// Outbound: one writer per peer

/// How a connected writer's pump ended without an error.
enum PumpEnd {
    /// The peer's address changed: reconnect to the new one.
    AddrChanged,
    /// The peer was removed (its queue sender dropped).
    QueueClosed,
}

struct PeerWriter {
    shared: Arc<Shared>,
    peer: u64,
    queue: mpsc::Receiver<Outgoing>,
    addr: watch::Receiver<SocketAddr>,
    /// Reused between batches.
    batch: Vec<Outgoing>,
    buf: BytesMut,
}

impl PeerWriter {
    async fn run(mut self) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        // Whether this failure episode was already reported as Unreachable.
        let mut reported = false;
        let mut connected_before = false;
        loop {
            let addr = *self.addr.borrow_and_update();
            let failure = match self.connect(addr).await {
                Ok(mut stream) => {
                    if connected_before || reported {
                        Counters::bump(&self.shared.counters.reconnects, 1);
                    }
                    connected_before = true;
                    reported = false;
                    backoff = RECONNECT_BACKOFF_MIN;
                    info!(%addr, "connected to peer");
                    match self.pump(&mut stream).await {
                        Ok(PumpEnd::AddrChanged) => continue,
                        Ok(PumpEnd::QueueClosed) => return,
                        Err(err) => err,
                    }
                }
                Err(err) => err,
            };
            // Connection-level failures are routine while a peer restarts; only the
            // first of an episode is worth a warning.
            if reported {
                debug!(%addr, cause = %failure, "peer still unreachable");
            } else {
                warn!(%addr, cause = %failure, "peer unreachable");
                reported = true;
                if self
                    .shared
                    .inbound
                    .send(Inbound::Unreachable { peer: self.peer })
                    .await
                    .is_err()
                {
                    return; // The node is gone.
                }
            }
            self.drop_queued().await;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                // A new address is worth trying right away.
                _ = self.addr.changed() => {}
            }
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }

    /// Connects to `addr` and runs the connector's side of the handshake.
    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, TransportError> {
        let handshake = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = BytesMut::new();
            let challenge =
                match read_frame(&mut stream, &mut buf, MAX_HANDSHAKE_FRAME_BYTES).await? {
                    PeerFrame::Challenge { nonce } => nonce,
                    other => return Err(TransportError::Unexpected(other.kind_name())),
                };
            let nonce: [u8; peer::NONCE_LEN] = rand::random();
            let hello = PeerFrame::Hello {
                node_id: self.shared.node_id,
                nonce,
                proof: peer::hello_proof(&self.shared.secret, &challenge, self.shared.node_id),
            };
            write_frame(&mut stream, &hello).await?;
            match read_frame(&mut stream, &mut buf, MAX_HANDSHAKE_FRAME_BYTES).await? {
                PeerFrame::Welcome { node_id, proof } => {
                    let expected = peer::welcome_proof(&self.shared.secret, &nonce, node_id);
                    if !peer::proofs_equal(&proof, &expected) {
                        return Err(TransportError::BadProof);
                    }
                    if node_id != self.peer {
                        return Err(TransportError::WrongPeer {
                            expected: self.peer,
                            got: node_id,
                        });
                    }
                }
                other => return Err(TransportError::Unexpected(other.kind_name())),
            }
            Ok(stream)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| TransportError::HandshakeTimeout)?
    }

    /// Writes batches until the connection breaks, the address changes or the peer is
    /// removed.
    async fn pump(&mut self, stream: &mut TcpStream) -> Result<PumpEnd, TransportError> {
        let (mut rd, mut wr) = stream.split();
        // The acceptor never writes after Welcome, so a readable socket means EOF or an
        // error: noticing it here reports a dead peer without waiting for traffic.
        let mut probe = [0u8; 1];
        loop {
            let first = tokio::select! {
                m = self.queue.recv() => match m {
                    Some(m) => m,
                    None => return Ok(PumpEnd::QueueClosed),
                },
                changed = self.addr.changed() => {
                    return match changed {
                        Ok(()) => Ok(PumpEnd::AddrChanged),
                        Err(_) => Ok(PumpEnd::QueueClosed),
                    };
                }
                read = rd.read(&mut probe) => {
                    return Err(match read {
                        Ok(0) => TransportError::Closed,
                        Ok(_) => TransportError::Unexpected("data from acceptor"),
                        Err(err) => err.into(),
                    });
                }
            };
            self.batch.push(first);
            while self.batch.len() < PEER_QUEUE_LEN {
                match self.queue.try_recv() {
                    Ok(m) => self.batch.push(m),
                    Err(_) => break,
                }
            }
            let mut batch = std::mem::take(&mut self.batch);
            let result = self.write_batch(&mut wr, &mut batch).await;
            // Whatever the batch did not get to is lost with the connection.
            if !batch.is_empty() {
                self.drop_messages(batch.drain(..)).await;
            }
            self.batch = batch;
            result?;
        }
    }

    /// Encodes `batch` (consuming it from the front) into one buffer per run of plain
    /// messages; snapshot messages go out with their file streamed ahead of them.
    async fn write_batch<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        batch: &mut Vec<Outgoing>,
    ) -> Result<(), TransportError> {
        self.buf.clear();
        let mut buffered = 0u64;
        let mut queued = std::mem::take(batch).into_iter();
        while let Some(item) = queued.next() {
            let (group, msg) = match item {
                Outgoing::Raft(group, msg) => (group, msg),
                Outgoing::Publish(channel, message) => {
                    match peer::encode(&PeerFrame::Publish { channel, message }, &mut self.buf) {
                        Ok(()) => buffered += 1,
                        Err(err) => {
                            Counters::bump(&self.shared.counters.dropped, 1);
                            warn!(cause = %err, "dropped an unencodable publish");
                        }
                    }
                    continue;
                }
            };
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                // Flush what precedes it, keeping per-peer order.
                if let Err(err) = self.flush_buf(wr, &mut buffered).await {
                    batch.push(Outgoing::Raft(group, msg));
                    batch.extend(queued);
                    return Err(err);
                }
                let to = msg.to;
                if let Err(err) = self.send_snapshot(wr, group, msg).await {
                    Counters::bump(&self.shared.counters.dropped, 1);
                    self.report_snapshot(group, to, false).await;
                    batch.extend(queued);
                    return Err(err);
                }
                continue;
            }
            match msg.write_to_bytes() {
                Ok(bytes) => {
                    let frame = PeerFrame::Raft {
                        group,
                        message: Bytes::from(bytes),
                    };
                    match peer::encode(&frame, &mut self.buf) {
                        Ok(()) => buffered += 1,
                        Err(err) => {
                            Counters::bump(&self.shared.counters.dropped, 1);
                            warn!(group, cause = %err, "dropped unencodable raft message");
                        }
                    }
                }
                Err(err) => {
                    Counters::bump(&self.shared.counters.dropped, 1);
                    warn!(group, cause = %err, "dropped unserializable raft message");
                }
            }
        }
        // On failure the already-encoded messages are counted as dropped.
        self.flush_buf(wr, &mut buffered).await
    }

    /// Writes and flushes the encoded buffer, counting `buffered` messages as sent (or
    /// dropped if the write fails).
    async fn flush_buf<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buffered: &mut u64,
    ) -> Result<(), TransportError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let n = std::mem::take(buffered);
        let result = async {
            wr.write_all(&self.buf).await?;
            wr.flush().await
        }
        .await;
        self.buf.clear();
        match result {
            Ok(()) => {
                Counters::bump(&self.shared.counters.sent, n);
                Ok(())
            }
            Err(err) => {
                Counters::bump(&self.shared.counters.dropped, n);
                Err(err.into())
            }
        }
    }

    /// Streams the snapshot file named by `msg.snapshot.data`, then `msg` itself, then
    /// reports success. An unreadable file is reported as a failure and `msg` dropped
    /// (the connection stays up); `Err` means the connection broke.
    async fn send_snapshot<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        group: u64,
        msg: Message,
    ) -> Result<(), TransportError> {
        let to = msg.to;
        let name = match std::str::from_utf8(msg.get_snapshot().get_data()) {
            Ok(name) if peer::snapshot_name_is_safe(name) => name.to_owned(),
            _ => {
                warn!(
                    group,
                    "snapshot message does not name a snapshot file; dropped"
                );
                Counters::bump(&self.shared.counters.dropped, 1);
                self.report_snapshot(group, to, false).await;
                return Ok(());
            }
        };
        let path = (self.shared.snapshot_dir)(group).join(&name);
        let span = info_span!("snapshot_send", group, file = %path.display());
        let mut file = match open_for_streaming(&path).await {
            Ok(opened) => opened,
            Err(err) => {
                warn!(parent: &span, cause = %err, "cannot read snapshot file; dropped");
                Counters::bump(&self.shared.counters.dropped, 1);
                self.report_snapshot(group, to, false).await;
                return Ok(());
            }
        };
        let mut offset = 0u64;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        loop {
            let n = match read_full(&mut file.0, &mut chunk).await {
                Ok(n) => n,
                Err(err) => {
                    warn!(parent: &span, cause = %err, "snapshot file read failed; dropped");
                    Counters::bump(&self.shared.counters.dropped, 1);
                    self.report_snapshot(group, to, false).await;
                    return Ok(());
                }
            };
            let end = offset + n as u64;
            // A short read before the length seen at open means the file shrank under
            // us; `last` follows what was actually read.
            let last = n < chunk.len() || end >= file.1;
            let frame = PeerFrame::SnapshotChunk {
                group,
                name: name.clone(),
                offset,
                data: Bytes::copy_from_slice(&chunk[..n]),
                last,
            };
            write_frame(wr, &frame).await?;
            offset = end;
            if last {
                break;
            }
        }
        let bytes = match msg.write_to_bytes() {
            Ok(bytes) => bytes,
            Err(err) => {
                warn!(parent: &span, cause = %err, "snapshot message unserializable; dropped");
                Counters::bump(&self.shared.counters.dropped, 1);
                self.report_snapshot(group, to, false).await;
                return Ok(());
            }
        };
        write_frame(
            wr,
            &PeerFrame::Raft {
                group,
                message: Bytes::from(bytes),
            },
        )
        .await?;
        Counters::bump(&self.shared.counters.sent, 1);
        debug!(parent: &span, bytes = offset, "snapshot streamed");
        self.report_snapshot(group, to, true).await;
        Ok(())
    }

    async fn report_snapshot(&self, group: u64, to: u64, ok: bool) {
        // Err only when the node dropped its receiver, i.e. it is shutting down.
        let _ = self
            .shared
            .inbound
            .send(Inbound::SnapshotSent { group, to, ok })
            .await;
    }

    /// Drops everything queued after a connection failure: Raft will retransmit, and
    /// stale heartbeats would only pile up. Snapshot messages are reported failed.
    async fn drop_queued(&mut self) {
        let mut stale = Vec::new();
        while let Ok(m) = self.queue.try_recv() {
            stale.push(m);
        }
        self.drop_messages(stale.into_iter()).await;
    }

    async fn drop_messages(&mut self, messages: impl Iterator<Item = Outgoing>) {
        for item in messages {
            Counters::bump(&self.shared.counters.dropped, 1);
            let Outgoing::Raft(group, msg) = item else {
                continue;
            };
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.report_snapshot(group, msg.to, false).await;
            }
        }
    }
}

/// Opens a file for streaming, with its length at open time.
async fn open_for_streaming(path: &Path) -> io::Result<(tokio::fs::File, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    Ok((file, len))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

// ---------------------------------------------------------------------------------------
// Inbound: accept loop and one reader per connection

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.clone();
    let accepting = async {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let shared = shared.clone();
                    let span = info_span!("peer_reader", node = shared.node_id, %addr, peer = tracing::field::Empty);
                    let stop = shared.shutdown.clone();
                    tokio::spawn(
                        async move {
                            stop.run_until_cancelled(serve_inbound(shared, stream, addr))
                                .await;
                        }
                        .instrument(span),
                    );
                }
                Err(err) => {
                    // Typically EMFILE; back off instead of spinning.
                    warn!(cause = %err, "accept failed");
                    tokio::time::sleep(RECONNECT_BACKOFF_MIN).await;
                }
            }
        }
    };
    shutdown.run_until_cancelled(accepting).await;
    debug!("peer listener closed");
}

async fn serve_inbound(shared: Arc<Shared>, mut stream: TcpStream, addr: SocketAddr) {
    let mut buf = BytesMut::new();
    let peer_id = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        accept_handshake(&shared, &mut stream, &mut buf),
    )
    .await
    {
        Ok(Ok(id)) => id,
        Ok(Err(err)) => {
            Counters::bump(&shared.counters.rejected, 1);
            warn!(%addr, cause = %err, "peer connection refused");
            return;
        }
        Err(_) => {
            Counters::bump(&shared.counters.rejected, 1);
            warn!(%addr, cause = %TransportError::HandshakeTimeout, "peer connection refused");
            return;
        }
    };
    tracing::Span::current().record("peer", peer_id);
    debug!("peer authenticated");
    let mut snapshots = SnapshotReceiver::new(shared.snapshot_dir.clone());
    match read_frames(&shared, &mut stream, &mut buf, &mut snapshots).await {
        Ok(()) | Err(TransportError::Closed) => debug!("peer connection closed"),
        Err(err) => warn!(cause = %err, "peer connection dropped"),
    }
}

/// The acceptor's side of the handshake; returns the authenticated peer's id.
async fn accept_handshake(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<u64, TransportError> {
    stream.set_nodelay(true)?;
    let nonce: [u8; peer::NONCE_LEN] = rand::random();
    write_frame(stream, &PeerFrame::Challenge { nonce }).await?;
    let (node_id, their_nonce) = match read_frame(stream, buf, MAX_HANDSHAKE_FRAME_BYTES).await? {
        PeerFrame::Hello {
            node_id,
            nonce: their_nonce,
            proof,
        } => {
            let expected = peer::hello_proof(&shared.secret, &nonce, node_id);
            if !peer::proofs_equal(&proof, &expected) {
                return Err(TransportError::BadProof);
            }
            (node_id, their_nonce)
        }
        other => return Err(TransportError::Unexpected(other.kind_name())),
    };
    let welcome = PeerFrame::Welcome {
        node_id: shared.node_id,
        proof: peer::welcome_proof(&shared.secret, &their_nonce, shared.node_id),
    };
    write_frame(stream, &welcome).await?;
    Ok(node_id)
}

/// Decodes frames from an authenticated connection until it closes.
async fn read_frames(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    snapshots: &mut SnapshotReceiver,
) -> Result<(), TransportError> {
    loop {
        while let Some(frame) = peer::decode_with_limit(buf, MAX_PEER_FRAME_BYTES)? {
            match frame {
                PeerFrame::Raft { group, message } => {
                    let msg = Message::parse_from_bytes(&message)?;
                    // Awaiting here is the backpressure: a slow node slows its peers'
                    // writers through TCP instead of buffering here.
                    if shared
                        .inbound
                        .send(Inbound::Raft { group, msg })
                        .await
                        .is_err()
                    {
                        return Ok(()); // The node is gone.
                    }
                }
                PeerFrame::SnapshotChunk {
                    group,
                    name,
                    offset,
                    data,
                    last,
                } => snapshots.chunk(group, &name, offset, &data, last).await,
                PeerFrame::Publish { channel, message } => {
                    if shared
                        .inbound
                        .send(Inbound::Publish { channel, message })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                other => return Err(TransportError::Unexpected(other.kind_name())),
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(TransportError::Closed);
        }
    }
}

/// The snapshot file being received on one connection.
struct PartialSnapshot {
    group: u64,
    name: String,
    file: tokio::fs::File,
    written: u64,
}

/// Assembles incoming snapshot chunks into `<dir>/<name>.part`, renamed to `<dir>/<name>`
/// once the last chunk is on disk.
struct SnapshotReceiver {
    snapshot_dir: Arc<dyn Fn(u64) -> PathBuf + Send + Sync>,
    current: Option<PartialSnapshot>,
}

impl SnapshotReceiver {
    fn new(snapshot_dir: Arc<dyn Fn(u64) -> PathBuf + Send + Sync>) -> Self {
        SnapshotReceiver {
            snapshot_dir,
            current: None,
        }
    }

    /// Applies one chunk. Failures are logged and the chunk discarded; the Raft message
    /// that follows still goes through and the group finds the file missing or stale.
    async fn chunk(&mut self, group: u64, name: &str, offset: u64, data: &[u8], last: bool) {
        if !peer::snapshot_name_is_safe(name) {
            warn!(
                group,
                name, "snapshot chunk with an unsafe file name; discarded"
            );
            return;
        }
        let dir = (self.snapshot_dir)(group);
        if let Err(err) = self.write(&dir, group, name, offset, data, last).await {
            warn!(group, name, offset, cause = %err, "snapshot chunk discarded");
            self.current = None;
        }
    }

    async fn write(
        &mut self,
        dir: &Path,
        group: u64,
        name: &str,
        offset: u64,
        data: &[u8],
        last: bool,
    ) -> io::Result<()> {
        let part_path = dir.join(format!("{name}.part"));
        let matches_current =
            matches!(&self.current, Some(p) if p.group == group && p.name == name);
        if offset == 0 {
            // A fresh transfer, possibly restarting an abandoned one.
            tokio::fs::create_dir_all(dir).await?;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&part_path)
                .await?;
            self.current = Some(PartialSnapshot {
                group,
                name: name.to_owned(),
                file,
                written: 0,
            });
        } else if !matches_current {
            // Resuming on a new connection: only if the part file ends where we are.
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&part_path)
                .await?;
            let written = file.metadata().await?.len();
            self.current = Some(PartialSnapshot {
                group,
                name: name.to_owned(),
                file,
                written,
            });
        }
        let Some(part) = self.current.as_mut() else {
            // Unreachable: both branches above either set `current` or returned.
            return Err(io::Error::other("no snapshot in progress"));
        };
        if part.written != offset {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk at offset {offset}, file has {} bytes", part.written),
            ));
        }
        part.file.write_all(data).await?;
        part.written += data.len() as u64;
        if last {
            let Some(mut part) = self.current.take() else {
                return Err(io::Error::other("no snapshot in progress"));
            };
            part.file.flush().await?;
            part.file.sync_all().await?;
            drop(part.file);
            tokio::fs::rename(&part_path, dir.join(name)).await?;
            // Make the rename itself durable.
            tokio::fs::File::open(dir).await?.sync_all().await?;
            debug!(group, name, bytes = part.written, "snapshot received");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only there so a broken test fails instead of hanging; nothing asserts on time.
    const WAIT: Duration = Duration::from_secs(30);

    fn config(node_id: u64, secret: &[u8], dir: &Path, listen: SocketAddr) -> TransportConfig {
        let dir = dir.to_path_buf();
        TransportConfig {
            node_id,
            listen,
            secret: secret.to_vec(),
            snapshot_dir: Arc::new(move |group| dir.join(format!("group-{group}"))),
        }
    }

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    async fn node(node_id: u64, secret: &[u8], dir: &Path) -> (Transport, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(1024);
        let transport = Transport::start(config(node_id, secret, dir, any_port()), tx)
            .await
            .expect("bind");
        (transport, rx)
    }

    fn append(from: u64, to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = from;
        m.to = to;
        m.index = index;
        m
    }

    fn snapshot_msg(from: u64, to: u64, name: &str) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = from;
        m.to = to;
        m.mut_snapshot()
            .set_data(Bytes::copy_from_slice(name.as_bytes()));
        m.mut_snapshot().mut_metadata().index = 42;
        m
    }

    async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("timed out waiting for inbound")
            .expect("inbound channel closed")
    }

    /// The next Raft message, skipping transport reports.
    async fn next_raft(rx: &mut mpsc::Receiver<Inbound>) -> (u64, Message) {
        loop {
            if let Inbound::Raft { group, msg } = next(rx).await {
                return (group, msg);
            }
        }
    }

    async fn wait_until(mut cond: impl FnMut() -> bool) {
        tokio::time::timeout(WAIT, async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("timed out waiting for condition");
    }

    fn assert_no_raft(rx: &mut mpsc::Receiver<Inbound>) {
        while let Ok(inbound) = rx.try_recv() {
            assert!(
                !matches!(inbound, Inbound::Raft { .. }),
                "unexpected delivery: {inbound:?}"
            );
        }
    }

    #[tokio::test]
    async fn messages_flow_both_ways_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, mut a_rx) = node(1, b"secret", dir.path()).await;
        let (b, mut b_rx) = node(2, b"secret", dir.path()).await;
        a.set_peer(2, b.local_addr());
        b.set_peer(1, a.local_addr());
        const N: u64 = 500;
        for i in 0..N {
            a.send(7, append(1, 2, i));
            b.send(8, append(2, 1, i));
        }
        for i in 0..N {
            let (group, msg) = next_raft(&mut b_rx).await;
            assert_eq!((group, msg.from, msg.to, msg.index), (7, 1, 2, i));
            let (group, msg) = next_raft(&mut a_rx).await;
            assert_eq!((group, msg.from, msg.to, msg.index), (8, 2, 1, i));
        }
        assert_eq!(a.stats().sent, N);
        assert_eq!(b.stats().dropped, 0);
        a.shutdown();
        b.shutdown();
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_and_nothing_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (a, mut a_rx) = node(1, b"right", dir.path()).await;
        let (b, mut b_rx) = node(2, b"wrong", dir.path()).await;
        a.set_peer(2, b.local_addr());
        b.set_peer(1, a.local_addr());
        for i in 0..10 {
            a.send(1, append(1, 2, i));
            b.send(1, append(2, 1, i));
        }
        // Each side refuses the other's connection and reports it unreachable.
        wait_until(|| a.stats().rejected >= 1 && b.stats().rejected >= 1).await;
        for rx in [&mut a_rx, &mut b_rx] {
            match next(rx).await {
                Inbound::Unreachable { .. } => {}
                other => panic!("unexpected delivery: {other:?}"),
            }
        }

        // A hand-made connector: a bad proof followed by a Raft frame.
        let mut raw = TcpStream::connect(a.local_addr()).await.unwrap();
        let mut buf = BytesMut::new();
        let PeerFrame::Challenge { .. } = read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES)
            .await
            .unwrap()
        else {
            panic!("expected a challenge");
        };
        let mut out = BytesMut::new();
        let hello = PeerFrame::Hello {
            node_id: 9,
            nonce: [0; 32],
            proof: [0; 32],
        };
        peer::encode(&hello, &mut out).unwrap();
        let message = Bytes::from(append(9, 1, 1).write_to_bytes().unwrap());
        peer::encode(
            &PeerFrame::Raft {
                group: 1,
                message: message.clone(),
            },
            &mut out,
        )
        .unwrap();
        raw.write_all(&out).await.unwrap();
        // Closed without a Welcome.
        assert!(matches!(
            read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES).await,
            Err(TransportError::Closed | TransportError::Io(_))
        ));

        // And one that skips the handshake altogether.
        let mut raw = TcpStream::connect(a.local_addr()).await.unwrap();
        let mut out = BytesMut::new();
        peer::encode(&PeerFrame::Raft { group: 1, message }, &mut out).unwrap();
        raw.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let _challenge = read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES)
            .await
            .unwrap();
        assert!(read_frame(&mut raw, &mut buf, MAX_HANDSHAKE_FRAME_BYTES)
            .await
            .is_err());

        wait_until(|| a.stats().rejected >= 3).await;
        assert_no_raft(&mut a_rx);
        assert_no_raft(&mut b_rx);
        assert_eq!(a.stats().sent, 0);
        assert_eq!(b.stats().sent, 0);
        a.shutdown();
        b.shutdown();
    }

    #[tokio::test]
    async fn restarted_peer_is_reconnected() {
        let dir = tempfile::tempdir().unwrap();
        let (a, mut a_rx) = node(1, b"secret", dir.path()).await;
        let (b, mut b_rx) = node(2, b"secret", dir.path()).await;
        let b_addr = b.local_addr();
        a.set_peer(2, b_addr);
        a.send(1, append(1, 2, 1));
        assert_eq!(next_raft(&mut b_rx).await.1.index, 1);

        b.shutdown();
        drop(b_rx);
        match next(&mut a_rx).await {
            Inbound::Unreachable { peer } => assert_eq!(peer, 2),
            other => panic!("unexpected: {other:?}"),
        }
        // Sends while the peer is down are dropped, never blocked on.
        for i in 0..10 {
            a.send(1, append(1, 2, 100 + i));
        }

        // Same port again; the old listener goes away asynchronously after shutdown.
        let (tx, mut b_rx) = mpsc::channel(1024);
        let b = tokio::time::timeout(WAIT, async {
            loop {
                match Transport::start(config(2, b"secret", dir.path(), b_addr), tx.clone()).await {
                    Ok(t) => break t,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("rebind");
        drop(tx);

        // Keep sending until one gets through; anything queued in between may be lost.
        let received = tokio::time::timeout(WAIT, async {
            let mut i = 1000;
            loop {
                a.send(1, append(1, 2, i));
                i += 1;
                if let Ok(Some(Inbound::Raft { msg, .. })) =
                    tokio::time::timeout(Duration::from_millis(100), b_rx.recv()).await
                {
                    break msg;
                }
            }
        })
        .await
        .expect("messages flow again");
        // Sent after the restart (or queued during the backoff), never the first one.
        assert!(received.index >= 100);
        assert!(a.stats().reconnects >= 1);
        a.shutdown();
        b.shutdown();
    }

    fn snapshot_bytes(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn snapshot_file_is_streamed_before_its_message() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let (a, mut a_rx) = node(1, b"secret", a_dir.path()).await;
        let (b, mut b_rx) = node(2, b"secret", b_dir.path()).await;
        a.set_peer(2, b.local_addr());

        let contents = snapshot_bytes(3 * 1024 * 1024);
        let src_dir = a_dir.path().join("group-7");
        std::fs::create_dir_all(&src_dir).unwrap();
        std::fs::write(src_dir.join("snap-7-42"), &contents).unwrap();

        a.send(7, append(1, 2, 1));
        a.send(7, snapshot_msg(1, 2, "snap-7-42"));
        a.send(7, append(1, 2, 3));

        assert_eq!(next_raft(&mut b_rx).await.1.index, 1);
        let (group, msg) = next_raft(&mut b_rx).await;
        assert_eq!(group, 7);
        assert_eq!(msg.get_msg_type(), MessageType::MsgSnapshot);
        assert_eq!(msg.get_snapshot().get_data(), b"snap-7-42");
        assert_eq!(msg.get_snapshot().get_metadata().index, 42);
        // The file is complete by the time the message is delivered.
        let dst_dir = b_dir.path().join("group-7");
        let received = std::fs::read(dst_dir.join("snap-7-42")).unwrap();
        assert!(received == contents, "snapshot differs");
        assert!(!dst_dir.join("snap-7-42.part").exists());
        assert_eq!(next_raft(&mut b_rx).await.1.index, 3);

        match next(&mut a_rx).await {
            Inbound::SnapshotSent { group, to, ok } => assert_eq!((group, to, ok), (7, 2, true)),
            other => panic!("unexpected: {other:?}"),
        }

        // A missing file: reported failed and the message is not sent.
        a.send(7, snapshot_msg(1, 2, "snap-missing"));
        a.send(7, snapshot_msg(1, 2, "../escape"));
        a.send(7, append(1, 2, 4));
        for _ in 0..2 {
            match next(&mut a_rx).await {
                Inbound::SnapshotSent { group, to, ok } => {
                    assert_eq!((group, to, ok), (7, 2, false))
                }
                other => panic!("unexpected: {other:?}"),
            }
        }
        let (_, msg) = next_raft(&mut b_rx).await;
        assert_eq!((msg.get_msg_type(), msg.index), (MessageType::MsgAppend, 4));
        a.shutdown();
        b.shutdown();
    }

    #[tokio::test]
    async fn snapshot_receiver_checks_names_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut rx = SnapshotReceiver::new(Arc::new(move |group| root.join(group.to_string())));
        rx.chunk(1, "../evil", 0, b"x", true).await;
        assert!(!dir.path().join("evil").exists());
        assert!(!dir.path().join("1").exists());

        rx.chunk(1, "s", 0, b"abc", false).await;
        rx.chunk(1, "s", 5, b"zz", false).await; // gap: discarded
        rx.chunk(1, "s", 3, b"def", true).await;
        let group_dir = dir.path().join("1");
        assert_eq!(std::fs::read(group_dir.join("s")).unwrap(), b"abcdef");
        assert!(!group_dir.join("s.part").exists());

        // Empty file in one chunk.
        rx.chunk(1, "empty", 0, b"", true).await;
        assert_eq!(std::fs::read(group_dir.join("empty")).unwrap(), b"");
    }

    #[tokio::test]
    async fn full_queue_drops_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _a_rx) = node(1, b"secret", dir.path()).await;
        // Accepts TCP connections (kernel backlog) but never speaks: the writer stays
        // stuck in its handshake and the queue cannot drain.
        let silent = TcpListener::bind(any_port()).await.unwrap();
        a.set_peer(2, silent.local_addr().unwrap());
        const EXTRA: usize = 100;
        for i in 0..(PEER_QUEUE_LEN + EXTRA) as u64 {
            a.send(1, append(1, 2, i));
        }
        assert!(a.stats().dropped >= EXTRA as u64);
        // Unknown peers are dropped too.
        let before = a.stats().dropped;
        a.send(1, append(1, 3, 0));
        assert_eq!(a.stats().dropped, before + 1);
        a.shutdown();
    }
}
