//! Settings: command-line flags, an optional Redis-style config file, and the subset that
//! CONFIG GET/SET read and change at run time.
//!
//! The file holds one `name value` per line (`#` comments), with the same names as the
//! flags (`port 7001`, `requirepass secret`, `dir ./data`); flags given on the command
//! line win over the file.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// `--appendfsync`: when the log is flushed to disk. Accepted now; the durable log that
/// honours it is the replicated-log issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppendFsync {
    Always,
    Everysec,
    No,
}

impl AppendFsync {
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Some(AppendFsync::Always),
            "everysec" => Some(AppendFsync::Everysec),
            "no" => Some(AppendFsync::No),
            _ => None,
        }
    }
}

/// Command-line flags of `kelvin-server`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "kelvin-server",
    version,
    about = "Kelvin: a Redis-compatible session store"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// TCP port for clients.
    #[arg(long)]
    pub port: Option<u16>,
    /// Directory for the log and snapshots.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Password clients must give with AUTH or HELLO.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Most simultaneous client connections.
    #[arg(long)]
    pub maxclients: Option<usize>,
    /// When writes reach the disk: always, everysec or no.
    #[arg(long, value_enum)]
    pub appendfsync: Option<AppendFsync>,
    /// Keyspace notification classes, as Redis's `notify-keyspace-events` (e.g. `Ex`).
    #[arg(long)]
    pub notify_keyspace_events: Option<String>,
    /// A config file of `name value` lines.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A TOML file of live-resharding rules: key patterns -> critical/eager/lazy/skip,
    /// the eager byte budget, the expiry threshold (see `migrate::plan`).
    #[arg(long)]
    pub migration_rules: Option<PathBuf>,
    /// Port for node-to-node traffic (Raft). Without it the node is a single-node group.
    #[arg(long)]
    pub cluster_port: Option<u16>,
    /// Shared secret peers prove they know before any Raft message is accepted.
    #[arg(long)]
    pub cluster_secret: Option<String>,
    /// A second client port that speaks Redis Cluster redirection: a keyed command for a
    /// slot this node does not lead gets `-MOVED`. CLUSTER SLOTS/SHARDS/NODES advertise it,
    /// so cluster-aware clients end up there; the main `--port` forwards instead.
    #[arg(long)]
    pub redirect_port: Option<u16>,
    /// A file holding the cluster secret (first line), instead of `--cluster-secret`.
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Runtime worker threads for connections and the log (default: CPU cores - 1, at
    /// least 1).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Largest bulk string Redis accepts by default (`proto-max-bulk-len`).
pub const DEFAULT_PROTO_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Default client limit (Redis's `maxclients`).
pub const DEFAULT_MAXCLIENTS: usize = 10_000;

/// The effective settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub requirepass: Option<String>,
    pub maxclients: usize,
    pub appendfsync: AppendFsync,
    pub notify_flags: u32,
    pub proto_max_bulk_len: usize,
    pub config_file: Option<PathBuf>,
    /// Node-to-node port; `None` runs the embedded single-node group.
    pub cluster_port: Option<u16>,
    /// The client port with Redis Cluster redirection (`--redirect-port`).
    pub redirect_port: Option<u16>,
    /// The secret peers authenticate with.
    pub cluster_secret: String,
    /// Runtime worker threads (see [`default_threads`]).
    pub threads: usize,
    /// How the planner classes the keys of a moving slot range (`--migration-rules`).
    pub migration_rules: crate::migrate::plan::Rules,
}

/// One worker thread less than the CPU cores, at least one. The cores left over run the
/// kernel's network stack, fsyncs and whatever shares the machine; measured on 2 cores,
/// one worker serves more than two, which spend their time waking each other.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            data_dir: PathBuf::from("./kelvin-data"),
            requirepass: None,
            maxclients: DEFAULT_MAXCLIENTS,
            appendfsync: AppendFsync::Everysec,
            notify_flags: 0,
            proto_max_bulk_len: DEFAULT_PROTO_MAX_BULK_LEN,
            config_file: None,
            cluster_port: None,
            redirect_port: None,
            cluster_secret: String::new(),
            threads: default_threads(),
            migration_rules: Default::default(),
        }
    }
}

/// A setting that could not be applied, with the reason CONFIG SET reports.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

impl Settings {
    /// Builds the settings from a config file (if given) and then the flags.
    pub fn load(args: &Args) -> Result<Settings, SettingError> {
        let mut s = Settings::default();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path).map_err(|e| {
                SettingError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            for (lineno, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (name, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                let value = value.trim().trim_matches('"');
                s.set(name, value).map_err(|e| {
                    SettingError(format!(
                        "{}:{}: '{name} {value}': {}",
                        path.display(),
                        lineno + 1,
                        e.0
                    ))
                })?;
            }
            s.config_file = Some(path.clone());
        }
        if let Some(v) = args.bind {
            s.bind = v;
        }
        if let Some(v) = args.port {
            s.port = v;
        }
        if let Some(v) = &args.data_dir {
            s.data_dir = v.clone();
        }
        if let Some(v) = &args.requirepass {
            s.requirepass = Some(v.clone()).filter(|p| !p.is_empty());
        }
        if let Some(v) = args.maxclients {
            s.set("maxclients", &v.to_string())?;
        }
        if let Some(v) = args.appendfsync {
            s.appendfsync = v;
        }
        if let Some(v) = &args.notify_keyspace_events {
            s.set("notify-keyspace-events", v)?;
        }
        if let Some(v) = args.cluster_port {
            s.cluster_port = Some(v);
        }
        if let Some(path) = &args.migration_rules {
            s.migration_rules = crate::migrate::plan::Rules::load(path).map_err(SettingError)?;
        }
        if let Some(v) = args.redirect_port {
            s.redirect_port = Some(v);
        }
        if let Some(v) = args.threads {
            if v == 0 || v > 1024 {
                return Err(SettingError("--threads must be between 1 and 1024".into()));
            }
            s.threads = v;
        }
        if let Some(v) = &args.cluster_secret {
            s.cluster_secret = v.clone();
        }
        if let Some(path) = &args.cluster_secret_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                SettingError(format!(
                    "cannot read cluster secret file {}: {e}",
                    path.display()
                ))
            })?;
            s.cluster_secret = text.lines().next().unwrap_or("").trim().to_string();
        }
        if s.redirect_port.is_some() && s.cluster_port.is_none() {
            return Err(SettingError(
                "--redirect-port needs --cluster-port: a single node owns every slot and never redirects".into(),
            ));
        }
        if s.cluster_port.is_some() && s.cluster_secret.is_empty() {
            return Err(SettingError(
                "--cluster-port needs a cluster secret: give --cluster-secret or --cluster-secret-file".into(),
            ));
        }
        Ok(s)
    }

    /// Names CONFIG GET knows, in the order it lists them.
    pub const NAMES: [&'static str; 18] = [
        "bind",
        "cluster-port",
        "redirect-port",
        "port",
        "dir",
        "requirepass",
        "maxclients",
        "appendonly",
        "appendfsync",
        "notify-keyspace-events",
        "proto-max-bulk-len",
        "databases",
        "save",
        "maxmemory",
        "maxmemory-policy",
        "timeout",
        "cluster-enabled",
        "kelvin-profile-keys",
    ];

    /// The value of a setting as CONFIG GET shows it.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "bind" => self.bind.to_string(),
            "port" => self.port.to_string(),
            "dir" | "data-dir" => self.data_dir.display().to_string(),
            "requirepass" => self.requirepass.clone().unwrap_or_default(),
            "maxclients" => self.maxclients.to_string(),
            "appendonly" => "yes".into(),
            "appendfsync" => self.appendfsync.as_str().into(),
            "cluster-port" => self.cluster_port.unwrap_or(0).to_string(),
            "redirect-port" => self.redirect_port.unwrap_or(0).to_string(),
            "notify-keyspace-events" => crate::notify::flags_to_string(self.notify_flags),
            "proto-max-bulk-len" => self.proto_max_bulk_len.to_string(),
            "databases" => crate::store::DATABASES.to_string(),
            "save" => String::new(),
            "maxmemory" => "0".into(),
            "maxmemory-policy" => "noeviction".into(),
            "timeout" => "0".into(),
            "kelvin-profile-keys" => match crate::store::heat::profiling() {
                true => "yes",
                false => "no",
            }
            .into(),
            "cluster-enabled" => if self.cluster_port.is_some() {
                "yes"
            } else {
                "no"
            }
            .into(),
            _ => return None,
        })
    }

    /// Changes a setting (from the config file, a flag, or CONFIG SET).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
        let bad = |why: &str| SettingError(why.to_string());
        let not_int = "argument couldn't be parsed into an integer";
        match name.to_ascii_lowercase().as_str() {
            "bind" => {
                self.bind = value
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| bad("not an address"))?
            }
            "port" => {
                self.port = value
                    .parse()
                    .map_err(|_| bad("argument must be between 0 and 65535 inclusive"))?
            }
            "dir" | "data-dir" => self.data_dir = PathBuf::from(value),
            "requirepass" => self.requirepass = Some(value.to_string()).filter(|p| !p.is_empty()),
            "maxclients" => {
                let n: i64 = value.parse().map_err(|_| bad(not_int))?;
                if !(1..=4_294_967_295).contains(&n) {
                    return Err(bad("argument must be between 1 and 4294967295 inclusive"));
                }
                self.maxclients = n as usize;
            }
            "appendfsync" => {
                self.appendfsync = AppendFsync::parse(value).ok_or_else(|| {
                    bad("argument(s) must be one of the following: always, everysec, no")
                })?
            }
            "notify-keyspace-events" => {
                self.notify_flags = crate::notify::parse_flags(value)
                    .ok_or_else(|| bad("Invalid event class character. Use 'Ag$lshzxeKEtmdn'."))?
            }
            "proto-max-bulk-len" => {
                let n: usize = value.parse().map_err(|_| bad(not_int))?;
                if n < 1024 * 1024 {
                    return Err(bad(
                        "argument must be between 1048576 and 9223372036854775807 inclusive",
                    ));
                }
                self.proto_max_bulk_len = n;
            }
            // The session-state profiler (store::heat): process-wide.
            "kelvin-profile-keys" => match value.to_ascii_lowercase().as_str() {
                "yes" => crate::store::heat::set_profiling(true),
                "no" => crate::store::heat::set_profiling(false),
                _ => return Err(bad("argument must be 'yes' or 'no'")),
            },
            // Accepted for compatibility with configs written for Redis; no effect.
            "appendonly" | "save" | "timeout" | "maxmemory-policy" | "daemonize" | "loglevel"
            | "logfile" | "protected-mode" | "tcp-keepalive" => {}
            _ => {
                return Err(SettingError(format!(
                    "Unknown option or number of arguments for CONFIG SET - '{name}'"
                )))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let path =
            std::env::temp_dir().join(format!("kelvin-config-test-{}.conf", std::process::id()));
        std::fs::write(&path, "# comment\nport 7001\nrequirepass \"s3cret\"\nmaxclients 5\nnotify-keyspace-events Ex\nappendonly yes\n").unwrap();
        let args = Args {
            config: Some(path.clone()),
            maxclients: Some(7),
            ..Args::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.port, 7001);
        assert_eq!(s.requirepass.as_deref(), Some("s3cret"));
        assert_eq!(s.maxclients, 7, "flags win over the file");
        assert_eq!(crate::notify::flags_to_string(s.notify_flags), "xE");
        std::fs::write(&path, "port 7001\nbogus 1\n").unwrap();
        let err = Settings::load(&args).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("bogus"), "{err}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut s = Settings::default();
        assert!(s.set("maxclients", "0").is_err());
        assert!(s.set("appendfsync", "sometimes").is_err());
        assert!(s.set("notify-keyspace-events", "Q").is_err());
        assert!(s.set("proto-max-bulk-len", "10").is_err());
        assert!(s.set("appendfsync", "always").is_ok());
        assert_eq!(s.get("appendfsync").as_deref(), Some("always"));
    }
}
