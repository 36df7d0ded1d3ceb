//! The transfer planner: which keys of a slot range move when.
//!
//! ```text
//! critical  moved before the handover (the operator's rules say so: auth:*, csrf:*)
//! eager     pushed right after it, hottest per byte first, within the eager budget
//! lazy      faulted in on first access, or moved by the background drain
//! skip      not moved: expired, or expiring within the threshold (it expires at the
//!           source; a fault-in of it finds nothing)
//! ```
//!
//! Rules come from a TOML file (`--migration-rules FILE`); the first rule whose glob
//! matches a key decides its class; keys no rule names are ranked by heat per byte
//! (the profiler's decayed counter over the key's size: a small hot session is worth
//! more than a big one) and taken as eager while the budget lasts; a key whose counter
//! has decayed to zero is never eager.
//!
//! ```toml
//! # the share of the range's bytes pushed eagerly (default 10)
//! eager_budget_percent = 10
//! # keys expiring within this many ms are not moved (default 2000)
//! skip_expiring_within_ms = 2000
//!
//! [[rule]]
//! pattern = "auth:*"
//! class = "critical"
//!
//! [[rule]]
//! pattern = "cache:*"
//! class = "lazy"
//! ```

use serde::Deserialize;

use crate::store::{Heat, Store};

/// How a key moves. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Critical,
    Eager,
    Lazy,
    Skip,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Critical, Class::Eager, Class::Lazy, Class::Skip];

    pub fn name(self) -> &'static str {
        match self {
            Class::Critical => "critical",
            Class::Eager => "eager",
            Class::Lazy => "lazy",
            Class::Skip => "skip",
        }
    }
}

/// The default share of a range's bytes pushed eagerly.
pub const DEFAULT_EAGER_PERCENT: u8 = 10;
/// The default: keys expiring within this are not moved.
pub const DEFAULT_SKIP_EXPIRING_MS: u64 = 2000;
/// Most rules a rules file may hold (each key is matched against them in order).
pub const MAX_RULES: usize = 256;

/// One rule: keys matching the glob `pattern` (Redis's KEYS syntax) get `class`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub pattern: String,
    pub class: Class,
}

/// The operator's rules and the planner's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default = "default_eager_percent")]
    pub eager_budget_percent: u8,
    #[serde(default = "default_skip_expiring")]
    pub skip_expiring_within_ms: u64,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

fn default_eager_percent() -> u8 {
    DEFAULT_EAGER_PERCENT
}

fn default_skip_expiring() -> u64 {
    DEFAULT_SKIP_EXPIRING_MS
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            eager_budget_percent: DEFAULT_EAGER_PERCENT,
            skip_expiring_within_ms: DEFAULT_SKIP_EXPIRING_MS,
            rules: Vec::new(),
        }
    }
}

impl Rules {
    /// Parses and checks a rules file's text; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let rules: Rules = toml::from_str(text).map_err(|e| format!("migration rules: {e}"))?;
        if rules.eager_budget_percent > 100 {
            return Err("migration rules: eager_budget_percent must be 0..=100".into());
        }
        if rules.rules.len() > MAX_RULES {
            return Err(format!("migration rules: at most {MAX_RULES} rules"));
        }
        Ok(rules)
    }

    /// Reads and parses `--migration-rules FILE`.
    pub fn load(path: &std::path::Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read migration rules {}: {e}", path.display()))?;
        Rules::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The rules as a rules file's text (what the phase driver sends the source).
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "eager_budget_percent = {}\nskip_expiring_within_ms = {}\n",
            self.eager_budget_percent, self.skip_expiring_within_ms
        );
        for r in &self.rules {
            let pattern: String = r
                .pattern
                .chars()
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c if c.is_control() => format!("\\u{:04X}", c as u32).chars().collect(),
                    c => vec![c],
                })
                .collect();
            s.push_str(&format!(
                "\n[[rule]]\npattern = \"{pattern}\"\nclass = \"{}\"\n",
                r.class.name()
            ));
        }
        s
    }

    /// The class the first matching rule gives `key`.
    pub fn class_of(&self, key: &[u8]) -> Option<Class> {
        self.rules
            .iter()
            .find(|r| kelvin_protocol::glob::glob_match(r.pattern.as_bytes(), key, false))
            .map(|r| r.class)
    }

    /// Whether a key expiring at `expire_at` (0: never) is gone or goes within
    /// `skip_expiring_within_ms` of `now_ms`: such a key is never moved.
    pub fn expiring(&self, expire_at: u64, now_ms: u64) -> bool {
        expire_at != 0 && expire_at <= now_ms.saturating_add(self.skip_expiring_within_ms)
    }
}

/// What the planner knows of one key.
#[derive(Debug, Clone)]
pub struct KeyFacts {
    pub db: usize,
    pub key: Vec<u8>,
    pub bytes: usize,
    /// Unix ms, 0 = none.
    pub expire_at: u64,
    pub heat: Heat,
}

/// Keys and bytes of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassTotal {
    pub keys: u64,
    pub bytes: u64,
}

/// A plan for a range: the keys to move before and right after the handover, in order,
/// and what each class holds (what the negotiation's summary carries).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub critical: Vec<(usize, Vec<u8>)>,
    /// Hottest per byte first.
    pub eager: Vec<(usize, Vec<u8>)>,
    /// Per class, in [`Class::ALL`] order.
    pub totals: [ClassTotal; 4],
    pub eager_budget_bytes: u64,
}

impl Plan {
    pub fn total(&self, class: Class) -> ClassTotal {
        self.totals[class as usize]
    }
}

/// Sorts the keys of a range into classes. A trait, so the learned model (a later issue)
/// can stand in for the heat rules.
pub trait Planner: Send + Sync {
    /// Plans `keys`; `others`: the range's keys not listed (those [`Planner::lists`]
    /// passed over), counted lazy and in the eager budget's base.
    fn plan_with(&self, keys: Vec<KeyFacts>, others: ClassTotal, now_ms: u64) -> Plan;

    /// Plans `keys`, every key of the range.
    fn plan(&self, keys: Vec<KeyFacts>, now_ms: u64) -> Plan {
        self.plan_with(keys, ClassTotal::default(), now_ms)
    }

    /// Whether the planner needs the facts of a key with this name and record: one it
    /// does not need is lazy whatever they say, so the pass over a range only counts it
    /// and its bytes (no copy of its name, no place in the ranking).
    fn lists(&self, _key: &[u8], _heat: Heat, _expire_at: u64, _now_ms: u64) -> bool {
        true
    }
}

/// Whether the heat planner may push a key with this record: one whose counter has not
/// decayed to zero (a key idle for minutes past its last touch is cold, whatever it was).
pub fn heat_candidate(heat: Heat, now_ms: u64) -> bool {
    heat.counter_at(now_ms) > 0
}

/// The rules, then heat per byte within the eager budget.
#[derive(Debug, Clone, Default)]
pub struct HeatPlanner {
    pub rules: Rules,
}

impl Planner for HeatPlanner {
    fn plan_with(&self, keys: Vec<KeyFacts>, others: ClassTotal, now_ms: u64) -> Plan {
        plan_ranked(&self.rules, keys, others, now_ms, |k| {
            // Counter per byte, so small keys rank above big ones.
            heat_candidate(k.heat, now_ms)
                .then(|| k.heat.counter_at(now_ms) as f64 / (k.bytes as f64).max(1.0))
        })
    }

    fn lists(&self, key: &[u8], heat: Heat, expire_at: u64, now_ms: u64) -> bool {
        heat_lists(&self.rules, key, heat, expire_at, now_ms)
    }
}

/// The keys the heat planner needs the facts of: its candidates, and those the rules
/// class (a rule, or expiring).
pub fn heat_lists(rules: &Rules, key: &[u8], heat: Heat, expire_at: u64, now_ms: u64) -> bool {
    heat_candidate(heat, now_ms)
        || rules.expiring(expire_at, now_ms)
        || rules.class_of(key).is_some()
}

/// The rules first (critical, skip, lazy, forced eager; a key expiring within the
/// threshold is skipped whatever they say), then the keys `score` ranks (`None`: not a
/// candidate, lazy) taken as eager, highest first, while the budget lasts. `others`: keys
/// of the range not in `keys`, lazy.
pub fn plan_ranked(
    rules: &Rules,
    keys: Vec<KeyFacts>,
    others: ClassTotal,
    now_ms: u64,
    score: impl Fn(&KeyFacts) -> Option<f64>,
) -> Plan {
    let mut plan = Plan::default();
    let range_bytes: u64 = keys.iter().map(|k| k.bytes as u64).sum::<u64>() + others.bytes;
    plan.eager_budget_bytes = range_bytes * rules.eager_budget_percent as u64 / 100;
    plan.totals[Class::Lazy as usize] = others;
    let add = |plan: &mut Plan, class: Class, k: &KeyFacts| {
        let t = &mut plan.totals[class as usize];
        t.keys += 1;
        t.bytes += k.bytes as u64;
    };
    // (score; forced by a rule) for the eager candidates.
    let mut candidates: Vec<(f64, bool, KeyFacts)> = Vec::new();
    for k in keys {
        let class = match rules.class_of(&k.key) {
            // A key gone or about to go is never moved, whatever the rules say.
            _ if rules.expiring(k.expire_at, now_ms) => Class::Skip,
            Some(Class::Eager) => {
                candidates.push((f64::INFINITY, true, k));
                continue;
            }
            Some(class) => class,
            None => match score(&k) {
                Some(s) if s.is_finite() => {
                    candidates.push((s, false, k));
                    continue;
                }
                _ => Class::Lazy,
            },
        };
        add(&mut plan, class, &k);
        if class == Class::Critical {
            plan.critical.push((k.db, k.key));
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.key.cmp(&b.2.key)));
    let mut spent = 0u64;
    for (_, forced, k) in candidates {
        let fits = spent + k.bytes as u64 <= plan.eager_budget_bytes;
        if forced || fits {
            spent += k.bytes as u64;
            add(&mut plan, Class::Eager, &k);
            plan.eager.push((k.db, k.key));
        } else {
            add(&mut plan, Class::Lazy, &k);
        }
    }
    plan
}

/// The plan before the handover, without a pass over every key: the critical keys (a
/// pass over the range's keys only when a rule names a class `critical`, matching names
/// without copying them), and the range's keys and bytes counted as lazy, the bytes
/// estimated from each database's mean key size. The eager keys are planned after the
/// handover, a few slots at a time ([`range_facts`] per chunk), so that the handover
/// takes as long for a million keys as for a thousand, and no request waits for the
/// store's lock while a whole range is ranked.
pub fn critical_plan(store: &Store, slots: &[usize], rules: &Rules, now_ms: u64) -> Plan {
    let mut plan = Plan::default();
    let any_critical = rules.rules.iter().any(|r| r.class == Class::Critical);
    for (db, ks) in store.dbs() {
        let mean = ks.used_bytes().checked_div(ks.len()).unwrap_or(0) as u64;
        for &slot in slots {
            let table = ks.slot(slot);
            let mut keys = table.map.len() as u64;
            if any_critical {
                for (key, entry) in table.map.iter() {
                    if !rules.expiring(entry.expire_at, now_ms)
                        && rules.class_of(key) == Some(Class::Critical)
                    {
                        let t = &mut plan.totals[Class::Critical as usize];
                        t.keys += 1;
                        t.bytes += (key.len() + entry.value.approx_bytes()) as u64;
                        plan.critical.push((db, key.to_vec()));
                        keys -= 1;
                    }
                }
            }
            let t = &mut plan.totals[Class::Lazy as usize];
            t.keys += keys;
            t.bytes += keys * mean;
        }
    }
    plan
}

/// The facts of every key of `slots` in `store`, for a [`Planner`].
pub fn range_facts(store: &Store, slots: &[usize]) -> Vec<KeyFacts> {
    range_facts_where(store, slots, |_, _, _| true).0
}

/// The facts of the keys of `slots` that `visit` (called with every key: its database,
/// name and entry) keeps, and the count and bytes of the others: their names are not
/// copied nor ranked ([`Planner::lists`]).
pub fn range_facts_where(
    store: &Store,
    slots: &[usize],
    mut visit: impl FnMut(usize, &[u8], &crate::store::Entry) -> bool,
) -> (Vec<KeyFacts>, ClassTotal) {
    let mut facts = Vec::new();
    let mut others = ClassTotal::default();
    for (db, ks) in store.dbs() {
        for &slot in slots {
            for (key, entry) in ks.slot(slot).map.iter() {
                let bytes = key.len() + entry.value.approx_bytes();
                if !visit(db, key, entry) {
                    others.keys += 1;
                    others.bytes += bytes as u64;
                    continue;
                }
                facts.push(KeyFacts {
                    db,
                    key: key.to_vec(),
                    bytes,
                    expire_at: entry.expire_at,
                    heat: entry.heat,
                });
            }
        }
    }
    (facts, others)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn facts(key: &str, bytes: usize, touches: u64, expire_at: u64) -> KeyFacts {
        let mut heat = Heat::default();
        for i in 0..touches {
            heat.touch(NOW - 10_000 + i, false);
        }
        KeyFacts {
            db: 0,
            key: key.as_bytes().to_vec(),
            bytes,
            expire_at,
            heat,
        }
    }

    #[test]
    fn rules_round_trip_through_their_text() {
        let rules = Rules::parse(
            "eager_budget_percent = 7\n[[rule]]\npattern = \"a\\\"b\\\\*\"\nclass = \"critical\"\n[[rule]]\npattern = \"x*\"\nclass = \"skip\"\n",
        )
        .unwrap();
        assert_eq!(rules.rules[0].pattern, "a\"b\\*");
        assert_eq!(Rules::parse(&rules.to_toml()).unwrap(), rules);
        assert_eq!(
            Rules::parse(&Rules::default().to_toml()).unwrap(),
            Rules::default()
        );
    }

    #[test]
    fn rules_parse_with_defaults_and_refuse_nonsense() {
        let r = Rules::parse(
            "[[rule]]\npattern = \"auth:*\"\nclass = \"critical\"\n[[rule]]\npattern = \"tmp:*\"\nclass = \"skip\"\n",
        )
        .unwrap();
        assert_eq!(r.eager_budget_percent, DEFAULT_EAGER_PERCENT);
        assert_eq!(r.skip_expiring_within_ms, DEFAULT_SKIP_EXPIRING_MS);
        assert_eq!(r.class_of(b"auth:1"), Some(Class::Critical));
        assert_eq!(r.class_of(b"tmp:x"), Some(Class::Skip));
        assert_eq!(r.class_of(b"sess:1"), None);
        assert!(
            Rules::parse("[[rule]]\npattern = \"a\"\nclass = \"warm\"\n")
                .unwrap_err()
                .contains("warm")
        );
        assert!(Rules::parse("eager_budget_percent = 150").is_err());
        assert!(Rules::parse("eager_budget = 5")
            .unwrap_err()
            .contains("eager_budget"));
        assert_eq!(Rules::parse("").unwrap(), Rules::default());
    }

    #[test]
    fn the_plan_follows_rules_then_heat_per_byte_within_the_budget() {
        let rules = Rules::parse(
            "eager_budget_percent = 10\n[[rule]]\npattern = \"auth:*\"\nclass = \"critical\"\n[[rule]]\npattern = \"feed:*\"\nclass = \"eager\"\n",
        )
        .unwrap();
        let planner = HeatPlanner { rules };
        let mut keys = vec![
            facts("auth:1", 100, 1, 0),
            facts("feed:1", 50, 1, 0),
            facts("sess:hot-small", 100, 3000, 0),
            facts("sess:hot-big", 5000, 3000, 0),
            facts("sess:expiring", 100, 3000, NOW + 500),
            facts("sess:expired", 100, 3000, NOW - 1),
        ];
        // A cold key (decayed to zero) and plenty of warm filler.
        let mut cold = facts("sess:cold", 100, 1, 0);
        cold.heat = Heat::default();
        keys.push(cold);
        for i in 0..100 {
            keys.push(facts(&format!("sess:{i}"), 400, 1, 0));
        }
        let total: u64 = keys.iter().map(|k| k.bytes as u64).sum();
        let plan = planner.plan(keys, NOW);
        assert_eq!(plan.eager_budget_bytes, total / 10);
        assert_eq!(plan.critical, vec![(0, b"auth:1".to_vec())]);
        // The forced key first, then the small hot key before the big one.
        assert_eq!(plan.eager[0].1, b"feed:1");
        assert_eq!(plan.eager[1].1, b"sess:hot-small");
        let pos = |k: &[u8]| plan.eager.iter().position(|(_, e)| e == k);
        assert!(pos(b"sess:hot-big").is_none_or(|p| p > 1));
        assert_eq!(
            plan.total(Class::Skip),
            ClassTotal {
                keys: 2,
                bytes: 200
            }
        );
        assert!(pos(b"sess:cold").is_none());
        let eager_bytes = plan.total(Class::Eager).bytes;
        assert!(eager_bytes <= plan.eager_budget_bytes + 50, "{eager_bytes}");
        let all: u64 = Class::ALL.iter().map(|&c| plan.total(c).bytes).sum();
        assert_eq!(all, total);
        let keys: u64 = Class::ALL.iter().map(|&c| plan.total(c).keys).sum();
        assert_eq!(keys, 107);
    }

    /// A pass that lists only the keys the heat planner may push (and those the rules
    /// class) plans exactly as a pass over every key: the others are lazy and count in
    /// the budget's base.
    #[test]
    fn listing_only_the_keys_the_planner_needs_plans_the_same() {
        use crate::store::{Entry, Value};
        let rules = Rules::parse(
            "eager_budget_percent = 40\n[[rule]]\npattern = \"auth:*\"\nclass = \"critical\"\n",
        )
        .unwrap();
        let planner = HeatPlanner { rules };
        let mut warm = Heat::default();
        warm.touch(NOW - 1_000, false);
        // Never touched (as a key decayed to zero): not a candidate.
        let cold = Heat::default();
        let mut store = Store::default();
        for (key, heat, expire_at) in [
            ("{s}warm", warm, 0),
            ("{s}cold1", cold, 0),
            ("{s}cold2", cold, 0),
            ("auth:{s}x", cold, 0),
            ("{s}expiring", cold, NOW + 100),
        ] {
            let mut e = Entry::new(Value::Str(vec![7; 100]));
            (e.heat, e.expire_at) = (heat, expire_at);
            store.db(0).insert(key.as_bytes(), e);
        }
        let slot = kelvin_protocol::key_slot(b"s") as usize;
        let (listed, others) = range_facts_where(&store, &[slot], |_, key, e| {
            planner.lists(key, e.heat, e.expire_at, NOW)
        });
        let mut names: Vec<&[u8]> = listed.iter().map(|f| f.key.as_slice()).collect();
        names.sort();
        assert_eq!(
            names,
            vec![&b"auth:{s}x"[..], &b"{s}expiring"[..], &b"{s}warm"[..]]
        );
        assert_eq!(
            others,
            ClassTotal {
                keys: 2,
                bytes: 2 * (b"{s}cold1".len() as u64 + 100)
            }
        );
        let partial = planner.plan_with(listed, others, NOW);
        let whole = planner.plan(range_facts(&store, &[slot]), NOW);
        assert_eq!(partial.totals, whole.totals);
        assert_eq!(partial.eager_budget_bytes, whole.eager_budget_bytes);
        assert_eq!(partial.critical, whole.critical);
        assert_eq!(partial.eager, whole.eager);
        assert_eq!(whole.eager, vec![(0, b"{s}warm".to_vec())]);
        assert_eq!(whole.total(Class::Lazy).keys, 2);
        assert_eq!(whole.total(Class::Skip).keys, 1);
    }

    #[test]
    fn facts_come_from_the_range_only() {
        use crate::store::{Entry, Value};
        let mut store = Store::default();
        for k in ["a", "b", "c", "{a}x"] {
            store
                .db(0)
                .insert(k.as_bytes(), Entry::new(Value::Str(vec![1; 10])));
        }
        let slot = kelvin_protocol::key_slot(b"a") as usize;
        let mut keys: Vec<Vec<u8>> = range_facts(&store, &[slot])
            .into_iter()
            .map(|f| f.key)
            .collect();
        keys.sort();
        assert_eq!(keys, vec![b"a".to_vec(), b"{a}x".to_vec()]);
    }
}
