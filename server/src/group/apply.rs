//! Committed entries applied to the keyspace, in log order, on every replica: each
//! entry's commands through [`crate::machine`], the proposers' waiters answered with
//! the replies their commands wrote, configuration changes taken in.

use super::*;

/// Room a proposer's reply buffer starts with per command: enough for the usual write's
/// answer (`+OK`, an integer) without growing; a longer reply grows it. (A 4 KiB buffer
/// per waiter was a large allocation each, which in glibc's malloc also consolidates
/// the free lists: ~550 instructions per SET.)
const REPLY_BYTES_PER_COMMAND: usize = 32;

impl Group {
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), GroupError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut events = Vec::new();
        let mut answers: Vec<(Waiter, ProposalResult)> = Vec::new();
        let mut conf_changed = false;
        {
            let shared = self.store.clone();
            let mut store = shared.lock();
            for entry in entries {
                let index = entry.index;
                // Entries of ours below this one that were never applied lost their place.
                while let Some((&i, _)) = self.pending.first_key_value() {
                    if i >= index {
                        break;
                    }
                    if let Some(p) = self.pending.remove(&i) {
                        fail(p.waiters, ProposeError::Unknown);
                    }
                }
                let mine = match self.pending.remove(&index) {
                    Some(p) if p.context == entry.context => Some(p),
                    Some(p) => {
                        fail(p.waiters, ProposeError::Dropped);
                        None
                    }
                    None => None,
                };
                match entry.get_entry_type() {
                    EntryType::EntryNormal => {
                        if entry.data.is_empty() {
                            store.apply_index = index;
                            continue;
                        }
                        match mine {
                            None => {
                                let batch = LogBatch::decode_shared(&entry.data).map_err(|e| {
                                    GroupError::Entry {
                                        index,
                                        cause: e.to_string(),
                                    }
                                })?;
                                crate::machine::apply_batch(
                                    &mut store,
                                    index,
                                    &batch,
                                    &mut events,
                                    None,
                                );
                            }
                            Some(p) => {
                                // Our own entry: its context matched, so its data is
                                // exactly the commands we kept.
                                let mut writers: Vec<ReplyWriter> = p
                                    .waiters
                                    .iter()
                                    .map(|w| {
                                        ReplyWriter::with_capacity(
                                            w.version,
                                            REPLY_BYTES_PER_COMMAND * w.commands,
                                        )
                                    })
                                    .collect();
                                let owner: Vec<usize> = p
                                    .waiters
                                    .iter()
                                    .enumerate()
                                    .flat_map(|(i, w)| std::iter::repeat_n(i, w.commands))
                                    .collect();
                                // Counted from before the batch applies: a later
                                // command of this same entry that fills a list a
                                // blocked command waits on must wake it (a spurious
                                // wake only re-runs). Subscribed only for a command
                                // that blocked, so that writes find no receiver to
                                // wake while no client waits.
                                let writes = store.list_ready.writes();
                                let blocks = crate::machine::apply_batch(
                                    &mut store,
                                    index,
                                    &p.batch,
                                    &mut events,
                                    Some(crate::machine::Replies {
                                        writers: &mut writers,
                                        owner: &owner,
                                    }),
                                );
                                let mut blocks = blocks.into_iter();
                                let mut ready = None;
                                for (w, out) in p.waiters.into_iter().zip(writers) {
                                    let blocked = blocks.by_ref().take(w.commands).last().flatten();
                                    let blocked = blocked.map(|b| {
                                        let ready = ready.get_or_insert_with(|| {
                                            store.list_ready.subscribe_since(writes)
                                        });
                                        (b, ready.clone())
                                    });
                                    answers.push((
                                        w,
                                        Ok(Applied {
                                            out: out.buf,
                                            blocked,
                                        }),
                                    ));
                                }
                            }
                        }
                    }
                    EntryType::EntryConfChange => {
                        let cc = decode_pb::<ConfChange>(index, &entry.data)?;
                        let cs = self.raw.apply_conf_change(&cc)?;
                        step_down_if_removed(&mut self.raw, &cs, self.group_id);
                        self.raw.mut_store().set_conf_state(cs)?;
                        store.apply_index = index;
                        conf_changed = true;
                    }
                    EntryType::EntryConfChangeV2 => {
                        let cc = decode_pb::<ConfChangeV2>(index, &entry.data)?;
                        let cs = self.raw.apply_conf_change(&cc)?;
                        step_down_if_removed(&mut self.raw, &cs, self.group_id);
                        tracing::info!(group = self.group_id, index, conf = ?cs, "membership changed");
                        self.raw.mut_store().set_conf_state(cs)?;
                        store.apply_index = index;
                        conf_changed = true;
                    }
                }
            }
            self.status
                .migrating
                .store(!store.migrations.is_empty(), Ordering::Release);
            self.status
                .transacting
                .store(!store.tx.is_idle(), Ordering::Release);
        }
        for (w, result) in answers {
            if let Some(reply) = w.reply {
                let _ = reply.send(result);
            }
        }
        self.node.publish_events(&mut events);
        if conf_changed {
            self.publish_conf();
        }
        if self.group_id == crate::cluster::META_GROUP {
            // The topology may have changed: the node compares epochs and catches up.
            self.node.topology_changed();
        }
        Ok(())
    }
}
