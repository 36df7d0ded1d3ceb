//! MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH password]
//! [AUTH2 username password] [KEYS key...], as Redis 7.0's (cluster.c): the keys' DUMP
//! payloads and TTLs, sent as RESTOREs to a Redis or a Kelvin, then deleted here unless
//! COPY. It runs at the connection, not in one group's log: each DUMP, PTTL and the DEL
//! go where their keys live, like any request of the client (so it is not atomic: a
//! write between the DUMP and the DEL is lost, where Redis runs it all in one go).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kelvin_protocol::{ReplyWriter, RespVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::drive::drive;
use super::merge::{bulk_body, reply_len, split_replies};
use super::ClientState;
use crate::cmd::{int_arg, is, CmdError};
use crate::node::Node;

/// Redis's timeout when the one given is not positive, in milliseconds.
const DEFAULT_TIMEOUT_MS: i64 = 1000;
/// Bytes read from the target at a time.
const READ_CHUNK: usize = 16 * 1024;
const CONNECT_ERROR: &str = "IOERR error or timeout connecting to the client";
const READ_ERROR: &str = "IOERR error or timeout reading to target instance";
const WRITE_ERROR: &str = "IOERR error or timeout writing to target instance";

/// What MIGRATE was asked.
#[derive(Debug, PartialEq)]
struct Request {
    host: String,
    port: u16,
    db: i64,
    timeout: Duration,
    copy: bool,
    replace: bool,
    /// AUTH's arguments: `[password]` or `[username, password]`.
    auth: Vec<Bytes>,
    keys: Vec<Bytes>,
}

fn parse(argv: &[Bytes]) -> Result<Request, CmdError> {
    let (mut copy, mut replace) = (false, false);
    let mut auth = Vec::new();
    let mut keys = vec![argv[3].clone()];
    let mut j = 6;
    while j < argv.len() {
        let more = argv.len() - 1 - j;
        if is(&argv[j], "copy") {
            copy = true;
        } else if is(&argv[j], "replace") {
            replace = true;
        } else if is(&argv[j], "auth") && more >= 1 {
            auth = vec![argv[j + 1].clone()];
            j += 1;
        } else if is(&argv[j], "auth2") && more >= 2 {
            auth = vec![argv[j + 1].clone(), argv[j + 2].clone()];
            j += 2;
        } else if is(&argv[j], "keys") {
            if !argv[3].is_empty() {
                return Err(CmdError::err(
                    "When using MIGRATE KEYS option, the key argument must be set to the empty string",
                ));
            }
            keys = argv[j + 1..].to_vec();
            break;
        } else {
            return Err(CmdError::SYNTAX);
        }
        j += 1;
    }
    let timeout = int_arg(&argv[5])?;
    let db = int_arg(&argv[4])?;
    let timeout = if timeout <= 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        timeout
    };
    // A port Redis would fail to connect to fails here the same way.
    let port = std::str::from_utf8(&argv[2])
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| CmdError::raw(CONNECT_ERROR))?;
    Ok(Request {
        host: String::from_utf8_lossy(&argv[1]).into_owned(),
        port,
        db,
        timeout: Duration::from_millis(timeout as u64),
        copy,
        replace,
        auth,
        keys,
    })
}

/// Runs MIGRATE for the client and writes its one reply.
pub(super) async fn run(
    node: &std::sync::Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    argv: &[Bytes],
) {
    match migrate(node, client, out.version, argv).await {
        Ok(reply) => out.simple(reply),
        Err(err) => out.error(&err.0),
    }
}

async fn migrate(
    node: &std::sync::Arc<Node>,
    client: &mut ClientState,
    version: RespVersion,
    argv: &[Bytes],
) -> Result<&'static str, CmdError> {
    let req = parse(argv)?;
    // The keys' payloads and TTLs, each asked where the key lives.
    let mut asks = Vec::with_capacity(req.keys.len() * 2);
    for key in &req.keys {
        asks.push(vec![Bytes::from_static(b"DUMP"), key.clone()]);
        asks.push(vec![Bytes::from_static(b"PTTL"), key.clone()]);
    }
    let mut sub = ReplyWriter::new(version);
    Box::pin(drive(node, client, &mut sub, asks)).await;
    let replies = split_replies(&sub.buf, version);
    let mut found: Vec<(Bytes, i64, &[u8])> = Vec::new();
    for (key, pair) in req.keys.iter().zip(replies.chunks(2)) {
        let [dump, pttl] = pair else { break };
        if let Some(text) = dump.strip_prefix(b"-") {
            return Err(CmdError::raw(reply_text(text)));
        }
        let (Some(payload), Some(ttl)) = (bulk_body(dump), integer(pttl)) else {
            continue; // missing, or expired between the two
        };
        match ttl {
            -2 => continue,
            -1 => found.push((key.clone(), 0, payload)),
            ttl => found.push((key.clone(), ttl.max(1), payload)),
        }
    }
    if found.is_empty() {
        return Ok("NOKEY");
    }
    // AUTH, SELECT, then one RESTORE per key, in one write.
    let mut request = Vec::new();
    if !req.auth.is_empty() {
        let args = std::iter::once(&b"AUTH"[..]).chain(req.auth.iter().map(|a| &a[..]));
        crate::relay::encode_request(&mut request, args.collect::<Vec<_>>().into_iter());
    }
    let db = req.db.to_string();
    crate::relay::encode_request(&mut request, [&b"SELECT"[..], db.as_bytes()].into_iter());
    for (key, ttl, payload) in &found {
        let ttl = ttl.to_string();
        let mut args: Vec<&[u8]> = vec![b"RESTORE", key, ttl.as_bytes(), payload];
        if req.replace {
            args.push(b"REPLACE");
        }
        crate::relay::encode_request(&mut request, args.into_iter());
    }
    let expected = usize::from(!req.auth.is_empty()) + 1 + found.len();
    let answers = exchange(&req, &request, expected).await?;
    // The target's first error is the reply. After a failed AUTH or SELECT nothing
    // moved; otherwise each key the target took is deleted here, as in Redis.
    let (setup, restores) = answers.split_at(expected - found.len());
    let mut first_error = setup
        .iter()
        .find_map(|a| a.strip_prefix(b"-"))
        .map(reply_text);
    let setup_failed = first_error.is_some();
    let mut moved = Vec::new();
    for ((key, _, _), answer) in found.iter().zip(restores) {
        if let Some(text) = answer.strip_prefix(b"-") {
            first_error.get_or_insert_with(|| reply_text(text));
        } else if !setup_failed {
            moved.push(key.clone());
        }
    }
    if !req.copy && !moved.is_empty() {
        let mut del = vec![Bytes::from_static(b"DEL")];
        del.extend(moved);
        let mut scratch = ReplyWriter::new(version);
        Box::pin(drive(node, client, &mut scratch, vec![del])).await;
    }
    match first_error {
        Some(text) => Err(CmdError::err(format!(
            "Target instance replied with error: {text}"
        ))),
        None => Ok("OK"),
    }
}

/// Sends `request` to the target and reads `expected` replies (each a line or a whole
/// reply), within the timeout per step as Redis's synchronous I/O.
async fn exchange(
    req: &Request,
    request: &[u8],
    expected: usize,
) -> Result<Vec<Vec<u8>>, CmdError> {
    let addr = (req.host.as_str(), req.port);
    let mut stream = match tokio::time::timeout(req.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        // Redis's non-blocking connect sees a refused socket writable, and fails on
        // the write.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(CmdError::raw(WRITE_ERROR))
        }
        _ => return Err(CmdError::raw(CONNECT_ERROR)),
    };
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(req.timeout, stream.write_all(request)).await {
        Ok(Ok(())) => {}
        _ => return Err(CmdError::raw(WRITE_ERROR)),
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut answers = Vec::with_capacity(expected);
    while answers.len() < expected {
        if let Some(used) = reply_len(&buf, RespVersion::Resp2) {
            answers.push(buf.split_to(used).to_vec());
            continue;
        }
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout(req.timeout, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(CmdError::raw(READ_ERROR)),
        }
    }
    Ok(answers)
}

/// An error or status reply's text without its type byte and line end.
fn reply_text(rest: &[u8]) -> String {
    let end = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// The value of an integer reply.
fn integer(reply: &[u8]) -> Option<i64> {
    let rest = reply.strip_prefix(b":")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn parses_redis_options() {
        let r = parse(&args(&[
            "MIGRATE", "h", "7000", "", "3", "0", "COPY", "AUTH2", "u", "p", "KEYS", "a", "b",
        ]))
        .unwrap();
        assert_eq!((r.db, r.copy, r.replace), (3, true, false));
        assert_eq!(r.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS as u64));
        assert_eq!(r.auth, args(&["u", "p"]));
        assert_eq!(r.keys, args(&["a", "b"]));
        let r = parse(&args(&[
            "MIGRATE", "h", "7000", "k", "0", "50", "REPLACE", "AUTH", "pw",
        ]))
        .unwrap();
        assert_eq!(
            (r.replace, r.keys.clone(), r.auth.clone()),
            (true, args(&["k"]), args(&["pw"]))
        );
        assert_eq!(
            parse(&args(&["MIGRATE", "h", "1", "k", "0", "5", "KEYS", "a"]))
                .unwrap_err()
                .0,
            "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string"
        );
        assert_eq!(
            parse(&args(&["MIGRATE", "h", "1", "k", "0", "5", "AUTH"])).unwrap_err(),
            CmdError::SYNTAX
        );
        assert_eq!(
            parse(&args(&["MIGRATE", "h", "1", "k", "x", "5"])).unwrap_err(),
            CmdError::NOT_INTEGER
        );
    }
}
