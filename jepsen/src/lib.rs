//! `kelvin-jepsen`: the checker of Kelvin's Jepsen-style fault tests.
//!
//! How it fits: a harness drives real Redis clients against a Kelvin cluster while faults
//! are injected, and records every call in a [`history`] (an invocation record before the
//! request, a completion record after: `Ok`, `Fail` or `Info` for an unknown outcome).
//! [`check`] then judges the history: [`checker::register`] checks per-key
//! linearizability of `GET`/`SET`/`INCR`/`DEL` and `WATCH`..`EXEC` compare-and-set,
//! [`checker::list_append`] checks `RPUSH`/`LRANGE` (and `APPEND`/`GET` on strings)
//! histories for lost, skipped, duplicated, invented and reordered elements, and
//! [`checker::sessions`] checks hashes under `HSET`/`HINCRBY`/`HGETALL`/`EXPIRE`/`DEL`
//! (with their TTLs). The result is a [`Report`] of [`Verdict`]s, each listing its
//! [`Problem`]s in plain words with a [`Reason`] naming their kind. [`check_run`] adds
//! what a whole run must show ([`RunFacts`]: enough `ok` operations, every final read,
//! no worker panic, every fault in effect, every replica askable and alike).
//!
//! [`selftest`] holds histories with known verdicts (hand-made, and long ones generated
//! by a simulated correct store) that `kelvin-jepsen self-test` and the unit tests run.
//!
//! ```
//! use kelvin_jepsen::history::{Recorder, Value, F};
//!
//! let r = Recorder::new();
//! let w = r.invoke(1, F::Write, "x", Value::Int(1));
//! r.ok(&w, Value::None);
//! let g = r.invoke(2, F::Read, "x", Value::None);
//! r.ok(&g, Value::Int(1));
//! let report = kelvin_jepsen::check(&r.into_ops());
//! assert!(report.valid());
//! ```

pub mod checker;
pub mod history;
pub mod selftest;
mod sim;

pub use checker::run::{check_run, RunFacts};
pub use checker::{check, check_with, Options, Problem, Reason, Report, Verdict};
pub use history::{read_jsonl, write_jsonl, Kind, Op, Recorder, Value, F};
