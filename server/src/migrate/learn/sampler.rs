//! The training data: keys observed now, labelled a window later by whether they were
//! touched meanwhile, from the node's own traffic, in bounded memory.
//!
//! The node observes a few random keys of each group it leads every few seconds
//! ([`SAMPLE_EVERY`], [`SAMPLE_KEYS`]): their features as of then ([`super::features`]).
//! A window later ([`DEFAULT_WINDOW_MS`]) it looks each up again: touched if the
//! profiler's record shows an access after the observation (a key deleted or expired
//! meanwhile is not: nothing would have pulled it). The labelled samples are a ring of
//! at most [`MAX_SAMPLES`], the newest last; observations waiting for their label are at
//! most [`MAX_PENDING`]. Each observation is a lookup under the store lock the access
//! paths take anyway, a few microseconds; nothing here blocks a request for longer.

use std::collections::VecDeque;

use super::features::{self, Raw};
use super::model::Sample;
use crate::migrate::plan::Rules;
use crate::store::Heat;

/// How long after an observation its label is taken: what "touched soon" means (about
/// how long a migration's keys wait for the drain).
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
/// The shortest and longest label windows (`kelvin-planner-window`).
pub const MIN_WINDOW_MS: u64 = 1_000;
pub const MAX_WINDOW_MS: u64 = 86_400_000;
/// How often the node observes keys, and how many per group led each time.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
pub const SAMPLE_KEYS: usize = 256;
/// More random picks a round, of which those touched within the last window are
/// observed too (at most a quarter of [`SAMPLE_KEYS`]): about 0.2 ms under the lock.
pub const RECENT_PROBES: usize = 2048;
/// Most labelled samples kept (about 120 bytes each).
pub const MAX_SAMPLES: usize = 50_000;
/// Most observations waiting for their label.
pub const MAX_PENDING: usize = 50_000;

struct Observation {
    at_ms: u64,
    /// Where the key lives (the node's group id), for the lookup at the label.
    source: u64,
    db: usize,
    key: Vec<u8>,
    raw: Raw,
    class: Vec<u8>,
}

/// Observations and labelled samples. See the module documentation.
pub struct Sampler {
    window_ms: u64,
    pending: VecDeque<Observation>,
    samples: VecDeque<Sample>,
    /// Observations dropped because [`MAX_PENDING`] were waiting.
    pub dropped: u64,
    /// Samples labelled since the start, and of them touched.
    pub labelled: u64,
    pub touched: u64,
}

impl Sampler {
    pub fn new(window_ms: u64) -> Sampler {
        Sampler {
            window_ms: window_ms.max(1000),
            pending: VecDeque::new(),
            samples: VecDeque::new(),
            dropped: 0,
            labelled: 0,
            touched: 0,
        }
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Observes one key as of `now_ms` (observations must come in time order).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        now_ms: u64,
        source: u64,
        db: usize,
        key: &[u8],
        heat: Heat,
        bytes: usize,
        expire_at: u64,
        rules: &Rules,
    ) {
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.pending.push_back(Observation {
            at_ms: now_ms,
            source,
            db,
            key: key.to_vec(),
            raw: features::raw(heat, bytes, expire_at, now_ms, self.window_ms),
            class: features::class_of(rules, key),
        });
    }

    /// Labels every observation whose window has passed by `now_ms`: `lookup` gives the
    /// key's record now from its source, database and name (`None`: it is gone).
    pub fn label_due(
        &mut self,
        now_ms: u64,
        mut lookup: impl FnMut(u64, usize, &[u8]) -> Option<Heat>,
    ) {
        while let Some(o) = self.pending.front() {
            if o.at_ms.saturating_add(self.window_ms) > now_ms {
                break;
            }
            let Some(o) = self.pending.pop_front() else {
                break;
            };
            let touched =
                lookup(o.source, o.db, &o.key).is_some_and(|h| touched_since(h, o.at_ms, now_ms));
            self.labelled += 1;
            self.touched += u64::from(touched);
            if self.samples.len() >= MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(Sample {
                raw: o.raw,
                class: o.class,
                touched,
            });
        }
    }

    /// The labelled samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Whether a key with record `heat` at `now_ms` was accessed after `at_ms` (in whole
/// seconds, as the record keeps them: an access in the observation's own second counts
/// as before it).
pub fn touched_since(heat: Heat, at_ms: u64, now_ms: u64) -> bool {
    if heat.seen() == 0 {
        return false;
    }
    let last = (now_ms / 1000).saturating_sub(heat.idle_secs(now_ms));
    last > at_ms / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn keys_are_labelled_a_window_later_by_whether_they_were_touched() {
        let rules = Rules::default();
        let mut s = Sampler::new(10_000);
        let mut a = Heat::default();
        a.touch(T0 - 5_000, false);
        let b = a;
        s.observe(T0, 0, 0, b"sess:a", a, 100, 0, &rules);
        s.observe(T0, 0, 0, b"sess:b", b, 100, 0, &rules);
        s.observe(T0 + 5_000, 0, 0, b"sess:c", b, 100, 0, &rules);
        a.touch(T0 + 3_000, true);
        // Not due yet: nothing labelled.
        s.label_due(T0 + 9_999, |_, _, _| unreachable!());
        assert_eq!((s.len(), s.pending()), (0, 3));
        s.label_due(T0 + 10_000, |_, _, k| match k {
            b"sess:a" => Some(a),
            b"sess:b" => Some(b),
            _ => None,
        });
        let got: Vec<bool> = s.samples().iter().map(|x| x.touched).collect();
        assert_eq!(got, vec![true, false]);
        assert_eq!(s.samples()[0].class, b"sess");
        assert_eq!(s.pending(), 1);
        // A key gone by its label is untouched.
        s.label_due(T0 + 15_000, |_, _, _| None);
        assert_eq!((s.len(), s.labelled, s.touched), (3, 3, 1));
    }

    #[test]
    fn memory_is_bounded() {
        let rules = Rules::default();
        let mut s = Sampler::new(1_000);
        for i in 0..(MAX_PENDING + 10) as u64 {
            s.observe(T0 + i, 0, 0, b"k", Heat::default(), 1, 0, &rules);
        }
        assert_eq!((s.pending(), s.dropped), (MAX_PENDING, 10));
        s.label_due(T0 + 10 * MAX_PENDING as u64, |_, _, _| None);
        assert_eq!(s.len(), MAX_SAMPLES.min(MAX_PENDING));
        for i in 0..(MAX_SAMPLES + 5) as u64 {
            let at = T0 + 10 * MAX_PENDING as u64 + i;
            s.observe(at, 0, 0, b"k", Heat::default(), 1, 0, &rules);
        }
        s.label_due(u64::MAX / 2, |_, _, _| None);
        assert_eq!(s.len(), MAX_SAMPLES);
    }
}
