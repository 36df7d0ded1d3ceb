//! [`DiskStorage`]: the Raft log, hard state and conf state on a segmented WAL.
//!
//! Here: the options, the log state and its replay on open, and the operations Raft calls
//! (append, hard and conf state, compaction, snapshots, [`raft::Storage`]). How their
//! records reach the segment files, are synced, rolled over and deleted is in [`segment`].

mod segment;

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::held::{segment_path, HeldLog, Location};
use crate::record::{self, Record, Scan};
use crate::WalError;
use segment::{create_segment, sync_dir, write_zeros, Segment};
pub use segment::{PendingSync, ZERO_AHEAD};

/// Tuning knobs of the WAL.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Roll to a new segment once the active one has at least this many bytes.
    pub segment_bytes: u64,
    /// Keep [`ZERO_AHEAD`] bytes of zeros written ahead of the log's end, so that an append
    /// only overwrites blocks the file already has: its fdatasync then has no size change
    /// or block allocation to commit to the filesystem journal, only the data to flush
    /// (`kelvin-bench durable` gains about a tenth over a sparse or growing file). Replay
    /// takes the zeros as the end of the segment.
    pub preallocate: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            preallocate: true,
        }
    }
}

impl WalOptions {
    /// Bytes of zeros kept ahead of the log's end (0: none, the file grows as written).
    fn zero_ahead(&self) -> u64 {
        if self.preallocate {
            ZERO_AHEAD.min(self.segment_bytes)
        } else {
            0
        }
    }
}

/// The log state, shared by live operation and replay so both evolve identically.
#[derive(Default)]
struct LogState {
    hs: HardState,
    cs: ConfState,
    /// The first non-empty conf state recorded (the group's voters at creation): where
    /// Raft starts over on restart when there is no snapshot (see `initial_state`).
    first_cs: Option<ConfState>,
    /// Newest snapshot file: its metadata and file name inside `snap/`.
    snapshot: Option<(SnapshotMetadata, String)>,
    /// The entries after the compaction point (payloads of the newest only).
    log: HeldLog,
}

impl LogState {
    fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// Like `MemStorageCore::apply_snapshot` after its out-of-date check.
    fn apply_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.log.reset((meta.index, meta.term));
        self.hs.term = self.hs.term.max(meta.term);
        self.hs.commit = meta.index;
        self.cs = meta.get_conf_state().clone();
    }

    /// The records that start every segment and recreate this state on their own.
    fn put_header(&self, buf: &mut Vec<u8>) -> Result<(), WalError> {
        record::put_hard_state(buf, &self.hs)?;
        record::put_conf_state(buf, &self.cs)?;
        if let Some((meta, name)) = &self.snapshot {
            record::put_snapshot(buf, record::SNAP_CREATED, meta, name)?;
        }
        record::put_compact(buf, self.log.truncated.0, self.log.truncated.1)
    }
}

/// Replay bookkeeping. Once compaction deleted old segments, the first segment left may
/// hold batches that start past its header's compaction point, or that overwrite entries
/// whose segments are gone. Until a Compact (or applied Snapshot) record at or above what is
/// held arrives, replay is *rebasing*: a batch that does not fit replaces everything held.
/// That is exact for every index above the batch start, and the compaction that deleted the
/// segments was synced before they were, so it always arrives.
#[derive(Default)]
struct Replay {
    seen_batch: bool,
    rebasing: bool,
}

impl Replay {
    fn apply(
        &mut self,
        st: &mut LogState,
        rec: Record,
        at: Location,
        seg_max: &mut u64,
    ) -> Result<(), String> {
        match rec {
            Record::Entries(ents) => {
                let first = ents[0].index;
                if first <= st.log.truncated.0 || first > st.last_index() + 1 {
                    if !self.rebasing && self.seen_batch {
                        return Err(format!(
                            "entries start at {first} but the log holds {}..={}",
                            st.first_index(),
                            st.last_index()
                        ));
                    }
                    st.log.reset((first - 1, 0));
                    self.rebasing = true;
                }
                self.seen_batch = true;
                st.log.splice(&ents, at);
                *seg_max = (*seg_max).max(st.last_index());
            }
            Record::HardState(hs) => st.hs = hs,
            Record::ConfState(cs) => {
                if st.first_cs.is_none() && cs != ConfState::default() {
                    st.first_cs = Some(cs.clone());
                }
                st.cs = cs
            }
            Record::Snapshot { kind, meta, name } => {
                if kind == record::SNAP_APPLIED {
                    st.apply_snapshot(&meta);
                    self.rebasing = false;
                }
                st.snapshot = Some((meta, name));
            }
            Record::Compact { index, term } => {
                if index > st.log.truncated.0 || (self.rebasing && index == st.log.truncated.0) {
                    st.log.compact(index, term);
                    self.rebasing = false;
                }
            }
        }
        Ok(())
    }
}

/// Durable [`raft::Storage`]: see the crate docs for the format and durability contract.
pub struct DiskStorage {
    wal_dir: PathBuf,
    snap_dir: PathBuf,
    opts: WalOptions,
    st: LogState,
    /// Oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    active: File,
    /// Records not yet handed to the OS: those [`DiskStorage::hold_writes`] held back
    /// (the next write takes them along, in order), and the one being written.
    buf: Vec<u8>,
    /// Whether [`DiskStorage::append`] and [`DiskStorage::set_hard_state`] leave their
    /// records in `buf` for [`DiskStorage::flush`] ([`DiskStorage::hold_writes`]).
    holding: bool,
    /// End of the zeros written ahead in the active segment ([`WalOptions::preallocate`]).
    zeroed: u64,
    /// Where the active segment's bytes not yet handed to writeback start
    /// ([`WRITE_BEHIND_BYTES`]).
    ///
    /// [`WRITE_BEHIND_BYTES`]: segment::WRITE_BEHIND_BYTES
    behind: u64,
    unsynced: bool,
    dir_unsynced: bool,
    /// The last sync [`DiskStorage::begin_sync`] handed out, set once it succeeded: until
    /// then what it took counts as not yet durable ([`DiskStorage::sync`] syncs it again).
    detached: Option<Arc<AtomicBool>>,
    poisoned: bool,
    snapshot_requested: Cell<bool>,
    /// The thread deleting the segments the last compaction dropped, if it may still run
    /// ([`DiskStorage::settle`]).
    deleting: Option<std::thread::JoinHandle<()>>,
}

/// Parses `<term>-<index>.snap`.
fn parse_snap_name(name: &str) -> Option<(u64, u64)> {
    let (term, index) = name.strip_suffix(".snap")?.split_once('-')?;
    Some((term.parse().ok()?, index.parse().ok()?))
}

impl DiskStorage {
    /// Opens or creates the storage in `dir`, replaying the WAL (see the crate docs).
    pub fn open(dir: &Path, opts: WalOptions) -> Result<DiskStorage, WalError> {
        let wal_dir = dir.join("wal");
        let snap_dir = dir.join("snap");
        for d in [dir, &wal_dir, &snap_dir] {
            if !d.is_dir() {
                fs::create_dir_all(d).map_err(WalError::io(d))?;
                if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
        }
        // Leftovers of snapshots interrupted by a crash.
        for (path, name) in list_dir(&snap_dir)? {
            if name.ends_with(".snap.tmp") {
                fs::remove_file(&path).map_err(WalError::io(&path))?;
            }
        }
        let mut names: Vec<u64> = list_dir(&wal_dir)?
            .into_iter()
            .filter_map(|(_, n)| n.strip_suffix(".log")?.parse().ok())
            .collect();
        names.sort_unstable();

        let mut st = LogState::default();
        let mut replay = Replay::default();
        let mut segments = Vec::with_capacity(names.len());
        let mut torn = false;
        for (i, &name) in names.iter().enumerate() {
            let path = segment_path(&wal_dir, name);
            let data = fs::read(&path).map_err(WalError::io(&path))?;
            let mut off = 0;
            let mut max_index = 0;
            loop {
                match record::scan(&data, off) {
                    Scan::End => break,
                    Scan::Record { ty, payload, end } => {
                        record::decode(ty, payload)
                            .and_then(|rec| {
                                let at = Location {
                                    segment: name,
                                    offset: off as u64,
                                };
                                replay.apply(&mut st, rec, at, &mut max_index)
                            })
                            .map_err(|reason| WalError::corrupt(&path, off, reason))?;
                        off = end;
                    }
                    Scan::Bad { reason, torn: true } if i + 1 == names.len() => {
                        tracing::warn!(
                            file = %path.display(),
                            offset = off,
                            %reason,
                            "truncating torn tail of the WAL"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(WalError::io(&path))?;
                        f.set_len(off as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(WalError::io(&path))?;
                        torn = true;
                        break;
                    }
                    Scan::Bad { reason, .. } => return Err(WalError::corrupt(&path, off, reason)),
                }
            }
            segments.push(Segment {
                name,
                path,
                max_index,
                bytes: off as u64,
            });
        }
        if replay.rebasing {
            let file = segments.first().map(|s| s.path.clone()).unwrap_or_default();
            return Err(WalError::corrupt(
                file,
                0,
                format!(
                    "entries up to {} are missing and no compaction record covers them",
                    st.log.truncated.0
                ),
            ));
        }
        if let Some((_, name)) = &st.snapshot {
            let path = snap_dir.join(name);
            if !path.is_file() {
                return Err(WalError::MissingSnapshot { path });
            }
        }

        // The active segment must start with a complete header: start a new one if the
        // last segment is missing, empty, or lost part of its records.
        let mut buf = Vec::new();
        let reuse = !torn && segments.last().is_some_and(|s| s.bytes > 0);
        let active = if reuse {
            // Written from the end of its records on, over the zeros of its unused tail.
            let seg = &segments[segments.len() - 1];
            let mut file = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .map_err(WalError::io(&seg.path))?;
            // (Zeros may be there already: writing them again costs a MiB, once.)
            write_zeros(&file, &seg.path, seg.bytes, seg.bytes + opts.zero_ahead())?;
            file.seek(SeekFrom::Start(seg.bytes))
                .map_err(WalError::io(&seg.path))?;
            file
        } else {
            if let Some(s) = segments.last().filter(|s| s.bytes == 0) {
                fs::remove_file(&s.path).map_err(WalError::io(&s.path))?;
                segments.pop();
            }
            let name = (st.last_index() + 1).max(segments.last().map_or(0, |s| s.name + 1));
            let (file, seg) = create_segment(&wal_dir, name, &st, &mut buf, opts.zero_ahead())?;
            file.sync_data().map_err(WalError::io(&seg.path))?;
            sync_dir(&wal_dir)?;
            segments.push(seg);
            file
        };
        let zeroed = segments.last().map_or(0, |s| s.bytes) + opts.zero_ahead();
        Ok(DiskStorage {
            wal_dir,
            snap_dir,
            zeroed,
            behind: 0,
            opts,
            st,
            segments,
            active,
            buf: Vec::new(),
            holding: false,
            unsynced: false,
            dir_unsynced: false,
            detached: None,
            poisoned: false,
            snapshot_requested: Cell::new(false),
            deleting: None,
        })
    }

    /// Whether there is any hard state, conf state, log entry or snapshot.
    pub fn is_initialized(&self) -> bool {
        self.st.hs != HardState::default()
            || self.st.cs != ConfState::default()
            || !self.st.log.is_empty()
            || self.st.snapshot.is_some()
            || self.st.log.truncated.0 > 0
    }

    /// Bootstraps a brand-new group with `cs` (synced), like
    /// `MemStorage::initialize_with_conf_state`.
    pub fn initialize(&mut self, cs: ConfState) -> Result<(), WalError> {
        if self.is_initialized() {
            return Err(WalError::Invalid("storage is already initialized".into()));
        }
        self.set_conf_state(cs)?;
        self.sync()
    }

    /// Appends entries like `MemStorage::append`: an entry at an index `<= last_index`
    /// replaces that entry and everything after it. One `write`, no fsync.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), WalError> {
        let (Some(first), Some(last)) = (ents.first(), ents.last()) else {
            return Ok(());
        };
        if first.index < self.st.first_index() {
            return Err(WalError::Invalid(format!(
                "append at {} overwrites compacted entries (first index {})",
                first.index,
                self.st.first_index()
            )));
        }
        if first.index > self.st.last_index() + 1 {
            return Err(WalError::Invalid(format!(
                "append at {} leaves a gap after last index {}",
                first.index,
                self.st.last_index()
            )));
        }
        if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(WalError::Invalid(
                "appended entries are not contiguous".into(),
            ));
        }
        let at = self.put_record(|buf| record::put_entries(buf, ents))?;
        self.st.log.splice(ents, at);
        if let Some(seg) = self.segments.last_mut() {
            seg.max_index = seg.max_index.max(last.index);
        }
        if self.holding {
            return Ok(());
        }
        self.write_out()?;
        self.maybe_roll()
    }

    /// Until [`DiskStorage::flush`], [`DiskStorage::append`] and
    /// [`DiskStorage::set_hard_state`] keep their records in memory, so that the entries
    /// and the hard state of one Raft `Ready` reach the OS in one `write` (two `write`s
    /// per SET was a third of the syscalls of a client sending one request at a time).
    /// Nothing else changes: the records are written in the same order as without
    /// holding, any other record, [`DiskStorage::sync`] and [`DiskStorage::begin_sync`]
    /// write them first, and a write torn anywhere in them is a torn tail as before
    /// (replay keeps the whole records before the tear). The caller must flush before it
    /// relies on them being written: before it sends the messages that say they are
    /// persisted, or answers the writes they hold.
    pub fn hold_writes(&mut self) {
        self.holding = true;
    }

    /// Writes what [`DiskStorage::hold_writes`] held back, in one `write`, and stops
    /// holding.
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.holding = false;
        if self.buf.is_empty() {
            return Ok(());
        }
        self.write_out()?;
        self.maybe_roll()
    }

    /// Records the hard state in the WAL (no fsync).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), WalError> {
        if hs == self.st.hs {
            return Ok(());
        }
        self.put_record(|buf| record::put_hard_state(buf, &hs))?;
        if !self.holding {
            self.write_out()?;
        }
        self.st.hs = hs;
        Ok(())
    }

    /// Records the conf state in the WAL (no fsync).
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), WalError> {
        if cs == self.st.cs {
            return Ok(());
        }
        self.put_record(|buf| record::put_conf_state(buf, &cs))?;
        self.write_out()?;
        if self.st.first_cs.is_none() && cs != ConfState::default() {
            self.st.first_cs = Some(cs.clone());
        }
        self.st.cs = cs;
        Ok(())
    }

    /// Switches [`WalOptions::preallocate`] from the next append on: its gain is for an
    /// fdatasync per write; a log synced once a second only pays for writing each byte
    /// twice (a migration's drain into a group spent a seventh of the group's time
    /// writing zeros). Zeros written already stay, and replay takes them as the end.
    pub fn set_preallocate(&mut self, on: bool) {
        self.opts.preallocate = on;
    }

    /// Drops the entries `<= index` (the term of `index` is kept for [`Storage::term`]) and
    /// deletes the oldest segments whose entries are all `<= index` (never the active one).
    /// A no-op if `index` is already compacted; an error if `index > last_index`.
    pub fn compact(&mut self, index: u64) -> Result<(), WalError> {
        if index <= self.st.log.truncated.0 {
            return Ok(());
        }
        if index > self.st.last_index() {
            return Err(WalError::Invalid(format!(
                "compact to {index} beyond last index {}",
                self.st.last_index()
            )));
        }
        let term = self.st.log.term(index).ok_or_else(|| {
            WalError::Invalid(format!("compact to {index}: the entry is not held"))
        })?;
        self.put_record(|buf| record::put_compact(buf, index, term))?;
        self.write_out()?;
        self.st.log.compact(index, term);

        let dead = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.max_index <= index)
            .count();
        if dead > 0 {
            // Replay of the remaining segments relies on the Compact record.
            self.sync()?;
            let paths: Vec<PathBuf> = self.segments.drain(..dead).map(|s| s.path).collect();
            self.dir_unsynced = true;
            self.delete_in_background(paths);
        }
        Ok(())
    }

    /// The directory snapshot files live in (`<dir>/snap`).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.snap_dir.clone()
    }

    /// Records `file` (written by [`crate::SnapshotWriter`] into [`DiskStorage::snapshot_dir`])
    /// as the newest snapshot, durably, and deletes all but the 2 newest snapshot files.
    pub fn set_snapshot(&mut self, meta: SnapshotMetadata, file: &Path) -> Result<(), WalError> {
        self.record_snapshot(record::SNAP_CREATED, meta, file)
    }

    /// A snapshot from the leader was loaded by the application: like
    /// `MemStorage::apply_snapshot` (entries cleared, commit and term raised, conf state
    /// replaced), recorded durably as the newest snapshot.
    pub fn apply_snapshot(&mut self, meta: SnapshotMetadata, file: &Path) -> Result<(), WalError> {
        if self.st.first_index() > meta.index {
            return Err(WalError::SnapshotOutOfDate {
                index: meta.index,
                first_index: self.st.first_index(),
            });
        }
        self.record_snapshot(record::SNAP_APPLIED, meta, file)
    }

    fn record_snapshot(
        &mut self,
        kind: u8,
        meta: SnapshotMetadata,
        file: &Path,
    ) -> Result<(), WalError> {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| self.snap_dir.join(n).is_file())
            .ok_or_else(|| {
                WalError::Invalid(format!(
                    "snapshot {} is not a file in {}",
                    file.display(),
                    self.snap_dir.display()
                ))
            })?
            .to_owned();
        self.put_record(|buf| record::put_snapshot(buf, kind, &meta, &name))?;
        self.write_out()?;
        if kind == record::SNAP_APPLIED {
            self.st.apply_snapshot(&meta);
            // Every entry written so far is dead: old segments hold nothing live.
            for seg in &mut self.segments {
                seg.max_index = 0;
            }
        }
        self.st.snapshot = Some((meta, name));
        self.sync()?;
        self.prune_snapshots()
    }

    /// Keeps the 2 newest `*.snap` files (and always the recorded one).
    fn prune_snapshots(&mut self) -> Result<(), WalError> {
        let current = self.st.snapshot.as_ref().map(|(_, n)| n.as_str());
        let mut snaps: Vec<((u64, u64), PathBuf, String)> = list_dir(&self.snap_dir)?
            .into_iter()
            .filter_map(|(p, n)| parse_snap_name(&n).map(|(t, i)| ((i, t), p, n)))
            .collect();
        snaps.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        let mut removed = false;
        for (_, path, name) in snaps.into_iter().skip(2) {
            if Some(name.as_str()) != current {
                fs::remove_file(&path).map_err(WalError::io(&path))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.snap_dir)?;
        }
        Ok(())
    }

    /// The newest snapshot file and its metadata.
    pub fn snapshot_file(&self) -> Option<(SnapshotMetadata, PathBuf)> {
        let (meta, name) = self.st.snapshot.as_ref()?;
        Some((meta.clone(), self.snap_dir.join(name)))
    }

    /// Whether raft asked for a snapshot newer than the newest file (not yet taken).
    pub fn snapshot_requested(&self) -> bool {
        self.snapshot_requested.get()
    }

    /// Whether raft asked for a snapshot newer than the newest file since the last call.
    pub fn take_snapshot_request(&mut self) -> bool {
        self.snapshot_requested.replace(false)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.st.hs
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.st.cs
    }

    /// Number of entries held (after the compaction point).
    pub fn entries_len(&self) -> usize {
        self.st.log.len()
    }

    /// Drops from memory the payloads of the entries `<= index`: the owner has applied
    /// them. They stay in the WAL, and [`Storage::entries`] reads them back from there.
    pub fn release(&mut self, index: u64) {
        self.st.log.release(index);
    }

    /// Bytes the log holds in memory (see [`crate::held`]'s `HeldLog::memory_bytes`).
    pub fn memory_bytes(&self) -> u64 {
        self.st.log.memory_bytes()
    }

    /// Total size of the WAL segment files.
    pub fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, WalError> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).map_err(WalError::io(dir))? {
        let ent = ent.map_err(WalError::io(dir))?;
        if let Ok(name) = ent.file_name().into_string() {
            out.push((ent.path(), name));
        }
    }
    Ok(out)
}

impl Drop for DiskStorage {
    /// The deletions of the last compaction end before the directory can be opened again.
    fn drop(&mut self) {
        self.settle();
    }
}

impl Storage for DiskStorage {
    /// The conf state as of the newest snapshot (or of creation), not the latest one:
    /// Raft restarts from the snapshot's index and re-applies the membership changes
    /// committed after it, so it must start from the configuration they were made
    /// against (re-applying "enter joint" to a joint configuration is an error).
    fn initial_state(&self) -> raft::Result<RaftState> {
        let cs = match &self.st.snapshot {
            Some((meta, _)) => meta.get_conf_state().clone(),
            None => self.st.first_cs.clone().unwrap_or_default(),
        };
        Ok(RaftState::new(self.st.hs.clone(), cs))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.st.first_index();
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.st.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low == high {
            return Ok(Vec::new());
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        // Reading a released entry back fails only if the WAL file did (raft-rs treats
        // any error but Compacted and Unavailable as fatal, as a failed append is).
        Ok(self.st.log.entries(low, high, max, &self.wal_dir)?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (t_index, t_term) = self.st.log.truncated;
        if idx == t_index {
            return Ok(t_term);
        }
        if idx < t_index {
            // Like MemStorage, the snapshot's own index keeps its term (0 for "no snapshot").
            let snap = self
                .st
                .snapshot
                .as_ref()
                .map_or((0, 0), |(m, _)| (m.index, m.term));
            if idx == snap.0 {
                return Ok(snap.1);
            }
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.st.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.st
            .log
            .term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.st.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.st.last_index())
    }

    /// The newest snapshot file, `data` = its file name in [`DiskStorage::snapshot_dir`].
    /// The newest snapshot, if it is recent enough and its membership includes `to` (a
    /// replica just added must find itself in the snapshot it starts from, or raft-rs
    /// ignores it); otherwise a new one is asked for.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let knows = |cs: &ConfState| {
            cs.voters.contains(&to)
                || cs.learners.contains(&to)
                || cs.voters_outgoing.contains(&to)
                || cs.learners_next.contains(&to)
        };
        match &self.st.snapshot {
            Some((meta, name))
                if meta.index >= request_index && (to == 0 || knows(meta.get_conf_state())) =>
            {
                let mut snap = Snapshot::default();
                snap.set_metadata(meta.clone());
                snap.data = name.clone().into_bytes().into();
                Ok(snap)
            }
            _ => {
                self.snapshot_requested.set(true);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names() {
        assert_eq!(parse_snap_name("3-42.snap"), Some((3, 42)));
        assert_eq!(parse_snap_name("3-42.snap.tmp"), None);
        assert_eq!(parse_snap_name("x-42.snap"), None);
    }
}
