//! Decoding client requests: RESP multibulk arrays of bulk strings, and inline commands.
//!
//! The decoder is incremental: a multibulk whose arguments arrive over many reads keeps
//! its parsed arguments between calls, so a large request is scanned once. It never
//! allocates ahead of the bytes that arrived, so a client that declares a 512 MB bulk and
//! sends nothing costs nothing. Every bound is a field of [`RequestLimits`].
//!
//! ```text
//! *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n     multibulk (what client libraries send)
//! SET k "hello world"\r\n                         inline (what a person types into nc)
//! ```

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// One decoded request: the command name and its arguments.
pub type Argv = Vec<Bytes>;

/// Limits on what a client may send; the defaults are Redis's.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest bulk argument (`proto-max-bulk-len`, 512 MB in Redis).
    pub max_bulk_len: usize,
    /// Most arguments in one multibulk (Redis: 1024*1024).
    pub max_multibulk_len: usize,
    /// Longest inline request line, and longest `*`/`$` header line (Redis: 64 KB).
    pub max_inline_len: usize,
    /// Most bytes one request may hold in total (`client-query-buffer-limit`, 1 GB).
    pub max_query_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_query_len: 1024 * 1024 * 1024,
        }
    }
}

/// A request the server cannot parse. The connection answers `-ERR <Display>` and closes,
/// as Redis does.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: query buffer limit exceeded")]
    QueryBufferLimit,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The `tokio_util` codec for client requests. See the module documentation.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: RequestLimits,
    pending: Option<PendingMultibulk>,
}

#[derive(Debug)]
struct PendingMultibulk {
    remaining: usize,
    args: Argv,
    /// Length of the bulk whose `$len` line was consumed but whose body has not arrived.
    bulk_len: Option<usize>,
    bytes: usize,
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional `-`, digits, no
/// leading `+`, no spaces, no leading zeros except `0` itself.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (neg, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(digit)?
        } else {
            v.checked_add(digit)?
        };
    }
    if neg && v == 0 {
        return None; // "-0" is not an integer to Redis
    }
    Some(v)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\r')
}

impl RequestDecoder {
    pub fn new(limits: RequestLimits) -> Self {
        RequestDecoder {
            limits,
            pending: None,
        }
    }

    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// Bytes of the request being assembled, for memory accounting.
    pub fn pending_bytes(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.bytes)
    }

    /// Reads a `*N` or `$N` header line; `None` when it has not fully arrived.
    fn header(
        &self,
        buf: &mut BytesMut,
        too_big: ProtocolError,
        invalid: ProtocolError,
    ) -> Result<Option<i64>, ProtocolError> {
        let Some(cr) = find_crlf(buf) else {
            if buf.len() > self.limits.max_inline_len {
                return Err(too_big);
            }
            return Ok(None);
        };
        if buf.len() < cr + 2 {
            return Ok(None);
        }
        let n = parse_i64(&buf[1..cr]).ok_or(invalid)?;
        buf.advance(cr + 2);
        Ok(Some(n))
    }

    fn decode_inline(&self, buf: &mut BytesMut) -> Result<Option<Option<Argv>>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(None);
        };
        let line = buf.split_to(nl + 1);
        let mut line = &line[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let args = split_inline_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
        Ok(Some(if args.is_empty() { None } else { Some(args) }))
    }
}

impl Decoder for RequestDecoder {
    type Item = Argv;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Argv>, ProtocolError> {
        loop {
            let Some(pending) = self.pending.as_mut() else {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] != b'*' {
                    match self.decode_inline(buf)? {
                        None => return Ok(None),
                        Some(None) => continue, // empty line: Redis ignores it
                        Some(Some(args)) => return Ok(Some(args)),
                    }
                }
                let Some(count) = self.header(
                    buf,
                    ProtocolError::TooBigMultibulkCount,
                    ProtocolError::InvalidMultibulkLength,
                )?
                else {
                    return Ok(None);
                };
                if count > self.limits.max_multibulk_len as i64 {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if count <= 0 {
                    continue; // `*0` and `*-1` are ignored, as in Redis
                }
                let count = count as usize;
                self.pending = Some(PendingMultibulk {
                    remaining: count,
                    // Never trust the declared count for an allocation.
                    args: Vec::with_capacity(count.min(16)),
                    bulk_len: None,
                    bytes: 0,
                });
                continue;
            };
            while pending.remaining > 0 {
                let len = match pending.bulk_len {
                    Some(len) => len,
                    None => {
                        let Some(&first) = buf.first() else {
                            return Ok(None);
                        };
                        if first != b'$' {
                            let err = ProtocolError::ExpectedDollar(first as char);
                            self.pending = None;
                            return Err(err);
                        }
                        let limits = self.limits;
                        let Some(cr) = find_crlf(buf) else {
                            if buf.len() > limits.max_inline_len {
                                return Err(ProtocolError::TooBigBulkCount);
                            }
                            return Ok(None);
                        };
                        if buf.len() < cr + 2 {
                            return Ok(None);
                        }
                        let len = match parse_i64(&buf[1..cr]) {
                            Some(n) if n >= 0 && n as usize <= limits.max_bulk_len => n as usize,
                            _ => return Err(ProtocolError::InvalidBulkLength),
                        };
                        if pending.bytes + len > limits.max_query_len {
                            return Err(ProtocolError::QueryBufferLimit);
                        }
                        buf.advance(cr + 2);
                        pending.bulk_len = Some(len);
                        len
                    }
                };
                if buf.len() < len + 2 {
                    // Grow toward the declared size, but only by what is cheap; the
                    // socket read fills the rest as it arrives.
                    let want = (len + 2 - buf.len()).min(64 * 1024);
                    buf.reserve(want);
                    return Ok(None);
                }
                let arg = buf.split_to(len).freeze();
                buf.advance(2);
                pending.bytes += len;
                pending.args.push(arg);
                pending.bulk_len = None;
                pending.remaining -= 1;
            }
            let done = self.pending.take().map(|p| p.args);
            return Ok(done);
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline request line into arguments like Redis's `sdssplitargs`: spaces
/// separate, `"..."` takes `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` takes `\'`.
/// `None` on unbalanced quotes or a closing quote not followed by a space.
pub fn split_inline_args(line: &[u8]) -> Option<Argv> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            if in_double {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex_digit(line[i + 2]), hex_digit(line[i + 3])) {
                        current.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < n {
                    i += 1;
                    current.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    current.push(c);
                }
                i += 1;
            } else if in_single {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    current.push(b'\'');
                    i += 2;
                    continue;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                }
                current.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        i += 1;
                        break;
                    }
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    c => current.push(c),
                }
                i += 1;
            }
        }
        args.push(Bytes::from(current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Argv>, ProtocolError> {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(a) = d.decode(&mut buf)? {
            out.push(a);
        }
        Ok(out)
    }

    fn strs(a: &Argv) -> Vec<&[u8]> {
        a.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn multibulk_and_pipelining() {
        let reqs = decode_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(strs(&reqs[0]), vec![&b"GET"[..], b"k"]);
        assert_eq!(strs(&reqs[1]), vec![&b"PING"[..]]);
    }

    #[test]
    fn byte_at_a_time() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            if let Some(a) = d.decode(&mut buf).unwrap() {
                got = Some(a);
            }
        }
        let got = got.expect("request decoded");
        assert_eq!(strs(&got), vec![&b"SET"[..], b"key", b"va\r\nl"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn inline() {
        let reqs = decode_all(b"SET k \"hello world\"\r\nPING\n\r\n  \r\nGET 'a\\'b'\r\n").unwrap();
        assert_eq!(reqs.len(), 3);
        assert_eq!(strs(&reqs[0]), vec![&b"SET"[..], b"k", b"hello world"]);
        assert_eq!(strs(&reqs[1]), vec![&b"PING"[..]]);
        assert_eq!(strs(&reqs[2]), vec![&b"GET"[..], b"a'b"]);
        let escaped = decode_all(b"SET k \"\\x41\\n\"\r\n").unwrap();
        assert_eq!(strs(&escaped[0])[2], b"A\n");
    }

    #[test]
    fn inline_unbalanced_quotes() {
        assert!(matches!(
            decode_all(b"SET k \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        ));
        assert!(matches!(
            decode_all(b"SET k \"a\"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        ));
    }

    #[test]
    fn empty_and_null_multibulk_ignored() {
        let reqs = decode_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(reqs.len(), 1);
    }

    #[test]
    fn errors_match_redis_text() {
        let e = |input: &[u8]| decode_all(input).unwrap_err().to_string();
        assert_eq!(e(b"*abc\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            e(b"*2000000\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(e(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            e(b"*1\r\n$999999999999\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(e(b"*1\r\n:5\r\n"), "Protocol error: expected '$', got ':'");
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(e(&long), "Protocol error: too big inline request");
        let mut long_count = b"*".to_vec();
        long_count.extend(std::iter::repeat_n(b'1', 70 * 1024));
        assert_eq!(e(&long_count), "Protocol error: too big mbulk count string");
    }

    #[test]
    fn declared_huge_bulk_allocates_nothing_ahead() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\nabc"[..]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024 * 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn integers_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"01"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"-0"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_all(&input);
        }

        #[test]
        fn multibulk_roundtrip(args in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 0..40), 1..8)) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                wire.extend_from_slice(a);
                wire.extend_from_slice(b"\r\n");
            }
            let reqs = decode_all(&wire).unwrap();
            proptest::prop_assert_eq!(reqs.len(), 1);
            let got: Vec<Vec<u8>> = reqs[0].iter().map(|b| b.to_vec()).collect();
            proptest::prop_assert_eq!(got, args);
        }
    }
}
