//! Keys a source never held: a Bloom filter of the keys of a migration's slots, made by
//! the source when it plans the eager push (after the seal, so the set is final: a
//! sealed slot takes no new key there), kept by the target's leader. A request for a
//! key the filter says the source never held (a new login, a session id never used)
//! needs no pull: the key settles as absent with the request's own write, in one log
//! round and without asking the old owner.
//!
//! How it fits: the source adds the filter of a chunk of slots to its
//! `KELVIN.MIGRATE-PLAN ... FILTER` reply (`cmd/migrate/`); the driver hands it to the
//! node ([`super::driver::Cluster::absent_keys`]), which keeps an [`Absent`]; a
//! connection's fault-in asks it before pulling (`conn/faultin.rs`). Only an
//! optimisation: a leader without it (new, restarted) pulls, as before; a false positive
//! (about 1%) pulls too.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Bits per key (about 1% false positives with [`HASHES`]).
const BITS_PER_KEY: usize = 10;
/// Hash functions (double hashing of one 64-bit hash).
const HASHES: u64 = 7;
/// Most migrations whose filters a node keeps (the oldest goes first).
pub const MAX_MIGRATIONS: usize = 64;
/// Largest filter accepted from a source (bytes): a chunk of slots at this many bits
/// per key holds far fewer keys than the log's entry bound.
pub const MAX_FILTER_BYTES: usize = 16 << 20;

/// A Bloom filter of `(db, key)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    bits: Vec<u64>,
}

/// FNV-1a of the database and the key, then mixed (splitmix64's finaliser): the same on
/// every node and build, unlike the standard library's seeded hashers.
fn hash(db: usize, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in (db as u32).to_le_bytes().iter().chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl KeyFilter {
    /// An empty filter sized for `keys` keys.
    pub fn with_capacity(keys: usize) -> KeyFilter {
        let words = (keys.max(1) * BITS_PER_KEY).div_ceil(64);
        KeyFilter {
            bits: vec![0; words],
        }
    }

    fn positions(&self, db: usize, key: &[u8]) -> [usize; HASHES as usize] {
        let h = hash(db, key);
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        let m = self.bits.len() as u64 * 64;
        std::array::from_fn(|i| (h1.wrapping_add((i as u64).wrapping_mul(h2)) % m) as usize)
    }

    pub fn insert(&mut self, db: usize, key: &[u8]) {
        for p in self.positions(db, key) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    /// `false`: `key` of `db` was surely never inserted.
    pub fn may_hold(&self, db: usize, key: &[u8]) -> bool {
        self.positions(db, key)
            .iter()
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    /// Little-endian words.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bits.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// `None` unless `bytes` is a whole number of words, at least one, within
    /// [`MAX_FILTER_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<KeyFilter> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() > MAX_FILTER_BYTES {
            return None;
        }
        let bits = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
            .collect();
        Some(KeyFilter { bits })
    }
}

/// A migration's filters by slot.
type SlotFilters = HashMap<u16, Arc<KeyFilter>>;

/// Per migration, the filter of each slot the target's leader has one for.
#[derive(Debug, Default)]
pub struct Absent {
    /// In the order the migrations came (oldest first).
    migrations: Mutex<Vec<(u64, SlotFilters)>>,
}

impl Absent {
    /// `filter` holds every key the source had in `slots` of `migration`.
    pub fn add(&self, migration: u64, slots: &[u16], filter: KeyFilter) {
        let filter = Arc::new(filter);
        let mut all = self.migrations.lock();
        let at = match all.iter().position(|(m, _)| *m == migration) {
            Some(at) => at,
            None => {
                if all.len() == MAX_MIGRATIONS {
                    all.remove(0);
                }
                all.push((migration, HashMap::new()));
                all.len() - 1
            }
        };
        let slots_of = &mut all[at].1;
        for &s in slots {
            slots_of.insert(s, filter.clone());
        }
    }

    /// Whether the source of `migration` surely never held `key` of `db` (its slot's
    /// filter is here and does not hold it).
    pub fn surely_absent(&self, migration: u64, db: usize, key: &[u8]) -> bool {
        let slot = kelvin_protocol::key_slot(key);
        let all = self.migrations.lock();
        all.iter()
            .find(|(m, _)| *m == migration)
            .and_then(|(_, slots)| slots.get(&slot))
            .is_some_and(|f| !f.may_hold(db, key))
    }

    /// The migration ended: its filters go.
    pub fn forget(&self, migration: u64) {
        self.migrations.lock().retain(|(m, _)| *m != migration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_holds_what_went_in_and_rarely_more() {
        let n = 5000;
        let mut f = KeyFilter::with_capacity(n);
        for i in 0..n {
            f.insert(0, format!("sess:{i}").as_bytes());
        }
        for i in 0..n {
            assert!(f.may_hold(0, format!("sess:{i}").as_bytes()));
        }
        // Another database is another key.
        let other_db = (0..n)
            .filter(|i| f.may_hold(1, format!("sess:{i}").as_bytes()))
            .count();
        let never = (n..n + 10_000)
            .filter(|i| f.may_hold(0, format!("sess:{i}").as_bytes()))
            .count();
        // About 1% at 10 bits per key and 7 hashes: well under 3% either way.
        assert!(never < 300, "{never} false positives of 10000");
        assert!(other_db < 150, "{other_db} of {n}");
        let back = KeyFilter::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn bad_filter_bytes_are_refused() {
        assert_eq!(KeyFilter::from_bytes(b""), None);
        assert_eq!(KeyFilter::from_bytes(b"1234567"), None);
        assert!(KeyFilter::from_bytes(&[0u8; 16]).is_some());
    }

    #[test]
    fn absent_answers_only_for_slots_with_a_filter() {
        let absent = Absent::default();
        let held = b"{a}:held".as_slice();
        let slot = kelvin_protocol::key_slot(held);
        let mut f = KeyFilter::with_capacity(10);
        f.insert(0, held);
        // No filter for the slot yet: nothing is known.
        assert!(!absent.surely_absent(7, 0, b"{a}:new"));
        absent.add(7, &[slot], f);
        assert!(absent.surely_absent(7, 0, b"{a}:new"));
        assert!(!absent.surely_absent(7, 0, held));
        // Another migration, or a key of a slot without a filter: unknown.
        assert!(!absent.surely_absent(8, 0, b"{a}:new"));
        assert!(!absent.surely_absent(7, 0, b"{zz}:new"));
        absent.forget(7);
        assert!(!absent.surely_absent(7, 0, b"{a}:new"));
        for m in 0..(MAX_MIGRATIONS as u64 + 1) {
            absent.add(100 + m, &[slot], KeyFilter::with_capacity(1));
        }
        assert!(!absent.surely_absent(100, 0, b"{a}:new"));
        assert!(absent.surely_absent(101, 0, b"{a}:new"));
    }
}
