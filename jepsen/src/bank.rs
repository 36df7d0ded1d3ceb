//! The bank workload's requests: transfers between accounts of different groups, through
//! `MULTI`/`EXEC` and through a Lua script, and reads of every account in one
//! transaction (`MULTI`/`EXEC` or a script). What is checked is in
//! [`kelvin_jepsen::checker::bank`].
//!
//! How it fits: a worker ([`crate::workload`]) sends one bank operation in ten. The
//! accounts of generation `g` are `b0.g` .. `b5.g` (the workers' key names, so that the
//! `reshard` nemesis moves their slots too); account `a` is two Redis keys in one slot,
//! its balance `{a}` and its log `{a}:log`, and the accounts hash to slots of every
//! group. A transfer moves 1 to [`MAX_AMOUNT`] from one account to another and appends
//! its unique id to both logs: `DECRBY`, `RPUSH`, `INCRBY`, `RPUSH`, all or nothing.
//! Balances may go negative: the total, zero, is what must hold.

use kelvin_jepsen::history::{Pending, Recorder, Value, F};
use rand::Rng;

use crate::workload::{key_name, KEYS};

/// Accounts per generation.
pub const ACCOUNTS: usize = KEYS;
/// The largest amount a transfer moves.
pub const MAX_AMOUNT: i64 = 5;
/// The workers' key prefix of the accounts.
pub const PREFIX: &str = "b";

/// A transfer as one script: the same four writes as the `MULTI` form.
const TRANSFER_LUA: &str = "redis.call('DECRBY', KEYS[1], ARGV[1]) \
    redis.call('RPUSH', KEYS[2], ARGV[2]) \
    redis.call('INCRBY', KEYS[3], ARGV[1]) \
    redis.call('RPUSH', KEYS[4], ARGV[2]) \
    return 1";

/// Every account read by one script: balance, log, balance, log...
const READ_LUA: &str = "local out = {} \
    for i = 1, #KEYS, 2 do \
      out[#out + 1] = redis.call('GET', KEYS[i]) or false \
      out[#out + 1] = redis.call('LRANGE', KEYS[i + 1], 0, -1) \
    end \
    return out";

/// The history key of generation `gen`'s bank.
pub fn bank_key(gen: u64) -> String {
    format!("bank.{gen}")
}

fn balance_key(account: &str) -> String {
    format!("{{{account}}}")
}

fn log_key(account: &str) -> String {
    format!("{{{account}}}:log")
}

fn accounts(gen: u64) -> Vec<String> {
    (0..ACCOUNTS).map(|i| key_name(PREFIX, i, gen)).collect()
}

/// What an operation's sender learned: whether its outcome is known (else the process
/// must change), and whether the connection may be used again.
pub struct Sent {
    pub known: bool,
    pub keep: bool,
}

/// One random bank operation of generation `gen` by `process`: a transfer (half of them
/// by script) or a read (a quarter of them by script). `hot`, if given, is the index of
/// an account in moving slots: a transfer takes from it.
pub fn operate(
    c: &mut redis::Connection,
    recorder: &Recorder,
    rng: &mut impl Rng,
    process: u64,
    gen: u64,
    unique: u64,
    hot: Option<usize>,
) -> Sent {
    let names = accounts(gen);
    if rng.gen_bool(0.5) {
        let from = hot.unwrap_or_else(|| rng.gen_range(0..ACCOUNTS)) % ACCOUNTS;
        let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = rng.gen_range(1..=MAX_AMOUNT);
        let script = rng.gen_bool(0.5);
        let input = Value::map([
            ("from", Value::from(names[from].as_str())),
            ("to", Value::from(names[to].as_str())),
            ("amount", Value::Int(amount)),
            ("id", Value::from(unique.to_string())),
            ("via", Value::from(if script { "lua" } else { "multi" })),
        ]);
        let op = recorder.invoke(process, F::Transfer, bank_key(gen), input);
        let (from, to) = (&names[from], &names[to]);
        if script {
            let result = redis::cmd("EVAL")
                .arg(TRANSFER_LUA)
                .arg(4)
                .arg(balance_key(from))
                .arg(log_key(from))
                .arg(balance_key(to))
                .arg(log_key(to))
                .arg(amount)
                .arg(unique)
                .query::<redis::Value>(c);
            return written(recorder, &op, result.map(|_| ()));
        }
        transfer_multi(c, recorder, &op, from, to, amount, unique)
    } else {
        let script = rng.gen_ratio(1, 4);
        let input = match script {
            true => Value::map([("via", "lua")]),
            false => Value::None,
        };
        let op = recorder.invoke(process, F::BankRead, bank_key(gen), input);
        let result = if script {
            read_script(c, &names)
        } else {
            read_multi(c, &names)
        };
        match result {
            Ok(Some(v)) => {
                recorder.ok(&op, v);
                Sent {
                    known: true,
                    keep: true,
                }
            }
            // A read did nothing, whatever went wrong; the connection is not reused.
            Ok(None) => {
                recorder.fail(&op, "not a read of every account".into());
                Sent {
                    known: true,
                    keep: false,
                }
            }
            Err(e) => {
                recorder.fail(&op, Value::Str(e.to_string()));
                Sent {
                    known: true,
                    keep: false,
                }
            }
        }
    }
}

/// The outcome of a write whose only reply is its own: `TRYAGAIN` (Kelvin's word that
/// the write was not applied) is `fail`, anything else unexpected is unknown.
fn written(recorder: &Recorder, op: &Pending, result: redis::RedisResult<()>) -> Sent {
    match result {
        Ok(()) => {
            recorder.ok(op, Value::None);
            Sent {
                known: true,
                keep: true,
            }
        }
        Err(e) if e.code() == Some("TRYAGAIN") || e.code() == Some("EXECABORT") => {
            recorder.fail(op, Value::Str(e.to_string()));
            Sent {
                known: true,
                keep: false,
            }
        }
        Err(e) => {
            recorder.info(op, Value::Str(e.to_string()));
            Sent {
                known: false,
                keep: false,
            }
        }
    }
}

/// `MULTI`, the four writes (each must answer `QUEUED`), `EXEC`.
fn transfer_multi(
    c: &mut redis::Connection,
    recorder: &Recorder,
    op: &Pending,
    from: &str,
    to: &str,
    amount: i64,
    id: u64,
) -> Sent {
    let mut commands = vec![redis::cmd("MULTI")];
    let mut decr = redis::cmd("DECRBY");
    decr.arg(balance_key(from)).arg(amount);
    let mut push_from = redis::cmd("RPUSH");
    push_from.arg(log_key(from)).arg(id);
    let mut incr = redis::cmd("INCRBY");
    incr.arg(balance_key(to)).arg(amount);
    let mut push_to = redis::cmd("RPUSH");
    push_to.arg(log_key(to)).arg(id);
    commands.extend([decr, push_from, incr, push_to]);
    for (i, cmd) in commands.iter().enumerate() {
        let expect = if i == 0 { "OK" } else { "QUEUED" };
        match cmd.query::<redis::Value>(c) {
            Ok(redis::Value::Okay) if i == 0 => {}
            Ok(redis::Value::SimpleString(s)) if s == expect => {}
            // Anything but the expected answer: the command may have run outside the
            // transaction.
            Ok(other) => {
                recorder.info(op, Value::Str(format!("{other:?}")));
                return Sent {
                    known: false,
                    keep: false,
                };
            }
            // EXEC never goes out and the connection is dropped (discarding what was
            // queued): nothing was applied.
            Err(e) => {
                recorder.fail(op, Value::Str(e.to_string()));
                return Sent {
                    known: true,
                    keep: false,
                };
            }
        }
    }
    match redis::cmd("EXEC").query::<redis::Value>(c) {
        Ok(redis::Value::Array(_)) => written(recorder, op, Ok(())),
        // Aborted (no WATCH here: it should not happen, and nothing may show if it does).
        Ok(redis::Value::Nil) => {
            recorder.fail(op, Value::None);
            Sent {
                known: true,
                keep: true,
            }
        }
        Ok(other) => {
            recorder.info(op, Value::Str(format!("{other:?}")));
            Sent {
                known: false,
                keep: false,
            }
        }
        Err(e) => written(recorder, op, Err(e)),
    }
}

fn text(v: &redis::Value) -> Option<Value> {
    match v {
        redis::Value::Nil => Some(Value::None),
        redis::Value::BulkString(b) => Some(Value::Str(String::from_utf8_lossy(b).into_owned())),
        redis::Value::Int(i) => Some(Value::Int(*i)),
        redis::Value::SimpleString(s) => Some(Value::Str(s.clone())),
        _ => None,
    }
}

/// The history value of balance, log, balance, log... replies: `None` if they are not
/// that.
fn read_value(names: &[String], replies: &[redis::Value]) -> Option<Value> {
    if replies.len() != 2 * names.len() {
        return None;
    }
    let mut out = Vec::new();
    for (name, pair) in names.iter().zip(replies.chunks(2)) {
        let balance = text(&pair[0])?;
        let log = match &pair[1] {
            redis::Value::Array(items) => {
                Value::List(items.iter().map(text).collect::<Option<_>>()?)
            }
            redis::Value::Nil => Value::List(Vec::new()),
            _ => return None,
        };
        out.push((
            name.clone(),
            Value::map([("balance", balance), ("log", log)]),
        ));
    }
    Some(Value::map(out))
}

/// `MULTI`, `GET` and `LRANGE` of every account, `EXEC`. `Ok(None)`: the replies were
/// not those of a read of every account.
pub fn read_multi(
    c: &mut redis::Connection,
    names: &[String],
) -> redis::RedisResult<Option<Value>> {
    let mut queue = redis::pipe();
    queue.cmd("MULTI");
    for name in names {
        queue.cmd("GET").arg(balance_key(name));
        queue.cmd("LRANGE").arg(log_key(name)).arg(0).arg(-1);
    }
    queue.query::<Vec<redis::Value>>(c)?;
    match redis::cmd("EXEC").query::<redis::Value>(c)? {
        redis::Value::Array(replies) => Ok(read_value(names, &replies)),
        _ => Ok(None),
    }
}

fn read_script(c: &mut redis::Connection, names: &[String]) -> redis::RedisResult<Option<Value>> {
    let mut call = redis::cmd("EVAL");
    call.arg(READ_LUA).arg(2 * names.len());
    for name in names {
        call.arg(balance_key(name)).arg(log_key(name));
    }
    match call.query::<redis::Value>(c)? {
        redis::Value::Array(replies) => Ok(read_value(names, &replies)),
        _ => Ok(None),
    }
}

/// The final read of generation `gen`'s bank by `process`, tried up to `attempts` times
/// on the nodes in turn.
pub fn final_read(recorder: &Recorder, addrs: &[String], process: u64, gen: u64, attempts: usize) {
    let names = accounts(gen);
    for attempt in 0..attempts {
        let Some(mut c) = crate::workload::connect(&addrs[attempt % addrs.len()]) else {
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        };
        let op = recorder.invoke(process, F::BankRead, bank_key(gen), Value::None);
        match read_multi(&mut c, &names) {
            Ok(Some(v)) => {
                recorder.ok(&op, v);
                return;
            }
            Ok(None) => recorder.fail(&op, "not a read of every account".into()),
            Err(e) => recorder.fail(&op, Value::Str(e.to_string())),
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
