//! `kelvin-bench durable`: SET throughput when every write must reach the disk.
//!
//! redis-benchmark `-t set -c 50 -r 100000 -d 100` against Redis (`appendonly yes`) and
//! Kelvin with the same `appendfsync` policy, single node, then against a 3-node Kelvin
//! group with `appendfsync always` through its leader and through a follower (which
//! relays to the leader), compared with the single Redis `always` figure of the same
//! round. Servers alternate; the table shows the median of the rounds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::group::Group;
use crate::servers::{environment_note, save_result, Kind, Programs, ServerGuard, Spec, HOST};
use crate::throughput::{load_args, median, ops_cell, ratio_cell, redis_benchmark, samples_list};

pub struct Options {
    pub programs: Programs,
    pub redis_benchmark: PathBuf,
    /// Requests per test of one redis-benchmark run.
    pub requests: u64,
    pub clients: u32,
    pub rounds: u32,
    pub keyspace: u64,
    pub value_size: usize,
    /// Longest one redis-benchmark run may take before it is killed.
    pub run_timeout: Duration,
}

/// The rows of the table, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Always,
    Everysec,
    GroupLeader,
    GroupFollower,
}

impl Row {
    fn label(self) -> &'static str {
        match self {
            Row::Always => "`always`, single node",
            Row::Everysec => "`everysec`, single node",
            Row::GroupLeader => "`always`, Kelvin 3-node group, via the leader",
            Row::GroupFollower => "`always`, Kelvin 3-node group, via a follower (relayed)",
        }
    }
}

/// ops/s samples per (row, server). The group rows have only Kelvin samples: they are
/// compared with the Redis samples of [`Row::Always`].
type Samples = BTreeMap<(Row, Kind), Vec<f64>>;

pub fn run(opts: &Options) -> Result<String> {
    let mut kelvin_always = ServerGuard::start_spec(
        &Spec::new(Kind::Kelvin).appendfsync("always"),
        &opts.programs,
    )?;
    let mut redis_always = ServerGuard::start_spec(
        &Spec::new(Kind::Redis).appendfsync("always"),
        &opts.programs,
    )?;
    let mut kelvin_everysec = ServerGuard::start_spec(
        &Spec::new(Kind::Kelvin).appendfsync("everysec"),
        &opts.programs,
    )?;
    let mut redis_everysec = ServerGuard::start_spec(
        &Spec::new(Kind::Redis).appendfsync("everysec"),
        &opts.programs,
    )?;
    eprintln!("starting a 3-node Kelvin group (appendfsync always)");
    let mut group = Group::start_kelvin(
        &opts.programs,
        &Spec::new(Kind::Kelvin).appendfsync("always"),
        3,
        1,
    )?;
    eprintln!(
        "Kelvin always :{}, Redis always :{}, Kelvin everysec :{}, Redis everysec :{}, group :{}",
        kelvin_always.port,
        redis_always.port,
        kelvin_everysec.port,
        redis_everysec.port,
        group
            .nodes
            .iter()
            .map(|n| n.port.to_string())
            .collect::<Vec<_>>()
            .join(",:")
    );

    let args = load_args(
        "set",
        opts.clients,
        opts.requests,
        opts.keyspace,
        opts.value_size,
    );
    let mut samples = Samples::new();
    let mut leader_changes = Vec::new();
    let mut last_leader = None;
    for round in 0..opts.rounds {
        let order = Kind::alternating(round);
        for row in [Row::Always, Row::Everysec] {
            for kind in order {
                let guard = match (row, kind) {
                    (Row::Always, Kind::Kelvin) => &mut kelvin_always,
                    (Row::Always, Kind::Redis) => &mut redis_always,
                    (_, Kind::Kelvin) => &mut kelvin_everysec,
                    (_, Kind::Redis) => &mut redis_everysec,
                };
                guard.check_alive()?;
                eprintln!(
                    "round {}/{}: {} {}",
                    round + 1,
                    opts.rounds,
                    kind.name(),
                    row.label()
                );
                let rps = set_rps(opts, guard.port, &args)
                    .with_context(|| format!("{} {}", kind.name(), row.label()))?;
                guard.check_alive()?;
                eprintln!("    SET: {rps:.0} ops/s");
                samples.entry((row, kind)).or_default().push(rps);
            }
        }
        for row in [Row::GroupLeader, Row::GroupFollower] {
            group.check_alive()?;
            let leader = group.leader(Duration::from_secs(30))?;
            if last_leader.is_some_and(|l| l != leader) {
                leader_changes.push(format!(
                    "round {}: the leader moved from the node on port {} to the one on port {}",
                    round + 1,
                    group.nodes[last_leader.unwrap_or(0)].port,
                    group.nodes[leader].port
                ));
            }
            last_leader = Some(leader);
            let target = match row {
                Row::GroupLeader => leader,
                _ => (leader + 1) % group.nodes.len(),
            };
            let port = group.nodes[target].port;
            eprintln!(
                "round {}/{}: Kelvin {} (port {port})",
                round + 1,
                opts.rounds,
                row.label()
            );
            let rps = set_rps(opts, port, &args).with_context(|| {
                format!("Kelvin {}; node logs:\n{}", row.label(), group.log_tails())
            })?;
            group.check_alive()?;
            eprintln!("    SET: {rps:.0} ops/s");
            samples.entry((row, Kind::Kelvin)).or_default().push(rps);
        }
    }

    let mut report = String::new();
    report.push_str("# Durable writes: Kelvin vs Redis (redis-benchmark SET)\n\n");
    report.push_str(&environment_note(&opts.programs));
    report.push_str(&format!(
        "- redis-benchmark -h {HOST} -t set -c {} -n {} -r {} -d {} --csv -q; median of {} \
         round(s), servers alternating; Redis with `--appendonly yes --appendfsync POLICY \
         --save ''`, Kelvin with `--appendfsync POLICY`; the group rows are compared with \
         the single-node Redis `always` figure\n\n",
        opts.clients, opts.requests, opts.keyspace, opts.value_size, opts.rounds
    ));
    report.push_str(&render(&samples));
    report.push_str(&samples_list(samples.iter().map(|((row, kind), v)| {
        (format!("{} {}", kind.name(), row.label()), v)
    })));
    for change in &leader_changes {
        report.push_str(&format!("- {change}\n"));
    }
    let path = save_result("durable", &report)?;
    eprintln!("written to {}", path.display());
    drop(group);
    drop(kelvin_always);
    drop(redis_always);
    drop(kelvin_everysec);
    drop(redis_everysec);
    Ok(report)
}

fn set_rps(opts: &Options, port: u16, args: &[String]) -> Result<f64> {
    let results = redis_benchmark(&opts.redis_benchmark, port, args, opts.run_timeout)?;
    results
        .into_iter()
        .find(|(test, _)| test == "SET")
        .map(|(_, rps)| rps)
        .context("no SET result in redis-benchmark output")
}

fn render(samples: &Samples) -> String {
    let get = |row: Row, kind: Kind| samples.get(&(row, kind)).and_then(|v| median(v));
    let mut s = String::from(
        "| policy | Kelvin ops/s | Redis ops/s | Kelvin/Redis |\n|---|---:|---:|---:|\n",
    );
    for row in [
        Row::Always,
        Row::Everysec,
        Row::GroupLeader,
        Row::GroupFollower,
    ] {
        let k = get(row, Kind::Kelvin);
        let redis_row = match row {
            Row::Everysec => Row::Everysec,
            _ => Row::Always,
        };
        let r = get(redis_row, Kind::Redis);
        let group_row = matches!(row, Row::GroupLeader | Row::GroupFollower);
        if k.is_none() && (r.is_none() || group_row) {
            continue;
        }
        let redis = if group_row {
            format!("{} (single, `always`)", ops_cell(r))
        } else {
            ops_cell(r)
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.label(),
            ops_cell(k),
            redis,
            ratio_cell(k, r)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_group_rows_against_redis_always() {
        let mut s = Samples::new();
        s.insert((Row::Always, Kind::Kelvin), vec![30000.0, 10000.0, 20000.0]);
        s.insert((Row::Always, Kind::Redis), vec![10000.0]);
        s.insert((Row::GroupLeader, Kind::Kelvin), vec![15000.0]);
        let t = render(&s);
        assert!(t.contains("| `always`, single node | 20000 | 10000 | 2.00 |"));
        assert!(t.contains("via the leader | 15000 | 10000 (single, `always`) | 1.50 |"));
        assert!(!t.contains("everysec"));
        assert!(!t.contains("follower"));
    }
}
