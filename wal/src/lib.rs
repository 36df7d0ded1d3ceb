//! Kelvin's durable Raft storage: a segmented write-ahead log implementing
//! [`raft::Storage`], plus self-validating snapshot files.
//!
//! # Layout
//!
//! ```text
//! <dir>/wal/00000000000000000001.log   segments, named by a 20-digit index (see below)
//! <dir>/wal/00000000000000052113.log   the newest segment is the active one (appended to)
//! <dir>/snap/<term>-<index>.snap        snapshot files (the 2 newest are kept)
//! <dir>/snap/<term>-<index>.snap.tmp    snapshot being written (deleted on open)
//! ```
//!
//! A segment is named after `last_index + 1` at the time it was created (or the previous
//! segment's name + 1 if that is larger, so names always increase). Segments are replayed
//! in name order.
//!
//! # Records
//!
//! A segment is a sequence of records, nothing else (no file header):
//!
//! ```text
//! record   = len:u32le  crc:u32le  type:u8  payload[len]
//!            crc = CRC32 (IEEE, crc32fast) of type + payload
//! type 1   Entries    = (n:u32le  eraftpb.Entry[n])*      a batch of consecutive entries; a batch whose
//!                                                         first index <= last index replaces that suffix
//! type 2   HardState  = eraftpb.HardState
//! type 3   ConfState  = eraftpb.ConfState
//! type 4   Snapshot   = kind:u8  n:u32le  eraftpb.SnapshotMetadata[n]  file-name (utf8, rest)
//!                       kind 0: newest snapshot file (set_snapshot); the log is unchanged
//!                       kind 1: snapshot applied from the leader: entries cleared, commit = index
//! type 5   Compact    = index:u64le  term:u64le           entries <= index were dropped
//! ```
//!
//! Every segment starts with the full state (HardState, ConfState, Snapshot kind 0 if any,
//! Compact), so any prefix of segments can be deleted once all its entries are compacted.
//!
//! A segment may end in zeros: with [`WalOptions::preallocate`] (the default) the log keeps
//! [`ZERO_AHEAD`] bytes of zeros written after its last record, so appends overwrite blocks
//! the file already has. No record starts with a zero header (types start at 1): replay
//! stops at the first offset from which the rest of the file is zeros.
//!
//! On open, the log is replayed. A damaged *last* record of the *last* segment (cut short,
//! or a bad CRC, with nothing or only zeros after it) is a torn write: it is
//! truncated off with a warning. Any other damage is [`WalError::Corrupt`] naming file and
//! offset; committed entries are never dropped silently.
//!
//! # Durability contract
//!
//! * [`DiskStorage::append`], [`DiskStorage::set_hard_state`] and
//!   [`DiskStorage::set_conf_state`] hand the record to the OS with a single `write` and do
//!   **not** fsync: after a process crash the data is there, after a power loss it may not be.
//!   Between [`DiskStorage::hold_writes`] and [`DiskStorage::flush`], `append` and
//!   `set_hard_state` leave their records in memory and the flush writes them all with one
//!   `write` (a Raft `Ready`'s entries and hard state); a crash before the flush loses
//!   them as a crash before their writes did.
//! * [`DiskStorage::sync`] makes everything written so far durable (`fdatasync` of the active
//!   segment, `fsync` of the WAL directory if segments were created or deleted). Raft requires
//!   entries and hard state to be synced before messages of the same `Ready` are sent.
//! * Rolling to a new segment fdatasyncs the old one first, so only the last segment can
//!   ever have a torn tail.
//! * [`DiskStorage::initialize`], [`DiskStorage::compact`] (when it deletes segments),
//!   [`DiskStorage::set_snapshot`] and [`DiskStorage::apply_snapshot`] sync before returning.
//!   The segments a compaction drops are deleted after its record is durable, on a thread
//!   of their own, oldest first ([`DiskStorage::settle`] waits for it, as dropping the
//!   storage does): a crash meanwhile leaves a suffix of them, which replay rebases over.
//!
//! # Differences from `raft::storage::MemStorage`
//!
//! * [`DiskStorage::compact`]`(i)` drops entries `<= i` (MemStorage's `compact(i + 1)`), and
//!   `term(i)` keeps answering afterwards, as the [`raft::Storage::term`] contract asks.
//!   Compacting the whole log keeps `first_index = i + 1` (MemStorage falls back to its
//!   snapshot index).
//! * [`raft::Storage::snapshot`] returns the newest snapshot *file* (`data` = its file name)
//!   or `SnapshotTemporarilyUnavailable` plus [`DiskStorage::take_snapshot_request`].
//! * Contract violations (gaps, overwriting compacted entries) are [`WalError::Invalid`]
//!   instead of panics.
//!
//! # Snapshot files
//!
//! ```text
//! "KLVSNAP1"
//! header   = len:u32le  crc:u32le  eraftpb.SnapshotMetadata[len]      crc of the metadata bytes
//! chunk*   = len:u32le  crc:u32le  bytes[len]                          len < 0xFFFF_FFFF, crc of bytes
//! trailer  = 0xFFFF_FFFF:u32le  chunks:u64le  crc:u32le                crc of every preceding byte
//! ```
//!
//! Written by [`SnapshotWriter`] (tmp file, fsync, rename, fsync dir), verified completely by
//! [`SnapshotReader::open`], so a file copied byte for byte from a leader validates itself.

mod held;
mod record;
mod snapshot;
mod storage;

use std::path::PathBuf;

pub use snapshot::{snapshot_file_name, SnapshotReader, SnapshotWriter};
pub use storage::{DiskStorage, PendingSync, WalOptions, ZERO_AHEAD};

/// Errors of the WAL and snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt file {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The caller broke the storage contract (gap in the log, overwriting compacted entries…).
    #[error("invalid WAL operation: {0}")]
    Invalid(String),
    #[error("snapshot at index {index} is older than the first log index {first_index}")]
    SnapshotOutOfDate { index: u64, first_index: u64 },
    #[error("the WAL names snapshot file {} as newest, but it does not exist", path.display())]
    MissingSnapshot { path: PathBuf },
    #[error("protobuf encoding failed: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    /// An earlier write failed part way; the in-memory state may no longer match the file.
    #[error("WAL is unusable after an earlier write failure; reopen it")]
    Poisoned,
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { path, source }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: usize,
        reason: impl Into<String>,
    ) -> Self {
        WalError::Corrupt {
            file: file.into(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

impl From<WalError> for raft::Error {
    fn from(e: WalError) -> raft::Error {
        let se = match e {
            WalError::SnapshotOutOfDate { .. } => raft::StorageError::SnapshotOutOfDate,
            e => raft::StorageError::Other(Box::new(e)),
        };
        raft::Error::Store(se)
    }
}
