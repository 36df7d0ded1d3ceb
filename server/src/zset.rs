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

    /// Members with the same score ordered by bytes, within lexicographic bounds
    /// (ZRANGEBYLEX). Bounds are on member bytes.
    pub fn range_by_lex<'a>(
        &'a self,
        min: Bound<&'a [u8]>,
        max: Bound<&'a [u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], f64)> + 'a {
        self.order
            .iter()
            .map(|(s, m)| (&m[..], s.0))
            .filter(move |(m, _)| {
                let above = match min {
                    Bound::Included(lo) => *m >= lo,
                    Bound::Excluded(lo) => *m > lo,
                    Bound::Unbounded => true,
                };
                let below = match max {
                    Bound::Included(hi) => *m <= hi,
                    Bound::Excluded(hi) => *m < hi,
                    Bound::Unbounded => true,
                };
                above && below
            })
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
}
