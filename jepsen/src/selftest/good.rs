//! Histories the checkers must accept: concurrency either way, unknown outcomes,
//! failures without a trace, long simulated ones.

use super::*;

// ---- good ----

pub(super) fn register_concurrent(first: i64, second: i64) -> Vec<Op> {
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

pub(super) fn register_concurrent_one_order() -> Vec<Op> {
    register_concurrent(1, 2)
}

pub(super) fn register_concurrent_other_order() -> Vec<Op> {
    register_concurrent(2, 1)
}

pub(super) fn register_info_took_effect() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.info(&w, "timeout".into());
    read(&r, 3, "x", Value::Int(5));
    r.into_ops()
}

pub(super) fn register_info_never_took_effect() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.info(&w, "timeout".into());
    read(&r, 3, "x", Value::Int(1));
    read(&r, 3, "x", Value::Int(1));
    r.into_ops()
}

pub(super) fn register_info_took_effect_late() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.info(&w, "timeout".into());
    read(&r, 3, "x", Value::Int(1));
    read(&r, 3, "x", Value::Int(5));
    r.into_ops()
}

pub(super) fn register_failed_write_invisible() -> Vec<Op> {
    let r = Recorder::new();
    write(&r, 1, "x", 1);
    let w = r.invoke(2, F::Write, "x", Value::Int(5));
    r.fail(&w, "READONLY".into());
    read(&r, 3, "x", Value::Int(1));
    r.into_ops()
}

pub(super) fn register_incr_delete() -> Vec<Op> {
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

pub(super) fn list_read_sees_append() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(1, F::Append, "l", Value::Int(2));
    read_list(&r, 2, "l", &[1, 2]);
    r.ok(&a, Value::None);
    read_list(&r, 2, "l", &[1, 2]);
    r.into_ops()
}

pub(super) fn list_read_misses_append() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(1, F::Append, "l", Value::Int(2));
    read_list(&r, 2, "l", &[1]);
    r.ok(&a, Value::None);
    read_list(&r, 2, "l", &[1, 2]);
    r.into_ops()
}

pub(super) fn list_info_append_took_effect() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.info(&a, "timeout".into());
    read_list(&r, 3, "l", &[1]);
    append(&r, 3, "l", 3);
    read_list(&r, 3, "l", &[1, 2, 3]);
    r.into_ops()
}

pub(super) fn list_info_append_never() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.info(&a, "timeout".into());
    append(&r, 3, "l", 3);
    read_list(&r, 3, "l", &[1, 3]);
    r.into_ops()
}

pub(super) fn list_failed_append_invisible() -> Vec<Op> {
    let r = Recorder::new();
    append(&r, 1, "l", 1);
    let a = r.invoke(2, F::Append, "l", Value::Int(2));
    r.fail(&a, "CLUSTERDOWN".into());
    read_list(&r, 3, "l", &[1]);
    r.into_ops()
}

pub(super) fn sessions_basic() -> Vec<Op> {
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

pub(super) fn sessions_expire_then_gone() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    hgetall(&r, 2, "s", &[("user", "ann")]);
    hgetall(&r, 2, "s", &[]);
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(0));
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

pub(super) fn sessions_concurrent() -> Vec<Op> {
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
pub(super) fn register_cas() -> Vec<Op> {
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

pub(super) fn string_appends() -> Vec<Op> {
    let r = Recorder::new();
    done(&r, 2, F::ReadStr, "a", Value::None, Value::None);
    done(&r, 1, F::AppendStr, "a", Value::Int(1), Value::Int(2));
    let a = r.invoke(1, F::AppendStr, "a", Value::Int(2));
    done(&r, 2, F::ReadStr, "a", Value::None, "1,".into());
    r.ok(&a, Value::Int(4));
    done(&r, 2, F::ReadStr, "a", Value::None, "1,2,".into());
    r.into_ops()
}

pub(super) fn sessions_hincrby() -> Vec<Op> {
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
pub(super) fn sessions_hset_keeps_ttl() -> Vec<Op> {
    let r = Recorder::new();
    hset(&r, 1, "s", "user", "ann");
    done(&r, 1, F::Expire, "s", Value::Int(1), Value::Int(1));
    hset(&r, 1, "s", "cart", "3");
    hgetall(&r, 2, "s", &[("user", "ann"), ("cart", "3")]);
    hgetall(&r, 2, "s", &[]);
    r.into_ops()
}

pub(super) fn long(workloads: Vec<Workload>, keys: usize, ops: usize, seed: u64) -> Vec<Op> {
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

pub(super) fn register_long_random() -> Vec<Op> {
    long(vec![Workload::Register], 1, 2000, 1)
}

pub(super) fn register_long_random_keys() -> Vec<Op> {
    long(vec![Workload::Register], 5, 5000, 2)
}

pub(super) fn list_long_random() -> Vec<Op> {
    long(vec![Workload::ListAppend], 1, 2000, 3)
}

pub(super) fn sessions_long_random() -> Vec<Op> {
    long(vec![Workload::Sessions], 2, 2000, 4)
}

pub(super) fn mixed_long_random() -> Vec<Op> {
    let all = vec![
        Workload::Register,
        Workload::ListAppend,
        Workload::Sessions,
        Workload::Bank,
    ];
    long(all, 3, 3000, 5)
}
