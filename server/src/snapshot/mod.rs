//! State-machine snapshots: the keyspace cut into self-contained chunks.
//!
//! How it fits: the Raft group periodically asks a [`SnapshotEncoder`] for chunks while
//! no write is applied, and another crate writes them to the snapshot file, each with its
//! own CRC. To install a snapshot (restart, or a follower catching up) the caller empties
//! the store ([`Store::clear_all`]) and hands every chunk of the mmapped file to
//! [`load_chunk`]. Chunks are independent: any order loads the same store.
//!
//! # Chunk layout
//!
//! A chunk is one [rkyv] archive (validated with bytecheck on load, so a corrupt chunk
//! is an error, never a panic) of:
//!
//! ```text
//! Chunk {
//!     version: u16,               // FORMAT_VERSION
//!     db: u8,                     // one database per chunk
//!     runs: [SlotRun { slot: u16, keys: u32 }],  // consecutive keys sharing a slot
//!     keys: [Key {
//!         key: [u8], expire_at: u64 (unix ms, 0 = none), heat: u32,
//!         value: Str([u8]) | Hash([{field, value}]) | Set([member])
//!              | ZSet([{member, score: f64}]) | List([element])  // list in order
//!     }],
//! }
//! ```
//!
//! The group's migration state travels in a chunk of its own after that, `db` =
//! [`MIGRATIONS_DB`], one key whose value is its encoding; its transaction state
//! (transactions across groups prepared here, decisions recorded) likewise, `db` =
//! [`TXNS_DB`].
//!
//! The group's log time (`Store::last_apply_ms`) likewise, `db` = [`LOG_TIME_DB`].
//!
//! The loaded Lua scripts travel as one more chunk after the databases, with `db` =
//! [`SCRIPTS_DB`] and a key per script: the key its SHA1, the value `Str(body)` (the
//! loader recomputes the SHA1 from the body), and FUNCTION libraries, key `library`,
//! value their code (the loader loads them again).
//!
//! The encoder walks databases, then slots, in order, and cuts a chunk once it holds about
//! [`CHUNK_TARGET_BYTES`]; a chunk never spans two databases, may end in the middle of a
//! slot, and never splits a key (a single huge key makes a chunk as large as it needs).
//! `runs` lets the loader size each slot's table once before inserting its keys, so a
//! load never rehashes a table while it grows; the slot of each key is still recomputed
//! on insert, so a wrong run costs a reservation, never a misplaced key.
//!
//! Archived integers are little-endian and offsets 32-bit (rkyv's defaults), so one
//! archive is at most 2 GiB. The loader reads a chunk in place when it starts 8-byte
//! aligned (a file that pads chunks to 8 bytes is loaded zero-copy from its mmap); any
//! other chunk is first copied into a reused, aligned per-thread buffer.
//!
//! Validation guarantees memory safety and the store's invariants (counters, no NaN
//! score, no repeated member or key), not that the data is what was written: a flipped
//! bit inside a key or value is a valid chunk of other data. That is the job of the
//! CRC the snapshot file keeps per chunk.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};
use kelvin_protocol::SLOT_COUNT;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::with::{InlineAsBox, Map};
use rkyv::{Archive, Serialize};

use crate::store::{Blob, Entry, Heat, Store, Value, DATABASES};
use crate::zset::ZSet;

/// The `db` of the chunk that carries the loaded scripts.
pub const SCRIPTS_DB: u8 = 255;
/// The `db` of the chunk that carries the group's migration state (one key,
/// [`MIGRATIONS_KEY`], its value [`crate::migrate::state::MigrationState::encode`]).
pub const MIGRATIONS_DB: u8 = 254;
const MIGRATIONS_KEY: &[u8] = b"migrations";
/// The `db` of the chunk that carries the group's transaction state (one key,
/// [`TXNS_KEY`], its value [`crate::txn::state::TxState::encode`]).
pub const TXNS_DB: u8 = 253;
const TXNS_KEY: &[u8] = b"transactions";
/// The `db` of the chunk that carries the group's log time (one key, [`LOG_TIME_KEY`],
/// its value `Store::last_apply_ms` as 8 little-endian bytes): the stamp every later
/// entry is applied at no less than, so that expiry decided at apply is the same on a
/// replica loaded from this snapshot as on the others (a leader's clock once ahead
/// leaves the log's time ahead of later stamps).
pub const LOG_TIME_DB: u8 = 252;
const LOG_TIME_KEY: &[u8] = b"log-time";

/// The key of a FUNCTION library in the scripts chunk (a script's key is its SHA1).
const LIBRARY_KEY: &str = "library";

/// About how many bytes the encoder puts into one chunk.
pub const CHUNK_TARGET_BYTES: usize = 1 << 20;

/// The chunk format; bumped on any change to the archived types.
pub const FORMAT_VERSION: u16 = 1;

/// Alignment the loader needs a chunk at: that of the most aligned archived field (`u64`,
/// `f64`). The archive's offsets are aligned relative to its start, so the start must be.
/// Were any archived type more aligned, validation would reject the chunk (tests load
/// chunks at 8 mod 16), never read it misaligned.
const CHUNK_ALIGN: usize = 8;

/// A copy buffer larger than this is freed after use rather than kept for the next chunk.
const KEEP_SCRATCH_BYTES: usize = 4 * CHUNK_TARGET_BYTES;

thread_local! {
    /// Where misaligned chunks are copied, reused so a load does not fault in fresh pages
    /// for every chunk.
    static SCRATCH: std::cell::RefCell<AlignedVec> = std::cell::RefCell::new(AlignedVec::new());
}

/// Rough archived bytes of a key besides its key and value bytes (offsets, lengths,
/// expiry, heat, value tag), for cutting chunks near the target.
const KEY_OVERHEAD: usize = 40;
/// Rough archived bytes of a collection element besides its own bytes.
const ELEMENT_OVERHEAD: usize = 16;

/// Why a snapshot chunk could not be encoded or loaded.
#[derive(thiserror::Error, Debug)]
pub enum SnapshotError {
    #[error("snapshot chunk could not be encoded: {0}")]
    Encode(#[source] rancor::Error),
    #[error("corrupt snapshot chunk: {0}")]
    Corrupt(#[source] rancor::Error),
    #[error("snapshot chunk format {0} is not supported (expected {FORMAT_VERSION})")]
    Version(u16),
    #[error("inconsistent snapshot chunk: {0}")]
    Inconsistent(&'static str),
    #[error("snapshot chunk repeats key {key:?} of db {db}")]
    DuplicateKey { db: usize, key: String },
}

/// One chunk, borrowing the store (only ever serialized; loads read the archive).
#[derive(Archive, Serialize)]
struct Chunk<'a> {
    version: u16,
    db: u8,
    runs: Vec<SlotRun>,
    keys: Vec<KeyOut<'a>>,
}

/// `keys` consecutive keys of the chunk live in `slot`.
#[derive(Archive, Serialize)]
struct SlotRun {
    slot: u16,
    keys: u32,
}

#[derive(Archive, Serialize)]
struct KeyOut<'a> {
    #[rkyv(with = InlineAsBox)]
    key: &'a [u8],
    expire_at: u64,
    heat: u32,
    value: ValueOut<'a>,
}

#[derive(Archive, Serialize)]
enum ValueOut<'a> {
    Str(#[rkyv(with = InlineAsBox)] &'a [u8]),
    Hash(Vec<FieldOut<'a>>),
    Set(#[rkyv(with = Map<InlineAsBox>)] Vec<&'a [u8]>),
    ZSet(Vec<MemberOut<'a>>),
    List(#[rkyv(with = Map<InlineAsBox>)] Vec<&'a [u8]>),
}

#[derive(Archive, Serialize)]
struct FieldOut<'a> {
    #[rkyv(with = InlineAsBox)]
    field: &'a [u8],
    #[rkyv(with = InlineAsBox)]
    value: &'a [u8],
}

#[derive(Archive, Serialize)]
struct MemberOut<'a> {
    #[rkyv(with = InlineAsBox)]
    member: &'a [u8],
    score: f64,
}

/// The value in archivable form, and about how many bytes it archives to.
fn value_out(value: &Value) -> (ValueOut<'_>, usize) {
    match value {
        Value::Str(s) => (ValueOut::Str(s), s.len()),
        Value::Hash(h) => {
            let mut bytes = 0;
            let fields = h
                .iter()
                .map(|(f, v)| {
                    bytes += f.len() + v.len() + 2 * ELEMENT_OVERHEAD;
                    FieldOut { field: f, value: v }
                })
                .collect();
            (ValueOut::Hash(fields), bytes)
        }
        Value::Set(s) => {
            let mut bytes = 0;
            let members = s
                .iter()
                .map(|m| {
                    bytes += m.len() + ELEMENT_OVERHEAD;
                    &m[..]
                })
                .collect();
            (ValueOut::Set(members), bytes)
        }
        Value::ZSet(z) => {
            let mut bytes = 0;
            let members = z
                .unordered()
                .map(|(member, score)| {
                    bytes += member.len() + ELEMENT_OVERHEAD;
                    MemberOut { member, score }
                })
                .collect();
            (ValueOut::ZSet(members), bytes)
        }
        Value::List(l) => {
            let mut bytes = 0;
            let elements = l
                .iter()
                .map(|e| {
                    bytes += e.len() + ELEMENT_OVERHEAD;
                    &e[..]
                })
                .collect();
            (ValueOut::List(elements), bytes)
        }
    }
}

/// Walks the store (db, slot) in order and cuts it into chunks of about
/// [`CHUNK_TARGET_BYTES`]. The caller may release the store lock between chunks but must
/// apply no write until the last chunk: the cursor is a plain position in the tables.
#[derive(Debug)]
pub struct SnapshotEncoder {
    db: usize,
    slot: usize,
    /// Keys of `slot` already written (tables iterate in a fixed order while unchanged).
    done_in_slot: usize,
    target: usize,
}

impl Default for SnapshotEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotEncoder {
    pub fn new() -> Self {
        SnapshotEncoder {
            db: 0,
            slot: 0,
            done_in_slot: 0,
            target: CHUNK_TARGET_BYTES,
        }
    }

    /// An encoder cutting chunks of about `target` bytes (tests use tiny ones).
    #[cfg(test)]
    fn with_target(target: usize) -> Self {
        SnapshotEncoder {
            target,
            ..Self::new()
        }
    }

    /// Encodes the next chunk into `out` (cleared first). Returns false, with `out`
    /// empty, once the whole store has been written. After an error (only a chunk over
    /// the 2 GiB the format addresses) the snapshot must be abandoned.
    pub fn encode_next(&mut self, store: &Store, out: &mut Vec<u8>) -> Result<bool, SnapshotError> {
        out.clear();
        while self.db < DATABASES {
            let db = self.db;
            let Some(ks) = store.db_ref(db).filter(|ks| !ks.is_empty()) else {
                self.next_db();
                continue;
            };
            let mut runs: Vec<SlotRun> = Vec::new();
            let mut keys: Vec<KeyOut<'_>> = Vec::new();
            let mut bytes = 0;
            while self.slot < SLOT_COUNT && bytes < self.target {
                let map = &ks.slot(self.slot).map;
                let first = keys.len();
                for (key, entry) in map.iter().skip(self.done_in_slot) {
                    let (value, value_bytes) = value_out(&entry.value);
                    bytes += key.len() + value_bytes + KEY_OVERHEAD;
                    keys.push(KeyOut {
                        key,
                        expire_at: entry.expire_at,
                        heat: entry.heat.to_snapshot(),
                        value,
                    });
                    self.done_in_slot += 1;
                    if bytes >= self.target {
                        break;
                    }
                }
                if keys.len() > first {
                    runs.push(SlotRun {
                        // Slots are below SLOT_COUNT (16384) and a chunk holds fewer than
                        // 2^32 keys (its offsets are 32-bit), so neither cast truncates.
                        slot: self.slot as u16,
                        keys: (keys.len() - first) as u32,
                    });
                }
                if self.done_in_slot >= map.len() {
                    self.slot += 1;
                    self.done_in_slot = 0;
                }
            }
            if self.slot == SLOT_COUNT {
                self.next_db();
            }
            if keys.is_empty() {
                continue;
            }
            let chunk = Chunk {
                version: FORMAT_VERSION,
                // `db < DATABASES` (16), so the cast does not truncate.
                db: db as u8,
                runs,
                keys,
            };
            rkyv::api::high::to_bytes_in::<_, rancor::Error>(&chunk, &mut *out)
                .map_err(SnapshotError::Encode)?;
            return Ok(true);
        }
        if self.db == DATABASES {
            self.db += 1;
            let libraries: Vec<&[u8]> = crate::script::functions::library_codes(store).collect();
            if !store.scripts.is_empty() || !libraries.is_empty() {
                let mut scripts: Vec<(&str, &[u8])> = store.scripts.iter().collect();
                scripts.sort_unstable();
                // FUNCTION libraries: key `LIBRARY_KEY`, value their code.
                scripts.extend(libraries.into_iter().map(|code| (LIBRARY_KEY, code)));
                let chunk = Chunk {
                    version: FORMAT_VERSION,
                    db: SCRIPTS_DB,
                    runs: vec![SlotRun {
                        slot: 0,
                        // Far fewer scripts than 2^32 fit in memory.
                        keys: scripts.len() as u32,
                    }],
                    keys: scripts
                        .into_iter()
                        .map(|(sha, body)| KeyOut {
                            key: sha.as_bytes(),
                            expire_at: 0,
                            heat: 0,
                            value: ValueOut::Str(body),
                        })
                        .collect(),
                };
                rkyv::api::high::to_bytes_in::<_, rancor::Error>(&chunk, &mut *out)
                    .map_err(SnapshotError::Encode)?;
                return Ok(true);
            }
        }
        if self.db == DATABASES + 1 {
            self.db += 1;
            if store.migrations.worth_saving() {
                state_chunk(
                    MIGRATIONS_DB,
                    MIGRATIONS_KEY,
                    &store.migrations.encode(),
                    out,
                )?;
                return Ok(true);
            }
        }
        if self.db == DATABASES + 2 {
            self.db += 1;
            if !store.tx.is_empty() {
                state_chunk(TXNS_DB, TXNS_KEY, &store.tx.encode(), out)?;
                return Ok(true);
            }
        }
        if self.db == DATABASES + 3 {
            self.db += 1;
            if store.last_apply_ms > 0 {
                let stamp = store.last_apply_ms.to_le_bytes();
                state_chunk(LOG_TIME_DB, LOG_TIME_KEY, &stamp, out)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn next_db(&mut self) {
        self.db += 1;
        self.slot = 0;
        self.done_in_slot = 0;
    }
}

/// A chunk of one key in pseudo-database `db` whose value is a group state's encoding
/// (the migrations', the transactions').
fn state_chunk(db: u8, key: &[u8], state: &[u8], out: &mut Vec<u8>) -> Result<(), SnapshotError> {
    let chunk = Chunk {
        version: FORMAT_VERSION,
        db,
        runs: vec![SlotRun { slot: 0, keys: 1 }],
        keys: vec![KeyOut {
            key,
            expire_at: 0,
            heat: 0,
            value: ValueOut::Str(state),
        }],
    };
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(&chunk, &mut *out)
        .map_err(SnapshotError::Encode)?;
    Ok(())
}

/// Decodes one chunk, validating it first, and inserts its keys into `store`. Returns
/// how many keys it inserted. A chunk whose archive, version, db or slot runs are bad
/// inserts nothing; a bad value (NaN score, repeated member) or a key already loaded is
/// found while inserting, so on any error the caller should discard the partly loaded
/// store ([`Store::clear_all`]).
pub fn load_chunk(store: &mut Store, chunk: &[u8]) -> Result<usize, SnapshotError> {
    if chunk.as_ptr().addr().is_multiple_of(CHUNK_ALIGN) {
        return load_aligned(store, chunk);
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.extend_from_slice(chunk);
            let loaded = load_aligned(store, &buf);
            if buf.capacity() > KEEP_SCRATCH_BYTES {
                *buf = AlignedVec::new();
            }
            loaded
        }
        // Only if a load were re-entered on this thread: copy into a buffer of its own.
        Err(_) => {
            let mut buf = AlignedVec::<16>::with_capacity(chunk.len());
            buf.extend_from_slice(chunk);
            load_aligned(store, &buf)
        }
    })
}

/// [`load_chunk`] once `bytes` is aligned to [`CHUNK_ALIGN`].
fn load_aligned(store: &mut Store, bytes: &[u8]) -> Result<usize, SnapshotError> {
    let archived = rkyv::access::<ArchivedChunk<'static>, rancor::Error>(bytes)
        .map_err(SnapshotError::Corrupt)?;
    let version = archived.version.to_native();
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    if archived.db == LOG_TIME_DB {
        let stamp = match &archived.keys[..] {
            [k] => match &k.value {
                ArchivedValueOut::Str(b) => <[u8; 8]>::try_from(&b[..]).ok(),
                _ => None,
            },
            _ => None,
        };
        let stamp = stamp.ok_or(SnapshotError::Inconsistent(
            "the log time chunk holds one key of 8 bytes",
        ))?;
        store.last_apply_ms = u64::from_le_bytes(stamp);
        return Ok(0);
    }
    if archived.db == TXNS_DB {
        let [k] = &archived.keys[..] else {
            return Err(SnapshotError::Inconsistent(
                "a transaction chunk holds one key",
            ));
        };
        let ArchivedValueOut::Str(state) = &k.value else {
            return Err(SnapshotError::Inconsistent(
                "transaction state is not a string",
            ));
        };
        store.tx =
            crate::txn::state::TxState::decode(state).map_err(SnapshotError::Inconsistent)?;
        return Ok(0);
    }
    if archived.db == MIGRATIONS_DB {
        let [k] = &archived.keys[..] else {
            return Err(SnapshotError::Inconsistent(
                "a migration chunk holds one key",
            ));
        };
        let ArchivedValueOut::Str(state) = &k.value else {
            return Err(SnapshotError::Inconsistent(
                "migration state is not a string",
            ));
        };
        store.migrations = crate::migrate::state::MigrationState::decode(state)
            .map_err(SnapshotError::Inconsistent)?;
        return Ok(0);
    }
    if archived.db == SCRIPTS_DB {
        let mut loaded = 0;
        for k in archived.keys.iter() {
            let ArchivedValueOut::Str(body) = &k.value else {
                return Err(SnapshotError::Inconsistent("a script that is not a string"));
            };
            if &*k.key == LIBRARY_KEY.as_bytes() {
                crate::script::functions::load(store, body, true).map_err(|_| {
                    SnapshotError::Inconsistent("a function library that does not load")
                })?;
            } else {
                store.scripts.insert(body);
            }
            loaded += 1;
        }
        return Ok(loaded);
    }
    let db = archived.db as usize;
    if db >= DATABASES {
        return Err(SnapshotError::Inconsistent("database index out of range"));
    }
    let mut covered = 0usize;
    for run in archived.runs.iter() {
        if run.slot.to_native() as usize >= SLOT_COUNT {
            return Err(SnapshotError::Inconsistent("slot out of range"));
        }
        covered = covered.saturating_add(run.keys.to_native() as usize);
    }
    if covered != archived.keys.len() {
        return Err(SnapshotError::Inconsistent(
            "slot runs do not cover the keys",
        ));
    }
    let ks = store.db(db);
    let mut keys = archived.keys.iter();
    for run in archived.runs.iter() {
        let n = run.keys.to_native() as usize;
        ks.slot_mut(run.slot.to_native() as usize).map.reserve(n);
        for k in keys.by_ref().take(n) {
            let entry = Entry {
                value: load_value(&k.value)?,
                expire_at: k.expire_at.to_native(),
                heat: Heat::from_snapshot(k.heat.to_native()),
            };
            if ks.insert(&k.key, entry).is_some() {
                return Err(SnapshotError::DuplicateKey {
                    db,
                    key: String::from_utf8_lossy(&k.key).into_owned(),
                });
            }
        }
    }
    Ok(covered)
}

fn load_value(v: &ArchivedValueOut<'static>) -> Result<Value, SnapshotError> {
    const DUPLICATE: SnapshotError = SnapshotError::Inconsistent("collection repeats a member");
    Ok(match v {
        ArchivedValueOut::Str(s) => Value::Str(s.to_vec()),
        ArchivedValueOut::Hash(fields) => {
            let mut h = HashMap::with_capacity(fields.len());
            for f in fields.iter() {
                h.insert(Blob::from(&*f.field), Blob::from(&*f.value));
            }
            if h.len() != fields.len() {
                return Err(DUPLICATE);
            }
            Value::Hash(Box::new(h))
        }
        ArchivedValueOut::Set(members) => {
            let mut s = HashSet::with_capacity(members.len());
            for m in members.iter() {
                s.insert(Blob::from(&**m));
            }
            if s.len() != members.len() {
                return Err(DUPLICATE);
            }
            Value::Set(Box::new(s))
        }
        ArchivedValueOut::ZSet(members) => {
            let mut z = ZSet::default();
            for m in members.iter() {
                let score = m.score.to_native();
                if score.is_nan() {
                    return Err(SnapshotError::Inconsistent("sorted set score is NaN"));
                }
                z.insert(&m.member, score);
            }
            if z.len() != members.len() {
                return Err(DUPLICATE);
            }
            Value::ZSet(Box::new(z))
        }
        ArchivedValueOut::List(elements) => Value::List(Box::new(
            elements
                .iter()
                .map(|e| Blob::from(&**e))
                .collect::<VecDeque<_>>(),
        )),
    })
}

#[cfg(test)]
mod tests;
