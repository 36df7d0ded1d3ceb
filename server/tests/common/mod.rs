//! Test harness: a real Kelvin server on a free loopback port, in this process, and
//! real clients (the `redis` crate) talking to it over TCP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use kelvin_server::{Node, Settings};

pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// A server with default settings on 127.0.0.1, port picked by the OS.
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// A server with settings adjusted by `tweak`.
    pub fn start_with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
        let data = std::env::temp_dir().join(format!(
            "kelvin-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let mut settings = Settings {
            port: 0,
            data_dir: data,
            ..Settings::default()
        };
        tweak(&mut settings);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let server = runtime
            .block_on(kelvin_server::start(settings))
            .expect("server starts");
        TestServer {
            addr: server.addr,
            node: server.node,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A new connection through the `redis` crate.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect")
    }

    /// A raw TCP connection, for byte-level protocol tests.
    pub fn raw(&self) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.node.shutdown();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command and returns the reply as a `redis::Value`, errors included.
pub fn run(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
}

/// The error text of a command that must fail (code and message, as Redis sends it).
pub fn err_text(con: &mut redis::Connection, args: &[&str]) -> String {
    match run(con, args) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => {
            let code = e.code().unwrap_or("");
            let detail = e.detail().unwrap_or("");
            if code.is_empty() {
                e.to_string()
            } else {
                format!("{code} {detail}")
            }
        }
    }
}

/// Sends raw bytes and reads until `expect_len` bytes came back (or the peer closed).
pub fn raw_exchange(stream: &mut std::net::TcpStream, send: &[u8], expect_len: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    stream.write_all(send).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < expect_len {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    got
}

/// The WRONGTYPE error text, as Redis sends it.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Runs `args` and converts the reply; panics with the command if it fails.
pub fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Reads `__keyevent@0__:*` messages as "event key" until the key `done` arrives.
pub fn keyevents_until_done(pubsub: &mut redis::PubSub<'_>) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let msg = pubsub.get_message().expect("keyspace event");
        let event = msg
            .get_channel_name()
            .trim_start_matches("__keyevent@0__:")
            .to_string();
        let key: String = msg.get_payload().expect("event payload");
        let last = key == "done";
        got.push(format!("{event} {key}"));
        if last {
            return got;
        }
    }
}
