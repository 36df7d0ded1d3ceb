//! `kelvin-bench planner-eval`: which eager plan leaves the fewest fault-ins after a
//! handover, on a trace, for each planning strategy and eager budget (issue 15).
//!
//! The trace up to the handover is replayed into the server's own profiler (a
//! `kelvin_server::store::Heat` per key, touched as the server touches it) and its own
//! sampler and model (`kelvin_server::migrate::learn`): every 2 s of trace time a few
//! random live keys are observed and labelled a window later, as the node does with its
//! traffic; at the handover the model trains on what was labelled by then (the trace's
//! prefix only). Each strategy then plans the keys alive at the handover through the
//! server's `plan_ranked` (the same budget and skip rules), and the window after the
//! handover is scored: a key whose first access in the window is a read, and which the
//! plan did not push, is a fault-in (once per key); a whole-value write or a delete
//! settles a key without one; a key created after the handover never faults in (the
//! source's filter says it was never there). Fault-in rate = fault-ins / accesses in the
//! window.

pub mod trace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use kelvin_server::migrate::learn::{plan_by, round, sampler, Model, Sampler};
use kelvin_server::migrate::plan::{
    plan_ranked, ClassTotal, HeatPlanner, KeyFacts, Planner, Rules,
};
use kelvin_server::store::Heat;

use trace::{Op, Shape, Trace};

/// The strategies, in the order of the table.
pub const STRATEGIES: [&str; 9] = [
    "random",
    "lru",
    "lfu",
    "random_per_byte",
    "lru_per_byte",
    "lfu_per_byte",
    "heat_planner",
    "model",
    "oracle",
];
/// The eager budgets, percent of the live bytes at the handover.
pub const BUDGETS: [u8; 4] = [1, 5, 10, 20];
/// The trace's clock starts here (Unix ms), so that the profiler's seconds are real ones.
const EPOCH_MS: u64 = 1_700_000_000_000;

pub struct Options {
    pub trace: Option<PathBuf>,
    pub shape: Shape,
    /// Generator: trace length past the handover's window, and its scale.
    pub scale: f64,
    pub handover_at_ms: u64,
    pub window_ms: u64,
    pub seed: u64,
    pub out: PathBuf,
    /// Also write the generated trace to DIR/trace.csv.
    pub write_trace: bool,
}

struct Live {
    heat: Heat,
    bytes: u32,
    /// Unix ms, 0 = none.
    expire_at: u64,
}

/// The keys alive in the replay, indexable for random picks.
struct Keys {
    state: Vec<Option<Live>>,
    list: Vec<u32>,
    pos: Vec<u32>,
}

impl Keys {
    fn new(n: usize) -> Keys {
        Keys {
            state: (0..n).map(|_| None).collect(),
            list: Vec::new(),
            pos: vec![u32::MAX; n],
        }
    }

    fn get(&mut self, k: u32, now: u64) -> Option<&mut Live> {
        let expired = self.state[k as usize]
            .as_ref()
            .is_some_and(|l| l.expire_at != 0 && l.expire_at <= now);
        if expired {
            self.remove(k);
        }
        self.state[k as usize].as_mut()
    }

    fn insert(&mut self, k: u32, live: Live) {
        if self.state[k as usize].is_none() {
            self.pos[k as usize] = self.list.len() as u32;
            self.list.push(k);
        }
        self.state[k as usize] = Some(live);
    }

    fn remove(&mut self, k: u32) {
        if self.state[k as usize].take().is_some() {
            let p = self.pos[k as usize] as usize;
            let last = *self.list.last().unwrap_or(&k);
            self.list.swap_remove(p);
            if last != k {
                self.pos[last as usize] = p as u32;
            }
            self.pos[k as usize] = u32::MAX;
        }
    }
}

/// Runs the evaluation; writes DIR/planner.json, DIR/table.md and DIR/planner.png and
/// returns the table.
pub fn run(opts: &Options) -> Result<String> {
    if opts.window_ms == 0 || opts.handover_at_ms == 0 {
        bail!("--handover-at and --window must be above 0");
    }
    let (trace, source) = match &opts.trace {
        Some(path) => (Trace::read(path)?, path.display().to_string()),
        None => {
            let length = opts.handover_at_ms + opts.window_ms;
            let t = trace::generate(opts.shape, length, opts.scale, opts.seed);
            (
                t,
                format!("generated: {} (scale {})", opts.shape.name(), opts.scale),
            )
        }
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    if opts.write_trace && opts.trace.is_none() {
        trace.write(&opts.out.join("trace.csv"))?;
    }
    let h = EPOCH_MS + opts.handover_at_ms;
    let end = h + opts.window_ms;
    let by_name: HashMap<&[u8], u32> = trace
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_bytes(), i as u32))
        .collect();
    let rules = Rules::default();
    let mut keys = Keys::new(trace.names.len());
    let mut sampler = Sampler::new(opts.window_ms);
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x5eed);
    let every = sampler::SAMPLE_EVERY.as_millis() as u64;
    let mut next_sample = EPOCH_MS + every;
    let mut accesses = trace.accesses.iter().peekable();
    // The prefix: the profiler and the sampler see it all, the sampler up to the
    // handover itself.
    loop {
        let next = accesses.next_if(|a| EPOCH_MS + a.t_ms < h);
        let now = next.map_or(h, |a| EPOCH_MS + a.t_ms);
        while next_sample <= now {
            let (k, n) = (&mut keys, next_sample);
            sample(&mut sampler, k, &trace, &by_name, n, &rules, &mut rng);
            next_sample += every;
        }
        match next {
            Some(a) => apply(&mut keys, a.op, a.key, a.bytes, a.ttl_ms, now),
            None => break,
        }
    }
    let samples = sampler.samples();
    let model = Model::train(&samples);
    // The keys alive at the handover, as the source's planner sees them.
    let mut facts = Vec::new();
    for &k in &keys.list {
        if let Some(l) = keys.state[k as usize].as_ref() {
            if l.expire_at == 0 || l.expire_at > h {
                facts.push(KeyFacts {
                    db: 0,
                    key: trace.names[k as usize].as_bytes().to_vec(),
                    bytes: l.bytes as usize,
                    expire_at: l.expire_at,
                    heat: l.heat,
                });
            }
        }
    }
    let live_at_h: HashMap<&[u8], usize> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key.as_slice(), i))
        .collect();
    // The window: which live keys are read before anything settles them.
    let window: Vec<_> = accesses.take_while(|a| EPOCH_MS + a.t_ms < end).collect();
    let mut first: HashMap<usize, bool> = HashMap::new();
    for a in &window {
        if let Some(&i) = live_at_h.get(trace.names[a.key as usize].as_bytes()) {
            let at = EPOCH_MS + a.t_ms;
            let f = &facts[i];
            let alive = f.expire_at == 0 || f.expire_at > at;
            first.entry(i).or_insert(a.op == Op::Read && alive);
        }
    }
    let faulting: Vec<bool> = (0..facts.len())
        .map(|i| first.get(&i).copied().unwrap_or(false))
        .collect();
    let live_bytes: u64 = facts.iter().map(|f| f.bytes as u64).sum();
    let draws: Vec<f64> = facts.iter().map(|_| rng.gen::<f64>()).collect();
    let index: HashMap<Vec<u8>, usize> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key.clone(), i))
        .collect();

    let mut budgets = serde_json::Map::new();
    let mut rows = Vec::new();
    for pct in BUDGETS {
        let rules = Rules {
            eager_budget_percent: pct,
            ..Rules::default()
        };
        let mut by_strategy = serde_json::Map::new();
        for name in STRATEGIES {
            let keys = facts.clone();
            let plan = match name {
                "heat_planner" => HeatPlanner {
                    rules: rules.clone(),
                }
                .plan(keys, h),
                // The model's own ranking, whether or not the node would use it (its
                // judgment against the counter is in `model.in_use`).
                "model" => match &model {
                    Ok(m) => plan_by(&rules, m, opts.window_ms, keys, ClassTotal::default(), h),
                    Err(_) => HeatPlanner {
                        rules: rules.clone(),
                    }
                    .plan(keys, h),
                },
                _ => plan_ranked(&rules, keys, ClassTotal::default(), h, |k| {
                    let i = index[&k.key];
                    let idle = k.heat.idle_secs(h) as f64;
                    let counter = k.heat.counter_at(h) as f64;
                    let bytes = (k.bytes as f64).max(1.0);
                    // Ties of whole seconds and counters broken by recency, then at random.
                    let recency = 1.0 / (1.0 + idle) + draws[i] * 1e-9;
                    let lfu = counter + 0.5 / (1.0 + idle) + draws[i] * 1e-9;
                    Some(match name {
                        "random" => draws[i],
                        "lru" => recency,
                        "lfu" => lfu,
                        "random_per_byte" => draws[i] / bytes,
                        "lru_per_byte" => recency / bytes,
                        "lfu_per_byte" => lfu / bytes,
                        // Hindsight: the keys that will fault in, smallest first (each
                        // counts one, so the most of them fit the budget).
                        _ if faulting[i] => 1.0 / bytes,
                        _ => return None,
                    })
                }),
            };
            let eager: std::collections::HashSet<usize> =
                plan.eager.iter().map(|(_, k)| index[k]).collect();
            let faults = (0..facts.len())
                .filter(|i| faulting[*i] && !eager.contains(i))
                .count();
            let rate = faults as f64 / window.len().max(1) as f64;
            by_strategy.insert(name.to_string(), json!(rate));
            rows.push((
                pct,
                name,
                rate,
                faults,
                plan.total(kelvin_server::migrate::plan::Class::Eager).bytes,
            ));
        }
        budgets.insert(format!("budget_{pct}pct"), Value::Object(by_strategy));
    }

    // How well the model ranks the keys that did fault, against the counter.
    let labels: Vec<bool> = faulting.clone();
    let model_json = match &model {
        Ok(m) => {
            let scores: Vec<f64> = facts
                .iter()
                .map(|f| {
                    let raw = kelvin_server::migrate::learn::features::raw(
                        f.heat,
                        f.bytes,
                        f.expire_at,
                        h,
                        opts.window_ms,
                    );
                    m.score(
                        &raw,
                        &kelvin_server::migrate::learn::features::class_of(&rules, &f.key),
                    )
                })
                .collect();
            let counter: Vec<f64> = facts
                .iter()
                .map(|f| f.heat.counter_at(h) as f64 - f.heat.idle_secs(h) as f64 * 1e-6)
                .collect();
            json!({
                "kind": "logistic_regression",
                "trained_on": m.trained_on,
                "positives": m.positives,
                "held_out": m.held_out,
                "auc_held_out": m.auc,
                "heuristic_auc_held_out": m.heuristic_auc,
                "hits_held_out": m.hits,
                "heuristic_hits_held_out": m.heuristic_hits,
                "in_use": m.beats_heuristic(),
                "auc_at_handover": kelvin_server::migrate::learn::model::auc(&scores, &labels),
                "heuristic_auc_at_handover": kelvin_server::migrate::learn::model::auc(&counter, &labels),
            })
        }
        Err(e) => json!({ "error": e }),
    };
    let faulting_keys = faulting.iter().filter(|f| **f).count();
    let mut out = serde_json::Map::new();
    out.insert("trace".into(), json!(source));
    out.insert("handover_at_ms".into(), json!(opts.handover_at_ms));
    out.insert("window_ms".into(), json!(opts.window_ms));
    out.insert(
        "accesses_before".into(),
        json!(trace.accesses.len() - window.len()),
    );
    out.insert("accesses_in_window".into(), json!(window.len()));
    out.insert("live_keys".into(), json!(facts.len()));
    out.insert("live_bytes".into(), json!(live_bytes));
    out.insert("keys_read_first_in_window".into(), json!(faulting_keys));
    out.insert("samples".into(), json!(samples.len()));
    out.insert("model".into(), model_json);
    for (k, v) in budgets {
        out.insert(k, v);
    }
    let json = Value::Object(out);
    std::fs::write(
        opts.out.join("planner.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let table = table(&json, &rows);
    std::fs::write(opts.out.join("table.md"), &table)?;
    plot(&opts.out)?;
    Ok(table)
}

/// Replays one access into the profiler's records.
fn apply(keys: &mut Keys, op: Op, k: u32, bytes: u32, ttl_ms: u64, now: u64) {
    let expire_at = if ttl_ms == 0 { 0 } else { now + ttl_ms };
    match op {
        Op::Read => {
            if let Some(l) = keys.get(k, now) {
                l.heat.touch(now, false);
            }
        }
        Op::Write => {
            // A whole-value write keeps the key's record, as SET does in the server.
            let mut heat = keys.get(k, now).map(|l| l.heat).unwrap_or_default();
            heat.touch(now, true);
            keys.insert(
                k,
                Live {
                    heat,
                    bytes,
                    expire_at,
                },
            );
        }
        Op::Delete => keys.remove(k),
    }
}

/// One round of the node's sampling: labels what is due, observes a few random keys.
fn sample(
    sampler: &mut Sampler,
    keys: &mut Keys,
    trace: &Trace,
    by_name: &HashMap<&[u8], u32>,
    now: u64,
    rules: &Rules,
    rng: &mut SmallRng,
) {
    sampler.label_due(now, |_, _, key| {
        let k = *by_name.get(key)?;
        keys.get(k, now).map(|l| l.heat)
    });
    if keys.list.is_empty() {
        return;
    }
    // The node's round: random keys, and recently touched ones among more picks.
    let window = sampler.window_ms();
    let picked = round(sampler::SAMPLE_KEYS, window, now, || {
        let k = keys.list[rng.gen_range(0..keys.list.len())];
        let l = keys.state[k as usize].as_ref()?;
        let live = l.expire_at == 0 || l.expire_at > now;
        live.then_some((k, l.heat))
    });
    for k in picked {
        if let Some(l) = keys.state[k as usize].as_ref() {
            let name = trace.names[k as usize].as_bytes();
            let (bytes, expire_at) = (l.bytes as usize, l.expire_at);
            sampler.observe(now, 0, 0, name, l.heat, bytes, expire_at, rules);
        }
    }
}

fn table(json: &Value, rows: &[(u8, &str, f64, usize, u64)]) -> String {
    let mut s = format!(
        "Trace: {}; handover at {} ms, window {} ms; {} live keys ({:.1} MB) at the handover, {} accesses in the window, {} keys read first in it; model: {}\n\n",
        json["trace"].as_str().unwrap_or(""),
        json["handover_at_ms"],
        json["window_ms"],
        json["live_keys"],
        json["live_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        json["accesses_in_window"],
        json["keys_read_first_in_window"],
        json["model"],
    );
    s += "| strategy |";
    for pct in BUDGETS {
        s += &format!(" {pct}% |");
    }
    s += "\n|---|";
    for _ in BUDGETS {
        s += "---:|";
    }
    s += "\n";
    for name in STRATEGIES {
        s += &format!("| {name} |");
        for pct in BUDGETS {
            let r = rows.iter().find(|r| r.0 == pct && r.1 == name);
            match r {
                Some(r) => s += &format!(" {:.4} ({}) |", r.2, r.3),
                None => s += " - |",
            }
        }
        s += "\n";
    }
    s += "\nFault-in rate (fault-ins / accesses in the window), and fault-ins in parentheses, per eager budget (% of the live bytes).\n";
    s
}

/// Draws DIR/planner.png with `bench/plot_planner.py DIR`.
fn plot(out: &Path) -> Result<()> {
    let script = crate::servers::workspace_root().join("bench/plot_planner.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(out);
    let (ok, text) = crate::group::run_with_timeout(&mut cmd, Duration::from_secs(120))?;
    if !ok {
        bail!(
            "{} failed (pip install matplotlib):\n{text}",
            script.display()
        );
    }
    Ok(())
}
