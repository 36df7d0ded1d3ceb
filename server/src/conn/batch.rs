//! A batch of requests: executed in order under one store lock until one must wait
//! (a write for its log entry, a relay, an election, a split command).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use kelvin_protocol::{ReplyWriter, RespVersion};

use crate::cmd::{self, flags, CmdError, CommandSpec, Handler};
use crate::evict::Pressure;
use crate::group::{Proposal, ProposeError};
use crate::node::Node;
use crate::store::Store;
use kelvin_protocol::log::LogCommand;
use tokio::sync::oneshot;

use super::drive::*;
use super::merge::*;
use super::route::*;
use super::*;
use crate::migrate::apply as migrate;

/// Why a command cannot run now, checked before it runs or is queued.
pub(super) fn precheck(
    client: &ClientState,
    out: &ReplyWriter,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Result<(), CmdError> {
    if !spec.arity_ok(argv.len()) {
        return Err(CmdError::arity(spec.name));
    }
    if !client.authed && spec.flags & flags::NO_AUTH == 0 {
        return Err(CmdError::raw("NOAUTH Authentication required."));
    }
    if client.multi.is_some() && spec.flags & flags::NOT_IN_MULTI != 0 {
        return Err(CmdError::err("Command not allowed inside a transaction"));
    }
    if spec.flags & flags::SUBSCRIBED_OK == 0 && client.in_resp2_subscribed_mode(out.version) {
        return Err(CmdError::err(format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        )));
    }
    Ok(())
}

/// An error reply to a request that did not run; inside MULTI it also dooms the
/// transaction (EXEC answers EXECABORT), as in Redis.
pub(super) fn refuse(
    client: &mut ClientState,
    out: &mut ReplyWriter,
    spec: Option<&CommandSpec>,
    err: &str,
) {
    crate::cmdstats::reject(spec.map(|s| s.name), err);
    if let Some(multi) = client.multi.as_mut() {
        multi.failed = true;
    }
    out.error(err);
}

/// Replies go out in order: what waits before `next` (requests gathered to relay, writes
/// gathered to propose) goes out first, then `next` and the rest run (`Ok`). With nothing
/// waiting, `next` comes back (`Err`) to run now.
pub(super) fn flush_before(
    here: Route,
    forward: &mut Vec<Vec<Bytes>>,
    segment: &mut Segment,
    node: &Node,
    out: &ReplyWriter,
    next: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Result<Step, Vec<Bytes>> {
    if !forward.is_empty() {
        return Ok(forward_step(here, std::mem::take(forward), next, requests));
    }
    if !segment.commands.is_empty() {
        return Ok(segment_step(
            std::mem::take(segment),
            node,
            out,
            next,
            requests,
        ));
    }
    Err(next)
}

/// The writes gathered from a pipeline, proposed as one, to `group`.
#[derive(Default)]
pub(super) struct Segment {
    group: u64,
    commands: Vec<LogCommand>,
    requests: Vec<Vec<Bytes>>,
    /// Argument bytes of the commands: what they may add to the group's memory once
    /// applied (see [`crate::evict::task::pressure`]).
    bytes: usize,
}

impl Segment {
    fn propose(
        self,
        node: &Node,
        out: &ReplyWriter,
        blocking: Option<Vec<Bytes>>,
        rest: Vec<Vec<Bytes>>,
    ) -> Step {
        let (tx, rx) = oneshot::channel();
        let replies = self.requests.len();
        match node.hosted(self.group) {
            Some(group) => group.propose(Proposal {
                commands: self.commands,
                version: out.version,
                reply: Some(tx),
            }),
            None => {
                let _ = tx.send(Err(ProposeError::Stopped));
            }
        }
        Step::Propose {
            rx,
            retry: self.requests,
            replies,
            blocking,
            rest,
        }
    }
}

/// Executes a batch of decoded requests in order, until one needs to wait: a write (for
/// its log entry), a request to relay to the leader, or an election. A `KELVIN.ON`
/// request (see [`PIN`]) runs alone, on its group.
pub fn process_batch(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    mut batch: Vec<Vec<Bytes>>,
) -> Step {
    loop {
        let Some(at) = batch.iter().position(|a| is_pinned(a)) else {
            return run_batch(node, client, out, batch, None);
        };
        let mut tail = batch.split_off(at);
        let step = if batch.is_empty() {
            let first = tail.remove(0);
            match unpin(node, client, &first) {
                Ok((group, inner)) => run_batch(node, client, out, vec![inner], Some(group)),
                Err(err) => {
                    refuse(client, out, None, &err.0);
                    Step::Done
                }
            }
        } else {
            run_batch(node, client, out, batch, None)
        };
        match step.then(tail) {
            Ok(step) => return step,
            Err(tail) if client.blocked.is_some() => {
                client.pending.extend(tail);
                return Step::Done;
            }
            Err(tail) => batch = tail,
        }
    }
}

/// The time a read served from the leader's lease runs at, or `None` if it must go
/// through the log instead.
///
/// Whether a key has expired is the log's decision, not a clock's: clocks differ between
/// nodes (and jump), and a read that found a key gone on one leader must not find it
/// again on the next. So a key counts as expired locally only once the log's own time
/// (`last_apply_ms`, the stamp of the last applied entry, which never goes backwards) has
/// passed its deadline. A key whose deadline this node's clock has passed and the log's
/// time has not is read through the log: that entry's stamp, this clock, decides on
/// every replica alike (Redis's master deletes a key it finds expired and sends the
/// DEL to its replicas; the same here, before the answer). Keyless reads (KEYS, SCAN,
/// DBSIZE...) run at the log's time. Otherwise the read runs at this clock, or the log's
/// if that is later, for TTLs that count down between entries.
///
/// Where it found the last key is left in [`Store::read_hint`] for the read that follows.
pub(super) fn lease_read_time<'a>(
    store: &mut Store,
    db: usize,
    mut keys: impl Iterator<Item = &'a Bytes>,
    now_ms: u64,
) -> Option<u64> {
    let log_ms = store.last_apply_ms;
    let now = now_ms.max(log_ms);
    let Some(ks) = store.db_ref(db) else {
        return Some(now);
    };
    let mut keyless = true;
    let mut hint = None;
    let pending = keys.any(|k| {
        keyless = false;
        ks.find(k).is_some_and(|(place, e)| {
            hint = Some((db, place));
            e.is_expired(now) && !e.is_expired(log_ms)
        })
    });
    store.read_hint = hint;
    match (keyless, pending) {
        (true, _) => Some(log_ms),
        (false, false) => Some(now),
        (false, true) => None,
    }
}

pub(super) fn run_batch(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    batch: Vec<Vec<Bytes>>,
    pinned: Option<u64>,
) -> Step {
    if batch.is_empty() {
        return Step::Done;
    }
    let now_ms = cmd::unix_ms();
    let count = batch.len();
    // The group the batch is talking to; it changes when a command's key is in another
    // group, once what is gathered for this one has gone out.
    let mut gid = pinned.unwrap_or_else(|| default_group(node));
    let mut here = route(node, gid);
    // This node's replica of `gid`, looked up once per batch (and again when `gid` changes):
    // each lookup takes the groups' lock and clones an `Arc`.
    let mut hosted = node.hosted(gid);
    let mut local_reads =
        here == Route::Leader && hosted.as_ref().is_some_and(|g| g.status.can_read_locally());
    let mut guard: Option<parking_lot::ArcMutexGuard<parking_lot::RawMutex, Store>> = None;
    let mut last: &'static str = "NULL";
    let mut segment = Segment::default();
    let mut forward: Vec<Vec<Bytes>> = Vec::new();
    let mut requests = batch.into_iter();
    let mut step = Step::Done;
    let ahead = client.settle_ahead.take();
    // What waits before `$argv` goes out first and ends the batch there (see
    // `flush_before`); with nothing waiting, evaluates to `$argv`.
    macro_rules! flush_or_continue {
        ($argv:expr) => {
            match flush_before(
                here,
                &mut forward,
                &mut segment,
                node,
                out,
                $argv,
                &mut requests,
            ) {
                Ok(s) => {
                    step = s;
                    break;
                }
                Err(argv) => argv,
            }
        };
    }
    while let Some(argv) = requests.next() {
        if client.close {
            break;
        }
        let Some(spec) = cmd::lookup(&argv[0]) else {
            let argv = flush_or_continue!(argv);
            refuse(client, out, None, &cmd::unknown_command(&argv).0);
            continue;
        };
        last = spec.name;
        // While a script runs: BUSY past the threshold, SCRIPT/FUNCTION KILL and
        // FUNCTION STATS answered here (the store is locked by the script).
        if let Some(answer) = crate::script::busy::at_connection(node, spec, &argv) {
            let _argv = flush_or_continue!(argv);
            match answer {
                crate::script::busy::Answer::Error(e) => {
                    super::memory::refuse_or_abort(client, out, spec, e)
                }
                answer => answer.write(out),
            }
            continue;
        }
        if spec.name == "migrate" {
            // Runs at the connection: its keys' DUMP, PTTL and DEL route as requests.
            let argv = flush_or_continue!(argv);
            if let Err(err) = precheck(client, out, spec, &argv) {
                refuse(client, out, Some(spec), &err.0);
                continue;
            }
            step = Step::Migrate {
                argv,
                rest: requests.by_ref().collect(),
            };
            break;
        }
        let key_pos = spec.keys_in(&argv);
        if pinned.is_none() && key_pos.is_empty() {
            if let Some(keyless) = super::keyless::plan(node, client, spec, &argv) {
                let _argv = flush_or_continue!(argv);
                step = Step::Keyless {
                    keyless,
                    rest: requests.by_ref().collect(),
                };
                break;
            }
            if let Some((parts, merge)) = broadcast(node, client, spec, &argv) {
                let _argv = flush_or_continue!(argv);
                step = Step::Split {
                    parts,
                    merge,
                    rest: requests.by_ref().collect(),
                };
                break;
            }
        }
        if let Some(g) = pinned.filter(|_| spec.name == "kelvin.tx") {
            if super::crosstx::prepared_elsewhere(node, g, &argv) {
                let _argv = flush_or_continue!(argv);
                refuse(client, out, Some(spec), crate::txn::PREPARE_MOVED);
                continue;
            }
        }
        // Keys in several groups: no one group can run it (on the redirect port, keys in
        // different slots are CROSSSLOT already).
        let target = match pinned {
            Some(g) => Some(g),
            None => command_group(node, spec, &argv, gid),
        };
        let argv = if target == Some(gid) {
            argv
        } else {
            // Replies go out in order: what is gathered for this group goes first.
            let argv = flush_or_continue!(argv);
            let Some(target) = target else {
                if let Some((parts, merge)) = split(node, client, &argv) {
                    step = Step::Split {
                        parts,
                        merge,
                        rest: requests.by_ref().collect(),
                    };
                    break;
                }
                // On the main port, a data command over several groups runs as a
                // transaction across them (inside MULTI: as part of the one EXEC runs; a
                // blocking one outside runs as its non-blocking self and parks on nil).
                let crosses = !client.redirect
                    && pinned.is_none()
                    && matches!(spec.handler, Handler::Data(_));
                if !crosses {
                    refuse(client, out, Some(spec), CROSSSLOT_GROUPS);
                    continue;
                }
                if let Err(err) = precheck(client, out, spec, &argv) {
                    refuse(client, out, Some(spec), &err.0);
                    continue;
                }
                if let Some(multi) = client.multi.as_mut() {
                    multi.queue.push((spec, argv));
                    *client.info.multi.lock() = multi.queue.len() as i64;
                    out.simple("QUEUED");
                    continue;
                }
                match super::crosstx::plan_command(node, client.db, argv, gid) {
                    Ok(plan) => {
                        step = Step::CrossTx {
                            plan,
                            rest: requests.by_ref().collect(),
                        };
                        break;
                    }
                    Err(super::crosstx::NotRun::Error(e)) => refuse(client, out, Some(spec), e),
                    Err(super::crosstx::NotRun::Nil) => out.null(),
                }
                continue;
            };
            guard = None;
            gid = target;
            here = route(node, gid);
            hosted = node.hosted(gid);
            local_reads = here == Route::Leader
                && hosted.as_ref().is_some_and(|g| g.status.can_read_locally());
            argv
        };
        // A READONLY read away from the leader that this node's replica answers itself.
        let replica_read = client.readonly
            && is_read(spec)
            && here != Route::Leader
            && spec.arity_ok(argv.len())
            && replica_serves(node, gid, &mut guard, client.db, spec, &argv);
        let checked = precheck(client, out, spec, &argv).and_then(|()| match client.redirect {
            true => redirection(node, spec, &argv, here, replica_read)
                .map_or(Ok(()), |e| Err(CmdError::raw(e))),
            false => Ok(()),
        });
        if matches!(&checked, Err(e) if e.0.starts_with("MOVED")) && node.topology_pending() {
            // This node's slot map is older than the topology its meta replica holds:
            // redirect by the new one once it is in place, not by the old one (two nodes
            // with different maps would send a client back and forth).
            let argv = flush_or_continue!(argv);
            let mut waiting = vec![argv];
            waiting.extend(requests.by_ref());
            step = Step::AwaitLeader {
                requests: waiting,
                rest: Vec::new(),
            };
            break;
        }
        if let Err(err) = checked {
            // Replies go out in order: what waits before this request is answered first.
            let _argv = flush_or_continue!(argv);
            refuse(client, out, Some(spec), &err.0);
            continue;
        }
        // A write that grows memory with the group over `maxmemory`, counting the writes
        // gathered before it ([`super::memory::grows`]): refused if nothing can be
        // evicted, else it waits once for the evictor.
        if here == Route::Leader && super::memory::grows(client, spec) {
            match crate::evict::task::pressure(node, gid, guard.as_deref(), segment.bytes) {
                Pressure::Fine => {}
                Pressure::Refuse => {
                    let _argv = flush_or_continue!(argv);
                    super::memory::refuse_oom(client, out, spec);
                    continue;
                }
                Pressure::Evicting if !client.eviction_waited => {
                    let argv = flush_or_continue!(argv);
                    guard = None;
                    step = Step::AwaitEviction {
                        requests: vec![argv],
                        rest: requests.by_ref().collect(),
                    };
                    break;
                }
                // Waited already: eviction is under way, go ahead (Redis lets a command
                // run while evictions are still in progress).
                Pressure::Evicting => client.eviction_waited = false,
            }
        }
        // Relaying: once a request goes to the leader, the ones after it follow in
        // order, so its replies come back in order. (Not on the redirect port: there
        // the client is told where to go.)
        if let (Route::Forward(_) | Route::NoLeader, false) = (here, client.redirect) {
            let stale_read_ok = replica_read;
            // With several groups the transaction's group is known only from its keys:
            // MULTI, EXEC and WATCH stay here (see the EXEC case below).
            let local_tx = several_groups(node) && !matches!(spec.handler, Handler::Data(_));
            if forwarded(spec)
                && !stale_read_ok
                && !local_tx
                && client.multi.is_none()
                && segment.commands.is_empty()
            {
                // A pinned request keeps its pin on the way (its leader may lead several).
                forward.push(match pinned {
                    Some(g) => pin(g, argv),
                    None => argv,
                });
                continue;
            }
            if !forward.is_empty() {
                step = forward_step(here, forward, argv, &mut requests);
                forward = Vec::new();
                break;
            }
        }
        if let Some(multi) = client.multi.as_mut() {
            if spec.flags & flags::NO_MULTI == 0 {
                multi.queue.push((spec, argv));
                *client.info.multi.lock() = multi.queue.len() as i64;
                out.simple("QUEUED");
                continue;
            }
        }
        match spec.handler {
            Handler::Data(handler) => {
                if here == Route::Down {
                    out.error(CLUSTER_DOWN);
                    continue;
                }
                if here == Route::Leader && !key_pos.is_empty() {
                    // A slot in migration: wait for it, or pull its keys first.
                    let need = match hosted.as_deref() {
                        Some(group) if group.status.may_migrate() => {
                            let store = guard.get_or_insert_with(|| group.store.lock_arc());
                            migrate::need(store, client.db, spec, &argv)
                        }
                        _ => migrate::Need::Run,
                    };
                    let need = match (need, &ahead) {
                        // Its keys' fault-in write is proposed already: this write goes
                        // behind it (a write on its own settles them).
                        (
                            migrate::Need::Pull {
                                migration,
                                db,
                                keys,
                                ..
                            },
                            Some(a),
                        ) if spec.through_log()
                            && a.group == gid
                            && a.migration == migration
                            && a.db == db
                            && keys.iter().all(|k| a.keys.contains(k)) =>
                        {
                            migrate::Need::Run
                        }
                        (need, _) => need,
                    };
                    if need != migrate::Need::Run {
                        let argv = flush_or_continue!(argv);
                        step = migration_step(need, gid, argv, &mut requests);
                        break;
                    }
                }
                // A key a transaction across groups holds: wait until it finishes (reads
                // included: no client sees part of a transaction).
                if here == Route::Leader {
                    if let Some(group) = hosted.as_deref().filter(|g| g.status.in_transaction()) {
                        let store = guard.get_or_insert_with(|| group.store.lock_arc());
                        if crate::txn::waits_for_lock(store, client.db, spec, &argv) {
                            let released = store.tx_released.subscribe();
                            let argv = flush_or_continue!(argv);
                            let mut waiting = vec![argv];
                            waiting.extend(requests.by_ref());
                            step = Step::AwaitTx {
                                released,
                                requests: waiting,
                                rest: Vec::new(),
                            };
                            break;
                        }
                    }
                }
                // A read after writes of this batch must see them. On the leader it joins
                // their entry: the log orders it after them and the whole pipeline takes
                // one round (waiting for them first took a round per read after a write,
                // 16 in a pipeline of 16 GET + EXPIRE). Elsewhere it waits for them.
                let after_writes = !segment.commands.is_empty();
                if !spec.through_log()
                    && (local_reads || client.readonly)
                    && !(after_writes && local_reads)
                {
                    if after_writes {
                        step = segment_step(segment, node, out, argv, &mut requests);
                        segment = Segment::default();
                        break;
                    }
                    let Some(group) = hosted.as_deref() else {
                        out.error(CLUSTER_DOWN);
                        continue;
                    };
                    let store = guard.get_or_insert_with(|| {
                        let store = group.store.lock_arc();
                        // The first read of a pipeline: its keys and those of the requests
                        // after it load together, not one cache miss after another
                        // (`store::prefetch`). The second argument is the key of most
                        // commands; where it is not, its probe costs little.
                        let rest = requests.as_slice();
                        if !rest.is_empty() {
                            let db = client.db;
                            let keys = std::iter::once(&argv).chain(rest);
                            store.prefetch(keys.filter_map(|a| Some((db, &a.get(1)?[..]))));
                        }
                        store
                    });
                    let keys = key_pos.iter().filter_map(|&i| argv.get(i));
                    let read_at = match client.readonly && !local_reads {
                        // A stale read on a replica, as asked: its own clock.
                        true => Some(now_ms.max(store.last_apply_ms)),
                        false => lease_read_time(store, client.db, keys, now_ms),
                    };
                    if let Some(at) = read_at {
                        run_data(store, client, out, (spec.name, handler), &argv, at, false);
                        continue;
                    }
                    // A key this clock finds expired and the log does not yet: the read
                    // goes through the log, which deletes the key on every replica.
                }
                // A write, or a read without a lease: through the log.
                if argv.iter().map(|a| a.len()).sum::<usize>() > crate::group::MAX_COMMAND_BYTES {
                    let _argv = flush_or_continue!(argv);
                    refuse(client, out, Some(spec), crate::group::TOO_LARGE);
                    continue;
                }
                segment.group = gid;
                segment.bytes += argv.iter().map(|a| a.len()).sum::<usize>();
                segment.commands.push(LogCommand::Single {
                    db: client.db as u8,
                    argv: argv.clone(),
                });
                segment.requests.push(match pinned {
                    Some(g) => pin(g, argv),
                    None => argv,
                });
                if spec.flags & flags::BLOCKING != 0 {
                    let blocking = segment.requests.last().cloned();
                    step = segment.propose(node, out, blocking, requests.by_ref().collect());
                    segment = Segment::default();
                    break;
                }
            }
            Handler::Conn(handler) => {
                if !segment.commands.is_empty() {
                    step = segment_step(segment, node, out, argv, &mut requests);
                    segment = Segment::default();
                    break;
                }
                let barrier = super::watch::barrier(node, client, spec, &argv);
                if !barrier.is_empty() {
                    let mut waiting = vec![argv];
                    waiting.extend(requests.by_ref());
                    step = Step::WatchBarrier {
                        groups: barrier,
                        requests: waiting,
                    };
                    break;
                }
                guard = None;
                let mark = out.buf.len();
                let mut ctx = ConnCtx {
                    client,
                    node,
                    out,
                    now_ms,
                };
                let started = std::time::Instant::now();
                let result = handler(&mut ctx, &argv);
                let usec = started.elapsed().as_micros() as u64;
                if let Err(err) = result {
                    out.buf.truncate(mark);
                    out.error(&err.0);
                }
                crate::cmdstats::call(spec.name, usec, crate::cmdstats::error_in(&out.buf[mark..]));
                if let Some((tx, watch)) = client.transaction.take() {
                    let group = match transaction_group(node, &tx, gid) {
                        Ok(g) => g,
                        // Keys in several groups, on the main port: a transaction across
                        // groups, by two-phase commit.
                        Err(_) if !client.redirect && several_groups(node) => {
                            out.buf.truncate(mark);
                            match super::crosstx::plan(node, &tx, &watch, gid) {
                                Ok(plan) => {
                                    step = Step::CrossTx {
                                        plan,
                                        rest: requests.by_ref().collect(),
                                    };
                                    break;
                                }
                                Err(super::crosstx::NotRun::Nil) => out.null_array(),
                                Err(super::crosstx::NotRun::Error(e)) => out.error(e),
                            }
                            continue;
                        }
                        Err(err) => {
                            out.buf.truncate(mark);
                            out.error(&err.0);
                            continue;
                        }
                    };
                    if watch.moved_from(group) {
                        // Watched in another group's log: its index says nothing here.
                        out.buf.truncate(mark);
                        out.null_array();
                        continue;
                    }
                    let request = crate::cmd::connection::kelvin_exec_request(&tx, watch.group());
                    match route(node, group) {
                        Route::Leader => {
                            // Keys of the transaction that must come from a source first.
                            let need = node
                                .hosted(group)
                                .filter(|g| g.status.may_migrate())
                                .map(|g| tx_need(&g.store.lock(), &tx));
                            if let Some(need) = need.filter(|n| *n != migrate::Need::Run) {
                                step = migration_step(need, group, request, &mut requests);
                                break;
                            }
                        }
                        // Its watch and queue live here, its group is led elsewhere: the
                        // whole transaction goes to the leader as one request.
                        Route::Forward(leader) => {
                            step = Step::Forward {
                                leader,
                                requests: vec![request],
                                rest: requests.by_ref().collect(),
                            };
                            break;
                        }
                        Route::NoLeader => {
                            step = Step::AwaitLeader {
                                requests: vec![request],
                                rest: requests.by_ref().collect(),
                            };
                            break;
                        }
                        Route::Down => {
                            out.buf.truncate(mark);
                            out.error(CLUSTER_DOWN);
                            continue;
                        }
                    }
                    // Run again as `request` if the group refuses it unapplied (a migration
                    // at apply, or leadership lost): routed anew, its watch checked anew.
                    let seg = Segment {
                        group,
                        commands: vec![tx],
                        requests: vec![request],
                        bytes: 0,
                    };
                    step = seg.propose(node, out, None, requests.by_ref().collect());
                    break;
                }
            }
        }
    }
    if !segment.commands.is_empty() {
        step = segment.propose(node, out, None, requests.by_ref().collect());
    } else if !forward.is_empty() {
        step = match here {
            Route::Forward(leader) => Step::Forward {
                leader,
                requests: forward,
                rest: requests.by_ref().collect(),
            },
            _ => Step::AwaitLeader {
                requests: forward,
                rest: requests.by_ref().collect(),
            },
        };
    }
    drop(guard);
    if !client.lazy_expired.is_empty() {
        propose_expired(node, client);
    }
    node.stats
        .commands_processed
        .fetch_add(count as u64, Ordering::Relaxed);
    *client.info.last_cmd.lock() = last;
    *client.info.last_active.lock() = std::time::Instant::now();
    node.publish_events(&mut client.events);
    step
}

/// Whether this node's replica of `gid` (its store locked in `guard`) may answer a READONLY
/// read of `argv` itself: not if it has none, nor for a key of a slot in migration that
/// is not here yet
/// (found by test_reshard_races.py: a follower of the new owner answered nil for keys the
/// source still held; pulling them is the leader's work), nor one of a slot sealed here.
fn replica_serves(
    node: &Node,
    gid: u64,
    guard: &mut Option<parking_lot::ArcMutexGuard<parking_lot::RawMutex, Store>>,
    db: usize,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> bool {
    let Some(group) = node.hosted(gid) else {
        // No replica here (a group made by a reshard on other nodes): the leader answers.
        return false;
    };
    if !group.status.may_migrate() {
        return true;
    }
    let store = guard.get_or_insert_with(|| group.store.lock_arc());
    migrate::need(store, db, spec, argv) == migrate::Need::Run
}

/// The step for a command whose slot is in migration ([`migrate::need`]): wait for it,
/// or pull its keys first; then it runs again, and the rest after it.
fn migration_step(
    need: migrate::Need,
    group: u64,
    argv: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Step {
    let rest = requests.by_ref().collect();
    match need {
        // (Never asked for `Run`: it runs again, routed anew, like a wait.)
        migrate::Need::Run => Step::AwaitMigration {
            why: migrate::NOT_YET,
            requests: vec![argv],
            rest,
        },
        migrate::Need::Wait(why) => Step::AwaitMigration {
            why,
            requests: vec![argv],
            rest,
        },
        migrate::Need::Pull {
            migration,
            source,
            db,
            keys,
        } => Step::FaultIn {
            fault: super::faultin::Fault {
                group,
                migration,
                source,
                db,
                keys,
            },
            requests: vec![argv],
            rest,
        },
    }
}

/// What a transaction's data commands need (the first that needs anything).
fn tx_need(store: &Store, tx: &LogCommand) -> migrate::Need {
    let LogCommand::Transaction { items, .. } = tx else {
        return migrate::Need::Run;
    };
    items
        .iter()
        .filter_map(|item| match item {
            kelvin_protocol::log::TxItem::Data { db, argv } => {
                let spec = cmd::lookup(argv.first()?)?;
                Some(migrate::need(store, *db as usize, spec, argv))
            }
            kelvin_protocol::log::TxItem::Literal(_) => None,
        })
        .find(|n| *n != migrate::Need::Run)
        .unwrap_or(migrate::Need::Run)
}

/// The reply to a data command on a node that serves no data yet.
pub const CLUSTER_DOWN: &str = "CLUSTERDOWN Hash slot not served";

pub(super) fn segment_step(
    segment: Segment,
    node: &Node,
    out: &ReplyWriter,
    next: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Step {
    let mut rest = vec![next];
    rest.extend(requests.by_ref());
    segment.propose(node, out, None, rest)
}

pub(super) fn forward_step(
    here: Route,
    forward: Vec<Vec<Bytes>>,
    next: Vec<Bytes>,
    requests: &mut std::vec::IntoIter<Vec<Bytes>>,
) -> Step {
    let mut rest = vec![next];
    rest.extend(requests.by_ref());
    match here {
        Route::Forward(leader) => Step::Forward {
            leader,
            requests: forward,
            rest,
        },
        _ => Step::AwaitLeader {
            requests: forward,
            rest,
        },
    }
}

/// Keys that local reads found expired: the leader proposes their deletion; nobody
/// waits for it.
pub(super) fn propose_expired(node: &Node, client: &mut ClientState) {
    let keys = std::mem::take(&mut client.lazy_expired);
    let Some(groups) = node.groups() else { return };
    // By group, then by database.
    let mut by_group: std::collections::BTreeMap<
        u64,
        std::collections::BTreeMap<usize, Vec<Bytes>>,
    > = Default::default();
    for (db, key) in keys {
        let (gid, _) = groups.for_slot(kelvin_protocol::key_slot(&key) as usize);
        by_group
            .entry(gid)
            .or_default()
            .entry(db)
            .or_default()
            .push(Bytes::copy_from_slice(&key));
    }
    for (gid, by_db) in by_group {
        let Some(group) = groups.hosted.get(&gid) else {
            continue;
        };
        group.propose(Proposal {
            commands: by_db
                .into_iter()
                .map(|(db, keys)| LogCommand::ExpireKeys { db: db as u8, keys })
                .collect(),
            version: RespVersion::Resp2,
            reply: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen while adding kelvin-jepsen's clock-skew nemesis: a leader whose clock ran
    /// ahead answered "gone" for a key on its own clock's word, and the next leader, its
    /// clock behind, found the key again (a resurrected session). Expiry is now the
    /// log's decision.
    #[test]
    fn a_lease_read_never_expires_a_key_the_log_has_not_expired() {
        use crate::store::{Entry, Value};
        let mut store = Store::default();
        store.last_apply_ms = 1_000;
        let ks = store.db(0);
        ks.insert(b"k", Entry::new(Value::Str(b"v".to_vec())));
        ks.set_expire(b"k", 2_000);
        ks.insert(b"other", Entry::new(Value::Str(b"v".to_vec())));
        let k = Bytes::from_static(b"k");
        let other = Bytes::from_static(b"other");
        // Neither clock has passed the deadline: a local read at this clock.
        assert_eq!(
            lease_read_time(&mut store, 0, [&k].into_iter(), 1_500),
            Some(1_500)
        );
        // This clock is behind the log's: the log's time (TTLs never go back).
        assert_eq!(
            lease_read_time(&mut store, 0, [&k].into_iter(), 500),
            Some(1_000)
        );
        // This clock has passed the deadline, the log's time has not: through the log.
        assert_eq!(
            lease_read_time(&mut store, 0, [&k].into_iter(), 2_500),
            None
        );
        assert_eq!(
            lease_read_time(&mut store, 0, [&other, &k].into_iter(), 2_500),
            None
        );
        // Keys without the question are read locally; keyless reads at the log's time.
        assert_eq!(
            lease_read_time(&mut store, 0, [&other].into_iter(), 2_500),
            Some(2_500)
        );
        assert_eq!(
            lease_read_time(&mut store, 0, std::iter::empty(), 2_500),
            Some(1_000)
        );
        // Once the log's time has passed the deadline, the key is gone everywhere.
        store.last_apply_ms = 2_000;
        assert_eq!(
            lease_read_time(&mut store, 0, [&k].into_iter(), 1_500),
            Some(2_000)
        );
    }
}
