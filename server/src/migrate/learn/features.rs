//! What the model sees of a key: numbers from the profiler's record ([`Heat`]), the
//! key's size and time to live, and its pattern class, all as of one moment.
//!
//! ```text
//!  0 ln(1 + idle s)            time since the last access
//!  1 ln(1 + mean gap s)        the rhythm: mean time between accesses
//!  2 ln(1 + gap spread s)      how regular it is
//!  3 ln((1 + idle)/(1 + gap))  how overdue the key is against its own rhythm
//!  4 decayed counter           Redis's LFU counter, decayed to now (recency x frequency)
//!  5 ln(1 + accesses seen)     (saturates at 255)
//!  6 write share               0 all reads .. 1 all writes
//!  7 ln(1 + bytes)
//!  8 ln(1 + TTL left s)        0 without one
//!  9 has a TTL
//! 10 seen once                 (no rhythm yet)
//! 11 ln(1 + age estimate s)    idle + accesses x mean gap (the record keeps no birth time)
//! 12-19 overdue ratio bins     (1+idle)/(1+gap) < 0.5, 1, 2, 3, 5, 10, 30, more
//! 20-22 idle bins              against the label window: < 1/4, < 1, < 4 windows
//! 23 ln(window / (1 + gap))    how many accesses the rhythm puts in the window
//! 24-27 that, times the first four overdue bins (the rhythm holds only while due)
//! 28 ln((1 + spread)/(1 + gap)) regular (a poller) or memoryless (a reader)
//! 29-31 products of 0 and 1     ln idle^2, ln gap^2, ln idle x ln gap (curvature)
//! 32 ln(1 + seen) x ln(1 + idle) (a long history idle for long is a pause, not an end)
//! ```
//!
//! The pattern class (the first rule's pattern that names the key, else its prefix up
//! to the first `:`) is not a number: the model turns it into the share of keys of that
//! class that were touched in its training data ([`super::model`]).

use crate::migrate::plan::Rules;
use crate::store::Heat;

/// How many numbers [`raw`] gives.
pub const RAW: usize = 33;
/// Longest pattern class kept (bytes); longer prefixes are cut.
pub const MAX_CLASS_BYTES: usize = 32;

/// A key's features, as [`raw`] computes them.
pub type Raw = [f32; RAW];

/// Where [`raw`] puts the features other code reads back by name.
pub const IDLE_LN: usize = 0;
pub const COUNTER: usize = 4;
pub const BYTES_LN: usize = 7;

/// The features of a key with profile `heat`, `bytes` big, expiring at `expire_at`
/// (Unix ms, 0 = never), at `now_ms`; `window_ms` is the label window (what "soon"
/// means for the idle bins).
pub fn raw(heat: Heat, bytes: usize, expire_at: u64, now_ms: u64, window_ms: u64) -> Raw {
    let idle = heat.idle_secs(now_ms) as f64;
    let gap = heat.mean_gap();
    let spread = heat.gap_spread();
    let seen = heat.seen() as f64;
    let ratio = (1.0 + idle) / (1.0 + gap);
    let ttl = if expire_at == 0 {
        0.0
    } else {
        expire_at.saturating_sub(now_ms) as f64 / 1000.0
    };
    let window = (window_ms as f64 / 1000.0).max(1.0);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let per_window = (window / (1.0 + gap)).ln();
    let x = [
        (1.0 + idle).ln(),
        (1.0 + gap).ln(),
        (1.0 + spread).ln(),
        ratio.ln(),
        heat.counter_at(now_ms) as f64,
        (1.0 + seen).ln(),
        heat.write_share() as f64 / 255.0,
        (1.0 + bytes as f64).ln(),
        (1.0 + ttl).ln(),
        flag(expire_at != 0),
        flag(heat.seen() <= 1),
        (1.0 + idle + seen * gap).ln(),
        flag(ratio < 0.5),
        flag((0.5..1.0).contains(&ratio)),
        flag((1.0..2.0).contains(&ratio)),
        flag((2.0..3.0).contains(&ratio)),
        flag((3.0..5.0).contains(&ratio)),
        flag((5.0..10.0).contains(&ratio)),
        flag((10.0..30.0).contains(&ratio)),
        flag(ratio >= 30.0),
        flag(idle < window / 4.0),
        flag(idle < window),
        flag(idle < window * 4.0),
        per_window,
        per_window * flag(ratio < 0.5),
        per_window * flag((0.5..1.0).contains(&ratio)),
        per_window * flag((1.0..2.0).contains(&ratio)),
        per_window * flag((2.0..3.0).contains(&ratio)),
        ((1.0 + spread) / (1.0 + gap)).ln(),
        (1.0 + idle).ln().powi(2),
        (1.0 + gap).ln().powi(2),
        (1.0 + idle).ln() * (1.0 + gap).ln(),
        (1.0 + seen).ln() * (1.0 + idle).ln(),
    ];
    x.map(|v| v as f32)
}

/// The key's pattern class: the pattern of the first rule naming it, else its prefix up
/// to the first `:` (the whole key if it has none), at most [`MAX_CLASS_BYTES`].
pub fn class_of(rules: &Rules, key: &[u8]) -> Vec<u8> {
    if let Some(rule) = rules
        .rules
        .iter()
        .find(|r| kelvin_protocol::glob::glob_match(r.pattern.as_bytes(), key, false))
    {
        let p = rule.pattern.as_bytes();
        return p[..p.len().min(MAX_CLASS_BYTES)].to_vec();
    }
    let end = memchr::memchr(b':', key).unwrap_or(key.len());
    key[..end.min(MAX_CLASS_BYTES)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_poller_is_due_and_a_finished_burst_is_overdue() {
        let mut poller = Heat::default();
        for i in 0..20 {
            poller.touch(T0 + i * 30_000, false);
        }
        let mut burst = Heat::default();
        for i in 0..20 {
            burst.touch(T0 + 540_000 + i * 2_000, false);
        }
        // Both last touched 20 s before `now`.
        let now = T0 + 19 * 30_000 + 20_000;
        let p = raw(poller, 100, 0, now, 60_000);
        let b = raw(burst, 100, 0, now, 60_000);
        assert!(p[3] < b[3], "poller {} burst {}", p[3], b[3]);
        assert_eq!(p[12] + p[13], 1.0);
        assert_eq!(b[12..20].iter().sum::<f32>(), 1.0);
        assert_eq!(b[16], 1.0);
        assert_eq!((p[9], p[8]), (0.0, 0.0));
        // The features read back by name are where the names say.
        assert_eq!(p[COUNTER], poller.counter_at(now) as f32);
        assert!((p[BYTES_LN] - (101.0f32).ln()).abs() < 1e-5);
        assert!((p[IDLE_LN] - (21.0f32).ln()).abs() < 1e-5);
        let t = raw(poller, 100, now + 90_000, now, 60_000);
        assert_eq!(t[9], 1.0);
        assert!((t[8] - (91.0f32).ln()).abs() < 1e-4);
    }

    #[test]
    fn the_class_is_the_rule_pattern_or_the_prefix() {
        let rules = Rules::parse("[[rule]]\npattern = \"auth:*\"\nclass = \"critical\"\n").unwrap();
        assert_eq!(class_of(&rules, b"auth:123"), b"auth:*");
        assert_eq!(class_of(&rules, b"sess:abc:def"), b"sess");
        assert_eq!(class_of(&rules, b"plain"), b"plain");
        assert_eq!(class_of(&rules, &[b'x'; 100]).len(), MAX_CLASS_BYTES);
    }
}
