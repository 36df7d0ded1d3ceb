//! What a run must show besides a valid history before it may say `valid: true`.
//!
//! How it fits: `kelvin-jepsen run` gathers [`RunFacts`] while it runs (the workers that
//! panicked, every fault with whether it took effect, every replica's contents at the end,
//! what the nodes' logs say) and [`check_run`] judges them with the history. A history
//! can be valid because little happened: few operations went through, the final reads
//! failed, the faults were no-ops, a replica was skipped. Each of these makes the run
//! invalid here, with its own [`Reason`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{check_with, Options, Problem, Reason, Report, Verdict};
use crate::history::{pair, Kind, Outcome, Workload, F};
use crate::Op;

/// The process id of the final reads (one per key, after healing); no worker reaches
/// it (workers count up from 0 by their number).
pub const FINAL_READ_PROCESS: u64 = u64::MAX / 2;

/// One fault as the nemesis saw it end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultOutcome {
    /// The fault's name.
    pub fault: String,
    /// Whether the fault was confirmed in effect (the process gone, the rules installed,
    /// the container frozen, the leadership moved...); `false` for a no-op.
    pub took_effect: bool,
    /// What it did, or why it was a no-op.
    pub detail: String,
    /// From its start to its end, in the history's clock (`Op::time_ns`).
    pub window_ns: (u64, u64),
}

/// Per slot: (keys, digest of keys, values and TTLs), as `CLUSTER KELVIN-DIGEST` answers.
pub type SlotDigests = BTreeMap<u16, (u64, String)>;

/// One replica's contents at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaContents {
    /// The group.
    pub group: u64,
    /// The node holding the replica.
    pub node: String,
    /// Its digests, or why it could not be asked.
    pub contents: Result<SlotDigests, String>,
}

/// The kinds of key a run's floor applies to, as [`key_type`] names them.
pub const KEY_TYPES: [&str; 6] = ["register", "counter", "list", "string", "session", "bank"];

/// The kind of a key, from the functions its operations call: a register key sees
/// `INCR` never (a counter does), a list key `RPUSH`, a string key `APPEND`.
pub fn key_type<'a>(fs: impl IntoIterator<Item = &'a F>) -> &'static str {
    let (mut incr, mut string, mut kind) = (false, false, "register");
    for f in fs {
        incr |= *f == F::Incr;
        string |= matches!(f, F::AppendStr | F::ReadStr);
        kind = match f.workload() {
            Workload::Register => kind,
            Workload::ListAppend => "list",
            Workload::Sessions => "session",
            Workload::Bank => "bank",
        };
    }
    match kind {
        "register" if incr => "counter",
        "list" if string => "string",
        other => other,
    }
}

/// What the harness saw of a run, besides the history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFacts {
    /// Fewest `ok` operations each kind of key must have (final reads not counted).
    pub ok_floor: usize,
    /// The kinds of key the workers used ([`KEY_TYPES`]): each must reach the floor.
    pub key_types: Vec<&'static str>,
    /// Panic messages of worker threads.
    pub worker_panics: Vec<String>,
    /// The faults asked for, by name.
    pub requested: Vec<String>,
    /// Every fault injected.
    pub faults: Vec<FaultOutcome>,
    /// Every replica of every group at the end.
    pub replicas: Vec<ReplicaContents>,
    /// Other failures the harness noted (a node's log shows a panic, the nemesis failed,
    /// the cluster did not recover).
    pub cluster: Vec<String>,
}

/// Checks the history and the facts of a run: the history's parts as [`check_with`]
/// gives them, and the `run` part.
pub fn check_run(ops: &[Op], facts: &RunFacts, options: &Options) -> Report {
    let mut report = check_with(ops, options);
    report.run = judge(ops, facts);
    report
}

fn judge(ops: &[Op], facts: &RunFacts) -> Verdict {
    let mut problems = Vec::new();
    let paired = pair(ops);

    // The floor of `ok` operations per kind of key.
    let mut fs: BTreeMap<&str, Vec<F>> = BTreeMap::new();
    for op in &paired.operations {
        let seen = fs.entry(&op.key).or_default();
        if !seen.contains(&op.f) {
            seen.push(op.f);
        }
    }
    let types: BTreeMap<&str, &str> = fs.iter().map(|(k, f)| (*k, key_type(f))).collect();
    let mut ok: BTreeMap<&str, usize> = facts.key_types.iter().map(|t| (*t, 0)).collect();
    for op in &paired.operations {
        if op.outcome == Outcome::Ok && op.process != FINAL_READ_PROCESS {
            if let Some(t) = types.get(op.key.as_str()) {
                *ok.entry(t).or_default() += 1;
            }
        }
    }
    for (w, n) in &ok {
        if *n < facts.ok_floor {
            problems.push(Problem::new(
                Reason::TooFewOk,
                format!(
                    "run: {w} keys: {n} ok operations, fewer than the floor of {}",
                    facts.ok_floor
                ),
            ));
        }
    }

    // Every key the workers touched has a successful final read.
    let mut keys: BTreeMap<&str, F> = BTreeMap::new();
    let mut read_back: BTreeSet<&str> = BTreeSet::new();
    for op in &paired.operations {
        if op.process == FINAL_READ_PROCESS {
            if op.outcome == Outcome::Ok {
                read_back.insert(&op.key);
            }
        } else {
            keys.entry(&op.key).or_insert(op.f);
        }
    }
    let unread: Vec<&str> = keys
        .keys()
        .filter(|k| !read_back.contains(*k))
        .copied()
        .collect();
    if !unread.is_empty() {
        let shown: Vec<String> = unread.iter().take(10).map(|k| format!("{k:?}")).collect();
        problems.push(Problem::new(
            Reason::FinalReadFailed,
            format!(
                "run: {} keys have no successful final read: {}{}",
                unread.len(),
                shown.join(" "),
                if unread.len() > 10 { " ..." } else { "" }
            ),
        ));
    }

    for p in &facts.worker_panics {
        problems.push(Problem::new(
            Reason::WorkerPanicked,
            format!("run: a worker panicked: {p}"),
        ));
    }

    for name in &facts.requested {
        let tries: Vec<&FaultOutcome> = facts.faults.iter().filter(|f| f.fault == *name).collect();
        if !tries.iter().any(|f| f.took_effect) {
            let details: Vec<&str> = tries.iter().map(|f| f.detail.as_str()).collect();
            problems.push(Problem::new(
                Reason::FaultNeverTookEffect,
                format!(
                    "run: fault {name} never took effect ({} attempts, all no-ops{}{})",
                    tries.len(),
                    if details.is_empty() { "" } else { ": " },
                    details.join("; ")
                ),
            ));
        }
    }

    // Every fault that took effect had the workload running: some worker began an
    // operation between its start and its end.
    let began: Vec<u64> = ops
        .iter()
        .filter(|o| o.kind == Kind::Invoke && o.process != FINAL_READ_PROCESS)
        .map(|o| o.time_ns)
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    for f in facts.faults.iter().filter(|f| f.took_effect) {
        let (start, end) = f.window_ns;
        let first = began.partition_point(|t| *t < start);
        if began.get(first).is_none_or(|t| *t > end) {
            problems.push(Problem::new(
                Reason::FaultWithoutLoad,
                format!(
                    "run: fault {} ({}) from {:.1} s to {:.1} s: no worker began an operation \
                     during it (the last began at {:.1} s)",
                    f.fault,
                    f.detail,
                    start as f64 / 1e9,
                    end as f64 / 1e9,
                    began.last().map_or(0.0, |t| *t as f64 / 1e9)
                ),
            ));
        }
    }

    problems.extend(compare_replicas(&facts.replicas));
    for c in &facts.cluster {
        problems.push(Problem::new(Reason::Cluster, format!("run: {c}")));
    }
    Verdict {
        valid: problems.is_empty(),
        keys: keys.len(),
        ops: paired.operations.len(),
        problems,
    }
}

/// Every replica of a group must be askable and hold the same digests.
fn compare_replicas(replicas: &[ReplicaContents]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut by_group: BTreeMap<u64, Vec<(&str, &SlotDigests)>> = BTreeMap::new();
    for r in replicas {
        match &r.contents {
            Ok(d) => by_group.entry(r.group).or_default().push((&r.node, d)),
            Err(e) => problems.push(Problem::new(
                Reason::ReplicaUnreachable,
                format!(
                    "run: group {}: the replica on {} could not be asked for its contents: {e}",
                    r.group, r.node
                ),
            )),
        }
    }
    for (group, views) in by_group {
        let Some((first, reference)) = views.first() else {
            continue;
        };
        for (node, d) in &views[1..] {
            if d == reference {
                continue;
            }
            let slots: BTreeSet<u16> = reference.keys().chain(d.keys()).copied().collect();
            let differ: Vec<String> = slots
                .into_iter()
                .filter(|s| reference.get(s) != d.get(s))
                .take(8)
                .map(|s| {
                    let show = |x: Option<&(u64, String)>| {
                        x.map_or("nothing".to_string(), |(k, h)| format!("{k} keys {h}"))
                    };
                    format!(
                        "slot {s}: {} vs {}",
                        show(reference.get(&s)),
                        show(d.get(&s))
                    )
                })
                .collect();
            problems.push(Problem::new(
                Reason::ReplicasDiffer,
                format!(
                    "run: group {group}: the replicas on {first} and {node} differ: {}",
                    differ.join(", ")
                ),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_follow_the_functions_used() {
        assert_eq!(
            key_type(&[F::Read, F::Write, F::Cas, F::Delete]),
            "register"
        );
        assert_eq!(key_type(&[F::Read, F::Incr]), "counter");
        assert_eq!(key_type(&[F::Append, F::ReadList]), "list");
        assert_eq!(key_type(&[F::ReadStr, F::AppendStr]), "string");
        assert_eq!(key_type(&[F::HGetAll, F::HIncrBy, F::Expire]), "session");
        assert_eq!(key_type(&[F::Transfer, F::BankRead]), "bank");
        assert!(KEY_TYPES.iter().all(|t| !t.is_empty()));
    }
}
