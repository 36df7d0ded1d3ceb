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
}

/// Paths of the programs the benchmarks run.
#[derive(Debug, Clone)]
pub struct Programs {
    pub kelvin: PathBuf,
    pub redis_server: PathBuf,
}

/// A running server. Dropping it kills the process and removes its directory.
pub struct ServerGuard {
    pub kind: Kind,
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl ServerGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `kind` on a free port and waits until it answers PING.
    pub fn start(kind: Kind, programs: &Programs) -> Result<ServerGuard> {
        let mut last_err = None;
        // A port found free can be taken before the server binds it: a few tries.
        for _ in 0..5 {
            match ServerGuard::try_start(kind, programs) {
                Ok(guard) => return Ok(guard),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start(kind: Kind, programs: &Programs) -> Result<ServerGuard> {
        let port = free_port()?;
        let dir = temp_dir(kind)?;
        let log = File::create(dir.join("server.log"))?;
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
                    .arg("everysec")
                    .env("RUST_LOG", "warn");
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
                    .args(["--appendfsync", "everysec"])
                    .args(["--daemonize", "no"]);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} ({:?})", kind.name(), cmd.get_program()))?;
        let mut guard = ServerGuard {
            kind,
            port,
            dir,
            child,
        };
        guard.wait_ready()?;
        Ok(guard)
    }

    fn wait_ready(&mut self) -> Result<()> {
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
        let _ = fs::remove_dir_all(&self.dir);
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

fn temp_dir(kind: Kind) -> Result<PathBuf> {
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

/// The Kelvin binary: the given path, or `target/release/kelvin-server`, built with
/// cargo if it is not there yet.
pub fn locate_kelvin(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("--kelvin-bin {} does not exist", path.display());
        }
        return Ok(path);
    }
    let root = workspace_root();
    let path = root.join("target/release/kelvin-server");
    if !path.is_file() {
        eprintln!("{} is missing: building it", path.display());
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "kelvin-server"])
            .current_dir(&root)
            .status()
            .context("cannot run cargo; pass --kelvin-bin")?;
        if !status.success() || !path.is_file() {
            bail!("cargo build --release -p kelvin-server failed; pass --kelvin-bin");
        }
    }
    Ok(path)
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
