//! The segment files of a [`DiskStorage`]. A record goes into the buffer (`put_record`) and
//! reaches the active segment in one `write` (`write_out`, which also starts writeback
//! every [`WRITE_BEHIND_BYTES`] and keeps [`ZERO_AHEAD`] bytes of zeros written ahead); a
//! full segment is fdatasynced and the log rolls to a new one that starts with the whole
//! state (`maybe_roll`, `create_segment`); [`DiskStorage::sync`], or
//! [`DiskStorage::begin_sync`] and a [`PendingSync`] run off the group's task, make what
//! was written durable; the segments a compaction dropped are deleted on a thread of
//! their own.
//!
//! How it fits: the operations in [`super`] decide what is written and which segments are
//! dead (the log state, replay and compaction are there); this part writes the bytes,
//! makes them durable and removes the files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{DiskStorage, LogState};
use crate::held::{segment_path, Location};
use crate::WalError;

/// How far ahead of the log's end [`WalOptions::preallocate`] keeps zeros written (at most
/// the segment size): a turn that finds less than half of it left writes the next stretch,
/// so one fdatasync in a few hundred flushes a MiB of zeros.
///
/// [`WalOptions::preallocate`]: crate::WalOptions::preallocate
pub const ZERO_AHEAD: u64 = 1 << 20;

/// Bytes of the active segment written since the OS was last told to start writing them
/// back (`sync_file_range`, without waiting): so that an fdatasync, and the one the
/// log makes in its turn when it rolls to a new segment, finds most of the data on disk
/// already. A drain bringing 200 MB/s into a group made every roll's fdatasync (64 MB)
/// hold the group's requests for 30 ms.
pub const WRITE_BEHIND_BYTES: u64 = 4 << 20;

/// Asks the OS to start writing bytes `from..to` of `file` back to disk, without waiting
/// for them: advice only (an fdatasync still makes them durable and reports errors).
fn write_behind(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range on a valid open descriptor with no pointers; its failure
    // changes nothing.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Writes zeros to `file` from `from` up to `to`, without moving its position.
pub(super) fn write_zeros(file: &File, path: &Path, from: u64, to: u64) -> Result<(), WalError> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)
            .map_err(WalError::io(path))?;
        at += n;
    }
    Ok(())
}

pub(super) struct Segment {
    /// Number in the file name; segments are ordered by it.
    pub(super) name: u64,
    pub(super) path: PathBuf,
    /// Highest entry index written to this segment that is still live (0: none).
    pub(super) max_index: u64,
    pub(super) bytes: u64,
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io(dir))
}

/// Creates segment `name` holding just the header for `st`, and `zeros` bytes of zeros
/// after it. The file position is left after the header.
pub(super) fn create_segment(
    wal_dir: &Path,
    name: u64,
    st: &LogState,
    buf: &mut Vec<u8>,
    zeros: u64,
) -> Result<(File, Segment), WalError> {
    let path = segment_path(wal_dir, name);
    buf.clear();
    st.put_header(buf)?;
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(WalError::io(&path))?;
    file.write_all(buf).map_err(WalError::io(&path))?;
    let end = buf.len() as u64;
    write_zeros(&file, &path, end, end + zeros)?;
    let seg = Segment {
        name,
        path,
        max_index: 0,
        bytes: buf.len() as u64,
    };
    Ok((file, seg))
}

impl DiskStorage {
    /// Makes everything written so far durable, also what a detached sync
    /// ([`DiskStorage::begin_sync`]) took and may not have finished.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.write_out()?;
        let detached = self.detached_running();
        if self.unsynced || detached {
            let path = &self.segments[self.segments.len() - 1].path;
            self.active.sync_data().map_err(WalError::io(path))?;
            self.unsynced = false;
        }
        if self.dir_unsynced || detached {
            sync_dir(&self.wal_dir)?;
            self.dir_unsynced = false;
        }
        self.detached = None;
        Ok(())
    }

    /// Whether the last detached sync may still be running (it took the active segment:
    /// an older segment was synced whole when the log rolled past it).
    fn detached_running(&self) -> bool {
        self.detached
            .as_ref()
            .is_some_and(|done| !done.load(Ordering::Acquire))
    }

    /// [`DiskStorage::sync`] in two halves, so the owner can run the slow part elsewhere
    /// (a blocking pool) while it goes on writing the log: takes what needs syncing now
    /// (with what a detached sync still running took) and counts it as synced; the caller
    /// must run the returned [`PendingSync`] before it relies on the data being durable,
    /// and treat its failure as fatal for the log. Until it has succeeded,
    /// [`DiskStorage::sync`] still syncs what it took.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, WalError> {
        self.write_out()?;
        if !self.has_unsynced() {
            return Ok(None);
        }
        let detached = self.detached_running();
        let path = self.segments[self.segments.len() - 1].path.clone();
        let file = if self.unsynced || detached {
            Some(self.active.try_clone().map_err(WalError::io(&path))?)
        } else {
            None
        };
        let dir = (self.dir_unsynced || detached).then(|| self.wal_dir.clone());
        self.unsynced = false;
        self.dir_unsynced = false;
        let done = Arc::new(AtomicBool::new(false));
        self.detached = Some(done.clone());
        Ok(Some(PendingSync {
            file,
            path,
            dir,
            done,
        }))
    }

    /// fdatasync of the active segment and the directory, whatever [`DiskStorage::begin_sync`]
    /// already took (for shutdown, when a detached sync may still be running).
    pub fn sync_all(&mut self) -> Result<(), WalError> {
        self.unsynced = true;
        self.dir_unsynced = true;
        self.sync()
    }

    /// Whether [`DiskStorage::sync`] has anything to do.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced || !self.buf.is_empty() || self.dir_unsynced || self.detached_running()
    }

    /// Deletes compacted segments on a thread of their own: unlinking a few hundred MB of
    /// segments (after a migration's drain) held the group's task, which compacts, and so
    /// every request of the group, for 65-120 ms. Safe to leave to a thread: the Compact
    /// record is durable first, and replay skips whole segments below it (as after a
    /// crash between the record and the deletion). One thread at a time: the previous
    /// one is waited for first.
    pub(super) fn delete_in_background(&mut self, paths: Vec<PathBuf>) {
        self.settle();
        let delete = |paths: &[PathBuf]| {
            for path in paths {
                match fs::remove_file(path) {
                    Ok(()) => {
                        tracing::debug!(file = %path.display(), "deleted compacted WAL segment")
                    }
                    // Left for the next start, whose replay drops it again.
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot delete a compacted WAL segment")
                    }
                }
            }
        };
        let mine = paths.clone();
        match std::thread::Builder::new()
            .name("kelvin-wal-rm".into())
            .spawn(move || delete(&mine))
        {
            Ok(handle) => self.deleting = Some(handle),
            Err(_) => delete(&paths),
        }
    }

    /// Waits until the segments the last compaction dropped are deleted.
    pub fn settle(&mut self) {
        if let Some(handle) = self.deleting.take() {
            // A panic there (none is expected) leaves files the next replay drops.
            let _ = handle.join();
        }
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Adds a record to `self.buf` (after the records held back, if any); returns where
    /// it will be in the active segment.
    pub(super) fn put_record(
        &mut self,
        put: impl FnOnce(&mut Vec<u8>) -> Result<(), WalError>,
    ) -> Result<Location, WalError> {
        self.check_poisoned()?;
        let seg = self
            .segments
            .last()
            .ok_or_else(|| WalError::Invalid("no active segment".into()))?;
        let start = self.buf.len();
        let at = Location {
            segment: seg.name,
            offset: seg.bytes + start as u64,
        };
        if let Err(e) = put(&mut self.buf) {
            // (A record that cannot be encoded leaves nothing behind.)
            self.buf.truncate(start);
            return Err(e);
        }
        Ok(at)
    }

    /// Hands `self.buf` to the OS in one write and empties it.
    pub(super) fn write_out(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = self
            .segments
            .last_mut()
            .ok_or_else(|| WalError::Invalid("no active segment".into()))?;
        if let Err(e) = self.active.write_all(&self.buf) {
            self.poisoned = true;
            return Err(WalError::io(&seg.path)(e));
        }
        seg.bytes += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        if seg.bytes.saturating_sub(self.behind) >= WRITE_BEHIND_BYTES {
            write_behind(&self.active, self.behind, seg.bytes);
            self.behind = seg.bytes;
        }
        let ahead = self.opts.zero_ahead();
        if ahead > 0 && seg.bytes + ahead / 2 > self.zeroed {
            let (from, to) = (self.zeroed.max(seg.bytes), seg.bytes + ahead);
            if let Err(e) = write_zeros(&self.active, &seg.path, from, to) {
                self.poisoned = true;
                return Err(e);
            }
            self.zeroed = to;
        }
        Ok(())
    }

    pub(super) fn maybe_roll(&mut self) -> Result<(), WalError> {
        let Some(cur) = self.segments.last() else {
            return Ok(());
        };
        if cur.bytes < self.opts.segment_bytes {
            return Ok(());
        }
        let name = (self.st.last_index() + 1).max(cur.name + 1);
        // Older segments are always complete: only the last one may have a torn tail.
        self.sync()?;
        let (file, seg) = create_segment(
            &self.wal_dir,
            name,
            &self.st,
            &mut self.buf,
            self.opts.zero_ahead(),
        )?;
        // (`create_segment` wrote the header through the buffer.)
        self.buf.clear();
        tracing::debug!(file = %seg.path.display(), "rolled to a new WAL segment");
        self.zeroed = seg.bytes + self.opts.zero_ahead();
        self.behind = seg.bytes;
        self.active = file;
        self.segments.push(seg);
        self.unsynced = true;
        self.dir_unsynced = true;
        Ok(())
    }
}

/// The slow half of a sync, taken by [`DiskStorage::begin_sync`]: fdatasync of the active
/// segment (through its own descriptor) and of the directory if files came or went.
pub struct PendingSync {
    file: Option<File>,
    path: PathBuf,
    dir: Option<PathBuf>,
    /// Set once the sync succeeded (read by the log's [`DiskStorage::sync`]).
    done: Arc<AtomicBool>,
}

impl PendingSync {
    pub fn run(self) -> Result<(), WalError> {
        if let Some(file) = &self.file {
            file.sync_data().map_err(WalError::io(&self.path))?;
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir)?;
        }
        self.done.store(true, Ordering::Release);
        Ok(())
    }
}
