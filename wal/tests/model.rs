//! Model-based test: random appends (with overwrites), hard states, compactions, snapshot
//! installs, syncs and reopens against a plain in-memory model.

mod common;

use common::*;
use kelvin_wal::{DiskStorage, WalOptions};
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, Storage};

#[derive(Debug, Clone)]
enum Op {
    Append {
        back: u16,
        len: u8,
        term: u8,
    },
    HardState {
        term: u8,
        vote: u8,
        commit: u16,
    },
    Compact {
        pick: u16,
    },
    InstallSnapshot {
        ahead: u8,
        term: u8,
    },
    /// Drops payloads up to some index from memory (invisible: they read back from the WAL).
    Release {
        pick: u16,
    },
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u16>(), 1..6u8, 1..5u8).prop_map(|(back, len, term)| Op::Append { back, len, term }),
        2 => (any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(term, vote, commit)| Op::HardState { term, vote, commit }),
        1 => any::<u16>().prop_map(|pick| Op::Compact { pick }),
        1 => (any::<u8>(), 1..9u8).prop_map(|(ahead, term)| Op::InstallSnapshot { ahead, term }),
        2 => any::<u16>().prop_map(|pick| Op::Release { pick }),
        2 => Just(Op::Sync),
        2 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    truncated: (u64, u64),
    entries: Vec<Entry>,
    hs: HardState,
    cs: ConfState,
}

impl Model {
    fn first(&self) -> u64 {
        self.truncated.0 + 1
    }
    fn last(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }
}

fn check(s: &DiskStorage, m: &Model) {
    assert_eq!(s.first_index().unwrap(), m.first());
    assert_eq!(s.last_index().unwrap(), m.last());
    assert_eq!(s.entries_len(), m.entries.len());
    assert_eq!(s.hard_state(), &m.hs);
    assert_eq!(s.conf_state(), &m.cs);
    assert_eq!(s.term(m.truncated.0).unwrap(), m.truncated.1);
    let got = s
        .entries(
            m.first(),
            m.last() + 1,
            None,
            GetEntriesContext::empty(false),
        )
        .unwrap();
    assert_eq!(got, m.entries);
    // Every sub-range reads the same, wherever its entries come from.
    for lo in m.first()..=m.last() {
        let got = s
            .entries(lo, m.last() + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got[..], m.entries[(lo - m.first()) as usize..]);
    }
}

fn run(ops: Vec<Op>, preallocate: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 300,
        preallocate,
    };
    let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append { back, len, term } => {
                let start = m.first() + u64::from(back) % (m.last() + 2 - m.first());
                let new = ents(start..=start + u64::from(len) - 1, u64::from(term));
                s.append(&new).unwrap();
                m.entries.truncate((start - m.first()) as usize);
                m.entries.extend(new);
            }
            Op::HardState { term, vote, commit } => {
                let hs = HardState {
                    term: term.into(),
                    vote: vote.into(),
                    commit: commit.into(),
                    ..Default::default()
                };
                s.set_hard_state(hs.clone()).unwrap();
                m.hs = hs;
            }
            Op::Compact { pick } => {
                if m.last() > m.truncated.0 {
                    let index = m.truncated.0 + 1 + u64::from(pick) % (m.last() - m.truncated.0);
                    s.compact(index).unwrap();
                    let n = (index - m.truncated.0) as usize;
                    m.truncated = (index, m.entries[n - 1].term);
                    m.entries.drain(..n);
                }
            }
            Op::InstallSnapshot { ahead, term } => {
                let index = m.first() + u64::from(ahead) % (m.last() + 6 - m.first());
                let meta = meta(index, term.into(), &[1, u64::from(ahead % 3) + 2]);
                let file = write_snapshot(&s.snapshot_dir(), &meta);
                s.apply_snapshot(meta.clone(), &file).unwrap();
                m.entries.clear();
                m.truncated = (index, term.into());
                m.hs.term = m.hs.term.max(term.into());
                m.hs.commit = index;
                m.cs = meta.get_conf_state().clone();
                assert_eq!(s.snapshot_file().unwrap().1, file);
            }
            Op::Release { pick } => {
                let span = m.last() + 2 - m.truncated.0;
                s.release(m.truncated.0 + u64::from(pick) % span);
            }
            Op::Sync => {
                s.sync().unwrap();
                assert!(!s.has_unsynced());
            }
            Op::Reopen => {
                drop(s);
                s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
            }
        }
        check(&s, &m);
    }
    drop(s);
    let s = DiskStorage::open(dir.path(), opts).unwrap();
    check(&s, &m);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..60), preallocate: bool) {
        run(ops, preallocate);
    }
}

#[test]
fn regression_compact_to_last_then_reopen() {
    use Op::*;
    let ops = vec![
        Append {
            back: 0,
            len: 1,
            term: 1,
        },
        Compact { pick: 0 },
        Append {
            back: 0,
            len: 5,
            term: 1,
        },
        Append {
            back: 12821,
            len: 2,
            term: 1,
        },
        Append {
            back: 52459,
            len: 3,
            term: 1,
        },
        Append {
            back: 10177,
            len: 1,
            term: 1,
        },
        Compact { pick: 24811 },
        Append {
            back: 33432,
            len: 1,
            term: 1,
        },
        Compact { pick: 0 },
        Sync,
    ];
    run(ops.clone(), false);
    run(ops, true);
}
