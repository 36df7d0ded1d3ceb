//! A sample of the keys read lately, so that a migration knows its hottest keys at the
//! handover without a pass over the range (DESIGN.md "Resharding, step by step").
//!
//! One read in [`RECENT_EVERY`] copies its key into a ring of the last [`RECENT_KEYS`];
//! `KELVIN.MIGRATE-HOT` reads the ring at the source right after the handover, and the
//! target pushes the keys seen most often while the eager plan is still being ranked (a
//! third of a 1M-session range takes the source 250-350 ms to rank, chunk by chunk, and
//! about half of a move's fault-ins came in the first half second, on hot keys read
//! before their push). Leader-side soft state, like the heat counters: not replicated,
//! not in snapshots; a new leader starts with an empty ring.

use hashbrown::HashMap;

/// Keys the ring holds (half a minute of reads at 500 a second per group, a second at
/// tens of thousands). A ring of 16384 sampling one read in 2 (1,200-1,850 hot keys
/// per migration instead of 480-600) left as many fault-ins in the first 0.5 s of a
/// 1M-session move (96 and 114 against 114): those are first reads of keys no
/// profiler saw.
pub const RECENT_KEYS: usize = 4096;
/// One read in this many is sampled.
pub const RECENT_EVERY: u32 = 4;
/// Longer keys are not sampled (session keys are far shorter; the ring stays small).
pub const RECENT_KEY_MAX: usize = 256;

/// A key's times seen, the age of its newest sighting and what `take` gave for it;
/// `None` for a key `take` refused.
type Sighting<T> = Option<(u32, usize, T)>;

/// The ring. Slots are overwritten in place, so a full ring allocates nothing more.
#[derive(Debug, Default)]
pub struct RecentReads {
    ring: Vec<(u8, Vec<u8>)>,
    /// Where the next sample goes.
    next: usize,
    tick: u32,
}

impl RecentReads {
    /// A read of `key` in database `db` (sampled one in [`RECENT_EVERY`]).
    pub fn note(&mut self, db: usize, key: &[u8]) {
        self.tick = self.tick.wrapping_add(1);
        if !self.tick.is_multiple_of(RECENT_EVERY) || key.len() > RECENT_KEY_MAX {
            return;
        }
        // Databases are fewer than 256 (`store::DATABASES`).
        let db = db as u8;
        match self.ring.get_mut(self.next) {
            Some((d, k)) => {
                *d = db;
                k.clear();
                k.extend_from_slice(key);
            }
            None => self.ring.push((db, key.to_vec())),
        }
        self.next = (self.next + 1) % RECENT_KEYS;
    }

    /// At most `n` of the sampled keys that `take(db, key)` accepts (`Some`), with what
    /// it gave for them: the most often seen first, then the most recently seen. `take`
    /// is asked once per key.
    pub fn hottest<T>(
        &self,
        n: usize,
        take: impl Fn(usize, &[u8]) -> Option<T>,
    ) -> Vec<(usize, Vec<u8>, T)> {
        let mut seen: HashMap<(u8, &[u8]), Sighting<T>> = HashMap::new();
        let len = self.ring.len();
        for age in 0..len {
            // Newest first: the slot before `next`, going back.
            let i = (self.next + len * 2 - 1 - age) % len;
            let (db, key) = &self.ring[i];
            match seen.entry((*db, key.as_slice())) {
                hashbrown::hash_map::Entry::Occupied(mut e) => {
                    if let Some(s) = e.get_mut() {
                        s.0 += 1;
                    }
                }
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(take(usize::from(*db), key).map(|t| (1, age, t)));
                }
            }
        }
        let mut keys: Vec<_> = seen
            .into_iter()
            .filter_map(|(k, s)| Some((k, s?)))
            .collect();
        keys.sort_unstable_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
        keys.into_iter()
            .take(n)
            .map(|((db, key), (_, _, t))| (usize::from(db), key.to_vec(), t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys `hottest` gives, `take` a yes or no.
    fn hot(
        r: &RecentReads,
        n: usize,
        take: impl Fn(usize, &[u8]) -> bool,
    ) -> Vec<(usize, Vec<u8>)> {
        r.hottest(n, |db, key| take(db, key).then_some(()))
            .into_iter()
            .map(|(db, key, ())| (db, key))
            .collect()
    }

    fn read(r: &mut RecentReads, db: usize, key: &[u8]) {
        for _ in 0..RECENT_EVERY {
            r.note(db, key);
        }
    }

    #[test]
    fn the_most_read_come_first_then_the_latest() {
        let mut r = RecentReads::default();
        assert!(hot(&r, 10, |_, _| true).is_empty());
        for _ in 0..3 {
            read(&mut r, 0, b"hot");
        }
        read(&mut r, 0, b"old");
        read(&mut r, 1, b"hot");
        read(&mut r, 0, b"new");
        read(&mut r, 0, b"skipped");
        let all = hot(&r, 10, |_, k| k != b"skipped");
        let names: Vec<(usize, &[u8])> = all.iter().map(|(d, k)| (*d, k.as_slice())).collect();
        assert_eq!(
            names,
            vec![(0, &b"hot"[..]), (0, b"new"), (1, b"hot"), (0, b"old")]
        );
        assert_eq!(hot(&r, 1, |_, _| true), vec![(0, b"hot".to_vec())]);
        // `take` is asked once per key, and what it gives comes back with the key.
        let asked = std::cell::Cell::new(0);
        let sized = r.hottest(10, |_, key| {
            asked.set(asked.get() + 1);
            Some(key.len())
        });
        assert_eq!(asked.get(), 5);
        assert_eq!(sized[0], (0, b"hot".to_vec(), 3));
    }

    #[test]
    fn one_read_in_every_few_is_sampled_and_the_ring_is_bounded() {
        let mut r = RecentReads::default();
        for i in 0..RECENT_EVERY - 1 {
            r.note(0, format!("k{i}").as_bytes());
        }
        assert!(hot(&r, 10, |_, _| true).is_empty());
        r.note(0, b"sampled");
        assert_eq!(hot(&r, 10, |_, _| true), vec![(0, b"sampled".to_vec())]);
        // Long keys are never copied.
        read(&mut r, 0, &[b'x'; RECENT_KEY_MAX + 1]);
        assert_eq!(hot(&r, 10, |_, _| true).len(), 1);
        // Twice around the ring: it holds the last RECENT_KEYS samples, no more.
        for i in 0..RECENT_KEYS * 2 {
            read(&mut r, 0, format!("k{i}").as_bytes());
        }
        let kept = hot(&r, usize::MAX, |_, _| true);
        assert_eq!(kept.len(), RECENT_KEYS);
        assert_eq!(kept[0].1, format!("k{}", RECENT_KEYS * 2 - 1).into_bytes());
        assert!(!kept.iter().any(|(_, k)| k == b"sampled"));
    }
}
