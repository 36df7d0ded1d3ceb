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
//!
//! What the main port asks both sides for, to answer DBSIZE, KEYS, SCAN and RANDOMKEY
//! exactly while keys move (`conn::keyless`); read-only, in pages:
//!
//! ```text
//! KELVIN.MIGRATE-NAMES <migration> <db> <slot> <cursor> <count> [MATCH pattern] [TYPE type]
//!     -> [next slot, next cursor, [key ...]]
//!        the live keys this group holds in the migration's slots (sealed here: the
//!        source's copies; imported here: the target's keys), from `slot` and the cursor
//!        hash `cursor` on, in SCAN order, after looking at up to `count` keys (at most
//!        MAX_MOVE_BATCH); next slot 16384: done. "ERR no migration <m> here" if this
//!        group has no slot in it (not sealed yet, or finished).
//! KELVIN.MIGRATE-UNSETTLED <migration> <db> <key> [key ...]
//!     -> [key ...] those of the keys (at most MAX_MOVE_BATCH, of slots this group
//!        imports for the migration) not settled here: their value is still the
//!        source's copy. "ERR no migration <m> here" once the target finished.
//! KELVIN.MIGRATE-TOUCHED <migration> <db> <key> [key ...]          (target)
//!     -> how many of the keys were accessed since the write that brought them
//! KELVIN.MIGRATE-COMPARE <migration>                                (source)
//!     -> [planned, pulled, dropped]: the keys only the heat planner's plans would have
//!        pushed, of them pulled since (fault-ins), not kept; both for the learned
//!        planner's after-the-fact comparison (`migrate::compare`)
//! KELVIN.OUTSIDE DBSIZE | KEYS pattern | SCAN cursor [options] | RANDOMKEY
//!     -> the command's reply, over this group's slots in no migration (the plain
//!        commands leave out only the slots a group sealed)
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
        "kelvin.migrate-hot",
        3,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "Lists the keys read most lately in the slots a migration sealed here (Kelvin: the first push of live resharding).",
        hot,
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
        "kelvin.migrate-names",
        -6,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "Lists the names of the keys this group holds in a migration's slots, in pages (Kelvin: keyless commands during live resharding).",
        names,
    ),
    data(
        "kelvin.migrate-unsettled",
        -4,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "Which of the keys of slots this group imports are not settled here yet (Kelvin: keyless commands during live resharding).",
        unsettled,
    ),
    data(
        "kelvin.migrate-touched",
        -4,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "How many of the keys were accessed since a migration wrote them here (Kelvin: the learned planner judged after the fact).",
        touched,
    ),
    data(
        "kelvin.migrate-compare",
        2,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "The keys only the heat planner would have pushed in a migration, and how many faulted in (Kelvin: the learned planner judged after the fact).",
        compare,
    ),
    data(
        "kelvin.outside",
        -2,
        READONLY | NOSCRIPT,
        NO_KEYS,
        "cluster",
        "Runs DBSIZE, KEYS, SCAN or RANDOMKEY over this group's slots in no migration (Kelvin: a part of the main port's keyless commands during live resharding).",
        outside,
    ),
    data(
        "kelvin.migrate-plan",
        -4,
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
/// `[keys, bytes]` per class (critical, eager, lazy, skip). With a last argument
/// `CRITICAL`, the plan before the handover: critical keys only, the rest counted as
/// lazy and its bytes estimated ([`crate::migrate::plan::critical_plan`]). With
/// `FILTER` (after the seal), a fourth element: the Bloom filter of every key of the
/// slots here ([`crate::migrate::absent::KeyFilter`]), a fifth: what the eager keys
/// were ranked by, in words ([`crate::migrate::learn::planner_and_ranking`]), and a
/// sixth: `[[db, key]...]` the eager keys the heat planner's plan would not have held
/// (empty unless the model ranked; [`crate::migrate::compare`]).
fn plan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    use crate::migrate::plan::{critical_plan, range_facts_where, Planner};
    // CRITICAL: the plan before the handover; FILTER: the eager plan, with the filter
    // of every key of the slots (see `migrate::absent`).
    let (critical_only, with_filter) = match argv.get(4) {
        None => (false, false),
        Some(a) if crate::cmd::is(a, "critical") => (true, false),
        Some(a) if crate::cmd::is(a, "filter") => (false, true),
        Some(_) => return Err(CmdError::SYNTAX),
    };
    if argv.len() > 5 {
        return Err(CmdError::SYNTAX);
    }
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
    let mut filter = None;
    let mut ranking = String::new();
    let mut model_only: Option<Vec<(usize, Vec<u8>)>> = None;
    let plan = match critical_only {
        true => critical_plan(ex.store, &slots, &rules, ex.now_ms),
        false => {
            // The learned model's ranking once the node has one that beats the heat
            // counter on held-out keys, else the heat planner's.
            let (planner, ranked_by) = crate::migrate::learn::planner_and_ranking(rules);
            ranking = ranked_by;
            // One pass: every key into the filter, the facts of those the planner
            // lists (the heat planner: those whose counter has not decayed to zero, and those
            // the rules class).
            let mut keys_filter = with_filter.then(|| {
                let keys = ex
                    .store
                    .dbs()
                    .map(|(_, ks)| slots.iter().map(|&s| ks.slot(s).map.len()).sum::<usize>())
                    .sum();
                crate::migrate::absent::KeyFilter::with_capacity(keys)
            });
            let now = ex.now_ms;
            let (facts, others) = range_facts_where(ex.store, &slots, |db, key, entry| {
                if let Some(f) = keys_filter.as_mut() {
                    f.insert(db, key);
                }
                planner.lists(key, entry.heat, entry.expire_at, now)
            });
            filter = keys_filter;
            if with_filter && planner.ranks_by_model() {
                // The heat planner's plan too, to judge the model's after the fact
                // (`migrate::compare`): the keys only one of them pushes.
                let heat = crate::migrate::plan::HeatPlanner {
                    rules: planner.rules.clone(),
                }
                .plan_with(facts.clone(), others, ex.now_ms);
                let plan = planner.plan_with(facts, others, ex.now_ms);
                let in_model: std::collections::HashSet<&(usize, Vec<u8>)> =
                    plan.eager.iter().collect();
                let in_heat: std::collections::HashSet<&(usize, Vec<u8>)> =
                    heat.eager.iter().collect();
                model_only = Some(
                    plan.eager
                        .iter()
                        .filter(|k| !in_heat.contains(k))
                        .cloned()
                        .collect(),
                );
                crate::migrate::compare::planned(
                    migration,
                    heat.eager.into_iter().filter(|k| !in_model.contains(k)),
                );
                plan
            } else {
                planner.plan_with(facts, others, ex.now_ms)
            }
        }
    };
    ex.out.array(3 + 3 * usize::from(filter.is_some()));
    let key_list = |out: &mut kelvin_protocol::ReplyWriter, keys: &[(usize, Vec<u8>)]| {
        out.array(keys.len());
        for (db, key) in keys {
            out.array(2);
            out.int(*db as i64);
            out.bulk(key);
        }
    };
    key_list(ex.out, &plan.critical);
    key_list(ex.out, &plan.eager);
    ex.out.array(plan.totals.len());
    for t in &plan.totals {
        ex.out.array(2);
        ex.out.int(t.keys as i64);
        ex.out.int(t.bytes as i64);
    }
    if let Some(f) = filter {
        ex.out.bulk(&f.to_bytes());
        ex.out.bulk(ranking.as_bytes());
        key_list(ex.out, &model_only.unwrap_or_default());
    }
    Ok(())
}

/// `CLUSTER KELVIN-MIGRATIONS`: an array of the migrations this node drove, each a
/// flat array of fields and values (see [`crate::migrate::figures::Figures::fields`]),
/// then the fault-ins it served: `[faultins, n, keys, k, us, total, buckets, "a,b,...",
/// served, reads answered from the pull, absent, keys settled without a pull, pull_us,
/// microseconds of `us` spent waiting for the source]` (buckets up to 1 ms, 10 ms,
/// 100 ms, 1 s, and over).
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
    ctx.out.array(14);
    for (name, value) in [
        ("faultins", n.to_string()),
        ("keys", keys.to_string()),
        ("us", us.to_string()),
        ("buckets", buckets.join(",")),
        ("served", ctx.node.migrations.faultins_served().to_string()),
        ("absent", ctx.node.migrations.absent_keys().to_string()),
        ("pull_us", ctx.node.migrations.faultin_pull_us().to_string()),
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

pub(crate) fn number(arg: &[u8]) -> Result<u64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or(CmdError::NOT_INTEGER)
}

pub(crate) fn database(arg: &[u8]) -> Result<usize, CmdError> {
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

/// The keys of `ks` in the slots `take` accepts, from `(slot, cursor hash)` on in SCAN
/// order, until `count` keys were looked at (more only to keep keys of one cursor hash
/// together); with where to resume (slot [`kelvin_protocol::SLOT_COUNT`]: done).
fn slot_pages(
    ks: &crate::store::Keyspace,
    (mut slot, mut cursor): (usize, u64),
    count: usize,
    take: impl Fn(usize) -> bool,
) -> (Vec<&[u8]>, usize, u64) {
    let mut keys = Vec::new();
    while slot < kelvin_protocol::SLOT_COUNT && keys.len() < count {
        if !take(slot) {
            slot += 1;
            cursor = 0;
            continue;
        }
        let (page, next) = ks.scan_slot(slot, cursor, count - keys.len());
        keys.extend(page);
        match next {
            Some(c) if c != 0 => cursor = c,
            _ => {
                slot += 1;
                cursor = 0;
            }
        }
    }
    (keys, slot, cursor)
}

/// Writes `[expire_at, payload]` of `key`, or nil if it is absent or expired.
pub(crate) fn entry_reply(ex: &mut Exec<'_>, db: usize, key: &[u8], with_key: bool) -> bool {
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
    // A pull of a key only the heat planner's plan would have pushed is a fault-in
    // (the eager push pulls the model's keys only): counted for `migrate::compare`.
    crate::migrate::compare::pulled(migration, db, keys.iter().map(|k| &k[..]));
    ex.out.array(keys.len());
    for k in keys {
        entry_reply(ex, db, k, false);
    }
    Ok(())
}

/// `KELVIN.MIGRATE-TOUCHED <migration> <db> <key> [key ...]` (at the target): how many
/// of the keys (at most [`MAX_MOVE_BATCH`]) are here and were accessed since the write
/// that brought them (the profiler counted them again; [`crate::migrate::compare`]).
fn touched(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let _migration = number(&argv[1])?;
    let db = database(&argv[2])?;
    let keys = &argv[3..];
    if keys.len() > MAX_MOVE_BATCH {
        return Err(CmdError::err(format!(
            "at most {MAX_MOVE_BATCH} keys per KELVIN.MIGRATE-TOUCHED"
        )));
    }
    if !crate::store::heat::profiling() {
        return Err(CmdError::err(
            "the profiler is off (kelvin-profile-keys no): accesses are not counted",
        ));
    }
    let now = ex.now_ms;
    let ks = ex.store.db(db);
    let n = keys
        .iter()
        .filter(|k| ks.get(k, now).is_some_and(|e| e.heat.seen() >= 2))
        .count();
    ex.out.int(n as i64);
    Ok(())
}

/// `KELVIN.MIGRATE-COMPARE <migration>` (at the source): `[planned, pulled, dropped]`,
/// the keys only the heat planner's plans would have pushed, how many of them were
/// pulled since (fault-ins), and how many were not kept to be counted
/// ([`crate::migrate::compare`]); an error if the model ranked no plan of it here.
fn compare(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let migration = number(&argv[1])?;
    let Some((planned, pulled, dropped)) = crate::migrate::compare::counts(migration) else {
        return Err(CmdError::err(format!(
            "no plan of migration {migration} was ranked by the model here"
        )));
    };
    ex.out.array(3);
    for n in [planned, pulled, dropped] {
        ex.out.int(n as i64);
    }
    Ok(())
}

/// Where a page of `KELVIN.MIGRATE-SCAN` or `-NAMES` starts:
/// `<migration> <db> <slot> <cursor> <count>` (count capped at [`MAX_MOVE_BATCH`]).
struct PageStart {
    migration: u64,
    db: usize,
    slot: usize,
    cursor: u64,
    count: usize,
}

fn page_start(argv: &[Bytes]) -> Result<PageStart, CmdError> {
    let slot = number(&argv[3])?;
    if slot as usize > kelvin_protocol::SLOT_COUNT {
        return Err(CmdError::err("Invalid or out of range slot"));
    }
    Ok(PageStart {
        migration: number(&argv[1])?,
        db: database(&argv[2])?,
        slot: slot as usize,
        cursor: number(&argv[4])?,
        count: (number(&argv[5])? as usize).clamp(1, MAX_MOVE_BATCH),
    })
}

/// `KELVIN.MIGRATE-HOT <migration> <count>`: at most `count` (at most
/// [`recent::RECENT_KEYS`](crate::store::recent::RECENT_KEYS)) keys of the slots `migration` sealed here that live and were read
/// lately, the most read first ([`crate::store::recent`]), as `[db, key, bytes]`.
fn hot(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let migration = number(&argv[1])?;
    let count = usize::try_from(number(&argv[2])?)
        .unwrap_or(usize::MAX)
        .min(crate::store::recent::RECENT_KEYS);
    let sealed_here = |s: u16| {
        matches!(ex.store.migrations.role(s),
            Some(SlotRole::Sealed { migration: m, .. }) if m == migration)
    };
    if !ex.store.migrations.slots().any(|(s, _)| sealed_here(s)) {
        return Err(CmdError::err(format!(
            "no slot is sealed by migration {migration} in this group"
        )));
    }
    let now = ex.now_ms;
    let live = |db: usize, key: &[u8]| {
        ex.store
            .db_ref(db)
            .and_then(|ks| ks.get(key, now))
            .map(|e| key.len() + e.value.approx_bytes())
    };
    // A look-up per key sampled in the sealed slots (at most `recent::RECENT_KEYS`),
    // once per migration; the slot is checked first, so the others (most of the ring)
    // cost no look-up: three sources each looking up and sizing every key of the ring
    // held their locks 3-4 ms at once right after a 1M-session handover, and every
    // node's clients waited (`perf record --call-graph fp` over the handover).
    let keys = ex.store.recent.hottest(count, |db, key| {
        sealed_here(kelvin_protocol::key_slot(key))
            .then(|| live(db, key))
            .flatten()
    });
    ex.out.array(keys.len());
    for (db, key, bytes) in keys {
        ex.out.array(3);
        ex.out.int(db as i64);
        ex.out.bulk(&key);
        ex.out.int(bytes as i64);
    }
    Ok(())
}

fn scan(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let PageStart {
        migration,
        db,
        slot,
        cursor,
        count,
    } = page_start(argv)?;
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
    let ks = ex.store.db_view(db);
    let (keys, slot, cursor) = slot_pages(ks, (slot, cursor), count, |s| sealed_here(ex.store, s));
    let keys: Vec<Vec<u8>> = keys.into_iter().map(<[u8]>::to_vec).collect();
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

/// `ERR no migration <m> here` unless this group has a slot in `migration`.
fn takes_part(ex: &Exec<'_>, migration: u64) -> Result<(), CmdError> {
    match ex.store.migrations.takes_part(migration) {
        true => Ok(()),
        false => Err(CmdError::err(
            crate::migrate::state::MigrationError::Unknown(migration).to_string(),
        )),
    }
}

fn names(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let page = page_start(argv)?;
    let migration = page.migration;
    let (mut pattern, mut type_name) = (None, None);
    for option in argv[6..].chunks(2) {
        match option {
            [name, value] if crate::cmd::is(name, "match") => pattern = Some(value),
            [name, value] if crate::cmd::is(name, "type") => {
                type_name = Some(String::from_utf8_lossy(value).to_ascii_lowercase())
            }
            _ => return Err(CmdError::SYNTAX),
        }
    }
    takes_part(ex, migration)?;
    let now = ex.now_ms;
    let store = &*ex.store;
    let ks = store.db_view(page.db);
    let start = (page.slot, page.cursor);
    let (mut found, slot, cursor) = slot_pages(ks, start, page.count, |s| {
        store.migrations.in_migration(s as u16, migration)
    });
    found.retain(|k| {
        ks.get(k, now).is_some_and(|e| {
            pattern.is_none_or(|p| kelvin_protocol::glob::glob_match(p, k, false))
                && type_name
                    .as_deref()
                    .is_none_or(|t| t == e.value.type_name())
        })
    });
    ex.out.array(3);
    ex.out.int(slot as i64);
    ex.out.int(cursor as i64);
    ex.out.bulks(found.iter());
    Ok(())
}

fn unsettled(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let migration = number(&argv[1])?;
    let db = database(&argv[2])?;
    let keys = &argv[3..];
    if keys.len() > MAX_MOVE_BATCH {
        return Err(CmdError::err(format!(
            "at most {MAX_MOVE_BATCH} keys per KELVIN.MIGRATE-UNSETTLED"
        )));
    }
    takes_part(ex, migration)?;
    let state = &ex.store.migrations;
    for k in keys {
        let slot = kelvin_protocol::key_slot(k);
        if !matches!(state.role(slot),
            Some(SlotRole::Importing { migration: m, .. }) if m == migration)
        {
            return Err(CmdError::err(format!(
                "slot {slot} is not imported by migration {migration} in this group"
            )));
        }
    }
    let open: Vec<&Bytes> = keys
        .iter()
        .filter(|k| !state.is_settled(db as u8, k))
        .collect();
    ex.out.bulks(open.into_iter());
    Ok(())
}

/// `KELVIN.OUTSIDE <command> [args]`: DBSIZE, KEYS, SCAN or RANDOMKEY over the slots of
/// this group in no migration.
fn outside(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    use crate::cmd::keys;
    let inner = &argv[1..];
    let spec = crate::cmd::lookup(&inner[0]).ok_or_else(|| crate::cmd::unknown_command(inner))?;
    if !spec.arity_ok(inner.len()) {
        return Err(CmdError::arity(spec.name));
    }
    match spec.name {
        "dbsize" => {
            let n = keys::listed_len(ex.store, ex.db, true);
            ex.out.int(n as i64);
            Ok(())
        }
        "keys" => keys::keys_listed(ex, inner, true),
        "scan" => keys::scan_listed(ex, inner, true),
        "randomkey" => keys::randomkey_listed(ex, inner, true),
        _ => Err(CmdError::err(
            "KELVIN.OUTSIDE takes DBSIZE, KEYS, SCAN or RANDOMKEY",
        )),
    }
}

#[cfg(test)]
mod tests;
