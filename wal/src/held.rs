//! What [`crate::DiskStorage`] holds of its log in memory: the term and WAL location of
//! every entry after the compaction point, and the payloads of only the newest ones.
//!
//! How it fits: Raft reads entries back for two reasons, to apply committed ones and to
//! send them to followers. Both want recent entries, so the suffix that is not applied
//! yet stays resident; once the owner has applied an entry it calls
//! [`HeldLog::release`] and the payload is dropped. A later read of a released entry (a
//! lagging follower, or a new leader catching one up) reads its batch back from the WAL
//! segment, which already holds it: `append` writes the record before the entry is held.
//! So the log costs memory for what is in flight, not for everything since the last
//! snapshot (up to the snapshot threshold: 64 MiB per group by default).
//!
//! ```text
//! index:     first_index ........ resident_from ........ last_index
//! held:      [term, location] for every entry
//! resident:                       [Entry with payload]   (not applied yet)
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use raft::eraftpb::Entry;

use crate::record::{self, Record};
use crate::WalError;

/// Where an entry's batch lies in the WAL: the segment (by name) and the offset of the
/// record that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u64,
    pub offset: u64,
}

/// What is kept of every held entry, payload or not.
#[derive(Debug, Clone, Copy)]
struct Held {
    term: u64,
    at: Location,
}

/// The entries after the compaction point. Invariants: `held[i]` is entry
/// `truncated.0 + 1 + i`; `resident` is the suffix of the log from `resident_from()` on.
#[derive(Default)]
pub(crate) struct HeldLog {
    /// Index and term of the entry just before the first one held (0, 0 if none dropped).
    pub truncated: (u64, u64),
    held: Vec<Held>,
    resident: VecDeque<Entry>,
    /// Payload bytes (`data` and `context`) of the resident entries.
    resident_bytes: u64,
}

fn payload_len(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64
}

impl HeldLog {
    pub fn first_index(&self) -> u64 {
        self.truncated.0 + 1
    }

    pub fn last_index(&self) -> u64 {
        self.truncated.0 + self.held.len() as u64
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The first entry whose payload is in memory (`last_index + 1` if none).
    pub fn resident_from(&self) -> u64 {
        self.last_index() + 1 - self.resident.len() as u64
    }

    /// Bytes this log holds in memory: payloads of resident entries and their structs,
    /// and the term and location of every entry.
    pub fn memory_bytes(&self) -> u64 {
        self.resident_bytes
            + (self.resident.capacity() * std::mem::size_of::<Entry>()) as u64
            + (self.held.capacity() * std::mem::size_of::<Held>()) as u64
    }

    /// The term of a held entry.
    pub fn term(&self, index: u64) -> Option<u64> {
        let i = index.checked_sub(self.first_index())?;
        self.held.get(usize::try_from(i).ok()?).map(|h| h.term)
    }

    /// Drops every entry, leaving `truncated` as given.
    pub fn reset(&mut self, truncated: (u64, u64)) {
        self.held.clear();
        self.resident.clear();
        self.resident_bytes = 0;
        self.truncated = truncated;
    }

    /// Places `ents` (contiguous, `first_index <= ents[0].index <= last_index + 1`), all
    /// in the record at `at`; they are resident.
    pub fn splice(&mut self, ents: &[Entry], at: Location) {
        let from = ents[0].index;
        let resident_from = self.resident_from();
        if from < resident_from {
            self.resident.clear();
            self.resident_bytes = 0;
        } else {
            let keep = (from - resident_from) as usize;
            for e in self.resident.drain(keep..) {
                self.resident_bytes -= payload_len(&e);
            }
        }
        self.held.truncate((from - self.first_index()) as usize);
        for e in ents {
            self.held.push(Held { term: e.term, at });
            self.resident_bytes += payload_len(e);
            self.resident.push_back(e.clone());
        }
    }

    /// Drops entries `<= index`; `term` is the term of `index`.
    pub fn compact(&mut self, index: u64, term: u64) {
        let n = usize::try_from(index.saturating_sub(self.truncated.0))
            .unwrap_or(usize::MAX)
            .min(self.held.len());
        self.release(index);
        self.held.drain(..n);
        self.truncated = (index, term);
    }

    /// Drops the payloads of entries `<= index` (they stay readable from the WAL).
    pub fn release(&mut self, index: u64) {
        let n = usize::try_from(index.saturating_add(1).saturating_sub(self.resident_from()))
            .unwrap_or(usize::MAX)
            .min(self.resident.len());
        for e in self.resident.drain(..n) {
            self.resident_bytes -= payload_len(&e);
        }
        if self.resident.is_empty() && self.resident.capacity() > 0 {
            // The batch just applied may have been large: give its slots back.
            self.resident.shrink_to(RESIDENT_SLOTS_KEPT);
        }
    }

    /// Entries `low..high` (held, `low < high`), as many as `max` bytes allow (at least
    /// one, as `raft::util::limit_size`): released ones read from the segments in
    /// `wal_dir`, resident ones cloned.
    pub fn entries(
        &self,
        low: u64,
        high: u64,
        max: u64,
        wal_dir: &Path,
    ) -> Result<Vec<Entry>, WalError> {
        let mut out = Vec::new();
        let mut size = 0u64;
        // Adds `e` if the size limit allows; false once it does not.
        let mut push = |out: &mut Vec<Entry>, e: Entry| {
            size += u64::from(protobuf::Message::compute_size(&e));
            if !out.is_empty() && size > max {
                return false;
            }
            out.push(e);
            true
        };
        let resident_from = self.resident_from();
        let mut next = low;
        while next < high.min(resident_from) {
            let held = self.held[(next - self.first_index()) as usize];
            let bound = high.min(resident_from);
            for e in read_batch(wal_dir, held.at)? {
                if e.index < next {
                    continue;
                }
                // Past the range, or overwritten later by a batch of another record.
                if e.index >= bound
                    || self.held[(e.index - self.first_index()) as usize].at != held.at
                {
                    break;
                }
                if e.index != next || Some(e.term) != self.term(e.index) {
                    return Err(WalError::corrupt(
                        segment_path(wal_dir, held.at.segment),
                        held.at.offset as usize,
                        format!("entry {next} is not in the batch the log recorded"),
                    ));
                }
                if !push(&mut out, e) {
                    return Ok(out);
                }
                next += 1;
            }
            if next < bound && self.held[(next - self.first_index()) as usize].at == held.at {
                return Err(WalError::corrupt(
                    segment_path(wal_dir, held.at.segment),
                    held.at.offset as usize,
                    format!("entry {next} is missing from its batch"),
                ));
            }
        }
        let skip = (next.max(resident_from) - resident_from) as usize;
        for e in self.resident.iter().skip(skip).take((high - next) as usize) {
            if !push(&mut out, e.clone()) {
                break;
            }
        }
        Ok(out)
    }
}

/// Slots of the resident queue kept allocated when it empties (a typical batch).
const RESIDENT_SLOTS_KEPT: usize = 64;

pub(crate) fn segment_path(wal_dir: &Path, name: u64) -> std::path::PathBuf {
    wal_dir.join(format!("{name:020}.log"))
}

/// Reads and checks the entries record at `at`.
fn read_batch(wal_dir: &Path, at: Location) -> Result<Vec<Entry>, WalError> {
    let path = segment_path(wal_dir, at.segment);
    let file = File::open(&path).map_err(WalError::io(&path))?;
    let mut header = [0u8; record::HEADER_LEN];
    file.read_exact_at(&mut header, at.offset)
        .map_err(WalError::io(&path))?;
    let bad = |reason: String| WalError::corrupt(&path, at.offset as usize, reason);
    let len = record::le_u32(&header, 0).ok_or_else(|| bad("short header".into()))?;
    let crc = record::le_u32(&header, 4).ok_or_else(|| bad("short header".into()))?;
    let mut body = vec![0u8; 1 + len as usize];
    body[0] = header[8];
    file.read_exact_at(&mut body[1..], at.offset + record::HEADER_LEN as u64)
        .map_err(WalError::io(&path))?;
    let actual = crc32fast::hash(&body);
    if actual != crc {
        return Err(bad(format!(
            "CRC mismatch reading entries back (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    match record::decode(body[0], &body[1..]).map_err(bad)? {
        Record::Entries(ents) => Ok(ents),
        _ => Err(bad("not an entries record".into())),
    }
}
