//! Conversions between Redis replies and Lua values, by Redis 7's rules.
//!
//! How it fits: `redis.call` runs a command into a scratch reply buffer (RESP2, or RESP3
//! after `redis.setresp(3)`) and [`reply_to_lua`] parses that buffer into a Lua value, as
//! Redis parses its fake client's output; the script's return value is written to the
//! caller in its own RESP version by [`lua_to_reply`].
//!
//! ```text
//! reply            -> Lua                      Lua                -> reply
//! :n               number                      number             :n (truncated)
//! $s / $-1         string / false              string             $s
//! *n / *-1         array table / false         true / false       :1 / $-1 (RESP3 #t/#f)
//! +s / -s          {ok=s} / {err=s}            {ok=s} / {err=s}   +s / -s
//! %n ~n _ #b ,d    {map=} {set=} nil b         {map=} {set=}      %n / ~n (RESP2: arrays)
//! (n =f:s          {big_number=} {double=}     {double=d}         ,d (RESP2: bulk)
//!                  {verbatim_string=}          array table        *n up to the first nil
//! ```

use bytes::{Bytes, BytesMut};
use kelvin_protocol::ReplyWriter;
use mlua::{Lua, Table, Value};

/// Deepest nesting of arrays/maps converted either way; deeper data is an error (Redis
/// stops at the Lua stack limit).
pub const MAX_NESTING: usize = 1000;

/// A Lua number as `redis.call` passes it to a command: C's `%.17g`, as Redis formats
/// it (so 9007199254740991 stays exact, where Lua's own `%.14g` would round it).
pub fn number_arg(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if n.is_infinite() {
        return if n < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if n == n.trunc() && n.abs() < 1e17 {
        return itoa::Buffer::new().format(n as i64).to_string();
    }
    // 17 significant digits, then %g's choice of form and its trailing-zero trim.
    let sci = format!("{n:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(24);
    if negative {
        out.push('-');
    }
    if !(-4..17).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        let rest = rest.trim_end_matches('0');
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
        return out;
    }
    let point = exp + 1;
    let (int_part, frac_part) = if point <= 0 {
        ("0".to_string(), "0".repeat((-point) as usize) + &digits)
    } else {
        let p = point as usize;
        (digits[..p].to_string(), digits[p..].to_string())
    };
    out.push_str(&int_part);
    let frac = frac_part.trim_end_matches('0');
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// The error of a `redis.call` argument that is neither a string nor a number.
pub const BAD_CALL_ARG: &str = "ERR Lua redis lib command arguments must be strings or integers";

/// `redis.call`'s arguments, copied into one buffer and cut into [`Bytes`]. Kept for the
/// life of the Lua state: once the last call's arguments are dropped
/// ([`ArgsBuilder::release`]), the buffer is reused, so a call allocates nothing once warm.
#[derive(Default)]
pub struct ArgsBuilder {
    buf: BytesMut,
    ends: Vec<usize>,
    argv: Vec<Bytes>,
    /// The most argument bytes of one call since the last [`ArgsBuilder::shrink_to`]
    /// (the buffer's storage is shared with the arguments, so its own capacity does not
    /// tell).
    peak: usize,
}

impl ArgsBuilder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.ends.push(self.buf.len());
    }

    /// A number as Redis formats a number argument ([`number_arg`]).
    pub fn push_number(&mut self, n: f64) {
        if n == n.trunc() && n.abs() < 1e17 {
            self.push(itoa::Buffer::new().format(n as i64).as_bytes());
        } else {
            self.push(number_arg(n).as_bytes());
        }
    }

    /// The arguments pushed since the last [`ArgsBuilder::release`].
    pub fn finish(&mut self) -> &[Bytes] {
        self.peak = self.peak.max(self.buf.len());
        let all = self.buf.split().freeze();
        let mut start = 0;
        for &end in &self.ends {
            self.argv.push(all.slice(start..end));
            start = end;
        }
        self.ends.clear();
        &self.argv
    }

    /// Gives back the room past `bytes` (after a call with big arguments).
    pub fn shrink_to(&mut self, bytes: usize) {
        if std::mem::take(&mut self.peak) > bytes {
            self.buf = BytesMut::new();
        }
        let args = bytes / std::mem::size_of::<Bytes>();
        if self.argv.capacity() > args {
            self.argv = Vec::new();
            self.ends = Vec::new();
        }
    }

    /// Drops the arguments (after the call), so their buffer can be reused.
    pub fn release(&mut self) {
        self.argv.clear();
        self.ends.clear();
        self.buf.clear();
    }
}

/// Parses one reply from `buf` into a Lua value. `buf` was written by our own
/// [`ReplyWriter`], so it is well formed; anything else reads as `nil`.
pub fn reply_to_lua(lua: &Lua, buf: &[u8]) -> mlua::Result<Value> {
    let mut pos = 0;
    parse(lua, buf, &mut pos, 0)
}

pub fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += end + 2;
    Some(&rest[..end])
}

pub fn int(bytes: &[u8]) -> i64 {
    // The usual head (`-1`, a length, a count) read digit by digit; anything else as
    // `str::parse` reads it.
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
        let n = digits
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
        return if negative { -n } else { n };
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn bulk<'a>(buf: &'a [u8], pos: &mut usize, len: i64) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    let data = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len + 2;
    Some(data)
}

fn tagged(lua: &Lua, tag: &str, value: impl mlua::IntoLua) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set(tag, value)?;
    Ok(Value::Table(t))
}

fn parse(lua: &Lua, buf: &[u8], pos: &mut usize, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_NESTING {
        return Err(mlua::Error::runtime("reached lua stack limit"));
    }
    let Some(kind) = buf.get(*pos).copied() else {
        return Ok(Value::Nil);
    };
    *pos += 1;
    let Some(head) = line(buf, pos) else {
        return Ok(Value::Nil);
    };
    Ok(match kind {
        b':' => Value::Number(int(head) as f64),
        b'+' => tagged(lua, "ok", lua.create_string(head)?)?,
        b'-' => tagged(lua, "err", lua.create_string(head)?)?,
        b'$' | b'=' => {
            let n = int(head);
            let Some(data) = bulk(buf, pos, n) else {
                return Ok(Value::Boolean(false));
            };
            if kind == b'=' {
                let (format, text) = data.split_at(data.len().min(4));
                let v = lua.create_table()?;
                v.raw_set("format", lua.create_string(&format[..format.len().min(3)])?)?;
                v.raw_set("string", lua.create_string(text)?)?;
                tagged(lua, "verbatim_string", v)?
            } else {
                Value::String(lua.create_string(data)?)
            }
        }
        b'*' | b'~' | b'>' => {
            let n = int(head);
            if n < 0 {
                return Ok(Value::Boolean(false));
            }
            let t = lua.create_table()?;
            for i in 0..n {
                let v = parse(lua, buf, pos, depth + 1)?;
                if kind == b'~' {
                    t.raw_set(v, true)?;
                } else {
                    t.raw_set(i + 1, v)?;
                }
            }
            match kind {
                b'~' => tagged(lua, "set", t)?,
                _ => Value::Table(t),
            }
        }
        b'%' => {
            let t = lua.create_table()?;
            for _ in 0..int(head).max(0) {
                let k = parse(lua, buf, pos, depth + 1)?;
                let v = parse(lua, buf, pos, depth + 1)?;
                t.raw_set(k, v)?;
            }
            tagged(lua, "map", t)?
        }
        b'_' => Value::Nil,
        b'#' => Value::Boolean(head == b"t"),
        b',' => {
            let d = kelvin_protocol::reply::parse_f64(head).unwrap_or(0.0);
            tagged(lua, "double", d)?
        }
        b'(' => tagged(lua, "big_number", lua.create_string(head)?)?,
        _ => Value::Nil,
    })
}

/// Writes a script's result `value` as a reply, as Redis's `luaReplyToRedisReply`.
/// Booleans follow the script's own protocol (`redis.setresp`): under RESP2 true is 1
/// and false a null, under RESP3 they are booleans.
pub fn lua_to_reply(value: &Value, out: &mut ReplyWriter, depth: usize, script_resp3: bool) {
    if depth > MAX_NESTING {
        out.error("ERR reached lua stack limit");
        return;
    }
    match value {
        Value::String(s) => out.bulk(&s.as_bytes()),
        Value::Boolean(b) => match (out.is_resp3() && script_resp3, b) {
            (true, b) => out.boolean(*b),
            (false, true) => out.int(1),
            (false, false) => out.null(),
        },
        Value::Integer(n) => out.int(*n),
        Value::Number(n) => out.int(number_to_int(*n)),
        Value::Table(t) => table_to_reply(t, out, depth, script_resp3),
        _ => out.null(),
    }
}

/// Lua numbers become integers by truncation, as C's cast does (saturating here).
fn number_to_int(n: f64) -> i64 {
    if n.is_nan() {
        return i64::MIN;
    }
    n as i64
}

/// An error text as a reply carries it: one line.
pub fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn table_to_reply(t: &Table, out: &mut ReplyWriter, depth: usize, script_resp3: bool) {
    if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
        let text = one_line(&e.to_string_lossy());
        out.error(text.strip_prefix('-').unwrap_or(&text));
        return;
    }
    if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
        out.simple(&one_line(&s.to_string_lossy()));
        return;
    }
    if let Ok(Value::Number(d)) = t.raw_get::<Value>("double") {
        out.double(d);
        return;
    }
    if let Ok(Value::Integer(d)) = t.raw_get::<Value>("double") {
        out.double(d as f64);
        return;
    }
    if let Ok(Value::String(s)) = t.raw_get::<Value>("big_number") {
        // RESP3 big number; a bulk string in RESP2.
        if out.is_resp3() {
            out.buf.push(b'(');
            out.buf.extend_from_slice(&s.as_bytes());
            out.buf.extend_from_slice(b"\r\n");
        } else {
            out.bulk(&s.as_bytes());
        }
        return;
    }
    if let Ok(Value::Table(m)) = t.raw_get::<Value>("map") {
        let pairs: Vec<(Value, Value)> = m.pairs::<Value, Value>().filter_map(Result::ok).collect();
        out.map(pairs.len());
        for (k, v) in &pairs {
            lua_to_reply(k, out, depth + 1, script_resp3);
            lua_to_reply(v, out, depth + 1, script_resp3);
        }
        return;
    }
    if let Ok(Value::Table(s)) = t.raw_get::<Value>("set") {
        let members: Vec<Value> = s
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(k, _)| k)
            .collect();
        out.set(members.len());
        for k in &members {
            lua_to_reply(k, out, depth + 1, script_resp3);
        }
        return;
    }
    if let Ok(Value::Table(v)) = t.raw_get::<Value>("verbatim_string") {
        let format: Option<mlua::String> = v.raw_get("format").ok();
        let text: Option<mlua::String> = v.raw_get("string").ok();
        if let (Some(f), Some(s)) = (format, text) {
            out.verbatim(&f.to_string_lossy(), &s.as_bytes());
            return;
        }
    }
    // An array: elements 1..n up to the first nil.
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(v),
        }
    }
    out.array(items.len());
    for v in &items {
        lua_to_reply(v, out, depth + 1, script_resp3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelvin_protocol::RespVersion;

    fn round(reply: &[u8], version: RespVersion) -> Vec<u8> {
        let lua = Lua::new();
        let v = reply_to_lua(&lua, reply).unwrap();
        let mut out = ReplyWriter::new(version);
        lua_to_reply(&v, &mut out, 0, true);
        out.buf
    }

    #[test]
    fn resp2_round_trips_as_redis_converts() {
        let r2 = RespVersion::Resp2;
        assert_eq!(round(b":42\r\n", r2), b":42\r\n");
        assert_eq!(round(b"$3\r\nabc\r\n", r2), b"$3\r\nabc\r\n");
        // A nil bulk becomes false, and false goes back as a nil bulk.
        assert_eq!(round(b"$-1\r\n", r2), b"$-1\r\n");
        assert_eq!(round(b"+OK\r\n", r2), b"+OK\r\n");
        assert_eq!(round(b"-ERR x\r\n", r2), b"-ERR x\r\n");
        assert_eq!(
            round(b"*3\r\n:1\r\n$1\r\na\r\n*1\r\n:2\r\n", r2),
            b"*3\r\n:1\r\n$1\r\na\r\n*1\r\n:2\r\n"
        );
        // An array stops at its first nil (here a nil bulk is false, so it stays).
        assert_eq!(round(b"*2\r\n$-1\r\n:1\r\n", r2), b"*2\r\n$-1\r\n:1\r\n");
    }

    #[test]
    fn resp3_types_keep_their_shape() {
        let r3 = RespVersion::Resp3;
        assert_eq!(
            round(b"%1\r\n$1\r\na\r\n:1\r\n", r3),
            b"%1\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(round(b",1.5\r\n", r3), b",1.5\r\n");
        assert_eq!(round(b"#t\r\n", r3), b"#t\r\n");
        assert_eq!(round(b"(123\r\n", r3), b"(123\r\n");
        // A double to a RESP2 caller is a bulk string.
        assert_eq!(round(b",1.5\r\n", RespVersion::Resp2), b"$3\r\n1.5\r\n");
    }

    #[test]
    fn number_args_are_percent_17g() {
        assert_eq!(number_arg(9007199254740991.0), "9007199254740991");
        assert_eq!(number_arg(0.1), "0.10000000000000001");
        assert_eq!(number_arg(-1.5), "-1.5");
        assert_eq!(number_arg(1e20), "1e+20");
        assert_eq!(number_arg(1.25e-7), "1.2499999999999999e-07");
        assert_eq!(number_arg(0.00012), "0.00012");
        assert_eq!(number_arg(123456789012345680.0), "1.2345678901234568e+17");
    }

    #[test]
    fn reply_heads_read_as_integers() {
        for (head, n) in [
            (&b"-1"[..], -1),
            (b"0", 0),
            (b"42", 42),
            (b"999999999999999999", 999_999_999_999_999_999),
            (b"9223372036854775807", i64::MAX),
            (b"-9223372036854775808", i64::MIN),
            (b"+7", 7),
            (b"", 0),
            (b"-", 0),
            (b"1x", 0),
        ] {
            assert_eq!(int(head), n, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn numbers_truncate() {
        let mut out = ReplyWriter::new(RespVersion::Resp2);
        lua_to_reply(&Value::Number(-3.99), &mut out, 0, false);
        assert_eq!(out.buf, b":-3\r\n");
    }
}
