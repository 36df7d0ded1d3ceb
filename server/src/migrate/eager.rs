//! The eager push of a migration handed over (DESIGN.md "Resharding, step by step"):
//! the keys the source saw read most lately first ([`HOT_KEYS`]), beside the ranking of
//! the range's keys at the source, chunk by chunk; each chunk's ranked keys, hottest per
//! byte first, go while the source rests before the next chunk. The phase driver
//! ([`crate::migrate::driver`]) calls [`push_eager`] right after the handover.

use bytes::Bytes;

use crate::cluster::MigrationSpec;
use crate::migrate::absent::KeyFilter;
use crate::migrate::driver::{args, move_keys, plan_request, runs, text, Cluster};
use crate::migrate::replies::{hot_reply, plan_reply, KeyList};

/// Slots per eager plan: the source ranks this many slots' keys while it holds its
/// store's lock (about 250 keys at a million sessions over 16384 slots). At 16 (a
/// thousand keys) the lock held the source's requests for a millisecond at a time: 4
/// slots with [`crate::migrate::driver::PUSH_BATCH`] at 32 made the p99 of a 1M-session
/// move's first 0.7 s 1.22-1.27 ms against 3.06-3.65 (two runs each, drain at 25 MB/s).
pub const PLAN_CHUNK_SLOTS: usize = 4;

/// The pause after each plan chunk, in multiples of the time the chunk took (the
/// source's ranking at most a third of the time). Right after the handover every source
/// ranks at once; unpaced, on 2 cores, that starved every node's clients (1M sessions,
/// three runs each: p99 during the move 9.7-18.1 ms unpaced, 4.0-13.6 paced, requests
/// over 2 ms 8.4-9.2% against 4.7-5.1%; the eager push starting later costs about 40
/// more fault-ins: 273-288 against 222-290). The chunk's eager keys are pushed during
/// the pause (they waited for the whole ranking once, then went in one burst of ~10 MB
/// per source that held the target's requests for ~150 ms).
pub const PLAN_PAUSE_FACTOR: u32 = 2;

/// Keys read most lately that a migration pushes first ([`crate::store::recent`]).
pub const HOT_KEYS: usize = 1000;

/// Plans the eager keys of `m` at the source a chunk of slots at a time
/// ([`PLAN_CHUNK_SLOTS`], each chunk's hottest per byte within its eager budget) and
/// pushes each chunk's keys, hottest first, during the pause after its ranking
/// ([`PLAN_PAUSE_FACTOR`]). The hottest keys of the whole range went already, beside
/// the ranking ([`HOT_KEYS`]); each chunk's share of them leaves its list and comes out
/// of its budget ([`fold_hot`]). Pushed chunk by chunk instead of all at once after the
/// ranking (1M sessions, two runs each): the first chunks' keys arrive 0.3 s earlier,
/// fault-ins 134-139 against 153-177, and no burst at the ranking's end.
pub(super) async fn push_eager<C: Cluster>(
    c: &mut C,
    m: &MigrationSpec,
    rules: &str,
) -> Result<Pushed, String> {
    let began = std::time::Instant::now();
    let slots: Vec<u16> = m.slots.iter().flat_map(|&(a, b)| a..=b).collect();
    let mut planned = [(0u64, 0u64); 4];
    // What each chunk was ranked by (the source's model may be published mid-way).
    let mut rankings: Vec<(String, usize)> = Vec::new();
    let mut model_only: KeyList = Vec::new();
    // The keys the source saw read most lately in the range go first, beside the
    // ranking (which takes a third of a 1M-session range 250-350 ms): the hottest keys
    // without a pass over the range. A source without the command gives none.
    let id = m.id.to_string();
    let hot = c
        .on_group(
            m.source,
            args(&["KELVIN.MIGRATE-HOT", &id, &HOT_KEYS.to_string()]),
        )
        .await;
    let hot = hot_reply(&hot).unwrap_or_default();
    let hot_keys: KeyList = hot.iter().map(|(db, k, _)| (*db, k.clone())).collect();
    let pushing_hot = (!hot_keys.is_empty()).then(|| {
        let (mut h, m, keys) = (c.fork(), m.clone(), hot_keys.clone());
        tokio::spawn(async move { move_keys(&mut h, &m, &keys).await })
    });
    // Each hot key's slot, so that each chunk folds in its own.
    let hot_slots: Vec<u16> = hot
        .iter()
        .map(|(_, key, _)| kelvin_protocol::key_slot(key))
        .collect();
    let (mut outside, mut pushed) = (0u64, 0u64);
    let chunks: Vec<&[u16]> = slots.chunks(PLAN_CHUNK_SLOTS).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let ranges = runs(chunk);
        let mut request = plan_request(m.id, rules, &ranges, false);
        request.push(Bytes::from_static(b"FILTER"));
        let asked = tokio::time::Instant::now();
        let reply = c.on_group(m.source, request).await;
        // Paced ([`PLAN_PAUSE_FACTOR`]): the sources' ranking leaves their cores to the
        // clients most of the time (no pause after the last chunk).
        let pause = match n + 1 == chunks.len() {
            true => std::time::Duration::ZERO,
            false => asked.elapsed() * PLAN_PAUSE_FACTOR,
        };
        if reply.starts_with(b"-ERR slot") {
            // The source finished already: nothing is left there.
            break;
        }
        let ((critical, eager, totals), filter) = plan_reply(&reply)
            .ok_or_else(|| format!("group {}: plan: {}", m.source, text(&reply)))?;
        // Keys the source never held in these slots settle here without a pull.
        if let Some((filter, ranking, only)) = filter {
            if let Some(f) = KeyFilter::from_bytes(&filter) {
                c.absent_keys(m.id, chunk, f);
            }
            model_only.extend(only);
            let ranking = String::from_utf8_lossy(&ranking).into_owned();
            match rankings.iter_mut().find(|(r, _)| *r == ranking) {
                Some((_, n)) => *n += 1,
                None => rankings.push((ranking, 1)),
            }
        }
        let hot_here: Vec<(usize, Bytes, u64)> = hot
            .iter()
            .zip(&hot_slots)
            .filter(|(_, s)| chunk.contains(*s))
            .map(|(h, _)| h.clone())
            .collect();
        let mut counts = [(0u64, 0u64); 4];
        for (count, t) in counts.iter_mut().zip(&totals) {
            *count = *t;
        }
        let mut list = eager;
        outside += fold_hot(&mut list, &critical, &hot_here, &mut counts);
        for (sum, t) in planned.iter_mut().zip(&counts) {
            sum.0 += t.0;
            sum.1 += t.1;
        }
        // The chunk's eager keys go now, hottest first, while the source rests: the
        // first chunks' keys arrive early, and the push is spread over the ranking
        // instead of one burst after it (see [`PLAN_PAUSE_FACTOR`]).
        let (moved, ()) = tokio::join!(move_keys(c, m, &list), tokio::time::sleep(pause));
        pushed += moved?;
    }
    tracing::debug!(
        migration = m.id,
        ms = began.elapsed().as_millis() as u64,
        "eager keys planned, each chunk's pushed"
    );
    let hot_moved = match pushing_hot {
        Some(task) => task.await.map_err(|e| e.to_string())??,
        None => 0,
    };
    tracing::debug!(
        migration = m.id,
        hot = hot_keys.len(),
        outside_plan = outside,
        moved = hot_moved,
        "hot keys pushed"
    );
    let moved = hot_moved + pushed;
    let chunks: usize = rankings.iter().map(|(_, n)| n).sum();
    let by_model = rankings
        .iter()
        .any(|(r, _)| r.starts_with(crate::migrate::learn::MODEL_RANKED));
    let ranked_by = match rankings.as_slice() {
        [(only, _)] => only.clone(),
        _ => rankings
            .iter()
            .map(|(r, n)| format!("{r} on {n} of {chunks} chunks"))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Ok(Pushed {
        planned,
        moved,
        ranked_by,
        by_model,
        model_only,
    })
}

/// Folds the hot keys of a chunk's slots (pushed on their own, [`HOT_KEYS`]) into the
/// chunk's eager plan: they leave `order`, and they come out of the same budget. Those the plan held neither as
/// eager nor as critical are eager now (they were counted lazy), and as many of the
/// order's last, coolest keys as weigh about as much go back to lazy (estimated at the
/// plan's mean eager key: the plan's reply carries no sizes). Returns how many hot keys
/// the plan did not hold.
fn fold_hot(
    order: &mut KeyList,
    critical: &KeyList,
    hot: &[(usize, Bytes, u64)],
    planned: &mut [(u64, u64); 4],
) -> u64 {
    let (outside, outside_bytes) = {
        let held: std::collections::HashSet<&(usize, Bytes)> =
            order.iter().chain(critical).collect();
        hot.iter()
            .filter(|(db, key, _)| !held.contains(&(*db, key.clone())))
            .fold((0u64, 0u64), |(n, b), (_, _, bytes)| (n + 1, b + bytes))
    };
    let hot_keys: std::collections::HashSet<(usize, &Bytes)> =
        hot.iter().map(|(db, key, _)| (*db, key)).collect();
    order.retain(|(db, key)| !hot_keys.contains(&(*db, key)));
    let mean = planned[1].1 / planned[1].0.max(1);
    let (mut back, mut back_bytes) = (0u64, 0u64);
    while mean > 0 && back_bytes < outside_bytes && order.pop().is_some() {
        back += 1;
        back_bytes += mean;
    }
    // Eager gains the hot keys outside the plan and gives back what was dropped; lazy
    // the other way round.
    planned[1].0 = (planned[1].0 + outside).saturating_sub(back);
    planned[1].1 = (planned[1].1 + outside_bytes).saturating_sub(back_bytes);
    planned[2].0 = (planned[2].0 + back).saturating_sub(outside);
    planned[2].1 = (planned[2].1 + back_bytes).saturating_sub(outside_bytes);
    outside
}

/// What [`push_eager`] did: the counts per class over the whole range, how many keys
/// moved, what the source ranked them by, and the keys only the model's plan held
/// (for [`crate::migrate::compare`]).
pub(super) struct Pushed {
    pub(super) planned: [(u64, u64); 4],
    pub(super) moved: u64,
    pub(super) ranked_by: String,
    /// Whether the model ranked any chunk (then the plans are compared after the fact).
    pub(super) by_model: bool,
    pub(super) model_only: KeyList,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_keys_leave_the_order_and_come_out_of_the_eager_budget() {
        let k = |name: &str| (0usize, Bytes::copy_from_slice(name.as_bytes()));
        let hot = |name: &str, bytes: u64| (0usize, Bytes::copy_from_slice(name.as_bytes()), bytes);
        let mut order: KeyList = ["a", "b", "c", "d", "e"].iter().map(|n| k(n)).collect();
        let critical: KeyList = vec![k("crit")];
        // Eager: 5 keys of 100 bytes; lazy 10 keys of 100.
        let mut planned = [(1, 100), (5, 500), (10, 1000), (0, 0)];
        // "b" was planned (it only leaves the order), "crit" moved already, "x" and "y"
        // were lazy: 150 bytes more eager, so two of the coolest planned keys go back.
        let hot_list = [hot("b", 100), hot("crit", 100), hot("x", 100), hot("y", 50)];
        assert_eq!(fold_hot(&mut order, &critical, &hot_list, &mut planned), 2);
        assert_eq!(order, vec![k("a"), k("c")]);
        assert_eq!(planned, [(1, 100), (5, 450), (10, 1050), (0, 0)]);
        // Every hot key planned: nothing given back.
        let mut order: KeyList = vec![k("a"), k("b")];
        let mut planned = [(0, 0), (2, 200), (3, 300), (0, 0)];
        assert_eq!(
            fold_hot(&mut order, &vec![], &[hot("a", 100)], &mut planned),
            0
        );
        assert_eq!(order, vec![k("b")]);
        assert_eq!(planned, [(0, 0), (2, 200), (3, 300), (0, 0)]);
        // Nothing left to give back: eager grows (a plan with no eager keys).
        let mut order: KeyList = vec![];
        let mut planned = [(0, 0), (0, 0), (3, 300), (0, 0)];
        assert_eq!(
            fold_hot(&mut order, &vec![], &[hot("z", 100)], &mut planned),
            1
        );
        assert_eq!(planned, [(0, 0), (1, 100), (2, 200), (0, 0)]);
    }
}
