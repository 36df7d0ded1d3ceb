//! `kelvin-cli`: a command-line client in the manner of `redis-cli`.
//!
//! ```text
//! kelvin-cli -p 6379 SET k v          one command, reply printed, exit code 1 on error
//! kelvin-cli -p 6379                  interactive: one command per line
//! kelvin-cli cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 --replicas 3 --yes
//! kelvin-cli cluster status 127.0.0.1:7001
//! kelvin-cli cluster rebalance 127.0.0.1:7001
//! kelvin-cli cluster heat 127.0.0.1:7001 --top 10
//! kelvin-cli cluster reshard 127.0.0.1:7001 --slots 4096 --to 127.0.0.1:7004 --yes
//! ```

use std::io::{BufRead, Write};

use clap::Parser;
use kelvin_client::{format_frame, Client, Frame};

#[derive(Parser)]
#[command(
    name = "kelvin-cli",
    version,
    about = "Talk to a Kelvin node (or any Redis server)",
    disable_help_flag = true
)]
struct Cli {
    /// Print help (`-h` is the host, as in redis-cli).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6379)]
    port: u16,
    /// Password (sent with AUTH).
    #[arg(short = 'a', long)]
    pass: Option<String>,
    /// Database number.
    #[arg(short = 'n', long, default_value_t = 0)]
    db: u32,
    /// Speak RESP3 (HELLO 3).
    #[arg(short = '3', long)]
    resp3: bool,
    /// The command to run; without one, read commands from standard input.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn is_error(frame: &Frame) -> bool {
    matches!(frame, Frame::Error(_))
}

/// Prints a line; a closed stdout (`| head`) ends the program quietly.
fn emit(text: &str) {
    let mut out = std::io::stdout();
    if writeln!(out, "{text}").is_err() {
        std::process::exit(0);
    }
}

fn is_shutdown(args: &[impl AsRef<[u8]>]) -> bool {
    args.first()
        .is_some_and(|a| a.as_ref().eq_ignore_ascii_case(b"shutdown"))
}

fn main() -> anyhow::Result<()> {
    // Output piped into `head` and the like: end quietly when the reader goes away, as
    // redis-cli does, instead of panicking on a failed print.
    // SAFETY: restoring the default disposition of SIGPIPE touches no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if cli.command.len() >= 2
        && cli.command[0].eq_ignore_ascii_case("cluster")
        && [
            "create",
            "status",
            "rebalance",
            "heat",
            "reshard",
            "migrations",
            "add-node",
            "remove-node",
            "add-replica",
            "remove-replica",
        ]
        .iter()
        .any(|sub| cli.command[1].eq_ignore_ascii_case(sub))
    {
        return kelvin_client::admin::cluster(&cli.command[1..], cli.pass.as_deref());
    }
    let addr = format!("{}:{}", cli.host, cli.port);
    let mut client = Client::connect(&addr, None)
        .map_err(|e| anyhow::anyhow!("Could not connect to {addr}: {e}"))?;
    if let Some(pass) = &cli.pass {
        let r = client.call(&["AUTH", pass.as_str()])?;
        if is_error(&r) {
            anyhow::bail!("{}", format_frame(&r));
        }
    }
    if cli.resp3 {
        client.resp3 = true;
        client.call(&["HELLO", "3"])?;
    }
    if cli.db != 0 {
        client.call(&["SELECT".to_string(), cli.db.to_string()])?;
    }
    if !cli.command.is_empty() {
        let reply = match client.call(&cli.command) {
            Ok(reply) => reply,
            // A successful SHUTDOWN answers by closing the connection.
            Err(_) if is_shutdown(&cli.command) => return Ok(()),
            Err(e) => return Err(e),
        };
        emit(&format_frame(&reply));
        std::process::exit(if is_error(&reply) { 1 } else { 0 });
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        print!("{addr}> ");
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let Some(args) = kelvin_protocol::request::split_inline_args(line.trim_end().as_bytes())
        else {
            println!("Invalid argument(s)");
            continue;
        };
        if args.is_empty() {
            continue;
        }
        let quit = args[0].eq_ignore_ascii_case(b"quit") || args[0].eq_ignore_ascii_case(b"exit");
        let reply = match client.call(&args) {
            Ok(reply) => reply,
            Err(_) if is_shutdown(&args) => break,
            Err(e) => return Err(e),
        };
        emit(&format_frame(&reply));
        if quit {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
