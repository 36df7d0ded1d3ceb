//! Snapshots written by a forked child, as Redis's BGSAVE: the group goes on applying
//! while the child encodes the keyspace as it was at the fork.
//!
//! Written in the group's task, a snapshot of a large keyspace stopped the group for its
//! whole length (nothing applied, no write answered: 1.5 s for ~100 MB, measured while a
//! migration drained into a group). Forked, the group stops only for the fork itself (the
//! page tables are copied; the pages are shared copy-on-write), with the store's lock held
//! so the child's copy is the state at the applied index.
//!
//! The child runs only this module's code between the fork and `_exit`: no logging, no
//! lock another thread could have held at the fork (the store's lock is held by the
//! forking thread itself, so the child owns its guard), allocation through the C library's
//! fork-safe allocator. It stops, before the file is renamed into place, as soon as its
//! parent is gone (it checks between chunks that its parent is still the process that
//! forked it: `PR_SET_PDEATHSIG` would fire when the forking *thread* ends, and the
//! runtime's threads come and go), so a killed node never leaves a child finishing a
//! snapshot into the directory of the node that restarts. The parent records the file as
//! the newest snapshot and compacts the log once the child exits 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kelvin_wal::{snapshot_file_name, SnapshotWriter};
use raft::eraftpb::SnapshotMetadata;

use crate::store::Store;

/// Longest a child may take before it is killed and the snapshot tried again later.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Microseconds the last fork of this process took (the parent stops for it: the page
/// tables are copied), INFO's `latest_fork_usec`.
static LATEST_FORK_USEC: AtomicU64 = AtomicU64::new(0);
/// Forks since the process started, INFO's `total_forks`.
static TOTAL_FORKS: AtomicU64 = AtomicU64::new(0);
/// Snapshot children running now (every group's), INFO's `rdb_bgsave_in_progress`.
static RUNNING: AtomicU64 = AtomicU64::new(0);

/// `(latest_fork_usec, total_forks, children running)` of this process.
pub fn fork_figures() -> (u64, u64, u64) {
    (
        LATEST_FORK_USEC.load(Ordering::Relaxed),
        TOTAL_FORKS.load(Ordering::Relaxed),
        RUNNING.load(Ordering::Relaxed),
    )
}

/// A snapshot being written by a child process.
pub struct Pending {
    pid: libc::pid_t,
    pub meta: SnapshotMetadata,
    pub path: PathBuf,
    pub started: Instant,
    /// The store's changes counted at the fork (they are in the snapshot).
    pub changes: u64,
    /// The keys' bytes at the fork (what the snapshot holds).
    pub base_bytes: u64,
    /// Microseconds the fork took.
    pub fork_us: u64,
}

/// Forks a child that writes `store` (locked by the caller, at `meta.index`) as a
/// snapshot into `dir`.
pub fn start(
    store: &Store,
    meta: SnapshotMetadata,
    dir: &Path,
    changes: u64,
    base_bytes: u64,
) -> Result<Pending, String> {
    let path = dir.join(snapshot_file_name(meta.term, meta.index));
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let forking = Instant::now();
    // SAFETY: the child only runs `child` (no locks other threads may hold, no logging)
    // and ends in `_exit`; the parent goes on as before.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            crate::store::background_priority();
            crate::store::background_session();
            let code = match child(store, &meta, dir, parent) {
                Ok(()) => 0,
                Err(e) => {
                    let line = format!("kelvin: snapshot child: {e}\n");
                    // SAFETY: a raw write to stderr, no lock taken.
                    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
                    1
                }
            };
            // SAFETY: ends the child without running the parent's destructors or exit
            // handlers.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let fork_us = forking.elapsed().as_micros() as u64;
            LATEST_FORK_USEC.store(fork_us, Ordering::Relaxed);
            TOTAL_FORKS.fetch_add(1, Ordering::Relaxed);
            RUNNING.fetch_add(1, Ordering::Relaxed);
            Ok(Pending {
                pid,
                meta,
                path,
                started: Instant::now(),
                changes,
                base_bytes,
                fork_us,
            })
        }
    }
}

/// The child's work: encode every chunk and write the file, while `parent` lives.
fn child(store: &Store, meta: &SnapshotMetadata, dir: &Path, parent: i32) -> Result<(), String> {
    // SAFETY: getppid has no preconditions.
    let orphaned = || unsafe { libc::getppid() } != parent;
    let mut writer = SnapshotWriter::create(dir, meta).map_err(|e| e.to_string())?;
    let mut encoder = crate::snapshot::SnapshotEncoder::new();
    let mut chunk = Vec::new();
    loop {
        if orphaned() {
            return Err("the node is gone".into());
        }
        let more = encoder
            .encode_next(store, &mut chunk)
            .map_err(|e| e.to_string())?;
        if !chunk.is_empty() {
            writer.write_chunk(&chunk).map_err(|e| e.to_string())?;
        }
        if !more {
            break;
        }
    }
    if orphaned() {
        return Err("the node is gone".into());
    }
    writer.finish().map(|_| ()).map_err(|e| e.to_string())
}

impl Pending {
    /// Whether the child is done, without waiting: `None` while it runs, `Ok` once the
    /// file is written, fsynced and renamed into place, `Err` why not. One past
    /// [`CHILD_TIMEOUT`] is killed.
    pub fn poll(&mut self) -> Option<Result<(), String>> {
        if self.pid <= 0 {
            return Some(Err("the child was reaped already".into()));
        }
        let mut status = 0;
        // SAFETY: waits only for our own child, without blocking.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            0 if self.started.elapsed() >= CHILD_TIMEOUT => {
                self.kill();
                Some(Err(format!(
                    "no snapshot after {CHILD_TIMEOUT:?}: child killed"
                )))
            }
            0 => None,
            -1 => {
                let cause = std::io::Error::last_os_error();
                self.reaped();
                Some(Err(format!("waitpid: {cause}")))
            }
            _ => {
                self.reaped();
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    Some(Ok(()))
                } else {
                    Some(Err(format!("snapshot child ended with status {status:#x}")))
                }
            }
        }
    }

    fn kill(&mut self) {
        if self.pid > 0 {
            // SAFETY: our own child; the wait reaps it (SIGKILL cannot be caught).
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.reaped();
        }
    }

    /// The child is gone (reaped, or lost to a failed wait): no longer counted running.
    fn reaped(&mut self) {
        if self.pid > 0 {
            self.pid = 0;
            RUNNING.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Pending {
    /// A group that stops does not leave its child writing.
    fn drop(&mut self) {
        self.kill();
    }
}
