//! Lists: pushes and pops at both ends, index access, ranges, trimming, removal, search
//! (LPOS) and the atomic move between lists (LMOVE, RPOPLPUSH). The blocking forms
//! (BLPOP and friends) are not served.
//!
//! A list is a `VecDeque<Blob>`: O(1) at both ends, which is where session stores and
//! queues work, and O(1) index access for LINDEX/LSET. Redis deletes a list when its
//! last element goes, so every removal ends with `remove_if_empty`.
//!
//! Argument errors are checked in the order Redis checks them, because the order decides
//! which error a bad request gets (LINDEX and LSET look the key up before parsing the
//! index; LRANGE, LTRIM and LREM parse first).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::cmd::{
    data, flags::*, int_arg, is, resolve_range, CmdError, CmdResult, CommandSpec, Exec, KeySpec,
    KEY1,
};
use crate::notify::LIST;
use crate::store::{Blob, Entry, Value};

pub(crate) type List = VecDeque<Blob>;

/// LMOVE and RPOPLPUSH: source then destination.
const SRC_DST: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("lpush", -3, WRITE | DENYOOM | FAST, KEY1, "list", "Prepends one or more elements to a list. Creates the key if it doesn't exist.", lpush),
    data("rpush", -3, WRITE | DENYOOM | FAST, KEY1, "list", "Appends one or more elements to a list. Creates the key if it doesn't exist.", rpush),
    data("lpushx", -3, WRITE | DENYOOM | FAST, KEY1, "list", "Prepends one or more elements to a list only when the list exists.", lpushx),
    data("rpushx", -3, WRITE | DENYOOM | FAST, KEY1, "list", "Appends an element to a list only when the list exists.", rpushx),
    data("lpop", -2, WRITE | FAST, KEY1, "list", "Returns the first elements in a list after removing it. Deletes the list if the last element was popped.", lpop),
    data("rpop", -2, WRITE | FAST, KEY1, "list", "Returns and removes the last elements of the list. Deletes the list if the last element was popped.", rpop),
    data("lrange", 4, READONLY, KEY1, "list", "Returns a range of elements from a list.", lrange),
    data("llen", 2, READONLY | FAST, KEY1, "list", "Returns the length of a list.", llen),
    data("lindex", 3, READONLY, KEY1, "list", "Returns an element from a list by its index.", lindex),
    data("lset", 4, WRITE | DENYOOM, KEY1, "list", "Sets the value of an element in a list by its index.", lset),
    data("lrem", 4, WRITE, KEY1, "list", "Removes elements from a list. Deletes the list if the last element was removed.", lrem),
    data("ltrim", 4, WRITE, KEY1, "list", "Removes elements from both ends a list. Deletes the list if all elements were trimmed.", ltrim),
    data("linsert", 5, WRITE | DENYOOM, KEY1, "list", "Inserts an element before or after another element in a list.", linsert),
    data("lpos", -3, READONLY, KEY1, "list", "Returns the index of matching elements in a list.", lpos),
    data("lmove", 5, WRITE | DENYOOM, SRC_DST, "list", "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.", lmove),
    data("blpop", -3, WRITE | BLOCKING, KeySpec { first: 1, last: -2, step: 1 }, "list", "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.", blpop),
    data("brpop", -3, WRITE | BLOCKING, KeySpec { first: 1, last: -2, step: 1 }, "list", "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.", brpop),
    data("blmove", 6, WRITE | DENYOOM | BLOCKING, SRC_DST, "list", "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.", blmove),
    data("brpoplpush", 4, WRITE | DENYOOM | BLOCKING, SRC_DST, "list", "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.", brpoplpush),
    data("rpoplpush", 3, WRITE | DENYOOM, SRC_DST, "list", "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.", rpoplpush),
];

/// Which end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

impl End {
    fn push_event(self) -> &'static str {
        match self {
            End::Left => "lpush",
            End::Right => "rpush",
        }
    }

    fn pop_event(self) -> &'static str {
        match self {
            End::Left => "lpop",
            End::Right => "rpop",
        }
    }
}

fn push_end(list: &mut List, end: End, item: Blob) {
    match end {
        End::Left => list.push_front(item),
        End::Right => list.push_back(item),
    }
}

fn pop_end(list: &mut List, end: End) -> Option<Blob> {
    match end {
        End::Left => list.pop_front(),
        End::Right => list.pop_back(),
    }
}

/// A count that must not be negative, Redis's `getPositiveLongFromObjectOrReply` with its
/// default message: unlike [`crate::cmd::count_arg`], a non-integer also answers
/// `ERR value is out of range, must be positive` (LPOP, RPOP, ZPOPMIN, ZPOPMAX).
pub(crate) fn positive_arg(arg: &[u8]) -> Result<usize, CmdError> {
    match kelvin_protocol::request::parse_i64(arg) {
        Some(n) if n >= 0 => Ok(n as usize),
        _ => Err(CmdError::OUT_OF_RANGE),
    }
}

/// The list under `key` for a write (an expired key is deleted first): `Ok(None)` if
/// missing, WRONGTYPE if the key holds something else.
pub(crate) fn write_list<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
) -> Result<Option<&'e mut List>, CmdError> {
    match ex.write(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::List(l),
            ..
        }) => Ok(Some(l)),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// The list under `key` for a read, with the reply buffer borrowed apart so elements go
/// straight from the store into the reply.
fn read_list_out<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
) -> Result<(Option<&'e List>, &'e mut kelvin_protocol::ReplyWriter), CmdError> {
    match ex.read_out(key) {
        (None, out) => Ok((None, out)),
        (
            Some(Entry {
                value: Value::List(l),
                ..
            }),
            out,
        ) => Ok((Some(l), out)),
        (Some(_), _) => Err(CmdError::WRONGTYPE),
    }
}

/// Resolves a possibly negative index against a length.
fn index_in(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 {
        (len as i64).checked_add(index)?
    } else {
        index
    };
    (0..len as i64).contains(&i).then_some(i as usize)
}

fn push_generic(ex: &mut Exec<'_>, argv: &[Bytes], end: End, only_existing: bool) -> CmdResult {
    let key = &argv[1];
    let items = &argv[2..];
    let len = match write_list(ex, key)? {
        Some(list) => {
            for item in items {
                push_end(list, end, item[..].into());
            }
            list.len()
        }
        None if only_existing => {
            ex.out.int(0);
            return Ok(());
        }
        None => {
            let mut list = List::with_capacity(items.len());
            for item in items {
                push_end(&mut list, end, item[..].into());
            }
            let len = list.len();
            ex.ks().insert(key, Entry::new(Value::List(Box::new(list))));
            len
        }
    };
    ex.notify(LIST, end.push_event(), key);
    ex.out.int(len as i64);
    Ok(())
}

fn lpush(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    push_generic(ex, argv, End::Left, false)
}

fn rpush(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    push_generic(ex, argv, End::Right, false)
}

fn lpushx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    push_generic(ex, argv, End::Left, true)
}

fn rpushx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    push_generic(ex, argv, End::Right, true)
}

fn pop_generic(ex: &mut Exec<'_>, argv: &[Bytes], end: End, name: &str) -> CmdResult {
    if argv.len() > 3 {
        return Err(CmdError::arity(name));
    }
    let count = match argv.get(2) {
        Some(arg) => Some(positive_arg(arg)?),
        None => None,
    };
    let key = &argv[1];
    let popped: Vec<Blob> = match write_list(ex, key)? {
        None => {
            // With a count the missing key is a null array, without one a null string.
            match count {
                Some(_) => ex.out.null_array(),
                None => ex.out.null(),
            }
            return Ok(());
        }
        Some(list) => {
            let n = count.unwrap_or(1).min(list.len());
            (0..n).filter_map(|_| pop_end(list, end)).collect()
        }
    };
    if !popped.is_empty() {
        ex.notify(LIST, end.pop_event(), key);
        ex.remove_if_empty(key);
    }
    match count {
        None => match popped.first() {
            Some(item) => ex.out.bulk(item),
            // Unreachable in practice: a stored list is never empty.
            None => ex.out.null(),
        },
        Some(_) => ex.out.bulks(popped.iter()),
    }
    Ok(())
}

fn lpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    pop_generic(ex, argv, End::Left, "lpop")
}

fn rpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    pop_generic(ex, argv, End::Right, "rpop")
}

fn lrange(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let start = int_arg(&argv[2])?;
    let stop = int_arg(&argv[3])?;
    let (list, out) = read_list_out(ex, &argv[1])?;
    match list.and_then(|l| resolve_range(start, stop, l.len()).map(|r| (l, r))) {
        None => out.array(0),
        Some((list, (from, to))) => out.bulks(list.range(from..=to)),
    }
    Ok(())
}

fn llen(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (list, out) = read_list_out(ex, &argv[1])?;
    out.int(list.map_or(0, |l| l.len() as i64));
    Ok(())
}

fn lindex(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    // Redis looks the key up before it parses the index: a missing key answers nil even
    // for a bad index.
    let (list, out) = read_list_out(ex, &argv[1])?;
    let Some(list) = list else {
        out.null();
        return Ok(());
    };
    let index = int_arg(&argv[2])?;
    match index_in(index, list.len()) {
        Some(i) => out.bulk(&list[i]),
        None => out.null(),
    }
    Ok(())
}

fn lset(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(list) = write_list(ex, key)? else {
        return Err(CmdError::NO_SUCH_KEY);
    };
    let index = int_arg(&argv[2])?;
    let i = index_in(index, list.len()).ok_or(CmdError::INDEX_OUT_OF_RANGE)?;
    list[i] = argv[3][..].into();
    ex.notify(LIST, "lset", key);
    ex.out.ok();
    Ok(())
}

fn lrem(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let count = int_arg(&argv[2])?;
    let key = &argv[1];
    let element = &argv[3][..];
    let Some(list) = write_list(ex, key)? else {
        ex.out.int(0);
        return Ok(());
    };
    // count > 0: the first `count` matches from the head; < 0: from the tail; 0: all.
    let limit = if count == 0 {
        usize::MAX
    } else {
        usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
    };
    let mut removed = 0usize;
    if count >= 0 {
        list.retain(|e| {
            if removed < limit && &e[..] == element {
                removed += 1;
                false
            } else {
                true
            }
        });
    } else {
        let mut kept = List::with_capacity(list.len());
        while let Some(e) = list.pop_back() {
            if removed < limit && &e[..] == element {
                removed += 1;
            } else {
                kept.push_front(e);
            }
        }
        *list = kept;
    }
    if removed > 0 {
        ex.notify(LIST, "lrem", key);
        ex.remove_if_empty(key);
    }
    ex.out.int(removed as i64);
    Ok(())
}

fn ltrim(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let start = int_arg(&argv[2])?;
    let stop = int_arg(&argv[3])?;
    let key = &argv[1];
    let Some(list) = write_list(ex, key)? else {
        ex.out.ok();
        return Ok(());
    };
    match resolve_range(start, stop, list.len()) {
        None => list.clear(),
        Some((from, to)) => {
            list.truncate(to + 1);
            list.drain(..from);
        }
    }
    // Redis signals `ltrim` whenever the key exists, even if nothing was cut; WATCH and
    // notification listeners see the same thing here.
    ex.notify(LIST, "ltrim", key);
    ex.remove_if_empty(key);
    ex.out.ok();
    Ok(())
}

fn linsert(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let after = if is(&argv[2], "after") {
        true
    } else if is(&argv[2], "before") {
        false
    } else {
        return Err(CmdError::SYNTAX);
    };
    let key = &argv[1];
    let (pivot, element) = (&argv[3][..], &argv[4]);
    let Some(list) = write_list(ex, key)? else {
        ex.out.int(0);
        return Ok(());
    };
    let Some(at) = list.iter().position(|e| &e[..] == pivot) else {
        ex.out.int(-1);
        return Ok(());
    };
    list.insert(at + after as usize, element[..].into());
    let len = list.len();
    ex.notify(LIST, "linsert", key);
    ex.out.int(len as i64);
    Ok(())
}

fn lpos(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut rank: i64 = 1;
    let mut count: Option<usize> = None;
    let mut maxlen: usize = 0;
    let mut i = 3;
    while i < argv.len() {
        let opt = &argv[i];
        let Some(value) = argv.get(i + 1) else {
            return Err(CmdError::SYNTAX);
        };
        if is(opt, "rank") {
            rank = int_arg(value)?;
            // Redis 7.2 refuses LONG_MIN: its magnitude does not fit.
            if rank == i64::MIN {
                return Err(CmdError::err(
                    "value is out of range, value must between -9223372036854775807 and 9223372036854775807",
                ));
            }
            if rank == 0 {
                return Err(CmdError::err("RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
            }
        } else if is(opt, "count") {
            count =
                Some(positive_arg(value).map_err(|_| CmdError::err("COUNT can't be negative"))?);
        } else if is(opt, "maxlen") {
            maxlen = positive_arg(value).map_err(|_| CmdError::err("MAXLEN can't be negative"))?;
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 2;
    }
    let element = &argv[2][..];
    let (list, out) = read_list_out(ex, &argv[1])?;
    let Some(list) = list else {
        match count {
            Some(_) => out.array(0),
            None => out.null(),
        }
        return Ok(());
    };
    let len = list.len();
    // MAXLEN bounds the comparisons, from whichever end the search starts at.
    let scan = if maxlen == 0 { len } else { maxlen.min(len) };
    let positions: Box<dyn Iterator<Item = usize>> = if rank > 0 {
        Box::new(0..scan)
    } else {
        Box::new((len - scan..len).rev())
    };
    // COUNT 0 means every match.
    let want = match count {
        None => 1,
        Some(0) => usize::MAX,
        Some(n) => n,
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    for p in positions {
        if &list[p][..] != element {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        found.push(p);
        if found.len() >= want {
            break;
        }
    }
    match count {
        Some(_) => {
            out.array(found.len());
            for p in found {
                out.int(p as i64);
            }
        }
        None => match found.first() {
            Some(&p) => out.int(p as i64),
            None => out.null(),
        },
    }
    Ok(())
}

fn end_arg(arg: &[u8]) -> Result<End, CmdError> {
    if is(arg, "left") {
        Ok(End::Left)
    } else if is(arg, "right") {
        Ok(End::Right)
    } else {
        Err(CmdError::SYNTAX)
    }
}

/// Pops from `src` at `from` and pushes onto `dst` at `to`, atomically. Both keys are
/// type-checked before anything moves; `src == dst` rotates the list.
fn lmove_generic(ex: &mut Exec<'_>, src: &[u8], dst: &[u8], from: End, to: End) -> CmdResult {
    if write_list(ex, src)?.is_none() {
        ex.out.null();
        return Ok(());
    }
    write_list(ex, dst)?;
    let Some(item) = write_list(ex, src)?.and_then(|l| pop_end(l, from)) else {
        // A stored list is never empty; nothing moved.
        ex.out.null();
        return Ok(());
    };
    match ex.write_or_create(dst, || Value::List(Box::default())) {
        Value::List(list) => push_end(list, to, item.clone()),
        // Checked above: `dst` is a list or was missing.
        _ => return Err(CmdError::WRONGTYPE),
    }
    // Redis's order: the push on the destination, then the pop on the source.
    ex.notify(LIST, to.push_event(), dst);
    ex.notify(LIST, from.pop_event(), src);
    ex.remove_if_empty(src);
    ex.out.bulk(&item);
    Ok(())
}

fn lmove(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let from = end_arg(&argv[3])?;
    let to = end_arg(&argv[4])?;
    lmove_generic(ex, &argv[1], &argv[2], from, to)
}

fn rpoplpush(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    lmove_generic(ex, &argv[1], &argv[2], End::Right, End::Left)
}

/// A blocking command's timeout in seconds (a float; 0 waits forever), as Redis parses it.
pub(crate) fn timeout_arg(arg: &[u8]) -> Result<Option<std::time::Duration>, CmdError> {
    let secs = kelvin_protocol::reply::parse_f64(arg)
        .filter(|s| s.is_finite())
        .ok_or_else(|| CmdError::err("timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(CmdError::err("timeout is negative"));
    }
    // Bounded so the deadline arithmetic cannot overflow (about 31 years).
    if secs > 1e9 {
        return Err(CmdError::err("timeout is out of range"));
    }
    Ok((secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs)))
}

/// BLPOP / BRPOP: pops from the first non-empty list among the keys, or parks the
/// connection until a list write or the timeout (inside MULTI: answers nil at once).
fn bpop_generic(ex: &mut Exec<'_>, argv: &[Bytes], end: End) -> CmdResult {
    let timeout = timeout_arg(&argv[argv.len() - 1])?;
    let keys = &argv[1..argv.len() - 1];
    // Type-check every key first: a wrong type is an error even if another key has data.
    let now = ex.now_ms;
    for key in keys {
        if let Some(e) = ex.ks().get(key, now) {
            if !matches!(e.value, Value::List(_)) {
                return Err(CmdError::WRONGTYPE);
            }
        }
    }
    for key in keys {
        let Some(list) = write_list(ex, key)? else {
            continue;
        };
        let Some(item) = pop_end(list, end) else {
            continue;
        };
        ex.notify(LIST, end.pop_event(), key);
        ex.remove_if_empty(key);
        ex.out.array(2);
        ex.out.bulk(key);
        ex.out.bulk(&item);
        return Ok(());
    }
    if ex.may_block {
        ex.block = Some(crate::cmd::BlockOn { timeout });
    } else {
        ex.out.null_array();
    }
    Ok(())
}

fn blpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    bpop_generic(ex, argv, End::Left)
}

fn brpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    bpop_generic(ex, argv, End::Right)
}

/// BLMOVE / BRPOPLPUSH: LMOVE, or park until the source has an element.
fn bmove_generic(
    ex: &mut Exec<'_>,
    src: &[u8],
    dst: &[u8],
    from: End,
    to: End,
    timeout: &[u8],
) -> CmdResult {
    let timeout = timeout_arg(timeout)?;
    let now = ex.now_ms;
    if ex.ks().get(src, now).is_none() && ex.may_block {
        // Redis blocks without looking at the destination and answers WRONGTYPE when an
        // element arrives. Here woken clients race for the element (no first-come
        // first-served yet), so a client woken second would block on: the destination
        // is checked before blocking instead. One that becomes of another type while
        // blocked answers WRONGTYPE at the wake, as in Redis (`conn::rerun_blocked`).
        write_list(ex, dst)?;
        ex.block = Some(crate::cmd::BlockOn { timeout });
        return Ok(());
    }
    lmove_generic(ex, src, dst, from, to)
}

fn blmove(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let from = end_arg(&argv[3])?;
    let to = end_arg(&argv[4])?;
    bmove_generic(ex, &argv[1], &argv[2], from, to, &argv[5])
}

fn brpoplpush(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    bmove_generic(ex, &argv[1], &argv[2], End::Right, End::Left, &argv[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes() {
        assert_eq!(index_in(0, 3), Some(0));
        assert_eq!(index_in(-1, 3), Some(2));
        assert_eq!(index_in(-4, 3), None);
        assert_eq!(index_in(3, 3), None);
        assert_eq!(index_in(i64::MIN, 3), None);
        assert_eq!(index_in(i64::MAX, 3), None);
        assert_eq!(index_in(0, 0), None);
    }

    #[test]
    fn positive_counts() {
        assert_eq!(positive_arg(b"3"), Ok(3));
        assert_eq!(positive_arg(b"-1"), Err(CmdError::OUT_OF_RANGE));
        assert_eq!(positive_arg(b"x"), Err(CmdError::OUT_OF_RANGE));
    }
}
