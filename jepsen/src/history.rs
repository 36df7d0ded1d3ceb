//! The history: what the harness records and what the checkers read.
//!
//! How it fits: while faults are injected, every client call is logged twice through a
//! [`Recorder`]: an [`Kind::Invoke`] record just before the request is sent and a
//! completion record ([`Kind::Ok`], [`Kind::Fail`] or [`Kind::Info`]) once its outcome is
//! known. The records are [`Op`]s, written one per line as JSON ([`write_jsonl`],
//! [`read_jsonl`]). Before checking, [`pair`] matches each invocation with its completion
//! (by `process`) into an [`Operation`], the unit every checker works on.
//!
//! Real-time order is the order of [`Op::index`]: the recorder hands out indexes under one
//! lock, so an operation whose completion has a smaller index than another's invocation
//! really finished before the other began. `time_ns` is informational only.
//!
//! Outcomes follow Jepsen: `Ok` means the operation happened with the recorded result,
//! `Fail` that it certainly did not happen, `Info` that it may or may not have happened,
//! and if it did, at any moment after its invocation (up to the end of the history). A
//! process has at most one operation outstanding; after an `Info` the harness continues
//! with a fresh process id, because the old connection's fate is unknown. An invocation
//! that never completes is treated as `Info`.
//!
//! What `value` holds for each function:
//!
//! | `f`         | invocation `value`             | `Ok` completion `value`                       |
//! |-------------|--------------------------------|-----------------------------------------------|
//! | `read`      | `null`                         | the value read, `null` for nil                |
//! | `write`     | the value written              | ignored                                       |
//! | `incr`      | `null`                         | the new value (an integer)                    |
//! | `delete`    | `null`                         | keys removed (0 or 1), or `null` to not check |
//! | `cas`       | the value written              | the value read under `WATCH` (replaced)       |
//! | `append`    | the element appended (unique)  | ignored                                       |
//! | `read_list` | `null`                         | the whole list (`LRANGE 0 -1`)                |
//! | `append_str`| the element appended (unique)  | ignored                                       |
//! | `read_str`  | `null`                         | the string (`GET`): elements each ending `,`  |
//! | `hset`      | a map `{field: value, ...}`    | ignored                                       |
//! | `hincrby`   | a map `{field: increment}`     | the field's new value (an integer)            |
//! | `hgetall`   | `null`                         | the map read, `{}` for a missing key          |
//! | `expire`    | the TTL in seconds (integer)   | 1 if a TTL was set, 0 if the key was missing, or `null` |
//! | `del`       | `null`                         | keys removed (0 or 1), or `null` to not check |
//! | `transfer`  | `{from, to, amount, id, via}`  | ignored                                       |
//! | `bank_read` | `null`, or `{via}`             | `{account: {balance, log: [id, ...]}, ...}`   |
//!
//! `Fail` and `Info` completions may carry any value (an error message as a string, say);
//! the checkers ignore it, except for `cas`: its `Info` completion carries the value read
//! under `WATCH` (the `EXEC` was sent, its outcome is unknown). A `cas` is `WATCH key`,
//! `GET key`, `MULTI`, `SET key value`, `EXEC`: `Ok` if `EXEC` ran the transaction, `Fail`
//! if it aborted (the key changed since `WATCH`) or if anything before `EXEC` failed.
//!
//! The bank's key names one bank (a generation of accounts), not a Redis key: its
//! accounts live in several groups. A `transfer` moves `amount` from account `from` to
//! account `to` and appends its unique `id` to both accounts' logs, atomically (through
//! `MULTI`/`EXEC` or a Lua script, as `via` says); a `bank_read` reads every account's
//! balance and log in one transaction. A missing account reads as balance 0 (`null`)
//! and an empty log.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{BufRead, Write};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a record says about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The operation is about to be sent.
    Invoke,
    /// It happened, with the recorded result.
    Ok,
    /// It certainly did not happen (an error reply that leaves no effect).
    Fail,
    /// Unknown: it may have happened, at any time after its invocation.
    Info,
}

/// The function an operation calls; which checker sees it depends on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum F {
    /// Register: `GET key`.
    #[serde(rename = "read")]
    Read,
    /// Register: `SET key value`.
    #[serde(rename = "write")]
    Write,
    /// Register: `INCR key`.
    #[serde(rename = "incr")]
    Incr,
    /// Register: `DEL key`.
    #[serde(rename = "delete")]
    Delete,
    /// Register: compare-and-set by `WATCH`, `GET`, `MULTI`, `SET`, `EXEC`.
    #[serde(rename = "cas")]
    Cas,
    /// List-append: `RPUSH key element`, each element unique per key.
    #[serde(rename = "append")]
    Append,
    /// List-append: `LRANGE key 0 -1`.
    #[serde(rename = "read_list")]
    ReadList,
    /// List-append on a string: `APPEND key "element,"`, each element unique per key.
    #[serde(rename = "append_str")]
    AppendStr,
    /// List-append on a string: `GET key`, the elements each ending with `,`.
    #[serde(rename = "read_str")]
    ReadStr,
    /// Sessions: `HSET key field value [field value ...]`.
    #[serde(rename = "hset")]
    HSet,
    /// Sessions: `HINCRBY key field increment`.
    #[serde(rename = "hincrby")]
    HIncrBy,
    /// Sessions: `HGETALL key`.
    #[serde(rename = "hgetall")]
    HGetAll,
    /// Sessions: `EXPIRE key seconds`.
    #[serde(rename = "expire")]
    Expire,
    /// Sessions: `DEL key`.
    #[serde(rename = "del")]
    Del,
    /// Bank: move an amount between two accounts, logging the transfer on both.
    #[serde(rename = "transfer")]
    Transfer,
    /// Bank: every account's balance and log, in one transaction.
    #[serde(rename = "bank_read")]
    BankRead,
}

impl F {
    /// The workload (and checker) this function belongs to.
    pub fn workload(self) -> Workload {
        match self {
            F::Read | F::Write | F::Incr | F::Delete | F::Cas => Workload::Register,
            F::Append | F::ReadList | F::AppendStr | F::ReadStr => Workload::ListAppend,
            F::HSet | F::HIncrBy | F::HGetAll | F::Expire | F::Del => Workload::Sessions,
            F::Transfer | F::BankRead => Workload::Bank,
        }
    }

    /// The name used in JSON and in problem reports.
    pub fn name(self) -> &'static str {
        match self {
            F::Read => "read",
            F::Write => "write",
            F::Incr => "incr",
            F::Delete => "delete",
            F::Cas => "cas",
            F::Append => "append",
            F::ReadList => "read_list",
            F::AppendStr => "append_str",
            F::ReadStr => "read_str",
            F::HSet => "hset",
            F::HIncrBy => "hincrby",
            F::HGetAll => "hgetall",
            F::Expire => "expire",
            F::Del => "del",
            F::Transfer => "transfer",
            F::BankRead => "bank_read",
        }
    }
}

/// The workloads; a key belongs to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `GET`/`SET`/`INCR`/`DEL` and `WATCH`...`EXEC` on string keys.
    Register,
    /// `RPUSH`/`LRANGE` on list keys, `APPEND`/`GET` on string keys.
    ListAppend,
    /// `HSET`/`HINCRBY`/`HGETALL`/`EXPIRE`/`DEL` on hash keys.
    Sessions,
    /// Transfers between accounts of several groups and reads of all of them, each in
    /// one transaction.
    Bank,
}

impl Workload {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::ListAppend => "list-append",
            Workload::Sessions => "sessions",
            Workload::Bank => "bank",
        }
    }
}

/// An argument or a result. Serialized as plain JSON: `null`, a number, a string, an
/// array or an object.
///
/// Redis stores byte strings, so the checkers compare scalars by their canonical text:
/// `Int(5)` and `Str("5")` are the same value. A harness may therefore record replies as
/// strings without parsing them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Value {
    /// No value: nil, or nothing to record.
    #[default]
    None,
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A list (the result of `LRANGE`).
    List(Vec<Value>),
    /// A map (the argument of `HSET`, the result of `HGETALL`).
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The canonical text of a scalar (`Int` or `Str`), `None` for anything else.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Int(i) => Some(i.to_string()),
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A map from string pairs, for `HSET` arguments and `HGETALL` results.
    pub fn map<K: Into<String>, V: Into<Value>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A list from elements, for `LRANGE` results.
    pub fn list<V: Into<Value>>(elements: impl IntoIterator<Item = V>) -> Value {
        Value::List(elements.into_iter().map(Into::into).collect())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::None, Into::into)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("nil"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One record of the history: an invocation or a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history; defines real-time order. Unique.
    pub index: u64,
    /// The logical client that issued the operation; at most one outstanding operation.
    pub process: u64,
    /// Invocation or outcome.
    pub kind: Kind,
    /// The function called.
    pub f: F,
    /// The key it touches.
    pub key: String,
    /// Argument (invocation) or result (completion); see the module table.
    #[serde(default)]
    pub value: Value,
    /// Nanoseconds since the start of the test, informational.
    #[serde(default)]
    pub time_ns: u64,
}

/// Writes `ops` as JSON lines, one record per line.
pub fn write_jsonl<W: Write>(mut out: W, ops: &[Op]) -> anyhow::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads JSON lines written by [`write_jsonl`]; blank lines are skipped. A line that does
/// not parse is an error naming its line number.
pub fn read_jsonl<R: BufRead>(input: R) -> anyhow::Result<Vec<Op>> {
    let mut ops = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("history line {}: {e}", n + 1))?;
        ops.push(op);
    }
    Ok(ops)
}

/// A pending invocation returned by [`Recorder::invoke`], to be completed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The process that invoked it.
    pub process: u64,
    /// The function.
    pub f: F,
    /// The key.
    pub key: String,
}

/// Records a history with indexes and timestamps, safe to share between tasks.
///
/// Call [`Recorder::invoke`] right before sending a request and one of
/// [`Recorder::ok`], [`Recorder::fail`] or [`Recorder::info`] once its outcome is known;
/// the index order then is a real-time order.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history; `time_ns` counts from now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// The instant `time_ns` counts from.
    pub fn started(&self) -> Instant {
        self.start
    }

    fn push(&self, process: u64, kind: Kind, f: F, key: &str, value: Value) {
        let time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // A poisoned lock only means another thread panicked while pushing; the vector
        // itself is still a valid history.
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            process,
            kind,
            f,
            key: key.to_string(),
            value,
            time_ns,
        });
    }

    /// Records an invocation of `f` on `key` with argument `value` by `process`.
    pub fn invoke(&self, process: u64, f: F, key: impl Into<String>, value: Value) -> Pending {
        let key = key.into();
        self.push(process, Kind::Invoke, f, &key, value);
        Pending { process, f, key }
    }

    /// Records that `op` happened and returned `value`.
    pub fn ok(&self, op: &Pending, value: Value) {
        self.push(op.process, Kind::Ok, op.f, &op.key, value);
    }

    /// Records that `op` certainly did not happen; `value` may hold the error.
    pub fn fail(&self, op: &Pending, value: Value) {
        self.push(op.process, Kind::Fail, op.f, &op.key, value);
    }

    /// Records that the outcome of `op` is unknown; `value` may hold the error. The
    /// process must not be used again.
    pub fn info(&self, op: &Pending, value: Value) {
        self.push(op.process, Kind::Info, op.f, &op.key, value);
    }

    /// A copy of the records so far.
    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The recorded history.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a paired operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Happened, with `output` as its result.
    Ok,
    /// Did not happen.
    Fail,
    /// May have happened at any time after its invocation.
    Info,
}

/// An invocation paired with its completion: what the checkers work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The issuing process.
    pub process: u64,
    /// The function.
    pub f: F,
    /// The key.
    pub key: String,
    /// The invocation's index (real-time start).
    pub invoke: u64,
    /// The completion's index; `None` if the invocation never completed. For an `Info`
    /// outcome the effective end is the end of the history, whatever this says.
    pub complete: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The invocation's value (the argument).
    pub input: Value,
    /// The completion's value (the result; meaningful for `Ok` only).
    pub output: Value,
}

impl Operation {
    /// The real-time end: the completion index for `Ok` and `Fail`, `None` (the end of the
    /// history) for `Info`.
    pub fn end(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Info => None,
            Outcome::Ok | Outcome::Fail => self.complete,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} {}", self.process, self.f.name())?;
        if self.input != Value::None {
            write!(f, " {}", self.input)?;
        }
        match self.outcome {
            Outcome::Ok => {
                if self.output != Value::None
                    || matches!(self.f, F::Read | F::ReadList | F::ReadStr)
                {
                    write!(f, " -> {}", self.output)?;
                }
                write!(f, " ok")?;
            }
            Outcome::Fail => write!(f, " fail")?,
            Outcome::Info => write!(f, " info")?,
        }
        match self.complete {
            Some(c) => write!(f, " [{}..{}]", self.invoke, c),
            None => write!(f, " [{}..]", self.invoke),
        }
    }
}

/// The result of [`pair`]: operations in invocation order, and what was malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paired {
    /// Paired operations, sorted by invocation index.
    pub operations: Vec<Operation>,
    /// Malformed records (a completion without an invocation, a process with two
    /// outstanding invocations, a duplicate index, ...). Never fatal.
    pub problems: Vec<String>,
}

/// Pairs invocations with completions by process, in index order.
///
/// Records are sorted by `index` first (stable). Malformations become problems, never
/// panics: a completion with no outstanding invocation (or a different `f`/`key`) is
/// dropped, an invocation on a process that already has one outstanding turns the older
/// one into `Info`, an `Invoke` never completed becomes `Info`.
pub fn pair(ops: &[Op]) -> Paired {
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|op| op.index);
    let mut problems = Vec::new();
    let mut operations = Vec::new();
    let mut outstanding: HashMap<u64, Operation> = HashMap::new();
    let mut last_index = None;
    for op in sorted {
        if last_index == Some(op.index) {
            problems.push(format!(
                "history: index {} appears more than once",
                op.index
            ));
        }
        last_index = Some(op.index);
        match op.kind {
            Kind::Invoke => {
                let new = Operation {
                    process: op.process,
                    f: op.f,
                    key: op.key.clone(),
                    invoke: op.index,
                    complete: None,
                    outcome: Outcome::Info,
                    input: op.value.clone(),
                    output: Value::None,
                };
                if let Some(old) = outstanding.insert(op.process, new) {
                    problems.push(format!(
                        "history: process {} invoked at index {} while its invocation at \
                         index {} was outstanding (treated as info)",
                        op.process, op.index, old.invoke
                    ));
                    operations.push(old);
                }
            }
            Kind::Ok | Kind::Fail | Kind::Info => {
                let Some(mut pending) = outstanding.remove(&op.process) else {
                    problems.push(format!(
                        "history: completion at index {} for process {} has no outstanding \
                         invocation (dropped)",
                        op.index, op.process
                    ));
                    continue;
                };
                if pending.f != op.f || pending.key != op.key {
                    problems.push(format!(
                        "history: completion at index {} ({} {:?}) does not match process \
                         {}'s invocation at index {} ({} {:?}); the invocation is treated as \
                         info",
                        op.index,
                        op.f.name(),
                        op.key,
                        op.process,
                        pending.invoke,
                        pending.f.name(),
                        pending.key
                    ));
                    operations.push(pending);
                    continue;
                }
                pending.complete = Some(op.index);
                pending.outcome = match op.kind {
                    Kind::Ok => Outcome::Ok,
                    Kind::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                pending.output = op.value.clone();
                operations.push(pending);
            }
        }
    }
    operations.extend(outstanding.into_values());
    operations.sort_by_key(|o| o.invoke);
    Paired {
        operations,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip_and_plain_json_values() {
        let r = Recorder::new();
        let w = r.invoke(1, F::Write, "k", Value::Int(3));
        r.ok(&w, Value::None);
        let a = r.invoke(2, F::Append, "l", "x".into());
        r.info(&a, "timeout".into());
        let h = r.invoke(3, F::HSet, "s", Value::map([("f", "v")]));
        r.fail(&h, Value::None);
        let g = r.invoke(4, F::ReadList, "l", Value::None);
        r.ok(&g, Value::list([Value::Int(1), "x".into()]));
        let ops = r.into_ops();
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &ops).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains(r#""kind":"invoke","f":"write","key":"k","value":3"#));
        assert!(text.contains(r#""value":[1,"x"]"#));
        assert!(text.contains(r#""f":"hset","key":"s","value":{"f":"v"}"#));
        assert!(text.contains(r#""value":null"#));
        assert_eq!(read_jsonl(&buf[..]).unwrap(), ops);
    }

    #[test]
    fn the_readme_example_parses_and_checks() {
        let readme = include_str!("../README.md");
        let lines: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("{\"index\""))
            .collect();
        assert_eq!(lines.len(), 8);
        let ops = read_jsonl(lines.join("\n").as_bytes()).unwrap();
        let report = crate::check(&ops);
        assert!(report.valid(), "{report:#?}");
        assert_eq!(report.register.ops, 2);
    }

    #[test]
    fn read_jsonl_names_the_bad_line() {
        let text = "\n{\"index\":0,\"process\":0,\"kind\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}\nnope\n";
        let err = read_jsonl(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    fn rec(index: u64, process: u64, kind: Kind, f: F, key: &str) -> Op {
        Op {
            index,
            process,
            kind,
            f,
            key: key.into(),
            value: Value::None,
            time_ns: 0,
        }
    }

    #[test]
    fn pairing_reports_malformed_records() {
        let ops = vec![
            rec(0, 1, Kind::Ok, F::Read, "k"),
            rec(1, 2, Kind::Invoke, F::Read, "k"),
            rec(2, 2, Kind::Invoke, F::Write, "k"),
            rec(3, 2, Kind::Ok, F::Read, "k"),
            rec(3, 3, Kind::Invoke, F::Read, "k"),
        ];
        let p = pair(&ops);
        assert_eq!(p.problems.len(), 4, "{:#?}", p.problems);
        assert_eq!(p.operations.len(), 3);
        assert!(p.operations.iter().all(|o| o.outcome == Outcome::Info));
    }

    #[test]
    fn pairing_sorts_by_index() {
        let mut ops = vec![
            rec(5, 1, Kind::Ok, F::Read, "k"),
            rec(2, 1, Kind::Invoke, F::Read, "k"),
        ];
        ops[0].value = Value::Int(1);
        let p = pair(&ops);
        assert!(p.problems.is_empty());
        assert_eq!(p.operations[0].complete, Some(5));
        assert_eq!(p.operations[0].output, Value::Int(1));
        assert_eq!(p.operations[0].outcome, Outcome::Ok);
    }
}
