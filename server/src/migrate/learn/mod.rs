//! The learned half of the planner (issue 15): a model, trained on the node's own
//! traffic, of which keys will be touched within the next window, so that the eager push
//! spends its byte budget on the keys most likely to be asked for per byte.
//!
//! ```text
//!  traffic --> Heat (store/heat.rs, every access)
//!                |  every SAMPLE_EVERY: a few random keys of each group led
//!                v
//!  Sampler: features now, label a window later (touched or not), a bounded ring
//!                |  every RETRAIN_EVERY, on a thread of its own
//!                v
//!  Model (logistic regression, smartcore): P(touched within the window)
//!                |  at a migration's plan, if it ranked held-out keys better than the
//!                v  LFU counter did
//!  LearnedPlanner: rules first (critical, skip), then P / bytes within the budget
//! ```
//!
//! - [`features`]: what the model sees of a key (from its [`crate::store::Heat`], size,
//!   TTL and pattern class).
//! - [`sampler`]: observations and their labels, bounded.
//! - [`model`]: training, scoring, the held-out AUC against the counter's.
//! - [`wire`]: the samples and the model as the node and its training process pass them.
//! - [`Learner`]: the node's sampler and current model, and the figures INFO shows.
//!
//! Lower layers only: the node runs the sampling and the training ([`crate::node`]);
//! this module reads stores handed to it.

pub mod features;
pub mod model;
pub mod sampler;
pub mod wire;

use std::sync::Arc;

use rand::Rng;

use crate::migrate::plan::{
    heat_lists, plan_ranked, ClassTotal, HeatPlanner, KeyFacts, Plan, Planner, Rules,
};
use crate::store::Heat;
use crate::store::Store;
pub use model::{Model, Sample};
pub use sampler::Sampler;

/// How often the node retrains its model (if new samples came since the last one): a
/// label window, within these bounds.
pub const RETRAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
pub const RETRAIN_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the node waits between trainings with label window `window_ms`.
pub fn retrain_every(window_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(window_ms).clamp(RETRAIN_AT_MOST_EVERY, RETRAIN_EVERY)
}

/// What the node's learner publishes for the planner and INFO: the model in use (if
/// any), its label window and the `planner` section's text. Process-wide, as the
/// profiler's switch is: one node per process, and a plan (a command run under a
/// group's store lock) reads it with one uncontended lock, no reach into the node.
struct Published {
    /// `None` while the node's `kelvin-planner` is `heat`.
    model: Option<Arc<Model>>,
    window_ms: u64,
    /// What a plan ranks by and why ([`ranking_text`]).
    ranking: String,
    info: String,
}

static PUBLISHED: parking_lot::RwLock<Option<Published>> = parking_lot::RwLock::new(None);

/// Publishes `learner`'s current model (for the planner if `use_model`) and figures.
pub fn publish(learner: &Learner, use_model: bool) {
    let mut info = learner.info();
    // What a plan made now ranks by, and why not by the model.
    let (ranking, reason) = match (use_model, &learner.model) {
        (false, _) => ("heat", "setting"),
        (true, Some(m)) if m.beats_heuristic() => ("model", "beats_heat"),
        (true, Some(_)) => ("heat", "model_not_better"),
        (true, None) => ("heat", "no_model"),
    };
    info.push_str(&format!(
        "planner_ranking:{ranking}\r\nplanner_ranking_reason:{reason}\r\n"
    ));
    *PUBLISHED.write() = Some(Published {
        model: learner.model.clone().filter(|_| use_model),
        window_ms: learner.sampler.window_ms(),
        ranking: ranking_text(reason, learner.model.as_deref()),
        info,
    });
}

/// How [`ranking_text`] begins for a plan the model ranked (the driver tells those
/// chunks by it, from the plan's reply).
pub const MODEL_RANKED: &str = "model (";

/// What a plan ranks by and why, in words, for `cluster migrations`.
fn ranking_text(reason: &str, model: Option<&Model>) -> String {
    let judged = |m: &Model| {
        format!(
            "touched held-out keys in a {}% plan: {} against the heat planner's {}; AUC {:.3} against the counter's {:.3}",
            model::JUDGE_BUDGET_PERCENT,
            m.hits,
            m.heuristic_hits,
            m.auc,
            m.heuristic_auc
        )
    };
    match (reason, model) {
        ("beats_heat", Some(m)) => format!("{MODEL_RANKED}{})", judged(m)),
        ("model_not_better", Some(m)) => format!("heat (the model is not better: {})", judged(m)),
        ("setting", _) => "heat (kelvin-planner heat)".to_string(),
        _ => "heat (no model trained yet)".to_string(),
    }
}

/// The planner for a migration's plan on this node (the published model's, or the heat
/// planner's ranking while there is none), and what it ranks by in words (as `cluster
/// migrations` shows it).
pub fn planner_and_ranking(rules: Rules) -> (LearnedPlanner, String) {
    let published = PUBLISHED.read();
    let planner = LearnedPlanner {
        rules,
        model: published.as_ref().and_then(|p| p.model.clone()),
        window_ms: published
            .as_ref()
            .map_or(sampler::DEFAULT_WINDOW_MS, |p| p.window_ms),
    };
    let ranking = published
        .as_ref()
        .map_or_else(|| ranking_text("no_model", None), |p| p.ranking.clone());
    (planner, ranking)
}

/// INFO's `planner` section.
pub fn info_section() -> String {
    let body = PUBLISHED
        .read()
        .as_ref()
        .map_or_else(|| "planner_model:none\r\n".to_string(), |p| p.info.clone());
    format!("# Planner\r\n{body}\r\n")
}

/// The planner with a model: the rules as [`HeatPlanner`], then keys by predicted
/// touches per byte. Without a model (or one that does not beat the counter), the heat
/// planner.
pub struct LearnedPlanner {
    pub rules: Rules,
    pub model: Option<Arc<Model>>,
    /// The label window the model was trained for (its idle bins depend on it).
    pub window_ms: u64,
}

impl LearnedPlanner {
    /// Whether its plans are the model's (a model that beat the heat planner).
    pub fn ranks_by_model(&self) -> bool {
        self.model.as_ref().is_some_and(|m| m.beats_heuristic())
    }
}

impl Planner for LearnedPlanner {
    fn plan_with(&self, keys: Vec<KeyFacts>, others: ClassTotal, now_ms: u64) -> Plan {
        match self.model.as_ref().filter(|m| m.beats_heuristic()) {
            Some(model) => plan_by(&self.rules, model, self.window_ms, keys, others, now_ms),
            None => HeatPlanner {
                rules: self.rules.clone(),
            }
            .plan_with(keys, others, now_ms),
        }
    }

    /// The model ranks every key; the heat planner only those it may push.
    fn lists(&self, key: &[u8], heat: Heat, expire_at: u64, now_ms: u64) -> bool {
        self.ranks_by_model() || heat_lists(&self.rules, key, heat, expire_at, now_ms)
    }
}

/// The plan that `model` ranks (predicted touches per byte), whatever its judgment
/// against the counter: the rules first, as every plan.
pub fn plan_by(
    rules: &Rules,
    model: &Model,
    window_ms: u64,
    keys: Vec<KeyFacts>,
    others: ClassTotal,
    now_ms: u64,
) -> Plan {
    plan_ranked(rules, keys, others, now_ms, |k| {
        let raw = features::raw(k.heat, k.bytes, k.expire_at, now_ms, window_ms);
        let p = model.score(&raw, &features::class_of(rules, &k.key));
        Some(p / (k.bytes as f64).max(1.0))
    })
}

/// The keys one round observes: up to `n` random picks, then up to `n / 4` of those
/// touched within the last window among [`sampler::RECENT_PROBES`] more. `pick` gives a
/// random live key and its record, or `None` (an empty try counts as a pick).
pub fn round<K>(
    n: usize,
    window_ms: u64,
    now_ms: u64,
    mut pick: impl FnMut() -> Option<(K, crate::store::Heat)>,
) -> Vec<K> {
    let mut picked = Vec::with_capacity(n + n / 4);
    for _ in 0..n * 4 {
        if picked.len() == n {
            break;
        }
        picked.extend(pick().map(|(k, _)| k));
    }
    let random = picked.len();
    let window_secs = window_ms / 1000;
    for _ in 0..sampler::RECENT_PROBES {
        if picked.len() - random == n / 4 {
            break;
        }
        let recent = pick().filter(|(_, h)| h.seen() > 0 && h.idle_secs(now_ms) < window_secs);
        picked.extend(recent.map(|(k, _)| k));
    }
    picked
}

/// The node's learner: its sampler, its current model and what happened to the last
/// training.
pub struct Learner {
    pub sampler: Sampler,
    pub model: Option<Arc<Model>>,
    /// Why the last training gave no model, if it did not.
    pub last_error: Option<String>,
    /// Samples labelled when the model was last trained (retrain only on new ones).
    pub trained_at_labelled: u64,
    pub trained_at_ms: u64,
    pub trainings: u64,
    /// Where the last training ran: `process` (a trainer process of its own) or `thread`.
    pub trained_in: &'static str,
    /// `running`, `idle`, or `paused` while a group of the node takes part in a
    /// migration (no training then: `crate::learning`).
    pub training: &'static str,
}

impl Default for Learner {
    fn default() -> Self {
        Learner::new(sampler::DEFAULT_WINDOW_MS)
    }
}

impl Learner {
    pub fn new(window_ms: u64) -> Learner {
        Learner {
            sampler: Sampler::new(window_ms),
            model: None,
            last_error: None,
            trained_at_labelled: 0,
            trained_at_ms: 0,
            trainings: 0,
            trained_in: "none",
            training: "idle",
        }
    }

    /// Observes up to `n` random live keys of `store` (group `source`) as of `now_ms`,
    /// and up to `n / 4` of those touched within the last window among
    /// [`sampler::RECENT_PROBES`] more random picks. In a big keyspace few random keys
    /// are touched in any window and a model would see few of them; the recent ones are
    /// picked by a feature (idle time), so what the model learns of P(touched | features)
    /// stays true for the keys it ranks.
    pub fn observe(
        &mut self,
        store: &Store,
        source: u64,
        n: usize,
        now_ms: u64,
        rules: &Rules,
        rng: &mut impl Rng,
    ) {
        for (db, ks) in store.dbs() {
            if ks.is_empty() {
                continue;
            }
            // A random slot, then a random key of it (slots hold about as many keys
            // each); tries past empty slots and expired keys count as picks.
            let pick = || {
                let table = ks.slot(rng.gen_range(0..kelvin_protocol::SLOT_COUNT));
                let i = rng.gen_range(0..table.map.len().max(1));
                let (key, entry) = table.map.get_index(i)?;
                (!entry.is_expired(now_ms)).then_some(((key, entry), entry.heat))
            };
            let picked = round(n, self.sampler.window_ms(), now_ms, pick);
            for (key, entry) in picked {
                let bytes = key.len() + entry.value.approx_bytes();
                self.sampler.observe(
                    now_ms,
                    source,
                    db,
                    key,
                    entry.heat,
                    bytes,
                    entry.expire_at,
                    rules,
                );
            }
        }
    }

    /// Whether a training is due: enough samples labelled since the last.
    pub fn wants_training(&self) -> bool {
        let new = self.sampler.labelled - self.trained_at_labelled;
        self.sampler.len() >= model::MIN_SAMPLES && (self.trainings == 0 || new >= 500)
    }

    /// Takes a training's outcome.
    pub fn trained(&mut self, outcome: Result<Model, String>, labelled: u64, now_ms: u64) {
        self.trainings += 1;
        self.trained_at_labelled = labelled;
        self.trained_at_ms = now_ms;
        match outcome {
            Ok(m) => {
                self.model = Some(Arc::new(m));
                self.last_error = None;
            }
            Err(e) => self.last_error = Some(e),
        }
    }

    /// The lines of INFO's `planner` section (and of `cluster migrations`).
    pub fn info(&self) -> String {
        let mut s = format!(
            "planner_window_ms:{}\r\nplanner_samples:{}\r\nplanner_pending:{}\r\nplanner_labelled:{}\r\nplanner_touched:{}\r\nplanner_trainings:{}\r\nplanner_trained_in:{}\r\nplanner_training:{}\r\n",
            self.sampler.window_ms(),
            self.sampler.len(),
            self.sampler.pending(),
            self.sampler.labelled,
            self.sampler.touched,
            self.trainings,
            self.trained_in,
            self.training,
        );
        match &self.model {
            Some(m) => s.push_str(&format!(
                "planner_model:logistic_regression\r\nplanner_model_in_use:{}\r\nplanner_model_auc:{:.4}\r\nplanner_heuristic_auc:{:.4}\r\nplanner_model_hits:{}\r\nplanner_heuristic_hits:{}\r\nplanner_model_trained_on:{}\r\nplanner_model_held_out:{}\r\nplanner_model_trained_at_ms:{}\r\n",
                u8::from(m.beats_heuristic()),
                m.auc,
                m.heuristic_auc,
                m.hits,
                m.heuristic_hits,
                m.trained_on,
                m.held_out,
                self.trained_at_ms,
            )),
            None => s.push_str("planner_model:none\r\n"),
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!("planner_last_error:{e}\r\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, Value};
    use rand::SeedableRng;

    const T0: u64 = 1_700_000_000_000;

    /// In a keyspace where 1 key in 50 was touched lately, a round observes its random
    /// keys and, among more random picks, recent ones too: the training data holds
    /// touched keys although random picks rarely find one.
    #[test]
    fn a_round_observes_random_keys_and_recently_touched_ones() {
        let mut store = Store::default();
        for i in 0..20_000u32 {
            let mut e = Entry::new(Value::Str(vec![0; 10]));
            // Touched 10 minutes ago, or (one in fifty) 1 s ago.
            let at = if i % 50 == 0 {
                T0 - 1_000
            } else {
                T0 - 600_000
            };
            e.heat.touch(at, true);
            store.db(0).insert(format!("k:{i}").as_bytes(), e);
        }
        let mut l = Learner::new(60_000);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        l.observe(&store, 7, 64, T0, &Rules::default(), &mut rng);
        // 64 random, and 16 more among at most 2048 picks (about 41 of them recent).
        assert_eq!(l.sampler.pending(), 64 + 16);
        let mut recent = 0;
        l.sampler.label_due(T0 + 60_000, |group, db, key| {
            assert_eq!((group, db), (7, 0));
            let e = store.db_ref(0)?.get(key, T0)?;
            recent += usize::from(e.heat.idle_secs(T0) < 60);
            Some(e.heat)
        });
        assert!(recent >= 16, "{recent}");
        // An empty store: nothing observed, no endless search.
        l.observe(&Store::default(), 7, 64, T0, &Rules::default(), &mut rng);
        assert_eq!(l.sampler.pending(), 0);
    }
}
