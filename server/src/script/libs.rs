//! The libraries Redis gives scripts beyond Lua's own: `bit` (LuaBitOp's API on 32-bit
//! integers), `cjson` ([`super::cjson`]), `cmsgpack` ([`super::cmsgpack`]) and `struct`
//! ([`super::lstruct`]); Redis's fix of Lua 5.1's `unpack`; and Lua 5.1's `tonumber`
//! converting a string once instead of twice.

use std::ffi::c_int;

use mlua::{ffi, Lua, Table};

/// A Lua number as LuaBitOp reads it: wrapped to 32 bits.
fn tobit(n: f64) -> i32 {
    // LuaBitOp adds 2^52+2^51 and takes the low word: the same as wrapping the
    // integer part modulo 2^32.
    (n as i64) as i32
}

/// Installs the `bit` library into the globals.
pub fn install(lua: &Lua, state: &super::vm::RunState) -> mlua::Result<()> {
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
    // SAFETY: `unpack` follows the C API's protocol (see there).
    let unpack = unsafe { lua.create_c_function(unpack)? };
    lua.globals().raw_set("unpack", unpack)?;
    // SAFETY: as `unpack`.
    let tonumber = unsafe { lua.create_c_function(tonumber)? };
    lua.globals().raw_set("tonumber", tonumber)?;
    super::cjson::install(lua, &state.cjson)?;
    super::cmsgpack::install(lua)?;
    super::lstruct::install(lua)
}

/// `unpack(t [, i [, j]])` as Redis patched Lua 5.1's `luaB_unpack`: the element count
/// in unsigned arithmetic, so a range such as `(-2, 2^31-1)` is "too many results to
/// unpack" instead of a signed overflow (which the C compiler may assume away, and then
/// Lua writes past its stack).
unsafe extern "C-unwind" fn unpack(state: *mut ffi::lua_State) -> c_int {
    // Only C API calls on the arguments; errors long-jump out (no Rust value with a
    // destructor is alive here).
    ffi::luaL_checktype(state, 1, ffi::LUA_TTABLE);
    let i = ffi::luaL_optinteger(state, 2, 1) as c_int;
    let e = if ffi::lua_isnoneornil(state, 3) != 0 {
        ffi::lua_objlen(state, 1) as c_int
    } else {
        ffi::luaL_checkinteger(state, 3) as c_int
    };
    if i > e {
        return 0;
    }
    let n = (e as u32).wrapping_sub(i as u32);
    if n >= i32::MAX as u32 || ffi::lua_checkstack(state, (n + 1) as c_int) == 0 {
        return ffi::luaL_error(state, c"too many results to unpack".as_ptr());
    }
    let mut k = i;
    loop {
        ffi::lua_rawgeti(state, 1, k as ffi::lua_Integer);
        if k == e {
            break;
        }
        k += 1;
    }
    (n + 1) as c_int
}

/// The value of `-?[0-9]{1,15}` (a counter as scripts read it), without `strtod`: at
/// most 15 digits are below 2^53, so the integer is exactly the double `strtod` gives
/// (`-0` included, negated as a double). `None` for anything else (a sign `+`,
/// spaces, a fraction, an exponent, hex, more digits), which takes Lua's own path.
fn plain_decimal(s: &[u8]) -> Option<f64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    let n = n as f64;
    Some(if negative { -n } else { n })
}

/// `tonumber(e [, base])`: Lua 5.1's `luaB_tonumber`, line for line, except that base 10
/// reads a plain decimal string itself ([`plain_decimal`]) and converts any other string
/// once (`luaB_tonumber` asks `lua_isnumber` and then `lua_tonumber`,
/// each a `strtod`; a script's `tonumber(redis.call('GET', k))` is a read-modify-write's
/// hot path). The results and errors are Lua's.
unsafe extern "C-unwind" fn tonumber(state: *mut ffi::lua_State) -> c_int {
    // Only C API calls on the arguments; errors long-jump out (no Rust value with a
    // destructor is alive here).
    let base = ffi::luaL_optinteger(state, 2, 10) as c_int;
    if base == 10 {
        ffi::luaL_checkany(state, 1);
        if ffi::lua_type(state, 1) == ffi::LUA_TSTRING {
            let mut len = 0usize;
            let ptr = ffi::lua_tolstring(state, 1, &mut len);
            // A string's bytes, valid while it is on the stack (read here and dropped).
            if let Some(n) = plain_decimal(std::slice::from_raw_parts(ptr.cast::<u8>(), len)) {
                ffi::lua_pushnumber(state, n);
                return 1;
            }
        }
        // `lua_tonumber` gives 0 for what is not a number: only then is it asked.
        let n = ffi::lua_tonumber(state, 1);
        if n != 0.0 || ffi::lua_isnumber(state, 1) != 0 {
            ffi::lua_pushnumber(state, n);
            return 1;
        }
    } else {
        let s1 = ffi::luaL_checklstring(state, 1, std::ptr::null_mut());
        if !(2..=36).contains(&base) {
            return ffi::luaL_argerror(state, 2, c"base out of range".as_ptr());
        }
        let mut s2: *mut std::ffi::c_char = std::ptr::null_mut();
        let n = libc::strtoul(s1, &mut s2, base);
        if s1 != s2.cast_const() {
            while libc::isspace(*s2 as u8 as c_int) != 0 {
                s2 = s2.add(1);
            }
            if *s2 == 0 {
                ffi::lua_pushnumber(state, n as ffi::lua_Number);
                return 1;
            }
        }
    }
    ffi::lua_pushnil(state);
    1
}
