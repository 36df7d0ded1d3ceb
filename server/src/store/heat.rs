//! The session-state profiler's record of one key (DESIGN.md part 1): how hot it is now,
//! when it was last touched, whether it is read or written, and the rhythm of its
//! accesses, in eight bytes inside the key's [`super::Entry`].
//!
//! How it fits: every access updates the record under the store lock that the access
//! holds anyway (a read on the leader's lease, a write at apply on every replica), with
//! a handful of integer operations and no allocation; nothing else locks. The planner of
//! a migration ranks keys by [`Heat::counter_at`] per byte, and [`SlotHeat`] folds the
//! records of a slot into the summary that `CLUSTER KELVIN-HEAT` and `INFO heat` show.
//! Heat is a profile, not data: replicas differ (reads touch the leader's only), and a
//! snapshot keeps only the low half ([`Heat::to_snapshot`]); what is lost rebuilds from
//! traffic.
//!
//! ```text
//! bits  0..24  last access, Unix seconds mod 2^24 (wraps after 194 days)
//! bits 24..32  access counter, logarithmic and decayed (Redis's LFU: starts at
//!              COUNTER_INIT, +1 with probability 1/((c - COUNTER_INIT) * LOG_FACTOR + 1),
//!              -1 per DECAY_SECS idle)
//! bits 32..40  mean gap between accesses (moving average, weight 1/8), log-coded:
//!              code c stands for 2^(c/16) - 1 seconds (4.4% steps, up to 17 hours)
//! bits 40..48  spread of the gaps: the moving average of |gap - mean|, coded the same
//! bits 48..56  share of writes among recent accesses (moving average, 255 = all writes)
//! bits 56..64  accesses seen, saturating at 255 (0 = never touched)
//! ```
//!
//! The gap codes and the counter are what the learned planner's features are made of
//! (`migrate::learn::features`): idle against the rhythm tells a poll that will come
//! back from a burst that has ended. Every bit is taken: a per-field profile of big
//! session hashes would need a word of its own.

use std::sync::atomic::{AtomicBool, Ordering};

/// The counter a key starts at, so a new key is not the coldest at once (Redis's
/// `LFU_INIT_VAL`).
pub const COUNTER_INIT: u8 = 5;
/// How slowly the counter grows: Redis's `lfu-log-factor` default (a counter of 100 takes
/// about a million accesses).
pub const LOG_FACTOR: u64 = 10;
/// Idle seconds per step the counter loses (Redis's `lfu-decay-time`, 1 minute), so the
/// counter says "hot now", not "ever hot".
pub const DECAY_SECS: u32 = 60;
/// The longest gap the record holds (about 17 hours, code 255); longer gaps count as this.
pub const MAX_GAP_SECS: u32 = 61_439;
/// Codes per doubling of a gap in the record's log coding.
const GAP_CODES_PER_OCTAVE: f64 = 16.0;

const SECS_MASK: u64 = (1 << 24) - 1;

/// Whether accesses update the profile (`kelvin-profile-keys`, on by default). Off, an
/// access only stamps its time (OBJECT IDLETIME keeps working). Process-wide: the
/// setting of the node, read with one relaxed load per access.
static PROFILING: AtomicBool = AtomicBool::new(true);

/// Turns the profiler on or off for this process.
pub fn set_profiling(on: bool) {
    PROFILING.store(on, Ordering::Relaxed);
}

pub fn profiling() -> bool {
    PROFILING.load(Ordering::Relaxed)
}

/// The profile of one key. See the module documentation for the layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heat(u64);

impl Heat {
    /// Seconds since the last access (0 for a key never touched).
    pub fn idle_secs(self, now_ms: u64) -> u64 {
        if self.seen() == 0 && self.0 & SECS_MASK == 0 {
            return 0;
        }
        secs_between(self.last_secs(), now_ms)
    }

    fn last_secs(self) -> u32 {
        (self.0 & SECS_MASK) as u32
    }

    /// The counter as last stored (not decayed).
    pub fn counter(self) -> u8 {
        (self.0 >> 24) as u8
    }

    /// The counter decayed to `now_ms`: what the key is worth now.
    pub fn counter_at(self, now_ms: u64) -> u8 {
        let idle = self.idle_secs(now_ms);
        let steps = (idle / DECAY_SECS as u64).min(u8::MAX as u64) as u8;
        self.counter().saturating_sub(steps)
    }

    /// The moving average of the gaps between accesses, in seconds (0 until a second
    /// access).
    pub fn mean_gap_secs(self) -> u32 {
        self.mean_gap().round() as u32
    }

    /// The mean gap as the record holds it, in seconds.
    pub fn mean_gap(self) -> f64 {
        gap_decode((self.0 >> 32) as u8)
    }

    /// How much the gaps vary: the moving average of each gap's distance from the mean,
    /// in seconds (0 for a steady rhythm, or before a third access).
    pub fn gap_spread(self) -> f64 {
        gap_decode((self.0 >> 40) as u8)
    }

    /// The share of writes among recent accesses, 0..=255.
    pub fn write_share(self) -> u8 {
        (self.0 >> 48) as u8
    }

    /// Accesses seen, saturating at 255.
    pub fn seen(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// Records an access at `now_ms` (a read or a write).
    #[inline]
    pub fn touch(&mut self, now_ms: u64, write: bool) {
        self.touch_with(now_ms, write, profiling());
    }

    /// [`Heat::touch`] with the profiler on or off as given.
    #[inline]
    pub fn touch_with(&mut self, now_ms: u64, write: bool, profiling: bool) {
        let now_secs = ((now_ms / 1000) & SECS_MASK) as u32;
        if !profiling {
            self.0 = (self.0 & !SECS_MASK) | now_secs as u64;
            return;
        }
        let seen = self.seen();
        let (counter, gap, spread) = if seen == 0 {
            (COUNTER_INIT, 0, 0)
        } else {
            let idle = secs_between(self.last_secs(), now_ms).min(MAX_GAP_SECS as u64) as f64;
            let (mean, spread) = (self.mean_gap(), self.gap_spread());
            let (gap, spread) = match seen {
                1 => (idle, 0.0),
                // Weight 1/8 for the newest gap, as for the mean.
                _ => (
                    (mean * 7.0 + idle) / 8.0,
                    (spread * 7.0 + (idle - mean).abs()) / 8.0,
                ),
            };
            (self.counter_at(now_ms), gap_code(gap), gap_code(spread))
        };
        // A key's first access is its creation: it starts at COUNTER_INIT, as in Redis.
        let counter = match seen {
            0 => counter,
            _ => bump(counter, now_ms ^ self.0),
        };
        let share = self.write_share() as u32;
        let share = share - share / 8 + if write { 32 } else { 0 };
        self.0 = now_secs as u64
            | (counter as u64) << 24
            | (gap as u64) << 32
            | (spread as u64) << 40
            | (share.min(255) as u64) << 48
            | (seen.saturating_add(1) as u64) << 56;
    }

    /// This heat with its last access `idle_secs` before `now_ms` (RESTORE ... IDLETIME).
    pub fn with_idle(self, now_ms: u64, idle_secs: u64) -> Heat {
        let at = (now_ms / 1000).saturating_sub(idle_secs) & SECS_MASK;
        Heat((self.0 & !SECS_MASK) | at | (self.seen().max(1) as u64) << 56)
    }

    /// This heat with its counter set to `counter` (RESTORE ... FREQ).
    pub fn with_counter(self, counter: u8) -> Heat {
        Heat((self.0 & !(0xff << 24)) | (counter as u64) << 24 | (self.seen().max(1) as u64) << 56)
    }

    /// The eight bytes as one word.
    pub fn to_bits(self) -> u64 {
        self.0
    }

    pub fn from_bits(bits: u64) -> Heat {
        Heat(bits)
    }

    /// What a snapshot keeps: the last access and the counter (the low half). The
    /// rhythm and the write share rebuild from traffic after a restart.
    pub fn to_snapshot(self) -> u32 {
        self.0 as u32
    }

    /// The heat a snapshot kept ([`Heat::to_snapshot`]), counted as seen once.
    pub fn from_snapshot(bits: u32) -> Heat {
        let seen = if bits == 0 { 0 } else { 1u64 << 56 };
        Heat(bits as u64 | seen)
    }
}

/// The gap each code stands for, and where each code's rounding ends, computed once: an
/// access to a known key decodes two codes and encodes two, and `exp2`/`log2` were half
/// of its cost (~190 of 416 instructions per GET of a warm key).
struct GapCodes {
    /// `2^(c/16) - 1` seconds for code `c`.
    secs: [f64; 256],
    /// `2^((c + 0.5)/16)`: from this `1 + secs` on, the nearest code is above `c`.
    bounds: [f64; 255],
}

static GAP_CODES: std::sync::LazyLock<GapCodes> = std::sync::LazyLock::new(|| GapCodes {
    secs: std::array::from_fn(|c| (c as f64 / GAP_CODES_PER_OCTAVE).exp2() - 1.0),
    bounds: std::array::from_fn(|c| ((c as f64 + 0.5) / GAP_CODES_PER_OCTAVE).exp2()),
});

/// The record's code for a gap of `secs` seconds (the nearest of 2^(c/16) - 1).
fn gap_code(secs: f64) -> u8 {
    let x = 1.0 + secs.clamp(0.0, MAX_GAP_SECS as f64);
    // (Codes 0..=255: the largest gap, MAX_GAP_SECS, is past the last bound.)
    GAP_CODES.bounds.partition_point(|&b| b <= x) as u8
}

/// The gap, in seconds, that a code stands for.
fn gap_decode(code: u8) -> f64 {
    GAP_CODES.secs[code as usize]
}

/// Seconds from `last` (Unix seconds mod 2^24) to `now_ms`, across one wrap.
fn secs_between(last: u32, now_ms: u64) -> u64 {
    let now = ((now_ms / 1000) & SECS_MASK) as u32;
    (now.wrapping_sub(last) as u64) & SECS_MASK
}

/// The counter after one access: +1 with probability 1/((c - init) * factor + 1), the
/// dice from a cheap mix of the time and the old record (no rng state to share).
#[inline]
fn bump(counter: u8, entropy: u64) -> u8 {
    if counter == u8::MAX {
        return counter;
    }
    let base = counter.saturating_sub(COUNTER_INIT) as u64;
    let odds = base * LOG_FACTOR + 1;
    let dice = entropy.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    if dice.is_multiple_of(odds) {
        counter + 1
    } else {
        counter
    }
}

/// Buckets of the heat histogram: decayed counters `0`, `1-4`, `5-9`, `10-19`, `20-49`,
/// `50-99`, `100+` (5 is a new key's, 20 takes ~1,000 accesses in a row, 100 ~1M).
pub const HEAT_BUCKETS: [(u8, &str); 7] = [
    (0, "0"),
    (1, "1-4"),
    (5, "5-9"),
    (10, "10-19"),
    (20, "20-49"),
    (50, "50-99"),
    (100, "100+"),
];

/// The bucket of a decayed counter in [`HEAT_BUCKETS`].
pub fn bucket(counter: u8) -> usize {
    HEAT_BUCKETS
        .iter()
        .rposition(|&(low, _)| counter >= low)
        .unwrap_or(0)
}

/// The profile of one slot: what a migration plan and the operator look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotHeat {
    pub keys: u64,
    pub bytes: u64,
    /// Sum of the keys' decayed counters: the slot's heat.
    pub heat: u64,
    /// Keys per [`HEAT_BUCKETS`] bucket.
    pub histogram: [u64; HEAT_BUCKETS.len()],
    /// Keys with a TTL.
    pub volatile: u64,
    /// Sum of the keys' write shares (divide by keys for the slot's).
    pub write_share: u64,
}

impl SlotHeat {
    pub fn add(&mut self, heat: Heat, bytes: usize, volatile: bool, now_ms: u64) {
        let c = heat.counter_at(now_ms);
        self.keys += 1;
        self.bytes += bytes as u64;
        self.heat += c as u64;
        self.histogram[bucket(c)] += 1;
        self.volatile += volatile as u64;
        self.write_share += heat.write_share() as u64;
    }

    pub fn merge(&mut self, other: &SlotHeat) {
        self.keys += other.keys;
        self.bytes += other.bytes;
        self.heat += other.heat;
        for (a, b) in self.histogram.iter_mut().zip(other.histogram) {
            *a += b;
        }
        self.volatile += other.volatile;
        self.write_share += other.write_share;
    }
}

/// One of the hottest keys of a [`Profile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    pub db: usize,
    pub key: Vec<u8>,
    pub heat: Heat,
    /// The decayed counter when the profile was taken.
    pub counter: u8,
    pub bytes: usize,
}

/// A store's profile: per-slot summaries (non-empty slots only) and its hottest keys.
#[derive(Debug, Default)]
pub struct Profile {
    pub total: SlotHeat,
    pub slots: Vec<(usize, SlotHeat)>,
    /// Hottest first, at most the number asked for.
    pub hottest: Vec<HotKey>,
}

/// A key in the running top list: (decayed counter, smaller first, db, key, heat bits).
type Ranked = (u8, std::cmp::Reverse<usize>, usize, Vec<u8>, u64);

/// Folds every key of `store` into a [`Profile`] at `now_ms`, keeping the `top` hottest
/// keys. Walks the whole keyspace (an admin request, like KEYS): the caller holds the
/// store lock for that long.
pub fn profile(store: &super::Store, now_ms: u64, top: usize) -> Profile {
    let mut slots: Vec<SlotHeat> = vec![SlotHeat::default(); kelvin_protocol::SLOT_COUNT];
    // Min-heap of the hottest keys so far: (counter, bytes reversed) ranks a small hot key
    // above a big one of the same heat.
    let mut hottest: std::collections::BinaryHeap<std::cmp::Reverse<Ranked>> = Default::default();
    for (db, ks) in store.dbs() {
        for (slot, sh) in slots.iter_mut().enumerate() {
            let table = ks.slot(slot);
            for (key, entry) in table.map.iter() {
                let bytes = key.len() + entry.value.approx_bytes();
                sh.add(entry.heat, bytes, entry.expire_at != 0, now_ms);
                if top == 0 {
                    continue;
                }
                let c = entry.heat.counter_at(now_ms);
                let worse = hottest
                    .peek()
                    .is_some_and(|std::cmp::Reverse((hc, hb, ..))| {
                        (c, std::cmp::Reverse(bytes)) <= (*hc, *hb)
                    });
                if hottest.len() < top || !worse {
                    hottest.push(std::cmp::Reverse((
                        c,
                        std::cmp::Reverse(bytes),
                        db,
                        key.to_vec(),
                        entry.heat.to_bits(),
                    )));
                    if hottest.len() > top {
                        hottest.pop();
                    }
                }
            }
        }
    }
    let mut total = SlotHeat::default();
    let slots: Vec<(usize, SlotHeat)> = slots
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.keys > 0)
        .inspect(|(_, s)| total.merge(s))
        .collect();
    let mut hottest: Vec<HotKey> = hottest
        .into_iter()
        .map(
            |std::cmp::Reverse((counter, std::cmp::Reverse(bytes), db, key, bits))| HotKey {
                db,
                key,
                heat: Heat::from_bits(bits),
                counter,
                bytes,
            },
        )
        .collect();
    hottest.sort_by(|a, b| (b.counter, a.bytes).cmp(&(a.counter, b.bytes)));
    Profile {
        total,
        slots,
        hottest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_new_key_starts_warm_and_grows_logarithmically() {
        let mut h = Heat::default();
        assert_eq!((h.seen(), h.idle_secs(T0)), (0, 0));
        h.touch(T0, false);
        assert_eq!((h.counter(), h.seen()), (COUNTER_INIT, 1));
        for i in 1..10_000u64 {
            h.touch(T0 + i, false);
        }
        // ~10,000 accesses in 10 s: Redis's LFU with factor 10 reaches ~ 5 + 40.
        assert!((15..=60).contains(&h.counter()), "{}", h.counter());
        assert_eq!(h.seen(), 255);
        assert_eq!(h.write_share(), 0);
    }

    #[test]
    fn the_counter_decays_while_the_key_is_idle() {
        let mut h = Heat::default();
        for i in 0..2000u64 {
            h.touch(T0 + i * 10, true);
        }
        let hot = h.counter_at(T0 + 20_000);
        assert!(hot > COUNTER_INIT);
        let later = T0 + 20_000 + 5 * 60_000;
        assert_eq!(h.counter_at(later), hot - 5);
        // The last touch was at T0 + 19.99 s.
        assert_eq!(h.idle_secs(later), 301);
        assert_eq!(h.counter_at(T0 + 1000 * 60_000), 0);
        assert!(h.write_share() > 200, "{}", h.write_share());
    }

    #[test]
    fn the_rhythm_follows_a_steady_poll() {
        let mut h = Heat::default();
        // A tab polling every 30 s for half an hour.
        for i in 0..60u64 {
            h.touch(T0 + i * 30_000, i % 4 == 0);
        }
        assert_eq!(h.mean_gap_secs(), 30);
        assert!(h.gap_spread() < 1.0, "{}", h.gap_spread());
        assert!((40..=100).contains(&h.write_share()), "{}", h.write_share());
        // A long pause moves the mean by an eighth of the gap, within a code's step.
        h.touch(T0 + 60 * 30_000 + 830_000, false);
        let want = (30.0 * 7.0 + 860.0) / 8.0;
        assert!((h.mean_gap() / want - 1.0).abs() < 0.03, "{}", h.mean_gap());
        assert!((h.gap_spread() / (830.0 / 8.0) - 1.0).abs() < 0.03);
    }

    /// The tables answer as the formulas they were computed from.
    #[test]
    fn the_gap_tables_match_log2_and_exp2() {
        let by_log2 = |secs: f64| {
            let secs = secs.clamp(0.0, MAX_GAP_SECS as f64);
            (GAP_CODES_PER_OCTAVE * (1.0 + secs).log2())
                .round()
                .min(255.0) as u8
        };
        let mut secs = 0.0;
        while secs <= MAX_GAP_SECS as f64 + 10.0 {
            assert_eq!(gap_code(secs), by_log2(secs), "{secs}");
            secs += 0.013;
        }
        for s in 0..=MAX_GAP_SECS + 10 {
            assert_eq!(gap_code(s as f64), by_log2(s as f64), "{s}");
        }
        for c in 0..=255u8 {
            assert_eq!(gap_decode(c), (c as f64 / 16.0).exp2() - 1.0);
            assert_eq!(gap_code(gap_decode(c)), c);
        }
    }

    #[test]
    fn the_gap_codes_round_trip_within_a_step() {
        for secs in [0.0, 1.0, 2.0, 5.0, 30.0, 300.0, 3600.0, 40_000.0] {
            let back = gap_decode(gap_code(secs));
            assert!(
                (back - secs).abs() <= 0.023 * (1.0 + secs),
                "{secs} -> {back}"
            );
        }
        assert_eq!(gap_code(1e12), 255);
        assert_eq!(gap_code(-3.0), 0);
        // A rhythm that varies gets a spread; a steady one none.
        let mut h = Heat::default();
        let mut t = T0;
        for gap in [5u64, 60, 5, 60, 5, 60, 5, 60, 5, 60] {
            h.touch(t, false);
            t += gap * 1000;
        }
        assert!(h.gap_spread() > 10.0, "{}", h.gap_spread());
    }

    #[test]
    fn switched_off_an_access_only_stamps_its_time() {
        let mut h = Heat::default();
        h.touch(T0, false);
        let before = h;
        h.touch_with(T0 + 90_000, true, false);
        assert_eq!(h.counter(), before.counter());
        assert_eq!(h.seen(), before.seen());
        assert_eq!(h.idle_secs(T0 + 90_000), 0);
    }

    #[test]
    fn restore_sets_idle_time_and_frequency() {
        let mut h = Heat::default();
        h.touch(T0, true);
        let r = h.with_idle(T0, 600).with_counter(42);
        assert_eq!(r.idle_secs(T0), 600);
        assert_eq!(r.counter(), 42);
        assert_eq!(r.counter_at(T0), 42 - 10);
        assert_eq!(Heat::default().with_counter(3).seen(), 1);
    }

    #[test]
    fn snapshots_keep_the_low_half() {
        let mut h = Heat::default();
        for i in 0..100u64 {
            h.touch(T0 + i * 1000, false);
        }
        let back = Heat::from_snapshot(h.to_snapshot());
        assert_eq!(back.counter(), h.counter());
        assert_eq!(back.idle_secs(T0 + 200_000), h.idle_secs(T0 + 200_000));
        assert_eq!(Heat::from_snapshot(0), Heat::default());
    }

    #[test]
    fn slot_summaries_bucket_and_merge() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(5), 2);
        assert_eq!(bucket(255), 6);
        let mut h = Heat::default();
        h.touch(T0, true);
        let mut a = SlotHeat::default();
        a.add(h, 100, true, T0);
        a.add(Heat::default(), 50, false, T0);
        let mut b = SlotHeat::default();
        b.merge(&a);
        b.merge(&a);
        assert_eq!((b.keys, b.bytes, b.volatile), (4, 300, 2));
        assert_eq!(b.histogram[bucket(COUNTER_INIT)], 2);
        assert_eq!(b.heat, 2 * COUNTER_INIT as u64);
    }

    #[test]
    fn a_profile_ranks_small_hot_keys_first() {
        use crate::store::{Entry, Store, Value};
        let mut store = Store::default();
        for (key, touches, size) in [
            ("cold", 1, 10),
            ("hot", 5000, 10),
            ("big-hot", 5000, 5000),
            ("warm", 300, 10),
        ] {
            let mut e = Entry::new(Value::Str(vec![b'x'; size]));
            for i in 0..touches {
                e.heat.touch(T0 + i, false);
            }
            store.db(0).insert(key.as_bytes(), e);
        }
        let p = profile(&store, T0 + 5000, 3);
        let names: Vec<&[u8]> = p.hottest.iter().map(|k| &k.key[..]).collect();
        assert_eq!(names.len(), 3);
        assert_eq!(p.total.keys, 4);
        assert_eq!(p.slots.len(), 4.min(p.slots.len()));
        assert!(!names.contains(&&b"cold"[..]), "{names:?}");
        let (hot, big) = (&p.hottest[0], &p.hottest[1]);
        if hot.counter == big.counter {
            assert_eq!(hot.key, b"hot");
        }
        assert!(p.hottest.windows(2).all(|w| w[0].counter >= w[1].counter));
        assert_eq!(p.slots.iter().map(|(_, s)| s.keys).sum::<u64>(), 4);
    }
}
