//! `cjson`: JSON encoding and decoding for scripts, as Redis's lua-cjson does it (arrays
//! from tables with keys 1..n, holes as `null` up to a sparse limit, objects otherwise;
//! numbers in Lua's `%.14g`; `/` escaped; `cjson.null` a light userdata).
//!
//! lua-cjson's settings (`encode_max_depth`, `decode_max_depth`, `encode_sparse_array`,
//! `encode_invalid_numbers`, `encode_number_precision`, `encode_keep_buffer`,
//! `decode_invalid_numbers`) are kept in [`Config`], which every script starts from the
//! defaults (in Redis they would last in its Lua state; here that state is a cache that
//! each replica may rebuild at a different time, so a setting lasts one script only).

use std::sync::Arc;

use mlua::{LightUserData, Lua, Table, Value};
use parking_lot::Mutex;

/// Deepest nesting `cjson.encode`/`decode` accept (lua-cjson's default, 1000).
pub const MAX_JSON_DEPTH: usize = 1000;

/// A table is encoded as an array with holes while its highest index is at most this
/// many times its count of elements (lua-cjson's `encode_sparse_array` ratio 2, plus its
/// "safe" count of 10).
const SPARSE_RATIO: usize = 2;
const SPARSE_SAFE: usize = 10;

/// lua-cjson's settings for one script (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    encode_max_depth: usize,
    decode_max_depth: usize,
    sparse_convert: bool,
    sparse_ratio: usize,
    sparse_safe: usize,
    /// 0: NaN/Inf are errors, 1: written as `nan`/`inf`, 2: written as `null`.
    invalid_numbers: u8,
    precision: u8,
    keep_buffer: bool,
    decode_invalid_numbers: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            encode_max_depth: MAX_JSON_DEPTH,
            decode_max_depth: MAX_JSON_DEPTH,
            sparse_convert: false,
            sparse_ratio: SPARSE_RATIO,
            sparse_safe: SPARSE_SAFE,
            invalid_numbers: 0,
            precision: 14,
            keep_buffer: true,
            decode_invalid_numbers: true,
        }
    }
}

/// The settings shared by the `cjson` functions of one Lua state.
pub type Config = Arc<Mutex<Settings>>;

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

/// What `encode` works with: the Lua state, the settings, and `string.format` (for a
/// precision other than Lua's own 14 digits).
struct Enc<'a> {
    lua: &'a Lua,
    cfg: Settings,
    format: &'a mlua::Function,
}

fn number(enc: &Enc<'_>, n: f64, out: &mut Vec<u8>) -> mlua::Result<()> {
    let (lua, cfg) = (enc.lua, &enc.cfg);
    if !n.is_finite() {
        match cfg.invalid_numbers {
            0 => {
                return Err(mlua::Error::runtime(
                    "Cannot serialise number: must not be NaN or Inf",
                ))
            }
            2 => {
                out.extend_from_slice(b"null");
                return Ok(());
            }
            _ if n.is_nan() => {
                out.extend_from_slice(b"nan");
                return Ok(());
            }
            _ => {}
        }
    }
    if cfg.precision == 14 {
        // Lua's own number format is `%.14g`.
        match lua.coerce_string(Value::Number(n))? {
            Some(s) => out.extend_from_slice(&s.as_bytes()),
            None => out.push(b'0'),
        }
        return Ok(());
    }
    let s: mlua::String = enc.format.call((format!("%.{}g", cfg.precision), n))?;
    out.extend_from_slice(&s.as_bytes());
    Ok(())
}

/// The array length of `t` if it encodes as an array, else `None`.
fn array_len(cfg: &Settings, t: &Table) -> mlua::Result<Option<usize>> {
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
    if cfg.sparse_ratio > 0 && max > cfg.sparse_safe && max > count * cfg.sparse_ratio {
        if cfg.sparse_convert {
            return Ok(None);
        }
        return Err(mlua::Error::runtime(
            "Cannot serialise table: excessively sparse array",
        ));
    }
    Ok(Some(max))
}

fn encode(enc: &Enc<'_>, v: &Value, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    let cfg = &enc.cfg;
    if depth > cfg.encode_max_depth {
        return Err(mlua::Error::runtime(format!(
            "Cannot serialise, excessive nesting ({depth})"
        )));
    }
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => number(enc, *i as f64, out)?,
        Value::Number(n) => number(enc, *n, out)?,
        Value::String(s) => escape(&s.as_bytes(), out),
        Value::Table(t) => match array_len(cfg, t)? {
            Some(n) if n > 0 => {
                out.push(b'[');
                for i in 1..=n {
                    if i > 1 {
                        out.push(b',');
                    }
                    encode(enc, &t.raw_get::<Value>(i)?, out, depth + 1)?;
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
                            encode(enc, &k, &mut n, depth + 1)?;
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
                    encode(enc, &val, out, depth + 1)?;
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

fn decode(lua: &Lua, max: usize, v: serde_json::Value, depth: usize) -> mlua::Result<Value> {
    if depth > max {
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
                t.raw_set(i + 1, decode(lua, max, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k, decode(lua, max, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
    })
}

/// A setter-getter of one integer setting: with an argument (`lo..=hi`) it sets it;
/// either way it answers the value.
fn int_setting(
    lua: &Lua,
    cfg: &Config,
    name: &'static str,
    lo: usize,
    hi: usize,
    field: fn(&mut Settings) -> &mut usize,
) -> mlua::Result<mlua::Function> {
    let cfg = cfg.clone();
    lua.create_function(move |_, v: Option<f64>| {
        let mut s = cfg.lock();
        if let Some(v) = v {
            if v < lo as f64 || v > hi as f64 {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to '{name}' (expected integer between {lo} and {hi})"
                )));
            }
            *field(&mut s) = v as usize;
        }
        Ok(*field(&mut s))
    })
}

/// A setter-getter of one on/off setting.
fn bool_setting(
    lua: &Lua,
    cfg: &Config,
    field: fn(&mut Settings) -> &mut bool,
) -> mlua::Result<mlua::Function> {
    let cfg = cfg.clone();
    lua.create_function(move |_, v: Option<Value>| {
        let mut s = cfg.lock();
        if let Some(v) = v.filter(|v| !v.is_nil()) {
            *field(&mut s) = switch(&v, false)? == 1;
        }
        Ok(*field(&mut s))
    })
}

/// lua-cjson's `on`/`off` (and `null` where allowed) argument: 0, 1 or 2.
fn switch(v: &Value, allow_null: bool) -> mlua::Result<u8> {
    match v {
        Value::Boolean(b) => Ok(u8::from(*b)),
        Value::String(s) => match &*s.to_string_lossy() {
            "on" => Ok(1),
            "off" => Ok(0),
            "null" if allow_null => Ok(2),
            _ => Err(mlua::Error::runtime("invalid option")),
        },
        _ => Err(mlua::Error::runtime("invalid option")),
    }
}

/// Installs `cjson` (encode, decode, null, the settings) into the globals.
pub fn install(lua: &Lua, cfg: &Config) -> mlua::Result<()> {
    let cjson = lua.create_table()?;
    let c = cfg.clone();
    let format: mlua::Function = lua
        .globals()
        .raw_get::<Table>("string")?
        .raw_get("format")?;
    cjson.raw_set(
        "encode",
        lua.create_function(move |lua, v: Value| {
            let enc = Enc {
                lua,
                cfg: *c.lock(),
                format: &format,
            };
            let mut out = Vec::new();
            encode(&enc, &v, &mut out, 0)?;
            lua.create_string(&out)
        })?,
    )?;
    let c = cfg.clone();
    cjson.raw_set(
        "decode",
        lua.create_function(move |lua, s: mlua::String| {
            let max = c.lock().decode_max_depth;
            let parsed: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("Expected value but {e}")))?;
            decode(lua, max, parsed, 0)
        })?,
    )?;
    cjson.raw_set("null", null())?;
    let max = i32::MAX as usize;
    cjson.raw_set(
        "encode_max_depth",
        int_setting(lua, cfg, "encode_max_depth", 1, max, |s| {
            &mut s.encode_max_depth
        })?,
    )?;
    cjson.raw_set(
        "decode_max_depth",
        int_setting(lua, cfg, "decode_max_depth", 1, max, |s| {
            &mut s.decode_max_depth
        })?,
    )?;
    let c = cfg.clone();
    cjson.raw_set(
        "encode_number_precision",
        lua.create_function(move |_, v: Option<f64>| {
            let mut s = c.lock();
            if let Some(v) = v {
                if !(1.0..=14.0).contains(&v) {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'encode_number_precision' (expected integer between 1 and 14)",
                    ));
                }
                s.precision = v as u8;
            }
            Ok(s.precision)
        })?,
    )?;
    let c = cfg.clone();
    cjson.raw_set(
        "encode_sparse_array",
        lua.create_function(
            move |_, (convert, ratio, safe): (Option<Value>, Option<f64>, Option<f64>)| {
                let mut s = c.lock();
                if let Some(v) = convert.filter(|v| !v.is_nil()) {
                    s.sparse_convert = switch(&v, false)? == 1;
                }
                if let Some(r) = ratio {
                    s.sparse_ratio = r.max(0.0) as usize;
                }
                if let Some(n) = safe {
                    s.sparse_safe = n.max(0.0) as usize;
                }
                Ok((s.sparse_convert, s.sparse_ratio, s.sparse_safe))
            },
        )?,
    )?;
    let c = cfg.clone();
    cjson.raw_set(
        "encode_invalid_numbers",
        lua.create_function(move |lua, v: Option<Value>| {
            let mut s = c.lock();
            if let Some(v) = v.filter(|v| !v.is_nil()) {
                s.invalid_numbers = switch(&v, true)?;
            }
            Ok(match s.invalid_numbers {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => Value::String(lua.create_string("null")?),
            })
        })?,
    )?;
    cjson.raw_set(
        "decode_invalid_numbers",
        bool_setting(lua, cfg, |s| &mut s.decode_invalid_numbers)?,
    )?;
    cjson.raw_set(
        "encode_keep_buffer",
        bool_setting(lua, cfg, |s| &mut s.keep_buffer)?,
    )?;
    lua.globals().raw_set("cjson", cjson)
}
