//! Hashes through a real client against a real server: every command, Redis's error
//! texts, RESP3 shapes, the Spring Session flow, and a model-based property test.
//!
//! DEL / EXISTS / TYPE live in another family, so "the key is gone" is checked by
//! writing another type to it: SADD only succeeds on a key that no longer holds a hash.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{err_text, TestServer};
use redis::Value;

use common::WRONGTYPE;

use common::q;

/// True if `key` holds nothing: SADD can create a set there (the set is left behind).
fn is_free(con: &mut redis::Connection, key: &str) -> bool {
    common::run(con, &["SADD", key, "probe"]).is_ok()
}

fn resp3_client(server: &TestServer) -> redis::Connection {
    redis::Client::open(format!("redis://{}/?protocol=resp3", server.addr))
        .expect("client")
        .get_connection()
        .expect("connect")
}

#[test]
fn hset_hget_and_friends() {
    let server = TestServer::start();
    let mut con = server.client();
    assert_eq!(q::<i64>(&mut con, &["HSET", "h", "a", "1", "b", "2"]), 2);
    // Existing fields are updated, not counted; a repeated field counts once.
    assert_eq!(
        q::<i64>(&mut con, &["HSET", "h", "a", "10", "c", "3", "c", "33"]),
        1
    );
    assert_eq!(q::<String>(&mut con, &["HGET", "h", "a"]), "10");
    assert_eq!(q::<String>(&mut con, &["HGET", "h", "c"]), "33");
    assert_eq!(q::<Option<String>>(&mut con, &["HGET", "h", "nope"]), None);
    assert_eq!(q::<Option<String>>(&mut con, &["HGET", "nokey", "a"]), None);
    assert_eq!(
        q::<Vec<Option<String>>>(&mut con, &["HMGET", "h", "a", "nope", "b"]),
        vec![Some("10".into()), None, Some("2".into())]
    );
    assert_eq!(
        q::<Vec<Option<String>>>(&mut con, &["HMGET", "nokey", "a", "b"]),
        vec![None, None]
    );
    assert_eq!(q::<i64>(&mut con, &["HLEN", "h"]), 3);
    assert_eq!(q::<i64>(&mut con, &["HLEN", "nokey"]), 0);
    assert_eq!(q::<i64>(&mut con, &["HEXISTS", "h", "a"]), 1);
    assert_eq!(q::<i64>(&mut con, &["HEXISTS", "h", "nope"]), 0);
    assert_eq!(q::<i64>(&mut con, &["HEXISTS", "nokey", "a"]), 0);
    assert_eq!(q::<i64>(&mut con, &["HSTRLEN", "h", "a"]), 2);
    assert_eq!(q::<i64>(&mut con, &["HSTRLEN", "h", "nope"]), 0);
    assert_eq!(q::<i64>(&mut con, &["HSTRLEN", "nokey", "a"]), 0);

    let all: HashMap<String, String> = q(&mut con, &["HGETALL", "h"]);
    let want: HashMap<String, String> = [("a", "10"), ("b", "2"), ("c", "33")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(all, want);
    assert!(q::<HashMap<String, String>>(&mut con, &["HGETALL", "nokey"]).is_empty());
    let keys: HashSet<String> = q(&mut con, &["HKEYS", "h"]);
    assert_eq!(keys, want.keys().cloned().collect::<HashSet<_>>());
    let vals: HashSet<String> = q(&mut con, &["HVALS", "h"]);
    assert_eq!(vals, want.values().cloned().collect::<HashSet<_>>());
    assert!(q::<Vec<String>>(&mut con, &["HKEYS", "nokey"]).is_empty());
    assert!(q::<Vec<String>>(&mut con, &["HVALS", "nokey"]).is_empty());

    // HSETNX
    assert_eq!(q::<i64>(&mut con, &["HSETNX", "h", "a", "x"]), 0);
    assert_eq!(q::<String>(&mut con, &["HGET", "h", "a"]), "10");
    assert_eq!(q::<i64>(&mut con, &["HSETNX", "h", "z", "26"]), 1);
    assert_eq!(q::<i64>(&mut con, &["HSETNX", "fresh", "f", "v"]), 1);
    assert_eq!(q::<String>(&mut con, &["HGET", "fresh", "f"]), "v");

    // HMSET answers OK
    assert_eq!(
        q::<String>(&mut con, &["HMSET", "h", "e", "5", "f", "6"]),
        "OK"
    );
    assert_eq!(q::<i64>(&mut con, &["HLEN", "h"]), 6);

    // Binary-safe fields and values, empty ones included.
    let mut cmd = redis::cmd("HSET");
    cmd.arg("bin").arg(&b"\x00\xff\r\n"[..]).arg(&b""[..]);
    assert_eq!(cmd.query::<i64>(&mut con).unwrap(), 1);
    let v: Vec<u8> = redis::cmd("HGET")
        .arg("bin")
        .arg(&b"\x00\xff\r\n"[..])
        .query(&mut con)
        .unwrap();
    assert!(v.is_empty());
    assert_eq!(
        redis::cmd("HSTRLEN")
            .arg("bin")
            .arg(&b"\x00\xff\r\n"[..])
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
}

#[test]
fn arity_errors() {
    let server = TestServer::start();
    let mut con = server.client();
    let cases: &[(&[&str], &str)] = &[
        (&["HSET", "h", "a", "1", "b"], "hset"),
        (&["HSET", "h", "a"], "hset"),
        (&["HSET", "h"], "hset"),
        (&["HMSET", "h", "a"], "hmset"),
        (&["HMSET", "h", "a", "1", "b"], "hmset"),
        (&["HSETNX", "h", "a"], "hsetnx"),
        (&["HGET", "h"], "hget"),
        (&["HMGET", "h"], "hmget"),
        (&["HGETALL"], "hgetall"),
        (&["HDEL", "h"], "hdel"),
        (&["HLEN"], "hlen"),
        (&["HEXISTS", "h"], "hexists"),
        (&["HKEYS", "h", "x"], "hkeys"),
        (&["HVALS"], "hvals"),
        (&["HSTRLEN", "h"], "hstrlen"),
        (&["HINCRBY", "h", "a"], "hincrby"),
        (&["HINCRBYFLOAT", "h", "a"], "hincrbyfloat"),
        (&["HRANDFIELD"], "hrandfield"),
        (&["HSCAN", "h"], "hscan"),
    ];
    for (args, name) in cases {
        assert_eq!(
            err_text(&mut con, args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
    // The odd-pairs error left nothing behind.
    assert!(is_free(&mut con, "h"));
}

#[test]
fn wrong_type_everywhere() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = q(&mut con, &["SET", "str", "x"]);
    let cases: &[&[&str]] = &[
        &["HSET", "str", "a", "1"],
        &["HSETNX", "str", "a", "1"],
        &["HMSET", "str", "a", "1"],
        &["HGET", "str", "a"],
        &["HMGET", "str", "a"],
        &["HGETALL", "str"],
        &["HDEL", "str", "a"],
        &["HLEN", "str"],
        &["HEXISTS", "str", "a"],
        &["HKEYS", "str"],
        &["HVALS", "str"],
        &["HSTRLEN", "str", "a"],
        &["HINCRBY", "str", "a", "1"],
        &["HINCRBYFLOAT", "str", "a", "1"],
        &["HRANDFIELD", "str"],
        &["HRANDFIELD", "str", "1"],
        &["HRANDFIELD", "str", "-1", "WITHVALUES"],
        &["HSCAN", "str", "0"],
        // The type is checked before the options, as in Redis.
        &["HSCAN", "str", "0", "COUNT", "0"],
    ];
    for args in cases {
        assert_eq!(err_text(&mut con, args), WRONGTYPE, "{args:?}");
    }
    assert_eq!(q::<String>(&mut con, &["GET", "str"]), "x");
    // A set is the wrong type too.
    assert_eq!(q::<i64>(&mut con, &["SADD", "set", "m"]), 1);
    assert_eq!(err_text(&mut con, &["HGET", "set", "m"]), WRONGTYPE);
}

#[test]
fn hdel_deletes_the_emptied_hash() {
    let server = TestServer::start();
    let mut con = server.client();
    assert_eq!(
        q::<i64>(&mut con, &["HSET", "h", "a", "1", "b", "2", "c", "3"]),
        3
    );
    assert_eq!(q::<i64>(&mut con, &["HDEL", "h", "a", "nope", "a"]), 1);
    assert_eq!(q::<i64>(&mut con, &["HDEL", "h", "nope"]), 0);
    assert_eq!(q::<i64>(&mut con, &["HDEL", "nokey", "a"]), 0);
    assert!(!is_free(&mut con, "h"));
    assert_eq!(q::<i64>(&mut con, &["HDEL", "h", "b", "c"]), 2);
    assert_eq!(q::<i64>(&mut con, &["HLEN", "h"]), 0);
    assert_eq!(q::<i64>(&mut con, &["HEXISTS", "h", "b"]), 0);
    assert!(is_free(&mut con, "h"));
}

#[test]
fn hincrby() {
    let server = TestServer::start();
    let mut con = server.client();
    assert_eq!(q::<i64>(&mut con, &["HINCRBY", "h", "n", "5"]), 5);
    assert_eq!(q::<i64>(&mut con, &["HINCRBY", "h", "n", "-7"]), -2);
    assert_eq!(q::<String>(&mut con, &["HGET", "h", "n"]), "-2");
    assert_eq!(
        err_text(&mut con, &["HINCRBY", "h", "n", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBY", "h", "n", "1.5"]),
        "ERR value is not an integer or out of range"
    );
    let _: i64 = q(
        &mut con,
        &[
            "HSET", "h", "s", "abc", "sp", " 1", "lead", "01", "neg", "-0",
        ],
    );
    for field in ["s", "sp", "lead", "neg"] {
        assert_eq!(
            err_text(&mut con, &["HINCRBY", "h", field, "1"]),
            "ERR hash value is not an integer",
            "{field}"
        );
    }
    let _: i64 = q(
        &mut con,
        &[
            "HSET",
            "h",
            "max",
            &i64::MAX.to_string(),
            "min",
            &i64::MIN.to_string(),
        ],
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBY", "h", "max", "1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBY", "h", "min", "-1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        q::<i64>(&mut con, &["HINCRBY", "h", "min", &i64::MAX.to_string()]),
        -1
    );
    assert_eq!(
        q::<i64>(&mut con, &["HINCRBY", "h", "zero", &i64::MIN.to_string()]),
        i64::MIN
    );
    assert_eq!(
        q::<String>(&mut con, &["HGET", "h", "max"]),
        i64::MAX.to_string()
    );
    // Errors on a missing key leave no trace.
    assert_eq!(
        err_text(&mut con, &["HINCRBY", "ghost", "f", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert!(is_free(&mut con, "ghost"));
}

#[test]
fn hincrbyfloat() {
    let server = TestServer::start();
    let mut con = server.client();
    let steps = [
        ("10.5", "10.5"),
        ("0.1", "10.6"),
        ("-5", "5.6"),
        ("-5.6", "0"),
        ("1e3", "1000"),
        ("0.000001", "1000.000001"),
    ];
    for (delta, want) in steps {
        assert_eq!(
            q::<String>(&mut con, &["HINCRBYFLOAT", "h", "f", delta]),
            want,
            "+{delta}"
        );
        assert_eq!(q::<String>(&mut con, &["HGET", "h", "f"]), want);
    }
    // Plain decimals add exactly, like Redis's long double.
    let _: i64 = q(
        &mut con,
        &[
            "HSET",
            "h",
            "a",
            "0.1",
            "big",
            "-9223372036854775793",
            "m",
            "12345678901234.56",
        ],
    );
    assert_eq!(
        q::<String>(&mut con, &["HINCRBYFLOAT", "h", "a", "0.2"]),
        "0.3"
    );
    assert_eq!(
        q::<String>(&mut con, &["HINCRBYFLOAT", "h", "big", "1.5"]),
        "-9223372036854775791.5"
    );
    assert_eq!(
        q::<String>(&mut con, &["HINCRBYFLOAT", "h", "m", "0.01"]),
        "12345678901234.57"
    );
    // Fixed notation, never an exponent.
    assert_eq!(
        q::<String>(&mut con, &["HINCRBYFLOAT", "h", "e", "1e20"]),
        "100000000000000000000"
    );
    assert_eq!(
        q::<String>(&mut con, &["HINCRBYFLOAT", "h", "tiny", "1e-6"]),
        "0.000001"
    );
    assert_eq!(q::<String>(&mut con, &["HINCRBYFLOAT", "h", "i", "5"]), "5");
    // An integer field works too.
    assert_eq!(q::<i64>(&mut con, &["HINCRBY", "h", "i", "2"]), 7);

    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "h", "f", "abc"]),
        "ERR value is not a valid float"
    );
    for bad in ["inf", "-inf", "+inf"] {
        assert_eq!(
            err_text(&mut con, &["HINCRBYFLOAT", "h", "f", bad]),
            "ERR value is NaN or Infinity"
        );
    }
    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "h", "f", "nan"]),
        "ERR value is not a valid float"
    );
    let _: i64 = q(
        &mut con,
        &[
            "HSET", "h", "s", "abc", "sp", " 1", "inf", "inf", "huge", "1e308",
        ],
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "h", "s", "1"]),
        "ERR hash value is not a float"
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "h", "sp", "1"]),
        "ERR hash value is not a float"
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "h", "inf", "1"]),
        "ERR increment would produce NaN or Infinity"
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "h", "huge", "1e308"]),
        "ERR increment would produce NaN or Infinity"
    );
    assert_eq!(q::<String>(&mut con, &["HGET", "h", "huge"]), "1e308");
    // A float field is not an integer.
    assert_eq!(
        err_text(&mut con, &["HINCRBY", "h", "a", "1"]),
        "ERR hash value is not an integer"
    );
    assert_eq!(
        err_text(&mut con, &["HINCRBYFLOAT", "ghost", "f", "x"]),
        "ERR value is not a valid float"
    );
    assert!(is_free(&mut con, "ghost"));
}

#[test]
fn hrandfield() {
    let server = TestServer::start();
    let mut con = server.client();
    let fields: HashMap<String, String> = (0..20)
        .map(|i| (format!("f{i}"), format!("v{i}")))
        .collect();
    let mut cmd = redis::cmd("HSET");
    cmd.arg("h");
    for (f, v) in &fields {
        cmd.arg(f).arg(v);
    }
    let _: i64 = cmd.query(&mut con).unwrap();

    let one: String = q(&mut con, &["HRANDFIELD", "h"]);
    assert!(fields.contains_key(&one));
    assert_eq!(
        q::<Option<String>>(&mut con, &["HRANDFIELD", "nokey"]),
        None
    );

    // Positive count: distinct fields, at most the hash's size.
    let some: Vec<String> = q(&mut con, &["HRANDFIELD", "h", "5"]);
    assert_eq!(some.len(), 5);
    assert_eq!(some.iter().collect::<HashSet<_>>().len(), 5);
    assert!(some.iter().all(|f| fields.contains_key(f)));
    let all: Vec<String> = q(&mut con, &["HRANDFIELD", "h", "100"]);
    assert_eq!(
        all.into_iter().collect::<HashSet<_>>(),
        fields.keys().cloned().collect::<HashSet<_>>()
    );

    // Negative count: exactly that many, repeats allowed.
    let many: Vec<String> = q(&mut con, &["HRANDFIELD", "h", "-50"]);
    assert_eq!(many.len(), 50);
    assert!(many.iter().all(|f| fields.contains_key(f)));

    // WITHVALUES: flat pairs in RESP2, each value belonging to its field.
    let flat: Vec<String> = q(&mut con, &["HRANDFIELD", "h", "-30", "withvalues"]);
    assert_eq!(flat.len(), 60);
    for pair in flat.chunks(2) {
        assert_eq!(fields[&pair[0]], pair[1]);
    }
    let flat: Vec<String> = q(&mut con, &["HRANDFIELD", "h", "3", "WITHVALUES"]);
    assert_eq!(flat.len(), 6);

    // Zero, missing keys.
    assert!(q::<Vec<String>>(&mut con, &["HRANDFIELD", "h", "0"]).is_empty());
    assert!(q::<Vec<String>>(&mut con, &["HRANDFIELD", "h", "0", "WITHVALUES"]).is_empty());
    assert!(q::<Vec<String>>(&mut con, &["HRANDFIELD", "nokey", "3"]).is_empty());
    assert!(q::<Vec<String>>(&mut con, &["HRANDFIELD", "nokey", "-3", "WITHVALUES"]).is_empty());

    // Errors, in Redis's order: count, then syntax, then the WITHVALUES range.
    assert_eq!(
        err_text(&mut con, &["HRANDFIELD", "h", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["HRANDFIELD", "h", "x", "bogus"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["HRANDFIELD", "h", "2", "withvalue"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["HRANDFIELD", "h", "2", "withvalues", "x"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["HRANDFIELD", "h", "-9223372036854775808"]),
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    for huge in [
        "4611686018427387904",
        "-4611686018427387904",
        "9223372036854775807",
    ] {
        assert_eq!(
            err_text(&mut con, &["HRANDFIELD", "nokey", huge, "WITHVALUES"]),
            "ERR value is out of range"
        );
    }
    // Huge positive counts are capped by the hash's size.
    let all: Vec<String> = q(&mut con, &["HRANDFIELD", "h", "9223372036854775807"]);
    assert_eq!(all.len(), 20);
    // Kelvin's deviation: a negative count whose reply would pass 512 MB is refused
    // (Redis would try to send it).
    assert_eq!(
        err_text(&mut con, &["HRANDFIELD", "h", "-9223372036854775807"]),
        "ERR value is out of range"
    );
    assert_eq!(
        err_text(
            &mut con,
            &["HRANDFIELD", "h", "-4611686018427387903", "WITHVALUES"]
        ),
        "ERR value is out of range"
    );
}

/// Runs HSCAN to completion; returns every (field, value) and the number of calls.
fn hscan_all(
    con: &mut redis::Connection,
    key: &str,
    extra: &[&str],
) -> (Vec<(String, String)>, usize) {
    let mut cursor = "0".to_string();
    let mut got = Vec::new();
    let mut calls = 0;
    loop {
        let mut args = vec!["HSCAN", key, &cursor];
        args.extend_from_slice(extra);
        let (next, items): (String, Vec<String>) = q(con, &args);
        calls += 1;
        for pair in items.chunks(2) {
            got.push((pair[0].clone(), pair[1].clone()));
        }
        if next == "0" {
            return (got, calls);
        }
        cursor = next;
        assert!(calls < 10_000, "HSCAN does not terminate");
    }
}

#[test]
fn hscan() {
    let server = TestServer::start();
    let mut con = server.client();
    // Missing key: an empty page and cursor 0, whatever the options.
    let (cursor, items): (String, Vec<String>) = q(&mut con, &["HSCAN", "nokey", "0"]);
    assert_eq!((cursor.as_str(), items.len()), ("0", 0));
    let (cursor, _): (String, Vec<String>) = q(&mut con, &["HSCAN", "nokey", "0", "COUNT", "0"]);
    assert_eq!(cursor, "0");

    // A small hash comes back whole in one call.
    let _: i64 = q(&mut con, &["HSET", "small", "a", "1", "b", "2", "c", "3"]);
    let (cursor, items): (String, Vec<String>) = q(&mut con, &["HSCAN", "small", "0"]);
    assert_eq!(cursor, "0");
    assert_eq!(items.len(), 6);
    let (_, items): (String, Vec<String>) = q(&mut con, &["HSCAN", "small", "0", "MATCH", "b*"]);
    assert_eq!(items, vec!["b", "2"]);
    let (_, items): (String, Vec<String>) = q(&mut con, &["HSCAN", "small", "0", "NOVALUES"]);
    assert_eq!(
        items.into_iter().collect::<HashSet<_>>(),
        HashSet::from(["a", "b", "c"].map(String::from))
    );

    // A big one takes several calls; every field comes exactly once with its value.
    let mut cmd = redis::cmd("HSET");
    cmd.arg("big");
    for i in 0..1000 {
        cmd.arg(format!("field:{i}")).arg(format!("value:{i}"));
    }
    let _: i64 = cmd.query(&mut con).unwrap();
    let (got, calls) = hscan_all(&mut con, "big", &["COUNT", "25"]);
    assert!(calls >= 20, "{calls} calls");
    assert_eq!(got.len(), 1000);
    let fields: HashSet<&String> = got.iter().map(|(f, _)| f).collect();
    assert_eq!(fields.len(), 1000);
    for (f, v) in &got {
        assert_eq!(f.replace("field", "value"), *v);
    }
    let (got, _) = hscan_all(&mut con, "big", &["MATCH", "field:1*", "COUNT", "100"]);
    assert_eq!(got.len(), 111);
    // NOVALUES returns fields only.
    let (next, items): (String, Vec<String>) =
        q(&mut con, &["HSCAN", "big", "0", "COUNT", "10", "NOVALUES"]);
    assert_ne!(next, "0");
    assert!(items.len() >= 10 && items.iter().all(|f| f.starts_with("field:")));

    // Fields added or removed mid-scan don't disturb the others.
    let mut cursor = "0".to_string();
    let mut seen = HashSet::new();
    let mut round = 0;
    loop {
        let (next, items): (String, Vec<String>) =
            q(&mut con, &["HSCAN", "big", &cursor, "COUNT", "50"]);
        for pair in items.chunks(2) {
            assert!(seen.insert(pair[0].clone()), "{} twice", pair[0]);
        }
        round += 1;
        let _: i64 = q(&mut con, &["HSET", "big", &format!("extra:{round}"), "x"]);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!((0..1000).all(|i| seen.contains(&format!("field:{i}"))));

    // Errors.
    for bad in ["x", "1.5", " 1", "18446744073709551616"] {
        assert_eq!(
            err_text(&mut con, &["HSCAN", "small", bad]),
            "ERR invalid cursor",
            "{bad}"
        );
    }
    assert_eq!(
        err_text(&mut con, &["HSCAN", "nokey", "x"]),
        "ERR invalid cursor"
    );
    assert_eq!(
        err_text(&mut con, &["HSCAN", "small", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["HSCAN", "small", "0", "COUNT", "-1"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["HSCAN", "small", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["HSCAN", "small", "0", "COUNT"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["HSCAN", "small", "0", "MATCH"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["HSCAN", "small", "0", "TYPE", "string"]),
        "ERR syntax error"
    );
    // strtoul-style cursors Redis accepts.
    for ok in ["-1", "+0", "18446744073709551615"] {
        let (_, _): (String, Vec<String>) = q(&mut con, &["HSCAN", "small", ok]);
    }
}

#[test]
fn resp3_shapes() {
    let server = TestServer::start();
    let mut con = resp3_client(&server);
    let _: i64 = q(&mut con, &["HSET", "h", "f", "v"]);
    let all: Value = q(&mut con, &["HGETALL", "h"]);
    assert_eq!(
        all,
        Value::Map(vec![(
            Value::BulkString(b"f".to_vec()),
            Value::BulkString(b"v".to_vec())
        )])
    );
    assert_eq!(
        q::<Value>(&mut con, &["HGETALL", "nokey"]),
        Value::Map(vec![])
    );
    let pair = Value::Array(vec![
        Value::BulkString(b"f".to_vec()),
        Value::BulkString(b"v".to_vec()),
    ]);
    assert_eq!(
        q::<Value>(&mut con, &["HRANDFIELD", "h", "-2", "WITHVALUES"]),
        Value::Array(vec![pair.clone(), pair])
    );
    assert_eq!(
        q::<Value>(&mut con, &["HRANDFIELD", "h", "1"]),
        Value::Array(vec![Value::BulkString(b"f".to_vec())])
    );
    assert_eq!(q::<Value>(&mut con, &["HRANDFIELD", "nokey"]), Value::Nil);
    assert_eq!(q::<Value>(&mut con, &["HGET", "h", "nope"]), Value::Nil);
    // HINCRBYFLOAT is a bulk string, not a double, in RESP3 too.
    assert_eq!(
        q::<Value>(&mut con, &["HINCRBYFLOAT", "h", "n", "1.5"]),
        Value::BulkString(b"1.5".to_vec())
    );
    assert_eq!(
        q::<Value>(&mut con, &["HSCAN", "h", "0", "NOVALUES", "MATCH", "f"]),
        Value::Array(vec![
            Value::BulkString(b"0".to_vec()),
            Value::Array(vec![Value::BulkString(b"f".to_vec())])
        ])
    );
}

/// The calls Spring Session's `RedisIndexedSessionRepository` makes for a session's life.
#[test]
fn spring_session_flow() {
    let server = TestServer::start();
    let mut con = server.client();
    let id = "3f1c0b8e-8d3a-4a55-9b0d-2d6f3e1c9a77";
    let key = format!("spring:session:sessions:{id}");
    let expirations = "spring:session:expirations:1700000100000";
    let ok: String = q(
        &mut con,
        &[
            "HMSET",
            &key,
            "creationTime",
            "1700000000000",
            "maxInactiveInterval",
            "1800",
            "lastAccessedTime",
            "1700000000000",
            "sessionAttr:user",
            "\u{ac}\u{ed}\0\x05t\0\x05alice",
        ],
    );
    assert_eq!(ok, "OK");
    assert_eq!(
        q::<i64>(&mut con, &["SADD", expirations, &format!("expires:{id}")]),
        1
    );

    let all: HashMap<String, String> = q(&mut con, &["HGETALL", &key]);
    assert_eq!(all.len(), 4);
    assert_eq!(all["maxInactiveInterval"], "1800");

    // A request touches the session and changes attributes.
    let ok: String = q(
        &mut con,
        &[
            "HMSET",
            &key,
            "lastAccessedTime",
            "1700000060000",
            "sessionAttr:cart",
            "3 items",
        ],
    );
    assert_eq!(ok, "OK");
    assert_eq!(q::<i64>(&mut con, &["HDEL", &key, "sessionAttr:user"]), 1);
    // The expiry moves to another bucket.
    assert_eq!(
        q::<i64>(&mut con, &["SREM", expirations, &format!("expires:{id}")]),
        1
    );
    assert_eq!(
        q::<i64>(
            &mut con,
            &[
                "SADD",
                "spring:session:expirations:1700000160000",
                &format!("expires:{id}")
            ]
        ),
        1
    );
    let members: Vec<String> = q(&mut con, &["SMEMBERS", expirations]);
    assert!(members.is_empty());
    // The emptied bucket is gone: a hash can take its name.
    assert_eq!(q::<i64>(&mut con, &["HSET", expirations, "f", "v"]), 1);

    let all: HashMap<String, String> = q(&mut con, &["HGETALL", &key]);
    assert_eq!(all.len(), 4);
    assert_eq!(all["lastAccessedTime"], "1700000060000");
    assert_eq!(all["sessionAttr:cart"], "3 items");
    assert!(!all.contains_key("sessionAttr:user"));

    // Invalidation removes every field.
    let fields: Vec<String> = q(&mut con, &["HKEYS", &key]);
    let mut args = vec!["HDEL", key.as_str()];
    args.extend(fields.iter().map(String::as_str));
    assert_eq!(q::<i64>(&mut con, &args), 4);
    assert!(q::<HashMap<String, String>>(&mut con, &["HGETALL", &key]).is_empty());
    assert!(is_free(&mut con, &key));
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8, u8),
    Del(u8, u8),
    Incr(u8, u8, i64),
}

/// Model-based test: random HSET / HDEL / HINCRBY on a few keys and fields, applied to
/// the server and to a BTreeMap; HGETALL must agree after every step.
#[test]
fn model_based_hash_ops() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::RefCell;

    let server = TestServer::start();
    let con = RefCell::new(server.client());
    let case = RefCell::new(0u32);
    let op = prop_oneof![
        (0..3u8, 0..6u8, 0..4u8).prop_map(|(k, f, v)| Op::Set(k, f, v)),
        (0..3u8, 0..6u8).prop_map(|(k, f)| Op::Del(k, f)),
        (0..3u8, 0..6u8, -5..5i64).prop_map(|(k, f, d)| Op::Incr(k, f, d)),
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
            let name = |k: u8| format!("case{n}:h{k}");
            let mut model: BTreeMap<u8, BTreeMap<String, String>> = BTreeMap::new();
            for op in ops {
                let k = match op {
                    Op::Set(k, f, v) => {
                        let field = format!("f{f}");
                        let value = format!("{v}");
                        let created: i64 = q(con, &["HSET", &name(k), &field, &value]);
                        let was = model.entry(k).or_default().insert(field, value);
                        prop_assert_eq!(created, was.is_none() as i64);
                        k
                    }
                    Op::Del(k, f) => {
                        let field = format!("f{f}");
                        let removed: i64 = q(con, &["HDEL", &name(k), &field]);
                        let was = model.get_mut(&k).and_then(|h| h.remove(&field));
                        prop_assert_eq!(removed, was.is_some() as i64);
                        if model.get(&k).is_some_and(|h| h.is_empty()) {
                            model.remove(&k);
                        }
                        k
                    }
                    Op::Incr(k, f, d) => {
                        let field = format!("f{f}");
                        let got: i64 = q(con, &["HINCRBY", &name(k), &field, &d.to_string()]);
                        let h = model.entry(k).or_default();
                        let old: i64 = h.get(&field).map_or(0, |v| v.parse().unwrap_or(0));
                        h.insert(field, (old + d).to_string());
                        prop_assert_eq!(got, old + d);
                        k
                    }
                };
                let all: HashMap<String, String> = q(con, &["HGETALL", &name(k)]);
                let want: HashMap<String, String> = model
                    .get(&k)
                    .map(|h| h.clone().into_iter().collect())
                    .unwrap_or_default();
                prop_assert_eq!(all, want);
                let len: i64 = q(con, &["HLEN", &name(k)]);
                prop_assert_eq!(len as usize, model.get(&k).map_or(0, |h| h.len()));
            }
            Ok(())
        })
        .unwrap();
}
