//! The node's side of the learned planner ([`crate::migrate::learn`]): a task that
//! observes a few random keys of every group this node leads every
//! [`sampler::SAMPLE_EVERY`], labels them a window later (`kelvin-planner-window`), and
//! retrains the model about every window ([`retrain_every`]) at the lowest priority,
//! publishing each model for the planner and INFO. With the profiler off
//! (`kelvin-profile-keys no`) it observes nothing: the records it would read do not change.
//!
//! Where the training runs: in a process of its own when the server binary registered
//! one ([`use_trainer_process`]: `kelvin-server` runs itself with [`TRAINER_ARG`], the
//! samples down its stdin, the model back on its stdout, [`crate::migrate::learn::wire`]),
//! else on a thread of its own (a server embedded in a test). A process of its own can be
//! put in the background of the whole machine, not only of the server's threads
//! ([`background_process`]): as a SCHED_IDLE thread of the server, the training took 70%
//! of both cores while the nodes slept between requests and kept the kernel's threads
//! (ksoftirqd, the block layer's kworkers) off a core for up to 1.25 s, and all four
//! nodes of a 1M-session move stalled together for 60-110 ms every few seconds. It also
//! shares no lock with the server: a thread shares the process's one malloc arena
//! (`main.rs`) with the workers, and SCHED_IDLE preempted inside malloc holds the arena's
//! lock until a core is idle.
//!
//! Nothing here holds a lock longer than a few lookups; training never runs on a thread
//! that serves requests.
//!
//! No training while a group this node hosts takes part in a migration, and a trainer
//! process running when one begins is stopped ([`migrating`]): the model is for the next
//! plan, and a move needs every core it can get. Idle priority is not enough on a shared
//! machine: with three trainers soaking the idle time of a 1M-session move drained at 3
//! MB/s, 2.0% of the sources' requests took over 1 ms and 10% of the target's, against
//! 0.9% and 4.3% with none (p99 of the drain 1.66-1.96 ms against 1.28, one run each,
//! `kelvin-bench reshard --systems kelvin --largest-only --kelvin-drain-rate 3000000`):
//! the caches and the memory bus are shared too.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::watch;

use crate::migrate::learn::{publish, retrain_every, sampler, wire, Learner, Model, Sample};
use crate::node::Node;

/// What a training thread hands back: the model, the samples it was given, to be freed
/// by the runtime's worker that allocated them, and where it trained (`process` or
/// `thread`). A free takes the lock of the allocator arena the memory came from: a
/// thread in SCHED_IDLE preempted while holding a worker's arena lock keeps that worker
/// waiting until a core is idle.
type Trained = (Result<Model, String>, Vec<Sample>, &'static str);

/// Runs until shutdown.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut learner = Learner::new(node.settings.read().planner_window_ms);
    let mut rng = SmallRng::from_entropy();
    let mut tick = tokio::time::interval(sampler::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch_moves = tokio::time::interval(MOVE_WATCH_EVERY);
    watch_moves.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_training = Instant::now();
    let mut training: Option<(u64, tokio::sync::oneshot::Receiver<Trained>)> = None;
    publish(&learner, node.settings.read().planner_model);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = watch_moves.tick() => {
                // Free when no trainer runs (the common case): the groups and the
                // topology are read only while one does.
                if trainer_running() && migrating(&node) {
                    stop_trainer();
                }
                continue;
            }
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = crate::cmd::unix_ms();
        let window_ms = node.settings.read().planner_window_ms;
        if window_ms != learner.sampler.window_ms() {
            // Labels of another window: the training data starts over.
            learner = Learner::new(window_ms);
            training = None;
        }
        learner.sampler.label_due(now, |group, db, key| {
            let g = node.hosted(group)?;
            let store = g.store.lock();
            store.db_ref(db)?.get(key, now).map(|e| e.heat)
        });
        if crate::store::heat::profiling() {
            let rules = node.settings.read().migration_rules.clone();
            if let Some(groups) = node.groups() {
                // The data groups (the meta group is not among them) this node leads:
                // reads touch the leader's records only.
                for (&id, g) in &groups.hosted {
                    if !g.status.is_leader() {
                        continue;
                    }
                    let store = g.store.lock();
                    learner.observe(&store, id, sampler::SAMPLE_KEYS, now, &rules, &mut rng);
                }
            }
        }
        if let Some((labelled, rx)) = training.as_mut() {
            match rx.try_recv() {
                Ok((outcome, samples, place)) => {
                    // Freed here, by the thread that allocated them (see `Trained`).
                    drop(samples);
                    if let Err(e) = &outcome {
                        tracing::debug!(error = %e, "planner: no model from this training");
                    }
                    learner.trained(outcome, *labelled, now);
                    learner.trained_in = place;
                    training = None;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    learner.trained(Err("the training thread ended".into()), *labelled, now);
                    training = None;
                }
            }
        }
        let moving = migrating(&node);
        if moving {
            stop_trainer();
        }
        if training.is_none()
            && !moving
            && last_training.elapsed() >= retrain_every(window_ms)
            && learner.wants_training()
        {
            last_training = Instant::now();
            let samples = learner.sampler.samples();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("kelvin-planner-train".into())
                .spawn(move || {
                    let trained = TRAINER
                        .get()
                        .and_then(|exe| train_in_process(exe, &samples));
                    let (model, place) = match trained {
                        Some(outcome) => (outcome, "process"),
                        None => {
                            lowest_priority();
                            (Model::train(&samples), "thread")
                        }
                    };
                    let _ = tx.send((model, samples, place));
                });
            match spawned {
                Ok(_) => training = Some((learner.sampler.labelled, rx)),
                Err(e) => tracing::warn!(error = %e, "planner: cannot start a training thread"),
            }
        }
        learner.training = match (moving, training.is_some()) {
            (true, _) => "paused",
            (false, true) => "running",
            (false, false) => "idle",
        };
        publish(&learner, node.settings.read().planner_model);
    }
}

/// How often a running trainer is checked against the migrations (the samples are taken
/// every [`sampler::SAMPLE_EVERY`], 2 s: a trainer was still taking a core 0.5 s into a
/// move, through the plan and the eager push).
const MOVE_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether a group this node hosts takes part in a migration: the topology plans one
/// from or to it (from the moment `cluster reshard` writes it, before the plan is asked
/// for), or its replica of the group holds a migration's state (sealed, importing, or
/// draining).
fn migrating(node: &Node) -> bool {
    let Some(groups) = node.groups() else {
        return false;
    };
    groups.hosted.values().any(|g| g.status.may_migrate())
        || node
            .membership
            .read()
            .migrations
            .iter()
            .any(|m| groups.hosted.contains_key(&m.source) || groups.hosted.contains_key(&m.target))
}

/// The process id of the trainer process running now (0: none). A lock, not an atomic:
/// the pid is cleared under it before the child is reaped, so a kill under it never
/// reaches a process that took a reaped trainer's pid.
static TRAINER_PID: parking_lot::Mutex<u32> = parking_lot::Mutex::new(0);

/// Whether a trainer process runs now.
fn trainer_running() -> bool {
    *TRAINER_PID.lock() != 0
}

/// Stops the trainer process if one runs (its training ends as failed, and the next
/// starts when no migration runs here any more).
fn stop_trainer() {
    let pid = TRAINER_PID.lock();
    if *pid != 0 {
        // SAFETY: kill(2) with a pid and a signal number; no memory is passed. The pid is
        // our own child's, not reaped yet (see `TRAINER_PID`).
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// The argument that makes `kelvin-server` a trainer ([`trainer_main`]) instead of a
/// server. Not a flag of `--help`: only the server runs it, on itself.
pub const TRAINER_ARG: &str = "--kelvin-train-planner";

/// The executable that trains in a process of its own ([`use_trainer_process`]).
static TRAINER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Trainings run as `exe` [`TRAINER_ARG`] from now on (`exe` must call [`trainer_main`]
/// when given it: `kelvin-server` does). Without it they run on a thread.
pub fn use_trainer_process(exe: std::path::PathBuf) {
    let _ = TRAINER.set(exe);
}

/// Trains on `samples` in a child `exe` [`TRAINER_ARG`]. The samples are streamed to it
/// (no copy of them here); its answer is at most [`wire::MAX_REPLY_BYTES`]. `None` when
/// the child cannot be started (then the thread trains, as without a trainer process).
fn train_in_process(exe: &std::path::Path, samples: &[Sample]) -> Option<Result<Model, String>> {
    use std::process::{Command, Stdio};
    let child = Command::new(exe)
        .arg(TRAINER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    match child {
        Ok(child) => Some(talk_to_trainer(child, samples)),
        Err(e) => {
            tracing::warn!(exe = %exe.display(), error = %e,
                "planner: cannot start a trainer process; training on a thread");
            None
        }
    }
}

/// Sends `samples` to a started trainer and reads its outcome.
fn talk_to_trainer(mut child: std::process::Child, samples: &[Sample]) -> Result<Model, String> {
    use std::io::{Read, Write};
    // Both are piped by the caller, so both are there.
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the trainer has no stdin or stdout".into());
    };
    *TRAINER_PID.lock() = child.id();
    // The child reads all of its input before it answers: written in full, then closed.
    let mut input = std::io::BufWriter::new(stdin);
    let sent = wire::write_samples(&mut input, samples).and_then(|()| input.flush());
    drop(input);
    let mut reply = Vec::new();
    let read = stdout
        .take(wire::MAX_REPLY_BYTES as u64 + 1)
        .read_to_end(&mut reply);
    // Cleared before the wait reaps the child: once reaped, its pid may be reused.
    *TRAINER_PID.lock() = 0;
    let status = child.wait();
    sent.map_err(|e| format!("cannot send the samples to the trainer: {e}"))?;
    read.map_err(|e| format!("cannot read the trainer's answer: {e}"))?;
    match status {
        Ok(s) if s.success() => wire::read_outcome(&reply),
        #[cfg(unix)]
        Ok(s) if std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL) => {
            Err("the trainer was stopped: a migration began here".into())
        }
        Ok(s) => Err(format!("the trainer ended with {s}")),
        Err(e) => Err(format!("cannot wait for the trainer: {e}")),
    }
}

/// The trainer process's whole life (`kelvin-server` [`TRAINER_ARG`]): samples from
/// stdin, the outcome to stdout, at the lowest priority. The exit code: 0 when it
/// answered (a model or why none), 1 when its input or output failed.
pub fn trainer_main() -> i32 {
    use std::io::{Read, Write};
    lowest_priority();
    background_process();
    let mut input = Vec::new();
    let limit = wire::MAX_SAMPLES_BYTES as u64 + 1;
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut input) {
        eprintln!("kelvin planner trainer: cannot read the samples: {e}");
        return 1;
    }
    let outcome = wire::read_samples(&input)
        .map_err(|e| format!("the samples the trainer got: {e}"))
        .and_then(|samples| Model::train(&samples));
    let mut out = std::io::stdout().lock();
    match out
        .write_all(&wire::write_outcome(&outcome))
        .and_then(|()| out.flush())
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kelvin planner trainer: cannot answer: {e}");
            1
        }
    }
}

/// Makes the trainer process a background one for the kernel's scheduler as a whole,
/// not only among the server's threads ([`crate::store::background_session`]: in the
/// server's session it took 70% of both cores while the server slept between requests,
/// and all four nodes of a 1M-session move stalled together for 60-110 ms every few
/// seconds, `perf sched timehist`), and killed with the server.
fn background_process() {
    crate::store::background_session();
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) sets this process's signal on its parent's death.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// Puts the calling thread in SCHED_IDLE: it runs only on a core nothing else wants. A
/// training is a bonus; it must never take a core from a request.
fn lowest_priority() {
    // SAFETY: sched_setscheduler reads the param struct we pass by pointer, valid for the
    // call; pid 0 names the calling thread. A failure leaves the thread at nice 19.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            crate::store::background_priority();
        }
    }
}
