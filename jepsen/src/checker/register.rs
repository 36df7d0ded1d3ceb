//! Per-key linearizability of string registers: `GET`, `SET`, `INCR`, `DEL`.
//!
//! How it fits: [`check`] takes the paired history, keeps the register operations
//! ([`F::Read`], [`F::Write`], [`F::Incr`], [`F::Delete`]), splits them by key (keys are
//! independent objects, so the history is linearizable iff each key's is) and runs the
//! shared search of [`super::linear`] with this model:
//!
//! - the state is nil or a value; scalars compare by canonical text (`5` == `"5"`);
//! - `write v` sets v; `delete` sets nil, and if its result is recorded (`0`/`1`) it must
//!   match whether the key existed; `read` must return the state (nil for nil);
//! - `incr` turns nil into 1 and an integer i into i + 1, and an `Ok` incr must have
//!   returned exactly that; on a non-integer (or at `i64::MAX`) the server refuses, so an
//!   `Ok` incr there is impossible and an unknown one has no effect;
//! - `cas old new` (`WATCH`, `GET` -> old, `MULTI`, `SET new`, `EXEC`) takes effect only
//!   where the state is `old` (the transaction runs only if the key is unchanged since
//!   the `WATCH`), and sets `new`; an unknown one elsewhere aborts, with no effect; an
//!   aborted one is `Fail` and dropped.
//!
//! Outcomes: `Fail` operations are dropped (they did not happen); an `Info` read imposes
//! nothing and is dropped; an `Info` write, incr or delete ends at +infinity, so it may
//! take effect anywhere after its invocation or not at all. Two cheap steps come before
//! the search: a read of a value no write could have produced is reported directly
//! ("never written"), and the `Info` writes of values no read (or incr) can observe get
//! one placeholder value, or are dropped if nothing but reads looks at the key. The
//! search's states are canonicalized the same way (see `RegisterModel`). None of this
//! changes the verdict; it shrinks the search.
//!
//! On failure the problem names the key, the longest linearizable prefix the search found
//! (its last operations and the state it leaves), and the operation that could not be
//! placed before its completion.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::linear::{self, Call, Model, Search};
use super::{explain_failure, Options, Problem, Reason, Verdict};
use crate::history::{Operation, Outcome, Value, Workload, F};

/// A register value: nil, an integer, or an interned non-integer string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Reg {
    Nil,
    Int(i64),
    Str(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Input {
    Write(Reg),
    Read(Reg),
    /// The recorded result of an `Ok` incr, `None` if unknown.
    Incr(Option<i64>),
    /// Whether the key existed, if the result was recorded.
    Delete(Option<bool>),
    /// Compare-and-set: the value read under `WATCH`, the value written.
    Cas(Reg, Reg),
}

/// The register's sequential specification, with states canonicalized for the search.
///
/// With `canonical`, a state no later observation can tell apart from "some value nobody
/// reads" becomes [`UNREAD`], so the search meets one configuration where it would meet
/// many (say, every integer that unknown incrs could carry an unread value to). A
/// non-integer is unobservable when no read returned it; an integer x when no read
/// returned x .. x + c and no `Ok` incr returned x + 1 .. x + c + 1, c being the number of
/// unknown incrs of the key (all that could ever add to it); with no incrs at all, when no
/// read returned x. From such a state, every state reachable fails every read and `Ok`
/// incr, is non-nil for deletes and ignores unknown incrs or turns into another such
/// state, exactly like [`UNREAD`] (a non-integer nobody reads). Without `canonical`
/// (to show a failure's real state), this is the plain register.
struct RegisterModel {
    canonical: bool,
    /// Values `Ok` reads returned.
    read: HashSet<Reg>,
    /// Integers `Ok` reads and `Ok` incrs returned, sorted.
    observed_ints: Vec<i64>,
    /// Incrs with an unknown outcome.
    unknown_incrs: i64,
    /// Whether the key has incrs at all.
    any_incr: bool,
}

impl RegisterModel {
    fn new(calls: &[Call<Input>], canonical: bool) -> RegisterModel {
        let mut model = RegisterModel {
            canonical,
            read: HashSet::new(),
            observed_ints: Vec::new(),
            unknown_incrs: 0,
            any_incr: false,
        };
        for c in calls {
            match c.input {
                Input::Read(v) => {
                    model.read.insert(v);
                    if let Reg::Int(i) = v {
                        model.observed_ints.push(i);
                    }
                }
                Input::Incr(result) => {
                    model.any_incr = true;
                    match result {
                        Some(r) => model.observed_ints.push(r),
                        None => model.unknown_incrs += 1,
                    }
                }
                // The value a cas read is observed like a read's.
                Input::Cas(old, _) => {
                    model.read.insert(old);
                    if let Reg::Int(i) = old {
                        model.observed_ints.push(i);
                    }
                }
                Input::Write(_) | Input::Delete(_) => {}
            }
        }
        model.observed_ints.sort_unstable();
        model
    }

    fn unobservable(&self, v: Reg) -> bool {
        match v {
            Reg::Nil => false,
            Reg::Str(_) => !self.read.contains(&v),
            Reg::Int(_) if !self.any_incr => !self.read.contains(&v),
            Reg::Int(x) => {
                let from = self.observed_ints.partition_point(|&o| o < x);
                let last = x.saturating_add(self.unknown_incrs).saturating_add(1);
                self.observed_ints.get(from).is_none_or(|&o| o > last)
            }
        }
    }

    fn canon(&self, v: Reg) -> Reg {
        if self.canonical && self.unobservable(v) {
            UNREAD
        } else {
            v
        }
    }
}

impl Model for RegisterModel {
    type State = Reg;
    type Input = Input;

    fn step(&self, state: &Reg, input: &Input) -> Option<Reg> {
        match *input {
            Input::Write(v) => Some(self.canon(v)),
            Input::Read(v) => (v == *state).then_some(*state),
            Input::Incr(result) => {
                let next = match *state {
                    Reg::Nil => Some(1),
                    Reg::Int(i) => i.checked_add(1),
                    Reg::Str(_) => None,
                };
                match (result, next) {
                    (Some(r), Some(n)) => (r == n).then_some(Reg::Int(n)),
                    (Some(_), None) => None,
                    (None, Some(n)) => Some(self.canon(Reg::Int(n))),
                    // The server refuses the incr: no effect.
                    (None, None) => Some(*state),
                }
            }
            Input::Delete(existed) => match existed {
                Some(e) if e != (*state != Reg::Nil) => None,
                _ => Some(Reg::Nil),
            },
            // Where the state is not `old` the transaction aborts: impossible for an `Ok`
            // one; the search offers unknown calls as optional, so `None` means "not
            // here" for them too.
            Input::Cas(old, new) => (old == *state).then(|| self.canon(new)),
        }
    }

    fn read_only(&self, input: &Input) -> bool {
        // A delete that found no key is accepted only on nil, which it keeps.
        matches!(input, Input::Read(_) | Input::Delete(Some(false)))
    }
}

/// Interns non-integer strings; integers in canonical form stay integers so that `INCR`
/// can work on them.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    strings: Vec<String>,
}

impl Interner {
    /// The register value for a recorded scalar, `None` for a list or a map.
    fn value(&mut self, v: &Value) -> Option<Reg> {
        let text = match v {
            Value::None => return Some(Reg::Nil),
            Value::Int(i) => return Some(Reg::Int(*i)),
            Value::Str(s) => s,
            Value::List(_) | Value::Map(_) => return None,
        };
        if let Ok(i) = text.parse::<i64>() {
            if i.to_string() == *text {
                return Some(Reg::Int(i));
            }
        }
        let next = self.strings.len() as u32;
        let id = *self.ids.entry(text.clone()).or_insert(next);
        if id == next {
            self.strings.push(text.clone());
        }
        Some(Reg::Str(id))
    }

    fn show(&self, r: &Reg) -> String {
        match r {
            Reg::Nil => "nil".to_string(),
            Reg::Int(i) => i.to_string(),
            Reg::Str(u32::MAX) => "a value nobody read".to_string(),
            Reg::Str(id) => self
                .strings
                .get(*id as usize)
                .map_or_else(|| format!("#{id}"), |s| format!("{s:?}")),
        }
    }
}

/// Stands for a value no observation can involve: a non-integer that no read returns
/// (the interner never hands out this id). See [`RegisterModel`].
const UNREAD: Reg = Reg::Str(u32::MAX);

/// An integer result (`INCR`, `DEL` count), from an `Int` or a canonical integer string.
pub(crate) fn int_result(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

/// Checks every register key of `ops` (other workloads are ignored).
pub fn check(ops: &[Operation], options: &Options) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if op.f.workload() == Workload::Register {
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

/// Checks one key's operations; returns its problems.
/// The calls of one key's operations, in model terms, with the operation each comes
/// from, and the problems of operations that cannot be interpreted.
fn calls_of<'a>(
    key: &str,
    ops: &[&'a Operation],
    interner: &mut Interner,
) -> (Vec<Call<Input>>, Vec<&'a Operation>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut calls: Vec<Call<Input>> = Vec::new();
    let mut sources: Vec<&Operation> = Vec::new();

    for &op in ops {
        if op.outcome == Outcome::Fail || (op.outcome == Outcome::Info && op.f == F::Read) {
            continue;
        }
        let known = op.outcome == Outcome::Ok;
        let input = match op.f {
            F::Write => match interner.value(&op.input) {
                Some(Reg::Nil) | None => {
                    problems.push(Problem::new(
                        Reason::Malformed,
                        format!(
                            "register key {key:?}: malformed write (the value must be a number \
                         or a string): {op}"
                        ),
                    ));
                    continue;
                }
                Some(v) => Input::Write(v),
            },
            F::Read => match interner.value(&op.output) {
                Some(v) => Input::Read(v),
                None => {
                    problems.push(Problem::new(
                        Reason::Malformed,
                        format!(
                            "register key {key:?}: malformed read result (a list or a map): {op}"
                        ),
                    ));
                    continue;
                }
            },
            F::Incr if known => match int_result(&op.output) {
                Some(r) => Input::Incr(Some(r)),
                None => {
                    problems.push(Problem::new(
                        Reason::Malformed,
                        format!("register key {key:?}: incr result is not an integer: {op}"),
                    ));
                    continue;
                }
            },
            F::Incr => Input::Incr(None),
            F::Delete if known && op.output != Value::None => match int_result(&op.output) {
                Some(n) => Input::Delete(Some(n > 0)),
                None => {
                    problems.push(Problem::new(
                        Reason::Malformed,
                        format!("register key {key:?}: delete result is not a count: {op}"),
                    ));
                    continue;
                }
            },
            F::Delete => Input::Delete(None),
            F::Cas => {
                // `Ok` and `Info` both carry the value read under WATCH.
                match (interner.value(&op.input), interner.value(&op.output)) {
                    (Some(new), Some(old)) if new != Reg::Nil => Input::Cas(old, new),
                    _ => {
                        problems.push(Problem::new(
                            Reason::Malformed,
                            format!(
                                "register key {key:?}: malformed cas (a scalar to write, \
                                 the value read under WATCH as its result): {op}"
                            ),
                        ));
                        continue;
                    }
                }
            }
            // Not a register function: `check` filters these out.
            _ => continue,
        };
        calls.push(Call {
            start: op.invoke,
            end: if known { op.complete } else { None },
            input,
        });
        sources.push(op);
    }

    (calls, sources, problems)
}

fn check_key(key: &str, ops: &[&Operation], options: &Options) -> Vec<Problem> {
    let mut interner = Interner::default();
    let (mut calls, mut sources, mut problems) = calls_of(key, ops, &mut interner);

    // Reads of values nothing could have produced: a direct, readable problem.
    let written: HashSet<Reg> = calls
        .iter()
        .filter_map(|c| match c.input {
            Input::Write(v) | Input::Cas(_, v) => Some(v),
            _ => None,
        })
        .collect();
    let any_incr = calls.iter().any(|c| matches!(c.input, Input::Incr(_)));
    for (call, op) in calls.iter().zip(&sources) {
        // An unknown cas may never have run (the search treats it so): its read is not
        // held against it here either.
        let observed = match call.input {
            Input::Read(v) => Some(v),
            Input::Cas(v, _) if call.end.is_some() => Some(v),
            _ => None,
        };
        if let Some(v) = observed {
            let producible = match v {
                Reg::Nil => true,
                Reg::Int(_) => any_incr || written.contains(&v),
                Reg::Str(_) => written.contains(&v),
            };
            if !producible {
                problems.push(Problem::new(
                    Reason::NeverWritten,
                    format!(
                        "register key {key:?}: read a value never written: {op} (no write or \
                     incr that did not fail could produce {})",
                        interner.show(&v)
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return problems;
    }

    // Unknown writes of unobservable values are all alike: with one value they are
    // interchangeable for the search. If nothing but reads looks at the key (no incr, no
    // checked delete), they cannot influence any observation and go entirely.
    let model = RegisterModel::new(&calls, true);
    for c in calls.iter_mut() {
        match (c.end, c.input) {
            (None, Input::Write(v)) => c.input = Input::Write(model.canon(v)),
            (None, Input::Cas(old, v)) => c.input = Input::Cas(old, model.canon(v)),
            _ => {}
        }
    }
    let observing = calls.iter().any(|c| {
        matches!(
            c.input,
            Input::Incr(_) | Input::Delete(Some(_)) | Input::Cas(..)
        )
    });
    if !observing {
        (calls, sources) = calls
            .into_iter()
            .zip(sources)
            .filter(|(c, _)| !(c.end.is_none() && c.input == Input::Write(UNREAD)))
            .unzip();
    }

    match linear::search(&model, Reg::Nil, &calls, options.limits()) {
        Search::Linearizable => {}
        Search::NotLinearizable(failure) => {
            // The real state after the prefix, not the canonical one: replay it.
            let plain = RegisterModel::new(&calls, false);
            let state = failure.prefix.iter().try_fold(Reg::Nil, |state, &i| {
                calls.get(i).and_then(|c| plain.step(&state, &c.input))
            });
            let shown = state.unwrap_or(failure.state);
            problems.push(explain_failure(
                &format!("register key {key:?}"),
                &failure,
                &sources,
                &interner.show(&shown),
            ))
        }
        Search::GaveUp { steps, cached } => problems.push(Problem::new(
            Reason::Undecided,
            format!(
            "register key {key:?}: undecided: the linearizability search gave up after {steps} \
             steps and {cached} cached configurations ({} operations)",
            calls.len()
        ),
        )),
    }
    problems
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::history::{pair, Kind, Op};
    use proptest::prelude::*;

    /// Linearizable by exhaustive enumeration: every order of the calls that respects
    /// real time, calls with an unknown end optional.
    pub(crate) fn brute<M: Model>(model: &M, init: M::State, calls: &[Call<M::Input>]) -> bool {
        fn go<M: Model>(
            model: &M,
            calls: &[Call<M::Input>],
            state: M::State,
            done: &mut [bool],
        ) -> bool {
            if (0..calls.len()).all(|i| done[i] || calls[i].end.is_none()) {
                return true;
            }
            for i in 0..calls.len() {
                if done[i] {
                    continue;
                }
                let blocked = (0..calls.len()).any(|j| {
                    !done[j] && j != i && calls[j].end.is_some_and(|e| e < calls[i].start)
                });
                if blocked {
                    continue;
                }
                if let Some(next) = model.step(&state, &calls[i].input) {
                    done[i] = true;
                    if go(model, calls, next, done) {
                        return true;
                    }
                    done[i] = false;
                }
            }
            false
        }
        go(model, calls, init, &mut vec![false; calls.len()])
    }

    /// Records for operations given as (invoke key, complete key, kind, f, input,
    /// output): times are the ranks of the keys.
    pub(crate) fn history(specs: &[(u32, u32, Kind, F, Value, Value)]) -> Vec<Op> {
        let mut events = Vec::new();
        for (p, (a, b, kind, f, input, output)) in specs.iter().enumerate() {
            let (first, second) = ((*a).min(*b), (*a).max(*b));
            events.push((first, 0, p, Kind::Invoke, *f, input.clone()));
            events.push((second, 1, p, *kind, *f, output.clone()));
        }
        events.sort_by_key(|e| (e.0, e.1, e.2));
        events
            .into_iter()
            .enumerate()
            .map(|(index, (_, _, p, kind, f, value))| Op {
                index: index as u64,
                process: p as u64,
                kind,
                f,
                key: "k".into(),
                value,
                time_ns: 0,
            })
            .collect()
    }

    pub(crate) fn outcome(roll: u8) -> Kind {
        match roll {
            0..=14 => Kind::Ok,
            15..=17 => Kind::Info,
            _ => Kind::Fail,
        }
    }

    fn op_spec() -> impl Strategy<Value = (u32, u32, Kind, F, Value, Value)> {
        (any::<u32>(), any::<u32>(), 0u8..20, 0u8..5, 0i64..4, 0u8..3).prop_map(
            |(a, b, roll, f, v, d)| {
                let (f, input, output) = match f {
                    4 => (
                        F::Cas,
                        Value::Int(v),
                        if d == 0 {
                            Value::None
                        } else {
                            Value::Int(i64::from(d))
                        },
                    ),
                    0 => (
                        F::Read,
                        Value::None,
                        if v == 0 { Value::None } else { Value::Int(v) },
                    ),
                    1 => (F::Write, Value::Int(v), Value::None),
                    2 => (F::Incr, Value::None, Value::Int(v + 1)),
                    _ => (
                        F::Delete,
                        Value::None,
                        [Value::Int(0), Value::Int(1), Value::None][d as usize].clone(),
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
        fn agrees_with_brute_force(specs in prop::collection::vec(op_spec(), 1..8)) {
            let ops = history(&specs);
            let verdict = check(&pair(&ops).operations, &Options::default());
            let paired = pair(&ops);
            let refs: Vec<&Operation> = paired.operations.iter().collect();
            let (calls, _, problems) = calls_of("k", &refs, &mut Interner::default());
            prop_assert!(problems.is_empty());
            let expected = brute(&RegisterModel::new(&calls, false), Reg::Nil, &calls);
            prop_assert_eq!(verdict.valid, expected, "{:#?}\n{:#?}", ops, verdict);
        }
    }

    #[test]
    fn canonical_states_hide_only_unobservable_values() {
        let call = |input| Call {
            start: 0,
            end: Some(1),
            input,
        };
        let calls = vec![
            call(Input::Read(Reg::Int(5))),
            call(Input::Incr(Some(9))),
            call(Input::Incr(None)),
        ];
        let m = RegisterModel::new(&calls, true);
        // 5 is read; 8 + 1 = 9 is an incr result; 3 + 1 + 1 unknown incr reaches 5.
        assert!(!m.unobservable(Reg::Int(5)));
        assert!(!m.unobservable(Reg::Int(8)));
        assert!(!m.unobservable(Reg::Int(3)));
        assert!(m.unobservable(Reg::Int(2)));
        assert!(m.unobservable(Reg::Int(10)));
        assert!(!m.unobservable(Reg::Nil));
    }
}
