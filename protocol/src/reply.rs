//! Writing replies in RESP2 or RESP3.
//!
//! Commands write straight into the connection's output buffer through [`ReplyWriter`];
//! no reply tree is built. The types that differ between the two protocol versions
//! (null, map, set, double, boolean, push, verbatim) are written in the connection's
//! version, so a command is written once for both.
//!
//! ```text
//! RESP2                          RESP3
//! $-1\r\n  *-1\r\n  (nulls)      _\r\n
//! *4\r\n ... (map as pairs)      %2\r\n ...
//! $3\r\n1.5\r\n (double)         ,1.5\r\n
//! ```

/// The protocol version a connection speaks (`HELLO 2` / `HELLO 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RespVersion {
    #[default]
    Resp2,
    Resp3,
}

/// An output buffer with RESP writing methods. Each command writes exactly one reply.
#[derive(Debug, Default)]
pub struct ReplyWriter {
    pub buf: Vec<u8>,
    pub version: RespVersion,
}

impl ReplyWriter {
    pub fn new(version: RespVersion) -> Self {
        ReplyWriter {
            buf: Vec::with_capacity(4096),
            version,
        }
    }

    /// A writer whose buffer starts with room for `bytes`: for replies of known small
    /// size (a group's answer to one proposal), where [`ReplyWriter::new`]'s 4 KiB would
    /// be a large allocation per request.
    pub fn with_capacity(version: RespVersion, bytes: usize) -> Self {
        ReplyWriter {
            buf: Vec::with_capacity(bytes),
            version,
        }
    }

    pub fn is_resp3(&self) -> bool {
        self.version == RespVersion::Resp3
    }

    fn header(&mut self, prefix: u8, n: i64) {
        self.buf.push(prefix);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string. Newlines would break the framing; Redis never sends them here.
    pub fn simple(&mut self, s: &str) {
        self.buf.push(b'+');
        self.buf.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply: `msg` starts with its code (`ERR ...`, `WRONGTYPE ...`). Newlines
    /// are replaced by spaces, as Redis does.
    pub fn error(&mut self, msg: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.header(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string holding the decimal form of `n` (e.g. INCRBYFLOAT, ZSCORE in RESP2).
    pub fn bulk_int(&mut self, n: i64) {
        self.bulk(itoa::Buffer::new().format(n).as_bytes());
    }

    /// The null bulk string (`$-1` / `_`).
    pub fn null(&mut self) {
        match self.version {
            RespVersion::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            RespVersion::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// The null array (`*-1` / `_`), e.g. EXEC aborted by WATCH.
    pub fn null_array(&mut self) {
        match self.version {
            RespVersion::Resp2 => self.buf.extend_from_slice(b"*-1\r\n"),
            RespVersion::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, len: usize) {
        self.header(b'*', len as i64);
    }

    /// A map of `len` pairs; in RESP2 a flat array of `2 * len` items.
    pub fn map(&mut self, len: usize) {
        match self.version {
            RespVersion::Resp2 => self.header(b'*', 2 * len as i64),
            RespVersion::Resp3 => self.header(b'%', len as i64),
        }
    }

    /// A set; in RESP2 an array.
    pub fn set(&mut self, len: usize) {
        match self.version {
            RespVersion::Resp2 => self.header(b'*', len as i64),
            RespVersion::Resp3 => self.header(b'~', len as i64),
        }
    }

    /// An out-of-band push (pub/sub messages); in RESP2 an array.
    pub fn push(&mut self, len: usize) {
        match self.version {
            RespVersion::Resp2 => self.header(b'*', len as i64),
            RespVersion::Resp3 => self.header(b'>', len as i64),
        }
    }

    /// A double; in RESP2 a bulk string.
    pub fn double(&mut self, d: f64) {
        self.double_text(&format_double(d));
    }

    /// A double the caller has formatted itself (GEOPOS writes coordinates with 17
    /// decimals, as Redis's `addReplyHumanLongDouble`); in RESP2 a bulk string.
    pub fn double_text(&mut self, text: &str) {
        match self.version {
            RespVersion::Resp2 => self.bulk(text.as_bytes()),
            RespVersion::Resp3 => {
                self.buf.push(b',');
                self.buf.extend_from_slice(text.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A boolean; in RESP2 the integer 1 or 0.
    pub fn boolean(&mut self, b: bool) {
        match self.version {
            RespVersion::Resp2 => self.int(b as i64),
            RespVersion::Resp3 => self
                .buf
                .extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" }),
        }
    }

    /// A verbatim string with a three-letter format (`txt`); in RESP2 a bulk string.
    pub fn verbatim(&mut self, format: &str, data: &[u8]) {
        match self.version {
            RespVersion::Resp2 => self.bulk(data),
            RespVersion::Resp3 => {
                self.header(b'=', (data.len() + format.len() + 1) as i64);
                self.buf.extend_from_slice(format.as_bytes());
                self.buf.push(b':');
                self.buf.extend_from_slice(data);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Array of simple strings (the HELP replies).
    pub fn simples(&mut self, lines: &[&str]) {
        self.array(lines.len());
        for line in lines {
            self.simple(line);
        }
    }

    /// Array of bulk strings.
    pub fn bulks<I, T>(&mut self, items: I)
    where
        I: ExactSizeIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.array(items.len());
        for item in items {
            self.bulk(item.as_ref());
        }
    }
}

/// Formats a double the way Redis 7 replies with one: the shortest text that reads back
/// as the same value, `inf`/`-inf`, an exponent for very large or small magnitudes.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    let abs = d.abs();
    if abs == 0.0 || (1e-5..1e17).contains(&abs) {
        return format!("{d}");
    }
    // Rust writes `1e20`; Redis writes `1e+20`.
    let s = format!("{d:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => s,
    }
}

/// Parses a float the way Redis's `string2ld`/`strtold` accepts one for scores and
/// INCRBYFLOAT: decimal or exponent form, `inf`/`-inf`/`+inf`; no spaces, no NaN.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(bytes).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        lower => {
            if lower.contains("inf") || lower.contains("nan") {
                return None;
            }
            lower.parse::<f64>().ok()?
        }
    };
    if v.is_nan() {
        return None;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::decode::decode as decode2;
    use redis_protocol::resp3::decode::complete::decode as decode3;

    #[test]
    fn resp2_bytes() {
        let mut w = ReplyWriter::new(RespVersion::Resp2);
        w.ok();
        w.int(-3);
        w.bulk(b"hi");
        w.null();
        w.null_array();
        w.map(1);
        w.double(1.5);
        w.boolean(true);
        w.error("ERR bad\r\nthing");
        assert_eq!(
            w.buf,
            b"+OK\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*-1\r\n*2\r\n$3\r\n1.5\r\n:1\r\n-ERR bad  thing\r\n"
        );
    }

    #[test]
    fn resp3_bytes() {
        let mut w = ReplyWriter::new(RespVersion::Resp3);
        w.null();
        w.map(2);
        w.set(1);
        w.double(f64::INFINITY);
        w.boolean(false);
        w.push(3);
        w.verbatim("txt", b"abc");
        assert_eq!(
            w.buf,
            b"_\r\n%2\r\n~1\r\n,inf\r\n#f\r\n>3\r\n=7\r\ntxt:abc\r\n"
        );
    }

    #[test]
    fn frames_decode_with_redis_protocol_crate() {
        // Cross-check our bytes against an independent RESP implementation.
        let mut w = ReplyWriter::new(RespVersion::Resp2);
        w.array(3);
        w.bulk(b"a");
        w.int(7);
        w.null();
        let (_frame, used) = decode2(&w.buf).unwrap().unwrap();
        assert_eq!(used, w.buf.len());

        let mut w = ReplyWriter::new(RespVersion::Resp3);
        w.map(2);
        w.bulk(b"k");
        w.double(2.25);
        w.bulk(b"s");
        w.set(2);
        w.bulk(b"x");
        w.boolean(true);
        let (_frame, used) = decode3(&w.buf).unwrap().unwrap();
        assert_eq!(used, w.buf.len());
    }

    #[test]
    fn doubles_like_redis() {
        assert_eq!(format_double(1.0), "1");
        assert_eq!(format_double(1.1), "1.1");
        assert_eq!(format_double(-2.5), "-2.5");
        assert_eq!(format_double(10.6), "10.6");
        assert_eq!(format_double(1e20), "1e+20");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_double(0.0), "0");
    }

    #[test]
    fn parse_floats() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(parse_f64(b""), None);
    }
}
