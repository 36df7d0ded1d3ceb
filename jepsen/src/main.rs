//! `kelvin-jepsen`: the checker of Kelvin's fault tests, as a command.
//!
//! ```text
//! cargo run --release -p kelvin-jepsen -- self-test [--verbose]
//! ```
//!
//! `self-test` runs the library's known histories ([`kelvin_jepsen::selftest`]) through
//! the checkers, prints one line per case (name, expected verdict, verdict, time) and a
//! last line `valid: true` if every verdict was the expected one, `valid: false`
//! otherwise; the exit status is 0 only in the first case.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kelvin_jepsen::selftest;

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
        println!(
            "{:<width$}  expected {:<7}  got {:<7}  {}  {:>8.1} ms  ({} ops)",
            result.name,
            verdict_word(result.expect_valid),
            verdict_word(result.report.valid()),
            if passed { "ok  " } else { "FAIL" },
            result.elapsed.as_secs_f64() * 1000.0,
            result.report.history.ops,
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
    }
}
