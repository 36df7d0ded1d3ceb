//! Hashes: field/value maps under one key (HSET, HGET, HINCRBY, HRANDFIELD, HSCAN...).
//!
//! Also home of the collection SCAN machinery that SSCAN shares ([`parse_cursor`],
//! [`parse_scan_args`], [`scan_page`]) and of the reply budget that bounds what a
//! random-with-repeats command (HRANDFIELD, SRANDMEMBER with a negative count) may build.
//!
//! Replies and error texts follow Redis 7; the RESP3 shapes too (HGETALL is a map,
//! HRANDFIELD WITHVALUES a list of pairs, HSCAN plain arrays).

use bytes::Bytes;
use hashbrown::HashMap;
use kelvin_protocol::glob::glob_match;
use kelvin_protocol::ReplyWriter;
use rand::Rng;

use crate::cmd::decimal::{format_decimal, parse_decimal};
use crate::cmd::{
    data, flags::*, float_arg, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KEY1,
};
use crate::notify::HASH;
use crate::store::{scan_hash, Blob, Entry, Value};

type Hash = HashMap<Blob, Blob>;

pub const COMMANDS: &[CommandSpec] = &[
    data("hset", -4, WRITE | DENYOOM | FAST, KEY1, "hash", "Creates or modifies the value of a field in a hash.", hset),
    data("hsetnx", 4, WRITE | DENYOOM | FAST, KEY1, "hash", "Sets the value of a field in a hash only when the field doesn't exist.", hsetnx),
    data("hmset", -4, WRITE | DENYOOM | FAST, KEY1, "hash", "Sets the values of multiple fields.", hmset),
    data("hget", 3, READONLY | FAST, KEY1, "hash", "Returns the value of a field in a hash.", hget),
    data("hmget", -3, READONLY | FAST, KEY1, "hash", "Returns the values of all fields in a hash.", hmget),
    data("hgetall", 2, READONLY, KEY1, "hash", "Returns all fields and values in a hash.", hgetall),
    data("hdel", -3, WRITE | FAST, KEY1, "hash", "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.", hdel),
    data("hlen", 2, READONLY | FAST, KEY1, "hash", "Returns the number of fields in a hash.", hlen),
    data("hexists", 3, READONLY | FAST, KEY1, "hash", "Determines whether a field exists in a hash.", hexists),
    data("hkeys", 2, READONLY, KEY1, "hash", "Returns all fields in a hash.", hkeys),
    data("hvals", 2, READONLY, KEY1, "hash", "Returns all values in a hash.", hvals),
    data("hstrlen", 3, READONLY | FAST, KEY1, "hash", "Returns the length of the value of a field.", hstrlen),
    data("hincrby", 4, WRITE | DENYOOM | FAST, KEY1, "hash", "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.", hincrby),
    data("hincrbyfloat", 4, WRITE | DENYOOM | FAST, KEY1, "hash", "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.", hincrbyfloat),
    data("hrandfield", -2, READONLY, KEY1, "hash", "Returns one or more random fields from a hash.", hrandfield),
    data("hscan", -3, READONLY, KEY1, "hash", "Iterates over fields and values of a hash.", hscan),
];

const HASH_NOT_INTEGER: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR hash value is not an integer",
));
const HASH_NOT_FLOAT: CmdError =
    CmdError(std::borrow::Cow::Borrowed("ERR hash value is not a float"));

/// The hash under `key` for a read, with the reply buffer borrowed alongside so values
/// go straight from the store into the reply. `None` if missing; WRONGTYPE if not a hash.
fn read_hash<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
) -> Result<(Option<&'e mut Hash>, &'e mut ReplyWriter), CmdError> {
    match ex.read_out(key) {
        (None, out) => Ok((None, out)),
        (
            Some(Entry {
                value: Value::Hash(h),
                ..
            }),
            out,
        ) => Ok((Some(&mut **h), out)),
        (Some(_), _) => Err(CmdError::WRONGTYPE),
    }
}

/// The hash under `key` for a write (an expired key is deleted first): `None` if
/// missing, WRONGTYPE if the key holds something else. Never creates the key.
fn existing_hash<'e>(ex: &'e mut Exec<'_>, key: &[u8]) -> Result<Option<&'e mut Hash>, CmdError> {
    match ex.write(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Hash(h),
            ..
        }) => Ok(Some(&mut **h)),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// The hash under `key` for a write, created empty if missing. Call only once the
/// command is sure to add a field: an empty hash must never stay in the keyspace.
fn hash_for_write<'e>(ex: &'e mut Exec<'_>, key: &[u8]) -> Result<&'e mut Hash, CmdError> {
    existing_hash(ex, key)?;
    match ex.write_or_create(key, || Value::Hash(Default::default())) {
        Value::Hash(h) => Ok(&mut **h),
        // Checked just above: the key holds a hash or was missing and now holds one.
        _ => Err(CmdError::WRONGTYPE),
    }
}

fn hset_pairs(ex: &mut Exec<'_>, argv: &[Bytes], name: &str) -> Result<i64, CmdError> {
    // Field/value pairs after the key; an odd count is an arity error, as in Redis.
    if !argv[2..].chunks_exact(2).remainder().is_empty() {
        return Err(CmdError::arity(name));
    }
    let key = &argv[1];
    let h = hash_for_write(ex, key)?;
    let mut created = 0;
    for pair in argv[2..].chunks(2) {
        if h.insert(pair[0][..].into(), pair[1][..].into()).is_none() {
            created += 1;
        }
    }
    // Redis notifies even when every value was already what it was set to.
    ex.notify(HASH, "hset", key);
    Ok(created)
}

fn hset(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let created = hset_pairs(ex, argv, "hset")?;
    ex.out.int(created);
    Ok(())
}

fn hmset(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    hset_pairs(ex, argv, "hmset")?;
    ex.out.ok();
    Ok(())
}

fn hsetnx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (key, field) = (&argv[1], &argv[2]);
    if existing_hash(ex, key)?.is_some_and(|h| h.contains_key(&field[..])) {
        ex.out.int(0);
        return Ok(());
    }
    hash_for_write(ex, key)?.insert(field[..].into(), argv[3][..].into());
    ex.notify(HASH, "hset", key);
    ex.out.int(1);
    Ok(())
}

fn hget(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    match read_hash(ex, &argv[1])? {
        (Some(h), out) => match h.get(&argv[2][..]) {
            Some(v) => out.bulk(v),
            None => out.null(),
        },
        (None, out) => out.null(),
    }
    Ok(())
}

fn hmget(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (h, out) = read_hash(ex, &argv[1])?;
    out.array(argv.len() - 2);
    for field in &argv[2..] {
        match h.as_ref().and_then(|h| h.get(&field[..])) {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
    }
    Ok(())
}

fn hgetall(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (h, out) = read_hash(ex, &argv[1])?;
    let Some(h) = h else {
        out.map(0);
        return Ok(());
    };
    out.map(h.len());
    for (field, value) in h.iter() {
        out.bulk(field);
        out.bulk(value);
    }
    Ok(())
}

fn hkeys(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    match read_hash(ex, &argv[1])? {
        (Some(h), out) => out.bulks(h.keys()),
        (None, out) => out.array(0),
    }
    Ok(())
}

fn hvals(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    match read_hash(ex, &argv[1])? {
        (Some(h), out) => out.bulks(h.values()),
        (None, out) => out.array(0),
    }
    Ok(())
}

fn hdel(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(h) = existing_hash(ex, key)? else {
        ex.out.int(0);
        return Ok(());
    };
    let removed = argv[2..]
        .iter()
        .filter(|field| h.remove(&field[..]).is_some())
        .count();
    if removed > 0 {
        ex.notify(HASH, "hdel", key);
        ex.remove_if_empty(key);
    }
    ex.out.int(removed as i64);
    Ok(())
}

fn hlen(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (h, out) = read_hash(ex, &argv[1])?;
    out.int(h.map_or(0, |h| h.len()) as i64);
    Ok(())
}

fn hexists(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (h, out) = read_hash(ex, &argv[1])?;
    out.int(h.is_some_and(|h| h.contains_key(&argv[2][..])) as i64);
    Ok(())
}

fn hstrlen(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (h, out) = read_hash(ex, &argv[1])?;
    let len = h.and_then(|h| h.get(&argv[2][..])).map_or(0, |v| v.len());
    out.int(len as i64);
    Ok(())
}

fn hincrby(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (key, field) = (&argv[1], &argv[2]);
    let delta = int_arg(&argv[3])?;
    let current = match existing_hash(ex, key)?.and_then(|h| h.get(&field[..])) {
        None => 0,
        Some(v) => kelvin_protocol::request::parse_i64(v).ok_or(HASH_NOT_INTEGER)?,
    };
    let new = current.checked_add(delta).ok_or(CmdError::OVERFLOW)?;
    let text = itoa::Buffer::new().format(new).as_bytes().into();
    hash_for_write(ex, key)?.insert(field[..].into(), text);
    ex.notify(HASH, "hincrby", key);
    ex.out.int(new);
    Ok(())
}

/// HINCRBYFLOAT's text for a result, as Redis's `ld2string(.., LD_STR_HUMAN)` writes it:
/// fixed notation (never an exponent), at most 17 decimals, no trailing zeros, "-0" as
/// "0". Redis adds in long double; rounding our f64 to 15 significant digits first hides
/// the binary noise the same way (0.1 + 0.2 gives "0.3" on both).
fn format_human(d: f64) -> String {
    let rounded: f64 = format!("{d:.14e}").parse().unwrap_or(d);
    // Display never uses an exponent and gives the shortest text that reads back.
    let mut text = format!("{rounded}");
    if text.find('.').is_some_and(|dot| text.len() - dot - 1 > 17) {
        text = format!("{rounded:.17}");
        let trimmed = text.trim_end_matches('0').trim_end_matches('.').len();
        text.truncate(trimmed);
    }
    if text == "-0" {
        text = "0".into();
    }
    text
}

fn hincrbyfloat(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (key, field) = (&argv[1], &argv[2]);
    let delta = float_arg(&argv[3])?;
    if !delta.is_finite() {
        return Err(CmdError::err("value is NaN or Infinity"));
    }
    let text = {
        let current = existing_hash(ex, key)?.and_then(|h| h.get(&field[..]));
        let start = match current {
            None => 0.0,
            Some(v) => kelvin_protocol::reply::parse_f64(v).ok_or(HASH_NOT_FLOAT)?,
        };
        let new = start + delta;
        if !new.is_finite() {
            return Err(CmdError::err("increment would produce NaN or Infinity"));
        }
        // Plain decimals add exactly, as they do in Redis's long double (which an f64
        // cannot match for, say, 12345678901234.56 + 0.01).
        let exact = parse_decimal(current.map_or(&b"0"[..], |v| &v[..]))
            .zip(parse_decimal(&argv[3]))
            .and_then(|(a, b)| a.checked_add(b));
        match exact {
            Some(sum) => format_decimal(sum),
            None => format_human(new),
        }
    };
    hash_for_write(ex, key)?.insert(field[..].into(), text.as_bytes().into());
    ex.notify(HASH, "hincrbyfloat", key);
    ex.out.bulk(text.as_bytes());
    Ok(())
}

/// Largest reply HRANDFIELD or SRANDMEMBER with a negative count may build, in bytes
/// (Redis's `proto-max-bulk-len`). Redis would try to send billions of repeats when
/// asked; Kelvin builds a reply in memory, so it refuses past this budget instead.
const MAX_RANDOM_REPLY_BYTES: u64 = 512 * 1024 * 1024;

/// Errors with `ERR value is out of range` if `count` items of about `item_bytes`
/// bytes each would exceed [`MAX_RANDOM_REPLY_BYTES`].
pub(crate) fn check_reply_budget(count: u64, item_bytes: u64) -> Result<(), CmdError> {
    // 16 covers the RESP framing of one bulk string (`$<len>\r\n...\r\n`).
    if count.saturating_mul(item_bytes.saturating_add(16)) > MAX_RANDOM_REPLY_BYTES {
        return Err(CmdError::err("value is out of range"));
    }
    Ok(())
}

/// A random-count argument (HRANDFIELD, SRANDMEMBER): any integer but i64::MIN, whose
/// magnitude is not representable, with Redis's message for it.
pub(crate) fn random_count_arg(arg: &[u8]) -> Result<i64, CmdError> {
    let n = int_arg(arg)?;
    if n == i64::MIN {
        return Err(CmdError::err(format!(
            "value is out of range, value must between {} and {}",
            -i64::MAX,
            i64::MAX
        )));
    }
    Ok(n)
}

fn hrandfield(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() == 2 {
        // Reads don't need a canonical order: only writes must replay identically.
        let mut rng = ex.store.rng.get().clone();
        let (h, out) = read_hash(ex, &argv[1])?;
        match h {
            Some(h) if !h.is_empty() => {
                let pick = rng.gen_range(0..h.len());
                match h.keys().nth(pick) {
                    Some(field) => out.bulk(field),
                    None => out.null(),
                }
            }
            _ => out.null(),
        }
        *ex.store.rng.get() = rng;
        return Ok(());
    }
    let count = random_count_arg(&argv[2])?;
    let with_values = match argv.get(3) {
        None => false,
        Some(a) if argv.len() == 4 && is(a, "withvalues") => true,
        Some(_) => return Err(CmdError::SYNTAX),
    };
    if with_values && !(-i64::MAX / 2..=i64::MAX / 2).contains(&count) {
        return Err(CmdError::err("value is out of range"));
    }
    let mut rng = ex.store.rng.get().clone();
    let result = hrandfield_count(ex, &argv[1], count, with_values, &mut rng);
    *ex.store.rng.get() = rng;
    result
}

fn hrandfield_count(
    ex: &mut Exec<'_>,
    key: &[u8],
    count: i64,
    with_values: bool,
    rng: &mut rand::rngs::SmallRng,
) -> CmdResult {
    let (h, out) = read_hash(ex, key)?;
    let h = match h {
        Some(h) if count != 0 && !h.is_empty() => h,
        _ => {
            out.array(0);
            return Ok(());
        }
    };
    let pairs: Vec<(&Blob, &Blob)> = h.iter().collect();
    let len = pairs.len();
    let resp3 = out.is_resp3();
    let write = |out: &mut ReplyWriter, (field, value): (&Blob, &Blob)| {
        if with_values && resp3 {
            out.array(2);
        }
        out.bulk(field);
        if with_values {
            out.bulk(value);
        }
    };
    let header = |out: &mut ReplyWriter, n: usize| match (with_values, resp3) {
        (true, false) => out.array(2 * n),
        _ => out.array(n),
    };
    if count < 0 {
        // Repeats allowed: draw as we write, no list of picks held.
        let n = count.unsigned_abs();
        let bytes: u64 = pairs
            .iter()
            .map(|(f, v)| (f.len() + if with_values { v.len() + 16 } else { 0 }) as u64)
            .sum();
        check_reply_budget(n, bytes / len as u64)?;
        // Within the budget, so it fits a usize.
        header(out, n as usize);
        for _ in 0..n {
            write(out, pairs[rng.gen_range(0..len)]);
        }
    } else if count as u64 >= len as u64 {
        header(out, len);
        for pair in pairs {
            write(out, pair);
        }
    } else {
        let picks = rand::seq::index::sample(rng, len, count as usize);
        header(out, picks.len());
        for i in picks.iter() {
            write(out, pairs[i]);
        }
    }
    Ok(())
}

/// Collections with at most this many members answer a first SCAN call whole, with
/// cursor 0, as Redis's compact encodings (listpack, intset) do.
const SMALL_SCAN: usize = 128;

/// The options of HSCAN / SSCAN after the cursor.
pub(crate) struct ScanArgs<'a> {
    pub count: usize,
    /// `None` when there is no MATCH or it is `*`.
    pub pattern: Option<&'a [u8]>,
    pub novalues: bool,
}

impl ScanArgs<'_> {
    pub fn matches(&self, member: &[u8]) -> bool {
        self.pattern.is_none_or(|p| glob_match(p, member, false))
    }
}

/// A SCAN cursor, parsed as Redis does with `strtoul`: an optional sign, decimal
/// digits, no spaces; negative numbers wrap; the empty string is 0.
pub(crate) fn parse_cursor(arg: &[u8]) -> Result<u64, CmdError> {
    let invalid = || CmdError::err("invalid cursor");
    if arg.is_empty() {
        return Ok(0);
    }
    let (negative, digits) = match arg[0] {
        b'-' => (true, &arg[1..]),
        b'+' => (false, &arg[1..]),
        _ => (false, arg),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let mut v: u64 = 0;
    for d in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or_else(invalid)?;
    }
    Ok(if negative { v.wrapping_neg() } else { v })
}

/// Parses `[MATCH pattern] [COUNT count]` (and `NOVALUES` if `novalues_ok`).
pub(crate) fn parse_scan_args(args: &[Bytes], novalues_ok: bool) -> Result<ScanArgs<'_>, CmdError> {
    let mut parsed = ScanArgs {
        count: 10,
        pattern: None,
        novalues: false,
    };
    let mut i = 0;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        if is(&args[i], "count") && has_value {
            let n = int_arg(&args[i + 1])?;
            if n < 1 {
                return Err(CmdError::SYNTAX);
            }
            parsed.count = usize::try_from(n).unwrap_or(usize::MAX);
            i += 2;
        } else if is(&args[i], "match") && has_value {
            let p = &args[i + 1][..];
            parsed.pattern = if p == b"*" { None } else { Some(p) };
            i += 2;
        } else if novalues_ok && is(&args[i], "novalues") {
            parsed.novalues = true;
            i += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    Ok(parsed)
}

/// One page of a collection scan. Members are ordered by [`scan_hash`], which does not
/// depend on the table's layout, so a cursor (the hash to resume from) stays valid while
/// the collection grows or shrinks: a member present for the whole scan is returned
/// exactly once. Returns the page (at least `count` members when that many remain,
/// never splitting members of equal hash) and the next cursor, 0 when done.
pub(crate) fn scan_page<'a>(
    members: impl Iterator<Item = &'a [u8]>,
    len: usize,
    cursor: u64,
    count: usize,
) -> (Vec<&'a [u8]>, u64) {
    if cursor == 0 && (len <= SMALL_SCAN || len <= count) {
        return (members.collect(), 0);
    }
    let mut keyed: Vec<(u64, &[u8])> = members
        .map(|m| (scan_hash(m), m))
        .filter(|(h, _)| *h >= cursor)
        .collect();
    let count = count.max(1);
    if keyed.len() <= count {
        return (keyed.into_iter().map(|(_, m)| m).collect(), 0);
    }
    // Linear selection rather than a sort: each page costs O(n), not O(n log n).
    keyed.select_nth_unstable_by_key(count - 1, |(h, _)| *h);
    let last = keyed[count - 1].0;
    let mut next: Option<u64> = None;
    let mut page = Vec::with_capacity(count);
    for (h, m) in keyed {
        if h <= last {
            page.push(m);
        } else {
            next = Some(next.map_or(h, |n| n.min(h)));
        }
    }
    // `next` is above some returned hash, so it is never 0 (which would mean "done").
    (page, next.unwrap_or(0))
}

/// Writes a SCAN reply header: the cursor, then an array of `len` items follows.
pub(crate) fn scan_reply_header(out: &mut ReplyWriter, cursor: u64, len: usize) {
    out.array(2);
    out.bulk(itoa::Buffer::new().format(cursor).as_bytes());
    out.array(len);
}

fn hscan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let cursor = parse_cursor(&argv[2])?;
    let (h, out) = read_hash(ex, &argv[1])?;
    let Some(h) = h else {
        // Like Redis: a missing key answers an empty scan before options are looked at.
        scan_reply_header(out, 0, 0);
        return Ok(());
    };
    let args = parse_scan_args(&argv[3..], true)?;
    let (page, next) = scan_page(h.keys().map(|k| &k[..]), h.len(), cursor, args.count);
    let page: Vec<&[u8]> = page.into_iter().filter(|f| args.matches(f)).collect();
    let per_item = if args.novalues { 1 } else { 2 };
    scan_reply_header(out, next, page.len() * per_item);
    for field in page {
        out.bulk(field);
        if !args.novalues {
            match h.get(field) {
                Some(v) => out.bulk(v),
                // Unreachable: the field was just listed from this hash.
                None => out.null(),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_floats_like_redis() {
        assert_eq!(format_human(0.1 + 0.2), "0.3");
        assert_eq!(format_human(3.0), "3");
        assert_eq!(format_human(-0.5), "-0.5");
        assert_eq!(format_human(1e-6), "0.000001");
        assert_eq!(format_human(1e20), "100000000000000000000");
        assert_eq!(format_human(1e-20), "0");
        assert_eq!(format_human(-1e-20), "0");
        assert_eq!(format_human(1.5e17), "150000000000000000");
        assert_eq!(format_human(10.5 + 0.1), "10.6");
    }

    #[test]
    fn cursors_parse_like_strtoul() {
        assert_eq!(parse_cursor(b"0"), Ok(0));
        assert_eq!(parse_cursor(b""), Ok(0));
        assert_eq!(parse_cursor(b"+3"), Ok(3));
        assert_eq!(parse_cursor(b"-1"), Ok(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551615"), Ok(u64::MAX));
        assert!(parse_cursor(b"18446744073709551616").is_err());
        assert!(parse_cursor(b" 1").is_err());
        assert!(parse_cursor(b"1 ").is_err());
        assert!(parse_cursor(b"x").is_err());
        assert!(parse_cursor(b"-").is_err());
    }

    #[test]
    fn scan_pages_visit_every_member_once() {
        let members: Vec<Vec<u8>> = (0..1000).map(|i| format!("m{i}").into_bytes()).collect();
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            let (page, next) = scan_page(members.iter().map(|m| &m[..]), members.len(), cursor, 7);
            assert!(!page.is_empty());
            for m in page {
                assert!(seen.insert(m.to_vec()), "member returned twice");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn reply_budget() {
        assert!(check_reply_budget(1000, 10).is_ok());
        assert!(check_reply_budget(u64::MAX, 0).is_err());
        assert!(check_reply_budget(i64::MAX as u64, u64::MAX).is_err());
    }
}
