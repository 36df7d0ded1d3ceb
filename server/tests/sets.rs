//! Sets through a real client against a real server: every command, Redis's error
//! texts, RESP3 shapes, deterministic SPOP, and a model-based property test.
//!
//! DEL / EXISTS / TYPE live in another family, so "the key is gone" is checked by
//! writing another type to it: HSET only succeeds on a key that no longer holds a set.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::{err_text, TestServer};
use redis::Value;

use common::WRONGTYPE;

use common::q;

/// True if `key` holds nothing: HSET can create a hash there (the hash is left behind).
fn is_free(con: &mut redis::Connection, key: &str) -> bool {
    common::run(con, &["HSET", key, "probe", "1"]).is_ok()
}

fn members(con: &mut redis::Connection, key: &str) -> BTreeSet<String> {
    q(con, &["SMEMBERS", key])
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn sadd(con: &mut redis::Connection, key: &str, items: &[&str]) -> i64 {
    let mut args = vec!["SADD", key];
    args.extend_from_slice(items);
    q(con, &args)
}

#[test]
fn add_remove_and_membership() {
    let server = TestServer::start();
    let mut con = server.client();
    assert_eq!(sadd(&mut con, "s", &["a", "b", "c"]), 3);
    assert_eq!(sadd(&mut con, "s", &["a", "d", "d"]), 1);
    assert_eq!(members(&mut con, "s"), set_of(&["a", "b", "c", "d"]));
    assert!(members(&mut con, "nokey").is_empty());
    assert_eq!(q::<i64>(&mut con, &["SCARD", "s"]), 4);
    assert_eq!(q::<i64>(&mut con, &["SCARD", "nokey"]), 0);
    assert_eq!(q::<i64>(&mut con, &["SISMEMBER", "s", "a"]), 1);
    assert_eq!(q::<i64>(&mut con, &["SISMEMBER", "s", "z"]), 0);
    assert_eq!(q::<i64>(&mut con, &["SISMEMBER", "nokey", "a"]), 0);
    assert_eq!(
        q::<Vec<i64>>(&mut con, &["SMISMEMBER", "s", "a", "z", "b"]),
        vec![1, 0, 1]
    );
    assert_eq!(
        q::<Vec<i64>>(&mut con, &["SMISMEMBER", "nokey", "a", "b"]),
        vec![0, 0]
    );

    assert_eq!(q::<i64>(&mut con, &["SREM", "s", "d", "x", "d"]), 1);
    assert_eq!(q::<i64>(&mut con, &["SREM", "s", "x"]), 0);
    assert_eq!(q::<i64>(&mut con, &["SREM", "nokey", "a"]), 0);
    assert!(!is_free(&mut con, "s"));
    assert_eq!(q::<i64>(&mut con, &["SREM", "s", "a", "b", "c"]), 3);
    assert_eq!(q::<i64>(&mut con, &["SCARD", "s"]), 0);
    assert!(is_free(&mut con, "s"), "an emptied set is deleted");

    // Binary-safe members, the empty one included.
    let n: i64 = redis::cmd("SADD")
        .arg("bin")
        .arg(&b"\x00\xff"[..])
        .arg(&b""[..])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("SISMEMBER")
        .arg("bin")
        .arg(&b""[..])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn arity_errors() {
    let server = TestServer::start();
    let mut con = server.client();
    let cases: &[(&[&str], &str)] = &[
        (&["SADD", "s"], "sadd"),
        (&["SREM", "s"], "srem"),
        (&["SMEMBERS"], "smembers"),
        (&["SISMEMBER", "s"], "sismember"),
        (&["SMISMEMBER", "s"], "smismember"),
        (&["SCARD", "s", "x"], "scard"),
        (&["SPOP"], "spop"),
        (&["SRANDMEMBER"], "srandmember"),
        (&["SMOVE", "a", "b"], "smove"),
        (&["SINTER"], "sinter"),
        (&["SINTERCARD", "1"], "sintercard"),
        (&["SUNION"], "sunion"),
        (&["SDIFF"], "sdiff"),
        (&["SINTERSTORE", "d"], "sinterstore"),
        (&["SUNIONSTORE", "d"], "sunionstore"),
        (&["SDIFFSTORE", "d"], "sdiffstore"),
        (&["SSCAN", "s"], "sscan"),
    ];
    for (args, name) in cases {
        assert_eq!(
            err_text(&mut con, args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
}

#[test]
fn wrong_type_everywhere() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = q(&mut con, &["SET", "str", "x"]);
    sadd(&mut con, "s", &["a"]);
    let cases: &[&[&str]] = &[
        &["SADD", "str", "a"],
        &["SREM", "str", "a"],
        &["SMEMBERS", "str"],
        &["SISMEMBER", "str", "a"],
        &["SMISMEMBER", "str", "a"],
        &["SCARD", "str"],
        &["SPOP", "str"],
        &["SPOP", "str", "0"],
        &["SRANDMEMBER", "str"],
        &["SRANDMEMBER", "str", "0"],
        &["SMOVE", "str", "s", "a"],
        &["SMOVE", "s", "str", "a"],
        &["SINTER", "s", "str"],
        // A missing key does not hide a later wrong type.
        &["SINTER", "nokey", "str"],
        &["SUNION", "s", "str"],
        &["SDIFF", "s", "str"],
        &["SDIFF", "nokey", "str"],
        &["SINTERSTORE", "d", "s", "str"],
        &["SUNIONSTORE", "d", "s", "str"],
        &["SDIFFSTORE", "d", "s", "str"],
        &["SINTERCARD", "2", "nokey", "str"],
        &["SSCAN", "str", "0"],
        &["SSCAN", "str", "0", "COUNT", "0"],
    ];
    for args in cases {
        assert_eq!(err_text(&mut con, args), WRONGTYPE, "{args:?}");
    }
    // Nothing moved, nothing stored.
    assert_eq!(members(&mut con, "s"), set_of(&["a"]));
    assert_eq!(q::<String>(&mut con, &["GET", "str"]), "x");
    assert!(is_free(&mut con, "d"));
    // A missing source answers 0 before the destination's type is looked at.
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "nokey", "str", "a"]), 0);
}

#[test]
fn spop() {
    let server = TestServer::start();
    let mut con = server.client();
    let all: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    sadd(&mut con, "s", &all_refs);

    let one: String = q(&mut con, &["SPOP", "s"]);
    let some: Vec<String> = q(&mut con, &["SPOP", "s", "10"]);
    assert_eq!(some.len(), 10);
    let rest = members(&mut con, "s");
    assert_eq!(rest.len(), 19);
    let mut seen: BTreeSet<String> = rest.clone();
    assert!(seen.insert(one));
    for m in some {
        assert!(seen.insert(m), "popped twice or still present");
    }
    assert_eq!(seen, all.iter().cloned().collect());

    assert!(q::<Vec<String>>(&mut con, &["SPOP", "s", "0"]).is_empty());
    assert_eq!(q::<i64>(&mut con, &["SCARD", "s"]), 19);
    // Popping everything deletes the set.
    let last: Vec<String> = q(&mut con, &["SPOP", "s", "100"]);
    assert_eq!(last.into_iter().collect::<BTreeSet<_>>(), rest);
    assert!(is_free(&mut con, "s"));

    sadd(&mut con, "one", &["x"]);
    assert_eq!(q::<String>(&mut con, &["SPOP", "one"]), "x");
    assert!(is_free(&mut con, "one"));

    assert_eq!(q::<Option<String>>(&mut con, &["SPOP", "nokey"]), None);
    assert!(q::<Vec<String>>(&mut con, &["SPOP", "nokey", "5"]).is_empty());
    assert_eq!(
        q::<Vec<String>>(&mut con, &["SPOP", "nokey", "9223372036854775807"]),
        Vec::<String>::new()
    );

    sadd(&mut con, "t", &["a", "b"]);
    let positive = "ERR value is out of range, must be positive";
    assert_eq!(err_text(&mut con, &["SPOP", "t", "-1"]), positive);
    assert_eq!(err_text(&mut con, &["SPOP", "t", "x"]), positive);
    assert_eq!(
        err_text(&mut con, &["SPOP", "t", "-9223372036854775808"]),
        positive
    );
    assert_eq!(
        err_text(&mut con, &["SPOP", "t", "1", "2"]),
        "ERR syntax error"
    );
    assert_eq!(q::<i64>(&mut con, &["SCARD", "t"]), 2);
}

#[test]
fn spop_is_deterministic() {
    // Randomness is seeded from the log index. Two servers whose logs have the same
    // length, with members added in different orders (so their tables are laid out
    // differently), must pop the same members: that is what a replica replaying the log
    // does.
    let a = TestServer::start();
    let b = TestServer::start();
    let mut ca = a.client();
    let mut cb = b.client();
    let items: Vec<String> = (0..200).map(|i| format!("member-{i}")).collect();
    let forward: Vec<&str> = items.iter().map(String::as_str).collect();
    let backward: Vec<&str> = forward.iter().rev().copied().collect();
    for (fa, fb) in forward.chunks(7).zip(backward.chunks(7)) {
        sadd(&mut ca, "s", fa);
        sadd(&mut cb, "s", fb);
    }
    for _ in 0..5 {
        let pa: String = q(&mut ca, &["SPOP", "s"]);
        let pb: String = q(&mut cb, &["SPOP", "s"]);
        assert_eq!(pa, pb);
        let pa: BTreeSet<String> = q(&mut ca, &["SPOP", "s", "13"]);
        let pb: BTreeSet<String> = q(&mut cb, &["SPOP", "s", "13"]);
        assert_eq!(pa, pb);
    }
    assert_eq!(members(&mut ca, "s"), members(&mut cb, "s"));
}

#[test]
fn srandmember() {
    let server = TestServer::start();
    let mut con = server.client();
    let all: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    sadd(&mut con, "s", &all_refs);
    let universe: BTreeSet<String> = all.iter().cloned().collect();

    let one: String = q(&mut con, &["SRANDMEMBER", "s"]);
    assert!(universe.contains(&one));
    let some: Vec<String> = q(&mut con, &["SRANDMEMBER", "s", "5"]);
    assert_eq!(some.len(), 5);
    assert_eq!(some.iter().collect::<HashSet<_>>().len(), 5, "distinct");
    assert!(some.iter().all(|m| universe.contains(m)));
    let whole: Vec<String> = q(&mut con, &["SRANDMEMBER", "s", "100"]);
    assert_eq!(whole.into_iter().collect::<BTreeSet<_>>(), universe);
    let repeats: Vec<String> = q(&mut con, &["SRANDMEMBER", "s", "-100"]);
    assert_eq!(repeats.len(), 100);
    assert!(repeats.iter().all(|m| universe.contains(m)));
    assert!(q::<Vec<String>>(&mut con, &["SRANDMEMBER", "s", "0"]).is_empty());
    // A read: nothing was removed.
    assert_eq!(q::<i64>(&mut con, &["SCARD", "s"]), 20);

    assert_eq!(
        q::<Option<String>>(&mut con, &["SRANDMEMBER", "nokey"]),
        None
    );
    assert!(q::<Vec<String>>(&mut con, &["SRANDMEMBER", "nokey", "5"]).is_empty());
    assert!(q::<Vec<String>>(&mut con, &["SRANDMEMBER", "nokey", "-5"]).is_empty());

    assert_eq!(
        err_text(&mut con, &["SRANDMEMBER", "s", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["SRANDMEMBER", "s", "1", "2"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["SRANDMEMBER", "nokey", "-9223372036854775808"]),
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    let huge: Vec<String> = q(&mut con, &["SRANDMEMBER", "s", "9223372036854775807"]);
    assert_eq!(huge.len(), 20);
    // Kelvin's deviation: a negative count whose reply would pass 512 MB is refused
    // (Redis would try to send it).
    assert_eq!(
        err_text(&mut con, &["SRANDMEMBER", "s", "-9223372036854775807"]),
        "ERR value is out of range"
    );
}

#[test]
fn smove() {
    let server = TestServer::start();
    let mut con = server.client();
    sadd(&mut con, "src", &["a", "b"]);
    sadd(&mut con, "dst", &["b", "c"]);
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "src", "dst", "a"]), 1);
    assert_eq!(members(&mut con, "src"), set_of(&["b"]));
    assert_eq!(members(&mut con, "dst"), set_of(&["a", "b", "c"]));
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "src", "dst", "a"]), 0);
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "src", "dst", "zz"]), 0);
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "nokey", "dst", "a"]), 0);
    // Same source and destination: membership, no change.
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "dst", "dst", "a"]), 1);
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "dst", "dst", "zz"]), 0);
    assert_eq!(members(&mut con, "dst"), set_of(&["a", "b", "c"]));
    // Moving a member the destination has already: removed from the source only.
    // That empties the source, which is deleted.
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "src", "dst", "b"]), 1);
    assert!(is_free(&mut con, "src"));
    assert_eq!(members(&mut con, "dst"), set_of(&["a", "b", "c"]));
    // A missing destination is created.
    assert_eq!(q::<i64>(&mut con, &["SMOVE", "dst", "new", "c"]), 1);
    assert_eq!(members(&mut con, "new"), set_of(&["c"]));
}

#[test]
fn algebra_and_store() {
    let server = TestServer::start();
    let mut con = server.client();
    sadd(&mut con, "s1", &["a", "b", "c", "d"]);
    sadd(&mut con, "s2", &["c", "d", "e"]);
    sadd(&mut con, "s3", &["d", "e", "f"]);
    let set = |con: &mut redis::Connection, args: &[&str]| -> BTreeSet<String> { q(con, args) };

    assert_eq!(set(&mut con, &["SINTER", "s1", "s2"]), set_of(&["c", "d"]));
    assert_eq!(set(&mut con, &["SINTER", "s1", "s2", "s3"]), set_of(&["d"]));
    assert_eq!(
        set(&mut con, &["SINTER", "s1"]),
        set_of(&["a", "b", "c", "d"])
    );
    assert_eq!(
        set(&mut con, &["SINTER", "s1", "s1"]),
        set_of(&["a", "b", "c", "d"])
    );
    assert!(set(&mut con, &["SINTER", "s1", "nokey"]).is_empty());
    assert_eq!(
        set(&mut con, &["SUNION", "s1", "s2", "s3"]),
        set_of(&["a", "b", "c", "d", "e", "f"])
    );
    assert_eq!(
        set(&mut con, &["SUNION", "s1", "nokey"]),
        set_of(&["a", "b", "c", "d"])
    );
    assert!(set(&mut con, &["SUNION", "nokey"]).is_empty());
    assert_eq!(set(&mut con, &["SDIFF", "s1", "s2"]), set_of(&["a", "b"]));
    assert_eq!(
        set(&mut con, &["SDIFF", "s1", "s2", "s3"]),
        set_of(&["a", "b"])
    );
    assert_eq!(
        set(&mut con, &["SDIFF", "s1", "nokey"]),
        set_of(&["a", "b", "c", "d"])
    );
    assert!(set(&mut con, &["SDIFF", "nokey", "s1"]).is_empty());
    assert!(set(&mut con, &["SDIFF", "s1", "s1"]).is_empty());

    assert_eq!(q::<i64>(&mut con, &["SINTERSTORE", "dst", "s1", "s2"]), 2);
    assert_eq!(members(&mut con, "dst"), set_of(&["c", "d"]));
    assert_eq!(
        q::<i64>(&mut con, &["SUNIONSTORE", "dst", "s1", "s2", "s3"]),
        6
    );
    assert_eq!(
        members(&mut con, "dst"),
        set_of(&["a", "b", "c", "d", "e", "f"])
    );
    assert_eq!(q::<i64>(&mut con, &["SDIFFSTORE", "dst", "s1", "s2"]), 2);
    assert_eq!(members(&mut con, "dst"), set_of(&["a", "b"]));
    // The destination may be a source.
    assert_eq!(q::<i64>(&mut con, &["SUNIONSTORE", "dst", "dst", "s3"]), 5);
    assert_eq!(members(&mut con, "dst"), set_of(&["a", "b", "d", "e", "f"]));
    // An empty result deletes the destination.
    assert_eq!(q::<i64>(&mut con, &["SDIFFSTORE", "dst", "s1", "s1"]), 0);
    assert!(is_free(&mut con, "dst"));
    // The destination's old value is replaced whatever its type.
    let _: () = q(&mut con, &["SET", "str", "x", "EX", "100"]);
    assert_eq!(q::<i64>(&mut con, &["SUNIONSTORE", "str", "s2"]), 3);
    assert_eq!(members(&mut con, "str"), set_of(&["c", "d", "e"]));
    let _: () = q(&mut con, &["SET", "str2", "x"]);
    assert_eq!(
        q::<i64>(&mut con, &["SINTERSTORE", "str2", "s1", "nokey"]),
        0
    );
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "str2"]), None);
    assert_eq!(q::<i64>(&mut con, &["SINTERSTORE", "nothing", "nokey"]), 0);
    assert!(is_free(&mut con, "nothing"));
}

#[test]
fn sintercard() {
    let server = TestServer::start();
    let mut con = server.client();
    sadd(&mut con, "s1", &["a", "b", "c", "d"]);
    sadd(&mut con, "s2", &["b", "c", "d", "e"]);
    assert_eq!(q::<i64>(&mut con, &["SINTERCARD", "1", "s1"]), 4);
    assert_eq!(q::<i64>(&mut con, &["SINTERCARD", "2", "s1", "s2"]), 3);
    assert_eq!(
        q::<i64>(&mut con, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "2"]),
        2
    );
    assert_eq!(
        q::<i64>(&mut con, &["SINTERCARD", "2", "s1", "s2", "limit", "0"]),
        3
    );
    assert_eq!(
        q::<i64>(&mut con, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "9"]),
        3
    );
    assert_eq!(
        q::<i64>(
            &mut con,
            &["SINTERCARD", "2", "s1", "s2", "LIMIT", "1", "LIMIT", "5"]
        ),
        3
    );
    assert_eq!(q::<i64>(&mut con, &["SINTERCARD", "2", "s1", "nokey"]), 0);
    // A key named LIMIT is just a key when counted in numkeys.
    assert_eq!(q::<i64>(&mut con, &["SINTERCARD", "2", "s1", "LIMIT"]), 0);

    let numkeys = "ERR numkeys should be greater than 0";
    for bad in ["0", "-1", "x", "-9223372036854775808"] {
        assert_eq!(
            err_text(&mut con, &["SINTERCARD", bad, "s1"]),
            numkeys,
            "{bad}"
        );
    }
    assert_eq!(
        err_text(&mut con, &["SINTERCARD", "3", "s1", "s2"]),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        err_text(&mut con, &["SINTERCARD", "9223372036854775807", "s1"]),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        err_text(&mut con, &["SINTERCARD", "1", "s1", "LIMIT"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["SINTERCARD", "1", "s1", "foo"]),
        "ERR syntax error"
    );
    for bad in ["-1", "x"] {
        assert_eq!(
            err_text(&mut con, &["SINTERCARD", "1", "s1", "LIMIT", bad]),
            "ERR LIMIT can't be negative"
        );
    }
}

#[test]
fn sscan() {
    let server = TestServer::start();
    let mut con = server.client();
    let (cursor, items): (String, Vec<String>) = q(&mut con, &["SSCAN", "nokey", "0"]);
    assert_eq!((cursor.as_str(), items.len()), ("0", 0));

    sadd(&mut con, "small", &["a", "b", "c"]);
    let (cursor, items): (String, Vec<String>) = q(&mut con, &["SSCAN", "small", "0"]);
    assert_eq!(cursor, "0");
    assert_eq!(
        items.into_iter().collect::<BTreeSet<_>>(),
        set_of(&["a", "b", "c"])
    );
    let (_, items): (String, Vec<String>) = q(&mut con, &["SSCAN", "small", "0", "MATCH", "[ab]"]);
    assert_eq!(
        items.into_iter().collect::<BTreeSet<_>>(),
        set_of(&["a", "b"])
    );

    let big: Vec<String> = (0..1000).map(|i| format!("m:{i}")).collect();
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    sadd(&mut con, "big", &refs);
    let mut cursor = "0".to_string();
    let mut seen = BTreeSet::new();
    let mut calls = 0;
    loop {
        let (next, items): (String, Vec<String>) =
            q(&mut con, &["SSCAN", "big", &cursor, "COUNT", "30"]);
        calls += 1;
        for m in items {
            assert!(seen.insert(m.clone()), "{m} twice");
        }
        // Churn: members come and go mid-scan.
        let _: i64 = q(&mut con, &["SADD", "big", &format!("extra:{calls}")]);
        let _: i64 = q(&mut con, &["SREM", "big", &format!("extra:{}", calls - 1)]);
        if next == "0" {
            break;
        }
        cursor = next;
        assert!(calls < 10_000);
    }
    assert!(calls >= 30, "{calls} calls");
    assert!(big.iter().all(|m| seen.contains(m)));

    assert_eq!(
        err_text(&mut con, &["SSCAN", "small", "x"]),
        "ERR invalid cursor"
    );
    assert_eq!(
        err_text(&mut con, &["SSCAN", "small", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["SSCAN", "small", "0", "NOVALUES"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["SSCAN", "small", "0", "MATCH"]),
        "ERR syntax error"
    );
}

#[test]
fn resp3_shapes() {
    let server = TestServer::start();
    let mut con = redis::Client::open(format!("redis://{}/?protocol=resp3", server.addr))
        .expect("client")
        .get_connection()
        .expect("connect");
    sadd(&mut con, "s", &["m"]);
    let m = || Value::BulkString(b"m".to_vec());
    assert_eq!(
        q::<Value>(&mut con, &["SMEMBERS", "s"]),
        Value::Set(vec![m()])
    );
    assert_eq!(
        q::<Value>(&mut con, &["SMEMBERS", "nokey"]),
        Value::Set(vec![])
    );
    for args in [
        &["SINTER", "s"][..],
        &["SUNION", "s", "nokey"],
        &["SDIFF", "s"],
    ] {
        assert_eq!(
            q::<Value>(&mut con, args),
            Value::Set(vec![m()]),
            "{args:?}"
        );
    }
    assert_eq!(
        q::<Value>(&mut con, &["SRANDMEMBER", "s", "1"]),
        Value::Array(vec![m()])
    );
    assert_eq!(
        q::<Value>(&mut con, &["SRANDMEMBER", "nokey", "1"]),
        Value::Array(vec![])
    );
    assert_eq!(q::<Value>(&mut con, &["SRANDMEMBER", "nokey"]), Value::Nil);
    assert_eq!(
        q::<Value>(&mut con, &["SPOP", "nokey", "1"]),
        Value::Set(vec![])
    );
    assert_eq!(
        q::<Value>(&mut con, &["SPOP", "s", "0"]),
        Value::Set(vec![])
    );
    assert_eq!(
        q::<Value>(&mut con, &["SSCAN", "s", "0"]),
        Value::Array(vec![
            Value::BulkString(b"0".to_vec()),
            Value::Array(vec![m()])
        ])
    );
    assert_eq!(
        q::<Value>(&mut con, &["SPOP", "s", "1"]),
        Value::Set(vec![m()])
    );
    assert_eq!(q::<Value>(&mut con, &["SPOP", "nokey"]), Value::Nil);
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, Vec<u8>),
    Rem(u8, Vec<u8>),
    Move(u8, u8, u8),
}

/// Model-based test: random SADD / SREM / SMOVE on a few keys, applied to the server and
/// to BTreeSets; SMEMBERS must agree after every step.
#[test]
fn model_based_set_ops() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::RefCell;

    let server = TestServer::start();
    let con = RefCell::new(server.client());
    let case = RefCell::new(0u32);
    let members = || proptest::collection::vec(0..8u8, 1..4);
    let op = prop_oneof![
        (0..3u8, members()).prop_map(|(k, m)| Op::Add(k, m)),
        (0..3u8, members()).prop_map(|(k, m)| Op::Rem(k, m)),
        (0..3u8, 0..3u8, 0..8u8).prop_map(|(a, b, m)| Op::Move(a, b, m)),
    ];
    let mut runner = TestRunner::new(Config::with_cases(32));
    runner
        .run(&proptest::collection::vec(op, 1..40), |ops| {
            // Fresh keys per case: DEL / FLUSHDB are not this branch's to use.
            let n = {
                let mut c = case.borrow_mut();
                *c += 1;
                *c
            };
            let con = &mut *con.borrow_mut();
            let name = |k: u8| format!("{{case{n}}}:s{k}");
            let mut model: BTreeMap<u8, BTreeSet<String>> = BTreeMap::new();
            for op in ops {
                let touched = match op {
                    Op::Add(k, ms) => {
                        let ms: Vec<String> = ms.iter().map(|m| format!("m{m}")).collect();
                        let mut args = vec!["SADD".to_string(), name(k)];
                        args.extend(ms.iter().cloned());
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let added: i64 = q(con, &args);
                        let set = model.entry(k).or_default();
                        let want = ms.iter().filter(|m| set.insert((*m).clone())).count();
                        prop_assert_eq!(added as usize, want);
                        vec![k]
                    }
                    Op::Rem(k, ms) => {
                        let ms: Vec<String> = ms.iter().map(|m| format!("m{m}")).collect();
                        let mut args = vec!["SREM".to_string(), name(k)];
                        args.extend(ms.iter().cloned());
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let removed: i64 = q(con, &args);
                        let want = match model.get_mut(&k) {
                            Some(set) => ms.iter().filter(|m| set.remove(*m)).count(),
                            None => 0,
                        };
                        prop_assert_eq!(removed as usize, want);
                        vec![k]
                    }
                    Op::Move(a, b, m) => {
                        let m = format!("m{m}");
                        let moved: i64 = q(con, &["SMOVE", &name(a), &name(b), &m]);
                        let present = model.get(&a).is_some_and(|s| s.contains(&m));
                        if present && a != b {
                            model.entry(a).or_default().remove(&m);
                            model.entry(b).or_default().insert(m);
                        }
                        prop_assert_eq!(moved, present as i64);
                        vec![a, b]
                    }
                };
                model.retain(|_, s| !s.is_empty());
                for k in touched {
                    let got: BTreeSet<String> = q(con, &["SMEMBERS", &name(k)]);
                    let want = model.get(&k).cloned().unwrap_or_default();
                    prop_assert_eq!(&got, &want);
                    let card: i64 = q(con, &["SCARD", &name(k)]);
                    prop_assert_eq!(card as usize, got.len());
                }
            }
            Ok(())
        })
        .unwrap();
}
