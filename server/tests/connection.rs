//! Connection, server and transaction commands, and the protocol's edges, byte for byte.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{err_text, raw_exchange, run, TestServer};
use redis::Commands;

#[test]
fn ping_echo_select_client() {
    let server = TestServer::start();
    let mut con = server.client();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi").query(&mut con).unwrap();
    assert_eq!(echo, "hi");
    assert_eq!(
        err_text(&mut con, &["SELECT", "16"]),
        "ERR DB index is out of range"
    );
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query(&mut con)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, "worker-1");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=worker-1"),
        "{list}"
    );
    assert_eq!(
        err_text(&mut con, &["CLIENT", "SETNAME", "a b"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        err_text(&mut con, &["CLIENT", "NOPE"]),
        "ERR unknown subcommand 'NOPE'. Try CLIENT HELP."
    );
    assert_eq!(
        err_text(&mut con, &["NOPE", "a", "b"]),
        "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "
    );
}

#[test]
fn info_config_command() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(info.contains("redis_version:7."), "{info}");
    assert!(info.contains("loading:0"));
    assert!(info.contains("db0:keys=1,expires=0"));
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(!info.contains("redis_version"));
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut con)
        .unwrap();
    assert_eq!(cfg, vec!["maxclients".to_string(), "10000".to_string()]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut con)
        .unwrap();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-*")
        .query(&mut con)
        .unwrap();
    assert_eq!(cfg[1], "AKE");
    assert_eq!(
        err_text(&mut con, &["CONFIG", "SET", "nope", "1"]),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nope'"
    );
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    assert!(count > 60, "{count}");
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, vec!["a", "b"]);
    let all = run(&mut con, &["COMMAND"]).unwrap();
    match all {
        redis::Value::Array(items) => assert_eq!(items.len() as i64, count),
        other => panic!("COMMAND replied {other:?}"),
    }
}

#[test]
fn auth_and_hello() {
    let server = TestServer::start_with(|s| s.requirepass = Some("secret".into()));
    let mut raw = server.raw();
    let r = raw_exchange(&mut raw, b"GET k\r\n", 32);
    assert_eq!(r, b"-NOAUTH Authentication required.\r\n");
    let r = raw_exchange(&mut raw, b"AUTH wrong\r\n", 60);
    assert_eq!(
        r,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let r = raw_exchange(&mut raw, b"AUTH default secret\r\n", 5);
    assert_eq!(r, b"+OK\r\n");
    let r = raw_exchange(&mut raw, b"HELLO 3\r\n", 20);
    assert!(
        r.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{}",
        String::from_utf8_lossy(&r)
    );

    let open = TestServer::start();
    let mut con = open.client();
    assert_eq!(
        err_text(&mut con, &["AUTH", "x"]),
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
    assert_eq!(
        err_text(&mut con, &["HELLO", "4"]),
        "NOPROTO unsupported protocol version"
    );
}

#[test]
fn resp3_types() {
    let server = TestServer::start();
    let mut raw = server.raw();
    let _ = raw_exchange(&mut raw, b"HELLO 3\r\n", 100);
    let r = raw_exchange(&mut raw, b"GET missing\r\n", 3);
    assert_eq!(r, b"_\r\n");
}

#[test]
fn multi_exec_watch() {
    let server = TestServer::start();
    let mut con = server.client();
    let mut other = server.client();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("n", 1)
        .incr("n", 1)
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b), (1, 2));

    // WATCH, another client writes, EXEC aborts with a null array.
    let _: () = redis::cmd("WATCH").arg("n").query(&mut con).unwrap();
    let _: () = other.set("n", 100).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: () = redis::cmd("INCR").arg("n").query(&mut con).unwrap();
    let r: redis::Value = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(r, redis::Value::Nil);

    // An unknown command while queueing aborts the transaction.
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    assert!(run(&mut con, &["NOPE"]).is_err());
    let _: () = redis::cmd("SET").arg("x").arg("1").query(&mut con).unwrap();
    assert_eq!(
        err_text(&mut con, &["EXEC"]),
        "EXECABORT Transaction discarded because of previous errors."
    );
    let x: Option<String> = con.get("x").unwrap();
    assert_eq!(x, None);
    assert_eq!(err_text(&mut con, &["EXEC"]), "ERR EXEC without MULTI");
    assert_eq!(
        err_text(&mut con, &["DISCARD"]),
        "ERR DISCARD without MULTI"
    );
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    assert_eq!(
        err_text(&mut con, &["MULTI"]),
        "ERR MULTI calls can not be nested"
    );
    assert_eq!(
        err_text(&mut con, &["WATCH", "x"]),
        "ERR WATCH inside MULTI is not allowed"
    );
    let _: () = redis::cmd("DISCARD").query(&mut con).unwrap();

    // Runtime errors inside EXEC do not stop the other commands.
    let _: () = con.set("s", "text").unwrap();
    let mut raw = server.raw();
    let expect = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR value is not an integer or out of range\r\n:101\r\n";
    let got = raw_exchange(
        &mut raw,
        b"MULTI\r\nINCR s\r\nINCR n\r\nEXEC\r\n",
        expect.len(),
    );
    assert_eq!(String::from_utf8_lossy(&got), expect);
}

#[test]
fn protocol_errors_close_only_that_connection() {
    let server = TestServer::start();
    let cases: [(&[u8], &[u8]); 4] = [
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2000000\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n+PING\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
    ];
    for (send, expect) in cases {
        let mut raw = server.raw();
        let got = raw_exchange(&mut raw, send, expect.len() + 1);
        assert_eq!(got, expect, "for {:?}", String::from_utf8_lossy(send));
        // The server closed this connection: the next read sees EOF.
        let mut buf = [0u8; 8];
        assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
    }
    let mut con = server.client();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn huge_declared_bulk_costs_nothing_and_pipelines_work() {
    let server = TestServer::start();
    let mut liar = server.raw();
    liar.write_all(b"*2\r\n$3\r\nGET\r\n$536870912\r\nabc")
        .unwrap();
    let mut raw = server.raw();
    // A pipeline of three commands and an inline one, in one write.
    let got = raw_exchange(
        &mut raw,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nECHO \"a b\"\r\n",
        5 + 7 + 7 + 9,
    );
    assert_eq!(got, b"+OK\r\n$1\r\nv\r\n+PONG\r\n$3\r\na b\r\n");
    drop(liar);
    let mut big = server.raw();
    let got = raw_exchange(&mut big, b"*2\r\n$3\r\nGET\r\n$536870913\r\n", 44);
    assert_eq!(got, b"-ERR Protocol error: invalid bulk length\r\n");
}

#[test]
fn maxclients_is_enforced() {
    let server = TestServer::start_with(|s| s.maxclients = 2);
    let mut a = server.client();
    let mut b = server.client();
    let _: String = redis::cmd("PING").query(&mut a).unwrap();
    let _: String = redis::cmd("PING").query(&mut b).unwrap();
    let mut third = server.raw();
    let mut buf = vec![0u8; 64];
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"-ERR max number of clients reached\r\n");
}

#[test]
fn quit_and_reset() {
    let server = TestServer::start();
    let mut raw = server.raw();
    let got = raw_exchange(&mut raw, b"SELECT 3\r\nRESET\r\nQUIT\r\n", 5 + 8 + 5);
    assert_eq!(got, b"+OK\r\n+RESET\r\n+OK\r\n");
    let mut buf = [0u8; 4];
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
}
