//! One client connection: read, decode, execute, reply, in pipelined batches.
//!
//! How it fits: a connection reads whatever the socket has, decodes every complete
//! request in it, and executes them in order. Consecutive data commands share one
//! acquisition of the store lock, so a pipeline of 16 GETs costs one lock, one read and
//! one write. Replies accumulate in one buffer that is written once per batch.
//! Pub/sub messages arrive on a bounded queue and are written between batches.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kelvin_protocol::{ReplyWriter, RequestDecoder, RequestLimits, RespVersion};
use parking_lot::MutexGuard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tracing::Instrument;

use crate::cmd::{self, flags, CmdError, CommandSpec, Exec, Handler};
use crate::node::{ClientInfo, Node};
use crate::notify::KeyEvent;
use crate::pubsub::{PushMessage, PUSH_QUEUE_LEN};
use crate::store::{Blob, Store};

/// Bytes the read buffer keeps free before each read.
const READ_RESERVE: usize = 16 * 1024;

/// A MULTI in progress.
pub struct Multi {
    pub queue: Vec<(&'static CommandSpec, Vec<Bytes>)>,
    /// A command failed to queue (unknown, wrong arity): EXEC answers EXECABORT.
    pub failed: bool,
}

/// Keys under WATCH and the flag the store sets when one changes.
pub struct Watch {
    pub dirty: Arc<AtomicBool>,
    pub keys: Vec<(usize, Blob)>,
}

/// The state of one connection that commands read and change.
pub struct ClientState {
    pub info: Arc<ClientInfo>,
    pub db: usize,
    pub authed: bool,
    pub multi: Option<Multi>,
    pub watch: Option<Watch>,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub push_tx: mpsc::Sender<PushMessage>,
    /// Close once the replies written so far are flushed (QUIT, protocol error).
    pub close: bool,
    pub events: Vec<KeyEvent>,
    pub lazy_expired: Vec<(usize, Blob)>,
    /// A blocking command waiting for a list write or its timeout.
    pub blocked: Option<Blocked>,
    /// Requests that arrived behind a blocked command; they run once it is answered.
    pub pending: Vec<Vec<Bytes>>,
}

/// A command parked by BLPOP and friends.
pub struct Blocked {
    pub argv: Vec<Bytes>,
    pub deadline: Option<tokio::time::Instant>,
    /// Subscribed under the store lock when the command found nothing, so a write that
    /// lands after that check is never missed.
    pub ready: tokio::sync::watch::Receiver<u64>,
}

impl ClientState {
    /// RESP2 clients with subscriptions may only run pub/sub commands.
    pub fn in_resp2_subscribed_mode(&self, version: RespVersion) -> bool {
        version == RespVersion::Resp2 && !(self.channels.is_empty() && self.patterns.is_empty())
    }

    /// Drops every WATCH of this client.
    pub fn unwatch(&mut self, store: &mut Store) {
        if let Some(watch) = self.watch.take() {
            for key in watch.keys {
                if let Some(list) = store.watched.get_mut(&key) {
                    list.retain(|f| !Arc::ptr_eq(f, &watch.dirty));
                    if list.is_empty() {
                        store.watched.remove(&key);
                    }
                }
            }
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// What a connection-level command gets: the connection, the node, the reply buffer.
pub struct ConnCtx<'a> {
    pub client: &'a mut ClientState,
    pub node: &'a Arc<Node>,
    pub out: &'a mut ReplyWriter,
    pub now_ms: u64,
}

/// Runs a data command against the locked store. On error, whatever the command wrote
/// is taken back and the error is the reply. Returns how long to wait if a blocking
/// command found nothing (only when `may_block`).
pub fn run_data(
    store: &mut Store,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    handler: fn(&mut Exec<'_>, &[Bytes]) -> cmd::CmdResult,
    argv: &[Bytes],
    now_ms: u64,
    may_block: bool,
) -> Option<cmd::BlockOn> {
    let mark = out.buf.len();
    let mut ex = Exec {
        store,
        db: client.db,
        now_ms,
        out,
        events: &mut client.events,
        lazy_expired: &mut client.lazy_expired,
        may_block,
        block: None,
    };
    let result = handler(&mut ex, argv);
    let block = ex.block;
    if let Err(err) = result {
        out.buf.truncate(mark);
        out.error(&err.0);
        return None;
    }
    block
}

/// Deletes keys that reads found expired (the deletes are writes, decided here).
pub fn delete_lazy_expired(store: &mut Store, client: &mut ClientState, now_ms: u64) {
    let mut out = ReplyWriter::default();
    let keys = std::mem::take(&mut client.lazy_expired);
    for (db, key) in &keys {
        let mut scratch = Vec::new();
        let mut ex = Exec {
            store,
            db: *db,
            now_ms,
            out: &mut out,
            events: &mut client.events,
            lazy_expired: &mut scratch,
            may_block: false,
            block: None,
        };
        ex.expire_if_needed(key);
    }
}

/// Writes a pub/sub message as the client's protocol version wants it.
fn write_push(out: &mut ReplyWriter, msg: &PushMessage) {
    match &msg.pattern {
        None => {
            out.push(3);
            out.bulk(b"message");
        }
        Some(pattern) => {
            out.push(4);
            out.bulk(b"pmessage");
            out.bulk(pattern);
        }
    }
    out.bulk(&msg.channel);
    out.bulk(&msg.payload);
}

/// A connection's task.
pub struct Connection;

impl Connection {
    pub async fn run(node: Arc<Node>, socket: TcpStream, addr: SocketAddr) {
        let laddr = socket.local_addr().unwrap_or(node.local_addr);
        let id = node.next_client_id();
        let info = Arc::new(ClientInfo::new(id, addr, laddr));
        node.clients.lock().insert(id, info.clone());
        let span = tracing::debug_span!("conn", cid = id, %addr);
        Self::serve(node.clone(), socket, info)
            .instrument(span)
            .await;
        node.clients.lock().remove(&id);
    }

    async fn serve(node: Arc<Node>, mut stream: TcpStream, info: Arc<ClientInfo>) {
        let (push_tx, mut push_rx) = mpsc::channel(PUSH_QUEUE_LEN);
        let (requirepass, max_bulk) = {
            let s = node.settings.read();
            (s.requirepass.is_some(), s.proto_max_bulk_len)
        };
        let mut decoder = RequestDecoder::new(RequestLimits {
            max_bulk_len: max_bulk,
            ..Default::default()
        });
        let mut inbuf = BytesMut::with_capacity(READ_RESERVE);
        let mut out = ReplyWriter::new(RespVersion::Resp2);
        let mut client = ClientState {
            info: info.clone(),
            db: 0,
            authed: !requirepass,
            multi: None,
            watch: None,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            push_tx,
            close: false,
            events: Vec::new(),
            lazy_expired: Vec::new(),
            blocked: None,
            pending: Vec::new(),
        };
        let mut shutdown = node.shutdown_signal();
        tracing::debug!("connected");
        loop {
            if inbuf.capacity() - inbuf.len() < READ_RESERVE / 4 {
                inbuf.reserve(READ_RESERVE);
            }
            tokio::select! {
                read = stream.read_buf(&mut inbuf) => {
                    match read {
                        Ok(0) => break,
                        Ok(n) => { node.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed); }
                        Err(err) => {
                            tracing::debug!(cause = %err, "read failed");
                            break;
                        }
                    }
                    if client.blocked.is_some() {
                        // Requests behind a blocked command wait in the buffer, bounded.
                        if inbuf.len() > decoder.limits().max_query_len {
                            tracing::debug!("query buffer limit reached while blocked, closing");
                            break;
                        }
                        continue;
                    }
                    let (batch, proto_err) = decode_all(&mut decoder, &mut inbuf);
                    process_batch(&node, &mut client, &mut out, batch);
                    if let Some(err) = proto_err {
                        tracing::debug!(cause = %err, "protocol error, closing");
                        out.error(&format!("ERR {err}"));
                        client.close = true;
                    }
                }
                woke = async {
                    match client.blocked.as_mut() {
                        Some(blocked) => wait_unblock(blocked).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let mut batch = Vec::new();
                    if let Some(blocked) = client.blocked.take() {
                        if woke {
                            batch.push(blocked.argv);
                        } else {
                            // Timed out: the blocking command's nil answer.
                            out.null_array();
                        }
                    }
                    batch.append(&mut client.pending);
                    let (more, proto_err) = decode_all(&mut decoder, &mut inbuf);
                    batch.extend(more);
                    process_batch(&node, &mut client, &mut out, batch);
                    if let Some(err) = proto_err {
                        out.error(&format!("ERR {err}"));
                        client.close = true;
                    }
                }
                msg = push_rx.recv() => {
                    // The sender lives in `client`, so the queue never closes under us.
                    let Some(msg) = msg else { break };
                    write_push(&mut out, &msg);
                    while let Ok(msg) = push_rx.try_recv() {
                        write_push(&mut out, &msg);
                        if out.buf.len() > 64 * 1024 {
                            break;
                        }
                    }
                }
                _ = info.killed() => break,
                _ = shutdown.changed() => break,
            }
            if !out.buf.is_empty() {
                if let Err(err) = stream.write_all(&out.buf).await {
                    tracing::debug!(cause = %err, "write failed");
                    break;
                }
                node.stats
                    .net_output_bytes
                    .fetch_add(out.buf.len() as u64, Ordering::Relaxed);
                out.buf.clear();
                if out.buf.capacity() > 1024 * 1024 {
                    out.buf.shrink_to(64 * 1024);
                }
            }
            if client.close || info.is_killed() {
                break;
            }
        }
        // Cleanup: subscriptions and watches must not outlive the connection.
        let channels: Vec<Bytes> = client.channels.drain().collect();
        let patterns: Vec<Bytes> = client.patterns.drain().collect();
        node.pubsub.remove_client(info.id, &channels, &patterns);
        if client.watch.is_some() {
            client.unwatch(&mut node.store.lock());
        }
        tracing::debug!("disconnected");
    }
}

/// Waits until a list write may have made the blocked command runnable (true) or its
/// timeout passed (false).
async fn wait_unblock(blocked: &mut Blocked) -> bool {
    match blocked.deadline {
        Some(deadline) => tokio::select! {
            changed = blocked.ready.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
        },
        None => blocked.ready.changed().await.is_ok(),
    }
}

/// Drains the decoder into a batch; a protocol error ends the batch.
fn decode_all(
    decoder: &mut RequestDecoder,
    buf: &mut BytesMut,
) -> (Vec<Vec<Bytes>>, Option<kelvin_protocol::ProtocolError>) {
    let mut batch = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(argv)) => batch.push(argv),
            Ok(None) => return (batch, None),
            Err(err) => return (batch, Some(err)),
        }
    }
}

/// Why a command cannot run now, checked before it runs or is queued.
fn precheck(
    client: &ClientState,
    out: &ReplyWriter,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Result<(), CmdError> {
    if !spec.arity_ok(argv.len()) {
        return Err(CmdError::arity(spec.name));
    }
    if !client.authed && spec.flags & flags::NO_AUTH == 0 {
        return Err(CmdError::raw("NOAUTH Authentication required."));
    }
    if spec.flags & flags::SUBSCRIBED_OK == 0 && client.in_resp2_subscribed_mode(out.version) {
        return Err(CmdError::err(format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        )));
    }
    Ok(())
}

/// Executes a batch of decoded requests in order.
pub fn process_batch(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    batch: Vec<Vec<Bytes>>,
) {
    if batch.is_empty() {
        return;
    }
    let now_ms = cmd::unix_ms();
    let count = batch.len();
    let mut guard: Option<MutexGuard<'_, Store>> = None;
    let mut last: &'static str = "NULL";
    let mut requests = batch.into_iter();
    while let Some(argv) = requests.next() {
        if client.close {
            break;
        }
        let Some(spec) = cmd::lookup(&argv[0]) else {
            if let Some(multi) = client.multi.as_mut() {
                multi.failed = true;
            }
            out.error(&cmd::unknown_command(&argv).0);
            continue;
        };
        last = spec.name;
        if let Err(err) = precheck(client, out, spec, &argv) {
            if let Some(multi) = client.multi.as_mut() {
                multi.failed = true;
            }
            out.error(&err.0);
            continue;
        }
        if let Some(multi) = client.multi.as_mut() {
            if spec.flags & flags::NO_MULTI == 0 {
                multi.queue.push((spec, argv));
                *client.info.multi.lock() = multi.queue.len() as i64;
                out.simple("QUEUED");
                continue;
            }
        }
        match spec.handler {
            Handler::Data(handler) => {
                let store = guard.get_or_insert_with(|| node.store.lock());
                if let Some(block) = run_data(store, client, out, handler, &argv, now_ms, true) {
                    client.blocked = Some(Blocked {
                        ready: store.list_ready.subscribe(),
                        deadline: block.timeout.map(|t| tokio::time::Instant::now() + t),
                        argv,
                    });
                    // Later requests wait behind the blocked one, in order.
                    client.pending.extend(requests.by_ref());
                    break;
                }
            }
            Handler::Conn(handler) => {
                guard = None;
                let mark = out.buf.len();
                let mut ctx = ConnCtx {
                    client,
                    node,
                    out,
                    now_ms,
                };
                if let Err(err) = handler(&mut ctx, &argv) {
                    out.buf.truncate(mark);
                    out.error(&err.0);
                }
            }
        }
    }
    if !client.lazy_expired.is_empty() {
        let store = guard.get_or_insert_with(|| node.store.lock());
        delete_lazy_expired(store, client, now_ms);
    }
    drop(guard);
    node.stats
        .commands_processed
        .fetch_add(count as u64, Ordering::Relaxed);
    *client.info.last_cmd.lock() = last;
    *client.info.last_active.lock() = std::time::Instant::now();
    node.publish_events(&mut client.events);
}
