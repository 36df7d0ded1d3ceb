//! Bank histories: bad ones with one violation each (a torn read, a lost transfer, a
//! phantom, a stale read, a cycle), good ones with concurrency and unknown outcomes.

use super::*;

/// The invocation value of a transfer.
fn transfer_value(from: &str, to: &str, amount: i64, id: &str) -> Value {
    Value::map([
        ("from", Value::from(from)),
        ("to", Value::from(to)),
        ("amount", Value::Int(amount)),
        ("id", Value::from(id)),
        ("via", Value::from("multi")),
    ])
}

fn transfer(r: &Recorder, p: u64, from: &str, to: &str, amount: i64, id: &str) {
    let input = transfer_value(from, to, amount, id);
    done(r, p, F::Transfer, "bank", input, Value::None);
}

/// A read's value: (account, balance, log).
fn accounts(seen: &[(&str, i64, &[&str])]) -> Value {
    Value::map(seen.iter().map(|(name, balance, log)| {
        let log = Value::list(log.iter().copied());
        (
            *name,
            Value::map([("balance", Value::Int(*balance)), ("log", log)]),
        )
    }))
}

fn bank_read(r: &Recorder, p: u64, seen: &[(&str, i64, &[&str])]) {
    done(r, p, F::BankRead, "bank", Value::None, accounts(seen));
}

// ---- bad ----

/// A read, concurrent with a transfer, that shows it on one account only.
pub(super) fn bank_torn_read() -> Vec<Op> {
    let r = Recorder::new();
    let t = r.invoke(1, F::Transfer, "bank", transfer_value("a", "b", 5, "t1"));
    bank_read(&r, 2, &[("a", -5, &["t1"]), ("b", 0, &[]), ("c", 0, &[])]);
    r.ok(&t, Value::None);
    bank_read(
        &r,
        2,
        &[("a", -5, &["t1"]), ("b", 5, &["t1"]), ("c", 0, &[])],
    );
    r.into_ops()
}

/// A read whose balance is not what its log adds up to (the log written, the amount not).
pub(super) fn bank_balance_out_of_step() -> Vec<Op> {
    let r = Recorder::new();
    transfer(&r, 1, "a", "b", 5, "t1");
    bank_read(&r, 2, &[("a", -5, &["t1"]), ("b", 0, &["t1"])]);
    r.into_ops()
}

/// An acknowledged transfer the final read does not show (on either account: the total
/// is still conserved, only the logs tell).
pub(super) fn bank_lost_transfer_final_read() -> Vec<Op> {
    let r = Recorder::new();
    transfer(&r, 1, "a", "b", 5, "t1");
    transfer(&r, 1, "b", "c", 2, "t2");
    let f = r.invoke(FINAL_READ_PROCESS, F::BankRead, "bank", Value::None);
    r.ok(
        &f,
        accounts(&[("a", 0, &[]), ("b", -2, &["t2"]), ("c", 2, &["t2"])]),
    );
    r.into_ops()
}

/// A failed transfer that shows.
pub(super) fn bank_failed_transfer_visible() -> Vec<Op> {
    let r = Recorder::new();
    let t = r.invoke(1, F::Transfer, "bank", transfer_value("a", "b", 5, "t1"));
    r.fail(&t, "TRYAGAIN".into());
    bank_read(&r, 2, &[("a", -5, &["t1"]), ("b", 5, &["t1"])]);
    r.into_ops()
}

/// A transfer id no transfer carried.
pub(super) fn bank_transfer_never_made() -> Vec<Op> {
    let r = Recorder::new();
    transfer(&r, 1, "a", "b", 5, "t1");
    bank_read(&r, 2, &[("a", -5, &["t1", "t9"]), ("b", 5, &["t1", "t9"])]);
    r.into_ops()
}

/// A read that misses what a read before it saw (the transfer's outcome unknown, so only
/// the order of the reads tells).
pub(super) fn bank_stale_read() -> Vec<Op> {
    let r = Recorder::new();
    let t = r.invoke(1, F::Transfer, "bank", transfer_value("a", "b", 5, "t1"));
    r.info(&t, "timeout".into());
    bank_read(&r, 2, &[("a", -5, &["t1"]), ("b", 5, &["t1"])]);
    bank_read(&r, 3, &[("a", 0, &[]), ("b", 0, &[])]);
    r.into_ops()
}

/// Two concurrent transfers on the same accounts, logged in opposite orders: each
/// account alone is fine, no serial order explains both.
pub(super) fn bank_cycle() -> Vec<Op> {
    let r = Recorder::new();
    let t1 = r.invoke(1, F::Transfer, "bank", transfer_value("a", "b", 1, "t1"));
    let t2 = r.invoke(2, F::Transfer, "bank", transfer_value("b", "a", 2, "t2"));
    r.ok(&t1, Value::None);
    r.ok(&t2, Value::None);
    bank_read(&r, 3, &[("a", 1, &["t1", "t2"]), ("b", -1, &["t2", "t1"])]);
    r.into_ops()
}

/// A transfer logged before one acknowledged before it was invoked.
pub(super) fn bank_order_against_real_time() -> Vec<Op> {
    let r = Recorder::new();
    transfer(&r, 1, "a", "b", 1, "t1");
    transfer(&r, 1, "a", "b", 2, "t2");
    bank_read(&r, 3, &[("a", -3, &["t2", "t1"]), ("b", 3, &["t2", "t1"])]);
    r.into_ops()
}

// ---- good ----

/// Reads concurrent with a transfer see it or not; the ones after see it; a second
/// transfer whose outcome is unknown shows late, a third never.
pub(super) fn bank_concurrent() -> Vec<Op> {
    let r = Recorder::new();
    let t = r.invoke(1, F::Transfer, "bank", transfer_value("a", "b", 5, "t1"));
    bank_read(&r, 2, &[("a", 0, &[]), ("b", 0, &[]), ("c", 0, &[])]);
    bank_read(
        &r,
        3,
        &[("a", -5, &["t1"]), ("b", 5, &["t1"]), ("c", 0, &[])],
    );
    r.ok(&t, Value::None);
    let late = r.invoke(1, F::Transfer, "bank", transfer_value("b", "c", 2, "t2"));
    r.info(&late, "timeout".into());
    let never = r.invoke(4, F::Transfer, "bank", transfer_value("c", "a", 1, "t3"));
    r.info(&never, "timeout".into());
    bank_read(
        &r,
        2,
        &[("a", -5, &["t1"]), ("b", 5, &["t1"]), ("c", 0, &[])],
    );
    let failed = r.invoke(5, F::Transfer, "bank", transfer_value("a", "c", 4, "t4"));
    r.fail(&failed, "TRYAGAIN".into());
    let f = r.invoke(FINAL_READ_PROCESS, F::BankRead, "bank", Value::None);
    r.ok(
        &f,
        accounts(&[
            ("a", -5, &["t1"]),
            ("b", 3, &["t1", "t2"]),
            ("c", 2, &["t2"]),
        ]),
    );
    r.into_ops()
}

pub(super) fn bank_long_random() -> Vec<Op> {
    long(vec![Workload::Bank], 2, 3000, 6)
}
