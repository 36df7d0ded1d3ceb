//! The libraries Redis gives scripts beyond Lua's own: `bit` (LuaBitOp's API on 32-bit
//! integers) and `cjson` ([`super::cjson`]).

use mlua::{Lua, Table};

/// A Lua number as LuaBitOp reads it: wrapped to 32 bits.
fn tobit(n: f64) -> i32 {
    // LuaBitOp adds 2^52+2^51 and takes the low word: the same as wrapping the
    // integer part modulo 2^32.
    (n as i64) as i32
}

/// Installs the `bit` library into the globals.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let bit: Table = lua.create_table()?;
    bit.raw_set("tobit", lua.create_function(|_, n: f64| Ok(tobit(n)))?)?;
    bit.raw_set("bnot", lua.create_function(|_, n: f64| Ok(!tobit(n)))?)?;
    type Fold = fn(i32, i32) -> i32;
    let folds: [(&str, Fold); 3] = [
        ("band", |a, b| a & b),
        ("bor", |a, b| a | b),
        ("bxor", |a, b| a ^ b),
    ];
    for (name, op) in folds {
        bit.raw_set(
            name,
            lua.create_function(move |_, args: mlua::Variadic<f64>| {
                let mut it = args.iter();
                let first = it.next().copied().ok_or_else(|| {
                    mlua::Error::runtime(format!(
                        "bad argument #1 to '{name}' (number expected, got no value)"
                    ))
                })?;
                Ok(it.fold(tobit(first), |acc, &n| op(acc, tobit(n))))
            })?,
        )?;
    }
    type Shift = fn(i32, u32) -> i32;
    let shifts: [(&str, Shift); 5] = [
        ("lshift", |a, n| ((a as u32) << n) as i32),
        ("rshift", |a, n| ((a as u32) >> n) as i32),
        ("arshift", |a, n| a >> n),
        ("rol", |a, n| (a as u32).rotate_left(n) as i32),
        ("ror", |a, n| (a as u32).rotate_right(n) as i32),
    ];
    for (name, op) in shifts {
        bit.raw_set(
            name,
            lua.create_function(move |_, (a, n): (f64, f64)| {
                Ok(op(tobit(a), (tobit(n) as u32) & 31))
            })?,
        )?;
    }
    bit.raw_set(
        "bswap",
        lua.create_function(|_, n: f64| Ok(tobit(n).swap_bytes()))?,
    )?;
    bit.raw_set(
        "tohex",
        lua.create_function(|_, (n, digits): (f64, Option<f64>)| {
            let x = tobit(n) as u32;
            let d = digits.map_or(8, tobit);
            let (upper, width) = if d < 0 {
                (true, (-d) as usize)
            } else {
                (false, d as usize)
            };
            let width = width.clamp(1, 8);
            let masked = if width == 8 {
                x
            } else {
                x & ((1u32 << (4 * width)) - 1)
            };
            Ok(match upper {
                true => format!("{masked:0width$X}"),
                false => format!("{masked:0width$x}"),
            })
        })?,
    )?;
    lua.globals().raw_set("bit", bit)?;
    super::cjson::install(lua)
}
