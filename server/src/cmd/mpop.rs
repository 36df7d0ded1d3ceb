//! Pops from the first non-empty of several keys: LMPOP, BLMPOP, ZMPOP, BZMPOP, and the
//! blocking sorted-set pops BZPOPMIN, BZPOPMAX.
//!
//! The blocking ones park the connection as BLPOP does (see [`crate::cmd::BlockOn`]):
//! a list or sorted-set write wakes it and the command runs again; inside MULTI they
//! answer at once.

use bytes::Bytes;

use crate::cmd::list::{timeout_arg, write_list};
use crate::cmd::zset::write_zset;
use crate::cmd::{data, flags::*, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec, NO_KEYS};
use crate::notify::{LIST, ZSET};
use crate::store::Blob;

/// BZPOPMIN / BZPOPMAX: every argument but the last (the timeout) is a key.
const KEYS_THEN_TIMEOUT: KeySpec = KeySpec {
    first: 1,
    last: -2,
    step: 1,
};

// The keys of the `numkeys` commands are found by `CommandSpec::keys_in`.
pub const COMMANDS: &[CommandSpec] = &[
    data("lmpop", -4, WRITE, NO_KEYS, "list", "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.", lmpop),
    data("blmpop", -5, WRITE | BLOCKING, NO_KEYS, "list", "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.", blmpop),
    data("zmpop", -4, WRITE, NO_KEYS, "sorted-set", "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped.", zmpop),
    data("bzmpop", -5, WRITE | BLOCKING, NO_KEYS, "sorted-set", "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.", bzmpop),
    data("bzpopmin", -3, WRITE | FAST | BLOCKING, KEYS_THEN_TIMEOUT, "sorted-set", "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.", bzpopmin),
    data("bzpopmax", -3, WRITE | FAST | BLOCKING, KEYS_THEN_TIMEOUT, "sorted-set", "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.", bzpopmax),
];

/// A positive count, or `ERR <what> should be greater than 0` (Redis's
/// `getRangeLongFromObjectOrReply(.., 1, LONG_MAX, ..)`).
fn positive(arg: &[u8], what: &str) -> Result<usize, CmdError> {
    match kelvin_protocol::request::parse_i64(arg) {
        Some(n) if n >= 1 => Ok(n as usize),
        _ => Err(CmdError::err(format!("{what} should be greater than 0"))),
    }
}

/// `numkeys key... <where> [COUNT count]` from `argv[at]`: the keys, the `where` word
/// and the count.
fn parse_mpop(argv: &[Bytes], at: usize) -> Result<(&[Bytes], &Bytes, usize), CmdError> {
    let numkeys = positive(&argv[at], "numkeys")?;
    let where_at = at
        .checked_add(numkeys)
        .and_then(|n| n.checked_add(1))
        .filter(|&w| w < argv.len())
        .ok_or(CmdError::SYNTAX)?;
    let mut count = None;
    let mut j = where_at + 1;
    while j < argv.len() {
        if count.is_none() && is(&argv[j], "count") && j + 1 < argv.len() {
            count = Some(positive(&argv[j + 1], "count")?);
            j += 2;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    Ok((&argv[at + 1..where_at], &argv[where_at], count.unwrap_or(1)))
}

/// Pops up to `count` from the first non-empty list: `[key, [elements]]`, or nothing
/// found (`Ok(false)`).
fn pop_lists(
    ex: &mut Exec<'_>,
    keys: &[Bytes],
    left: bool,
    count: usize,
) -> Result<bool, CmdError> {
    for key in keys {
        let Some(list) = write_list(ex, key)? else {
            continue;
        };
        let n = count.min(list.len());
        let popped: Vec<Blob> = (0..n)
            .filter_map(|_| {
                if left {
                    list.pop_front()
                } else {
                    list.pop_back()
                }
            })
            .collect();
        if popped.is_empty() {
            continue;
        }
        ex.notify(LIST, if left { "lpop" } else { "rpop" }, key);
        ex.remove_if_empty(key);
        ex.out.array(2);
        ex.out.bulk(key);
        ex.out.array(popped.len());
        for item in &popped {
            ex.out.bulk(item);
        }
        return Ok(true);
    }
    Ok(false)
}

fn list_where(arg: &[u8]) -> Result<bool, CmdError> {
    if is(arg, "left") {
        Ok(true)
    } else if is(arg, "right") {
        Ok(false)
    } else {
        Err(CmdError::SYNTAX)
    }
}

fn zset_where(arg: &[u8]) -> Result<bool, CmdError> {
    if is(arg, "max") {
        Ok(true)
    } else if is(arg, "min") {
        Ok(false)
    } else {
        Err(CmdError::SYNTAX)
    }
}

/// Pops up to `count` members from the first non-empty sorted set. `nested` answers
/// `[key, [[member, score]...]]` (ZMPOP), otherwise `[key, member, score]` (BZPOPMIN).
fn pop_zsets(
    ex: &mut Exec<'_>,
    keys: &[Bytes],
    max: bool,
    count: usize,
    nested: bool,
) -> Result<bool, CmdError> {
    for key in keys {
        let Some(z) = write_zset(ex, key)? else {
            continue;
        };
        let n = count.min(z.len());
        let popped: Vec<(Blob, f64)> = (0..n)
            .filter_map(|_| if max { z.pop_max() } else { z.pop_min() })
            .collect();
        if popped.is_empty() {
            continue;
        }
        ex.notify(ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
        ex.remove_if_empty(key);
        if nested {
            ex.out.array(2);
            ex.out.bulk(key);
            ex.out.array(popped.len());
            for (m, s) in &popped {
                ex.out.array(2);
                ex.out.bulk(m);
                ex.out.double(*s);
            }
        } else {
            ex.out.array(3);
            ex.out.bulk(key);
            ex.out.bulk(&popped[0].0);
            ex.out.double(popped[0].1);
        }
        return Ok(true);
    }
    Ok(false)
}

/// Nothing to pop: park (a blocking command outside MULTI) or answer nil.
fn none_found(ex: &mut Exec<'_>, timeout: Option<Option<std::time::Duration>>) {
    match timeout {
        Some(timeout) if ex.may_block => ex.block = Some(crate::cmd::BlockOn { timeout }),
        _ => ex.out.null_array(),
    }
}

fn lmpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (keys, side, count) = parse_mpop(argv, 1)?;
    if !pop_lists(ex, keys, list_where(side)?, count)? {
        none_found(ex, None);
    }
    Ok(())
}

fn blmpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let timeout = timeout_arg(&argv[1])?;
    let (keys, side, count) = parse_mpop(argv, 2)?;
    if !pop_lists(ex, keys, list_where(side)?, count)? {
        none_found(ex, Some(timeout));
    }
    Ok(())
}

fn zmpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (keys, side, count) = parse_mpop(argv, 1)?;
    if !pop_zsets(ex, keys, zset_where(side)?, count, true)? {
        none_found(ex, None);
    }
    Ok(())
}

fn bzmpop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let timeout = timeout_arg(&argv[1])?;
    let (keys, side, count) = parse_mpop(argv, 2)?;
    if !pop_zsets(ex, keys, zset_where(side)?, count, true)? {
        none_found(ex, Some(timeout));
    }
    Ok(())
}

fn bzpop(ex: &mut Exec<'_>, argv: &[Bytes], max: bool) -> CmdResult {
    let timeout = timeout_arg(&argv[argv.len() - 1])?;
    let keys = &argv[1..argv.len() - 1];
    if !pop_zsets(ex, keys, max, 1, false)? {
        none_found(ex, Some(timeout));
    }
    Ok(())
}

fn bzpopmin(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    bzpop(ex, argv, false)
}

fn bzpopmax(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    bzpop(ex, argv, true)
}
