//! Relaying a plain client's requests to the shard leader.
//!
//! How it fits: a client that is not cluster-aware may talk to any node. When this node
//! does not lead the group, its connection keeps one connection of its own to the
//! leader's client port (opened on first need, in the client's protocol version and
//! database, authenticated with this node's `requirepass`, which every node of a cluster
//! shares) and writes the requests there in one go; the replies are copied back byte for
//! byte. A RESP decoder only finds where each reply ends.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kelvin_protocol::RespVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a relayed batch may take (blocking commands excepted).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a request may be relayed from node to node before it is refused with
/// `-TRYAGAIN` (a client's node, a replica of the group, its leader: 2 in the normal
/// course; more only while nodes' slot maps disagree).
pub const MAX_RELAY_HOPS: u8 = 4;

/// How long connecting to the leader may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the leader on behalf of one client connection.
pub struct Relay {
    pub leader: u64,
    stream: TcpStream,
    buf: BytesMut,
    version: RespVersion,
    db: usize,
}

fn io_err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

impl Relay {
    /// `hops`: how many times the requests will have been relayed once on this relay;
    /// `epoch`: this node's topology epoch (see `KELVIN.RELAYED`).
    pub async fn connect(
        leader: u64,
        addr: SocketAddr,
        password: Option<&str>,
        version: RespVersion,
        hops: u8,
        epoch: u64,
    ) -> std::io::Result<Relay> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io_err(format!("connecting to {addr} timed out")))??;
        let _ = stream.set_nodelay(true);
        let mut relay = Relay {
            leader,
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            version: RespVersion::Resp2,
            db: 0,
        };
        if let Some(pass) = password {
            relay.call(&[b"AUTH".as_slice(), pass.as_bytes()]).await?;
        }
        let (hops, epoch) = (hops.to_string(), epoch.to_string());
        relay
            .call(&[
                b"KELVIN.RELAYED".as_slice(),
                hops.as_bytes(),
                epoch.as_bytes(),
            ])
            .await?;
        relay.set_version(version).await?;
        Ok(relay)
    }

    async fn set_version(&mut self, version: RespVersion) -> std::io::Result<()> {
        if version != self.version {
            let v: &[u8] = if version == RespVersion::Resp3 {
                b"3"
            } else {
                b"2"
            };
            self.version = version;
            self.call(&[b"HELLO".as_slice(), v]).await?;
        }
        Ok(())
    }

    /// One command whose reply must not be an error; the reply is dropped.
    async fn call(&mut self, argv: &[&[u8]]) -> std::io::Result<()> {
        let mut req = Vec::new();
        encode_request(&mut req, argv.iter().copied());
        self.stream.write_all(&req).await?;
        let mut reply = Vec::new();
        self.read_replies(1, &mut reply).await?;
        if reply.first() == Some(&b'-') {
            return Err(io_err(format!(
                "leader refused {}: {}",
                String::from_utf8_lossy(argv[0]),
                String::from_utf8_lossy(&reply).trim_end()
            )));
        }
        Ok(())
    }

    /// Relays `requests` (run in database `db`, protocol `version`) and appends their
    /// replies to `out`.
    pub async fn forward(
        &mut self,
        db: usize,
        version: RespVersion,
        requests: &[Vec<Bytes>],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        self.set_version(version).await?;
        if db != self.db {
            let n = db.to_string();
            self.call(&[b"SELECT".as_slice(), n.as_bytes()]).await?;
            self.db = db;
        }
        let mut req = Vec::new();
        for argv in requests {
            encode_request(&mut req, argv.iter().map(|a| &a[..]));
        }
        self.stream.write_all(&req).await?;
        self.read_replies(requests.len(), out).await
    }

    async fn read_replies(&mut self, mut n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        while n > 0 {
            let used = reply_len(&self.buf, 0)
                .map_err(|e| io_err(format!("bad reply from the leader: {e}")))?;
            match used {
                Some(used) => {
                    out.extend_from_slice(&self.buf[..used]);
                    self.buf.advance(used);
                    n -= 1;
                }
                None => {
                    if self.buf.capacity() - self.buf.len() < 4096 {
                        self.buf.reserve((16 * 1024).max(self.buf.len()));
                    }
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(io_err("the leader closed the connection"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Deepest nesting of a reply the relay reads through.
const MAX_REPLY_DEPTH: usize = 64;

/// The length of the complete RESP2/RESP3 reply at the start of `buf`, `None` if more
/// bytes are needed. Only lengths are read and bulk bodies skipped: a big reply (a drain
/// page of a thousand values) costs a walk over its elements per read, not a decode.
fn reply_len(buf: &[u8], depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_REPLY_DEPTH {
        return Err("reply nested too deep".into());
    }
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[1..eol];
    let head = eol + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(line)))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(head)),
        b'$' | b'=' | b'!' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some(head));
            }
            let end = head + len as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let count = number()?;
            if count < 0 {
                return Ok(Some(head));
            }
            let items = match kind {
                b'%' | b'|' => count as usize * 2,
                _ => count as usize,
            };
            let mut at = head;
            for _ in 0..items {
                match reply_len(&buf[at..], depth + 1)? {
                    Some(used) => at += used,
                    None => return Ok(None),
                }
            }
            // An attribute comes before the reply it describes.
            match kind {
                b'|' => Ok(reply_len(&buf[at..], depth + 1)?.map(|used| at + used)),
                _ => Ok(Some(at)),
            }
        }
        other => Err(format!("unknown reply type {:?}", other as char)),
    }
}

/// Writes one request as a RESP array of bulk strings.
pub fn encode_request<'a>(out: &mut Vec<u8>, argv: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(argv.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in argv {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lengths_without_decoding() {
        let whole = b"*3\r\n:1\r\n$3\r\nabc\r\n*2\r\n$-1\r\n_\r\n+OK\r\n";
        assert_eq!(reply_len(whole, 0), Ok(Some(whole.len() - 5)));
        for cut in 0..whole.len() - 5 {
            assert_eq!(reply_len(&whole[..cut], 0), Ok(None), "cut at {cut}");
        }
        assert_eq!(reply_len(b"%1\r\n+a\r\n:2\r\n", 0), Ok(Some(12)));
        assert_eq!(reply_len(b"|1\r\n+a\r\n:2\r\n+OK\r\n", 0), Ok(Some(17)));
        assert_eq!(reply_len(b"*-1\r\n", 0), Ok(Some(5)));
        assert!(reply_len(b"?x\r\n", 0).is_err());
        assert!(reply_len(b"$x\r\n", 0).is_err());
        let deep = "*1\r\n".repeat(100) + ":1\r\n";
        assert!(reply_len(deep.as_bytes(), 0).is_err());
    }
}
