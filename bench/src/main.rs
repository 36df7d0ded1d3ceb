//! `kelvin-bench`: side-by-side benchmarks of Kelvin and redis-server on this machine.
//!
//! ```text
//! cargo run --release -p kelvin-bench -- throughput [--quick] [--requests N]
//! cargo run --release -p kelvin-bench -- memory [--quick] [--keys N]
//! cargo run --release -p kelvin-bench -- durable [--quick] [--requests N]
//! cargo run --release -p kelvin-bench -- restart [--quick] [--keys N]
//! cargo run --release -p kelvin-bench -- cluster [--quick] [--requests N]
//! cargo run --release -p kelvin-bench -- reshard [--quick] [--sessions N] [--value-bytes B] [--rate R] [--out DIR]
//! cargo run --release -p kelvin-bench -- planner-eval [--quick] [--trace FILE] [--shape S] [--handover-at MS] [--window MS] [--out DIR]
//! ```
//!
//! Each subcommand starts its own servers on free loopback ports with temporary
//! directories, kills them when done (or on error), prints a markdown table and writes
//! it to `bench-results/`.

mod cluster;
mod crosstx;
mod durable;
mod group;
mod memory;
mod openloop;
mod planner;
mod reshard;
mod restart;
mod servers;
mod session;
mod slotclient;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use servers::{locate_kelvin, locate_kelvin_cli, locate_program, Programs};

#[derive(Parser)]
#[command(
    name = "kelvin-bench",
    about = "Side-by-side benchmarks of Kelvin and redis-server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// SET/GET throughput with redis-benchmark, pipeline 1 and 16.
    Throughput(ThroughputArgs),
    /// Resident memory for 1,000,000 keys of 100-byte values.
    Memory(MemoryArgs),
    /// SET throughput with appendfsync always/everysec, single node and 3-node group.
    Durable(LoadArgs),
    /// Restart time with 1,000,000 keys, after a snapshot and from the log.
    Restart(RestartArgs),
    /// SET/GET with redis-benchmark --cluster: 3-node Kelvin cluster vs 3-master Redis
    /// Cluster, appendfsync everysec and always.
    Cluster(ClusterArgs),
    /// What a transaction across groups costs against the same within one group (3-node,
    /// 3-group cluster): MULTI/EXEC and RENAME latency, one request at a time.
    Crosstx(CrosstxArgs),
    /// A live scale-out (a 4th node takes 4096 slots) on Kelvin and on Redis Cluster under
    /// the same open-loop session load, at 3 data sizes: summary.json, table.md and plots.
    Reshard(ReshardArgs),
    /// Eager plans against a trace: the fault-in rate after a handover for each planning
    /// strategy (random, LRU, LFU, per byte, the learned model, the oracle) and budget.
    PlannerEval(PlannerArgs),
}

#[derive(Args)]
struct PlannerArgs {
    /// A smaller generated trace (handover at 10 minutes instead of 30).
    #[arg(long)]
    quick: bool,
    /// A trace file (`t_ms,op,key,bytes,ttl_ms` lines) instead of the generator.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The generator's shape: sessions, zipf or drift (see bench/README.md).
    #[arg(long, default_value = "sessions")]
    shape: String,
    /// The generator's scale: users arriving per second (sessions), thousands of keys
    /// (zipf, drift). Default 4 (sessions) or 50; halved with --quick.
    #[arg(long)]
    scale: Option<f64>,
    /// When the handover happens, ms into the trace (default 1800000; 600000 with --quick).
    #[arg(long)]
    handover_at: Option<u64>,
    /// The window after the handover that is scored, and the model's label window (ms).
    #[arg(long, default_value_t = 60_000)]
    window: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the generated trace to DIR/trace.csv.
    #[arg(long)]
    write_trace: bool,
    #[arg(long, default_value = "bench-results/planner")]
    out: PathBuf,
}

#[derive(Args)]
struct ReshardArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// The kelvin-cli binary (default: next to kelvin-server, built if missing).
    #[arg(long)]
    kelvin_cli: Option<PathBuf>,
    /// The redis-cli binary (default: from PATH).
    #[arg(long)]
    redis_cli: Option<PathBuf>,
    /// Sessions of the largest run; the sweep also runs a tenth and a third of it
    /// (default 1000000; 30000 with --quick).
    #[arg(long)]
    sessions: Option<u64>,
    /// Bytes per session (a hash of 4 fields).
    #[arg(long, default_value_t = 1000)]
    value_bytes: usize,
    /// Requests per second of the open-loop load (default 2000; 1000 with --quick).
    #[arg(long)]
    rate: Option<u64>,
    /// `redis-cli --cluster reshard --cluster-pipeline` (keys per MIGRATE).
    #[arg(long, default_value_t = 100)]
    redis_pipeline: u32,
    /// Where summary.json, runs.json, table.md and the PNGs go.
    #[arg(long, default_value = "bench-results/reshard")]
    out: PathBuf,
    /// Small sizes and short phases, a few minutes in all.
    #[arg(long)]
    quick: bool,
    /// Only these systems (comma-separated: redis-cluster, kelvin, kelvin-r3; default all).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// `kelvin-migration-drain-rate` (bytes/s) set on every Kelvin node before the move
    /// (default: the server's own).
    #[arg(long)]
    kelvin_drain_rate: Option<u64>,
    /// Which sessions the load reads and touches: `zipf` (popularity) or `rhythms`
    /// (users polling, reading and clicking in bursts that stop).
    #[arg(long, default_value = "zipf", value_parser = ["zipf", "rhythms"])]
    load: String,
    /// Only the largest size of the sweep (for one figure at a time; no sweep plot).
    #[arg(long)]
    largest_only: bool,
}

#[derive(Args)]
struct ServerArgs {
    /// The Kelvin server binary (default: target/release/kelvin-server, built if missing).
    #[arg(long)]
    kelvin_bin: Option<PathBuf>,
    /// The redis-server binary (default: from PATH).
    #[arg(long)]
    redis_bin: Option<PathBuf>,
}

/// The flags of the benchmarks that form groups and load them with redis-benchmark.
#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// The kelvin-cli binary (default: next to kelvin-server, built if missing).
    #[arg(long)]
    kelvin_cli: Option<PathBuf>,
    /// The redis-benchmark binary (default: from PATH).
    #[arg(long)]
    redis_benchmark: Option<PathBuf>,
    /// Requests per test of one redis-benchmark run (default: durable 100000, 20000 with
    /// --quick; cluster 500000, 50000 with --quick).
    #[arg(long)]
    requests: Option<u64>,
    /// Rounds; the table shows the median (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Parallel connections (redis-benchmark -c).
    #[arg(long, default_value_t = 50)]
    clients: u32,
    /// Small numbers for a smoke run.
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct CrosstxArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// The kelvin-cli binary (default: next to kelvin-server, built if missing).
    #[arg(long)]
    kelvin_cli: Option<PathBuf>,
    /// Requests per row (default 2000; 200 with --quick).
    #[arg(long)]
    ops: Option<usize>,
    /// Small numbers for a smoke run.
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct ClusterArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The redis-cli binary, to form the Redis Cluster (default: from PATH).
    #[arg(long)]
    redis_cli: Option<PathBuf>,
}

#[derive(Args)]
struct RestartArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// Keys to load (default 1000000; 200000 with --quick).
    #[arg(long)]
    keys: Option<u64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Rounds; the table shows the median (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Small numbers for a smoke run.
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct ThroughputArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// The redis-benchmark binary (default: from PATH).
    #[arg(long)]
    redis_benchmark: Option<PathBuf>,
    /// Requests per run without pipelining (default 200000); pipelined runs (-P 16) use
    /// five times as many unless --requests-pipelined is given.
    #[arg(long)]
    requests: Option<u64>,
    /// Requests per run with -P 16 (default 1000000).
    #[arg(long)]
    requests_pipelined: Option<u64>,
    /// Rounds; the table shows the median (default 3).
    #[arg(long)]
    rounds: Option<u32>,
    /// Parallel connections (redis-benchmark -c).
    #[arg(long, default_value_t = 50)]
    clients: u32,
    /// Small numbers for a smoke run: 20000/100000 requests, 1 round.
    #[arg(long)]
    quick: bool,
    /// Instead of Kelvin against Redis: one Kelvin with its key profiler on, then off
    /// (CONFIG SET kelvin-profile-keys), alternating, in the same run.
    #[arg(long)]
    profiler_ab: bool,
}

#[derive(Args)]
struct MemoryArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// Keys to load (default 1000000; 100000 with --quick).
    #[arg(long)]
    keys: Option<u64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Small numbers for a smoke run.
    #[arg(long)]
    quick: bool,
}

fn programs(args: &ServerArgs) -> Result<Programs> {
    Ok(Programs {
        kelvin: locate_kelvin(args.kelvin_bin.clone())?,
        redis_server: locate_program(args.redis_bin.clone(), "redis-server")?,
        kelvin_cli: None,
    })
}

/// The options of `durable`, and of `cluster` beside its own: [`programs`] with
/// kelvin-cli, redis-benchmark, and SET (and GET) loads of 100-byte values over 100000
/// keys, `requests` (given, or the quick or the full default) per test.
fn load_options(
    args: LoadArgs,
    quick_requests: u64,
    full_requests: u64,
) -> Result<durable::Options> {
    let mut programs = programs(&args.servers)?;
    programs.kelvin_cli = Some(locate_kelvin_cli(args.kelvin_cli)?);
    Ok(durable::Options {
        programs,
        redis_benchmark: locate_program(args.redis_benchmark, "redis-benchmark")?,
        requests: sized(args.requests, args.quick, quick_requests, full_requests),
        clients: args.clients.max(1),
        rounds: rounds(args.rounds, args.quick),
        keyspace: 100_000,
        value_size: 100,
        run_timeout: Duration::from_secs(600),
    })
}

fn rounds(given: Option<u32>, quick: bool) -> u32 {
    given.unwrap_or(if quick { 1 } else { 3 }).clamp(1, 100)
}

/// A size flag: the value given, or the quick or the full default; at least 1.
fn sized(given: Option<u64>, quick: bool, quick_default: u64, full_default: u64) -> u64 {
    given
        .unwrap_or(if quick { quick_default } else { full_default })
        .max(1)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Throughput(args) => {
            let p1 = sized(args.requests, args.quick, 20_000, 200_000);
            let p16 = args.requests_pipelined.unwrap_or(match args.requests {
                Some(n) => n.saturating_mul(5),
                None if args.quick => 100_000,
                None => 1_000_000,
            });
            let opts = throughput::Options {
                programs: programs(&args.servers)?,
                redis_benchmark: locate_program(args.redis_benchmark, "redis-benchmark")?,
                requests: vec![(1, p1), (16, p16.max(1))],
                clients: args.clients.max(1),
                rounds: rounds(args.rounds, args.quick),
                keyspace: 100_000,
                tests: "set,get".into(),
                run_timeout: Duration::from_secs(600),
                profiler_ab: args.profiler_ab,
            };
            let report = throughput::run(&opts)?;
            println!("{report}");
        }
        Cmd::Memory(args) => {
            let opts = memory::Options {
                programs: programs(&args.servers)?,
                keys: sized(args.keys, args.quick, 100_000, 1_000_000),
                value_size: args.value_size,
                chunk: 1000,
                settle: Duration::from_secs(if args.quick { 1 } else { 2 }),
            };
            let report = memory::run(&opts)?;
            println!("{report}");
        }
        Cmd::Durable(args) => {
            let report = durable::run(&load_options(args, 20_000, 100_000)?)?;
            println!("{report}");
        }
        Cmd::Restart(args) => {
            let opts = restart::Options {
                programs: programs(&args.servers)?,
                keys: sized(args.keys, args.quick, 200_000, 1_000_000),
                value_size: args.value_size,
                chunk: 1000,
                connections: 4,
                rounds: rounds(args.rounds, args.quick),
                timeout: Duration::from_secs(600),
            };
            let report = restart::run(&opts)?;
            println!("{report}");
        }
        Cmd::Cluster(ClusterArgs { load, redis_cli }) => {
            let opts = cluster::Options {
                load: load_options(load, 50_000, 500_000)?,
                redis_cli: locate_program(redis_cli, "redis-cli")?,
                nodes: 3,
                threads: 3,
            };
            let report = cluster::run(&opts)?;
            println!("{report}");
        }
        Cmd::Crosstx(args) => {
            let mut programs = programs(&args.servers)?;
            programs.kelvin_cli = Some(locate_kelvin_cli(args.kelvin_cli)?);
            let opts = crosstx::Options {
                programs,
                ops: args
                    .ops
                    .unwrap_or(if args.quick { 200 } else { 2000 })
                    .max(1),
            };
            println!("{}", crosstx::run(&opts)?);
        }
        Cmd::PlannerEval(args) => {
            let shape = planner::trace::Shape::parse(&args.shape)?;
            let scale = args.scale.unwrap_or(match shape {
                planner::trace::Shape::Sessions => 4.0,
                _ => 50.0,
            }) / if args.quick { 2.0 } else { 1.0 };
            let opts = planner::Options {
                trace: args.trace,
                shape,
                scale,
                handover_at_ms: args.handover_at.unwrap_or(if args.quick {
                    600_000
                } else {
                    1_800_000
                }),
                window_ms: args.window,
                seed: args.seed,
                out: args.out,
                write_trace: args.write_trace,
            };
            println!("{}", planner::run(&opts)?);
        }
        Cmd::Reshard(args) => {
            let mut programs = programs(&args.servers)?;
            programs.kelvin_cli = Some(locate_kelvin_cli(args.kelvin_cli)?);
            let largest = sized(args.sessions, args.quick, 30_000, 1_000_000);
            let mut sizes = vec![(largest / 10).max(1), (largest / 3).max(1), largest];
            if args.largest_only {
                sizes = vec![largest];
            }
            sizes.dedup();
            let phase = Duration::from_secs(if args.quick { 4 } else { 10 });
            let rate = args
                .rate
                .unwrap_or(if args.quick { 1000 } else { 2000 })
                .max(1);
            let opts = reshard::Options {
                programs,
                redis_cli: locate_program(args.redis_cli, "redis-cli")?,
                sizes,
                systems: reshard::systems(&args.systems)?,
                value_bytes: args.value_bytes.max(16),
                rate,
                steady: phase,
                after: phase,
                redis_pipeline: args.redis_pipeline.max(1),
                out: args.out,
                kelvin_drain_rate: args.kelvin_drain_rate,
                // At least half of what the steady phase alone should have sent.
                min_requests: (rate * phase.as_secs() / 2) as usize,
                rhythms: args.load == "rhythms",
            };
            let report = reshard::run(&opts)?;
            println!("{report}");
        }
    }
    Ok(())
}
