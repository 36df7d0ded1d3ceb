//! The linearizability search shared by the register and sessions checkers.
//!
//! How it fits: a checker turns one key's operations into [`Call`]s (an input for its
//! [`Model`], a start and an end in index order) and asks [`search`] whether some order of
//! them, consistent with real time, is a legal sequence of the model. This is the
//! Wing & Gong algorithm with Lowe's memoization, as in porcupine: the calls and returns
//! sit in a doubly linked list in time order; the candidates are the calls before the
//! first return; the search linearizes one the model accepts (lifting the call and its
//! return out of the list), starts over from the head, and backtracks when no candidate
//! is left. A cache of (set of linearized calls, model state) prunes configurations
//! already explored; the set is a bitset with an incrementally maintained Zobrist hash,
//! so a cache probe costs one hash-table lookup and a comparison.
//!
//! Two refinements for calls whose outcome is known:
//!
//! - a read-only candidate the model accepts (a read returning the current state) is
//!   linearized at once, with no alternative explored: if any order works from here, one
//!   with that read first works;
//! - other candidates are tried earliest return first, which in a valid history is most
//!   often the right guess.
//!
//! Calls with an unknown outcome (end at +infinity) are what makes such searches blow up:
//! each may take effect at any point after its start or never, so k of them pending could
//! make 2^k configurations at every point. They are handled apart:
//!
//! - the search succeeds once every call with a known end is linearized (the models
//!   accept an unknown call in any state, so the rest can always go last);
//! - they sit in a second list, and at each point they are tried only after the calls
//!   with a known end, so configurations that consumed fewer of them come first;
//! - the cache keeps, per (known calls linearized, state), the minimal sets of unknown
//!   calls consumed: a configuration that consumed a superset is dominated (same
//!   obligations, fewer options) and pruned;
//! - an unknown call is not linearized where it changes nothing, nor right before a call
//!   that reaches the same state without it; and unknown calls with equal inputs are
//!   interchangeable, so only the earliest pending one of each kind is tried.
//!
//! Every pruning only skips configurations that an explored one covers, so the answer is
//! exact; the unit tests of the checkers compare it with exhaustive enumeration on
//! thousands of small random histories. The search is bounded (steps and cache memory);
//! past the bound the answer is [`Search::GaveUp`], which the checkers report as a
//! problem, never as valid.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// A sequential specification: a state and the operations that change it.
pub(crate) trait Model {
    /// The model state; hashed and cloned on every step, keep it small.
    type State: Clone + Eq + Hash;
    /// What one call carries (its argument and, if known, its result).
    type Input: Eq + Hash;
    /// The state after `input` applied to `state`, or `None` if `input` (with its recorded
    /// result) is impossible in `state`.
    fn step(&self, state: &Self::State, input: &Self::Input) -> Option<Self::State>;

    /// True if `input` never changes the state where it is accepted (a read). Such a
    /// call, once accepted, is linearized without exploring alternatives; `false` is
    /// always correct.
    fn read_only(&self, input: &Self::Input) -> bool;
}

/// One call: its input and its real-time interval.
#[derive(Debug, Clone)]
pub(crate) struct Call<I> {
    /// Index of the invocation.
    pub start: u64,
    /// Index of the completion, `None` for +infinity (unknown outcome).
    pub end: Option<u64>,
    /// What the model gets.
    pub input: I,
}

/// Bounds on one search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Iterations of the main loop.
    pub max_steps: u64,
    /// Memory of the cache of explored configurations, in 64-bit words (approximate).
    pub max_cache_words: u64,
}

/// Where the search got stuck, for the explanation.
#[derive(Debug, Clone)]
pub(crate) struct Failure<S> {
    /// The linearization that got furthest (most calls with a known end), as indexes
    /// into the calls, in order.
    pub prefix: Vec<usize>,
    /// The model state after `prefix`.
    pub state: S,
    /// The call whose end was reached without being able to linearize it.
    pub blocker: Option<usize>,
    /// Calls tried right after `prefix` that the model refused (in that state).
    pub refused: Vec<usize>,
}

/// The answer of [`search`].
#[derive(Debug, Clone)]
pub(crate) enum Search<S> {
    /// Some legal order exists.
    Linearizable,
    /// None exists.
    NotLinearizable(Failure<S>),
    /// The bounds were hit first.
    GaveUp {
        /// Iterations done.
        steps: u64,
        /// Distinct configurations cached.
        cached: u64,
    },
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// SplitMix64: deterministic, well-spread per-call Zobrist keys.
fn zobrist(i: usize) -> u64 {
    let mut z = (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Is there an order of `calls` that `model` accepts from `init`, with every call
/// placed between its start and its end?
pub(crate) fn search<M: Model>(
    model: &M,
    init: M::State,
    calls: &[Call<M::Input>],
    limits: Limits,
) -> Search<M::State> {
    let n = calls.len();
    let unknown: Vec<bool> = calls.iter().map(|c| c.end.is_none()).collect();
    let mut known_left = unknown.iter().filter(|u| !**u).count();
    if known_left == 0 {
        return Search::Linearizable;
    }

    // The main list: calls and returns of the calls with a known end, in time order (at
    // equal times, which a well-formed history does not have, calls first). Node 0 is the
    // head; node k >= 1 is events[k - 1].
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * known_left);
    for (i, c) in calls.iter().enumerate() {
        if let Some(end) = c.end {
            events.push((c.start, 0, i));
            events.push((end.max(c.start), 1, i));
        }
    }
    events.sort_unstable();
    let len = events.len() + 1;
    let mut main = Links::new(len);
    let mut op_of = vec![0usize; len];
    let mut time_of = vec![0u64; len];
    let mut is_call = vec![false; len];
    let mut matching = vec![NIL; len];
    let mut call_node = vec![NIL; n];
    for (k, &(time, kind, i)) in events.iter().enumerate() {
        let node = k + 1;
        op_of[node] = i;
        time_of[node] = time;
        if kind == 0 {
            is_call[node] = true;
            call_node[i] = node;
        } else {
            // The call node precedes: calls sort first at equal times, start <= end.
            matching[call_node[i]] = node;
        }
    }

    // The unknown list. Unknown calls with equal inputs are interchangeable once both
    // started, so only the earliest pending one of each kind is in the list: the others
    // wait in `successor` chains (by start) and take its place when it is linearized.
    let mut order: Vec<usize> = (0..n).filter(|&i| unknown[i]).collect();
    order.sort_by_key(|&i| (calls[i].start, i));
    let mut u_op = vec![0usize; order.len() + 1];
    let mut successor = vec![NIL; order.len() + 1];
    let mut heads = Vec::new();
    let mut last: HashMap<&M::Input, usize> = HashMap::new();
    for (k, &i) in order.iter().enumerate() {
        let node = k + 1;
        u_op[node] = i;
        match last.insert(&calls[i].input, node) {
            Some(prev) => successor[prev] = node,
            None => heads.push(node),
        }
    }
    let mut pending = Links::chain(order.len() + 1, &heads);

    let hasher = RandomState::new();
    let mut linearized = Linearized::new(&unknown);
    let mut cache = Cache::default();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut state = init;
    let mut steps = 0u64;
    let mut best = Failure {
        prefix: Vec::new(),
        state: state.clone(),
        blocker: None,
        refused: Vec::new(),
    };
    let mut best_known = 0;
    let total_known = known_left;
    let mut at_best = true;
    let op_at = |cursor: Cursor| match cursor {
        Cursor::Forced(e) | Cursor::Main(_, e) => op_of[e],
        Cursor::Unknown(u, _) => u_op[u],
    };
    // Per depth: the candidate calls of the main list, earliest return first, and the
    // first return node (which ends the candidates).
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    let mut first_return: Vec<usize> = Vec::new();

    let mut cursor = Cursor::Forced(main.next[HEAD]);
    while known_left > 0 {
        steps += 1;
        if steps > limits.max_steps || cache.words > limits.max_cache_words {
            return Search::GaveUp {
                steps,
                cached: cache.configurations,
            };
        }
        // Find the candidate under the cursor, or move on to the next kind of candidate.
        let candidate = match cursor {
            Cursor::Forced(e) if e != NIL && is_call[e] => {
                let input = &calls[op_of[e]].input;
                if model.read_only(input) && model.step(&state, input).is_some() {
                    Some(op_of[e])
                } else {
                    cursor = Cursor::Forced(main.next[e]);
                    continue;
                }
            }
            Cursor::Forced(end) => {
                // No forced move. Try every candidate, the earliest return first: in a
                // valid history that is most often the right order, which matters as a
                // wrong guess is only found out later.
                let depth = stack.len();
                if candidates.len() <= depth {
                    candidates.resize_with(depth + 1, Vec::new);
                    first_return.resize(depth + 1, NIL);
                }
                let list = &mut candidates[depth];
                list.clear();
                let mut e = main.next[HEAD];
                while e != end {
                    list.push(e);
                    e = main.next[e];
                }
                list.sort_by_key(|&c| time_of[matching[c]]);
                first_return[depth] = end;
                cursor = Cursor::Main(0, list.first().copied().unwrap_or(NIL));
                continue;
            }
            Cursor::Main(k, e) if k < candidates[stack.len()].len() => Some(op_of[e]),
            Cursor::Main(..) => {
                let e = first_return[stack.len()];
                // The first return: its call must come first, so calls started after it
                // cannot; before backtracking, try the unknown calls started before it.
                // (A call's return follows it, so the scan never runs off the end while
                // calls are left; NIL is treated as a return at +infinity.)
                if at_best && best.blocker.is_none() && e != NIL {
                    best.blocker = Some(op_of[e]);
                }
                let barrier = if e == NIL { u64::MAX } else { time_of[e] };
                cursor = Cursor::Unknown(pending.next[HEAD], barrier);
                continue;
            }
            Cursor::Unknown(u, barrier) if u != NIL => {
                if calls[u_op[u]].start > barrier {
                    cursor = Cursor::Unknown(pending.next[u], barrier);
                    continue;
                }
                Some(u_op[u])
            }
            Cursor::Unknown(..) => None,
        };
        let accepted = candidate.and_then(|i| {
            let new_state = model.step(&state, &calls[i].input);
            if new_state.is_none() && at_best && matches!(cursor, Cursor::Main(..)) {
                best.refused.push(i);
            }
            new_state.map(|s| (i, s))
        });
        let forced = matches!(cursor, Cursor::Forced(_));
        let mut fail = candidate.is_none();
        if let Some((i, new_state)) = accepted {
            let redundant = (unknown[i] && new_state == state)
                || stack.last().is_some_and(|top| {
                    unknown[op_at(top.cursor)]
                        && model.step(&top.state, &calls[i].input).as_ref() == Some(&new_state)
                });
            linearized.flip(i);
            let hash = linearized.known_hash ^ hasher.hash_one(&new_state).rotate_left(17);
            if !redundant && cache.visit(hash, &linearized, &new_state) {
                let old = std::mem::replace(&mut state, new_state);
                stack.push(Frame {
                    cursor,
                    state: old,
                    forced,
                });
                match cursor {
                    Cursor::Forced(e) | Cursor::Main(_, e) => {
                        known_left -= 1;
                        main.lift(matching[e]);
                        main.lift(e);
                    }
                    Cursor::Unknown(u, _) => match successor[u] {
                        NIL => pending.lift(u),
                        next => pending.replace(u, next),
                    },
                }
                cursor = Cursor::Forced(main.next[HEAD]);
                if total_known - known_left > best_known {
                    best_known = total_known - known_left;
                    best.prefix = stack.iter().map(|f| op_at(f.cursor)).collect();
                    best.state = state.clone();
                    best.blocker = None;
                    best.refused.clear();
                    at_best = true;
                } else {
                    at_best = false;
                }
                continue;
            }
            linearized.flip(i);
            // A forced move that leads nowhere new means this configuration leads
            // nowhere: the move could always have come first.
            fail = forced;
        } else if candidate.is_some() && forced {
            // Unreachable: the forced scan only stops at accepted calls.
            fail = true;
        }
        if !fail {
            cursor = match cursor {
                Cursor::Forced(e) => Cursor::Forced(main.next[e]),
                Cursor::Main(k, _) => main_at(&candidates[stack.len()], k + 1),
                Cursor::Unknown(u, barrier) => Cursor::Unknown(pending.next[u], barrier),
            };
            continue;
        }
        // Backtrack: undo the last move, and the one before it as long as the undone
        // move was forced (no alternative to it was worth trying).
        at_best = false;
        loop {
            let Some(top) = stack.pop() else {
                return Search::NotLinearizable(best);
            };
            let j = op_at(top.cursor);
            if !unknown[j] {
                known_left += 1;
            }
            state = top.state;
            linearized.flip(j);
            cursor = match top.cursor {
                Cursor::Forced(e) | Cursor::Main(_, e) => {
                    main.unlift(e);
                    main.unlift(matching[e]);
                    match top.cursor {
                        Cursor::Main(k, _) => main_at(&candidates[stack.len()], k + 1),
                        // Not resumed: a forced frame is popped right through.
                        _ => Cursor::Forced(NIL),
                    }
                }
                Cursor::Unknown(u, barrier) => {
                    pending.unlift(u);
                    Cursor::Unknown(pending.next[u], barrier)
                }
            };
            if !top.forced {
                break;
            }
        }
    }
    Search::Linearizable
}

/// The `k`-th candidate of `list` as a cursor (node NIL past the end).
fn main_at(list: &[usize], k: usize) -> Cursor {
    Cursor::Main(k, list.get(k).copied().unwrap_or(NIL))
}

/// Where the scan is.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// In the main list, looking only for a read-only call that the model accepts (a
    /// read that matches): it can be linearized right away with no alternative to
    /// explore. If any order from here works, one with this call first works: moving a
    /// read-only call earlier, to where it is accepted and everything it must follow is
    /// done, changes no state the others see.
    Forced(usize),
    /// The k-th candidate of the main list (node e), trying every candidate.
    Main(usize, usize),
    /// In the unknown list, with the time of the first return in the main list (only
    /// unknown calls started by then are candidates).
    Unknown(usize, u64),
}

/// A move on the stack: where it was made, the state before it, and whether it was
/// forced.
struct Frame<S> {
    cursor: Cursor,
    state: S,
    forced: bool,
}

/// A doubly linked list over nodes `0..len`, node 0 the head, initially in index order.
/// Removals are undone in reverse order (dancing links).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    /// Nodes `0..len` linked in index order.
    fn new(len: usize) -> Links {
        let all: Vec<usize> = (1..len).collect();
        Links::chain(len, &all)
    }

    /// The head, then `nodes` in that order; other nodes are unlinked.
    fn chain(len: usize, nodes: &[usize]) -> Links {
        let mut links = Links {
            next: vec![NIL; len],
            prev: vec![NIL; len],
        };
        let mut last = HEAD;
        for &node in nodes {
            links.next[last] = node;
            links.prev[node] = last;
            last = node;
        }
        links
    }

    /// Puts `s` (unlinked) where `e` is; undone by [`Links::unlift`] of `e`, which
    /// restores `e` in the same way as after [`Links::lift`].
    fn replace(&mut self, e: usize, s: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = s;
        self.prev[s] = p;
        self.next[s] = n;
        if n != NIL {
            self.prev[n] = s;
        }
    }

    /// Unlinks `e` (never the head); its own links are kept for [`Links::unlift`].
    fn lift(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Relinks `e`, undoing the last [`Links::lift`] not undone yet.
    fn unlift(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }
}

/// The set of linearized calls: a bitset of the calls with a known end (hashed
/// incrementally) and a separate bitset of the unknown ones.
struct Linearized {
    known: Vec<u64>,
    unknown: Vec<u64>,
    known_hash: u64,
    /// Per call: whether its end is unknown, and its position in its bitset.
    slot: Vec<(bool, usize)>,
}

impl Linearized {
    fn new(unknown: &[bool]) -> Linearized {
        let (mut k, mut u) = (0, 0);
        let slot: Vec<(bool, usize)> = unknown
            .iter()
            .map(|&is_unknown| {
                let counter = if is_unknown { &mut u } else { &mut k };
                *counter += 1;
                (is_unknown, *counter - 1)
            })
            .collect();
        Linearized {
            known: vec![0; k.div_ceil(64)],
            unknown: vec![0; u.div_ceil(64)],
            known_hash: 0,
            slot,
        }
    }

    /// Adds call `i` if absent, removes it if present.
    fn flip(&mut self, i: usize) {
        let (is_unknown, s) = self.slot[i];
        if is_unknown {
            self.unknown[s / 64] ^= 1 << (s % 64);
        } else {
            self.known[s / 64] ^= 1 << (s % 64);
            self.known_hash ^= zobrist(s);
        }
    }
}

/// Configurations explored (or being explored, on the stack), for pruning.
///
/// Keyed by (calls with a known end linearized, state); each key keeps the minimal sets
/// of unknown calls it was reached with. A configuration whose unknown set contains one
/// of those is dominated: it has the same future obligations and fewer options.
struct Cache<S> {
    table: HashTable<CacheEntry<S>>,
    /// Distinct configurations recorded.
    configurations: u64,
    /// 64-bit words held in bitsets.
    words: u64,
}

impl<S> Default for Cache<S> {
    fn default() -> Self {
        Cache {
            table: HashTable::new(),
            configurations: 0,
            words: 0,
        }
    }
}

struct CacheEntry<S> {
    hash: u64,
    known: Box<[u64]>,
    state: S,
    unknown_sets: Vec<Box<[u64]>>,
}

/// Approximate size of a cache entry apart from its bitsets, in 64-bit words.
const ENTRY_WORDS: u64 = 12;

/// True if every bit of `a` is in `b`.
fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(a, b)| a & !b == 0)
}

impl<S: Eq + Clone> Cache<S> {
    /// Records the configuration; false if it (or one dominating it) was seen before.
    fn visit(&mut self, hash: u64, linearized: &Linearized, state: &S) -> bool {
        let unknown = &linearized.unknown[..];
        let found = self.table.find_mut(hash, |c| {
            c.hash == hash && c.state == *state && c.known[..] == linearized.known[..]
        });
        match found {
            Some(entry) => {
                if entry.unknown_sets.iter().any(|s| subset(s, unknown)) {
                    return false;
                }
                let before = entry.unknown_sets.len();
                entry.unknown_sets.retain(|s| !subset(unknown, s));
                let dropped = (before - entry.unknown_sets.len()) * unknown.len();
                self.words = self.words.saturating_sub(dropped as u64);
                entry.unknown_sets.push(unknown.into());
            }
            None => {
                let entry = CacheEntry {
                    hash,
                    known: linearized.known[..].into(),
                    state: state.clone(),
                    unknown_sets: vec![unknown.into()],
                };
                self.table.insert_unique(hash, entry, |c| c.hash);
                // The bitset, and roughly the entry and its table slot.
                self.words += linearized.known.len() as u64 + ENTRY_WORDS;
            }
        }
        self.configurations += 1;
        self.words += unknown.len() as u64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of small integers: `(Some(v), _)` writes v, `(None, r)` reads r.
    struct Reg;
    impl Model for Reg {
        type State = i64;
        type Input = (Option<i64>, i64);
        fn step(&self, state: &i64, input: &(Option<i64>, i64)) -> Option<i64> {
            match input {
                (Some(v), _) => Some(*v),
                (None, r) if r == state => Some(*state),
                _ => None,
            }
        }

        fn read_only(&self, input: &(Option<i64>, i64)) -> bool {
            input.0.is_none()
        }
    }

    const LIMITS: Limits = Limits {
        max_steps: 1_000_000,
        max_cache_words: 1_000_000,
    };

    fn call(start: u64, end: Option<u64>, input: (Option<i64>, i64)) -> Call<(Option<i64>, i64)> {
        Call { start, end, input }
    }

    #[test]
    fn concurrent_write_and_read() {
        let calls = [call(0, Some(3), (Some(1), 0)), call(1, Some(2), (None, 1))];
        assert!(matches!(
            search(&Reg, 0, &calls, LIMITS),
            Search::Linearizable
        ));
        let calls = [call(0, Some(3), (Some(1), 0)), call(1, Some(2), (None, 0))];
        assert!(matches!(
            search(&Reg, 0, &calls, LIMITS),
            Search::Linearizable
        ));
    }

    #[test]
    fn stale_read_is_caught_with_its_blocker() {
        let calls = [
            call(0, Some(1), (Some(1), 0)),
            call(2, Some(3), (Some(2), 0)),
            call(4, Some(5), (None, 1)),
        ];
        match search(&Reg, 0, &calls, LIMITS) {
            Search::NotLinearizable(f) => {
                assert_eq!(f.prefix, vec![0, 1]);
                assert_eq!(f.state, 2);
                assert_eq!(f.blocker, Some(2));
                assert_eq!(f.refused, vec![2]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_end_may_take_effect_late_or_never() {
        // write 5 (unknown) before two reads: 0 then 5 is fine, 5 then 0 is not.
        let late = [
            call(0, None, (Some(5), 0)),
            call(1, Some(2), (None, 0)),
            call(3, Some(4), (None, 5)),
        ];
        assert!(matches!(
            search(&Reg, 0, &late, LIMITS),
            Search::Linearizable
        ));
        let never = [call(0, None, (Some(5), 0)), call(1, Some(2), (None, 0))];
        assert!(matches!(
            search(&Reg, 0, &never, LIMITS),
            Search::Linearizable
        ));
        let back = [
            call(0, None, (Some(5), 0)),
            call(1, Some(2), (None, 5)),
            call(3, Some(4), (None, 0)),
        ];
        assert!(matches!(
            search(&Reg, 0, &back, LIMITS),
            Search::NotLinearizable(_)
        ));
    }

    #[test]
    fn gives_up_past_the_step_limit() {
        let calls: Vec<_> = (0..40).map(|i| call(0, Some(100), (Some(i), 0))).collect();
        let mut calls = calls;
        calls.push(call(101, Some(102), (None, 1000)));
        let tight = Limits {
            max_steps: 1000,
            max_cache_words: 1_000_000,
        };
        assert!(matches!(
            search(&Reg, 0, &calls, tight),
            Search::GaveUp { .. }
        ));
    }
}
