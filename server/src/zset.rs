//! The sorted set: a member -> score map beside a `BTreeSet` ordered by (score, member),
//! which is Redis's order (equal scores sort by member bytes).
//!
//! Rank queries walk the tree (O(rank)); session stores keep small sorted sets (Spring
//! Session's expiry index), and an order-statistics tree can replace the `BTreeSet`
//! behind this same interface when a workload needs it.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use hashbrown::HashMap;

use crate::store::Blob;

/// A score with a total order. NaN never gets in: every path that makes a score
/// rejects it first (Redis answers "resulting score is not a number (NaN)").
#[derive(Debug, Clone, Copy)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // -0.0 and 0.0 are the same score to Redis.
        let (a, b) = (self.0 + 0.0, other.0 + 0.0);
        a.partial_cmp(&b).unwrap_or(Ordering::Equal)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ZSet {
    scores: HashMap<Blob, f64>,
    order: BTreeSet<(Score, Blob)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; returns true if the member is new.
    pub fn insert(&mut self, member: &[u8], score: f64) -> bool {
        // -0.0 is stored as 0.0: they are one score to Redis, and keeping the sign would
        // make ZSCORE answer "-0" for a member that compares equal to 0.
        let score = score + 0.0;
        match self.scores.get_mut(member) {
            Some(old) => {
                if *old != score {
                    let owned: Blob = member.into();
                    self.order.remove(&(Score(*old), owned.clone()));
                    self.order.insert((Score(score), owned));
                    *old = score;
                }
                false
            }
            None => {
                let owned: Blob = member.into();
                self.scores.insert(owned.clone(), score);
                self.order.insert((Score(score), owned));
                true
            }
        }
    }

    /// Removes `member`; returns true if it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.order.remove(&(Score(score), Blob::from(member)));
                true
            }
            None => false,
        }
    }

    /// Removes and returns the lowest (score, member) pair.
    pub fn pop_min(&mut self) -> Option<(Blob, f64)> {
        let (score, member) = self.order.pop_first()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }

    /// Removes and returns the highest (score, member) pair.
    pub fn pop_max(&mut self) -> Option<(Blob, f64)> {
        let (score, member) = self.order.pop_last()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }

    /// Members with their scores in no particular order (the member table's order): for
    /// ZSCAN, which orders by hash itself, and for lookups that do not need ranks.
    pub fn unordered(&self) -> impl Iterator<Item = (&[u8], f64)> {
        self.scores.iter().map(|(m, s)| (&m[..], *s))
    }

    /// 0-based rank in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(
            self.order
                .range(..(Score(score), Blob::from(member)))
                .count(),
        )
    }

    /// Members in ascending (score, member) order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> {
        self.order.iter().map(|(s, m)| (&m[..], s.0))
    }

    /// Members whose score lies within the bounds, ascending (reverse it for descending).
    pub fn range_by_score(
        &self,
        min: Bound<f64>,
        max: Bound<f64>,
    ) -> Box<dyn DoubleEndedIterator<Item = (&[u8], f64)> + '_> {
        // (score, "") sorts before every member of that score, so bounds on scores
        // become bounds on (score, member) pairs.
        let lowest = |s: f64| (Score(s), Blob::default());
        let start = match min {
            Bound::Included(lo) => Bound::Included(lowest(lo)),
            Bound::Excluded(lo) if lo == f64::INFINITY => return Box::new(std::iter::empty()),
            Bound::Excluded(lo) => Bound::Included(lowest(lo.next_up())),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match max {
            Bound::Included(hi) if hi == f64::INFINITY => Bound::Unbounded,
            Bound::Included(hi) => Bound::Excluded(lowest(hi.next_up())),
            Bound::Excluded(hi) => Bound::Excluded(lowest(hi)),
            Bound::Unbounded => Bound::Unbounded,
        };
        // BTreeSet::range panics on an inverted range; it is simply empty to Redis.
        let inverted = match (&start, &end) {
            (Bound::Included(a), Bound::Excluded(b)) => a >= b,
            _ => false,
        };
        if inverted {
            return Box::new(std::iter::empty());
        }
        Box::new(self.order.range((start, end)).map(|(s, m)| (&m[..], s.0)))
    }

    /// Members within lexicographic bounds on their bytes (ZRANGEBYLEX and friends),
    /// walking forward from the lowest member, or backward from the highest if `rev`.
    ///
    /// Lex ranges are meant for sets whose members all have the same score, where the
    /// order is the byte order. With mixed scores Redis's answer is "undefined"; this walk
    /// gives the answer Redis gives for its compact encoding: the range is empty unless
    /// the last member is >= min and the first <= max; forward, it starts at the first
    /// member >= min and stops at the first one > max (backward: from the last member
    /// <= max to the first one < min).
    pub fn range_by_lex<'a>(
        &'a self,
        min: Bound<&'a [u8]>,
        max: Bound<&'a [u8]>,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (&'a [u8], f64)> + 'a> {
        let above_min = move |m: &[u8]| match min {
            Bound::Included(lo) => m >= lo,
            Bound::Excluded(lo) => m > lo,
            Bound::Unbounded => true,
        };
        let below_max = move |m: &[u8]| match max {
            Bound::Included(hi) => m <= hi,
            Bound::Excluded(hi) => m < hi,
            Bound::Unbounded => true,
        };
        let empty_by_bounds = match (min, max) {
            (Bound::Included(lo), Bound::Included(hi)) => lo > hi,
            (
                Bound::Included(lo) | Bound::Excluded(lo),
                Bound::Included(hi) | Bound::Excluded(hi),
            ) => lo >= hi,
            _ => false,
        };
        let (Some((_, first)), Some((_, last))) = (self.order.first(), self.order.last()) else {
            return Box::new(std::iter::empty());
        };
        if empty_by_bounds || !above_min(last) || !below_max(first) {
            return Box::new(std::iter::empty());
        }
        if rev {
            Box::new(
                self.iter()
                    .rev()
                    .skip_while(move |(m, _)| !below_max(m))
                    .take_while(move |(m, _)| above_min(m)),
            )
        } else {
            Box::new(
                self.iter()
                    .skip_while(move |(m, _)| !above_min(m))
                    .take_while(move |(m, _)| below_max(m)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_rank_and_ranges() {
        let mut z = ZSet::default();
        assert!(z.insert(b"b", 2.0));
        assert!(z.insert(b"a", 2.0));
        assert!(z.insert(b"c", 1.0));
        assert!(!z.insert(b"c", 3.0));
        let order: Vec<&[u8]> = z.iter().map(|(m, _)| m).collect();
        assert_eq!(order, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(z.rank(b"c"), Some(2));
        let in_range: Vec<&[u8]> = z
            .range_by_score(Bound::Excluded(2.0), Bound::Unbounded)
            .map(|(m, _)| m)
            .collect();
        assert_eq!(in_range, vec![&b"c"[..]]);
        assert!(z.remove(b"a"));
        assert!(!z.remove(b"a"));
        assert_eq!(z.len(), 2);
    }

    #[test]
    fn pops_and_negative_zero() {
        let mut z = ZSet::default();
        z.insert(b"x", -0.0);
        assert!(z.score(b"x").is_some_and(|s| s.is_sign_positive()));
        z.insert(b"y", 5.0);
        z.insert(b"w", -5.0);
        assert_eq!(z.pop_min(), Some((Blob::from(&b"w"[..]), -5.0)));
        assert_eq!(z.pop_max(), Some((Blob::from(&b"y"[..]), 5.0)));
        assert_eq!(z.len(), 1);
        assert_eq!(z.score(b"y"), None);
        assert_eq!(z.unordered().count(), 1);
    }

    #[test]
    fn score_ranges_never_panic_on_odd_bounds() {
        let mut z = ZSet::default();
        for (i, m) in [b"a", b"b", b"c"].iter().enumerate() {
            z.insert(*m, i as f64);
        }
        let count = |min, max| z.range_by_score(min, max).count();
        assert_eq!(count(Bound::Included(2.0), Bound::Included(0.0)), 0);
        assert_eq!(count(Bound::Excluded(1.0), Bound::Excluded(1.0)), 0);
        assert_eq!(count(Bound::Excluded(f64::INFINITY), Bound::Unbounded), 0);
        assert_eq!(
            count(Bound::Unbounded, Bound::Excluded(f64::NEG_INFINITY)),
            0
        );
        assert_eq!(
            count(
                Bound::Included(f64::NEG_INFINITY),
                Bound::Included(f64::INFINITY)
            ),
            3
        );
        assert_eq!(count(Bound::Excluded(0.0), Bound::Included(2.0)), 2);
    }

    #[test]
    fn lex_ranges() {
        let mut z = ZSet::default();
        for m in [b"a", b"b", b"c", b"d"] {
            z.insert(m, 0.0);
        }
        let get = |min, max, rev| -> Vec<&[u8]> {
            z.range_by_lex(min, max, rev).map(|(m, _)| m).collect()
        };
        assert_eq!(
            get(
                Bound::Included(&b"b"[..]),
                Bound::Excluded(&b"d"[..]),
                false
            ),
            [b"b", b"c"]
        );
        assert_eq!(
            get(Bound::Included(&b"b"[..]), Bound::Excluded(&b"d"[..]), true),
            [b"c", b"b"]
        );
        assert_eq!(
            get(
                Bound::Excluded(&b"b"[..]),
                Bound::Excluded(&b"b"[..]),
                false
            )
            .len(),
            0
        );
        assert_eq!(
            get(
                Bound::Included(&b"d"[..]),
                Bound::Included(&b"a"[..]),
                false
            )
            .len(),
            0
        );
        assert_eq!(get(Bound::Unbounded, Bound::Unbounded, true).len(), 4);
        assert_eq!(
            get(Bound::Included(&b"e"[..]), Bound::Unbounded, false).len(),
            0
        );
    }
}
