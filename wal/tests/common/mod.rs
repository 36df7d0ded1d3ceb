#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kelvin_wal::{DiskStorage, SnapshotWriter, WalOptions};
use raft::eraftpb::{ConfState, Entry, SnapshotMetadata};

/// An entry whose data length varies with the index (exercises max_size).
pub fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: vec![index as u8; (index % 7 * 9) as usize].into(),
        ..Default::default()
    }
}

pub fn ents(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| ent(i, term)).collect()
}

pub fn meta(index: u64, term: u64, voters: &[u64]) -> SnapshotMetadata {
    let mut m = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    m.set_conf_state(ConfState::from((voters.to_vec(), vec![])));
    m
}

/// Writes a snapshot file with a couple of chunks into `dir`.
pub fn write_snapshot(dir: &Path, meta: &SnapshotMetadata) -> PathBuf {
    let mut w = SnapshotWriter::create(dir, meta).unwrap();
    w.write_chunk(b"state machine part one").unwrap();
    w.write_chunk(&meta.index.to_le_bytes()).unwrap();
    w.finish().unwrap()
}

pub fn open(dir: &Path) -> DiskStorage {
    DiskStorage::open(dir, WalOptions::default()).unwrap()
}

pub fn open_small(dir: &Path, segment_bytes: u64) -> DiskStorage {
    DiskStorage::open(
        dir,
        WalOptions {
            segment_bytes,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Sorted segment files of a storage directory.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
