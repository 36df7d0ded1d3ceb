//! Crash recovery: torn tails, corruption, segment roll and deletion, snapshot files.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use kelvin_wal::{DiskStorage, SnapshotReader, SnapshotWriter, WalError, WalOptions};
use raft::eraftpb::{ConfState, HardState};
use raft::{GetEntriesContext, Storage, StorageError};

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else {
            fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn all_entries(s: &DiskStorage) -> Vec<raft::eraftpb::Entry> {
    let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap() + 1);
    s.entries(lo, hi, None, GetEntriesContext::empty(false))
        .unwrap()
}

/// Runs `f` with a subscriber capturing log output as text.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

struct Torn {
    dir: tempfile::TempDir,
    seg: PathBuf,
    header: u64,
    last_start: u64,
    end: u64,
    preallocate: bool,
}

impl Torn {
    /// The segment as a crash during the write of its bytes from `cut` on leaves it: cut
    /// short, or (preallocated) with zeros from there on.
    fn cut(&self, seg: &Path, cut: u64) {
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        if self.preallocate {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&vec![0; (self.end - cut) as usize], cut)
                .unwrap();
        } else {
            f.set_len(cut).unwrap();
        }
    }
}

fn torn_opts(preallocate: bool) -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        preallocate,
    }
}

/// One segment: header, entries 1..=5, hard state (commit 3), entries 6..=8 (last record);
/// written to a 4 KiB preallocated segment or one that grows as written.
fn torn_setup(preallocate: bool) -> Torn {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), torn_opts(preallocate)).unwrap();
    let header = s.log_bytes();
    s.append(&ents(1..=5, 1)).unwrap();
    let hs = HardState {
        term: 1,
        commit: 3,
        ..Default::default()
    };
    s.set_hard_state(hs).unwrap();
    let last_start = s.log_bytes();
    s.append(&ents(6..=8, 1)).unwrap();
    let end = s.log_bytes();
    s.sync().unwrap();
    drop(s);
    let seg = segments(dir.path()).remove(0);
    let data = fs::read(&seg).unwrap();
    if preallocate {
        // At least half of 4 KiB of zeros ahead (the segment size caps ZERO_AHEAD).
        assert!(data.len() as u64 >= end + 2048, "{} {end}", data.len());
        assert!(data[end as usize..].iter().all(|&b| b == 0));
    } else {
        assert_eq!(data.len() as u64, end);
    }
    Torn {
        dir,
        seg,
        header,
        last_start,
        end,
        preallocate,
    }
}

#[test]
fn torn_tail_is_truncated_at_every_offset() {
    for preallocate in [false, true] {
        torn_tail_is_truncated_at_every_offset_of(torn_setup(preallocate));
    }
}

fn torn_tail_is_truncated_at_every_offset_of(t: Torn) {
    let data = fs::read(&t.seg).unwrap();
    for cut in t.last_start..t.end {
        if t.preallocate && data[cut as usize..t.end as usize].iter().all(|&b| b == 0) {
            continue; // zeroing zeros loses nothing
        }
        let copy = tempfile::tempdir().unwrap();
        copy_dir(t.dir.path(), copy.path());
        let seg = copy.path().join("wal").join(t.seg.file_name().unwrap());
        t.cut(&seg, cut);

        let (s, logs) = capture_logs(|| DiskStorage::open(copy.path(), torn_opts(t.preallocate)));
        let mut s = s.unwrap();
        assert_eq!(
            s.last_index().unwrap(),
            5,
            "cut at {cut}, preallocated {}",
            t.preallocate
        );
        assert_eq!(all_entries(&s), ents(1..=5, 1));
        assert_eq!(s.hard_state().commit, 3);
        if cut > t.last_start {
            assert!(logs.contains("torn tail"), "{logs}");
            assert!(logs.contains(&seg.display().to_string()), "{logs}");
            assert!(logs.contains(&format!("offset={}", t.last_start)), "{logs}");
        }
        s.append(&ents(6..=7, 2)).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(copy.path(), torn_opts(t.preallocate)).unwrap();
        assert_eq!(all_entries(&s), [ents(1..=5, 1), ents(6..=7, 2)].concat());
    }
}

/// Entries and a hard state held back and flushed together ([`DiskStorage::hold_writes`])
/// are one write: nothing reaches the file before the flush, and a crash that tears that
/// write anywhere leaves a prefix of its records (none, the entries, or both).
#[test]
fn held_records_go_out_in_one_write_and_tear_as_records() {
    for preallocate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path(), torn_opts(preallocate)).unwrap();
        let start = s.log_bytes();
        let seg = segments(dir.path()).remove(0);
        let file_before = fs::read(&seg).unwrap();
        s.hold_writes();
        s.append(&ents(1..=4, 1)).unwrap();
        let hs = HardState {
            term: 1,
            commit: 4,
            ..Default::default()
        };
        s.set_hard_state(hs.clone()).unwrap();
        // Held: the log answers with them, the file does not have them yet.
        assert_eq!((s.last_index().unwrap(), s.hard_state()), (4, &hs));
        assert_eq!(
            (s.log_bytes(), fs::read(&seg).unwrap()),
            (start, file_before)
        );
        assert!(s.has_unsynced());
        s.flush().unwrap();
        let end = s.log_bytes();
        assert!(end > start);
        // Not holding any more: the next hard state goes out at once.
        let hs2 = HardState {
            commit: 3,
            ..hs.clone()
        };
        s.set_hard_state(hs2.clone()).unwrap();
        let after = s.log_bytes();
        assert!(after > end);
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path(), torn_opts(preallocate)).unwrap();
        assert_eq!(all_entries(&s), ents(1..=4, 1));
        assert_eq!(s.hard_state(), &hs2);
        drop(s);
        let t = Torn {
            dir,
            seg,
            header: start,
            last_start: start,
            end: after,
            preallocate,
        };
        let mut seen = std::collections::BTreeSet::new();
        for cut in start..=end {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(t.dir.path(), copy.path());
            let seg = copy.path().join("wal").join(t.seg.file_name().unwrap());
            // (What came after the flush's write is gone too: the crash came during it.)
            t.cut(&seg, cut);
            let (s, _) = capture_logs(|| DiskStorage::open(copy.path(), torn_opts(preallocate)));
            let s = s.unwrap();
            let got = (s.last_index().unwrap(), s.hard_state().commit);
            assert!(
                [(0, 0), (4, 0), (4, 4)].contains(&got),
                "cut at {cut} of {start}..{end}: {got:?}"
            );
            if got.0 == 4 {
                assert_eq!(all_entries(&s), ents(1..=4, 1));
            }
            seen.insert(got);
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}

#[test]
fn bad_crc_on_last_record_is_torn() {
    for preallocate in [false, true] {
        let t = torn_setup(preallocate);
        let mut data = fs::read(&t.seg).unwrap();
        data[t.end as usize - 1] ^= 0x40;
        fs::write(&t.seg, data).unwrap();
        let s = open(t.dir.path());
        assert_eq!(s.last_index().unwrap(), 5, "preallocated {preallocate}");
    }
}

#[test]
fn zeros_after_the_last_record_are_the_end() {
    let t = torn_setup(false);
    let mut f = OpenOptions::new().append(true).open(&t.seg).unwrap();
    f.write_all(&[0; 100]).unwrap();
    drop(f);
    let (s, logs) = capture_logs(|| open(t.dir.path()));
    assert_eq!(all_entries(&s), ents(1..=8, 1));
    assert!(!logs.contains("torn tail"), "{logs}");
    // A preallocated segment reopened is written on from the end of its records.
    let t = torn_setup(true);
    let mut s = DiskStorage::open(t.dir.path(), torn_opts(true)).unwrap();
    s.append(&ents(9..=9, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, logs) = capture_logs(|| open(t.dir.path()));
    assert_eq!(all_entries(&s), ents(1..=9, 1));
    assert!(!logs.contains("torn tail"), "{logs}");
}

#[test]
fn bad_crc_before_the_tail_is_corruption() {
    let t = torn_setup(true);
    let mut data = fs::read(&t.seg).unwrap();
    data[t.header as usize + 20] ^= 0x01; // inside the 1..=5 batch
    fs::write(&t.seg, data).unwrap();
    let err = DiskStorage::open(t.dir.path(), WalOptions::default())
        .err()
        .expect("must not open");
    match &err {
        WalError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &t.seg);
            assert_eq!(*offset, t.header);
        }
        e => panic!("unexpected {e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&t.seg.display().to_string()) && msg.contains(&format!("offset {}", t.header)),
        "{msg}"
    );
    // Garbage (not zeros) after a bad record is not a torn tail either.
    let t = torn_setup(true);
    let mut data = fs::read(&t.seg).unwrap();
    data[t.last_start as usize + 12] ^= 0x01;
    data.extend_from_slice(b"garbage");
    fs::write(&t.seg, data).unwrap();
    assert!(matches!(
        DiskStorage::open(t.dir.path(), WalOptions::default()),
        Err(WalError::Corrupt { offset, .. }) if offset == t.last_start
    ));
}

#[test]
fn damaged_older_segment_is_corruption_not_a_torn_tail() {
    for preallocate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_bytes: 512,
            preallocate,
        };
        let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
        for i in 0..20 {
            s.append(&ents(i * 5 + 1..=i * 5 + 5, 1)).unwrap();
        }
        drop(s);
        let segs = segments(dir.path());
        assert!(segs.len() > 2);
        // The oldest segment loses its last byte: cut off, or zero in its preallocated tail.
        let data = fs::read(&segs[0]).unwrap();
        let end = records_end(&data);
        let f = OpenOptions::new().write(true).open(&segs[0]).unwrap();
        if preallocate {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&[0], end - 1).unwrap();
        } else {
            f.set_len(end - 1).unwrap();
        }
        drop(f);
        match DiskStorage::open(dir.path(), opts) {
            Err(WalError::Corrupt { file, .. }) => assert_eq!(file, segs[0]),
            Err(e) => panic!("preallocated {preallocate}: unexpected {e}"),
            Ok(_) => panic!("preallocated {preallocate}: opened a log with a hole"),
        }
    }
}

/// Where the records of a segment end: the first header of zeros, or the end of the file.
fn records_end(data: &[u8]) -> u64 {
    let mut off = 0;
    while off + 9 <= data.len() && data[off..off + 9].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        off += 9 + len;
    }
    off as u64
}

/// A log of entries 1..=500 (term 1) in segments of 1 KiB, synced: a few dozen segments.
fn rolled_log(dir: &Path) -> DiskStorage {
    let mut s = open_small(dir, 1024);
    for i in 0..100 {
        s.append(&ents(i * 5 + 1..=i * 5 + 5, 1)).unwrap();
    }
    s.sync().unwrap();
    s
}

#[test]
fn segments_roll_and_compaction_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = rolled_log(dir.path());
    let before = segments(dir.path()).len();
    let bytes = s.log_bytes();
    assert!(before > 10, "{before} segments");
    s.compact(400).unwrap();
    // The segments go on a thread of their own; settle waits for it.
    s.settle();
    assert_eq!(s.first_index().unwrap(), 401);
    assert_eq!(s.term(400).unwrap(), 1);
    assert_eq!(s.entries_len(), 100);
    let after = segments(dir.path()).len();
    assert!(after < before / 3, "{before} -> {after}");
    assert!(s.log_bytes() < bytes / 3);
    assert_eq!(
        s.entries(400, 401, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    drop(s);

    let mut s = open_small(dir.path(), 1024);
    assert_eq!(s.first_index().unwrap(), 401);
    assert_eq!(all_entries(&s), ents(401..=500, 1));
    assert_eq!(s.term(400).unwrap(), 1);
    s.append(&ents(450..=600, 2)).unwrap();
    s.compact(590).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = open_small(dir.path(), 1024);
    assert_eq!(all_entries(&s), ents(591..=600, 2));
    assert!(segments(dir.path()).len() <= 3);
}

#[test]
fn a_storage_dropped_right_after_a_compaction_opens_again_at_once() {
    // The compacted segments are deleted on a thread of their own: dropping the storage
    // waits for it, so the next open never replays a segment that vanishes under it.
    let dir = tempfile::tempdir().unwrap();
    let mut s = rolled_log(dir.path());
    let before = segments(dir.path()).len();
    s.compact(450).unwrap();
    drop(s);
    let after = segments(dir.path()).len();
    assert!(after < before / 3, "{before} -> {after}");
    let s = open_small(dir.path(), 1024);
    assert_eq!(s.first_index().unwrap(), 451);
    assert_eq!(all_entries(&s), ents(451..=500, 1));
}

#[test]
fn append_contract_violations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&ents(1..=10, 1)).unwrap();
    s.compact(5).unwrap();
    assert!(matches!(
        s.append(&ents(3..=4, 1)),
        Err(WalError::Invalid(_))
    ));
    assert!(matches!(
        s.append(&ents(12..=13, 1)),
        Err(WalError::Invalid(_))
    ));
    assert!(matches!(s.compact(11), Err(WalError::Invalid(_))));
    let mut gap = ents(11..=12, 1);
    gap[1].index = 13;
    assert!(matches!(s.append(&gap), Err(WalError::Invalid(_))));
    assert!(s.initialize(Default::default()).is_err());
    assert_eq!(s.last_index().unwrap(), 10);
}

#[test]
fn initialize_and_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    assert!(!s.is_initialized());
    assert!(!s.initial_state().unwrap().initialized());
    s.initialize(raft::eraftpb::ConfState::from((vec![1, 2, 3], vec![])))
        .unwrap();
    assert!(!s.has_unsynced());
    drop(s);
    let s = open(dir.path());
    assert!(s.is_initialized());
    assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
    assert!(s.initial_state().unwrap().initialized());
}

fn small_snapshot(dir: &Path) -> PathBuf {
    let mut w = SnapshotWriter::create(dir, &meta(42, 3, &[1, 2])).unwrap();
    w.write_chunk(b"hello").unwrap();
    w.write_chunk(b"").unwrap();
    w.write_chunk(b"world!").unwrap();
    w.finish().unwrap()
}

#[test]
fn snapshot_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 300_000];
    let mut w = SnapshotWriter::create(dir.path(), &meta(42, 3, &[1, 2])).unwrap();
    w.write_chunk(b"hello").unwrap();
    w.write_chunk(&big).unwrap();
    let path = w.finish().unwrap();
    assert_eq!(path, dir.path().join("3-42.snap"));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "tmp file left behind"
    );
    let r = SnapshotReader::open(&path).unwrap();
    assert_eq!(r.meta(), &meta(42, 3, &[1, 2]));
    let chunks: Vec<&[u8]> = r.chunks().collect();
    assert_eq!(chunks, vec![&b"hello"[..], &big[..]]);
}

#[test]
fn snapshot_file_truncated_or_flipped_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_snapshot(dir.path());
    let data = fs::read(&path).unwrap();
    assert_eq!(SnapshotReader::open(&path).unwrap().chunks().count(), 3);
    let bad = dir.path().join("bad.snap");
    let check = |bytes: &[u8], what: String| match write_and_open(&bad, bytes) {
        Err(WalError::Corrupt { file, .. }) => assert_eq!(file, bad, "{what}"),
        Err(e) => panic!("{what}: unexpected {e}"),
        Ok(_) => panic!("{what}: accepted"),
    };
    for cut in 0..data.len() {
        check(&data[..cut], format!("cut at {cut}"));
    }
    for i in 0..data.len() {
        for bit in [0x01, 0x80] {
            let mut d = data.clone();
            d[i] ^= bit;
            check(&d, format!("flip {bit:#x} at {i}"));
        }
    }
    let mut d = data.clone();
    d.push(0);
    check(&d, "extra byte".into());
}

/// Writes `bytes` to `path` and opens it.
fn write_and_open(path: &Path, bytes: &[u8]) -> Result<SnapshotReader, WalError> {
    fs::write(path, bytes).unwrap();
    SnapshotReader::open(path)
}

#[test]
fn snapshot_records_pruning_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&ents(1..=30, 1)).unwrap();
    assert!(matches!(
        s.snapshot(1, 2),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert!(s.take_snapshot_request());
    assert!(!s.take_snapshot_request());
    for i in [10, 20, 30] {
        let m = meta(i, 1, &[1, 2]);
        let f = write_snapshot(&s.snapshot_dir(), &m);
        s.set_snapshot(m, &f).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(s.snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["1-20.snap", "1-30.snap"]);
    let snap = s.snapshot(25, 2).unwrap();
    assert_eq!(snap.get_metadata(), &meta(30, 1, &[1, 2]));
    assert_eq!(&snap.data[..], b"1-30.snap");
    assert!(!s.take_snapshot_request());
    // A replica the snapshot's membership does not know (just added) needs a newer one:
    // raft-rs would ignore this one.
    assert!(s.snapshot(25, 3).is_err());
    assert!(s.take_snapshot_request());
    assert!(s.snapshot(31, 2).is_err());
    assert!(s.take_snapshot_request());
    // The log is untouched by set_snapshot.
    assert_eq!(s.first_index().unwrap(), 1);
    let (m, path) = s.snapshot_file().unwrap();
    drop(s);

    // A leftover tmp file is removed on open; the record survives.
    fs::write(dir.path().join("snap/1-40.snap.tmp"), b"partial").unwrap();
    let s = open(dir.path());
    assert_eq!(s.snapshot_file(), Some((m, path.clone())));
    assert!(!dir.path().join("snap/1-40.snap.tmp").exists());
    drop(s);

    fs::remove_file(&path).unwrap();
    assert!(matches!(
        DiskStorage::open(dir.path(), WalOptions::default()),
        Err(WalError::MissingSnapshot { .. })
    ));
}

#[test]
fn apply_snapshot_is_durable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&ents(1..=10, 1)).unwrap();
    let m = meta(50, 4, &[1, 2, 3]);
    let f = write_snapshot(&s.snapshot_dir(), &m);
    s.apply_snapshot(m.clone(), &f).unwrap();
    assert!(!s.has_unsynced());
    let old = meta(40, 4, &[1]);
    let f_old = write_snapshot(&s.snapshot_dir(), &old);
    assert!(matches!(
        s.apply_snapshot(old, &f_old),
        Err(WalError::SnapshotOutOfDate { .. })
    ));
    let elsewhere = tempfile::tempdir().unwrap();
    let f2 = write_snapshot(elsewhere.path(), &meta(60, 4, &[1]));
    assert!(matches!(
        s.apply_snapshot(meta(60, 4, &[1]), &f2),
        Err(WalError::Invalid(_))
    ));
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (51, 50)
    );
    assert_eq!(s.term(50).unwrap(), 4);
    assert_eq!(s.hard_state().commit, 50);
    assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
    assert_eq!(s.snapshot_file().unwrap().1, f);
}

/// Raft restarts from the newest snapshot (or from creation) and re-applies the
/// membership changes committed after it: `initial_state` must give the membership as of
/// that point, not the latest one (re-entering a joint configuration from a joint one is
/// an error in raft-rs, and would stop the group at every restart).
#[test]
fn initial_state_gives_the_membership_replay_starts_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.initialize(ConfState::from((vec![1, 2, 3], vec![])))
        .unwrap();
    s.append(&ents(1..=5, 1)).unwrap();
    // Entry 4 added learner 4, entry 5 entered a joint configuration promoting it.
    s.set_conf_state(ConfState::from((vec![1, 2, 3], vec![4])))
        .unwrap();
    let mut joint = ConfState::from((vec![1, 2, 3, 4], vec![]));
    joint.voters_outgoing = vec![1, 2, 3];
    joint.auto_leave = true;
    s.set_conf_state(joint.clone()).unwrap();
    s.sync().unwrap();
    assert_eq!(s.conf_state(), &joint);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.conf_state(), &joint, "the latest membership survives");
    assert_eq!(
        s.initial_state().unwrap().conf_state,
        ConfState::from((vec![1, 2, 3], vec![])),
        "no snapshot: replay starts from the group's creation"
    );
    drop(s);
    // A snapshot at 4 (learner added): replay starts there.
    let mut s = open(dir.path());
    let mut m = meta(4, 1, &[1, 2, 3]);
    m.mut_conf_state().learners = vec![4];
    let f = write_snapshot(&s.snapshot_dir(), &m);
    s.set_snapshot(m.clone(), &f).unwrap();
    s.compact(4).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.initial_state().unwrap().conf_state, *m.get_conf_state());
    assert_eq!(s.conf_state(), &joint);
}

#[test]
fn a_detached_sync_counts_as_done_only_once_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(&ents(1..=3, 1)).unwrap();
    assert!(s.has_unsynced());
    let first = s.begin_sync().unwrap().expect("entries to sync");
    // Taken but not run: a sync in turn must still make it durable.
    assert!(s.has_unsynced());
    let second = s
        .begin_sync()
        .unwrap()
        .expect("the first detached sync has not run");
    second.run().unwrap();
    assert!(!s.has_unsynced());
    assert!(s.begin_sync().unwrap().is_none());
    first.run().unwrap();
    // New entries after a detached sync ran: a sync in turn clears them.
    s.append(&ents(4..=4, 1)).unwrap();
    let third = s.begin_sync().unwrap().expect("entry 4 to sync");
    s.sync().unwrap();
    assert!(!s.has_unsynced());
    third.run().unwrap();
    assert!(!s.has_unsynced());
}
