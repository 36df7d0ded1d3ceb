//! BUSY, SCRIPT KILL and FUNCTION KILL: what clients see while a script runs.
//!
//! How it fits: a script runs at apply time under its group's store lock, on every
//! replica. Each group's [`ScriptWatch`] (shared with the connections through the
//! `GroupHandle`, outside the lock) says which script runs, since when, whether it has
//! written, and carries a kill request. Connections answer here, without the store
//! lock: once a script has run past `busy-reply-threshold`, every command but Redis's
//! `allow-busy` ones is refused with `-BUSY`; SCRIPT KILL, FUNCTION KILL and FUNCTION
//! STATS are answered at once.
//!
//! The same outcome on every replica: a kill stops the script only on the node where it
//! was sent, so a kill must not change what the script writes. Two rules, both counted in
//! instructions (the same on every replica), make it so:
//! - a script that has written cannot be killed (`UNKILLABLE`, as in Redis);
//! - a script that has run [`KILL_FENCE`] instructions without writing may not write any
//!   more: its next write fails with [`late_write`]'s error on every replica. A kill takes
//!   effect only past that point (a read-only script, which cannot write at all, at its
//!   next instruction hook), so a killed script has written nothing and would have
//!   written nothing wherever it ran on.
//!
//! SCRIPT KILL answers OK at once, as Redis does; the script stops at the first hook
//! past the fence, [`KILL_FENCE`] instructions in.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use kelvin_protocol::ReplyWriter;
use parking_lot::Mutex;

use crate::cmd::{is, CommandSpec};

/// Instructions a script may run before its first write; past them it may no longer
/// write, and a kill may stop it (see the module documentation): 10 to 500 ms of Lua,
/// depending on what the instructions do (a bare loop runs fastest; calls, string
/// building and `redis.call` slowest).
pub const KILL_FENCE: i64 = 10_000_000;

/// Instructions after which a running script hands its runtime worker's other tasks
/// (connections answering BUSY, SCRIPT KILL) to another thread: a few milliseconds.
pub const STEP_ASIDE_AFTER: i64 = 1_000_000;

/// How long [`step_aside`] waits for another thread to take the worker's tasks.
const STEP_ASIDE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A script that runs long blocks its runtime worker (it runs under the group's task or a
/// connection's): past [`STEP_ASIDE_AFTER`] it lets tokio move the worker's other tasks
/// to another thread (`block_in_place` hands them over at its start), and waits until a
/// task spawned here has run elsewhere, so the hand-over is done before the script goes
/// on. False if it could not tell (no multi-thread runtime, or not within the wait): the
/// caller tries again later.
pub fn step_aside() -> bool {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return true;
    };
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return true;
    }
    let moved = Arc::new(AtomicBool::new(false));
    let flag = moved.clone();
    rt.spawn(async move { flag.store(true, Relaxed) });
    tokio::task::block_in_place(|| {
        let start = Instant::now();
        while !moved.load(Relaxed) && start.elapsed() < STEP_ASIDE_WAIT {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    });
    moved.load(Relaxed)
}

/// The error of a write past [`KILL_FENCE`].
pub fn late_write() -> String {
    format!("ERR Write commands are not allowed from a script that ran {KILL_FENCE} instructions without writing (it may be killed from that point on)")
}

/// Redis's `slowevalerr`: an EVAL script runs.
pub const BUSY_EVAL: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
/// Redis's `slowscripterr`: a function runs.
pub const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
const NOTBUSY: &str = "NOTBUSY No scripts in execution right now.";
const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

/// Scripts running in this process now: connections look at the watches only when some
/// script runs.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_us() -> u64 {
    EPOCH.elapsed().as_micros() as u64 + 1
}

/// The running script of one group's store (see the module documentation).
#[derive(Default)]
pub struct ScriptWatch {
    /// When the running script started (µs past `EPOCH`, plus one); 0 when none runs.
    started_us: AtomicU64,
    /// Each run's number, so a kill aimed at one run never stops the next.
    run: AtomicU64,
    /// The run a kill was asked for.
    kill_run: AtomicU64,
    is_eval: AtomicBool,
    /// The running script has written.
    pub written: AtomicBool,
    /// The running script cannot write (EVAL_RO, `no-writes`): killable at once.
    read_only: AtomicBool,
    /// The running script's name and command, for FUNCTION STATS, once [`Self::describe`]
    /// gave them: the number of the run they belong to, then the name and command.
    detail: Mutex<(u64, String, Vec<Bytes>)>,
    /// Libraries and functions loaded, for FUNCTION STATS while a script runs.
    pub libraries: AtomicUsize,
    pub functions: AtomicUsize,
}

impl ScriptWatch {
    /// A script starts. Its name and command are given later, by [`Self::describe`].
    pub fn start(&self, is_eval: bool, read_only: bool) {
        self.is_eval.store(is_eval, Relaxed);
        self.read_only.store(read_only, Relaxed);
        self.written.store(false, Relaxed);
        self.run.fetch_add(1, Relaxed);
        self.started_us.store(now_us(), Relaxed);
        RUNNING.fetch_add(1, Relaxed);
    }

    /// The running script's name (SHA1 or function name) and command, for FUNCTION STATS:
    /// given by the instruction hook once the script has run a while (copying the command
    /// for each of the many short scripts cost a tenth of a small one). Until then FUNCTION
    /// STATS waits for the script as it does for a short one, which it never sees running
    /// (in Redis neither: it answers between scripts).
    pub fn describe(&self, name: &str, argv: &[Bytes]) {
        // The buffers of the last description are reused.
        let mut detail = self.detail.lock();
        detail.0 = self.run.load(Relaxed);
        detail.1.clear();
        detail.1.push_str(name);
        detail.2.clear();
        detail.2.extend_from_slice(argv);
    }

    /// The script ended (however).
    pub fn finish(&self) {
        if self.started_us.swap(0, Relaxed) != 0 {
            RUNNING.fetch_sub(1, Relaxed);
        }
    }

    /// SCRIPT KILL / FUNCTION KILL for the run in progress (checked by the caller).
    pub fn request_kill(&self) {
        self.kill_run.store(self.run.load(Relaxed), Relaxed);
    }

    /// Should the run that has executed `ran` instructions stop for a kill now?
    pub fn killed(&self, ran: i64) -> bool {
        self.kill_run.load(Relaxed) == self.run.load(Relaxed)
            && !self.written.load(Relaxed)
            && (self.read_only.load(Relaxed) || ran >= KILL_FENCE)
    }

    fn running_ms(&self) -> Option<u64> {
        match self.started_us.load(Relaxed) {
            0 => None,
            t => Some(now_us().saturating_sub(t) / 1000),
        }
    }
}

/// What the connection answers itself, while a script runs.
pub enum Answer {
    Error(&'static str),
    Ok,
    Stats {
        name: String,
        command: Vec<Bytes>,
        duration_ms: u64,
        libraries: usize,
        functions: usize,
    },
}

impl Answer {
    /// Writes a non-error answer.
    pub fn write(self, out: &mut ReplyWriter) {
        match self {
            Answer::Error(e) => out.error(e),
            Answer::Ok => out.ok(),
            Answer::Stats {
                name,
                command,
                duration_ms,
                libraries,
                functions,
            } => {
                out.map(2);
                out.bulk(b"running_script");
                out.map(3);
                out.bulk(b"name");
                out.bulk(name.as_bytes());
                out.bulk(b"command");
                out.array(command.len());
                for a in &command {
                    out.bulk(a);
                }
                out.bulk(b"duration_ms");
                out.int(duration_ms as i64);
                out.bulk(b"engines");
                out.map(1);
                out.bulk(b"LUA");
                out.map(2);
                out.bulk(b"libraries_count");
                out.int(libraries as i64);
                out.bulk(b"functions_count");
                out.int(functions as i64);
            }
        }
    }
}

/// Redis's `allow-busy` commands (besides SCRIPT KILL, FUNCTION KILL and FUNCTION STATS).
/// Not EXEC: a transaction's EXEC during BUSY answers `EXECABORT ... BUSY`.
fn allowed_when_busy(name: &str) -> bool {
    matches!(
        name,
        "auth"
            | "hello"
            | "discard"
            | "multi"
            | "quit"
            | "reset"
            | "unwatch"
            | "watch"
            | "shutdown"
            | "replconf"
    )
}

/// What the connection answers to `argv` itself, if anything: `-BUSY` past the threshold,
/// SCRIPT KILL / FUNCTION KILL, FUNCTION STATS while a script runs. `None`: the command
/// goes its usual way.
pub fn at_connection(
    node: &crate::node::Node,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Option<Answer> {
    // Every request passes here: the common case (nothing runs, not a kill) first.
    if RUNNING.load(Relaxed) == 0 && !matches!(spec.name, "script" | "function") {
        return None;
    }
    let sub = argv.get(1).filter(|_| argv.len() == 2);
    let kill = sub.is_some_and(|s| is(s, "kill"));
    let script_kill = spec.name == "script" && kill;
    let function_kill = spec.name == "function" && kill;
    if RUNNING.load(Relaxed) == 0 {
        // Nothing runs: a kill has nothing to stop (never through the log).
        return (script_kill || function_kill).then_some(Answer::Error(NOTBUSY));
    }
    let watches: Vec<Arc<ScriptWatch>> = node
        .groups()
        .map(|g| g.hosted.values().map(|h| h.scripts.clone()).collect())
        .unwrap_or_default();
    let running = watches
        .iter()
        .filter_map(|w| w.running_ms().map(|ms| (w, ms)))
        .max_by_key(|(_, ms)| *ms);
    let Some((watch, ms)) = running else {
        return (script_kill || function_kill).then_some(Answer::Error(NOTBUSY));
    };
    let is_eval = watch.is_eval.load(Relaxed);
    if script_kill || function_kill {
        if watch.written.load(Relaxed) {
            return Some(Answer::Error(UNKILLABLE));
        }
        if script_kill && !is_eval {
            return Some(Answer::Error(BUSY_FUNCTION));
        }
        if function_kill && is_eval {
            return Some(Answer::Error(BUSY_EVAL));
        }
        watch.request_kill();
        return Some(Answer::Ok);
    }
    if spec.name == "function" && sub.is_some_and(|s| is(s, "stats")) {
        let (run, name, command) = watch.detail.lock().clone();
        if run != watch.run.load(Relaxed) {
            // Not described yet: a short script (see `ScriptWatch::describe`).
            return None;
        }
        return Some(Answer::Stats {
            name,
            command,
            duration_ms: ms,
            libraries: watch.libraries.load(Relaxed),
            functions: watch.functions.load(Relaxed),
        });
    }
    let threshold = node
        .settings
        .read()
        .get("busy-reply-threshold")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5000);
    if ms < threshold || allowed_when_busy(spec.name) {
        return None;
    }
    Some(Answer::Error(if is_eval {
        BUSY_EVAL
    } else {
        BUSY_FUNCTION
    }))
}
