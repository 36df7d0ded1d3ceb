//! Scripting commands: EVAL, EVALSHA, their read-only variants, SCRIPT, FCALL, FCALL_RO,
//! FUNCTION. The engine is [`crate::script`].
//!
//! EVAL and EVALSHA are writes (through the log, run on every replica); EVAL_RO and
//! EVALSHA_RO are reads (served on the leader's lease) whose scripts may not write.
//! SCRIPT LOAD and FLUSH change the replicated script cache, so they go through the log
//! too; SCRIPT EXISTS reads it.

use bytes::Bytes;

use super::flags::*;
use super::{data, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec};
use crate::script;

/// EVAL's keys come after `numkeys` (argument 2); `keys_in` finds them.
const NUMKEYS_AT_2: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
};

pub static COMMANDS: &[CommandSpec] = &[
    data(
        "eval",
        -3,
        WRITE | NOSCRIPT | STALE,
        NUMKEYS_AT_2,
        "scripting",
        "Executes a server-side Lua script.",
        eval,
    ),
    data(
        "evalsha",
        -3,
        WRITE | NOSCRIPT | STALE,
        NUMKEYS_AT_2,
        "scripting",
        "Executes a server-side Lua script by SHA1 digest.",
        evalsha,
    ),
    data(
        "eval_ro",
        -3,
        READONLY | NOSCRIPT | STALE,
        NUMKEYS_AT_2,
        "scripting",
        "Executes a read-only server-side Lua script.",
        eval_ro,
    ),
    data(
        "evalsha_ro",
        -3,
        READONLY | NOSCRIPT | STALE,
        NUMKEYS_AT_2,
        "scripting",
        "Executes a read-only server-side Lua script by SHA1 digest.",
        evalsha_ro,
    ),
    data(
        "script",
        -2,
        WRITE | NOSCRIPT,
        super::NO_KEYS,
        "scripting",
        "A container for Lua scripts management commands.",
        script_cmd,
    ),
    data(
        "fcall",
        -3,
        WRITE | NOSCRIPT | STALE,
        NUMKEYS_AT_2,
        "scripting",
        "Invokes a function.",
        fcall,
    ),
    data(
        "fcall_ro",
        -3,
        READONLY | NOSCRIPT | STALE,
        NUMKEYS_AT_2,
        "scripting",
        "Invokes a read-only function.",
        fcall_ro,
    ),
    data(
        "function",
        -2,
        WRITE | NOSCRIPT,
        super::NO_KEYS,
        "scripting",
        "A container for function commands.",
        script::functions::function_cmd,
    ),
];

fn eval(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    script::eval(ex, argv, false, false)
}

fn evalsha(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    script::eval(ex, argv, true, false)
}

fn eval_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    script::eval(ex, argv, false, true)
}

fn fcall(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    script::functions::fcall(ex, argv, false)
}

fn fcall_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    script::functions::fcall(ex, argv, true)
}

fn evalsha_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    script::eval(ex, argv, true, true)
}

const SCRIPT_HELP: &[&str] = &[
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
];

fn script_cmd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let arity = || {
        CmdError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try SCRIPT HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ))
    };
    if is(sub, "help") && argv.len() == 2 {
        ex.out.simples(SCRIPT_HELP);
    } else if is(sub, "load") {
        if argv.len() != 3 {
            return Err(arity());
        }
        let sha = script::load(ex.store, &argv[2])?;
        ex.out.bulk(sha.as_bytes());
    } else if is(sub, "exists") {
        if argv.len() < 3 {
            return Err(arity());
        }
        ex.out.array(argv.len() - 2);
        for sha in &argv[2..] {
            let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
            ex.out.int(ex.store.scripts.contains(&sha) as i64);
        }
    } else if is(sub, "flush") {
        match argv.len() {
            2 => {}
            3 if is(&argv[2], "sync") || is(&argv[2], "async") => {}
            3 => return Err(CmdError::err("SCRIPT FLUSH only support SYNC|ASYNC option")),
            _ => return Err(arity()),
        }
        ex.store.scripts.clear_scripts();
        ex.out.ok();
    } else if is(sub, "kill") && argv.len() == 2 {
        // Scripts run inside the apply of a log entry, atomically: by the time this
        // command is applied no script is running. (A running read-only script is
        // stopped by the connection before this is reached; see conn.rs.)
        return Err(CmdError::raw("NOTBUSY No scripts in execution right now."));
    } else {
        return Err(CmdError::unknown_subcommand(sub, "script"));
    }
    Ok(())
}
