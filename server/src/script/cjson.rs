//! `cjson`: JSON encoding and decoding for scripts, as Redis's lua-cjson does it (arrays
//! from tables with keys 1..n, holes as `null` up to a sparse limit, objects otherwise;
//! numbers in Lua's `%.14g`; `/` escaped; `cjson.null` a light userdata).

use mlua::{LightUserData, Lua, Table, Value};

/// Deepest nesting `cjson.encode`/`decode` accept (lua-cjson's default, 1000).
pub const MAX_JSON_DEPTH: usize = 1000;

/// A table is encoded as an array with holes while its highest index is at most this
/// many times its count of elements (lua-cjson's `encode_sparse_array` ratio 2, plus its
/// "safe" count of 10).
const SPARSE_RATIO: usize = 2;
const SPARSE_SAFE: usize = 10;

fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn escape(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
}

fn number(lua: &Lua, n: f64, out: &mut Vec<u8>) -> mlua::Result<()> {
    if !n.is_finite() {
        return Err(mlua::Error::runtime(
            "Cannot serialise number: must not be NaN or Inf",
        ));
    }
    match lua.coerce_string(Value::Number(n))? {
        Some(s) => out.extend_from_slice(&s.as_bytes()),
        None => out.push(b'0'),
    }
    Ok(())
}

/// The array length of `t` if it encodes as an array, else `None`.
fn array_len(t: &Table) -> mlua::Result<Option<usize>> {
    let (mut max, mut count) = (0usize, 0usize);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let idx = match k {
            Value::Integer(i) if i >= 1 => i as usize,
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => n as usize,
            _ => return Ok(None),
        };
        max = max.max(idx);
        count += 1;
    }
    if max > SPARSE_SAFE && max > count * SPARSE_RATIO {
        return Err(mlua::Error::runtime(
            "Cannot serialise table: excessively sparse array",
        ));
    }
    Ok(Some(max))
}

fn encode(lua: &Lua, v: &Value, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    if depth > MAX_JSON_DEPTH {
        return Err(mlua::Error::runtime(format!(
            "Cannot serialise, excessive nesting ({depth})"
        )));
    }
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => number(lua, *i as f64, out)?,
        Value::Number(n) => number(lua, *n, out)?,
        Value::String(s) => escape(&s.as_bytes(), out),
        Value::Table(t) => match array_len(t)? {
            Some(n) if n > 0 => {
                out.push(b'[');
                for i in 1..=n {
                    if i > 1 {
                        out.push(b',');
                    }
                    encode(lua, &t.raw_get::<Value>(i)?, out, depth + 1)?;
                }
                out.push(b']');
            }
            _ => {
                out.push(b'{');
                let mut first = true;
                for pair in t.pairs::<Value, Value>() {
                    let (k, val) = pair?;
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    match &k {
                        Value::String(s) => escape(&s.as_bytes(), out),
                        Value::Integer(_) | Value::Number(_) => {
                            let mut n = Vec::new();
                            encode(lua, &k, &mut n, depth + 1)?;
                            escape(&n, out);
                        }
                        other => {
                            return Err(mlua::Error::runtime(format!(
                                "Cannot serialise {}: table key must be a number or string",
                                other.type_name()
                            )))
                        }
                    }
                    out.push(b':');
                    encode(lua, &val, out, depth + 1)?;
                }
                out.push(b'}');
            }
        },
        other => {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

fn decode(lua: &Lua, v: serde_json::Value, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_JSON_DEPTH {
        return Err(mlua::Error::runtime(
            "Found too many nested data structures",
        ));
    }
    Ok(match v {
        serde_json::Value::Null => null(),
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(lua.create_string(&s)?),
        serde_json::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, decode(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k, decode(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Installs `cjson` (encode, decode, null) into the globals.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let cjson = lua.create_table()?;
    cjson.raw_set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let mut out = Vec::new();
            encode(lua, &v, &mut out, 0)?;
            lua.create_string(&out)
        })?,
    )?;
    cjson.raw_set(
        "decode",
        lua.create_function(|lua, s: mlua::String| {
            let parsed: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("Expected value but {e}")))?;
            decode(lua, parsed, 0)
        })?,
    )?;
    cjson.raw_set("null", null())?;
    lua.globals().raw_set("cjson", cjson)
}
