//! What a group's state machine knows of the migrations it takes part in: which of its
//! slots it has sealed (handed over to a target), which it is importing (and whether it
//! holds the proof of the source's seal), and which keys of an importing range are
//! settled, so that a late pull or push never resurrects or clobbers newer data.
//!
//! How it fits: this is part of the group's deterministic state (it will live in the
//! [`crate::store::Store`], change only by applying log entries, and go into snapshots),
//! so every replica of a group answers the same. Nothing here does I/O or reaches the
//! node: the apply path asks it questions ([`MigrationState::serve`],
//! [`MigrationState::accept_moved`]) and tells it what happened.
//!
//! ```text
//! source S, slots R          target T, slots R
//! ---------------------      ------------------------------------------------
//! seal(R -> T) at index i    import(R <- S)        serves nothing in R yet
//!   serves nothing in R        prove_seal(i, log ms)  serves R from here on:
//!   (redirects to T),          settle(key)            overwrite/delete, no pull
//!   answers pulls of R         accept_moved(key)      a pulled/pushed key: written
//! drop(R) once drained                                 only if not settled yet
//!                            finish(R)              R is T's own; settled set goes
//! ```
//!
//! There is never a moment when both groups accept a write for a slot: S stops at its
//! seal's apply; T starts only once the seal's index is in T's log, which is after it.

use std::collections::BTreeMap;

use hashbrown::{HashMap, HashSet};

/// Where the seal of a range was applied in the source's log: what the target must hold
/// before it serves the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealProof {
    pub index: u64,
    /// The source's log time at the seal (`LogBatch::now_ms`): keys moved later keep
    /// their absolute TTLs, and one expired by then never comes back at the target.
    pub log_ms: u64,
}

/// A slot's part in a migration, seen by one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRole {
    /// This group sealed the slot: it neither writes nor serves it; `target` does.
    Sealed { migration: u64, target: u64 },
    /// This group is importing the slot from `source`; it serves it once `proof` is
    /// known.
    Importing {
        migration: u64,
        source: u64,
        proof: Option<SealProof>,
    },
}

/// What a group may do with a request for a key of `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// An ordinary slot (its own, or one it does not know of).
    Normal,
    /// Sealed here: the request belongs to `target`.
    Moved { target: u64 },
    /// Importing, and the seal's proof is not in this log yet: wait.
    NotYet { source: u64 },
    /// Importing with the proof: served here; a key not settled must be pulled from
    /// `source` first unless the command replaces it whole.
    Importing { source: u64 },
}

/// Why a migration step was refused (the same on every replica).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error("slot {slot} is already in migration {migration}")]
    Busy { slot: u16, migration: u64 },
    #[error("no migration {0} here")]
    Unknown(u64),
    #[error("migration {0} has no slot here in that role")]
    WrongRole(u64),
    /// A transaction across groups holds keys of the slots: its commit must find them
    /// where they are (the driver tries the seal again).
    #[error("a transaction across groups holds keys of these slots")]
    Locked,
    /// Its IMPORT or SEAL came again after its FINISH here: a driver whose topology
    /// lags behind (a node back from a partition) must not start it over.
    #[error("migration {0} is finished here")]
    Finished(u64),
}

/// Finished migrations a group remembers, the latest (a driver retries a migration
/// only while it is in the topology: one that finished is out of it a moment later).
pub const FINISHED_KEPT: usize = 1024;

/// The most bytes a key arriving in parts may have (Redis's largest string, 512 MB, and
/// room for a collection's DUMP framing).
pub const MAX_STAGED_BYTES: u64 = 1 << 30;

/// A key arriving in parts (its payload too big for one log entry): what came so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub expire_at: u64,
    pub total: u64,
    pub bytes: Vec<u8>,
}

/// A settled key looked up without a copy of it: hashes as `(db, key.to_vec())` does
/// (a `u8`, then the bytes with their length), and equals it. A target checks every
/// request and every moved key against its settled keys (hashbrown's hasher, not std's
/// SipHash: at a million keys SipHash was a visible share of a drain's cycles).
#[derive(Hash)]
struct SettledRef<'a>(u8, &'a [u8]);

impl hashbrown::Equivalent<(u8, Vec<u8>)> for SettledRef<'_> {
    fn equivalent(&self, key: &(u8, Vec<u8>)) -> bool {
        self.0 == key.0 && self.1 == key.1.as_slice()
    }
}

/// The migration state of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationState {
    slots: BTreeMap<u16, SlotRole>,
    /// Keys of importing slots that hold their final word here (written or deleted at
    /// the target, or already moved): `(db, key)`, per slot (a migration's finish takes
    /// its slots' sets whole).
    settled: HashMap<u16, HashSet<(u8, Vec<u8>)>>,
    /// Keys of importing slots arriving in parts, `(db, key)`: their payload so far.
    parts: BTreeMap<(u8, Vec<u8>), Staged>,
    /// The migrations finished here, the oldest first (at most [`FINISHED_KEPT`]).
    finished: std::collections::VecDeque<u64>,
}

impl MigrationState {
    /// No slot is in a migration.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether a snapshot must hold this state: a slot in a migration, or a migration
    /// finished here that must not start over.
    pub fn worth_saving(&self) -> bool {
        !self.slots.is_empty() || !self.finished.is_empty()
    }

    /// Every slot in a migration, with its role.
    pub fn slots(&self) -> impl Iterator<Item = (u16, SlotRole)> + '_ {
        self.slots.iter().map(|(&s, &r)| (s, r))
    }

    pub fn role(&self, slot: u16) -> Option<SlotRole> {
        self.slots.get(&slot).copied()
    }

    fn claim(&mut self, slots: &[u16], role: SlotRole) -> Result<(), MigrationError> {
        let migration = match role {
            SlotRole::Sealed { migration, .. } | SlotRole::Importing { migration, .. } => migration,
        };
        if self.finished.contains(&migration) {
            return Err(MigrationError::Finished(migration));
        }
        if let Some((&slot, r)) = slots
            .iter()
            .find_map(|s| self.slots.get_key_value(s))
            .filter(|(_, r)| !same_migration(r, migration))
        {
            let (SlotRole::Sealed { migration, .. } | SlotRole::Importing { migration, .. }) = *r;
            return Err(MigrationError::Busy { slot, migration });
        }
        for &s in slots {
            self.slots.insert(s, role);
        }
        Ok(())
    }

    /// The source seals `slots` for `target`: from this entry on it serves none of them.
    pub fn seal(
        &mut self,
        migration: u64,
        slots: &[u16],
        target: u64,
    ) -> Result<(), MigrationError> {
        self.claim(slots, SlotRole::Sealed { migration, target })
    }

    /// The target starts importing `slots` from `source` (serving none until the proof).
    pub fn import(
        &mut self,
        migration: u64,
        slots: &[u16],
        source: u64,
    ) -> Result<(), MigrationError> {
        self.claim(
            slots,
            SlotRole::Importing {
                migration,
                source,
                proof: None,
            },
        )
    }

    /// The target records the source's seal: it serves the range from here on.
    pub fn prove_seal(&mut self, migration: u64, proof: SealProof) -> Result<(), MigrationError> {
        let mut found = false;
        for role in self.slots.values_mut() {
            if let SlotRole::Importing {
                migration: m,
                proof: p,
                ..
            } = role
            {
                if *m == migration {
                    *p = Some(proof);
                    found = true;
                }
            }
        }
        match found {
            true => Ok(()),
            false => Err(MigrationError::Unknown(migration)),
        }
    }

    /// What may be done with a request for `slot`.
    pub fn serve(&self, slot: u16) -> Serve {
        match self.slots.get(&slot) {
            None => Serve::Normal,
            Some(SlotRole::Sealed { target, .. }) => Serve::Moved { target: *target },
            Some(SlotRole::Importing {
                source,
                proof: None,
                ..
            }) => Serve::NotYet { source: *source },
            Some(SlotRole::Importing { source, .. }) => Serve::Importing { source: *source },
        }
    }

    /// Whether this group has a slot in `migration` (sealed or importing).
    pub fn takes_part(&self, migration: u64) -> bool {
        self.slots.values().any(|r| same_migration(r, migration))
    }

    /// Whether `slot` is in `migration` here (sealed or importing).
    pub fn in_migration(&self, slot: u16, migration: u64) -> bool {
        self.slots
            .get(&slot)
            .is_some_and(|r| same_migration(r, migration))
    }

    /// Whether this group's keyspace listings (DBSIZE, KEYS, SCAN, RANDOMKEY) show the
    /// keys it holds in `slot`: never those of a slot it sealed (they are the target's
    /// now, or still to be moved there), and with `imports` also not those of a slot it
    /// imports (the main port lists a migration's keys from both sides itself, see
    /// `conn::keyless`).
    pub fn listed(&self, slot: u16, imports: bool) -> bool {
        match self.slots.get(&slot) {
            None => true,
            Some(SlotRole::Sealed { .. }) => false,
            Some(SlotRole::Importing { .. }) => !imports,
        }
    }

    /// The slots [`MigrationState::listed`] leaves out.
    pub fn unlisted(&self, imports: bool) -> impl Iterator<Item = u16> + '_ {
        self.slots
            .keys()
            .copied()
            .filter(move |&s| !self.listed(s, imports))
    }

    /// Whether `key` (of an importing slot) holds its final word here.
    pub fn is_settled(&self, db: u8, key: &[u8]) -> bool {
        self.settled
            .get(&kelvin_protocol::key_slot(key))
            .is_some_and(|s| s.contains(&SettledRef(db, key)))
    }

    /// Marks `key` settled: `false` if it was already.
    fn mark_settled(&mut self, db: u8, key: &[u8]) -> bool {
        self.settled
            .entry(kelvin_protocol::key_slot(key))
            .or_default()
            .insert((db, key.to_vec()))
    }

    /// A write at the target that replaced or deleted `key` whole: a later pull or push
    /// of its old value must not land. Only keys of importing slots are tracked.
    pub fn settle(&mut self, db: u8, key: &[u8]) {
        let slot = kelvin_protocol::key_slot(key);
        if matches!(self.slots.get(&slot), Some(SlotRole::Importing { .. })) {
            self.mark_settled(db, key);
        }
    }

    /// A key moved from the source (pulled on a miss, pushed, drained): `true` if it may
    /// be written here (then it is settled, and a second copy is refused), `false` if the
    /// target already has the final word for it.
    pub fn accept_moved(&mut self, db: u8, key: &[u8]) -> bool {
        let slot = kelvin_protocol::key_slot(key);
        if !matches!(self.slots.get(&slot), Some(SlotRole::Importing { .. })) {
            return false;
        }
        self.mark_settled(db, key)
    }

    /// The migration is over on this side: its slots become ordinary (the target's own,
    /// or, at the source, gone), and the settled keys of its slots are forgotten.
    pub fn finish(&mut self, migration: u64) -> Result<Vec<u16>, MigrationError> {
        let slots: Vec<u16> = self
            .slots
            .iter()
            .filter(|(_, r)| same_migration(r, migration))
            .map(|(&s, _)| s)
            .collect();
        if slots.is_empty() {
            return Err(MigrationError::Unknown(migration));
        }
        // The settled names of the slots go whole, freed off the apply path (a pass
        // over a quarter of a million of them held the group's apply for a third of a
        // second); the parts by one look-up per key.
        let mut ending = vec![false; kelvin_protocol::SLOT_COUNT];
        let mut gone = Vec::new();
        for s in &slots {
            self.slots.remove(s);
            ending[usize::from(*s)] = true;
            gone.extend(self.settled.remove(s));
        }
        crate::store::drop_later(gone.into_iter().flatten());
        self.parts
            .retain(|(_, k), _| !ending[usize::from(kelvin_protocol::key_slot(k))]);
        if self.finished.len() == FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(migration);
        Ok(slots)
    }

    /// Adds bytes `offset..` of a key's payload of `total` bytes: the whole payload once
    /// its last part is in (the staging forgotten), `None` while parts are due. A first
    /// part (offset 0) starts the key over; any other must follow the bytes so far.
    pub fn add_part(
        &mut self,
        db: u8,
        key: &[u8],
        expire_at: u64,
        offset: u64,
        total: u64,
        chunk: &[u8],
    ) -> Result<Option<Staged>, String> {
        let end = offset.saturating_add(chunk.len() as u64);
        if total > MAX_STAGED_BYTES || end > total || chunk.is_empty() {
            return Err(format!(
                "bad part: bytes {offset}..{end} of {total} (at most {MAX_STAGED_BYTES})"
            ));
        }
        let id = (db, key.to_vec());
        if offset == 0 {
            self.parts.insert(
                id.clone(),
                Staged {
                    expire_at,
                    total,
                    bytes: Vec::new(),
                },
            );
        }
        let Some(staged) = self
            .parts
            .get_mut(&id)
            .filter(|s| s.bytes.len() as u64 == offset && s.total == total)
        else {
            let have = self.parts.get(&id).map_or(0, |s| s.bytes.len());
            return Err(format!(
                "part at offset {offset} does not follow the {have} bytes here; send the key again from its first part"
            ));
        };
        staged.bytes.extend_from_slice(chunk);
        if end < total {
            return Ok(None);
        }
        Ok(self.parts.remove(&id))
    }

    /// Forgets a key's parts (it was settled here meanwhile).
    pub fn drop_parts(&mut self, db: u8, key: &[u8]) {
        self.parts.remove(&(db, key.to_vec()));
    }
}

impl MigrationState {
    /// The state as bytes, for snapshots (little-endian):
    ///
    /// ```text
    /// nslots u32 | (slot u16, role u8: 1 sealed | 2 importing, migration u64, group u64,
    ///               has_proof u8, proof index u64, proof log_ms u64)*
    /// nsettled u32 | (db u8, key_len u32, key)*
    /// [nparts u32 | (db u8, key_len u32, key, expire_at u64, total u64, len u32, bytes)*
    ///  [nfinished u32 (1..=FINISHED_KEPT) | migration u64*]]
    /// ```
    /// (the parts when a key is arriving in parts or a migration finished here, the
    /// finished ones when there are: a state without either encodes as before they
    /// existed; a build from before the finished list cannot read a state with it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Cannot truncate: at most 16384 slots; settled keys are far fewer than 2^32.
        out.extend_from_slice(&(self.slots.len() as u32).to_le_bytes());
        for (&slot, role) in &self.slots {
            out.extend_from_slice(&slot.to_le_bytes());
            let (kind, migration, group, proof) = match *role {
                SlotRole::Sealed { migration, target } => (1u8, migration, target, None),
                SlotRole::Importing {
                    migration,
                    source,
                    proof,
                } => (2u8, migration, source, proof),
            };
            out.push(kind);
            out.extend_from_slice(&migration.to_le_bytes());
            out.extend_from_slice(&group.to_le_bytes());
            out.push(u8::from(proof.is_some()));
            let p = proof.unwrap_or(SealProof {
                index: 0,
                log_ms: 0,
            });
            out.extend_from_slice(&p.index.to_le_bytes());
            out.extend_from_slice(&p.log_ms.to_le_bytes());
        }
        let mut settled: Vec<&(u8, Vec<u8>)> = self.settled.values().flatten().collect();
        settled.sort_unstable();
        out.extend_from_slice(&(settled.len() as u32).to_le_bytes());
        for (db, key) in settled {
            out.push(*db);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        if !self.parts.is_empty() || !self.finished.is_empty() {
            out.extend_from_slice(&(self.parts.len() as u32).to_le_bytes());
            for ((db, key), staged) in &self.parts {
                out.push(*db);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&staged.expire_at.to_le_bytes());
                out.extend_from_slice(&staged.total.to_le_bytes());
                // Cannot truncate: staged bytes are at most MAX_STAGED_BYTES (1 GiB).
                out.extend_from_slice(&(staged.bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(&staged.bytes);
            }
        }
        if !self.finished.is_empty() {
            // Cannot truncate: at most FINISHED_KEPT.
            out.extend_from_slice(&(self.finished.len() as u32).to_le_bytes());
            for id in &self.finished {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// The state [`MigrationState::encode`] wrote; `Err` on anything else, never a panic.
    pub fn decode(mut buf: &[u8]) -> Result<MigrationState, &'static str> {
        fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
            if buf.len() < n {
                return Err("truncated migration state");
            }
            let (head, rest) = buf.split_at(n);
            *buf = rest;
            Ok(head)
        }
        let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let mut state = MigrationState::default();
        let n = u32_at(take(&mut buf, 4)?);
        for _ in 0..n {
            let b = take(&mut buf, 2 + 1 + 8 + 8 + 1 + 16)?;
            let slot = u16::from_le_bytes([b[0], b[1]]);
            if slot as usize >= kelvin_protocol::SLOT_COUNT {
                return Err("migration state: slot out of range");
            }
            let (migration, group) = (u64_at(&b[3..11]), u64_at(&b[11..19]));
            let proof = match b[19] {
                0 => None,
                1 => Some(SealProof {
                    index: u64_at(&b[20..28]),
                    log_ms: u64_at(&b[28..36]),
                }),
                _ => return Err("migration state: bad proof flag"),
            };
            let role = match b[2] {
                1 => SlotRole::Sealed {
                    migration,
                    target: group,
                },
                2 => SlotRole::Importing {
                    migration,
                    source: group,
                    proof,
                },
                _ => return Err("migration state: bad slot role"),
            };
            state.slots.insert(slot, role);
        }
        let n = u32_at(take(&mut buf, 4)?);
        for _ in 0..n {
            let db = take(&mut buf, 1)?[0];
            let len = u32_at(take(&mut buf, 4)?);
            let key = take(&mut buf, len)?.to_vec();
            state.mark_settled(db, &key);
        }
        if !buf.is_empty() {
            let n = u32_at(take(&mut buf, 4)?);
            for _ in 0..n {
                let db = take(&mut buf, 1)?[0];
                let len = u32_at(take(&mut buf, 4)?);
                let key = take(&mut buf, len)?.to_vec();
                let expire_at = u64_at(take(&mut buf, 8)?);
                let total = u64_at(take(&mut buf, 8)?);
                let len = u32_at(take(&mut buf, 4)?);
                let bytes = take(&mut buf, len)?.to_vec();
                if bytes.len() as u64 >= total {
                    return Err("migration state: a staged key longer than its total");
                }
                let staged = Staged {
                    expire_at,
                    total,
                    bytes,
                };
                state.parts.insert((db, key), staged);
            }
        }
        if !buf.is_empty() {
            let n = u32_at(take(&mut buf, 4)?);
            if n == 0 || n > FINISHED_KEPT {
                return Err("migration state: too many finished migrations");
            }
            for _ in 0..n {
                state.finished.push_back(u64_at(take(&mut buf, 8)?));
            }
        }
        if !buf.is_empty() {
            return Err("migration state: trailing bytes");
        }
        Ok(state)
    }
}

fn same_migration(role: &SlotRole, migration: u64) -> bool {
    matches!(role, SlotRole::Sealed { migration: m, .. } | SlotRole::Importing { migration: m, .. } if *m == migration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot_of(key: &[u8]) -> u16 {
        kelvin_protocol::key_slot(key)
    }

    #[test]
    fn the_target_serves_nothing_before_the_proof_and_the_source_nothing_after_its_seal() {
        let k = b"sess:1";
        let s = slot_of(k);
        let (mut source, mut target) = (MigrationState::default(), MigrationState::default());
        assert_eq!(source.serve(s), Serve::Normal);
        target.import(7, &[s], 1).unwrap();
        assert_eq!(target.serve(s), Serve::NotYet { source: 1 });
        source.seal(7, &[s], 2).unwrap();
        assert_eq!(source.serve(s), Serve::Moved { target: 2 });
        target
            .prove_seal(
                7,
                SealProof {
                    index: 40,
                    log_ms: 1000,
                },
            )
            .unwrap();
        assert_eq!(target.serve(s), Serve::Importing { source: 1 });
        // Another migration may not take the slot meanwhile.
        assert_eq!(
            target.import(8, &[s], 3),
            Err(MigrationError::Busy {
                slot: s,
                migration: 7
            })
        );
        assert_eq!(
            target.prove_seal(
                9,
                SealProof {
                    index: 1,
                    log_ms: 1
                }
            ),
            Err(MigrationError::Unknown(9))
        );
        assert_eq!(target.finish(7).unwrap(), vec![s]);
        assert_eq!(target.serve(s), Serve::Normal);
        assert!(target.is_empty());
    }

    #[test]
    fn a_late_copy_never_lands_on_a_settled_key() {
        let k = b"sess:9";
        let mut t = MigrationState::default();
        // Not importing: nothing is accepted or tracked.
        assert!(!t.accept_moved(0, k));
        t.settle(0, k);
        assert!(!t.is_settled(0, k));
        t.import(1, &[slot_of(k)], 5).unwrap();
        t.settle(0, k); // a SET or DEL at the target
        assert!(t.is_settled(0, k));
        assert!(!t.is_settled(0, b"sess:90"), "a longer key is another key");
        assert!(!t.is_settled(2, k), "another database is another key");
        assert!(!t.accept_moved(0, k));
        assert!(t.accept_moved(1, k), "another database is another key");
        assert!(!t.accept_moved(1, k), "a second copy is refused");
        t.finish(1).unwrap();
        assert!(!t.is_settled(0, k));
    }

    #[test]
    fn a_finished_migration_does_not_start_over() {
        let mut st = MigrationState::default();
        assert!(!st.worth_saving());
        st.import(7, &[1, 2], 3).unwrap();
        st.finish(7).unwrap();
        assert!(st.is_empty() && st.worth_saving());
        assert_eq!(st.import(7, &[1, 2], 3), Err(MigrationError::Finished(7)));
        assert_eq!(st.seal(7, &[1], 3), Err(MigrationError::Finished(7)));
        assert_eq!(
            st.import(7, &[1], 3).unwrap_err().to_string(),
            "migration 7 is finished here"
        );
        st.seal(8, &[1], 3).unwrap();
        // Through a snapshot's encoding, with no slot in a migration and with one.
        let mut only_finished = MigrationState::default();
        only_finished.finished.push_back(7);
        for state in [only_finished, st.clone()] {
            let bytes = state.encode();
            let back = MigrationState::decode(&bytes).unwrap();
            assert_eq!(back, state);
            assert_eq!(
                back.clone().import(7, &[5], 3),
                Err(MigrationError::Finished(7))
            );
            // Cut anywhere but where the optional sections begin: an error.
            for cut in 0..bytes.len() {
                if let Ok(shorter) = MigrationState::decode(&bytes[..cut]) {
                    assert!(shorter.finished.is_empty(), "cut at {cut}");
                }
            }
        }
        // The oldest are forgotten past FINISHED_KEPT.
        let mut many = MigrationState::default();
        for id in 0..FINISHED_KEPT as u64 + 2 {
            many.import(id + 100, &[9], 1).unwrap();
            many.finish(id + 100).unwrap();
        }
        assert_eq!(many.finished.len(), FINISHED_KEPT);
        assert_eq!(many.finished.front(), Some(&102));
        many.import(100, &[9], 1).unwrap();
        let mut bytes = many.encode();
        let n = bytes.len() - 8 * FINISHED_KEPT - 4;
        bytes[n..n + 4].copy_from_slice(&(FINISHED_KEPT as u32 + 1).to_le_bytes());
        assert!(MigrationState::decode(&bytes).is_err());
    }

    #[test]
    fn the_state_round_trips_through_its_encoding() {
        let mut st = MigrationState::default();
        assert_eq!(MigrationState::decode(&st.encode()), Ok(st.clone()));
        st.seal(1, &[3, 4], 9).unwrap();
        st.import(2, &[slot_of(b"k")], 8).unwrap();
        st.prove_seal(
            2,
            SealProof {
                index: 5,
                log_ms: 6,
            },
        )
        .unwrap();
        st.settle(3, b"k");
        let bytes = st.encode();
        assert_eq!(MigrationState::decode(&bytes), Ok(st));
        for cut in 0..bytes.len() {
            assert!(
                MigrationState::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_key_in_parts_lands_whole_in_order_and_travels_in_snapshots() {
        let k = b"big";
        let mut st = MigrationState::default();
        st.import(4, &[slot_of(k)], 1).unwrap();
        assert_eq!(st.add_part(0, k, 7, 0, 6, b"ab"), Ok(None));
        // Out of order, or a different total: refused, the staging kept.
        assert!(st.add_part(0, k, 7, 4, 6, b"ef").is_err());
        assert!(st.add_part(0, k, 7, 2, 9, b"cd").is_err());
        assert_eq!(st.add_part(0, k, 7, 2, 6, b"cd"), Ok(None));
        let plain = {
            let mut p = st.clone();
            p.drop_parts(0, k);
            p.encode()
        };
        let bytes = st.encode();
        assert_eq!(MigrationState::decode(&bytes), Ok(st.clone()));
        for cut in plain.len() + 1..bytes.len() {
            assert!(
                MigrationState::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let done = st.add_part(0, k, 7, 4, 6, b"ef").unwrap().unwrap();
        assert_eq!((done.expire_at, done.bytes), (7, b"abcdef".to_vec()));
        assert_eq!(
            st.encode(),
            plain,
            "nothing staged: encoded as before parts existed"
        );
        // A first part starts over; bounds are checked; FINISH forgets the staging.
        assert_eq!(st.add_part(0, k, 0, 0, 4, b"xy"), Ok(None));
        assert_eq!(st.add_part(0, k, 0, 0, 4, b"zz"), Ok(None));
        assert!(st.add_part(0, k, 0, 2, 4, b"abc").is_err());
        assert!(st.add_part(0, k, 0, 0, MAX_STAGED_BYTES + 1, b"a").is_err());
        st.finish(4).unwrap();
        let mut finished = MigrationState::default();
        finished.finished.push_back(4);
        assert_eq!(st, finished);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A whole overwrite at the target (SET, DEL): its value wins.
        Write(u8, u32),
        /// A copy of the source's value arrives (pull, push or drain).
        Copy(u8),
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MigrationState::decode(&bytes);
        }

        /// Whatever the interleaving of target writes and copies from the source, a key
        /// ends with the last target write if there was one, else the source's value.
        #[test]
        fn copies_and_writes_race_to_the_right_value(
            ops in proptest::collection::vec(
                prop_oneof![
                    (0u8..3, any::<u32>()).prop_map(|(k, v)| Op::Write(k, v)),
                    (0u8..3).prop_map(Op::Copy),
                ],
                0..40,
            )
        ) {
            let keys: Vec<Vec<u8>> = (0..3).map(|i| format!("{{t}}k{i}").into_bytes()).collect();
            let mut state = MigrationState::default();
            state.import(1, &[slot_of(&keys[0])], 9).unwrap();
            let source_value = |k: usize| 1_000_000 + k as u64;
            let mut store: BTreeMap<usize, Option<u64>> = BTreeMap::new();
            let mut last_write: BTreeMap<usize, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Write(k, v) => {
                        state.settle(0, &keys[k as usize]);
                        store.insert(k as usize, Some(v as u64));
                        last_write.insert(k as usize, v as u64);
                    }
                    Op::Copy(k) => {
                        if state.accept_moved(0, &keys[k as usize]) {
                            store.insert(k as usize, Some(source_value(k as usize)));
                        }
                    }
                }
            }
            for k in 0..3 {
                if let Some(v) = store.get(&k).copied().flatten() {
                    let want = last_write.get(&k).copied().unwrap_or(source_value(k));
                    prop_assert_eq!(v, want);
                }
            }
        }
    }
}
