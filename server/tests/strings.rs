//! Strings through a real client against a real server.

mod common;

use common::{err_text, TestServer};
use redis::Commands;

#[test]
fn set_get_and_options() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    let v: String = con.get("k").unwrap();
    assert_eq!(v, "v");
    let missing: Option<String> = con.get("nope").unwrap();
    assert_eq!(missing, None);

    // NX / XX / GET
    let r: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("x")
        .arg("NX")
        .query(&mut con)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("XX")
        .arg("GET")
        .query(&mut con)
        .unwrap();
    assert_eq!(r.as_deref(), Some("v"));
    let r: String = redis::cmd("SET")
        .arg("new")
        .arg("1")
        .arg("EX")
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(r, "OK");
    let ttl: i64 = con.ttl("new").unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");

    assert_eq!(
        err_text(&mut con, &["SET", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err_text(&mut con, &["SET", "k", "v", "NX", "XX"]),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(&mut con, &["SET", "k", "v", "EX", "abc"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(&mut con, &["SET", "k"]),
        "ERR wrong number of arguments for 'set' command"
    );
}

#[test]
fn counters() {
    let server = TestServer::start();
    let mut con = server.client();
    let n: i64 = con.incr("c", 1).unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("INCRBY")
        .arg("c")
        .arg(10)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 11);
    let n: i64 = redis::cmd("DECR").arg("c").query(&mut con).unwrap();
    assert_eq!(n, 10);
    let _: () = con.set("s", "abc").unwrap();
    assert_eq!(
        err_text(&mut con, &["INCR", "s"]),
        "ERR value is not an integer or out of range"
    );
    let _: () = con.set("big", i64::MAX).unwrap();
    assert_eq!(
        err_text(&mut con, &["INCR", "big"]),
        "ERR increment or decrement would overflow"
    );
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("10.5")
        .query(&mut con)
        .unwrap();
    assert_eq!(f, "10.5");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("0.1")
        .query(&mut con)
        .unwrap();
    assert_eq!(f, "10.6");
}

#[test]
fn setex_answers_plain_ok_for_phpredis() {
    let server = TestServer::start();
    let mut stream = server.raw();
    let reply = common::raw_exchange(
        &mut stream,
        b"*4\r\n$5\r\nSETEX\r\n$4\r\nsess\r\n$2\r\n60\r\n$1\r\nv\r\n",
        5,
    );
    assert_eq!(reply, b"+OK\r\n");
    let reply = common::raw_exchange(&mut stream, b"*2\r\n$3\r\nDEL\r\n$4\r\nsess\r\n", 4);
    assert_eq!(reply, b":1\r\n");
}
