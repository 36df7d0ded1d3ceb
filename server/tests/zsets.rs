//! Sorted sets through a real client against a real server: every command, its errors
//! as Redis words them, WRONGTYPE, deletion of emptied sets, RESP3 reply shapes,
//! keyspace events, the Spring Session expiry-index flow, and a model check of random
//! ZADD/ZREM/ZINCRBY sequences against a `BTreeMap`.
//!
//! DEL/EXISTS/TYPE live in another family, so "the key is gone" is checked with GET: a
//! missing key answers nil where a sorted set would answer WRONGTYPE.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{err_text, raw_exchange, run, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis::{Commands, Value};

use common::WRONGTYPE;

/// True if `key` does not exist (GET answers nil, not WRONGTYPE).
fn gone(con: &mut redis::Connection, key: &str) -> bool {
    matches!(run(con, &["GET", key]), Ok(Value::Nil))
}

/// Runs a command whose reply is a list of strings.
fn strings(con: &mut redis::Connection, args: &[&str]) -> Vec<String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn all(con: &mut redis::Connection, key: &str) -> Vec<(String, f64)> {
    con.zrange_withscores(key, 0, -1).unwrap()
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    out
}

fn zadd_abcde(con: &mut redis::Connection, key: &str) {
    let n: i64 = con
        .zadd_multiple(key, &[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")])
        .unwrap();
    assert_eq!(n, 5);
}

#[test]
fn zadd_options_and_errors() {
    let server = TestServer::start();
    let mut con = server.client();
    let q = |con: &mut redis::Connection, args: &[&str]| run(con, args).unwrap();
    assert_eq!(
        q(&mut con, &["ZADD", "z", "1", "a", "2", "b", "3", "c"]),
        Value::Int(3)
    );
    assert_eq!(
        q(
            &mut con,
            &["ZADD", "z", "1", "a", "5", "b", "3", "c", "4", "d"]
        ),
        Value::Int(1)
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "CH", "1", "a", "6", "b", "4", "e"]),
        Value::Int(2)
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "NX", "10", "a", "10", "f"]),
        Value::Int(1)
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "XX", "CH", "20", "a", "20", "g"]),
        Value::Int(1)
    );
    assert_eq!(
        q(&mut con, &["ZADD", "nothing", "XX", "1", "a"]),
        Value::Int(0)
    );
    assert!(
        gone(&mut con, "nothing"),
        "XX on a missing key creates nothing"
    );
    // GT/LT only move scores one way, but still add new members.
    assert_eq!(
        q(
            &mut con,
            &["ZADD", "z", "GT", "CH", "1", "a", "30", "b", "7", "h"]
        ),
        Value::Int(2)
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "LT", "CH", "100", "c", "0", "d"]),
        Value::Int(1)
    );
    assert_eq!(
        all(&mut con, "z"),
        [
            ("d".to_string(), 0.0),
            ("c".into(), 3.0),
            ("e".into(), 4.0),
            ("h".into(), 7.0),
            ("f".into(), 10.0),
            ("a".into(), 20.0),
            ("b".into(), 30.0)
        ]
    );

    // INCR answers the new score, or nil when a condition blocks it.
    let v: f64 = redis::cmd("ZADD")
        .arg("z")
        .arg("INCR")
        .arg("2.5")
        .arg("c")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, 5.5);
    assert_eq!(
        q(&mut con, &["ZADD", "z", "NX", "INCR", "1", "c"]),
        Value::Nil
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "XX", "INCR", "1", "new"]),
        Value::Nil
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "GT", "INCR", "-1", "c"]),
        Value::Nil
    );
    assert_eq!(
        q(&mut con, &["ZADD", "z", "LT", "INCR", "-1", "c"]),
        Value::BulkString(b"4.5".to_vec())
    );
    assert_eq!(
        q(&mut con, &["ZADD", "missing", "XX", "INCR", "1", "m"]),
        Value::Nil
    );
    assert!(gone(&mut con, "missing"));
    assert_eq!(
        q(&mut con, &["ZADD", "z", "INCR", "+inf", "c"]),
        Value::BulkString(b"inf".to_vec())
    );

    for (args, text) in [
        (
            &["ZADD", "z", "1"][..],
            "ERR wrong number of arguments for 'zadd' command",
        ),
        (&["ZADD", "z", "NX", "1"], "ERR syntax error"),
        (&["ZADD", "z", "1", "a", "2"], "ERR syntax error"),
        (
            &["ZADD", "z", "NX", "XX", "1", "a"],
            "ERR XX and NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "GT", "LT", "1", "a"],
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "NX", "GT", "1", "a"],
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "INCR", "1", "a", "2", "b"],
            "ERR INCR option supports a single increment-element pair",
        ),
        (&["ZADD", "z", "x", "a"], "ERR value is not a valid float"),
        (&["ZADD", "z", "nan", "a"], "ERR value is not a valid float"),
        (
            &["ZADD", "z", "1e400", "a"],
            "ERR value is not a valid float",
        ),
        (
            &["ZADD", "z", "1", "a", "oops", "b"],
            "ERR value is not a valid float",
        ),
        (
            &["ZADD", "z", "INCR", "-inf", "c"],
            "ERR resulting score is not a number (NaN)",
        ),
    ] {
        assert_eq!(err_text(&mut con, args), text, "{args:?}");
    }
    // A failed ZADD changes nothing, even for the valid pairs before the bad one.
    let s: Option<f64> = con.zscore("z", "a").unwrap();
    assert_eq!(s, Some(20.0));
    let s: Option<f64> = con.zscore("z", "c").unwrap();
    assert_eq!(s, Some(f64::INFINITY));

    // -0 is 0.
    let _: i64 = con.zadd("zero", "m", "-0").unwrap();
    let s: String = redis::cmd("ZSCORE")
        .arg("zero")
        .arg("m")
        .query(&mut con)
        .unwrap();
    assert_eq!(s, "0");
}

#[test]
fn incr_rem_scores_and_cards() {
    let server = TestServer::start();
    let mut con = server.client();
    let v: f64 = con.zincr("z", "a", 2.5).unwrap();
    assert_eq!(v, 2.5);
    let v: String = redis::cmd("ZINCRBY")
        .arg("z")
        .arg("-1")
        .arg("a")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "1.5");
    let _: i64 = con.zadd("z", "b", 10).unwrap();
    assert_eq!(
        err_text(&mut con, &["ZINCRBY", "z", "x", "a"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err_text(&mut con, &["ZINCRBY", "z", "1"]),
        "ERR wrong number of arguments for 'zincrby' command"
    );
    let v: String = redis::cmd("ZINCRBY")
        .arg("z")
        .arg("inf")
        .arg("i")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "inf");
    assert_eq!(
        err_text(&mut con, &["ZINCRBY", "z", "-inf", "i"]),
        "ERR resulting score is not a number (NaN)"
    );

    let s: Option<f64> = con.zscore("z", "a").unwrap();
    assert_eq!(s, Some(1.5));
    let s: Option<f64> = con.zscore("z", "nope").unwrap();
    assert_eq!(s, None);
    let s: Option<f64> = con.zscore("missing", "a").unwrap();
    assert_eq!(s, None);
    let v = run(&mut con, &["ZMSCORE", "z", "a", "nope", "b"]).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            Value::BulkString(b"1.5".to_vec()),
            Value::Nil,
            Value::BulkString(b"10".to_vec())
        ])
    );
    let v = run(&mut con, &["ZMSCORE", "missing", "a", "b"]).unwrap();
    assert_eq!(v, Value::Array(vec![Value::Nil, Value::Nil]));

    let n: i64 = con.zcard("z").unwrap();
    assert_eq!(n, 3);
    let n: i64 = con.zcard("missing").unwrap();
    assert_eq!(n, 0);

    let n: i64 = con.zrem("z", &["a", "nope"]).unwrap();
    assert_eq!(n, 1);
    let n: i64 = con.zrem("z", "nope").unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.zrem("missing", "a").unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.zrem("z", &["b", "i"]).unwrap();
    assert_eq!(n, 2);
    assert!(gone(&mut con, "z"), "an emptied sorted set is deleted");
}

#[test]
fn ranks_counts() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "z");
    let q = |con: &mut redis::Connection, args: &[&str]| run(con, args).unwrap();
    assert_eq!(q(&mut con, &["ZRANK", "z", "a"]), Value::Int(0));
    assert_eq!(q(&mut con, &["ZRANK", "z", "e"]), Value::Int(4));
    assert_eq!(q(&mut con, &["ZREVRANK", "z", "e"]), Value::Int(0));
    assert_eq!(q(&mut con, &["ZREVRANK", "z", "a"]), Value::Int(4));
    assert_eq!(q(&mut con, &["ZRANK", "z", "nope"]), Value::Nil);
    assert_eq!(q(&mut con, &["ZRANK", "missing", "a"]), Value::Nil);
    assert_eq!(
        q(&mut con, &["ZRANK", "z", "c", "WITHSCORE"]),
        Value::Array(vec![Value::Int(2), Value::BulkString(b"3".to_vec())])
    );
    assert_eq!(
        q(&mut con, &["ZREVRANK", "z", "c", "withscore"]),
        Value::Array(vec![Value::Int(2), Value::BulkString(b"3".to_vec())])
    );
    assert_eq!(
        q(&mut con, &["ZRANK", "z", "nope", "WITHSCORE"]),
        Value::Nil
    );
    assert_eq!(
        err_text(&mut con, &["ZRANK", "z", "a", "foo"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["ZRANK", "z", "a", "WITHSCORE", "x"]),
        "ERR wrong number of arguments for 'zrank' command"
    );
    let mut raw = server.raw();
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["ZRANK", "z", "nope", "WITHSCORE"]), 5),
        b"*-1\r\n"
    );

    let n: i64 = con.zcount("z", "-inf", "+inf").unwrap();
    assert_eq!(n, 5);
    let n: i64 = con.zcount("z", "(1", "3").unwrap();
    assert_eq!(n, 2);
    let n: i64 = con.zcount("z", "(1", "(3").unwrap();
    assert_eq!(n, 1);
    let n: i64 = con.zcount("z", "5", "1").unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.zcount("z", "(3", "(3").unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.zcount("missing", "0", "1").unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        err_text(&mut con, &["ZCOUNT", "z", "x", "1"]),
        "ERR min or max is not a float"
    );
    assert_eq!(
        err_text(&mut con, &["ZCOUNT", "missing", "(nan", "1"]),
        "ERR min or max is not a float"
    );

    let _: i64 = con
        .zadd_multiple("lex", &[(0, "a"), (0, "b"), (0, "c"), (0, "d")])
        .unwrap();
    let n: i64 = redis::cmd("ZLEXCOUNT")
        .arg("lex")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 4);
    let n: i64 = redis::cmd("ZLEXCOUNT")
        .arg("lex")
        .arg("[b")
        .arg("(d")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("ZLEXCOUNT")
        .arg("lex")
        .arg("+")
        .arg("-")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        err_text(&mut con, &["ZLEXCOUNT", "lex", "a", "+"]),
        "ERR min or max not valid string range item"
    );
    assert_eq!(
        err_text(&mut con, &["ZLEXCOUNT", "lex", "-", "+x"]),
        "ERR min or max not valid string range item"
    );
}

#[test]
fn zrange_all_forms() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "z");
    let s = |con: &mut redis::Connection, args: &[&str]| strings(con, args);
    assert_eq!(
        s(&mut con, &["ZRANGE", "z", "0", "-1"]),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        s(&mut con, &["ZRANGE", "z", "1", "2", "WITHSCORES"]),
        ["b", "2", "c", "3"]
    );
    assert_eq!(s(&mut con, &["ZRANGE", "z", "-2", "-1"]), ["d", "e"]);
    assert_eq!(s(&mut con, &["ZRANGE", "z", "0", "1", "REV"]), ["e", "d"]);
    assert!(s(&mut con, &["ZRANGE", "z", "3", "1"]).is_empty());
    assert!(s(
        &mut con,
        &["ZRANGE", "z", "9223372036854775807", "-9223372036854775808"]
    )
    .is_empty());
    assert_eq!(
        s(
            &mut con,
            &["ZRANGE", "z", "-9223372036854775808", "9223372036854775807"]
        )
        .len(),
        5
    );
    assert!(s(&mut con, &["ZRANGE", "missing", "0", "-1"]).is_empty());
    // BYSCORE: inclusive, exclusive, infinite, reverse (max first), LIMIT.
    assert_eq!(
        s(&mut con, &["ZRANGE", "z", "2", "4", "BYSCORE"]),
        ["b", "c", "d"]
    );
    assert_eq!(s(&mut con, &["ZRANGE", "z", "(2", "(4", "BYSCORE"]), ["c"]);
    assert_eq!(
        s(
            &mut con,
            &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "2"]
        ),
        ["b", "c"]
    );
    assert_eq!(
        s(
            &mut con,
            &[
                "ZRANGE",
                "z",
                "+inf",
                "-inf",
                "BYSCORE",
                "REV",
                "LIMIT",
                "0",
                "2",
                "WITHSCORES"
            ]
        ),
        ["e", "5", "d", "4"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "3", "-1"]
        ),
        ["d", "e"]
    );
    assert!(s(
        &mut con,
        &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "-1", "2"]
    )
    .is_empty());
    assert!(s(
        &mut con,
        &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "0"]
    )
    .is_empty());
    assert!(s(&mut con, &["ZRANGE", "z", "4", "2", "BYSCORE"]).is_empty());
    // LIMIT with the count -1 means "no limit", which a rank range accepts and ignores.
    assert_eq!(
        s(&mut con, &["ZRANGE", "z", "0", "1", "LIMIT", "3", "-1"]),
        ["a", "b"]
    );
    // BYLEX on equal scores.
    let _: i64 = con
        .zadd_multiple("lex", &[(0, "a"), (0, "b"), (0, "c"), (0, "d"), (0, "e")])
        .unwrap();
    assert_eq!(
        s(&mut con, &["ZRANGE", "lex", "[b", "(d", "BYLEX"]),
        ["b", "c"]
    );
    assert_eq!(
        s(&mut con, &["ZRANGE", "lex", "(d", "[b", "BYLEX", "REV"]),
        ["c", "b"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZRANGE", "lex", "-", "+", "BYLEX", "LIMIT", "1", "2"]
        ),
        ["b", "c"]
    );
    assert!(s(&mut con, &["ZRANGE", "lex", "+", "-", "BYLEX"]).is_empty());
    assert!(s(&mut con, &["ZRANGE", "lex", "[d", "[b", "BYLEX"]).is_empty());

    for (args, text) in [
        (
            &["ZRANGE", "z", "0", "-1", "LIMIT", "0", "1"][..],
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ),
        (
            &["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"],
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ),
        (
            &["ZRANGE", "z", "0", "-1", "LIMIT", "0"],
            "ERR syntax error",
        ),
        (
            &["ZRANGE", "z", "0", "-1", "REV", "REV"],
            "ERR syntax error",
        ),
        (
            &["ZRANGE", "z", "0", "-1", "BYSCORE", "BYLEX"],
            "ERR syntax error",
        ),
        (&["ZRANGE", "z", "0", "-1", "FOO"], "ERR syntax error"),
        (
            &["ZRANGE", "z", "a", "b"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["ZRANGE", "z", "a", "b", "BYSCORE"],
            "ERR min or max is not a float",
        ),
        (
            &["ZRANGE", "z", "a", "b", "BYLEX"],
            "ERR min or max not valid string range item",
        ),
        (
            &["ZRANGE", "z", "0", "-1", "LIMIT", "x", "1"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["ZRANGE", "z", "0"],
            "ERR wrong number of arguments for 'zrange' command",
        ),
    ] {
        assert_eq!(err_text(&mut con, args), text, "{args:?}");
    }
}

#[test]
fn legacy_range_commands() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "z");
    let s = |con: &mut redis::Connection, args: &[&str]| strings(con, args);
    assert_eq!(
        s(&mut con, &["ZREVRANGE", "z", "0", "1", "WITHSCORES"]),
        ["e", "5", "d", "4"]
    );
    assert_eq!(s(&mut con, &["ZREVRANGE", "z", "-1", "-1"]), ["a"]);
    assert_eq!(
        s(&mut con, &["ZRANGEBYSCORE", "z", "(1", "3", "WITHSCORES"]),
        ["b", "2", "c", "3"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "1", "1"]
        ),
        ["b"]
    );
    assert_eq!(s(&mut con, &["ZRANGEBYSCORE", "z", "1", "1"]), ["a"]);
    assert!(s(&mut con, &["ZRANGEBYSCORE", "z", "(1", "1"]).is_empty());
    assert!(s(&mut con, &["ZRANGEBYSCORE", "z", "3", "1"]).is_empty());
    assert_eq!(
        s(&mut con, &["ZREVRANGEBYSCORE", "z", "3", "1"]),
        ["c", "b", "a"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZREVRANGEBYSCORE", "z", "(5", "(1", "LIMIT", "1", "1"]
        ),
        ["c"]
    );
    assert!(s(&mut con, &["ZREVRANGEBYSCORE", "z", "1", "3"]).is_empty());
    let _: i64 = con
        .zadd_multiple("lex", &[(0, "a"), (0, "b"), (0, "c"), (0, "d")])
        .unwrap();
    assert_eq!(s(&mut con, &["ZRANGEBYLEX", "lex", "(a", "[c"]), ["b", "c"]);
    assert_eq!(
        s(
            &mut con,
            &["ZRANGEBYLEX", "lex", "-", "+", "LIMIT", "2", "5"]
        ),
        ["c", "d"]
    );
    assert_eq!(
        s(&mut con, &["ZREVRANGEBYLEX", "lex", "+", "[b"]),
        ["d", "c", "b"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZREVRANGEBYLEX", "lex", "+", "-", "LIMIT", "1", "1"]
        ),
        ["c"]
    );

    for (args, text) in [
        (
            &["ZRANGEBYSCORE", "z", "0", "1", "BYSCORE"][..],
            "ERR syntax error",
        ),
        (
            &["ZRANGEBYSCORE", "z", "0", "1", "LIMIT", "1"],
            "ERR syntax error",
        ),
        (
            &["ZRANGEBYSCORE", "z", "(x", "1"],
            "ERR min or max is not a float",
        ),
        (
            &["ZREVRANGEBYSCORE", "z", "1", "nan"],
            "ERR min or max is not a float",
        ),
        (&["ZREVRANGE", "z", "0", "1", "REV"], "ERR syntax error"),
        (
            &["ZRANGEBYLEX", "lex", "a", "+"],
            "ERR min or max not valid string range item",
        ),
        (
            &["ZRANGEBYLEX", "lex", "-", "+", "WITHSCORES"],
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ),
        (
            &["ZREVRANGEBYLEX", "lex", "+", "b"],
            "ERR min or max not valid string range item",
        ),
    ] {
        assert_eq!(err_text(&mut con, args), text, "{args:?}");
    }
}

/// Lex ranges over members of different scores are "undefined" in Redis's documentation;
/// these are the answers Redis 7 gives (walk from the first member in range, stop at the
/// first one out of range).
#[test]
fn lex_ranges_over_mixed_scores_walk_like_redis() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: i64 = con
        .zadd_multiple("mx", &[(1, "b"), (2, "a"), (3, "d"), (4, "c")])
        .unwrap();
    let s = |con: &mut redis::Connection, args: &[&str]| strings(con, args);
    assert_eq!(
        s(&mut con, &["ZRANGEBYLEX", "mx", "-", "+"]),
        ["b", "a", "d", "c"]
    );
    assert_eq!(s(&mut con, &["ZRANGEBYLEX", "mx", "[a", "[c"]), ["b", "a"]);
    assert_eq!(
        s(&mut con, &["ZRANGEBYLEX", "mx", "(a", "+"]),
        ["b", "a", "d", "c"]
    );
    assert_eq!(s(&mut con, &["ZRANGEBYLEX", "mx", "-", "(c"]), ["b", "a"]);
    assert_eq!(
        s(&mut con, &["ZREVRANGEBYLEX", "mx", "[d", "[a"]),
        ["c", "d", "a", "b"]
    );
    assert_eq!(
        s(&mut con, &["ZREVRANGEBYLEX", "mx", "+", "(a"]),
        ["c", "d"]
    );
    let n: i64 = redis::cmd("ZLEXCOUNT")
        .arg("mx")
        .arg("[b")
        .arg("[c")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    let _: i64 = con
        .zadd_multiple("my", &[(0, "x"), (0, "y"), (4, "d")])
        .unwrap();
    assert_eq!(s(&mut con, &["ZRANGEBYLEX", "my", "-", "[x"]), ["x"]);
    let n: i64 = redis::cmd("ZREMRANGEBYLEX")
        .arg("my")
        .arg("[x")
        .arg("[x")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        n, 0,
        "the last member (d) is below the minimum: nothing is in range"
    );
}

#[test]
fn zrangestore_variants() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "src");
    let n: i64 = redis::cmd("ZRANGESTORE")
        .arg("dst")
        .arg("src")
        .arg(1)
        .arg(3)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        all(&mut con, "dst"),
        [("b".to_string(), 2.0), ("c".into(), 3.0), ("d".into(), 4.0)]
    );
    let n: i64 = redis::cmd("ZRANGESTORE")
        .arg("dst")
        .arg("src")
        .arg("4")
        .arg("(1")
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(2)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        all(&mut con, "dst"),
        [("c".to_string(), 3.0), ("d".into(), 4.0)]
    );
    // Overwrites any type.
    let _: () = con.set("str", "x").unwrap();
    let n: i64 = redis::cmd("ZRANGESTORE")
        .arg("str")
        .arg("src")
        .arg(0)
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(all(&mut con, "str"), [("a".to_string(), 1.0)]);
    // An empty result deletes the destination.
    let n: i64 = redis::cmd("ZRANGESTORE")
        .arg("dst")
        .arg("src")
        .arg(10)
        .arg(20)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    assert!(gone(&mut con, "dst"));
    let n: i64 = redis::cmd("ZRANGESTORE")
        .arg("dst")
        .arg("missing")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    assert!(gone(&mut con, "dst"));
    assert_eq!(
        err_text(
            &mut con,
            &["ZRANGESTORE", "dst", "src", "0", "-1", "WITHSCORES"]
        ),
        "ERR syntax error"
    );
    let _: () = con.set("s", "x").unwrap();
    assert_eq!(
        err_text(&mut con, &["ZRANGESTORE", "dst", "s", "0", "-1"]),
        WRONGTYPE
    );
    assert_eq!(
        err_text(&mut con, &["ZRANGESTORE", "dst", "src", "0"]),
        "ERR wrong number of arguments for 'zrangestore' command"
    );
}

#[test]
fn removal_by_range_and_pops() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "r");
    let _: i64 = con.zadd("r", "f", 6).unwrap();
    let n: i64 = con.zremrangebyrank("r", 0, 1).unwrap();
    assert_eq!(n, 2);
    let n: i64 = con.zremrangebyrank("r", -1, -1).unwrap();
    assert_eq!(n, 1);
    let n: i64 = con.zremrangebyrank("r", 5, 10).unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        all(&mut con, "r"),
        [("c".to_string(), 3.0), ("d".into(), 4.0), ("e".into(), 5.0)]
    );
    let n: i64 = con.zrembyscore("r", "(3", 4).unwrap();
    assert_eq!(n, 1);
    let n: i64 = con.zrembyscore("r", 10, 1).unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.zrembyscore("r", "-inf", "+inf").unwrap();
    assert_eq!(n, 2);
    assert!(gone(&mut con, "r"));
    let n: i64 = con.zrembyscore("r", "-inf", "+inf").unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        err_text(&mut con, &["ZREMRANGEBYSCORE", "r", "x", "1"]),
        "ERR min or max is not a float"
    );
    assert_eq!(
        err_text(&mut con, &["ZREMRANGEBYRANK", "r", "x", "1"]),
        "ERR value is not an integer or out of range"
    );

    let _: i64 = con
        .zadd_multiple("lex", &[(0, "a"), (0, "b"), (0, "c"), (0, "d")])
        .unwrap();
    let n: i64 = redis::cmd("ZREMRANGEBYLEX")
        .arg("lex")
        .arg("[b")
        .arg("(d")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("ZREMRANGEBYLEX")
        .arg("lex")
        .arg("+")
        .arg("-")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = redis::cmd("ZREMRANGEBYLEX")
        .arg("lex")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    assert!(gone(&mut con, "lex"));
    assert_eq!(
        err_text(&mut con, &["ZREMRANGEBYLEX", "lex", "a", "b"]),
        "ERR min or max not valid string range item"
    );

    zadd_abcde(&mut con, "p");
    let s = |con: &mut redis::Connection, args: &[&str]| strings(con, args);
    assert_eq!(s(&mut con, &["ZPOPMIN", "p"]), ["a", "1"]);
    assert_eq!(s(&mut con, &["ZPOPMAX", "p"]), ["e", "5"]);
    assert!(s(&mut con, &["ZPOPMIN", "p", "0"]).is_empty());
    assert_eq!(s(&mut con, &["ZPOPMAX", "p", "2"]), ["d", "4", "c", "3"]);
    assert_eq!(s(&mut con, &["ZPOPMIN", "p", "10"]), ["b", "2"]);
    assert!(gone(&mut con, "p"));
    assert!(s(&mut con, &["ZPOPMIN", "p"]).is_empty());
    assert!(s(&mut con, &["ZPOPMAX", "p", "3"]).is_empty());
    assert_eq!(
        err_text(&mut con, &["ZPOPMIN", "p", "-1"]),
        "ERR value is out of range, must be positive"
    );
    assert_eq!(
        err_text(&mut con, &["ZPOPMIN", "p", "x"]),
        "ERR value is out of range, must be positive"
    );
    assert_eq!(
        err_text(&mut con, &["ZPOPMIN", "p", "1", "2"]),
        "ERR syntax error"
    );
}

#[test]
fn random_members() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "z");
    let names: HashSet<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let one: String = redis::cmd("ZRANDMEMBER").arg("z").query(&mut con).unwrap();
    assert!(names.contains(&one));
    let none: Option<String> = redis::cmd("ZRANDMEMBER")
        .arg("missing")
        .query(&mut con)
        .unwrap();
    assert_eq!(none, None);
    let three: Vec<String> = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg(3)
        .query(&mut con)
        .unwrap();
    assert_eq!(three.len(), 3);
    assert_eq!(
        three.iter().collect::<HashSet<_>>().len(),
        3,
        "positive counts give distinct members"
    );
    assert!(three.iter().all(|m| names.contains(m)));
    // A count beyond the size gives the whole set, highest score first (as Redis).
    let everything: Vec<String> = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg(10)
        .query(&mut con)
        .unwrap();
    assert_eq!(everything, ["e", "d", "c", "b", "a"]);
    let repeated: Vec<String> = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg(-20)
        .query(&mut con)
        .unwrap();
    assert_eq!(repeated.len(), 20);
    assert!(repeated.iter().all(|m| names.contains(m)));
    let scored: Vec<(String, f64)> = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg(2)
        .arg("WITHSCORES")
        .query(&mut con)
        .unwrap();
    assert_eq!(scored.len(), 2);
    for (m, s) in &scored {
        let want: f64 = con.zscore("z", m).unwrap();
        assert_eq!(*s, want);
    }
    let empty: Vec<String> = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert!(empty.is_empty());
    let empty: Vec<String> = redis::cmd("ZRANDMEMBER")
        .arg("missing")
        .arg(5)
        .query(&mut con)
        .unwrap();
    assert!(empty.is_empty());
    assert_eq!(
        err_text(&mut con, &["ZRANDMEMBER", "z", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["ZRANDMEMBER", "z", "1", "WITHSCORE"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["ZRANDMEMBER", "z", "1", "WITHSCORES", "x"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["ZRANDMEMBER", "z", "-9223372036854775808"]),
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    assert_eq!(
        err_text(
            &mut con,
            &["ZRANDMEMBER", "z", "-9223372036854775807", "WITHSCORES"]
        ),
        "ERR value is out of range"
    );
}

#[test]
fn zscan_small_and_large() {
    let server = TestServer::start();
    let mut con = server.client();
    zadd_abcde(&mut con, "z");
    let (cursor, items): (String, Vec<String>) = redis::cmd("ZSCAN")
        .arg("z")
        .arg(0)
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(cursor, "0", "a small set comes back whole");
    assert_eq!(items, ["a", "1", "b", "2", "c", "3", "d", "4", "e", "5"]);
    let (_, items): (String, Vec<String>) = redis::cmd("ZSCAN")
        .arg("z")
        .arg(0)
        .arg("MATCH")
        .arg("[ab]")
        .query(&mut con)
        .unwrap();
    assert_eq!(items, ["a", "1", "b", "2"]);
    let (cursor, items): (String, Vec<String>) = redis::cmd("ZSCAN")
        .arg("missing")
        .arg(0)
        .arg("BOGUS")
        .query(&mut con)
        .unwrap();
    assert_eq!((cursor.as_str(), items.len()), ("0", 0));
    assert_eq!(
        err_text(&mut con, &["ZSCAN", "z", "x"]),
        "ERR invalid cursor"
    );
    assert_eq!(
        err_text(&mut con, &["ZSCAN", "z", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["ZSCAN", "z", "0", "COUNT"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["ZSCAN", "z", "0", "FOO", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["ZSCAN", "z", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );

    // A large set pages by cursor and returns every member exactly once.
    let pairs: Vec<(f64, String)> = (0..1000)
        .map(|i| (i as f64 / 2.0, format!("m{i}")))
        .collect();
    let _: i64 = con.zadd_multiple("big", &pairs).unwrap();
    let mut seen = std::collections::HashMap::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    loop {
        let (next, items): (String, Vec<String>) = redis::cmd("ZSCAN")
            .arg("big")
            .arg(&cursor)
            .arg("COUNT")
            .arg(50)
            .query(&mut con)
            .unwrap();
        pages += 1;
        for pair in items.chunks(2) {
            assert!(
                seen.insert(pair[0].clone(), pair[1].clone()).is_none(),
                "{} twice",
                pair[0]
            );
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 1000);
    assert!(pages > 10, "paged, not all at once ({pages} pages)");
    assert_eq!(seen["m3"], "1.5");
}

#[test]
fn set_operations() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: i64 = con
        .zadd_multiple("u1", &[(1, "a"), (2, "b"), (3, "c")])
        .unwrap();
    let _: i64 = con
        .zadd_multiple("u2", &[(10, "b"), (20, "c"), (30, "d")])
        .unwrap();
    let s = |con: &mut redis::Connection, args: &[&str]| strings(con, args);
    assert_eq!(
        s(&mut con, &["ZUNION", "2", "u1", "u2", "WITHSCORES"]),
        ["a", "1", "b", "12", "c", "23", "d", "30"]
    );
    assert_eq!(
        s(
            &mut con,
            &[
                "ZUNION",
                "2",
                "u1",
                "u2",
                "WEIGHTS",
                "2",
                "0.5",
                "WITHSCORES"
            ]
        ),
        ["a", "2", "b", "9", "d", "15", "c", "16"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZUNION", "2", "u1", "u2", "AGGREGATE", "MIN", "WITHSCORES"]
        ),
        ["a", "1", "b", "2", "c", "3", "d", "30"]
    );
    assert_eq!(
        s(&mut con, &["ZUNION", "2", "u1", "missing"]),
        ["a", "b", "c"]
    );
    assert_eq!(
        s(&mut con, &["ZINTER", "2", "u1", "u2", "WITHSCORES"]),
        ["b", "12", "c", "23"]
    );
    assert_eq!(
        s(
            &mut con,
            &["ZINTER", "2", "u1", "u2", "AGGREGATE", "MAX", "WITHSCORES"]
        ),
        ["b", "10", "c", "20"]
    );
    assert_eq!(
        s(
            &mut con,
            &[
                "ZINTER",
                "2",
                "u1",
                "u2",
                "WEIGHTS",
                "1",
                "-1",
                "AGGREGATE",
                "MAX",
                "WITHSCORES"
            ]
        ),
        ["b", "2", "c", "3"]
    );
    assert_eq!(
        s(&mut con, &["ZDIFF", "2", "u1", "u2", "WITHSCORES"]),
        ["a", "1"]
    );
    assert!(s(&mut con, &["ZDIFF", "2", "missing", "u1"]).is_empty());
    // inf * 0 is NaN, which Redis turns into 0.
    assert_eq!(
        s(
            &mut con,
            &[
                "ZUNION",
                "2",
                "u1",
                "u2",
                "WEIGHTS",
                "0",
                "inf",
                "WITHSCORES"
            ]
        ),
        ["a", "0", "b", "inf", "c", "inf", "d", "inf"]
    );

    let n: i64 = redis::cmd("ZUNIONSTORE")
        .arg("out")
        .arg(2)
        .arg("u1")
        .arg("u2")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(all(&mut con, "out").len(), 4);
    let n: i64 = redis::cmd("ZINTERSTORE")
        .arg("out")
        .arg(2)
        .arg("u1")
        .arg("u2")
        .arg("AGGREGATE")
        .arg("MIN")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        all(&mut con, "out"),
        [("b".to_string(), 2.0), ("c".into(), 3.0)]
    );
    let n: i64 = redis::cmd("ZDIFFSTORE")
        .arg("out")
        .arg(2)
        .arg("u2")
        .arg("u1")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(all(&mut con, "out"), [("d".to_string(), 30.0)]);
    let n: i64 = redis::cmd("ZINTERSTORE")
        .arg("out")
        .arg(2)
        .arg("u1")
        .arg("missing")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        gone(&mut con, "out"),
        "an empty result deletes the destination"
    );
    // The destination may be one of the inputs.
    let n: i64 = redis::cmd("ZUNIONSTORE")
        .arg("u1")
        .arg(2)
        .arg("u1")
        .arg("u2")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 4);

    let n: i64 = redis::cmd("ZINTERCARD")
        .arg(2)
        .arg("u1")
        .arg("u2")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("ZINTERCARD")
        .arg(2)
        .arg("u1")
        .arg("u2")
        .arg("LIMIT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("ZINTERCARD")
        .arg(2)
        .arg("u1")
        .arg("u2")
        .arg("LIMIT")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);

    let _: () = con.set("s", "x").unwrap();
    for (args, text) in [
        (
            &["ZUNIONSTORE", "d", "0", "u1"][..],
            "ERR at least 1 input key is needed for 'zunionstore' command",
        ),
        (
            &["ZUNION", "-1", "u1"],
            "ERR at least 1 input key is needed for 'zunion' command",
        ),
        (
            &["ZINTERCARD", "0", "u1"],
            "ERR at least 1 input key is needed for 'zintercard' command",
        ),
        (&["ZUNION", "3", "u1", "u2"], "ERR syntax error"),
        (
            &["ZINTERSTORE", "d", "9223372036854775807", "u1"],
            "ERR syntax error",
        ),
        (
            &["ZUNION", "x", "u1"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["ZUNION", "2", "u1", "u2", "WEIGHTS", "1"],
            "ERR syntax error",
        ),
        (
            &["ZUNION", "2", "u1", "u2", "WEIGHTS", "1", "x"],
            "ERR weight value is not a float",
        ),
        (
            &["ZUNION", "2", "u1", "u2", "AGGREGATE", "AVG"],
            "ERR syntax error",
        ),
        (
            &["ZUNIONSTORE", "d", "2", "u1", "u2", "WITHSCORES"],
            "ERR syntax error",
        ),
        (
            &["ZDIFF", "2", "u1", "u2", "WEIGHTS", "1", "2"],
            "ERR syntax error",
        ),
        (
            &["ZINTERCARD", "2", "u1", "u2", "LIMIT", "-1"],
            "ERR LIMIT can't be negative",
        ),
        (
            &["ZINTERCARD", "2", "u1", "u2", "WITHSCORES"],
            "ERR syntax error",
        ),
        // Input types are checked before the options.
        (&["ZUNION", "2", "u1", "s", "WEIGHTS", "x", "y"], WRONGTYPE),
        (&["ZINTERSTORE", "d", "1", "s"], WRONGTYPE),
    ] {
        assert_eq!(err_text(&mut con, args), text, "{args:?}");
    }
}

#[test]
fn wrong_type_everywhere() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = con.set("s", "x").unwrap();
    for args in [
        &["ZADD", "s", "1", "a"][..],
        &["ZINCRBY", "s", "1", "a"],
        &["ZREM", "s", "a"],
        &["ZSCORE", "s", "a"],
        &["ZMSCORE", "s", "a"],
        &["ZCARD", "s"],
        &["ZCOUNT", "s", "0", "1"],
        &["ZLEXCOUNT", "s", "-", "+"],
        &["ZRANK", "s", "a"],
        &["ZREVRANK", "s", "a"],
        &["ZRANGE", "s", "0", "1"],
        &["ZREVRANGE", "s", "0", "1"],
        &["ZRANGEBYSCORE", "s", "0", "1"],
        &["ZREVRANGEBYSCORE", "s", "1", "0"],
        &["ZRANGEBYLEX", "s", "-", "+"],
        &["ZREVRANGEBYLEX", "s", "+", "-"],
        &["ZREMRANGEBYSCORE", "s", "0", "1"],
        &["ZREMRANGEBYRANK", "s", "0", "1"],
        &["ZREMRANGEBYLEX", "s", "-", "+"],
        &["ZPOPMIN", "s"],
        &["ZPOPMAX", "s", "0"],
        &["ZRANDMEMBER", "s"],
        &["ZRANDMEMBER", "s", "0"],
        &["ZSCAN", "s", "0"],
        &["ZUNION", "1", "s"],
        &["ZDIFFSTORE", "d", "1", "s"],
    ] {
        assert_eq!(err_text(&mut con, args), WRONGTYPE, "{args:?}");
    }
    let v: String = con.get("s").unwrap();
    assert_eq!(v, "x", "errors leave the key alone");
    assert!(gone(&mut con, "d"));
}

/// Spring Session's Redis index: sessions scored by expiry time, the expired ones read
/// newest first in pages, then removed.
#[test]
fn spring_session_expiry_index_flow() {
    let server = TestServer::start();
    let mut con = server.client();
    let key = "spring:session:sessions:expirations";
    for i in 0..150 {
        let n: i64 = con
            .zadd(
                key,
                format!("session-{i:03}"),
                1_700_000_000_000i64 + i * 1000,
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    // Re-adding with a new expiry updates, not duplicates.
    let n: i64 = con.zadd(key, "session-000", 1_700_000_000_500i64).unwrap();
    assert_eq!(n, 0);
    let now = 1_700_000_100_000i64; // sessions 0..=100 have expired
    let page: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(key)
        .arg(now)
        .arg("-inf")
        .arg("LIMIT")
        .arg(0)
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(page.len(), 100);
    assert_eq!(page[0], "session-100");
    assert_eq!(page[99], "session-001");
    let n: i64 = con.zrem(key, &page).unwrap();
    assert_eq!(n, 100);
    let page: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(key)
        .arg(now)
        .arg("-inf")
        .arg("LIMIT")
        .arg(0)
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(page, ["session-000"]);
    let n: i64 = con.zrem(key, &page).unwrap();
    assert_eq!(n, 1);
    let page: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(key)
        .arg(now)
        .arg("-inf")
        .arg("LIMIT")
        .arg(0)
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert!(page.is_empty());
    let n: i64 = con.zcard(key).unwrap();
    assert_eq!(n, 49);
}

#[test]
fn resp3_reply_shapes() {
    let server = TestServer::start();
    let client = redis::Client::open(format!("{}?protocol=resp3", server.url())).unwrap();
    let mut con = client.get_connection().unwrap();
    let q = |con: &mut redis::Connection, args: &[&str]| run(con, args).unwrap();
    let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let pair = |m: &str, s: f64| {
        Value::Array(vec![
            Value::BulkString(m.as_bytes().to_vec()),
            Value::Double(s),
        ])
    };
    q(&mut con, &["ZADD", "z", "1", "a", "2.5", "b", "3", "c"]);
    assert_eq!(q(&mut con, &["ZSCORE", "z", "b"]), Value::Double(2.5));
    assert_eq!(q(&mut con, &["ZSCORE", "z", "nope"]), Value::Nil);
    assert_eq!(q(&mut con, &["ZINCRBY", "z", "1", "a"]), Value::Double(2.0));
    assert_eq!(
        q(&mut con, &["ZADD", "z", "INCR", "-1", "a"]),
        Value::Double(1.0)
    );
    assert_eq!(
        q(&mut con, &["ZMSCORE", "z", "a", "nope"]),
        Value::Array(vec![Value::Double(1.0), Value::Nil])
    );
    assert_eq!(
        q(&mut con, &["ZRANGE", "z", "0", "1", "WITHSCORES"]),
        Value::Array(vec![pair("a", 1.0), pair("b", 2.5)])
    );
    assert_eq!(
        q(&mut con, &["ZRANGE", "z", "0", "1"]),
        Value::Array(vec![b("a"), b("b")])
    );
    assert_eq!(
        q(&mut con, &["ZRANK", "z", "b", "WITHSCORE"]),
        Value::Array(vec![Value::Int(1), Value::Double(2.5)])
    );
    // ZPOPMIN without a count is flat; with one it nests pairs.
    assert_eq!(
        q(&mut con, &["ZPOPMIN", "z"]),
        Value::Array(vec![b("a"), Value::Double(1.0)])
    );
    assert_eq!(
        q(&mut con, &["ZPOPMAX", "z", "1"]),
        Value::Array(vec![pair("c", 3.0)])
    );
    assert_eq!(
        q(&mut con, &["ZRANDMEMBER", "z", "5", "WITHSCORES"]),
        Value::Array(vec![pair("b", 2.5)])
    );
    assert_eq!(
        q(&mut con, &["ZUNION", "1", "z", "WITHSCORES"]),
        Value::Array(vec![pair("b", 2.5)])
    );
    // ZSCAN keeps scores as strings.
    assert_eq!(
        q(&mut con, &["ZSCAN", "z", "0"]),
        Value::Array(vec![b("0"), Value::Array(vec![b("b"), b("2.5")])])
    );
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
        &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"][..],
        &["ZADD", "z", "1", "a"],         // no change: no event
        &["ZADD", "z", "XX", "1", "new"], // blocked: no event
        &["ZINCRBY", "z", "1", "a"],
        &["ZADD", "z", "INCR", "1", "a"],
        &["ZREM", "z", "nope"], // nothing removed: no event
        &["ZREM", "z", "a"],
        &["ZREMRANGEBYSCORE", "z", "10", "20"], // nothing removed: no event
        &["ZREMRANGEBYSCORE", "z", "2", "2"],
        &["ZREMRANGEBYRANK", "z", "0", "0"],
        &["ZADD", "z", "4", "x", "4", "y"],
        &["ZREMRANGEBYLEX", "z", "[x", "[x"],
        &["ZPOPMIN", "z"],
        &["ZRANGESTORE", "copy", "z", "0", "-1"],
        &["ZRANGESTORE", "copy", "z", "5", "6"],
        &["ZRANGESTORE", "copy", "z", "5", "6"], // already missing: no event
        &["ZUNIONSTORE", "u", "1", "z"],
        &["ZINTERSTORE", "u", "2", "z", "missing"],
        &["ZDIFFSTORE", "u", "1", "z"],
        &["ZPOPMAX", "z", "5"],
        &["ZADD", "done", "1", "x"],
    ] {
        run(&mut con, args).unwrap();
    }
    let got = common::keyevents_until_done(&mut pubsub);
    assert_eq!(
        got,
        [
            "zadd z",
            "zincr z",
            "zincr z",
            "zrem z",
            "zremrangebyscore z",
            "zremrangebyrank z",
            "zadd z",
            "zremrangebylex z",
            "zpopmin z",
            "zrangestore copy",
            "del copy",
            "zunionstore u",
            "del u",
            "zdiffstore u",
            "zpopmax z",
            "del z",
            "zadd done",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Model check
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Flags index into FLAG_SETS; pairs are (score in halves, member).
    Add(usize, Vec<(i32, String)>),
    Rem(Vec<String>),
    Incr(i32, String),
}

const FLAG_SETS: [&[&str]; 7] = [
    &[],
    &["NX"],
    &["XX"],
    &["GT"],
    &["LT"],
    &["CH"],
    &["XX", "GT", "CH"],
];

fn op_strategy() -> impl Strategy<Value = Op> {
    let member = "[a-e]";
    let score = -6i32..6;
    prop_oneof![
        (
            0..FLAG_SETS.len(),
            prop::collection::vec((score.clone(), member), 1..4)
        )
            .prop_map(|(f, p)| Op::Add(f, p)),
        prop::collection::vec(member, 1..3).prop_map(Op::Rem),
        (score, member).prop_map(|(s, m)| Op::Incr(s, m)),
    ]
}

/// ZADD on the model, from the documented rules; returns the reply.
fn model_add(model: &mut BTreeMap<String, f64>, flags: &[&str], pairs: &[(f64, String)]) -> i64 {
    let has = |f: &str| flags.contains(&f);
    let (mut added, mut changed) = (0, 0);
    for (score, member) in pairs {
        match model.get(member).copied() {
            Some(cur) => {
                let blocked =
                    has("NX") || (has("GT") && *score <= cur) || (has("LT") && *score >= cur);
                if !blocked && *score != cur {
                    model.insert(member.clone(), *score);
                    changed += 1;
                }
            }
            None if has("XX") => {}
            None => {
                model.insert(member.clone(), *score);
                added += 1;
            }
        }
    }
    if has("CH") {
        added + changed
    } else {
        added
    }
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
            let mut model: BTreeMap<String, f64> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Add(f, pairs) => {
                        let flags = FLAG_SETS[*f];
                        let pairs: Vec<(f64, String)> = pairs
                            .iter()
                            .map(|(s, m)| (*s as f64 / 2.0, m.clone()))
                            .collect();
                        let mut cmd = redis::cmd("ZADD");
                        cmd.arg(&key).arg(flags);
                        for (s, m) in &pairs {
                            cmd.arg(*s).arg(m);
                        }
                        let got: i64 = cmd.query(con).unwrap();
                        prop_assert_eq!(got, model_add(&mut model, flags, &pairs));
                    }
                    Op::Rem(members) => {
                        let got: i64 = con.zrem(&key, members).unwrap();
                        let mut want = 0;
                        for m in members {
                            want += model.remove(m).is_some() as i64;
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::Incr(s, m) => {
                        let by = *s as f64 / 2.0;
                        let got: f64 = con.zincr(&key, m, by).unwrap();
                        let new = model.get(m).copied().unwrap_or(0.0) + by;
                        model.insert(m.clone(), new);
                        prop_assert_eq!(got, new);
                    }
                }
                let got: Vec<(String, f64)> = con.zrange_withscores(&key, 0, -1).unwrap();
                // Redis's order: by score, ties by member (-0 and 0 are one score).
                let mut want: Vec<(String, f64)> =
                    model.iter().map(|(m, s)| (m.clone(), *s + 0.0)).collect();
                want.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
                prop_assert_eq!(&got, &want, "after {:?}", op);
                let card: usize = con.zcard(&key).unwrap();
                prop_assert_eq!(card, model.len());
                prop_assert_eq!(gone(con, &key), model.is_empty());
            }
            Ok(())
        })
        .unwrap();
}
