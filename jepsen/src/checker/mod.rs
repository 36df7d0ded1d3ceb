//! The checkers, and [`check`], which runs them all on one history.
//!
//! How it fits: [`check`] pairs the records ([`crate::history::pair`]), reports malformed
//! records and keys used by two workloads as history problems, then hands the paired
//! operations to each checker; each keeps the functions of its workload and judges every
//! key separately:
//!
//! - [`register`]: linearizability of `GET`/`SET`/`INCR`/`DEL` per key;
//! - [`list_append`]: `RPUSH` of unique elements and `LRANGE 0 -1` reads: no duplicates,
//!   nothing invented or failed, reads ordered by prefix and real time, no acknowledged
//!   append lost;
//! - [`sessions`]: linearizability of whole hashes under `HSET`/`HGETALL`/`DEL`, with
//!   `EXPIRE` allowed to delete the key at any later time;
//! - [`bank`]: transfers between accounts of several groups and reads of all of them,
//!   each one transaction: no torn read, no lost or invented transfer, one serial order.
//!
//! The result is a [`Report`] with one [`Verdict`] per part; [`Report::verdict`] combines
//! them. Nothing here panics on a bad history: whatever cannot be interpreted becomes a
//! problem in a verdict.

pub mod bank;
mod linear;
pub mod list_append;
pub mod register;
pub mod run;
pub mod sessions;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{pair, Op, Operation, Workload};
use linear::{Failure, Limits};

/// Why a history (or a run) was rejected: one per kind of violation, so that a test can
/// tell a checker that rejected a bad history for the right reason from one that
/// rejected it by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A record that cannot be paired or interpreted (a completion without an
    /// invocation, a malformed value).
    Malformed,
    /// A key used by two workloads.
    MixedWorkloads,
    /// A read of a value (or field value) no write could have produced.
    NeverWritten,
    /// No order of the key's operations consistent with real time is a legal sequence.
    NotLinearizable,
    /// The linearizability search hit its bounds.
    Undecided,
    /// List: the same element appended twice (the checker needs unique elements).
    DuplicateAppend,
    /// List: an element twice in one read.
    DuplicateElement,
    /// List: an element no append carried.
    NeverAppended,
    /// List: an element of a failed append.
    FailedAppendVisible,
    /// List: an element read before its append was invoked.
    FutureAppend,
    /// List: two reads disagree on the order of their common elements.
    OrderDisagreement,
    /// List: a read shorter than one that completed before it began.
    StaleRead,
    /// List: a read misses an append acknowledged before the read began.
    LostAppend,
    /// List: a read misses an append acknowledged before the append of an element it
    /// holds began (so that element cannot come first).
    SkippedAppend,
    /// List: elements in an order their appends' real-time order forbids.
    ReorderedAppends,
    /// List or bank: acknowledged appends (transfers) and no successful read to show
    /// they survived.
    NoSuccessfulRead,
    /// Bank: a read shows part of a transfer, a balance its log does not add up to, or
    /// a total that is not conserved.
    TornRead,
    /// Bank: a read misses a transfer acknowledged before the read began.
    LostTransfer,
    /// Bank: a read shows a transfer that failed, was never made, was invoked after the
    /// read ended, touches another account, or shows one twice.
    PhantomTransfer,
    /// Bank: no serial order of the transfers agrees with the reads and real time (logs
    /// that disagree or go back, a cycle, an order against real time).
    TransferOrder,
    /// Run: fewer `ok` operations of a workload than the floor.
    TooFewOk,
    /// Run: a key's final read (after healing) did not succeed.
    FinalReadFailed,
    /// Run: a worker thread panicked (its operations stopped being recorded).
    WorkerPanicked,
    /// Run: a requested fault never took effect (every attempt was a no-op).
    FaultNeverTookEffect,
    /// Run: a fault took effect while no worker began an operation (the workload had
    /// stopped, at its operation cap or otherwise): it tested nothing.
    FaultWithoutLoad,
    /// Run: two replicas of a group hold different contents.
    ReplicasDiffer,
    /// Run: a replica could not be asked for its contents.
    ReplicaUnreachable,
    /// Run: a node panicked, did not recover, or the nemesis failed.
    Cluster,
}

/// One violation: its kind and a line in plain words naming the key and the culprits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The kind.
    pub reason: Reason,
    /// The explanation.
    pub text: String,
}

impl Problem {
    /// A problem of kind `reason`.
    pub fn new(reason: Reason, text: impl Into<String>) -> Problem {
        Problem {
            reason,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The judgement of one checker (or of all, combined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True iff `problems` is empty.
    pub valid: bool,
    /// Keys examined.
    pub keys: usize,
    /// Operations (paired invocations) examined.
    pub ops: usize,
    /// One per violation found.
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// The kinds of the problems found.
    pub fn reasons(&self) -> std::collections::BTreeSet<Reason> {
        self.problems.iter().map(|p| p.reason).collect()
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            valid: true,
            keys: 0,
            ops: 0,
            problems: Vec::new(),
        }
    }
}

/// Bounds on the linearizability searches (register and sessions), per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Search iterations before a key is reported undecided.
    pub max_search_steps: u64,
    /// Memory for the search's cache of explored configurations, in bytes.
    pub max_search_memory: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_search_steps: 50_000_000,
            max_search_memory: 512 << 20,
        }
    }
}

impl Options {
    fn limits(&self) -> Limits {
        Limits {
            max_steps: self.max_search_steps,
            max_cache_words: self.max_search_memory / 8,
        }
    }
}

/// The verdicts of one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Malformed records, keys used by more than one workload.
    pub history: Verdict,
    /// [`register::check`].
    pub register: Verdict,
    /// [`list_append::check`].
    pub list_append: Verdict,
    /// [`sessions::check`].
    pub sessions: Verdict,
    /// [`bank::check`].
    pub bank: Verdict,
    /// [`run::check_run`]: what a run must show besides its history (always valid for a
    /// history checked alone).
    pub run: Verdict,
}

impl Report {
    /// True iff every part is valid.
    pub fn valid(&self) -> bool {
        self.parts().iter().all(|(_, v)| v.valid)
    }

    /// The parts with their names, in a fixed order.
    pub fn parts(&self) -> [(&'static str, &Verdict); 6] {
        [
            ("history", &self.history),
            ("register", &self.register),
            ("list-append", &self.list_append),
            ("sessions", &self.sessions),
            ("bank", &self.bank),
            ("run", &self.run),
        ]
    }

    /// The kinds of every problem found.
    pub fn reasons(&self) -> std::collections::BTreeSet<Reason> {
        self.parts().iter().flat_map(|(_, v)| v.reasons()).collect()
    }

    /// All parts in one verdict: counts of the checkers summed (the history part's counts
    /// are the same operations again, so they are left out), problems concatenated.
    pub fn verdict(&self) -> Verdict {
        let mut all = Verdict::default();
        for (name, v) in self.parts() {
            if name != "history" && name != "run" {
                all.keys += v.keys;
                all.ops += v.ops;
            }
            all.problems.extend(v.problems.iter().cloned());
        }
        all.valid = all.problems.is_empty();
        all
    }
}

/// Runs every checker on `ops` with default [`Options`].
pub fn check(ops: &[Op]) -> Report {
    check_with(ops, &Options::default())
}

/// Runs every checker on `ops`.
pub fn check_with(ops: &[Op], options: &Options) -> Report {
    let paired = pair(ops);
    let mut history = Verdict {
        ops: paired.operations.len(),
        problems: paired
            .problems
            .into_iter()
            .map(|p| Problem::new(Reason::Malformed, p))
            .collect(),
        ..Verdict::default()
    };
    let mut workloads: BTreeMap<&str, Vec<Workload>> = BTreeMap::new();
    for op in &paired.operations {
        let w = workloads.entry(op.key.as_str()).or_default();
        if !w.contains(&op.f.workload()) {
            w.push(op.f.workload());
        }
    }
    history.keys = workloads.len();
    for (key, w) in &workloads {
        if w.len() > 1 {
            let names: Vec<&str> = w.iter().map(|w| w.name()).collect();
            history.problems.push(Problem::new(
                Reason::MixedWorkloads,
                format!(
                    "history: key {key:?} is used by more than one workload ({}); each \
                     checker sees only its own operations on it",
                    names.join(", ")
                ),
            ));
        }
    }
    history.valid = history.problems.is_empty();
    let operations = &paired.operations;
    Report {
        history,
        register: register::check(operations, options),
        list_append: list_append::check(operations),
        sessions: sessions::check(operations, options),
        bank: bank::check(operations),
        run: Verdict::default(),
    }
}

/// How many operations of a linearizable prefix an explanation lists.
const PREFIX_SHOWN: usize = 4;
/// How many refused operations an explanation lists.
const REFUSED_SHOWN: usize = 6;

/// One line explaining a failed linearizability search over `sources`.
fn explain_failure<S>(
    what: &str,
    failure: &Failure<S>,
    sources: &[&Operation],
    state: &str,
) -> Problem {
    let show = |i: usize| {
        sources
            .get(i)
            .map_or_else(|| format!("#{i}"), |op| op.to_string())
    };
    let n = failure.prefix.len();
    let mut s = format!(
        "{what}: not linearizable: the longest linearizable prefix found has {n} of {} \
         operations",
        sources.len()
    );
    if n == 0 {
        s.push_str(&format!(" (initial state {state})"));
    } else {
        let tail: Vec<String> = failure.prefix[n.saturating_sub(PREFIX_SHOWN)..]
            .iter()
            .map(|&i| show(i))
            .collect();
        let more = if n > PREFIX_SHOWN { "..., " } else { "" };
        s.push_str(&format!(" ({more}{}), leaving {state}", tail.join(", ")));
    }
    if let Some(b) = failure.blocker {
        s.push_str(&format!(
            "; then {} cannot take effect before its completion",
            show(b)
        ));
    }
    let mut others: Vec<usize> = Vec::new();
    for &i in &failure.refused {
        if Some(i) != failure.blocker && !others.contains(&i) {
            others.push(i);
        }
    }
    let refused: Vec<String> = others
        .iter()
        .take(REFUSED_SHOWN)
        .map(|&i| show(i))
        .collect();
    if !refused.is_empty() {
        let more = if others.len() > REFUSED_SHOWN {
            format!(" and {} more", others.len() - REFUSED_SHOWN)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "; other operations impossible in that state: {}{more}",
            refused.join(", ")
        ));
    }
    Problem::new(Reason::NotLinearizable, s)
}
