//! One client connection: read, decode, execute, reply, in pipelined batches.
//!
//! How it fits: a connection reads whatever the socket has, decodes every complete
//! request in it, and executes them in order. Consecutive data commands share one
//! acquisition of the store lock, so a pipeline of 16 GETs costs one lock, one read and
//! one write. Replies accumulate in one buffer that is written once per batch.
//! Pub/sub messages arrive on a bounded queue and are written between batches.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kelvin_protocol::{ReplyWriter, RequestDecoder, RequestLimits, RespVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tracing::Instrument;

use crate::cmd::{self, flags, CmdError, CommandSpec, Exec, Handler};
use crate::group::{Proposal, ProposalResult, ProposeError};
use crate::node::{ClientInfo, Node};
use crate::notify::KeyEvent;
use crate::pubsub::{PushMessage, PUSH_QUEUE_LEN};
use crate::relay::Relay;
use crate::store::{Blob, Store};
use kelvin_protocol::log::LogCommand;
use tokio::sync::oneshot;

/// Bytes the read buffer keeps free before each read.
const READ_RESERVE: usize = 16 * 1024;

/// A MULTI in progress.
pub struct Multi {
    pub queue: Vec<(&'static CommandSpec, Vec<Bytes>)>,
    /// A command failed to queue (unknown, wrong arity): EXEC answers EXECABORT.
    pub failed: bool,
}

/// Keys under WATCH, and the log index they were watched at: EXEC aborts if their slot
/// was written by a later entry (checked when the transaction's entry is applied, so
/// every replica decides the same).
pub struct Watch {
    pub since: u64,
    pub keys: Vec<(u8, Bytes)>,
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
    /// A transaction EXEC built, for the connection to propose.
    pub transaction: Option<LogCommand>,
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
            transaction: None,
            relays: Vec::new(),
            readonly: false,
            redirect: node.settings.read().redirect_port == Some(info.laddr.port()),
            relayed: None,
            reply: ReplyMode::On,
        };
        let mut shutdown = node.shutdown_signal();
        // Made once, not per turn of the loop: a killed client or a node shutting down.
        let stop = async {
            tokio::select! {
                _ = info.killed() => {}
                _ = shutdown.changed() => {}
            }
        };
        tokio::pin!(stop);
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
                    drive_replying(&node, &mut client, &mut out, batch).await;
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
                    info.blocked.store(false, Ordering::Relaxed);
                    if let Some(blocked) = client.blocked.take() {
                        if woke {
                            rerun_blocked(&node, &mut client, &mut out, blocked).await;
                        } else {
                            // Timed out: the blocking command's nil answer.
                            out.null_array();
                        }
                    }
                    let (more, proto_err) = decode_all(&mut decoder, &mut inbuf);
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
                _ = &mut stop => break,
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
    if client.blocked.is_none() && out.buf[mark..].starts_with(b"-WRONGTYPE") {
        out.buf.truncate(mark);
        client.info.blocked.store(true, Ordering::Relaxed);
        client.blocked = Some(keep);
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

/// How long requests wait for a leader (an election, or a leader that moved) before
/// they are answered with an error.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// The error a request gets when no leader turned up within [`LEADER_WAIT`].
pub const NO_LEADER: &str = "CLUSTERDOWN The cluster is down: no leader was elected in time";

/// Runs a batch to its end: proposals are awaited, relays done, elections waited out.
async fn drive(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    mut batch: Vec<Vec<Bytes>>,
) {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match process_batch(node, client, out, batch) {
            Step::Done => return,
            Step::Propose {
                rx,
                retry,
                replies,
                blocking,
                rest,
            } => {
                let result = rx.await.unwrap_or(Err(ProposeError::Stopped));
                match result {
                    Ok(applied) => {
                        out.buf.extend_from_slice(&applied.out);
                        if let (Some((block, ready)), Some(argv)) = (applied.blocked, blocking) {
                            client.info.blocked.store(true, Ordering::Relaxed);
                            client.blocked = Some(Blocked {
                                argv,
                                deadline: block.timeout.map(|t| tokio::time::Instant::now() + t),
                                ready,
                            });
                            client.pending.extend(rest);
                            return;
                        }
                        batch = rest;
                    }
                    Err(ProposeError::NotLeader(_))
                        if !retry.is_empty() && tokio::time::Instant::now() < deadline =>
                    {
                        // Nothing was written: run the requests again where the leader is.
                        wait_leader_change(node, deadline).await;
                        batch = retry;
                        batch.extend(rest);
                    }
                    Err(err) => {
                        for _ in 0..replies {
                            out.error(err.reply_text());
                        }
                        batch = rest;
                    }
                }
            }
            Step::Forward {
                leader,
                requests,
                rest,
            } => {
                if let Some(from) = client.relayed {
                    // Relayed here by a node with a newer topology: route by that one,
                    // not back where the requests came from.
                    if node.membership.read().epoch < from.epoch
                        && tokio::time::Instant::now() < deadline
                    {
                        wait_leader_change(node, deadline).await;
                        batch = requests;
                        batch.extend(rest);
                        continue;
                    }
                    if from.hops >= crate::relay::MAX_RELAY_HOPS {
                        for _ in &requests {
                            out.error(TOO_MANY_HOPS);
                        }
                        batch = rest;
                        continue;
                    }
                }
                match relay(node, client, out, leader, &requests).await {
                    Relayed::Done => batch = rest,
                    // The leader could not be reached: nothing was sent, so the requests
                    // wait for the next leader like during an election.
                    Relayed::NotSent if tokio::time::Instant::now() < deadline => {
                        wait_leader_change(node, deadline).await;
                        batch = requests;
                        batch.extend(rest);
                    }
                    Relayed::NotSent => {
                        for _ in &requests {
                            out.error(NO_LEADER);
                        }
                        batch = rest;
                    }
                }
            }
            Step::AwaitLeader { requests, rest } => {
                if tokio::time::Instant::now() >= deadline {
                    for _ in &requests {
                        out.error(NO_LEADER);
                    }
                    batch = rest;
                } else {
                    wait_leader_change(node, deadline).await;
                    batch = requests;
                    batch.extend(rest);
                }
            }
            Step::Split { parts, merge, rest } => {
                // Each part goes to its own group like any request; their replies are
                // then merged into the one reply the client expects.
                let mut sub = ReplyWriter::new(out.version);
                Box::pin(drive(node, client, &mut sub, parts)).await;
                merge.write(&sub.buf, out);
                batch = rest;
            }
        }
    }
}

impl Step {
    /// This step with `tail` run after everything it holds; `Err(tail)` if it holds
    /// nothing more to do (`Done`).
    fn then(self, tail: Vec<Vec<Bytes>>) -> Result<Step, Vec<Vec<Bytes>>> {
        let mut step = self;
        match &mut step {
            Step::Done => return Err(tail),
            Step::Propose { rest, .. }
            | Step::Forward { rest, .. }
            | Step::AwaitLeader { rest, .. }
            | Step::Split { rest, .. } => rest.extend(tail),
        }
        Ok(step)
    }
}

/// How the replies of a multi-key command split across groups become one.
pub enum Merge {
    /// MGET, split into one single-key MGET per key: an array of their elements.
    Elements(usize),
    /// DEL, UNLINK, EXISTS, TOUCH, split by group: the sum of their integers.
    Sum,
    /// MSET, split by group (and FLUSHDB/FLUSHALL, run on each): OK if every part said OK.
    Ok,
    /// KEYS on every group: one array of all their elements.
    Concat,
    /// RANDOMKEY on every group: the first key one of them found.
    FirstKey,
    /// SCAN on the group owning the run of slots `start..end`: its keys in that run, and
    /// its cursor, unless it finished the run or went past it: then the cursor is the
    /// run's end, where the next owner takes over (0 at the last slot). A group's store
    /// may hold keys of slots it does not own (a source not yet drained), and may own
    /// other runs further on: those are its own SCAN's to return, not this one's.
    Scan { start: usize, end: usize },
}

impl Merge {
    /// Writes the merged reply of `parts` (the parts' replies, in order) to `out`; the
    /// first error among them, if any, is the reply.
    fn write(&self, parts: &[u8], out: &mut ReplyWriter) {
        let replies = split_replies(parts, out.version);
        if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
            out.buf.extend_from_slice(err);
            return;
        }
        match self {
            Merge::Elements(n) => {
                out.array(*n);
                for r in &replies {
                    // Each is `*1\r\n<element>`.
                    out.buf.extend_from_slice(r.get(4..).unwrap_or_default());
                }
            }
            Merge::Sum => {
                let sum: i64 = replies
                    .iter()
                    .filter_map(|r| std::str::from_utf8(r.get(1..r.len().saturating_sub(2))?).ok())
                    .filter_map(|n| n.parse::<i64>().ok())
                    .sum();
                out.int(sum);
            }
            Merge::Ok => out.ok(),
            Merge::Concat => {
                let elements: Vec<&[u8]> = replies
                    .iter()
                    .filter_map(|r| array_elements(r, out.version))
                    .flatten()
                    .collect();
                out.array(elements.len());
                for e in elements {
                    out.buf.extend_from_slice(e);
                }
            }
            Merge::FirstKey => match replies
                .iter()
                .find(|r| r.first() == Some(&b'$') && !r.starts_with(b"$-1"))
            {
                Some(r) => out.buf.extend_from_slice(r),
                None => out.null(),
            },
            Merge::Scan { start, end } => {
                let Some(reply) = replies.first() else {
                    out.error("ERR SCAN got no reply");
                    return;
                };
                let parsed = array_elements(reply, out.version)
                    .and_then(|e| <[&[u8]; 2]>::try_from(e).ok())
                    .and_then(|[cursor, keys]| {
                        let cursor: u64 =
                            std::str::from_utf8(bulk_body(cursor)?).ok()?.parse().ok()?;
                        Some((cursor, array_elements(keys, out.version)?))
                    });
                let Some((cursor, keys)) = parsed else {
                    out.buf.extend_from_slice(reply);
                    return;
                };
                let bits = crate::store::CURSOR_HASH_BITS;
                let cursor = match cursor {
                    c if c != 0 && ((c >> bits) as usize) < *end => c,
                    _ if *end >= kelvin_protocol::SLOT_COUNT => 0,
                    _ => (*end as u64) << bits,
                };
                let keys: Vec<&[u8]> = keys
                    .into_iter()
                    .filter(|k| {
                        bulk_body(k).is_some_and(|k| {
                            (*start..*end).contains(&(kelvin_protocol::key_slot(k) as usize))
                        })
                    })
                    .collect();
                out.array(2);
                out.bulk(cursor.to_string().as_bytes());
                out.array(keys.len());
                for k in keys {
                    out.buf.extend_from_slice(k);
                }
            }
        }
    }
}

/// The elements of an array reply (each as its bytes), or `None` if it is not one.
fn array_elements(reply: &[u8], version: RespVersion) -> Option<Vec<&[u8]>> {
    let rest = reply.strip_prefix(b"*")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let body = rest.get(end + 2..)?;
    let elements = split_replies(body, version);
    (elements.len() == n).then_some(elements)
}

/// The payload of a bulk string reply (`$3\r\nabc\r\n` -> `abc`).
fn bulk_body(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    rest.get(end + 2..end + 2 + n)
}

/// The complete replies in `buf`, each as its bytes.
fn split_replies(mut buf: &[u8], version: RespVersion) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(used) = reply_len(buf, version) {
        out.push(&buf[..used]);
        buf = &buf[used..];
    }
    out
}

/// The length of the complete reply at the start of `buf`, if there is one.
fn reply_len(buf: &[u8], version: RespVersion) -> Option<usize> {
    let used = match version {
        RespVersion::Resp2 => kelvin_protocol::frames::resp2::decode::decode(buf)
            .ok()
            .flatten()
            .map(|(_, u)| u),
        RespVersion::Resp3 => kelvin_protocol::frames::resp3::decode::complete::decode(buf)
            .ok()
            .flatten()
            .map(|(_, u)| u),
    };
    used.filter(|&u| u > 0)
}

/// Waits until the group's leader changes, a short while, or `deadline`.
async fn wait_leader_change(node: &Node, deadline: tokio::time::Instant) {
    // Any group of this node (the requests waiting may be for any of them); a group it
    // does not replicate has no signal here, hence the short nap at most.
    let mut changed = node.leaders_changed.subscribe();
    let nap = tokio::time::Instant::now() + Duration::from_millis(200);
    let _ = tokio::time::timeout_at(nap.min(deadline), changed.changed()).await;
}

/// How a relay went.
enum Relayed {
    /// Replies (or errors for an unknown outcome) are in `out`.
    Done,
    /// The leader could not be reached; nothing was sent.
    NotSent,
}

/// Relays requests to the leader through the client's relay connection.
async fn relay(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    leader: u64,
    requests: &[Vec<Bytes>],
) -> Relayed {
    let at = match client.relays.iter().position(|r| r.leader == leader) {
        Some(at) => at,
        None => {
            let Some(addr) = node.peer_client_addr(leader) else {
                return Relayed::NotSent;
            };
            let password = node.settings.read().requirepass.clone();
            let hops = client.relayed.map_or(0, |r| r.hops).saturating_add(1);
            let epoch = node.membership.read().epoch;
            match Relay::connect(leader, addr, password.as_deref(), out.version, hops, epoch).await
            {
                Ok(r) => client.relays.push(r),
                Err(err) => {
                    tracing::debug!(leader, cause = %err, "leader unreachable");
                    return Relayed::NotSent;
                }
            }
            client.relays.len() - 1
        }
    };
    let relay = &mut client.relays[at];
    let blocking = requests
        .iter()
        .any(|r| cmd::lookup(&r[0]).is_some_and(|s| s.flags & flags::BLOCKING != 0));
    let mut replies = Vec::new();
    let fut = relay.forward(client.db, out.version, requests, &mut replies);
    let result = if blocking {
        fut.await
    } else {
        tokio::time::timeout(crate::relay::RELAY_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the leader did not answer in time")))
    };
    match result {
        Ok(()) => out.buf.extend_from_slice(&replies),
        Err(err) => {
            tracing::debug!(leader, cause = %err, "relay failed");
            client.relays.remove(at);
            // Replies that did arrive are good; the rest may or may not have happened.
            out.buf.extend_from_slice(&replies);
            let answered = count_replies(&replies, out.version);
            for _ in answered..requests.len() {
                out.error(ProposeError::Unknown.reply_text());
            }
        }
    }
    Relayed::Done
}

/// Complete replies at the start of `buf`.
fn count_replies(buf: &[u8], version: RespVersion) -> usize {
    split_replies(buf, version).len()
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

/// What the connection must do after [`process_batch`] stopped.
pub enum Step {
    /// Every request was answered (or the connection parked in a blocking command).
    Done,
    /// Wait for this proposal, write its replies, then go on with `rest`. `retry` holds
    /// the requests to run again if the node turns out not to be the leader (empty for a
    /// transaction, which cannot be rebuilt).
    Propose {
        rx: oneshot::Receiver<ProposalResult>,
        retry: Vec<Vec<Bytes>>,
        replies: usize,
        blocking: Option<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// Relay these requests to the leader, `leader`, then go on with `rest`.
    Forward {
        leader: u64,
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// No leader is known: wait for an election, then run `requests` again (or answer
    /// them with an error if none comes), then `rest`.
    AwaitLeader {
        requests: Vec<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    },
    /// A multi-key command whose keys are in several groups, on the main port: run
    /// `parts` (one per group or key), merge their replies, then go on with `rest`.
    Split {
        parts: Vec<Vec<Bytes>>,
        merge: Merge,
        rest: Vec<Vec<Bytes>>,
    },
}

/// Where this node stands for the data commands of a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// This node leads the group: reads run here, writes are proposed here.
    Leader,
    /// Another node leads: relay to it.
    Forward(u64),
    /// An election is on.
    NoLeader,
    /// The node is not part of a formed cluster yet, or its group stopped.
    Down,
}

/// Where this node stands for group `gid`. A group it does not replicate is reached
/// through one of its replicas (which relays or redirects again if it does not lead).
fn route(node: &Node, gid: u64) -> Route {
    let Some(groups) = node.groups() else {
        return Route::Down;
    };
    let Some(group) = groups.hosted.get(&gid) else {
        return match node
            .membership
            .read()
            .group(gid)
            .and_then(|g| g.replicas.first())
        {
            Some(&r) => Route::Forward(r),
            None => Route::Down,
        };
    };
    let status = &group.status;
    if status.is_stopped() {
        return Route::Down;
    }
    match status.leader() {
        Some(l) if l == status.node_id => Route::Leader,
        Some(l) => Route::Forward(l),
        None => Route::NoLeader,
    }
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// A command whose keys live in different groups, on the main port.
pub const CROSSSLOT_GROUPS: &str =
    "CROSSSLOT Keys in request belong to different groups of this cluster: use keys with the same {hash tag}";

/// A plain client's MGET, DEL, UNLINK, EXISTS, TOUCH or MSET over keys in several groups,
/// cut into parts each group can run (not atomically, as Redis Cluster proxies do): MGET
/// one key at a time, the others one command per group. `None` for anything else (and on
/// the redirect port or inside MULTI, where it is CROSSSLOT).
fn split(node: &Node, client: &ClientState, argv: &[Bytes]) -> Option<(Vec<Vec<Bytes>>, Merge)> {
    if client.redirect || client.multi.is_some() {
        return None;
    }
    let groups = node.groups()?;
    let group_of = |k: &[u8]| groups.for_slot(kelvin_protocol::key_slot(k) as usize).0;
    let name = cmd::lookup(&argv[0])?.name;
    let by_group = |step: usize| {
        let mut parts: Vec<(u64, Vec<Bytes>)> = Vec::new();
        for chunk in argv[1..].chunks(step) {
            let g = group_of(&chunk[0]);
            match parts.iter_mut().find(|(pg, _)| *pg == g) {
                Some((_, part)) => part.extend(chunk.iter().cloned()),
                None => {
                    let mut part = vec![argv[0].clone()];
                    part.extend(chunk.iter().cloned());
                    parts.push((g, part));
                }
            }
        }
        parts.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    match name {
        "mget" => Some((
            argv[1..]
                .iter()
                .map(|k| vec![argv[0].clone(), k.clone()])
                .collect(),
            Merge::Elements(argv.len() - 1),
        )),
        "del" | "unlink" | "exists" | "touch" => Some((by_group(1), Merge::Sum)),
        "mset" if argv.len() % 2 == 1 => Some((by_group(2), Merge::Ok)),
        _ => None,
    }
}

/// An error reply to a request that did not run; inside MULTI it also dooms the
/// transaction (EXEC answers EXECABORT), as in Redis.
fn refuse(client: &mut ClientState, out: &mut ReplyWriter, err: &str) {
    if let Some(multi) = client.multi.as_mut() {
        multi.failed = true;
    }
    out.error(err);
}

/// Replies go out in order: what waits before `next` (requests gathered to relay, writes
/// gathered to propose) goes out first, then `next` and the rest run (`Ok`). With nothing
/// waiting, `next` comes back (`Err`) to run now.
fn flush_before(
    here: Route,
    forward: &mut Vec<Vec<Bytes>>,
    segment: &mut Segment,
    node: &Node,
    out: &ReplyWriter,
    next: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Result<Step, Vec<Bytes>> {
    if !forward.is_empty() {
        return Ok(forward_step(here, std::mem::take(forward), next, requests));
    }
    if !segment.commands.is_empty() {
        return Ok(segment_step(
            std::mem::take(segment),
            node,
            out,
            next,
            requests,
        ));
    }
    Err(next)
}

/// On the redirect port, as Redis Cluster's `getNodeByQuery`: keys in different slots are
/// `-CROSSSLOT`; a slot another node leads is `-MOVED slot host:port` (the leader's
/// advertised port), unless this is a READONLY connection reading its replica. `None`: run
/// it here (keyless, led here, or no leader yet: the request waits for one like any other).
fn redirection(
    node: &Node,
    client: &ClientState,
    spec: &CommandSpec,
    argv: &[Bytes],
    here: Route,
) -> Option<String> {
    let mut slot = None;
    for p in spec.keys_in(argv) {
        let s = kelvin_protocol::key_slot(&argv[p]);
        match slot {
            None => slot = Some(s),
            Some(first) if first != s => return Some(CROSSSLOT.to_string()),
            Some(_) => {}
        }
    }
    let slot = slot?;
    let Route::Forward(leader) = here else {
        return None;
    };
    if client.readonly && is_read(spec) {
        return None;
    }
    let membership = node.membership.read();
    let m = membership.member(leader)?;
    Some(format!("MOVED {slot} {}:{}", m.host, m.advertised_port()))
}

/// Commands relayed to the leader along with data commands: the transaction commands,
/// whose state must live where the data is.
fn forwarded(spec: &CommandSpec) -> bool {
    matches!(spec.handler, Handler::Data(_))
        || matches!(
            spec.name,
            "multi" | "exec" | "discard" | "watch" | "unwatch"
        )
}

fn is_read(spec: &CommandSpec) -> bool {
    matches!(spec.handler, Handler::Data(_)) && !spec.is_write()
}

/// The group a command goes to: the owner of its keys' slots; for a keyless command,
/// `current` (the group the batch is already talking to). Keys in different groups cannot
/// be served by one group: `None`.
fn command_group(node: &Node, spec: &CommandSpec, argv: &[Bytes], current: u64) -> Option<u64> {
    let Some(groups) = node.groups() else {
        return Some(current);
    };
    if let Some(only) = groups.only {
        return Some(only);
    }
    let mut group = None;
    for p in spec.keys_in(argv) {
        let g = groups
            .for_slot(kelvin_protocol::key_slot(&argv[p]) as usize)
            .0;
        if *group.get_or_insert(g) != g {
            return None;
        }
    }
    Some(group.unwrap_or(current))
}

/// The group of a transaction: that of its first key (the rest, watched keys included,
/// must share it: a watch is checked against its group's writes only).
fn transaction_group(node: &Node, tx: &LogCommand, current: u64) -> Result<u64, CmdError> {
    let LogCommand::Transaction { items, watch, .. } = tx else {
        return Ok(current);
    };
    let mut group = None;
    if let Some(groups) = node.groups() {
        for (_, key) in watch {
            let g = groups.for_slot(kelvin_protocol::key_slot(key) as usize).0;
            if *group.get_or_insert(g) != g {
                return Err(CmdError::raw(CROSSSLOT));
            }
        }
    }
    for item in items {
        let kelvin_protocol::log::TxItem::Data { argv, .. } = item else {
            continue;
        };
        let Some(spec) = cmd::lookup(&argv[0]) else {
            continue;
        };
        if spec.keys_in(argv).is_empty() {
            continue;
        }
        let g = command_group(node, spec, argv, current).ok_or(CmdError::raw(CROSSSLOT))?;
        if *group.get_or_insert(g) != g {
            return Err(CmdError::raw(CROSSSLOT));
        }
    }
    Ok(group.unwrap_or(current))
}

/// Whether the cluster has more than one group (routing then looks at every key).
fn several_groups(node: &Node) -> bool {
    node.groups().is_some_and(|g| g.only.is_none())
}

/// The group keyless data commands (DBSIZE, KEYS, SCAN, RANDOMKEY, FLUSHALL...) act on:
/// the lowest-numbered group this node leads, else the lowest it replicates. (Redis Cluster
/// clients send those to every master; with leaders spread one group per node, that covers
/// every group. A node leading several groups answers for one of them.)
fn default_group(node: &Node) -> u64 {
    let Some(groups) = node.groups() else {
        return crate::cluster::DATA_GROUP;
    };
    groups
        .hosted
        .values()
        .find(|g| g.status.is_leader())
        .or_else(|| groups.hosted.values().next())
        .map_or(crate::cluster::DATA_GROUP, |g| g.group_id)
}

/// The writes gathered from a pipeline, proposed as one, to `group`.
#[derive(Default)]
struct Segment {
    group: u64,
    commands: Vec<LogCommand>,
    requests: Vec<Vec<Bytes>>,
}

impl Segment {
    fn propose(
        self,
        node: &Node,
        out: &ReplyWriter,
        blocking: Option<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    ) -> Step {
        let (tx, rx) = oneshot::channel();
        let replies = self.requests.len();
        match node.hosted(self.group) {
            Some(group) => group.propose(Proposal {
                commands: self.commands,
                version: out.version,
                reply: Some(tx),
            }),
            None => {
                let _ = tx.send(Err(ProposeError::Stopped));
            }
        }
        Step::Propose {
            rx,
            retry: self.requests,
            replies,
            blocking,
            rest,
        }
    }
}

/// Executes a batch of decoded requests in order, until one needs to wait: a write (for
/// its log entry), a request to relay to the leader, or an election. A `KELVIN.ON`
/// request (see [`PIN`]) runs alone, on its group.
pub fn process_batch(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    mut batch: Vec<Vec<Bytes>>,
) -> Step {
    loop {
        let Some(at) = batch.iter().position(|a| is_pinned(a)) else {
            return run_batch(node, client, out, batch, None);
        };
        let mut tail = batch.split_off(at);
        let step = if batch.is_empty() {
            let first = tail.remove(0);
            match unpin(node, client, &first) {
                Ok((group, inner)) => run_batch(node, client, out, vec![inner], Some(group)),
                Err(err) => {
                    refuse(client, out, &err.0);
                    Step::Done
                }
            }
        } else {
            run_batch(node, client, out, batch, None)
        };
        match step.then(tail) {
            Ok(step) => return step,
            Err(tail) if client.blocked.is_some() => {
                client.pending.extend(tail);
                return Step::Done;
            }
            Err(tail) => batch = tail,
        }
    }
}

/// `KELVIN.ON <group> <keyless command...>`: runs the command on that group (its leader,
/// relayed if need be). How a node on the main port spreads DBSIZE, KEYS, SCAN,
/// RANDOMKEY, FLUSHDB and FLUSHALL over every group ([`broadcast`]); the pin travels with
/// the request when it is relayed, since the leader may lead several groups.
pub const PIN: &[u8] = b"KELVIN.ON";

fn is_pinned(argv: &[Bytes]) -> bool {
    argv.first().is_some_and(|a| a.eq_ignore_ascii_case(PIN))
}

fn pin(group: u64, argv: Vec<Bytes>) -> Vec<Bytes> {
    let mut pinned = vec![Bytes::from_static(PIN), Bytes::from(group.to_string())];
    pinned.extend(argv);
    pinned
}

/// The group and the command of a `KELVIN.ON` request.
fn unpin(node: &Node, client: &ClientState, argv: &[Bytes]) -> Result<(u64, Vec<Bytes>), CmdError> {
    if argv.len() < 3 {
        return Err(CmdError::arity("kelvin.on"));
    }
    if client.multi.is_some() {
        return Err(CmdError::err("KELVIN.ON inside MULTI is not allowed"));
    }
    let group = std::str::from_utf8(&argv[1])
        .ok()
        .and_then(|g| g.parse::<u64>().ok())
        .filter(|g| {
            node.groups()
                .is_some_and(|gs| gs.hosted.contains_key(g) || gs.slot_group.contains(g))
        })
        .ok_or_else(|| CmdError::err("KELVIN.ON: no such group"))?;
    let inner = argv[2..].to_vec();
    match cmd::lookup(&inner[0]) {
        Some(spec) if spec.keys_in(&inner).is_empty() => Ok((group, inner)),
        Some(_) => Err(CmdError::err(
            "KELVIN.ON takes keyless commands (a key goes to its own group)",
        )),
        None => Err(cmd::unknown_command(&inner)),
    }
}

/// On the main port with several groups, a keyless command over the whole keyspace runs
/// on every group, and the replies merge as a proxy would: DBSIZE sums, KEYS
/// concatenates, RANDOMKEY takes the first key found, FLUSHDB/FLUSHALL answer OK once all
/// did, SWAPDB too (one group after the other, not atomically), SCRIPT LOAD/FLUSH load
/// or drop a script in every group's cache. SCAN walks the runs of
/// slots in slot order: its cursor names a slot, the group owning the run of slots from
/// there scans it, and when it is done the cursor is the next run's first slot
/// ([`Merge::Scan`]), so every key is seen once, whatever the groups' slot ranges.
fn broadcast(
    node: &Node,
    client: &ClientState,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Option<(Vec<Vec<Bytes>>, Merge)> {
    if client.redirect || client.multi.is_some() {
        return None;
    }
    let groups = node.groups()?;
    if groups.only.is_some() {
        return None;
    }
    // Every group, by its lowest slot.
    let mut order: Vec<u64> = Vec::new();
    for &g in &groups.slot_group {
        if !order.contains(&g) {
            order.push(g);
        }
    }
    let each = |merge| {
        let parts = order.iter().map(|&g| pin(g, argv.to_vec())).collect();
        Some((parts, merge))
    };
    match spec.name {
        "dbsize" => each(Merge::Sum),
        "keys" => each(Merge::Concat),
        "randomkey" => each(Merge::FirstKey),
        // Not atomic across groups (Redis Cluster has no SWAPDB at all).
        "flushdb" | "flushall" | "swapdb" => each(Merge::Ok),
        // Every group keeps its own script cache (scripts run where their keys are).
        "script" if argv.get(1).is_some_and(|a| cmd::is(a, "load")) => each(Merge::FirstKey),
        "script" if argv.get(1).is_some_and(|a| cmd::is(a, "flush")) => each(Merge::Ok),
        "function" if argv.get(1).is_some_and(|a| cmd::is(a, "load")) => each(Merge::FirstKey),
        "function"
            if argv
                .get(1)
                .is_some_and(|a| cmd::is(a, "flush") || cmd::is(a, "delete")) =>
        {
            each(Merge::Ok)
        }
        "scan" => {
            let cursor = std::str::from_utf8(argv.get(1)?)
                .ok()?
                .parse::<u64>()
                .ok()?;
            let start = (cursor >> crate::store::CURSOR_HASH_BITS) as usize;
            let g = *groups.slot_group.get(start)?;
            let end = (start..kelvin_protocol::SLOT_COUNT)
                .find(|&s| groups.slot_group[s] != g)
                .unwrap_or(kelvin_protocol::SLOT_COUNT);
            Some((vec![pin(g, argv.to_vec())], Merge::Scan { start, end }))
        }
        _ => None,
    }
}

/// The time a read served from the leader's lease runs at, or `None` if it must go
/// through the log instead.
///
/// Whether a key has expired is the log's decision, not a clock's: clocks differ between
/// nodes (and jump), and a read that found a key gone on one leader must not find it
/// again on the next. So a key counts as expired locally only once the log's own time
/// (`last_apply_ms`, the stamp of the last applied entry, which never goes backwards) has
/// passed its deadline. A key whose deadline this node's clock has passed and the log's
/// time has not is read through the log: that entry's stamp, this clock, decides on
/// every replica alike (Redis's master deletes a key it finds expired and sends the
/// DEL to its replicas; the same here, before the answer). Keyless reads (KEYS, SCAN,
/// DBSIZE...) run at the log's time. Otherwise the read runs at this clock, or the log's
/// if that is later, for TTLs that count down between entries.
fn lease_read_time<'a>(
    store: &Store,
    db: usize,
    mut keys: impl Iterator<Item = &'a Bytes>,
    now_ms: u64,
) -> Option<u64> {
    let log_ms = store.last_apply_ms;
    let now = now_ms.max(log_ms);
    let Some(ks) = store.db_ref(db) else {
        return Some(now);
    };
    let mut keyless = true;
    let pending = keys.any(|k| {
        keyless = false;
        ks.raw_get(k)
            .is_some_and(|e| e.is_expired(now) && !e.is_expired(log_ms))
    });
    match (keyless, pending) {
        (true, _) => Some(log_ms),
        (false, false) => Some(now),
        (false, true) => None,
    }
}

fn run_batch(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    batch: Vec<Vec<Bytes>>,
    pinned: Option<u64>,
) -> Step {
    if batch.is_empty() {
        return Step::Done;
    }
    let now_ms = cmd::unix_ms();
    let count = batch.len();
    // The group the batch is talking to; it changes when a command's key is in another
    // group, once what is gathered for this one has gone out.
    let mut gid = pinned.unwrap_or_else(|| default_group(node));
    let mut here = route(node, gid);
    let mut local_reads = here == Route::Leader
        && node
            .hosted(gid)
            .is_some_and(|g| g.status.can_read_locally());
    let mut guard: Option<parking_lot::ArcMutexGuard<parking_lot::RawMutex, Store>> = None;
    let mut last: &'static str = "NULL";
    let mut segment = Segment::default();
    let mut forward: Vec<Vec<Bytes>> = Vec::new();
    let mut requests = batch.into_iter();
    let mut step = Step::Done;
    // What waits before `$argv` goes out first and ends the batch there (see
    // `flush_before`); with nothing waiting, evaluates to `$argv`.
    macro_rules! flush_or_continue {
        ($argv:expr) => {
            match flush_before(
                here,
                &mut forward,
                &mut segment,
                node,
                out,
                $argv,
                &mut requests,
            ) {
                Ok(s) => {
                    step = s;
                    break;
                }
                Err(argv) => argv,
            }
        };
    }
    while let Some(argv) = requests.next() {
        if client.close {
            break;
        }
        let Some(spec) = cmd::lookup(&argv[0]) else {
            let argv = flush_or_continue!(argv);
            refuse(client, out, &cmd::unknown_command(&argv).0);
            continue;
        };
        last = spec.name;
        let key_pos = spec.keys_in(&argv);
        if pinned.is_none() && key_pos.is_empty() {
            if let Some((parts, merge)) = broadcast(node, client, spec, &argv) {
                let _argv = flush_or_continue!(argv);
                step = Step::Split {
                    parts,
                    merge,
                    rest: requests.by_ref().collect(),
                };
                break;
            }
        }
        // Keys in several groups: no one group can run it (on the redirect port, keys in
        // different slots are CROSSSLOT already).
        let target = match pinned {
            Some(g) => Some(g),
            None => command_group(node, spec, &argv, gid),
        };
        let argv = if target == Some(gid) {
            argv
        } else {
            // Replies go out in order: what is gathered for this group goes first.
            let argv = flush_or_continue!(argv);
            let Some(target) = target else {
                if let Some((parts, merge)) = split(node, client, &argv) {
                    step = Step::Split {
                        parts,
                        merge,
                        rest: requests.by_ref().collect(),
                    };
                    break;
                }
                refuse(client, out, CROSSSLOT_GROUPS);
                continue;
            };
            guard = None;
            gid = target;
            here = route(node, gid);
            local_reads = here == Route::Leader
                && node
                    .hosted(gid)
                    .is_some_and(|g| g.status.can_read_locally());
            argv
        };
        let checked = precheck(client, out, spec, &argv).and_then(|()| match client.redirect {
            true => redirection(node, client, spec, &argv, here)
                .map_or(Ok(()), |e| Err(CmdError::raw(e))),
            false => Ok(()),
        });
        if matches!(&checked, Err(e) if e.0.starts_with("MOVED")) && node.topology_pending() {
            // This node's slot map is older than the topology its meta replica holds:
            // redirect by the new one once it is in place, not by the old one (two nodes
            // with different maps would send a client back and forth).
            let argv = flush_or_continue!(argv);
            let mut waiting = vec![argv];
            waiting.extend(requests.by_ref());
            step = Step::AwaitLeader {
                requests: waiting,
                rest: Vec::new(),
            };
            break;
        }
        if let Err(err) = checked {
            // Replies go out in order: what waits before this request is answered first.
            let _argv = flush_or_continue!(argv);
            refuse(client, out, &err.0);
            continue;
        }
        // Relaying: once a request goes to the leader, the ones after it follow in
        // order, so its replies come back in order. (Not on the redirect port: there
        // the client is told where to go.)
        if let (Route::Forward(_) | Route::NoLeader, false) = (here, client.redirect) {
            let stale_read_ok = client.readonly && is_read(spec);
            // With several groups the transaction's group is known only from its keys:
            // MULTI, EXEC and WATCH stay here (see the EXEC case below).
            let local_tx = several_groups(node) && !matches!(spec.handler, Handler::Data(_));
            if forwarded(spec)
                && !stale_read_ok
                && !local_tx
                && client.multi.is_none()
                && segment.commands.is_empty()
            {
                // A pinned request keeps its pin on the way (its leader may lead several).
                forward.push(match pinned {
                    Some(g) => pin(g, argv),
                    None => argv,
                });
                continue;
            }
            if !forward.is_empty() {
                step = forward_step(here, forward, argv, &mut requests);
                forward = Vec::new();
                break;
            }
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
                if here == Route::Down {
                    out.error(CLUSTER_DOWN);
                    continue;
                }
                if !spec.is_write() && (local_reads || client.readonly) {
                    if !segment.commands.is_empty() {
                        // A read after writes waits for them, so it sees them.
                        step = segment_step(segment, node, out, argv, &mut requests);
                        segment = Segment::default();
                        break;
                    }
                    let Some(group) = node.hosted(gid) else {
                        out.error(CLUSTER_DOWN);
                        continue;
                    };
                    let store = guard.get_or_insert_with(|| group.store.lock_arc());
                    let keys = key_pos.iter().filter_map(|&i| argv.get(i));
                    let read_at = match client.readonly && !local_reads {
                        // A stale read on a replica, as asked: its own clock.
                        true => Some(now_ms.max(store.last_apply_ms)),
                        false => lease_read_time(store, client.db, keys, now_ms),
                    };
                    if let Some(at) = read_at {
                        run_data(store, client, out, handler, &argv, at, false);
                        continue;
                    }
                    // A key this clock finds expired and the log does not yet: the read
                    // goes through the log, which deletes the key on every replica.
                }
                // A write, or a read without a lease: through the log.
                if argv.iter().map(|a| a.len()).sum::<usize>() > crate::group::MAX_COMMAND_BYTES {
                    let _argv = flush_or_continue!(argv);
                    refuse(client, out, crate::group::TOO_LARGE);
                    continue;
                }
                segment.group = gid;
                segment.commands.push(LogCommand::Single {
                    db: client.db as u8,
                    argv: argv.clone(),
                });
                segment.requests.push(match pinned {
                    Some(g) => pin(g, argv),
                    None => argv,
                });
                if spec.flags & flags::BLOCKING != 0 {
                    let blocking = segment.requests.last().cloned();
                    step = segment.propose(node, out, blocking, requests.by_ref().collect());
                    segment = Segment::default();
                    break;
                }
            }
            Handler::Conn(handler) => {
                if !segment.commands.is_empty() {
                    step = segment_step(segment, node, out, argv, &mut requests);
                    segment = Segment::default();
                    break;
                }
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
                if let Some(tx) = client.transaction.take() {
                    let group = match transaction_group(node, &tx, gid) {
                        Ok(g) => g,
                        Err(err) => {
                            out.buf.truncate(mark);
                            out.error(&err.0);
                            continue;
                        }
                    };
                    match route(node, group) {
                        Route::Leader => {}
                        // Its watch and queue live here, its group is led elsewhere: the
                        // whole transaction goes to the leader as one request.
                        Route::Forward(leader) => {
                            step = Step::Forward {
                                leader,
                                requests: vec![crate::cmd::connection::kelvin_exec_request(tx)],
                                rest: requests.by_ref().collect(),
                            };
                            break;
                        }
                        Route::NoLeader => {
                            step = Step::AwaitLeader {
                                requests: vec![crate::cmd::connection::kelvin_exec_request(tx)],
                                rest: requests.by_ref().collect(),
                            };
                            break;
                        }
                        Route::Down => {
                            out.buf.truncate(mark);
                            out.error(CLUSTER_DOWN);
                            continue;
                        }
                    }
                    let seg = Segment {
                        group,
                        commands: vec![tx],
                        requests: Vec::new(),
                    };
                    step = seg.propose(node, out, None, requests.by_ref().collect());
                    if let Step::Propose { replies, .. } = &mut step {
                        *replies = 1;
                    }
                    break;
                }
            }
        }
    }
    if !segment.commands.is_empty() {
        step = segment.propose(node, out, None, requests.by_ref().collect());
    } else if !forward.is_empty() {
        step = match here {
            Route::Forward(leader) => Step::Forward {
                leader,
                requests: forward,
                rest: requests.by_ref().collect(),
            },
            _ => Step::AwaitLeader {
                requests: forward,
                rest: requests.by_ref().collect(),
            },
        };
    }
    drop(guard);
    if !client.lazy_expired.is_empty() {
        propose_expired(node, client);
    }
    node.stats
        .commands_processed
        .fetch_add(count as u64, Ordering::Relaxed);
    *client.info.last_cmd.lock() = last;
    *client.info.last_active.lock() = std::time::Instant::now();
    node.publish_events(&mut client.events);
    step
}

/// The reply to a data command on a node that serves no data yet.
pub const CLUSTER_DOWN: &str = "CLUSTERDOWN Hash slot not served";

fn segment_step(
    segment: Segment,
    node: &Node,
    out: &ReplyWriter,
    next: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Step {
    let mut rest = vec![next];
    rest.extend(requests.by_ref());
    segment.propose(node, out, None, rest)
}

fn forward_step(
    here: Route,
    forward: Vec<Vec<Bytes>>,
    next: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Step {
    let mut rest = vec![next];
    rest.extend(requests.by_ref());
    match here {
        Route::Forward(leader) => Step::Forward {
            leader,
            requests: forward,
            rest,
        },
        _ => Step::AwaitLeader {
            requests: forward,
            rest,
        },
    }
}

/// Keys that local reads found expired: the leader proposes their deletion; nobody
/// waits for it.
fn propose_expired(node: &Node, client: &mut ClientState) {
    let keys = std::mem::take(&mut client.lazy_expired);
    let Some(groups) = node.groups() else { return };
    // By group, then by database.
    let mut by_group: std::collections::BTreeMap<
        u64,
        std::collections::BTreeMap<usize, Vec<Bytes>>,
    > = Default::default();
    for (db, key) in keys {
        let (gid, _) = groups.for_slot(kelvin_protocol::key_slot(&key) as usize);
        by_group
            .entry(gid)
            .or_default()
            .entry(db)
            .or_default()
            .push(Bytes::copy_from_slice(&key));
    }
    for (gid, by_db) in by_group {
        let Some(group) = groups.hosted.get(&gid) else {
            continue;
        };
        group.propose(Proposal {
            commands: by_db
                .into_iter()
                .map(|(db, keys)| LogCommand::ExpireKeys { db: db as u8, keys })
                .collect(),
            version: RespVersion::Resp2,
            reply: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen while adding kelvin-jepsen's clock-skew nemesis: a leader whose clock ran
    /// ahead answered "gone" for a key on its own clock's word, and the next leader, its
    /// clock behind, found the key again (a resurrected session). Expiry is now the
    /// log's decision.
    #[test]
    fn a_lease_read_never_expires_a_key_the_log_has_not_expired() {
        use crate::store::{Entry, Value};
        let mut store = Store::default();
        store.last_apply_ms = 1_000;
        let ks = store.db(0);
        ks.insert(b"k", Entry::new(Value::Str(b"v".to_vec())));
        ks.set_expire(b"k", 2_000);
        ks.insert(b"other", Entry::new(Value::Str(b"v".to_vec())));
        let k = Bytes::from_static(b"k");
        let other = Bytes::from_static(b"other");
        // Neither clock has passed the deadline: a local read at this clock.
        assert_eq!(
            lease_read_time(&store, 0, [&k].into_iter(), 1_500),
            Some(1_500)
        );
        // This clock is behind the log's: the log's time (TTLs never go back).
        assert_eq!(
            lease_read_time(&store, 0, [&k].into_iter(), 500),
            Some(1_000)
        );
        // This clock has passed the deadline, the log's time has not: through the log.
        assert_eq!(lease_read_time(&store, 0, [&k].into_iter(), 2_500), None);
        assert_eq!(
            lease_read_time(&store, 0, [&other, &k].into_iter(), 2_500),
            None
        );
        // Keys without the question are read locally; keyless reads at the log's time.
        assert_eq!(
            lease_read_time(&store, 0, [&other].into_iter(), 2_500),
            Some(2_500)
        );
        assert_eq!(
            lease_read_time(&store, 0, std::iter::empty(), 2_500),
            Some(1_000)
        );
        // Once the log's time has passed the deadline, the key is gone everywhere.
        store.last_apply_ms = 2_000;
        assert_eq!(
            lease_read_time(&store, 0, [&k].into_iter(), 1_500),
            Some(2_000)
        );
    }

    fn merged(merge: Merge, version: RespVersion, parts: &[u8]) -> Vec<u8> {
        let mut out = ReplyWriter::new(version);
        merge.write(parts, &mut out);
        out.buf.to_vec()
    }

    #[test]
    fn split_command_replies_merge_into_one() {
        let v2 = RespVersion::Resp2;
        assert_eq!(
            merged(
                Merge::Elements(3),
                v2,
                b"*1\r\n$1\r\na\r\n*1\r\n$-1\r\n*1\r\n$2\r\nbc\r\n"
            ),
            b"*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n"
        );
        assert_eq!(
            merged(
                Merge::Elements(2),
                RespVersion::Resp3,
                b"*1\r\n_\r\n*1\r\n$1\r\nx\r\n"
            ),
            b"*2\r\n_\r\n$1\r\nx\r\n"
        );
        assert_eq!(merged(Merge::Sum, v2, b":2\r\n:0\r\n:5\r\n"), b":7\r\n");
        assert_eq!(merged(Merge::Ok, v2, b"+OK\r\n+OK\r\n"), b"+OK\r\n");
        // The first error among the parts is the reply.
        assert_eq!(
            merged(Merge::Sum, v2, b":1\r\n-ERR boom\r\n-ERR two\r\n"),
            b"-ERR boom\r\n"
        );
        assert_eq!(
            count_replies(b":1\r\n$3\r\nabc\r\n*2\r\n:1\r\n:2\r\n$5\r\nab", v2),
            3
        );
    }

    #[test]
    fn keyless_replies_of_every_group_merge_into_one() {
        let v2 = RespVersion::Resp2;
        let v3 = RespVersion::Resp3;
        assert_eq!(
            merged(
                Merge::Concat,
                v2,
                b"*1\r\n$1\r\na\r\n*0\r\n*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
            ),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(
            merged(Merge::FirstKey, v2, b"$-1\r\n$1\r\nk\r\n$1\r\nj\r\n"),
            b"$1\r\nk\r\n"
        );
        assert_eq!(merged(Merge::FirstKey, v3, b"_\r\n_\r\n"), b"_\r\n");
        // SCAN: a group that is done with its run hands over at the run's end...
        let ks = kelvin_protocol::key_slot(b"k") as usize;
        let done = b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n";
        let end = ks + 1;
        let cursor = ((end as u64) << crate::store::CURSOR_HASH_BITS).to_string();
        let handed = format!("*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n", cursor.len());
        assert_eq!(
            merged(Merge::Scan { start: 0, end }, v2, done),
            handed.as_bytes()
        );
        // ...the last run ends the iteration, and a cursor inside the run is kept.
        let last = Merge::Scan {
            start: 0,
            end: kelvin_protocol::SLOT_COUNT,
        };
        assert_eq!(merged(last, v2, done), done);
        let mid = b"*2\r\n$2\r\n17\r\n*0\r\n";
        assert_eq!(merged(Merge::Scan { start: 0, end: 1 }, v2, mid), mid);
        // A group that went on past its run (its 1024-slot stop fell in the next
        // group's range: found with 3 groups) gives back the run's end, and keys of
        // slots outside the run (another run of its own, or not yet drained) are left
        // for the SCAN that covers them.
        let beyond = (((ks + 3) as u64) << crate::store::CURSOR_HASH_BITS).to_string();
        let past = format!("*2\r\n${}\r\n{beyond}\r\n*1\r\n$1\r\nk\r\n", beyond.len());
        let cut = ((ks as u64) << crate::store::CURSOR_HASH_BITS).to_string();
        let expect = format!("*2\r\n${}\r\n{cut}\r\n*0\r\n", cut.len());
        let merge = Merge::Scan { start: 0, end: ks };
        if ks > 0 {
            assert_eq!(merged(merge, v2, past.as_bytes()), expect.as_bytes());
        }
    }
}
