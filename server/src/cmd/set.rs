//! Sets: unordered collections of unique members (SADD, SPOP, SINTER, SSCAN...).
//!
//! Replies and error texts follow Redis 7, RESP3 shapes included: SMEMBERS, SPOP with a
//! count and the algebra commands answer a set (`~`), SRANDMEMBER with a count an array.
//!
//! Determinism: a write must replay identically on every replica, but the iteration
//! order of a member table depends on its hasher's per-process seed. So SPOP picks by
//! index into the members in byte order, drawing from the store's seeded rng; reads
//! (SRANDMEMBER) use the table order, which only changes what this client sees.

use bytes::Bytes;
use hashbrown::HashSet;
use kelvin_protocol::ReplyWriter;
use rand::Rng;

use crate::cmd::hash::{
    check_reply_budget, parse_cursor, parse_scan_args, random_count_arg, scan_page,
    scan_reply_header,
};
use crate::cmd::{
    data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec, ALL_KEYS, KEY1,
    NO_KEYS,
};
use crate::notify::{GENERIC, SET};
use crate::store::{Blob, Entry, Keyspace, Value};

type Set = HashSet<Blob>;

/// SMOVE: the source and the destination are keys.
const TWO_KEYS: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("sadd", -3, WRITE | DENYOOM | FAST, KEY1, "set", "Adds one or more members to a set. Creates the key if it doesn't exist.", sadd),
    data("srem", -3, WRITE | FAST, KEY1, "set", "Removes one or more members from a set. Deletes the set if the last member was removed.", srem),
    data("smembers", 2, READONLY, KEY1, "set", "Returns all members of a set.", smembers),
    data("sismember", 3, READONLY | FAST, KEY1, "set", "Determines whether a member belongs to a set.", sismember),
    data("smismember", -3, READONLY | FAST, KEY1, "set", "Determines whether multiple members belong to a set.", smismember),
    data("scard", 2, READONLY | FAST, KEY1, "set", "Returns the number of members in a set.", scard),
    data("spop", -2, WRITE | FAST, KEY1, "set", "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.", spop),
    data("srandmember", -2, READONLY, KEY1, "set", "Get one or multiple random members from a set", srandmember),
    data("smove", 4, WRITE | FAST, TWO_KEYS, "set", "Moves a member from one set to another.", smove),
    data("sinter", -2, READONLY, ALL_KEYS, "set", "Returns the intersect of multiple sets.", sinter),
    data("sintercard", -3, READONLY, NO_KEYS, "set", "Returns the number of members of the intersect of multiple sets.", sintercard),
    data("sunion", -2, READONLY, ALL_KEYS, "set", "Returns the union of multiple sets.", sunion),
    data("sdiff", -2, READONLY, ALL_KEYS, "set", "Returns the difference of multiple sets.", sdiff),
    data("sinterstore", -3, WRITE | DENYOOM, ALL_KEYS, "set", "Stores the intersect of multiple sets in a key.", sinterstore),
    data("sunionstore", -3, WRITE | DENYOOM, ALL_KEYS, "set", "Stores the union of multiple sets in a key.", sunionstore),
    data("sdiffstore", -3, WRITE | DENYOOM, ALL_KEYS, "set", "Stores the difference of multiple sets in a key.", sdiffstore),
    data("sscan", -3, READONLY, KEY1, "set", "Iterates over members of a set.", sscan),
];

/// The set under `key` for a read, with the reply buffer borrowed alongside. `None` if
/// missing; WRONGTYPE if the key holds something else.
fn read_set<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
) -> Result<(Option<&'e mut Set>, &'e mut ReplyWriter), CmdError> {
    match ex.read_out(key) {
        (None, out) => Ok((None, out)),
        (
            Some(Entry {
                value: Value::Set(s),
                ..
            }),
            out,
        ) => Ok((Some(&mut **s), out)),
        (Some(_), _) => Err(CmdError::WRONGTYPE),
    }
}

/// The set under `key` for a write (an expired key is deleted first): `None` if
/// missing, WRONGTYPE if the key holds something else. Never creates the key.
fn existing_set<'e>(ex: &'e mut Exec<'_>, key: &[u8]) -> Result<Option<&'e mut Set>, CmdError> {
    match ex.write(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Set(s),
            ..
        }) => Ok(Some(&mut **s)),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// The set under `key` for a write, created empty if missing. Call only once the
/// command is sure to add a member: an empty set must never stay in the keyspace.
fn set_for_write<'e>(ex: &'e mut Exec<'_>, key: &[u8]) -> Result<&'e mut Set, CmdError> {
    existing_set(ex, key)?;
    match ex.write_or_create(key, || Value::Set(Default::default())) {
        Value::Set(s) => Ok(&mut **s),
        // Checked just above: the key holds a set or was missing and now holds one.
        _ => Err(CmdError::WRONGTYPE),
    }
}

/// Writes a set reply (an array in RESP2).
fn reply_members<'a>(out: &mut ReplyWriter, members: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.set(members.len());
    for m in members {
        out.bulk(m);
    }
}

fn sadd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let s = set_for_write(ex, key)?;
    let added = argv[2..].iter().filter(|m| s.insert(m[..].into())).count();
    if added > 0 {
        ex.notify(SET, "sadd", key);
    }
    ex.out.int(added as i64);
    Ok(())
}

fn srem(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(s) = existing_set(ex, key)? else {
        ex.out.int(0);
        return Ok(());
    };
    let removed = argv[2..].iter().filter(|m| s.remove(&m[..])).count();
    if removed > 0 {
        ex.notify(SET, "srem", key);
        ex.remove_if_empty(key);
    }
    ex.out.int(removed as i64);
    Ok(())
}

fn smembers(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    match read_set(ex, &argv[1])? {
        (Some(s), out) => reply_members(out, s.iter().map(|m| &m[..])),
        (None, out) => out.set(0),
    }
    Ok(())
}

fn sismember(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (s, out) = read_set(ex, &argv[1])?;
    out.int(s.is_some_and(|s| s.contains(&argv[2][..])) as i64);
    Ok(())
}

fn smismember(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (s, out) = read_set(ex, &argv[1])?;
    out.array(argv.len() - 2);
    for m in &argv[2..] {
        out.int(s.as_ref().is_some_and(|s| s.contains(&m[..])) as i64);
    }
    Ok(())
}

fn scard(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (s, out) = read_set(ex, &argv[1])?;
    out.int(s.map_or(0, |s| s.len()) as i64);
    Ok(())
}

/// SPOP's count: a non-negative integer; anything else gets Redis's one message.
fn positive_count(arg: &[u8]) -> Result<u64, CmdError> {
    match int_arg(arg) {
        Ok(n) if n >= 0 => Ok(n as u64),
        _ => Err(CmdError::OUT_OF_RANGE),
    }
}

fn spop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 3 {
        return Err(CmdError::SYNTAX);
    }
    let count = argv.get(2).map(|c| positive_count(c)).transpose()?;
    let key = &argv[1];
    let mut rng = ex.store.rng.get().clone();
    // (An empty set never stays in the keyspace; treating one as missing keeps the
    // random draws below away from an empty range even so.)
    let Some(s) = existing_set(ex, key)?.filter(|s| !s.is_empty()) else {
        match count {
            None => ex.out.null(),
            Some(_) => ex.out.set(0),
        }
        return Ok(());
    };
    let len = s.len();
    let popped: Vec<Blob> = match count {
        Some(0) => {
            ex.out.set(0);
            return Ok(());
        }
        Some(n) if n >= len as u64 => s.drain().collect(),
        _ => {
            // Index into the members in byte order, not table order: see the module doc.
            let mut members: Vec<&Blob> = s.iter().collect();
            let chosen: Vec<Blob> = match count {
                None => {
                    let pick = rng.gen_range(0..len);
                    let (_, nth, _) = members.select_nth_unstable(pick);
                    vec![(*nth).clone()]
                }
                Some(n) => {
                    members.sort_unstable();
                    // n < len here, so it fits a usize.
                    rand::seq::index::sample(&mut rng, len, n as usize)
                        .iter()
                        .map(|i| members[i].clone())
                        .collect()
                }
            };
            for m in &chosen {
                s.remove(m);
            }
            chosen
        }
    };
    *ex.store.rng.get() = rng;
    ex.notify(SET, "spop", key);
    ex.remove_if_empty(key);
    match count {
        None => match popped.first() {
            Some(m) => ex.out.bulk(m),
            None => ex.out.null(),
        },
        Some(_) => reply_members(ex.out, popped.iter().map(|m| &m[..])),
    }
    Ok(())
}

fn srandmember(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 3 {
        return Err(CmdError::SYNTAX);
    }
    let count = argv.get(2).map(|c| random_count_arg(c)).transpose()?;
    let mut rng = ex.store.rng.get().clone();
    let (s, out) = read_set(ex, &argv[1])?;
    // An empty set never stays in the keyspace; reading one as missing keeps the
    // random draws below away from an empty range even so.
    match (s.filter(|s| !s.is_empty()), count) {
        (None, None) => out.null(),
        (None, Some(_)) | (_, Some(0)) => out.array(0),
        (Some(s), None) => {
            let pick = rng.gen_range(0..s.len());
            match s.iter().nth(pick) {
                Some(m) => out.bulk(m),
                None => out.null(),
            }
        }
        (Some(s), Some(n)) => {
            let members: Vec<&Blob> = s.iter().collect();
            let len = members.len();
            if n < 0 {
                let n = n.unsigned_abs();
                let bytes: u64 = members.iter().map(|m| m.len() as u64).sum();
                check_reply_budget(n, bytes / len as u64)?;
                // Within the budget, so it fits a usize.
                out.array(n as usize);
                for _ in 0..n {
                    out.bulk(members[rng.gen_range(0..len)]);
                }
            } else if n as u64 >= len as u64 {
                out.array(len);
                for m in members {
                    out.bulk(m);
                }
            } else {
                let picks = rand::seq::index::sample(&mut rng, len, n as usize);
                out.array(picks.len());
                for i in picks.iter() {
                    out.bulk(members[i]);
                }
            }
        }
    }
    *ex.store.rng.get() = rng;
    Ok(())
}

fn smove(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (src, dst, member) = (&argv[1], &argv[2], &argv[3][..]);
    let src_state = existing_set(ex, src).map(|s| s.map(|s| s.contains(member)));
    let dst_ok = existing_set(ex, dst).is_ok();
    // Redis answers 0 for a missing source before it looks at the destination's type.
    let in_src = match src_state {
        Ok(None) => {
            ex.out.int(0);
            return Ok(());
        }
        Err(e) => return Err(e),
        Ok(Some(found)) => found,
    };
    if !dst_ok {
        return Err(CmdError::WRONGTYPE);
    }
    if src == dst || !in_src {
        ex.out.int(in_src as i64);
        return Ok(());
    }
    if let Some(s) = existing_set(ex, src)? {
        s.remove(member);
    }
    ex.notify(SET, "srem", src);
    ex.remove_if_empty(src);
    if set_for_write(ex, dst)?.insert(member.into()) {
        ex.notify(SET, "sadd", dst);
    }
    ex.out.int(1);
    Ok(())
}

/// Checks that every key holds a set or nothing, reading each as Redis does (so an
/// expired key counts as missing and is queued for deletion), then borrows them all
/// at once: `None` for a missing key.
fn sets_of<'k>(
    ex: &'k mut Exec<'_>,
    keys: &[Bytes],
) -> Result<(Vec<Option<&'k Set>>, &'k mut ReplyWriter), CmdError> {
    for key in keys {
        if let (Some(e), _) = ex.read_out(key) {
            if !matches!(e.value, Value::Set(_)) {
                return Err(CmdError::WRONGTYPE);
            }
        }
    }
    let now = ex.now_ms;
    let ks: &Keyspace = ex.store.db(ex.db);
    let sets = keys
        .iter()
        .map(|k| match ks.get(k, now) {
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => Some(&**s),
            _ => None,
        })
        .collect();
    Ok((sets, &mut *ex.out))
}

/// Members of every set (empty if any is missing), up to `limit` of them (0 = all).
fn intersect<'a>(sets: &[Option<&'a Set>], limit: usize) -> Vec<&'a [u8]> {
    let Some(mut sets) = sets.iter().copied().collect::<Option<Vec<&Set>>>() else {
        return Vec::new();
    };
    // Walk the smallest set, probe the others.
    sets.sort_by_key(|s| s.len());
    let Some((first, rest)) = sets.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in first.iter() {
        if rest.iter().all(|s| s.contains(m)) {
            out.push(&m[..]);
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
    }
    out
}

fn union<'a>(sets: &[Option<&'a Set>]) -> Vec<&'a [u8]> {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for s in sets.iter().flatten() {
        seen.extend(s.iter().map(|m| &m[..]));
    }
    seen.into_iter().collect()
}

/// Members of the first set in none of the others.
fn difference<'a>(sets: &[Option<&'a Set>]) -> Vec<&'a [u8]> {
    let Some(Some(first)) = sets.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|m| sets[1..].iter().flatten().all(|s| !s.contains(*m)))
        .map(|m| &m[..])
        .collect()
}

#[derive(Clone, Copy)]
enum SetOp {
    Inter,
    Union,
    Diff,
}

impl SetOp {
    fn apply<'a>(self, sets: &[Option<&'a Set>]) -> Vec<&'a [u8]> {
        match self {
            SetOp::Inter => intersect(sets, 0),
            SetOp::Union => union(sets),
            SetOp::Diff => difference(sets),
        }
    }

    /// The keyspace event of the STORE variant.
    fn store_event(self) -> &'static str {
        match self {
            SetOp::Inter => "sinterstore",
            SetOp::Union => "sunionstore",
            SetOp::Diff => "sdiffstore",
        }
    }
}

fn set_op_reply(ex: &mut Exec<'_>, keys: &[Bytes], op: SetOp) -> CmdResult {
    let (sets, out) = sets_of(ex, keys)?;
    reply_members(out, op.apply(&sets).into_iter());
    Ok(())
}

/// SINTERSTORE / SUNIONSTORE / SDIFFSTORE: the result replaces whatever `argv[1]` held
/// (any type, its TTL too); an empty result deletes it.
fn set_op_store(ex: &mut Exec<'_>, argv: &[Bytes], op: SetOp) -> CmdResult {
    let dst = &argv[1];
    let result: Set = {
        let (sets, _) = sets_of(ex, &argv[2..])?;
        op.apply(&sets).into_iter().map(Blob::from).collect()
    };
    ex.expire_if_needed(dst);
    let len = result.len();
    if len == 0 {
        if ex.ks().remove(dst).is_some() {
            ex.notify(GENERIC, "del", dst);
        }
    } else {
        let now = ex.now_ms;
        let mut entry = Entry::new(Value::Set(Box::new(result)));
        entry.heat.touch(now, true);
        ex.ks().insert(dst, entry);
        ex.notify(SET, op.store_event(), dst);
    }
    ex.out.int(len as i64);
    Ok(())
}

fn sinter(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_reply(ex, &argv[1..], SetOp::Inter)
}

fn sunion(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_reply(ex, &argv[1..], SetOp::Union)
}

fn sdiff(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_reply(ex, &argv[1..], SetOp::Diff)
}

fn sinterstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_store(ex, argv, SetOp::Inter)
}

fn sunionstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_store(ex, argv, SetOp::Union)
}

fn sdiffstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    set_op_store(ex, argv, SetOp::Diff)
}

fn sintercard(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let numkeys = match int_arg(&argv[1]) {
        Ok(n) if n >= 1 => n as u64,
        _ => return Err(CmdError::err("numkeys should be greater than 0")),
    };
    if numkeys > (argv.len() - 2) as u64 {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    // Fits: numkeys <= argv.len() - 2.
    let keys_end = 2 + numkeys as usize;
    let mut limit = 0usize;
    let mut i = keys_end;
    while i < argv.len() {
        if is(&argv[i], "limit") && i + 1 < argv.len() {
            limit = match int_arg(&argv[i + 1]) {
                Ok(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => return Err(CmdError::err("LIMIT can't be negative")),
            };
            i += 2;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    let (sets, out) = sets_of(ex, &argv[2..keys_end])?;
    out.int(intersect(&sets, limit).len() as i64);
    Ok(())
}

fn sscan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let cursor = parse_cursor(&argv[2])?;
    let (s, out) = read_set(ex, &argv[1])?;
    let Some(s) = s else {
        // Like Redis: a missing key answers an empty scan before options are looked at.
        scan_reply_header(out, 0, 0);
        return Ok(());
    };
    let args = parse_scan_args(&argv[3..], false)?;
    let (page, next) = scan_page(s.iter().map(|m| &m[..]), s.len(), cursor, args.count);
    let page: Vec<&[u8]> = page.into_iter().filter(|m| args.matches(m)).collect();
    scan_reply_header(out, next, page.len());
    for m in page {
        out.bulk(m);
    }
    Ok(())
}
