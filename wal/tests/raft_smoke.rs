//! A single-voter `RawNode<DiskStorage>` commits 100 proposals, restarts and keeps going.

use kelvin_wal::{DiskStorage, WalOptions};
use raft::eraftpb::{ConfState, Entry, EntryType};
use raft::{Config, GetEntriesContext, RawNode, StateRole, Storage};

fn config(applied: u64) -> Config {
    let c = Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 3,
        check_quorum: true,
        pre_vote: true,
        applied,
        ..Default::default()
    };
    c.validate().unwrap();
    c
}

/// The log on `dir`, with small segments so the test rolls and deletes them.
fn open(dir: &std::path::Path) -> DiskStorage {
    DiskStorage::open(
        dir,
        WalOptions {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap()
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Runs the Ready loop until there is nothing left; returns the applied normal entries' data.
fn drain(node: &mut RawNode<DiskStorage>, applied: &mut Vec<Vec<u8>>) {
    let mut apply = |ents: Vec<Entry>| {
        for e in ents {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                applied.push(e.data.to_vec());
            }
        }
    };
    while node.has_ready() {
        let mut rd = node.ready();
        assert!(rd.messages().is_empty(), "single voter sends nothing");
        apply(rd.take_committed_entries());
        let store = node.mut_store();
        store.append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs.clone()).unwrap();
        }
        store.sync().unwrap();
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = node.store().hard_state().clone();
            hs.commit = commit;
            node.mut_store().set_hard_state(hs).unwrap();
        }
        apply(light.take_committed_entries());
        node.advance_apply();
    }
}

fn elect(node: &mut RawNode<DiskStorage>, applied: &mut Vec<Vec<u8>>) {
    node.campaign().unwrap();
    drain(node, applied);
    assert_eq!(node.raft.state, StateRole::Leader);
}

#[test]
fn single_voter_commits_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store
        .initialize(ConfState::from((vec![1], vec![])))
        .unwrap();
    let mut node = RawNode::new(&config(0), store, &logger()).unwrap();
    let mut applied = Vec::new();
    elect(&mut node, &mut applied);
    for i in 0..100u32 {
        node.propose(vec![], format!("put {i}").into_bytes())
            .unwrap();
        drain(&mut node, &mut applied);
    }
    assert_eq!(applied.len(), 100);
    let commit = node.raft.raft_log.committed;
    assert_eq!(commit, 101, "1 empty leader entry + 100 proposals");
    drop(node);

    let store = open(dir.path());
    assert_eq!(store.hard_state().commit, commit);
    assert_eq!(store.last_index().unwrap(), 101);
    let ents = store
        .entries(1, 102, None, GetEntriesContext::empty(false))
        .unwrap();
    let data: Vec<Vec<u8>> = ents
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| e.data.to_vec())
        .collect();
    assert_eq!(data, applied);

    // Restart raft on the recovered storage and keep going.
    let mut node = RawNode::new(&config(commit), store, &logger()).unwrap();
    assert_eq!(node.raft.raft_log.committed, commit);
    let mut more = Vec::new();
    elect(&mut node, &mut more);
    for i in 0..10u32 {
        node.propose(vec![], format!("again {i}").into_bytes())
            .unwrap();
        drain(&mut node, &mut more);
    }
    assert_eq!(more.len(), 10);
    assert_eq!(node.raft.raft_log.committed, 112);
    node.mut_store().compact(100).unwrap();
    drop(node);
    let store = open(dir.path());
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (101, 112)
    );
    assert_eq!(store.hard_state().commit, 112);
}
