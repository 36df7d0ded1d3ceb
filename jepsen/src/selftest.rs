//! Known histories with known verdicts: the checker checking itself.
//!
//! How it fits: `kelvin-jepsen self-test` and the unit tests run [`cases`] through
//! [`crate::check`] and compare each verdict with the expected one. The bad histories
//! carry one violation each (a stale read, a lost write, a duplicate, a resurrected key,
//! ...); the good ones exercise what must be allowed (concurrency in either order, unknown
//! outcomes that did or did not take effect, failures that left no trace) and include
//! long simulated histories ([`crate::sim`]) to exercise performance.

use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use crate::checker::run::{
    check_run, FaultOutcome, ReplicaContents, RunFacts, SlotDigests, FINAL_READ_PROCESS,
};
use crate::checker::{check, Options, Reason, Report};
use crate::history::{Kind, Op, Recorder, Value, Workload, F};
use crate::sim::{simulate, SimConfig};

/// One history (and, for a run, the facts around it) and the verdict the checkers must
/// reach.
#[derive(Debug, Clone)]
pub struct Case {
    /// A short unique name.
    pub name: &'static str,
    /// True if the history is valid and must be accepted.
    pub expect_valid: bool,
    /// For a bad case, exactly the reasons it must be rejected for: rejected for another
    /// reason, the case fails (the checker would pass it by accident).
    pub reasons: Vec<Reason>,
    /// The records.
    pub history: Vec<Op>,
    /// For a run case, what the harness saw besides the history.
    pub facts: Option<RunFacts>,
}

/// The result of running one [`Case`].
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// What was expected.
    pub expect_valid: bool,
    /// The reasons expected.
    pub expect_reasons: BTreeSet<Reason>,
    /// The checkers' report.
    pub report: Report,
    /// Time spent checking.
    pub elapsed: Duration,
}

impl CaseResult {
    /// True if the verdict is the expected one, for exactly the expected reasons.
    pub fn passed(&self) -> bool {
        self.report.valid() == self.expect_valid && self.report.reasons() == self.expect_reasons
    }
}

/// Checks one case.
pub fn run(case: &Case) -> CaseResult {
    let start = Instant::now();
    let report = match &case.facts {
        Some(facts) => check_run(&case.history, facts, &Options::default()),
        None => check(&case.history),
    };
    CaseResult {
        name: case.name,
        expect_valid: case.expect_valid,
        expect_reasons: case.reasons.iter().copied().collect(),
        report,
        elapsed: start.elapsed(),
    }
}

/// A bad case: its name, the reasons it must be rejected for, and its history.
type Bad = (&'static str, &'static [Reason], fn() -> Vec<Op>);
/// A good case's name and the function building its history.
type Named = (&'static str, fn() -> Vec<Op>);
/// A run case: its name, the reason (`None`: valid), and its history and facts.
type RunCase = (&'static str, Option<Reason>, fn() -> (Vec<Op>, RunFacts));

/// Every case, bad ones first.
pub fn cases() -> Vec<Case> {
    use Reason::*;
    let bad: Vec<Bad> = vec![
        (
            "register-stale-read",
            &[NotLinearizable],
            register_stale_read,
        ),
        (
            "register-lost-write",
            &[NotLinearizable],
            register_lost_write,
        ),
        (
            "register-resurrected-key",
            &[NotLinearizable],
            register_resurrected_key,
        ),
        (
            "register-value-never-written",
            &[NeverWritten],
            register_value_never_written,
        ),
        (
            "register-failed-write-visible",
            &[NeverWritten],
            register_failed_write_visible,
        ),
        (
            "register-read-from-the-future",
            &[NotLinearizable],
            register_read_from_the_future,
        ),
        (
            "register-wrong-incr",
            &[NotLinearizable],
            register_wrong_incr,
        ),
        (
            "register-wrong-delete-count",
            &[NotLinearizable],
            register_wrong_delete_count,
        ),
        (
            "register-delete-count-of-missing-key",
            &[NotLinearizable],
            register_delete_count_of_missing_key,
        ),
        (
            "register-long-stale-final-read",
            &[NotLinearizable],
            register_long_stale_final_read,
        ),
        (
            "list-lost-append-final-read",
            &[LostAppend],
            list_lost_append_final_read,
        ),
        (
            "list-lost-append-later-read",
            &[LostAppend],
            list_lost_append_later_read,
        ),
        (
            "list-skipped-append-no-final-read",
            &[SkippedAppend],
            list_skipped_append_no_final_read,
        ),
        (
            "list-read-from-the-future",
            &[FutureAppend],
            list_read_from_the_future,
        ),
        (
            "list-duplicate-element",
            &[DuplicateElement],
            list_duplicate_element,
        ),
        (
            "list-value-never-appended",
            &[NeverAppended],
            list_value_never_appended,
        ),
        (
            "list-failed-append-visible",
            &[FailedAppendVisible],
            list_failed_append_visible,
        ),
        (
            "list-non-prefix-reads",
            &[OrderDisagreement],
            list_non_prefix_reads,
        ),
        (
            "list-order-disagreement-no-longer-read",
            &[OrderDisagreement],
            list_order_disagreement_no_longer_read,
        ),
        ("list-stale-read", &[StaleRead], list_stale_read),
        (
            "list-reordered-appends",
            &[ReorderedAppends],
            list_reordered_appends,
        ),
        (
            "list-no-successful-read",
            &[NoSuccessfulRead],
            list_no_successful_read,
        ),
        (
            "list-long-lost-append",
            &[LostAppend, OrderDisagreement],
            list_long_lost_append,
        ),
        (
            "sessions-resurrected-key",
            &[NotLinearizable],
            sessions_resurrected_key,
        ),
        ("sessions-lost-hset", &[NotLinearizable], sessions_lost_hset),
        (
            "sessions-value-never-written",
            &[NeverWritten],
            sessions_value_never_written,
        ),
        (
            "sessions-expire-outlives-del",
            &[NotLinearizable],
            sessions_expire_outlives_del,
        ),
        (
            "sessions-expire-outlives-new-hset",
            &[NotLinearizable],
            sessions_expire_outlives_new_hset,
        ),
        (
            "history-completion-without-invocation",
            &[Malformed],
            history_malformed,
        ),
        (
            "register-cas-over-a-changed-value",
            &[NotLinearizable],
            register_cas_over_a_changed_value,
        ),
        ("string-lost-append", &[LostAppend], string_lost_append),
        (
            "sessions-lost-hincrby",
            &[NotLinearizable],
            sessions_lost_hincrby,
        ),
    ];
    let good: Vec<Named> = vec![
        (
            "register-concurrent-writes-one-order",
            register_concurrent_one_order,
        ),
        (
            "register-concurrent-writes-other-order",
            register_concurrent_other_order,
        ),
        ("register-info-write-took-effect", register_info_took_effect),
        (
            "register-info-write-never-took-effect",
            register_info_never_took_effect,
        ),
        (
            "register-info-write-took-effect-late",
            register_info_took_effect_late,
        ),
        (
            "register-failed-write-invisible",
            register_failed_write_invisible,
        ),
        ("register-incr-delete-concurrent", register_incr_delete),
        ("list-concurrent-read-sees-append", list_read_sees_append),
        (
            "list-concurrent-read-misses-append",
            list_read_misses_append,
        ),
        ("list-info-append-took-effect", list_info_append_took_effect),
        ("list-info-append-never-took-effect", list_info_append_never),
        ("list-failed-append-invisible", list_failed_append_invisible),
        ("sessions-basic", sessions_basic),
        ("sessions-expire-then-gone", sessions_expire_then_gone),
        ("sessions-concurrent-hset-and-read", sessions_concurrent),
        ("register-cas-and-aborted-cas", register_cas),
        ("string-appends-read-back", string_appends),
        ("sessions-hincrby-and-hset", sessions_hincrby),
        (
            "sessions-hset-keeps-the-ttl-of-an-existing-key",
            sessions_hset_keeps_ttl,
        ),
        ("register-long-random", register_long_random),
        ("register-long-random-5-keys", register_long_random_keys),
        ("list-long-random", list_long_random),
        ("sessions-long-random", sessions_long_random),
        ("mixed-long-random", mixed_long_random),
        ("empty-history", Vec::new),
    ];
    let runs: Vec<RunCase> = vec![
        ("run-too-few-ok", Some(TooFewOk), run_too_few_ok),
        (
            "run-final-read-failed",
            Some(FinalReadFailed),
            run_final_read_failed,
        ),
        (
            "run-worker-panicked",
            Some(WorkerPanicked),
            run_worker_panicked,
        ),
        (
            "run-fault-no-op",
            Some(FaultNeverTookEffect),
            run_fault_no_op,
        ),
        (
            "run-fault-without-load",
            Some(FaultWithoutLoad),
            run_fault_without_load,
        ),
        (
            "run-replicas-differ",
            Some(ReplicasDiffer),
            run_replicas_differ,
        ),
        (
            "run-replica-unreachable",
            Some(ReplicaUnreachable),
            run_replica_unreachable,
        ),
        ("run-valid", None, run_valid),
    ];
    let bad = bad.into_iter().map(|(name, reasons, f)| Case {
        name,
        expect_valid: false,
        reasons: reasons.to_vec(),
        history: f(),
        facts: None,
    });
    let good = good.into_iter().map(|(name, f)| Case {
        name,
        expect_valid: true,
        reasons: Vec::new(),
        history: f(),
        facts: None,
    });
    let runs = runs.into_iter().map(|(name, reason, f)| {
        let (history, facts) = f();
        Case {
            name,
            expect_valid: reason.is_none(),
            reasons: reason.into_iter().collect(),
            history,
            facts: Some(facts),
        }
    });
    bad.chain(runs).chain(good).collect()
}

/// Invokes and completes `Ok` at once (no concurrency).
fn done(r: &Recorder, process: u64, f: F, key: &str, input: Value, output: Value) {
    let op = r.invoke(process, f, key, input);
    r.ok(&op, output);
}

fn write(r: &Recorder, p: u64, key: &str, v: i64) {
    done(r, p, F::Write, key, Value::Int(v), Value::None);
}

fn read(r: &Recorder, p: u64, key: &str, v: Value) {
    done(r, p, F::Read, key, Value::None, v);
}

fn append(r: &Recorder, p: u64, key: &str, v: i64) {
    done(r, p, F::Append, key, Value::Int(v), Value::None);
}

fn read_list(r: &Recorder, p: u64, key: &str, elements: &[i64]) {
    let list = Value::list(elements.iter().copied());
    done(r, p, F::ReadList, key, Value::None, list);
}

fn hset(r: &Recorder, p: u64, key: &str, field: &str, v: &str) {
    done(r, p, F::HSet, key, Value::map([(field, v)]), Value::Int(1));
}

/// `HINCRBY key n 1` returning `new`.
fn hincrby(r: &Recorder, p: u64, key: &str, new: i64) {
    done(
        r,
        p,
        F::HIncrBy,
        key,
        Value::map([("n", 1)]),
        Value::Int(new),
    );
}

fn hgetall(r: &Recorder, p: u64, key: &str, fields: &[(&str, &str)]) {
    let map = Value::map(fields.iter().copied());
    done(r, p, F::HGetAll, key, Value::None, map);
}

// ---- bad: registers ----

fn register_stale_read() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    write(&r, 2, "x", 2);
    read(&r, 3, "x", Value::Int(1));
    r.into_ops()
}

fn register_lost_write() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    read(&r, 2, "x", Value::None);
    r.into_ops()
}

fn register_resurrected_key() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    done(&r, 1, F::Delete, "x", Value::None, Value::Int(1));
    read(&r, 2, "x", Value::Int(1));
    r.into_ops()
}

fn register_value_never_written() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    read(&r, 2, "x", Value::Str("42".into()));
    r.into_ops()
}

fn register_failed_write_visible() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(1, F::Write, "x", Value::Int(3));
    r.fail(&w, "READONLY".into());
    read(&r, 2, "x", Value::Int(3));
    r.into_ops()
}

fn register_read_from_the_future() -> Vec<Op> {
    let r = Recorder::new();
    read(&r, 2, "x", Value::Int(1));
    write(&r, 1, "x", 1);
    r.into_ops()
}

fn register_wrong_incr() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 5);
    done(&r, 1, F::Incr, "x", Value::None, Value::Int(7));
    r.into_ops()
}

fn register_wrong_delete_count() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 5);
    done(&r, 1, F::Delete, "x", Value::None, Value::Int(0));
    r.into_ops()
}

/// A long valid register history whose final read is changed to a string value that an
/// earlier write stored and a later write (invoked after it completed) replaced.
fn register_long_stale_final_read() -> Vec<Op> {
    let mut ops = long(vec![Workload::Register], 1, 2000, 7);
    make_final_read_stale(&mut ops);
    ops
}

/// Replaces the value of the last `Ok` register read with an overwritten string value.
/// Returns false if the history has no suitable write.
pub(crate) fn make_final_read_stale(ops: &mut [Op]) -> bool {
    let paired = crate::history::pair(ops);
    let writes: Vec<_> = paired
        .operations
        .iter()
        .filter(|o| o.f == F::Write && o.outcome == crate::history::Outcome::Ok)
        .collect();
    let stale = writes.iter().find(|w| {
        matches!(w.input, Value::Str(_))
            && writes
                .iter()
                .any(|later| w.complete.is_some_and(|c| later.invoke > c))
    });
    let Some(stale) = stale else { return false };
    let Some(last) = ops
        .iter_mut()
        .rev()
        .find(|o| o.f == F::Read && o.kind == Kind::Ok)
    else {
        return false;
    };
    last.value = stale.input.clone();
    true
}

// ---- bad: lists ----

fn list_lost_append_final_read() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    read_list(&r, 3, "l", &[1]);
    r.into_ops()
}

fn list_lost_append_later_read() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    read_list(&r, 2, "l", &[]);
    read_list(&r, 3, "l", &[1]);
    r.into_ops()
}

fn list_duplicate_element() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    read_list(&r, 3, "l", &[1, 2, 2]);
    r.into_ops()
}

fn list_value_never_appended() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    read_list(&r, 3, "l", &[1, 9]);
    r.into_ops()
}

fn list_failed_append_visible() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.fail(&a, "CLUSTERDOWN".into());
    read_list(&r, 3, "l", &[1, 2]);
    r.into_ops()
}

fn list_non_prefix_reads() -> Vec<Op> {
    let r = Recorder::new();
    let a1 = r.invoke(1, F::Append, "l", Value::Int(1));
    let a2 = r.invoke(2, F::Append, "l", Value::Int(2));
    let a3 = r.invoke(3, F::Append, "l", Value::Int(3));
    read_list(&r, 4, "l", &[1, 2]);
    read_list(&r, 5, "l", &[1, 3]);
    r.ok(&a1, Value::None);
    r.ok(&a2, Value::None);
    r.ok(&a3, Value::None);
    read_list(&r, 4, "l", &[1, 2, 3]);
    r.into_ops()
}

fn list_stale_read() -> Vec<Op> {
    let r = Recorder::new();
    let a1 = r.invoke(1, F::Append, "l", Value::Int(1));
    let a2 = r.invoke(2, F::Append, "l", Value::Int(2));
    read_list(&r, 3, "l", &[1, 2]);
    read_list(&r, 4, "l", &[1]);
    r.ok(&a1, Value::None);
    r.ok(&a2, Value::None);
    read_list(&r, 3, "l", &[1, 2]);
    r.into_ops()
}

fn list_reordered_appends() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    read_list(&r, 3, "l", &[2, 1]);
    r.into_ops()
}

/// A long valid list history whose final read of one key loses an acknowledged append
/// (its first element: the final read then also disagrees with the earlier reads on the
/// order, as it holds the second element first).
fn list_long_lost_append() -> Vec<Op> {
    let mut ops = long(vec![Workload::ListAppend], 1, 2000, 11);
    drop_acked_from_final_read(&mut ops);
    ops
}

/// Removes an element of an acknowledged append from the last `Ok` list read. Returns
/// false if there is none.
pub(crate) fn drop_acked_from_final_read(ops: &mut [Op]) -> bool {
    let paired = crate::history::pair(ops);
    let Some(last) = ops
        .iter_mut()
        .rev()
        .find(|o| o.f == F::ReadList && o.kind == Kind::Ok)
    else {
        return false;
    };
    let acked: Vec<Value> = paired
        .operations
        .iter()
        .filter(|o| {
            o.f == F::Append && o.key == last.key && o.outcome == crate::history::Outcome::Ok
        })
        .map(|o| o.input.clone())
        .collect();
    let Value::List(items) = &mut last.value else {
        return false;
    };
    let Some(pos) = items.iter().position(|e| acked.contains(e)) else {
        return false;
    };
    items.remove(pos);
    true
}

// ---- bad: sessions and malformed ----

fn sessions_resurrected_key() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Del, "s", Value::None, Value::Int(1));
    hgetall(&r, 2, "s", &[("user", "ann")]);
    r.into_ops()
}

fn sessions_lost_hset() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    hset(&r, 1, "s", "cart", "3");
    hgetall(&r, 2, "s", &[("user", "ann")]);
    r.into_ops()
}

fn sessions_value_never_written() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    hgetall(&r, 2, "s", &[("user", "bob")]);
    r.into_ops()
}

fn history_malformed() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let mut ops = r.into_ops();
    ops.push(Op {
        index: 2,
        process: 9,
        kind: Kind::Ok,
        f: F::Read,
        key: "x".into(),
        value: Value::Int(1),
        time_ns: 0,
    });
    ops
}

// ---- bad: the holes closed for issue 14 ----

fn register_delete_count_of_missing_key() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 5);
    done(&r, 1, F::Delete, "x", Value::None, Value::Int(1));
    done(&r, 2, F::Delete, "x", Value::None, Value::Int(1));
    r.into_ops()
}

/// A read that holds element 2 but not 1, whose append was acknowledged before the
/// append of 2 began; the read itself began before either, and no longer read follows.
fn list_skipped_append_no_final_read() -> Vec<Op> {
    let r = Recorder::new();
    let read = r.invoke(3, F::ReadList, "l", Value::None);
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    r.ok(&read, Value::list([2]));
    r.into_ops()
}

fn list_read_from_the_future() -> Vec<Op> {
    let r = Recorder::new();
    read_list(&r, 2, "l", &[1]);
    append(&r, 1, "l", 1);
    read_list(&r, 2, "l", &[1]);
    r.into_ops()
}

/// Two concurrent reads that disagree on the order of 1 and 2, with no longer read to
/// compare them with.
fn list_order_disagreement_no_longer_read() -> Vec<Op> {
    let r = Recorder::new();
    let a1 = r.invoke(1, F::Append, "l", Value::Int(1));
    let a2 = r.invoke(2, F::Append, "l", Value::Int(2));
    read_list(&r, 3, "l", &[1, 2]);
    read_list(&r, 4, "l", &[2, 1]);
    r.ok(&a1, Value::None);
    r.ok(&a2, Value::None);
    r.into_ops()
}

fn list_no_successful_read() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let read = r.invoke(2, F::ReadList, "l", Value::None);
    r.fail(&read, "CLUSTERDOWN".into());
    r.into_ops()
}

/// `DEL` clears the TTL with the key: a key written again after it cannot expire.
fn sessions_expire_outlives_del() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    done(&r, 1, F::Del, "s", Value::None, Value::Int(1));
    hset(&r, 1, "s", "user", "bob");
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

/// A key that expired and was created again by `HSET` has no TTL.
fn sessions_expire_outlives_new_hset() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    hgetall(&r, 2, "s", &[]);
    hset(&r, 1, "s", "user", "bob");
    hgetall(&r, 2, "s", &[("user", "bob")]);
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

/// A cas acknowledged as replacing 1, though 2 had replaced 1 before it began.
fn register_cas_over_a_changed_value() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    write(&r, 1, "x", 2);
    done(&r, 2, F::Cas, "x", Value::Int(3), Value::Int(1));
    r.into_ops()
}

fn string_lost_append() -> Vec<Op> {
    let r = Recorder::new();
    done(&r, 1, F::AppendStr, "a", Value::Int(1), Value::Int(2));
    done(&r, 1, F::AppendStr, "a", Value::Int(2), Value::Int(4));
    done(&r, 2, F::ReadStr, "a", Value::None, "1,".into());
    r.into_ops()
}

fn sessions_lost_hincrby() -> Vec<Op> {
    let r = Recorder::new();
    hincrby(&r, 1, "s", 1);
    hincrby(&r, 1, "s", 2);
    hgetall(&r, 2, "s", &[("n", "1")]);
    r.into_ops()
}

// ---- runs: a valid history, and the facts around it with one hole each ----

/// A valid mixed history (final reads included) and facts that pass.
fn run_valid() -> (Vec<Op>, RunFacts) {
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

fn run_too_few_ok() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    facts.ok_floor = 100_000;
    (ops, facts)
}

/// A register key whose final read failed (the others succeeded).
fn run_final_read_failed() -> (Vec<Op>, RunFacts) {
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

fn run_worker_panicked() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    facts
        .worker_panics
        .push("worker 3: index out of bounds".into());
    (ops, facts)
}

/// Every attempt of one requested fault was a no-op.
fn run_fault_no_op() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    for f in facts.faults.iter_mut().filter(|f| f.fault == "pause") {
        f.took_effect = false;
    }
    (ops, facts)
}

/// A fault that took effect after the workload had stopped (as when the workers reach
/// their operation cap before the nemesis ends).
fn run_fault_without_load() -> (Vec<Op>, RunFacts) {
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
fn run_replicas_differ() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    if let Some(Ok(d)) = facts.replicas.last_mut().map(|r| &mut r.contents) {
        d.insert(9, (1, "c3".to_string()));
    }
    (ops, facts)
}

fn run_replica_unreachable() -> (Vec<Op>, RunFacts) {
    let (ops, mut facts) = run_valid();
    if let Some(r) = facts.replicas.last_mut() {
        r.contents = Err("n3 does not answer".into());
    }
    (ops, facts)
}

// ---- good ----

fn register_concurrent(first: i64, second: i64) -> Vec<Op> {
    let r = Recorder::new();
    let w1 = r.invoke(1, F::Write, "x", Value::Int(1));
    let w2 = r.invoke(2, F::Write, "x", Value::Int(2));
    read(&r, 3, "x", Value::Int(first));
    read(&r, 3, "x", Value::Int(second));
    r.ok(&w2, Value::None);
    r.ok(&w1, Value::None);
    read(&r, 3, "x", Value::Int(second));
    r.into_ops()
}

fn register_concurrent_one_order() -> Vec<Op> {
    register_concurrent(1, 2)
}

fn register_concurrent_other_order() -> Vec<Op> {
    register_concurrent(2, 1)
}

fn register_info_took_effect() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.info(&w, "timeout".into());
    read(&r, 3, "x", Value::Int(5));
    r.into_ops()
}

fn register_info_never_took_effect() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.info(&w, "timeout".into());
    read(&r, 3, "x", Value::Int(1));
    read(&r, 3, "x", Value::Int(1));
    r.into_ops()
}

fn register_info_took_effect_late() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.info(&w, "timeout".into());
    read(&r, 3, "x", Value::Int(1));
    read(&r, 3, "x", Value::Int(5));
    r.into_ops()
}

fn register_failed_write_invisible() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.fail(&w, "READONLY".into());
    read(&r, 3, "x", Value::Int(1));
    r.into_ops()
}

fn register_incr_delete() -> Vec<Op> {
    let r = Recorder::new();
    done(&r, 1, F::Incr, "x", Value::None, Value::Int(1));
    let i = r.invoke(1, F::Incr, "x", Value::None);
    let d = r.invoke(2, F::Delete, "x", Value::None);
    read(&r, 3, "x", Value::Int(2));
    r.ok(&d, Value::Int(1));
    r.ok(&i, Value::Int(2));
    read(&r, 3, "x", Value::None);
    let lost = r.invoke(4, F::Incr, "x", Value::None);
    r.info(&lost, "timeout".into());
    done(&r, 5, F::Incr, "x", Value::None, Value::Str("2".into()));
    done(&r, 5, F::Write, "x", Value::Str("text".into()), Value::None);
    let bad = r.invoke(5, F::Incr, "x", Value::None);
    r.fail(&bad, "ERR value is not an integer or out of range".into());
    read(&r, 3, "x", Value::Str("text".into()));
    r.into_ops()
}

fn list_read_sees_append() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(1, F::Append, "l", Value::Int(2));
    read_list(&r, 2, "l", &[1, 2]);
    r.ok(&a, Value::None);
    read_list(&r, 2, "l", &[1, 2]);
    r.into_ops()
}

fn list_read_misses_append() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(1, F::Append, "l", Value::Int(2));
    read_list(&r, 2, "l", &[1]);
    r.ok(&a, Value::None);
    read_list(&r, 2, "l", &[1, 2]);
    r.into_ops()
}

fn list_info_append_took_effect() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.info(&a, "timeout".into());
    read_list(&r, 3, "l", &[1]);
    append(&r, 3, "l", 3);
    read_list(&r, 3, "l", &[1, 2, 3]);
    r.into_ops()
}

fn list_info_append_never() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.info(&a, "timeout".into());
    append(&r, 3, "l", 3);
    read_list(&r, 3, "l", &[1, 3]);
    r.into_ops()
}

fn list_failed_append_invisible() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.fail(&a, "CLUSTERDOWN".into());
    read_list(&r, 3, "l", &[1]);
    r.into_ops()
}

fn sessions_basic() -> Vec<Op> {
    let r = Recorder::new();
    hgetall(&r, 1, "s", &[]);
    hset(&r, 1, "s", "user", "ann");
    hset(&r, 1, "s", "cart", "3");
    hgetall(&r, 2, "s", &[("user", "ann"), ("cart", "3")]);
    done(&r, 1, F::Del, "s", Value::None, Value::Int(1));
    hgetall(&r, 2, "s", &[]);
    done(&r, 1, F::Del, "s", Value::None, Value::Int(0));
    hset(&r, 1, "s", "user", "bob");
    hgetall(&r, 2, "s", &[("user", "bob")]);
    r.into_ops()
}

fn sessions_expire_then_gone() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    hgetall(&r, 2, "s", &[("user", "ann")]);
    hgetall(&r, 2, "s", &[]);
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(0));
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

fn sessions_concurrent() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    let h = r.invoke(
        1,
        F::HSet,
        "s",
        Value::map([("user", "bob"), ("cart", "1")]),
    );
    hgetall(&r, 2, "s", &[("user", "ann")]);
    hgetall(&r, 3, "s", &[("user", "bob"), ("cart", "1")]);
    r.ok(&h, Value::Int(1));
    hgetall(&r, 2, "s", &[("user", "bob"), ("cart", "1")]);
    r.into_ops()
}

/// Compare-and-set: one that ran, one aborted (`fail`), one unknown that took effect.
fn register_cas() -> Vec<Op> {
    let r = Recorder::new();
    done(&r, 1, F::Cas, "x", Value::Int(1), Value::None);
    let aborted = r.invoke(2, F::Cas, "x", Value::Int(5));
    write(&r, 1, "x", 2);
    r.fail(&aborted, Value::None);
    let unknown = r.invoke(3, F::Cas, "x", Value::Int(3));
    r.info(&unknown, Value::Int(2));
    read(&r, 4, "x", Value::Int(3));
    r.into_ops()
}

fn string_appends() -> Vec<Op> {
    let r = Recorder::new();
    done(&r, 2, F::ReadStr, "a", Value::None, Value::None);
    done(&r, 1, F::AppendStr, "a", Value::Int(1), Value::Int(2));
    let a = r.invoke(1, F::AppendStr, "a", Value::Int(2));
    done(&r, 2, F::ReadStr, "a", Value::None, "1,".into());
    r.ok(&a, Value::Int(4));
    done(&r, 2, F::ReadStr, "a", Value::None, "1,2,".into());
    r.into_ops()
}

fn sessions_hincrby() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    hincrby(&r, 1, "s", 1);
    let lost = r.invoke(2, F::HIncrBy, "s", Value::map([("n", 1)]));
    r.info(&lost, "timeout".into());
    hgetall(&r, 3, "s", &[("user", "ann"), ("n", "2")]);
    hincrby(&r, 1, "s", 3);
    done(&r, 1, F::Del, "s", Value::None, Value::Int(1));
    hincrby(&r, 1, "s", 1);
    hgetall(&r, 3, "s", &[("n", "1")]);
    r.into_ops()
}

/// `HSET` on an existing key keeps its TTL: the key may still expire.
fn sessions_hset_keeps_ttl() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    hset(&r, 1, "s", "cart", "3");
    hgetall(&r, 2, "s", &[("user", "ann"), ("cart", "3")]);
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

fn long(workloads: Vec<Workload>, keys: usize, ops: usize, seed: u64) -> Vec<Op> {
    simulate(&SimConfig {
        processes: 5,
        ops,
        keys,
        workloads,
        info_rate: 0.03,
        fail_rate: 0.03,
        seed,
    })
}

fn register_long_random() -> Vec<Op> {
    long(vec![Workload::Register], 1, 2000, 1)
}

fn register_long_random_keys() -> Vec<Op> {
    long(vec![Workload::Register], 5, 5000, 2)
}

fn list_long_random() -> Vec<Op> {
    long(vec![Workload::ListAppend], 1, 2000, 3)
}

fn sessions_long_random() -> Vec<Op> {
    long(vec![Workload::Sessions], 2, 2000, 4)
}

fn mixed_long_random() -> Vec<Op> {
    let all = vec![Workload::Register, Workload::ListAppend, Workload::Sessions];
    long(all, 3, 3000, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test per case, so a failure names it.
    macro_rules! case_tests {
        ($($test:ident => $name:literal),* $(,)?) => {
            $(
                #[test]
                fn $test() {
                    let case = cases()
                        .into_iter()
                        .find(|c| c.name == $name)
                        .expect("case exists");
                    let result = run(&case);
                    assert!(
                        result.passed(),
                        "{}: expected valid={} for {:?}, got {:#?}",
                        case.name,
                        case.expect_valid,
                        case.reasons,
                        result.report
                    );
                }
            )*
        };
    }

    case_tests! {
        register_stale_read_rejected => "register-stale-read",
        register_lost_write_rejected => "register-lost-write",
        register_resurrected_key_rejected => "register-resurrected-key",
        register_value_never_written_rejected => "register-value-never-written",
        register_failed_write_visible_rejected => "register-failed-write-visible",
        register_read_from_the_future_rejected => "register-read-from-the-future",
        register_wrong_incr_rejected => "register-wrong-incr",
        register_wrong_delete_count_rejected => "register-wrong-delete-count",
        register_long_stale_final_read_rejected => "register-long-stale-final-read",
        list_lost_append_final_read_rejected => "list-lost-append-final-read",
        list_lost_append_later_read_rejected => "list-lost-append-later-read",
        list_duplicate_element_rejected => "list-duplicate-element",
        list_value_never_appended_rejected => "list-value-never-appended",
        list_failed_append_visible_rejected => "list-failed-append-visible",
        list_non_prefix_reads_rejected => "list-non-prefix-reads",
        list_stale_read_rejected => "list-stale-read",
        list_reordered_appends_rejected => "list-reordered-appends",
        list_long_lost_append_rejected => "list-long-lost-append",
        sessions_resurrected_key_rejected => "sessions-resurrected-key",
        sessions_lost_hset_rejected => "sessions-lost-hset",
        sessions_value_never_written_rejected => "sessions-value-never-written",
        history_malformed_rejected => "history-completion-without-invocation",
        register_delete_count_of_missing_key_rejected => "register-delete-count-of-missing-key",
        list_skipped_append_no_final_read_rejected => "list-skipped-append-no-final-read",
        list_read_from_the_future_rejected => "list-read-from-the-future",
        list_order_disagreement_no_longer_read_rejected => "list-order-disagreement-no-longer-read",
        list_no_successful_read_rejected => "list-no-successful-read",
        sessions_expire_outlives_del_rejected => "sessions-expire-outlives-del",
        sessions_expire_outlives_new_hset_rejected => "sessions-expire-outlives-new-hset",
        sessions_hset_keeps_ttl_accepted => "sessions-hset-keeps-the-ttl-of-an-existing-key",
        run_too_few_ok_rejected => "run-too-few-ok",
        run_final_read_failed_rejected => "run-final-read-failed",
        run_worker_panicked_rejected => "run-worker-panicked",
        run_fault_no_op_rejected => "run-fault-no-op",
        run_fault_without_load_rejected => "run-fault-without-load",
        run_replicas_differ_rejected => "run-replicas-differ",
        run_replica_unreachable_rejected => "run-replica-unreachable",
        run_valid_accepted => "run-valid",
        register_cas_over_a_changed_value_rejected => "register-cas-over-a-changed-value",
        string_lost_append_rejected => "string-lost-append",
        sessions_lost_hincrby_rejected => "sessions-lost-hincrby",
        register_cas_accepted => "register-cas-and-aborted-cas",
        string_appends_accepted => "string-appends-read-back",
        sessions_hincrby_accepted => "sessions-hincrby-and-hset",
        register_concurrent_one_order_accepted => "register-concurrent-writes-one-order",
        register_concurrent_other_order_accepted => "register-concurrent-writes-other-order",
        register_info_took_effect_accepted => "register-info-write-took-effect",
        register_info_never_took_effect_accepted => "register-info-write-never-took-effect",
        register_info_took_effect_late_accepted => "register-info-write-took-effect-late",
        register_failed_write_invisible_accepted => "register-failed-write-invisible",
        register_incr_delete_accepted => "register-incr-delete-concurrent",
        list_read_sees_append_accepted => "list-concurrent-read-sees-append",
        list_read_misses_append_accepted => "list-concurrent-read-misses-append",
        list_info_append_took_effect_accepted => "list-info-append-took-effect",
        list_info_append_never_accepted => "list-info-append-never-took-effect",
        list_failed_append_invisible_accepted => "list-failed-append-invisible",
        sessions_basic_accepted => "sessions-basic",
        sessions_expire_then_gone_accepted => "sessions-expire-then-gone",
        sessions_concurrent_accepted => "sessions-concurrent-hset-and-read",
        register_long_random_accepted => "register-long-random",
        register_long_random_keys_accepted => "register-long-random-5-keys",
        list_long_random_accepted => "list-long-random",
        sessions_long_random_accepted => "sessions-long-random",
        mixed_long_random_accepted => "mixed-long-random",
        empty_history_accepted => "empty-history",
    }

    #[test]
    fn every_case_has_a_test_and_a_unique_name() {
        let names: Vec<&str> = cases().iter().map(|c| c.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names.len(), 65);
    }

    #[test]
    fn mutations_applied_to_the_long_cases() {
        // The long bad cases must really be mutated, or they would test nothing.
        let mut reg = long(vec![Workload::Register], 1, 2000, 7);
        assert!(make_final_read_stale(&mut reg));
        let mut list = long(vec![Workload::ListAppend], 1, 2000, 11);
        assert!(drop_acked_from_final_read(&mut list));
    }

    #[test]
    fn explanations_name_the_key_and_the_culprit() {
        let report = check(&register_stale_read());
        let p = &report.register.problems;
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].text.contains("\"x\""), "{}", p[0]);
        assert!(p[0].text.contains("p3 read -> 1 ok"), "{}", p[0]);
        assert!(p[0].text.contains("leaving 2"), "{}", p[0]);
        let report = check(&list_lost_append_final_read());
        let p = &report.list_append.problems;
        assert!(p
            .iter()
            .any(|p| p.text.contains("final read") && p.text.contains("missing from it: 2")));
        let report = check(&sessions_resurrected_key());
        assert!(report.sessions.problems[0].text.contains("p2 hgetall"));
    }
}
#[cfg(test)]
mod random {
    //! Random histories of a simulated correct store must be accepted; known mutations
    //! of them must be rejected.
    use super::*;
    use proptest::prelude::*;

    fn config() -> impl Strategy<Value = SimConfig> {
        (
            any::<u64>(),
            1usize..8,
            20usize..400,
            1usize..4,
            prop::sample::subsequence(
                vec![Workload::Register, Workload::ListAppend, Workload::Sessions],
                1..=3,
            ),
            0.0f64..0.1,
            0.0f64..0.1,
        )
            .prop_map(
                |(seed, processes, ops, keys, workloads, info_rate, fail_rate)| SimConfig {
                    processes,
                    ops,
                    keys,
                    workloads,
                    info_rate,
                    fail_rate,
                    seed,
                },
            )
    }

    /// The last `Ok` record of `f` with a value `pick` accepts.
    fn last_ok(ops: &mut [Op], f: F, pick: impl Fn(&Value) -> bool) -> Option<&mut Op> {
        ops.iter_mut()
            .rev()
            .find(|o| o.f == f && o.kind == Kind::Ok && pick(&o.value))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn simulated_histories_are_accepted(cfg in config()) {
            let ops = simulate(&cfg);
            let report = check(&ops);
            prop_assert!(report.valid(), "{:?}: {:#?}", cfg, report.verdict().problems);
        }

        #[test]
        fn a_read_of_a_value_never_written_is_rejected(cfg in config()) {
            let mut ops = simulate(&cfg);
            if let Some(op) = last_ok(&mut ops, F::Read, |_| true) {
                op.value = Value::Str("never-written".into());
                prop_assert!(!check(&ops).register.valid);
            }
        }

        #[test]
        fn a_duplicated_list_element_is_rejected(cfg in config()) {
            let mut ops = simulate(&cfg);
            let non_empty = |v: &Value| matches!(v, Value::List(l) if !l.is_empty());
            if let Some(op) = last_ok(&mut ops, F::ReadList, non_empty) {
                if let Value::List(items) = &mut op.value {
                    items.push(items[0].clone());
                }
                prop_assert!(!check(&ops).list_append.valid);
            }
        }

        #[test]
        fn an_element_never_appended_is_rejected(cfg in config()) {
            let mut ops = simulate(&cfg);
            if let Some(op) = last_ok(&mut ops, F::ReadList, |_| true) {
                if let Value::List(items) = &mut op.value {
                    items.push(Value::Str("never-appended".into()));
                }
                prop_assert!(!check(&ops).list_append.valid);
            }
        }

        #[test]
        fn a_lost_acknowledged_append_is_rejected(cfg in config()) {
            let mut ops = simulate(&cfg);
            if drop_acked_from_final_read(&mut ops) {
                prop_assert!(!check(&ops).list_append.valid);
            }
        }

        #[test]
        fn a_stale_final_register_read_is_rejected(cfg in config()) {
            let mut ops = simulate(&cfg);
            // Only meaningful with one register key: the mutation picks writes of any key.
            let single = ops.iter().filter(|o| o.f.workload() == Workload::Register)
                .map(|o| o.key.as_str()).collect::<std::collections::HashSet<_>>().len() == 1;
            if single && make_final_read_stale(&mut ops) {
                prop_assert!(!check(&ops).register.valid);
            }
        }

        #[test]
        fn a_session_field_never_written_is_rejected(cfg in config()) {
            let mut ops = simulate(&cfg);
            if let Some(op) = last_ok(&mut ops, F::HGetAll, |_| true) {
                let mut map = match &op.value {
                    Value::Map(m) => m.clone(),
                    _ => Default::default(),
                };
                map.insert("f0".into(), Value::Str("never-written".into()));
                op.value = Value::Map(map);
                prop_assert!(!check(&ops).sessions.valid);
            }
        }
    }
}
