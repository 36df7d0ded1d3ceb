//! A simulated, correct (linearizable) store, for valid histories of any length.
//!
//! How it fits: the self-test and the property tests need long histories that are valid by
//! construction. [`simulate`] runs concurrent logical processes against an in-memory
//! model of Redis strings, lists and hashes; every operation takes effect atomically at
//! one random moment between its invocation and its completion, so the recorded history
//! is linearizable. Faults are imitated: an operation may end `Fail` (only if it had no
//! effect), or `Info` either after taking effect or before, in which case it may still
//! take effect later (a "zombie", like a request stuck in a partitioned node) or never.
//! `EXPIRE` schedules a deletion that fires at a random later moment unless a `DEL`
//! comes first. After the last operation every key gets one final read.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::history::{Kind, Op, Value, Workload, F};

/// Accounts of each simulated bank.
const SIM_ACCOUNTS: u64 = 4;

/// What to simulate.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    /// Concurrent processes (logical clients).
    pub processes: usize,
    /// Operations to invoke, final reads not included.
    pub ops: usize,
    /// Keys per workload.
    pub keys: usize,
    /// The workloads mixed in; an operation picks one uniformly.
    pub workloads: Vec<Workload>,
    /// Chance that an operation ends `Info`.
    pub info_rate: f64,
    /// Chance that an operation ends `Fail` (when it has not taken effect).
    pub fail_rate: f64,
    /// The random seed.
    pub seed: u64,
}

/// An operation not completed yet.
#[derive(Debug, Clone)]
struct Def {
    f: F,
    key: String,
    input: Value,
}

#[derive(Debug, Clone)]
enum Proc {
    Idle,
    /// Invoked; `Some(result)` once it took effect (`Err` = the server refused it).
    Pending(Def, Option<Result<Value, ()>>),
}

/// The store: strings, lists, hashes and scheduled expiries.
#[derive(Default)]
struct Store {
    strings: HashMap<String, Value>,
    lists: HashMap<String, Vec<Value>>,
    hashes: HashMap<String, BTreeMap<String, Value>>,
    /// Keys with a TTL set, each to be expired at some random later step.
    expiring: Vec<String>,
}

impl Store {
    /// Applies `def` atomically and returns its reply (`Err` for an error reply).
    fn apply(&mut self, def: &Def) -> Result<Value, ()> {
        let key = &def.key;
        match def.f {
            F::Read => Ok(self.strings.get(key).cloned().unwrap_or(Value::None)),
            F::Write => {
                self.strings.insert(key.clone(), def.input.clone());
                Ok(Value::None)
            }
            F::Incr => {
                let current = match self.strings.get(key) {
                    None => 0,
                    Some(Value::Int(i)) => *i,
                    Some(_) => return Err(()),
                };
                let next = current.checked_add(1).ok_or(())?;
                self.strings.insert(key.clone(), Value::Int(next));
                Ok(Value::Int(next))
            }
            F::Delete => Ok(Value::Int(i64::from(self.strings.remove(key).is_some()))),
            F::Append => {
                let list = self.lists.entry(key.clone()).or_default();
                list.push(def.input.clone());
                Ok(Value::Int(list.len() as i64))
            }
            F::ReadList => Ok(Value::List(
                self.lists.get(key).cloned().unwrap_or_default(),
            )),
            F::HSet => {
                let Value::Map(fields) = &def.input else {
                    return Err(());
                };
                let hash = self.hashes.entry(key.clone()).or_default();
                let mut added = 0;
                for (f, v) in fields {
                    if hash.insert(f.clone(), v.clone()).is_none() {
                        added += 1;
                    }
                }
                Ok(Value::Int(added))
            }
            F::HGetAll => Ok(Value::Map(
                self.hashes.get(key).cloned().unwrap_or_default(),
            )),
            F::Expire => {
                let exists = self.hashes.contains_key(key);
                let ttl = match def.input {
                    Value::Int(t) => t,
                    _ => return Err(()),
                };
                if exists {
                    if ttl <= 0 {
                        self.delete_hash(key);
                    } else if !self.expiring.contains(key) {
                        self.expiring.push(key.clone());
                    }
                }
                Ok(Value::Int(i64::from(exists)))
            }
            F::Del => Ok(Value::Int(i64::from(self.delete_hash(key)))),
            F::HIncrBy => {
                let Value::Map(fields) = &def.input else {
                    return Err(());
                };
                let Some((field, _)) = fields.iter().next() else {
                    return Err(());
                };
                let hash = self.hashes.entry(key.clone()).or_default();
                let current = match hash.get(field) {
                    None => 0,
                    Some(Value::Int(i)) => *i,
                    Some(_) => return Err(()),
                };
                hash.insert(field.clone(), Value::Int(current + 1));
                Ok(Value::Int(current + 1))
            }
            F::Transfer => {
                let Value::Map(m) = &def.input else {
                    return Err(());
                };
                let (Some(from), Some(to), Some(Value::Int(amount)), Some(id)) =
                    (m.get("from"), m.get("to"), m.get("amount"), m.get("id"))
                else {
                    return Err(());
                };
                for (account, delta) in [(from, -amount), (to, *amount)] {
                    let name = format!("{key}/{}", account.scalar_text().unwrap_or_default());
                    let balance = match self.strings.get(&name) {
                        Some(Value::Int(b)) => *b,
                        _ => 0,
                    };
                    self.strings
                        .insert(name.clone(), Value::Int(balance + delta));
                    self.lists.entry(name).or_default().push(id.clone());
                }
                Ok(Value::None)
            }
            F::BankRead => Ok(Value::map((0..SIM_ACCOUNTS).map(|a| {
                let name = format!("{key}/a{a}");
                let balance = self.strings.get(&name).cloned().unwrap_or(Value::None);
                let log = Value::List(self.lists.get(&name).cloned().unwrap_or_default());
                (
                    format!("a{a}"),
                    Value::map([("balance", balance), ("log", log)]),
                )
            }))),
            // Not generated: their histories come from the harness and the unit tests.
            F::Cas | F::AppendStr | F::ReadStr => Err(()),
        }
    }

    fn delete_hash(&mut self, key: &str) -> bool {
        self.expiring.retain(|k| k != key);
        self.hashes.remove(key).is_some()
    }
}

struct Sim {
    rng: SmallRng,
    store: Store,
    ops: Vec<Op>,
    next_process: u64,
    next_value: i64,
}

impl Sim {
    fn record(&mut self, process: u64, kind: Kind, def: &Def, value: Value) {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            process,
            kind,
            f: def.f,
            key: def.key.clone(),
            value,
            time_ns: index * 1000,
        });
    }

    fn unique(&mut self) -> i64 {
        self.next_value += 1;
        self.next_value
    }

    fn generate(&mut self, cfg: &SimConfig) -> Def {
        let workload = cfg.workloads[self.rng.gen_range(0..cfg.workloads.len())];
        let k = self.rng.gen_range(0..cfg.keys.max(1));
        let roll: f64 = self.rng.gen();
        match workload {
            Workload::Register => {
                let key = format!("r{k}");
                let (f, input) = if roll < 0.4 {
                    (F::Read, Value::None)
                } else if roll < 0.65 {
                    let n = self.unique();
                    // Mostly integers (which incr then builds on), some strings (on which
                    // incr fails).
                    let v = if self.rng.gen_bool(0.8) {
                        Value::Int(n * 100)
                    } else {
                        Value::Str(format!("s{n}"))
                    };
                    (F::Write, v)
                } else if roll < 0.88 {
                    (F::Incr, Value::None)
                } else {
                    (F::Delete, Value::None)
                };
                Def { f, key, input }
            }
            Workload::ListAppend => {
                let key = format!("l{k}");
                if roll < 0.5 {
                    let n = self.unique();
                    Def {
                        f: F::Append,
                        key,
                        input: Value::Int(n),
                    }
                } else {
                    Def {
                        f: F::ReadList,
                        key,
                        input: Value::None,
                    }
                }
            }
            Workload::Sessions => {
                let key = format!("s{k}");
                let (f, input) = if roll < 0.45 {
                    let field = format!("f{}", self.rng.gen_range(0..3));
                    let n = self.unique();
                    (F::HSet, Value::map([(field, format!("v{n}"))]))
                } else if roll < 0.55 {
                    (F::HIncrBy, Value::map([("n", 1)]))
                } else if roll < 0.82 {
                    (F::HGetAll, Value::None)
                } else if roll < 0.9 {
                    let ttl = if self.rng.gen_bool(0.2) { 0 } else { 30 };
                    (F::Expire, Value::Int(ttl))
                } else {
                    (F::Del, Value::None)
                };
                Def { f, key, input }
            }
            Workload::Bank => {
                let key = format!("b{k}");
                if roll < 0.5 {
                    let from = self.rng.gen_range(0..SIM_ACCOUNTS);
                    let to = (from + self.rng.gen_range(1..SIM_ACCOUNTS)) % SIM_ACCOUNTS;
                    let id = self.unique();
                    let amount = self.rng.gen_range(1..=5);
                    let input = Value::map([
                        ("from", Value::from(format!("a{from}"))),
                        ("to", Value::from(format!("a{to}"))),
                        ("amount", Value::Int(amount)),
                        ("id", Value::from(format!("t{id}"))),
                    ]);
                    Def {
                        f: F::Transfer,
                        key,
                        input,
                    }
                } else {
                    Def {
                        f: F::BankRead,
                        key,
                        input: Value::None,
                    }
                }
            }
        }
    }
}

/// A linearizable history as described by `cfg`.
pub(crate) fn simulate(cfg: &SimConfig) -> Vec<Op> {
    let mut sim = Sim {
        rng: SmallRng::seed_from_u64(cfg.seed),
        store: Store::default(),
        ops: Vec::new(),
        next_process: 0,
        next_value: 0,
    };
    let nprocs = cfg.processes.max(1);
    let mut ids: Vec<u64> = (0..nprocs as u64).collect();
    sim.next_process = nprocs as u64;
    let mut procs = vec![Proc::Idle; nprocs];
    let mut zombies: Vec<Def> = Vec::new();
    let mut invoked = 0;

    loop {
        let busy = procs.iter().any(|p| matches!(p, Proc::Pending(..)));
        if invoked >= cfg.ops && !busy {
            break;
        }
        // Background events: a zombie takes effect or is forgotten, a TTL fires.
        if !zombies.is_empty() && sim.rng.gen_bool(0.05) {
            let z = zombies.swap_remove(sim.rng.gen_range(0..zombies.len()));
            if sim.rng.gen_bool(0.5) {
                let _ = sim.store.apply(&z);
            }
        }
        if !sim.store.expiring.is_empty() && sim.rng.gen_bool(0.02) {
            let i = sim.rng.gen_range(0..sim.store.expiring.len());
            let key = sim.store.expiring[i].clone();
            sim.store.delete_hash(&key);
        }

        let p = sim.rng.gen_range(0..nprocs);
        let process = ids[p];
        match procs[p].clone() {
            Proc::Idle => {
                if invoked < cfg.ops {
                    let def = sim.generate(cfg);
                    sim.record(process, Kind::Invoke, &def, def.input.clone());
                    procs[p] = Proc::Pending(def, None);
                    invoked += 1;
                }
            }
            Proc::Pending(def, None) => {
                let roll: f64 = sim.rng.gen();
                if roll < cfg.fail_rate {
                    sim.record(process, Kind::Fail, &def, "error".into());
                    procs[p] = Proc::Idle;
                } else if roll < cfg.fail_rate + cfg.info_rate {
                    sim.record(process, Kind::Info, &def, "timeout".into());
                    zombies.push(def);
                    procs[p] = Proc::Idle;
                    ids[p] = sim.next_process;
                    sim.next_process += 1;
                } else {
                    let result = sim.store.apply(&def);
                    procs[p] = Proc::Pending(def, Some(result));
                }
            }
            Proc::Pending(def, Some(result)) => {
                if sim.rng.gen_bool(cfg.info_rate) {
                    sim.record(process, Kind::Info, &def, "timeout".into());
                    ids[p] = sim.next_process;
                    sim.next_process += 1;
                } else {
                    match result {
                        Ok(v) => sim.record(process, Kind::Ok, &def, v),
                        Err(()) => sim.record(process, Kind::Fail, &def, "error".into()),
                    }
                }
                procs[p] = Proc::Idle;
            }
        }
    }

    // Settle the zombies and the TTLs, then read every key once.
    for z in std::mem::take(&mut zombies) {
        if sim.rng.gen_bool(0.5) {
            let _ = sim.store.apply(&z);
        }
    }
    let mut finals: Vec<Def> = Vec::new();
    for k in 0..cfg.keys.max(1) {
        for w in &cfg.workloads {
            let (f, key) = match w {
                Workload::Register => (F::Read, format!("r{k}")),
                Workload::ListAppend => (F::ReadList, format!("l{k}")),
                Workload::Sessions => (F::HGetAll, format!("s{k}")),
                Workload::Bank => (F::BankRead, format!("b{k}")),
            };
            finals.push(Def {
                f,
                key,
                input: Value::None,
            });
        }
    }
    let process = crate::checker::run::FINAL_READ_PROCESS;
    for def in finals {
        sim.record(process, Kind::Invoke, &def, Value::None);
        let v = sim.store.apply(&def).unwrap_or(Value::None);
        sim.record(process, Kind::Ok, &def, v);
    }
    sim.ops
}
