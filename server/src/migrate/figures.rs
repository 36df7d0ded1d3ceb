//! What a node measured of the migrations it drove and the fault-ins it served, for
//! `CLUSTER KELVIN-MIGRATIONS` and `kelvin-cli cluster migrations`.
//!
//! Kept in memory on the node that did the work (the target group's leader for a
//! migration; whichever node served a fault-in): figures, not state. A driver that takes
//! over after a crash starts a record of its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Most migration records a node keeps (the oldest go first).
pub const MAX_RECORDS: usize = 64;

/// Upper bounds of the fault-in latency buckets, in microseconds (the last is open).
pub const FAULTIN_BUCKETS_US: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// One migration, as its driver saw it. Times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub id: u64,
    pub source: u64,
    pub target: u64,
    pub slots: u64,
    /// `sealing`, `handed-over`, `draining`, `done`, or `rejected` (with `reason`).
    pub phase: &'static str,
    /// Why the target rejected the migration before anything moved (empty otherwise).
    pub reason: String,
    /// From the first step (import) to the topology's handover applied.
    pub handover_ms: u64,
    /// Keys and bytes per class, as the source's planner counted them: critical,
    /// eager, lazy, skip.
    pub planned: [(u64, u64); 4],
    pub critical_moved: u64,
    pub eager_moved: u64,
    pub eager_ms: u64,
    pub drained_keys: u64,
    pub drained_bytes: u64,
    pub drain_ms: u64,
    /// What the source ranked the eager keys by (the learned model or the heat
    /// planner) and why, with the model's judgment on held-out keys.
    pub ranked_by: String,
    /// The heat planner's plan judged after the fact, when the model ranked
    /// ([`crate::migrate::compare`]), or why it could not be.
    pub compared: Option<Result<crate::migrate::compare::Comparison, String>>,
}

impl Figures {
    /// The record as field/value pairs.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("id", self.id.to_string()),
            ("source", self.source.to_string()),
            ("target", self.target.to_string()),
            ("slots", self.slots.to_string()),
            ("phase", self.phase.to_string()),
            ("handover_ms", self.handover_ms.to_string()),
        ];
        for (name, (keys, bytes)) in ["critical", "eager", "lazy", "skip"]
            .into_iter()
            .zip(self.planned)
        {
            f.push((name, format!("{keys} keys {bytes} bytes")));
        }
        f.extend([
            ("critical_moved", self.critical_moved.to_string()),
            ("eager_moved", self.eager_moved.to_string()),
            ("eager_ms", self.eager_ms.to_string()),
            ("drained_keys", self.drained_keys.to_string()),
            ("drained_bytes", self.drained_bytes.to_string()),
            ("drain_ms", self.drain_ms.to_string()),
        ]);
        if !self.ranked_by.is_empty() {
            f.push(("ranked_by", self.ranked_by.clone()));
        }
        match &self.compared {
            Some(Ok(c)) => f.extend([
                ("model_only", c.model_only.to_string()),
                ("model_only_read", c.model_only_read.to_string()),
                ("heat_only", c.heat_only.to_string()),
                ("heat_only_faulted", c.heat_only_faulted.to_string()),
            ]),
            Some(Err(e)) => f.push(("compared", format!("not compared: {e}"))),
            None => {}
        }
        if !self.reason.is_empty() {
            f.push(("reason", self.reason.clone()));
        }
        f
    }
}

/// A node's records and fault-in counters.
#[derive(Debug, Default)]
pub struct Log {
    records: Mutex<VecDeque<Figures>>,
    faultins: [AtomicU64; FAULTIN_BUCKETS_US.len() + 1],
    faultin_us: AtomicU64,
    /// Of `faultin_us`, the time spent waiting for the source's reply to the pull.
    faultin_pull_us: AtomicU64,
    faultin_keys: AtomicU64,
    /// Fault-ins of a read answered from the pulled values ([`crate::conn`]'s
    /// `serve_pulled`), before the keys were written here.
    faultin_served: AtomicU64,
    /// Keys settled as absent without a pull: the source's filter showed it never held
    /// them ([`crate::migrate::absent`]).
    absent_keys: AtomicU64,
}

impl Log {
    /// Adds or replaces the record of `f.id`.
    pub fn record(&self, f: &Figures) {
        let mut records = self.records.lock();
        match records.iter_mut().find(|r| r.id == f.id) {
            Some(r) => *r = f.clone(),
            None => {
                if records.len() == MAX_RECORDS {
                    records.pop_front();
                }
                records.push_back(f.clone());
            }
        }
    }

    pub fn records(&self) -> Vec<Figures> {
        self.records.lock().iter().cloned().collect()
    }

    /// A fault-in of `keys` keys that took `took`, `pull` of it waiting for the source;
    /// `served`: a read answered from the pulled values.
    pub fn faultin(&self, keys: usize, took: Duration, pull: Duration, served: bool) {
        let pull_us = pull.as_micros().min(u64::MAX as u128) as u64;
        self.faultin_pull_us.fetch_add(pull_us, Ordering::Relaxed);
        if served {
            self.faultin_served.fetch_add(1, Ordering::Relaxed);
        }
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let bucket = FAULTIN_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(FAULTIN_BUCKETS_US.len());
        self.faultins[bucket].fetch_add(1, Ordering::Relaxed);
        self.faultin_us.fetch_add(us, Ordering::Relaxed);
        self.faultin_keys.fetch_add(keys as u64, Ordering::Relaxed);
    }

    /// Fault-ins served here: count, keys, total microseconds, and the count per
    /// latency bucket ([`FAULTIN_BUCKETS_US`], then the rest).
    pub fn faultins(&self) -> (u64, u64, u64, Vec<u64>) {
        let buckets: Vec<u64> = self
            .faultins
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        (
            buckets.iter().sum(),
            self.faultin_keys.load(Ordering::Relaxed),
            self.faultin_us.load(Ordering::Relaxed),
            buckets,
        )
    }

    /// Microseconds the fault-ins spent waiting for their pulls, in all.
    pub fn faultin_pull_us(&self) -> u64 {
        self.faultin_pull_us.load(Ordering::Relaxed)
    }

    /// Fault-ins of a read answered from the pulled values.
    pub fn faultins_served(&self) -> u64 {
        self.faultin_served.load(Ordering::Relaxed)
    }

    /// `keys` keys a source never held settled without a pull.
    pub fn settled_absent(&self, keys: usize) {
        self.absent_keys.fetch_add(keys as u64, Ordering::Relaxed);
    }

    pub fn absent_keys(&self) -> u64 {
        self.absent_keys.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_replaced_by_id_and_bounded() {
        let log = Log::default();
        for id in 0..(MAX_RECORDS as u64 + 3) {
            log.record(&Figures {
                id,
                ..Default::default()
            });
        }
        log.record(&Figures {
            id: 5,
            phase: "done",
            ..Default::default()
        });
        let records = log.records();
        assert_eq!(records.len(), MAX_RECORDS);
        assert_eq!(records[0].id, 3);
        assert_eq!(records.iter().find(|r| r.id == 5).unwrap().phase, "done");
        let ms = Duration::from_millis;
        log.faultin(
            2,
            Duration::from_micros(500),
            Duration::from_micros(400),
            true,
        );
        log.faultin(1, ms(50), ms(49), false);
        log.faultin(1, Duration::from_secs(3), ms(1), false);
        let (n, keys, _, buckets) = log.faultins();
        assert_eq!((n, keys, log.faultins_served()), (3, 4, 1));
        assert_eq!(log.faultin_pull_us(), 400 + 49_000 + 1_000);
        log.settled_absent(2);
        assert_eq!((log.faultins().0, log.absent_keys()), (3, 2));
        assert_eq!(buckets, vec![1, 0, 1, 0, 1]);
    }
}
