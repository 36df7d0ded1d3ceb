//! The group's snapshots: when to take one, the forked child that writes it
//! ([`crate::bgsnap`]), recording it and compacting the log once it is written, and the
//! snapshot taken at once ([`GroupHandle::snapshot`]: a follower far behind, `SAVE`).

use super::*;

impl Group {
    /// Writes a snapshot of the keyspace at the applied index and compacts the log,
    /// when the log has grown enough or a follower needs one: in a forked child
    /// ([`crate::bgsnap`]), so that the group goes on applying meanwhile; recorded and
    /// the log compacted here once the child has written it.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), GroupError> {
        if DetachedSync::pending(&mut self.bgsnap_sync)? {
            return Ok(());
        }
        if let Some(pending) = self.bgsnap.as_mut() {
            return match pending.poll() {
                None => Ok(()),
                Some(written) => self.bgsnap_done(written),
            };
        }
        if self
            .bgsnap_failed
            .is_some_and(|t| t.elapsed() < BGSNAP_RETRY)
        {
            return Ok(());
        }
        let applied = self.applied();
        let snap_index = self
            .raw
            .store()
            .snapshot_file()
            .map(|(m, _)| m.index)
            .unwrap_or(0);
        // The log may grow by as much as the keyspace held at the last snapshot (at least
        // `snapshot_log_bytes`) before the next, as Redis rewrites its AOF once it has
        // doubled: a snapshot costs what the keyspace holds, so each logged byte pays for
        // about one snapshotted byte, however large the keyspace (a migration draining
        // 100 MB into a group took 4 snapshots of a growing keyspace at a fixed 64 MiB).
        let growth = self
            .raw
            .store()
            .log_bytes()
            .saturating_sub(self.log_bytes_after_snapshot);
        let mut limit = self.snapshot_log_bytes.max(self.snapshot_base_bytes);
        if growth >= limit && !self.store.lock().migrations.is_empty() {
            // A group taking part in a migration waits for its end (up to
            // MIGRATING_SNAPSHOT_LOG_BYTES): a target's log grows by what the drain
            // brings, and each snapshot meanwhile (a fork, a child writing a growing
            // keyspace, the log's compaction) held its requests for tens of ms, three
            // times in a 1M-session move; one snapshot after it writes the keys once.
            limit = limit.max(MIGRATING_SNAPSHOT_LOG_BYTES);
        }
        let grown = applied.saturating_sub(snap_index) >= SNAPSHOT_ENTRIES || growth >= limit;
        if applied <= snap_index || !(grown || self.raw.store().snapshot_requested()) {
            return Ok(());
        }
        self.raw.mut_store().take_snapshot_request();
        let meta = self.snapshot_meta(applied)?;
        let dir = self.raw.store().snapshot_dir();
        let store = self.store.lock();
        let base = store.keys_bytes() as u64;
        match crate::bgsnap::start(&store, meta, &dir, store.changes_since_snapshot, base) {
            Ok(p) => {
                drop(store);
                self.bgsnap = Some(p);
                self.log_bytes_at_snapshot_index = self.raw.store().log_bytes();
                // The log must be durable up to what the snapshot covers before the log
                // below it goes away (at the child's end, which waits for this): synced
                // beside the child, not in the group's turn (up to a second of a drain's
                // writing, a tenth of a second and more).
                self.bgsnap_sync = DetachedSync::start(self.raw.mut_store())?;
            }
            Err(cause) => {
                drop(store);
                // The log must be durable up to what the snapshot covers before the log
                // below it goes away.
                blocking(|| self.sync_in_turn())?;
                // No child: written here, as before (the group waits for it).
                tracing::warn!(group = self.group_id, %cause, "cannot fork for a snapshot; writing it in the group");
                blocking(|| self.snapshot_now(KEEP_ENTRIES))?;
            }
        }
        Ok(())
    }

    /// A snapshot file written (holding `changes` of the store's changes and
    /// `base_bytes` of keys): recorded as the newest, the log compacted below it, keeping
    /// `keep` entries.
    pub(super) fn snapshot_recorded(
        &mut self,
        meta: raft::eraftpb::SnapshotMetadata,
        path: &std::path::Path,
        keep: u64,
        changes: u64,
        base_bytes: u64,
    ) -> Result<(), GroupError> {
        let index = meta.index;
        // The log written since the snapshot's index (while a child wrote it) counts as
        // growth already.
        let since = self
            .raw
            .store()
            .log_bytes()
            .saturating_sub(self.log_bytes_at_snapshot_index);
        self.raw.mut_store().set_snapshot(meta, path)?;
        self.raw
            .mut_store()
            .compact(index.saturating_sub(keep).max(1))?;
        self.log_bytes_after_snapshot = self.raw.store().log_bytes().saturating_sub(since);
        self.snapshot_base_bytes = base_bytes;
        self.status.snapshots.fetch_add(1, Ordering::Relaxed);
        {
            let mut store = self.store.lock();
            store.changes_since_snapshot = store.changes_since_snapshot.saturating_sub(changes);
        }
        release_free_memory();
        Ok(())
    }

    /// The metadata of a snapshot at `index` (applied here): its term, the membership.
    pub(super) fn snapshot_meta(
        &self,
        index: u64,
    ) -> Result<raft::eraftpb::SnapshotMetadata, GroupError> {
        let mut meta = raft::eraftpb::SnapshotMetadata {
            index,
            term: self.raw.store().term(index)?,
            ..Default::default()
        };
        meta.set_conf_state(self.raw.store().conf_state().clone());
        Ok(meta)
    }

    /// The child of [`Self::bgsnap`] ended (`written`, or failed for `cause`): its
    /// snapshot recorded, or the next tried in [`BGSNAP_RETRY`].
    pub(super) fn bgsnap_done(&mut self, written: Result<(), String>) -> Result<(), GroupError> {
        let Some(p) = self.bgsnap.take() else {
            return Ok(());
        };
        // The log below the snapshot goes only once it is durable: the sync started at
        // the fork has ended ([`Self::maybe_snapshot`] waits for it without blocking;
        // `SAVE` and the like come here at once).
        while DetachedSync::pending(&mut self.bgsnap_sync)? {
            std::thread::sleep(Duration::from_millis(1));
        }
        match written {
            Ok(()) => self.record_bgsnap(p),
            Err(cause) => {
                tracing::warn!(group = self.group_id, %cause, "background snapshot failed; trying again later");
                self.bgsnap_failed = Some(Instant::now());
                Ok(())
            }
        }
    }

    /// A child's snapshot written: recorded as the newest (unless a newer one came
    /// meanwhile, from SAVE or the leader) and the log compacted below it.
    pub(super) fn record_bgsnap(&mut self, p: crate::bgsnap::Pending) -> Result<(), GroupError> {
        let index = p.meta.index;
        let newer = self
            .raw
            .store()
            .snapshot_file()
            .is_some_and(|(m, _)| m.index >= index);
        if newer {
            let _ = std::fs::remove_file(&p.path);
            return Ok(());
        }
        self.snapshot_recorded(
            p.meta.clone(),
            &p.path,
            KEEP_ENTRIES,
            p.changes,
            p.base_bytes,
        )?;
        tracing::info!(
            group = self.group_id,
            index,
            elapsed_ms = p.started.elapsed().as_millis() as u64,
            fork_us = p.fork_us,
            "snapshot written by a child, log compacted"
        );
        Ok(())
    }

    /// Writes a snapshot at the applied index (unless one exists there already) and
    /// compacts the log below it, keeping the last `keep` entries. Returns the index.
    pub(super) fn snapshot_now(&mut self, keep: u64) -> Result<u64, GroupError> {
        // A child's snapshot first (it may be of this very index: one file, one writer).
        while let Some(p) = self.bgsnap.as_mut() {
            match p.poll() {
                None => std::thread::sleep(Duration::from_millis(5)),
                Some(written) => self.bgsnap_done(written)?,
            }
        }
        let applied = self.applied();
        if self
            .raw
            .store()
            .snapshot_file()
            .is_some_and(|(m, _)| m.index >= applied)
        {
            self.raw
                .mut_store()
                .compact(applied.saturating_sub(keep).max(1))?;
            return Ok(applied);
        }
        // The log must be durable up to what the snapshot covers before the log below it
        // goes away.
        self.sync_in_turn()?;
        let started = Instant::now();
        let meta = self.snapshot_meta(applied)?;
        let dir = self.raw.store().snapshot_dir();
        // Nothing is applied until the snapshot is written: the counts now are its own.
        let (changes, base_bytes) = {
            let store = self.store.lock();
            (store.changes_since_snapshot, store.keys_bytes() as u64)
        };
        let mut writer = SnapshotWriter::create(&dir, &meta)?;
        let mut encoder = crate::snapshot::SnapshotEncoder::new();
        let mut chunk = Vec::new();
        loop {
            // The lock is taken per chunk, so reads go on meanwhile; nothing is applied
            // until the snapshot is written (this thread is the only one that applies).
            let more = encoder.encode_next(&self.store.lock(), &mut chunk)?;
            if !chunk.is_empty() {
                writer.write_chunk(&chunk)?;
            }
            if !more {
                break;
            }
        }
        let path = writer.finish()?;
        self.log_bytes_at_snapshot_index = self.raw.store().log_bytes();
        self.snapshot_recorded(meta, &path, keep, changes, base_bytes)?;
        tracing::info!(
            group = self.group_id,
            index = applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written, log compacted"
        );
        Ok(applied)
    }

    pub(super) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), GroupError> {
        let meta = snap.get_metadata().clone();
        let name = String::from_utf8_lossy(&snap.data).into_owned();
        let path = self.raw.store().snapshot_dir().join(&name);
        let keys = load_snapshot(&self.store, &path)?;
        self.store.lock().apply_index = meta.index;
        self.raw.mut_store().apply_snapshot(meta.clone(), &path)?;
        // Anything we proposed at or below the snapshot: we cannot tell its fate.
        let skipped: Vec<u64> = self.pending.range(..=meta.index).map(|(&i, _)| i).collect();
        for i in skipped {
            if let Some(p) = self.pending.remove(&i) {
                fail(p.waiters, ProposeError::Unknown);
            }
        }
        tracing::info!(
            group = self.group_id,
            index = meta.index,
            keys,
            "snapshot installed from the leader"
        );
        if self.group_id == crate::cluster::META_GROUP {
            self.node.topology_changed();
        }
        Ok(())
    }
}
