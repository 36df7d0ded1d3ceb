//! FUNCTION LOAD/DELETE/FLUSH/LIST/STATS/KILL and FCALL/FCALL_RO: Redis 7 functions on
//! the same Lua state as scripts.
//!
//! How it fits: a library's code (`#!lua name=<lib>` first) is the replicated state
//! ([`super::Scripts`]'s `libraries`, carried by snapshots); FUNCTION LOAD runs it once,
//! at apply time on every replica, with `redis.register_function` collecting its
//! functions, which FCALL then calls with KEYS and ARGV through the same runner as EVAL
//! (budget, undo log, error texts naming the function and `@user_function:<line>`).
//! FUNCTION DUMP/RESTORE use Redis's payload (`crate::rdb::dump_functions`), so a dump
//! from redis-server restores here and back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{execute, vm, CmdError, CmdResult, Exec, INSTRUCTION_BUDGET};
use crate::cmd::{self, is};
use crate::store::Store;

/// A function as FUNCTION LIST shows it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub name: String,
    pub description: Option<String>,
    /// Bits of [`vm::FUNCTION_FLAGS`].
    pub flags: u8,
}

/// A loaded library: its code and its functions.
#[derive(Debug, Clone)]
pub struct Library {
    pub code: Arc<[u8]>,
    pub functions: Vec<FunctionInfo>,
}

/// A registered function: its library, callback and `no-writes` flag.
#[derive(Debug, Clone)]
pub struct Registered {
    pub library: String,
    pub callback: mlua::Function,
    pub no_writes: bool,
}

/// Instructions a library's code may run at FUNCTION LOAD (Redis stops it after
/// 500 ms with "FUNCTION LOAD timeout"; here a count, the same on every replica).
pub const LOAD_INSTRUCTION_BUDGET: i64 = INSTRUCTION_BUDGET / 2;

/// The library name of `code`'s `#!<engine> name=<lib>` line, as Redis's
/// `functionExtractLibMetaData` reads it (arguments split as `sdssplitargs`).
fn library_name(code: &[u8]) -> Result<String, CmdError> {
    if !code.starts_with(b"#!") {
        return Err(CmdError::err("Missing library metadata"));
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err(CmdError::err("Invalid library metadata"));
    };
    let parts = kelvin_protocol::request::split_inline_args(&code[..end])
        .filter(|p| !p.is_empty())
        .ok_or(CmdError::err("Invalid library metadata"))?;
    let engine = String::from_utf8_lossy(&parts[0][2.min(parts[0].len())..]).into_owned();
    let mut name: Option<String> = None;
    for part in &parts[1..] {
        let text = String::from_utf8_lossy(part);
        if text.len() >= 5 && text[..5].eq_ignore_ascii_case("name=") {
            if name.is_some() {
                return Err(CmdError::err(
                    "Invalid metadata value, name argument was given multiple times",
                ));
            }
            name = Some(text[5..].to_string());
            continue;
        }
        return Err(CmdError::err(format!(
            "Invalid metadata value given: {text}"
        )));
    }
    let name = name.ok_or(CmdError::err("Library name was not given"))?;
    // Engine names are case-insensitive, as Redis's engine table.
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(CmdError::err(format!("Engine '{engine}' not found")));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(CmdError::err(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    Ok(name)
}

/// A library run in the Lua state but not yet stored: its name and what it
/// registered.
struct Compiled {
    name: String,
    registered: Vec<vm::Registration>,
}

/// Runs a library's code with `redis.register_function` collecting its functions,
/// leaving the stored libraries alone.
fn compile_library(store: &mut Store, code: &[u8]) -> Result<Compiled, CmdError> {
    let name = library_name(code)?;
    let end = code.iter().position(|&b| b == b'\n').unwrap_or(code.len());
    let vm = store.scripts.vm()?;
    let body = vm
        .lua
        .load(&code[end..])
        .set_name("@user_function")
        .into_function()
        .map_err(|e| {
            let msg = match e {
                mlua::Error::SyntaxError { message, .. } => message,
                other => other.to_string(),
            };
            CmdError::err(format!("Error compiling function: {msg}"))
        })?;
    let state = vm.state.clone();
    state
        .budget
        .store(LOAD_INSTRUCTION_BUDGET, Ordering::Relaxed);
    state.exhausted.store(false, Ordering::Relaxed);
    *state.registering.lock() = Some(Vec::new());
    // The library sees only `redis.register_function`, `redis.log` and the constants.
    let load_env: Option<mlua::Function> = vm.hidden.raw_get("load_env").ok();
    if let Some(f) = &load_env {
        f.call::<()>(true)
            .map_err(|e| CmdError::err(format!("Lua state: {e}")))?;
    }
    let ran: mlua::Result<(bool, mlua::Value)> = vm.runner.call(body);
    if let Some(f) = &load_env {
        f.call::<()>(false)
            .map_err(|e| CmdError::err(format!("Lua state: {e}")))?;
    }
    let registered = state.registering.lock().take().unwrap_or_default();
    if state.exhausted.swap(false, Ordering::Relaxed) {
        return Err(CmdError::err(
            "Error registering functions: FUNCTION LOAD timeout",
        ));
    }
    match ran {
        Ok((true, _)) => {}
        Ok((false, mlua::Value::Table(t))) => {
            let msg: String = t.raw_get("err").unwrap_or_default();
            return Err(CmdError::err(format!(
                "Error registering functions: {}",
                super::convert::one_line(&msg)
            )));
        }
        Ok((false, _)) => return Err(CmdError::err("Error registering functions")),
        Err(e) => {
            return Err(CmdError::err(format!(
                "Error registering functions: {}",
                super::convert::one_line(&e.to_string())
            )))
        }
    }
    if registered.is_empty() {
        return Err(CmdError::err("No functions registered"));
    }
    Ok(Compiled { name, registered })
}

/// Stores a compiled library (replacing one of its name) and its functions.
fn commit(store: &mut Store, lib: Compiled, code: &[u8]) {
    let Compiled { name, registered } = lib;
    delete(store, &name);
    let scripts = &mut store.scripts;
    let mut functions = Vec::with_capacity(registered.len());
    for reg in registered {
        let no_writes = reg.flags & vm::FLAG_NO_WRITES != 0;
        // Function names are case-insensitive, as in Redis.
        scripts.functions.insert(
            reg.name.to_ascii_lowercase(),
            Registered {
                library: name.clone(),
                callback: reg.callback,
                no_writes,
            },
        );
        functions.push(FunctionInfo {
            name: reg.name,
            description: reg.description,
            flags: reg.flags,
        });
    }
    scripts.libraries.insert(
        name,
        Library {
            code: Arc::from(code),
            functions,
        },
    );
    scripts.functions_changed();
}

/// The first function of `lib` that a stored library other than `lib`'s own (and other
/// than those in `leaving`) already has.
fn collision<'a>(store: &Store, lib: &'a Compiled, leaving: &[&str]) -> Option<&'a str> {
    lib.registered.iter().map(|r| r.name.as_str()).find(|f| {
        store
            .scripts
            .functions
            .get(&f.to_ascii_lowercase())
            .is_some_and(|r| r.library != lib.name && !leaving.contains(&r.library.as_str()))
    })
}

/// FUNCTION LOAD [REPLACE]: runs the library, registers its functions. Returns its name.
pub fn load(store: &mut Store, code: &[u8], replace: bool) -> Result<String, CmdError> {
    let name = library_name(code)?;
    if store.scripts.libraries.contains_key(&name) && !replace {
        return Err(CmdError::err(format!("Library '{name}' already exists")));
    }
    let lib = compile_library(store, code)?;
    if let Some(f) = collision(store, &lib, &[]) {
        return Err(CmdError::err(format!("Function {f} already exists")));
    }
    commit(store, lib, code);
    Ok(name)
}

/// How FUNCTION RESTORE treats the libraries already loaded.
#[derive(Clone, Copy, PartialEq)]
enum RestorePolicy {
    /// Fail if a library of the payload exists.
    Append,
    /// The payload's libraries replace those of the same name.
    Replace,
    /// Every loaded library goes first.
    Flush,
}

/// FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]: all of the payload's libraries or
/// none, Redis's checks in its order.
fn restore(store: &mut Store, payload: &[u8], policy: RestorePolicy) -> CmdResult {
    let codes = crate::rdb::function_codes(payload).map_err(|e| CmdError::raw(e.to_string()))?;
    let mut libs: Vec<(Compiled, Vec<u8>)> = Vec::with_capacity(codes.len());
    for code in codes {
        let lib = compile_library(store, &code)?;
        if libs.iter().any(|(l, _)| l.name == lib.name) {
            return Err(CmdError::err(format!(
                "Library '{}' already exists",
                lib.name
            )));
        }
        for f in lib.registered.iter().map(|r| &r.name) {
            let taken = libs
                .iter()
                .any(|(l, _)| l.registered.iter().any(|g| g.name.eq_ignore_ascii_case(f)));
            if taken {
                return Err(CmdError::err(format!("Function {f} already exists")));
            }
        }
        libs.push((lib, code));
    }
    if policy == RestorePolicy::Flush {
        store.scripts.libraries.clear();
        store.scripts.functions.clear();
    }
    let leaving: Vec<String> = match policy {
        RestorePolicy::Replace => libs.iter().map(|(l, _)| l.name.clone()).collect(),
        _ => Vec::new(),
    };
    let leaving: Vec<&str> = leaving.iter().map(String::as_str).collect();
    if policy == RestorePolicy::Append {
        if let Some((l, _)) = libs
            .iter()
            .find(|(l, _)| store.scripts.libraries.contains_key(&l.name))
        {
            return Err(CmdError::err(format!("Library {} already exists", l.name)));
        }
    }
    for (lib, _) in &libs {
        if let Some(f) = collision(store, lib, &leaving) {
            return Err(CmdError::err(format!("Function {f} already exists")));
        }
    }
    for (lib, code) in libs {
        commit(store, lib, &code);
    }
    Ok(())
}

/// Removes library `name` and its functions; false if there was none.
fn delete(store: &mut Store, name: &str) -> bool {
    let scripts = &mut store.scripts;
    let Some(lib) = scripts.libraries.remove(name) else {
        return false;
    };
    for f in &lib.functions {
        scripts.functions.remove(&f.name.to_ascii_lowercase());
    }
    scripts.functions_changed();
    true
}

/// Registers the loaded libraries again in a new Lua state (after a snapshot, or once
/// the state was rebuilt).
fn ensure_registered(store: &mut Store) {
    if !store.scripts.functions.is_empty() || store.scripts.libraries.is_empty() {
        return;
    }
    let libs: Vec<Arc<[u8]>> = store
        .scripts
        .libraries
        .values()
        .map(|l| l.code.clone())
        .collect();
    store.scripts.libraries.clear();
    for code in libs {
        // It loaded when it was stored; the same code loads again.
        let _ = load(store, &code, true);
    }
}

/// The code of every library, for snapshots.
pub fn library_codes(store: &Store) -> impl Iterator<Item = &[u8]> {
    store.scripts.libraries.values().map(|l| &l.code[..])
}

/// FCALL / FCALL_RO `name numkeys key... arg...`.
pub fn fcall(ex: &mut Exec<'_>, argv: &[Bytes], read_only: bool) -> CmdResult {
    let numkeys =
        cmd::int_arg(&argv[2]).map_err(|_| CmdError::err("Bad number of keys provided"))?;
    if numkeys < 0 {
        return Err(CmdError::err("Number of keys can't be negative"));
    }
    let numkeys = numkeys as usize;
    if numkeys > argv.len() - 3 {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    ensure_registered(ex.store);
    let name = String::from_utf8_lossy(&argv[1]).into_owned();
    let Some(f) = ex
        .store
        .scripts
        .functions
        .get(&name.to_ascii_lowercase())
        .cloned()
    else {
        return Err(CmdError::err("Function not found"));
    };
    if read_only && !f.no_writes {
        return Err(CmdError::err(
            "Can not execute a script with write flag using *_ro command.",
        ));
    }
    let vm = ex.store.scripts.vm()?;
    let bind: mlua::Function = vm
        .hidden
        .raw_get("bind")
        .map_err(|e| CmdError::err(format!("Lua state: {e}")))?;
    let bound: mlua::Function = bind
        .call(f.callback)
        .map_err(|e| CmdError::err(format!("Lua state: {e}")))?;
    execute(
        ex,
        super::Running {
            name: &name,
            is_eval: false,
            command: argv,
        },
        bound,
        &argv[3..3 + numkeys],
        &argv[3 + numkeys..],
        read_only || f.no_writes,
    )
}

/// FUNCTION's subcommands: (name, arity as Redis's `function-*.json`).
const SUBCOMMANDS: &[(&str, i32)] = &[
    ("help", 2),
    ("load", -3),
    ("delete", 3),
    ("flush", -2),
    ("dump", 2),
    ("restore", -3),
    ("kill", 2),
    ("stats", 2),
    ("list", -2),
];

/// FUNCTION HELP: Redis 7.0's text.
const FUNCTION_HELP: &[&str] = &[
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
];

/// Redis's `addReplySubcommandSyntaxError`.
fn syntax_error(sub: &[u8]) -> CmdError {
    CmdError::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
        String::from_utf8_lossy(&sub[..sub.len().min(128)])
    ))
}

/// FUNCTION's subcommands.
pub fn function_cmd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let Some(&(name, arity)) = SUBCOMMANDS.iter().find(|(n, _)| is(sub, n)) else {
        return Err(CmdError::unknown_subcommand(sub, "function"));
    };
    let argc = argv.len() as i32;
    if (arity >= 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return Err(CmdError::arity(&format!("function|{name}")));
    }
    match name {
        "load" => {
            let code = &argv[argv.len() - 1];
            let mut replace = false;
            for opt in &argv[2..argv.len() - 1] {
                if is(opt, "replace") {
                    replace = true;
                } else {
                    return Err(CmdError::err(format!(
                        "Unknown option given: {}",
                        String::from_utf8_lossy(opt)
                    )));
                }
            }
            ensure_registered(ex.store);
            let name = load(ex.store, code, replace)?;
            ex.out.bulk(name.as_bytes());
        }
        "delete" => {
            ensure_registered(ex.store);
            if !delete(ex.store, &String::from_utf8_lossy(&argv[2])) {
                return Err(CmdError::err("Library not found"));
            }
            ex.out.ok();
        }
        "flush" => {
            if argv.len() > 3 {
                return Err(syntax_error(sub));
            }
            if argv.len() == 3 && !is(&argv[2], "sync") && !is(&argv[2], "async") {
                return Err(CmdError::err(
                    "FUNCTION FLUSH only supports SYNC|ASYNC option",
                ));
            }
            ex.store.scripts.libraries.clear();
            ex.store.scripts.functions.clear();
            ex.store.scripts.functions_changed();
            ex.out.ok();
        }
        "dump" => {
            ensure_registered(ex.store);
            let payload = crate::rdb::dump_functions(library_codes(ex.store));
            ex.out.bulk(&payload);
        }
        "restore" => {
            if argv.len() > 4 {
                return Err(syntax_error(sub));
            }
            let policy = match argv.get(3) {
                None => RestorePolicy::Append,
                Some(p) if is(p, "append") => RestorePolicy::Append,
                Some(p) if is(p, "replace") => RestorePolicy::Replace,
                Some(p) if is(p, "flush") => RestorePolicy::Flush,
                Some(_) => return Err(CmdError::err(
                    "Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                )),
            };
            ensure_registered(ex.store);
            restore(ex.store, &argv[2], policy)?;
            ex.out.ok();
        }
        "help" => ex.out.simples(FUNCTION_HELP),
        "kill" => return Err(CmdError::raw("NOTBUSY No scripts in execution right now.")),
        "stats" => {
            let s = &ex.store.scripts;
            let functions: usize = s.libraries.values().map(|l| l.functions.len()).sum();
            let libraries = s.libraries.len();
            ex.out.map(2);
            ex.out.bulk(b"running_script");
            ex.out.null();
            ex.out.bulk(b"engines");
            ex.out.map(1);
            ex.out.bulk(b"LUA");
            ex.out.map(2);
            ex.out.bulk(b"libraries_count");
            ex.out.int(libraries as i64);
            ex.out.bulk(b"functions_count");
            ex.out.int(functions as i64);
        }
        _ => list(ex, argv)?,
    }
    Ok(())
}

/// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE].
fn list(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut pattern: Option<&[u8]> = None;
    let mut with_code = false;
    let mut i = 2;
    while i < argv.len() {
        if !with_code && is(&argv[i], "withcode") {
            with_code = true;
            i += 1;
        } else if pattern.is_none() && is(&argv[i], "libraryname") {
            if i + 1 >= argv.len() {
                return Err(CmdError::err("library name argument was not given"));
            }
            pattern = Some(&argv[i + 1]);
            i += 2;
        } else {
            return Err(CmdError::err(format!(
                "Unknown argument {}",
                String::from_utf8_lossy(&argv[i])
            )));
        }
    }
    let libs: Vec<(&String, &Library)> = ex
        .store
        .scripts
        .libraries
        .iter()
        .filter(|(name, _)| {
            pattern.is_none_or(|p| kelvin_protocol::glob::glob_match(p, name.as_bytes(), false))
        })
        .collect();
    let out = &mut *ex.out;
    out.array(libs.len());
    for (name, lib) in libs {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        out.array(lib.functions.len());
        for f in &lib.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.name.as_bytes());
            out.bulk(b"description");
            match &f.description {
                Some(d) => out.bulk(d.as_bytes()),
                None => out.null(),
            }
            out.bulk(b"flags");
            let names: Vec<&str> = vm::FUNCTION_FLAGS
                .iter()
                .enumerate()
                .filter(|(i, _)| f.flags & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect();
            out.set(names.len());
            for n in names {
                out.simple(n);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&lib.code);
        }
    }
    Ok(())
}
