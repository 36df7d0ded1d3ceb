//! Histories the checkers must reject, one violation each.

use super::*;

// ---- bad: registers ----

pub(super) fn register_stale_read() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    write(&r, 2, "x", 2);
    read(&r, 3, "x", Value::Int(1));
    r.into_ops()
}

pub(super) fn register_lost_write() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    read(&r, 2, "x", Value::None);
    r.into_ops()
}

pub(super) fn register_resurrected_key() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    done(&r, 1, F::Delete, "x", Value::None, Value::Int(1));
    read(&r, 2, "x", Value::Int(1));
    r.into_ops()
}

pub(super) fn register_value_never_written() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    read(&r, 2, "x", Value::Str("42".into()));
    r.into_ops()
}

pub(super) fn register_failed_write_visible() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(1, F::Write, "x", Value::Int(3));
    r.fail(&w, "READONLY".into());
    read(&r, 2, "x", Value::Int(3));
    r.into_ops()
}

pub(super) fn register_read_from_the_future() -> Vec<Op> {
    let r = Recorder::new();
    read(&r, 2, "x", Value::Int(1));
    write(&r, 1, "x", 1);
    r.into_ops()
}

pub(super) fn register_wrong_incr() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 5);
    done(&r, 1, F::Incr, "x", Value::None, Value::Int(7));
    r.into_ops()
}

pub(super) fn register_wrong_delete_count() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 5);
    done(&r, 1, F::Delete, "x", Value::None, Value::Int(0));
    r.into_ops()
}

/// A long valid register history whose final read is changed to a string value that an
/// earlier write stored and a later write (invoked after it completed) replaced.
pub(super) fn register_long_stale_final_read() -> Vec<Op> {
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

pub(super) fn list_lost_append_final_read() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    read_list(&r, 3, "l", &[1]);
    r.into_ops()
}

pub(super) fn list_lost_append_later_read() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    read_list(&r, 2, "l", &[]);
    read_list(&r, 3, "l", &[1]);
    r.into_ops()
}

pub(super) fn list_duplicate_element() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    read_list(&r, 3, "l", &[1, 2, 2]);
    r.into_ops()
}

pub(super) fn list_value_never_appended() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    read_list(&r, 3, "l", &[1, 9]);
    r.into_ops()
}

pub(super) fn list_failed_append_visible() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.fail(&a, "CLUSTERDOWN".into());
    read_list(&r, 3, "l", &[1, 2]);
    r.into_ops()
}

pub(super) fn list_non_prefix_reads() -> Vec<Op> {
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

pub(super) fn list_stale_read() -> Vec<Op> {
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

pub(super) fn list_reordered_appends() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    read_list(&r, 3, "l", &[2, 1]);
    r.into_ops()
}

/// A long valid list history whose final read of one key loses an acknowledged append
/// (its first element: the final read then also disagrees with the earlier reads on the
/// order, as it holds the second element first).
pub(super) fn list_long_lost_append() -> Vec<Op> {
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

pub(super) fn sessions_resurrected_key() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Del, "s", Value::None, Value::Int(1));
    hgetall(&r, 2, "s", &[("user", "ann")]);
    r.into_ops()
}

pub(super) fn sessions_lost_hset() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    hset(&r, 1, "s", "cart", "3");
    hgetall(&r, 2, "s", &[("user", "ann")]);
    r.into_ops()
}

pub(super) fn sessions_value_never_written() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    hgetall(&r, 2, "s", &[("user", "bob")]);
    r.into_ops()
}

pub(super) fn history_malformed() -> Vec<Op> {
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

pub(super) fn register_delete_count_of_missing_key() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 5);
    done(&r, 1, F::Delete, "x", Value::None, Value::Int(1));
    done(&r, 2, F::Delete, "x", Value::None, Value::Int(1));
    r.into_ops()
}

/// A read that holds element 2 but not 1, whose append was acknowledged before the
/// append of 2 began; the read itself began before either, and no longer read follows.
pub(super) fn list_skipped_append_no_final_read() -> Vec<Op> {
    let r = Recorder::new();
    let read = r.invoke(3, F::ReadList, "l", Value::None);
    append(&r, 1, "l", 1);
    append(&r, 2, "l", 2);
    r.ok(&read, Value::list([2]));
    r.into_ops()
}

pub(super) fn list_read_from_the_future() -> Vec<Op> {
    let r = Recorder::new();
    read_list(&r, 2, "l", &[1]);
    append(&r, 1, "l", 1);
    read_list(&r, 2, "l", &[1]);
    r.into_ops()
}

/// Two concurrent reads that disagree on the order of 1 and 2, with no longer read to
/// compare them with.
pub(super) fn list_order_disagreement_no_longer_read() -> Vec<Op> {
    let r = Recorder::new();
    let a1 = r.invoke(1, F::Append, "l", Value::Int(1));
    let a2 = r.invoke(2, F::Append, "l", Value::Int(2));
    read_list(&r, 3, "l", &[1, 2]);
    read_list(&r, 4, "l", &[2, 1]);
    r.ok(&a1, Value::None);
    r.ok(&a2, Value::None);
    r.into_ops()
}

pub(super) fn list_no_successful_read() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let read = r.invoke(2, F::ReadList, "l", Value::None);
    r.fail(&read, "CLUSTERDOWN".into());
    r.into_ops()
}

/// `DEL` clears the TTL with the key: a key written again after it cannot expire.
pub(super) fn sessions_expire_outlives_del() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    done(&r, 1, F::Del, "s", Value::None, Value::Int(1));
    hset(&r, 1, "s", "user", "bob");
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

/// A key that expired and was created again by `HSET` has no TTL.
pub(super) fn sessions_expire_outlives_new_hset() -> Vec<Op> {
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
pub(super) fn register_cas_over_a_changed_value() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    write(&r, 1, "x", 2);
    done(&r, 2, F::Cas, "x", Value::Int(3), Value::Int(1));
    r.into_ops()
}

pub(super) fn string_lost_append() -> Vec<Op> {
    let r = Recorder::new();
    done(&r, 1, F::AppendStr, "a", Value::Int(1), Value::Int(2));
    done(&r, 1, F::AppendStr, "a", Value::Int(2), Value::Int(4));
    done(&r, 2, F::ReadStr, "a", Value::None, "1,".into());
    r.into_ops()
}

pub(super) fn sessions_lost_hincrby() -> Vec<Op> {
    let r = Recorder::new();
    hincrby(&r, 1, "s", 1);
    hincrby(&r, 1, "s", 2);
    hgetall(&r, 2, "s", &[("n", "1")]);
    r.into_ops()
}
