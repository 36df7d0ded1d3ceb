//! The bank: transfers between accounts that live in different groups, and reads of
//! every account in one transaction. The total is conserved and no read is torn.
//!
//! How it fits: [`super::check`] hands it every operation; it keeps `transfer` and
//! `bank_read` (see [`crate::history`] for their values) and judges each bank (a
//! history key) on its own. A transfer appends its unique id to the logs of both its
//! accounts and moves its amount between their balances, all or nothing; so every
//! successful read must show, for every account, a balance that its log adds up to, and
//! every transfer it shows on both accounts (a [`Reason::TornRead`] otherwise: half a
//! transfer, or a balance out of step with its log, or a total that is not zero). Then:
//!
//! - [`Reason::LostTransfer`]: a read misses a transfer acknowledged before the read
//!   began (the final read after healing misses every lost one);
//! - [`Reason::PhantomTransfer`]: a read shows a transfer that failed, that was invoked
//!   only after the read ended, that no transfer carried, on an account it does not
//!   touch, or twice;
//! - [`Reason::TransferOrder`]: reads disagree on an account's log (each must be a
//!   prefix of the longest), a read misses a transfer a read that ended before it began
//!   had seen, the logs order transfers in a cycle (account A has t1 before t2, B has t2
//!   before t1: no serial order), or a log puts a transfer before one that was
//!   acknowledged before it was invoked (strict serializability);
//! - [`Reason::NoSuccessfulRead`]: acknowledged transfers and no successful read.
//!
//! Transfers whose outcome is unknown (`info`) may or may not show, from their
//! invocation on.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Problem, Reason, Verdict};
use crate::history::{Operation, Outcome, Value, Workload, F};

/// Most problems reported per bank and kind, so one bad bank does not flood the report.
const SHOWN_PER_KIND: usize = 5;

/// A transfer as invoked.
#[derive(Debug)]
struct Transfer<'a> {
    op: &'a Operation,
    from: String,
    to: String,
    amount: i64,
}

impl Transfer<'_> {
    /// What it adds to `account`'s balance.
    fn delta(&self, account: &str) -> i64 {
        if account == self.to {
            self.amount
        } else if account == self.from {
            -self.amount
        } else {
            0
        }
    }
}

/// One account as a read saw it.
#[derive(Debug)]
struct Account {
    balance: i64,
    log: Vec<String>,
}

/// A successful read: every account's balance and log.
struct Read<'a> {
    op: &'a Operation,
    accounts: BTreeMap<String, Account>,
}

/// Checks every bank in `operations`.
pub fn check(operations: &[Operation]) -> Verdict {
    let mut banks: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in operations {
        if op.f.workload() == Workload::Bank {
            banks.entry(&op.key).or_default().push(op);
        }
    }
    let mut verdict = Verdict {
        keys: banks.len(),
        ..Verdict::default()
    };
    for (bank, ops) in banks {
        verdict.ops += ops.len();
        let mut found = check_bank(bank, &ops);
        // At most a few of each kind.
        let mut shown: HashMap<Reason, usize> = HashMap::new();
        found.retain(|p| {
            let n = shown.entry(p.reason).or_default();
            *n += 1;
            *n <= SHOWN_PER_KIND
        });
        verdict.problems.extend(found);
    }
    verdict.valid = verdict.problems.is_empty();
    verdict
}

/// A read named without its (long) result: process, function, via, and its span.
fn brief(op: &Operation) -> String {
    let via = match &op.input {
        Value::Map(m) => m
            .get("via")
            .map(|v| format!(" via {v}"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    match op.complete {
        Some(c) => format!(
            "p{} {}{via} [{}..{}]",
            op.process,
            op.f.name(),
            op.invoke,
            c
        ),
        None => format!("p{} {}{via} [{}..]", op.process, op.f.name(), op.invoke),
    }
}

fn text(v: &Value) -> Option<String> {
    v.scalar_text()
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::None => Some(0),
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_transfer(op: &Operation) -> Option<(String, Transfer<'_>)> {
    let Value::Map(m) = &op.input else {
        return None;
    };
    let from = text(m.get("from")?)?;
    let to = text(m.get("to")?)?;
    let amount = match m.get("amount")? {
        Value::None => return None,
        v => int(v)?,
    };
    let id = text(m.get("id")?)?;
    (from != to).then_some((
        id,
        Transfer {
            op,
            from,
            to,
            amount,
        },
    ))
}

fn parse_read(op: &Operation) -> Option<Read<'_>> {
    let Value::Map(m) = &op.output else {
        return None;
    };
    let mut accounts = BTreeMap::new();
    for (name, v) in m {
        let Value::Map(a) = v else {
            return None;
        };
        let balance = int(a.get("balance").unwrap_or(&Value::None))?;
        let log = match a.get("log").unwrap_or(&Value::None) {
            Value::None => Vec::new(),
            Value::List(items) => items.iter().map(text).collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        accounts.insert(name.clone(), Account { balance, log });
    }
    Some(Read { op, accounts })
}

fn check_bank(bank: &str, ops: &[&Operation]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut transfers: HashMap<String, Transfer> = HashMap::new();
    let mut reads: Vec<Read> = Vec::new();
    for op in ops {
        match op.f {
            F::Transfer => match parse_transfer(op) {
                Some((id, t)) => {
                    if transfers.insert(id.clone(), t).is_some() {
                        problems.push(Problem::new(
                            Reason::Malformed,
                            format!("bank {bank:?}: transfer id {id} is used twice"),
                        ));
                    }
                }
                None => problems.push(Problem::new(
                    Reason::Malformed,
                    format!("bank {bank:?}: {op}: not a transfer between two accounts"),
                )),
            },
            F::BankRead if op.outcome == Outcome::Ok => match parse_read(op) {
                Some(r) => reads.push(r),
                None => problems.push(Problem::new(
                    Reason::Malformed,
                    format!("bank {bank:?}: {op}: not a read of accounts"),
                )),
            },
            _ => {}
        }
    }
    let all_accounts: std::collections::BTreeSet<&str> = reads
        .iter()
        .flat_map(|r| r.accounts.keys().map(String::as_str))
        .collect();
    for r in &reads {
        check_read(bank, r, &transfers, &all_accounts, &mut problems);
    }
    check_lost(bank, &reads, &transfers, &mut problems);
    check_order(bank, &reads, &transfers, &mut problems);
    let acknowledged = transfers
        .values()
        .filter(|t| t.op.outcome == Outcome::Ok)
        .count();
    if acknowledged > 0 && reads.is_empty() {
        problems.push(Problem::new(
            Reason::NoSuccessfulRead,
            format!("bank {bank:?}: {acknowledged} acknowledged transfers and no successful read"),
        ));
    }
    problems
}

/// Within one read: every account present, its log made of transfers that could show
/// there, its balance the sum of its log, every transfer on both its accounts, the total
/// zero.
fn check_read(
    bank: &str,
    r: &Read,
    transfers: &HashMap<String, Transfer>,
    all_accounts: &std::collections::BTreeSet<&str>,
    problems: &mut Vec<Problem>,
) {
    let op = r.op;
    let read = brief(op);
    for missing in all_accounts
        .iter()
        .filter(|a| !r.accounts.contains_key(**a))
    {
        problems.push(Problem::new(
            Reason::Malformed,
            format!("bank {bank:?}: {read} does not read account {missing}"),
        ));
    }
    let mut total = 0i64;
    let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, account) in &r.accounts {
        total = total.saturating_add(account.balance);
        let mut sum = 0i64;
        let mut once: HashSet<&str> = HashSet::new();
        for id in &account.log {
            if !once.insert(id) {
                problems.push(Problem::new(
                    Reason::PhantomTransfer,
                    format!(
                        "bank {bank:?}: {read}: transfer {id} is twice in account {name}'s log"
                    ),
                ));
                continue;
            }
            let Some(t) = transfers.get(id) else {
                problems.push(Problem::new(
                    Reason::PhantomTransfer,
                    format!("bank {bank:?}: {read}: account {name}'s log holds {id}, which no transfer carried"),
                ));
                continue;
            };
            if t.from != *name && t.to != *name {
                problems.push(Problem::new(
                    Reason::PhantomTransfer,
                    format!(
                        "bank {bank:?}: {read}: account {name}'s log holds {}, a transfer between {} and {}",
                        t.op, t.from, t.to
                    ),
                ));
                continue;
            }
            if t.op.outcome == Outcome::Fail {
                problems.push(Problem::new(
                    Reason::PhantomTransfer,
                    format!("bank {bank:?}: {read} shows {}, which failed", t.op),
                ));
            }
            if op.complete.is_some_and(|c| t.op.invoke > c) {
                problems.push(Problem::new(
                    Reason::PhantomTransfer,
                    format!(
                        "bank {bank:?}: {read} shows {}, invoked after the read ended",
                        t.op
                    ),
                ));
            }
            sum = sum.saturating_add(t.delta(name));
            seen.entry(id.as_str()).or_default().push(name.as_str());
        }
        if sum != account.balance {
            problems.push(Problem::new(
                Reason::TornRead,
                format!(
                    "bank {bank:?}: {read}: account {name} has balance {} but its log of {} \
                     transfers adds up to {sum}",
                    account.balance,
                    account.log.len()
                ),
            ));
        }
    }
    let mut torn: Vec<(&str, &Vec<&str>)> = seen
        .iter()
        .filter(|(id, on)| {
            transfers
                .get(**id)
                .is_some_and(|t| !(on.contains(&t.from.as_str()) && on.contains(&t.to.as_str())))
        })
        .map(|(id, on)| (*id, on))
        .collect();
    torn.sort();
    for (id, on) in torn {
        if let Some(t) = transfers.get(id) {
            problems.push(Problem::new(
                Reason::TornRead,
                format!(
                    "bank {bank:?}: {read} is torn: it shows {} on {} only",
                    t.op,
                    on.join(" and ")
                ),
            ));
        }
    }
    if total != 0 {
        problems.push(Problem::new(
            Reason::TornRead,
            format!("bank {bank:?}: {read}: the balances add up to {total}, not 0"),
        ));
    }
}

/// Every read holds every transfer acknowledged before it began.
fn check_lost(
    bank: &str,
    reads: &[Read],
    transfers: &HashMap<String, Transfer>,
    problems: &mut Vec<Problem>,
) {
    let mut acknowledged: Vec<(&str, &Transfer)> = transfers
        .iter()
        .filter(|(_, t)| t.op.outcome == Outcome::Ok)
        .map(|(id, t)| (id.as_str(), t))
        .collect();
    acknowledged.sort_by_key(|(_, t)| t.op.complete);
    for r in reads {
        for (id, t) in &acknowledged {
            if t.op.complete.is_none_or(|c| c >= r.op.invoke) {
                break;
            }
            for account in [&t.from, &t.to] {
                let holds = r
                    .accounts
                    .get(account)
                    .is_some_and(|a| a.log.iter().any(|x| x == id));
                if !holds {
                    problems.push(Problem::new(
                        Reason::LostTransfer,
                        format!(
                            "bank {bank:?}: {} misses {} on account {account}, acknowledged \
                             before the read began",
                            brief(r.op),
                            t.op
                        ),
                    ));
                }
            }
        }
    }
}

/// The logs: every read's log of an account a prefix of the longest read; a read that
/// began after another ended holds at least what that one held; no cycle among the
/// transfers' orders on their accounts; no transfer logged before one acknowledged
/// before it was invoked.
fn check_order(
    bank: &str,
    reads: &[Read],
    transfers: &HashMap<String, Transfer>,
    problems: &mut Vec<Problem>,
) {
    let mut longest: BTreeMap<&str, &[String]> = BTreeMap::new();
    for r in reads {
        for (name, a) in &r.accounts {
            let l = longest.entry(name.as_str()).or_insert(&a.log[..]);
            if a.log.len() > l.len() {
                *l = &a.log[..];
            }
        }
    }
    for r in reads {
        for (name, a) in &r.accounts {
            let Some(l) = longest.get(name.as_str()) else {
                continue;
            };
            if !l.starts_with(&a.log) {
                problems.push(Problem::new(
                    Reason::TransferOrder,
                    format!(
                        "bank {bank:?}: {}: account {name}'s log is not a prefix of the \
                         longest one read ({} of {} transfers)",
                        brief(r.op),
                        a.log.len(),
                        l.len()
                    ),
                ));
            }
        }
    }
    // Reads in real-time order must not shrink.
    for earlier in reads {
        let Some(end) = earlier.op.end() else {
            continue;
        };
        for later in reads.iter().filter(|l| l.op.invoke > end) {
            for (name, a) in &earlier.accounts {
                let shorter = later
                    .accounts
                    .get(name)
                    .is_some_and(|b| b.log.len() < a.log.len());
                if shorter {
                    problems.push(Problem::new(
                        Reason::TransferOrder,
                        format!(
                            "bank {bank:?}: {} is stale: it misses transfers on account \
                             {name} that {} had seen",
                            brief(later.op),
                            brief(earlier.op)
                        ),
                    ));
                }
            }
        }
    }
    // Real time within each log: nothing before a transfer acknowledged before it began.
    for (name, log) in &longest {
        let mut latest_invoke: Option<(u64, &str)> = None;
        for id in log.iter() {
            let Some(t) = transfers.get(id) else {
                continue;
            };
            if let (Some((inv, before)), Some(end)) = (latest_invoke, t.op.end()) {
                if end < inv {
                    problems.push(Problem::new(
                        Reason::TransferOrder,
                        format!(
                            "bank {bank:?}: account {name}'s log puts {before} before {}, \
                             which was acknowledged before that one was invoked",
                            t.op
                        ),
                    ));
                }
            }
            if latest_invoke.is_none_or(|(inv, _)| t.op.invoke > inv) {
                latest_invoke = Some((t.op.invoke, id));
            }
        }
    }
    // One serial order for all accounts: the logs' successions form no cycle.
    let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut indegree: HashMap<&str, usize> = HashMap::new();
    for log in longest.values() {
        for id in log.iter() {
            indegree.entry(id.as_str()).or_default();
        }
        for pair in log.windows(2) {
            next.entry(pair[0].as_str())
                .or_default()
                .push(pair[1].as_str());
            *indegree.entry(pair[1].as_str()).or_default() += 1;
        }
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut done = 0;
    while let Some(id) = ready.pop() {
        done += 1;
        for n in next.get(id).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(n) {
                *d -= 1;
                if *d == 0 {
                    ready.push(n);
                }
            }
        }
    }
    if done < indegree.len() {
        let mut stuck: Vec<&str> = indegree
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(id, _)| *id)
            .collect();
        stuck.sort();
        stuck.truncate(6);
        problems.push(Problem::new(
            Reason::TransferOrder,
            format!(
                "bank {bank:?}: the accounts' logs order transfers in a cycle (no serial \
                 order exists; among them {})",
                stuck.join(" ")
            ),
        ));
    }
}
