//! Sessions: one hash per session key under `HSET`, `HGETALL`, `EXPIRE` and `DEL`.
//!
//! How it fits: [`check`] keeps the [`F::HSet`], [`F::HGetAll`], [`F::Expire`] and
//! [`F::Del`] operations, groups them by key and runs the shared linearizability search of
//! [`super::linear`] on each key with the whole hash as the state:
//!
//! - `hset {f: v, ...}` sets those fields (one atomic step); its result is not checked;
//! - `hincrby {f: 1}` adds one to the integer in field f (a missing field counts as 0);
//!   an `Ok` one must have returned the new value. A field `hincrby` touches is a
//!   counter: `hset` must not write it (reported as malformed), so that its values are
//!   the integers 0 ..= (the key's `hincrby`s) and the model can name each in advance;
//! - `hgetall` must return exactly the state (`{}` or `null` for a missing key);
//! - the state also says whether the key carries a TTL, as in Redis 7: `del` (and any
//!   deletion) removes the key with its TTL, `hset` on a missing key creates it without
//!   one, `hset` on an existing key keeps the one it has;
//! - `del` empties the hash; a recorded result (`0`/`1`) must match whether it existed;
//! - `expire ttl` with `ttl <= 0` deletes like `del` (its recorded result, if any, says
//!   whether the key existed); with `ttl > 0`, its recorded result (`1`/`0`, if any) must
//!   match whether the key existed, and on an existing key it sets the TTL. A key with a
//!   TTL may expire (vanish) at any later moment. Expiry is deliberately not tied to the
//!   TTL's length or to clocks: Kelvin expires on the leader's clock, which faults may
//!   skew. So after an `EXPIRE`, the key may vanish until a `DEL` or an expiry removes
//!   it, but never after, and it never comes back with old contents.
//!
//! As for registers: `Fail` operations are dropped, an `Info` `hgetall` is dropped, and
//! other `Info` operations may take effect any time after their invocation or never.
//! Before the search, a field value no `HSET` could have written is reported directly.
//! Together this catches lost `HSET`s (a later read without the field, with no `DEL` or
//! `EXPIRE` to explain it), values never written, and resurrected keys (old fields read
//! after an acknowledged `DEL`, with no `HSET` putting them back).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::linear::{self, Call, Model, Search};
use super::register::int_result;
use super::{explain_failure, Options, Problem, Reason, Verdict};
use crate::history::{Operation, Outcome, Value, F};

/// A hash's contents: (field id, value id) pairs sorted by field.
type Fields = Vec<(u32, u32)>;

/// The model's state: the hash, and whether it carries a TTL.
type State = (Fields, bool);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Input {
    Set(Fields),
    Read(Fields),
    /// `DEL`, or `EXPIRE` with `ttl <= 0`: whether the key existed, if recorded.
    Delete(Option<bool>),
    /// `EXPIRE` with `ttl > 0`: sets the TTL of an existing key; its recorded result,
    /// if any: whether the key existed.
    Expire(Option<bool>),
    /// The deletion a TTL may cause at any moment after the `EXPIRE` that set it.
    Expiry,
    /// `HINCRBY field 1`: the field, and the new value if recorded.
    Incr(u32, Option<i64>),
}

/// Stands for a field value no read returned (the interner never hands out this id).
const UNREAD: u32 = u32::MAX;

/// The hash's sequential specification, with states canonicalized for the search.
///
/// With `canonical`, a field value that no read returned (for that field) becomes
/// [`UNREAD`]: two states that differ only in such values fail the same reads (every
/// read, until the field is overwritten or the key deleted) and behave alike under every
/// other operation, so the search meets one configuration where it would meet many.
/// Without `canonical` (to show a failure's real state), this is the plain hash.
struct SessionModel {
    canonical: bool,
    /// (field, value) pairs some `Ok` read returned.
    read: HashSet<(u32, u32)>,
    /// Counter values: the value id of each integer 0 ..= the key's `hincrby`s, and back.
    counter_ids: Vec<u32>,
    counter_values: HashMap<u32, i64>,
    /// Fields `hincrby` touches (never canonicalized: their values are computed).
    counters: HashSet<u32>,
}

impl SessionModel {
    /// `counter_ids[i]` is the value id of the integer `i`.
    fn new(calls: &[Call<Input>], canonical: bool, counter_ids: Vec<u32>) -> SessionModel {
        let read = calls
            .iter()
            .filter_map(|c| match &c.input {
                Input::Read(h) => Some(h.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let counters = calls
            .iter()
            .filter_map(|c| match c.input {
                Input::Incr(f, _) => Some(f),
                _ => None,
            })
            .collect();
        let counter_values = counter_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as i64))
            .collect();
        SessionModel {
            canonical,
            read,
            counter_ids,
            counter_values,
            counters,
        }
    }

    fn canon(&self, (f, v): (u32, u32)) -> (u32, u32) {
        if self.canonical && !self.counters.contains(&f) && !self.read.contains(&(f, v)) {
            (f, UNREAD)
        } else {
            (f, v)
        }
    }
}

impl Model for SessionModel {
    type State = State;
    type Input = Input;

    fn step(&self, (hash, ttl): &State, input: &Input) -> Option<State> {
        match input {
            Input::Set(fields) => {
                let mut next = hash.clone();
                for &pair in fields {
                    let (f, v) = self.canon(pair);
                    match next.binary_search_by_key(&f, |&(f, _)| f) {
                        Ok(i) => next[i].1 = v,
                        Err(i) => next.insert(i, (f, v)),
                    }
                }
                // A new key has no TTL; an existing one keeps its own.
                Some((next, *ttl && !hash.is_empty()))
            }
            Input::Read(fields) => (fields == hash).then(|| (hash.clone(), *ttl)),
            Input::Delete(existed) => match existed {
                Some(e) if *e == hash.is_empty() => None,
                _ => Some((Vec::new(), false)),
            },
            Input::Expire(existed) => match existed {
                Some(e) if *e == hash.is_empty() => None,
                _ => Some((hash.clone(), *ttl || !hash.is_empty())),
            },
            // Without a TTL nothing expires: as if the expiry never happened.
            Input::Expiry if *ttl => Some((Vec::new(), false)),
            Input::Expiry => Some((hash.clone(), false)),
            Input::Incr(field, result) => {
                let at = hash.binary_search_by_key(field, |&(f, _)| f);
                let current = match at {
                    Ok(i) => self.counter_values.get(&hash[i].1).copied(),
                    Err(_) => Some(0),
                };
                // Not an integer: the server refuses, with no effect.
                let Some(next) = current.map(|c| c + 1) else {
                    return result.is_none().then(|| (hash.clone(), *ttl));
                };
                if result.is_some_and(|r| r != next) {
                    return None;
                }
                let id = *self.counter_ids.get(next as usize)?;
                let mut h = hash.clone();
                match at {
                    Ok(i) => h[i].1 = id,
                    Err(i) => h.insert(i, (*field, id)),
                }
                Some((h, *ttl && !hash.is_empty()))
            }
        }
    }

    fn read_only(&self, input: &Input) -> bool {
        // A delete or expire that found no key is accepted only on the empty hash, which
        // it keeps.
        matches!(
            input,
            Input::Read(_) | Input::Expire(Some(false)) | Input::Delete(Some(false))
        )
    }
}

#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    strings: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.ids.insert(s.to_string(), id);
        self.strings.push(s.to_string());
        id
    }

    fn text(&self, id: u32) -> &str {
        match id {
            UNREAD => "<a value nobody read>",
            _ => self.strings.get(id as usize).map_or("?", String::as_str),
        }
    }

    /// A recorded map as a hash; `None` if a value is not a scalar.
    fn hash(&mut self, map: &BTreeMap<String, Value>) -> Option<Fields> {
        let mut h = Vec::with_capacity(map.len());
        for (f, v) in map {
            let v = v.scalar_text()?;
            h.push((self.id(f), self.id(&v)));
        }
        h.sort_unstable();
        Some(h)
    }

    fn show_state(&self, (h, ttl): &State) -> String {
        let shown = self.show(h);
        if *ttl {
            format!("{shown} with a TTL")
        } else {
            shown
        }
    }

    fn show(&self, h: &Fields) -> String {
        if h.is_empty() {
            return "an empty (missing) hash".to_string();
        }
        let pairs: Vec<String> = h
            .iter()
            .map(|&(f, v)| format!("{:?}: {:?}", self.text(f), self.text(v)))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }
}

/// Checks every sessions key of `ops` (other workloads are ignored).
pub fn check(ops: &[Operation], options: &Options) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if matches!(op.f, F::HSet | F::HIncrBy | F::HGetAll | F::Expire | F::Del) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    let mut verdict = Verdict::default();
    for (key, key_ops) in by_key {
        verdict.keys += 1;
        verdict.ops += key_ops.len();
        verdict.problems.extend(check_key(key, &key_ops, options));
    }
    verdict.valid = verdict.problems.is_empty();
    verdict
}

/// The value ids of the integers 0 ..= `incrs`: every value a counter field can hold.
fn counter_ids(interner: &mut Interner, incrs: usize) -> Vec<u32> {
    (0..=incrs).map(|i| interner.id(&i.to_string())).collect()
}

/// An existence result (`DEL`, `EXPIRE`): `None` for `null`, `Err` if not a count.
fn existed(v: &Value) -> Result<Option<bool>, ()> {
    match v {
        Value::None => Ok(None),
        other => int_result(other).map(|n| Some(n > 0)).ok_or(()),
    }
}

/// The calls of one key's operations, in model terms, with the operation each comes
/// from (an `EXPIRE` may give two calls), and the problems of operations that cannot be
/// interpreted.
fn calls_of<'a>(
    key: &str,
    ops: &[&'a Operation],
    interner: &mut Interner,
) -> (Vec<Call<Input>>, Vec<&'a Operation>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut calls: Vec<Call<Input>> = Vec::new();
    let mut sources: Vec<&Operation> = Vec::new();
    let malformed = |what: &str, op: &Operation| {
        Problem::new(
            Reason::Malformed,
            format!("sessions key {key:?}: malformed {what}: {op}"),
        )
    };

    for &op in ops {
        if op.outcome == Outcome::Fail || (op.outcome == Outcome::Info && op.f == F::HGetAll) {
            continue;
        }
        let known = op.outcome == Outcome::Ok;
        let end = if known { op.complete } else { None };
        let mut push = |input: Input, end: Option<u64>| {
            calls.push(Call {
                start: op.invoke,
                end,
                input,
            });
            sources.push(op);
        };
        match op.f {
            F::HSet => match &op.input {
                Value::Map(m) if !m.is_empty() => match interner.hash(m) {
                    Some(h) => push(Input::Set(h), end),
                    None => problems.push(malformed("hset (values must be scalars)", op)),
                },
                _ => problems.push(malformed("hset (needs a non-empty map)", op)),
            },
            F::HIncrBy => {
                let incr = match &op.input {
                    Value::Map(m) if m.len() == 1 => m
                        .iter()
                        .next()
                        .filter(|(_, by)| int_result(by) == Some(1))
                        .map(|(f, _)| interner.id(f)),
                    _ => None,
                };
                let result = if known { int_result(&op.output) } else { None };
                match incr {
                    Some(_) if known && result.is_none() => {
                        problems.push(malformed("hincrby result (not an integer)", op))
                    }
                    Some(f) => push(Input::Incr(f, result), end),
                    None => problems.push(malformed("hincrby (needs {field: 1})", op)),
                }
            }
            F::HGetAll => {
                let read = match &op.output {
                    Value::None => Some(Vec::new()),
                    Value::Map(m) => interner.hash(m),
                    _ => None,
                };
                match read {
                    Some(h) => push(Input::Read(h), end),
                    None => problems.push(malformed("hgetall result (not a map)", op)),
                }
            }
            F::Del => match existed(if known { &op.output } else { &Value::None }) {
                Ok(e) => push(Input::Delete(e), end),
                Err(()) => problems.push(malformed("del result (not a count)", op)),
            },
            F::Expire => {
                let Some(ttl) = int_result(&op.input) else {
                    problems.push(malformed("expire (the TTL must be an integer)", op));
                    continue;
                };
                let result = if known { &op.output } else { &Value::None };
                let Ok(existed) = existed(result) else {
                    problems.push(malformed("expire result (not 0 or 1)", op));
                    continue;
                };
                if ttl <= 0 {
                    push(Input::Delete(existed), end);
                    continue;
                }
                push(Input::Expire(existed), end);
                if existed != Some(false) {
                    push(Input::Expiry, None);
                }
            }
            // Not a sessions function: `check` filters these out.
            _ => {}
        }
    }

    (calls, sources, problems)
}

fn check_key(key: &str, ops: &[&Operation], options: &Options) -> Vec<Problem> {
    let mut interner = Interner::default();
    let (mut calls, sources, mut problems) = calls_of(key, ops, &mut interner);
    let incrs = calls
        .iter()
        .filter(|c| matches!(c.input, Input::Incr(..)))
        .count();
    let counter_ids = counter_ids(&mut interner, incrs);
    let counters: HashSet<u32> = calls
        .iter()
        .filter_map(|c| match c.input {
            Input::Incr(f, _) => Some(f),
            _ => None,
        })
        .collect();
    for (call, op) in calls.iter().zip(&sources) {
        if let Input::Set(h) = &call.input {
            if h.iter().any(|(f, _)| counters.contains(f)) {
                problems.push(Problem::new(
                    Reason::Malformed,
                    format!(
                        "sessions key {key:?}: malformed hset (writes a field hincrby \
                         counts in): {op}"
                    ),
                ));
            }
        }
    }

    // Field values no hset could have written.
    let mut written: HashSet<(u32, u32)> = calls
        .iter()
        .filter_map(|c| match &c.input {
            Input::Set(h) => Some(h.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    for &f in &counters {
        written.extend(counter_ids[1..].iter().map(|&v| (f, v)));
    }
    for (call, op) in calls.iter().zip(&sources) {
        if let Input::Read(h) = &call.input {
            for &(f, v) in h {
                if !written.contains(&(f, v)) {
                    problems.push(Problem::new(
                        Reason::NeverWritten,
                        format!(
                            "sessions key {key:?}: read a value never written: field {:?} = {:?} \
                         in {op}",
                            interner.text(f),
                            interner.text(v)
                        ),
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return problems;
    }

    // Unknown hsets of unread values are alike: with equal inputs they are
    // interchangeable for the search.
    let model = SessionModel::new(&calls, true, counter_ids.clone());
    for c in calls.iter_mut() {
        if let (None, Input::Set(h)) = (c.end, &mut c.input) {
            for pair in h.iter_mut() {
                *pair = model.canon(*pair);
            }
        }
    }

    match linear::search(&model, (Vec::new(), false), &calls, options.limits()) {
        Search::Linearizable => {}
        Search::NotLinearizable(failure) => {
            // The real state after the prefix, not the canonical one: replay it.
            let plain = SessionModel::new(&calls, false, counter_ids);
            let state = failure
                .prefix
                .iter()
                .try_fold((Vec::new(), false), |state, &i| {
                    calls.get(i).and_then(|c| plain.step(&state, &c.input))
                });
            let shown = state.unwrap_or_else(|| failure.state.clone());
            problems.push(explain_failure(
                &format!("sessions key {key:?}"),
                &failure,
                &sources,
                &interner.show_state(&shown),
            ))
        }
        Search::GaveUp { steps, cached } => problems.push(Problem::new(
            Reason::Undecided,
            format!(
                "sessions key {key:?}: undecided: the linearizability search gave up after \
             {steps} steps and {cached} cached configurations ({} operations)",
                calls.len()
            ),
        )),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::register::tests::{brute, history, outcome};
    use crate::history::{pair, Kind};
    use proptest::prelude::*;

    fn small_map(bits: u8) -> Value {
        let mut pairs = Vec::new();
        if bits & 3 != 0 {
            pairs.push(("a", Value::Int(i64::from(bits & 3))));
        }
        if bits & 12 != 0 {
            pairs.push(("b", Value::Int(i64::from((bits >> 2) & 3))));
        }
        Value::map(pairs)
    }

    fn op_spec() -> impl Strategy<Value = (u32, u32, Kind, F, Value, Value)> {
        (any::<u32>(), any::<u32>(), 0u8..20, 0u8..5, 1u8..64, 0u8..3).prop_map(
            |(a, b, roll, f, bits, d)| {
                let count = [Value::Int(0), Value::Int(1), Value::None][d as usize].clone();
                let (f, input, output) = match f {
                    0 => (F::HSet, small_map((bits & 15).max(1)), Value::None),
                    1 => {
                        let mut read = small_map(bits & !(if d == 0 { 63 } else { 0 }));
                        let n = i64::from((bits >> 4) & 3);
                        if let (Value::Map(m), true) = (&mut read, n > 0 && d != 0) {
                            m.insert("n".into(), Value::Int(n));
                        }
                        (F::HGetAll, Value::None, read)
                    }
                    4 => (
                        F::HIncrBy,
                        Value::map([("n", 1)]),
                        Value::Int(i64::from(bits & 3) + 1),
                    ),
                    2 => (F::Del, Value::None, count),
                    _ => (
                        F::Expire,
                        Value::Int(if bits & 1 == 0 { 0 } else { 10 }),
                        count,
                    ),
                };
                (a, b, outcome(roll), f, input, output)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The search with all its pruning agrees with exhaustive enumeration on small
        /// random histories (valid and invalid ones, many ambiguous).
        #[test]
        fn agrees_with_brute_force(specs in prop::collection::vec(op_spec(), 1..7)) {
            let ops = history(&specs);
            let verdict = check(&pair(&ops).operations, &Options::default());
            let paired = pair(&ops);
            let refs: Vec<&Operation> = paired.operations.iter().collect();
            let mut interner = Interner::default();
            let (calls, _, problems) = calls_of("k", &refs, &mut interner);
            prop_assert!(problems.is_empty());
            let incrs = calls.iter().filter(|c| matches!(c.input, Input::Incr(..))).count();
            let ids = counter_ids(&mut interner, incrs);
            let expected = brute(&SessionModel::new(&calls, false, ids), (Vec::new(), false), &calls);
            prop_assert_eq!(verdict.valid, expected, "{:#?}\n{:#?}", ops, verdict);
        }
    }
}
