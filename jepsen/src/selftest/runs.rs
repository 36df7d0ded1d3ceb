//! A valid run's history and facts, and the same with one hole each in the facts.

use super::*;

// ---- runs: a valid history, and the facts around it with one hole each ----

/// A valid mixed history (final reads included) and facts that pass.
pub(super) fn run_valid() -> (Vec<Op>, RunFacts) {
    let all = vec![Workload::Register, Workload::ListAppend, Workload::Sessions];
    let ops = long(all, 2, 1500, 21);
    let digests: SlotDigests = [(5, (2, "a1".to_string())), (9, (1, "b2".to_string()))]
        .into_iter()
        .collect();
    let replica = |node: &str| ReplicaContents {
        group: 1,
        node: node.to_string(),
        contents: Ok(digests.clone()),
    };
    // Each fault spans the whole history: the workload ran through it.
    let window_ns = (0, ops.iter().map(|o| o.time_ns).max().unwrap_or(0));
    let facts = RunFacts {
        ok_floor: 100,
        // The simulation's register keys see incrs: counters.
        key_types: vec!["counter", "list", "session"],
        worker_panics: Vec::new(),
        requested: vec!["kill-leader".into(), "pause".into()],
        faults: vec![
            FaultOutcome {
                fault: "kill-leader".into(),
                took_effect: true,
                detail: "n1 (leader of group 1)".into(),
                window_ns,
            },
            FaultOutcome {
                fault: "pause".into(),
                took_effect: false,
                detail: "n2: not paused".into(),
                window_ns,
            },
            FaultOutcome {
                fault: "pause".into(),
                took_effect: true,
                detail: "n3".into(),
                window_ns,
            },
        ],
        replicas: vec![replica("n1"), replica("n2"), replica("n3")],
        cluster: Vec::new(),
    };
    (ops, facts)
}

pub(super) fn run_too_few_ok() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    facts.ok_floor = 100_000;
    (ops, facts)
}

/// A register key whose final read failed (the others succeeded).
pub(super) fn run_final_read_failed() -> (Vec<Op>, RunFacts) {
    let (mut ops, facts) = run_valid();
    if let Some(last) = ops
        .iter_mut()
        .rev()
        .find(|o| o.process == FINAL_READ_PROCESS && o.f == F::Read && o.kind == Kind::Ok)
    {
        last.kind = Kind::Fail;
        last.value = "CLUSTERDOWN".into();
    }
    (ops, facts)
}

pub(super) fn run_worker_panicked() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    facts
        .worker_panics
        .push("worker 3: index out of bounds".into());
    (ops, facts)
}

/// Every attempt of one requested fault was a no-op.
pub(super) fn run_fault_no_op() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    for f in facts.faults.iter_mut().filter(|f| f.fault == "pause") {
        f.took_effect = false;
    }
    (ops, facts)
}

/// A fault that took effect after the workload had stopped (as when the workers reach
/// their operation cap before the nemesis ends).
pub(super) fn run_fault_without_load() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    let last = ops
        .iter()
        .filter(|o| o.process != FINAL_READ_PROCESS)
        .map(|o| o.time_ns)
        .max()
        .unwrap_or(0);
    if let Some(f) = facts.faults.iter_mut().find(|f| f.took_effect) {
        f.window_ns = (last + 1, last + 7_000_000_000);
    }
    (ops, facts)
}

/// One replica holds a different value in one slot (same key count).
pub(super) fn run_replicas_differ() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    if let Some(Ok(d)) = facts.replicas.last_mut().map(|r| &mut r.contents) {
        d.insert(9, (1, "c3".to_string()));
    }
    (ops, facts)
}

pub(super) fn run_replica_unreachable() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    if let Some(r) = facts.replicas.last_mut() {
        r.contents = Err("n3 does not answer".into());
    }
    (ops, facts)
}
