//! HyperLogLog: PFADD, PFCOUNT, PFMERGE and PFDEBUG, in Redis's own representation
//! ([`repr`]), so a value DUMPed from Redis restores here and counts the same, and the
//! reverse: a new HLL is sparse, edited in place as Redis does, and turns dense past
//! `hll-sparse-max-bytes` or a register above 32.
//!
//! PFCOUNT of one key writes back the cached cardinality as Redis does: it is flagged
//! [`MAY_REPLICATE`], so it runs through the log; served outside the log (a read-only
//! script's `redis.call`), it answers without writing the cache.

mod repr;

use bytes::Bytes;

use crate::cmd::{data, flags::*, CmdError, CmdResult, CommandSpec, Exec, KeySpec, ALL_KEYS, KEY1};
use crate::notify::STRING;
use crate::store::{Entry, Value};
use repr::{HLL_DENSE, HLL_REGISTERS, HLL_SPARSE};

/// PFDEBUG's key is its second argument.
const PFDEBUG_KEY: KeySpec = KeySpec {
    first: 2,
    last: 2,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data(
        "pfadd",
        -2,
        WRITE | DENYOOM | FAST,
        KEY1,
        "hyperloglog",
        "Adds elements to a HyperLogLog key. Creates the key if it doesn't exist.",
        pfadd,
    ),
    data(
        "pfcount",
        -2,
        READONLY | MAY_REPLICATE,
        ALL_KEYS,
        "hyperloglog",
        "Returns the approximated cardinality of the set(s) observed by the HyperLogLog key(s).",
        pfcount,
    ),
    data(
        "pfmerge",
        -2,
        WRITE | DENYOOM,
        ALL_KEYS,
        "hyperloglog",
        "Merges one or more HyperLogLog values into a single key.",
        pfmerge,
    ),
    data(
        "pfdebug",
        3,
        WRITE | DENYOOM | ADMIN,
        PFDEBUG_KEY,
        "hyperloglog",
        "Internal commands for debugging HyperLogLog values",
        pfdebug,
    ),
];

/// The union of the registers of `keys` (missing keys count as empty HLLs); whether one
/// of them was dense.
fn union(ex: &mut Exec<'_>, keys: &[Bytes]) -> Result<(Vec<u8>, bool), CmdError> {
    let mut max = vec![0u8; HLL_REGISTERS];
    let mut any_dense = false;
    for key in keys {
        match ex.read_value(key) {
            None => {}
            Some(Value::Str(s)) => {
                repr::check_header(s)?;
                any_dense |= s[4] == HLL_DENSE;
                for (m, r) in max.iter_mut().zip(repr::registers(s)?) {
                    *m = (*m).max(r);
                }
            }
            Some(_) => return Err(CmdError::WRONGTYPE),
        }
    }
    Ok((max, any_dense))
}

/// Creates `key` holding the HLL string `s`.
fn insert(ex: &mut Exec<'_>, key: &[u8], s: Vec<u8>) {
    let mut entry = Entry::new(Value::Str(s));
    entry.heat.touch(ex.now_ms, true);
    ex.ks().insert(key, entry);
}

fn pfadd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let max_bytes = ex.store.hll_sparse_max_bytes;
    let updated = match ex.write(key) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => {
            repr::check_header(s)?;
            let mut changed = false;
            if s[4] == HLL_DENSE {
                // Dense registers cannot be corrupt: edited in place.
                for element in &argv[2..] {
                    changed |= repr::add(s, element, max_bytes)?;
                }
            } else {
                // Sparse runs may be found corrupt halfway: the error leaves the value
                // as it was.
                let mut copy = s.clone();
                for element in &argv[2..] {
                    changed |= repr::add(&mut copy, element, max_bytes)?;
                }
                if changed {
                    *s = copy;
                }
            }
            if changed {
                repr::invalidate_cache(s);
            }
            changed
        }
        Some(_) => return Err(CmdError::WRONGTYPE),
        None => {
            let mut s = repr::new_sparse();
            for element in &argv[2..] {
                repr::add(&mut s, element, max_bytes)?;
            }
            repr::invalidate_cache(&mut s);
            insert(ex, key, s);
            true
        }
    };
    if updated {
        ex.notify(STRING, "pfadd", key);
    }
    ex.out.int(updated as i64);
    Ok(())
}

fn pfcount(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 2 {
        let (max, _) = union(ex, &argv[1..])?;
        ex.out.int(repr::count(&max) as i64);
        return Ok(());
    }
    let key = &argv[1];
    let may_write = !ex.local_read;
    let mut cached_now = false;
    let card = match ex.read_value(key) {
        None => 0,
        Some(Value::Str(s)) => {
            repr::check_header(s)?;
            match repr::cached(s) {
                Some(card) => card,
                None => {
                    let card = repr::count(&repr::registers(s)?);
                    if may_write {
                        repr::set_cache(s, card);
                        cached_now = true;
                    }
                    card
                }
            }
        }
        Some(_) => return Err(CmdError::WRONGTYPE),
    };
    if cached_now {
        // The cache is part of the value: WATCH sees it change, as in Redis.
        ex.store.signal_modified(ex.db, key);
    }
    ex.out.int(card as i64);
    Ok(())
}

fn pfmerge(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let dest = &argv[1];
    let (max, any_dense) = union(ex, &argv[1..])?;
    let max_bytes = ex.store.hll_sparse_max_bytes;
    let existing = match ex.write(dest) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => Some(std::mem::take(s)),
        // Checked by `union` above.
        _ => None,
    };
    let exists = existing.is_some();
    let mut s = existing.unwrap_or_else(repr::new_sparse);
    if any_dense {
        // `union` read the destination's runs whole: they are not corrupt.
        repr::to_dense(&mut s)?;
    }
    for (index, &count) in max.iter().enumerate() {
        if count != 0 {
            // The runs are whole (checked by `union`, or new), so this cannot fail.
            let _ = repr::set_register(&mut s, index, count, max_bytes);
        }
    }
    repr::invalidate_cache(&mut s);
    if exists {
        if let Some(entry) = ex.ks().raw_get_mut(dest) {
            entry.value = Value::Str(s);
        }
    } else {
        insert(ex, dest, s);
    }
    ex.notify(STRING, "pfadd", dest);
    ex.out.ok();
    Ok(())
}

/// PFDEBUG GETREG | DECODE | ENCODING | TODENSE key (Redis's, for its tests).
fn pfdebug(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let Some(entry) = ex.write(&argv[2]) else {
        return Err(CmdError::err("The specified key does not exist"));
    };
    let Value::Str(s) = &mut entry.value else {
        return Err(CmdError::WRONGTYPE);
    };
    repr::check_header(s)?;
    if crate::cmd::is(sub, "getreg") {
        repr::to_dense(s)?;
        let regs = repr::dense_registers(s);
        ex.out.array(regs.len());
        for r in regs {
            ex.out.int(r as i64);
        }
    } else if crate::cmd::is(sub, "decode") {
        if s[4] != HLL_SPARSE {
            return Err(CmdError::err("HLL encoding is not sparse"));
        }
        let text = repr::decode_sparse(s);
        ex.out.bulk(text.as_bytes());
    } else if crate::cmd::is(sub, "encoding") {
        let encoding = if s[4] == HLL_SPARSE {
            "sparse"
        } else {
            "dense"
        };
        ex.out.simple(encoding);
    } else if crate::cmd::is(sub, "todense") {
        let sparse = s[4] == HLL_SPARSE;
        repr::to_dense(s)?;
        ex.out.int(sparse as i64);
    } else {
        return Err(CmdError::err(format!(
            "Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(sub)
        )));
    }
    Ok(())
}
