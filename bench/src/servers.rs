//! Starting the servers under test: Kelvin and redis-server, each on a free loopback
//! port with its own temporary directory, killed when their guard drops (also when the
//! benchmark fails half way), and killed by the kernel if this process dies first.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Loopback only: the benchmarks never talk to anything else.
pub const HOST: &str = "127.0.0.1";

/// How long a server gets to answer its first PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server a guard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Kelvin,
    Redis,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kelvin => "Kelvin",
            Kind::Redis => "Redis",
        }
    }

    /// Who runs first in round `round` (0-based): Kelvin in even rounds, Redis in odd
    /// ones, so that neither always runs on a warmer machine.
    pub fn alternating(round: u32) -> [Kind; 2] {
        if round.is_multiple_of(2) {
            [Kind::Kelvin, Kind::Redis]
        } else {
            [Kind::Redis, Kind::Kelvin]
        }
    }
}

/// Paths of the programs the benchmarks run.
#[derive(Debug, Clone)]
pub struct Programs {
    pub kelvin: PathBuf,
    pub redis_server: PathBuf,
    /// `kelvin-cli`, for the benchmarks that form a Kelvin group (`cluster create`).
    pub kelvin_cli: Option<PathBuf>,
}

impl Programs {
    pub fn kelvin_cli(&self) -> Result<&Path> {
        self.kelvin_cli
            .as_deref()
            .context("this benchmark needs kelvin-cli (pass --kelvin-cli)")
    }
}

/// How to start a server: its kind, when it fsyncs, and (Kelvin only) whether it takes
/// part in a Raft group.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    /// `always`, `everysec` or `no`: Kelvin's `--appendfsync`; Redis's too, with
    /// `--appendonly yes`.
    pub appendfsync: &'static str,
    /// Kelvin: start with `--cluster-port` (a free one) and this `--cluster-secret`.
    pub cluster_secret: Option<String>,
    /// Kelvin, with `cluster_secret`: also a `--redirect-port` (a free one), the client
    /// port that speaks Redis Cluster redirection and that CLUSTER NODES advertises.
    pub redirect_port: bool,
    /// Redis: `--cluster-enabled yes --cluster-config-file nodes.conf` (in its `--dir`)
    /// and `--cluster-port` (a free one).
    pub cluster_enabled: bool,
    /// Redis: `--auto-aof-rewrite-percentage 0`, so that the AOF is never rewritten
    /// behind the benchmark's back.
    pub no_auto_rewrite: bool,
}

impl Spec {
    /// The settings of the throughput and memory benchmarks: `appendfsync everysec`.
    pub fn new(kind: Kind) -> Spec {
        Spec {
            kind,
            appendfsync: "everysec",
            cluster_secret: None,
            redirect_port: false,
            cluster_enabled: false,
            no_auto_rewrite: false,
        }
    }

    pub fn appendfsync(mut self, policy: &'static str) -> Spec {
        self.appendfsync = policy;
        self
    }
}

/// A running server. Dropping it kills the process and removes its directory (unless
/// [`ServerGuard::shutdown`] handed the directory on).
pub struct ServerGuard {
    pub kind: Kind,
    pub port: u16,
    pub cluster_port: Option<u16>,
    /// Kelvin's `--redirect-port`, if it was started with one.
    pub redirect_port: Option<u16>,
    pub dir: PathBuf,
    child: Child,
    keep_dir: bool,
}

impl ServerGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `kind` on a free port and waits until it answers PING.
    pub fn start(kind: Kind, programs: &Programs) -> Result<ServerGuard> {
        ServerGuard::start_spec(&Spec::new(kind), programs)
    }

    /// Starts a server as `spec` says on a free port, in a new temporary directory, and
    /// waits until it answers PING.
    pub fn start_spec(spec: &Spec, programs: &Programs) -> Result<ServerGuard> {
        let mut last_err = None;
        // A port found free can be taken before the server binds it: a few tries.
        for _ in 0..5 {
            let attempt = temp_dir(spec.kind).and_then(|dir| {
                let mut guard = ServerGuard::spawn_in(spec, programs, dir, free_port()?)?;
                guard.wait_ready()?;
                Ok(guard)
            });
            match attempt {
                Ok(guard) => return Ok(guard),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Spawns a server in `dir` (kept from an earlier run, or new) on `port` and returns
    /// at once, without waiting for it to answer. The guard owns `dir` from now on.
    pub fn spawn_in(
        spec: &Spec,
        programs: &Programs,
        dir: PathBuf,
        port: u16,
    ) -> Result<ServerGuard> {
        let kind = spec.kind;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))?;
        let mut cluster_port = None;
        let mut redirect_port = None;
        let mut cmd = match kind {
            Kind::Kelvin => {
                let mut c = Command::new(&programs.kelvin);
                c.arg("--bind")
                    .arg(HOST)
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--data-dir")
                    .arg(dir.join("data"))
                    .arg("--appendfsync")
                    .arg(spec.appendfsync)
                    // KELVIN_BENCH_LOG: the servers' log filter (default `warn`);
                    // with KELVIN_BENCH_LOG_DIR their logs are copied there at the end.
                    .env(
                        "RUST_LOG",
                        std::env::var("KELVIN_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                    );
                if let Some(secret) = &spec.cluster_secret {
                    let cport = free_port()?;
                    cluster_port = Some(cport);
                    c.arg("--cluster-port")
                        .arg(cport.to_string())
                        .arg("--cluster-secret")
                        .arg(secret);
                    if spec.redirect_port {
                        let rport = free_port()?;
                        redirect_port = Some(rport);
                        c.arg("--redirect-port").arg(rport.to_string());
                    }
                }
                c
            }
            Kind::Redis => {
                let mut c = Command::new(&programs.redis_server);
                c.arg("--bind")
                    .arg(HOST)
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--dir")
                    .arg(&dir)
                    .args(["--save", ""])
                    .args(["--appendonly", "yes"])
                    .args(["--appendfsync", spec.appendfsync])
                    .args(["--daemonize", "no"]);
                if spec.no_auto_rewrite {
                    c.args(["--auto-aof-rewrite-percentage", "0"]);
                }
                if spec.cluster_enabled {
                    // The bus port is given: the default, port + 10000, can be taken or
                    // out of range for a port from the ephemeral range.
                    let cport = free_port()?;
                    cluster_port = Some(cport);
                    c.args(["--cluster-enabled", "yes"])
                        .args(["--cluster-config-file", "nodes.conf"])
                        .arg("--cluster-port")
                        .arg(cport.to_string());
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot start {} ({:?})",
                    kind.name(),
                    cmd.get_program()
                )));
            }
        };
        Ok(ServerGuard {
            kind,
            port,
            cluster_port,
            redirect_port,
            dir,
            child,
            keep_dir: false,
        })
    }

    /// Sends SHUTDOWN, waits up to `timeout` for the process to exit (kills it after
    /// that) and returns its directory, which is no longer removed: pass it to
    /// [`ServerGuard::spawn_in`] to start again on the same data.
    pub fn shutdown(mut self, timeout: Duration) -> Result<PathBuf> {
        // Like Redis, a successful SHUTDOWN closes the connection without a reply.
        if let Ok(mut stream) = connect(self.port, Duration::from_secs(5)) {
            let _ = stream.write_all(b"*1\r\n$8\r\nSHUTDOWN\r\n");
            let mut buf = [0u8; 256];
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.read(&mut buf);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!(
                        "    {} exited with {status} after SHUTDOWN; log:\n{}",
                        self.kind.name(),
                        self.log_tail()
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not exit within {timeout:?} of SHUTDOWN; killed; log:\n{tail}",
                    self.kind.name()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.keep_dir = true;
        Ok(self.dir.clone())
    }

    pub fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during startup ({status}); log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            if ping(self.port).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not answer PING within {:?}; log:\n{}",
            self.kind.name(),
            STARTUP_TIMEOUT,
            self.log_tail()
        )
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); log:\n{}",
                self.kind.name(),
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(to) = std::env::var_os("KELVIN_BENCH_LOG_DIR") {
            let name = format!("{}-{}.log", self.kind.name(), self.port);
            let _ = fs::create_dir_all(&to);
            let _ = fs::copy(self.dir.join("server.log"), PathBuf::from(to).join(name));
        }
        if !self.keep_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Asks the kernel to SIGKILL the child if this process dies (even if it is killed),
/// so that an interrupted benchmark leaves no server behind.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    const SIGKILL: u64 = 9;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((HOST, 0)).context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

pub fn temp_dir(kind: Kind) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "kelvin-bench-{}-{}-{nanos}",
        kind.name().to_lowercase(),
        std::process::id()
    ));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Opens a connection with timeouts, so that no read or write waits forever.
pub fn connect(port: u16, timeout: Duration) -> Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&(HOST.parse::<std::net::IpAddr>()?, port).into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One PING round trip.
pub fn ping(port: u16) -> Result<()> {
    let mut stream = connect(port, Duration::from_secs(1))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf != b"+PONG\r\n" {
        bail!("unexpected PING reply {:?}", String::from_utf8_lossy(&buf));
    }
    Ok(())
}

/// Resident set size of a process in bytes, from /proc/<pid>/status (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let file = File::open(&path).with_context(|| format!("cannot read {path}"))?;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("bad VmRSS line {line:?}"))?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmRSS in {path}")
}

/// The workspace root (this crate lives in `<root>/bench`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Finds a program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Kelvin binary: the given path, or `kelvin-server` from the cargo target directory
/// (built with cargo if it is not there yet).
pub fn locate_kelvin(given: Option<PathBuf>) -> Result<PathBuf> {
    locate_workspace_bin(given, "kelvin-server", "kelvin-server")
}

/// `kelvin-cli`: the given path, or from the cargo target directory (built if missing).
pub fn locate_kelvin_cli(given: Option<PathBuf>) -> Result<PathBuf> {
    locate_workspace_bin(given, "kelvin-cli", "kelvin-client")
}

/// Where cargo puts release binaries: next to this program when it was built with
/// `--release`, else `$CARGO_TARGET_DIR/release`, else `<root>/target/release`.
fn release_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        if dir.file_name().is_some_and(|n| n == "release") {
            dirs.push(dir);
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_absolute() {
            target
        } else {
            workspace_root().join(target)
        };
        dirs.push(target.join("release"));
    }
    dirs.push(workspace_root().join("target/release"));
    dirs
}

fn locate_workspace_bin(given: Option<PathBuf>, bin: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("{} does not exist", path.display());
        }
        return Ok(path);
    }
    let find = || {
        release_dirs()
            .into_iter()
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    eprintln!("{bin} is missing: building it");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", package])
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run cargo; pass the path of {bin}"))?;
    match find() {
        Some(path) if status.success() => Ok(path),
        _ => bail!("cargo build --release -p {package} failed; pass the path of {bin}"),
    }
}

/// Sends one command and reads one reply (simple, error, integer or bulk string; not
/// arrays). Errors come back as `Err`.
pub fn command(stream: &mut TcpStream, args: &[&str]) -> Result<String> {
    let mut buf = Vec::new();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    push_command(&mut buf, &args);
    stream.write_all(&buf)?;
    read_reply(stream)
}

/// Appends one RESP command to `buf`.
pub fn push_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Reads one non-array reply byte by byte (no buffering, so that nothing is lost
/// between calls on the same stream).
pub fn read_reply(stream: &mut TcpStream) -> Result<String> {
    let line = read_line(stream)?;
    let (tag, rest) = line.split_at(1.min(line.len()));
    match tag {
        "+" | ":" => Ok(rest.to_string()),
        "-" => bail!("{rest}"),
        "$" => {
            let len: i64 = rest
                .parse()
                .with_context(|| format!("bad reply {line:?}"))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut data = vec![0u8; len as usize + 2];
            stream.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        _ => bail!("unexpected reply {line:?}"),
    }
}

/// One reply line, without its CRLF.
pub fn read_line(stream: &mut TcpStream) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            bail!("connection closed by the server");
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A `name:value` field of an INFO reply.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A program given by flag or found on PATH.
pub fn locate_program(given: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match given {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!("{} does not exist", p.display()),
        None => which(name).with_context(|| {
            format!("{name} not found on PATH (apt-get install redis-server redis-tools)")
        }),
    }
}

/// Writes `text` to `bench-results/<stem>-<unix time>.md` under the workspace root and
/// returns the path.
pub fn save_result(stem: &str, text: &str) -> Result<PathBuf> {
    let dir = workspace_root().join("bench-results");
    fs::create_dir_all(&dir)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = dir.join(format!("{stem}-{secs}.md"));
    fs::write(&path, text)?;
    Ok(path)
}

/// One line about the machine and the programs, for the result files.
pub fn environment_note(programs: &Programs) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let redis_version = Command::new(&programs.redis_server)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "- machine: {cores} cores\n- Kelvin: {} (commit {git})\n- {redis_version}\n",
        programs.kelvin.display()
    )
}
