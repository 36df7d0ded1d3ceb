//! A small blocking RESP client: what `kelvin-cli` (and, later, the cluster admin
//! commands) use to talk to a node. Replies are decoded by the `redis-protocol` crate's
//! RESP3 decoder, which also reads RESP2 (a subset).

pub mod admin;
pub mod heat;
pub mod members;
pub mod reshard;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use kelvin_protocol::frames::resp2::decode::decode_bytes_mut as decode2;
use kelvin_protocol::frames::resp2::types::BytesFrame as Frame2;
use kelvin_protocol::frames::resp3::decode::complete::decode_bytes_mut as decode3;
use kelvin_protocol::frames::resp3::types::BytesFrame as Frame3;

/// A reply, whichever protocol version carried it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Double(f64),
    Boolean(bool),
    Null,
    Array(Vec<Frame>),
    Set(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    Push(Vec<Frame>),
}

impl From<Frame2> for Frame {
    fn from(f: Frame2) -> Frame {
        match f {
            Frame2::SimpleString(s) => Frame::Simple(String::from_utf8_lossy(&s).into_owned()),
            Frame2::Error(e) => Frame::Error(e.to_string()),
            Frame2::Integer(i) => Frame::Integer(i),
            Frame2::BulkString(b) => Frame::Bulk(b.to_vec()),
            Frame2::Array(items) => Frame::Array(items.into_iter().map(Frame::from).collect()),
            Frame2::Null => Frame::Null,
        }
    }
}

impl From<Frame3> for Frame {
    fn from(f: Frame3) -> Frame {
        match f {
            Frame3::BlobString { data, .. } | Frame3::ChunkedString(data) => {
                Frame::Bulk(data.to_vec())
            }
            Frame3::VerbatimString { data, .. } => Frame::Bulk(data.to_vec()),
            Frame3::SimpleString { data, .. } => {
                Frame::Simple(String::from_utf8_lossy(&data).into_owned())
            }
            Frame3::BigNumber { data, .. } => {
                Frame::Simple(String::from_utf8_lossy(&data).into_owned())
            }
            Frame3::SimpleError { data, .. } => Frame::Error(data.to_string()),
            Frame3::BlobError { data, .. } => {
                Frame::Error(String::from_utf8_lossy(&data).into_owned())
            }
            Frame3::Number { data, .. } => Frame::Integer(data),
            Frame3::Double { data, .. } => Frame::Double(data),
            Frame3::Boolean { data, .. } => Frame::Boolean(data),
            Frame3::Null | Frame3::Hello { .. } => Frame::Null,
            Frame3::Array { data, .. } => Frame::Array(data.into_iter().map(Frame::from).collect()),
            Frame3::Push { data, .. } => Frame::Push(data.into_iter().map(Frame::from).collect()),
            Frame3::Set { data, .. } => Frame::Set(data.into_iter().map(Frame::from).collect()),
            Frame3::Map { data, .. } => Frame::Map(
                data.into_iter()
                    .map(|(k, v)| (Frame::from(k), Frame::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Largest reply the client accepts before giving up on the connection.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024 * 1024;

/// One connection to a server.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    /// Decode replies as RESP3 (after `HELLO 3`).
    pub resp3: bool,
}

impl Client {
    pub fn connect(addr: &str, timeout: Option<Duration>) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(timeout)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            resp3: false,
        })
    }

    /// Sends one command as a RESP array of bulk strings.
    pub fn send(&mut self, args: &[impl AsRef<[u8]>]) -> anyhow::Result<()> {
        let mut wire = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            wire.extend_from_slice(a);
            wire.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&wire)?;
        Ok(())
    }

    /// Reads the next reply (or push message).
    pub fn read_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if self.resp3 {
                if let Some((frame, _, _)) = decode3(&mut self.buf)? {
                    return Ok(frame.into());
                }
            } else if let Some((frame, _, _)) = decode2(&mut self.buf)? {
                return Ok(frame.into());
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                anyhow::bail!("reply larger than {MAX_REPLY_BYTES} bytes");
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                anyhow::bail!("server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command and reads its reply.
    pub fn call(&mut self, args: &[impl AsRef<[u8]>]) -> anyhow::Result<Frame> {
        self.send(args)?;
        self.read_frame()
    }
}

fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// Formats a reply the way `redis-cli` does on a terminal.
pub fn format_frame(frame: &Frame) -> String {
    format_indented(frame, 0)
}

fn format_list(items: Vec<String>, indent: usize) -> String {
    if items.is_empty() {
        return "(empty array)".into();
    }
    let width = items.len().to_string().len();
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("{:>width$}) ", i + 1);
        if i > 0 {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&prefix);
        out.push_str(item);
    }
    out
}

fn format_indented(frame: &Frame, indent: usize) -> String {
    let child_indent = |len: usize| indent + len.to_string().len() + 2;
    match frame {
        Frame::Bulk(data) => quote(data),
        Frame::Simple(s) => s.clone(),
        Frame::Error(e) => format!("(error) {e}"),
        Frame::Integer(i) => format!("(integer) {i}"),
        Frame::Double(d) => format!("(double) {}", kelvin_protocol::reply::format_double(*d)),
        Frame::Boolean(b) => format!("({b})"),
        Frame::Null => "(nil)".into(),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            let ci = child_indent(items.len());
            format_list(
                items.iter().map(|f| format_indented(f, ci)).collect(),
                indent,
            )
        }
        Frame::Map(pairs) => {
            let ci = child_indent(pairs.len());
            format_list(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        format!("{} => {}", format_indented(k, ci), format_indented(v, ci))
                    })
                    .collect(),
                indent,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_redis_cli() {
        let mut buf = BytesMut::from(&b"*3\r\n$1\r\na\r\n:5\r\n_\r\n"[..]);
        let (frame, _, _) = decode3(&mut buf).unwrap().unwrap();
        assert_eq!(
            format_frame(&frame.into()),
            "1) \"a\"\n2) (integer) 5\n3) (nil)"
        );
        let mut buf = BytesMut::from(&b"*2\r\n$-1\r\n-ERR nope\r\n"[..]);
        let (frame, _, _) = decode2(&mut buf).unwrap().unwrap();
        assert_eq!(format_frame(&frame.into()), "1) (nil)\n2) (error) ERR nope");
    }
}
