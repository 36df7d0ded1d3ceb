//! DUMP and RESTORE in Redis's serialization format ([`crate::rdb`]): a payload from
//! redis-server 7 restores here, and one from here restores in Redis.

use bytes::Bytes;

use crate::cmd::{
    data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, Handler, KeySpec, KEY1,
};
use crate::notify::GENERIC;
use crate::store::Entry;

pub const COMMANDS: &[CommandSpec] = &[
    data(
        "dump",
        2,
        READONLY,
        KEY1,
        "generic",
        "Returns a serialized representation of the value stored at a key.",
        dump,
    ),
    data(
        "restore",
        -4,
        WRITE | DENYOOM,
        KEY1,
        "generic",
        "Creates a key from the serialized representation of a value.",
        restore,
    ),
    // Run by the connection itself (`conn::migrate_cmd`), which intercepts it before
    // any handler: it waits on another server. Its key is the third argument, or the
    // ones after KEYS, as Redis reports.
    CommandSpec {
        name: "migrate",
        arity: -6,
        flags: WRITE | NOT_IN_MULTI,
        keys: KeySpec {
            first: 3,
            last: 3,
            step: 1,
        },
        group: "generic",
        summary: "Atomically transfers a key from one Redis instance to another.",
        handler: Handler::Conn(migrate_elsewhere),
    },
];

/// MIGRATE anywhere but at the connection (a script's `redis.call`): refused.
fn migrate_elsewhere(_: &mut crate::conn::ConnCtx<'_>, _: &[Bytes]) -> CmdResult {
    Err(CmdError::err(
        "MIGRATE is only served from a client connection",
    ))
}

fn dump(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    match ex.read_value(&argv[1]) {
        Some(value) => {
            let payload = crate::rdb::dump(value);
            ex.out.bulk(&payload);
        }
        None => ex.out.null(),
    }
    Ok(())
}

/// Most a RESTORE FREQ may be (Redis's LFU counter is one byte).
const MAX_FREQ: i64 = 255;

/// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]
fn restore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq): (Option<i64>, Option<i64>) = (None, None);
    let mut j = 4;
    while j < argv.len() {
        let more = j + 1 < argv.len();
        if is(&argv[j], "replace") {
            replace = true;
        } else if is(&argv[j], "absttl") {
            absttl = true;
        } else if is(&argv[j], "idletime") && more && freq.is_none() {
            let n = int_arg(&argv[j + 1])?;
            if n < 0 {
                return Err(CmdError::err("Invalid IDLETIME value, must be >= 0"));
            }
            idle = Some(n);
            j += 1;
        } else if is(&argv[j], "freq") && more && idle.is_none() {
            let n = int_arg(&argv[j + 1])?;
            if !(0..=MAX_FREQ).contains(&n) {
                return Err(CmdError::err("Invalid FREQ value, must be >= 0 and <= 255"));
            }
            freq = Some(n);
            j += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        j += 1;
    }
    let ttl = int_arg(&argv[2])?;
    if ttl < 0 {
        return Err(CmdError::err("Invalid TTL value, must be >= 0"));
    }
    let exists = ex.write(key).is_some();
    if exists && !replace {
        return Err(CmdError::raw("BUSYKEY Target key name already exists."));
    }
    let value = crate::rdb::restore(&argv[3]).map_err(|e| CmdError::raw(e.to_string()))?;
    let now = ex.now_ms as i64;
    let expire_at = match ttl {
        0 => 0,
        t if absttl => t,
        t => t.saturating_add(now),
    };
    if expire_at != 0 && expire_at <= now {
        // Already expired: the key goes (if REPLACE found one) and nothing is created.
        if exists {
            ex.ks().remove(key);
            ex.notify(GENERIC, "del", key);
        }
        ex.out.ok();
        return Ok(());
    }
    let mut entry = Entry::new(value);
    entry.expire_at = expire_at as u64;
    entry.heat.touch(ex.now_ms, true);
    if let Some(seconds) = idle {
        entry.heat = entry.heat.with_idle(ex.now_ms, seconds.max(0) as u64);
    }
    if let Some(f) = freq {
        entry.heat = entry.heat.with_counter(f.clamp(0, 255) as u8);
    }
    ex.ks().insert(key, entry);
    ex.notify(GENERIC, "restore", key);
    ex.out.ok();
    Ok(())
}
