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

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use parking_lot::Mutex;

use super::rand48::Rand48;

/// Memory the Lua state may allocate. A safety net for the process: unlike the
/// instruction budget it is not replica-exact (garbage collection timing differs with
/// each replica's history), so it is set far above what scripts need.
pub const LUA_MEMORY_LIMIT: usize = 512 << 20;

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
    /// SCRIPT KILL / FUNCTION KILL stopped this run (see [`super::busy`]).
    pub kill: AtomicBool,
    /// This run has handed its worker's other tasks to another thread
    /// ([`super::busy::step_aside`]).
    pub stepped_aside: AtomicBool,
    /// The group's watch: the kill request, whether the run has written.
    pub watch: Arc<super::busy::ScriptWatch>,
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
    /// While FUNCTION LOAD runs a library: what it registers. `None` otherwise:
    /// `redis.register_function` then fails.
    pub registering: Mutex<Option<Vec<Registration>>>,
    /// `cjson`'s settings (back to the defaults before each script).
    pub cjson: super::cjson::Config,
    /// The state's `Lua` (mlua keeps it at a fixed place for the state's life), found
    /// once by the raw C functions ([`super::call`]).
    pub lua: AtomicPtr<std::ffi::c_void>,
    /// The `hidden` table (set once the state is built), for [`super::call`]'s slow path.
    pub hidden: std::sync::OnceLock<Table>,
    /// How many items the KEYS and ARGV tables in `base` were last filled with by an EVAL,
    /// so the next one with as many may refill them; anything else (FCALL made them, or
    /// none yet) makes new ones ([`super::call`]'s `set_args`).
    pub args_lens: [AtomicUsize; 2],
    /// The watch has this run's name and command ([`super::describe_current`]).
    pub described: AtomicBool,
    /// The run is an EVAL that has not had a status reply yet: the next one may be given
    /// the table the last EVAL had ([`super::call`]'s `push_lent_status`).
    pub status_lendable: AtomicBool,
    /// Runs that set KEYS and ARGV: every [`ARGS_RENEW_EVERY`]th makes new ones.
    pub args_refills: AtomicU64,
    /// The memory limit is lifted for the host's values ([`super::call`]'s `lift`).
    pub lifted: AtomicBool,
}

/// KEYS and ARGV tables are refilled by at most this many runs, then made anew: a script
/// that grew one (written past its items, then cleared) leaves that room to a bounded
/// number of runs only.
pub const ARGS_RENEW_EVERY: u64 = 1024;

/// KEYS or ARGV with more items than this are made anew for each run (refilling checks
/// every item).
pub const ARGS_REFILL_MAX: usize = 64;

/// The Lua state and what the runner needs from it.
pub struct Vm {
    pub lua: Lua,
    pub state: Arc<RunState>,
    /// Calls a function under the error handler: `(ok, result_or_error_table)`.
    pub runner: Function,
    /// Hidden table where a failed `redis.call` leaves its error table (`pending`).
    pub hidden: Table,
    /// What the globals table reads from (every library; KEYS and ARGV): the environment
    /// of scripts that never assign a global ([`Vm::compile`]).
    base: Table,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vm")
    }
}

/// Lua run before the sandbox closes: the error handler, the `redis.call`/`pcall`
/// wrappers, and the read-only globals.
const PRELUDE: &str = r#"
local hidden, redis, libredis = ...
local getinfo, xpcall, type, tostring, rawget, rawset, error, setmetatable, getmetatable, string, pairs, ipairs =
  debug.getinfo, xpcall, type, tostring, rawget, rawset, error, setmetatable, getmetatable, string, pairs, ipairs
local loadstring_ = loadstring
local G = _G
local base = {}

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

-- The runner (a C function: `call.rs`) sets KEYS and ARGV of the run in `base`, then
-- calls the script under this handler.
hidden.handler = handler
-- FCALL: the registered callback called with the run's KEYS and ARGV.
hidden.bind = function(f)
  return function() return f(rawget(base, 'KEYS'), rawget(base, 'ARGV')) end
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
rawset(G, 'pcall', function(...) return pass(pcall_(...)) end)
rawset(G, 'xpcall', function(...) return pass(xpcall_(...)) end)
coroutine.resume = function(...) return pass(resume_(...)) end
-- Text chunks only, as Redis's patched Lua (a binary chunk could break the VM).
local function loadstring(s, name)
  if type(s) == 'string' and string.byte(s, 1) == 27 then
    return nil, 'binary chunks are not allowed'
  end
  return loadstring_(s, name)
end
rawset(G, 'loadstring', loadstring)
rawset(G, 'load', function(reader, name)
  local parts = {}
  while true do
    local piece = reader()
    if piece == nil or piece == '' then break end
    if type(piece) ~= 'string' then return nil, 'reader function must return a string' end
    parts[#parts + 1] = piece
  end
  return loadstring(table.concat(parts), name)
end)

local function readonly_error() error('Attempt to modify a readonly table', 2) end
local function missing(_, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end
local readonly = {}
-- The table functions write with raw access, past a proxy's __newindex: on a read-only
-- table they fail as every other write does (Redis 7's read-only tables). The locals
-- keep the functions' names in their own argument errors.
local insert, remove, sort = table.insert, table.remove, table.sort
local function writable(t)
  if t == G or t == base or readonly[t] then error('Attempt to modify a readonly table', 3) end
end
rawset(table, 'insert', function(t, ...) writable(t) insert(t, ...) end)
rawset(table, 'remove', function(t, ...) writable(t) local v = remove(t, ...) return v end)
rawset(table, 'sort', function(t, ...) writable(t) sort(t, ...) end)
local function protect(t)
  local proxy = setmetatable({}, {__index = t, __newindex = readonly_error, __metatable = false})
  readonly[proxy] = true
  return proxy
end
for _, name in ipairs({'string', 'math', 'table', 'redis', 'bit', 'cjson', 'struct', 'cmsgpack', 'coroutine'}) do
  if rawget(G, name) then rawset(G, name, protect(rawget(G, name))) end
end
-- The metatable of strings is reachable with getmetatable(''): shown read-only.
local string_mt = getmetatable('')
rawset(string_mt, '__metatable', protect(string_mt))
for _, name in ipairs({'debug', 'dofile', 'loadfile', 'print', 'module', 'require', 'newproxy',
                       'setfenv', 'getfenv', 'gcinfo', 'collectgarbage'}) do
  rawset(G, name, nil)
end
rawset(G, 'rawset', function(t, k, v)
  if t == G or t == base or readonly[t] then error('Attempt to modify a readonly table', 2) end
  return rawset(t, k, v)
end)
rawset(G, 'setmetatable', function(t, mt)
  if t == G or t == base or readonly[t] then error('Attempt to modify a readonly table', 2) end
  return setmetatable(t, mt)
end)

-- As Redis 7: the globals table stays empty and read-only, its metatable reads from
-- `base` (every library; KEYS and ARGV) or, while FUNCTION LOAD runs a library, from
-- `libapi` (only `redis.register_function`, `redis.log` and the constants).
local names = {}
for k in pairs(G) do names[#names + 1] = k end
for _, k in ipairs(names) do
  rawset(base, k, rawget(G, k))
  rawset(G, k, nil)
end
rawset(base, '_G', G)
setmetatable(base, {__index = missing, __newindex = readonly_error, __metatable = false})
hidden.base = base
local libapi = {redis = setmetatable({}, {
  __index = function(t, k)
    local v = rawget(libredis, k)
    if v == nil then missing(t, k) end
    return v
  end,
  __newindex = readonly_error, __metatable = false})}
readonly[libapi.redis] = true
setmetatable(libapi, {__index = missing, __newindex = readonly_error, __metatable = false})
local globals_mt = {__index = base, __newindex = readonly_error,
  __metatable = protect({__index = protect(base)})}
setmetatable(G, globals_mt)
hidden.load_env = function(loading)
  rawset(globals_mt, '__index', loading and libapi or base)
end
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
    pub fn new(watch: Arc<super::busy::ScriptWatch>) -> mlua::Result<Vm> {
        // `debug` is loaded for the error handler's `getinfo` and removed from the
        // globals before any script runs (the prelude keeps its own reference).
        let lua = unsafe {
            Lua::unsafe_new_with(
                StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG,
                LuaOptions::default(),
            )
        };
        lua.set_memory_limit(LUA_MEMORY_LIMIT)?;
        let state = Arc::new(RunState {
            watch,
            ..RunState::default()
        });
        let globals = lua.globals();
        let redis = redis_table(&lua, &state)?;
        globals.raw_set("redis", redis.clone())?;
        install_math_random(&lua, &state)?;
        super::libs::install(&lua, &state)?;
        let hidden = lua.create_table()?;
        let stop_state = state.clone();
        hidden.raw_set(
            "stopped",
            lua.create_function(move |_, ()| {
                Ok(stop_state.exhausted.load(Ordering::Relaxed)
                    || stop_state.kill.load(Ordering::Relaxed))
            })?,
        )?;
        let _ = state.hidden.set(hidden.clone());
        redis.raw_set("call", super::call::create(&lua, &state, &hidden, true)?)?;
        redis.raw_set("pcall", super::call::create(&lua, &state, &hidden, false)?)?;
        // What a library sees of `redis` while FUNCTION LOAD runs it.
        let libredis = lua.create_table()?;
        let reg_state = state.clone();
        libredis.raw_set(
            "register_function",
            lua.create_function(move |_, args: mlua::MultiValue| {
                register_function(&reg_state, args)
            })?,
        )?;
        for pair in redis.clone().pairs::<String, Value>() {
            let (k, v) = pair?;
            if k == "log" || k.starts_with("LOG_") || k.starts_with("REDIS_VERSION") {
                libredis.raw_set(k, v)?;
            }
        }
        lua.load(PRELUDE).set_name("=kelvin").call::<()>((
            hidden.clone(),
            redis.clone(),
            libredis,
        ))?;
        let base: Table = hidden.raw_get("base")?;
        let handler: Function = hidden.raw_get("handler")?;
        hidden.raw_set("base", Value::Nil)?;
        hidden.raw_set("handler", Value::Nil)?;
        let runner = super::call::create_runner(&lua, &state, &base, &handler)?;
        let hook_state = state.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_lua, _debug| {
                if !hook_state.described.swap(true, Ordering::Relaxed) {
                    super::describe_current(&hook_state);
                }
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
                let ran = super::INSTRUCTION_BUDGET - left + HOOK_EVERY as i64;
                if ran >= super::busy::STEP_ASIDE_AFTER
                    && !hook_state.stepped_aside.load(Ordering::Relaxed)
                    && super::busy::step_aside()
                {
                    hook_state.stepped_aside.store(true, Ordering::Relaxed);
                }
                if hook_state.watch.killed(ran) {
                    hook_state.kill.store(true, Ordering::Relaxed);
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
            base,
        })
    }

    /// Compiles `code` (a script body after any shebang line) as a function.
    ///
    /// A script that assigns no global (no `SETGLOBAL` in it or in any function it
    /// defines: most scripts) reads its globals straight from `base`, one table lookup
    /// instead of the empty globals table's miss, its metatable and then `base`. It
    /// cannot tell: reads find the same values and fail with the same error, `_G` is
    /// the globals table still, and code it loads gets the globals table. One that
    /// assigns a global keeps the globals table, whose `__newindex` refuses the write
    /// (`base` could not: Lua writes a key that exists without asking `__newindex`).
    pub fn compile(&self, code: &[u8]) -> Result<Function, String> {
        let f = self
            .lua
            .load(code)
            .set_name(SCRIPT_CHUNK)
            .into_function()
            .map_err(|e| match e {
                mlua::Error::SyntaxError { message, .. } => message,
                other => other.to_string(),
            })?;
        if assigns_no_global(&f.dump(false)) == Some(true) {
            f.set_environment(self.base.clone())
                .map_err(|e| e.to_string())?;
        }
        Ok(f)
    }
}

/// Lua 5.1's `OP_SETGLOBAL` (lopcodes.h), in an instruction's low 6 bits.
const OP_SETGLOBAL: u32 = 7;

/// Whether the function of a Lua 5.1 dump (`string.dump`, ldump.c) and every
/// function in it has no `SETGLOBAL` instruction; `None` if the dump is not as expected.
/// A word of code that is not an instruction (`SETLIST`'s extra count) may read as one:
/// then `Some(false)`, which only costs the script the faster lookups.
fn assigns_no_global(dump: &[u8]) -> Option<bool> {
    struct Reader<'a> {
        buf: &'a [u8],
        int: usize,
        size_t: usize,
    }
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, rest) = self.buf.split_at_checked(n)?;
            self.buf = rest;
            Some(head)
        }
        fn uint(&mut self, size: usize) -> Option<usize> {
            let bytes = self.take(size)?;
            let mut le = [0u8; 8];
            le.get_mut(..size)?.copy_from_slice(bytes);
            usize::try_from(u64::from_le_bytes(le)).ok()
        }
        fn string(&mut self) -> Option<()> {
            let len = self.uint(self.size_t)?;
            self.take(len).map(|_| ())
        }
        /// One function (ldump.c's `DumpFunction`); false if it or a nested one has a
        /// `SETGLOBAL`.
        fn function(&mut self, depth: usize) -> Option<bool> {
            if depth > 200 {
                return None;
            }
            self.string()?;
            self.take(2 * self.int + 4)?;
            let code = self.uint(self.int)?;
            let mut clean = true;
            for _ in 0..code {
                let word = self.take(4)?;
                let i = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                clean &= i & 0x3f != OP_SETGLOBAL;
            }
            for _ in 0..self.uint(self.int)? {
                match self.take(1)?[0] {
                    0 => {}
                    1 => {
                        self.take(1)?;
                    }
                    3 => {
                        self.take(8)?;
                    }
                    4 => self.string()?,
                    _ => return None,
                }
            }
            for _ in 0..self.uint(self.int)? {
                clean &= self.function(depth + 1)?;
            }
            // Debug information (Lua 5.1 dumps it always): line numbers, locals (name,
            // first and last instruction), upvalue names.
            let lines = self.uint(self.int)?;
            self.take(lines.checked_mul(self.int)?)?;
            for _ in 0..self.uint(self.int)? {
                self.string()?;
                self.take(2 * self.int)?;
            }
            for _ in 0..self.uint(self.int)? {
                self.string()?;
            }
            Some(clean)
        }
    }
    // "\x1bLua", 5.1, official format, little endian, then the sizes of int, size_t,
    // Instruction and lua_Number, and lua_Number not integral.
    let header = dump.get(..12)?;
    if header[..7] != *b"\x1bLua\x51\x00\x01"
        || header[9] != 4
        || header[10] != 8
        || header[11] != 0
    {
        return None;
    }
    let mut r = Reader {
        buf: &dump[12..],
        int: usize::from(header[7]),
        size_t: usize::from(header[8]),
    };
    if r.int > 8 || r.size_t > 8 {
        return None;
    }
    let clean = r.function(0)?;
    r.buf.is_empty().then_some(clean)
}

/// `redis.error_reply`'s text as Redis makes it (a `-` added if missing, then
/// `luaPushErrorBuff`): the first word is the code, or `ERR` when there is one word only;
/// newlines at the ends are trimmed.
fn error_reply_text(text: &str) -> String {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (code, msg) = body.split_once(' ').unwrap_or(("ERR", body));
    format!("{code} {}", msg.trim_matches(['\r', '\n']))
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
        lua.create_function(|lua, args: mlua::MultiValue| {
            let t = lua.create_table()?;
            let text = match (args.len(), args.front()) {
                (1, Some(Value::String(s))) => error_reply_text(&s.to_string_lossy()),
                _ => "ERR wrong number or type of arguments".to_string(),
            };
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

/// The flags a function may declare, in Redis's order (`scripts_flags_def`): bit `i`
/// of [`Registration::flags`] is `FUNCTION_FLAGS[i]`.
pub const FUNCTION_FLAGS: [&str; 5] = [
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// The `no-writes` bit of [`Registration::flags`].
pub const FLAG_NO_WRITES: u8 = 1;

/// One `redis.register_function` call of a library being loaded.
pub struct Registration {
    pub name: String,
    pub callback: Function,
    pub description: Option<String>,
    pub flags: u8,
}

/// A Lua value as Redis's `luaGetStringSds` reads it: a string or a number.
fn string_arg(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string_lossy()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Number(n) => Some(super::convert::number_arg(*n)),
        _ => None,
    }
}

fn named_args(t: &Table) -> mlua::Result<Registration> {
    let fail = |m: &str| Err(mlua::Error::runtime(m.to_string()));
    let (mut name, mut description, mut callback, mut flags) = (None, None, None, 0u8);
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Some(key) = string_arg(&k) else {
            return fail("named argument key given to redis.register_function is not a string");
        };
        match key.to_ascii_lowercase().as_str() {
            "function_name" => {
                match string_arg(&v) {
                    Some(n) => name = Some(n),
                    None => return fail(
                        "function_name argument given to redis.register_function must be a string",
                    ),
                }
            }
            "description" => {
                match string_arg(&v) {
                    Some(d) => description = Some(d),
                    None => return fail(
                        "description argument given to redis.register_function must be a string",
                    ),
                }
            }
            "callback" => match v {
                Value::Function(f) => callback = Some(f),
                _ => {
                    return fail(
                        "callback argument given to redis.register_function must be a function",
                    )
                }
            },
            "flags" => {
                let Value::Table(list) = v else {
                    return fail("flags argument to redis.register_function must be a table representing function flags");
                };
                for i in 1.. {
                    let flag = match list.raw_get::<Value>(i)? {
                        Value::Nil => break,
                        v => string_arg(&v),
                    };
                    let bit = flag.and_then(|f| {
                        FUNCTION_FLAGS
                            .iter()
                            .position(|known| known.eq_ignore_ascii_case(&f))
                    });
                    match bit {
                        Some(b) => flags |= 1 << b,
                        None => return fail("unknown flag given"),
                    }
                }
            }
            _ => return fail("unknown argument given to redis.register_function"),
        }
    }
    let Some(name) = name else {
        return fail("redis.register_function must get a function name argument");
    };
    let Some(callback) = callback else {
        return fail("redis.register_function must get a callback argument");
    };
    Ok(Registration {
        name,
        callback,
        description,
        flags,
    })
}

/// `redis.register_function(name, callback)` or `redis.register_function{function_name=,
/// callback=, description=, flags={...}}`, during FUNCTION LOAD only; Redis's checks
/// and texts.
fn register_function(state: &RunState, args: mlua::MultiValue) -> mlua::Result<()> {
    let mut guard = state.registering.lock();
    let Some(list) = guard.as_mut() else {
        return Err(mlua::Error::runtime(
            "redis.register_function can only be called on FUNCTION LOAD command",
        ));
    };
    let reg = match args.len() {
        1 => match &args[0] {
            Value::Table(t) => named_args(t)?,
            _ => return Err(mlua::Error::runtime(
                "calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).",
            )),
        },
        2 => {
            let Some(name) = string_arg(&args[0]) else {
                return Err(mlua::Error::runtime(
                    "first argument to redis.register_function must be a string",
                ));
            };
            let Value::Function(callback) = args[1].clone() else {
                return Err(mlua::Error::runtime(
                    "second argument to redis.register_function must be a function",
                ));
            };
            Registration {
                name,
                callback,
                description: None,
                flags: 0,
            }
        }
        _ => {
            return Err(mlua::Error::runtime(
                "wrong number of arguments to redis.register_function",
            ))
        }
    };
    let name = &reg.name;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(mlua::Error::runtime(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    if list.iter().any(|r| r.name == *name) {
        return Err(mlua::Error::runtime(
            "Function already exists in the library",
        ));
    }
    list.push(reg);
    Ok(())
}

#[cfg(test)]
mod dump_tests {
    use super::*;

    fn clean(code: &str) -> Option<bool> {
        let lua = Lua::new();
        let f = lua.load(code).into_function().unwrap();
        assigns_no_global(&f.dump(false))
    }

    #[test]
    fn global_assignments_are_found_in_every_function() {
        assert_eq!(clean("local x = 1 return x"), Some(true));
        assert_eq!(
            clean("local t = {1, 2, 'a', true, nil, 1.5} return function() return t end"),
            Some(true)
        );
        assert_eq!(clean("x = 1"), Some(false));
        assert_eq!(clean("local function f() y = 2 end return f"), Some(false));
        assert_eq!(
            clean("return function() return function() z = 3 end end"),
            Some(false)
        );
        assert_eq!(clean("function g() end"), Some(false));
        assert_eq!(
            clean("local t = {} function t.f() end return t"),
            Some(true)
        );
        assert_eq!(assigns_no_global(b"\x1bLua\x51"), None);
    }
}
