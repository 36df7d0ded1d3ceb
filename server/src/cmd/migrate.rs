//! The source's side of moving keys: what the target's leader asks the source's leader
//! for during a migration (Kelvin's own commands; clients have no use for them).
//!
//! ```text
//! KELVIN.MIGRATE-PULL <migration> <db> <key> [key ...]
//!     -> per key: nil (absent, or expired at the log's time) | [expire_at, payload]
//! KELVIN.MIGRATE-SCAN <migration> <db> <slot> <cursor> <count>
//!     -> [next slot, next cursor, [[key, expire_at, payload] ...]]
//!        (from `slot` on, over the migration's sealed slots; next slot 16384: done)
//! ```
//!
//! Payloads are DUMP payloads ([`crate::rdb`]); `expire_at` is absolute Unix ms (0: none).
//! Both only read slots this group sealed for that migration: once sealed the source
//! writes nothing there, so what it answers is the keys' final value at the source.
//! They take no keys in the routing sense (the slot is the target's now): the node
//! sends them pinned to the source group (`KELVIN.ON <group> ...`).
//!
//! And the steps themselves, through the log of the group they are pinned to (what the
//! phase driver sends; each is applied on every replica by [`crate::migrate::apply`]):
//!
//! ```text
//! KELVIN.MIGRATE IMPORT <migration> <source group> <slots>   (target) -> OK
//! KELVIN.MIGRATE SEAL <migration> <target group> <slots>     (source) -> [index, log ms]
//! KELVIN.MIGRATE PROOF <migration> <index> <log ms>          (target) -> OK
//! KELVIN.MIGRATE KEYS <migration> <db> [<key> <expire_at> <payload>]...  (target) -> written
//! KELVIN.MIGRATE FINISH <migration>                          (either) -> OK
//! KELVIN.MIGRATE PART <migration> <db> <key> <expire_at> <offset> <total> <chunk>
//!                                     (target) -> 1 once the last part wrote the key, else 0
//! ```
//! (PART carries a payload too big for one entry, [`crate::migrate::moves`].)
//! `<slots>` as in `cluster.conf`: `0-99,200`.

use bytes::Bytes;

use crate::cmd::{data, flags::*, CmdError, CmdResult, CommandSpec, Exec, NO_KEYS};
use crate::migrate::state::SlotRole;

/// Most keys one PULL may name, and one SCAN may return.
pub const MAX_MOVE_BATCH: usize = 1000;

pub const COMMANDS: &[CommandSpec] = &[
    data(
        "kelvin.migrate",
        -3,
        WRITE | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "A step of a live migration, through the log of the group it is pinned to (Kelvin: import, seal, proof, keys, finish).",
        migrate,
    ),
    data(
        "kelvin.migrate-pull",
        -4,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "Reads keys of a slot this group sealed, to move them (Kelvin: the fault-in of live resharding).",
        pull,
    ),
    data(
        "kelvin.migrate-scan",
        6,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "Reads a sealed slot's keys in pages, to move them (Kelvin: the drain of live resharding).",
        scan,
    ),
    data(
        "kelvin.migrate-plan",
        4,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "The transfer plan of the keys this group sealed for a migration (Kelvin: critical and eager keys of live resharding).",
        plan,
    ),
    data(
        "kelvin.applied",
        1,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "The log index this replica of the group has applied (Kelvin: the floor of a WATCH made on another node).",
        applied,
    ),
];

/// `KELVIN.MIGRATE-PLAN <migration> <rules> <slots>`: the planner's classes for the keys
/// of `slots` here (before or after the seal), with `rules` (a rules file's text, the
/// target's):
/// `[[db, key]...]` critical, `[[db, key]...]` eager (hottest per byte first), and
/// `[keys, bytes]` per class (critical, eager, lazy, skip).
fn plan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    use crate::migrate::plan::{range_facts, HeatPlanner, Planner};
    let migration = number(&argv[1])?;
    let rules = std::str::from_utf8(&argv[2])
        .map_err(|_| CmdError::err("migration rules: not UTF-8"))
        .and_then(|t| crate::migrate::plan::Rules::parse(t).map_err(CmdError::err))?;
    let text = std::str::from_utf8(&argv[3]).map_err(|_| CmdError::SYNTAX)?;
    let slots: Vec<usize> = crate::cluster::parse_ranges(text)
        .map_err(|r| CmdError::err(format!("bad slot range '{r}' in migration {migration}")))?
        .into_iter()
        .flat_map(|(a, b)| a as usize..=b as usize)
        .collect();
    let plan = HeatPlanner { rules }.plan(range_facts(ex.store, &slots), ex.now_ms);
    ex.out.array(3);
    for keys in [&plan.critical, &plan.eager] {
        ex.out.array(keys.len());
        for (db, key) in keys {
            ex.out.array(2);
            ex.out.int(*db as i64);
            ex.out.bulk(key);
        }
    }
    ex.out.array(plan.totals.len());
    for t in &plan.totals {
        ex.out.array(2);
        ex.out.int(t.keys as i64);
        ex.out.int(t.bytes as i64);
    }
    Ok(())
}

/// `CLUSTER KELVIN-MIGRATIONS`: an array of the migrations this node drove, each a
/// flat array of fields and values (see [`crate::migrate::figures::Figures::fields`]),
/// then the fault-ins it served: `[faultins, n, keys, k, us, total, buckets, "a,b,..."]`
/// (buckets up to 1 ms, 10 ms, 100 ms, 1 s, and over).
pub fn kelvin_migrations(ctx: &mut crate::conn::ConnCtx<'_>) {
    let records = ctx.node.migrations.records();
    ctx.out.array(records.len() + 1);
    for r in &records {
        let fields = r.fields();
        ctx.out.array(fields.len() * 2);
        for (name, value) in fields {
            ctx.out.bulk(name.as_bytes());
            ctx.out.bulk(value.as_bytes());
        }
    }
    let (n, keys, us, buckets) = ctx.node.migrations.faultins();
    let buckets: Vec<String> = buckets.iter().map(u64::to_string).collect();
    ctx.out.array(8);
    for (name, value) in [
        ("faultins", n.to_string()),
        ("keys", keys.to_string()),
        ("us", us.to_string()),
        ("buckets", buckets.join(",")),
    ] {
        ctx.out.bulk(name.as_bytes());
        ctx.out.bulk(value.as_bytes());
    }
}

/// `KELVIN.APPLIED`: this replica's apply index (run on the leader, pinned to a group).
fn applied(ex: &mut Exec<'_>, _argv: &[Bytes]) -> CmdResult {
    ex.out.int(ex.store.apply_index as i64);
    Ok(())
}

/// `KELVIN.MIGRATE <op> ...`, applied from the log.
fn migrate(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    use kelvin_protocol::log::{MigrateOp, MovedKey};
    let op = &argv[1];
    let args = &argv[2..];
    let slots = |arg: &[u8]| -> Result<Vec<u16>, CmdError> {
        let text = std::str::from_utf8(arg).map_err(|_| CmdError::SYNTAX)?;
        let ranges = crate::cluster::parse_ranges(text)
            .map_err(|r| CmdError::err(format!("bad slot range '{r}'")))?;
        Ok(ranges.into_iter().flat_map(|(a, b)| a..=b).collect())
    };
    let parsed = match args {
        [m, g, s] if crate::cmd::is(op, "import") => MigrateOp::Import {
            migration: number(m)?,
            source: number(g)?,
            slots: slots(s)?,
        },
        [m, g, s] if crate::cmd::is(op, "seal") => MigrateOp::Seal {
            migration: number(m)?,
            target: number(g)?,
            slots: slots(s)?,
        },
        [m, i, t] if crate::cmd::is(op, "proof") => MigrateOp::Proof {
            migration: number(m)?,
            index: number(i)?,
            log_ms: number(t)?,
        },
        [m, db, keys @ ..] if crate::cmd::is(op, "keys") && keys.len() % 3 == 0 => {
            database(db)?;
            MigrateOp::Keys {
                migration: number(m)?,
                db: number(db)? as u8,
                keys: keys
                    .chunks(3)
                    .map(|k| {
                        Ok(MovedKey {
                            key: k[0].clone(),
                            expire_at: number(&k[1])?,
                            payload: k[2].clone(),
                        })
                    })
                    .collect::<Result<_, CmdError>>()?,
            }
        }
        [m] if crate::cmd::is(op, "finish") => MigrateOp::Finish {
            migration: number(m)?,
        },
        [m, db, key, expire_at, offset, total, chunk] if crate::cmd::is(op, "part") => {
            database(db)?;
            MigrateOp::Part {
                migration: number(m)?,
                db: number(db)? as u8,
                key: key.clone(),
                expire_at: number(expire_at)?,
                offset: number(offset)?,
                total: number(total)?,
                chunk: chunk.clone(),
            }
        }
        _ => return Err(CmdError::SYNTAX),
    };
    let mut reply = kelvin_protocol::ReplyWriter::new(ex.out.version);
    crate::migrate::apply::apply(ex.store, &parsed, ex.now_ms, &mut reply);
    if let Some(err) = reply.buf.strip_prefix(b"-") {
        let text = String::from_utf8_lossy(err).trim_end().to_string();
        return Err(CmdError::raw(text));
    }
    if matches!(parsed, MigrateOp::Seal { .. }) {
        // Where the seal is: what the target's PROOF must carry.
        ex.out.array(2);
        ex.out.int(ex.store.apply_index as i64);
        ex.out.int(ex.now_ms as i64);
    } else {
        ex.out.buf.extend_from_slice(&reply.buf);
    }
    Ok(())
}

fn number(arg: &[u8]) -> Result<u64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or(CmdError::NOT_INTEGER)
}

fn database(arg: &[u8]) -> Result<usize, CmdError> {
    let db = number(arg)? as usize;
    if db >= crate::store::DATABASES {
        return Err(CmdError::err("DB index is out of range"));
    }
    Ok(db)
}

/// Checks that `slot` is sealed here by `migration`.
fn sealed(ex: &Exec<'_>, migration: u64, slot: u16) -> Result<(), CmdError> {
    match ex.store.migrations.role(slot) {
        Some(SlotRole::Sealed { migration: m, .. }) if m == migration => Ok(()),
        _ => Err(CmdError::err(format!(
            "slot {slot} is not sealed by migration {migration} in this group"
        ))),
    }
}

/// Writes `[expire_at, payload]` of `key`, or nil if it is absent or expired.
fn entry_reply(ex: &mut Exec<'_>, db: usize, key: &[u8], with_key: bool) -> bool {
    let now = ex.now_ms;
    let Some(entry) = ex.store.db(db).get(key, now) else {
        if !with_key {
            ex.out.null();
        }
        return false;
    };
    let expire_at = entry.expire_at;
    let payload = crate::rdb::dump(&entry.value);
    ex.out.array(if with_key { 3 } else { 2 });
    if with_key {
        ex.out.bulk(key);
    }
    ex.out.int(expire_at as i64);
    ex.out.bulk(&payload);
    true
}

fn pull(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let migration = number(&argv[1])?;
    let db = database(&argv[2])?;
    let keys = &argv[3..];
    if keys.len() > MAX_MOVE_BATCH {
        return Err(CmdError::err(format!(
            "at most {MAX_MOVE_BATCH} keys per KELVIN.MIGRATE-PULL"
        )));
    }
    for k in keys {
        sealed(ex, migration, kelvin_protocol::key_slot(k))?;
    }
    ex.out.array(keys.len());
    for k in keys {
        entry_reply(ex, db, k, false);
    }
    Ok(())
}

fn scan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let migration = number(&argv[1])?;
    let db = database(&argv[2])?;
    let slot = number(&argv[3])?;
    if slot as usize > kelvin_protocol::SLOT_COUNT {
        return Err(CmdError::err("Invalid or out of range slot"));
    }
    let mut slot = slot as usize;
    let mut cursor = number(&argv[4])?;
    let count = (number(&argv[5])? as usize).clamp(1, MAX_MOVE_BATCH);
    let sealed_here = |store: &crate::store::Store, s: usize| {
        matches!(store.migrations.role(s as u16),
            Some(SlotRole::Sealed { migration: m, .. }) if m == migration)
    };
    if !ex
        .store
        .migrations
        .slots()
        .any(|(s, _)| sealed_here(ex.store, s as usize))
    {
        return Err(CmdError::err(format!(
            "slot {slot} is not sealed by migration {migration} in this group"
        )));
    }
    // From `slot` on, over this migration's sealed slots, until `count` keys.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    while slot < kelvin_protocol::SLOT_COUNT && keys.len() < count {
        if !sealed_here(ex.store, slot) {
            slot += 1;
            cursor = 0;
            continue;
        }
        let (page, next) = ex.store.db(db).scan_slot(slot, cursor, count - keys.len());
        keys.extend(page.into_iter().map(|k| k.to_vec()));
        match next {
            Some(c) if c != 0 => cursor = c,
            _ => {
                slot += 1;
                cursor = 0;
            }
        }
    }
    ex.out.array(3);
    ex.out.int(slot as i64);
    ex.out.int(cursor as i64);
    // Expired keys are left out; the count is known only once they are written.
    let mut body = kelvin_protocol::ReplyWriter::new(ex.out.version);
    let mut n = 0;
    {
        let out = std::mem::replace(ex.out, body);
        for k in &keys {
            n += usize::from(entry_reply(ex, db, k, true));
        }
        body = std::mem::replace(ex.out, out);
    }
    ex.out.array(n);
    ex.out.buf.extend_from_slice(&body.buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, Store, Value};
    use kelvin_protocol::ReplyWriter;

    fn run(store: &mut Store, words: &[&str], now_ms: u64) -> Vec<u8> {
        let argv: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let spec = crate::cmd::lookup(&argv[0]).unwrap();
        let crate::cmd::Handler::Data(handler) = spec.handler else {
            panic!("a data command")
        };
        let mut out = ReplyWriter::default();
        let (mut events, mut lazy) = (Vec::new(), Vec::new());
        let mut ex = Exec {
            store,
            db: 0,
            now_ms,
            out: &mut out,
            events: &mut events,
            lazy_expired: &mut lazy,
            may_block: false,
            block: None,
        };
        if let Err(e) = handler(&mut ex, &argv) {
            out.error(&e.0);
        }
        out.buf
    }

    #[test]
    fn pull_and_scan_read_only_sealed_slots() {
        let mut store = Store::default();
        let slot = kelvin_protocol::key_slot(b"{m}a");
        for (k, exp) in [("{m}a", 0), ("{m}b", 5000), ("{m}gone", 10)] {
            let mut e = Entry::new(Value::Str(k.as_bytes().to_vec()));
            e.expire_at = exp;
            store.db(0).insert(k.as_bytes(), e);
        }
        let pull = [
            "KELVIN.MIGRATE-PULL",
            "7",
            "0",
            "{m}a",
            "{m}missing",
            "{m}gone",
        ];
        let refused = run(&mut store, &pull, 100);
        assert!(
            refused.starts_with(b"-ERR slot"),
            "{}",
            String::from_utf8_lossy(&refused)
        );
        store.migrations.seal(7, &[slot], 2).unwrap();
        let got = run(&mut store, &pull, 100);
        let payload = crate::rdb::dump(&Value::Str(b"{m}a".to_vec()));
        let mut want = b"*3\r\n*2\r\n:0\r\n".to_vec();
        want.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        want.extend_from_slice(&payload);
        want.extend_from_slice(b"\r\n$-1\r\n$-1\r\n");
        assert_eq!(got, want);
        // Pages of one key; the expired key never moves.
        let (mut at, mut cursor, mut seen, mut pages) = (slot.to_string(), "0".to_string(), 0, 0);
        while at != "16384" && pages < 10 {
            let page = run(
                &mut store,
                &["KELVIN.MIGRATE-SCAN", "7", "0", &at, &cursor, "1"],
                100,
            );
            let text = String::from_utf8_lossy(&page).to_string();
            assert!(text.starts_with("*3\r\n:"), "{text}");
            let fields: Vec<&str> = text.split("\r\n").collect();
            at = fields[1][1..].to_string();
            cursor = fields[2][1..].to_string();
            seen += text.matches("{m}").count();
            pages += 1;
        }
        assert_eq!(at, "16384");
        // {m}a and {m}b, each named twice (the key, and inside its DUMP payload).
        assert_eq!(seen, 4);
        let other = run(
            &mut store,
            &[
                "KELVIN.MIGRATE-SCAN",
                "8",
                "0",
                &slot.to_string(),
                "0",
                "10",
            ],
            100,
        );
        assert!(other.starts_with(b"-ERR slot"));
    }
}
