//! The keyspace: 16 databases, each a table per hash slot.
//!
//! How it fits: connections execute commands against a [`Store`] under one lock; every
//! write is a deterministic function of the store, the command and the time carried by
//! the command's [`crate::cmd::Exec`] context, so the Raft log (next issue) can carry the
//! command and replicas reach the same state. Data lives in per-slot tables so resharding
//! can move, count and drop a slot without walking the rest of the keyspace.
//!
//! Expiry is logical on read (an expired key reads as missing and is queued for deletion)
//! and physical by a delete decided by whoever runs the sweep (the leader, later), so
//! replicas never expire keys on their own clocks.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use hashbrown::{HashMap, HashSet};
use kelvin_protocol::{key_slot, SLOT_COUNT};

use crate::zset::ZSet;

pub mod digest;
pub mod free;
pub mod heat;
pub mod list_ready;
pub mod memory;
pub mod prefetch;
pub mod recent;
pub mod scratch;
pub mod slotmap;

pub use free::drop_later;
pub use heat::Heat;
pub use list_ready::ListReady;
pub use slotmap::SlotMap;

/// A key or a member of a collection: owned bytes, exactly sized.
pub type Blob = Box<[u8]>;

/// Longest key stored inline in its entry, without a heap allocation.
pub const INLINE_KEY_LEN: usize = 15;

/// The tag byte of a key on the heap (an inline key's tag is its length, at most 15).
const HEAP_TAG: u8 = u8::MAX;

/// A key on the heap: the block's pointer and length, and [`HEAP_TAG`] in the last byte.
#[derive(Clone, Copy)]
#[repr(C)]
struct HeapKey {
    ptr: *mut u8,
    /// The length's low 7 bytes, little-endian (2^56 bytes is past any memory).
    len: [u8; 7],
    tag: u8,
}

impl HeapKey {
    fn len(&self) -> usize {
        let mut b = [0u8; 8];
        b[..7].copy_from_slice(&self.len);
        u64::from_le_bytes(b) as usize
    }
}

/// Both forms of a [`Key`] in 16 bytes; the last byte says which.
#[repr(C)]
union KeyRepr {
    /// Up to [`INLINE_KEY_LEN`] bytes, then the length in the last byte.
    inline: [u8; 16],
    heap: HeapKey,
}

/// A key of the keyspace, in 16 bytes. Keys up to [`INLINE_KEY_LEN`] bytes live inside
/// the slot's entry, so a lookup compares them without another cache miss and stores
/// them without another allocation; longer keys live on the heap. (An enum of an inline
/// array and a `Box<[u8]>` takes 24 bytes: the tag shares the last byte here instead,
/// which every entry of the keyspace saves.) Hashes and compares as the `[u8]` it holds,
/// so tables are probed with plain byte slices.
pub struct Key(KeyRepr);

// SAFETY: a Key owns its heap block (as a Box<[u8]> would) and shares nothing.
unsafe impl Send for Key {}
// SAFETY: as above; `&Key` only reads.
unsafe impl Sync for Key {}

impl Key {
    fn tag(&self) -> u8 {
        // SAFETY: both forms are 16 initialized bytes with the tag in the last one.
        unsafe { self.0.inline[15] }
    }

    /// True if the key lives on the heap (longer than [`INLINE_KEY_LEN`]).
    pub fn is_heap(&self) -> bool {
        self.tag() == HEAP_TAG
    }

    pub fn as_bytes(&self) -> &[u8] {
        if self.is_heap() {
            // SAFETY: the tag says `heap` was written by `From`, from a leaked Box<[u8]>
            // of `len` bytes that this key owns until it drops.
            unsafe {
                let h = self.0.heap;
                std::slice::from_raw_parts(h.ptr, h.len())
            }
        } else {
            // SAFETY: the tag says `inline`; its length is at most INLINE_KEY_LEN.
            unsafe { &self.0.inline[..self.tag() as usize] }
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if self.is_heap() {
            // SAFETY: as in `as_bytes`: the block came from Box::into_raw, and is freed
            // once, here.
            unsafe {
                let h = self.0.heap;
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    h.ptr,
                    h.len(),
                )));
            }
        }
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        Key::from(self.as_bytes())
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Key {
        if b.len() <= INLINE_KEY_LEN {
            let mut inline = [0u8; 16];
            inline[..b.len()].copy_from_slice(b);
            inline[15] = b.len() as u8;
            Key(KeyRepr { inline })
        } else {
            let mut len = [0u8; 7];
            len.copy_from_slice(&(b.len() as u64).to_le_bytes()[..7]);
            let ptr = Box::into_raw(Box::<[u8]>::from(b)) as *mut u8;
            Key(KeyRepr {
                heap: HeapKey {
                    ptr,
                    len,
                    tag: HEAP_TAG,
                },
            })
        }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `[u8]` does: tables are probed with `&[u8]`.
        self.as_bytes().hash(state)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Number of logical databases (`SELECT 0..15`, Redis's `databases` default).
pub const DATABASES: usize = 16;

/// A value stored under a key.
#[derive(Debug, Clone)]
pub enum Value {
    Str(Vec<u8>),
    Hash(Box<HashMap<Blob, Blob>>),
    Set(Box<HashSet<Blob>>),
    ZSet(Box<ZSet>),
    List(Box<VecDeque<Blob>>),
}

impl Value {
    /// The name TYPE answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::List(_) => "list",
        }
    }

    /// The name OBJECT ENCODING answers (Kelvin has one encoding per type).
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) if s.len() <= 20 && kelvin_protocol::request::parse_i64(s).is_some() => {
                "int"
            }
            Value::Str(s) if s.len() <= 44 => "embstr",
            Value::Str(_) => "raw",
            Value::Hash(_) => "hashtable",
            Value::Set(_) => "hashtable",
            Value::ZSet(_) => "skiplist",
            Value::List(_) => "quicklist",
        }
    }

    /// True for a collection that became empty (Redis deletes those keys).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            Value::List(l) => l.is_empty(),
        }
    }

    /// Rough bytes held (`kelvin-cli cluster status`).
    pub fn approx_bytes(&self) -> usize {
        match self {
            Value::Str(s) => s.capacity(),
            Value::Hash(h) => h.iter().map(|(k, v)| k.len() + v.len() + 32).sum(),
            Value::Set(s) => s.iter().map(|m| m.len() + 24).sum(),
            Value::ZSet(z) => z.len() * 64,
            Value::List(l) => l.iter().map(|e| e.len() + 16).sum(),
        }
    }
}

/// What a key maps to: the value, its absolute expiry in Unix milliseconds (0 = none)
/// and its heat.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    pub expire_at: u64,
    pub heat: Heat,
}

impl Entry {
    pub fn new(value: Value) -> Self {
        Entry {
            value,
            expire_at: 0,
            heat: Heat::default(),
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at != 0 && self.expire_at <= now_ms
    }
}

/// [`Store::memory_breakdown`]'s figures, in bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryBreakdown {
    pub tables: usize,
    pub heap: usize,
}

/// The keys of one hash slot.
#[derive(Debug, Default)]
pub struct SlotTable {
    pub map: SlotMap,
    /// Keys in this slot with an expiry, so the sweep can skip slots without any.
    pub expires: usize,
    /// Bytes its keys hold ([`memory::entry_bytes`]): a migrated slot is dropped
    /// without a pass over its keys.
    pub used: usize,
}

/// Lowers the calling thread (a forked child: its process) to nice 19, for work nobody
/// waits for: writing a snapshot (measured on 2 cores, a snapshot child doubled the
/// latency of every request while it wrote at normal priority), freeing a migrated range
/// a batch at a time ([`free::drop_later`]). Still a share of the CPU under full load (nice,
/// not SCHED_IDLE), so the work ends.
pub fn background_priority() {
    // SAFETY: setpriority has no memory preconditions; on Linux PRIO_PROCESS with 0
    // names the calling thread. A failure leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Moves the calling process (a child of the server: the snapshot writer, the planner's
/// trainer) into a session of its own whose autogroup is at nice 19, so that it yields
/// cores to everything else on the machine, the kernel's threads included. With
/// autogroups (Linux's default) cores are shared between sessions first, and a session
/// whose runnable tasks are all at nice 19 or SCHED_IDLE still weighs as much as any:
/// such a child in the server's session, busy while the server slept between requests,
/// kept ksoftirqd (loopback packets under load) and the block layer's kworkers off a
/// core for up to 1.25 s (see `learning.rs`). Only async-signal-safe calls: a child
/// forked from the multi-threaded server runs it. Without autogroups nothing changes.
pub fn background_session() {
    #[cfg(target_os = "linux")]
    // SAFETY: setsid, open, write and close touch only this process's session and a
    // file descriptor it owns; the path and the bytes are static. setsid fails only for a
    // process group leader, which a forked or spawned child is not.
    unsafe {
        libc::setsid();
        let fd = libc::open(
            c"/proc/self/autogroup".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"19".as_ptr().cast(), 2);
            libc::close(fd);
        }
    }
}

/// One logical database: a table per slot plus counters.
#[derive(Debug)]
pub struct Keyspace {
    slots: Vec<SlotTable>,
    len: usize,
    expires: usize,
    /// Sum of [`memory::entry_bytes`] over the keys (see [`memory`]).
    used: usize,
    /// Next slot the active expiry sweep looks at.
    pub sweep_slot: usize,
    /// Log index of the last write to each slot: what WATCH compares against, the same
    /// on every replica (see [`Store::written_since`]).
    written: Vec<u64>,
    /// Set by a command while `new` keyspace events are on: keys it creates are kept in
    /// `new_keys` until its next notification publishes them (`cmd::Exec::notify`).
    pub track_new: bool,
    pub new_keys: Vec<Blob>,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace {
            slots: (0..SLOT_COUNT).map(|_| SlotTable::default()).collect(),
            len: 0,
            expires: 0,
            used: 0,
            sweep_slot: 0,
            written: vec![0; SLOT_COUNT],
            track_new: false,
            new_keys: Vec::new(),
        }
    }
}

/// A stable 64-bit hash of a key or member, used to order SCAN cursors within a slot or
/// collection. A fixed seed, so a cursor stays valid while the table grows or shrinks
/// and on every replica of the same build (foldhash's quality hash: std's SipHash with
/// fixed keys, hashed again for every key of a slot at each page of a migration's
/// drain, was 5% of the machine's cycles during a 1M-session drain).
pub fn scan_hash(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    const SCAN_STATE: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0);
    SCAN_STATE.hash_one(bytes)
}

/// Bits of [`scan_hash`] a SCAN cursor keeps: the cursor is `slot << 49 | hash >> 15`,
/// which fits the 63 bits clients parse as a signed integer.
pub const CURSOR_HASH_BITS: u32 = 49;

/// The part of a key's [`scan_hash`] that a keyspace SCAN cursor holds.
pub fn cursor_hash(key: &[u8]) -> u64 {
    scan_hash(key) >> (64 - CURSOR_HASH_BITS)
}

impl Keyspace {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn expires_count(&self) -> usize {
        self.expires
    }

    /// Bytes the keys hold, as [`memory::entry_bytes`] counts them.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Sets the counts after a command changed values in place ([`memory::Bracket`]):
    /// the database's, and those of the slots given.
    pub fn set_used_bytes(&mut self, used: usize, slots: &[(usize, usize)]) {
        self.used = used;
        for &(slot, used) in slots {
            self.slots[slot].used = used;
        }
    }

    pub fn slot(&self, slot: usize) -> &SlotTable {
        &self.slots[slot]
    }

    pub fn slot_mut(&mut self, slot: usize) -> &mut SlotTable {
        &mut self.slots[slot]
    }

    pub(super) fn table(&self, key: &[u8]) -> &SlotTable {
        &self.slots[key_slot(key) as usize]
    }

    /// The entry under `key`, expired or not.
    pub fn raw_get(&self, key: &[u8]) -> Option<&Entry> {
        self.table(key).map.get(key)
    }

    /// Where `key`'s entry is and the entry, for [`Keyspace::holds_at`].
    pub fn find(&self, key: &[u8]) -> Option<(Place, &Entry)> {
        let slot = key_slot(key) as usize;
        let (i, e) = self.slots[slot].map.find(key)?;
        Some((Place { slot, i }, e))
    }

    /// Whether `key`'s entry is still at `place` (from [`Keyspace::find`]; places move
    /// as keys are removed).
    pub fn holds_at(&self, place: Place, key: &[u8]) -> bool {
        self.slots
            .get(place.slot)
            .is_some_and(|t| t.map.holds_at(place.i, key))
    }

    /// The entry at `place`, whatever its key: check it with [`Keyspace::holds_at`].
    pub fn get_at_mut(&mut self, place: Place) -> Option<&mut Entry> {
        self.slots.get_mut(place.slot)?.map.get_index_mut(place.i)
    }

    pub fn raw_get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.slots[key_slot(key) as usize].map.get_mut(key)
    }

    /// The live entry under `key`: `None` if absent or expired at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.raw_get(key).filter(|e| !e.is_expired(now_ms))
    }

    pub fn get_mut(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Entry> {
        self.raw_get_mut(key).filter(|e| !e.is_expired(now_ms))
    }

    /// Stores `entry` under `key`, replacing what was there; returns the old entry.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        let has_ttl = entry.expire_at != 0;
        let added = memory::entry_bytes(key, &entry);
        let table = &mut self.slots[key_slot(key) as usize];
        let old = table.map.insert(key, entry);
        let had_ttl = old.as_ref().is_some_and(|e| e.expire_at != 0);
        let removed = old.as_ref().map_or(0, |e| memory::entry_bytes(key, e));
        self.used = (self.used + added).saturating_sub(removed);
        table.used = (table.used + added).saturating_sub(removed);
        if old.is_none() {
            self.len += 1;
            if self.track_new {
                self.new_keys.push(key.into());
            }
        }
        match (had_ttl, has_ttl) {
            (false, true) => {
                table.expires += 1;
                self.expires += 1;
            }
            (true, false) => {
                table.expires -= 1;
                self.expires -= 1;
            }
            _ => {}
        }
        old
    }

    /// Empties `slot` (a migrated slot the source drops), keeping the counters right;
    /// returns its table, for the caller to free off the apply path ([`drop_later`]:
    /// freeing tens of thousands of values held the group's apply, and every read
    /// waiting for the store's lock, for up to seconds).
    pub fn drop_slot(&mut self, slot: usize) -> SlotTable {
        let table = std::mem::take(&mut self.slots[slot]);
        self.used = self.used.saturating_sub(table.used);
        self.len -= table.map.len();
        self.expires -= table.expires;
        table
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let table = &mut self.slots[key_slot(key) as usize];
        let old = table.map.remove(key)?;
        let bytes = memory::entry_bytes(key, &old);
        self.used = self.used.saturating_sub(bytes);
        table.used = table.used.saturating_sub(bytes);
        self.len -= 1;
        if old.expire_at != 0 {
            table.expires -= 1;
            self.expires -= 1;
        }
        Some(old)
    }

    /// Sets or clears (`0`) the expiry of an existing key. Returns false if absent.
    pub fn set_expire(&mut self, key: &[u8], expire_at: u64) -> bool {
        let table = &mut self.slots[key_slot(key) as usize];
        let Some(entry) = table.map.get_mut(key) else {
            return false;
        };
        match (entry.expire_at != 0, expire_at != 0) {
            (false, true) => {
                table.expires += 1;
                self.expires += 1;
            }
            (true, false) => {
                table.expires -= 1;
                self.expires -= 1;
            }
            _ => {}
        }
        entry.expire_at = expire_at;
        true
    }

    /// Drops every key.
    pub fn clear(&mut self) {
        for table in &mut self.slots {
            table.map = SlotMap::default();
            table.expires = 0;
            table.used = 0;
        }
        self.len = 0;
        self.expires = 0;
        self.used = 0;
    }

    /// Keys of `slot` in cursor order from `from` on: at least `count` of them if there
    /// are, never splitting keys of equal [`cursor_hash`]. Returns the keys and the
    /// cursor hash to resume from (`None` when the slot is done).
    pub fn scan_slot(&self, slot: usize, from: u64, count: usize) -> (Vec<&[u8]>, Option<u64>) {
        let table = &self.slots[slot];
        if from == 0 && table.map.len() <= count {
            return (table.map.keys().map(|k| &k[..]).collect(), None);
        }
        let mut keyed: Vec<(u64, &[u8])> = table
            .map
            .keys()
            .map(|k| (cursor_hash(k), &k[..]))
            .filter(|(h, _)| *h >= from)
            .collect();
        keyed.sort_unstable_by_key(|(h, _)| *h);
        if keyed.len() <= count {
            return (keyed.into_iter().map(|(_, k)| k).collect(), None);
        }
        let mut end = count.max(1);
        while end < keyed.len() && keyed[end].0 == keyed[end - 1].0 {
            end += 1;
        }
        let next = keyed.get(end).map(|(h, _)| *h);
        keyed.truncate(end);
        (keyed.into_iter().map(|(_, k)| k).collect(), next)
    }

    /// Iterates over every key (for KEYS, RANDOMKEY, FLUSH accounting).
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.slots.iter().flat_map(|t| t.map.iter())
    }

    /// Rough bytes of keys and values (a walk over every key: for admin commands only).
    pub fn approx_bytes(&self) -> usize {
        self.iter()
            .map(|(k, e)| k.len() + e.value.approx_bytes())
            .sum()
    }
}

/// Where a key's entry is in its keyspace: its slot and its place in the slot's map.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    slot: usize,
    i: usize,
}

/// What [`Store::lookup_for_read`] found.
pub enum ReadLookup<'a> {
    Live(&'a mut Entry),
    Expired,
    Missing,
}

/// All databases plus the state that commands share: who watches which key, which
/// keyspace notifications are on.
#[derive(Debug)]
pub struct Store {
    dbs: Vec<Option<Box<Keyspace>>>,
    /// Log index of the entry being applied (the last applied one between entries).
    pub apply_index: u64,
    /// `now_ms` of the last applied entry: time as the log sees it never goes backwards.
    pub last_apply_ms: u64,
    /// Log index of the last FLUSHDB/FLUSHALL/SWAPDB of each database.
    flushed: [u64; DATABASES],
    /// Parsed `notify-keyspace-events` classes (see [`crate::notify`]).
    pub notify_flags: u32,
    /// `hll-sparse-max-bytes`: the size past which a sparse HyperLogLog turns dense (a
    /// node setting, as in Redis, where each replica applies its own).
    pub hll_sparse_max_bytes: usize,
    /// Source of randomness for SPOP, RANDOMKEY and friends. Seeded, so the Raft log can
    /// carry a seed per entry and replicas draw the same numbers.
    pub rng: LogRng,
    /// Keys deleted because they expired (INFO `expired_keys`).
    pub expired_keys: u64,
    /// Keys deleted to stay under `maxmemory` (INFO `evicted_keys`).
    pub evicted_keys: u64,
    /// Changes to keys (one per notified change, as Redis's `dirty`) since the group's
    /// last snapshot: INFO `rdb_changes_since_last_save`.
    pub changes_since_snapshot: u64,
    /// Reads that found their key, and that did not (INFO `keyspace_hits`/`_misses`).
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// Where a lease read's check found its key (database, place), for the read right
    /// behind it ([`Store::lookup_for_read`]), which then finds the entry without a
    /// second hash of the key and probe. Taken by the next lookup and checked against
    /// its key, so a stale one costs only the comparison.
    pub read_hint: Option<(usize, Place)>,
    /// A sample of the keys read lately, while the profiler is on: a migration's hottest
    /// keys at its handover ([`recent`]).
    pub recent: recent::RecentReads,
    /// Bumped by every list, sorted-set and generic write; connections blocked in BLPOP
    /// and friends wait on it.
    pub list_ready: ListReady,
    /// The migrations this group takes part in (sealed and importing slots, settled
    /// keys): changed only by applying log entries.
    pub migrations: crate::migrate::state::MigrationState,
    /// Loaded Lua scripts (replicated state: EVAL and SCRIPT LOAD add them at apply
    /// time, snapshots carry them) and the Lua state that runs them.
    pub scripts: crate::script::Scripts,
    /// Transactions across groups prepared here, the decisions this group records and
    /// the outcomes it remembers ([`crate::txn`]): changed only by applying log entries.
    pub tx: crate::txn::state::TxState,
    /// Bumped whenever a transaction finishes here: requests waiting for its locks run
    /// again.
    pub tx_released: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            dbs: (0..DATABASES).map(|_| None).collect(),
            apply_index: 0,
            last_apply_ms: 0,
            flushed: [0; DATABASES],
            notify_flags: 0,
            hll_sparse_max_bytes: crate::config::DEFAULT_HLL_SPARSE_MAX_BYTES,
            rng: LogRng::seeded(0x4b45_4c56_494e),
            expired_keys: 0,
            evicted_keys: 0,
            changes_since_snapshot: 0,
            keyspace_hits: 0,
            keyspace_misses: 0,
            read_hint: None,
            recent: Default::default(),
            list_ready: ListReady::default(),
            migrations: Default::default(),
            scripts: crate::script::Scripts::default(),
            tx: Default::default(),
            tx_released: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Store {
    /// Database `db` (created on first use; `db < DATABASES` is checked by SELECT).
    pub fn db(&mut self, db: usize) -> &mut Keyspace {
        self.dbs[db].get_or_insert_with(Box::default)
    }

    /// Database `db` if it was ever used.
    pub fn db_ref(&self, db: usize) -> Option<&Keyspace> {
        self.dbs.get(db).and_then(|d| d.as_deref())
    }

    /// Database `db` to read, or an empty one if it was never used (made once, shared:
    /// a read allocates nothing).
    pub fn db_view(&self, db: usize) -> &Keyspace {
        static EMPTY: std::sync::OnceLock<Keyspace> = std::sync::OnceLock::new();
        self.db_ref(db)
            .unwrap_or_else(|| EMPTY.get_or_init(Keyspace::default))
    }

    /// Indices and keyspaces of every database that was used.
    pub fn dbs(&self) -> impl Iterator<Item = (usize, &Keyspace)> {
        self.dbs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.as_deref().map(|k| (i, k)))
    }

    /// Looks `key` up for a read in one probe: a live entry (heat touched, counted as a
    /// hit), an expired one (counted as a miss; the caller queues its deletion), or none.
    pub fn lookup_for_read(&mut self, db: usize, key: &[u8], now_ms: u64) -> ReadLookup<'_> {
        let hint = self.read_hint.take();
        let ks = self.dbs[db].get_or_insert_with(Box::default);
        let found = match hint {
            Some((hinted, place)) if hinted == db && ks.holds_at(place, key) => {
                ks.get_at_mut(place)
            }
            _ => ks.raw_get_mut(key),
        };
        match found {
            Some(e) if e.is_expired(now_ms) => {
                self.keyspace_misses += 1;
                ReadLookup::Expired
            }
            Some(e) => {
                e.heat.touch(now_ms, false);
                self.keyspace_hits += 1;
                if heat::profiling() {
                    self.recent.note(db, key);
                }
                ReadLookup::Live(e)
            }
            None => {
                self.keyspace_misses += 1;
                ReadLookup::Missing
            }
        }
    }

    /// Records a write to `key` at the current log index, so an EXEC that watched it
    /// (or anything in its slot) since an earlier index aborts.
    pub fn signal_modified(&mut self, db: usize, key: &[u8]) {
        let index = self.apply_index;
        if let Some(ks) = self.dbs[db].as_deref_mut() {
            ks.written[key_slot(key) as usize] = index;
        }
    }

    /// Records a write to every key of `db` (all databases if `None`): FLUSHDB, FLUSHALL,
    /// SWAPDB.
    pub fn signal_flush(&mut self, db: Option<usize>) {
        for (i, f) in self.flushed.iter_mut().enumerate() {
            if db.is_none_or(|d| d == i) {
                *f = self.apply_index;
            }
        }
    }

    /// Was `slot` of `db` written after log index `since`? Slot granularity: a write to
    /// another key of the same slot also counts, which can only abort a transaction that
    /// could have run (clients retry aborted transactions), never run one that must not.
    pub fn written_since(&self, db: usize, slot: usize, since: u64) -> bool {
        if db >= DATABASES {
            return false;
        }
        self.flushed[db] > since
            || self
                .db_ref(db)
                .is_some_and(|ks| ks.written.get(slot).is_some_and(|&w| w > since))
    }

    /// Drops every database and loaded script, before a snapshot is installed. Watchers
    /// are signalled as by FLUSHALL; the rng, notification flags and INFO counters stay.
    /// Migration and transaction state go too (the snapshot carries its own).
    pub fn clear_all(&mut self) {
        self.signal_flush(None);
        self.dbs.iter_mut().for_each(|db| *db = None);
        self.migrations = Default::default();
        self.scripts.clear();
        self.tx = Default::default();
        self.tx_released.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Bytes the keys of every database hold (without the fixed tables).
    pub fn keys_bytes(&self) -> usize {
        self.dbs().map(|(_, ks)| ks.used_bytes()).sum()
    }

    /// Bytes the keyspace holds: every used database's keys and fixed tables (what
    /// `maxmemory` is compared with; see [`memory`]).
    pub fn used_memory(&self) -> usize {
        self.dbs()
            .map(|(_, ks)| ks.used + memory::KEYSPACE_BYTES)
            .sum()
    }

    /// Where the keyspace's bytes are (INFO's `mem_keyspace_*`): the slot tables as
    /// allocated (every bucket, used or not, holding the key if short, the value's
    /// header, the expiry and the heat), and by the store's own count what keys and
    /// values hold on the heap beyond their buckets. Walks the slot tables, not the keys.
    pub fn memory_breakdown(&self) -> MemoryBreakdown {
        let mut b = MemoryBreakdown::default();
        for (_, ks) in self.dbs() {
            b.tables += memory::KEYSPACE_BYTES
                + ks.slots
                    .iter()
                    .map(|t| t.map.allocation_size())
                    .sum::<usize>();
            b.heap += ks.used.saturating_sub(ks.len * memory::ENTRY_OVERHEAD);
        }
        b
    }

    /// Swaps two databases (SWAPDB).
    pub fn swap_dbs(&mut self, a: usize, b: usize) {
        self.dbs.swap(a, b);
    }
}

/// The store's random draws, reseeded by the state machine before every command it
/// applies (from the entry's index and the command's place), so that every replica
/// draws the same numbers. Seeding costs ~100 instructions, about a hundredth of a
/// whole SET, and most commands draw nothing: the generator is made from the seed at
/// the command's first draw (the same numbers as seeding it at once).
#[derive(Debug, Clone)]
pub struct LogRng {
    seed: u64,
    rng: Option<rand::rngs::SmallRng>,
}

impl LogRng {
    pub fn seeded(seed: u64) -> LogRng {
        LogRng { seed, rng: None }
    }

    /// Starts over from `seed` (the next draw is the first of its sequence).
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = None;
    }

    /// The generator, made from the seed at the first draw since [`LogRng::reseed`].
    pub fn get(&mut self) -> &mut rand::rngs::SmallRng {
        use rand::SeedableRng;
        let seed = self.seed;
        self.rng
            .get_or_insert_with(|| rand::rngs::SmallRng::seed_from_u64(seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Entry {
        Entry::new(Value::Str(v.as_bytes().to_vec()))
    }

    /// The place a lease check left is only a hint: after the keys around it moved, the
    /// read still finds each key's own entry (or none).
    #[test]
    fn a_stale_read_hint_finds_the_right_entry() {
        let value = |store: &mut Store, key: &[u8]| match store.lookup_for_read(0, key, 0) {
            ReadLookup::Live(e) => match &e.value {
                Value::Str(v) => Some(v.clone()),
                _ => None,
            },
            _ => None,
        };
        let mut store = Store::default();
        let ks = store.db(0);
        for k in ["{t}a", "{t}b", "{t}c"] {
            ks.insert(k.as_bytes(), s(k));
        }
        let (place, _) = ks.find(b"{t}a").unwrap();
        store.read_hint = Some((0, place));
        assert_eq!(value(&mut store, b"{t}a").as_deref(), Some(&b"{t}a"[..]));
        assert!(store.read_hint.is_none(), "taken by the lookup");
        // "{t}a" goes: another key takes its place.
        store.db(0).remove(b"{t}a");
        for key in ["{t}a", "{t}b", "{t}c"] {
            store.read_hint = Some((0, place));
            let want = (key != "{t}a").then(|| key.as_bytes().to_vec());
            assert_eq!(value(&mut store, key.as_bytes()), want, "{key}");
        }
        // A hint for another database is not used.
        store.read_hint = Some((1, place));
        assert_eq!(value(&mut store, b"{t}b").as_deref(), Some(&b"{t}b"[..]));
    }

    #[test]
    fn counts_follow_inserts_removes_and_ttls() {
        let mut ks = Keyspace::default();
        assert!(ks.insert(b"a", s("1")).is_none());
        assert!(ks.insert(b"a", s("2")).is_some());
        ks.insert(b"b", s("1"));
        assert_eq!(ks.len(), 2);
        assert!(ks.set_expire(b"a", 10));
        assert_eq!(ks.expires_count(), 1);
        assert!(ks.get(b"a", 9).is_some());
        assert!(ks.get(b"a", 10).is_none());
        ks.insert(b"a", s("3")); // plain SET drops the TTL
        assert_eq!(ks.expires_count(), 0);
        ks.set_expire(b"b", 5);
        ks.remove(b"b");
        assert_eq!((ks.len(), ks.expires_count()), (1, 0));
        assert_eq!(ks.slot(key_slot(b"b") as usize).expires, 0);
    }

    #[test]
    fn scan_slot_visits_every_key_once_in_pages() {
        let mut ks = Keyspace::default();
        // Keys sharing a hash tag share a slot.
        for i in 0..1000 {
            ks.insert(format!("{{tag}}:{i}").as_bytes(), s("v"));
        }
        let slot = key_slot(b"tag") as usize;
        let mut seen = std::collections::HashSet::new();
        let mut from = 0;
        loop {
            let (keys, next) = ks.scan_slot(slot, from, 10);
            for k in keys {
                assert!(seen.insert(k.to_vec()), "key returned twice");
            }
            match next {
                Some(h) => from = h,
                None => break,
            }
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn keys_inline_and_heap_behave_as_bytes() {
        let mut ks = Keyspace::default();
        let long = vec![b'x'; INLINE_KEY_LEN + 1];
        let exact = vec![b'y'; INLINE_KEY_LEN];
        for k in [&b""[..], b"a", &exact, &long] {
            ks.insert(k, s("v"));
            assert!(ks.raw_get(k).is_some());
        }
        assert!(!Key::from(&exact[..]).is_heap());
        assert!(Key::from(&long[..]).is_heap());
        assert_eq!(std::mem::size_of::<Key>(), 16);
        for k in [&b""[..], b"a", &exact, &long] {
            let key = Key::from(k);
            assert_eq!(key.as_bytes(), k);
            assert_eq!(key.clone().as_bytes(), k);
        }
        assert_eq!(ks.len(), 4);
    }

    #[test]
    fn the_profile_costs_an_entry_no_bytes() {
        // Eight bytes of heat fit in what the value and expiry leave of the entry's
        // alignment: an entry is as large as it was with four.
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }
}
