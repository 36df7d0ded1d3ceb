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
//! [`MIGRATIONS_DB`], one key whose value is its encoding.
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
            if !store.migrations.is_empty() {
                let state = store.migrations.encode();
                let chunk = Chunk {
                    version: FORMAT_VERSION,
                    db: MIGRATIONS_DB,
                    runs: vec![SlotRun { slot: 0, keys: 1 }],
                    keys: vec![KeyOut {
                        key: MIGRATIONS_KEY,
                        expire_at: 0,
                        heat: 0,
                        value: ValueOut::Str(&state),
                    }],
                };
                rkyv::api::high::to_bytes_in::<_, rancor::Error>(&chunk, &mut *out)
                    .map_err(SnapshotError::Encode)?;
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
mod tests {
    use super::*;
    use crate::store::{Keyspace, INLINE_KEY_LEN};
    use kelvin_protocol::key_slot;
    use proptest::prelude::*;

    fn encode_all(store: &Store, target: usize) -> Vec<Vec<u8>> {
        let mut enc = SnapshotEncoder::with_target(target);
        let mut chunks = Vec::new();
        let mut out = Vec::new();
        while enc.encode_next(store, &mut out).unwrap() {
            assert!(!out.is_empty());
            chunks.push(out.clone());
        }
        assert!(out.is_empty());
        // Once done, stays done.
        assert!(!enc.encode_next(store, &mut out).unwrap());
        chunks
    }

    fn load_all<'a>(chunks: impl IntoIterator<Item = &'a Vec<u8>>) -> (Store, usize) {
        let mut store = Store::default();
        let mut keys = 0;
        for c in chunks {
            keys += load_chunk(&mut store, c).unwrap();
        }
        (store, keys)
    }

    fn same_value(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Str(x), Value::Str(y)) => x == y,
            (Value::Hash(x), Value::Hash(y)) => x == y,
            (Value::Set(x), Value::Set(y)) => x == y,
            (Value::ZSet(x), Value::ZSet(y)) => {
                let bits = |z: &ZSet| -> Vec<(Vec<u8>, u64)> {
                    z.iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect()
                };
                bits(x) == bits(y)
            }
            (Value::List(x), Value::List(y)) => x == y,
            _ => false,
        }
    }

    fn assert_same_keyspace(db: usize, a: &Keyspace, b: &Keyspace) {
        assert_eq!(a.len(), b.len(), "db {db} len");
        assert_eq!(a.expires_count(), b.expires_count(), "db {db} expires");
        assert_eq!(a.iter().count(), a.len());
        assert_eq!(b.iter().count(), b.len());
        for slot in 0..SLOT_COUNT {
            let (sa, sb) = (a.slot(slot), b.slot(slot));
            assert_eq!(sa.map.len(), sb.map.len(), "db {db} slot {slot} keys");
            assert_eq!(sa.expires, sb.expires, "db {db} slot {slot} expires");
        }
        for (key, ea) in a.iter() {
            let eb = b
                .raw_get(key)
                .unwrap_or_else(|| panic!("db {db}: {key:?} missing"));
            assert_eq!(ea.expire_at, eb.expire_at, "db {db}: {key:?} expire_at");
            assert_eq!(ea.heat, eb.heat, "db {db}: {key:?} heat");
            assert!(
                same_value(&ea.value, &eb.value),
                "db {db}: {key:?}: {:?} != {:?}",
                ea.value,
                eb.value
            );
        }
    }

    /// Equal data in every database (a database used but empty equals one never used).
    fn assert_same(a: &Store, b: &Store) {
        let empty = Keyspace::default();
        for db in 0..DATABASES {
            let ka = a.db_ref(db).unwrap_or(&empty);
            let kb = b.db_ref(db).unwrap_or(&empty);
            assert_same_keyspace(db, ka, kb);
        }
    }

    fn entry(value: Value, expire_at: u64, heat: u32) -> Entry {
        Entry {
            value,
            expire_at,
            heat: Heat::from_snapshot(heat),
        }
    }

    fn blobs<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> std::vec::IntoIter<Blob> {
        let v: Vec<Blob> = items.into_iter().map(Blob::from).collect();
        v.into_iter()
    }

    /// Every value type, in several databases, with the edge cases.
    fn sample_store() -> Store {
        let mut store = Store::default();
        let ks = store.db(0);
        let inline_max = vec![0xAB; INLINE_KEY_LEN];
        let heap_min = vec![0xCD; INLINE_KEY_LEN + 1];
        ks.insert(b"", entry(Value::Str(Vec::new()), 0, 0));
        ks.insert(&inline_max, entry(Value::Str(b"inline".to_vec()), 5, 1));
        ks.insert(&heap_min, entry(Value::Str(b"heap".to_vec()), 0, u32::MAX));
        ks.insert(
            b"\0\xff\x00bin",
            entry(Value::Str(vec![0, 255, 0]), u64::MAX, 7),
        );
        ks.insert(b"big", entry(Value::Str(vec![b'x'; 3 << 20]), 0, 0));
        let hash: HashMap<Blob, Blob> = blobs([&b"f1"[..], b"", b"\0"])
            .zip(blobs([&b"v1"[..], b"empty-field", b""]))
            .collect();
        ks.insert(
            b"hash",
            entry(Value::Hash(Box::new(hash)), 1_700_000_000_000, 3),
        );
        let set: HashSet<Blob> = blobs([&b"a"[..], b"", &[0xFF; 40]]).collect();
        ks.insert(b"set", entry(Value::Set(Box::new(set)), 0, 0));
        let mut z = ZSet::default();
        for (m, s) in [
            (&b"lo"[..], f64::NEG_INFINITY),
            (b"hi", f64::INFINITY),
            (b"zero", -0.0),
            (b"neg", -1.5),
            (b"tie-a", 2.0),
            (b"tie-b", 2.0),
            (b"", 1e-300),
        ] {
            z.insert(m, s);
        }
        ks.insert(b"zset", entry(Value::ZSet(Box::new(z)), 0, 9));
        let list: VecDeque<Blob> = blobs([&b"3"[..], b"1", b"", b"2", b"1"]).collect();
        ks.insert(b"list", entry(Value::List(Box::new(list)), 42, 0));
        ks.insert(
            b"one-elem-list",
            entry(Value::List(Box::new(blobs([&b"x"[..]]).collect())), 0, 0),
        );

        // Many keys, a thousand of them sharing one slot, so chunks end mid-slot.
        let ks = store.db(3);
        for i in 0..1000u32 {
            let expire = if i % 3 == 0 { 10_000 + i as u64 } else { 0 };
            ks.insert(
                format!("{{tag}}:{i}").as_bytes(),
                entry(Value::Str(i.to_le_bytes().to_vec()), expire, i),
            );
            ks.insert(
                format!("spread:{i}").as_bytes(),
                entry(Value::Str(vec![1; i as usize % 50]), 0, 0),
            );
        }
        // Used but emptied, and the last database.
        store
            .db(7)
            .insert(b"gone", entry(Value::Str(b"x".to_vec()), 1, 0));
        store.db(7).remove(b"gone");
        store
            .db(15)
            .insert(b"last", entry(Value::Str(b"db15".to_vec()), 99, 1));
        store
    }

    #[test]
    fn round_trip_small_chunks() {
        let store = sample_store();
        for target in [1, 200, 4096] {
            let chunks = encode_all(&store, target);
            assert!(chunks.len() > 10, "{target}: {} chunks", chunks.len());
            let (loaded, keys) = load_all(&chunks);
            assert_eq!(keys, store.dbs().map(|(_, ks)| ks.len()).sum::<usize>());
            assert_same(&store, &loaded);
            // Chunks are independent: any order loads the same store.
            let (reversed, _) = load_all(chunks.iter().rev());
            assert_same(&store, &reversed);
            // A db used but empty writes nothing.
            assert!(loaded.db_ref(7).is_none());
        }
    }

    #[test]
    fn the_migration_state_travels_with_the_snapshot() {
        let mut store = sample_store();
        store.migrations.seal(4, &[10, 11], 2).unwrap();
        store.migrations.import(5, &[key_slot(b"k")], 3).unwrap();
        store.migrations.settle(0, b"k");
        let chunks = encode_all(&store, 4096);
        let (loaded, keys) = load_all(chunks.iter().rev());
        assert_eq!(keys, store.dbs().map(|(_, ks)| ks.len()).sum::<usize>());
        assert_eq!(loaded.migrations, store.migrations);
        assert_same(&store, &loaded);
        // Without migrations, no chunk for them.
        let plain = sample_store();
        assert_eq!(encode_all(&plain, 4096).len(), chunks.len() - 1);
    }

    #[test]
    fn round_trip_default_target() {
        let store = sample_store();
        let chunks = encode_all(&store, CHUNK_TARGET_BYTES);
        // db 0 (cut after its 3 MiB key, wherever the table puts it), db 3, db 15.
        assert!((3..=4).contains(&chunks.len()), "{} chunks", chunks.len());
        assert!(chunks.iter().any(|c| c.len() > 3 << 20));
        let (loaded, _) = load_all(&chunks);
        assert_same(&store, &loaded);
    }

    #[test]
    fn empty_store_has_no_chunks() {
        let mut store = Store::default();
        store.db(2);
        assert!(encode_all(&store, CHUNK_TARGET_BYTES).is_empty());
    }

    #[test]
    fn unaligned_chunks_load() {
        let store = sample_store();
        for chunk in encode_all(&store, 1000) {
            // 8 mod 16 loads in place; the others are copied.
            for shift in 1..=8 {
                let mut buf = AlignedVec::<16>::with_capacity(chunk.len() + shift);
                buf.extend_from_slice(&vec![0; shift]);
                buf.extend_from_slice(&chunk);
                let mut into = Store::default();
                let keys = load_chunk(&mut into, &buf[shift..]).unwrap();
                assert!(keys > 0);
            }
        }
    }

    #[test]
    fn clear_all_drops_every_db_and_keeps_the_rest() {
        let mut store = sample_store();
        store.notify_flags = 5;
        store.clear_all();
        assert_eq!(store.dbs().count(), 0);
        assert_eq!(store.notify_flags, 5);
        let (loaded, _) = load_all(&encode_all(&sample_store(), 500));
        let chunks = encode_all(&loaded, 500);
        for c in &chunks {
            load_chunk(&mut store, c).unwrap();
        }
        assert_same(&loaded, &store);
    }

    #[test]
    fn types_travel_between_threads() {
        fn check<T: Send + Sync + 'static>() {}
        check::<SnapshotError>();
        check::<SnapshotEncoder>();
    }

    #[test]
    fn repeated_key_is_an_error() {
        let store = sample_store();
        let chunks = encode_all(&store, CHUNK_TARGET_BYTES);
        let mut into = Store::default();
        let last = chunks.last().unwrap(); // db 15
        load_chunk(&mut into, last).unwrap();
        assert!(matches!(
            load_chunk(&mut into, last),
            Err(SnapshotError::DuplicateKey { db: 15, .. })
        ));
    }

    /// Loading `bytes` must not panic; if it succeeds, the store must be consistent.
    fn load_corrupt(bytes: &[u8]) -> bool {
        let mut store = Store::default();
        match load_chunk(&mut store, bytes) {
            Err(_) => false,
            Ok(n) => {
                let total: usize = store.dbs().map(|(_, ks)| ks.len()).sum();
                assert_eq!(total, n);
                for (_, ks) in store.dbs() {
                    assert_eq!(ks.iter().count(), ks.len());
                    let expiring = ks.iter().filter(|(_, e)| e.expire_at != 0).count();
                    assert_eq!(expiring, ks.expires_count());
                    for (k, _) in ks.iter() {
                        assert!(ks.slot(key_slot(k) as usize).map.contains_key(&k[..]));
                    }
                }
                true
            }
        }
    }

    fn small_chunk() -> Vec<u8> {
        let mut store = Store::default();
        let s = sample_store();
        for (key, e) in s
            .db_ref(0)
            .unwrap()
            .iter()
            .filter(|(k, _)| &k[..] != b"big")
        {
            store.db(4).insert(key, e.clone());
        }
        let chunks = encode_all(&store, CHUNK_TARGET_BYTES);
        assert_eq!(chunks.len(), 1);
        chunks.into_iter().next().unwrap()
    }

    #[test]
    fn truncated_chunks_are_errors() {
        let chunk = small_chunk();
        for len in 0..chunk.len() {
            assert!(!load_corrupt(&chunk[..len]), "truncated to {len} loaded");
            // Cut at the front too, and at an unaligned start.
            assert!(
                !load_corrupt(&chunk[chunk.len() - len..]),
                "last {len} loaded"
            );
        }
        assert!(load_corrupt(&chunk));
    }

    #[test]
    fn bit_flips_never_panic() {
        // bytecheck catches every flip that breaks the archive's structure (offsets,
        // lengths, tags) plus version, db, slot runs, NaN scores and repeated members;
        // a flip inside key or value bytes is a valid chunk of other data, which the
        // file's per-chunk CRC catches. Either way: no panic, a consistent store.
        let chunk = small_chunk();
        let mut rejected = 0;
        // One bit of every byte (each load builds a 16384-slot keyspace: all 8 bits of
        // every byte take most of a minute in debug builds).
        for byte in 0..chunk.len() {
            let mut c = chunk.clone();
            c[byte] ^= 1 << (byte * 5 % 8);
            if !load_corrupt(&c) {
                rejected += 1;
            }
        }
        assert!(rejected > 0);
        // The root (the last bytes: version, db, padding, then offset and length of both
        // vectors) is checked but for the db, which may be any of the 16.
        let tail = std::mem::size_of::<ArchivedChunk<'static>>();
        for byte in chunk.len() - tail..chunk.len() {
            for bit in 0..8 {
                let mut c = chunk.clone();
                c[byte] ^= 1 << bit;
                let db_or_padding = matches!(byte - (chunk.len() - tail), 2 | 3);
                let db_ok = byte - (chunk.len() - tail) == 2 && (4 ^ (1 << bit)) < DATABASES;
                assert!(
                    (db_or_padding && (db_ok || byte - (chunk.len() - tail) == 3))
                        || !load_corrupt(&c),
                    "flip {byte}:{bit} of {} loaded; tail {tail}",
                    chunk.len()
                );
            }
        }
    }

    #[test]
    fn random_bytes_are_errors() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..512);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            assert!(!load_corrupt(&bytes));
        }
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..12);
        let score = prop_oneof![
            -1e6f64..1e6,
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY)
        ];
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120).prop_map(Value::Str),
            prop::collection::vec((bytes(), bytes()), 0..6).prop_map(|fs| {
                Value::Hash(Box::new(
                    fs.into_iter().map(|(f, v)| (f.into(), v.into())).collect(),
                ))
            }),
            prop::collection::vec(bytes(), 0..6)
                .prop_map(|ms| Value::Set(Box::new(ms.into_iter().map(Blob::from).collect()))),
            prop::collection::vec((bytes(), score), 0..6).prop_map(|ms| {
                let mut z = ZSet::default();
                for (m, s) in ms {
                    z.insert(&m, s);
                }
                Value::ZSet(Box::new(z))
            }),
            prop::collection::vec(bytes(), 0..6)
                .prop_map(|es| Value::List(Box::new(es.into_iter().map(Blob::from).collect()))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_stores_round_trip(
            keys in prop::collection::vec(
                (
                    // Few databases: building a 16384-slot keyspace is slow in debug.
                    0..4usize,
                    prop::collection::vec(any::<u8>(), 0..40),
                    value_strategy(),
                    prop_oneof![Just(0u64), any::<u64>()],
                    any::<u32>(),
                ),
                0..80,
            ),
            target in 1usize..3000,
        ) {
            let mut store = Store::default();
            for (db, key, value, expire_at, heat) in keys {
                store.db(db).insert(&key, entry(value, expire_at, heat));
            }
            let (loaded, keys) = load_all(&encode_all(&store, target));
            prop_assert_eq!(keys, store.dbs().map(|(_, ks)| ks.len()).sum::<usize>());
            assert_same(&store, &loaded);
        }
    }

    /// `cargo test --release -p kelvin-server --lib snapshot -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_one_million_strings() {
        use std::time::Instant;
        const KEYS: usize = 1_000_000;
        let mut store = Store::default();
        let t = Instant::now();
        for i in 0..KEYS {
            let key = format!("session:{i:08}");
            let mut value = vec![b'v'; 100];
            value[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let expire = if i % 4 == 0 { 1_800_000_000_000 } else { 0 };
            store
                .db(0)
                .insert(key.as_bytes(), entry(Value::Str(value), expire, 0));
        }
        println!("build store:  {:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let mut enc = SnapshotEncoder::new();
        let mut out = Vec::new();
        // As the file would hold them: a length before each chunk, so most start unaligned.
        let mut file = vec![0u8; 1];
        let mut chunks = 0;
        while enc.encode_next(&store, &mut out).unwrap() {
            file.extend_from_slice(&(out.len() as u32).to_le_bytes());
            file.extend_from_slice(&out);
            chunks += 1;
        }
        let encode = t.elapsed();
        println!(
            "encode:       {:>7.1} ms  ({chunks} chunks, {:.1} MiB)",
            encode.as_secs_f64() * 1e3,
            file.len() as f64 / (1 << 20) as f64
        );

        let file = &file[..];
        let slices = || {
            let mut pos = 1;
            std::iter::from_fn(move || {
                let len_bytes: [u8; 4] = file.get(pos..pos + 4)?.try_into().ok()?;
                let len = u32::from_le_bytes(len_bytes) as usize;
                let chunk = &file[pos + 4..pos + 4 + len];
                pos += 4 + len;
                Some(chunk)
            })
        };
        let t = Instant::now();
        for c in slices() {
            let mut buf = AlignedVec::<16>::new();
            buf.extend_from_slice(c);
            rkyv::access::<ArchivedChunk<'static>, rancor::Error>(&buf).unwrap();
        }
        println!("copy+validate {:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);
        // Load times vary mostly with how much of the ~250 MiB the store grows to must be
        // faulted in fresh (the aligned run's copies take fresh pages of their own).
        for (label, aligned) in [
            ("load (cold)", false),
            ("load aligned", true),
            ("load unaligned", false),
        ] {
            let owned: Vec<AlignedVec> = if aligned {
                slices()
                    .map(|c| {
                        let mut v = AlignedVec::new();
                        v.extend_from_slice(c);
                        v
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut loaded = Store::default();
            let t = Instant::now();
            let mut keys = 0;
            if aligned {
                for c in &owned {
                    keys += load_chunk(&mut loaded, c).unwrap();
                }
            } else {
                for c in slices() {
                    keys += load_chunk(&mut loaded, c).unwrap();
                }
            }
            println!("{label:<14}{:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(keys, KEYS);
            assert_eq!(loaded.db_ref(0).unwrap().len(), KEYS);
            assert_eq!(loaded.db_ref(0).unwrap().expires_count(), KEYS / 4);
            let t = Instant::now();
            drop(loaded);
            println!("drop store:    {:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
}
