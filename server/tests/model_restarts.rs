//! Model-based test with restarts (in the manner of sled's `tests/tree`): random
//! sequences of writes over a few colliding keys, SAVE (snapshot + compaction) and
//! RESTART (the in-process server dropped and started again on the same data dir),
//! checked against an in-memory model of Redis semantics.
//!
//! Every reply the model can predict is compared as it comes; after every RESTART and at
//! the end the whole keyspace (KEYS, TYPE, GET/HGETALL/LRANGE/SMEMBERS, TTL presence) is
//! compared with the model.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use common::TestServer;
use kelvin_server::config::AppendFsync;
use proptest::prelude::*;

const KEYS: &[&str] = &["k0", "k1", "k2", "k3"];
const FIELDS: &[&str] = &["f0", "f1", "f2"];
const VALUES: &[&str] = &["1", "7", "-2", "x", "ab", "10"];
/// EXPIRE seconds: long enough that nothing expires during a test.
const LONG_TTL: &str = "100000";

#[derive(Debug, Clone)]
enum Op {
    Set(usize, usize),
    Del(usize),
    Incr(usize),
    Append(usize, usize),
    HSet(usize, usize, usize),
    HDel(usize, usize),
    RPush(usize, usize),
    LPop(usize),
    SAdd(usize, usize),
    SRem(usize, usize),
    Expire(usize),
    Persist(usize),
    FlushDb,
    Save,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let f = 0..FIELDS.len();
    let v = 0..VALUES.len();
    prop_oneof![
        6 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        3 => k.clone().prop_map(Op::Del),
        4 => k.clone().prop_map(Op::Incr),
        3 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Append(k, v)),
        5 => (k.clone(), f.clone(), v.clone()).prop_map(|(k, f, v)| Op::HSet(k, f, v)),
        3 => (k.clone(), f.clone()).prop_map(|(k, f)| Op::HDel(k, f)),
        5 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::RPush(k, v)),
        3 => k.clone().prop_map(Op::LPop),
        5 => (k.clone(), f.clone()).prop_map(|(k, m)| Op::SAdd(k, m)),
        3 => (k.clone(), f.clone()).prop_map(|(k, m)| Op::SRem(k, m)),
        2 => k.clone().prop_map(Op::Expire),
        1 => k.prop_map(Op::Persist),
        1 => Just(Op::FlushDb),
        2 => Just(Op::Save),
        3 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MValue {
    Str(Vec<u8>),
    Hash(BTreeMap<String, String>),
    List(VecDeque<String>),
    Set(BTreeSet<String>),
}

impl MValue {
    fn type_name(&self) -> &'static str {
        match self {
            MValue::Str(_) => "string",
            MValue::Hash(_) => "hash",
            MValue::List(_) => "list",
            MValue::Set(_) => "set",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MEntry {
    value: MValue,
    ttl: bool,
}

/// What a command answers, as far as the model tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Ok,
    Int(i64),
    Nil,
    Bulk(Vec<u8>),
    /// The error code only (WRONGTYPE, ERR).
    Err(String),
    Other(String),
}

fn reply_of(r: redis::RedisResult<redis::Value>) -> Reply {
    match r {
        Ok(redis::Value::Okay) => Reply::Ok,
        Ok(redis::Value::SimpleString(s)) if s == "OK" => Reply::Ok,
        Ok(redis::Value::Int(i)) => Reply::Int(i),
        Ok(redis::Value::Nil) => Reply::Nil,
        Ok(redis::Value::BulkString(b)) => Reply::Bulk(b),
        Ok(other) => Reply::Other(format!("{other:?}")),
        Err(e) => Reply::Err(e.code().unwrap_or("?").to_string()),
    }
}

fn wrongtype() -> Reply {
    Reply::Err("WRONGTYPE".into())
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, MEntry>,
}

impl Model {
    /// Applies `op` and returns the reply Redis would give (None for SAVE/RESTART).
    fn apply(&mut self, op: &Op) -> Option<Reply> {
        let key = |k: &usize| KEYS[*k].to_string();
        Some(match op {
            Op::Set(k, v) => {
                self.keys.insert(
                    key(k),
                    MEntry {
                        value: MValue::Str(VALUES[*v].as_bytes().to_vec()),
                        ttl: false,
                    },
                );
                Reply::Ok
            }
            Op::Del(k) => Reply::Int(self.keys.remove(&key(k)).is_some() as i64),
            Op::Incr(k) => match self.keys.get_mut(&key(k)) {
                None => {
                    self.keys.insert(
                        key(k),
                        MEntry {
                            value: MValue::Str(b"1".to_vec()),
                            ttl: false,
                        },
                    );
                    Reply::Int(1)
                }
                Some(MEntry {
                    value: MValue::Str(s),
                    ..
                }) => match std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|n| n.checked_add(1))
                {
                    Some(n) => {
                        *s = n.to_string().into_bytes();
                        Reply::Int(n)
                    }
                    None => Reply::Err("ERR".into()),
                },
                Some(_) => wrongtype(),
            },
            Op::Append(k, v) => match self.keys.get_mut(&key(k)) {
                None => {
                    self.keys.insert(
                        key(k),
                        MEntry {
                            value: MValue::Str(VALUES[*v].as_bytes().to_vec()),
                            ttl: false,
                        },
                    );
                    Reply::Int(VALUES[*v].len() as i64)
                }
                Some(MEntry {
                    value: MValue::Str(s),
                    ..
                }) => {
                    s.extend_from_slice(VALUES[*v].as_bytes());
                    Reply::Int(s.len() as i64)
                }
                Some(_) => wrongtype(),
            },
            Op::HSet(k, f, v) => {
                let e = self.keys.entry(key(k)).or_insert(MEntry {
                    value: MValue::Hash(BTreeMap::new()),
                    ttl: false,
                });
                match &mut e.value {
                    MValue::Hash(h) => {
                        Reply::Int(h.insert(FIELDS[*f].into(), VALUES[*v].into()).is_none() as i64)
                    }
                    _ => wrongtype(),
                }
            }
            Op::HDel(k, f) => self.remove_member(&key(k), "hash", |v| match v {
                MValue::Hash(h) => (h.remove(FIELDS[*f]).is_some(), h.is_empty()),
                _ => unreachable!(),
            }),
            Op::RPush(k, v) => {
                let e = self.keys.entry(key(k)).or_insert(MEntry {
                    value: MValue::List(VecDeque::new()),
                    ttl: false,
                });
                match &mut e.value {
                    MValue::List(l) => {
                        l.push_back(VALUES[*v].into());
                        Reply::Int(l.len() as i64)
                    }
                    _ => wrongtype(),
                }
            }
            Op::LPop(k) => {
                let name = key(k);
                match self.keys.get_mut(&name) {
                    None => Reply::Nil,
                    Some(MEntry {
                        value: MValue::List(l),
                        ..
                    }) => {
                        let v = l.pop_front().expect("lists in the model are never empty");
                        if l.is_empty() {
                            self.keys.remove(&name);
                        }
                        Reply::Bulk(v.into_bytes())
                    }
                    Some(_) => wrongtype(),
                }
            }
            Op::SAdd(k, m) => {
                let e = self.keys.entry(key(k)).or_insert(MEntry {
                    value: MValue::Set(BTreeSet::new()),
                    ttl: false,
                });
                match &mut e.value {
                    MValue::Set(s) => Reply::Int(s.insert(FIELDS[*m].into()) as i64),
                    _ => wrongtype(),
                }
            }
            Op::SRem(k, m) => self.remove_member(&key(k), "set", |v| match v {
                MValue::Set(s) => (s.remove(FIELDS[*m]), s.is_empty()),
                _ => unreachable!(),
            }),
            Op::Expire(k) => match self.keys.get_mut(&key(k)) {
                Some(e) => {
                    e.ttl = true;
                    Reply::Int(1)
                }
                None => Reply::Int(0),
            },
            Op::Persist(k) => match self.keys.get_mut(&key(k)) {
                Some(e) if e.ttl => {
                    e.ttl = false;
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            },
            Op::FlushDb => {
                self.keys.clear();
                Reply::Ok
            }
            Op::Save => Reply::Ok,
            Op::Restart => return None,
        })
    }

    /// HDEL / SREM: 0 on a missing key, WRONGTYPE on another type, else the removal
    /// (and the key goes when the collection empties).
    fn remove_member(
        &mut self,
        key: &str,
        want: &str,
        remove: impl FnOnce(&mut MValue) -> (bool, bool),
    ) -> Reply {
        match self.keys.get_mut(key) {
            None => Reply::Int(0),
            Some(e) if e.value.type_name() != want => wrongtype(),
            Some(e) => {
                let (removed, empty) = remove(&mut e.value);
                if empty {
                    self.keys.remove(key);
                }
                Reply::Int(removed as i64)
            }
        }
    }
}

fn argv(op: &Op) -> Vec<String> {
    let s = |x: &str| x.to_string();
    match op {
        Op::Set(k, v) => vec![s("SET"), s(KEYS[*k]), s(VALUES[*v])],
        Op::Del(k) => vec![s("DEL"), s(KEYS[*k])],
        Op::Incr(k) => vec![s("INCR"), s(KEYS[*k])],
        Op::Append(k, v) => vec![s("APPEND"), s(KEYS[*k]), s(VALUES[*v])],
        Op::HSet(k, f, v) => vec![s("HSET"), s(KEYS[*k]), s(FIELDS[*f]), s(VALUES[*v])],
        Op::HDel(k, f) => vec![s("HDEL"), s(KEYS[*k]), s(FIELDS[*f])],
        Op::RPush(k, v) => vec![s("RPUSH"), s(KEYS[*k]), s(VALUES[*v])],
        Op::LPop(k) => vec![s("LPOP"), s(KEYS[*k])],
        Op::SAdd(k, m) => vec![s("SADD"), s(KEYS[*k]), s(FIELDS[*m])],
        Op::SRem(k, m) => vec![s("SREM"), s(KEYS[*k]), s(FIELDS[*m])],
        Op::Expire(k) => vec![s("EXPIRE"), s(KEYS[*k]), s(LONG_TTL)],
        Op::Persist(k) => vec![s("PERSIST"), s(KEYS[*k])],
        Op::FlushDb => vec![s("FLUSHDB")],
        Op::Save => vec![s("SAVE")],
        Op::Restart => vec![],
    }
}

fn run(con: &mut redis::Connection, args: &[String]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a.as_str());
    }
    cmd.query(con)
}

fn start(dir: &Path) -> (TestServer, redis::Connection) {
    let dir = dir.to_path_buf();
    let server = TestServer::start_with(move |s| {
        s.data_dir = dir;
        s.appendfsync = AppendFsync::Always;
    });
    let con = server.client();
    (server, con)
}

/// Reads the whole of database 0 back into the model's shape.
fn read_keyspace(con: &mut redis::Connection) -> BTreeMap<String, MEntry> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS *");
    let mut out = BTreeMap::new();
    for key in keys {
        let ty: String = redis::cmd("TYPE").arg(&key).query(con).expect("TYPE");
        let value = match ty.as_str() {
            "string" => MValue::Str(redis::cmd("GET").arg(&key).query(con).expect("GET")),
            "hash" => MValue::Hash(redis::cmd("HGETALL").arg(&key).query(con).expect("HGETALL")),
            "list" => {
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query(con)
                    .expect("LRANGE");
                MValue::List(items.into())
            }
            "set" => MValue::Set(
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query(con)
                    .expect("SMEMBERS"),
            ),
            other => panic!("key {key} has unexpected type {other}"),
        };
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(con).expect("TTL");
        assert!(ttl == -1 || ttl > 0, "TTL {key} = {ttl}");
        out.insert(
            key,
            MEntry {
                value,
                ttl: ttl > 0,
            },
        );
    }
    out
}

fn check_keyspace(con: &mut redis::Connection, model: &Model, when: &str, history: &[Op]) {
    let got = read_keyspace(con);
    assert_eq!(
        got, model.keys,
        "keyspace differs from the model {when}; ops so far: {history:?}"
    );
}

fn run_ops(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let (mut server, mut con) = start(&path);
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let history = &ops[..=i];
        if let Op::Restart = op {
            drop(con);
            drop(server);
            (server, con) = start(&path);
            check_keyspace(
                &mut con,
                &model,
                &format!("after RESTART (op {i})"),
                history,
            );
            continue;
        }
        let expected = model.apply(op).expect("a command");
        let got = reply_of(run(&mut con, &argv(op)));
        assert_eq!(
            got, expected,
            "reply to op {i} {op:?} differs from the model; ops so far: {history:?}"
        );
    }
    check_keyspace(&mut con, &model, "at the end", ops);
    // And once more from disk.
    drop(con);
    drop(server);
    let (_server, mut con) = start(&path);
    check_keyspace(&mut con, &model, "after the final restart", ops);
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=500 for a longer hunt.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn writes_survive_saves_and_restarts(ops in prop::collection::vec(op(), 1..60)) {
        run_ops(&ops);
    }
}

/// A fixed sequence that goes through every kind of op, with a SAVE between writes and
/// restarts on both sides of it (so both the snapshot and the log after it are replayed).
#[test]
fn fixed_sequence_with_save_and_restarts() {
    let ops = vec![
        Op::Set(0, 0),
        Op::Incr(0),
        Op::HSet(1, 0, 3),
        Op::RPush(2, 4),
        Op::RPush(2, 1),
        Op::SAdd(3, 2),
        Op::Expire(1),
        Op::Restart,
        Op::Save,
        Op::Append(0, 3),
        Op::LPop(2),
        Op::SRem(3, 2),
        Op::Restart,
        Op::HDel(1, 0),
        Op::Save,
        Op::Incr(0),
        Op::Restart,
        Op::Set(1, 5),
        Op::FlushDb,
        Op::Restart,
        Op::Set(2, 2),
        Op::Save,
        Op::Save,
        Op::Restart,
    ];
    run_ops(&ops);
}
