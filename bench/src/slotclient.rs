//! A small Redis Cluster client for `kelvin-bench reshard`: a shared slot map (from
//! CLUSTER SLOTS, corrected by each `-MOVED`), one connection per node and caller, and
//! the redirections a cluster client follows while slots move: `-MOVED` (update the map,
//! resend, then reload the whole map from CLUSTER SLOTS on the node that answered, at most
//! once per [`MOVED_REFRESH_EVERY`], as redis-rs's cluster client, Jedis, go-redis and
//! ioredis do: a slot that moved tells that others may have), `-ASK` (`ASKING` then the
//! command on the node named, once), `-TRYAGAIN` and `-CLUSTERDOWN` (wait a little,
//! resend). The same client talks to Redis Cluster and to Kelvin's `--redirect-port`, so
//! both systems are measured through the same code.
//!
//! Only loopback addresses are followed: a redirect elsewhere is an error.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kelvin_protocol::slot::key_slot;

use crate::servers::{connect, push_command, HOST};

/// Slots in a cluster.
const SLOTS: usize = 16384;

/// Most redirections (MOVED, ASK) one request follows before it counts as a loop.
const MAX_REDIRECTS: u32 = 8;

/// How long one request may keep retrying `-TRYAGAIN`/`-CLUSTERDOWN` or reconnecting.
const RETRY_BUDGET: Duration = Duration::from_secs(2);

/// Wait between two tries after `-TRYAGAIN`, `-CLUSTERDOWN` or a lost connection.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Least time between two reloads of the slot map after a `-MOVED` (every caller shares
/// the map: one of them reloads it, the others go on with the slot corrected).
const MOVED_REFRESH_EVERY: Duration = Duration::from_millis(100);

/// Largest bulk string or array a reply may hold (bounds what a bad reply allocates).
const MAX_REPLY_LEN: i64 = 64 << 20;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Why a request failed in the end, after the redirections the client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// More than [`MAX_REDIRECTS`] MOVED/ASK in a row.
    RedirectLoop,
    /// `-TRYAGAIN` or `-CLUSTERDOWN` for longer than [`RETRY_BUDGET`].
    TryAgain,
    /// No reply within the read timeout.
    Timeout,
    /// The connection failed and reconnecting did not help within the budget.
    Connection,
    /// Any other error reply.
    ErrorReply,
    /// A read found no session where one was loaded (a user logged out by the move).
    SessionMissing,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::RedirectLoop,
        Failure::TryAgain,
        Failure::Timeout,
        Failure::Connection,
        Failure::ErrorReply,
        Failure::SessionMissing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::RedirectLoop => "moved_ask_loop",
            Failure::TryAgain => "tryagain",
            Failure::Timeout => "timeout",
            Failure::Connection => "connection",
            Failure::ErrorReply => "error_reply",
            Failure::SessionMissing => "session_missing",
        }
    }
}

/// Redirections and retries seen, shared by every caller (not errors: what a cluster
/// client does while slots move).
#[derive(Debug, Default)]
pub struct Redirects {
    pub moved: AtomicU64,
    pub ask: AtomicU64,
    pub tryagain: AtomicU64,
    pub reconnects: AtomicU64,
    /// Reloads of the whole map after a `-MOVED`.
    pub refreshes: AtomicU64,
}

/// The slot map every caller of one cluster shares: slot -> port on 127.0.0.1.
pub struct SlotMap {
    ports: RwLock<Vec<u16>>,
    pub redirects: Redirects,
    timeout: Duration,
    /// When the map was made: the clock of [`Self::last_refresh_ms`].
    born: Instant,
    /// Milliseconds from `born` to the last reload after a `-MOVED` started.
    last_refresh_ms: AtomicU64,
}

impl SlotMap {
    /// The map CLUSTER SLOTS on `seed` gives.
    pub fn load(seed: u16, timeout: Duration) -> Result<Arc<SlotMap>> {
        let map = Arc::new(SlotMap {
            ports: RwLock::new(vec![seed; SLOTS]),
            redirects: Redirects::default(),
            timeout,
            born: Instant::now(),
            last_refresh_ms: AtomicU64::new(0),
        });
        map.refresh(seed)?;
        Ok(map)
    }

    /// Reloads the map from CLUSTER SLOTS on `port`.
    pub fn refresh(&self, port: u16) -> Result<()> {
        let mut conn = Conn::open(port, self.timeout)?;
        self.apply_slots(port, conn.call(&[b"CLUSTER", b"SLOTS"])?)
    }

    /// Whether this caller is the one to reload the map after a `-MOVED` now (none did in
    /// the last [`MOVED_REFRESH_EVERY`]).
    fn claim_refresh(&self) -> bool {
        // Offset by one interval, so that the first reload is never refused.
        let every = MOVED_REFRESH_EVERY.as_millis() as u64;
        let now = self.born.elapsed().as_millis() as u64 + every;
        let last = self.last_refresh_ms.load(Ordering::Relaxed);
        now >= last + every
            && self
                .last_refresh_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Sets the map from a CLUSTER SLOTS reply `port` gave.
    fn apply_slots(&self, port: u16, reply: Reply) -> Result<()> {
        let Reply::Array(Some(ranges)) = reply else {
            bail!("CLUSTER SLOTS on {port}: unexpected reply {reply:?}");
        };
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        for range in ranges {
            let Reply::Array(Some(f)) = range else {
                continue;
            };
            let (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(Some(node)))) =
                (f.first(), f.get(1), f.get(2))
            else {
                continue;
            };
            let Some(Reply::Int(p)) = node.get(1) else {
                continue;
            };
            let Ok(p) = u16::try_from(*p) else { continue };
            for slot in (*a).max(0) as usize..=((*b).max(0) as usize).min(SLOTS - 1) {
                ports[slot] = p;
            }
        }
        Ok(())
    }

    pub fn port(&self, slot: u16) -> u16 {
        self.ports.read().unwrap_or_else(|e| e.into_inner())[usize::from(slot)]
    }

    fn set(&self, slot: u16, port: u16) {
        self.ports.write().unwrap_or_else(|e| e.into_inner())[usize::from(slot)] = port;
    }
}

/// One connection: a buffered reader and the stream to write to.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(port: u16, timeout: Duration) -> Result<Conn> {
        let stream = connect(port, timeout)?;
        Ok(Conn {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    pub fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let mut buf = Vec::new();
        push_command(&mut buf, args);
        self.send(&buf)?;
        Ok(self.read()?)
    }

    pub fn read(&mut self) -> std::io::Result<Reply> {
        read_reply(&mut self.reader)
    }
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what)
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = r.take(MAX_REPLY_LEN as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads one RESP2 reply.
pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let line = read_line(r)?;
    let (tag, rest) = line.split_at(1.min(line.len()));
    let len = || -> std::io::Result<i64> {
        let n: i64 = rest
            .parse()
            .map_err(|_| bad(format!("bad reply {line:?}")))?;
        if n > MAX_REPLY_LEN {
            return Err(bad(format!("reply too long: {line:?}")));
        }
        Ok(n)
    };
    Ok(match tag {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(
            rest.parse()
                .map_err(|_| bad(format!("bad reply {line:?}")))?,
        ),
        "$" => match len()? {
            n if n < 0 => Reply::Bulk(None),
            n => {
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data)?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        },
        "*" => match len()? {
            n if n < 0 => Reply::Array(None),
            n => {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        },
        _ => return Err(bad(format!("unexpected reply {line:?}"))),
    })
}

/// `MOVED 3999 127.0.0.1:6381` -> (3999, 6381); `None` for another error or a
/// non-loopback address.
fn redirect_target(err: &str, prefix: &str) -> Option<(u16, u16)> {
    let mut parts = err.strip_prefix(prefix)?.split_whitespace();
    let slot = parts.next()?.parse().ok()?;
    let (host, port) = parts.next()?.rsplit_once(':')?;
    if host != HOST && host != "localhost" {
        return None;
    }
    Some((slot, port.parse().ok()?))
}

/// One caller's connections to a cluster, sharing its [`SlotMap`].
pub struct ClusterClient {
    map: Arc<SlotMap>,
    conns: HashMap<u16, Conn>,
    /// The node that answered a request after a `-MOVED`, whose CLUSTER SLOTS
    /// [`Self::refresh_after_moved`] reloads the map from.
    moved_to: Option<u16>,
}

impl ClusterClient {
    pub fn new(map: Arc<SlotMap>) -> ClusterClient {
        ClusterClient {
            map,
            conns: HashMap::new(),
            moved_to: None,
        }
    }

    fn conn(&mut self, port: u16) -> Result<&mut Conn> {
        if !self.conns.contains_key(&port) {
            let c = Conn::open(port, self.map.timeout)?;
            self.conns.insert(port, c);
        }
        self.conns.get_mut(&port).context("connection just opened")
    }

    /// Sends a pipeline of commands (`ASKING` first when `asking`) to `port` and reads
    /// their replies; the last reply is returned.
    fn send_on(&mut self, port: u16, asking: bool, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut buf = Vec::new();
        if asking {
            push_command(&mut buf, &[b"ASKING"]);
        }
        push_command(&mut buf, args);
        let conn = self.conn(port).map_err(std::io::Error::other)?;
        conn.send(&buf)?;
        if asking {
            conn.read()?;
        }
        conn.read()
    }

    /// After a request that met a `-MOVED` (called once its reply is handled, as a
    /// cluster client reloads its map beside the request, not in front of it): reloads
    /// the shared map from CLUSTER SLOTS on the node that answered, unless another caller
    /// did in the last [`MOVED_REFRESH_EVERY`]. A failed reload leaves the map as the
    /// redirects corrected it (the next `-MOVED` tries again).
    pub fn refresh_after_moved(&mut self) {
        let Some(port) = self.moved_to.take() else {
            return;
        };
        if !self.map.claim_refresh() {
            return;
        }
        self.map.redirects.refreshes.fetch_add(1, Ordering::Relaxed);
        let reply = match self.send_on(port, false, &[b"CLUSTER", b"SLOTS"]) {
            Ok(reply) => reply,
            Err(_) => {
                self.conns.remove(&port);
                return;
            }
        };
        let _ = self.map.apply_slots(port, reply);
    }

    /// The port the map sends `key` to now.
    pub fn port_of(&self, key: &str) -> u16 {
        self.map.port(key_slot(key.as_bytes()))
    }

    /// Runs one keyed command (the key is `args[1]`) with redirections followed.
    pub fn exec(&mut self, args: &[&[u8]]) -> Result<Reply, Failure> {
        let slot = key_slot(args.get(1).copied().unwrap_or_default());
        let started = Instant::now();
        let mut port = self.map.port(slot);
        let mut asking = false;
        let mut redirects = 0;
        let mut moved = false;
        loop {
            let reply = self.send_on(port, asking, args);
            asking = false;
            let out_of_time = started.elapsed() > RETRY_BUDGET;
            match reply {
                Ok(Reply::Error(e)) if e.starts_with("MOVED ") => {
                    self.map.redirects.moved.fetch_add(1, Ordering::Relaxed);
                    let Some((s, p)) = redirect_target(&e, "MOVED ") else {
                        return Err(Failure::ErrorReply);
                    };
                    self.map.set(s, p);
                    port = p;
                    redirects += 1;
                    moved = true;
                }
                Ok(Reply::Error(e)) if e.starts_with("ASK ") => {
                    self.map.redirects.ask.fetch_add(1, Ordering::Relaxed);
                    let Some((_, p)) = redirect_target(&e, "ASK ") else {
                        return Err(Failure::ErrorReply);
                    };
                    port = p;
                    asking = true;
                    redirects += 1;
                }
                Ok(Reply::Error(e))
                    if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") =>
                {
                    self.map.redirects.tryagain.fetch_add(1, Ordering::Relaxed);
                    if out_of_time {
                        return Err(Failure::TryAgain);
                    }
                    std::thread::sleep(RETRY_PAUSE);
                    port = self.map.port(slot);
                }
                Ok(Reply::Error(_)) => return Err(Failure::ErrorReply),
                Ok(reply) => {
                    if moved {
                        self.moved_to = Some(port);
                    }
                    return Ok(reply);
                }
                Err(e) => {
                    self.conns.remove(&port);
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                        return Err(Failure::Timeout);
                    }
                    self.map
                        .redirects
                        .reconnects
                        .fetch_add(1, Ordering::Relaxed);
                    if out_of_time {
                        return Err(Failure::Connection);
                    }
                    std::thread::sleep(RETRY_PAUSE);
                    port = self.map.port(slot);
                }
            }
            if redirects > MAX_REDIRECTS {
                return Err(Failure::RedirectLoop);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(port: u16) -> SlotMap {
        SlotMap {
            ports: RwLock::new(vec![port; SLOTS]),
            redirects: Redirects::default(),
            timeout: Duration::from_secs(1),
            born: Instant::now(),
            last_refresh_ms: AtomicU64::new(0),
        }
    }

    #[test]
    fn one_reload_after_moved_per_interval() {
        let m = map(7000);
        assert!(m.claim_refresh(), "the first reload is never refused");
        assert!(!m.claim_refresh(), "a second one within the interval is");
        // As if the last reload began one interval ago.
        let every = MOVED_REFRESH_EVERY.as_millis() as u64;
        m.last_refresh_ms.fetch_sub(every, Ordering::Relaxed);
        assert!(m.claim_refresh());
    }

    #[test]
    fn cluster_slots_reply_sets_the_map() {
        let m = map(7000);
        let range = |a: i64, b: i64, port: i64| {
            Reply::Array(Some(vec![
                Reply::Int(a),
                Reply::Int(b),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"127.0.0.1".to_vec())),
                    Reply::Int(port),
                ])),
            ]))
        };
        let reply = Reply::Array(Some(vec![range(0, 99, 7001), range(100, 16383, 7002)]));
        m.apply_slots(7000, reply).unwrap();
        assert_eq!(
            (m.port(0), m.port(99), m.port(100), m.port(16383)),
            (7001, 7001, 7002, 7002)
        );
        assert!(m.apply_slots(7000, Reply::Error("ERR no".into())).is_err());
    }

    #[test]
    fn parses_nested_replies() {
        let mut r: &[u8] = b"*3\r\n$1\r\na\r\n:5\r\n*-1\r\n-ERR x\r\n";
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Int(5),
                Reply::Array(None)
            ]))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR x".into()));
        assert!(read_reply(&mut r).is_err());
    }

    #[test]
    fn follows_loopback_redirects_only() {
        assert_eq!(
            redirect_target("MOVED 3999 127.0.0.1:6381", "MOVED "),
            Some((3999, 6381))
        );
        assert_eq!(redirect_target("ASK 1 10.0.0.1:6381", "ASK "), None);
        assert_eq!(redirect_target("ERR no", "MOVED "), None);
    }
}
