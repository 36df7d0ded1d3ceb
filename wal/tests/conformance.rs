//! The same scenarios against raft's `MemStorage` and `DiskStorage`: identical results.
//!
//! Two documented differences are bridged in the `MemStorage` adapter:
//! * `DiskStorage::compact(i)` drops entries `<= i`; `MemStorageCore::compact(i + 1)` does that.
//! * after compaction `DiskStorage::term(first_index - 1)` still answers (as the `Storage`
//!   docs ask); `MemStorage` only does for its snapshot index, so the adapter remembers it.
//!
//! Scenarios never compact the whole log away (MemStorage then resets its first index).

mod common;

use common::*;
use kelvin_wal::DiskStorage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage};

trait Store: Storage {
    fn append(&mut self, ents: &[Entry]);
    fn compact(&mut self, index: u64);
    fn apply_snapshot(&mut self, meta: SnapshotMetadata) -> Result<(), String>;
    fn set_hard_state(&mut self, hs: HardState);
    /// Reopens a durable store (no-op for MemStorage).
    fn checkpoint(&mut self) {}
    fn prev_term(&self, idx: u64) -> Option<u64>;
}

struct Mem(MemStorage, Option<(u64, u64)>);

impl Store for Mem {
    fn append(&mut self, ents: &[Entry]) {
        self.0.wl().append(ents).unwrap();
    }
    fn compact(&mut self, index: u64) {
        if index < self.0.first_index().unwrap() {
            return;
        }
        let term = self.0.term(index).unwrap();
        self.0.wl().compact(index + 1).unwrap();
        self.1 = Some((index, term));
    }
    fn apply_snapshot(&mut self, meta: SnapshotMetadata) -> Result<(), String> {
        let mut s = Snapshot::default();
        s.set_metadata(meta);
        self.1 = None;
        self.0.wl().apply_snapshot(s).map_err(|e| e.to_string())
    }
    fn set_hard_state(&mut self, hs: HardState) {
        self.0.wl().set_hardstate(hs);
    }
    fn prev_term(&self, idx: u64) -> Option<u64> {
        self.1.filter(|&(i, _)| i == idx).map(|(_, t)| t)
    }
}

/// How much of the log a [`Disk`] releases from memory before each observation, so the
/// entries it answers come from memory, from the WAL files, or both.
#[derive(Clone, Copy, Debug)]
enum Release {
    Nothing,
    Half,
    All,
}

struct Disk(tempfile::TempDir, Option<DiskStorage>, Release);

impl Disk {
    fn s(&self) -> &DiskStorage {
        self.1.as_ref().unwrap()
    }
    fn m(&mut self) -> &mut DiskStorage {
        self.1.as_mut().unwrap()
    }
}

macro_rules! delegate_storage {
    ($t:ty, $s:ident) => {
        impl Storage for $t {
            fn initial_state(&self) -> raft::Result<raft::RaftState> {
                self.$s().initial_state()
            }
            fn entries(
                &self,
                low: u64,
                high: u64,
                max_size: impl Into<Option<u64>>,
                ctx: GetEntriesContext,
            ) -> raft::Result<Vec<Entry>> {
                self.$s().entries(low, high, max_size, ctx)
            }
            fn term(&self, idx: u64) -> raft::Result<u64> {
                self.$s().term(idx)
            }
            fn first_index(&self) -> raft::Result<u64> {
                self.$s().first_index()
            }
            fn last_index(&self) -> raft::Result<u64> {
                self.$s().last_index()
            }
            fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
                self.$s().snapshot(request_index, to)
            }
        }
    };
}

impl Mem {
    fn inner(&self) -> &MemStorage {
        &self.0
    }
}
delegate_storage!(Mem, inner);
delegate_storage!(Disk, s);

impl Store for Disk {
    fn append(&mut self, ents: &[Entry]) {
        self.m().append(ents).unwrap();
    }
    fn compact(&mut self, index: u64) {
        self.m().compact(index).unwrap();
    }
    fn apply_snapshot(&mut self, meta: SnapshotMetadata) -> Result<(), String> {
        let file = write_snapshot(&self.s().snapshot_dir(), &meta);
        self.m()
            .apply_snapshot(meta, &file)
            .map_err(|e| raft::Error::from(e).to_string())
    }
    fn set_hard_state(&mut self, hs: HardState) {
        self.m().set_hard_state(hs).unwrap();
    }
    fn checkpoint(&mut self) {
        self.m().sync().unwrap();
        self.1 = None;
        self.1 = Some(open(self.0.path()));
        let (first, last) = (
            self.s().first_index().unwrap(),
            self.s().last_index().unwrap(),
        );
        let upto = match self.2 {
            Release::Nothing => 0,
            Release::Half => first + (last.saturating_sub(first)) / 2,
            Release::All => u64::MAX,
        };
        self.m().release(upto);
    }
    fn prev_term(&self, _: u64) -> Option<u64> {
        None
    }
}

/// `entries(lo, hi, max_size)` and its result.
type EntriesObs = (u64, u64, Option<u64>, Result<Vec<Entry>, String>);

#[derive(Debug, PartialEq)]
struct Obs {
    first: u64,
    last: u64,
    hs: HardState,
    cs: ConfState,
    terms: Vec<(u64, Result<u64, String>)>,
    entries: Vec<EntriesObs>,
}

fn observe<S: Store>(s: &mut S) -> Obs {
    s.checkpoint();
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    let st = s.initial_state().unwrap();
    let terms = (0..=last + 2)
        .map(|i| {
            let t = match (s.term(i), s.prev_term(i)) {
                (Err(_), Some(t)) => Ok(t),
                (r, _) => r.map_err(|e| e.to_string()),
            };
            (i, t)
        })
        .collect();
    let mut entries = Vec::new();
    if last >= first {
        for lo in first.saturating_sub(1).max(1)..=last + 1 {
            for hi in lo..=last + 1 {
                for max in [None, Some(0), Some(30), Some(100), Some(u64::MAX)] {
                    let r = s.entries(lo, hi, max, GetEntriesContext::empty(false));
                    entries.push((lo, hi, max, r.map_err(|e| e.to_string())));
                }
            }
        }
    }
    Obs {
        first,
        last,
        hs: st.hard_state,
        cs: st.conf_state,
        terms,
        entries,
    }
}

type Scenario<S> = fn(&mut S, &mut Vec<Obs>);

fn overwrite<S: Store>(s: &mut S, obs: &mut Vec<Obs>) {
    obs.push(observe(s));
    s.append(&ents(1..=10, 1));
    obs.push(observe(s));
    s.append(&ents(5..=12, 2));
    obs.push(observe(s));
    s.append(&ents(12..=12, 3));
    obs.push(observe(s));
    s.append(&ents(13..=15, 3));
    s.append(&ents(3..=4, 4));
    obs.push(observe(s));
    s.append(&ents(5..=5, 4));
    s.append(&[]);
    obs.push(observe(s));
}

fn compaction<S: Store>(s: &mut S, obs: &mut Vec<Obs>) {
    s.append(&ents(1..=20, 1));
    s.compact(5);
    obs.push(observe(s));
    s.compact(3);
    obs.push(observe(s));
    s.compact(10);
    s.append(&ents(15..=25, 2));
    obs.push(observe(s));
    s.append(&ents(11..=11, 3));
    obs.push(observe(s));
    s.append(&ents(12..=30, 3));
    s.compact(29);
    obs.push(observe(s));
}

fn snapshots<S: Store>(s: &mut S, obs: &mut Vec<Obs>) {
    s.set_hard_state(HardState {
        term: 2,
        vote: 1,
        commit: 4,
        ..Default::default()
    });
    s.append(&ents(1..=10, 1));
    obs.push(observe(s));
    let r = s.apply_snapshot(meta(15, 3, &[1, 2, 3]));
    obs.push(observe(s));
    assert_eq!(r, Ok(()));
    s.append(&ents(16..=20, 3));
    obs.push(observe(s));
    let r = s.apply_snapshot(meta(12, 3, &[1]));
    assert_eq!(r, Err("snapshot out of date".to_string()));
    s.compact(17);
    let r = s.apply_snapshot(meta(19, 1, &[1, 4]));
    assert_eq!(r, Ok(()));
    obs.push(observe(s));
    s.append(&ents(20..=22, 5));
    obs.push(observe(s));
}

fn run(name: &str, mem: Scenario<Mem>, disk: Scenario<Disk>) {
    for release in [Release::Nothing, Release::Half, Release::All] {
        run_releasing(&format!("{name}, release {release:?}"), mem, disk, release);
    }
}

fn run_releasing(name: &str, mem: Scenario<Mem>, disk: Scenario<Disk>, release: Release) {
    let mut m = Mem(MemStorage::new(), None);
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let mut d = Disk(dir, Some(d), release);
    let (mut om, mut od) = (Vec::new(), Vec::new());
    mem(&mut m, &mut om);
    disk(&mut d, &mut od);
    assert_eq!(om.len(), od.len());
    for (i, (a, b)) in om.iter().zip(&od).enumerate() {
        let ctx = format!("{name}: observation {i} (left MemStorage, right DiskStorage)");
        assert_eq!((a.first, a.last), (b.first, b.last), "{ctx}");
        assert_eq!((&a.hs, &a.cs), (&b.hs, &b.cs), "{ctx}");
        for (x, y) in a.terms.iter().zip(&b.terms) {
            assert_eq!(x, y, "{ctx}: term");
        }
        for (x, y) in a.entries.iter().zip(&b.entries) {
            assert_eq!(x, y, "{ctx}: entries");
        }
        assert_eq!(a, b, "{ctx}");
    }
}

#[test]
fn overwrite_matches_memstorage() {
    run("overwrite", overwrite, overwrite);
}

#[test]
fn compaction_matches_memstorage() {
    run("compaction", compaction, compaction);
}

#[test]
fn snapshots_match_memstorage() {
    run("snapshots", snapshots, snapshots);
}
