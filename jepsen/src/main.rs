//! `kelvin-jepsen`: the checker of Kelvin's fault tests, as a command.
//!
//! ```text
//! cargo run --release -p kelvin-jepsen -- self-test [--verbose]
//! ```
//!
//! `self-test` runs the library's known histories ([`kelvin_jepsen::selftest`]) through
//! the checkers, prints one line per case (name, expected verdict, verdict, time, and for
//! a bad case the reasons found and expected) and a last line `valid: true` if every
//! verdict was the expected one for exactly the expected reasons, `valid: false`
//! otherwise; the exit status is 0 only in the first case.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kelvin_jepsen::selftest;

mod bank;
mod cluster;
mod nemesis;
mod reshard;
mod run;
mod workload;

#[derive(Parser)]
#[command(
    name = "kelvin-jepsen",
    about = "Checker for Kelvin's fault-injection tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check histories with known verdicts (bad ones must be rejected, good ones
    /// accepted).
    SelfTest {
        /// Also print the problems found in each history.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Run a test end to end against the compose cluster of docker/ (needs Docker,
    /// docker-compose, nsenter and iptables, and root for the partitions).
    Run(RunArgs),
    /// Check a recorded history (a results folder's history.jsonl) again.
    Check {
        /// The history, JSON lines.
        history: std::path::PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A short run for CI: 3 nodes, 120 s (longer if its first round of faults needs
    /// it), every fault but kill-all and kill-majority.
    #[arg(long)]
    quick: bool,
    /// Seconds of workload and faults (default 600; 120 with --quick); the run goes on
    /// until every fault has been tried once.
    #[arg(long)]
    time_limit: Option<u64>,
    /// Faults, comma-separated names, or `all`.
    #[arg(long)]
    nemesis: Option<String>,
    /// 3 or 5 nodes (default 5; 3 with --quick).
    #[arg(long)]
    nodes: Option<usize>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    workers: u64,
    /// Seed of the workload and nemesis choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the results (default jepsen/results/<seconds since 1970>).
    #[arg(long)]
    results: Option<std::path::PathBuf>,
    /// Most operations each worker makes (a bound on the history's size); a run whose
    /// workers reach it before the faults end is invalid.
    #[arg(long, default_value_t = workload::MAX_OPS_PER_WORKER)]
    ops_per_worker: u64,
    /// Use the kelvin:jepsen image as it is (skip docker/build.sh).
    #[arg(long)]
    no_build: bool,
}

fn run_test(args: RunArgs) -> anyhow::Result<bool> {
    use nemesis::Fault;
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| anyhow::anyhow!("no repository root"))?;
    let faults = match args.nemesis.as_deref() {
        None if args.quick => vec![
            Fault::KillLeader,
            Fault::KillRandom,
            Fault::Pause,
            Fault::PartitionMajority,
            Fault::IsolateLeader,
            Fault::TransferLeader,
            Fault::ClockSkew,
            Fault::MemberReplica,
            Fault::MemberNode,
            Fault::Reshard,
        ],
        None | Some("all") => Fault::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| {
                Fault::parse(n.trim()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown fault {n:?}; known: {}",
                        Fault::ALL
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nodes = args.nodes.unwrap_or(if args.quick { 3 } else { 5 });
    anyhow::ensure!(
        nodes == 3 || nodes == 5,
        "--nodes is 3 or 5 (the compose files)"
    );
    run::run(run::RunOptions {
        results: args
            .results
            .unwrap_or_else(|| repo.join(format!("jepsen/results/{}", now.as_secs()))),
        repo,
        nodes,
        workers: args.workers.max(1),
        time_limit: std::time::Duration::from_secs(args.time_limit.unwrap_or(if args.quick {
            120
        } else {
            600
        })),
        faults,
        seed: args.seed.unwrap_or(now.as_nanos() as u64),
        build_image: !args.no_build,
        ops_per_worker: args.ops_per_worker.max(1),
    })
}

fn verdict_word(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

fn self_test(verbose: bool) -> bool {
    let cases = selftest::cases();
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut all_passed = true;
    for case in &cases {
        let result = selftest::run(case);
        let passed = result.passed();
        all_passed &= passed;
        let reasons = |r: &std::collections::BTreeSet<kelvin_jepsen::Reason>| {
            r.iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{:<width$}  expected {:<7}  got {:<7}  {}  {:>8.1} ms  ({} ops)  {}",
            result.name,
            verdict_word(result.expect_valid),
            verdict_word(result.report.valid()),
            if passed { "ok  " } else { "FAIL" },
            result.elapsed.as_secs_f64() * 1000.0,
            result.report.history.ops,
            if result.expect_reasons.is_empty() && passed {
                String::new()
            } else {
                format!(
                    "for {} (expected {})",
                    reasons(&result.report.reasons()),
                    reasons(&result.expect_reasons)
                )
            },
        );
        if verbose || !passed {
            for problem in result.report.verdict().problems {
                println!("    {problem}");
            }
        }
    }
    println!("valid: {all_passed}");
    all_passed
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::SelfTest { verbose } => {
            if self_test(verbose) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Check { history } => {
            let ops = match std::fs::File::open(&history)
                .map_err(anyhow::Error::from)
                .and_then(|f| kelvin_jepsen::read_jsonl(std::io::BufReader::new(f)))
            {
                Ok(ops) => ops,
                Err(e) => {
                    println!("error: {}: {e:#}", history.display());
                    println!("valid: false");
                    return ExitCode::FAILURE;
                }
            };
            let report = kelvin_jepsen::check(&ops);
            for (name, v) in report.parts() {
                println!("{name}: {}", verdict_word(v.valid));
                for p in v.problems.iter().take(10) {
                    println!("  {p}");
                }
            }
            println!("valid: {}", report.valid());
            if report.valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            match run_test(args) {
                Ok(valid) => {
                    println!("valid: {valid}");
                    if valid {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    println!("error: {e:#}");
                    println!("valid: false");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
