//! Outbound: one writer task per peer, owning the connection it opened (see the
//! module documentation of [`super`]).

use super::*;

/// How a connected writer's pump ended without an error.
enum PumpEnd {
    /// The peer's address changed: reconnect to the new one.
    AddrChanged,
    /// The peer was removed (its queue sender dropped).
    QueueClosed,
}

pub(super) struct PeerWriter {
    shared: Arc<Shared>,
    peer: u64,
    queue: mpsc::Receiver<Outgoing>,
    addr: watch::Receiver<SocketAddr>,
    /// Reused between batches.
    batch: Vec<Outgoing>,
    buf: BytesMut,
}

impl PeerWriter {
    pub(super) fn new(
        shared: Arc<Shared>,
        peer: u64,
        queue: mpsc::Receiver<Outgoing>,
        addr: watch::Receiver<SocketAddr>,
    ) -> Self {
        PeerWriter {
            shared,
            peer,
            queue,
            addr,
            batch: Vec::new(),
            buf: BytesMut::new(),
        }
    }

    pub(super) async fn run(mut self) {
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
