//! `struct`: binary packing for scripts, as Redis's `lua_struct.c` (Roberto
//! Ierusalimschy's struct library): `struct.pack(fmt, ...)`, `struct.unpack(fmt, data
//! [, pos])`, `struct.size(fmt)`.
//!
//! Sizes are those of the x86-64 C types lua_struct uses (`h` 2, `i` 4, `l` and `T` 8,
//! `f` 4, `d` 8), native order little-endian, maximum alignment 8; `iN`/`IN` take N
//! bytes up to [`MAX_INT_SIZE`].

use mlua::{Lua, MultiValue, Value, Variadic};

/// The widest `iN` (lua_struct's `MAXINTSIZE`).
pub const MAX_INT_SIZE: usize = 32;
/// `!` without a number: the platform's largest alignment.
const MAX_ALIGN: usize = 8;

#[derive(Clone, Copy)]
struct Header {
    little: bool,
    align: usize,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            little: true,
            align: 1,
        }
    }
}

fn err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

fn arg_err(n: usize, f: &str, msg: &str) -> mlua::Error {
    err(format!("bad argument #{n} to '{f}' ({msg})"))
}

/// Reads the number at `fmt[*i..]`, or `default` if there is none.
fn getnum(fmt: &[u8], i: &mut usize, default: usize) -> mlua::Result<usize> {
    if !fmt.get(*i).is_some_and(u8::is_ascii_digit) {
        return Ok(default);
    }
    let mut a: usize = 0;
    while let Some(&d) = fmt.get(*i).filter(|d| d.is_ascii_digit()) {
        let digit = usize::from(d - b'0');
        if a > (i32::MAX as usize) / 10 || a * 10 > i32::MAX as usize - digit {
            return Err(err("integral size overflow"));
        }
        a = a * 10 + digit;
        *i += 1;
    }
    Ok(a)
}

fn optsize(opt: u8, fmt: &[u8], i: &mut usize) -> mlua::Result<usize> {
    Ok(match opt {
        b'B' | b'b' | b'x' => 1,
        b'H' | b'h' => 2,
        b'L' | b'l' | b'T' | b'd' => 8,
        b'f' => 4,
        b'c' => getnum(fmt, i, 1)?,
        b'i' | b'I' => {
            let sz = getnum(fmt, i, 4)?;
            if sz > MAX_INT_SIZE {
                return Err(err(format!(
                    "integral size {sz} is larger than limit of {MAX_INT_SIZE}"
                )));
            }
            sz
        }
        _ => 0,
    })
}

fn gettoalign(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    (size - (len & (size - 1))) & (size - 1)
}

fn controloptions(f: &str, opt: u8, fmt: &[u8], i: &mut usize, h: &mut Header) -> mlua::Result<()> {
    match opt {
        b' ' => {}
        b'>' => h.little = false,
        b'<' => h.little = true,
        b'!' => {
            let a = getnum(fmt, i, MAX_ALIGN)?;
            if a == 0 || a & (a - 1) != 0 {
                return Err(err(format!("alignment {a} is not a power of 2")));
            }
            h.align = a;
        }
        _ => {
            return Err(arg_err(
                1,
                f,
                &format!("invalid format option '{}'", opt as char),
            ))
        }
    }
    Ok(())
}

fn number(lua: &Lua, v: Option<&Value>, n: usize) -> mlua::Result<f64> {
    match v {
        Some(Value::Integer(i)) => Ok(*i as f64),
        Some(Value::Number(x)) => Ok(*x),
        Some(v @ Value::String(_)) => lua
            .coerce_number(v.clone())?
            .ok_or_else(|| arg_err(n, "pack", "number expected, got string")),
        other => Err(arg_err(
            n,
            "pack",
            &format!(
                "number expected, got {}",
                other.map_or("no value", |v| v.type_name())
            ),
        )),
    }
}

fn pack(lua: &Lua, fmt: &[u8], args: &[Value]) -> mlua::Result<mlua::String> {
    let mut h = Header::default();
    let mut out: Vec<u8> = Vec::new();
    let mut arg = 0usize;
    let mut i = 0usize;
    while i < fmt.len() {
        let opt = fmt[i];
        i += 1;
        let mut size = optsize(opt, fmt, &mut i)?;
        let toalign = gettoalign(out.len(), &h, opt, size);
        out.resize(out.len() + toalign, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = number(lua, args.get(arg), arg + 2)?;
                arg += 1;
                let mut value: u64 = if n < 0.0 { n as i64 as u64 } else { n as u64 };
                let mut bytes = vec![0u8; size];
                for k in 0..size {
                    let b = (value & 0xff) as u8;
                    value = value.checked_shr(8).unwrap_or(0);
                    let at = if h.little { k } else { size - 1 - k };
                    bytes[at] = b;
                }
                out.extend_from_slice(&bytes);
            }
            b'x' => out.push(0),
            b'f' | b'd' => {
                let n = number(lua, args.get(arg), arg + 2)?;
                arg += 1;
                let bytes: Vec<u8> = match (opt, h.little) {
                    (b'f', true) => (n as f32).to_le_bytes().to_vec(),
                    (b'f', false) => (n as f32).to_be_bytes().to_vec(),
                    (_, true) => n.to_le_bytes().to_vec(),
                    (_, false) => n.to_be_bytes().to_vec(),
                };
                out.extend_from_slice(&bytes);
            }
            b'c' | b's' => {
                let s = match args.get(arg) {
                    Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
                        lua.coerce_string(v.clone())?
                    }
                    _ => None,
                };
                let Some(s) = s else {
                    let got = args.get(arg).map_or("no value", |v| v.type_name());
                    return Err(arg_err(
                        arg + 2,
                        "pack",
                        &format!("string expected, got {got}"),
                    ));
                };
                arg += 1;
                let s = s.as_bytes();
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    return Err(arg_err(arg + 1, "pack", "string too short"));
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                }
            }
            _ => controloptions("pack", opt, fmt, &mut i, &mut h)?,
        }
    }
    lua.create_string(&out)
}

fn getinteger(buf: &[u8], little: bool, signed: bool) -> f64 {
    let mut l: u64 = 0;
    let size = buf.len();
    for k in 0..size {
        let b = if little { buf[size - 1 - k] } else { buf[k] };
        l = l.checked_shl(8).unwrap_or(0) | u64::from(b);
    }
    if !signed {
        return l as f64;
    }
    let mask = (!0u64)
        .checked_shl((size * 8).saturating_sub(1) as u32)
        .unwrap_or(0);
    if l & mask != 0 {
        l |= mask;
    }
    l as i64 as f64
}

fn unpack(lua: &Lua, fmt: &[u8], data: &[u8], pos: Option<i64>) -> mlua::Result<MultiValue> {
    let pos = pos.unwrap_or(1);
    if pos <= 0 {
        return Err(arg_err(3, "unpack", "offset must be 1 or greater"));
    }
    let mut pos = (pos - 1) as usize;
    let ld = data.len();
    let mut h = Header::default();
    let mut values: Vec<Value> = Vec::new();
    let mut i = 0usize;
    let short = || arg_err(2, "unpack", "data string too short");
    while i < fmt.len() {
        let opt = fmt[i];
        i += 1;
        let mut size = optsize(opt, fmt, &mut i)?;
        pos += gettoalign(pos, &h, opt, size);
        if size > ld || pos > ld - size {
            return Err(short());
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let signed = opt.is_ascii_lowercase();
                values.push(Value::Number(getinteger(
                    &data[pos..pos + size],
                    h.little,
                    signed,
                )));
            }
            b'x' => {}
            b'f' => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&data[pos..pos + 4]);
                let f = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                values.push(Value::Number(f64::from(f)));
            }
            b'd' => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[pos..pos + 8]);
                let d = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                values.push(Value::Number(d));
            }
            b'c' => {
                if size == 0 {
                    let n = match values.last() {
                        Some(Value::Number(n)) => *n,
                        Some(Value::Integer(n)) => *n as f64,
                        _ => return Err(err("format 'c0' needs a previous size")),
                    };
                    values.pop();
                    size = if n > 0.0 { n as usize } else { 0 };
                    if size > ld || pos > ld - size {
                        return Err(short());
                    }
                }
                values.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|&b| b == 0) else {
                    return Err(err("unfinished string in data"));
                };
                size = end + 1;
                values.push(Value::String(lua.create_string(&data[pos..pos + end])?));
            }
            _ => controloptions("unpack", opt, fmt, &mut i, &mut h)?,
        }
        pos += size;
    }
    values.push(Value::Integer(pos as i64 + 1));
    Ok(MultiValue::from_vec(values))
}

fn size(fmt: &[u8]) -> mlua::Result<i64> {
    let mut h = Header::default();
    let mut pos = 0usize;
    let mut i = 0usize;
    while i < fmt.len() {
        let opt = fmt[i];
        i += 1;
        let size = optsize(opt, fmt, &mut i)?;
        pos += gettoalign(pos, &h, opt, size);
        if opt == b's' {
            return Err(arg_err(1, "size", "option 's' has no fixed size"));
        } else if opt == b'c' && size == 0 {
            return Err(arg_err(1, "size", "option 'c0' has no fixed size"));
        }
        if !opt.is_ascii_alphanumeric() {
            controloptions("size", opt, fmt, &mut i, &mut h)?;
        }
        pos += size;
    }
    Ok(pos as i64)
}

/// Installs `struct` into the globals.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, (fmt, args): (mlua::String, Variadic<Value>)| {
            pack(lua, &fmt.as_bytes(), &args)
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(
            |lua, (fmt, data, pos): (mlua::String, mlua::String, Option<i64>)| {
                unpack(lua, &fmt.as_bytes(), &data.as_bytes(), pos)
            },
        )?,
    )?;
    t.raw_set(
        "size",
        lua.create_function(|_, fmt: mlua::String| size(&fmt.as_bytes()))?,
    )?;
    lua.globals().raw_set("struct", t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_unpacks_and_sizes_as_lua_struct() {
        let lua = Lua::new();
        install(&lua).unwrap();
        let ok: bool = lua
            .load(
                r#"
                local s = struct.pack('>hIc3', -2, 258, 'abc')
                local a, b, c, nxt = struct.unpack('>hIc3', s)
                local x, y = struct.unpack('<i2', struct.pack('<i2', 513))
                return s == '\255\254\0\0\1\2abc' and a == -2 and b == 258 and c == 'abc'
                    and nxt == 10 and x == 513 and y == 3
                    and struct.size('!4bi') == 8 and struct.size('bi') == 5
                    and select(1, struct.unpack('s', 'hi\0')) == 'hi'
                "#,
            )
            .eval()
            .unwrap();
        assert!(ok);
        let e = lua
            .load("return struct.pack('z', 1)")
            .eval::<Value>()
            .unwrap_err();
        assert!(e.to_string().contains("invalid format option 'z'"), "{e}");
    }
}
