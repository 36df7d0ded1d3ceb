//! Connection commands: PING, ECHO, QUIT, AUTH, HELLO, SELECT, CLIENT, RESET, and the
//! transaction commands MULTI, EXEC, DISCARD, WATCH, UNWATCH.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use kelvin_protocol::RespVersion;

use crate::cmd::{conn, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Handler};
use crate::conn::{ConnCtx, Multi, Watch};
use kelvin_protocol::log::{LogCommand, TxItem};

/// The version HELLO and INFO report. Kelvin answers as Redis 7.2 does.
pub const REDIS_VERSION: &str = "7.2.4";

pub const COMMANDS: &[CommandSpec] = &[
    conn(
        "readonly",
        1,
        LOADING | STALE | FAST,
        "cluster",
        "Enables read-only queries for a connection to a Redis Cluster replica node.",
        readonly,
    ),
    conn(
        "readwrite",
        1,
        LOADING | STALE | FAST,
        "cluster",
        "Enables read-write queries for a connection to a Redis Cluster replica node.",
        readwrite,
    ),
    conn(
        "ping",
        -1,
        FAST | SUBSCRIBED_OK,
        "connection",
        "Returns the server's liveliness response.",
        ping,
    ),
    conn(
        "echo",
        2,
        FAST,
        "connection",
        "Returns the given string.",
        echo,
    ),
    conn(
        "quit",
        -1,
        FAST | NO_AUTH | NO_MULTI | SUBSCRIBED_OK,
        "connection",
        "Closes the connection.",
        quit,
    ),
    conn(
        "auth",
        -2,
        FAST | NO_AUTH | NOSCRIPT | LOADING | STALE,
        "connection",
        "Authenticates the connection.",
        auth,
    ),
    conn(
        "hello",
        -1,
        FAST | NO_AUTH | NOSCRIPT | LOADING | STALE,
        "connection",
        "Handshakes with the Redis server.",
        hello,
    ),
    conn(
        "select",
        2,
        FAST | LOADING | STALE,
        "connection",
        "Changes the selected database.",
        select,
    ),
    conn(
        "client",
        -2,
        LOADING | STALE,
        "connection",
        "A container for client connection commands.",
        client,
    ),
    conn(
        "reset",
        1,
        FAST | NO_AUTH | NO_MULTI | SUBSCRIBED_OK | NOSCRIPT | LOADING | STALE,
        "connection",
        "Resets the connection.",
        reset,
    ),
    conn(
        "multi",
        1,
        FAST | NO_MULTI | NOSCRIPT | LOADING | STALE,
        "transactions",
        "Starts a transaction.",
        multi,
    ),
    conn(
        "exec",
        1,
        NO_MULTI | NOSCRIPT | LOADING | STALE,
        "transactions",
        "Executes all commands in a transaction.",
        exec,
    ),
    conn(
        "discard",
        1,
        FAST | NO_MULTI | NOSCRIPT | LOADING | STALE,
        "transactions",
        "Discards a transaction.",
        discard,
    ),
    conn(
        "watch",
        -2,
        FAST | NO_MULTI | NOSCRIPT | LOADING | STALE,
        "transactions",
        "Monitors changes to keys to determine the execution of a transaction.",
        watch,
    ),
    conn(
        "unwatch",
        1,
        FAST | NOSCRIPT | LOADING | STALE,
        "transactions",
        "Forgets about watched keys of a transaction.",
        unwatch,
    ),
    conn(
        "kelvin.exec",
        -2,
        NO_MULTI | NOSCRIPT | LOADING | STALE,
        "transactions",
        "Runs a transaction queued on another node (Kelvin: a plain client's MULTI/EXEC relayed to its group's leader).",
        kelvin_exec,
    ),
    conn(
        "kelvin.relayed",
        3,
        NO_MULTI | NOSCRIPT | LOADING | STALE | FAST,
        "connection",
        "Marks a connection as another node's relay (Kelvin: how many times its requests were relayed, and the sender's topology epoch).",
        kelvin_relayed,
    ),
];

fn ping(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 2 {
        return Err(CmdError::arity("ping"));
    }
    if ctx.client.in_resp2_subscribed_mode(ctx.out.version) {
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(argv.get(1).map_or(&b""[..], |b| &b[..]));
    } else if let Some(msg) = argv.get(1) {
        ctx.out.bulk(msg);
    } else {
        ctx.out.simple("PONG");
    }
    Ok(())
}

fn echo(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    ctx.out.bulk(&argv[1]);
    Ok(())
}

fn quit(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    ctx.out.ok();
    ctx.client.close = true;
    Ok(())
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks a user and password against the node's only user, `default`.
fn check_credentials(ctx: &ConnCtx<'_>, user: &[u8], pass: &[u8]) -> Result<(), CmdError> {
    let required = ctx.node.settings.read().requirepass.clone();
    let pass_ok = match &required {
        // The default user has `nopass` while no password is set: any password works.
        None => true,
        Some(p) => p.as_bytes() == pass,
    };
    if user == b"default" && pass_ok {
        Ok(())
    } else {
        Err(CmdError::raw(WRONGPASS))
    }
}

fn auth(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    match argv.len() {
        2 => {
            if ctx.node.settings.read().requirepass.is_none() {
                return Err(CmdError::err(
                    "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                ));
            }
            check_credentials(ctx, b"default", &argv[1])?;
        }
        3 => check_credentials(ctx, &argv[1], &argv[2])?,
        _ => return Err(CmdError::SYNTAX),
    }
    ctx.client.authed = true;
    ctx.out.ok();
    Ok(())
}

/// Client names may not hold spaces, newlines or other special characters.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn hello(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let mut version = None;
    let mut i = 1;
    if argv.len() > 1 {
        let v = int_arg(&argv[1])
            .map_err(|_| CmdError::raw("ERR Protocol version is not an integer or out of range"))?;
        if !(2..=3).contains(&v) {
            return Err(CmdError::raw("NOPROTO unsupported protocol version"));
        }
        version = Some(if v == 3 {
            RespVersion::Resp3
        } else {
            RespVersion::Resp2
        });
        i = 2;
    }
    let mut credentials = None;
    let mut name = None;
    while i < argv.len() {
        if is(&argv[i], "auth") && i + 2 < argv.len() {
            credentials = Some((argv[i + 1].clone(), argv[i + 2].clone()));
            i += 3;
        } else if is(&argv[i], "setname") && i + 1 < argv.len() {
            if !valid_client_name(&argv[i + 1]) {
                return Err(CmdError::err(
                    "Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            name = Some(argv[i + 1].clone());
            i += 2;
        } else {
            return Err(CmdError::err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&argv[i])
            )));
        }
    }
    if let Some((user, pass)) = &credentials {
        check_credentials(ctx, user, pass)?;
        ctx.client.authed = true;
    }
    if !ctx.client.authed {
        return Err(CmdError::raw(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        *ctx.client.info.name.lock() = Some(String::from_utf8_lossy(&name).into_owned());
    }
    if let Some(v) = version {
        ctx.out.version = v;
        ctx.client.info.resp.store(
            if v == RespVersion::Resp3 { 3 } else { 2 },
            Ordering::Relaxed,
        );
    }
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(if out.version == RespVersion::Resp3 {
        3
    } else {
        2
    });
    out.bulk(b"id");
    out.int(ctx.client.info.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

fn select(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let db = int_arg(&argv[1])?;
    if ctx.client.redirect && db != 0 {
        return Err(CmdError::err("SELECT is not allowed in cluster mode"));
    }
    if !(0..crate::store::DATABASES as i64).contains(&db) {
        return Err(CmdError::err("DB index is out of range"));
    }
    ctx.client.db = db as usize;
    ctx.client.info.db.store(db as usize, Ordering::Relaxed);
    ctx.out.ok();
    Ok(())
}

/// The longest CLIENT PAUSE (a larger timeout is cut to it, so the end time stays
/// within the clock's range).
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86400);

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL ID <id> | ADDR <ip:port> | <ip:port>",
    "    Kill connections.",
    "LIST [TYPE (NORMAL|PUBSUB)] [ID <id> [<id> ...]]",
    "    Return information about client connections.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "NO-EVICT (ON|OFF)",
    "    Accepted for compatibility.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "NO-TOUCH (ON|OFF)",
    "    Accepted for compatibility.",
    "HELP",
    "    Print this help.",
];

fn client(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let arity = |n: usize, name: &str| -> CmdResult {
        if argv.len() != n {
            Err(CmdError::arity(&format!("client|{name}")))
        } else {
            Ok(())
        }
    };
    if is(sub, "setname") {
        arity(3, "setname")?;
        if !valid_client_name(&argv[2]) {
            return Err(CmdError::err(
                "Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        let name = (!argv[2].is_empty()).then(|| String::from_utf8_lossy(&argv[2]).into_owned());
        *ctx.client.info.name.lock() = name;
        ctx.out.ok();
    } else if is(sub, "getname") {
        arity(2, "getname")?;
        match ctx.client.info.name.lock().as_deref() {
            Some(n) => ctx.out.bulk(n.as_bytes()),
            None => ctx.out.null(),
        }
    } else if is(sub, "id") {
        arity(2, "id")?;
        ctx.out.int(ctx.client.info.id as i64);
    } else if is(sub, "setinfo") {
        arity(4, "setinfo")?;
        if !valid_client_name(&argv[3]) {
            return Err(CmdError::err(format!(
                "{} cannot contain spaces, newlines or special characters.",
                String::from_utf8_lossy(&argv[2]).to_ascii_lowercase()
            )));
        }
        let value = (!argv[3].is_empty()).then(|| String::from_utf8_lossy(&argv[3]).into_owned());
        if is(&argv[2], "lib-name") {
            *ctx.client.info.lib_name.lock() = value;
        } else if is(&argv[2], "lib-ver") {
            *ctx.client.info.lib_ver.lock() = value;
        } else {
            return Err(CmdError::err(format!(
                "Unrecognized option '{}'",
                String::from_utf8_lossy(&argv[2])
            )));
        }
        ctx.out.ok();
    } else if is(sub, "info") {
        arity(2, "info")?;
        let mut line = ctx.client.info.describe();
        line.push('\n');
        ctx.out.verbatim("txt", line.as_bytes());
    } else if is(sub, "list") {
        let mut ids: Option<Vec<u64>> = None;
        let mut kind: Option<bool> = None; // Some(true): pubsub only; Some(false): normal only
        let mut i = 2;
        while i < argv.len() {
            if is(&argv[i], "type") && i + 1 < argv.len() {
                let t = &argv[i + 1];
                kind = if is(t, "normal") {
                    Some(false)
                } else if is(t, "pubsub") {
                    Some(true)
                } else if is(t, "master") || is(t, "replica") || is(t, "slave") {
                    Some(false)
                } else {
                    return Err(CmdError::err(format!(
                        "Unknown client type '{}'",
                        String::from_utf8_lossy(t)
                    )));
                };
                i += 2;
            } else if is(&argv[i], "id") && i + 1 < argv.len() {
                let mut list = Vec::new();
                i += 1;
                while i < argv.len() {
                    let id = int_arg(&argv[i])
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| CmdError::err("Invalid client ID"))?;
                    list.push(id as u64);
                    i += 1;
                }
                ids = Some(list);
            } else {
                return Err(CmdError::SYNTAX);
            }
        }
        let mut clients: Vec<_> = ctx.node.clients.lock().values().cloned().collect();
        clients.sort_by_key(|c| c.id);
        let mut text = String::new();
        for c in clients {
            if ids.as_ref().is_some_and(|ids| !ids.contains(&c.id)) {
                continue;
            }
            let pubsub = c.subs.load(Ordering::Relaxed) + c.psubs.load(Ordering::Relaxed) > 0;
            if kind.is_some_and(|want| want != pubsub) {
                continue;
            }
            text.push_str(&c.describe());
            text.push('\n');
        }
        ctx.out.verbatim("txt", text.as_bytes());
    } else if is(sub, "kill") {
        let target_addr;
        let mut target_id = None;
        if argv.len() == 3 {
            target_addr = Some(String::from_utf8_lossy(&argv[2]).into_owned());
        } else if argv.len() == 4 && is(&argv[2], "id") {
            target_id = Some(
                int_arg(&argv[3])
                    .map_err(|_| CmdError::err("client-id should be greater than 0"))?,
            );
            target_addr = None;
        } else if argv.len() == 4 && is(&argv[2], "addr") {
            target_addr = Some(String::from_utf8_lossy(&argv[3]).into_owned());
        } else {
            return Err(CmdError::SYNTAX);
        }
        let clients: Vec<_> = ctx.node.clients.lock().values().cloned().collect();
        let mut killed = 0;
        for c in clients {
            let hit = target_id.is_some_and(|id| id as u64 == c.id)
                || target_addr
                    .as_deref()
                    .is_some_and(|a| a == c.addr.to_string());
            if hit {
                c.kill();
                killed += 1;
                if c.id == ctx.client.info.id {
                    ctx.client.close = true;
                }
            }
        }
        if argv.len() == 3 {
            if killed == 0 {
                return Err(CmdError::err("No such client"));
            }
            ctx.out.ok();
        } else {
            ctx.out.int(killed);
        }
    } else if is(sub, "unblock") {
        if argv.len() != 3 && argv.len() != 4 {
            return Err(CmdError::arity("client|unblock"));
        }
        let how = match argv.get(3) {
            None => crate::node::UNBLOCK_TIMEOUT,
            Some(a) if is(a, "timeout") => crate::node::UNBLOCK_TIMEOUT,
            Some(a) if is(a, "error") => crate::node::UNBLOCK_ERROR,
            Some(_) => {
                return Err(CmdError::err(
                    "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
                ))
            }
        };
        let id = int_arg(&argv[2])?;
        let target = ctx
            .node
            .clients
            .lock()
            .values()
            .find(|c| c.id as i64 == id)
            .cloned();
        match target {
            Some(c) if c.blocked.load(Ordering::Relaxed) => {
                c.request_unblock(how);
                ctx.out.int(1);
            }
            _ => ctx.out.int(0),
        }
    } else if is(sub, "pause") {
        if argv.len() != 3 && argv.len() != 4 {
            return Err(CmdError::arity("client|pause"));
        }
        let all = match argv.get(3) {
            None => true,
            Some(a) if is(a, "all") => true,
            Some(a) if is(a, "write") => false,
            Some(_) => return Err(CmdError::err("CLIENT PAUSE mode must be WRITE or ALL")),
        };
        let ms = int_arg(&argv[2])
            .map_err(|_| CmdError::err("timeout is not an integer or out of range"))?;
        let ms = u64::try_from(ms).map_err(|_| CmdError::err("timeout is negative"))?;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms).min(MAX_PAUSE);
        ctx.node.pause.pause(until, all);
        ctx.out.ok();
    } else if is(sub, "unpause") {
        arity(2, "unpause")?;
        ctx.node.pause.unpause();
        ctx.out.ok();
    } else if is(sub, "reply") {
        arity(3, "reply")?;
        use crate::conn::ReplyMode;
        if is(&argv[2], "on") {
            ctx.client.reply = ReplyMode::On;
            ctx.out.ok();
        } else if is(&argv[2], "off") {
            ctx.client.reply = ReplyMode::Off;
        } else if is(&argv[2], "skip") {
            if ctx.client.reply != ReplyMode::Off {
                ctx.client.reply = ReplyMode::SkipNext;
            }
        } else {
            return Err(CmdError::SYNTAX);
        }
    } else if is(sub, "no-evict") || is(sub, "no-touch") {
        arity(3, &String::from_utf8_lossy(sub).to_ascii_lowercase())?;
        if !(is(&argv[2], "on") || is(&argv[2], "off")) {
            return Err(CmdError::SYNTAX);
        }
        ctx.out.ok();
    } else if is(sub, "help") {
        ctx.out.simples(CLIENT_HELP);
    } else {
        return Err(CmdError::unknown_subcommand(sub, "client"));
    }
    Ok(())
}

fn reset(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    ctx.client.multi = None;
    *ctx.client.info.multi.lock() = -1;
    if ctx.client.watch.is_some() {
        ctx.client.unwatch();
    }
    let channels: Vec<Bytes> = ctx.client.channels.drain().collect();
    let patterns: Vec<Bytes> = ctx.client.patterns.drain().collect();
    ctx.node
        .pubsub
        .remove_client(ctx.client.info.id, &channels, &patterns);
    ctx.client.info.subs.store(0, Ordering::Relaxed);
    ctx.client.info.psubs.store(0, Ordering::Relaxed);
    ctx.client.db = 0;
    ctx.client.info.db.store(0, Ordering::Relaxed);
    *ctx.client.info.name.lock() = None;
    ctx.out.version = RespVersion::Resp2;
    ctx.client.info.resp.store(2, Ordering::Relaxed);
    ctx.client.authed = ctx.node.settings.read().requirepass.is_none();
    ctx.out.simple("RESET");
    Ok(())
}

fn multi(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err("MULTI calls can not be nested"));
    }
    ctx.client.multi = Some(Multi {
        queue: Vec::new(),
        failed: false,
    });
    *ctx.client.info.multi.lock() = 0;
    ctx.out.ok();
    Ok(())
}

fn end_multi(ctx: &mut ConnCtx<'_>) -> Option<Multi> {
    *ctx.client.info.multi.lock() = -1;
    let multi = ctx.client.multi.take();
    if ctx.client.watch.is_some() {
        ctx.client.unwatch();
    }
    multi
}

fn exec(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    if ctx.client.multi.is_none() {
        return Err(CmdError::err("EXEC without MULTI"));
    }
    let watch = ctx.client.watch.take();
    let Some(multi) = end_multi(ctx) else {
        return Err(CmdError::err("EXEC without MULTI"));
    };
    if multi.failed {
        return Err(CmdError::raw(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    // The data commands go into one log entry and run there atomically, after the WATCH
    // check. A connection command queued inside MULTI (SELECT, PING, PUBLISH) runs now,
    // and its reply travels in the entry to keep its place among the replies.
    let mut items = Vec::with_capacity(multi.queue.len());
    for (spec, argv) in multi.queue {
        match spec.handler {
            Handler::Data(_) => items.push(TxItem::Data {
                db: ctx.client.db as u8,
                argv,
            }),
            Handler::Conn(handler) => {
                let mut reply = kelvin_protocol::ReplyWriter::new(ctx.out.version);
                let mut inner = ConnCtx {
                    client: ctx.client,
                    node: ctx.node,
                    out: &mut reply,
                    now_ms: ctx.now_ms,
                };
                if let Err(err) = handler(&mut inner, &argv) {
                    reply.buf.clear();
                    reply.error(&err.0);
                }
                items.push(TxItem::Literal(Bytes::from(reply.buf)));
            }
        }
    }
    let watch = watch.unwrap_or_default();
    let (watch_since, watched) = watch.entry();
    // The connection proposes it (in one group, or across groups with each group's own
    // watch: see `crate::conn::watch`); the reply comes from the log.
    ctx.client.transaction = Some((
        LogCommand::Transaction {
            watch_since,
            watch: watched,
            items,
        },
        watch,
    ));
    Ok(())
}

/// KELVIN.EXEC <transaction> [<watch group>]: what a node sends the leader of a
/// transaction's group when a plain client's MULTI/EXEC was queued on it (the queue and
/// the watch live where the client is connected; the group is led elsewhere), and what a
/// transaction runs again as (after a fault-in, or refused at apply by a migration). The
/// argument is the encoded `LogCommand::Transaction`, watch index included: log indexes
/// are the same on every replica of a group, and the sender's, being a follower's, is at
/// most the leader's, so the watch check can only err towards aborting. `<watch group>`
/// is the group whose log that index counts in ([`crate::conn::WatchedKey::group`]). Runs like
/// the EXEC it came from (the reply is EXEC's); anything but one transaction is refused.
fn kelvin_exec(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let batch = kelvin_protocol::log::LogBatch::decode(&argv[1])
        .map_err(|e| CmdError::err(format!("KELVIN.EXEC: not a transaction: {e}")))?;
    let watch_group = match argv.get(2) {
        Some(g) => Some(
            std::str::from_utf8(g)
                .ok()
                .and_then(|g| g.parse::<u64>().ok())
                .ok_or(CmdError::NOT_INTEGER)?,
        ),
        None => None,
    };
    match <[LogCommand; 1]>::try_from(batch.commands) {
        Ok([tx @ LogCommand::Transaction { .. }]) => {
            let watch = Watch::of_entry(&tx, watch_group);
            ctx.client.transaction = Some((tx, watch));
            Ok(())
        }
        _ => Err(CmdError::err("KELVIN.EXEC takes one encoded transaction")),
    }
}

/// `KELVIN.RELAYED <hops> <epoch>`: the first request of a relay connection (see
/// [`crate::relay::Relay::connect`]): its requests have been relayed `hops` times, by a
/// node whose topology was at `epoch`. A node that would relay them again waits for that
/// topology first, and never relays past [`crate::relay::MAX_RELAY_HOPS`], so two nodes
/// whose slot maps disagree cannot bounce a request between them.
fn kelvin_relayed(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let num = |a: &Bytes| {
        std::str::from_utf8(a)
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(CmdError::NOT_INTEGER)
    };
    let hops = num(&argv[1])?;
    ctx.client.relayed = Some(crate::conn::RelayedFrom {
        hops: hops.min(u8::MAX as u64) as u8,
        epoch: num(&argv[2])?,
    });
    ctx.out.ok();
    Ok(())
}

/// The request that relays `tx`, watched in `watch_group`'s log (see [`kelvin_exec`]).
pub fn kelvin_exec_request(tx: &LogCommand, watch_group: Option<u64>) -> Vec<Bytes> {
    let mut buf = Vec::new();
    kelvin_protocol::log::LogBatch {
        now_ms: 0,
        commands: vec![tx.clone()],
    }
    .encode(&mut buf);
    let mut request = vec![Bytes::from_static(b"KELVIN.EXEC"), Bytes::from(buf)];
    request.extend(watch_group.map(|g| Bytes::from(g.to_string())));
    request
}

fn discard(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    if ctx.client.multi.is_none() {
        return Err(CmdError::err("DISCARD without MULTI"));
    }
    end_multi(ctx);
    ctx.out.ok();
    Ok(())
}

fn watch(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err("WATCH inside MULTI is not allowed"));
    }
    // On the redirect port, Redis Cluster's rule: one WATCH names keys of one slot.
    let slot = |k: &Bytes| kelvin_protocol::key_slot(k);
    if ctx.client.redirect && argv[2..].iter().any(|k| slot(k) != slot(&argv[1])) {
        return Err(CmdError::raw(crate::conn::CROSSSLOT));
    }
    let db = ctx.client.db as u8;
    crate::conn::watch_keys(ctx.node, ctx.client, db, &argv[1..]);
    ctx.out.ok();
    Ok(())
}

fn unwatch(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    if ctx.client.watch.is_some() {
        ctx.client.unwatch();
    }
    ctx.out.ok();
    Ok(())
}

/// READONLY: reads on this connection are served from this node's replica even when it
/// is a follower, as Redis Cluster replicas do: possibly stale, never relayed.
fn readonly(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    ctx.client.readonly = true;
    ctx.out.ok();
    Ok(())
}

fn readwrite(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    ctx.client.readonly = false;
    ctx.out.ok();
    Ok(())
}
