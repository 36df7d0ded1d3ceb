//! FUNCTION LOAD/DELETE/FLUSH/LIST/STATS/KILL and FCALL/FCALL_RO: Redis 7 functions on
//! the same Lua state as scripts.
//!
//! How it fits: a library's code (`#!lua name=<lib>` first) is the replicated state
//! ([`super::Scripts`]'s `libraries`, carried by snapshots); FUNCTION LOAD runs it once,
//! at apply time on every replica, with `redis.register_function` collecting its
//! functions, which FCALL then calls with KEYS and ARGV through the same runner as EVAL
//! (budget, undo log, error texts naming the function and `@user_function:<line>`).
//! Not yet: FUNCTION DUMP/RESTORE.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{execute, CmdError, CmdResult, Exec, INSTRUCTION_BUDGET};
use crate::cmd::{self, is};
use crate::store::Store;

/// A loaded library: its code and its functions (name, `no-writes`).
#[derive(Debug, Clone)]
pub struct Library {
    pub code: Arc<[u8]>,
    pub functions: Vec<(String, bool)>,
}

/// A registered function: its library, callback and `no-writes` flag.
#[derive(Debug, Clone)]
pub struct Registered {
    pub library: String,
    pub callback: mlua::Function,
    pub no_writes: bool,
}

/// The library name of `code`'s `#!lua name=<lib>` line.
fn library_name(code: &[u8]) -> Result<String, CmdError> {
    if !code.starts_with(b"#!") {
        return Err(CmdError::err("Missing library metadata"));
    }
    let end = code.iter().position(|&b| b == b'\n').unwrap_or(code.len());
    let line = String::from_utf8_lossy(&code[..end]);
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or("");
    // Engine names are case-insensitive, as Redis's engine table.
    if !engine.eq_ignore_ascii_case("#!lua") {
        return Err(CmdError::err(format!(
            "Engine '{}' not found",
            &engine[2..]
        )));
    }
    let mut name = None;
    for part in parts {
        match part.strip_prefix("name=") {
            Some(n) => name = Some(n.to_string()),
            None => {
                return Err(CmdError::err(format!(
                    "Invalid metadata value given: {part}"
                )))
            }
        }
    }
    let name = name.ok_or(CmdError::err("Library name was not given"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(CmdError::err(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    Ok(name)
}

/// FUNCTION LOAD [REPLACE]: runs the library, registers its functions. Returns its name.
pub fn load(store: &mut Store, code: &[u8], replace: bool) -> Result<String, CmdError> {
    let name = library_name(code)?;
    let scripts = &mut store.scripts;
    if scripts.libraries.contains_key(&name) && !replace {
        return Err(CmdError::err(format!("Library '{name}' already exists")));
    }
    let end = code.iter().position(|&b| b == b'\n').unwrap_or(code.len());
    let vm = scripts.vm()?;
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
    state.budget.store(INSTRUCTION_BUDGET, Ordering::Relaxed);
    state.exhausted.store(false, Ordering::Relaxed);
    *state.registering.lock() = Some(Vec::new());
    let ran: mlua::Result<(bool, mlua::Value)> = vm.runner.call(body);
    let registered = state.registering.lock().take().unwrap_or_default();
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
    if state.exhausted.load(Ordering::Relaxed) {
        return Err(CmdError::err(
            "Error registering functions: the library ran past its budget",
        ));
    }
    if registered.is_empty() {
        return Err(CmdError::err("No functions registered"));
    }
    for (f, _, _) in &registered {
        if scripts
            .functions
            .get(&f.to_ascii_lowercase())
            .is_some_and(|r| r.library != name)
        {
            return Err(CmdError::err(format!("Function {f} already exists")));
        }
    }
    delete(store, &name);
    let scripts = &mut store.scripts;
    let mut functions = Vec::with_capacity(registered.len());
    for (f, callback, no_writes) in registered {
        functions.push((f.clone(), no_writes));
        // Function names are case-insensitive, as in Redis.
        scripts.functions.insert(
            f.to_ascii_lowercase(),
            Registered {
                library: name.clone(),
                callback,
                no_writes,
            },
        );
    }
    scripts.libraries.insert(
        name.clone(),
        Library {
            code: Arc::from(code),
            functions,
        },
    );
    Ok(name)
}

/// Removes library `name` and its functions; false if there was none.
fn delete(store: &mut Store, name: &str) -> bool {
    let scripts = &mut store.scripts;
    let Some(lib) = scripts.libraries.remove(name) else {
        return false;
    };
    for (f, _) in &lib.functions {
        scripts.functions.remove(&f.to_ascii_lowercase());
    }
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
        &name,
        bound,
        &argv[3..3 + numkeys],
        &argv[3 + numkeys..],
        read_only || f.no_writes,
    )
}

/// FUNCTION's subcommands.
pub fn function_cmd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "load") {
        if argv.len() < 3 {
            return Err(CmdError::arity("function|load"));
        }
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
    } else if is(sub, "delete") {
        if argv.len() != 3 {
            return Err(CmdError::arity("function|delete"));
        }
        ensure_registered(ex.store);
        if !delete(ex.store, &String::from_utf8_lossy(&argv[2])) {
            return Err(CmdError::err("Library not found"));
        }
        ex.out.ok();
    } else if is(sub, "flush") {
        match argv.len() {
            2 => {}
            3 if is(&argv[2], "sync") || is(&argv[2], "async") => {}
            _ => {
                return Err(CmdError::err(
                    "FUNCTION FLUSH only supports SYNC|ASYNC option",
                ))
            }
        }
        ex.store.scripts.libraries.clear();
        ex.store.scripts.functions.clear();
        ex.out.ok();
    } else if is(sub, "kill") && argv.len() == 2 {
        return Err(CmdError::raw("NOTBUSY No scripts in execution right now."));
    } else if is(sub, "stats") && argv.len() == 2 {
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
    } else if is(sub, "list") {
        list(ex, argv)?;
    } else {
        return Err(CmdError::unknown_subcommand(sub, "function"));
    }
    Ok(())
}

/// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE].
fn list(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut pattern: Option<&[u8]> = None;
    let mut with_code = false;
    let mut i = 2;
    while i < argv.len() {
        if is(&argv[i], "withcode") {
            with_code = true;
            i += 1;
        } else if is(&argv[i], "libraryname") && i + 1 < argv.len() {
            pattern = Some(&argv[i + 1]);
            i += 2;
        } else {
            return Err(CmdError::err("Unknown argument"));
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
        for (f, no_writes) in &lib.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.as_bytes());
            out.bulk(b"description");
            out.null();
            out.bulk(b"flags");
            if *no_writes {
                out.set(1);
                out.bulk(b"no-writes");
            } else {
                out.set(0);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&lib.code);
        }
    }
    Ok(())
}
