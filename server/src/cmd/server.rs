//! Server commands: INFO, COMMAND, CONFIG, DBSIZE, FLUSHDB, FLUSHALL, SWAPDB, TIME, ROLE,
//! SHUTDOWN.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::cmd::{
    self, conn, data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, NO_KEYS,
};
use crate::conn::ConnCtx;

pub const COMMANDS: &[CommandSpec] = &[
    conn(
        "info",
        -1,
        LOADING | STALE,
        "server",
        "Returns information and statistics about the server.",
        info,
    ),
    conn(
        "command",
        -1,
        LOADING | STALE,
        "server",
        "Returns detailed information about all commands.",
        command,
    ),
    conn(
        "config",
        -2,
        ADMIN | NOSCRIPT | LOADING | STALE,
        "server",
        "A container for server configuration commands.",
        config,
    ),
    data(
        "dbsize",
        1,
        READONLY | FAST,
        NO_KEYS,
        "server",
        "Returns the number of keys in the database.",
        dbsize,
    ),
    data(
        "flushdb",
        -1,
        WRITE,
        NO_KEYS,
        "server",
        "Removes all keys from the current database.",
        flushdb,
    ),
    data(
        "flushall",
        -1,
        WRITE,
        NO_KEYS,
        "server",
        "Removes all keys from all databases.",
        flushall,
    ),
    data(
        "swapdb",
        3,
        WRITE | FAST,
        NO_KEYS,
        "server",
        "Swaps two Redis databases.",
        swapdb,
    ),
    conn(
        "time",
        1,
        LOADING | STALE | FAST,
        "server",
        "Returns the server time.",
        time,
    ),
    conn(
        "role",
        1,
        NOSCRIPT | LOADING | STALE | FAST,
        "server",
        "Returns the replication role.",
        role,
    ),
    conn(
        "save",
        1,
        ADMIN | NOSCRIPT | NOT_IN_MULTI,
        "server",
        "Synchronously saves the database(s) to disk.",
        save,
    ),
    conn(
        "bgsave",
        -1,
        ADMIN | NOSCRIPT,
        "server",
        "Asynchronously saves the database(s) to disk.",
        bgsave,
    ),
    conn(
        "lastsave",
        1,
        LOADING | STALE | FAST,
        "server",
        "Returns the Unix timestamp of the last successful save to disk.",
        lastsave,
    ),
    conn(
        "shutdown",
        -1,
        ADMIN | NOSCRIPT | LOADING | STALE | NOT_IN_MULTI,
        "server",
        "Synchronously saves the database(s) to disk and shuts down the Redis server.",
        shutdown,
    ),
];

fn dbsize(ex: &mut Exec<'_>, _argv: &[Bytes]) -> CmdResult {
    // Not the keys of slots this group sealed: they are the target's now.
    let n = crate::cmd::keys::listed_len(ex.store, ex.db, false);
    ex.out.int(n as i64);
    Ok(())
}

fn check_flush_args(argv: &[Bytes]) -> CmdResult {
    match argv.len() {
        1 => Ok(()),
        2 if is(&argv[1], "async") || is(&argv[1], "sync") => Ok(()),
        _ => Err(CmdError::SYNTAX),
    }
}

fn flushdb(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    check_flush_args(argv)?;
    ex.ks().clear();
    ex.store.signal_flush(Some(ex.db));
    ex.out.ok();
    Ok(())
}

fn flushall(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    check_flush_args(argv)?;
    for db in 0..crate::store::DATABASES {
        if ex.store.db_ref(db).is_some_and(|k| !k.is_empty()) {
            ex.store.db(db).clear();
        }
    }
    ex.store.signal_flush(None);
    ex.out.ok();
    Ok(())
}

fn swapdb(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let parse = |a: &[u8], which: &str| -> Result<usize, CmdError> {
        let n = int_arg(a).map_err(|_| CmdError::err(format!("invalid {which} DB index")))?;
        if !(0..crate::store::DATABASES as i64).contains(&n) {
            return Err(CmdError::err("DB index is out of range"));
        }
        Ok(n as usize)
    };
    let a = parse(&argv[1], "first")?;
    let b = parse(&argv[2], "second")?;
    ex.store.swap_dbs(a, b);
    ex.store.signal_flush(Some(a));
    ex.store.signal_flush(Some(b));
    ex.out.ok();
    Ok(())
}

fn time(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // The node's clock, as unix_ms has it (skewed in fault tests).
    let skew = crate::failpoint::clock_skew_ms();
    let shift = std::time::Duration::from_millis(skew.unsigned_abs());
    let now = if skew >= 0 {
        now + shift
    } else {
        now.saturating_sub(shift)
    };
    ctx.out.array(2);
    ctx.out.bulk(now.as_secs().to_string().as_bytes());
    ctx.out.bulk(now.subsec_micros().to_string().as_bytes());
    Ok(())
}

fn role(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    ctx.out.array(3);
    ctx.out.bulk(b"master");
    ctx.out.int(0);
    ctx.out.array(0);
    Ok(())
}

/// How long SAVE waits for the snapshot.
const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// SAVE: a snapshot of the keyspace at the last applied log entry, and the log
/// compacted below it. Like Redis's SAVE it blocks this connection until it is written.
fn save(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    let group = ctx
        .node
        .group()
        .ok_or_else(|| CmdError::raw(crate::conn::CLUSTER_DOWN))?;
    tokio::task::block_in_place(|| group.snapshot(Some(SAVE_TIMEOUT))).map_err(CmdError::err)?;
    ctx.out.ok();
    Ok(())
}

fn bgsave(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 2 || (argv.len() == 2 && !cmd::is(&argv[1], "schedule")) {
        return Err(CmdError::SYNTAX);
    }
    let group = ctx
        .node
        .group()
        .ok_or_else(|| CmdError::raw(crate::conn::CLUSTER_DOWN))?;
    let _ = group.snapshot(None);
    ctx.out.simple("Background saving started");
    Ok(())
}

fn lastsave(ctx: &mut ConnCtx<'_>, _argv: &[Bytes]) -> CmdResult {
    let started = cmd::unix_ms() / 1000 - ctx.node.started.elapsed().as_secs();
    ctx.out.int(started as i64);
    Ok(())
}

fn shutdown(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    for a in &argv[1..] {
        if !["nosave", "save", "now", "force", "abort"]
            .iter()
            .any(|w| is(a, w))
        {
            return Err(CmdError::SYNTAX);
        }
        if is(a, "abort") {
            return Err(CmdError::err("No shutdown in progress."));
        }
    }
    tracing::info!(cid = ctx.client.info.id, "SHUTDOWN requested by a client");
    ctx.node.shutdown();
    // Like Redis, a successful SHUTDOWN sends no reply: the connection just closes.
    ctx.client.close = true;
    Ok(())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Highest `used_memory` INFO has reported (Redis's `used_memory_peak`).
static USED_MEMORY_PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// INFO's memory section. `used_memory` is what the keyspaces of this node's replicas
/// hold by their own count ([`crate::store::memory`]), the figure `maxmemory` (a limit
/// per group) is compared with; `used_memory_rss` is the process's resident size.
///
/// Kelvin's own lines break the figures down for `kelvin-bench memory`:
/// `mem_keyspace_tables` (the slot tables as allocated), `mem_keyspace_heap` (what keys
/// and values hold beyond their entries), `mem_entry_bytes` (one key's place in a slot's
/// entries: key, value header, expiry, heat), `mem_index_bucket_bytes` (one bucket of a
/// slot's index: a position and a control byte), `mem_raft_log` (the Raft log in memory).
fn memory_info(
    node: &crate::node::Node,
    used: usize,
    scripts: usize,
    parts: crate::store::MemoryBreakdown,
) -> String {
    let used = used as u64;
    let raft_log: u64 = node.groups().map_or(0, |gs| {
        gs.hosted
            .values()
            .map(|g| g.status.log_memory.load(Ordering::Relaxed))
            .sum()
    });
    let peak = USED_MEMORY_PEAK
        .fetch_max(used, Ordering::Relaxed)
        .max(used);
    let rss = rss_bytes();
    let limit = node.memory.get();
    format!(
        "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nused_memory_dataset:{used}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_allocator:libc\r\nnumber_of_cached_scripts:{scripts}\r\nmem_keyspace_tables:{}\r\nmem_keyspace_heap:{}\r\nmem_entry_bytes:{}\r\nmem_index_bucket_bytes:{}\r\nmem_raft_log:{raft_log}\r\n\r\n",
        human_bytes(used),
        human_bytes(rss),
        human_bytes(peak),
        limit.maxmemory,
        human_bytes(limit.maxmemory),
        limit.policy.as_str(),
        rss as f64 / used.max(1) as f64,
        parts.tables,
        parts.heap,
        crate::store::slotmap::ENTRY_BYTES,
        crate::store::slotmap::INDEX_BUCKET_BYTES,
    )
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[u])
    }
}

/// Sections INFO prints without arguments (`default`), in Redis's order.
/// The `# Raft` section: this node's place in its lowest-numbered group (`raft_groups`: how
/// many it replicates; `kelvin-cli cluster status` shows them all).
fn raft_info(node: &crate::node::Node) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let name = crate::cluster::node_name;
    let mut text = format!("# Raft\r\nraft_node_id:{}\r\n", name(node.id()));
    match node.group() {
        None => text.push_str("raft_role:none\r\n"),
        Some(g) => {
            let s = &g.status;
            let role = match s.leader() {
                _ if s.is_stopped() => "stopped",
                Some(l) if l == s.node_id => "leader",
                Some(_) => "follower",
                None => "candidate",
            };
            text.push_str(&format!(
                "raft_groups:{}\r\nraft_group:{}\r\nraft_role:{role}\r\nraft_leader_id:{}\r\nraft_term:{}\r\nraft_applied_index:{}\r\nraft_voters:{}\r\nraft_snapshots:{}\r\n",
                node.groups().map_or(0, |gs| gs.hosted.len()),
                g.group_id,
                s.leader().map(name).unwrap_or_default(),
                s.term.load(Relaxed),
                s.applied.load(Relaxed),
                node.membership.read().members.len().max(1),
                s.snapshots.load(Relaxed),
            ));
        }
    }
    text.push_str("\r\n");
    text
}

const DEFAULT_SECTIONS: [&str; 10] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
    "raft",
];

fn info_text(ctx: &ConnCtx<'_>, sections: &[String]) -> String {
    let node = ctx.node;
    let want = |name: &str| {
        sections.is_empty()
            || sections
                .iter()
                .any(|s| s == name || s == "all" || s == "everything" || s == "default")
    };
    // Sections that `default` leaves out: named, or in `all` / `everything`.
    let want_extra = |name: &str| {
        sections
            .iter()
            .any(|s| s == name || s == "all" || s == "everything")
    };
    let mut text = String::new();
    let uptime = node.started.elapsed().as_secs();
    let settings = node.settings.read().clone();
    if want("server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:{}\r\nkelvin_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:10\r\nexecutable:{}\r\nconfig_file:{}\r\n\r\n",
            cmd::connection::REDIS_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            node.run_id,
            node.local_addr.port(),
            uptime,
            uptime / 86400,
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            settings.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        );
    }
    if want("clients") {
        let clients = node.clients.lock();
        let pubsub = clients
            .values()
            .filter(|c| c.subs.load(Ordering::Relaxed) + c.psubs.load(Ordering::Relaxed) > 0)
            .count();
        let blocked = clients
            .values()
            .filter(|c| c.blocked.load(Ordering::Relaxed))
            .count();
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\npubsub_clients:{}\r\n\r\n",
            clients.len(),
            settings.maxclients,
            blocked,
            pubsub
        );
    }
    // Summed over the groups this node replicates.
    let mut parts = crate::store::MemoryBreakdown::default();
    let (keyspace_lines, hits, misses, expired, evicted, used, changes, scripts) = {
        let mut keys = vec![(0usize, 0usize); crate::store::DATABASES];
        let (mut hits, mut misses, mut expired, mut evicted, mut used, mut changes) =
            (0, 0, 0, 0, 0, 0);
        // Each group keeps its own script cache; SCRIPT LOAD on the main port loads into
        // every group, so the node's count is the largest.
        let mut scripts = 0;
        for g in node
            .groups()
            .map(|gs| gs.hosted.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let store = g.store.lock();
            for (i, k) in store.dbs() {
                keys[i].0 += k.len();
                keys[i].1 += k.expires_count();
            }
            hits += store.keyspace_hits;
            misses += store.keyspace_misses;
            expired += store.expired_keys;
            evicted += store.evicted_keys;
            used += store.used_memory();
            if want("memory") {
                let p = store.memory_breakdown();
                parts.tables += p.tables;
                parts.heap += p.heap;
            }
            scripts = scripts.max(store.scripts.len());
            changes += store.changes_since_snapshot;
        }
        let lines: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(i, (n, e))| format!("db{i}:keys={n},expires={e},avg_ttl=0"))
            .collect();
        (
            lines, hits, misses, expired, evicted, used, changes, scripts,
        )
    };
    if want("memory") {
        text.push_str(&memory_info(node, used, scripts, parts));
    }
    if want("persistence") {
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:{changes}\r\nrdb_bgsave_in_progress:{}\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\nkelvin_appendfsync:{}\r\nkelvin_data_dir:{}\r\n\r\n",
            u8::from(crate::bgsnap::fork_figures().2 > 0),
            settings.appendfsync.as_str(),
            settings.data_dir.display()
        );
    }
    if want("stats") {
        // `migrate_cached_sockets` is 0: MIGRATE opens a connection per call, keeps none.
        let s = &node.stats;
        // Snapshots written by forked children (`bgsnap`): the parent stops for the fork.
        let forks = crate::bgsnap::fork_figures();
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\nlatest_fork_usec:{}\r\ntotal_forks:{}\r\nmigrate_cached_sockets:0\r\ntotal_error_replies:{}\r\n\r\n",
            s.connections_received.load(Ordering::Relaxed),
            s.commands_processed.load(Ordering::Relaxed),
            s.net_input_bytes.load(Ordering::Relaxed),
            s.net_output_bytes.load(Ordering::Relaxed),
            s.rejected_connections.load(Ordering::Relaxed),
            expired,
            evicted,
            hits,
            misses,
            node.pubsub.channels(None).len(),
            node.pubsub.numpat(),
            forks.0,
            forks.1,
            crate::cmdstats::total_error_replies(),
        );
    }
    if want("replication") {
        let leader = node.group().is_none_or(|g| g.status.is_leader());
        let role = if leader { "master" } else { "slave" };
        // The offset of a Raft replica is the log index it has applied.
        let offset = node
            .group()
            .map_or(0, |g| g.status.applied.load(Ordering::Relaxed));
        text.push_str(&format!(
            "# Replication\r\nrole:{role}\r\nconnected_slaves:0\r\nmaster_repl_offset:{offset}\r\n\r\n"
        ));
    }
    if want("raft") {
        text.push_str(&raft_info(node));
    }
    // Walks every key: only when asked for by name (not in all/everything/default).
    if sections.iter().any(|s| s == "heat") {
        text.push_str(&crate::cmd::heat::info_section(ctx));
    }
    if want_extra("planner") {
        text.push_str(&crate::migrate::learn::info_section());
    }
    if want("cpu") {
        text.push_str(&cpu_info());
    }
    if want_extra("commandstats") {
        text.push_str(&crate::cmdstats::commandstats_section());
    }
    if want_extra("errorstats") {
        text.push_str(&crate::cmdstats::errorstats_section());
    }
    if want("cluster") {
        let enabled = u8::from(node.settings.read().cluster_port.is_some());
        text.push_str(&format!("# Cluster\r\ncluster_enabled:{enabled}\r\n\r\n"));
    }
    if want("keyspace") {
        text.push_str("# Keyspace\r\n");
        for line in keyspace_lines {
            text.push_str(&line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
    }
    // Redis ends the text without the final blank line.
    while text.ends_with("\r\n\r\n") {
        text.truncate(text.len() - 2);
    }
    text
}

fn info(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let sections: Vec<String> = argv[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let sections = if sections.iter().any(|s| s == "default") && sections.len() == 1 {
        DEFAULT_SECTIONS.iter().map(|s| s.to_string()).collect()
    } else {
        sections
    };
    let text = info_text(ctx, &sections);
    ctx.out.verbatim("txt", text.as_bytes());
    Ok(())
}

/// ACL categories COMMAND INFO lists for a command.
fn categories(spec: &CommandSpec) -> Vec<String> {
    let mut cats = Vec::new();
    if spec.is_write() {
        cats.push("@write".to_string());
    }
    if spec.flags & READONLY != 0 {
        cats.push("@read".to_string());
    }
    match spec.group {
        "generic" => cats.push("@keyspace".into()),
        "transactions" => cats.push("@transaction".into()),
        "server" => cats.push("@admin".into()),
        g => cats.push(format!("@{g}")),
    }
    if spec.flags & FAST != 0 {
        cats.push("@fast".to_string());
    } else {
        cats.push("@slow".to_string());
    }
    cats
}

fn write_command_info(ctx: &mut ConnCtx<'_>, spec: &CommandSpec) {
    let out = &mut *ctx.out;
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(spec.arity as i64);
    let flag_names: Vec<&str> = NAMES
        .iter()
        .filter(|(f, _)| spec.flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    out.set(flag_names.len());
    for f in flag_names {
        out.simple(f);
    }
    out.int(spec.keys.first as i64);
    out.int(spec.keys.last as i64);
    out.int(spec.keys.step as i64);
    let cats = categories(spec);
    out.set(cats.len());
    for c in cats {
        out.simple(&c);
    }
    out.array(0); // tips
    if spec.keys.first > 0 {
        // One range key spec, the shape Redis 7 clients read.
        out.array(1);
        out.map(4);
        out.bulk(b"flags");
        out.array(0);
        out.bulk(b"begin_search");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"index");
        out.bulk(b"spec");
        out.map(1);
        out.bulk(b"index");
        out.int(spec.keys.first as i64);
        out.bulk(b"find_keys");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"range");
        out.bulk(b"spec");
        out.map(3);
        out.bulk(b"lastkey");
        out.int(if spec.keys.last < 0 {
            spec.keys.last as i64
        } else {
            (spec.keys.last - spec.keys.first) as i64
        });
        out.bulk(b"keystep");
        out.int(spec.keys.step as i64);
        out.bulk(b"limit");
        out.int(0);
        out.bulk(b"notes");
        out.bulk(b"");
    } else {
        out.array(0);
    }
    out.array(0); // subcommands
}

fn write_command_docs(ctx: &mut ConnCtx<'_>, spec: &CommandSpec) {
    let out = &mut *ctx.out;
    out.bulk(spec.name.as_bytes());
    out.map(3);
    out.bulk(b"summary");
    out.bulk(spec.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(b"1.0.0");
    out.bulk(b"group");
    out.bulk(spec.group.as_bytes());
}

fn command(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let mut specs: Vec<&'static CommandSpec> = cmd::all().collect();
    specs.sort_by_key(|s| s.name);
    if argv.len() == 1 {
        ctx.out.array(specs.len());
        for spec in specs {
            write_command_info(ctx, spec);
        }
        return Ok(());
    }
    let sub = &argv[1];
    if is(sub, "count") {
        if argv.len() != 2 {
            return Err(CmdError::arity("command|count"));
        }
        ctx.out.int(specs.len() as i64);
    } else if is(sub, "info") {
        if argv.len() == 2 {
            ctx.out.array(specs.len());
            for spec in specs {
                write_command_info(ctx, spec);
            }
        } else {
            ctx.out.array(argv.len() - 2);
            for name in &argv[2..] {
                match cmd::lookup(name) {
                    Some(spec) => write_command_info(ctx, spec),
                    None => ctx.out.null_array(),
                }
            }
        }
    } else if is(sub, "docs") {
        let chosen: Vec<&'static CommandSpec> = if argv.len() == 2 {
            specs
        } else {
            argv[2..].iter().filter_map(|n| cmd::lookup(n)).collect()
        };
        ctx.out.map(chosen.len());
        for spec in chosen {
            write_command_docs(ctx, spec);
        }
    } else if is(sub, "list") {
        ctx.out.array(specs.len());
        for spec in specs {
            ctx.out.bulk(spec.name.as_bytes());
        }
    } else if is(sub, "getkeys") {
        if argv.len() < 3 {
            return Err(CmdError::arity("command|getkeys"));
        }
        let target = &argv[2..];
        let spec =
            cmd::lookup(&target[0]).ok_or_else(|| CmdError::err("Invalid command specified"))?;
        if !spec.arity_ok(target.len()) {
            return Err(CmdError::err(
                "Invalid number of arguments specified for command",
            ));
        }
        let positions = spec.keys_in(target);
        if positions.is_empty() {
            return Err(CmdError::err("The command has no key arguments"));
        }
        ctx.out.array(positions.len());
        for p in positions {
            ctx.out.bulk(&target[p]);
        }
    } else if is(sub, "help") {
        let lines = [
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
            "HELP",
            "    Print this help.",
        ];
        ctx.out.simples(&lines);
    } else {
        return Err(CmdError::unknown_subcommand(sub, "command"));
    }
    Ok(())
}

fn config(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "get") {
        if argv.len() < 3 {
            return Err(CmdError::arity("config|get"));
        }
        let settings = ctx.node.settings.read().clone();
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for name in crate::config::Settings::all_names() {
            let matched = argv[2..].iter().any(|p| {
                kelvin_protocol::glob::glob_match(&p.to_ascii_lowercase(), name.as_bytes(), true)
            });
            if matched {
                if let Some(v) = settings.get(name) {
                    pairs.push((name, v));
                }
            }
        }
        ctx.out.map(pairs.len());
        for (name, value) in pairs {
            ctx.out.bulk(name.as_bytes());
            ctx.out.bulk(value.as_bytes());
        }
    } else if is(sub, "set") {
        if argv.len() < 4 || !argv.len().is_multiple_of(2) {
            return Err(CmdError::arity("config|set"));
        }
        // All or nothing: apply to a copy, then swap it in.
        let mut next = ctx.node.settings.read().clone();
        let mut seen: Vec<String> = Vec::new();
        for pair in argv[2..].chunks(2) {
            let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&pair[1]).into_owned();
            if next.get(&name).is_none() {
                return Err(CmdError::err(format!(
                    "Unknown option or number of arguments for CONFIG SET - '{name}'"
                )));
            }
            // The same name twice is refused (an alias and its parameter are not, as in
            // Redis 7.0: the last one wins).
            if seen.contains(&name) {
                return Err(CmdError::err(format!(
                    "CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"
                )));
            }
            seen.push(name.clone());
            if crate::config::Settings::immutable(&name) {
                return Err(CmdError::err(format!(
                    "CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
                )));
            }
            next.set(&name, &value).map_err(|e| {
                CmdError::err(format!(
                    "CONFIG SET failed (possibly related to argument '{name}') - {}",
                    e.0
                ))
            })?;
        }
        for g in ctx
            .node
            .groups()
            .into_iter()
            .flat_map(|gs| gs.hosted.values().cloned().collect::<Vec<_>>())
        {
            let mut store = g.store.lock();
            store.notify_flags = next.notify_flags;
            store.hll_sparse_max_bytes = next.hll_sparse_max_bytes();
        }
        ctx.node.memory.set(next.memory_limit());
        *ctx.node.settings.write() = next;
        // A lower limit takes effect at once, not at the next write.
        ctx.node.evict_wanted.notify_one();
        ctx.out.ok();
    } else if is(sub, "resetstat") {
        let s = &ctx.node.stats;
        s.commands_processed.store(0, Ordering::Relaxed);
        crate::cmdstats::reset();
        s.connections_received.store(0, Ordering::Relaxed);
        s.rejected_connections.store(0, Ordering::Relaxed);
        s.net_input_bytes.store(0, Ordering::Relaxed);
        s.net_output_bytes.store(0, Ordering::Relaxed);
        for g in ctx
            .node
            .groups()
            .into_iter()
            .flat_map(|gs| gs.hosted.values().cloned().collect::<Vec<_>>())
        {
            let mut store = g.store.lock();
            store.keyspace_hits = 0;
            store.keyspace_misses = 0;
            store.expired_keys = 0;
            store.evicted_keys = 0;
        }
        ctx.out.ok();
    } else if is(sub, "rewrite") {
        let settings = ctx.node.settings.read().clone();
        let Some(path) = settings.config_file.clone() else {
            return Err(CmdError::err("The server is running without a config file"));
        };
        let mut text = String::from("# Written by CONFIG REWRITE\n");
        let inert = settings.inert.keys().copied();
        for name in crate::config::Settings::NAMES.into_iter().chain(inert) {
            if let Some(v) = settings.get(name) {
                if !v.is_empty() {
                    let _ = writeln!(text, "{name} {v}");
                }
            }
        }
        std::fs::write(&path, text)
            .map_err(|e| CmdError::err(format!("Rewriting config file: {e}")))?;
        ctx.out.ok();
    } else if is(sub, "help") {
        let lines = [
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
            "HELP",
            "    Print this help.",
        ];
        ctx.out.simples(&lines);
    } else {
        return Err(CmdError::unknown_subcommand(sub, "config"));
    }
    Ok(())
}

/// INFO's `cpu` section from getrusage(2), for this process and its waited-for children.
fn cpu_info() -> String {
    let seconds = |who: libc::c_int| -> (f64, f64) {
        // SAFETY: getrusage only writes the struct it is given; zeroed is a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a live rusage.
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return (0.0, 0.0);
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (secs(usage.ru_stime), secs(usage.ru_utime))
    };
    let (sys, user) = seconds(libc::RUSAGE_SELF);
    let (sys_children, user_children) = seconds(libc::RUSAGE_CHILDREN);
    format!(
        "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:{sys_children:.6}\r\nused_cpu_user_children:{user_children:.6}\r\n\r\n"
    )
}
