//! The phase driver: moves the migrations the topology lists through their phases, on
//! the node that leads each migration's target group (DESIGN.md "Resharding, step by
//! step").
//!
//! ```text
//! planned   target: IMPORT        (serves nothing of the slots yet)
//!           source: SEAL          (serves nothing of them any more) -> index, log time
//!           target: PROOF         (serves them: unmoved keys fault in)
//!           meta:   the slots change owner, the line says handover   (one change for
//!                   every planned migration of this target)
//! handover  drain:  source MIGRATE-SCAN pages -> target KEYS (never over settled keys)
//!           target: FINISH, source: FINISH (drops the slots' keys)
//!           meta:   the migrate line goes
//! ```
//!
//! Every step is idempotent, so a driver that dies anywhere (its node killed, its group's
//! leadership moved) is replaced by the next leader's, which starts over from the phase
//! the meta group holds: IMPORT, SEAL and PROOF again for a planned migration (the same
//! migration's claim again is no change), the drain again for one handed over (a key
//! already moved is refused, not written twice), FINISH again (an unknown migration is
//! the answer once it is done). A migration is never sealed again once handed over.
//!
//! The driver reaches the cluster through [`Cluster`], a narrow interface the connection
//! layer implements (requests routed as the main port routes them), not the node.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::{ranges_text, Membership, MigrationPhase, MigrationSpec};
use crate::migrate::absent::KeyFilter;
use crate::migrate::figures::Figures;
use crate::migrate::replies::{
    bulk_text, plan_reply, pull_reply, scan_page, seal_reply, KeyList, Plan,
};

/// How often the driver looks for work when nothing wakes it.
pub const DRIVER_TICK: Duration = Duration::from_millis(100);
/// How long the driver waits after a failed step before it tries again.
pub const DRIVER_BACKOFF: Duration = Duration::from_millis(500);
/// Keys per drain page (bounded by [`crate::cmd::migrate::MAX_MOVE_BATCH`]).
pub const DRAIN_PAGE_KEYS: usize = 1000;
/// Bytes per drain page, about: the source's lock while it reads a page, and the
/// target's apply of it, each last well under a millisecond, so client requests pass
/// between pages (pages of 1000 keys, ~1 MB at sessions of 1 KB, put several ms of wait
/// in front of the requests that came meanwhile; at 256 KB, three sources draining into
/// one target still held its requests behind up to three pages: p99 during a 1M-session
/// move 56-70 ms, against 19-31 ms at 64 KB, with the drain no slower). At 32 KB, runs on
/// a quiet machine (two at 32 KB, four at 64 KB, one build apart): p99 during 6.7 and
/// 7.3 ms against 9.3-11.3 at 64 KB, the drain's middle p99 3.3-3.6 ms against 5.8-10,
/// fault-ins 1.4 ms against 2.0-2.2 on average, the drain as fast; at 16 KB the drain
/// took 1.4 times as long and faulted in more keys, for no better p99 (then). Once the
/// eager push no longer came in one burst ([`crate::migrate::eager`]) the drain's pages
/// were what was left in its middle: at 16 KB (1M sessions, five runs against two) the
/// drain's middle p99 0.64-0.98 ms against 1.13-1.15 at 32 KB, the move 1.5-1.75 s
/// against 1.45, fault-ins 191-216 against 161-170; at 8 KB (three runs) no better
/// (0.64-1.29 ms) and slower (1.8-1.9 s, 187-223 fault-ins).
pub const DRAIN_PAGE_BYTES: usize = 16 << 10;
/// How long a topology change may take to be applied before it is proposed again (a
/// proposal the meta leader dropped, e.g. during a leadership transfer, never is; the
/// epoch check at apply keeps a change from landing twice).
const TOPOLOGY_WAIT: Duration = Duration::from_secs(1);
/// How long a planned migration may wait for its source's plan (or for the claim of its
/// slots) before the target rejects it: nothing has moved by then.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the driver needs of the cluster.
pub trait Cluster: Send + Sized + 'static {
    /// Another handle on the same cluster, for work done side by side.
    fn fork(&self) -> Self;
    /// The topology this node's replica of the meta group holds.
    fn topology(&self) -> Option<Membership>;
    /// Whether this node leads `group` now.
    fn leads(&self, group: u64) -> bool;
    /// The meta group's leader, if known.
    fn meta_leader(&self) -> Option<u64>;
    /// The operator's migration rules (`--migration-rules`), for the planner.
    fn rules(&self) -> crate::migrate::plan::Rules;
    /// Bytes per second the drain may move (`kelvin-migration-drain-rate`; 0: no limit).
    fn drain_rate(&self) -> u64;
    /// Bytes `group` may still take under `maxmemory` (`None`: no limit here).
    fn room(&self, group: u64) -> Option<u64>;
    /// Keeps what the driver measured of a migration (`CLUSTER KELVIN-MIGRATIONS`).
    fn record(&self, figures: &Figures);
    /// Keeps the filter of the keys the source of `migration` holds in `slots`, for
    /// the fault-ins of keys it never held ([`crate::migrate::absent`]).
    fn absent_keys(&self, migration: u64, slots: &[u16], filter: KeyFilter);
    /// `migration` ended: the filters of its keys go.
    fn forget_absent(&self, migration: u64);
    /// Runs `argv` on group `group` (its leader, wherever it is); the RESP2 reply.
    fn on_group(&mut self, group: u64, argv: Vec<Bytes>) -> impl Future<Output = Vec<u8>> + Send;
    /// Sends `argv` to member `member` as is; the RESP2 reply.
    fn on_member(
        &mut self,
        member: u64,
        argv: Vec<Bytes>,
    ) -> impl Future<Output = std::io::Result<Vec<u8>>> + Send;
}

/// Runs the driver until `stop` fires.
pub async fn run<C: Cluster>(
    mut cluster: C,
    mut wake: tokio::sync::watch::Receiver<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut state = State::default();
    loop {
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(DRIVER_TICK) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = step(&mut cluster, &mut state).await {
            tracing::warn!(cause = %e, "migration driver: step failed, trying again");
            tokio::time::sleep(DRIVER_BACKOFF).await;
        }
    }
}

/// A phase boundary of the driver ([`crate::failpoint::MIGRATE_PHASES`]).
async fn boundary(name: &'static str) {
    crate::failpoint::boundary(name).await
}

pub(super) fn args(words: &[&str]) -> Vec<Bytes> {
    words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

pub(super) fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).trim_end().to_string()
}

/// What the driver remembers between passes: the migrations handed over whose eager
/// keys are still to be planned and pushed, and their figures. Lost if the driver's node
/// dies: the drain moves those keys then.
#[derive(Default)]
pub struct State {
    eager: std::collections::HashSet<u64>,
    figures: std::collections::HashMap<u64, Figures>,
    /// The migrations handed over whose push, drain and finish run now, side by side.
    running: std::collections::HashMap<u64, tokio::task::JoinHandle<()>>,
    /// When each planned migration was first tried (for [`NEGOTIATION_TIMEOUT`]).
    first_tried: std::collections::HashMap<u64, std::time::Instant>,
}

impl State {
    /// Whether `m` has waited past [`NEGOTIATION_TIMEOUT`] since it was first tried.
    fn timed_out(&mut self, m: &MigrationSpec) -> bool {
        let first = self
            .first_tried
            .entry(m.id)
            .or_insert_with(std::time::Instant::now);
        first.elapsed() >= NEGOTIATION_TIMEOUT
    }

    fn figures(&mut self, m: &MigrationSpec) -> &mut Figures {
        self.figures.entry(m.id).or_insert_with(|| Figures {
            id: m.id,
            source: m.source,
            target: m.target,
            slots: m.slots.iter().map(|&(a, b)| u64::from(b - a) + 1).sum(),
            phase: "sealing",
            ..Default::default()
        })
    }
}

/// Most keys one pull and one write of pushed keys carry: about two drain pages
/// ([`DRAIN_PAGE_BYTES`]) of 1 KB sessions, for the same reason (at 200, the eager push
/// right after the handover held the target's requests for 10-20 ms; 32 with plan
/// chunks of 4 slots against 64 with chunks of 16: p99 of a 1M-session move's first
/// 0.7 s 1.22-1.27 ms against 3.06-3.65 at a drain of 25 MB/s).
pub const PUSH_BATCH: usize = 32;

/// One pass: hand over every planned migration this node's groups import, else push the
/// eager keys of one handed over, drain it and finish it.
pub async fn step<C: Cluster>(c: &mut C, state: &mut State) -> Result<(), String> {
    let Some(t) = c.topology() else {
        return Ok(());
    };
    let mine: Vec<MigrationSpec> = t
        .migrations
        .iter()
        .filter(|m| c.leads(m.target))
        .cloned()
        .collect();
    let planned: Vec<&MigrationSpec> = mine
        .iter()
        .filter(|m| m.phase == MigrationPhase::Planned)
        .collect();
    if !planned.is_empty() {
        let planned = still_planned(c, &t, planned).await?;
        if planned.is_empty() {
            return Ok(());
        }
        return handover(c, &planned, state).await;
    }
    // Each migration handed over settles in a task of its own (the sources differ, so
    // their drains go side by side); one that failed is started again next pass.
    state.running.retain(|_, task| !task.is_finished());
    for m in mine {
        if state.running.contains_key(&m.id) {
            continue;
        }
        let eager = state.eager.remove(&m.id);
        let rules = c.rules().to_toml();
        let figures = state.figures(&m).clone();
        state.figures.remove(&m.id);
        let fork = c.fork();
        let id = m.id;
        let task = tokio::spawn(async move {
            let eager = eager.then_some(rules);
            if let Err(e) = settle(fork, m, eager, figures).await {
                tracing::warn!(migration = id, cause = %e, "migration driver: trying again");
            }
        });
        state.running.insert(id, task);
    }
    Ok(())
}

/// The migrations of `planned` that the meta leader's topology still lists as planned.
/// This node's replica of the meta group may lag (back from a partition, it applies the
/// group logs and the meta log at their own pace): a migration it still lists as planned
/// may have been handed over, drained and finished meanwhile, and its handover run
/// again would import and seal slots whose keys are gone from the source, so that the
/// target answered them as absent (`kelvin-jepsen run --quick`, seed
/// 1796591852707583369: the target leader isolated during a reshard came back, led its
/// group again, and ran IMPORT, SEAL and PROOF of the finished migration; reads of the
/// moved keys answered nil). The topology's changes are compare-and-set on its epoch, so
/// the meta leader's is never older than one this node applied; an older one (a deposed
/// leader's) is refused and the pass tried again.
async fn still_planned<'a, C: Cluster>(
    c: &mut C,
    local: &Membership,
    planned: Vec<&'a MigrationSpec>,
) -> Result<Vec<&'a MigrationSpec>, String> {
    let leader = c
        .meta_leader()
        .ok_or("no meta leader to confirm the plan with")?;
    let argv = vec![
        Bytes::from_static(b"CLUSTER"),
        Bytes::from_static(b"KELVIN-TOPOLOGY"),
    ];
    let reply = c
        .on_member(leader, argv)
        .await
        .map_err(|e| format!("meta leader unreachable: {e}"))?;
    let fresh = bulk_text(&reply)
        .ok_or_else(|| format!("meta leader's topology: {}", text(&reply)))
        .and_then(|t| Membership::parse(t).map_err(|e| format!("meta leader's topology: {e}")))?;
    if fresh.epoch < local.epoch {
        return Err(format!(
            "the meta leader's topology (epoch {}) is older than this node's ({})",
            fresh.epoch, local.epoch
        ));
    }
    Ok(planned
        .into_iter()
        .filter(|m| {
            fresh
                .migrations
                .iter()
                .any(|f| f.id == m.id && f.phase == MigrationPhase::Planned)
        })
        .collect())
}

/// A migration handed over: its eager keys planned and pushed (`eager`: the rules, if
/// that is still to do), the rest drained, both sides finished, its line gone.
async fn settle<C: Cluster>(
    mut c: C,
    m: MigrationSpec,
    eager: Option<String>,
    mut f: Figures,
) -> Result<(), String> {
    let c = &mut c;
    f.phase = "draining";
    // Whether the model ranked the eager keys, and those only its plan held.
    let (mut by_model, mut model_only) = (false, KeyList::new());
    if let Some(rules) = eager {
        let began = std::time::Instant::now();
        let pushed = crate::migrate::eager::push_eager(c, &m, &rules).await?;
        f.eager_moved = pushed.moved;
        f.ranked_by = pushed.ranked_by;
        by_model = pushed.by_model;
        model_only = pushed.model_only;
        f.eager_ms = began.elapsed().as_millis() as u64;
        // The counts of every class, now that each key was looked at (before the
        // handover the bytes were estimated).
        f.planned = pushed.planned;
        c.record(&f);
        tracing::info!(
            migration = m.id,
            keys = f.planned[1].0,
            moved = f.eager_moved,
            ms = f.eager_ms,
            "eager keys planned and pushed"
        );
    }
    let began = std::time::Instant::now();
    let (keys, bytes) = drain(c, &m, &mut f).await?;
    f.drained_keys = keys;
    f.drained_bytes = bytes;
    f.drain_ms = began.elapsed().as_millis() as u64;
    if by_model {
        f.compared = Some(crate::migrate::compare::after_the_fact(c, &m, &model_only).await);
    }
    c.record(&f);
    boundary("migrate-after-drain").await;
    finish(c, &m).await?;
    c.forget_absent(m.id);
    f.phase = "done";
    c.record(&f);
    Ok(())
}

async fn expect_ok<C: Cluster>(c: &mut C, group: u64, argv: Vec<Bytes>) -> Result<(), String> {
    let reply = c.on_group(group, argv).await;
    match reply.starts_with(b"+OK") {
        true => Ok(()),
        false => Err(format!("group {group}: {}", text(&reply))),
    }
}

/// Import, seal, proof for each; then one topology change hands every slot over.
async fn handover<C: Cluster>(
    c: &mut C,
    planned: &[&MigrationSpec],
    state: &mut State,
) -> Result<(), String> {
    let began = std::time::Instant::now();
    let rules = c.rules().to_toml();
    // The planner first, at the source, while it still serves the slots (outside the
    // window in which they are served by neither group): which keys are critical (they
    // move before the slots change hands, read after the seal so their values are
    // final) and which are eager (pushed right after).
    let mut plans: Vec<(&MigrationSpec, Plan)> = Vec::new();
    let mut rejected: Vec<(&MigrationSpec, String)> = Vec::new();
    for m in planned.iter().copied() {
        let reply = c
            .on_group(m.source, plan_request(m.id, &rules, &m.slots, true))
            .await;
        match plan_reply(&reply) {
            Some((plan, _)) => plans.push((m, plan)),
            None if reply.starts_with(b"-ERR unknown command") => rejected.push((
                m,
                format!(
                    "group {} runs a version without live migrations ({})",
                    m.source,
                    text(&reply)
                ),
            )),
            None if state.timed_out(m) => rejected.push((
                m,
                format!(
                    "group {} gave no plan within {NEGOTIATION_TIMEOUT:?} (last: {})",
                    m.source,
                    text(&reply)
                ),
            )),
            None => return Err(format!("group {}: plan: {}", m.source, text(&reply))),
        }
    }
    // The target takes what it can hold: all it imports now must fit under its
    // maxmemory (the plan's bytes of every class that moves), or none of it moves.
    let mut targets: Vec<u64> = plans.iter().map(|(m, _)| m.target).collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let need: u64 = plans
            .iter()
            .filter(|(m, _)| m.target == target)
            .flat_map(|(_, p)| p.2.iter().take(3).map(|t| t.1))
            .sum();
        match c.room(target) {
            Some(room) if need > room => {
                let reason = format!(
                    "group {target} has {room} bytes left under maxmemory and {need} bytes were planned to move"
                );
                for (m, _) in plans.iter().filter(|(m, _)| m.target == target) {
                    rejected.push((m, reason.clone()));
                }
                plans.retain(|(m, _)| m.target != target);
            }
            _ => {}
        }
    }
    boundary("migrate-after-plan").await;
    let window = std::time::Instant::now();
    let mut accepted = Vec::new();
    for (m, (critical, _, totals)) in plans {
        let (id, slots) = (m.id.to_string(), ranges_text(&m.slots));
        let (source, target) = (m.source.to_string(), m.target.to_string());
        let import = c
            .on_group(
                m.target,
                args(&["KELVIN.MIGRATE", "IMPORT", &id, &source, &slots]),
            )
            .await;
        if !import.starts_with(b"+OK") {
            if import_busy(&import) {
                rejected.push((m, format!("group {}: {}", m.target, text(&import))));
                continue;
            }
            return Err(format!("group {}: {}", m.target, text(&import)));
        }
        boundary("migrate-after-import").await;
        let sealed = c
            .on_group(
                m.source,
                args(&["KELVIN.MIGRATE", "SEAL", &id, &target, &slots]),
            )
            .await;
        let Some([index, log_ms]) = seal_reply(&sealed) else {
            if import_busy(&sealed) {
                // The source's slots are in another migration: the import is undone
                // (nothing moved to it), the migration rejected.
                expect_ok(c, m.target, args(&["KELVIN.MIGRATE", "FINISH", &id])).await?;
                rejected.push((m, format!("group {}: {}", m.source, text(&sealed))));
                continue;
            }
            return Err(format!("group {}: seal: {}", m.source, text(&sealed)));
        };
        boundary("migrate-after-seal").await;
        expect_ok(
            c,
            m.target,
            args(&[
                "KELVIN.MIGRATE",
                "PROOF",
                &id,
                &index.to_string(),
                &log_ms.to_string(),
            ]),
        )
        .await?;
        let moved = move_keys(c, m, &critical).await?;
        boundary("migrate-after-proof").await;
        tracing::info!(migration = m.id, source = m.source, target = m.target, slots = %slots,
            critical = critical.len(), moved, ?totals,
            "sealed, proof at the target, critical keys moved");
        let f = state.figures(m);
        for (i, t) in totals.iter().take(4).enumerate() {
            f.planned[i] = *t;
        }
        f.critical_moved = moved;
        c.record(f);
        state.eager.insert(m.id);
        accepted.push(m);
    }
    for (m, reason) in &rejected {
        reject(c, state, m, reason).await?;
    }
    if accepted.is_empty() {
        return Ok(());
    }
    let ids: Vec<u64> = accepted.iter().map(|m| m.id).collect();
    change_topology(c, |t| {
        let mut owner = t.slot_groups();
        let mut changed = false;
        for m in t.migrations.iter_mut().filter(|m| ids.contains(&m.id)) {
            if m.phase != MigrationPhase::Planned {
                continue;
            }
            for &(a, b) in &m.slots {
                owner[a as usize..=b as usize].fill(m.target);
            }
            m.phase = MigrationPhase::Handover;
            changed = true;
        }
        t.set_owners(&owner);
        changed
    })
    .await?;
    boundary("migrate-after-handover").await;
    // The handover: from the first seal to the topology's change applied here (the
    // window in which requests for the slots wait).
    let ms = window.elapsed().as_millis() as u64;
    tracing::debug!(
        ms = began.elapsed().as_millis() as u64,
        "planned to handed over"
    );
    for m in accepted {
        state.first_tried.remove(&m.id);
        let f = state.figures(m);
        f.handover_ms = ms;
        f.phase = "handed-over";
        c.record(f);
    }
    tracing::info!(migrations = ?ids, ms, "handed over");
    Ok(())
}

/// Whether a step was refused for good: a slot is in another migration, or this
/// migration finished on that side already (the driver's topology lagged behind).
fn import_busy(reply: &[u8]) -> bool {
    (reply.starts_with(b"-ERR slot")
        && memchr::memmem::find(reply, b"is already in migration").is_some())
        || (reply.starts_with(b"-ERR migration")
            && memchr::memmem::find(reply, b"is finished here").is_some())
}

/// The target rejects `m` before anything moved: its line leaves the topology, and its
/// figures say why (`kelvin-cli cluster reshard` prints it).
async fn reject<C: Cluster>(
    c: &mut C,
    state: &mut State,
    m: &MigrationSpec,
    reason: &str,
) -> Result<(), String> {
    tracing::warn!(migration = m.id, source = m.source, target = m.target, %reason,
        "migration rejected");
    // Recorded before the line goes: `kelvin-cli cluster reshard` reads the reason once
    // it sees the line gone, and tells a rejected line from one never added by it.
    let f = state.figures(m);
    f.phase = "rejected";
    f.reason = reason.to_string();
    c.record(f);
    change_topology(c, |t| {
        let before = t.migrations.len();
        t.migrations
            .retain(|x| !(x.id == m.id && x.phase == MigrationPhase::Planned));
        t.migrations.len() != before
    })
    .await?;
    state.first_tried.remove(&m.id);
    Ok(())
}

/// How often a drain's running figures are recorded (`kelvin-cli` shows its progress).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Moves every key still at the source, page by page, through the target's log;
/// records its running figures in `f` as it goes.
async fn drain<C: Cluster>(
    c: &mut C,
    m: &MigrationSpec,
    f: &mut Figures,
) -> Result<(u64, u64), String> {
    let id = m.id.to_string();
    let first = m.slots.first().map_or(0, |r| r.0);
    let (mut moved, mut bytes, mut seen) = (0u64, 0u64, 0u64);
    let began = tokio::time::Instant::now();
    let mut shown = began;
    let mut writing: Option<tokio::task::JoinHandle<Written<C>>> = None;
    for db in 0..crate::store::DATABASES {
        let db_text = db.to_string();
        let (mut slot, mut cursor) = (u64::from(first), 0u64);
        while slot < kelvin_protocol::SLOT_COUNT as u64 {
            let page_keys = page_keys(c.drain_rate(), bytes, seen);
            let page = c
                .on_group(
                    m.source,
                    args(&[
                        "KELVIN.MIGRATE-SCAN",
                        &id,
                        &db_text,
                        &slot.to_string(),
                        &cursor.to_string(),
                        &page_keys.to_string(),
                    ]),
                )
                .await;
            // Owned once: the keys and payloads of the page are slices of it, not copies.
            let page = Bytes::from(page);
            if page.starts_with(b"-ERR slot") {
                // The source finished already: nothing is left there.
                return Ok((moved, bytes));
            }
            let (next_slot, next_cursor, entries) = scan_page(&page)
                .ok_or_else(|| format!("group {}: drain: {}", m.source, text(&page)))?;
            seen += entries.len() as u64;
            if !entries.is_empty() {
                bytes += entries
                    .iter()
                    .map(|(k, _, p)| (k.len() + p.len()) as u64)
                    .sum::<u64>();
                let writes = crate::migrate::moves::requests(m.id, db, entries);
                // The write of this page goes on while the next page is read.
                let spare = match writing.take() {
                    Some(w) => {
                        let (w, written) = w.await.map_err(|e| e.to_string())?;
                        match written? {
                            Some(n) => moved += n,
                            None => return Ok((moved, bytes)),
                        }
                        boundary("migrate-mid-drain").await;
                        w
                    }
                    None => c.fork(),
                };
                writing = Some(tokio::spawn(write_page(spare, m.target, writes)));
            }
            (slot, cursor) = (next_slot, next_cursor);
            if shown.elapsed() >= PROGRESS_EVERY {
                shown = tokio::time::Instant::now();
                (f.drained_keys, f.drained_bytes) = (moved, bytes);
                f.drain_ms = began.elapsed().as_millis() as u64;
                c.record(f);
            }
            // Throttled: no faster than the rate set now, read again every tick while
            // waiting (it may be raised or lifted meanwhile).
            loop {
                let rate = c.drain_rate();
                if rate == 0 {
                    break;
                }
                let due = began + Duration::from_secs_f64(bytes as f64 / rate as f64);
                let now = tokio::time::Instant::now();
                if now >= due {
                    break;
                }
                tokio::time::sleep((due - now).min(DRIVER_TICK)).await;
            }
        }
    }
    if let Some(w) = writing.take() {
        let (_, written) = w.await.map_err(|e| e.to_string())?;
        moved += written?.unwrap_or(0);
    }
    tracing::info!(migration = m.id, keys = moved, bytes, "drained");
    Ok((moved, bytes))
}

/// Keys per drain page: [`DRAIN_PAGE_KEYS`], or fewer at the mean size of the keys seen
/// so far (1 KiB before any): about [`DRAIN_PAGE_BYTES`], and when the drain is throttled to
/// `rate` bytes/s, about a tenth of a second's worth, so that the pace holds page by page.
fn page_keys(rate: u64, bytes: u64, seen: u64) -> u64 {
    let limit = DRAIN_PAGE_KEYS as u64;
    let mean = bytes.checked_div(seen).unwrap_or(1024).max(1);
    let by_size = DRAIN_PAGE_BYTES as u64 / mean;
    let by_rate = match rate {
        0 => u64::MAX,
        rate => rate / 10 / mean,
    };
    by_size.min(by_rate).clamp(1, limit)
}

/// The cluster handle back, and how many keys a page wrote (`None`: the target had
/// finished already).
type Written<C> = (C, Result<Option<u64>, String>);

/// Writes one drained page at the target: how many keys landed, `None` if the target
/// finished the migration already. Hands the cluster handle back for the next page.
async fn write_page<C: Cluster>(mut c: C, target: u64, writes: Vec<Vec<Bytes>>) -> Written<C> {
    let mut written = 0;
    for write in writes {
        let reply = c.on_group(target, write).await;
        if reply.starts_with(b"-ERR key of slot") {
            return (c, Ok(None));
        }
        match text(&reply)
            .strip_prefix(':')
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => written += n,
            None => return (c, Err(format!("group {target}: drain: {}", text(&reply)))),
        }
    }
    (c, Ok(Some(written)))
}

/// `KELVIN.MIGRATE-PLAN` of `slots` with `rules`; `critical`: the plan before the
/// handover (critical keys only, the rest estimated).
pub(super) fn plan_request(
    id: u64,
    rules: &str,
    slots: &[(u16, u16)],
    critical: bool,
) -> Vec<Bytes> {
    let mut argv = vec![
        Bytes::from_static(b"KELVIN.MIGRATE-PLAN"),
        Bytes::from(id.to_string()),
        Bytes::from(rules.to_string()),
        Bytes::from(ranges_text(slots)),
    ];
    if critical {
        argv.push(Bytes::from_static(b"CRITICAL"));
    }
    argv
}

/// Ascending slots as ranges of consecutive ones.
pub(super) fn runs(slots: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(s) => last.1 = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Pulls `keys` ((db, key), in order) from the source and writes them at the target,
/// in batches; returns how many were written (a key settled at the target meanwhile, or
/// absent, is not).
pub(super) async fn move_keys<C: Cluster>(
    c: &mut C,
    m: &MigrationSpec,
    keys: &[(usize, Bytes)],
) -> Result<u64, String> {
    let id = m.id.to_string();
    let mut moved = 0;
    for chunk in keys.chunks(PUSH_BATCH) {
        let mut dbs: Vec<usize> = chunk.iter().map(|k| k.0).collect();
        dbs.sort_unstable();
        dbs.dedup();
        for db in dbs {
            let db_text = db.to_string();
            let names: Vec<Bytes> = chunk
                .iter()
                .filter(|k| k.0 == db)
                .map(|k| k.1.clone())
                .collect();
            let mut pull = args(&["KELVIN.MIGRATE-PULL", &id, &db_text]);
            pull.extend(names.iter().cloned());
            let reply = c.on_group(m.source, pull).await;
            let values = pull_reply(&reply)
                .filter(|v| v.len() == names.len())
                .ok_or_else(|| format!("group {}: pull: {}", m.source, text(&reply)))?;
            let keys = names.into_iter().zip(values).map(|(key, value)| {
                let (expire_at, payload) = value.unwrap_or((0, Bytes::new()));
                (key, expire_at, payload)
            });
            for write in crate::migrate::moves::requests(m.id, db, keys) {
                let reply = c.on_group(m.target, write).await;
                moved += text(&reply)
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| format!("group {}: push: {}", m.target, text(&reply)))?;
            }
        }
    }
    Ok(moved)
}

/// Both sides finish, then the migrate line goes.
async fn finish<C: Cluster>(c: &mut C, m: &MigrationSpec) -> Result<(), String> {
    let id = m.id.to_string();
    for group in [m.target, m.source] {
        let reply = c
            .on_group(group, args(&["KELVIN.MIGRATE", "FINISH", &id]))
            .await;
        if !reply.starts_with(b"+OK") && !reply.starts_with(b"-ERR no migration") {
            return Err(format!("group {group}: finish: {}", text(&reply)));
        }
        if group == m.target {
            boundary("migrate-after-finish-target").await;
        }
    }
    boundary("migrate-after-finish").await;
    change_topology(c, |t| {
        let before = t.migrations.len();
        t.migrations.retain(|x| x.id != m.id);
        t.migrations.len() != before
    })
    .await?;
    tracing::info!(migration = m.id, "migration finished");
    Ok(())
}

/// Applies `change` to the topology the meta group holds and has the meta leader
/// propose it (a compare-and-set on the epoch), until it is applied or `change` finds
/// nothing to do.
async fn change_topology<C: Cluster>(
    c: &mut C,
    mut change: impl FnMut(&mut Membership) -> bool,
) -> Result<(), String> {
    for _ in 0..10 {
        let current = c.topology().ok_or("no topology")?;
        let mut new = current.clone();
        if !change(&mut new) {
            return Ok(());
        }
        new.epoch = current.epoch + 1;
        new.validate()?;
        current.check_transition(&new)?;
        let Some(leader) = c.meta_leader() else {
            tokio::time::sleep(DRIVER_BACKOFF).await;
            continue;
        };
        let argv = vec![
            Bytes::from_static(b"CLUSTER"),
            Bytes::from_static(b"KELVIN-TOPOLOGY"),
            Bytes::from_static(b"SET"),
            Bytes::from(current.epoch.to_string()),
            Bytes::from(new.render()),
        ];
        match c.on_member(leader, argv).await {
            Ok(r) if r.starts_with(b"+OK") => {}
            Ok(r) => {
                tracing::debug!(reply = %text(&r), "topology change refused");
                tokio::time::sleep(DRIVER_TICK).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(cause = %e, "meta leader unreachable");
                tokio::time::sleep(DRIVER_BACKOFF).await;
                continue;
            }
        }
        // Proposed: wait until this node's meta replica has applied it (or another).
        let deadline = tokio::time::Instant::now() + TOPOLOGY_WAIT;
        while tokio::time::Instant::now() < deadline {
            if c.topology().is_some_and(|t| t.epoch > current.epoch) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let current = c.topology().ok_or("no topology")?;
    match change(&mut current.clone()) {
        false => Ok(()),
        true => Err("the topology change was not applied".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_runs() {
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[65535]), vec![(65535, 65535)]);
    }

    #[test]
    fn throttled_pages_hold_a_tenth_of_a_second() {
        // Unthrottled: a page's bytes at the mean size seen (1 KiB before any).
        let page = DRAIN_PAGE_BYTES as u64;
        assert_eq!(page_keys(0, 0, 0), page / 1024);
        assert_eq!(page_keys(0, 100, 10), DRAIN_PAGE_KEYS as u64);
        assert_eq!(page_keys(0, 1 << 20, 8192), page / 128);
        assert_eq!(page_keys(1 << 20, 0, 0), page / 1024);
        assert_eq!(page_keys(100_000, 0, 0), 9);
        assert_eq!(page_keys(20_000, 40_000, 1000), 50);
        assert_eq!(page_keys(100, 1 << 20, 10), 1);
        assert_eq!(page_keys(u64::MAX, 1, 1), DRAIN_PAGE_KEYS as u64);
    }
}
