//! Sorted sets: ZADD and its options, scores and ranks, every form of range query (by
//! rank, score or lex, forward or reverse, with LIMIT and WITHSCORES), removal by range,
//! pops, random members, ZSCAN, and the set operations (ZUNION, ZINTER, ZDIFF, their
//! STORE forms and ZINTERCARD).
//!
//! The data structure is [`crate::zset::ZSet`]. Replies follow Redis 7.2: scores are
//! doubles (bulk strings in RESP2, `,` doubles in RESP3), and WITHSCORES in RESP3 is an
//! array of `[member, score]` pairs. Spring Session keeps its expiry index in a sorted set
//! (ZADD, ZREVRANGEBYSCORE ... LIMIT, ZREM), so those paths are the hot ones.
//!
//! Every handler parses and checks all its arguments, in the order Redis does (that order
//! decides which error a bad request gets), before it changes anything.
//!
//! Parts: [`range`] (score and lex bounds, the ZRANGE family with its options and LIMIT,
//! ZCOUNT, ZLEXCOUNT and removal by range), [`setop`] (ZUNION, ZINTER, ZDIFF, their STORE
//! forms and ZINTERCARD); the rest, with the table, is here.

mod range;
mod setop;

use bytes::Bytes;
use kelvin_protocol::reply::{format_double, parse_f64};
use kelvin_protocol::ReplyWriter;
use rand::Rng;

use crate::cmd::list::positive_arg;
use crate::cmd::{
    data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec, KEY1, NO_KEYS,
};
use crate::notify::{GENERIC, ZSET};
use crate::store::{scan_hash, Blob, Entry, Value};
use crate::zset::ZSet;
use range::{
    zcount, zlexcount, zrange, zrangebylex, zrangebyscore, zrangestore, zremrangebylex,
    zremrangebyrank, zremrangebyscore, zrevrange, zrevrangebylex, zrevrangebyscore,
};
use setop::{zdiff, zdiffstore, zinter, zintercard, zinterstore, zunion, zunionstore};

/// ZRANGESTORE: destination then source.
const DST_SRC: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("zadd", -4, WRITE | DENYOOM | FAST, KEY1, "sorted-set", "Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.", zadd),
    data("zincrby", 4, WRITE | DENYOOM | FAST, KEY1, "sorted-set", "Increments the score of a member in a sorted set.", zincrby),
    data("zrem", -3, WRITE | FAST, KEY1, "sorted-set", "Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.", zrem),
    data("zscore", 3, READONLY | FAST, KEY1, "sorted-set", "Returns the score of a member in a sorted set.", zscore),
    data("zmscore", -3, READONLY | FAST, KEY1, "sorted-set", "Returns the score of one or more members in a sorted set.", zmscore),
    data("zcard", 2, READONLY | FAST, KEY1, "sorted-set", "Returns the number of members in a sorted set.", zcard),
    data("zcount", 4, READONLY | FAST, KEY1, "sorted-set", "Returns the count of members in a sorted set that have scores within a range.", zcount),
    data("zlexcount", 4, READONLY | FAST, KEY1, "sorted-set", "Returns the number of members in a sorted set within a lexicographical range.", zlexcount),
    data("zrank", -3, READONLY | FAST, KEY1, "sorted-set", "Returns the index of a member in a sorted set ordered by ascending scores.", zrank),
    data("zrevrank", -3, READONLY | FAST, KEY1, "sorted-set", "Returns the index of a member in a sorted set ordered by descending scores.", zrevrank),
    data("zrange", -4, READONLY, KEY1, "sorted-set", "Returns members in a sorted set within a range of indexes.", zrange),
    data("zrangestore", -5, WRITE | DENYOOM, DST_SRC, "sorted-set", "Stores a range of members from sorted set in a key.", zrangestore),
    data("zrevrange", -4, READONLY, KEY1, "sorted-set", "Returns members in a sorted set within a range of indexes in reverse order.", zrevrange),
    data("zrangebyscore", -4, READONLY, KEY1, "sorted-set", "Returns members in a sorted set within a range of scores.", zrangebyscore),
    data("zrevrangebyscore", -4, READONLY, KEY1, "sorted-set", "Returns members in a sorted set within a range of scores in reverse order.", zrevrangebyscore),
    data("zrangebylex", -4, READONLY, KEY1, "sorted-set", "Returns members in a sorted set within a lexicographical range.", zrangebylex),
    data("zrevrangebylex", -4, READONLY, KEY1, "sorted-set", "Returns members in a sorted set within a lexicographical range in reverse order.", zrevrangebylex),
    data("zremrangebyscore", 4, WRITE, KEY1, "sorted-set", "Removes members in a sorted set within a range of scores. Deletes the sorted set if all members were removed.", zremrangebyscore),
    data("zremrangebyrank", 4, WRITE, KEY1, "sorted-set", "Removes members in a sorted set within a range of indexes. Deletes the sorted set if all members were removed.", zremrangebyrank),
    data("zremrangebylex", 4, WRITE, KEY1, "sorted-set", "Removes members in a sorted set within a lexicographical range. Deletes the sorted set if all members were removed.", zremrangebylex),
    data("zpopmin", -2, WRITE | FAST, KEY1, "sorted-set", "Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.", zpopmin),
    data("zpopmax", -2, WRITE | FAST, KEY1, "sorted-set", "Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.", zpopmax),
    data("zrandmember", -2, READONLY, KEY1, "sorted-set", "Returns one or more random members from a sorted set.", zrandmember),
    data("zscan", -3, READONLY, KEY1, "sorted-set", "Iterates over members and scores of a sorted set.", zscan),
    // The input keys of the set operations follow `numkeys`, which a first/last/step
    // spec cannot describe; these rows report what Redis's COMMAND reports.
    data("zunionstore", -4, WRITE | DENYOOM, KEY1, "sorted-set", "Stores the union of multiple sorted sets in a key.", zunionstore),
    data("zinterstore", -4, WRITE | DENYOOM, KEY1, "sorted-set", "Stores the intersect of multiple sorted sets in a key.", zinterstore),
    data("zdiffstore", -4, WRITE | DENYOOM, KEY1, "sorted-set", "Stores the difference of multiple sorted sets in a key.", zdiffstore),
    data("zunion", -3, READONLY, NO_KEYS, "sorted-set", "Returns the union of multiple sorted sets.", zunion),
    data("zinter", -3, READONLY, NO_KEYS, "sorted-set", "Returns the intersect of multiple sorted sets.", zinter),
    data("zdiff", -3, READONLY, NO_KEYS, "sorted-set", "Returns the difference between multiple sorted sets.", zdiff),
    data("zintercard", -3, READONLY, NO_KEYS, "sorted-set", "Returns the number of members of the intersect of multiple sorted sets.", zintercard),
];

/// Largest reply ZRANDMEMBER with a negative count (repetitions allowed) will build.
/// Redis has no bound and would try to write any count; here a count that cannot
/// sensibly be answered is refused instead of exhausting memory under the store lock.
const MAX_RANDOM_REPEATS: u64 = 1 << 24;

/// Up to this many members ZSCAN answers everything at once with cursor 0, as Redis does
/// for its compact (listpack) encoding, which it keeps up to 128 members.
const SCAN_ALL_AT_ONCE: usize = 128;

// ---------------------------------------------------------------------------------------
// Lookups and argument parsing
// ---------------------------------------------------------------------------------------

/// The sorted set under `key` for a write (an expired key is deleted first).
pub(crate) fn write_zset<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
) -> Result<Option<&'e mut ZSet>, CmdError> {
    match ex.write(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::ZSet(z),
            ..
        }) => Ok(Some(z)),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// The sorted set under `key` for a read, with the reply buffer borrowed apart so
/// members go straight from the store into the reply.
pub(crate) fn read_zset_out<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
) -> Result<(Option<&'e ZSet>, &'e mut ReplyWriter), CmdError> {
    match ex.read_out(key) {
        (None, out) => Ok((None, out)),
        (
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }),
            out,
        ) => Ok((Some(z), out)),
        (Some(_), _) => Err(CmdError::WRONGTYPE),
    }
}

/// A float as Redis's `getDoubleFromObject` reads one (scores, increments, weights):
/// like [`parse_f64`], and also refusing what `strtod` flags as out of range, a number
/// that overflows to infinity (`1e400`) or underflows to zero (`1e-400`). Spelled
/// infinities (`inf`, `+inf`, `-inf`) are fine.
pub(crate) fn strict_float(arg: &[u8]) -> Option<f64> {
    let v = parse_f64(arg)?;
    if v.is_infinite() && !arg.iter().any(|b| b.eq_ignore_ascii_case(&b'i')) {
        return None;
    }
    if v == 0.0 {
        let mantissa = arg
            .split(|b| *b == b'e' || *b == b'E')
            .next()
            .unwrap_or(arg);
        if mantissa.iter().any(|b| (b'1'..=b'9').contains(b)) {
            return None;
        }
    }
    Some(v)
}

fn score_arg(arg: &[u8]) -> Result<f64, CmdError> {
    strict_float(arg).ok_or(CmdError::NOT_FLOAT)
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/// Members, optionally with scores: RESP2 a flat array (scores as bulk strings), RESP3
/// an array of `[member, score]` pairs when scores are asked for.
pub(crate) fn reply_members<M: AsRef<[u8]>>(
    out: &mut ReplyWriter,
    items: &[(M, f64)],
    withscores: bool,
) {
    if !withscores {
        out.array(items.len());
        for (m, _) in items {
            out.bulk(m.as_ref());
        }
    } else if out.is_resp3() {
        out.array(items.len());
        for (m, s) in items {
            out.array(2);
            out.bulk(m.as_ref());
            out.double(*s);
        }
    } else {
        out.array(items.len() * 2);
        for (m, s) in items {
            out.bulk(m.as_ref());
            out.double(*s);
        }
    }
}

/// Stores `z` under `dst` (replacing any value and TTL) and answers its size; an empty
/// result deletes `dst` instead, as Redis never keeps an empty sorted set.
pub(crate) fn store_result(ex: &mut Exec<'_>, dst: &[u8], z: ZSet, event: &'static str) {
    ex.expire_if_needed(dst);
    let n = z.len();
    if n == 0 {
        if ex.ks().remove(dst).is_some() {
            ex.notify(GENERIC, "del", dst);
        }
    } else {
        ex.ks().insert(dst, Entry::new(Value::ZSet(Box::new(z))));
        ex.notify(ZSET, event, dst);
    }
    ex.out.int(n as i64);
}

// ---------------------------------------------------------------------------------------
// ZADD, ZINCRBY, ZREM
// ---------------------------------------------------------------------------------------

#[derive(Default, Clone, Copy)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

pub(crate) fn zadd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut f = AddFlags::default();
    let mut i = 2;
    while i < argv.len() {
        let a = &argv[i];
        if is(a, "nx") {
            f.nx = true;
        } else if is(a, "xx") {
            f.xx = true;
        } else if is(a, "gt") {
            f.gt = true;
        } else if is(a, "lt") {
            f.lt = true;
        } else if is(a, "ch") {
            f.ch = true;
        } else if is(a, "incr") {
            f.incr = true;
        } else {
            break;
        }
        i += 1;
    }
    let pairs = &argv[i..];
    if pairs.is_empty() || pairs.len() % 2 == 1 {
        return Err(CmdError::SYNTAX);
    }
    if f.nx && f.xx {
        return Err(CmdError::err(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        return Err(CmdError::err(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if f.incr && pairs.len() > 2 {
        return Err(CmdError::err(
            "INCR option supports a single increment-element pair",
        ));
    }
    zadd_core(ex, &argv[1], f, pairs)
}

fn zincrby(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let f = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    zadd_core(ex, &argv[1], f, &argv[2..4])
}

/// ZADD after option parsing; `pairs` is score, member, score, member...
fn zadd_core(ex: &mut Exec<'_>, key: &[u8], f: AddFlags, pairs: &[Bytes]) -> CmdResult {
    let scores = pairs
        .chunks(2)
        .map(|p| score_arg(&p[0]))
        .collect::<Result<Vec<f64>, CmdError>>()?;
    // Validate the key's type and, for INCR, the resulting score before any change.
    match write_zset(ex, key)? {
        None if f.xx => {
            if f.incr {
                ex.out.null();
            } else {
                ex.out.int(0);
            }
            return Ok(());
        }
        // NX never increments an existing member, so it cannot make a NaN.
        Some(z) if f.incr && !f.nx => {
            if let Some(cur) = z.score(&pairs[1]) {
                if (cur + scores[0]).is_nan() {
                    return Err(CmdError::NAN_SCORE);
                }
            }
        }
        None | Some(_) => {}
    }
    let z = match ex.write_or_create(key, || Value::ZSet(Box::default())) {
        Value::ZSet(z) => z,
        // Checked above: the key holds a sorted set or was missing.
        _ => return Err(CmdError::WRONGTYPE),
    };
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0usize);
    let mut last = 0.0;
    for (score, pair) in scores.iter().zip(pairs.chunks(2)) {
        let member = &pair[1][..];
        match z.score(member) {
            Some(cur) => {
                if f.nx {
                    continue;
                }
                let new = if f.incr { cur + score } else { *score };
                // GT/LT only let a score move in their direction.
                if (f.gt && new <= cur) || (f.lt && new >= cur) {
                    continue;
                }
                processed += 1;
                last = new;
                if new != cur {
                    z.insert(member, new);
                    updated += 1;
                }
            }
            None => {
                if f.xx {
                    continue;
                }
                z.insert(member, *score);
                added += 1;
                processed += 1;
                last = *score;
            }
        }
    }
    if added + updated > 0 {
        ex.notify(ZSET, if f.incr { "zincr" } else { "zadd" }, key);
    }
    // Only reachable if nothing was added to a new key, which the loop rules out; kept so
    // that no empty sorted set can ever stay behind.
    ex.remove_if_empty(key);
    if f.incr {
        if processed > 0 {
            ex.out.double(last);
        } else {
            ex.out.null();
        }
    } else {
        ex.out.int(if f.ch { added + updated } else { added });
    }
    Ok(())
}

fn zrem(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(z) = write_zset(ex, key)? else {
        ex.out.int(0);
        return Ok(());
    };
    let removed = argv[2..].iter().filter(|m| z.remove(m)).count();
    if removed > 0 {
        ex.notify(ZSET, "zrem", key);
        ex.remove_if_empty(key);
    }
    ex.out.int(removed as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scores, ranks, counts
// ---------------------------------------------------------------------------------------

fn zscore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (z, out) = read_zset_out(ex, &argv[1])?;
    match z.and_then(|z| z.score(&argv[2])) {
        Some(s) => out.double(s),
        None => out.null(),
    }
    Ok(())
}

fn zmscore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (z, out) = read_zset_out(ex, &argv[1])?;
    out.array(argv.len() - 2);
    for m in &argv[2..] {
        match z.and_then(|z| z.score(m)) {
            Some(s) => out.double(s),
            None => out.null(),
        }
    }
    Ok(())
}

fn zcard(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (z, out) = read_zset_out(ex, &argv[1])?;
    out.int(z.map_or(0, |z| z.len() as i64));
    Ok(())
}

fn rank_generic(ex: &mut Exec<'_>, argv: &[Bytes], rev: bool, name: &str) -> CmdResult {
    if argv.len() > 4 {
        return Err(CmdError::arity(name));
    }
    let withscore = match argv.get(3) {
        Some(a) if is(a, "withscore") => true,
        Some(_) => return Err(CmdError::SYNTAX),
        None => false,
    };
    let (z, out) = read_zset_out(ex, &argv[1])?;
    let found = z.and_then(|z| {
        let rank = z.rank(&argv[2])?;
        let score = z.score(&argv[2])?;
        Some((if rev { z.len() - 1 - rank } else { rank }, score))
    });
    match (found, withscore) {
        (Some((rank, _)), false) => out.int(rank as i64),
        (Some((rank, score)), true) => {
            out.array(2);
            out.int(rank as i64);
            out.double(score);
        }
        (None, false) => out.null(),
        (None, true) => out.null_array(),
    }
    Ok(())
}

fn zrank(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    rank_generic(ex, argv, false, "zrank")
}

fn zrevrank(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    rank_generic(ex, argv, true, "zrevrank")
}

// ---------------------------------------------------------------------------------------
// Pops
// ---------------------------------------------------------------------------------------

fn pop_generic(ex: &mut Exec<'_>, argv: &[Bytes], max: bool) -> CmdResult {
    if argv.len() > 3 {
        return Err(CmdError::SYNTAX);
    }
    let count = match argv.get(2) {
        Some(a) => Some(positive_arg(a)?),
        None => None,
    };
    let key = &argv[1];
    let mut popped: Vec<(Blob, f64)> = Vec::new();
    if let Some(z) = write_zset(ex, key)? {
        let n = count.unwrap_or(1).min(z.len());
        for _ in 0..n {
            let next = if max { z.pop_max() } else { z.pop_min() };
            popped.extend(next);
        }
    }
    if !popped.is_empty() {
        ex.notify(ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
        ex.remove_if_empty(key);
    }
    // RESP3 nests [member, score] pairs when a count was given; otherwise the reply is
    // flat, as in RESP2.
    if ex.out.is_resp3() && count.is_some() {
        reply_members(ex.out, &popped, true);
    } else {
        ex.out.array(popped.len() * 2);
        for (m, s) in &popped {
            ex.out.bulk(m);
            ex.out.double(*s);
        }
    }
    Ok(())
}

fn zpopmin(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    pop_generic(ex, argv, false)
}

fn zpopmax(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    pop_generic(ex, argv, true)
}

// ---------------------------------------------------------------------------------------
// ZRANDMEMBER, ZSCAN
// ---------------------------------------------------------------------------------------

fn zrandmember(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(count_arg) = argv.get(2) else {
        // Without a count: one member, nil for a missing key.
        let len = match read_zset_out(ex, key)?.0 {
            None => {
                ex.out.null();
                return Ok(());
            }
            Some(z) => z.len(),
        };
        let pick = ex.store.rng.get().gen_range(0..len.max(1));
        let (z, out) = read_zset_out(ex, key)?;
        match z.and_then(|z| z.iter().nth(pick)) {
            Some((m, _)) => out.bulk(m),
            None => out.null(),
        }
        return Ok(());
    };
    let count = int_arg(count_arg)?;
    if count == i64::MIN {
        return Err(CmdError::err(
            "value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    let withscores = match argv.len() {
        3 => false,
        4 if is(&argv[3], "withscores") => true,
        _ => return Err(CmdError::SYNTAX),
    };
    if withscores && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(CmdError::err("value is out of range"));
    }
    let len = match read_zset_out(ex, key)?.0 {
        None => 0,
        Some(z) => z.len(),
    };
    if len == 0 || count == 0 {
        ex.out.array(0);
        return Ok(());
    }
    // Draw the indexes first (the rng lives in the store), then read the members.
    let picks: Option<Vec<usize>> = if count < 0 {
        if count.unsigned_abs() > MAX_RANDOM_REPEATS {
            return Err(CmdError::err("value is out of range"));
        }
        // Repetitions allowed: `-count` independent draws.
        let rng = ex.store.rng.get();
        Some(
            (0..count.unsigned_abs())
                .map(|_| rng.gen_range(0..len))
                .collect(),
        )
    } else if count as u64 >= len as u64 {
        // The whole set, highest score first, as Redis answers it.
        None
    } else {
        // Distinct members in random order.
        Some(rand::seq::index::sample(ex.store.rng.get(), len, count as usize).into_vec())
    };
    let (z, out) = read_zset_out(ex, key)?;
    let Some(z) = z else {
        out.array(0);
        return Ok(());
    };
    let all: Vec<(&[u8], f64)> = z.iter().collect();
    match picks {
        None => {
            let descending: Vec<(&[u8], f64)> = all.iter().rev().copied().collect();
            reply_members(out, &descending, withscores);
        }
        Some(picks) => {
            let chosen: Vec<(&[u8], f64)> =
                picks.iter().filter_map(|&i| all.get(i).copied()).collect();
            reply_members(out, &chosen, withscores);
        }
    }
    Ok(())
}

/// A SCAN cursor: an unsigned 64-bit number. Like Redis's `strtoul`, a leading minus
/// wraps (`-1` is the largest cursor).
fn cursor_arg(arg: &[u8]) -> Result<u64, CmdError> {
    let invalid = || CmdError::err("invalid cursor");
    let text = std::str::from_utf8(arg).map_err(|_| invalid())?;
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(if neg { n.wrapping_neg() } else { n })
}

fn zscan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let cursor = cursor_arg(&argv[2])?;
    let (z, out) = read_zset_out(ex, &argv[1])?;
    let Some(z) = z else {
        out.array(2);
        out.bulk(b"0");
        out.array(0);
        return Ok(());
    };
    // Options are parsed after the lookup, as Redis does: a missing key answers an empty
    // scan whatever the options.
    let mut count: usize = 10;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 3;
    while i < argv.len() {
        let a = &argv[i];
        let Some(value) = argv.get(i + 1) else {
            return Err(CmdError::SYNTAX);
        };
        if is(a, "count") {
            let n = int_arg(value)?;
            if n < 1 {
                return Err(CmdError::SYNTAX);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if is(a, "match") {
            // `*` matches everything; skipping it saves the glob per member.
            pattern = (&value[..] != b"*").then_some(&value[..]);
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 2;
    }
    let (items, next): (Vec<(&[u8], f64)>, u64) = if z.len() <= SCAN_ALL_AT_ONCE {
        (z.iter().collect(), 0)
    } else {
        // Cursor = the scan hash to resume from: stable while members come and go, so
        // every member present for the whole scan is returned, as SCAN promises.
        let mut keyed: Vec<(u64, &[u8], f64)> = z
            .unordered()
            .map(|(m, s)| (scan_hash(m), m, s))
            .filter(|(h, _, _)| *h >= cursor)
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut end = count.min(keyed.len());
        // Never split members of equal hash across pages.
        while end < keyed.len() && end > 0 && keyed[end].0 == keyed[end - 1].0 {
            end += 1;
        }
        let next = keyed.get(end).map_or(0, |(h, _, _)| *h);
        keyed.truncate(end);
        (keyed.into_iter().map(|(_, m, s)| (m, s)).collect(), next)
    };
    let items: Vec<(&[u8], f64)> = match pattern {
        None => items,
        Some(p) => items
            .into_iter()
            .filter(|(m, _)| kelvin_protocol::glob::glob_match(p, m, false))
            .collect(),
    };
    out.array(2);
    out.bulk(itoa::Buffer::new().format(next).as_bytes());
    // Scores are strings here in both protocols, as Redis sends them.
    out.array(items.len() * 2);
    for (m, s) in items {
        out.bulk(m);
        out.bulk(format_double(s).as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_floats_refuse_overflow_and_underflow() {
        assert_eq!(strict_float(b"1.5"), Some(1.5));
        assert_eq!(strict_float(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(strict_float(b"0"), Some(0.0));
        assert_eq!(strict_float(b"0e10"), Some(0.0));
        assert_eq!(strict_float(b"1e400"), None);
        assert_eq!(strict_float(b"1e-400"), None);
        assert_eq!(strict_float(b"nan"), None);
    }

    #[test]
    fn cursors() {
        assert_eq!(cursor_arg(b"0"), Ok(0));
        assert_eq!(cursor_arg(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(cursor_arg(b"-1"), Ok(u64::MAX));
        assert!(cursor_arg(b"18446744073709551616").is_err());
        assert!(cursor_arg(b"x").is_err());
        assert!(cursor_arg(b"").is_err());
    }
}
