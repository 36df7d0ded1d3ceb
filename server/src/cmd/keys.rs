//! Generic key commands: DEL, EXISTS, TYPE, RENAME, KEYS, SCAN, RANDOMKEY, the EXPIRE
//! family and TTLs, PERSIST, TOUCH, COPY, MOVE, OBJECT.

use bytes::Bytes;
use rand::Rng;

use crate::cmd::{
    count_arg, data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec,
    ALL_KEYS, KEY1,
};
use crate::notify::GENERIC;
use crate::store::{Entry, CURSOR_HASH_BITS, DATABASES};

const TWO_KEYS: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("del", -2, WRITE | WHOLE_VALUE, ALL_KEYS, "generic", "Deletes one or more keys.", del),
    data("unlink", -2, WRITE | FAST | WHOLE_VALUE, ALL_KEYS, "generic", "Asynchronously deletes one or more keys.", del),
    data("exists", -2, READONLY | FAST, ALL_KEYS, "generic", "Determines whether one or more keys exist.", exists),
    data("type", 2, READONLY | FAST, KEY1, "generic", "Determines the type of value stored at a key.", type_),
    data("rename", 3, WRITE, TWO_KEYS, "generic", "Renames a key and overwrites the destination.", rename),
    data("renamenx", 3, WRITE | FAST, TWO_KEYS, "generic", "Renames a key only when the target key name doesn't exist.", renamenx),
    data("keys", 2, READONLY, crate::cmd::NO_KEYS, "generic", "Returns all key names that match a pattern.", keys),
    data("scan", -2, READONLY, crate::cmd::NO_KEYS, "generic", "Iterates over the key names in the database.", scan),
    data("randomkey", 1, READONLY, crate::cmd::NO_KEYS, "generic", "Returns a random key name from the database.", randomkey),
    data("expire", -3, WRITE | FAST | WHOLE_VALUE, KEY1, "generic", "Sets the expiration time of a key in seconds.", expire),
    data("pexpire", -3, WRITE | FAST | WHOLE_VALUE, KEY1, "generic", "Sets the expiration time of a key in milliseconds.", pexpire),
    data("expireat", -3, WRITE | FAST | WHOLE_VALUE, KEY1, "generic", "Sets the expiration time of a key to a Unix timestamp.", expireat),
    data("pexpireat", -3, WRITE | FAST | WHOLE_VALUE, KEY1, "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp.", pexpireat),
    data("persist", 2, WRITE | FAST | WHOLE_VALUE, KEY1, "generic", "Removes the expiration time of a key.", persist),
    data("ttl", 2, READONLY | FAST, KEY1, "generic", "Returns the expiration time in seconds of a key.", ttl),
    data("pttl", 2, READONLY | FAST, KEY1, "generic", "Returns the expiration time in milliseconds of a key.", pttl),
    data("expiretime", 2, READONLY | FAST, KEY1, "generic", "Returns the expiration time of a key as a Unix timestamp.", expiretime),
    data("pexpiretime", 2, READONLY | FAST, KEY1, "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp.", pexpiretime),
    data("touch", -2, READONLY | FAST, ALL_KEYS, "generic", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", exists),
    data("copy", -3, WRITE | DENYOOM, TWO_KEYS, "generic", "Copies the value of a key to a new key.", copy),
    data("move", 3, WRITE | FAST, KEY1, "generic", "Moves a key to another database.", move_),
    data("memory", -2, READONLY, KeySpec { first: 2, last: 2, step: 1 }, "server", "A container for memory diagnostics commands.", memory),
    data("object", -2, READONLY, KeySpec { first: 2, last: 2, step: 1 }, "generic", "A container for object introspection commands.", object),
];

fn del(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut deleted = 0;
    for key in &argv[1..] {
        ex.expire_if_needed(key);
        if ex.ks().remove(key).is_some() {
            ex.notify(GENERIC, "del", key);
            deleted += 1;
        }
    }
    ex.out.int(deleted);
    Ok(())
}

/// EXISTS and TOUCH: counts live keys (repeats count again, as in Redis).
fn exists(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let n = argv[1..]
        .iter()
        .filter(|key| ex.read(key).is_some())
        .count();
    ex.out.int(n as i64);
    Ok(())
}

fn type_(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let name = ex.read_value(&argv[1]).map_or("none", |v| v.type_name());
    ex.out.simple(name);
    Ok(())
}

fn rename_generic(ex: &mut Exec<'_>, argv: &[Bytes], nx: bool) -> CmdResult {
    let (src, dst) = (&argv[1], &argv[2]);
    ex.expire_if_needed(src);
    ex.expire_if_needed(dst);
    if ex.ks().raw_get(src).is_none() {
        return Err(CmdError::NO_SUCH_KEY);
    }
    if src == dst {
        if nx {
            ex.out.int(0);
        } else {
            ex.out.ok();
        }
        return Ok(());
    }
    if nx && ex.ks().raw_get(dst).is_some() {
        ex.out.int(0);
        return Ok(());
    }
    let Some(entry) = ex.ks().remove(src) else {
        return Err(CmdError::NO_SUCH_KEY);
    };
    ex.ks().remove(dst);
    ex.ks().insert(dst, entry);
    ex.notify(GENERIC, "rename_from", src);
    ex.notify(GENERIC, "rename_to", dst);
    if nx {
        ex.out.int(1);
    } else {
        ex.out.ok();
    }
    Ok(())
}

fn rename(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    rename_generic(ex, argv, false)
}

fn renamenx(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    rename_generic(ex, argv, true)
}

fn keys(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    keys_listed(ex, argv, false)
}

/// The keys a keyspace listing of this group shows: those of the slots
/// [`crate::migrate::state::MigrationState::listed`] keeps (never a slot it sealed; with
/// `imports`, not a slot it imports either).
fn listed_slots(store: &crate::store::Store, imports: bool) -> impl Iterator<Item = usize> + '_ {
    (0..kelvin_protocol::SLOT_COUNT).filter(move |&s| store.migrations.listed(s as u16, imports))
}

/// DBSIZE over the slots this group lists (see [`listed_slots`]): its count, less the
/// per-slot counts of the slots it leaves out.
pub(crate) fn listed_len(store: &crate::store::Store, db: usize, imports: bool) -> usize {
    let Some(ks) = store.db_ref(db) else {
        return 0;
    };
    let hidden: usize = store
        .migrations
        .unlisted(imports)
        .map(|s| ks.slot(s as usize).map.len())
        .sum();
    ks.len().saturating_sub(hidden)
}

/// KEYS over the slots this group lists (see [`listed_slots`]).
pub(crate) fn keys_listed(ex: &mut Exec<'_>, argv: &[Bytes], imports: bool) -> CmdResult {
    let pattern = &argv[1];
    let now = ex.now_ms;
    let all = pattern[..] == b"*"[..];
    let store = &*ex.store;
    let found: Vec<Vec<u8>> = match store.db_ref(ex.db) {
        None => Vec::new(),
        Some(ks) => listed_slots(store, imports)
            .flat_map(|s| ks.slot(s).map.iter())
            .filter(|(k, e)| {
                !e.is_expired(now) && (all || kelvin_protocol::glob::glob_match(pattern, k, false))
            })
            .map(|(k, _)| k.to_vec())
            .collect(),
    };
    ex.out.bulks(found.iter());
    Ok(())
}

/// Parses a SCAN cursor: an unsigned 64-bit decimal.
pub fn parse_cursor(arg: &[u8]) -> Result<u64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| CmdError::err("invalid cursor"))
}

fn scan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    scan_listed(ex, argv, false)
}

/// SCAN over the slots this group lists (see [`listed_slots`]): a slot left out is
/// walked as an empty one.
pub(crate) fn scan_listed(ex: &mut Exec<'_>, argv: &[Bytes], imports: bool) -> CmdResult {
    let cursor = parse_cursor(&argv[1])?;
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut type_filter: Option<String> = None;
    let mut i = 2;
    while i < argv.len() {
        if i + 1 >= argv.len() {
            return Err(CmdError::SYNTAX);
        }
        if is(&argv[i], "match") {
            pattern = Some(&argv[i + 1]);
        } else if is(&argv[i], "count") {
            count = count_arg(&argv[i + 1])?;
            if count < 1 {
                return Err(CmdError::SYNTAX);
            }
        } else if is(&argv[i], "type") {
            type_filter = Some(String::from_utf8_lossy(&argv[i + 1]).to_ascii_lowercase());
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 2;
    }
    let mut slot = (cursor >> CURSOR_HASH_BITS) as usize;
    let mut from = cursor & ((1u64 << CURSOR_HASH_BITS) - 1);
    let now = ex.now_ms;
    let store = &*ex.store;
    let ks = store.db_view(ex.db);
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut visited = 0usize;
    let mut next_cursor = 0u64;
    while slot < kelvin_protocol::SLOT_COUNT {
        let (keys, resume) = match store.migrations.listed(slot as u16, imports) {
            true => ks.scan_slot(slot, from, count.saturating_sub(visited).max(1)),
            false => (Vec::new(), None),
        };
        visited += keys.len();
        for k in keys {
            let Some(entry) = ks.raw_get(k) else { continue };
            if entry.is_expired(now) {
                continue;
            }
            if pattern.is_some_and(|p| !kelvin_protocol::glob::glob_match(p, k, false)) {
                continue;
            }
            if type_filter
                .as_deref()
                .is_some_and(|t| t != entry.value.type_name())
            {
                continue;
            }
            found.push(k.to_vec());
        }
        match resume {
            Some(h) => {
                next_cursor = (slot as u64) << CURSOR_HASH_BITS | h;
                break;
            }
            None => {
                slot += 1;
                from = 0;
                if slot < kelvin_protocol::SLOT_COUNT {
                    next_cursor = (slot as u64) << CURSOR_HASH_BITS;
                } else {
                    next_cursor = 0;
                }
                // COUNT bounds the work: stop once enough keys were looked at, and
                // never walk more than a bounded number of empty slots per call.
                if visited >= count || (slot.is_multiple_of(1024) && visited > 0) {
                    break;
                }
            }
        }
    }
    if slot >= kelvin_protocol::SLOT_COUNT {
        next_cursor = 0;
    }
    ex.out.array(2);
    ex.out.bulk(next_cursor.to_string().as_bytes());
    ex.out.bulks(found.iter());
    Ok(())
}

fn randomkey(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    randomkey_listed(ex, argv, false)
}

/// RANDOMKEY over the slots this group lists (see [`listed_slots`]).
pub(crate) fn randomkey_listed(ex: &mut Exec<'_>, argv: &[Bytes], imports: bool) -> CmdResult {
    let _ = argv;
    let now = ex.now_ms;
    let db = ex.db;
    let store = &mut *ex.store;
    let mut picked: Option<Vec<u8>> = None;
    let nonempty: Vec<usize> = match store.db_ref(db) {
        Some(ks) if !ks.is_empty() => (0..kelvin_protocol::SLOT_COUNT)
            .filter(|&s| !ks.slot(s).map.is_empty() && store.migrations.listed(s as u16, imports))
            .collect(),
        _ => Vec::new(),
    };
    if !nonempty.is_empty() {
        // Bounded tries so a keyspace of only expired keys cannot spin.
        for _ in 0..100 {
            let (r1, r2): (usize, usize) = (store.rng.get().gen(), store.rng.get().gen());
            let Some(ks) = store.db_ref(db) else { break };
            let table = ks.slot(nonempty[r1 % nonempty.len()]);
            if let Some((k, e)) = table.map.get_index(r2 % table.map.len()) {
                picked = Some(k.to_vec());
                if !e.is_expired(now) {
                    break;
                }
            }
        }
    }
    match picked {
        Some(k) => ex.out.bulk(&k),
        None => ex.out.null(),
    }
    Ok(())
}

/// EXPIRE's NX / XX / GT / LT conditions. XX combines with GT or LT (both must hold).
#[derive(Clone, Copy, Default)]
struct ExpireCondition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl ExpireCondition {
    /// Whether a new deadline `at` may replace `current` (0: no TTL, which GT and LT
    /// take as infinite, as Redis does).
    fn allows(self, current: u64, at: i64) -> bool {
        (!self.nx || current == 0)
            && (!self.xx || current != 0)
            && (!self.gt || (current != 0 && at > current as i64))
            && (!self.lt || current == 0 || at < current as i64)
    }
}

fn parse_expire_condition(args: &[Bytes]) -> Result<ExpireCondition, CmdError> {
    let mut c = ExpireCondition::default();
    for a in args {
        if is(a, "nx") {
            c.nx = true;
        } else if is(a, "xx") {
            c.xx = true;
        } else if is(a, "gt") {
            c.gt = true;
        } else if is(a, "lt") {
            c.lt = true;
        } else {
            return Err(CmdError::err(format!(
                "Unsupported option {}",
                String::from_utf8_lossy(a)
            )));
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err(CmdError::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if c.gt && c.lt {
        return Err(CmdError::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    Ok(c)
}

fn expire_generic(
    ex: &mut Exec<'_>,
    argv: &[Bytes],
    unit_ms: i64,
    absolute: bool,
    name: &str,
) -> CmdResult {
    let n = int_arg(&argv[2])?;
    let condition = parse_expire_condition(&argv[3..])?;
    let invalid = || CmdError::err(format!("invalid expire time in '{name}' command"));
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(ex.now_ms as i64).ok_or_else(invalid)?
    };
    let key = &argv[1];
    let Some(entry) = ex.write(key) else {
        ex.out.int(0);
        return Ok(());
    };
    if !condition.allows(entry.expire_at, at) {
        ex.out.int(0);
        return Ok(());
    }
    if at <= ex.now_ms as i64 {
        ex.ks().remove(key);
        ex.notify(GENERIC, "del", key);
    } else {
        ex.ks().set_expire(key, at as u64);
        ex.notify(GENERIC, "expire", key);
    }
    ex.out.int(1);
    Ok(())
}

fn expire(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    expire_generic(ex, argv, 1000, false, "expire")
}

fn pexpire(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    expire_generic(ex, argv, 1, false, "pexpire")
}

fn expireat(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    expire_generic(ex, argv, 1000, true, "expireat")
}

fn pexpireat(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    expire_generic(ex, argv, 1, true, "pexpireat")
}

fn persist(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let had_ttl = ex.write(key).is_some_and(|e| e.expire_at != 0);
    if had_ttl {
        ex.ks().set_expire(key, 0);
        ex.notify(GENERIC, "persist", key);
    }
    ex.out.int(had_ttl as i64);
    Ok(())
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 if missing, -1 if no expiry.
fn ttl_generic(ex: &mut Exec<'_>, key: &[u8], ms: bool, absolute: bool) -> CmdResult {
    let now = ex.now_ms as i64;
    let reply = match ex.read(key) {
        None => -2,
        Some(Entry { expire_at: 0, .. }) => -1,
        Some(e) => {
            let at = e.expire_at as i64;
            let v = if absolute { at } else { (at - now).max(0) };
            if ms {
                v
            } else if absolute {
                at / 1000
            } else {
                (v + 500) / 1000
            }
        }
    };
    ex.out.int(reply);
    Ok(())
}

fn ttl(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ex, &argv[1], false, false)
}

fn pttl(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ex, &argv[1], true, false)
}

fn expiretime(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ex, &argv[1], false, true)
}

fn pexpiretime(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ex, &argv[1], true, true)
}

fn parse_db(arg: &[u8]) -> Result<usize, CmdError> {
    let db = int_arg(arg)?;
    if !(0..DATABASES as i64).contains(&db) {
        return Err(CmdError::err("DB index is out of range"));
    }
    Ok(db as usize)
}

fn copy(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (src, dst) = (&argv[1], &argv[2]);
    let mut target_db = ex.db;
    let mut replace = false;
    let mut i = 3;
    while i < argv.len() {
        if is(&argv[i], "replace") {
            replace = true;
            i += 1;
        } else if is(&argv[i], "db") && i + 1 < argv.len() {
            target_db = parse_db(&argv[i + 1])?;
            i += 2;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    if target_db == ex.db && src == dst {
        return Err(CmdError::err("source and destination objects are the same"));
    }
    let Some(entry) = ex.read(src).cloned() else {
        ex.out.int(0);
        return Ok(());
    };
    let source_db = ex.db;
    ex.db = target_db;
    ex.expire_if_needed(dst);
    if ex.ks().raw_get(dst).is_some() && !replace {
        ex.db = source_db;
        ex.out.int(0);
        return Ok(());
    }
    ex.ks().insert(dst, entry);
    ex.notify(GENERIC, "copy_to", dst);
    ex.db = source_db;
    ex.out.int(1);
    Ok(())
}

fn move_(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let target = parse_db(&argv[2])?;
    if target == ex.db {
        return Err(CmdError::err("source and destination objects are the same"));
    }
    ex.expire_if_needed(key);
    if ex.ks().raw_get(key).is_none() {
        ex.out.int(0);
        return Ok(());
    }
    let source = ex.db;
    ex.db = target;
    ex.expire_if_needed(key);
    let occupied = ex.ks().raw_get(key).is_some();
    ex.db = source;
    if occupied {
        ex.out.int(0);
        return Ok(());
    }
    let Some(entry) = ex.ks().remove(key) else {
        ex.out.int(0);
        return Ok(());
    };
    ex.notify(GENERIC, "move_from", key);
    ex.db = target;
    ex.ks().insert(key, entry);
    ex.notify(GENERIC, "move_to", key);
    ex.db = source;
    ex.out.int(1);
    Ok(())
}

fn object(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "help") {
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
            "HELP",
            "    Print this help.",
        ];
        ex.out.simples(&lines);
        return Ok(());
    }
    let known = ["encoding", "freq", "idletime", "refcount"];
    if !known.iter().any(|k| is(sub, k)) {
        return Err(CmdError::unknown_subcommand(sub, "object"));
    }
    if argv.len() != 3 {
        return Err(CmdError::arity(&format!(
            "object|{}",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        )));
    }
    let now = ex.now_ms;
    // OBJECT does not count as an access: look without touching the heat.
    let Some(entry) = ex.ks().get(&argv[2], now) else {
        ex.out.null();
        return Ok(());
    };
    if is(sub, "encoding") {
        let enc = entry.value.encoding();
        ex.out.bulk(enc.as_bytes());
    } else if is(sub, "freq") {
        // The profiler's decayed counter, Redis's LFU counter by the same rules.
        let freq = entry.heat.counter_at(now) as i64;
        ex.out.int(freq);
    } else if is(sub, "idletime") {
        let idle = entry.heat.idle_secs(now) as i64;
        ex.out.int(idle);
    } else {
        ex.out.int(1);
    }
    Ok(())
}

/// What one key costs besides its name and value: the table entry (key, value header,
/// expiry, heat) and the hash table's share of control bytes and spare capacity.
const KEY_OVERHEAD_BYTES: usize =
    std::mem::size_of::<crate::store::Key>() + std::mem::size_of::<Entry>() + 16;

/// MEMORY USAGE (an estimate from the value's own sizes, as Redis's is one) and HELP.
fn memory(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "help") {
        ex.out.simples(&[
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Kelvin counts every",
            "    element, so SAMPLES is accepted and has no effect.",
            "HELP",
            "    Print this help.",
        ]);
        return Ok(());
    }
    if !is(sub, "usage") {
        return Err(CmdError::unknown_subcommand(sub, "memory"));
    }
    match argv.len() {
        3 => {}
        5 if is(&argv[3], "samples") => {
            if int_arg(&argv[4])? < 0 {
                return Err(CmdError::SYNTAX);
            }
        }
        _ => return Err(CmdError::SYNTAX),
    }
    let now = ex.now_ms;
    // Like OBJECT, not an access.
    match ex.ks().get(&argv[2], now) {
        Some(entry) => {
            let bytes = KEY_OVERHEAD_BYTES + argv[2].len() + entry.value.approx_bytes();
            ex.out.int(bytes as i64);
        }
        None => ex.out.null(),
    }
    Ok(())
}
