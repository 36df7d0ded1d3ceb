//! `kelvin-bench cluster`: a 3-node Kelvin cluster against a 3-master Redis Cluster,
//! both driven by `redis-benchmark --cluster`.
//!
//! For each fsync policy (`everysec`, then `always`) it starts both clusters, runs
//! `redis-benchmark --cluster -t set,get -c 50 -n N -r 100000 -d 100 --threads 3` against
//! each in turn (who goes first alternates by round), and stops them. `--threads 3` is
//! what `--cluster` takes by itself for 3 masters; it is given to both sides so that
//! both run the same client and are timed alike (threaded, redis-benchmark rounds each
//! test's duration up to a multiple of its 250 ms timer). The two sides are not
//! alike: Kelvin's cluster is formed with `--groups <nodes> --replicas <nodes>`, so each
//! node leads one Raft group (one master each in CLUSTER NODES) and replicates the others
//! (a write is answered once a majority of its group has it); Redis's masters each own a
//! third of the slots and replicate nothing. The report says so above the table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::durable;
use crate::group::{Group, Master};
use crate::servers::{environment_note, save_result, Kind, Spec, HOST};
use crate::throughput::{load_args, median, redis_benchmark, samples_list, table_row};

pub struct Options {
    /// Programs and load, as for `durable` (`requests` per test: SET and GET).
    pub load: durable::Options,
    pub redis_cli: PathBuf,
    /// Nodes on each side.
    pub nodes: usize,
    /// redis-benchmark `--threads`, the same for both sides.
    pub threads: u32,
}

/// The fsync policies compared, in the order they run and show.
const POLICIES: [&str; 2] = ["everysec", "always"];

/// ops/s samples per (policy, test, server).
type Samples = BTreeMap<(&'static str, String, Kind), Vec<f64>>;

pub fn run(opts: &Options) -> Result<String> {
    let mut samples = Samples::new();
    // Lines for the report, each with the policies it held for.
    let mut notes: Vec<(String, Vec<&'static str>)> = Vec::new();
    // What CLUSTER NODES showed on each side when the first clusters were formed.
    let mut topology: BTreeMap<Kind, Vec<Master>> = BTreeMap::new();
    for policy in POLICIES {
        eprintln!(
            "appendfsync {policy}: starting a {}-node Kelvin cluster and a {}-master Redis Cluster",
            opts.nodes, opts.nodes
        );
        let mut kelvin = Group::start_kelvin(
            &opts.load.programs,
            &Spec {
                redirect_port: true,
                ..Spec::new(Kind::Kelvin).appendfsync(policy)
            },
            opts.nodes,
            opts.nodes,
        )?;
        let mut redis = Group::start_redis(
            &opts.load.programs,
            &opts.redis_cli,
            &Spec::new(Kind::Redis).appendfsync(policy),
            opts.nodes,
        )?;
        for group in [&kelvin, &redis] {
            let masters = group.masters()?;
            eprintln!(
                "    {} (main ports {}): CLUSTER NODES shows {}",
                group.kind.name(),
                ports(group),
                describe(&masters, true)
            );
            let line = format!(
                "{}: CLUSTER NODES shows {}",
                group.kind.name(),
                describe(&masters, false)
            );
            note(&mut notes, policy, line);
            topology.entry(group.kind).or_insert(masters);
        }
        for round in 0..opts.load.rounds {
            for kind in Kind::alternating(round) {
                let group = match kind {
                    Kind::Kelvin => &mut kelvin,
                    Kind::Redis => &mut redis,
                };
                group.check_alive()?;
                eprintln!(
                    "round {}/{}: {} cluster, appendfsync {policy}",
                    round + 1,
                    opts.load.rounds,
                    kind.name()
                );
                let results = load(opts, group).with_context(|| {
                    format!(
                        "{} cluster, appendfsync {policy}; node logs:\n{}",
                        kind.name(),
                        group.log_tails()
                    )
                })?;
                group.check_alive()?;
                for (test, rps) in results {
                    eprintln!("    {test}: {rps:.0} ops/s");
                    samples.entry((policy, test, kind)).or_default().push(rps);
                }
            }
        }
        drop(kelvin);
        drop(redis);
    }

    let mut report = String::new();
    report.push_str("# Cluster: Kelvin vs Redis Cluster (redis-benchmark --cluster)\n\n");
    report.push_str(&environment_note(&opts.load.programs));
    let masters = |kind| topology.get(&kind).map(Vec::as_slice).unwrap_or_default();
    report.push_str(&header(opts, masters(Kind::Kelvin), masters(Kind::Redis)));
    for (line, policies) in &notes {
        let policies: Vec<String> = policies.iter().map(|p| format!("`{p}`")).collect();
        report.push_str(&format!("- {line} ({})\n", policies.join(", ")));
    }
    report.push('\n');
    report.push_str(&render(&samples));
    report.push_str(&samples_list(POLICIES.iter().flat_map(|&p| {
        samples
            .iter()
            .filter(move |((policy, _, _), _)| *policy == p)
            .map(|((policy, test, kind), v)| (format!("{} `{policy}` {test}", kind.name()), v))
    })));
    let path = save_result("cluster", &report)?;
    eprintln!("written to {}", path.display());
    Ok(report)
}

/// One redis-benchmark --cluster run (SET and GET) seeded with `group`'s first node;
/// returns (test, ops/s) pairs.
fn load(opts: &Options, group: &Group) -> Result<Vec<(String, f64)>> {
    let mut args = vec!["--cluster".to_string()];
    args.extend(load_args(
        "set,get",
        opts.load.clients,
        opts.load.requests,
        opts.load.keyspace,
        opts.load.value_size,
    ));
    args.extend(["--threads".to_string(), opts.threads.to_string()]);
    redis_benchmark(
        &opts.load.redis_benchmark,
        group.nodes[0].port,
        &args,
        opts.load.run_timeout,
    )
}

/// Adds `line` to `notes`, or `policy` to the policies of the same line.
fn note(notes: &mut Vec<(String, Vec<&'static str>)>, policy: &'static str, line: String) {
    match notes.iter_mut().find(|(l, _)| *l == line) {
        Some((_, policies)) => policies.push(policy),
        None => notes.push((line, vec![policy])),
    }
}

/// What each side is, from what CLUSTER NODES showed, and how it was loaded.
fn header(opts: &Options, kelvin: &[Master], redis: &[Master]) -> String {
    let n = opts.nodes;
    format!(
        "- Kelvin: {n} nodes (`--cluster-port`, `--redirect-port`, `--appendfsync POLICY`), \
         formed with `kelvin-cli cluster create ... --replicas {n} --groups {n} --yes`: {} Raft \
         group(s) (the masters of CLUSTER NODES) holding the 16384 slots, each replicated on \
         all {n} nodes (CLUSTER NODES, one line per node, cannot show a node that leads one \
         group and follows the others: it shows masters only); \
         every write is answered only once a majority of its group has it in its log \
         (fsynced there first with `always`)\n\
         - Redis: {} masters with no replicas (`--cluster-enabled yes --appendonly yes \
         --appendfsync POLICY --save ''`, `redis-cli --cluster create ... \
         --cluster-replicas 0`), {} slots each: every key has one copy, on its master \
         (Redis replication, were there replicas, is asynchronous)\n\
         - so the ratio is not like-for-like: Kelvin answers a write once a majority of its \
         nodes has it, each Redis master answers alone for its share of the keys\n\
         - redis-benchmark --cluster -h {HOST} -p SEED -t set,get -c {} -n {} -r {} -d {} \
         --threads {} --csv -q, the seed being the first node's main port; median of {} \
         round(s), the two clusters alternating; new clusters for each policy. `--threads` \
         is what --cluster picks by itself for {} masters, given to both sides so that both \
         are measured alike: with threads redis-benchmark notices the end of a test on its \
         250 ms timer, so each duration is rounded up to a multiple of 250 ms (hence the \
         repeated figures); a test lasts seconds to keep that small\n",
        kelvin.len(),
        redis.len(),
        spread(redis.iter().map(|m| m.slots as usize)),
        opts.load.clients,
        opts.load.requests,
        opts.load.keyspace,
        opts.load.value_size,
        opts.threads,
        opts.load.rounds,
        opts.threads,
    )
}

/// `1 master(s) (127.0.0.1:7302: 16384 slots, 2 replica(s))` with `addresses`, else
/// `1 master(s), 16384 slots and 2 replica(s) each`.
fn describe(masters: &[Master], addresses: bool) -> String {
    if !addresses {
        return format!(
            "{} master(s), {} slots and {} replica(s) each",
            masters.len(),
            spread(masters.iter().map(|m| m.slots as usize)),
            spread(masters.iter().map(|m| m.replicas))
        );
    }
    let list: Vec<String> = masters
        .iter()
        .map(|m| {
            format!(
                "{}:{}: {} slots, {} replica(s)",
                m.host, m.port, m.slots, m.replicas
            )
        })
        .collect();
    format!("{} master(s) ({})", masters.len(), list.join("; "))
}

/// `5461` if all the values are 5461, `5461 to 5462` if they range so; `-` if none.
fn spread(values: impl Iterator<Item = usize>) -> String {
    let values: Vec<usize> = values.collect();
    match (values.iter().min(), values.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a} to {b}"),
        _ => "-".into(),
    }
}

fn ports(group: &Group) -> String {
    let ports: Vec<String> = group.nodes.iter().map(|n| n.port.to_string()).collect();
    ports.join(", ")
}

fn render(samples: &Samples) -> String {
    let get = |policy, test: &str, kind| {
        samples
            .get(&(policy, test.to_string(), kind))
            .and_then(|v| median(v))
    };
    let mut s = String::from(
        "| policy | test | Kelvin ops/s | Redis ops/s | Kelvin/Redis |\n|---|---|---:|---:|---:|\n",
    );
    for policy in POLICIES {
        for test in ["SET", "GET"] {
            let (k, r) = (
                get(policy, test, Kind::Kelvin),
                get(policy, test, Kind::Redis),
            );
            if k.is_none() && r.is_none() {
                continue;
            }
            s.push_str(&table_row(&[&format!("`{policy}`"), test], k, r));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_policies_in_order() {
        let mut s = Samples::new();
        s.insert(("always", "SET".into(), Kind::Kelvin), vec![3.0, 1.0, 2.0]);
        s.insert(("always", "SET".into(), Kind::Redis), vec![4.0]);
        s.insert(("everysec", "GET".into(), Kind::Kelvin), vec![10.0]);
        let t = render(&s);
        assert!(t.contains("| `always` | SET | 2 | 4 | 0.50 |"));
        assert!(t.contains("| `everysec` | GET | 10 | - | - |"));
        assert!(t.find("everysec").unwrap() < t.find("always").unwrap());
        assert!(!t.contains("`everysec` | SET"));
    }

    #[test]
    fn describes_masters() {
        let m = Master {
            host: HOST.into(),
            port: 7302,
            slots: 16384,
            replicas: 2,
        };
        assert_eq!(
            describe(std::slice::from_ref(&m), true),
            "1 master(s) (127.0.0.1:7302: 16384 slots, 2 replica(s))"
        );
        let other = Master {
            slots: 5461,
            ..m.clone()
        };
        assert_eq!(
            describe(&[m, other], false),
            "2 master(s), 5461 to 16384 slots and 2 replica(s) each"
        );
        assert_eq!(spread([].into_iter()), "-");
    }
}
