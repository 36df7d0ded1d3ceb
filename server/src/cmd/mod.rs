//! Commands: one family per file, each command a row in its family's table.
//!
//! How it fits: the connection decodes a request, looks its name up in [`lookup`],
//! checks arity and authentication, and runs the row's [`Handler`]:
//! - [`Handler::Data`] commands run against the [`Store`] under its lock through an
//!   [`Exec`] context. A write must be deterministic given the store, its arguments,
//!   `Exec::now_ms` and the store's seeded rng: that is what lets the Raft log carry it.
//!   A write validates everything before it changes anything, so an error leaves no trace.
//! - [`Handler::Conn`] commands act on the connection or the server (AUTH, CLIENT,
//!   SUBSCRIBE, CONFIG...) and run outside the store lock.
//!
//! Adding a command touches its family file only: a function and a row in its `COMMANDS`.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use hashbrown::HashMap;
use kelvin_protocol::ReplyWriter;

use crate::notify::KeyEvent;
use crate::store::{Blob, Entry, Keyspace, ReadLookup, Store, Value};

pub mod bitmap;
pub mod cluster;
pub mod connection;
pub mod decimal;
pub mod dump;
pub mod geo;
pub mod hash;
pub mod heat;
pub mod hll;
pub mod keys;
pub mod list;
pub mod migrate;
pub mod mpop;
pub mod pubsub;
pub mod replication;
pub mod scripting;
pub mod server;
pub mod set;
pub mod sort;
pub mod string;
pub mod txn;
pub mod zset;

/// An error reply. The text is exactly what Redis sends, code first (`ERR ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError(pub Cow<'static, str>);

pub type CmdResult = Result<(), CmdError>;

impl CmdError {
    pub const WRONGTYPE: CmdError = CmdError(Cow::Borrowed(
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    ));
    pub const NOT_INTEGER: CmdError =
        CmdError(Cow::Borrowed("ERR value is not an integer or out of range"));
    pub const NOT_FLOAT: CmdError = CmdError(Cow::Borrowed("ERR value is not a valid float"));
    pub const SYNTAX: CmdError = CmdError(Cow::Borrowed("ERR syntax error"));
    pub const OVERFLOW: CmdError =
        CmdError(Cow::Borrowed("ERR increment or decrement would overflow"));
    pub const NO_SUCH_KEY: CmdError = CmdError(Cow::Borrowed("ERR no such key"));
    pub const INDEX_OUT_OF_RANGE: CmdError = CmdError(Cow::Borrowed("ERR index out of range"));
    pub const OUT_OF_RANGE: CmdError =
        CmdError(Cow::Borrowed("ERR value is out of range, must be positive"));
    pub const MIN_MAX_NOT_FLOAT: CmdError =
        CmdError(Cow::Borrowed("ERR min or max is not a float"));
    pub const NAN_SCORE: CmdError =
        CmdError(Cow::Borrowed("ERR resulting score is not a number (NaN)"));
    pub const INVALID_EXPIRE: CmdError =
        CmdError(Cow::Borrowed("ERR invalid expire time in 'set' command"));

    /// An `ERR` with a message built at run time.
    pub fn err(msg: impl Into<String>) -> CmdError {
        CmdError(Cow::Owned(format!("ERR {}", msg.into())))
    }

    /// An error with its own code (`NOAUTH ...`, `WRONGPASS ...`).
    pub fn raw(msg: impl Into<Cow<'static, str>>) -> CmdError {
        CmdError(msg.into())
    }

    /// `ERR wrong number of arguments for 'name' command`.
    pub fn arity(name: &str) -> CmdError {
        CmdError::err(format!("wrong number of arguments for '{name}' command"))
    }

    /// `ERR unknown subcommand 'x'. Try CMD HELP.`
    pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> CmdError {
        CmdError::err(format!(
            "unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)]),
            cmd.to_ascii_uppercase()
        ))
    }
}

/// Command flags (the `flags` COMMAND INFO shows; some drive the connection).
pub mod flags {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    /// Allowed before AUTH.
    pub const NO_AUTH: u32 = 1 << 10;
    /// Runs immediately even inside MULTI (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET).
    pub const NO_MULTI: u32 = 1 << 11;
    /// Allowed in RESP2 subscribed mode.
    pub const SUBSCRIBED_OK: u32 = 1 << 12;
    /// Replaces, deletes or re-times whole entries (`Keyspace::insert`, `remove`,
    /// `set_expire`) and never changes a value in place, so the byte count needs no
    /// [`crate::store::memory::Bracket`] (the hot session writes: SET, DEL, EXPIRE...).
    pub const WHOLE_VALUE: u32 = 1 << 13;
    /// Refused inside MULTI (Redis's `no-multi`: SAVE, SHUTDOWN).
    pub const NOT_IN_MULTI: u32 = 1 << 14;
    /// Not a write, but may change the store (Redis's `may-replicate`; here PFCOUNT, which
    /// writes back the cached cardinality): goes through the log like a write.
    pub const MAY_REPLICATE: u32 = 1 << 15;

    pub const NAMES: [(u32, &str); 13] = [
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NOT_IN_MULTI, "no_multi"),
        (MAY_REPLICATE, "may_replicate"),
    ];
}

/// Where a command's keys are in its arguments (COMMAND INFO's first/last/step, and
/// what cluster routing will use). `first == 0` means no keys.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub first: i32,
    pub last: i32,
    pub step: i32,
}

pub const NO_KEYS: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
};
/// The first argument is the only key.
pub const KEY1: KeySpec = KeySpec {
    first: 1,
    last: 1,
    step: 1,
};
/// Every argument is a key.
pub const ALL_KEYS: KeySpec = KeySpec {
    first: 1,
    last: -1,
    step: 1,
};

/// A data command's function.
pub type DataHandler = fn(&mut Exec<'_>, &[Bytes]) -> CmdResult;

/// What runs a command. See the module documentation.
#[derive(Clone, Copy)]
pub enum Handler {
    Data(DataHandler),
    Conn(fn(&mut crate::conn::ConnCtx<'_>, &[Bytes]) -> CmdResult),
}

/// One row of the command table.
#[derive(Clone, Copy)]
pub struct CommandSpec {
    /// Lower case, as COMMAND reports it.
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments including the name, `-n` at least n.
    pub arity: i32,
    pub flags: u32,
    pub keys: KeySpec,
    /// The ACL category group COMMAND DOCS shows (`string`, `hash`, `connection`...).
    pub group: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
}

impl CommandSpec {
    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }

    /// Whether the command runs through the log: a write, or a command that may change
    /// the store without being one ([`flags::MAY_REPLICATE`]).
    pub fn through_log(&self) -> bool {
        self.flags & (flags::WRITE | flags::MAY_REPLICATE) != 0
    }

    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// Positions of the keys in `argv`, the `numkeys` commands (ZUNION, SINTERCARD,
    /// ZUNIONSTORE...) included, whose key spec cannot say where their keys end: what
    /// cluster routing uses. Positions are within `argv`.
    pub fn keys_in(&self, argv: &[Bytes]) -> KeyPositions {
        // Where `numkeys` is, and where the keys before it start (EVAL's argument 1 is
        // its script, BLMPOP's its timeout: not keys).
        let (numkeys_at, first) = match self.name {
            "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => {
                (Some(1), 1)
            }
            "zunionstore" | "zinterstore" | "zdiffstore" => (Some(2), 1),
            "blmpop" | "bzmpop" => (Some(2), 2),
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => (Some(2), 2),
            _ => (None, 1),
        };
        if self.name == "sort" {
            // SORT key ... STORE destination: the destination is a key too (the last
            // STORE wins, as in Redis).
            let mut keys = self.key_positions(argv.len());
            let mut store = None;
            let mut i = 2;
            while i < argv.len() {
                let a = &argv[i];
                i += if is(a, "limit") {
                    3
                } else if is(a, "by") || is(a, "get") {
                    2
                } else if is(a, "store") {
                    if i + 1 < argv.len() {
                        store = Some(i + 1);
                    }
                    2
                } else {
                    1
                };
            }
            keys.extend(store);
            return keys;
        }
        if self.name == "georadius" || self.name == "georadiusbymember" {
            // ... STORE key / STOREDIST key: the destination is a key too.
            let mut keys = self.key_positions(argv.len());
            keys.extend(
                (2..argv.len().saturating_sub(1))
                    .filter(|&i| is(&argv[i], "store") || is(&argv[i], "storedist"))
                    .map(|i| i + 1),
            );
            return keys;
        }
        let Some(at) = numkeys_at else {
            return self.key_positions(argv.len());
        };
        // Before `numkeys`: the destination of the *STORE commands.
        let mut keys: KeyPositions = (first..at).collect();
        let n = argv
            .get(at)
            .and_then(|a| std::str::from_utf8(a).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        keys.extend((at + 1..argv.len()).take(n));
        keys
    }

    /// Positions of the keys in `argv` according to the key spec.
    pub fn key_positions(&self, argc: usize) -> KeyPositions {
        if self.keys.first <= 0 {
            return KeyPositions::new();
        }
        let last = if self.keys.last < 0 {
            argc as i32 + self.keys.last
        } else {
            self.keys.last
        };
        let step = self.keys.step.max(1) as usize;
        (self.keys.first as usize..=last.max(0) as usize)
            .step_by(step)
            .filter(|&i| i < argc)
            .collect()
    }
}

/// Positions of a request's keys: inline up to 4, so routing a request (which asks for
/// them two or three times) allocates nothing for the usual one key.
pub type KeyPositions = smallvec::SmallVec<[usize; 4]>;

/// Shorthand for table rows.
pub const fn data(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeySpec,
    group: &'static str,
    summary: &'static str,
    handler: fn(&mut Exec<'_>, &[Bytes]) -> CmdResult,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
        handler: Handler::Data(handler),
    }
}

/// Shorthand for connection-level rows.
pub const fn conn(
    name: &'static str,
    arity: i32,
    flags: u32,
    group: &'static str,
    summary: &'static str,
    handler: fn(&mut crate::conn::ConnCtx<'_>, &[Bytes]) -> CmdResult,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys: NO_KEYS,
        group,
        summary,
        handler: Handler::Conn(handler),
    }
}

static TABLE: LazyLock<HashMap<&'static [u8], &'static CommandSpec>> = LazyLock::new(|| {
    let families: [&'static [CommandSpec]; 20] = [
        migrate::COMMANDS,
        txn::COMMANDS,
        replication::COMMANDS,
        geo::COMMANDS,
        hll::COMMANDS,
        mpop::COMMANDS,
        dump::COMMANDS,
        sort::COMMANDS,
        bitmap::COMMANDS,
        cluster::COMMANDS,
        connection::COMMANDS,
        server::COMMANDS,
        string::COMMANDS,
        keys::COMMANDS,
        hash::COMMANDS,
        set::COMMANDS,
        zset::COMMANDS,
        list::COMMANDS,
        pubsub::COMMANDS,
        scripting::COMMANDS,
    ];
    let mut table = HashMap::new();
    for family in families {
        for spec in family {
            let clash = table.insert(spec.name.as_bytes(), spec);
            debug_assert!(clash.is_none(), "command {} defined twice", spec.name);
        }
    }
    table
});

/// Longest command name in the table; longer names are unknown without a lookup.
const MAX_NAME_LEN: usize = 32;

/// Finds a command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut lower = [0u8; MAX_NAME_LEN];
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    TABLE.get(&lower[..name.len()]).copied()
}

/// Every command, for COMMAND, COMMAND COUNT, COMMAND DOCS.
pub fn all() -> impl Iterator<Item = &'static CommandSpec> {
    TABLE.values().copied()
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` as Redis 7 writes it.
pub fn unknown_command(argv: &[Bytes]) -> CmdError {
    let mut args = String::new();
    for a in argv.iter().skip(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let text = String::from_utf8_lossy(a);
        let cut: String = text.chars().take(room).collect();
        args.push_str(&format!("'{cut}' "));
    }
    let name = String::from_utf8_lossy(&argv[0]);
    let name: String = name.chars().take(128).collect();
    CmdError::err(format!(
        "unknown command '{name}', with args beginning with: {args}"
    ))
}

/// The context a data command runs in: the store (locked), the selected database, the
/// time of the command and where its reply and side effects go.
pub struct Exec<'a> {
    pub store: &'a mut Store,
    pub db: usize,
    /// Unix time in milliseconds that the command happens at. Writes use this, never the
    /// wall clock, so replaying the command gives the same result.
    pub now_ms: u64,
    pub out: &'a mut ReplyWriter,
    /// Changes to publish as keyspace notifications.
    pub events: &'a mut Vec<KeyEvent>,
    /// Keys a read found expired; the connection deletes them (a write) afterwards.
    pub lazy_expired: &'a mut Vec<(usize, Blob)>,
    /// May a blocking command (BLPOP...) wait? Not inside MULTI, as in Redis.
    pub may_block: bool,
    /// A read served from this node's store outside the log (a lease or replica read, a
    /// read-only script): nothing may change the store, not even a cache
    /// ([`flags::MAY_REPLICATE`] commands leave theirs alone).
    pub local_read: bool,
    /// Set by a blocking command that found nothing: the connection waits for a list
    /// write or the timeout, then runs the command again.
    pub block: Option<BlockOn>,
}

/// How long a blocked command waits; `None` waits forever (a timeout of 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockOn {
    pub timeout: Option<std::time::Duration>,
}

impl Exec<'_> {
    /// The selected database.
    pub fn ks(&mut self) -> &mut Keyspace {
        let track_new = self.store.notify_flags & crate::notify::NEW != 0;
        let ks = self.store.db(self.db);
        ks.track_new = track_new;
        ks
    }

    /// Reports a change to `key`: wakes WATCHers and queues the notification `event` of
    /// `class` (see [`crate::notify`]). Every write calls this once per changed key.
    pub fn notify(&mut self, class: u32, event: &'static str, key: &[u8]) {
        self.store.signal_modified(self.db, key);
        self.store.changes_since_snapshot += 1;
        if matches!(
            class,
            crate::notify::LIST | crate::notify::ZSET | crate::notify::GENERIC
        ) {
            // Wake connections blocked in BLPOP, BZPOPMIN and friends; they re-check their
            // keys. Generic events count too: a list can arrive by RENAME, MOVE, COPY or
            // RESTORE.
            self.store.list_ready.bump();
        }
        let ks = self.store.db(self.db);
        if ks.track_new {
            // Keys the command created come first, as Redis's `dbAdd` sends `new`.
            ks.track_new = false;
            for key in std::mem::take(&mut ks.new_keys) {
                self.events.push(KeyEvent {
                    db: self.db,
                    event: "new",
                    key,
                });
            }
        }
        if self.store.notify_flags & class != 0 {
            self.events.push(KeyEvent {
                db: self.db,
                event,
                key: key.into(),
            });
        }
    }

    /// The live value of `key` for a read, with its heat updated. An expired key reads as
    /// missing and is queued for deletion.
    pub fn read(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.read_out(key).0
    }

    /// [`Exec::read`] plus the reply buffer, borrowed apart, so a command can write a
    /// value straight from the store into the reply without copying it first.
    pub fn read_out(&mut self, key: &[u8]) -> (Option<&mut Entry>, &mut ReplyWriter) {
        let out = &mut *self.out;
        let entry = match self.store.lookup_for_read(self.db, key, self.now_ms) {
            ReadLookup::Live(e) => Some(e),
            ReadLookup::Expired => {
                self.lazy_expired.push((self.db, key.into()));
                None
            }
            ReadLookup::Missing => None,
        };
        (entry, out)
    }

    /// The live value of `key` for a read, if it has the type `want` selects.
    /// `Err(WRONGTYPE)` if the key holds another type.
    pub fn read_value(&mut self, key: &[u8]) -> Option<&mut Value> {
        self.read(key).map(|e| &mut e.value)
    }

    /// Deletes `key` if it is expired at `now_ms`, with its `expired` notification.
    /// Returns true if it did. Writes call this (through [`Exec::write`]) before they
    /// look at a key, as Redis's `expireIfNeeded`.
    pub fn expire_if_needed(&mut self, key: &[u8]) -> bool {
        let now = self.now_ms;
        let ks = self.store.db(self.db);
        if ks.raw_get(key).is_some_and(|e| e.is_expired(now)) {
            ks.remove(key);
            self.store.expired_keys += 1;
            self.notify(crate::notify::EXPIRED, "expired", key);
            return true;
        }
        false
    }

    /// The live entry of `key` for a write (an expired one is deleted first).
    pub fn write(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.expire_if_needed(key);
        let now = self.now_ms;
        let entry = self.store.db(self.db).raw_get_mut(key)?;
        entry.heat.touch(now, true);
        Some(entry)
    }

    /// The value of `key` for a write, created with `make` if the key does not exist.
    /// Returns the value and whether it was created.
    pub fn write_or_create(&mut self, key: &[u8], make: impl FnOnce() -> Value) -> &mut Value {
        self.expire_if_needed(key);
        let now = self.now_ms;
        let ks = self.ks();
        if ks.raw_get(key).is_none() {
            ks.insert(key, Entry::new(make()));
        }
        // Present: inserted just above if it was missing.
        let entry = ks.raw_get_mut(key).expect("key present after insert");
        entry.heat.touch(now, true);
        &mut entry.value
    }

    /// Deletes `key` if it holds an empty collection (Redis never keeps empty ones),
    /// with a `del` notification. Returns true if it did.
    pub fn remove_if_empty(&mut self, key: &[u8]) -> bool {
        let ks = self.store.db(self.db);
        if ks
            .raw_get(key)
            .is_some_and(|e| e.value.is_empty_collection())
        {
            ks.remove(key);
            self.notify(crate::notify::GENERIC, "del", key);
            return true;
        }
        false
    }
}

/// Case-insensitive comparison of an argument with an option name.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// An integer argument, or `ERR value is not an integer or out of range`.
pub fn int_arg(arg: &[u8]) -> Result<i64, CmdError> {
    kelvin_protocol::request::parse_i64(arg).ok_or(CmdError::NOT_INTEGER)
}

/// A float argument, or `ERR value is not a valid float`.
pub fn float_arg(arg: &[u8]) -> Result<f64, CmdError> {
    kelvin_protocol::reply::parse_f64(arg).ok_or(CmdError::NOT_FLOAT)
}

/// A non-negative count argument (COUNT of SCAN, of LPOP...). Negative counts answer
/// `ERR value is out of range, must be positive`.
pub fn count_arg(arg: &[u8]) -> Result<usize, CmdError> {
    let n = int_arg(arg)?;
    if n < 0 {
        return Err(CmdError::OUT_OF_RANGE);
    }
    Ok(n as usize)
}

/// Resolves Redis's inclusive `start..=stop` index pair, negatives from the end, against
/// a length; `None` when the range is empty.
pub fn resolve_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len || stop < 0 {
        return None;
    }
    Some((start as usize, stop as usize))
}

/// Unix time in milliseconds from the wall clock (shifted by the `clock-skew` fail
/// point in fault tests).
pub fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.saturating_add_signed(crate::failpoint::clock_skew_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_and_sane_arity() {
        let mut names = std::collections::HashSet::new();
        for family in [
            geo::COMMANDS,
            replication::COMMANDS,
            hll::COMMANDS,
            mpop::COMMANDS,
            dump::COMMANDS,
            sort::COMMANDS,
            bitmap::COMMANDS,
            connection::COMMANDS,
            server::COMMANDS,
            string::COMMANDS,
            keys::COMMANDS,
            hash::COMMANDS,
            set::COMMANDS,
            zset::COMMANDS,
            list::COMMANDS,
            pubsub::COMMANDS,
            scripting::COMMANDS,
        ] {
            for spec in family {
                assert!(names.insert(spec.name), "{} twice", spec.name);
                assert_ne!(spec.arity, 0, "{}", spec.name);
                assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            }
        }
        assert!(lookup(b"GeT").is_some());
        assert!(lookup(b"nope").is_none());
    }

    #[test]
    fn unknown_command_text() {
        let argv = vec![
            Bytes::from_static(b"foo"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
        ];
        assert_eq!(
            unknown_command(&argv).0,
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(resolve_range(0, -1, 3), Some((0, 2)));
        assert_eq!(resolve_range(-100, 100, 3), Some((0, 2)));
        assert_eq!(resolve_range(2, 1, 3), None);
        assert_eq!(resolve_range(5, 10, 3), None);
        assert_eq!(resolve_range(0, -1, 0), None);
        assert_eq!(resolve_range(-1, -1, 3), Some((2, 2)));
    }
}
