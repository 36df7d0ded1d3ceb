//! Unit tests of the group: the refusal of a too large write, the read lease handed over
//! with leadership, a removed leader stepping down, a follower not forwarding proposals.

#[test]
fn the_refusal_of_a_too_large_write_names_the_limit() {
    use super::{ProposeError, MAX_COMMAND_BYTES, TOO_LARGE};
    assert_eq!(MAX_COMMAND_BYTES, 59 << 20);
    assert!(TOO_LARGE.contains(&MAX_COMMAND_BYTES.to_string()));
    assert_eq!(ProposeError::TooLarge.reply_text(), TOO_LARGE);
}

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

/// Persists and applies whatever `node` has ready, returning the messages it sends.
fn drain(node: &mut RawNode<MemStorage>, storage: &MemStorage) -> Vec<Message> {
    let mut sent = Vec::new();
    while node.has_ready() {
        let mut rd = node.ready();
        sent.extend(rd.take_messages());
        storage.wl().append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            storage.wl().set_hardstate(hs.clone());
        }
        sent.extend(rd.take_persisted_messages());
        let mut light = node.advance(rd);
        sent.extend(light.take_messages());
        node.advance_apply();
    }
    sent
}

fn message(t: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message {
        from,
        to: 1,
        term,
        ..Default::default()
    };
    m.set_msg_type(t);
    m
}

/// Node 2 answers the lease's ReadIndex heartbeat among `sent`; the lease takes the
/// read state.
fn answer_lease_request(
    node: &mut RawNode<MemStorage>,
    storage: &MemStorage,
    sent: Vec<Message>,
    lease: &mut super::Lease,
    status: &super::GroupStatus,
) {
    let ctx = sent
        .iter()
        .rev()
        .find(|m| m.get_msg_type() == MessageType::MsgHeartbeat && !m.context.is_empty())
        .map(|m| m.context.clone())
        .expect("a ReadIndex heartbeat");
    let mut ack = message(MessageType::MsgHeartbeatResponse, 2, node.raft.term);
    ack.context = ctx;
    node.step(ack).unwrap();
    let mut rd = node.ready();
    let states = rd.read_states().to_vec();
    storage.wl().append(rd.entries()).unwrap();
    let _ = rd.take_messages();
    node.advance(rd);
    lease.on_read_states(node, status, states, true);
}

/// A leader that hands over ends its lease at once, and an answer to a lease request
/// asked before the hand-over grants none, even if the transfer is then abandoned
/// (the transfer's target campaigns at once, and the voters elect it whatever they
/// heard from the old leader). Found by kelvin-jepsen: a leader that had just handed
/// over served a read that missed a write the new leader had acknowledged.
#[test]
fn handing_leadership_over_ends_the_read_lease() {
    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2], vec![])));
    let config = super::raft_config(1, 0);
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = RawNode::new(&config, storage.clone(), &logger).unwrap();
    let status = super::GroupStatus::new(1);
    // Node 1 becomes leader of term 1 and commits its first entry.
    node.campaign().unwrap();
    drain(&mut node, &storage);
    node.step(message(MessageType::MsgRequestPreVoteResponse, 2, 1))
        .unwrap();
    drain(&mut node, &storage);
    node.step(message(MessageType::MsgRequestVoteResponse, 2, 1))
        .unwrap();
    drain(&mut node, &storage);
    assert_eq!(node.raft.state, StateRole::Leader);
    let mut append = message(MessageType::MsgAppendResponse, 2, 1);
    append.index = node.raft.raft_log.last_index();
    node.step(append).unwrap();
    drain(&mut node, &storage);
    status.set_leader(1);

    // A lease is granted while nothing is handed over.
    let mut lease = super::Lease::default();
    lease.renew(&mut node, &status, 0);
    let sent = drain(&mut node, &storage);
    answer_lease_request(&mut node, &storage, sent, &mut lease, &status);
    assert!(status.can_read_locally(), "the set-up grants a lease");

    // Asked, then handed over: the lease is gone at once...
    lease.renew(&mut node, &status, 0);
    let sent = drain(&mut node, &storage);
    lease.hand_over(&mut node, &status, 2);
    assert!(
        !status.can_read_locally(),
        "the lease outlived the hand-over"
    );
    // ...and the answer to the earlier request grants none, though the transfer was
    // abandoned meanwhile and this node still leads.
    node.raft.abort_leader_transfer();
    answer_lease_request(&mut node, &storage, sent, &mut lease, &status);
    assert!(
        !status.can_read_locally(),
        "an answer older than the hand-over granted a lease"
    );

    // A request asked after the hand-over counts again.
    lease.renew(&mut node, &status, 0);
    let sent = drain(&mut node, &storage);
    answer_lease_request(&mut node, &storage, sent, &mut lease, &status);
    assert!(status.can_read_locally());
}

/// A replica that does not lead proposes nothing, and in particular does not forward
/// the entry to the leader it knows (raft-rs would): its clients are told "not the
/// leader" and send again, so a forwarded copy would be applied twice.
#[test]
fn a_leader_removed_from_its_group_steps_down_instead_of_panicking() {
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2], vec![])));
    let config = super::raft_config(1, 0);
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = RawNode::new(&config, storage, &logger).unwrap();
    node.raft.become_candidate();
    node.raft.become_leader();
    let last = node.raft.raft_log.last_index();
    // The configuration without node 1, applied while it leads.
    let mut single = ConfChangeSingle::default();
    single.set_change_type(ConfChangeType::RemoveNode);
    single.node_id = 1;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    let cs = node.apply_conf_change(&cc).unwrap();
    assert!(super::step_down_if_removed(&mut node, &cs, 7));
    assert_eq!(node.raft.state, StateRole::Follower);
    // An append response from the remaining voter: before, raft-rs's maybe_commit
    // unwrapped the removed leader's own progress and panicked here.
    let mut resp = Message {
        from: 2,
        to: 1,
        term: node.raft.term,
        index: last,
        ..Default::default()
    };
    resp.set_msg_type(MessageType::MsgAppendResponse);
    node.step(resp).unwrap();
    // A member, or a follower, is left alone.
    assert!(!super::step_down_if_removed(&mut node, &cs, 7));
}

#[test]
fn a_follower_does_not_forward_proposals() {
    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2], vec![])));
    let config = super::raft_config(1, 0);
    config.validate().unwrap();
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = RawNode::new(&config, storage, &logger).unwrap();
    // Node 2 leads term 1.
    let mut heartbeat = Message {
        from: 2,
        to: 1,
        term: 1,
        ..Default::default()
    };
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    node.step(heartbeat).unwrap();
    assert_eq!(node.raft.leader_id, 2);
    assert_eq!(
        super::propose_entry(&mut node, b"ctx".to_vec(), b"INCR".to_vec()),
        None
    );
    let ready = node.ready();
    assert!(
        !ready
            .messages()
            .iter()
            .chain(ready.persisted_messages())
            .any(|m| m.get_msg_type() == MessageType::MsgPropose),
        "the proposal was forwarded to the leader"
    );
}
