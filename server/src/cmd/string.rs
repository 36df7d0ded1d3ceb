//! Strings: GET, SET and its options, counters, ranges, multi-key get and set.

use bytes::Bytes;

use crate::cmd::decimal::{format_decimal, parse_decimal};
use crate::cmd::{
    data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec, ALL_KEYS, KEY1,
};
use crate::notify::{GENERIC, STRING};
use crate::store::{Entry, Value};

/// Longest string a write may produce (Redis's default `proto-max-bulk-len`).
pub const MAX_STRING_LEN: usize = 512 * 1024 * 1024;

const STRING_TOO_LONG: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
));

const PAIRS: KeySpec = KeySpec {
    first: 1,
    last: -1,
    step: 2,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("get", 2, READONLY | FAST, KEY1, "string", "Returns the string value of a key.", get),
    data("set", -3, WRITE | DENYOOM | WHOLE_VALUE, KEY1, "string", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", set),
    data("setex", 4, WRITE | DENYOOM | WHOLE_VALUE, KEY1, "string", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", setex),
    data("psetex", 4, WRITE | DENYOOM | WHOLE_VALUE, KEY1, "string", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", psetex),
    data("setnx", 3, WRITE | DENYOOM | FAST, KEY1, "string", "Set the string value of a key only when the key doesn't exist.", setnx),
    data("getex", -2, WRITE | FAST, KEY1, "string", "Returns the string value of a key after setting its expiration time.", getex),
    data("getdel", 2, WRITE | FAST, KEY1, "string", "Returns the string value of a key after deleting the key.", getdel),
    data("getset", 3, WRITE | DENYOOM | FAST, KEY1, "string", "Returns the previous string value of a key after setting it to a new value.", getset),
    data("mget", -2, READONLY | FAST, ALL_KEYS, "string", "Atomically returns the string values of one or more keys.", mget),
    data("mset", -3, WRITE | DENYOOM | WHOLE_VALUE, PAIRS, "string", "Atomically creates or modifies the string values of one or more keys.", mset),
    data("msetnx", -3, WRITE | DENYOOM, PAIRS, "string", "Atomically modifies the string values of one or more keys only when all keys don't exist.", msetnx),
    data("append", 3, WRITE | DENYOOM | FAST, KEY1, "string", "Appends a string to the value of a key. Creates the key if it doesn't exist.", append),
    data("strlen", 2, READONLY | FAST, KEY1, "string", "Returns the length of a string value.", strlen),
    data("incr", 2, WRITE | DENYOOM | FAST, KEY1, "string", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", incr),
    data("decr", 2, WRITE | DENYOOM | FAST, KEY1, "string", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", decr),
    data("incrby", 3, WRITE | DENYOOM | FAST, KEY1, "string", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", incrby),
    data("decrby", 3, WRITE | DENYOOM | FAST, KEY1, "string", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", decrby),
    data("incrbyfloat", 3, WRITE | DENYOOM | FAST, KEY1, "string", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", incrbyfloat),
    data("getrange", 4, READONLY, KEY1, "string", "Returns a substring of the string stored at a key.", getrange),
    data("substr", 4, READONLY, KEY1, "string", "Returns a substring from a string value.", getrange),
    data("setrange", 4, WRITE | DENYOOM, KEY1, "string", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", setrange),
    data("lcs", -3, READONLY, KeySpec { first: 1, last: 2, step: 1 }, "string", "Finds the longest common substring.", lcs),
];

/// The string under `key` for a read: `Ok(None)` if missing, WRONGTYPE if not a string.
fn read_str<'e>(ex: &'e mut Exec<'_>, key: &[u8]) -> Result<Option<&'e mut Vec<u8>>, CmdError> {
    match ex.read_value(key) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// Checks that `key` holds a string or nothing, for a write (expired keys go first).
fn check_str_or_missing(ex: &mut Exec<'_>, key: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
    match ex.write(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => Ok(Some(s.clone())),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// Stores a string, replacing any value and (unless `keep_ttl`) any expiry.
pub fn store_string(ex: &mut Exec<'_>, key: &[u8], value: &[u8], expire_at: u64, keep_ttl: bool) {
    let now = ex.now_ms;
    let mut entry = Entry::new(Value::Str(value.to_vec()));
    entry.expire_at = expire_at;
    entry.heat.touch(now, true);
    let ks = ex.ks();
    let old = ks.insert(key, entry);
    let old_live_ttl = match &old {
        Some(o) if o.is_expired(now) => {
            // The old value had expired: it goes with its own event, as Redis's
            // expireIfNeeded would have done before the write.
            ex.notify(crate::notify::EXPIRED, "expired", key);
            ex.store.expired_keys += 1;
            0
        }
        Some(o) => o.expire_at,
        None => 0,
    };
    if keep_ttl && old_live_ttl != 0 {
        ex.ks().set_expire(key, old_live_ttl);
    }
    ex.notify(STRING, "set", key);
    if expire_at != 0 && !keep_ttl {
        ex.notify(GENERIC, "expire", key);
    }
}

/// An expiry option's value turned into absolute Unix milliseconds.
/// `unit_ms` is 1000 for seconds, 1 for milliseconds; `absolute` for EXAT/PXAT.
/// Errors with `ERR invalid expire time in '<cmd>' command` as Redis does.
pub fn expire_at_from(
    arg: &[u8],
    unit_ms: i64,
    absolute: bool,
    now_ms: u64,
    cmd: &str,
) -> Result<u64, CmdError> {
    let invalid = || CmdError::err(format!("invalid expire time in '{cmd}' command"));
    let n = int_arg(arg)?;
    if n <= 0 {
        return Err(invalid());
    }
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(now_ms as i64).ok_or_else(invalid)?
    };
    Ok(at as u64)
}

fn get(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    match ex.read_out(&argv[1]) {
        (None, out) => out.null(),
        (
            Some(Entry {
                value: Value::Str(s),
                ..
            }),
            out,
        ) => out.bulk(s),
        (Some(_), _) => return Err(CmdError::WRONGTYPE),
    }
    Ok(())
}

#[derive(Default)]
struct SetOptions {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    expire_at: u64,
}

fn parse_set_options(args: &[Bytes], now_ms: u64) -> Result<SetOptions, CmdError> {
    let mut o = SetOptions::default();
    let mut has_expire = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let next = args.get(i + 1);
        if is(a, "nx") && !o.xx {
            o.nx = true;
        } else if is(a, "xx") && !o.nx {
            o.xx = true;
        } else if is(a, "get") {
            o.get = true;
        } else if is(a, "keepttl") && !has_expire {
            o.keep_ttl = true;
        } else if let (true, Some(value)) = (
            (is(a, "ex") || is(a, "px") || is(a, "exat") || is(a, "pxat"))
                && !has_expire
                && !o.keep_ttl,
            next,
        ) {
            let unit = if is(a, "ex") || is(a, "exat") {
                1000
            } else {
                1
            };
            let absolute = is(a, "exat") || is(a, "pxat");
            o.expire_at = expire_at_from(value, unit, absolute, now_ms, "set")?;
            has_expire = true;
            i += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 1;
    }
    Ok(o)
}

fn set(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let o = parse_set_options(&argv[3..], ex.now_ms)?;
    let key = &argv[1];
    let old = if o.get {
        check_str_or_missing(ex, key)?
    } else {
        ex.expire_if_needed(key);
        None
    };
    let exists = ex.ks().raw_get(key).is_some();
    if (o.nx && exists) || (o.xx && !exists) {
        match (o.get, old) {
            (true, Some(v)) => ex.out.bulk(&v),
            _ => ex.out.null(),
        }
        return Ok(());
    }
    store_string(ex, key, &argv[2], o.expire_at, o.keep_ttl);
    match (o.get, old) {
        (false, _) => ex.out.ok(),
        (true, Some(v)) => ex.out.bulk(&v),
        (true, None) => ex.out.null(),
    }
    Ok(())
}

fn setex_generic(ex: &mut Exec<'_>, argv: &[Bytes], unit: i64, name: &str) -> CmdResult {
    let at = expire_at_from(&argv[2], unit, false, ex.now_ms, name)?;
    store_string(ex, &argv[1], &argv[3], at, false);
    ex.out.ok();
    Ok(())
}

fn setex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    setex_generic(ex, argv, 1000, "setex")
}

fn psetex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    setex_generic(ex, argv, 1, "psetex")
}

fn setnx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ex.expire_if_needed(&argv[1]);
    if ex.ks().raw_get(&argv[1]).is_some() {
        ex.out.int(0);
    } else {
        store_string(ex, &argv[1], &argv[2], 0, false);
        ex.out.int(1);
    }
    Ok(())
}

fn getex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    // Parse first: an error must leave the key untouched.
    enum Change {
        Keep,
        Persist,
        At(u64),
    }
    let mut change = Change::Keep;
    let mut i = 2;
    while i < argv.len() {
        let a = &argv[i];
        let timed = is(a, "ex") || is(a, "px") || is(a, "exat") || is(a, "pxat");
        if timed && matches!(change, Change::Keep) && i + 1 < argv.len() {
            let unit = if is(a, "ex") || is(a, "exat") {
                1000
            } else {
                1
            };
            let absolute = is(a, "exat") || is(a, "pxat");
            change = Change::At(expire_at_from(
                &argv[i + 1],
                unit,
                absolute,
                ex.now_ms,
                "getex",
            )?);
            i += 2;
        } else if is(a, "persist") && matches!(change, Change::Keep) {
            change = Change::Persist;
            i += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    let key = &argv[1];
    let Some(value) = check_str_or_missing(ex, key)? else {
        ex.out.null();
        return Ok(());
    };
    match change {
        Change::Keep => {}
        Change::Persist => {
            if ex.ks().raw_get(key).is_some_and(|e| e.expire_at != 0) {
                ex.ks().set_expire(key, 0);
                ex.notify(GENERIC, "persist", key);
            }
        }
        Change::At(at) if at <= ex.now_ms => {
            ex.ks().remove(key);
            ex.notify(GENERIC, "del", key);
        }
        Change::At(at) => {
            ex.ks().set_expire(key, at);
            ex.notify(GENERIC, "expire", key);
        }
    }
    ex.out.bulk(&value);
    Ok(())
}

fn getdel(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    match check_str_or_missing(ex, key)? {
        None => ex.out.null(),
        Some(v) => {
            ex.ks().remove(key);
            ex.notify(GENERIC, "del", key);
            ex.out.bulk(&v);
        }
    }
    Ok(())
}

fn getset(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let old = check_str_or_missing(ex, &argv[1])?;
    store_string(ex, &argv[1], &argv[2], 0, false);
    match old {
        Some(v) => ex.out.bulk(&v),
        None => ex.out.null(),
    }
    Ok(())
}

fn mget(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ex.out.array(argv.len() - 1);
    for key in &argv[1..] {
        let value = match ex.read_value(key) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        match value {
            Some(v) => ex.out.bulk(&v),
            None => ex.out.null(),
        }
    }
    Ok(())
}

fn mset(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len().is_multiple_of(2) {
        return Err(CmdError::arity("mset"));
    }
    for pair in argv[1..].chunks(2) {
        store_string(ex, &pair[0], &pair[1], 0, false);
    }
    ex.out.ok();
    Ok(())
}

fn msetnx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len().is_multiple_of(2) {
        return Err(CmdError::arity("msetnx"));
    }
    let now = ex.now_ms;
    if argv[1..]
        .chunks(2)
        .any(|pair| ex.ks().get(&pair[0], now).is_some())
    {
        ex.out.int(0);
        return Ok(());
    }
    for pair in argv[1..].chunks(2) {
        store_string(ex, &pair[0], &pair[1], 0, false);
    }
    ex.out.int(1);
    Ok(())
}

fn append(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let len = match ex.write(key) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => {
            if s.len() + argv[2].len() > MAX_STRING_LEN {
                return Err(STRING_TOO_LONG);
            }
            s.extend_from_slice(&argv[2]);
            s.len()
        }
        Some(_) => return Err(CmdError::WRONGTYPE),
        None => {
            ex.ks()
                .insert(key, Entry::new(Value::Str(argv[2].to_vec())));
            argv[2].len()
        }
    };
    ex.notify(STRING, "append", key);
    ex.out.int(len as i64);
    Ok(())
}

fn strlen(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let len = read_str(ex, &argv[1])?.map_or(0, |s| s.len());
    ex.out.int(len as i64);
    Ok(())
}

/// Adds `delta` to the integer under `key` (0 if missing); keeps the key's TTL.
fn incr_generic(ex: &mut Exec<'_>, key: &[u8], delta: i64) -> CmdResult {
    let current = match ex.write(key) {
        None => 0,
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => kelvin_protocol::request::parse_i64(s).ok_or(CmdError::NOT_INTEGER)?,
        Some(_) => return Err(CmdError::WRONGTYPE),
    };
    let new = current.checked_add(delta).ok_or(CmdError::OVERFLOW)?;
    let text = itoa::Buffer::new().format(new).as_bytes().to_vec();
    match ex.ks().raw_get_mut(key) {
        Some(entry) => entry.value = Value::Str(text),
        None => {
            ex.ks().insert(key, Entry::new(Value::Str(text)));
        }
    }
    ex.notify(STRING, "incrby", key);
    ex.out.int(new);
    Ok(())
}

fn incr(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    incr_generic(ex, &argv[1], 1)
}

fn decr(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    incr_generic(ex, &argv[1], -1)
}

fn incrby(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let delta = int_arg(&argv[2])?;
    incr_generic(ex, &argv[1], delta)
}

fn decrby(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let delta = int_arg(&argv[2])?;
    if delta == i64::MIN {
        return Err(CmdError::err("decrement would overflow"));
    }
    incr_generic(ex, &argv[1], -delta)
}

/// INCRBYFLOAT's text for a result: Redis computes in long double and prints 17
/// significant digits, which hides the last-bit noise of binary fractions (0.1 + 0.2
/// shows as 0.3). Rounding to 15 significant digits gives the same text for the sums
/// people make.
pub fn format_incr_float(d: f64) -> String {
    let rounded: f64 = format!("{d:.14e}").parse().unwrap_or(d);
    kelvin_protocol::reply::format_double(rounded)
}

fn incrbyfloat(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let delta = crate::cmd::float_arg(&argv[2])?;
    let current = match ex.write(key) {
        None => 0.0,
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => kelvin_protocol::reply::parse_f64(s).ok_or(CmdError::NOT_FLOAT)?,
        Some(_) => return Err(CmdError::WRONGTYPE),
    };
    let new = current + delta;
    if new.is_nan() || new.is_infinite() {
        return Err(CmdError::err("increment would produce NaN or Infinity"));
    }
    // Plain decimals add exactly, as in Redis's long double (see `cmd::decimal`).
    let exact = match ex.ks().raw_get(key) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => parse_decimal(s),
        _ => Some(0),
    }
    .zip(parse_decimal(&argv[2]))
    .and_then(|(a, b)| a.checked_add(b));
    let text = match exact {
        Some(sum) => format_decimal(sum),
        None => format_incr_float(new),
    };
    match ex.ks().raw_get_mut(key) {
        Some(entry) => entry.value = Value::Str(text.clone().into_bytes()),
        None => {
            ex.ks()
                .insert(key, Entry::new(Value::Str(text.clone().into_bytes())));
        }
    }
    ex.notify(STRING, "incrbyfloat", key);
    ex.out.bulk(text.as_bytes());
    Ok(())
}

fn getrange(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (mut start, mut end) = (int_arg(&argv[2])?, int_arg(&argv[3])?);
    let Some(s) = read_str(ex, &argv[1])? else {
        ex.out.bulk(b"");
        return Ok(());
    };
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        ex.out.bulk(b"");
        return Ok(());
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    let piece = if start > end || len == 0 {
        Vec::new()
    } else {
        s[start as usize..=end as usize].to_vec()
    };
    ex.out.bulk(&piece);
    Ok(())
}

fn setrange(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let offset = int_arg(&argv[2])?;
    if offset < 0 {
        return Err(CmdError::err("offset is out of range"));
    }
    let offset = offset as usize;
    let piece = &argv[3];
    let current = match ex.write(key) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => Some(s.len()),
        Some(_) => return Err(CmdError::WRONGTYPE),
        None => None,
    };
    if piece.is_empty() {
        ex.out.int(current.unwrap_or(0) as i64);
        return Ok(());
    }
    if offset + piece.len() > MAX_STRING_LEN {
        return Err(STRING_TOO_LONG);
    }
    if current.is_none() {
        ex.ks().insert(key, Entry::new(Value::Str(Vec::new())));
    }
    let len = match ex.ks().raw_get_mut(key) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => {
            if s.len() < offset + piece.len() {
                s.resize(offset + piece.len(), 0);
            }
            s[offset..offset + piece.len()].copy_from_slice(piece);
            s.len()
        }
        _ => return Err(CmdError::WRONGTYPE),
    };
    ex.notify(STRING, "setrange", key);
    ex.out.int(len as i64);
    Ok(())
}

/// Largest table LCS may build, in bytes (Redis bounds it by `proto-max-bulk-len`; a
/// constant here, as for every string bound).
const MAX_LCS_TABLE_BYTES: u64 = MAX_STRING_LEN as u64;

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: Redis's dynamic
/// programming table and walk back (src/t_string.c), ranges from the end of the strings.
fn lcs(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut strings: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (slot, key) in strings.iter_mut().zip(&argv[1..3]) {
        match ex.read_value(key) {
            None => {}
            Some(Value::Str(s)) => *slot = s.clone(),
            Some(_) => {
                return Err(CmdError::err(
                    "The specified keys must contain string values",
                ))
            }
        }
    }
    let (mut get_len, mut get_idx, mut with_match_len, mut min_match_len) =
        (false, false, false, 0);
    let mut j = 3;
    while j < argv.len() {
        let opt = &argv[j];
        if is(opt, "idx") {
            get_idx = true;
        } else if is(opt, "len") {
            get_len = true;
        } else if is(opt, "withmatchlen") {
            with_match_len = true;
        } else if is(opt, "minmatchlen") && j + 1 < argv.len() {
            min_match_len = int_arg(&argv[j + 1])?.max(0) as u64;
            j += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        j += 1;
    }
    if get_len && get_idx {
        return Err(CmdError::err(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    let [a, b] = &strings;
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    if cells * 4 > MAX_LCS_TABLE_BYTES {
        return Err(CmdError::err(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let width = blen + 1;
    let mut table = vec![0u32; cells as usize];
    for i in 1..=alen {
        for k in 1..=blen {
            table[i * width + k] = if a[i - 1] == b[k - 1] {
                table[(i - 1) * width + k - 1] + 1
            } else {
                table[(i - 1) * width + k].max(table[i * width + k - 1])
            };
        }
    }
    let total = table[alen * width + blen];
    if get_len {
        ex.out.int(total as i64);
        return Ok(());
    }
    let mut result = vec![0u8; total as usize];
    // Matching ranges, each (a start, a end, b start, b end), found from the end.
    let mut ranges: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut open: Option<(usize, usize, usize, usize)> = None;
    let (mut i, mut k, mut idx) = (alen, blen, total as usize);
    while i > 0 && k > 0 {
        let mut emit = false;
        if a[i - 1] == b[k - 1] {
            result[idx - 1] = a[i - 1];
            open = match open {
                None => Some((i - 1, i - 1, k - 1, k - 1)),
                Some((a_start, a_end, b_start, b_end)) if a_start == i && b_start == k => {
                    Some((a_start - 1, a_end, b_start - 1, b_end))
                }
                Some(range) => {
                    emit = true;
                    Some(range)
                }
            };
            if open.is_some_and(|(a_start, _, b_start, _)| a_start == 0 || b_start == 0) {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            k -= 1;
        } else {
            if table[(i - 1) * width + k] > table[i * width + k - 1] {
                i -= 1;
            } else {
                k -= 1;
            }
            emit = open.is_some();
        }
        if emit {
            if let Some(range) = open.take() {
                let len = (range.1 - range.0 + 1) as u64;
                if min_match_len == 0 || len >= min_match_len {
                    ranges.push(range);
                }
            }
        }
    }
    if !get_idx {
        ex.out.bulk(&result);
        return Ok(());
    }
    ex.out.map(2);
    ex.out.bulk(b"matches");
    ex.out.array(ranges.len());
    for (a_start, a_end, b_start, b_end) in ranges {
        ex.out.array(if with_match_len { 3 } else { 2 });
        ex.out.array(2);
        ex.out.int(a_start as i64);
        ex.out.int(a_end as i64);
        ex.out.array(2);
        ex.out.int(b_start as i64);
        ex.out.int(b_end as i64);
        if with_match_len {
            ex.out.int((a_end - a_start + 1) as i64);
        }
    }
    ex.out.bulk(b"len");
    ex.out.int(total as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incr_float_text() {
        assert_eq!(format_incr_float(0.1 + 0.2), "0.3");
        assert_eq!(format_incr_float(10.5 + 0.1), "10.6");
        assert_eq!(format_incr_float(3.0), "3");
        assert_eq!(format_incr_float(5.0e3), "5000");
    }
}
