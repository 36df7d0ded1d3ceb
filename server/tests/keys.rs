//! Generic key commands and expiry, through a real client.

mod common;

use std::time::{Duration, Instant};

use common::{err_text, run, TestServer};
use redis::Commands;

#[test]
fn del_exists_type_rename() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = con.set("a", "1").unwrap();
    let _: () = con.set("b", "2").unwrap();
    let n: i64 = redis::cmd("EXISTS")
        .arg("a")
        .arg("b")
        .arg("a")
        .arg("zz")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let t: String = redis::cmd("TYPE").arg("a").query(&mut con).unwrap();
    assert_eq!(t, "string");
    let t: String = redis::cmd("TYPE").arg("zz").query(&mut con).unwrap();
    assert_eq!(t, "none");
    let _: () = redis::cmd("RENAME")
        .arg("a")
        .arg("c")
        .query(&mut con)
        .unwrap();
    assert_eq!(err_text(&mut con, &["RENAME", "a", "d"]), "ERR no such key");
    let n: i64 = redis::cmd("RENAMENX")
        .arg("c")
        .arg("b")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = con.del(&["b", "c", "zz"]).unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn expire_family_and_ttls() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    let ttl: i64 = con.ttl("k").unwrap();
    assert_eq!(ttl, -1);
    let ttl: i64 = con.ttl("missing").unwrap();
    assert_eq!(ttl, -2);
    let n: i64 = redis::cmd("EXPIRE")
        .arg("k")
        .arg(100)
        .arg("XX")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0, "XX on a key without TTL");
    let n: i64 = redis::cmd("EXPIRE")
        .arg("k")
        .arg(100)
        .arg("GT")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0, "GT on a key without TTL (infinite)");
    let n: i64 = redis::cmd("EXPIRE")
        .arg("k")
        .arg(100)
        .arg("NX")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("EXPIRE")
        .arg("k")
        .arg(50)
        .arg("GT")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = redis::cmd("EXPIRE")
        .arg("k")
        .arg(50)
        .arg("LT")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let pttl: i64 = redis::cmd("PTTL").arg("k").query(&mut con).unwrap();
    assert!(pttl > 49_000 && pttl <= 50_000, "{pttl}");
    let at: i64 = redis::cmd("EXPIRETIME").arg("k").query(&mut con).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((at - now - 50).abs() <= 1);
    assert_eq!(
        err_text(&mut con, &["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err_text(&mut con, &["EXPIRE", "k", "10", "FOO"]),
        "ERR Unsupported option FOO"
    );
    let n: i64 = redis::cmd("PERSIST").arg("k").query(&mut con).unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("PERSIST").arg("k").query(&mut con).unwrap();
    assert_eq!(n, 0);
    // An expiry in the past deletes the key.
    let n: i64 = redis::cmd("PEXPIREAT")
        .arg("k")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let e: i64 = redis::cmd("EXISTS").arg("k").query(&mut con).unwrap();
    assert_eq!(e, 0);
}

#[test]
fn keys_expire_on_access_and_by_the_sweep() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = redis::cmd("SET")
        .arg("lazy")
        .arg("v")
        .arg("PX")
        .arg(30)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("swept")
        .arg("v")
        .arg("PX")
        .arg(30)
        .query(&mut con)
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let v: Option<String> = con.get("lazy").unwrap();
    assert_eq!(v, None);
    // Nobody reads `swept`: the active sweep must delete it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "expired keys still counted: {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scan_visits_every_key() {
    let server = TestServer::start();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.set(format!("sess:{i}"), i).ignore();
    }
    for i in 0..500 {
        pipe.set(format!("{{tag}}:{i}"), i).ignore();
    }
    for i in 0..100 {
        pipe.set(format!("other:{i}"), i).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("sess:*")
            .arg("COUNT")
            .arg(100)
            .query(&mut con)
            .unwrap();
        for k in keys {
            assert!(k.starts_with("sess:"));
            seen.insert(k);
        }
        calls += 1;
        assert!(calls < 10_000, "SCAN does not terminate");
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 3000);
    // The hash-tagged keys share one slot, bigger than COUNT: still all found.
    let mut tagged = std::collections::HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("{tag}:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut con)
            .unwrap();
        tagged.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(tagged.len(), 500);
    let (_, typed): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .arg("COUNT")
        .arg(100000)
        .query(&mut con)
        .unwrap();
    assert!(typed.is_empty());
    assert_eq!(err_text(&mut con, &["SCAN", "abc"]), "ERR invalid cursor");
    let keys: Vec<String> = con.keys("other:1?").unwrap();
    assert_eq!(keys.len(), 10);
}

#[test]
fn copy_move_touch_randomkey_object() {
    let server = TestServer::start();
    let mut con = server.client();
    let missing: Option<String> = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    assert_eq!(missing, None);
    let _: () = con.set("src", "v").unwrap();
    let n: i64 = redis::cmd("COPY")
        .arg("src")
        .arg("dst")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("COPY")
        .arg("src")
        .arg("dst")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = redis::cmd("COPY")
        .arg("src")
        .arg("dst")
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        err_text(&mut con, &["COPY", "src", "src"]),
        "ERR source and destination objects are the same"
    );
    let n: i64 = redis::cmd("MOVE")
        .arg("dst")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("TOUCH")
        .arg("src")
        .arg("dst")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let k: String = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    assert_eq!(k, "src");
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("src")
        .query(&mut con)
        .unwrap();
    assert_eq!(enc, "embstr");
    let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
    let v: String = con.get("dst").unwrap();
    assert_eq!(v, "v");
    let r = run(&mut con, &["OBJECT", "NOPE", "x"]);
    assert!(r.is_err());
}
