//! Settings: command-line flags, an optional Redis-style config file, and the subset that
//! CONFIG GET/SET read and change at run time.
//!
//! The file holds one `name value` per line (`#` comments), with the same names as the
//! flags (`port 7001`, `requirepass secret`, `dir ./data`); flags given on the command
//! line win over the file.
//!
//! Every other parameter of Redis 7 ([`crate::redis_params`]: encoding thresholds,
//! `list-compress-depth`, `lazyfree-*`, `activedefrag`...) is a *tunable without effect*:
//! a file line or CONFIG SET of it is validated as Redis validates it, kept, and reported
//! back by CONFIG GET, but nothing in Kelvin reads it (one encoding per type, no
//! background saves: docs/ARCHITECTURE.md, "Deliberate differences from Redis").
//! `maxmemory`, `maxmemory-policy` and `maxmemory-samples` are kept the same way and do
//! have an effect: [`Settings::memory_limit`] reads them for [`crate::evict`].

use std::collections::BTreeMap;
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
    /// Bytes each group's keyspace may hold (`100mb`, `1gb`...; 0 = no limit).
    #[arg(long)]
    pub maxmemory: Option<String>,
    /// What happens over `maxmemory`: noeviction, allkeys-lru, allkeys-lfu,
    /// allkeys-random, volatile-lru, volatile-lfu, volatile-random, volatile-ttl.
    #[arg(long)]
    pub maxmemory_policy: Option<String>,
    /// Keys sampled per eviction pick (Redis's `maxmemory-samples`, default 5).
    #[arg(long)]
    pub maxmemory_samples: Option<String>,
}

/// Largest bulk string Redis accepts by default (`proto-max-bulk-len`).
pub const DEFAULT_PROTO_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Default client limit (Redis's `maxclients`).
pub const DEFAULT_MAXCLIENTS: usize = 10_000;
/// Redis's default `hll-sparse-max-bytes`.
pub const DEFAULT_HLL_SPARSE_MAX_BYTES: usize = 3000;

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
    /// Bytes per second a live migration's background drain may move
    /// (`kelvin-migration-drain-rate`; 0: as fast as it goes).
    pub migration_drain_rate: u64,
    /// The learned planner's label window: a key observed now counts as touched soon if
    /// it is accessed within this many ms (`kelvin-planner-window`; about how long a
    /// migration's keys wait for the drain). Changing it starts the training data over.
    pub planner_window_ms: u64,
    /// Whether a migration's eager plan may use the learned model (`kelvin-planner
    /// model`, the default) or always ranks by the heat counter (`heat`).
    pub planner_model: bool,
    /// Values given to Redis parameters that have no effect in Kelvin, by canonical name
    /// (see the module documentation); a parameter not here reads as its Redis default.
    pub inert: BTreeMap<&'static str, String>,
}

/// One configuration parameter of Redis 7 ([`crate::redis_params::REDIS_PARAMS`]).
#[derive(Debug)]
pub struct RedisParam {
    pub name: &'static str,
    /// The older name Redis also accepts (`hash-max-ziplist-entries`), or "".
    pub alias: &'static str,
    /// CONFIG SET refuses it (`can't set immutable config`).
    pub immutable: bool,
    pub kind: ParamKind,
    /// What CONFIG GET shows on a redis-server started without a config file.
    pub default: &'static str,
}

/// How Redis parses a parameter's value (src/config.c's `create*Config` kinds).
#[derive(Debug)]
pub enum ParamKind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// Bytes, with Redis's units (`1kb`, `5mb`, `1g`); CONFIG GET shows the bytes.
    Memory {
        min: i64,
        max: i64,
    },
    /// A percentage (`50%`) or a byte count.
    Percent {
        min: i64,
        max: i64,
    },
    Octal {
        min: i64,
        max: i64,
    },
    Enum(&'static [&'static str]),
    Text,
}

impl RedisParam {
    /// The Redis parameter called `name` (or whose alias it is), case-insensitively.
    pub fn find(name: &str) -> Option<&'static RedisParam> {
        crate::redis_params::REDIS_PARAMS.iter().find(|p| {
            p.name.eq_ignore_ascii_case(name)
                || (!p.alias.is_empty() && p.alias.eq_ignore_ascii_case(name))
        })
    }

    /// Validates `value` as Redis would and returns it as CONFIG GET will show it, or the
    /// reason Redis gives.
    pub fn normalize(&self, value: &str) -> Result<String, SettingError> {
        let bad = |why: String| Err(SettingError(why));
        let in_range = |n: i64, min: i64, max: i64| {
            if n < min || n > max {
                bad(format!(
                    "argument must be between {min} and {max} inclusive"
                ))
            } else {
                Ok(n.to_string())
            }
        };
        match &self.kind {
            ParamKind::Bool => match value.to_ascii_lowercase().as_str() {
                "yes" => Ok("yes".into()),
                "no" => Ok("no".into()),
                _ => bad("argument must be 'yes' or 'no'".into()),
            },
            ParamKind::Int { min, max } => match value.parse::<i64>() {
                Ok(n) => in_range(n, *min, *max),
                Err(_) => bad("argument couldn't be parsed into an integer".into()),
            },
            ParamKind::Octal { min, max } => match i64::from_str_radix(value, 8) {
                Ok(n) if n >= *min && n <= *max => Ok(format!("{n:o}")),
                _ => bad(format!(
                    "argument must be between {min:o} and {max:o} inclusive"
                )),
            },
            ParamKind::Memory { min, max } => match memory_bytes(value) {
                Some(n) => in_range(n, *min, *max),
                None => bad("argument must be a memory value".into()),
            },
            ParamKind::Percent { min, max } => {
                if let Some(pct) = value.strip_suffix('%') {
                    match pct.parse::<i64>() {
                        Ok(n) if n >= 0 => Ok(format!("{n}%")),
                        _ => bad("argument must be a memory or percent value".into()),
                    }
                } else {
                    match memory_bytes(value) {
                        Some(n) => in_range(n, *min, *max),
                        None => bad("argument must be a memory or percent value".into()),
                    }
                }
            }
            ParamKind::Enum(values) => values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(value))
                .map(|v| v.to_string())
                .ok_or_else(|| {
                    SettingError(format!(
                        "argument(s) must be one of the following: {}",
                        values.join(", ")
                    ))
                }),
            ParamKind::Text => Ok(value.to_string()),
        }
    }
}

/// Redis's memory values (`memtoull`): a number with an optional unit, `k`/`kb`
/// (1000/1024), `m`/`mb`, `g`/`gb`, case-insensitively.
fn memory_bytes(value: &str) -> Option<i64> {
    let lower = value.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let mul: i64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    digits.parse::<i64>().ok()?.checked_mul(mul)
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
            migration_drain_rate: 0,
            planner_window_ms: crate::migrate::learn::sampler::DEFAULT_WINDOW_MS,
            planner_model: true,
            inert: BTreeMap::new(),
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
        for (name, value) in [
            ("maxmemory", &args.maxmemory),
            ("maxmemory-policy", &args.maxmemory_policy),
            ("maxmemory-samples", &args.maxmemory_samples),
        ] {
            if let Some(v) = value {
                s.set(name, v)
                    .map_err(|e| SettingError(format!("--{name} {v}: {}", e.0)))?;
            }
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

    /// The parameters Kelvin itself reads (or reports from its own state), in the order
    /// CONFIG GET lists them; every other Redis parameter follows.
    pub const NAMES: [&'static str; 17] = [
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
        "cluster-enabled",
        "kelvin-profile-keys",
        "kelvin-migration-drain-rate",
        "kelvin-planner-window",
        "kelvin-planner",
    ];

    /// Every parameter name CONFIG GET can show: Kelvin's, then Redis's others (aliases
    /// too, as Redis 7.0 lists them).
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        let redis = crate::redis_params::REDIS_PARAMS
            .iter()
            .flat_map(|p| [p.name, p.alias])
            .filter(|n| !n.is_empty() && !Settings::NAMES.contains(n));
        Settings::NAMES.iter().copied().chain(redis)
    }

    /// Whether CONFIG SET refuses to change `name` at run time.
    pub fn immutable(name: &str) -> bool {
        match name.to_ascii_lowercase().as_str() {
            "bind" | "port" | "dir" | "databases" | "cluster-enabled" => true,
            other => RedisParam::find(other).is_some_and(|p| p.immutable),
        }
    }

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
            "kelvin-profile-keys" => match crate::store::heat::profiling() {
                true => "yes",
                false => "no",
            }
            .into(),
            "kelvin-migration-drain-rate" => self.migration_drain_rate.to_string(),
            "kelvin-planner-window" => self.planner_window_ms.to_string(),
            "kelvin-planner" => if self.planner_model { "model" } else { "heat" }.into(),
            "cluster-enabled" => if self.cluster_port.is_some() {
                "yes"
            } else {
                "no"
            }
            .into(),
            other => {
                let param = RedisParam::find(other)?;
                self.inert
                    .get(param.name)
                    .cloned()
                    .unwrap_or_else(|| param.default.to_string())
            }
        })
    }

    /// `hll-sparse-max-bytes` (validated by [`Settings::set`]; the default otherwise).
    pub fn hll_sparse_max_bytes(&self) -> usize {
        self.get("hll-sparse-max-bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_HLL_SPARSE_MAX_BYTES)
    }

    /// `maxmemory`, `maxmemory-policy` and `maxmemory-samples` as the evictor reads them
    /// (validated by [`Settings::set`], so the parses cannot fail; defaults otherwise).
    pub fn memory_limit(&self) -> crate::evict::Limit {
        let value = |name| self.get(name).unwrap_or_default();
        let default = crate::evict::Limit::default();
        crate::evict::Limit {
            maxmemory: value("maxmemory").parse().unwrap_or(default.maxmemory),
            policy: crate::evict::Policy::parse(&value("maxmemory-policy"))
                .unwrap_or(default.policy),
            samples: value("maxmemory-samples")
                .parse()
                .unwrap_or(default.samples),
        }
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
            "kelvin-migration-drain-rate" => {
                self.migration_drain_rate = value.parse().map_err(|_| bad(not_int))?
            }
            "kelvin-planner-window" => {
                use crate::migrate::learn::sampler::{MAX_WINDOW_MS, MIN_WINDOW_MS};
                let n: u64 = value.parse().map_err(|_| bad(not_int))?;
                if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&n) {
                    return Err(bad(&format!(
                        "argument must be between {MIN_WINDOW_MS} and {MAX_WINDOW_MS} inclusive"
                    )));
                }
                self.planner_window_ms = n;
            }
            "kelvin-planner" => {
                self.planner_model = match value.to_ascii_lowercase().as_str() {
                    "model" => true,
                    "heat" => false,
                    _ => return Err(bad("argument must be 'model' or 'heat'")),
                }
            }
            // Always on: the Raft log is the append-only file.
            "appendonly" => {}
            other => {
                let Some(param) = RedisParam::find(other) else {
                    return Err(SettingError(format!(
                        "Unknown option or number of arguments for CONFIG SET - '{name}'"
                    )));
                };
                let value = param.normalize(value)?;
                self.inert.insert(param.name, value);
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
        std::fs::write(&path, "# comment\nport 7001\nrequirepass \"s3cret\"\nmaxclients 5\nnotify-keyspace-events Ex\nappendonly yes\nmaxmemory 2mb\nmaxmemory-policy allkeys-lfu\n").unwrap();
        let args = Args {
            config: Some(path.clone()),
            maxclients: Some(7),
            maxmemory_policy: Some("volatile-ttl".into()),
            ..Args::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.port, 7001);
        assert_eq!(s.requirepass.as_deref(), Some("s3cret"));
        assert_eq!(s.maxclients, 7, "flags win over the file");
        assert_eq!(crate::notify::flags_to_string(s.notify_flags), "xE");
        let limit = s.memory_limit();
        assert_eq!(limit.maxmemory, 2 << 20);
        assert_eq!(limit.policy, crate::evict::Policy::VolatileTtl, "flags win");
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

    #[test]
    fn redis_tunables_are_validated_kept_and_reported() {
        let mut s = Settings::default();
        assert_eq!(s.get("hash-max-listpack-entries").as_deref(), Some("512"));
        s.set("hash-max-ziplist-entries", "16").unwrap();
        assert_eq!(s.get("hash-max-listpack-entries").as_deref(), Some("16"));
        assert_eq!(s.get("hash-max-ziplist-entries").as_deref(), Some("16"));
        s.set("maxmemory", "1mb").unwrap();
        assert_eq!(s.get("maxmemory").as_deref(), Some("1048576"));
        s.set("lazyfree-lazy-user-del", "YES").unwrap();
        assert_eq!(s.get("lazyfree-lazy-user-del").as_deref(), Some("yes"));
        s.set("maxmemory-policy", "allkeys-lru").unwrap();
        assert_eq!(s.get("maxmemory-policy").as_deref(), Some("allkeys-lru"));
        s.set("maxmemory-samples", "10").unwrap();
        assert_eq!(
            s.memory_limit(),
            crate::evict::Limit {
                maxmemory: 1 << 20,
                policy: crate::evict::Policy::AllkeysLru,
                samples: 10,
            }
        );
        let err = |s: &mut Settings, n: &str, v: &str| s.set(n, v).unwrap_err().0;
        assert_eq!(
            err(&mut s, "list-compress-depth", "-1"),
            "argument must be between 0 and 2147483647 inclusive"
        );
        assert_eq!(
            err(&mut s, "activedefrag", "maybe"),
            "argument must be 'yes' or 'no'"
        );
        assert_eq!(
            err(&mut s, "maxmemory-policy", "lru"),
            "argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction"
        );
        assert_eq!(
            err(&mut s, "maxmemory", "1zb"),
            "argument must be a memory value"
        );
        assert!(Settings::immutable("daemonize"));
        assert!(!Settings::immutable("list-compress-depth"));
        assert!(Settings::all_names().any(|n| n == "zset-max-ziplist-value"));
    }
}
