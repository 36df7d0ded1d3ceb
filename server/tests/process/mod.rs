//! Black-box harness: the real `kelvin-server` binary (debug build) as a child process on
//! free loopback ports, with its data in a temp dir, its stdout/stderr in a log file next
//! to the data, killed (SIGKILL) on drop. Used by the durability and three-node tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before the test gives up (debug build, log replay).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Marks each start in the log file, so a test can look at one run's output.
const START_MARK: &str = "=== kelvin-test: start #";

/// `n` distinct free ports on 127.0.0.1 (all bound at once, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// One `kelvin-server` process that can be killed and restarted on the same ports and
/// data dir.
pub struct ServerProc {
    pub name: String,
    pub port: u16,
    /// `Some` in cluster mode.
    pub cport: Option<u16>,
    /// `--redirect-port`, if set before the first start.
    pub rport: Option<u16>,
    pub appendfsync: &'static str,
    pub secret: String,
    tmp: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl ServerProc {
    /// A single-node server (not started yet).
    pub fn single(name: &str, appendfsync: &'static str) -> ServerProc {
        let port = free_ports(1)[0];
        ServerProc::new(name, port, None, appendfsync)
    }

    /// A cluster-mode server on the given ports (not started yet).
    pub fn clustered(name: &str, port: u16, cport: u16, appendfsync: &'static str) -> Self {
        ServerProc::new(name, port, Some(cport), appendfsync)
    }

    fn new(name: &str, port: u16, cport: Option<u16>, appendfsync: &'static str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("kelvin-{name}-"))
            .tempdir()
            .expect("temp dir");
        ServerProc {
            name: name.to_string(),
            port,
            cport,
            rport: None,
            appendfsync,
            secret: "kelvin-test-secret".to_string(),
            tmp,
            child: None,
            starts: 0,
        }
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The group's WAL folder.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir().join("group-0").join("wal")
    }

    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join("server.log")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process without waiting for it to answer.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log file");
        writeln!(log, "{START_MARK}{} ===", self.starts).expect("write log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kelvin-server"));
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--appendfsync")
            .arg(self.appendfsync);
        if let Some(cport) = self.cport {
            cmd.arg("--cluster-port")
                .arg(cport.to_string())
                .arg("--cluster-secret")
                .arg(&self.secret);
        }
        if let Some(rport) = self.rport {
            cmd.arg("--redirect-port").arg(rport.to_string());
        }
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn kelvin-server"));
    }

    /// Starts the process and waits until it answers PING.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Waits (bounded) until the server answers PING; panics with the log tail otherwise.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "{} exited ({status}) before answering PING; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if let Ok(mut con) = self.connect(Duration::from_millis(300)) {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer PING within {START_TIMEOUT:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the process and waits (bounded) for either outcome: it exits (`Some`) or
    /// it answers PING (`None`).
    pub fn start_or_exit(&mut self) -> Option<ExitStatus> {
        self.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if let Ok(mut con) = self.connect(Duration::from_millis(300)) {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return None;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} neither exited nor answered PING within {START_TIMEOUT:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.is_none() {
                panic!("{} is not running", self.name);
            }
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SHUTDOWN, then waits (bounded) for a clean exit.
    pub fn shutdown(&mut self) {
        let mut con = self.client();
        // A successful SHUTDOWN sends no reply: the connection just closes.
        let _ = redis::cmd("SHUTDOWN").query::<redis::Value>(&mut con);
        match self.wait_exit(Duration::from_secs(15)) {
            Some(status) => assert!(
                status.success(),
                "{} exited with {status} after SHUTDOWN; log tail:\n{}",
                self.name,
                self.log_tail(40)
            ),
            None => panic!(
                "{} did not exit within 15 s of SHUTDOWN; log tail:\n{}",
                self.name,
                self.log_tail(40)
            ),
        }
    }

    /// A connection with a bounded connect time; reads time out after 12 s (longer than
    /// the server's own 10 s proposal timeout).
    pub fn connect(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let con = redis::Client::open(self.url())?.get_connection_with_timeout(timeout)?;
        con.set_read_timeout(Some(Duration::from_secs(12)))?;
        con.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(con)
    }

    /// A connection; panics (with the log tail) if the server cannot be reached.
    pub fn client(&self) -> redis::Connection {
        self.connect(Duration::from_secs(2)).unwrap_or_else(|e| {
            panic!(
                "cannot connect to {}: {e}; log tail:\n{}",
                self.name,
                self.log_tail(40)
            )
        })
    }

    /// The whole log file (every start).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The output of the most recent start only.
    pub fn last_run_log(&self) -> String {
        let log = self.log();
        match log.rfind(START_MARK) {
            Some(at) => log[at..].to_string(),
            None => log,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `INFO raft` as name → value.
    pub fn info_raft(&self) -> redis::RedisResult<HashMap<String, String>> {
        let mut con = self.connect(Duration::from_millis(500))?;
        let text: String = redis::cmd("INFO").arg("raft").query(&mut con)?;
        Ok(parse_info(&text))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} log tail ({}) ---\n{}",
                self.name,
                self.log_path().display(),
                self.log_tail(30)
            );
        }
        self.kill();
    }
}

/// `name:value` lines of an INFO reply.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The WAL segments of a group, oldest first.
pub fn wal_segments(wal_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(wal_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", wal_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs
}

/// One WAL record (framing from kelvin-wal's docs: `len:u32le crc:u32le type:u8
/// payload[len]`).
#[derive(Debug, Clone, Copy)]
pub struct WalRecord {
    pub offset: usize,
    pub len: usize,
    pub ty: u8,
}

impl WalRecord {
    pub const HEADER: usize = 9;
    pub const ENTRIES: u8 = 1;

    pub fn end(&self) -> usize {
        self.offset + Self::HEADER + self.len
    }
}

/// The complete records of a segment, in order (up to the zeros of a preallocated tail).
pub fn wal_records(data: &[u8]) -> Vec<WalRecord> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + WalRecord::HEADER <= data.len()
        && data[off..off + WalRecord::HEADER].iter().any(|&b| b != 0)
    {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        let rec = WalRecord {
            offset: off,
            len,
            ty: data[off + 8],
        };
        if rec.end() > data.len() {
            break;
        }
        out.push(rec);
        off = rec.end();
    }
    out
}

/// Runs `args`, any reply.
pub fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// GETs `keys` in pipelined chunks.
pub fn get_many(con: &mut redis::Connection, keys: &[&str]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("GET").arg(*k);
        }
        let got: Vec<Option<String>> = pipe
            .query(con)
            .unwrap_or_else(|e| panic!("pipelined GET failed: {e}"));
        out.extend(got);
    }
    out
}
