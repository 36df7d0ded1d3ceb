//! One client connection: read, decode, execute, reply, in pipelined batches.
//!
//! How it fits: a connection reads whatever the socket has, decodes every complete
//! request in it, and executes them in order. Consecutive data commands share one
//! acquisition of the store lock, so a pipeline of 16 GETs costs one lock, one read and
//! one write. Replies accumulate in one buffer that is written once per batch.
//! Pub/sub messages arrive on a bounded queue and are written between batches.

mod batch;
mod crosstx;
mod drive;
mod faultin;
mod gate;
mod internal;
mod keyless;
mod memory;
mod merge;
mod migrate_cmd;
mod querybuf;
mod route;
mod watch;

pub use batch::{process_batch, CLUSTER_DOWN};
use drive::drive;
pub use drive::{Step, LEADER_WAIT, NO_LEADER};
pub use internal::{Internal, RelayPool};
pub use merge::Merge;
pub use route::{CROSSSLOT, CROSSSLOT_GROUPS, PIN};
pub use watch::{watch_keys, Watch, WatchedKey};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kelvin_protocol::{ReplyWriter, RequestDecoder, RequestLimits, RespVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tracing::Instrument;

use crate::cmd::{self, CommandSpec, Exec};
use crate::node::{ClientInfo, Node};
use crate::notify::KeyEvent;
use crate::pubsub::{PushMessage, PUSH_QUEUE_LEN};
use crate::relay::Relay;
use crate::store::{Blob, Store};
use gate::Gate;
use kelvin_protocol::log::LogCommand;
use querybuf::QueryBuf;

/// A MULTI in progress.
pub struct Multi {
    pub queue: Vec<(&'static CommandSpec, Vec<Bytes>)>,
    /// A command failed to queue (unknown, wrong arity): EXEC answers EXECABORT.
    pub failed: bool,
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
    /// The next write that finds its group over `maxmemory` has already waited for the
    /// evictor once ([`crate::evict::task::EVICTION_WAIT`]): it goes ahead.
    pub eviction_waited: bool,
    /// Keys whose fault-in write was just proposed ([`faultin::Fault`]): the next batch
    /// proposes a write to them at once, behind it in the log, without waiting for it to
    /// be applied (taken by that batch; the log refuses the write if they did not land,
    /// and it runs again).
    pub settle_ahead: Option<faultin::Fault>,
    /// A blocking command waiting for a list write or its timeout.
    pub blocked: Option<Blocked>,
    /// Requests that arrived behind a blocked command; they run once it is answered.
    pub pending: Vec<Vec<Bytes>>,
    /// A transaction EXEC built, for the connection to propose, and its watched keys
    /// with the group and index each was watched at (the entry carries them too, at the
    /// lowest index: what a transaction in one group checks).
    pub transaction: Option<(LogCommand, Watch)>,
    /// The connection to the leader that relays this client's requests.
    /// The connections to leaders that relay this client's requests, one per leader
    /// (several when its keys live in groups led by different nodes); each keeps the
    /// client's transaction state there.
    pub relays: Vec<Relay>,
    /// READONLY: reads run on this node's replica, whatever its role.
    pub readonly: bool,
    /// Connected to the redirect port: keyed commands for slots this node does not lead
    /// get `-MOVED` instead of being relayed, as in Redis Cluster.
    pub redirect: bool,
    /// Set when this connection is another node's relay (`KELVIN.RELAYED`).
    pub relayed: Option<RelayedFrom>,
    /// CLIENT REPLY: whether this connection's replies are sent.
    pub reply: ReplyMode,
    /// For the WATCH about to run on groups led elsewhere: each group, and its leader's
    /// apply index just before (see [`Step::WatchBarrier`]).
    pub watch_floor: Vec<(u64, u64)>,
}

/// CLIENT REPLY ON/OFF/SKIP, as Redis's `CLIENT_REPLY_OFF` / `_SKIP_NEXT` / `_SKIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Set by CLIENT REPLY SKIP: its own reply is dropped, and the next command's.
    SkipNext,
    /// The command being run now has its reply dropped.
    Skip,
}

/// Where a relay connection's requests come from: how many times they were relayed, and
/// the topology epoch of the node that relayed them last.
#[derive(Debug, Clone, Copy)]
pub struct RelayedFrom {
    pub hops: u8,
    pub epoch: u64,
}

/// A request relayed [`crate::relay::MAX_RELAY_HOPS`] times without reaching its group's
/// leader (the nodes' slot maps disagree and stayed so).
pub const TOO_MANY_HOPS: &str =
    "TRYAGAIN the request was relayed from node to node without reaching its slot's owner: the nodes' slot maps disagree; try again";

/// A command parked by BLPOP and friends.
pub struct Blocked {
    pub argv: Vec<Bytes>,
    pub deadline: Option<tokio::time::Instant>,
    /// Subscribed under the store lock when the command found nothing, so a write that
    /// lands after that check is never missed.
    pub ready: tokio::sync::watch::Receiver<u64>,
}

impl ClientState {
    pub fn new(
        info: Arc<ClientInfo>,
        push_tx: mpsc::Sender<PushMessage>,
        authed: bool,
        redirect: bool,
    ) -> ClientState {
        ClientState {
            info,
            db: 0,
            authed,
            multi: None,
            watch: None,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            push_tx,
            close: false,
            events: Vec::new(),
            lazy_expired: Vec::new(),
            eviction_waited: false,
            settle_ahead: None,
            blocked: None,
            pending: Vec::new(),
            transaction: None,
            relays: Vec::new(),
            readonly: false,
            redirect,
            relayed: None,
            reply: ReplyMode::On,
            watch_floor: Vec::new(),
        }
    }

    /// RESP2 clients with subscriptions may only run pub/sub commands.
    pub fn in_resp2_subscribed_mode(&self, version: RespVersion) -> bool {
        version == RespVersion::Resp2 && !(self.channels.is_empty() && self.patterns.is_empty())
    }

    /// Drops every WATCH of this client.
    pub fn unwatch(&mut self) {
        self.watch = None;
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
    (name, handler): (&str, cmd::DataHandler),
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
        local_read: true,
        block: None,
    };
    let started = std::time::Instant::now();
    let result = handler(&mut ex, argv);
    let block = ex.block;
    let usec = started.elapsed().as_micros() as u64;
    if let Err(err) = result {
        crate::cmdstats::call(name, usec, Some(&err.0));
        out.buf.truncate(mark);
        out.error(&err.0);
        return None;
    }
    crate::cmdstats::call(name, usec, None);
    block
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
        let mut query = QueryBuf::new(std::time::Instant::now());
        let mut out = ReplyWriter::new(RespVersion::Resp2);
        let redirect = node.settings.read().redirect_port == Some(info.laddr.port());
        let mut client = ClientState::new(info.clone(), push_tx, !requirepass, redirect);
        let mut shutdown = node.shutdown_signal();
        // Made once, not per turn of the loop: a killed client or a node shutting down.
        let stop = async {
            tokio::select! {
                _ = info.killed() => {}
                _ = shutdown.changed() => {}
            }
        };
        tokio::pin!(stop);
        // The query buffer's next resize check, armed while it holds memory.
        let resize = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(resize);
        let mut resize_armed: Option<std::time::Instant> = None;
        // The seldom branches below, polled only once they woke.
        let (stop_gate, resize_gate, push_gate) = (Gate::new(), Gate::new(), Gate::new());
        tracing::debug!("connected");
        loop {
            tokio::select! {
                ready = stream.readable() => {
                    if let Err(err) = ready {
                        tracing::debug!(cause = %err, "read failed");
                        break;
                    }
                    // Room only now: an idle client's freed buffer stays freed until it
                    // sends something.
                    query.reserve();
                    match query.read_from(&mut stream) {
                        Ok(0) => break,
                        Ok(n) => {
                            node.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                            query.read(std::time::Instant::now());
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(err) => {
                            tracing::debug!(cause = %err, "read failed");
                            break;
                        }
                    }
                    let inbuf = &mut query.buf;
                    if client.blocked.is_some() {
                        // Requests behind a blocked command wait in the buffer, bounded.
                        if inbuf.len() > decoder.limits().max_query_len {
                            tracing::debug!("query buffer limit reached while blocked, closing");
                            break;
                        }
                        continue;
                    }
                    let (batch, proto_err) = decode_all(&mut decoder, inbuf);
                    drive_replying(&node, &mut client, &mut out, batch).await;
                    if let Some(err) = proto_err {
                        tracing::debug!(cause = %err, "protocol error, closing");
                        out.error(&format!("ERR {err}"));
                        client.close = true;
                    }
                }
                woke = async {
                    match client.blocked.as_mut() {
                        Some(blocked) => wait_unblock(blocked, &info).await,
                        None => std::future::pending().await,
                    }
                } => {
                    info.blocked.store(false, Ordering::Relaxed);
                    if let Some(blocked) = client.blocked.take() {
                        match woke {
                            Wake::Ready => {
                                rerun_blocked(&node, &mut client, &mut out, blocked).await;
                            }
                            // Timed out (or CLIENT UNBLOCK): the blocking command's nil.
                            Wake::TimedOut => out.null_array(),
                            Wake::Unblocked => {
                                out.error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                            }
                        }
                    }
                    let (more, proto_err) = decode_all(&mut decoder, &mut query.buf);
                    if client.blocked.is_some() {
                        // Blocked again: what came behind waits, bounded as above.
                        client.pending.extend(more);
                    } else {
                        let mut batch = std::mem::take(&mut client.pending);
                        batch.extend(more);
                        drive_replying(&node, &mut client, &mut out, batch).await;
                    }
                    if let Some(err) = proto_err {
                        out.error(&format!("ERR {err}"));
                        client.close = true;
                    }
                }
                msg = push_gate.on(std::future::poll_fn(|cx| push_rx.poll_recv(cx))) => {
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
                () = resize_gate.on(&mut resize), if resize_armed.is_some() => {
                    resize_armed = None;
                    query.check(std::time::Instant::now());
                }
                _ = stop_gate.on(&mut stop) => break,
            }
            query.settle();
            if let Some(at) = query.next_check() {
                if resize_armed.is_none_or(|armed| at < armed) {
                    resize.as_mut().reset(at.into());
                    resize_gate.open();
                    resize_armed = Some(at);
                }
            }
            let (qbuf, qbuf_free) = query.figures();
            info.memory.qbuf.store(qbuf, Ordering::Relaxed);
            info.memory.qbuf_free.store(qbuf_free, Ordering::Relaxed);
            info.memory
                .obuf
                .store(out.buf.capacity(), Ordering::Relaxed);
            if !out.buf.is_empty() {
                info.memory.omem.store(out.buf.len(), Ordering::Relaxed);
                let written = stream.write_all(&out.buf).await;
                info.memory.omem.store(0, Ordering::Relaxed);
                if let Err(err) = written {
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
        tracing::debug!("disconnected");
    }
}

/// [`drive`], honouring CLIENT REPLY: while replies are off or skipped, or when the
/// batch switches them, its commands run one at a time and the replies that must not be
/// sent are cut from `out`.
async fn drive_replying(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    batch: Vec<Vec<Bytes>>,
) {
    // Redis serves requests in the order they arrive; here another connection's
    // UNSUBSCRIBE that arrived just before a PUBLISH may still wait for its task. One
    // yield lets the runtime poll the sockets and run such tasks first, so PUBLISH does
    // not count a subscriber that already left.
    if batch
        .iter()
        .any(|argv| argv.first().is_some_and(|name| cmd::is(name, "publish")))
    {
        tokio::task::yield_now().await;
    }
    let switches = |argv: &Vec<Bytes>| {
        argv.len() >= 2 && cmd::is(&argv[0], "client") && cmd::is(&argv[1], "reply")
    };
    if client.reply == ReplyMode::On && !batch.iter().any(switches) {
        return drive(node, client, out, batch).await;
    }
    let mut commands = batch.into_iter();
    while let Some(argv) = commands.next() {
        // What (UN)SUBSCRIBE answer are pushes in Redis (arrays in RESP2), sent whatever
        // CLIENT REPLY says.
        let pushes = ["subscribe", "psubscribe", "unsubscribe", "punsubscribe"]
            .iter()
            .any(|name| argv.first().is_some_and(|a| cmd::is(a, name)));
        let before = client.reply;
        let mark = out.buf.len();
        drive(node, client, out, vec![argv]).await;
        let drop_reply = match (before, client.reply) {
            (_, ReplyMode::Off) => true,
            (_, ReplyMode::SkipNext) => {
                client.reply = ReplyMode::Skip;
                true
            }
            (ReplyMode::Skip, ReplyMode::Skip) => {
                client.reply = ReplyMode::On;
                true
            }
            _ => false,
        };
        if drop_reply && !pushes {
            out.buf.truncate(mark);
        }
        if client.blocked.is_some() {
            client.pending.extend(commands);
            return;
        }
    }
}

/// Runs a woken blocking command again. If a key it waits on now holds another type
/// (a list deleted and set to a string in the meantime), Redis keeps the client blocked
/// rather than answering WRONGTYPE: so does this, with the same deadline. The command
/// wrote nothing (an error leaves no trace), and the kept receiver has not seen the
/// writes since the wake, so none is missed.
async fn rerun_blocked(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    blocked: Blocked,
) {
    let keep = Blocked {
        argv: blocked.argv.clone(),
        deadline: blocked.deadline,
        ready: blocked.ready.clone(),
    };
    let mark = out.buf.len();
    drive_replying(node, client, out, vec![blocked.argv]).await;
    // Parked again (the write that woke it was another key's, or another client took
    // the element): the timeout still counts from the first block, as in Redis.
    if let Some(again) = client.blocked.as_mut() {
        again.deadline = keep.deadline;
    }
    if client.blocked.is_none()
        && out.buf[mark..].starts_with(b"-WRONGTYPE")
        && !destination_refused(node, client, &keep.argv)
    {
        out.buf.truncate(mark);
        client.info.blocked.store(true, Ordering::Relaxed);
        client.blocked = Some(keep);
    }
}

/// Whether a woken BRPOPLPUSH or BLMOVE got WRONGTYPE from its destination: its source
/// is still a list, so the error came from the other key. Redis answers that error (the
/// element stays in the source); only a source of another type keeps a client blocked.
fn destination_refused(node: &Node, client: &ClientState, argv: &[Bytes]) -> bool {
    let moves = argv
        .first()
        .is_some_and(|n| cmd::is(n, "brpoplpush") || cmd::is(n, "blmove"));
    let (true, Some(source), Some(spec)) = (moves, argv.get(1), cmd::lookup(&argv[0])) else {
        return false;
    };
    let gid =
        route::command_group(node, spec, argv, route::default_group(node)).unwrap_or_else(|| {
            node.groups().map_or(crate::cluster::DATA_GROUP, |gs| {
                gs.for_slot(kelvin_protocol::key_slot(source) as usize).0
            })
        });
    let Some(group) = node.hosted(gid) else {
        return false;
    };
    let mut store = group.store.lock();
    store
        .db(client.db)
        .raw_get(source)
        .is_some_and(|e| matches!(e.value, crate::store::Value::List(_)))
}

/// Why a blocked command stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A write may have made it runnable: run it again.
    Ready,
    /// Its timeout passed, or CLIENT UNBLOCK [TIMEOUT]: it answers nil.
    TimedOut,
    /// CLIENT UNBLOCK ERROR: it answers `-UNBLOCKED`.
    Unblocked,
}

/// Waits until a list write may have made the blocked command runnable, its timeout
/// passed, or CLIENT UNBLOCK asked it to answer.
async fn wait_unblock(blocked: &mut Blocked, info: &ClientInfo) -> Wake {
    let deadline_at = blocked.deadline;
    let deadline = async {
        match deadline_at {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            changed = blocked.ready.changed() => {
                return if changed.is_ok() { Wake::Ready } else { Wake::TimedOut };
            }
            _ = &mut deadline => return Wake::TimedOut,
            _ = info.unblock_requested() => match info.take_unblock() {
                crate::node::UNBLOCK_TIMEOUT => return Wake::TimedOut,
                crate::node::UNBLOCK_ERROR => return Wake::Unblocked,
                // A signal left from an earlier request: keep waiting.
                _ => {}
            },
        }
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
