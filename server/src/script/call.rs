//! `redis.call` and `redis.pcall` as raw Lua C functions: the hot path of a script.
//!
//! How it fits: mlua's callbacks turn each argument into a Lua value handle and build
//! each reply value through the same handles, which cost more than the command a script
//! calls. These two functions read their arguments off the Lua stack into one buffer
//! ([`read_args`]), run the command through [`super::call_current`], and push a RESP2
//! reply straight onto the stack ([`push_resp2`]). Error replies and RESP3 replies (after
//! `redis.setresp(3)`) go the slow way, as mlua values ([`super::convert`]), handed over
//! through `hidden.transfer`.
//!
//! Upvalues: 1 = the run state (light userdata: the [`super::vm::Vm`] holds its `Arc` for
//! the life of the Lua state), 2 = the `hidden` table, 3 and 4 = the strings `ok` and
//! `err` (the keys of status and error reply tables). A failed `redis.call` leaves its
//! `{err=...}` table in `hidden.pending` and raises (the handler and the `pcall`
//! wrappers take the table from there), as the mlua version did.
//!
//! No Rust value with a destructor is alive where Lua may raise (a raise is a `longjmp`):
//! values are built where allocation cannot fail short of the process running out, and
//! the only raise is the deliberate one, after everything owned is dropped. Either the
//! state is far enough below its memory limit that the values cannot reach it
//! ([`needs_lift`], one read of Lua's byte count: the usual case), or the limit is lifted
//! for them ([`lift`]; through mlua, which costs as much as a short command).

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mlua::{ffi, Function, Lua, Table, Value};

use super::convert::{self, ArgsBuilder, BAD_CALL_ARG, MAX_NESTING};
use super::vm::{RunState, ARGS_REFILL_MAX, ARGS_RENEW_EVERY, LUA_MEMORY_LIMIT};
use super::Called;

/// Creates `redis.call` (`raise`: a failed command raises) or `redis.pcall` (it returns
/// the error table).
pub fn create(
    lua: &Lua,
    state: &Arc<RunState>,
    hidden: &Table,
    raise: bool,
) -> mlua::Result<Function> {
    let run_state = Arc::as_ptr(state) as *mut c_void;
    let f: ffi::lua_CFunction = match raise {
        true => redis_call,
        false => redis_pcall,
    };
    // SAFETY: a protected call with `hidden` at index 1 (a C function's 20 slots): pushes
    // the four upvalues, makes the closure, and leaves only it on the stack.
    unsafe {
        lua.exec_raw::<Function>(hidden, |l| {
            ffi::lua_pushlightuserdata(l, run_state);
            ffi::lua_pushvalue(l, 1);
            ffi::lua_pushstring(l, c"ok".as_ptr());
            ffi::lua_pushstring(l, c"err".as_ptr());
            ffi::lua_pushcclosure(l, f, 4);
            ffi::lua_replace(l, 1);
        })
    }
}

/// Creates the runner, `runner(f) -> ok, result` (upvalues: the run state, `base`, the
/// message `handler`, then the strings `KEYS` and `ARGV`): it sets `KEYS` and `ARGV` in
/// `base` from the run in progress ([`set_args`]), then calls `f` under `handler`, as
/// `xpcall(f, handler)` does: `true` and `f`'s first result, or `false` and the
/// handler's. A C function, inside the one protected call mlua makes for the run: no Lua
/// frame, no closure and no protected call of its own for KEYS and ARGV.
pub fn create_runner(
    lua: &Lua,
    state: &Arc<RunState>,
    base: &Table,
    handler: &Function,
) -> mlua::Result<Function> {
    let run_state = Arc::as_ptr(state) as *mut c_void;
    // SAFETY: a protected call with `base` and `handler` at indexes 1 and 2 (a C
    // function's 20 slots): puts the light userdata under them, pushes the names, makes
    // the closure of the five, and leaves only it on the stack.
    unsafe {
        lua.exec_raw::<Function>((base.clone(), handler.clone()), |l| {
            ffi::lua_pushlightuserdata(l, run_state);
            ffi::lua_insert(l, 1);
            ffi::lua_pushstring(l, c"KEYS".as_ptr());
            ffi::lua_pushstring(l, c"ARGV".as_ptr());
            ffi::lua_pushcclosure(l, runner, 5);
        })
    }
}

unsafe extern "C-unwind" fn runner(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: upvalue 1 is the `RunState` the `Vm` keeps alive while its Lua state lives;
    // the stack holds `f` (and whatever else the caller passed, dropped here), with the
    // 20 slots a C function is given.
    unsafe {
        let state = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const RunState);
        ffi::lua_settop(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
        set_args(l, state);
        ffi::lua_settop(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(3));
        ffi::lua_insert(l, 1);
        // [handler, f] -> [handler, result]: the handler is not called when allocation
        // fails (Lua 5.1), as with `xpcall`.
        let status = ffi::lua_pcall(l, 0, 1, 1);
        ffi::lua_pushboolean(l, c_int::from(status == 0));
        ffi::lua_insert(l, 2);
    }
    2
}

/// Where [`runner`] keeps `base` on its stack while [`set_args`] runs.
const BASE_AT: c_int = 2;

/// The `Lua` of `l`, looked up in the registry once and then kept in `state` (the lookup
/// costs about as much as a short command).
///
/// # Safety
/// `l` is a running state of the Lua state whose functions hold `state`.
unsafe fn lua_of<'a>(state: &RunState, l: *mut ffi::lua_State) -> &'a Lua {
    let cached = state.lua.load(Ordering::Relaxed);
    if !cached.is_null() {
        // SAFETY: set below from this Lua state's own `Lua`, which mlua keeps at a fixed
        // place (its extra data) for the life of the state, and the state outlives the
        // functions that hold `state` and call this.
        return unsafe { &*(cached as *const Lua) };
    }
    // SAFETY: the `Lua` of this state outlives the call (mlua runs the script).
    let lua = unsafe { Lua::get_or_init_from_ptr(l) };
    state
        .lua
        .store(lua as *const Lua as *mut c_void, Ordering::Relaxed);
    lua
}

/// Sets `KEYS` and `ARGV` in `base` (at [`BASE_AT`], the top of [`runner`]'s stack) from
/// the run in progress ([`super::current_keys_args`]), straight from the arguments'
/// bytes; nothing outside a run (FUNCTION LOAD runs a library through the runner).
///
/// An EVAL refills the tables the last EVAL left there when it can ([`refill`]): a
/// script may change its KEYS and ARGV, but nothing of it outlives its run (the globals
/// are read-only and a script's chunk has no upvalues), so a table the script will find
/// exactly as new is as good as a new one, and costs no allocation and no garbage.
///
/// # Safety
/// `l` is the state of a running [`runner`], `base` at [`BASE_AT`] and at the top, 5
/// free slots above it.
unsafe fn set_args(l: *mut ffi::lua_State, state: &RunState) {
    let Some((keys, args, reuse)) = super::current_keys_args(state) else {
        return;
    };
    // SAFETY: `l` is the state of this running C function.
    let lua = unsafe { lua_of(state, l) };
    // The arguments are bounded by the request, not by the script: built with the limit
    // lifted if they could reach it (nothing here owns memory a raise could leak: only
    // borrowed slices).
    let bytes: usize = keys.iter().chain(args).map(|a| a.len() + 1).sum();
    // SAFETY: `l` is the state of this running C function.
    if unsafe { needs_lift(l, bytes) } {
        lift(state, lua);
    }
    let renew = state
        .args_refills
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(ARGS_RENEW_EVERY);
    for (slot, (name, items)) in [(4, keys), (5, args)].into_iter().enumerate() {
        let refillable = reuse && !renew && items.len() <= ARGS_REFILL_MAX;
        let lens = &state.args_lens[slot];
        // SAFETY: uses at most 5 slots (name, table, and `refill`'s three) above `base`;
        // allocation failure raises to the runner's caller.
        unsafe {
            // The names are upvalues 4 and 5, interned once.
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(name));
            if refillable && lens.load(Ordering::Relaxed) == items.len() {
                ffi::lua_pushvalue(l, -1);
                ffi::lua_rawget(l, BASE_AT);
                if refill(l, items) {
                    ffi::lua_settop(l, BASE_AT);
                    continue;
                }
                ffi::lua_settop(l, -2);
            }
            ffi::lua_createtable(l, items.len().min(i32::MAX as usize) as c_int, 0);
            for (i, item) in items.iter().enumerate() {
                ffi::lua_pushlstring(l, item.as_ptr().cast(), item.len());
                ffi::lua_rawseti(l, -2, (i + 1) as ffi::lua_Integer);
            }
            ffi::lua_rawset(l, BASE_AT);
        }
        lens.store(
            if refillable { items.len() } else { usize::MAX },
            Ordering::Relaxed,
        );
    }
    relimit(state, lua);
}

/// Lua bytes that building values from one byte of a reply or argument may take, at
/// most: each value (a string, a table slot, a status table) costs under 200 bytes and
/// takes at least 3 bytes of RESP (`:0\r\n`), or 1 of KEYS/ARGV counted with its item.
const LUA_BYTES_PER_BYTE: usize = 64;

/// Whether values built from `bytes` bytes could bring the state to its memory limit:
/// unless the state uses under a quarter of the limit and the values need under a
/// quarter, so that with what the collector may allocate meanwhile (under what the
/// state uses) they stay below it.
///
/// # Safety
/// `l` is a running state.
unsafe fn needs_lift(l: *mut ffi::lua_State, bytes: usize) -> bool {
    // SAFETY: reads the state's byte count (in KiB); no allocation, no raise.
    let used = unsafe { ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0) }.max(0) as usize * 1024;
    let need = bytes
        .saturating_mul(LUA_BYTES_PER_BYTE)
        .saturating_add(4096);
    used > LUA_MEMORY_LIMIT / 4 || need > LUA_MEMORY_LIMIT / 4
}

/// Lifts the memory limit until [`relimit`] (once however often called).
pub(super) fn lift(state: &RunState, lua: &Lua) {
    if !state.lifted.swap(true, Ordering::Relaxed) {
        let _ = lua.set_memory_limit(0);
    }
}

/// Sets the memory limit back if [`lift`] lifted it.
fn relimit(state: &RunState, lua: &Lua) {
    if state.lifted.swap(false, Ordering::Relaxed) {
        let _ = lua.set_memory_limit(LUA_MEMORY_LIMIT);
    }
}

/// The slot of `hidden` (upvalue 2) that keeps the status table lent to the last EVAL.
const LENT_STATUS: ffi::lua_Integer = 1;

/// A status reply (`+OK`, the reply of every SET) as Redis converts it, `{ok=...}`, in the
/// table the last EVAL was given for its first one, when it can ([`RunState`]'s
/// `status_lendable`: the first status reply of an EVAL; the table kept in `hidden`
/// is refilled only if it is as new once refilled, as [`refill`] does for KEYS). Nothing
/// of an EVAL outlives its run, so the script cannot tell it from a new table, and
/// each later status reply of the same run gets a new one (tables are told apart by
/// identity). False, with nothing pushed, for any other reply or run.
///
/// # Safety
/// `l` is the state of a running C closure made by [`create`] with 4 free slots, the
/// memory limit lifted.
unsafe fn push_lent_status(state: &RunState, l: *mut ffi::lua_State, reply: &[u8]) -> bool {
    let Some(text) = reply
        .strip_prefix(b"+")
        .and_then(|r| r.strip_suffix(b"\r\n"))
    else {
        return false;
    };
    if !state.status_lendable.swap(false, Ordering::Relaxed) {
        return false;
    }
    // SAFETY: upvalues 2 and 3 are `hidden` and the string `ok`; raw reads and writes.
    unsafe {
        ffi::lua_rawgeti(l, ffi::lua_upvalueindex(2), LENT_STATUS);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE && ffi::lua_getmetatable(l, -1) == 0 {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(3));
            ffi::lua_pushlstring(l, text.as_ptr().cast(), text.len());
            ffi::lua_rawset(l, -3);
            if holds_only(l, 1) {
                return true;
            }
        } else if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_settop(l, -2);
        }
        ffi::lua_settop(l, -2);
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(3));
        ffi::lua_pushlstring(l, text.as_ptr().cast(), text.len());
        ffi::lua_rawset(l, -3);
        ffi::lua_pushvalue(l, -1);
        ffi::lua_rawseti(l, ffi::lua_upvalueindex(2), LENT_STATUS);
    }
    true
}

/// Whether the table on top of the stack holds `n` entries at most.
///
/// # Safety
/// `l` is a running C function's state with 2 free slots.
unsafe fn holds_only(l: *mut ffi::lua_State, n: usize) -> bool {
    // SAFETY: `lua_next` is given keys it returned (or nil), so it does not raise.
    unsafe {
        let t = ffi::lua_gettop(l);
        let mut count = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, t) != 0 {
            ffi::lua_settop(l, -2);
            count += 1;
            if count > n {
                ffi::lua_settop(l, -2);
                return false;
            }
        }
        true
    }
}

/// Refills the table on top of the stack (what the last EVAL left as KEYS or ARGV, filled
/// with as many items) with `items`, if the table is as a new one would be once filled:
/// no metatable, and no key but `1..=items.len()` (a script may have added, removed or
/// changed any). False, with the table partly written, if not (or not a table): the
/// caller makes a new one.
///
/// # Safety
/// `l` is a running C function's state with 3 free slots, the memory limit lifted.
unsafe fn refill(l: *mut ffi::lua_State, items: &[bytes::Bytes]) -> bool {
    // SAFETY: reads and raw writes on the table at the top; `lua_next` is given keys it
    // returned (or nil), so it does not raise.
    unsafe {
        if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
            return false;
        }
        if ffi::lua_getmetatable(l, -1) != 0 {
            ffi::lua_settop(l, -2);
            return false;
        }
        for (i, item) in items.iter().enumerate() {
            ffi::lua_pushlstring(l, item.as_ptr().cast(), item.len());
            ffi::lua_rawseti(l, -2, (i + 1) as ffi::lua_Integer);
        }
        // Keys `1..=n` are all set now: the table holds nothing else if it holds `n`.
        holds_only(l, items.len())
    }
}

unsafe extern "C-unwind" fn redis_call(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as a C closure made by `create`.
    unsafe { call(l, true) }
}

unsafe extern "C-unwind" fn redis_pcall(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as above.
    unsafe { call(l, false) }
}

/// The body of both functions; returns the number of results (1) or raises.
///
/// # Safety
/// `l` is the state of a running Lua C closure made by [`create`].
unsafe fn call(l: *mut ffi::lua_State, raise: bool) -> c_int {
    // SAFETY: upvalue 1 is the `RunState` the `Vm` keeps alive while its Lua state lives.
    let state = unsafe { &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const RunState) };
    // SAFETY: `l` is the state of this running C function.
    let lua = unsafe { lua_of(state, l) };
    // The values a call builds through mlua (error tables, RESP3 replies) are built with
    // the limit lifted (`CallCtx::call` and below); a RESP2 reply only if it could reach
    // the limit.
    let ok = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        super::call_current(state, lua, |args| {
            // SAFETY: `l` is a running C function's state; reading arguments does not
            // raise.
            let read = unsafe { read_args(l, args) };
            // Drop the arguments (copied above), as Redis does: the reply then has the
            // room a C function is given, however many arguments there were (`unpack`
            // of thousands).
            // SAFETY: shrinking the stack of a running C function.
            unsafe { ffi::lua_settop(l, 0) };
            read
        })
    })) {
        Ok(Called::Resp2(reply)) => {
            let top = unsafe { ffi::lua_gettop(l) };
            // SAFETY: the reply lives in the run's scratch buffer, untouched until the
            // next `redis.call`; pushing runs no Rust code that reaches it.
            let reply = unsafe { &*reply };
            let mut pos = 0;
            // SAFETY: `l` is the state of this running C function.
            if unsafe { needs_lift(l, reply.len()) } {
                lift(state, lua);
            }
            // SAFETY: a running C function's state with its stack emptied above.
            if unsafe { push_lent_status(state, l, reply) || push_resp2(l, reply, &mut pos, 0) } {
                relimit(state, lua);
                return 1;
            }
            // Too deep for the fast path: the slow one gives Redis's error.
            unsafe { ffi::lua_settop(l, top) };
            lift(state, lua);
            let parsed = convert::reply_to_lua(lua, reply);
            transfer(state, lua, l, parsed, true)
        }
        Ok(Called::Value(ok, value)) => {
            lift(state, lua);
            transfer(state, lua, l, Ok(value), ok)
        }
        Err(_) => {
            lift(state, lua);
            let t = lua.create_table();
            let t = t.and_then(|t| {
                t.raw_set("err", "ERR redis.call failed: internal error")?;
                Ok(Value::Table(t))
            });
            transfer(state, lua, l, t, false)
        }
    };
    relimit(state, lua);
    if ok || !raise {
        return 1;
    }
    // Leave the table for the handler and the `pcall` wrappers, then raise.
    // SAFETY: upvalue 2 is `hidden`; two free slots are guaranteed to a C function.
    unsafe {
        ffi::lua_pushstring(l, c"pending".as_ptr());
        ffi::lua_pushvalue(l, -2);
        ffi::lua_rawset(l, ffi::lua_upvalueindex(2));
        state.pending.store(true, Ordering::Relaxed);
        ffi::lua_pushstring(l, c"redis.call failed".as_ptr());
        ffi::lua_error(l)
    }
}

/// Puts `value` on the stack through `hidden.transfer` (an mlua value handle cannot be
/// pushed from here); returns whether the call succeeded (`ok`, unless the value
/// could not be built).
fn transfer(
    state: &RunState,
    lua: &Lua,
    l: *mut ffi::lua_State,
    value: mlua::Result<Value>,
    ok: bool,
) -> bool {
    let (ok, value) = match value {
        Ok(v) => (ok, v),
        Err(e) => {
            let t = lua.create_table().and_then(|t| {
                t.raw_set("err", format!("ERR {e}"))?;
                Ok(t)
            });
            (false, t.map(Value::Table).unwrap_or(Value::Nil))
        }
    };
    if let Some(hidden) = state.hidden.get() {
        let _ = hidden.raw_set("transfer", value);
    }
    // SAFETY: upvalue 2 is `hidden`: reads `transfer` onto the stack and clears it, with
    // the slots a C function is given.
    unsafe {
        ffi::lua_pushstring(l, c"transfer".as_ptr());
        ffi::lua_rawget(l, ffi::lua_upvalueindex(2));
        ffi::lua_pushstring(l, c"transfer".as_ptr());
        ffi::lua_pushnil(l);
        ffi::lua_rawset(l, ffi::lua_upvalueindex(2));
    }
    ok
}

/// `redis.call`'s arguments straight off the stack into `args` (strings as they are,
/// numbers as Redis formats them), or Redis's error for another type.
///
/// # Safety
/// `l` is a running C function's state; its arguments are the whole stack.
unsafe fn read_args(l: *mut ffi::lua_State, args: &mut ArgsBuilder) -> Result<(), &'static str> {
    let n = unsafe { ffi::lua_gettop(l) };
    for idx in 1..=n {
        // SAFETY: `idx` is a valid stack index; these reads do not allocate or raise, and
        // a string's bytes are copied while it is on the stack.
        unsafe {
            match ffi::lua_type(l, idx) {
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let ptr = ffi::lua_tolstring(l, idx, &mut len);
                    args.push(std::slice::from_raw_parts(ptr.cast::<u8>(), len));
                }
                ffi::LUA_TNUMBER => args.push_number(ffi::lua_tonumber(l, idx)),
                _ => return Err(BAD_CALL_ARG),
            }
        }
    }
    Ok(())
}

/// Pushes the RESP2 reply at `buf[*pos..]` as Redis converts it (`convert`'s table):
/// `:n` a number, `$s` a string, `$-1` false, `*n` an array table, `*-1` false, `+s`
/// `{ok=s}`, `-s` `{err=s}`. False, with something partly pushed, on anything else or past
/// [`MAX_NESTING`]; the caller resets the stack.
///
/// # Safety
/// `l` is a running C function's state, with the memory limit lifted.
unsafe fn push_resp2(l: *mut ffi::lua_State, buf: &[u8], pos: &mut usize, depth: usize) -> bool {
    if depth > MAX_NESTING || unsafe { ffi::lua_checkstack(l, 4) } == 0 {
        return false;
    }
    let Some(&kind) = buf.get(*pos) else {
        return false;
    };
    *pos += 1;
    let Some(head) = convert::line(buf, pos) else {
        return false;
    };
    // SAFETY (each block): pushes onto a stack with room checked above.
    match kind {
        b':' => unsafe { ffi::lua_pushnumber(l, convert::int(head) as f64) },
        b'$' => match convert::bulk(buf, pos, convert::int(head)) {
            Some(data) => unsafe {
                ffi::lua_pushlstring(l, data.as_ptr().cast(), data.len());
            },
            None => unsafe { ffi::lua_pushboolean(l, 0) },
        },
        b'+' | b'-' => unsafe {
            ffi::lua_createtable(l, 0, 1);
            // The keys are the closure's upvalues 3 and 4, interned once.
            let key = if kind == b'+' { 3 } else { 4 };
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(key));
            ffi::lua_pushlstring(l, head.as_ptr().cast(), head.len());
            ffi::lua_rawset(l, -3);
        },
        b'*' => {
            let n = convert::int(head);
            if n < 0 {
                unsafe { ffi::lua_pushboolean(l, 0) };
                return true;
            }
            unsafe { ffi::lua_createtable(l, n.min(i32::MAX as i64) as c_int, 0) };
            for i in 0..n {
                if !unsafe { push_resp2(l, buf, pos, depth + 1) } {
                    return false;
                }
                unsafe { ffi::lua_rawseti(l, -2, i + 1) };
            }
        }
        _ => return false,
    }
    true
}
