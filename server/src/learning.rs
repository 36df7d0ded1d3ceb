//! The node's side of the learned planner ([`crate::migrate::learn`]): a task that
//! observes a few random keys of every group this node leads every
//! [`sampler::SAMPLE_EVERY`], labels them a window later (`kelvin-planner-window`), and
//! retrains the model about every window ([`retrain_every`]) on a thread of its own at
//! the lowest priority, publishing each model for the planner and INFO. With the profiler off (`kelvin-profile-keys no`) it
//! observes nothing: the records it would read do not change.
//!
//! Nothing here holds a lock longer than a few lookups; training never runs on a thread
//! that serves requests.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::watch;

use crate::migrate::learn::{publish, retrain_every, sampler, Learner, Model};
use crate::node::Node;

/// What a training thread hands back: the model, and the samples it was given, to be
/// freed by the runtime's worker that allocated them. A free takes the lock of the
/// allocator arena the memory came from: a thread in SCHED_IDLE preempted while holding
/// a worker's arena lock keeps that worker waiting until a core is idle.
type Trained = (
    Result<Model, String>,
    Vec<crate::migrate::learn::model::Sample>,
);

/// Runs until shutdown.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut learner = Learner::new(node.settings.read().planner_window_ms);
    let mut rng = SmallRng::from_entropy();
    let mut tick = tokio::time::interval(sampler::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_training = Instant::now();
    let mut training: Option<(u64, tokio::sync::oneshot::Receiver<Trained>)> = None;
    publish(&learner, node.settings.read().planner_model);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
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
                Ok((outcome, samples)) => {
                    // Freed here, by the thread that allocated them (see `Trained`).
                    drop(samples);
                    if let Err(e) = &outcome {
                        tracing::debug!(error = %e, "planner: no model from this training");
                    }
                    learner.trained(outcome, *labelled, now);
                    training = None;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    learner.trained(Err("the training thread ended".into()), *labelled, now);
                    training = None;
                }
            }
        }
        if training.is_none()
            && last_training.elapsed() >= retrain_every(window_ms)
            && learner.wants_training()
        {
            last_training = Instant::now();
            let samples = learner.sampler.samples();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("kelvin-planner-train".into())
                .spawn(move || {
                    lowest_priority();
                    let model = Model::train(&samples);
                    let _ = tx.send((model, samples));
                });
            match spawned {
                Ok(_) => training = Some((learner.sampler.labelled, rx)),
                Err(e) => tracing::warn!(error = %e, "planner: cannot start a training thread"),
            }
        }
        publish(&learner, node.settings.read().planner_model);
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
