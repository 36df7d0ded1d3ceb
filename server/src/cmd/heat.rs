//! What the profiler shows: `CLUSTER KELVIN-HEAT [COUNT n]` (what `kelvin-cli cluster heat`
//! reads) and the `heat` section of INFO.
//!
//! How it fits: both fold the stores of the groups this node replicates into a
//! [`crate::store::heat::Profile`] (a walk of every key under each store's lock, as KEYS
//! does), so neither is in INFO's default sections. Reads update heat on the leader
//! only, so a group's leader has its full profile; a follower's counts its writes.

use std::fmt::Write;

use bytes::Bytes;

use crate::cmd::{int_arg, is, CmdError, CmdResult};
use crate::conn::ConnCtx;
use crate::store::heat::{self, Profile, HEAT_BUCKETS};

/// Slots and keys `CLUSTER KELVIN-HEAT` lists per group unless COUNT says otherwise.
pub const DEFAULT_TOP: usize = 10;
/// The most COUNT may ask for.
pub const MAX_TOP: usize = 10_000;

/// Each group this node replicates, with its role and profile, lowest group first.
fn profiles(ctx: &ConnCtx<'_>, top: usize) -> Vec<(u64, &'static str, Profile)> {
    let now = crate::cmd::unix_ms();
    let Some(groups) = ctx.node.groups() else {
        return Vec::new();
    };
    groups
        .hosted
        .iter()
        .map(|(&id, g)| {
            let role = if g.status.is_leader() {
                "leader"
            } else {
                "follower"
            };
            let profile = heat::profile(&g.store.lock(), now, top);
            (id, role, profile)
        })
        .collect()
}

/// `CLUSTER KELVIN-HEAT [COUNT n]`: per group, a map of its role, totals, heat histogram,
/// its `n` hottest slots (`[slot, keys, bytes, heat]`) and keys (`[db, key, freq,
/// idle seconds, mean gap seconds, write %, bytes]`).
pub fn kelvin_heat(ctx: &mut ConnCtx<'_>, args: &[Bytes]) -> CmdResult {
    let top = match args {
        [] => DEFAULT_TOP,
        [kw, n] if is(kw, "count") => {
            let n = int_arg(n)?;
            if !(0..=MAX_TOP as i64).contains(&n) {
                return Err(CmdError::err(format!(
                    "COUNT must be between 0 and {MAX_TOP}"
                )));
            }
            n as usize
        }
        _ => return Err(CmdError::SYNTAX),
    };
    let all = profiles(ctx, top);
    let out = &mut *ctx.out;
    out.array(all.len());
    for (id, role, p) in all {
        out.map(9);
        out.bulk(b"group");
        out.int(id as i64);
        out.bulk(b"role");
        out.bulk(role.as_bytes());
        out.bulk(b"keys");
        out.int(p.total.keys as i64);
        out.bulk(b"bytes");
        out.int(p.total.bytes as i64);
        out.bulk(b"heat");
        out.int(p.total.heat as i64);
        out.bulk(b"volatile");
        out.int(p.total.volatile as i64);
        out.bulk(b"histogram");
        out.array(2 * HEAT_BUCKETS.len());
        for ((_, name), n) in HEAT_BUCKETS.iter().zip(p.total.histogram) {
            out.bulk(name.as_bytes());
            out.int(n as i64);
        }
        let mut slots = p.slots;
        slots.sort_by(|a, b| b.1.heat.cmp(&a.1.heat).then(a.0.cmp(&b.0)));
        slots.truncate(top);
        out.bulk(b"slots");
        out.array(slots.len());
        for (slot, s) in slots {
            out.array(4);
            out.int(slot as i64);
            out.int(s.keys as i64);
            out.int(s.bytes as i64);
            out.int(s.heat as i64);
        }
        let now = crate::cmd::unix_ms();
        out.bulk(b"hottest");
        out.array(p.hottest.len());
        for k in p.hottest {
            out.array(7);
            out.int(k.db as i64);
            out.bulk(&k.key);
            out.int(k.counter as i64);
            out.int(k.heat.idle_secs(now) as i64);
            out.int(k.heat.mean_gap_secs() as i64);
            out.int(k.heat.write_share() as i64 * 100 / 255);
            out.int(k.bytes as i64);
        }
    }
    Ok(())
}

/// The `heat` section of INFO: whether the profiler is on, and the keys of every group
/// this node replicates by decayed access counter.
pub fn info_section(ctx: &ConnCtx<'_>) -> String {
    let mut text = String::from("# Heat\r\n");
    let on = if heat::profiling() { "yes" } else { "no" };
    let _ = write!(text, "profile_keys:{on}\r\n");
    for (id, role, p) in profiles(ctx, 0) {
        let hist: Vec<String> = HEAT_BUCKETS
            .iter()
            .zip(p.total.histogram)
            .map(|((_, name), n)| format!("{name}={n}"))
            .collect();
        let _ = write!(
            text,
            "group{id}:role={role},keys={},bytes={},heat={},volatile={},slots={},histogram={}\r\n",
            p.total.keys,
            p.total.bytes,
            p.total.heat,
            p.total.volatile,
            p.slots.len(),
            hist.join("/")
        );
    }
    text.push_str("\r\n");
    text
}
