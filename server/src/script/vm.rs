//! The Lua 5.1 state scripts run in: sandboxed, bounded, and the same on every replica.
//!
//! How it fits: one [`Vm`] per group's store, created on the first script. It loads
//! only the base, table, string and math libraries (no `os`, `io`, `loadfile`,
//! `dofile`, `loadstring`, `print`), replaces `math.random` with Redis's generator
//! ([`super::rand48`]), makes the globals and the library tables read-only (as Redis 7:
//! `x = 1` fails with "Attempt to modify a readonly table", reading an unknown global
//! with "Script attempted to access nonexistent global variable"), bounds its memory
//! ([`LUA_MEMORY_LIMIT`]) and counts instructions with a hook ([`HOOK_EVERY`]), which
//! stops a script past its budget ([`super::INSTRUCTION_BUDGET`]).
//!
//! `redis.call` and `redis.pcall` are native functions that act on the run in progress
//! ([`super::call_current`]), so they reach that run's store. Native, as in Redis, so
//! `return redis.call(...)` keeps the script's frame (a Lua tail call would drop it) and
//! errors name the script's line. A failed `redis.call` leaves Redis's `{err=...}` table
//! in `hidden.pending` and raises; the message handler and the `pcall` wrappers take the
//! table from there.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use parking_lot::Mutex;

use super::rand48::Rand48;

/// Memory the Lua state may allocate. A safety net for the process: unlike the
/// instruction budget it is not replica-exact (garbage collection timing differs with
/// each replica's history), so it is set far above what scripts need.
pub const LUA_MEMORY_LIMIT: usize = 512 << 20;

/// Runs `f` (host code building Lua values) with the memory limit lifted: with a limit
/// set, mlua wraps every value it creates in a protected call, which costs more than
/// the value. The limit is for what scripts allocate; it is back before Lua runs again.
pub fn unbounded<R>(lua: &Lua, f: impl FnOnce() -> R) -> R {
    let _ = lua.set_memory_limit(0);
    let r = f();
    let _ = lua.set_memory_limit(LUA_MEMORY_LIMIT);
    r
}

/// The instruction hook runs every this many Lua VM instructions.
pub const HOOK_EVERY: u32 = 10_000;

/// The chunk name scripts compile under: errors read `user_script:<line>: ...`.
pub const SCRIPT_CHUNK: &str = "@user_script";

/// What the host functions of one run share with the runner (the hook and the
/// `redis.*`/`math.*` functions are `'static`, so they hold it by `Arc`).
#[derive(Default)]
pub struct RunState {
    /// Instructions left in this run's budget.
    pub budget: AtomicI64,
    /// Set by the hook once the budget is spent.
    pub exhausted: AtomicBool,
    /// SCRIPT KILL asked to stop the running (read-only) script.
    pub kill: AtomicBool,
    /// `redis.setresp(3)` was called: `redis.call` replies are parsed as RESP3.
    pub resp3: AtomicBool,
    /// `math.random`'s generator.
    pub rand: Mutex<Option<Rand48>>,
    /// Instructions run in total (INFO).
    pub instructions: AtomicU64,
    /// The run in progress (a `super::Run`), for `redis.call`; null between runs.
    pub current: AtomicPtr<()>,
    /// A failed `redis.call` left its error table in `hidden.pending`.
    pub pending: AtomicBool,
    /// While FUNCTION LOAD runs a library: what it registers (name, callback,
    /// `no-writes`). `None` otherwise: `redis.register_function` then fails.
    pub registering: Mutex<Option<Vec<(String, Function, bool)>>>,
}

/// The Lua state and what the runner needs from it.
pub struct Vm {
    pub lua: Lua,
    pub state: Arc<RunState>,
    /// Calls a function under the error handler: `(ok, result_or_error_table)`.
    pub runner: Function,
    /// Hidden table where a failed `redis.call` leaves its error table (`pending`).
    pub hidden: Table,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vm")
    }
}

/// Lua run before the sandbox closes: the error handler, the `redis.call`/`pcall`
/// wrappers, and the read-only globals.
const PRELUDE: &str = r#"
local hidden, redis = ...
local getinfo, xpcall, type, tostring, rawget, rawset, error, setmetatable, string =
  debug.getinfo, xpcall, type, tostring, rawget, rawset, error, setmetatable, string

local function handler(err)
  local source, line = '@user_script', 0
  for level = 2, 64 do
    local i = getinfo(level, 'Sl')
    if not i then break end
    if i.source == '@user_script' or i.source == '@user_function' then
      source = i.source
      line = i.currentline
      break
    end
  end
  local pending = rawget(hidden, 'pending')
  if pending then
    rawset(hidden, 'pending', nil)
    err = pending
  end
  local msg
  if type(err) == 'table' then
    msg = rawget(err, 'err')
    if type(msg) ~= 'string' then msg = 'ERR unknown error' end
  elseif type(err) == 'userdata' then
    -- An error raised by a native library function: its message, placed at the
    -- script's line as Lua places errors of C functions.
    local text = tostring(err)
    text = string.match(text, '^[^\n]*') or text
    text = string.gsub(text, '^runtime error: ', '')
    msg = 'ERR ' .. string.sub(source, 2) .. ':' .. tostring(line) .. ': ' .. text
  else
    msg = 'ERR ' .. tostring(err)
  end
  return {err = msg, source = source, line = line}
end

local runner = function(f) return xpcall(f, handler) end
-- FCALL: the registered callback called with the run's KEYS and ARGV.
hidden.bind = function(f)
  return function() return f(rawget(_G, 'KEYS'), rawget(_G, 'ARGV')) end
end

-- A script stopped by its budget must not catch that error and go on: once stopped,
-- every protected call re-raises on return.
local stopped, pcall_, xpcall_, resume_ = hidden.stopped, pcall, xpcall, coroutine.resume
local function pass(ok, ...)
  if stopped() then error('script stopped', 0) end
  if not ok then
    -- A failed redis.call raised a marker; its {err=...} table waits here.
    local pending = rawget(hidden, 'pending')
    if pending then
      rawset(hidden, 'pending', nil)
      return false, pending
    end
  end
  return ok, ...
end
rawset(_G, 'pcall', function(...) return pass(pcall_(...)) end)
rawset(_G, 'xpcall', function(...) return pass(xpcall_(...)) end)
coroutine.resume = function(...) return pass(resume_(...)) end

local function readonly_error() error('Attempt to modify a readonly table', 2) end
local readonly = {}
local function protect(t)
  local proxy = setmetatable({}, {__index = t, __newindex = readonly_error, __metatable = false})
  readonly[proxy] = true
  return proxy
end
for _, name in ipairs({'string', 'math', 'table', 'redis', 'bit', 'cjson', 'struct', 'cmsgpack', 'coroutine'}) do
  if rawget(_G, name) then rawset(_G, name, protect(rawget(_G, name))) end
end
rawset(_G, 'rawset', function(t, k, v)
  if t == _G or readonly[t] then error('Attempt to modify a readonly table', 0) end
  return rawset(t, k, v)
end)
for _, name in ipairs({'debug', 'loadstring', 'load', 'dofile', 'loadfile', 'print', 'module', 'require', 'newproxy', 'gcinfo', 'collectgarbage'}) do
  rawset(_G, name, nil)
end
setmetatable(_G, {
  __index = function(_, k)
    error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
  end,
  __newindex = readonly_error,
  __metatable = false,
})
return runner
"#;

fn sha1hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// The SHA1 of a script body in lower-case hex, as SCRIPT LOAD answers.
pub fn script_sha(body: &[u8]) -> String {
    sha1hex(body)
}

impl Vm {
    /// A fresh sandboxed state. Fails only if Lua cannot allocate its first state.
    pub fn new() -> mlua::Result<Vm> {
        // `debug` is loaded for the error handler's `getinfo` and removed from the
        // globals before any script runs (the prelude keeps its own reference).
        let lua = unsafe {
            Lua::unsafe_new_with(
                StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG,
                LuaOptions::default(),
            )
        };
        lua.set_memory_limit(LUA_MEMORY_LIMIT)?;
        let state = Arc::new(RunState::default());
        let globals = lua.globals();
        let redis = redis_table(&lua, &state)?;
        globals.raw_set("redis", redis.clone())?;
        install_math_random(&lua, &state)?;
        super::libs::install(&lua)?;
        let hidden = lua.create_table()?;
        let stop_state = state.clone();
        hidden.raw_set(
            "stopped",
            lua.create_function(move |_, ()| {
                Ok(stop_state.exhausted.load(Ordering::Relaxed)
                    || stop_state.kill.load(Ordering::Relaxed))
            })?,
        )?;
        let call_state = state.clone();
        let call_hidden = hidden.clone();
        redis.raw_set(
            "call",
            lua.create_function(move |lua, args: mlua::MultiValue| {
                let (ok, value) = super::call_current(&call_state, lua, args);
                if ok {
                    return Ok(value);
                }
                // Raise, leaving Redis's error table for the handler and `pcall`.
                call_hidden.raw_set("pending", value)?;
                call_state.pending.store(true, Ordering::Relaxed);
                Err(mlua::Error::runtime("redis.call failed"))
            })?,
        )?;
        let pcall_state = state.clone();
        redis.raw_set(
            "pcall",
            lua.create_function(move |lua, args: mlua::MultiValue| {
                Ok(super::call_current(&pcall_state, lua, args).1)
            })?,
        )?;
        let reg_state = state.clone();
        redis.raw_set(
            "register_function",
            lua.create_function(move |_, args: mlua::MultiValue| {
                register_function(&reg_state, args)
            })?,
        )?;
        let runner: Function = lua
            .load(PRELUDE)
            .set_name("=kelvin")
            .call((hidden.clone(), redis.clone()))?;
        let hook_state = state.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_lua, _debug| {
                hook_state
                    .instructions
                    .fetch_add(HOOK_EVERY as u64, Ordering::Relaxed);
                let left = hook_state
                    .budget
                    .fetch_sub(HOOK_EVERY as i64, Ordering::Relaxed);
                if left <= HOOK_EVERY as i64 {
                    hook_state.exhausted.store(true, Ordering::Relaxed);
                    return Err(mlua::Error::runtime("script instruction budget exhausted"));
                }
                if hook_state.kill.load(Ordering::Relaxed) {
                    return Err(mlua::Error::runtime(
                        "Script killed by user with SCRIPT KILL...",
                    ));
                }
                Ok(VmState::Continue)
            },
        )?;
        Ok(Vm {
            lua,
            state,
            runner,
            hidden,
        })
    }

    /// Compiles `code` (a script body after any shebang line) as a function.
    pub fn compile(&self, code: &[u8]) -> Result<Function, String> {
        self.lua
            .load(code)
            .set_name(SCRIPT_CHUNK)
            .into_function()
            .map_err(|e| match e {
                mlua::Error::SyntaxError { message, .. } => message,
                other => other.to_string(),
            })
    }
}

/// The static part of the `redis` table.
fn redis_table(lua: &Lua, state: &Arc<RunState>) -> mlua::Result<Table> {
    let redis = lua.create_table()?;
    redis.raw_set(
        "sha1hex",
        lua.create_function(|lua, v: Value| {
            let s = match lua.coerce_string(v)? {
                Some(s) => s,
                None => return Err(mlua::Error::runtime("wrong number of arguments")),
            };
            Ok(sha1hex(&s.as_bytes()))
        })?,
    )?;
    redis.raw_set(
        "error_reply",
        lua.create_function(|lua, msg: mlua::String| {
            let t = lua.create_table()?;
            let text = msg.to_string_lossy();
            let text = text.strip_prefix('-').unwrap_or(&text).to_string();
            t.raw_set("err", text)?;
            Ok(t)
        })?,
    )?;
    redis.raw_set(
        "status_reply",
        lua.create_function(|lua, msg: mlua::String| {
            let t = lua.create_table()?;
            t.raw_set("ok", msg)?;
            Ok(t)
        })?,
    )?;
    let resp_state = state.clone();
    redis.raw_set(
        "setresp",
        lua.create_function(move |_, v: i64| match v {
            2 | 3 => {
                resp_state.resp3.store(v == 3, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(mlua::Error::runtime("RESP version must be 2 or 3.")),
        })?,
    )?;
    redis.raw_set(
        "log",
        lua.create_function(|_, (level, msg): (i64, mlua::String)| {
            tracing::info!(level, message = %msg.to_string_lossy(), "script log");
            Ok(())
        })?,
    )?;
    // Replication is by the script itself, on every replica: these only validate.
    redis.raw_set(
        "set_repl",
        lua.create_function(|_, flags: i64| match flags {
            0..=3 => Ok(()),
            _ => Err(mlua::Error::runtime(
                "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
            )),
        })?,
    )?;
    redis.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    redis.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    redis.raw_set(
        "debug",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    for (name, v) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        redis.raw_set(name, v)?;
    }
    redis.raw_set("REDIS_VERSION", crate::cmd::connection::REDIS_VERSION)?;
    redis.raw_set("REDIS_VERSION_NUM", redis_version_num())?;
    Ok(redis)
}

/// `REDIS_VERSION_NUM`: `0x00MMmmpp` of the version INFO reports.
fn redis_version_num() -> i64 {
    crate::cmd::connection::REDIS_VERSION
        .split('.')
        .take(3)
        .fold(0, |acc, p| acc << 8 | p.parse::<i64>().unwrap_or(0))
}

/// `math.random` and `math.randomseed` on Redis's generator (Lua 5.1's own use C's
/// `rand`, which differs between machines).
fn install_math_random(lua: &Lua, state: &Arc<RunState>) -> mlua::Result<()> {
    let math: Table = lua.globals().raw_get("math")?;
    let st = state.clone();
    math.raw_set(
        "random",
        lua.create_function(move |_, args: mlua::Variadic<f64>| {
            let mut guard = st.rand.lock();
            let r = guard.get_or_insert_with(|| Rand48::seeded(0)).next_f64();
            match args.len() {
                0 => Ok(r),
                1 => {
                    let u = args[0].floor();
                    if u < 1.0 {
                        return Err(mlua::Error::runtime(
                            "bad argument #1 to 'random' (interval is empty)",
                        ));
                    }
                    Ok((r * u).floor() + 1.0)
                }
                2 => {
                    let (l, u) = (args[0].floor(), args[1].floor());
                    if l > u {
                        return Err(mlua::Error::runtime(
                            "bad argument #2 to 'random' (interval is empty)",
                        ));
                    }
                    Ok((r * (u - l + 1.0)).floor() + l)
                }
                _ => Err(mlua::Error::runtime("wrong number of arguments")),
            }
        })?,
    )?;
    let st = state.clone();
    math.raw_set(
        "randomseed",
        lua.create_function(move |_, seed: f64| {
            *st.rand.lock() = Some(Rand48::seeded(seed as i64 as i32));
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `redis.register_function(name, callback)` or `redis.register_function{function_name=,
/// callback=, flags={...}}`, during FUNCTION LOAD only.
fn register_function(state: &RunState, args: mlua::MultiValue) -> mlua::Result<()> {
    let mut args = args.into_iter();
    let (name, callback, no_writes) = match (args.next(), args.next()) {
        (Some(Value::Table(t)), None) => {
            let name: mlua::String = t.raw_get("function_name").map_err(|_| {
                mlua::Error::runtime(
                    "function_name argument given to redis.register_function must be a string",
                )
            })?;
            let callback: Function = t.raw_get("callback").map_err(|_| {
                mlua::Error::runtime(
                    "callback argument given to redis.register_function must be a function",
                )
            })?;
            let mut no_writes = false;
            if let Ok(flags) = t.raw_get::<Table>("flags") {
                for flag in flags.sequence_values::<mlua::String>() {
                    match &*flag?.to_string_lossy() {
                        "no-writes" => no_writes = true,
                        "allow-oom" | "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                        _ => return Err(mlua::Error::runtime("unknown flag given")),
                    }
                }
            }
            (name.to_string_lossy(), callback, no_writes)
        }
        (Some(Value::String(name)), Some(Value::Function(f))) => (name.to_string_lossy(), f, false),
        _ => {
            return Err(mlua::Error::runtime(
                "wrong number of arguments to redis.register_function",
            ))
        }
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(mlua::Error::runtime(
            "Function names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    match state.registering.lock().as_mut() {
        Some(list) => {
            if list.iter().any(|(n, _, _)| *n == name) {
                return Err(mlua::Error::runtime(
                    "Function already exists in the library",
                ));
            }
            list.push((name, callback, no_writes));
            Ok(())
        }
        None => Err(mlua::Error::runtime(
            "redis.register_function can only be called on FUNCTION LOAD command",
        )),
    }
}
