//! `kelvin-server`: `cargo run --release -p kelvin-server` serves on 127.0.0.1:6379 with
//! data in `./kelvin-data`. See `--help` for the flags.

use anyhow::Context;
use clap::Parser;
use kelvin_server::{Args, Settings};

/// glibc malloc arenas the process may use (`M_ARENA_MAX`; glibc's default is 8 per
/// core). A value is allocated by the group thread that applies its write, its request by
/// a connection's worker, and each thread kept its own arena with its own free blocks:
/// `kelvin-bench memory` (1,000,000 keys of 100-byte values) measured 220 bytes per key
/// with the default, 208 with 2 arenas and 194 with 1 (with the 24-byte keys of then),
/// whose free blocks serve every thread. Threads still allocate small blocks without the arena's lock, from their
/// per-thread caches. `MALLOC_ARENA_MAX` in the environment overrides it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

fn main() -> anyhow::Result<()> {
    // Run by the server itself to train the planner's model in a process of its own.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kelvin_server::learning::TRAINER_ARG)
    {
        std::process::exit(kelvin_server::learning::trainer_main());
    }
    // Before any other thread starts: arenas are assigned as threads first allocate.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; no allocation is in flight.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    // This binary is the trainer too. /proc/self/exe names it even after an upgrade
    // replaced the file (current_exe() then names a path that is gone).
    #[cfg(target_os = "linux")]
    kelvin_server::learning::use_trainer_process("/proc/self/exe".into());
    #[cfg(not(target_os = "linux"))]
    if let Ok(exe) = std::env::current_exe() {
        kelvin_server::learning::use_trainer_process(exe);
    }
    let settings = Settings::load(&args).context("bad configuration")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = kelvin_server::start(settings.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot start on {}:{} with data in {}",
                    settings.bind,
                    settings.port,
                    settings.data_dir.display()
                )
            })?;
        tracing::info!(
            addr = %server.addr,
            data_dir = %settings.data_dir.display(),
            appendfsync = settings.appendfsync.as_str(),
            threads = settings.threads,
            "Kelvin ready to accept connections"
        );
        let node = server.node.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            node.shutdown();
        });
        server.task.await??;
        tracing::info!("bye");
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
