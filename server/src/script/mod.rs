//! Lua scripting: EVAL, EVALSHA, SCRIPT, run the same way on every replica.
//!
//! How it fits: EVAL and EVALSHA are data commands that go through the Raft log like any
//! write, so a script runs at apply time on every replica of its group, under the store
//! lock, atomically to other clients. Everything a script can observe is a function of
//! the log: the store, its arguments, the entry's time (`TIME` inside a script answers
//! the entry's `now_ms`), `math.random` (Redis's generator, reseeded with 0 before each
//! script), and which scripts are loaded ([`Scripts`] lives in the [`Store`]: EVAL and
//! SCRIPT LOAD add bodies at apply time, SCRIPT FLUSH clears them, and snapshots carry
//! them). A script that runs past [`INSTRUCTION_BUDGET`] Lua instructions (counted by a
//! hook, so every replica stops at the same instruction) or past the Lua memory bound is
//! stopped and its writes are undone ([`undo::UndoLog`]): all or nothing.
//!
//! EVAL_RO/EVALSHA_RO (and scripts whose shebang says `no-writes`) refuse writes, so the
//! read-only variants are served like other reads, under the leader's lease.

pub mod busy;
mod call;
mod cjson;
mod cmsgpack;
mod convert;
pub mod functions;
mod libs;
mod lstruct;
mod rand48;
mod undo;
mod vm;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;
use kelvin_protocol::{ReplyWriter, RespVersion};
use mlua::{Lua, Value};

use crate::cmd::{self, flags, CmdError, CmdResult, Exec, Handler};
pub use vm::script_sha;
use vm::Vm;

/// Lua VM instructions one script may run. Counted by the instruction hook, so every
/// replica stops a script at the same point (a wall-clock limit could stop it at a
/// different point on each). One to 25 seconds of Lua on a current core, depending on
/// the instructions (Redis has no such bound; meanwhile clients get BUSY and a script
/// that has not written can be killed: [`busy`]).
pub const INSTRUCTION_BUDGET: i64 = 500_000_000;

/// What one `redis.call`/`redis.pcall` counts for in the instruction budget: about what
/// Lua runs in the time a command takes (a `redis.call('ping')` loop then reaches the
/// kill fence about as soon as a bare loop does).
pub const CALL_INSTRUCTIONS: i64 = 100;

/// The loaded scripts of a group's store (the replicated state) and its Lua state (a
/// cache of it, created on first use).
#[derive(Default)]
pub struct Scripts {
    /// Body by lower-case hex SHA1.
    bodies: HashMap<String, Arc<[u8]>>,
    vm: Option<Vm>,
    /// Compiled scripts by SHA1 (a cache of `bodies` in `vm`, and of the scripts EVAL_RO
    /// ran without adding them).
    compiled: HashMap<String, Compiled>,
    /// FUNCTION libraries by name: their code (the replicated state) and the names and
    /// flags of the functions they registered.
    libraries: std::collections::BTreeMap<String, functions::Library>,
    /// Registered functions by name: library, callback (in `vm`), `no-writes`.
    functions: HashMap<String, functions::Registered>,
    /// The running script as connections see it (BUSY, KILL): shared with the group's
    /// handle, kept for the store's life.
    pub watch: Arc<busy::ScriptWatch>,
    /// What runs write into, kept between runs (taken out during a run).
    buffers: Option<CallBuffers>,
}

/// A compiled script: what EVALSHA needs, found with one lookup.
struct Compiled {
    function: mlua::Function,
    flags: ScriptFlags,
    /// Its body is in `bodies` (EVALSHA may run it).
    loaded: bool,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scripts({} loaded)", self.bodies.len())
    }
}

impl Scripts {
    /// Loaded scripts, for snapshots: (sha, body).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.bodies.iter().map(|(k, v)| (k.as_str(), &v[..]))
    }

    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// Adds a body (from a snapshot, or EVAL / SCRIPT LOAD). Returns its SHA1.
    pub fn insert(&mut self, body: &[u8]) -> String {
        let sha = script_sha(body);
        if let Some(c) = self.compiled.get_mut(&sha) {
            c.loaded = true;
        }
        self.bodies
            .entry(sha.clone())
            .or_insert_with(|| Arc::from(body));
        sha
    }

    pub fn contains(&self, sha: &str) -> bool {
        self.bodies.contains_key(sha)
    }

    /// SCRIPT FLUSH: drops every script (functions stay).
    pub fn clear_scripts(&mut self) {
        self.bodies.clear();
        self.compiled.clear();
    }

    /// Drops every script, library and the Lua state (before a snapshot is installed).
    pub fn clear(&mut self) {
        self.bodies.clear();
        self.compiled.clear();
        self.libraries.clear();
        self.functions.clear();
        self.vm = None;
        self.functions_changed();
    }

    /// Lua instructions run so far by this store's scripts.
    pub fn instructions(&self) -> u64 {
        self.vm
            .as_ref()
            .map_or(0, |vm| vm.state.instructions.load(Ordering::Relaxed))
    }

    /// Tells the watch how many libraries and functions are loaded (FUNCTION STATS
    /// answered while a script runs).
    fn functions_changed(&self) {
        let functions: usize = self.libraries.values().map(|l| l.functions.len()).sum();
        self.watch
            .libraries
            .store(self.libraries.len(), Ordering::Relaxed);
        self.watch.functions.store(functions, Ordering::Relaxed);
    }

    fn vm(&mut self) -> Result<&mut Vm, CmdError> {
        if self.vm.is_none() {
            let vm = Vm::new(self.watch.clone())
                .map_err(|e| CmdError::err(format!("Lua state: {e}")))?;
            // Functions compiled in an earlier state (one lost to a panic mid-run) do not
            // belong to this one.
            self.compiled.clear();
            self.functions.clear();
            self.vm = Some(vm);
        }
        // Set just above if it was missing.
        self.vm
            .as_mut()
            .ok_or_else(|| CmdError::err("Lua state unavailable"))
    }
}

/// Flags a script may declare in its `#!lua flags=...` shebang.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptFlags {
    pub no_writes: bool,
    pub allow_cross_slot: bool,
}

/// Splits a body into its shebang flags and the code to compile (from the end of the
/// shebang line, so line numbers stay those of the body). Without a shebang, the whole
/// body with default flags.
pub fn parse_shebang(body: &[u8]) -> Result<(ScriptFlags, &[u8]), CmdError> {
    if !body.starts_with(b"#!") {
        return Ok((ScriptFlags::default(), body));
    }
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or("");
    if engine != "#!lua" {
        return Err(CmdError::err(format!(
            "Unexpected engine in script shebang: {engine}"
        )));
    }
    let mut flags = ScriptFlags::default();
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(CmdError::err(format!("Unknown lua shebang option: {part}")));
        };
        for flag in list.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => flags.no_writes = true,
                "allow-cross-slot-keys" => flags.allow_cross_slot = true,
                "allow-oom" | "allow-stale" | "no-cluster" => {}
                other => {
                    return Err(CmdError::err(format!(
                        "Unexpected flag in script shebang: {other}"
                    )))
                }
            }
        }
    }
    Ok((flags, &body[end..]))
}

/// Compiles `body` into the store's Lua state under `sha` (cached). The error is Redis's
/// `Error compiling script` text.
fn compile(store: &mut crate::store::Store, sha: &str, body: &[u8]) -> Result<(), CmdError> {
    if store.scripts.compiled.contains_key(sha) {
        return Ok(());
    }
    let (flags, code) = parse_shebang(body)?;
    let vm = store.scripts.vm()?;
    let function = vm
        .compile(code)
        .map_err(|msg| CmdError::err(format!("Error compiling script (new function): {msg}")))?;
    let loaded = store.scripts.bodies.contains_key(sha);
    store.scripts.compiled.insert(
        sha.to_string(),
        Compiled {
            function,
            flags,
            loaded,
        },
    );
    Ok(())
}

/// SCRIPT LOAD: checks and compiles the body, adds it. Returns its SHA1.
pub fn load(store: &mut crate::store::Store, body: &[u8]) -> Result<String, CmdError> {
    let sha = script_sha(body);
    compile(store, &sha, body)?;
    store.scripts.insert(body);
    Ok(sha)
}

/// What to run: a body (EVAL) or a SHA1 (EVALSHA).
pub enum Source<'a> {
    Body(&'a [u8]),
    Sha(&'a [u8]),
}

/// EVAL / EVALSHA / EVAL_RO / EVALSHA_RO: `argv` is `[name, script|sha, numkeys,
/// keys..., args...]`. `read_only` for the `_RO` variants. The reply goes to `ex.out`.
pub fn eval(ex: &mut Exec<'_>, argv: &[Bytes], by_sha: bool, read_only: bool) -> CmdResult {
    let numkeys = cmd::int_arg(&argv[2])?;
    if numkeys < 0 {
        return Err(CmdError::err("Number of keys can't be negative"));
    }
    let numkeys = numkeys as usize;
    if numkeys > argv.len() - 3 {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let keys = &argv[3..3 + numkeys];
    let args = &argv[3 + numkeys..];
    let source = match by_sha {
        true => Source::Sha(&argv[1]),
        false => Source::Body(&argv[1]),
    };
    run(ex, source, keys, args, read_only, argv)
}

const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

fn run(
    ex: &mut Exec<'_>,
    source: Source<'_>,
    keys: &[Bytes],
    args: &[Bytes],
    read_only: bool,
    command: &[Bytes],
) -> CmdResult {
    let (sha, body): (std::borrow::Cow<'_, str>, Option<&[u8]>) = match source {
        Source::Body(body) => (script_sha(body).into(), Some(body)),
        Source::Sha(sha) => {
            // Clients send the SHA1 as SCRIPT LOAD gave it: lower case, no copy needed.
            let sha: std::borrow::Cow<'_, str> = match std::str::from_utf8(sha) {
                Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => s.into(),
                _ => String::from_utf8_lossy(sha).to_ascii_lowercase().into(),
            };
            (sha, None)
        }
    };
    // EVALSHA runs only a loaded script (one EVAL_RO compiled is not, unless loaded).
    let cached = |scripts: &Scripts| {
        let c = scripts.compiled.get(&*sha)?;
        (c.loaded || body.is_some()).then(|| (c.function.clone(), c.flags))
    };
    let (function, script_flags) = match cached(&ex.store.scripts) {
        Some(found) => found,
        None => {
            let code: Arc<[u8]> = match body {
                Some(body) => Arc::from(body),
                None => ex
                    .store
                    .scripts
                    .bodies
                    .get(&*sha)
                    .cloned()
                    .ok_or(CmdError::raw(NOSCRIPT))?,
            };
            compile(ex.store, &sha, &code)?;
            cached(&ex.store.scripts).ok_or(CmdError::raw(NOSCRIPT))?
        }
    };
    // EVAL adds its script to the cache, as Redis does; the read-only variants may run
    // outside the log (on the leader's lease), so they leave the replicated cache alone.
    if let (false, Some(body)) = (read_only, body) {
        ex.store.scripts.insert(body);
    }
    execute(
        ex,
        Running {
            name: &sha,
            is_eval: true,
            command,
        },
        function,
        keys,
        args,
        read_only || script_flags.no_writes,
    )
}

/// The script about to run, as FUNCTION STATS and the errors name it.
pub struct Running<'a> {
    /// SHA1 of a script, or function name.
    pub name: &'a str,
    /// EVAL and friends (SCRIPT KILL stops them), or FCALL (FUNCTION KILL).
    pub is_eval: bool,
    /// The whole command.
    pub command: &'a [Bytes],
}

/// Runs a compiled script or a bound function (`name` names it in errors) and writes
/// its reply; a run stopped by its budget or the memory bound leaves no writes.
fn execute(
    ex: &mut Exec<'_>,
    running: Running<'_>,
    function: mlua::Function,
    keys: &[Bytes],
    args: &[Bytes],
    read_only: bool,
) -> CmdResult {
    let sha = running.name;
    let events_mark = ex.events.len();
    // The state is taken out of the store for the run (and put back after), so the run
    // can borrow the store mutably; nothing a script calls reaches it meanwhile (SCRIPT,
    // FUNCTION and EVAL are not allowed from scripts).
    ex.store.scripts.vm()?;
    let Some(vm) = ex.store.scripts.vm.take() else {
        return Err(CmdError::raw(NOSCRIPT));
    };
    let watch = ex.store.scripts.watch.clone();
    watch.start(running.is_eval, read_only);
    let outcome = run_in(ex, &vm, function, &running, keys, args, read_only);
    watch.finish();
    ex.store.scripts.vm = Some(vm);
    let (outcome, mut bufs, exhausted, killed) = outcome;
    let stopped = match &outcome {
        _ if exhausted => Some(format!(
            "ERR Script exceeded its budget of {INSTRUCTION_BUDGET} instructions and was stopped; none of its writes were applied. script: {sha}"
        )),
        _ if killed => Some("ERR Script killed by user with SCRIPT KILL...".to_string()),
        Err(mlua::Error::MemoryError(_)) => Some(format!(
            "ERR Script exceeded the Lua memory limit and was stopped; none of its writes were applied. script: {sha}"
        )),
        Err(e) => Some(format!("ERR Error running script: {}", convert::one_line(&e.to_string()))),
        // Lua 5.1's xpcall hands back the bare message, without the handler, when
        // allocation fails.
        Ok(Err(Value::String(s))) if s.as_bytes().starts_with(b"not enough memory") => Some(format!(
            "ERR Script exceeded the Lua memory limit and was stopped; none of its writes were applied. script: {sha}"
        )),
        Ok(_) => None,
    };
    if let Some(err) = stopped {
        bufs.undo.undo(ex.store);
        bufs.end_run();
        ex.store.scripts.buffers = Some(bufs);
        ex.events.truncate(events_mark);
        return Err(CmdError::raw(err));
    }
    bufs.end_run();
    ex.store.scripts.buffers = Some(bufs);
    match outcome {
        // An error table returned by the script is the command's error reply (counted
        // in errorstats and as a failed call, as Redis does).
        Ok(Ok(Value::Table(t))) if matches!(t.raw_get::<Value>("err"), Ok(Value::String(_))) => {
            let text: String = t.raw_get("err").unwrap_or_default();
            let text = convert::one_line(&text);
            Err(CmdError::raw(
                text.strip_prefix('-').unwrap_or(&text).to_string(),
            ))
        }
        Ok(Ok(value)) => {
            let script_resp3 = ex
                .store
                .scripts
                .vm
                .as_ref()
                .is_some_and(|vm| vm.state.resp3.load(Ordering::Relaxed));
            convert::lua_to_reply(&value, ex.out, 0, script_resp3);
            Ok(())
        }
        Ok(Err(Value::Table(t))) => {
            let msg: String = t
                .raw_get("err")
                .unwrap_or_else(|_| "ERR unknown error".into());
            let source: String = t.raw_get("source").unwrap_or_default();
            let line: i64 = t.raw_get("line").unwrap_or(0);
            let msg = convert::one_line(&msg);
            Err(CmdError::raw(format!(
                "{} script: {sha}, on {source}:{line}.",
                msg.strip_prefix('-').unwrap_or(&msg)
            )))
        }
        _ => Err(CmdError::err("Error running script: unknown error")),
    }
}

/// How a run ended: the script's result (or error table), its buffers (the undo log),
/// and whether
/// the budget or SCRIPT KILL stopped it.
type Outcome = (mlua::Result<Result<Value, Value>>, CallBuffers, bool, bool);

/// One script run in progress: what `redis.call` acts on (see [`call_current`]).
struct Run<'e, 'a> {
    ctx: CallCtx,
    ex: &'e mut Exec<'a>,
    /// KEYS and ARGV, which the runner sets before the script starts
    /// ([`call::set_args`]).
    keys: &'e [Bytes],
    args: &'e [Bytes],
    /// EVAL and friends: the KEYS and ARGV tables of the last EVAL may be refilled
    /// (nothing of a script outlives its run). Not for FCALL: a library's functions may
    /// keep their `keys` and `args` in upvalues.
    reuse_args: bool,
    /// The script's name and command, for FUNCTION STATS ([`describe_current`]).
    name: &'e str,
    command: &'e [Bytes],
}

/// Runs `function` with KEYS/ARGV set (by the runner, from the `Run`), `redis.call`
/// pointed at `ex`.
fn run_in(
    ex: &mut Exec<'_>,
    vm: &Vm,
    function: mlua::Function,
    running: &Running<'_>,
    keys: &[Bytes],
    args: &[Bytes],
    read_only: bool,
) -> Outcome {
    let state = &vm.state;
    state.budget.store(INSTRUCTION_BUDGET, Ordering::Relaxed);
    state.exhausted.store(false, Ordering::Relaxed);
    state.kill.store(false, Ordering::Relaxed);
    state.stepped_aside.store(false, Ordering::Relaxed);
    state.resp3.store(false, Ordering::Relaxed);
    state.described.store(false, Ordering::Relaxed);
    state
        .status_lendable
        .store(running.is_eval, Ordering::Relaxed);
    *state.cjson.lock() = cjson::Settings::default();
    // A seed from the log entry's rng: the same on every replica, new for each script.
    *state.rand.lock() = Some(rand48::Rand48::seeded(rand::Rng::gen(ex.store.rng.get())));
    let db = ex.db;
    let mut run = Run {
        ctx: CallCtx {
            read_only,
            bufs: ex.store.scripts.buffers.take().unwrap_or_default(),
            state: vm.state.clone(),
        },
        ex: &mut *ex,
        keys,
        args,
        reuse_args: running.is_eval,
        name: running.name,
        command: running.command,
    };
    state
        .current
        .store(&mut run as *mut Run<'_, '_> as *mut (), Ordering::Release);
    let result: mlua::Result<(bool, Value)> = vm.runner.call(function);
    state.current.store(std::ptr::null_mut(), Ordering::Release);
    if state.pending.swap(false, Ordering::Relaxed) {
        let _ = vm.hidden.raw_set("pending", Value::Nil);
    }
    let Run { ctx, ex, .. } = run;
    ex.db = db;
    let outcome = result.map(|(ok, value)| match ok {
        true => Ok(value),
        false => Err(value),
    });
    (
        outcome,
        ctx.bufs,
        state.exhausted.load(Ordering::Relaxed),
        state.kill.swap(false, Ordering::Relaxed),
    )
}

/// What a `redis.call` gave: a RESP2 reply that is not an error, to push as it is
/// (the run's scratch buffer, valid until the next call), or a Lua value: `(true,
/// reply)` or `(false, {err=...})`.
pub(crate) enum Called {
    Resp2(*const [u8]),
    Value(bool, Value),
}

/// KEYS and ARGV of the script about to run, and whether their tables may be refilled
/// (see `Run::reuse_args`), for the runner ([`call::set_args`]); `None` outside a run
/// (FUNCTION LOAD runs a library through the same runner).
pub(crate) fn current_keys_args(state: &vm::RunState) -> Option<(&[Bytes], &[Bytes], bool)> {
    let p = state.current.load(Ordering::Acquire) as *const Run<'static, 'static>;
    // SAFETY: as in `call_current`: the pointer is published only while `runner.call`
    // runs on this thread, and the slices it holds are borrowed by `run_in` for longer;
    // only shared reads are made here, before the script (and any `redis.call`) starts,
    // and the returned slices are not kept past the runner's `set_args`.
    let run = unsafe { p.as_ref()? };
    Some((run.keys, run.args, run.reuse_args))
}

/// Gives the watch the running script's name and command (the instruction hook, once per
/// run: see [`busy::ScriptWatch::describe`]).
pub(crate) fn describe_current(state: &vm::RunState) {
    let p = state.current.load(Ordering::Acquire) as *const Run<'static, 'static>;
    // SAFETY: as in `current_keys_args`: the pointer is published only while
    // `runner.call` runs on this thread (the hook runs inside it), the name and command
    // it holds are borrowed by `run_in` for longer, and only shared reads are made, while
    // no `redis.call` runs (the hook runs between Lua instructions).
    let Some(run) = (unsafe { p.as_ref() }) else {
        return;
    };
    state.watch.describe(run.name, run.command);
}

/// `redis.call`/`redis.pcall` of the script running now (see [`call`]).
pub(crate) fn call_current(
    state: &vm::RunState,
    lua: &Lua,
    read_args: impl FnOnce(&mut convert::ArgsBuilder) -> Result<(), &'static str>,
) -> Called {
    let p = state.current.load(Ordering::Acquire) as *mut Run<'static, 'static>;
    if p.is_null() {
        let (ok, v) = err_table(
            lua,
            "ERR redis.call is only available inside a running script",
        );
        return Called::Value(ok, v);
    }
    // SAFETY: `run_in` publishes a pointer to its `Run` only for the duration of
    // `runner.call`, on this thread (the store lock is held throughout, so no other
    // thread runs this Lua state), and clears it before the `Run` is used again or
    // dropped. Lua reaches this function only from inside that call, and it does not
    // re-enter (a command run by `redis.call` never runs Lua: EVAL, SCRIPT and FCALL
    // are not allowed from scripts), so this is the only reference to the `Run` while
    // it lives. The lifetimes erased by the cast are those of `run_in`'s borrows, which
    // outlive the call.
    let run = unsafe { &mut *p };
    // A command costs more than a Lua instruction: it counts as `CALL_INSTRUCTIONS` of
    // the budget (and toward the kill fence), the same on every replica.
    state.budget.fetch_sub(CALL_INSTRUCTIONS, Ordering::Relaxed);
    let read = read_args(&mut run.ctx.bufs.args);
    let called = run.ctx.call(run.ex, lua, read);
    run.ctx.bufs.args.release();
    called
}

/// What `redis.call` needs during one script run.
struct CallCtx {
    read_only: bool,
    bufs: CallBuffers,
    state: Arc<vm::RunState>,
}

/// What a run's `redis.call`s write into, kept in [`Scripts`] between runs so a run
/// allocates none of it once warm.
#[derive(Default)]
struct CallBuffers {
    undo: undo::UndoLog,
    /// The reply of the last `redis.call`.
    scratch: ReplyWriter,
    /// The arguments of the `redis.call` in progress.
    args: convert::ArgsBuilder,
    /// Command names as scripts spelled them, with their table rows: a script calls a
    /// few commands, over and over (up to [`SPEC_CACHE`] names).
    specs: Vec<(Box<[u8]>, &'static cmd::CommandSpec)>,
}

/// Command names [`CallBuffers::specs`] remembers.
const SPEC_CACHE: usize = 16;

/// Bytes of room [`CallBuffers`] keep between runs (per buffer); a run that needed more
/// (a big reply, many keys written) gives the rest back when it ends.
const KEEP_BUFFER_BYTES: usize = 64 << 10;

impl CallBuffers {
    /// After a run: forgets its undo records and gives back room past
    /// [`KEEP_BUFFER_BYTES`].
    fn end_run(&mut self) {
        self.undo.clear();
        self.undo.shrink_to(KEEP_BUFFER_BYTES);
        if self.scratch.buf.capacity() > KEEP_BUFFER_BYTES {
            self.scratch.buf = Vec::new();
        }
        self.args.shrink_to(KEEP_BUFFER_BYTES);
    }
}

fn err_table(lua: &Lua, msg: &str) -> (bool, Value) {
    match lua.create_table() {
        Ok(t) => {
            let _ = t.raw_set("err", msg);
            (false, Value::Table(t))
        }
        Err(_) => (false, Value::Nil),
    }
}

impl CallCtx {
    /// `redis.call`/`redis.pcall`: see [`Called`].
    fn call(&mut self, ex: &mut Exec<'_>, lua: &Lua, read: Result<(), &'static str>) -> Called {
        let failed = |msg: &str| {
            call::lift(&self.state, lua);
            let (ok, v) = err_table(lua, msg);
            Called::Value(ok, v)
        };
        if let Err(e) = read {
            return failed(e);
        }
        let CallBuffers {
            undo,
            scratch,
            args,
            specs,
        } = &mut self.bufs;
        let argv = args.finish();
        if argv.is_empty() {
            return failed("ERR Please specify at least one argument for this redis lib call");
        }
        let spec = match specs.iter().find(|(n, _)| n[..] == argv[0][..]) {
            Some((_, spec)) => Some(*spec),
            None => {
                let spec = cmd::lookup(&argv[0]);
                if let (Some(spec), true) = (spec, specs.len() < SPEC_CACHE) {
                    specs.push((argv[0][..].into(), spec));
                }
                spec
            }
        };
        let resp3 = self.state.resp3.load(Ordering::Relaxed);
        scratch.buf.clear();
        scratch.version = match resp3 {
            true => RespVersion::Resp3,
            false => RespVersion::Resp2,
        };
        if let Err(e) = dispatch(self.read_only, &self.state, undo, scratch, ex, spec, argv) {
            scratch.buf.clear();
            return failed(&e.0);
        }
        // RESP2 has only the types the raw pusher knows; an error reply takes the slow
        // path, which makes it the error `redis.call` raises.
        if !resp3 && scratch.buf.first().is_some_and(|&b| b != b'-') {
            return Called::Resp2(scratch.buf.as_slice() as *const [u8]);
        }
        call::lift(&self.state, lua);
        match convert::reply_to_lua(lua, &scratch.buf) {
            Ok(Value::Table(t)) if matches!(t.raw_get::<Value>("err"), Ok(Value::String(_))) => {
                Called::Value(false, Value::Table(t))
            }
            Ok(v) => Called::Value(true, v),
            Err(e) => failed(&format!("ERR {e}")),
        }
    }
}

/// Runs one command of the script into `out`, recording what a write may change in
/// `undo` first.
fn dispatch(
    read_only: bool,
    state: &vm::RunState,
    undo: &mut undo::UndoLog,
    out: &mut ReplyWriter,
    ex: &mut Exec<'_>,
    spec: Option<&'static cmd::CommandSpec>,
    argv: &[Bytes],
) -> CmdResult {
    let Some(spec) = spec else {
        return Err(CmdError::err("Unknown Redis command called from script"));
    };
    if !spec.arity_ok(argv.len()) {
        return Err(CmdError::err(
            "Wrong number of args calling Redis command from script",
        ));
    }
    let handler = match spec.handler {
        _ if spec.flags & (flags::NOSCRIPT | flags::BLOCKING | flags::PUBSUB) != 0 => None,
        Handler::Data(h) => Some(h),
        // The connection commands that make sense in a script, answered here.
        Handler::Conn(_) => {
            return match spec.name {
                "ping" => {
                    match argv.get(1) {
                        Some(m) => out.bulk(m),
                        None => out.simple("PONG"),
                    }
                    Ok(())
                }
                "echo" => {
                    out.bulk(&argv[1]);
                    Ok(())
                }
                "time" => {
                    // The log entry's time: the same on every replica.
                    let ms = ex.now_ms;
                    out.array(2);
                    out.bulk(itoa::Buffer::new().format(ms / 1000).as_bytes());
                    out.bulk(itoa::Buffer::new().format((ms % 1000) * 1000).as_bytes());
                    Ok(())
                }
                "select" => {
                    let db = cmd::int_arg(&argv[1])
                        .ok()
                        .filter(|d| (0..crate::store::DATABASES as i64).contains(d))
                        .ok_or(CmdError::err("DB index is out of range"))?;
                    ex.db = db as usize;
                    out.ok();
                    Ok(())
                }
                _ => Err(CmdError::err(
                    "This Redis command is not allowed from script",
                )),
            };
        }
    };
    let Some(handler) = handler else {
        return Err(CmdError::err(
            "This Redis command is not allowed from script",
        ));
    };
    if spec.is_write() {
        if read_only {
            return Err(CmdError::err(
                "Write commands are not allowed from read-only scripts.",
            ));
        }
        let watch = &state.watch;
        if !watch.written.load(Ordering::Relaxed) {
            // Past the fence a kill may have stopped this script on some replica:
            // no replica lets it write (see `busy`).
            let ran = INSTRUCTION_BUDGET - state.budget.load(Ordering::Relaxed);
            if ran >= busy::KILL_FENCE {
                return Err(CmdError::raw(busy::late_write()));
            }
            watch.written.store(true, Ordering::Relaxed);
        }
        undo.before_write(ex.store, ex.db, spec, argv);
    }
    let bracket = crate::store::memory::Bracket::open(ex.store, ex.db, spec, argv);
    let mut inner = Exec {
        store: &mut *ex.store,
        db: ex.db,
        now_ms: ex.now_ms,
        out,
        events: &mut *ex.events,
        lazy_expired: &mut *ex.lazy_expired,
        may_block: false,
        local_read: ex.local_read,
        block: None,
    };
    let result = handler(&mut inner, argv);
    if result.is_err() {
        inner.out.buf.clear();
    }
    if let Some(bracket) = bracket {
        bracket.close(ex.store);
    }
    result
}

#[cfg(test)]
mod tests;
