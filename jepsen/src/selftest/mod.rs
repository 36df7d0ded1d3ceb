//! Known histories with known verdicts: the checker checking itself.
//!
//! How it fits: `kelvin-jepsen self-test` and the unit tests run [`cases`] through
//! [`crate::check`] and compare each verdict with the expected one. The bad histories
//! carry one violation each (a stale read, a lost write, a duplicate, a resurrected key,
//! ...); the good ones exercise what must be allowed (concurrency in either order, unknown
//! outcomes that did or did not take effect, failures that left no trace) and include
//! long simulated histories ([`crate::sim`]) to exercise performance.
//!
//! The cases live in [`bad`], [`runs`] (a run's facts with one hole each) and [`good`];
//! this file lists them ([`cases`]) and holds the helpers that write their histories.

use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use crate::checker::run::{
    check_run, FaultOutcome, ReplicaContents, RunFacts, SlotDigests, FINAL_READ_PROCESS,
};
use crate::checker::{check, Options, Reason, Report};
use crate::history::{Kind, Op, Recorder, Value, Workload, F};
use crate::sim::{simulate, SimConfig};

mod bad;
mod bank;
mod good;
#[cfg(test)]
mod random;
mod runs;
#[cfg(test)]
mod tests;

use bad::*;
use bank::*;
use good::*;
use runs::*;

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
        ("bank-torn-read", &[TornRead], bank_torn_read),
        (
            "bank-balance-out-of-step-with-log",
            &[TornRead],
            bank_balance_out_of_step,
        ),
        (
            "bank-lost-transfer-final-read",
            &[LostTransfer],
            bank_lost_transfer_final_read,
        ),
        (
            "bank-failed-transfer-visible",
            &[PhantomTransfer],
            bank_failed_transfer_visible,
        ),
        (
            "bank-transfer-never-made",
            &[PhantomTransfer],
            bank_transfer_never_made,
        ),
        ("bank-stale-read", &[TransferOrder], bank_stale_read),
        ("bank-cycle", &[TransferOrder], bank_cycle),
        (
            "bank-order-against-real-time",
            &[TransferOrder],
            bank_order_against_real_time,
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
        ("bank-concurrent-and-unknown-transfers", bank_concurrent),
        ("bank-long-random", bank_long_random),
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
