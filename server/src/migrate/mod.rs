//! Live resharding (DESIGN.md "Resharding, step by step"): moving a slot range from a
//! source group to a target group while both keep serving.
//!
//! How it fits, as the parts land:
//! - [`plan`]: the transfer planner. For a slot range it sorts every key into a
//!   [`plan::Class`] (`critical`, `eager`, `lazy`, `skip`) from the operator's rules
//!   (`--migration-rules FILE`) and the profiler's heat ([`crate::store::heat`]), within
//!   an eager byte budget. A [`plan::Planner`] trait, so a learned model plugs in later.
//! - Still to come: the migration state kept in the store and its snapshots, the seal and
//!   handover entries, fault-in, push and drain, the phase driver (issue 12).
//!
//! Lower layers only: this module reads the store; it never reaches the node.

pub mod plan;
