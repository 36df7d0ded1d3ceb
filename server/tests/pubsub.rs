//! Pub/sub and keyspace notifications, including the `expired` events Spring Session
//! waits for, through a real client.

mod common;

use std::time::Duration;

use common::{raw_exchange, TestServer};
use redis::Commands;

#[test]
fn publish_reaches_channel_and_pattern_subscribers() {
    let server = TestServer::start();
    let mut sub_con = server.client();
    let mut publisher = server.client();
    let mut ps = sub_con.as_pubsub();
    ps.subscribe("news").unwrap();
    ps.psubscribe("ne*").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let receivers: i64 = publisher.publish("news", "hello").unwrap();
    assert_eq!(receivers, 2);
    let mut got = Vec::new();
    for _ in 0..2 {
        let msg = ps.get_message().unwrap();
        got.push((
            msg.get_channel_name().to_string(),
            msg.get_payload::<String>().unwrap(),
            msg.from_pattern(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("news".to_string(), "hello".to_string(), false),
            ("news".to_string(), "hello".to_string(), true)
        ]
    );
    let n: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n.len(), 2);
    let pats: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(pats, 1);
    let chans: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(chans, vec!["news"]);
}

#[test]
fn subscribed_resp2_connection_rejects_other_commands() {
    let server = TestServer::start();
    let mut raw = server.raw();
    let expect: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n";
    assert_eq!(
        raw_exchange(&mut raw, b"SUBSCRIBE c\r\n", expect.len()),
        expect
    );
    let expect: &[u8] = b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
    let got = raw_exchange(&mut raw, b"GET k\r\n", expect.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expect)
    );
    let expect: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    assert_eq!(raw_exchange(&mut raw, b"PING\r\n", expect.len()), expect);
}

#[test]
fn expired_events_fire_without_reads() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Ex")
        .query(&mut con)
        .unwrap();
    let mut sub_con = server.client();
    let mut ps = sub_con.as_pubsub();
    ps.psubscribe("__keyevent@*__:expired").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _: () = redis::cmd("SET")
        .arg("spring:session:sessions:expires:abc")
        .arg("")
        .arg("PX")
        .arg(50)
        .query(&mut con)
        .unwrap();
    // Nobody reads the key: the active sweep must expire it and publish the event.
    let msg = ps.get_message().expect("expired event within 5s");
    assert_eq!(msg.get_channel_name(), "__keyevent@0__:expired");
    assert_eq!(
        msg.get_payload::<String>().unwrap(),
        "spring:session:sessions:expires:abc"
    );
}

#[test]
fn keyspace_and_keyevent_notifications() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut con)
        .unwrap();
    let mut sub_con = server.client();
    let mut ps = sub_con.as_pubsub();
    ps.psubscribe("__key*@0__:*").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _: () = con.set("k", "v").unwrap();
    let _: i64 = con.del("k").unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let msg = ps.get_message().unwrap();
        got.push(format!(
            "{} {}",
            msg.get_channel_name(),
            msg.get_payload::<String>().unwrap()
        ));
    }
    assert_eq!(
        got,
        vec![
            "__keyspace@0__:k set",
            "__keyevent@0__:set k",
            "__keyspace@0__:k del",
            "__keyevent@0__:del k",
        ]
    );
}
