//! Inbound: the accept loop and one reader task per accepted connection, snapshots
//! received included (see the module documentation of [`super`]).

use super::*;

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
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
pub(super) struct SnapshotReceiver {
    snapshot_dir: Arc<dyn Fn(u64) -> PathBuf + Send + Sync>,
    current: Option<PartialSnapshot>,
}

impl SnapshotReceiver {
    pub(super) fn new(snapshot_dir: Arc<dyn Fn(u64) -> PathBuf + Send + Sync>) -> Self {
        SnapshotReceiver {
            snapshot_dir,
            current: None,
        }
    }

    /// Applies one chunk. Failures are logged and the chunk discarded; the Raft message
    /// that follows still goes through and the group finds the file missing or stale.
    pub(super) async fn chunk(
        &mut self,
        group: u64,
        name: &str,
        offset: u64,
        data: &[u8],
        last: bool,
    ) {
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
