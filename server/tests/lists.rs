//! Lists through a real client against a real server: every command, its errors as
//! Redis words them, WRONGTYPE, deletion of emptied lists, keyspace events, and a model
//! check of random operation sequences against a `VecDeque`.
//!
//! DEL/EXISTS/TYPE live in another family, so "the key is gone" is checked with GET: a
//! missing key answers nil where a list would answer WRONGTYPE.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use common::{err_text, raw_exchange, run, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis::{Commands, Value};

use common::WRONGTYPE;

fn range(con: &mut redis::Connection, key: &str) -> Vec<String> {
    con.lrange(key, 0, -1).unwrap()
}

/// True if `key` does not exist (GET answers nil, not WRONGTYPE).
fn gone(con: &mut redis::Connection, key: &str) -> bool {
    matches!(run(con, &["GET", key]), Ok(Value::Nil))
}

/// A RESP2 request as bytes.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    out
}

#[test]
fn push_pop_and_lengths() {
    let server = TestServer::start();
    let mut con = server.client();
    let n: i64 = con.rpush("l", &["a", "b", "c"]).unwrap();
    assert_eq!(n, 3);
    let n: i64 = con.lpush("l", &["x", "y"]).unwrap();
    assert_eq!(n, 5);
    assert_eq!(range(&mut con, "l"), ["y", "x", "a", "b", "c"]);
    let n: i64 = con.llen("l").unwrap();
    assert_eq!(n, 5);
    let n: i64 = con.llen("missing").unwrap();
    assert_eq!(n, 0);

    // LPUSHX/RPUSHX only touch existing lists.
    let n: i64 = redis::cmd("LPUSHX")
        .arg("missing")
        .arg("a")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    assert!(gone(&mut con, "missing"));
    let n: i64 = redis::cmd("RPUSHX")
        .arg("l")
        .arg("z")
        .arg("w")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 7);
    let n: i64 = redis::cmd("LPUSHX")
        .arg("l")
        .arg("0")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 8);

    let v: Option<String> = redis::cmd("LPOP").arg("l").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("0"));
    let v: Option<String> = redis::cmd("RPOP").arg("l").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("w"));
    let v: Vec<String> = redis::cmd("LPOP").arg("l").arg(2).query(&mut con).unwrap();
    assert_eq!(v, ["y", "x"]);
    let v: Vec<String> = redis::cmd("RPOP").arg("l").arg(2).query(&mut con).unwrap();
    assert_eq!(v, ["z", "c"]);
    let v: Vec<String> = redis::cmd("RPOP").arg("l").arg(0).query(&mut con).unwrap();
    assert!(v.is_empty());
    let v: Vec<String> = redis::cmd("LPOP")
        .arg("l")
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, ["a", "b"]);
    assert!(gone(&mut con, "l"), "an emptied list is deleted");
    let v: Option<String> = redis::cmd("LPOP").arg("l").query(&mut con).unwrap();
    assert_eq!(v, None);

    // Null string without a count, null array with one (even a count of 0).
    let mut raw = server.raw();
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["LPOP", "nol"]), 5),
        b"$-1\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["LPOP", "nol", "1"]), 5),
        b"*-1\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["RPOP", "nol", "0"]), 5),
        b"*-1\r\n"
    );

    assert_eq!(
        err_text(&mut con, &["LPOP", "l", "-1"]),
        "ERR value is out of range, must be positive"
    );
    assert_eq!(
        err_text(&mut con, &["LPOP", "l", "x"]),
        "ERR value is out of range, must be positive"
    );
    assert_eq!(
        err_text(&mut con, &["LPOP", "l", "1", "2"]),
        "ERR wrong number of arguments for 'lpop' command"
    );
    assert_eq!(
        err_text(&mut con, &["RPUSH", "l"]),
        "ERR wrong number of arguments for 'rpush' command"
    );
}

#[test]
fn ranges_and_indexes() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: i64 = con.rpush("l", &["a", "b", "c", "d", "e"]).unwrap();
    let r: Vec<String> = con.lrange("l", 1, 2).unwrap();
    assert_eq!(r, ["b", "c"]);
    let r: Vec<String> = con.lrange("l", -2, -1).unwrap();
    assert_eq!(r, ["d", "e"]);
    let r: Vec<String> = con.lrange("l", -100, 100).unwrap();
    assert_eq!(r.len(), 5);
    let r: Vec<String> = con.lrange("l", 3, 1).unwrap();
    assert!(r.is_empty());
    let r: Vec<String> = con.lrange("l", 5, 10).unwrap();
    assert!(r.is_empty());
    let r: Vec<String> = con.lrange("l", isize::MIN, isize::MAX).unwrap();
    assert_eq!(r.len(), 5);
    let r: Vec<String> = con.lrange("missing", 0, -1).unwrap();
    assert!(r.is_empty());
    assert_eq!(
        err_text(&mut con, &["LRANGE", "l", "a", "1"]),
        "ERR value is not an integer or out of range"
    );

    let v: Option<String> = con.lindex("l", 0).unwrap();
    assert_eq!(v.as_deref(), Some("a"));
    let v: Option<String> = con.lindex("l", -1).unwrap();
    assert_eq!(v.as_deref(), Some("e"));
    let v: Option<String> = con.lindex("l", 5).unwrap();
    assert_eq!(v, None);
    let v: Option<String> = con.lindex("l", -6).unwrap();
    assert_eq!(v, None);
    let v: Option<String> = redis::cmd("LINDEX")
        .arg("l")
        .arg(i64::MIN)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, None);
    // The key is looked up before the index is parsed.
    let v: Option<String> = redis::cmd("LINDEX")
        .arg("missing")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, None);
    assert_eq!(
        err_text(&mut con, &["LINDEX", "l", "x"]),
        "ERR value is not an integer or out of range"
    );

    let _: () = con.lset("l", 0, "A").unwrap();
    let _: () = con.lset("l", -1, "E").unwrap();
    assert_eq!(range(&mut con, "l"), ["A", "b", "c", "d", "E"]);
    assert_eq!(
        err_text(&mut con, &["LSET", "l", "5", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        err_text(&mut con, &["LSET", "l", "-6", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        err_text(&mut con, &["LSET", "missing", "0", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        err_text(&mut con, &["LSET", "missing", "x", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        err_text(&mut con, &["LSET", "l", "x", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert!(gone(&mut con, "missing"));
}

#[test]
fn lrem_ltrim_linsert() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: i64 = con.rpush("l", &["a", "b", "a", "c", "a", "b"]).unwrap();
    let n: i64 = con.lrem("l", 1, "a").unwrap();
    assert_eq!(n, 1);
    assert_eq!(range(&mut con, "l"), ["b", "a", "c", "a", "b"]);
    let n: i64 = con.lrem("l", -1, "b").unwrap();
    assert_eq!(n, 1);
    assert_eq!(range(&mut con, "l"), ["b", "a", "c", "a"]);
    let n: i64 = con.lrem("l", 0, "a").unwrap();
    assert_eq!(n, 2);
    assert_eq!(range(&mut con, "l"), ["b", "c"]);
    let n: i64 = con.lrem("l", isize::MIN, "c").unwrap();
    assert_eq!(n, 1);
    let n: i64 = con.lrem("l", 0, "nope").unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.lrem("missing", 0, "a").unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.lrem("l", 0, "b").unwrap();
    assert_eq!(n, 1);
    assert!(gone(&mut con, "l"));
    assert_eq!(
        err_text(&mut con, &["LREM", "l", "x", "a"]),
        "ERR value is not an integer or out of range"
    );

    let _: i64 = con.rpush("t", &["1", "2", "3", "4", "5", "6"]).unwrap();
    let _: () = con.ltrim("t", 1, -2).unwrap();
    assert_eq!(range(&mut con, "t"), ["2", "3", "4", "5"]);
    let _: () = con.ltrim("t", -100, 100).unwrap();
    assert_eq!(range(&mut con, "t"), ["2", "3", "4", "5"]);
    let _: () = con.ltrim("t", 1, 1).unwrap();
    assert_eq!(range(&mut con, "t"), ["3"]);
    let _: () = con.ltrim("t", 2, 1).unwrap();
    assert!(gone(&mut con, "t"), "trimmed to nothing deletes the key");
    let _: () = con.ltrim("missing", 0, 1).unwrap();
    let _: i64 = con.rpush("t", &["1", "2"]).unwrap();
    let _: () = con.ltrim("t", isize::MIN, isize::MAX).unwrap();
    assert_eq!(range(&mut con, "t"), ["1", "2"]);
    assert_eq!(
        err_text(&mut con, &["LTRIM", "t", "0", "x"]),
        "ERR value is not an integer or out of range"
    );

    let _: i64 = con.rpush("i", &["a", "c"]).unwrap();
    let n: i64 = redis::cmd("LINSERT")
        .arg("i")
        .arg("BEFORE")
        .arg("c")
        .arg("b")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("LINSERT")
        .arg("i")
        .arg("after")
        .arg("c")
        .arg("d")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(range(&mut con, "i"), ["a", "b", "c", "d"]);
    let n: i64 = redis::cmd("LINSERT")
        .arg("i")
        .arg("before")
        .arg("zz")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, -1);
    let n: i64 = redis::cmd("LINSERT")
        .arg("missing")
        .arg("before")
        .arg("a")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    assert!(gone(&mut con, "missing"));
    assert_eq!(
        err_text(&mut con, &["LINSERT", "i", "middle", "a", "x"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["LINSERT", "missing", "middle", "a", "x"]),
        "ERR syntax error"
    );
}

#[test]
fn lpos_options() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: i64 = con
        .rpush("p", &["a", "b", "c", "1", "2", "3", "c", "c"])
        .unwrap();
    let q = |con: &mut redis::Connection, args: &[&str]| run(con, args).unwrap();
    assert_eq!(q(&mut con, &["LPOS", "p", "c"]), Value::Int(2));
    assert_eq!(q(&mut con, &["LPOS", "p", "c", "RANK", "2"]), Value::Int(6));
    assert_eq!(
        q(&mut con, &["LPOS", "p", "c", "RANK", "-1"]),
        Value::Int(7)
    );
    assert_eq!(
        q(&mut con, &["LPOS", "p", "c", "RANK", "-3"]),
        Value::Int(2)
    );
    assert_eq!(q(&mut con, &["LPOS", "p", "c", "RANK", "4"]), Value::Nil);
    assert_eq!(q(&mut con, &["LPOS", "p", "zz"]), Value::Nil);
    let all: Vec<i64> = redis::cmd("LPOS")
        .arg("p")
        .arg("c")
        .arg("COUNT")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(all, [2, 6, 7]);
    let two: Vec<i64> = redis::cmd("LPOS")
        .arg("p")
        .arg("c")
        .arg("COUNT")
        .arg(2)
        .query(&mut con)
        .unwrap();
    assert_eq!(two, [2, 6]);
    let back: Vec<i64> = redis::cmd("LPOS")
        .arg("p")
        .arg("c")
        .arg("RANK")
        .arg(-1)
        .arg("COUNT")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(back, [7, 6, 2]);
    let near: Vec<i64> = redis::cmd("LPOS")
        .arg("p")
        .arg("c")
        .arg("MAXLEN")
        .arg(3)
        .arg("COUNT")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(near, [2]);
    let tail: Vec<i64> = redis::cmd("LPOS")
        .arg("p")
        .arg("c")
        .arg("RANK")
        .arg(-1)
        .arg("MAXLEN")
        .arg(2)
        .arg("COUNT")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(tail, [7, 6]);
    let none: Vec<i64> = redis::cmd("LPOS")
        .arg("p")
        .arg("zz")
        .arg("COUNT")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert!(none.is_empty());
    let none: Vec<i64> = redis::cmd("LPOS")
        .arg("missing")
        .arg("a")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(q(&mut con, &["LPOS", "missing", "a"]), Value::Nil);

    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "RANK", "0"]),
        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "RANK", "-9223372036854775808"]),
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "RANK", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "COUNT", "-1"]),
        "ERR COUNT can't be negative"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "COUNT", "x"]),
        "ERR COUNT can't be negative"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "MAXLEN", "-1"]),
        "ERR MAXLEN can't be negative"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "RANK"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["LPOS", "p", "c", "FOO", "1"]),
        "ERR syntax error"
    );
}

#[test]
fn lmove_and_rpoplpush() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: i64 = con.rpush("src", &["a", "b", "c"]).unwrap();
    let v: String = redis::cmd("LMOVE")
        .arg("src")
        .arg("dst")
        .arg("LEFT")
        .arg("RIGHT")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "a");
    let v: String = redis::cmd("LMOVE")
        .arg("src")
        .arg("dst")
        .arg("right")
        .arg("left")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "c");
    assert_eq!(range(&mut con, "src"), ["b"]);
    assert_eq!(range(&mut con, "dst"), ["c", "a"]);
    // Same key: rotation.
    let v: String = redis::cmd("LMOVE")
        .arg("dst")
        .arg("dst")
        .arg("LEFT")
        .arg("RIGHT")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "c");
    assert_eq!(range(&mut con, "dst"), ["a", "c"]);
    let v: String = redis::cmd("RPOPLPUSH")
        .arg("src")
        .arg("dst")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "b");
    assert!(gone(&mut con, "src"), "the emptied source is deleted");
    assert_eq!(range(&mut con, "dst"), ["b", "a", "c"]);
    let v: String = redis::cmd("RPOPLPUSH")
        .arg("dst")
        .arg("dst")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "c");
    assert_eq!(range(&mut con, "dst"), ["c", "b", "a"]);
    let v: Option<String> = redis::cmd("RPOPLPUSH")
        .arg("missing")
        .arg("dst")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, None);
    let v: Option<String> = redis::cmd("LMOVE")
        .arg("missing")
        .arg("other")
        .arg("LEFT")
        .arg("LEFT")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, None);
    assert!(gone(&mut con, "other"));

    let _: () = con.set("s", "x").unwrap();
    assert_eq!(
        err_text(&mut con, &["LMOVE", "dst", "s", "LEFT", "LEFT"]),
        WRONGTYPE
    );
    assert_eq!(
        range(&mut con, "dst"),
        ["c", "b", "a"],
        "a failed move moves nothing"
    );
    assert_eq!(err_text(&mut con, &["RPOPLPUSH", "s", "dst"]), WRONGTYPE);
    // A missing source answers nil before the destination's type is looked at.
    let v: Option<String> = redis::cmd("RPOPLPUSH")
        .arg("missing")
        .arg("s")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, None);
    assert_eq!(
        err_text(&mut con, &["LMOVE", "dst", "dst", "UP", "LEFT"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["LMOVE", "dst", "dst", "LEFT"]),
        "ERR wrong number of arguments for 'lmove' command"
    );
}

#[test]
fn wrong_type_everywhere() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = con.set("s", "x").unwrap();
    for args in [
        &["LPUSH", "s", "a"][..],
        &["RPUSH", "s", "a"],
        &["LPUSHX", "s", "a"],
        &["RPUSHX", "s", "a"],
        &["LPOP", "s"],
        &["RPOP", "s", "0"],
        &["LRANGE", "s", "0", "-1"],
        &["LLEN", "s"],
        &["LINDEX", "s", "0"],
        &["LSET", "s", "0", "a"],
        &["LREM", "s", "0", "a"],
        &["LTRIM", "s", "0", "1"],
        &["LINSERT", "s", "BEFORE", "a", "b"],
        &["LPOS", "s", "a"],
        &["LMOVE", "s", "d", "LEFT", "LEFT"],
        &["RPOPLPUSH", "s", "d"],
    ] {
        assert_eq!(err_text(&mut con, args), WRONGTYPE, "{args:?}");
    }
    let v: String = con.get("s").unwrap();
    assert_eq!(v, "x", "errors leave the key alone");
}

#[test]
fn keyspace_events() {
    let server = TestServer::start_with(|s| {
        s.notify_flags = kelvin_server::notify::parse_flags("KEA").expect("valid flags");
    });
    let mut sub = server.client();
    let mut con = server.client();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("__keyevent@0__:*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    for args in [
        &["RPUSH", "l", "a", "b", "c"][..],
        &["LPUSH", "l", "z"],
        &["LPOP", "l", "0"],         // nothing popped: no event
        &["LREM", "l", "0", "nope"], // nothing removed: no event
        &["LPOP", "l"],
        &["RPOP", "l"],
        &["LSET", "l", "0", "q"],
        &["LINSERT", "l", "AFTER", "q", "r"],
        &["LINSERT", "l", "AFTER", "nope", "r"], // pivot missing: no event
        &["LREM", "l", "1", "r"],
        &["LTRIM", "l", "0", "-1"],
        &["LMOVE", "l", "m", "LEFT", "RIGHT"],
        &["LMOVE", "l", "m", "LEFT", "RIGHT"],
        &["RPUSH", "done", "x"],
    ] {
        run(&mut con, args).unwrap();
    }
    let got = common::keyevents_until_done(&mut pubsub);
    assert_eq!(
        got,
        [
            "rpush l",
            "lpush l",
            "lpop l",
            "rpop l",
            "lset l",
            "linsert l",
            "lrem l",
            "ltrim l",
            "rpush m",
            "lpop l",
            // LMOVE: the push on the destination, the pop on the source, then the
            // source's deletion.
            "rpush m",
            "lpop l",
            "del l",
            "rpush done",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Model check
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    LPush(Vec<String>),
    RPush(Vec<String>),
    LPop(Option<usize>),
    RPop(Option<usize>),
    LSet(i64, String),
    LTrim(i64, i64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let item = "[a-c]{0,2}";
    prop_oneof![
        prop::collection::vec(item, 1..4).prop_map(Op::LPush),
        prop::collection::vec(item, 1..4).prop_map(Op::RPush),
        prop::option::of(0usize..4).prop_map(Op::LPop),
        prop::option::of(0usize..4).prop_map(Op::RPop),
        (-6i64..6, item).prop_map(|(i, v)| Op::LSet(i, v)),
        (-6i64..6, -6i64..6).prop_map(|(a, b)| Op::LTrim(a, b)),
    ]
}

/// Redis's LTRIM on the model, written from the documentation's rules.
fn model_trim(m: &mut VecDeque<String>, start: i64, stop: i64) {
    let len = m.len() as i64;
    let mut start = if start < 0 { len + start } else { start };
    let stop = if stop < 0 { len + stop } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        m.clear();
        return;
    }
    let stop = stop.min(len - 1);
    *m = m
        .iter()
        .skip(start as usize)
        .take((stop - start + 1) as usize)
        .cloned()
        .collect();
}

#[test]
fn model_based_random_operations() {
    let server = TestServer::start();
    let con = RefCell::new(server.client());
    let case = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 32,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op_strategy(), 1..40), |ops| {
            let mut con = con.borrow_mut();
            let con = &mut *con;
            case.set(case.get() + 1);
            let key = format!("model:{}", case.get());
            let mut model: VecDeque<String> = VecDeque::new();
            for op in &ops {
                match op {
                    Op::LPush(items) => {
                        let n: i64 = con.lpush(&key, items).unwrap();
                        for i in items {
                            model.push_front(i.clone());
                        }
                        prop_assert_eq!(n as usize, model.len());
                    }
                    Op::RPush(items) => {
                        let n: i64 = con.rpush(&key, items).unwrap();
                        model.extend(items.iter().cloned());
                        prop_assert_eq!(n as usize, model.len());
                    }
                    Op::LPop(None) | Op::RPop(None) => {
                        let left = matches!(op, Op::LPop(_));
                        let got: Option<String> = redis::cmd(if left { "LPOP" } else { "RPOP" })
                            .arg(&key)
                            .query(con)
                            .unwrap();
                        let want = if left {
                            model.pop_front()
                        } else {
                            model.pop_back()
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::LPop(Some(n)) | Op::RPop(Some(n)) => {
                        let left = matches!(op, Op::LPop(_));
                        let got: Option<Vec<String>> =
                            redis::cmd(if left { "LPOP" } else { "RPOP" })
                                .arg(&key)
                                .arg(*n)
                                .query(con)
                                .unwrap();
                        let want = if model.is_empty() {
                            None
                        } else {
                            Some(
                                (0..*n)
                                    .filter_map(|_| {
                                        if left {
                                            model.pop_front()
                                        } else {
                                            model.pop_back()
                                        }
                                    })
                                    .collect::<Vec<_>>(),
                            )
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::LSet(i, v) => {
                        let got = run(con, &["LSET", &key, &i.to_string(), v]);
                        let len = model.len() as i64;
                        let at = if *i < 0 { len + i } else { *i };
                        if model.is_empty() {
                            prop_assert_eq!(
                                err_text(con, &["LSET", &key, &i.to_string(), v]),
                                "ERR no such key"
                            );
                        } else if at < 0 || at >= len {
                            prop_assert!(got.is_err());
                            prop_assert_eq!(
                                err_text(con, &["LSET", &key, &i.to_string(), v]),
                                "ERR index out of range"
                            );
                        } else {
                            prop_assert_eq!(got.unwrap(), Value::Okay);
                            model[at as usize] = v.clone();
                        }
                    }
                    Op::LTrim(a, b) => {
                        let _: () = con.ltrim(&key, *a as isize, *b as isize).unwrap();
                        model_trim(&mut model, *a, *b);
                    }
                }
                let got: Vec<String> = con.lrange(&key, 0, -1).unwrap();
                prop_assert_eq!(
                    &got,
                    &model.iter().cloned().collect::<Vec<_>>(),
                    "after {:?}",
                    op
                );
                let len: usize = con.llen(&key).unwrap();
                prop_assert_eq!(len, model.len());
                // Redis keeps no empty lists.
                prop_assert_eq!(gone(con, &key), model.is_empty());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn blocking_pops_wait_for_a_push_or_time_out() {
    let server = TestServer::start();
    let mut waiter = server.client();
    let mut pusher = server.client();
    // Data already there: no wait.
    let _: () = redis::cmd("RPUSH")
        .arg("q")
        .arg("a")
        .query(&mut pusher)
        .unwrap();
    let got: (String, String) = redis::cmd("BLPOP")
        .arg("empty")
        .arg("q")
        .arg(1)
        .query(&mut waiter)
        .unwrap();
    assert_eq!(got, ("q".to_string(), "a".to_string()));
    // Nothing there: a push from another client wakes the waiter.
    let addr = server.url();
    let pushing = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut c = redis::Client::open(addr).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("LPUSH")
            .arg("jobs")
            .arg("j1")
            .query(&mut c)
            .unwrap();
    });
    let got: (String, String) = redis::cmd("BRPOP")
        .arg("jobs")
        .arg(5)
        .query(&mut waiter)
        .unwrap();
    assert_eq!(got, ("jobs".to_string(), "j1".to_string()));
    pushing.join().unwrap();
    // Timeout: a null array, and the connection keeps working, in order.
    let got: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("none")
        .arg("0.05")
        .query(&mut waiter)
        .unwrap();
    assert_eq!(got, None);
    let pong: String = redis::cmd("PING").query(&mut waiter).unwrap();
    assert_eq!(pong, "PONG");
    // BLMOVE waits too.
    let _: () = redis::cmd("RPUSH")
        .arg("src")
        .arg("x")
        .query(&mut pusher)
        .unwrap();
    let moved: String = redis::cmd("BLMOVE")
        .arg("src")
        .arg("dst")
        .arg("LEFT")
        .arg("RIGHT")
        .arg(1)
        .query(&mut waiter)
        .unwrap();
    assert_eq!(moved, "x");
    // Inside MULTI nothing blocks.
    let r: (Option<(String, String)>,) = redis::pipe()
        .atomic()
        .cmd("BLPOP")
        .arg("none")
        .arg(0)
        .query(&mut waiter)
        .unwrap();
    assert_eq!(r.0, None);
    assert_eq!(
        common::err_text(&mut waiter, &["BLPOP", "k", "-1"]),
        "ERR timeout is negative"
    );
    assert_eq!(
        common::err_text(&mut waiter, &["BLPOP", "k", "abc"]),
        "ERR timeout is not a float or out of range"
    );
}
