//! Ranges of a sorted set: score bounds (`1.5`, `(1.5`, `-inf`) and lex bounds (`-`, `+`,
//! `[x`, `(x`), the ZRANGE family (ZRANGE with BYSCORE/BYLEX/REV/LIMIT/WITHSCORES, the
//! legacy ZREVRANGE and ZRANGEBY*/ZREVRANGEBY* forms, ZRANGESTORE) parsed as Redis's
//! `zrangeGenericCommand` does, ZCOUNT and ZLEXCOUNT, and ZREMRANGEBYSCORE/RANK/LEX.
//!
//! How it fits: the commands are rows of [`super::COMMANDS`]; lookups and replies
//! (`read_zset_out`, `write_zset`, `reply_members`, `store_result`) are [`super`]'s.

use std::ops::Bound;

use bytes::Bytes;
use kelvin_protocol::reply::parse_f64;

use super::{read_zset_out, reply_members, store_result, write_zset};
use crate::cmd::{int_arg, is, resolve_range, CmdError, CmdResult, Exec};
use crate::notify::ZSET;
use crate::store::Blob;
use crate::zset::ZSet;

const RANGE_NOT_LEX: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR min or max not valid string range item",
));

// ---------------------------------------------------------------------------------------
// Range bounds
// ---------------------------------------------------------------------------------------

/// One end of a score range: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`. Redis reads it
/// with plain `strtod`, which skips leading white space, lets overflow be infinity, and
/// reads an empty string as 0 (so `(` alone is "above 0").
fn score_bound(arg: &[u8]) -> Result<Bound<f64>, CmdError> {
    let (exclusive, text) = match arg.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let v = if text.is_empty() {
        0.0
    } else {
        parse_f64(text.trim_ascii_start()).ok_or(CmdError::MIN_MAX_NOT_FLOAT)?
    };
    Ok(if exclusive {
        Bound::Excluded(v)
    } else {
        Bound::Included(v)
    })
}

/// One end of a lex range: `-` (below everything), `+` (above everything), `[x`
/// (inclusive) or `(x` (exclusive).
#[derive(Debug, Clone, Copy)]
enum Lex<'a> {
    Min,
    Max,
    Incl(&'a [u8]),
    Excl(&'a [u8]),
}

fn lex_bound(arg: &[u8]) -> Result<Lex<'_>, CmdError> {
    match arg {
        b"-" => Ok(Lex::Min),
        b"+" => Ok(Lex::Max),
        [b'[', rest @ ..] => Ok(Lex::Incl(rest)),
        [b'(', rest @ ..] => Ok(Lex::Excl(rest)),
        _ => Err(RANGE_NOT_LEX),
    }
}

/// A lex range as bounds on member bytes; `None` when it is empty by construction
/// (`+` as the minimum or `-` as the maximum).
type LexRange<'a> = Option<(Bound<&'a [u8]>, Bound<&'a [u8]>)>;

fn lex_range<'a>(min: &'a [u8], max: &'a [u8]) -> Result<LexRange<'a>, CmdError> {
    let (min, max) = (lex_bound(min)?, lex_bound(max)?);
    let lo = match min {
        Lex::Min => Bound::Unbounded,
        Lex::Max => return Ok(None),
        Lex::Incl(m) => Bound::Included(m),
        Lex::Excl(m) => Bound::Excluded(m),
    };
    let hi = match max {
        Lex::Max => Bound::Unbounded,
        Lex::Min => return Ok(None),
        Lex::Incl(m) => Bound::Included(m),
        Lex::Excl(m) => Bound::Excluded(m),
    };
    Ok(Some((lo, hi)))
}

// ---------------------------------------------------------------------------------------
// Counts in a range
// ---------------------------------------------------------------------------------------

pub(super) fn zcount(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let min = score_bound(&argv[2])?;
    let max = score_bound(&argv[3])?;
    let (z, out) = read_zset_out(ex, &argv[1])?;
    out.int(z.map_or(0, |z| z.range_by_score(min, max).count() as i64));
    Ok(())
}

pub(super) fn zlexcount(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let range = lex_range(&argv[2], &argv[3])?;
    let (z, out) = read_zset_out(ex, &argv[1])?;
    let n = match (z, range) {
        (Some(z), Some((lo, hi))) => z.range_by_lex(lo, hi, false).count(),
        _ => 0,
    };
    out.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Range queries
// ---------------------------------------------------------------------------------------

/// What a range is over. `Auto` until ZRANGE's BYSCORE/BYLEX decide (default: rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Auto,
    Rank,
    Score,
    Lex,
}

/// Direction. `Auto` until ZRANGE's REV decides (default: forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Auto,
    Forward,
    Reverse,
}

enum Bounds<'a> {
    Rank(i64, i64),
    Score(Bound<f64>, Bound<f64>),
    Lex(LexRange<'a>),
}

/// A parsed range query of the ZRANGE family.
struct RangeQuery<'a> {
    bounds: Bounds<'a>,
    rev: bool,
    withscores: bool,
    /// LIMIT offset count; `limit < 0` means no limit.
    offset: i64,
    limit: i64,
}

/// Parses `key min max [options]` with the key at `key_at`, as Redis's
/// `zrangeGenericCommand`: options first, then conflicts, then the range itself.
/// `kind`/`dir` are fixed by the legacy commands and `Auto` for ZRANGE/ZRANGESTORE;
/// `store` (ZRANGESTORE) refuses WITHSCORES.
fn parse_range(
    argv: &[Bytes],
    key_at: usize,
    store: bool,
    mut kind: Kind,
    mut dir: Dir,
) -> Result<RangeQuery<'_>, CmdError> {
    let mut withscores = false;
    let mut limit: Option<(i64, i64)> = None;
    let mut j = key_at + 3;
    while j < argv.len() {
        let a = &argv[j];
        let left = argv.len() - j - 1;
        if !store && is(a, "withscores") {
            withscores = true;
        } else if is(a, "limit") && left >= 2 {
            limit = Some((int_arg(&argv[j + 1])?, int_arg(&argv[j + 2])?));
            j += 2;
        } else if dir == Dir::Auto && is(a, "rev") {
            dir = Dir::Reverse;
        } else if kind == Kind::Auto && is(a, "bylex") {
            kind = Kind::Lex;
        } else if kind == Kind::Auto && is(a, "byscore") {
            kind = Kind::Score;
        } else {
            return Err(CmdError::SYNTAX);
        }
        j += 1;
    }
    if kind == Kind::Auto {
        kind = Kind::Rank;
    }
    let rev = dir == Dir::Reverse;
    // Redis tests the count against its "no limit" value -1, so `LIMIT n -1` passes
    // (and does nothing) on a rank range.
    if kind == Kind::Rank && limit.is_some_and(|(_, count)| count != -1) {
        return Err(CmdError::err(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if withscores && kind == Kind::Lex {
        return Err(CmdError::err(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // Reverse score and lex ranges are written max first.
    let (mut lo, mut hi) = (&argv[key_at + 1][..], &argv[key_at + 2][..]);
    if rev && kind != Kind::Rank {
        std::mem::swap(&mut lo, &mut hi);
    }
    let bounds = match kind {
        Kind::Score => Bounds::Score(
            score_bound(lo).map_err(|_| CmdError::MIN_MAX_NOT_FLOAT)?,
            score_bound(hi).map_err(|_| CmdError::MIN_MAX_NOT_FLOAT)?,
        ),
        Kind::Lex => Bounds::Lex(lex_range(lo, hi)?),
        Kind::Rank | Kind::Auto => Bounds::Rank(int_arg(lo)?, int_arg(hi)?),
    };
    let (offset, limit) = limit.unwrap_or((0, -1));
    Ok(RangeQuery {
        bounds,
        rev,
        withscores,
        offset,
        limit,
    })
}

/// Applies LIMIT: a negative offset selects nothing, a negative count means all.
fn page<'z>(
    items: impl Iterator<Item = (&'z [u8], f64)>,
    offset: i64,
    limit: i64,
) -> Vec<(&'z [u8], f64)> {
    if offset < 0 {
        return Vec::new();
    }
    let items = items.skip(usize::try_from(offset).unwrap_or(usize::MAX));
    match usize::try_from(limit) {
        Ok(n) => items.take(n).collect(),
        Err(_) => items.collect(),
    }
}

/// The members a range query selects, in reply order.
fn select<'z>(z: &'z ZSet, q: &RangeQuery<'z>) -> Vec<(&'z [u8], f64)> {
    match &q.bounds {
        Bounds::Rank(start, stop) => {
            let Some((from, to)) = resolve_range(*start, *stop, z.len()) else {
                return Vec::new();
            };
            let n = to - from + 1;
            if q.rev {
                z.iter().rev().skip(from).take(n).collect()
            } else {
                z.iter().skip(from).take(n).collect()
            }
        }
        Bounds::Score(min, max) => {
            let items = z.range_by_score(*min, *max);
            if q.rev {
                page(items.rev(), q.offset, q.limit)
            } else {
                page(items, q.offset, q.limit)
            }
        }
        Bounds::Lex(None) => Vec::new(),
        Bounds::Lex(Some((lo, hi))) => page(z.range_by_lex(*lo, *hi, q.rev), q.offset, q.limit),
    }
}

fn range_generic(ex: &mut Exec<'_>, argv: &[Bytes], kind: Kind, dir: Dir) -> CmdResult {
    let q = parse_range(argv, 1, false, kind, dir)?;
    let (z, out) = read_zset_out(ex, &argv[1])?;
    match z {
        None => out.array(0),
        Some(z) => reply_members(out, &select(z, &q), q.withscores),
    }
    Ok(())
}

pub(super) fn zrange(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    range_generic(ex, argv, Kind::Auto, Dir::Auto)
}

pub(super) fn zrevrange(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    range_generic(ex, argv, Kind::Rank, Dir::Reverse)
}

pub(super) fn zrangebyscore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    range_generic(ex, argv, Kind::Score, Dir::Forward)
}

pub(super) fn zrevrangebyscore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    range_generic(ex, argv, Kind::Score, Dir::Reverse)
}

pub(super) fn zrangebylex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    range_generic(ex, argv, Kind::Lex, Dir::Forward)
}

pub(super) fn zrevrangebylex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    range_generic(ex, argv, Kind::Lex, Dir::Reverse)
}

pub(super) fn zrangestore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let q = parse_range(argv, 2, true, Kind::Auto, Dir::Auto)?;
    let mut result = ZSet::default();
    if let Some(z) = write_zset(ex, &argv[2])? {
        for (m, s) in select(z, &q) {
            result.insert(m, s);
        }
    }
    store_result(ex, &argv[1], result, "zrangestore");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Removal by range
// ---------------------------------------------------------------------------------------

/// Removes `members` from the sorted set under `key`, notifies `event` if any went and
/// answers how many.
fn remove_members(ex: &mut Exec<'_>, key: &[u8], members: Vec<Blob>, event: &'static str) {
    let n = members.len();
    if n > 0 {
        if let Ok(Some(z)) = write_zset(ex, key) {
            for m in &members {
                z.remove(m);
            }
        }
        ex.notify(ZSET, event, key);
        ex.remove_if_empty(key);
    }
    ex.out.int(n as i64);
}

fn owned(items: Vec<(&[u8], f64)>) -> Vec<Blob> {
    items.into_iter().map(|(m, _)| Blob::from(m)).collect()
}

pub(super) fn zremrangebyscore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let min = score_bound(&argv[2])?;
    let max = score_bound(&argv[3])?;
    let key = &argv[1];
    let members = match write_zset(ex, key)? {
        None => Vec::new(),
        Some(z) => owned(z.range_by_score(min, max).collect()),
    };
    remove_members(ex, key, members, "zremrangebyscore");
    Ok(())
}

pub(super) fn zremrangebyrank(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let start = int_arg(&argv[2])?;
    let stop = int_arg(&argv[3])?;
    let key = &argv[1];
    let members = match write_zset(ex, key)? {
        None => Vec::new(),
        Some(z) => match resolve_range(start, stop, z.len()) {
            None => Vec::new(),
            Some((from, to)) => owned(z.iter().skip(from).take(to - from + 1).collect()),
        },
    };
    remove_members(ex, key, members, "zremrangebyrank");
    Ok(())
}

pub(super) fn zremrangebylex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let range = lex_range(&argv[2], &argv[3])?;
    let key = &argv[1];
    let members = match (write_zset(ex, key)?, range) {
        (Some(z), Some((lo, hi))) => owned(z.range_by_lex(lo, hi, false).collect()),
        _ => Vec::new(),
    };
    remove_members(ex, key, members, "zremrangebylex");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_items() {
        assert_eq!(score_bound(b"(1").unwrap(), Bound::Excluded(1.0));
        assert_eq!(score_bound(b" 2").unwrap(), Bound::Included(2.0));
        assert!(score_bound(b"(nan").is_err());
        assert_eq!(score_bound(b"(").unwrap(), Bound::Excluded(0.0));
        assert_eq!(score_bound(b"").unwrap(), Bound::Included(0.0));
        assert!(score_bound(b" ").is_err());
        assert!(lex_bound(b"a").is_err());
        assert!(lex_bound(b"+a").is_err());
        assert!(lex_bound(b"").is_err());
        assert!(matches!(lex_bound(b"[").unwrap(), Lex::Incl(b"")));
        assert!(lex_range(b"+", b"-").unwrap().is_none());
    }
}
