//! Membership changes of a group: proposing one ([`ConfOp`]: a learner added, promoted
//! through a joint configuration, left, removed), publishing the configuration for
//! `CLUSTER KELVIN-GROUPS` and `cluster status`, and the step down of a leader a change
//! removed.

use super::*;

impl Group {
    /// Proposes one membership change, if it is needed and may be made now.
    pub(super) fn change_conf(&mut self, op: ConfOp) -> Result<(), String> {
        use raft::eraftpb::{ConfChangeTransition, ConfChangeType};
        if self.raw.raft.state != StateRole::Leader {
            let leader = self.raw.raft.leader_id;
            return Err(format!(
                "this replica does not lead group {} (leader: {})",
                self.group_id,
                if leader == 0 {
                    "none yet".to_string()
                } else {
                    crate::cluster::node_name(leader)
                }
            ));
        }
        if self.raw.raft.has_pending_conf() {
            return Err("a membership change is still being applied: try again".into());
        }
        let cs = self.raw.store().conf_state().clone();
        let joint = !cs.voters_outgoing.is_empty();
        let is_voter = |id: u64| cs.voters.contains(&id);
        let is_learner = |id: u64| cs.learners.contains(&id);
        let single = |id, ty| {
            let mut c = raft::eraftpb::ConfChangeSingle {
                node_id: id,
                ..Default::default()
            };
            c.set_change_type(ty);
            c
        };
        let mut cc = ConfChangeV2::default();
        match op {
            ConfOp::LeaveJoint if !joint => return Ok(()),
            ConfOp::LeaveJoint => {}
            _ if joint => {
                return Err("the group is in a joint configuration: leave it first".into())
            }
            ConfOp::AddLearner(id) => {
                if is_voter(id) || is_learner(id) {
                    return Ok(());
                }
                // The new replica starts empty: it must get a snapshot (which carries the
                // membership), never the log from index 1 (which does not).
                if self.raw.raft.raft_log.first_index() <= 1 {
                    blocking(|| self.snapshot_now(0)).map_err(|e| e.to_string())?;
                }
                cc.set_changes(vec![single(id, ConfChangeType::AddLearnerNode)].into());
            }
            ConfOp::Promote(id) => {
                if is_voter(id) {
                    return Ok(());
                }
                if !is_learner(id) {
                    return Err(format!(
                        "{} is not a learner of group {}: add it first",
                        crate::cluster::node_name(id),
                        self.group_id
                    ));
                }
                cc.set_transition(ConfChangeTransition::Implicit);
                cc.set_changes(vec![single(id, ConfChangeType::AddNode)].into());
            }
            ConfOp::Remove(id) => {
                if !is_voter(id) && !is_learner(id) {
                    return Ok(());
                }
                if id == self.raw.raft.id {
                    return Err("the leader cannot remove itself: transfer leadership first".into());
                }
                if is_voter(id) {
                    if cs.voters.len() <= 1 {
                        return Err("cannot remove the last voter".into());
                    }
                    cc.set_transition(ConfChangeTransition::Implicit);
                }
                cc.set_changes(vec![single(id, ConfChangeType::RemoveNode)].into());
            }
        }
        tracing::info!(group = self.group_id, ?op, "proposing a membership change");
        self.raw
            .propose_conf_change(Vec::new(), cc)
            .map_err(|e| format!("raft refused the change: {e}"))
    }

    /// Refreshes [`GroupStatus::conf`].
    pub(super) fn publish_conf(&self) {
        let cs = self.raw.store().conf_state();
        let mut view = ConfView {
            voters: cs.voters.clone(),
            voters_outgoing: cs.voters_outgoing.clone(),
            learners: cs.learners.clone(),
            ..Default::default()
        };
        if self.raw.raft.state == StateRole::Leader {
            view.last_index = self.raw.raft.raft_log.last_index();
            view.matched = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(&id, pr)| (id, pr.matched))
                .collect();
            view.matched.sort_unstable();
        }
        *self.status.conf.lock() = view;
    }
}

/// Makes a leader that a configuration change just removed a follower. raft-rs leaves
/// it leading (its `post_conf_change`: "TODO: step down"), with no progress of its own in
/// the tracker, and the next append response it handles panics (`maybe_commit` unwraps
/// that progress). Found by a fault campaign: `remove-node` hands leadership over first,
/// but under faults the node can be elected again before the removal commits. Stepping
/// down in the same term changes nothing for the others: the remaining voters elect a
/// leader as they would after its crash. Returns whether it stepped down.
pub(super) fn step_down_if_removed<T: Storage>(
    raw: &mut RawNode<T>,
    cs: &ConfState,
    group: u64,
) -> bool {
    let me = raw.raft.id;
    let member = [
        &cs.voters,
        &cs.voters_outgoing,
        &cs.learners,
        &cs.learners_next,
    ]
    .iter()
    .any(|ids| ids.contains(&me));
    if member || raw.raft.state != StateRole::Leader {
        return false;
    }
    let term = raw.raft.term;
    raw.raft.become_follower(term, raft::INVALID_ID);
    tracing::info!(
        group,
        term,
        "removed from the group while leading it: stepped down"
    );
    true
}
