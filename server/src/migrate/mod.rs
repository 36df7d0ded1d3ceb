//! Live resharding (DESIGN.md "Resharding, step by step"): moving a slot range from a
//! source group to a target group while both keep serving.
//!
//! How it fits, as the parts land:
//! - [`plan`]: the transfer planner. For a slot range it sorts every key into a
//!   [`plan::Class`] (`critical`, `eager`, `lazy`, `skip`) from the operator's rules
//!   (`--migration-rules FILE`) and the profiler's heat ([`crate::store::heat`]), within
//!   an eager byte budget. A [`plan::Planner`] trait, so a learned model plugs in later.
//! - [`state`]: what a group knows of its migrations: sealed slots (served by the
//!   target), importing slots (served once the seal's proof is in its log), and the
//!   settled keys a late pull or push must not overwrite. Pure and deterministic.
//! - [`apply`]: the log's migration ops (seal, import, proof, finish) applied to that
//!   state in the store, and the guard every data command passes at apply: nothing is
//!   applied to a sealed slot, or to an importing one before the seal's proof.
//!   Moved keys (the `Keys` op) arrive as DUMP payloads and land only on keys not
//!   settled; the state goes into snapshots (`snapshot::MIGRATIONS_DB`).
//! - [`driver`]: the phase driver, on the node leading a migration's target group:
//!   import, seal, proof, the topology's handover, the drain, finish; [`replies`]: the
//!   replies it reads from the groups' leaders.
//! - [`compare`]: when the learned model ranked a plan, the heat planner's plan at the
//!   same budget judged after the fact (the keys only one of them pushed).
//! - The fault-in of unmoved keys is the connections' (`conn/faultin.rs`): they ask
//!   [`apply::need`] before running a command on a group with migrations, and
//!   [`absent`] (the sources' Bloom filters of their keys) before pulling one.
//! - Still to come (issue 12): the eager push of hot keys, the negotiation, the drain's
//!   rate setting. (The topology's `migrate` lines are in `cluster`.)
//!
//! Lower layers only: this module reads the store; it never reaches the node.

pub mod absent;
pub mod apply;
pub mod compare;
pub mod driver;
pub mod eager;
pub mod figures;
pub mod learn;
pub mod moves;
pub mod plan;
pub mod replies;
pub mod state;
