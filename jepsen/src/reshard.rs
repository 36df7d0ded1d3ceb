//! What the `reshard` fault decides without the cluster: which slot ranges move (ranges
//! around the slots of the keys the workers use now and soon, so their reads, writes,
//! deletes, partial updates, expiries and transactions hit moving keys), which keys
//! those are (announced to the workers through [`Hot`], which bias their choice of key
//! towards them), how the companion fault is drawn, and what the topology says of a move
//! (its `migrate` line, the slots' owners).
//!
//! How it fits: [`crate::nemesis`] runs the fault (the `kelvin-cli cluster reshard
//! --slot-ranges` calls, the kills, pauses and partitions, the fail points); this module
//! is its arithmetic, unit-tested without docker.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kelvin_client::members::Topology;
use kelvin_client::reshard::{ranges, ranges_text};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::workload::{key_name, KEYS};

/// The workers' key prefixes: register, counter, list, appended string, session.
pub const PREFIXES: [&str; 6] = ["r", "c", "l", "a", "s", crate::bank::PREFIX];

/// Most slots added on each side of a key's slot when a range is drawn around it.
pub const PAD: u16 = 24;

/// Key slots per prefix (and generation) a move takes at most.
const KEYS_PER_PREFIX: usize = 2;

/// The phase boundaries of a migration's driver (the server's
/// `failpoint::MIGRATE_PHASES`, in the order a migration meets them).
pub const PHASES: [&str; 9] = [
    "migrate-after-plan",
    "migrate-after-import",
    "migrate-after-seal",
    "migrate-after-proof",
    "migrate-after-handover",
    "migrate-mid-drain",
    "migrate-after-drain",
    "migrate-after-finish-target",
    "migrate-after-finish",
];

/// Filler keys per slot a move writes into its ranges first, and the bytes of each:
/// enough for several drain pages (64 KiB each), so that the drain's boundaries are met
/// and the drain lasts a while under the faults.
pub const FILLER_KEYS: usize = 40;
pub const FILLER_BYTES: usize = 1000;
/// Slots of a move that get filler keys.
pub const FILLER_SLOTS: usize = 8;

/// A hash tag whose keys fall in `slot` (`{tag}`: the slot is the tag's).
pub fn tag_for_slot(slot: u16) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|t| kelvin_protocol::key_slot(t.as_bytes()) == slot)
        .unwrap_or_default()
}

/// Up to [`FILLER_SLOTS`] slots of `ranges`, spread over them (each range's first,
/// then its last, while there is room).
pub fn filler_slots(ranges: &[(u16, u16)]) -> Vec<u16> {
    let mut out: Vec<u16> = ranges.iter().map(|r| r.0).collect();
    out.extend(ranges.iter().filter(|r| r.1 != r.0).map(|r| r.1));
    out.truncate(FILLER_SLOTS);
    out
}

/// Every worker key of generations `gens` with its slot.
pub fn key_slots(gens: std::ops::RangeInclusive<u64>) -> Vec<(&'static str, u64, usize, u16)> {
    let mut out = Vec::new();
    for gen in gens {
        for prefix in PREFIXES {
            for k in 0..KEYS {
                let slot = kelvin_protocol::key_slot(key_name(prefix, k, gen).as_bytes());
                out.push((prefix, gen, k, slot));
            }
        }
    }
    out
}

/// Sorted, overlapping or adjacent ranges joined.
pub fn merge(mut r: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    r.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some((_, e)) if u32::from(a) <= u32::from(*e) + 1 => *e = (*e).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The ranges of `owned` (a group's slot ranges) to move: around up to
/// [`KEYS_PER_PREFIX`] key slots of each prefix per generation that `owned` holds (a
/// range of up to [`PAD`] slots either side, within the owned range that holds the
/// key), or, if it holds none, one random range of it. Empty only if `owned` is.
pub fn choose_ranges(
    rng: &mut impl Rng,
    owned: &[(u16, u16)],
    keys: &[(&'static str, u64, usize, u16)],
) -> Vec<(u16, u16)> {
    let within = |s: u16| owned.iter().copied().find(|&(a, b)| (a..=b).contains(&s));
    let mut picked: BTreeMap<(&str, u64), Vec<u16>> = BTreeMap::new();
    for &(prefix, gen, _, slot) in keys {
        if within(slot).is_some() {
            picked.entry((prefix, gen)).or_default().push(slot);
        }
    }
    let mut out = Vec::new();
    for slots in picked.values_mut() {
        slots.shuffle(rng);
        for &s in slots.iter().take(KEYS_PER_PREFIX) {
            let Some((a, b)) = within(s) else { continue };
            let lo = s.saturating_sub(rng.gen_range(0..=PAD)).max(a);
            let hi = s.saturating_add(rng.gen_range(0..=PAD)).min(b);
            out.push((lo, hi));
        }
    }
    if out.is_empty() {
        if let Some(&(a, b)) = owned.choose(rng) {
            let lo = rng.gen_range(a..=b);
            out.push((lo, lo.saturating_add(rng.gen_range(0..=PAD)).min(b)));
        }
    }
    merge(out)
}

/// `N slots in R ranges (a-b,c-d,...)`, the first three ranges shown.
pub fn summary(ranges: &[(u16, u16)]) -> String {
    let slots: usize = ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
    let shown: Vec<String> = ranges
        .iter()
        .take(3)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let more = if ranges.len() > 3 { ",..." } else { "" };
    format!(
        "{slots} slots in {} ranges ({}{more})",
        ranges.len(),
        shown.join(",")
    )
}

/// The keys of `keys` whose slots are in `ranges`.
pub fn keys_in(
    keys: &[(&'static str, u64, usize, u16)],
    ranges: &[(u16, u16)],
) -> Vec<(&'static str, u64, usize)> {
    keys.iter()
        .filter(|k| ranges.iter().any(|&(a, b)| (a..=b).contains(&k.3)))
        .map(|k| (k.0, k.1, k.2))
        .collect()
}

/// The slots of `ranges` that `group` owns in `t`, as ranges.
pub fn owned_within(t: &Topology, group: u64, want: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let slots: Vec<u16> = t
        .groups
        .iter()
        .filter(|g| g.0 == group)
        .flat_map(|g| kelvin_client::reshard::slots_within(&g.1, want))
        .collect();
    ranges(&ranges_text(&slots))
}

/// What a topology shows of a move of `want`: the `migrate` lines that move any of its
/// slots (id, source, target, phase), and how many of its slots each group owns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub lines: Vec<(u64, u64, u64, String)>,
    pub owners: BTreeMap<u64, usize>,
}

impl Seen {
    /// Whether the move shows: a line of it, or a slot owned by another group than
    /// `source`.
    pub fn shows_move(&self, source: u64) -> bool {
        !self.lines.is_empty() || self.owners.keys().any(|&g| g != source)
    }
}

pub fn observe(t: &Topology, want: &[(u16, u16)]) -> Seen {
    let hits = |slots: &str| {
        ranges(slots)
            .iter()
            .any(|&(a, b)| want.iter().any(|&(c, d)| a <= d && c <= b))
    };
    let mut seen = Seen::default();
    for (id, source, target, slots, phase) in &t.migrations {
        if hits(slots) {
            seen.lines.push((*id, *source, *target, phase.clone()));
        }
    }
    for (g, slots, _) in &t.groups {
        let n = kelvin_client::reshard::slots_within(slots, want).len();
        if n > 0 {
            seen.owners.insert(*g, n);
        }
    }
    seen
}

/// The topology's migrations, one `id source->target slots phase` each.
pub fn describe_migrations(t: &Topology) -> String {
    t.migrations
        .iter()
        .map(|(id, s, g, slots, phase)| format!("migration {id} {s}->{g} {slots} {phase}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whom a companion fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The leader of the group the slots leave.
    Source,
    /// The leader of the group they go to, which runs the migration's phase driver.
    Target,
    /// The leader of the meta group, which applies the topology changes.
    Meta,
}

/// What a companion fault does to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Kill,
    Pause,
    /// Cut from every other node.
    Isolate,
    /// The driver's process ends at a phase boundary (`return(abort)`).
    Abort,
}

/// When a companion fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This many ms after the move was asked for.
    After(u64),
    /// While the driver holds at this boundary (`return(hold)`); released just after.
    Boundary(&'static str),
}

/// A fault that goes with a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Companion {
    pub role: Role,
    pub act: Act,
    pub when: When,
}

impl std::fmt::Display for Companion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Source => "source leader",
            Role::Target => "target leader",
            Role::Meta => "meta leader",
        };
        let act = match self.act {
            Act::Kill => "kill",
            Act::Pause => "pause",
            Act::Isolate => "isolate",
            Act::Abort => "abort",
        };
        match self.when {
            When::After(ms) => write!(f, "{act} {role} after {ms} ms"),
            When::Boundary(b) => write!(f, "{act} {role} at {b}"),
        }
    }
}

/// A companion fault at random: none a fifth of the time; else a kill, pause or
/// isolation of one of the three leaders at a random moment or while the driver holds
/// at a random boundary, or the driver's own process ending at a boundary.
pub fn draw_companion(rng: &mut impl Rng) -> Option<Companion> {
    if rng.gen_ratio(1, 5) {
        return None;
    }
    let boundary = *PHASES.choose(rng)?;
    if rng.gen_ratio(1, 5) {
        return Some(Companion {
            role: Role::Target,
            act: Act::Abort,
            when: When::Boundary(boundary),
        });
    }
    let role = *[Role::Source, Role::Target, Role::Meta].choose(rng)?;
    let act = *[Act::Kill, Act::Pause, Act::Isolate].choose(rng)?;
    let when = match rng.gen_bool(0.5) {
        true => When::After(rng.gen_range(0..2000)),
        false => When::Boundary(boundary),
    };
    Some(Companion { role, act, when })
}

/// The keys in moving slots, for the workers to favour: (prefix, generation, key index).
#[derive(Debug, Default)]
pub struct Hot {
    keys: Mutex<Vec<(&'static str, u64, usize)>>,
}

impl Hot {
    pub fn set(&self, keys: Vec<(&'static str, u64, usize)>) {
        if let Ok(mut k) = self.keys.lock() {
            *k = keys;
        }
    }

    /// A hot key index of `prefix` in generation `gen` (the `r`-th of them, modulo), if
    /// there is one.
    pub fn pick(&self, prefix: &str, gen: u64, r: usize) -> Option<usize> {
        let keys = self.keys.lock().ok()?;
        let mine: Vec<usize> = keys
            .iter()
            .filter(|k| k.0 == prefix && k.1 == gen)
            .map(|k| k.2)
            .collect();
        (!mine.is_empty()).then(|| mine[r % mine.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn topology(text: &str) -> Topology {
        Topology::parse(text).unwrap()
    }

    #[test]
    fn ranges_hold_key_slots_of_every_prefix_and_stay_in_the_owned_ranges() {
        let keys = key_slots(3..=5);
        assert_eq!(keys.len(), 3 * PREFIXES.len() * KEYS);
        let owned = vec![(0u16, 5460u16), (12000, 13000)];
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let r = choose_ranges(&mut rng, &owned, &keys);
            assert!(!r.is_empty());
            // Sorted, disjoint, not adjacent, each inside one owned range.
            for w in r.windows(2) {
                assert!(w[0].1 + 1 < w[1].0, "{r:?}");
            }
            for &(a, b) in &r {
                assert!(a <= b);
                assert!(owned.iter().any(|&(c, d)| c <= a && b <= d), "{r:?}");
            }
            // Every prefix with a key in the owned ranges has one in the moving ones.
            let moving = keys_in(&keys, &r);
            for prefix in PREFIXES {
                let has = keys_in(&keys, &owned).iter().any(|k| k.0 == prefix);
                assert_eq!(moving.iter().any(|k| k.0 == prefix), has, "{prefix} {r:?}");
            }
        }
        // No key there: one random range of what it owns.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let r = choose_ranges(&mut rng, &[(100, 110)], &[]);
        assert_eq!(r.len(), 1);
        assert!(100 <= r[0].0 && r[0].1 <= 110);
        assert!(choose_ranges(&mut rng, &[], &keys).is_empty());
    }

    #[test]
    fn filler_keys_land_in_their_slots() {
        for slot in [0u16, 1, 777, 16383] {
            let tag = tag_for_slot(slot);
            assert_eq!(
                kelvin_protocol::key_slot(format!("jf:{{{tag}}}:3").as_bytes()),
                slot
            );
        }
        assert_eq!(filler_slots(&[(5, 9), (20, 20)]), vec![5, 20, 9]);
        let many: Vec<(u16, u16)> = (0..20).map(|i| (i * 10, i * 10 + 1)).collect();
        assert_eq!(filler_slots(&many).len(), FILLER_SLOTS);
    }

    #[test]
    fn merge_joins_overlapping_and_adjacent_ranges() {
        assert_eq!(
            merge(vec![
                (10, 20),
                (0, 3),
                (4, 5),
                (15, 30),
                (40, 40),
                (16383, 16383)
            ]),
            vec![(0, 5), (10, 30), (40, 40), (16383, 16383)]
        );
        assert!(merge(Vec::new()).is_empty());
        assert_eq!(summary(&[(1, 3), (7, 7)]), "4 slots in 2 ranges (1-3,7)");
        assert_eq!(
            summary(&[(1, 1), (3, 3), (5, 5), (7, 8)]),
            "5 slots in 4 ranges (1,3,5,...)"
        );
    }

    #[test]
    fn the_topology_shows_a_move_by_its_line_or_its_new_owner() {
        let base = "epoch 5\nnode a 10.0.0.1 6379 16379 26379\n";
        let want = [(100u16, 110u16), (200, 200)];
        // Before: the source owns them, no line.
        let t = topology(&format!("{base}group 0 0-8000 a\ngroup 1 8001-16383 a\n"));
        let seen = observe(&t, &want);
        assert!(!seen.shows_move(0));
        assert_eq!(seen.owners, BTreeMap::from([(0, 12)]));
        // Planned: the line.
        let t = topology(&format!(
            "{base}group 0 0-8000 a\ngroup 1 8001-16383 a\ngroup 2 - a\nmigrate 7 0 2 100-110,200 planned\nmigrate 8 1 2 9000 planned\n"
        ));
        let seen = observe(&t, &want);
        assert_eq!(seen.lines, vec![(7, 0, 2, "planned".to_string())]);
        assert!(seen.shows_move(0));
        assert_eq!(
            describe_migrations(&t),
            "migration 7 0->2 100-110,200 planned, migration 8 1->2 9000 planned"
        );
        // Finished: the line gone, the target owns them.
        let t = topology(&format!(
            "{base}group 0 0-99,111-199,201-8000 a\ngroup 1 8001-16383 a\ngroup 2 100-110,200 a\n"
        ));
        let seen = observe(&t, &want);
        assert!(seen.lines.is_empty() && seen.shows_move(0));
        assert_eq!(seen.owners, BTreeMap::from([(2, 12)]));
        assert_eq!(
            owned_within(&t, 2, &[(0, 16383)]),
            vec![(100, 110), (200, 200)]
        );
        assert_eq!(
            owned_within(&t, 0, &[(105, 250)]),
            vec![(111, 199), (201, 250)]
        );
    }

    #[test]
    fn hot_keys_are_picked_by_prefix_and_generation() {
        let keys = key_slots(7..=7);
        let slot = keys.iter().find(|k| k.0 == "s" && k.2 == 4).unwrap().3;
        let hot = Hot::default();
        assert_eq!(hot.pick("s", 7, 0), None);
        hot.set(keys_in(&keys, &[(slot, slot)]));
        assert_eq!(hot.pick("s", 7, 3), Some(4));
        assert_eq!(hot.pick("s", 8, 3), None);
        hot.set(Vec::new());
        assert_eq!(hot.pick("s", 7, 3), None);
    }

    #[test]
    fn companions_cover_every_role_act_and_boundary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let drawn: Vec<Option<Companion>> = (0..2000).map(|_| draw_companion(&mut rng)).collect();
        assert!(drawn.iter().any(Option::is_none));
        let some: Vec<Companion> = drawn.into_iter().flatten().collect();
        for role in [Role::Source, Role::Target, Role::Meta] {
            for act in [Act::Kill, Act::Pause, Act::Isolate] {
                assert!(some.iter().any(|c| c.role == role && c.act == act));
            }
        }
        for b in PHASES {
            assert!(some
                .iter()
                .any(|c| c.when == When::Boundary(b) && c.act == Act::Abort));
            assert!(some
                .iter()
                .any(|c| c.when == When::Boundary(b) && c.act != Act::Abort));
        }
        // The driver's own process is the only one a boundary ends.
        assert!(some
            .iter()
            .filter(|c| c.act == Act::Abort)
            .all(|c| c.role == Role::Target && matches!(c.when, When::Boundary(_))));
        assert!(some.iter().any(|c| matches!(c.when, When::After(_))));
        let c = Companion {
            role: Role::Meta,
            act: Act::Pause,
            when: When::After(5),
        };
        assert_eq!(c.to_string(), "pause meta leader after 5 ms");
    }
}
