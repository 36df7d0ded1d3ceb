//! The set operations on sorted sets: ZUNION, ZINTER and ZDIFF, their STORE forms and
//! ZINTERCARD, over sorted sets and plain sets (whose members score 1), with WEIGHTS,
//! AGGREGATE, WITHSCORES and LIMIT parsed as Redis's `zunionInterDiffGenericCommand` does.
//!
//! How it fits: the commands are rows of [`super::COMMANDS`]; the result is answered with
//! [`super`]'s `reply_members` or stored with its `store_result`.

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};

use super::{reply_members, store_result, strict_float};
use crate::cmd::list::positive_arg;
use crate::cmd::{int_arg, is, CmdError, CmdResult, Exec};
use crate::store::{Blob, Value};
use crate::zset::ZSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn apply(self, acc: f64, v: f64) -> f64 {
        match self {
            // inf + -inf is NaN; Redis makes it 0.
            Aggregate::Sum => nan_to_zero(acc + v),
            Aggregate::Min => acc.min(v),
            Aggregate::Max => acc.max(v),
        }
    }
}

fn nan_to_zero(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

/// An input of a set operation: a sorted set, or a plain set whose members score 1.
#[derive(Clone, Copy)]
enum Source<'a> {
    Missing,
    ZSet(&'a ZSet),
    Set(&'a HashSet<Blob>),
}

impl<'a> Source<'a> {
    fn len(&self) -> usize {
        match self {
            Source::Missing => 0,
            Source::ZSet(z) => z.len(),
            Source::Set(s) => s.len(),
        }
    }

    fn score(&self, member: &[u8]) -> Option<f64> {
        match self {
            Source::Missing => None,
            Source::ZSet(z) => z.score(member),
            Source::Set(s) => s.contains(member).then_some(1.0),
        }
    }

    fn items(&self) -> Box<dyn Iterator<Item = (&'a [u8], f64)> + 'a> {
        match *self {
            Source::Missing => Box::new(std::iter::empty()),
            Source::ZSet(z) => Box::new(z.iter()),
            Source::Set(s) => Box::new(s.iter().map(|m| (&m[..], 1.0))),
        }
    }
}

/// The parsed options of a set operation.
struct SetOpArgs<'a> {
    keys: &'a [Bytes],
    weights: Vec<f64>,
    aggregate: Aggregate,
    withscores: bool,
    /// ZINTERCARD's LIMIT; 0 is no limit.
    limit: usize,
}

/// Parses `numkeys key... [options]` from `argv[numkeys_at]` on, as Redis's
/// `zunionInterDiffGenericCommand`: the key count, then the keys' types (before the
/// options), then the options. `store` forbids WITHSCORES, `card` (ZINTERCARD) allows
/// only LIMIT.
fn parse_set_op<'a>(
    ex: &mut Exec<'_>,
    argv: &'a [Bytes],
    numkeys_at: usize,
    op: SetOp,
    store: bool,
    card: bool,
    name: &str,
) -> Result<SetOpArgs<'a>, CmdError> {
    let numkeys = int_arg(&argv[numkeys_at])?;
    if numkeys < 1 {
        return Err(CmdError::err(format!(
            "at least 1 input key is needed for '{name}' command"
        )));
    }
    let first = numkeys_at + 1;
    if numkeys > (argv.len() - first) as i64 {
        return Err(CmdError::SYNTAX);
    }
    let n = numkeys as usize;
    let keys = &argv[first..first + n];
    for key in keys {
        // Writes delete expired inputs first; reads only skip them.
        let value = if store {
            ex.write(key).map(|e| &e.value)
        } else {
            ex.read_value(key).map(|v| &*v)
        };
        if !matches!(value, None | Some(Value::ZSet(_)) | Some(Value::Set(_))) {
            return Err(CmdError::WRONGTYPE);
        }
    }
    let mut args = SetOpArgs {
        keys,
        weights: vec![1.0; n],
        aggregate: Aggregate::Sum,
        withscores: false,
        limit: 0,
    };
    let mut j = first + n;
    while j < argv.len() {
        let a = &argv[j];
        let left = argv.len() - j;
        if op != SetOp::Diff && !card && left > n && is(a, "weights") {
            for (i, w) in argv[j + 1..=j + n].iter().enumerate() {
                args.weights[i] =
                    strict_float(w).ok_or_else(|| CmdError::err("weight value is not a float"))?;
            }
            j += n + 1;
        } else if op != SetOp::Diff && !card && left >= 2 && is(a, "aggregate") {
            let v = &argv[j + 1];
            args.aggregate = if is(v, "sum") {
                Aggregate::Sum
            } else if is(v, "min") {
                Aggregate::Min
            } else if is(v, "max") {
                Aggregate::Max
            } else {
                return Err(CmdError::SYNTAX);
            };
            j += 2;
        } else if !store && !card && is(a, "withscores") {
            args.withscores = true;
            j += 1;
        } else if card && left >= 2 && is(a, "limit") {
            args.limit =
                positive_arg(&argv[j + 1]).map_err(|_| CmdError::err("LIMIT can't be negative"))?;
            j += 2;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    Ok(args)
}

/// Computes a set operation over the (type-checked) inputs. `stop_at` ends an
/// intersection early once that many members are found (ZINTERCARD's LIMIT; 0: never).
fn compute(ex: &mut Exec<'_>, args: &SetOpArgs<'_>, op: SetOp, stop_at: usize) -> ZSet {
    let now = ex.now_ms;
    let ks = &*ex.store.db(ex.db);
    let mut srcs: Vec<(Source<'_>, f64)> = args
        .keys
        .iter()
        .zip(&args.weights)
        .map(|(key, &w)| {
            let src = match ks.get(key, now).map(|e| &e.value) {
                Some(Value::ZSet(z)) => Source::ZSet(z),
                Some(Value::Set(s)) => Source::Set(s),
                _ => Source::Missing,
            };
            (src, w)
        })
        .collect();
    let mut result = ZSet::default();
    let agg = args.aggregate;
    match op {
        SetOp::Union => {
            // Smallest inputs first, as Redis, so float sums add up in the same order.
            srcs.sort_by_key(|(s, _)| s.len());
            let mut acc: HashMap<&[u8], f64> = HashMap::new();
            for (src, w) in &srcs {
                for (m, s) in src.items() {
                    let v = nan_to_zero(s * w);
                    acc.entry(m)
                        .and_modify(|cur| *cur = agg.apply(*cur, v))
                        .or_insert(v);
                }
            }
            for (m, s) in acc {
                result.insert(m, s);
            }
        }
        SetOp::Inter => {
            srcs.sort_by_key(|(s, _)| s.len());
            let Some(((first, w0), rest)) = srcs.split_first() else {
                return result;
            };
            'members: for (m, s) in first.items() {
                let mut score = nan_to_zero(s * w0);
                for (other, w) in rest {
                    match other.score(m) {
                        Some(o) => score = agg.apply(score, nan_to_zero(o * w)),
                        None => continue 'members,
                    }
                }
                result.insert(m, score);
                if stop_at > 0 && result.len() >= stop_at {
                    break;
                }
            }
        }
        SetOp::Diff => {
            let Some(((first, _), rest)) = srcs.split_first() else {
                return result;
            };
            for (m, s) in first.items() {
                if rest.iter().all(|(other, _)| other.score(m).is_none()) {
                    result.insert(m, s);
                }
            }
        }
    }
    result
}

fn set_op_store(ex: &mut Exec<'_>, argv: &[Bytes], op: SetOp, name: &str) -> CmdResult {
    let args = parse_set_op(ex, argv, 2, op, true, false, name)?;
    let result = compute(ex, &args, op, 0);
    let event = match op {
        SetOp::Union => "zunionstore",
        SetOp::Inter => "zinterstore",
        SetOp::Diff => "zdiffstore",
    };
    store_result(ex, &argv[1], result, event);
    Ok(())
}

fn set_op_reply(ex: &mut Exec<'_>, argv: &[Bytes], op: SetOp, name: &str) -> CmdResult {
    let args = parse_set_op(ex, argv, 1, op, false, false, name)?;
    let result = compute(ex, &args, op, 0);
    let items: Vec<(&[u8], f64)> = result.iter().collect();
    reply_members(ex.out, &items, args.withscores);
    Ok(())
}

pub(super) fn zunionstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_store(ex, argv, SetOp::Union, "zunionstore")
}

pub(super) fn zinterstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_store(ex, argv, SetOp::Inter, "zinterstore")
}

pub(super) fn zdiffstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_store(ex, argv, SetOp::Diff, "zdiffstore")
}

pub(super) fn zunion(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_reply(ex, argv, SetOp::Union, "zunion")
}

pub(super) fn zinter(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_reply(ex, argv, SetOp::Inter, "zinter")
}

pub(super) fn zdiff(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_reply(ex, argv, SetOp::Diff, "zdiff")
}

pub(super) fn zintercard(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let args = parse_set_op(ex, argv, 1, SetOp::Inter, false, true, "zintercard")?;
    let result = compute(ex, &args, SetOp::Inter, args.limit);
    ex.out.int(result.len() as i64);
    Ok(())
}
