//! The `reshard` fault on the cluster: slot ranges that hold the workers' keys move from
//! a group to another with `kelvin-cli cluster reshard --slot-ranges` (the target an
//! existing group, or a new one made on a node that leads none), a companion fault hits
//! the source's, the target's or the meta group's leader meanwhile (at a random moment,
//! or while the target's leader, which runs the phase driver, holds at a phase
//! boundary's fail point), and at the end the slots go back (a new group, emptied, is
//! removed from the topology). Each move's end heals, releases the fail points and waits
//! until every node's topology lists no migration: every migration finished or rolled
//! back; one still there after [`SETTLE_WAIT`] fails the run.
//!
//! The choices are [`crate::reshard`]'s; this is their execution.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kelvin_client::members::{Admin, Topology};
use kelvin_client::reshard::{ranges, ranges_text};
use rand::seq::SliceRandom;
use rand::Rng;

use super::{last_line, node_id_at, Nemesis, Started, Undo};
use crate::cluster::Node;
use crate::reshard::{
    choose_ranges, describe_migrations, draw_companion, key_slots, keys_in, observe, owned_within,
    Act, Companion, Role, When,
};
use crate::workload::generation;

/// How long the end of a move waits for every migration to finish or roll back (a
/// planned one the source never answers is rejected after the server's 30 s).
pub const SETTLE_WAIT: Duration = Duration::from_secs(90);
/// How long a companion waits for the driver to reach its boundary.
const BOUNDARY_WAIT: Duration = Duration::from_secs(15);
/// How long the way back runs under its companion before the end heals it.
const BACK_TIME: Duration = Duration::from_secs(3);
/// How long a driver holding at a boundary stays there once the companion struck.
const HOLD_AFTER_STRIKE: Duration = Duration::from_millis(300);
/// Key generations (from the current one) whose keys' slots a move takes.
const GENERATIONS_AHEAD: u64 = 3;

/// How long a move's end waits for its `kelvin-cli cluster reshard` to return (it gives
/// up on its own after a minute without a handover, or of a step of a new group).
const CLI_WAIT: Duration = Duration::from_secs(180);

/// What a `kelvin-cli cluster reshard` said in the end: its last `[OK]` line or line with `[ERR]`
/// (without the advice after a `;`), or else its last line.
fn outcome_line(out: &str) -> String {
    let lines = || out.lines().rev().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.starts_with("[OK]") || l.contains("[ERR]"))
        .or_else(|| lines().next())
        .and_then(|l| l.split(';').next())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A `reshard` fault under way: its first move, and what the way back needs.
#[derive(Debug)]
pub struct Resharding {
    source: u64,
    want: Vec<(u16, u16)>,
    forward: Move,
    /// The companion of the way back, if it has it.
    back: Option<Companion>,
    /// The target was made for this move (removed once emptied).
    new_group: bool,
    /// The groups before it.
    groups_before: Vec<u64>,
}

/// One `kelvin-cli cluster reshard` running.
#[derive(Debug)]
struct Move {
    cli: JoinHandle<anyhow::Result<String>>,
    /// Set once a topology showed the move (its line, or a slot's new owner).
    seen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    watcher: JoinHandle<()>,
    /// Where a fail point was set: (node, point).
    armed: Vec<(Node, &'static str)>,
    /// What the companion did.
    note: String,
}

impl Nemesis {
    /// Starts a `reshard` fault: picks a source group, a target node, slot ranges around
    /// the workers' keys in the source, a companion fault and which of the two moves it
    /// goes with; announces the keys to the workers and starts the first move.
    pub(super) fn reshard(&self, rng: &mut impl Rng) -> anyhow::Result<Started> {
        // Leftovers would make the command refuse.
        self.settle()?;
        let t = self.cluster.topology()?;
        let leaders = self.leaders();
        let with_slots: Vec<(u64, Node)> = leaders
            .iter()
            .filter(|(g, _)| t.groups.iter().any(|x| x.0 == *g as u64 && x.1 != "-"))
            .map(|(g, n)| (*g as u64, n.clone()))
            .collect();
        let Some((source, source_leader)) = with_slots.choose(rng).cloned() else {
            return Ok(Started::new(
                "no group with slots and a leader",
                Undo::Nothing,
                false,
            ));
        };
        let members = self
            .cluster
            .nodes
            .iter()
            .filter(|n| !self.cluster.is_removed(n))
            .count();
        // At most one group more than nodes (the new one goes at the end).
        let new = if t.groups.len() <= members && rng.gen_bool(0.5) {
            self.free_node(rng, &source_leader)
        } else {
            None
        };
        let (to, new_group) = match new {
            Some(n) => (n, true),
            None => match leaders
                .iter()
                .filter(|(_, n)| *n != source_leader)
                .map(|(_, n)| n.clone())
                .collect::<Vec<_>>()
                .choose(rng)
            {
                Some(n) => (n.clone(), false),
                None => return Ok(Started::new("no target leader", Undo::Nothing, false)),
            },
        };
        let owned = t
            .groups
            .iter()
            .find(|g| g.0 == source)
            .map(|g| ranges(&g.1))
            .unwrap_or_default();
        let gen = generation(self.began.elapsed());
        let keys = key_slots(gen..=gen + GENERATIONS_AHEAD);
        let want = choose_ranges(rng, &owned, &keys);
        let hot = keys_in(&keys, &want);
        let hot_count = hot.len();
        self.hot.set(hot);
        let filler = self.fill(&want);
        let companion = draw_companion(rng);
        let (first, back) = match rng.gen_bool(0.5) {
            true => (companion, None),
            false => (None, companion),
        };
        let forward = self.start_move(&want, source, &source_leader, &to, first);
        let detail = format!(
            "{} ({hot_count} keys, {filler} filler) of group {source} -> {} {}: {}",
            crate::reshard::summary(&want),
            if new_group {
                "a new group on"
            } else {
                "the group of"
            },
            to.name,
            forward.note
        );
        Ok(Started::new(
            detail,
            Undo::Reshard(Box::new(Resharding {
                source,
                want,
                forward,
                back,
                new_group,
                groups_before: t.groups.iter().map(|g| g.0).collect(),
            })),
            true,
        ))
    }

    /// The end of a `reshard` fault: the first move settled, the slots moved back (with
    /// the way back's companion), a new group emptied removed. True if the first move
    /// showed in the topology; what happened, for the fault's detail.
    pub(super) fn end_reshard(&self, r: Resharding) -> anyhow::Result<(bool, String)> {
        let mut notes = Vec::new();
        let (shown, out) = self.finish_move(r.forward)?;
        let t = self.settled_topology()?;
        let seen = observe(&t, &r.want);
        let target = seen.owners.keys().copied().find(|&g| g != r.source);
        let shown = shown || target.is_some();
        notes.push(format!(
            "{} ({out})",
            match target {
                Some(g) => format!("moved to group {g}"),
                None => "not moved".to_string(),
            }
        ));
        if let Some(target) = target {
            let back = owned_within(&t, target, &r.want);
            let leaders = self.leaders();
            let at = |g: u64| {
                leaders
                    .iter()
                    .find(|l| l.0 == g as i64)
                    .map(|l| l.1.clone())
            };
            // Back through the source's leader, or if that node leads the target too (the
            // command would pick the target), through another group's leader that does not.
            let leads_target = |n: &Node| leaders.iter().any(|l| l.0 == target as i64 && l.1 == *n);
            let back_to = at(r.source).filter(|n| !leads_target(n)).or_else(|| {
                leaders
                    .iter()
                    .find(|l| l.0 != target as i64 && !leads_target(&l.1))
                    .map(|l| l.1.clone())
            });
            match (back_to, at(target)) {
                (Some(to), Some(from)) => {
                    let mv = self.start_move(&back, target, &from, &to, r.back);
                    let note = mv.note.clone();
                    std::thread::sleep(BACK_TIME);
                    let (_, out) = self.finish_move(mv)?;
                    let t = self.settled_topology()?;
                    let now = observe(&t, &back);
                    notes.push(format!(
                        "back via {} ({note}): {} ({out})",
                        to.name,
                        match now.owners.keys().find(|&&g| g != target) {
                            Some(g) => format!("moved to group {g}"),
                            None => "not moved".into(),
                        }
                    ));
                }
                _ => notes.push(format!(
                    "back: group {} or {target} has no leader",
                    r.source
                )),
            }
        }
        if r.new_group {
            // The group made for the move, whether the slots came or not.
            let t = self.cluster.topology()?;
            for (g, ..) in t.groups.iter().filter(|g| !r.groups_before.contains(&g.0)) {
                notes.push(self.remove_empty_group(*g));
            }
        }
        self.hot.set(Vec::new());
        Ok((shown, notes.join("; ")))
    }

    /// Starts `kelvin-cli cluster reshard --slot-ranges` of `want` to the group `to`
    /// leads (made if it leads none), with its companion fault; returns once the
    /// companion struck (or was found not to).
    fn start_move(
        &self,
        want: &[(u16, u16)],
        source: u64,
        source_leader: &Node,
        to: &Node,
        companion: Option<Companion>,
    ) -> Move {
        let mut armed = Vec::new();
        // A boundary's fail point is set on the target's leader (it runs the driver)
        // before the move begins.
        let mut baseline = 0;
        if let Some(Companion {
            act,
            when: When::Boundary(point),
            ..
        }) = companion
        {
            baseline = self.hits(to, point).unwrap_or(0);
            let action = match act {
                Act::Abort => "1*return(abort)",
                _ => "return(hold)",
            };
            if self
                .cluster
                .call(to, &["KELVIN-FAILPOINT", point, action])
                .is_ok()
            {
                armed.push((to.clone(), point));
            }
        }
        let seen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (cluster, want, seen, stop) = (
                self.cluster.clone(),
                want.to_vec(),
                seen.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if cluster
                        .topology()
                        .is_ok_and(|t| observe(&t, &want).shows_move(source))
                    {
                        seen.store(true, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let args: Vec<String> = vec![
            "cluster".into(),
            "reshard".into(),
            self.seed(to).unwrap_or_else(|| to.client_addr()),
            "--slot-ranges".into(),
            ranges_text(&want.iter().flat_map(|&(a, b)| a..=b).collect::<Vec<_>>()),
            "--to".into(),
            to.client_addr(),
            "--yes".into(),
        ];
        let cli = {
            let cluster = self.cluster.clone();
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cluster.cli(&args)
            })
        };
        let note = match companion {
            None => "no companion fault".to_string(),
            Some(c) => self.strike(c, source_leader, to, baseline),
        };
        Move {
            cli,
            seen,
            stop,
            watcher,
            armed,
            note,
        }
    }

    /// The companion fault of a move whose driver runs on `driver`; what it did.
    fn strike(&self, c: Companion, source_leader: &Node, driver: &Node, baseline: u64) -> String {
        let victim = match c.role {
            Role::Source => Some(source_leader.clone()),
            Role::Target => Some(driver.clone()),
            Role::Meta => self.meta_leader(),
        };
        let Some(victim) = victim else {
            return format!("{c}: no meta leader known (not in effect)");
        };
        match c.when {
            When::After(ms) => std::thread::sleep(Duration::from_millis(ms)),
            When::Boundary(point) if c.act == Act::Abort => {
                // The driver's process ends there: seen as its container stopping.
                let deadline = Instant::now() + BOUNDARY_WAIT;
                while Instant::now() < deadline {
                    if !self.cluster.is_running(driver).unwrap_or(true) {
                        return format!("{c} ({}): ended there", driver.name);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = self
                    .cluster
                    .call(driver, &["KELVIN-FAILPOINT", point, "off"]);
                return format!(
                    "{c} ({}): boundary not reached (not in effect)",
                    driver.name
                );
            }
            When::Boundary(point) => {
                let deadline = Instant::now() + BOUNDARY_WAIT;
                while self.hits(driver, point).unwrap_or(0) <= baseline {
                    if Instant::now() >= deadline {
                        let _ = self
                            .cluster
                            .call(driver, &["KELVIN-FAILPOINT", point, "off"]);
                        return format!(
                            "{c} ({}): boundary not reached (not in effect)",
                            victim.name
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let others: Vec<Node> = self
            .cluster
            .nodes
            .iter()
            .filter(|n| **n != victim && !self.cluster.is_removed(n))
            .cloned()
            .collect();
        let done = match c.act {
            Act::Kill => self.kill(std::slice::from_ref(&victim)),
            Act::Pause => self
                .cluster
                .pause(&victim)
                .and_then(|_| self.cluster.is_paused(&victim)),
            Act::Isolate => self.cut(std::slice::from_ref(&victim), &others),
            Act::Abort => Ok(false),
        };
        // A held driver goes on under the fault (a killed one lost its fail points with
        // its process; a paused one is released at the end).
        let frozen = victim == *driver && matches!(c.act, Act::Kill | Act::Pause);
        if let (When::Boundary(point), false) = (c.when, frozen) {
            std::thread::sleep(HOLD_AFTER_STRIKE);
            let _ = self
                .cluster
                .call(driver, &["KELVIN-FAILPOINT", point, "off"]);
        }
        let what = match done {
            Ok(true) => "in effect".to_string(),
            Ok(false) => "not in effect".to_string(),
            Err(e) => format!("not in effect: {}", last_line(&e)),
        };
        format!("{c} ({}): {what}", victim.name)
    }

    /// The end of one move: every fault healed, fail points off, every migration
    /// finished or rolled back. Whether the move showed, and the command's last line.
    fn finish_move(&self, mv: Move) -> anyhow::Result<(bool, String)> {
        self.cluster.heal()?;
        for (n, point) in &mv.armed {
            // A node killed since has lost its fail points with its process.
            let _ = self.cluster.call(n, &["KELVIN-FAILPOINT", point, "off"]);
        }
        // The command first: it may not have written its lines yet (a new group still
        // getting its replicas), and the wait for them to go must not pass before.
        let deadline = Instant::now() + CLI_WAIT;
        while !mv.cli.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let finished = mv.cli.is_finished();
        let settled = self.settle();
        mv.stop.store(true, Ordering::Relaxed);
        let _ = mv.watcher.join();
        anyhow::ensure!(
            finished,
            "kelvin-cli cluster reshard did not return within {CLI_WAIT:?}"
        );
        settled?;
        let out = match mv.cli.join() {
            Ok(Ok(out)) => outcome_line(&out),
            Ok(Err(e)) => outcome_line(&format!("{e:#}")),
            Err(_) => "the command's thread panicked".into(),
        };
        Ok((mv.seen.load(Ordering::Relaxed), out))
    }

    /// Waits until every node in the cluster answers with the same topology and it lists
    /// no migration (a node just healed may still be catching up); an error naming the
    /// migrations left after [`SETTLE_WAIT`].
    fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let views = self.topologies();
            let agreed = views
                .iter()
                .all(|v| v.as_ref().ok() == views[0].as_ref().ok());
            match views.first() {
                Some(Ok(t)) if agreed && t.migrations.is_empty() => return Ok(()),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Some(Ok(t)) if !t.migrations.is_empty() => anyhow::bail!(
                    "migrations still in progress after {SETTLE_WAIT:?}: {}",
                    describe_migrations(t)
                ),
                _ => anyhow::bail!(
                    "the nodes' topologies did not agree within {SETTLE_WAIT:?}: {}",
                    views
                        .iter()
                        .map(|v| match v {
                            Ok(t) => format!("epoch {} [{}]", t.epoch, describe_migrations(t)),
                            Err(e) => last_line(e),
                        })
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            }
        }
    }

    /// The topology once settled (every node agrees).
    fn settled_topology(&self) -> anyhow::Result<Topology> {
        self.settle()?;
        self.cluster.topology()
    }

    /// Every member node's topology (the ones out of the cluster left out).
    fn topologies(&self) -> Vec<anyhow::Result<Topology>> {
        self.cluster
            .nodes
            .iter()
            .filter(|n| !self.cluster.is_removed(n))
            .map(|n| {
                self.cluster
                    .call(n, &["KELVIN-TOPOLOGY"])
                    .and_then(|text| Topology::parse(&text))
            })
            .collect()
    }

    /// A node that leads no group, other than `not`: one that already leads none, or one
    /// whose leaderships were all handed to other replicas.
    fn free_node(&self, rng: &mut impl Rng, not: &Node) -> Option<Node> {
        let leaders = self.leaders();
        let candidates: Vec<Node> = self
            .cluster
            .nodes
            .iter()
            .filter(|n| *n != not && !self.cluster.is_removed(n))
            .filter(|n| self.cluster.groups(n).is_some())
            .cloned()
            .collect();
        let idle: Vec<&Node> = candidates
            .iter()
            .filter(|n| !leaders.iter().any(|l| l.1 == **n))
            .collect();
        if let Some(n) = idle.choose(rng) {
            return Some((*n).clone());
        }
        let n = candidates.choose(rng)?.clone();
        let t = self.cluster.topology().ok()?;
        let me = node_id_at(&t, &n)?;
        for (g, _) in leaders.iter().filter(|l| l.1 == n) {
            let others: Vec<&String> = t
                .replicas(*g as u64)
                .into_iter()
                .flatten()
                .filter(|r| **r != me)
                .collect();
            let to = others.choose(rng)?;
            let _ = self
                .cluster
                .call(&n, &["KELVIN-TRANSFER", &g.to_string(), to]);
            if !self.stops_leading(&n, *g) {
                return None;
            }
        }
        Some(n)
    }

    /// Writes filler keys into slots of `want` ([`crate::reshard::FILLER_KEYS`] of
    /// [`crate::reshard::FILLER_BYTES`] each per slot, one `MSET` per slot, the same
    /// names each time); how many were written.
    fn fill(&self, want: &[(u16, u16)]) -> usize {
        use crate::reshard::{filler_slots, tag_for_slot, FILLER_BYTES, FILLER_KEYS};
        let Some(mut c) = self
            .cluster
            .nodes
            .iter()
            .filter(|n| !self.cluster.is_removed(n))
            .find_map(|n| crate::workload::connect(&n.client_addr()))
        else {
            return 0;
        };
        let value = "x".repeat(FILLER_BYTES);
        let mut written = 0;
        for slot in filler_slots(want) {
            let tag = tag_for_slot(slot);
            let mut cmd = redis::cmd("MSET");
            for i in 0..FILLER_KEYS {
                cmd.arg(format!("jf:{{{tag}}}:{i}")).arg(&value);
            }
            if cmd.query::<()>(&mut c).is_ok() {
                written += FILLER_KEYS;
            }
        }
        written
    }

    /// The node leading the meta group, as the first node that knows says.
    fn meta_leader(&self) -> Option<Node> {
        let t = self.cluster.topology().ok()?;
        for n in self
            .cluster
            .nodes
            .iter()
            .filter(|n| !self.cluster.is_removed(n))
        {
            let Ok(reply) = self.cluster.query(n, &["KELVIN-RAFT", "META"]) else {
                continue;
            };
            let pairs: Vec<(redis::Value, redis::Value)> = match reply {
                redis::Value::Map(m) => m,
                redis::Value::Array(a) => a
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect(),
                _ => continue,
            };
            let leader = pairs.iter().find_map(|(k, v)| match (k, v) {
                (redis::Value::BulkString(k), redis::Value::BulkString(v)) if k == b"leader" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            });
            if let Some(node) = leader.and_then(|id| self.cluster.node_of(&t, &id)) {
                return Some(node);
            }
        }
        None
    }

    /// `KELVIN-FAILPOINT-HITS point` on `node`.
    fn hits(&self, node: &Node, point: &str) -> Option<u64> {
        self.cluster
            .call(node, &["KELVIN-FAILPOINT-HITS", point])
            .ok()?
            .parse()
            .ok()
    }

    /// Takes group `g` out of the topology if it holds no slot and no migration names it
    /// (its replicas stop); what happened.
    fn remove_empty_group(&self, g: u64) -> String {
        let Some(seed) = self.cluster.nodes.iter().find_map(|n| self.seed(n)) else {
            return format!("group {g} kept: no seed");
        };
        let admin = Admin { seed, pass: None };
        let r = admin.change_topology(&format!("group {g} (no slots left) removed"), |t| {
            let empty = t.groups.iter().any(|x| x.0 == g && ranges(&x.1).is_empty());
            let busy = t.migrations.iter().any(|m| m.1 == g || m.2 == g);
            if empty && !busy {
                t.groups.retain(|x| x.0 != g);
            }
            Ok(())
        });
        match r {
            Ok(t) if t.groups.iter().all(|x| x.0 != g) => format!("group {g} removed"),
            Ok(_) => format!("group {g} kept (not empty)"),
            Err(e) => format!("group {g} kept: {}", last_line(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::outcome_line;

    #[test]
    fn the_outcome_is_the_last_ok_or_err_line() {
        let ok = ">>> Migration 1: slots 5 of group 0 -> group 1 (a)\n[OK] Topology epoch 7: 1 slots to group 1\n[OK] Handover: group 1 owns 1 more slots after 5 ms; cold keys fault in\n";
        assert_eq!(
            outcome_line(ok),
            "[OK] Handover: group 1 owns 1 more slots after 5 ms"
        );
        let err = "\"kelvin-cli\" failed (exit status: 1): >>> x\nError: [ERR] No slots to move to group 0\n\nStack backtrace:\n   0: foo\n  22: _start\n";
        assert_eq!(
            outcome_line(err),
            "Error: [ERR] No slots to move to group 0"
        );
        assert_eq!(outcome_line("just this\n\n"), "just this");
        assert_eq!(outcome_line(""), "");
    }
}
