//! `cmsgpack`: MessagePack for scripts, byte for byte as Redis's `lua_cmsgpack.c`
//! (pack, unpack, unpack_one, unpack_limit).
//!
//! Encoding follows lua_cmsgpack: a number equal to its 64-bit integer is the smallest
//! integer form, else a float32 if it round-trips, else a float64; a table whose keys
//! are exactly 1..n is an array (an empty table too), else a map in Lua's `next` order;
//! tables nested past [`MAX_NESTING`] and values of other types encode as nil. Decoding
//! reads the forms lua_cmsgpack writes (and the other fixed forms it reads), with its
//! error texts.

use mlua::{Lua, MultiValue, Table, Value, Variadic};

/// Tables nested deeper than this encode as nil (lua_cmsgpack's
/// `LUACMSGPACK_MAX_NESTING`), which bounds the encoding of a table that contains itself.
pub const MAX_NESTING: usize = 16;

/// Deepest nesting `unpack` builds tables for; deeper input is a format error (bounds
/// the host stack on hostile input; lua_cmsgpack relies on Lua's C stack limit).
const MAX_DECODE_DEPTH: usize = 1000;

fn encode_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        if n <= 127 {
            out.push(n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xcc, n as u8]);
        } else if n <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_number(n: f64, out: &mut Vec<u8>) {
    // IS_INT64_EQUIVALENT: finite and equal to its conversion to int64.
    if n.is_finite() && (n as i64) as f64 == n {
        encode_int(n as i64, out);
    } else if (n as f32) as f64 == n {
        out.push(0xca);
        out.extend_from_slice(&(n as f32).to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_bytes(s: &[u8], out: &mut Vec<u8>) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

fn header(len: usize, fix: u8, b16: u8, b32: u8, out: &mut Vec<u8>) {
    if len <= 15 {
        out.push(fix | len as u8);
    } else if len <= 0xffff {
        out.push(b16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// lua_cmsgpack's `table_is_an_array`: every key a positive integer and the largest
/// equal to the count.
fn is_array(t: &Table) -> mlua::Result<bool> {
    let (mut max, mut count) = (0i64, 0i64);
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(false),
        };
        if n < 1.0 || (n as i64) as f64 != n {
            return Ok(false);
        }
        max = max.max(n as i64);
        count += 1;
    }
    Ok(max == count)
}

fn encode(v: &Value, level: usize, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => encode_number(*i as f64, out),
        Value::Number(n) => encode_number(*n, out),
        Value::String(s) => encode_bytes(&s.as_bytes(), out),
        Value::Table(t) if level < MAX_NESTING => {
            if is_array(t)? {
                let len = t.raw_len();
                header(len, 0x90, 0xdc, 0xdd, out);
                for i in 1..=len {
                    encode(&t.raw_get::<Value>(i)?, level + 1, out)?;
                }
            } else {
                let len = t.clone().pairs::<Value, Value>().count();
                header(len, 0x80, 0xde, 0xdf, out);
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, val) = pair?;
                    encode(&k, level + 1, out)?;
                    encode(&val, level + 1, out)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

/// Why decoding stopped: lua_cmsgpack's `MP_CUR_ERROR_EOF` and `_BADFMT`.
enum DecodeError {
    Eof,
    BadFormat,
    Lua(mlua::Error),
}

impl From<mlua::Error> for DecodeError {
    fn from(e: mlua::Error) -> Self {
        DecodeError::Lua(e)
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() - self.pos < n {
            return Err(DecodeError::Eof);
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }
}

fn decode(lua: &Lua, c: &mut Cursor<'_>, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DECODE_DEPTH {
        return Err(DecodeError::BadFormat);
    }
    let tag = c.take(1)?[0];
    let num = |n: f64| Value::Number(n);
    Ok(match tag {
        0x00..=0x7f => num(f64::from(tag)),
        0xe0..=0xff => num(f64::from(tag as i8)),
        0xcc => num(c.be(1)? as f64),
        0xcd => num(c.be(2)? as f64),
        0xce => num(c.be(4)? as f64),
        0xcf => num(c.be(8)? as f64),
        0xd0 => num(f64::from(c.be(1)? as u8 as i8)),
        0xd1 => num(f64::from(c.be(2)? as u16 as i16)),
        0xd2 => num(f64::from(c.be(4)? as u32 as i32)),
        0xd3 => num(c.be(8)? as i64 as f64),
        0xc0 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xca => num(f64::from(f32::from_bits(c.be(4)? as u32))),
        0xcb => num(f64::from_bits(c.be(8)?)),
        0xa0..=0xbf | 0xd9 | 0xda | 0xdb => {
            let len = match tag {
                0xd9 => c.be(1)?,
                0xda => c.be(2)?,
                0xdb => c.be(4)?,
                _ => u64::from(tag & 0x1f),
            };
            Value::String(lua.create_string(c.take(len as usize)?)?)
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let len = match tag {
                0xdc => c.be(2)?,
                0xdd => c.be(4)?,
                _ => u64::from(tag & 0x0f),
            } as usize;
            // Each element takes a byte at least: a length past the input is cut short.
            if len > c.data.len() - c.pos {
                return Err(DecodeError::Eof);
            }
            let t = lua.create_table_with_capacity(len, 0)?;
            for i in 1..=len {
                t.raw_set(i, decode(lua, c, depth + 1)?)?;
            }
            Value::Table(t)
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let len = match tag {
                0xde => c.be(2)?,
                0xdf => c.be(4)?,
                _ => u64::from(tag & 0x0f),
            } as usize;
            if len > (c.data.len() - c.pos) / 2 {
                return Err(DecodeError::Eof);
            }
            let t = lua.create_table_with_capacity(0, len)?;
            for _ in 0..len {
                let k = decode(lua, c, depth + 1)?;
                let v = decode(lua, c, depth + 1)?;
                // Lua cannot index by nil (or NaN); lua_cmsgpack's lua_settable would
                // raise, as this does.
                t.raw_set(k, v)?;
            }
            Value::Table(t)
        }
        _ => return Err(DecodeError::BadFormat),
    })
}

/// lua_cmsgpack's `mp_unpack_full`: up to `limit` values from `offset` (all of them
/// when both are 0); with a limit or an offset the next offset (-1 at the end) comes
/// first.
fn unpack_full(lua: &Lua, data: &[u8], limit: i64, offset: i64) -> mlua::Result<MultiValue> {
    let decode_all = limit == 0 && offset == 0;
    if offset < 0 || limit < 0 {
        return Err(mlua::Error::runtime(format!(
            "Invalid request to unpack with offset of {offset} and limit of {}.",
            data.len()
        )));
    }
    if offset as usize > data.len() {
        return Err(mlua::Error::runtime(format!(
            "Start offset {offset} greater than input length {}.",
            data.len()
        )));
    }
    let limit = if decode_all { i64::MAX } else { limit };
    let mut c = Cursor {
        data,
        pos: offset as usize,
    };
    let mut values = Vec::new();
    while c.pos < data.len() && (values.len() as i64) < limit {
        match decode(lua, &mut c, 0) {
            Ok(v) => values.push(v),
            Err(DecodeError::Eof) => return Err(mlua::Error::runtime("Missing bytes in input.")),
            Err(DecodeError::BadFormat) => {
                return Err(mlua::Error::runtime("Bad data format in input."))
            }
            Err(DecodeError::Lua(e)) => return Err(e),
        }
    }
    if !decode_all {
        let next = if c.pos == data.len() {
            -1
        } else {
            c.pos as i64
        };
        values.insert(0, Value::Integer(next));
    }
    Ok(MultiValue::from_vec(values))
}

/// Installs `cmsgpack` into the globals.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, args: Variadic<Value>| {
            if args.is_empty() {
                return Err(mlua::Error::runtime("MessagePack pack needs input."));
            }
            let mut out = Vec::new();
            for v in args.iter() {
                encode(v, 0, &mut out)?;
            }
            lua.create_string(&out)
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, s: mlua::String| unpack_full(lua, &s.as_bytes(), 0, 0))?,
    )?;
    t.raw_set(
        "unpack_one",
        lua.create_function(|lua, (s, offset): (mlua::String, Option<i64>)| {
            unpack_full(lua, &s.as_bytes(), 1, offset.unwrap_or(0))
        })?,
    )?;
    t.raw_set(
        "unpack_limit",
        lua.create_function(
            |lua, (s, limit, offset): (mlua::String, i64, Option<i64>)| {
                unpack_full(lua, &s.as_bytes(), limit, offset.unwrap_or(0))
            },
        )?,
    )?;
    t.raw_set("_NAME", "cmsgpack")?;
    t.raw_set("_VERSION", "lua-cmsgpack 0.4.0")?;
    lua.globals().raw_set("cmsgpack", t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(lua: &Lua, code: &str) -> String {
        let s: mlua::String = lua.load(code).eval().unwrap();
        s.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn packs_as_lua_cmsgpack() {
        let lua = Lua::new();
        install(&lua).unwrap();
        assert_eq!(
            packed(&lua, "return cmsgpack.pack(0.1)"),
            "cb3fb999999999999a"
        );
        assert_eq!(
            packed(&lua, "return cmsgpack.pack(-1099511627776)"),
            "d3ffffff0000000000"
        );
        assert_eq!(packed(&lua, "return cmsgpack.pack({})"), "90");
        assert_eq!(packed(&lua, "return cmsgpack.pack({1,2,3})"), "93010203");
        assert_eq!(
            packed(&lua, "return cmsgpack.pack(1.5, -1, 200)"),
            "ca3fc00000ffccc8"
        );
    }

    #[test]
    fn unpacks_what_it_packs() {
        let lua = Lua::new();
        install(&lua).unwrap();
        let ok: bool = lua
            .load(
                r#"
                local t = {a = {1, 2, {x = "y"}}, b = true, c = -70000, d = 2^40}
                local u = cmsgpack.unpack(cmsgpack.pack(t))
                local off, one = cmsgpack.unpack_one(cmsgpack.pack(1, 2), 0)
                return u.a[3].x == "y" and u.b and u.c == -70000 and u.d == 2^40
                    and off == 1 and one == 1
                "#,
            )
            .eval()
            .unwrap();
        assert!(ok);
        let err = lua
            .load("return cmsgpack.unpack('\\217')")
            .eval::<Value>()
            .unwrap_err();
        assert!(err.to_string().contains("Missing bytes in input."), "{err}");
    }
}
