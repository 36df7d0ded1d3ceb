//! The payload of a Raft log entry: what a write *is*, deterministically.
//!
//! How it fits: a connection turns the write commands of a pipeline into [`LogCommand`]s,
//! the group task packs the proposals that arrived together into one [`LogBatch`] (group
//! commit), and every replica applies the batch to its keyspace in log order. Everything a
//! command's effect depends on is in the entry or in the state before it: the time
//! (`now_ms`, decided once by the leader), the arguments and the database. Randomness
//! (SPOP...) is reseeded from the entry's index at apply time, so replicas draw the same
//! numbers. Replies are not part of the log: only the node that proposed a command writes
//! one, in the protocol version its client speaks.
//!
//! ```text
//! batch   := version u8 (=1) | now_ms u64 | count u32 | command*
//! command := 1 Single      | db u8 | argv
//!          | 2 Transaction | watch_since u64 | nwatch u32 | (db u8, key bytes)* | nitem u32 | item*
//!          | 3 ExpireKeys  | db u8 | nkeys u32 | key bytes*
//!          | 4 Migrate     | version u8 (1, or 2 for Part) | op     (live resharding)
//!          | 5 EvictKeys   | db u8 | nkeys u32 | key bytes*           (maxmemory)
//! op      := 1 Seal   migration u64 | group u64 (the target) | nslots u32 | slot u16*
//!          | 2 Import migration u64 | group u64 (the source) | nslots u32 | slot u16*
//!          | 3 Proof  migration u64 | seal index u64 | seal log ms u64
//!          | 4 Keys   migration u64 | db u8 | nkeys u32 | (key bytes, expire_at u64, payload bytes)*
//!          | 5 Finish migration u64
//!          | 6 Part   migration u64 | db u8 | key bytes | expire_at u64 | offset u64 |
//!                     total u64 | chunk bytes          (a payload too big for one entry)
//! item    := 1 Data db u8 argv | 2 Literal bytes      (a reply rendered by the proposer,
//!                                                     e.g. of a PING queued in MULTI)
//! argv    := argc u32 | bytes*
//! bytes   := len u32 | byte*
//! ```
//! All integers little-endian. Decoding checks every length against the input, so a
//! corrupt entry is an error, never a panic or an allocation larger than the entry.

use bytes::Bytes;

/// Version byte of the batch format.
pub const LOG_FORMAT_VERSION: u8 = 1;

/// Version byte of a [`LogCommand::Migrate`] op: a node that does not know it refuses
/// the entry with an error naming it, instead of misreading it.
pub const MIGRATE_OP_VERSION: u8 = 1;
/// Version byte of the ops that came later ([`MigrateOp::Part`]): a node that knows only
/// version 1 refuses them by their version.
pub const MIGRATE_OP_VERSION_2: u8 = 2;

/// A step of a migration, in the log of the group it concerns (see the server's
/// `migrate` module for what each does at apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateOp {
    /// The source: from this entry on it neither writes nor serves `slots`; group
    /// `target` does.
    Seal {
        migration: u64,
        target: u64,
        slots: Vec<u16>,
    },
    /// The target: it will serve `slots`, moved from group `source`, once it holds the
    /// seal's proof.
    Import {
        migration: u64,
        source: u64,
        slots: Vec<u16>,
    },
    /// The target: the source's seal is at `index` of its log, at log time `log_ms`.
    Proof {
        migration: u64,
        index: u64,
        log_ms: u64,
    },
    /// The target: keys copied from the source (pulled, pushed or drained), each written
    /// only if the target has no word of its own on it yet.
    Keys {
        migration: u64,
        db: u8,
        keys: Vec<MovedKey>,
    },
    /// Either side: the migration is over here.
    Finish { migration: u64 },
    /// The target: a part of a key whose payload is too big for one entry, bytes
    /// `offset..offset + chunk.len()` of `total`; the key lands with its last part.
    Part {
        migration: u64,
        db: u8,
        key: Bytes,
        expire_at: u64,
        offset: u64,
        total: u64,
        chunk: Bytes,
    },
}

/// One key as it moves between groups: its absolute expiry and its value serialized as
/// Redis's DUMP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedKey {
    pub key: Bytes,
    /// Unix ms, 0 = none.
    pub expire_at: u64,
    pub payload: Bytes,
}

/// One write, as replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogCommand {
    /// One data command against database `db`.
    Single { db: u8, argv: Vec<Bytes> },
    /// MULTI/EXEC: applied atomically, or not at all if a watched key's slot was written
    /// after log index `watch_since`.
    Transaction {
        watch_since: u64,
        watch: Vec<(u8, Bytes)>,
        items: Vec<TxItem>,
    },
    /// Keys the leader found expired (active sweep or a read): deleted if they are still
    /// expired at the batch's `now_ms`.
    ExpireKeys { db: u8, keys: Vec<Bytes> },
    /// Keys the leader chose to evict to stay under `maxmemory`: deleted if present.
    EvictKeys { db: u8, keys: Vec<Bytes> },
    /// A live-resharding step ([`MigrateOp`]).
    Migrate(MigrateOp),
}

/// One queued command of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxItem {
    Data { db: u8, argv: Vec<Bytes> },
    Literal(Bytes),
}

/// The payload of one Raft entry: commands from one or many clients, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogBatch {
    pub now_ms: u64,
    pub commands: Vec<LogCommand>,
}

/// A payload that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt log entry: {0}")]
pub struct LogDecodeError(pub &'static str);

impl LogBatch {
    /// Appends the encoding of the batch to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(LOG_FORMAT_VERSION);
        out.extend_from_slice(&self.now_ms.to_le_bytes());
        put_u32(out, self.commands.len());
        for cmd in &self.commands {
            cmd.encode(out);
        }
    }

    /// Decodes a batch, copying its arguments out.
    pub fn decode(buf: &[u8]) -> Result<LogBatch, LogDecodeError> {
        Self::decode_from(buf, None)
    }

    /// Decodes a batch whose bytes are shared: the arguments are slices of `buf`, no copy.
    pub fn decode_shared(buf: &Bytes) -> Result<LogBatch, LogDecodeError> {
        Self::decode_from(buf, Some(buf))
    }

    fn decode_from<'a>(
        mut buf: &'a [u8],
        shared: Option<&'a Bytes>,
    ) -> Result<LogBatch, LogDecodeError> {
        let r = &mut Reader {
            rest: &mut buf,
            shared,
        };
        if r.u8()? != LOG_FORMAT_VERSION {
            return Err(LogDecodeError("unknown format version"));
        }
        let now_ms = r.u64()?;
        let n = r.count(2)?;
        let mut commands = Vec::with_capacity(n);
        for _ in 0..n {
            commands.push(LogCommand::decode(r)?);
        }
        if !r.is_empty() {
            return Err(LogDecodeError("trailing bytes"));
        }
        Ok(LogBatch { now_ms, commands })
    }
}

impl LogCommand {
    /// Appends the encoding of one command to `out` (the batch header is written by
    /// [`LogBatch::encode`]; the group task concatenates commands as they arrive).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LogCommand::Single { db, argv } => {
                out.push(1);
                out.push(*db);
                put_argv(out, argv);
            }
            LogCommand::Transaction {
                watch_since,
                watch,
                items,
            } => {
                out.push(2);
                out.extend_from_slice(&watch_since.to_le_bytes());
                put_u32(out, watch.len());
                for (db, key) in watch {
                    out.push(*db);
                    put_bytes(out, key);
                }
                put_u32(out, items.len());
                for item in items {
                    match item {
                        TxItem::Data { db, argv } => {
                            out.push(1);
                            out.push(*db);
                            put_argv(out, argv);
                        }
                        TxItem::Literal(reply) => {
                            out.push(2);
                            put_bytes(out, reply);
                        }
                    }
                }
            }
            LogCommand::ExpireKeys { db, keys } => {
                out.push(3);
                out.push(*db);
                put_argv(out, keys);
            }
            LogCommand::EvictKeys { db, keys } => {
                out.push(5);
                out.push(*db);
                put_argv(out, keys);
            }
            LogCommand::Migrate(op) => {
                out.push(4);
                out.push(match op {
                    MigrateOp::Part { .. } => MIGRATE_OP_VERSION_2,
                    _ => MIGRATE_OP_VERSION,
                });
                op.encode(out);
            }
        }
    }

    fn decode(r: &mut Reader<'_, '_>) -> Result<LogCommand, LogDecodeError> {
        match r.u8()? {
            1 => {
                let db = r.u8()?;
                Ok(LogCommand::Single {
                    db,
                    argv: r.argv()?,
                })
            }
            2 => {
                let watch_since = r.u64()?;
                let n = r.count(5)?;
                let mut watch = Vec::with_capacity(n);
                for _ in 0..n {
                    let db = r.u8()?;
                    watch.push((db, r.bytes()?));
                }
                let n = r.count(5)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(match r.u8()? {
                        1 => {
                            let db = r.u8()?;
                            TxItem::Data {
                                db,
                                argv: r.argv()?,
                            }
                        }
                        2 => TxItem::Literal(r.bytes()?),
                        _ => return Err(LogDecodeError("unknown transaction item")),
                    });
                }
                Ok(LogCommand::Transaction {
                    watch_since,
                    watch,
                    items,
                })
            }
            3 => {
                let db = r.u8()?;
                Ok(LogCommand::ExpireKeys {
                    db,
                    keys: r.argv()?,
                })
            }
            5 => {
                let db = r.u8()?;
                Ok(LogCommand::EvictKeys {
                    db,
                    keys: r.argv()?,
                })
            }
            4 => match r.u8()? {
                MIGRATE_OP_VERSION | MIGRATE_OP_VERSION_2 => {
                    Ok(LogCommand::Migrate(MigrateOp::decode(r)?))
                }
                _ => Err(LogDecodeError("unsupported migration entry version")),
            },
            _ => Err(LogDecodeError("unknown command kind")),
        }
    }
}

impl MigrateOp {
    fn encode(&self, out: &mut Vec<u8>) {
        let slots = |out: &mut Vec<u8>, slots: &[u16]| {
            put_u32(out, slots.len());
            for s in slots {
                out.extend_from_slice(&s.to_le_bytes());
            }
        };
        match self {
            MigrateOp::Seal {
                migration,
                target,
                slots: list,
            } => {
                out.push(1);
                out.extend_from_slice(&migration.to_le_bytes());
                out.extend_from_slice(&target.to_le_bytes());
                slots(out, list);
            }
            MigrateOp::Import {
                migration,
                source,
                slots: list,
            } => {
                out.push(2);
                out.extend_from_slice(&migration.to_le_bytes());
                out.extend_from_slice(&source.to_le_bytes());
                slots(out, list);
            }
            MigrateOp::Proof {
                migration,
                index,
                log_ms,
            } => {
                out.push(3);
                out.extend_from_slice(&migration.to_le_bytes());
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&log_ms.to_le_bytes());
            }
            MigrateOp::Keys {
                migration,
                db,
                keys,
            } => {
                out.push(4);
                out.extend_from_slice(&migration.to_le_bytes());
                out.push(*db);
                put_u32(out, keys.len());
                for k in keys {
                    put_bytes(out, &k.key);
                    out.extend_from_slice(&k.expire_at.to_le_bytes());
                    put_bytes(out, &k.payload);
                }
            }
            MigrateOp::Finish { migration } => {
                out.push(5);
                out.extend_from_slice(&migration.to_le_bytes());
            }
            MigrateOp::Part {
                migration,
                db,
                key,
                expire_at,
                offset,
                total,
                chunk,
            } => {
                out.push(6);
                out.extend_from_slice(&migration.to_le_bytes());
                out.push(*db);
                put_bytes(out, key);
                out.extend_from_slice(&expire_at.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&total.to_le_bytes());
                put_bytes(out, chunk);
            }
        }
    }

    fn decode(r: &mut Reader<'_, '_>) -> Result<MigrateOp, LogDecodeError> {
        let slots = |r: &mut Reader<'_, '_>| -> Result<Vec<u16>, LogDecodeError> {
            let n = r.count(2)?;
            let mut slots = Vec::with_capacity(n);
            for _ in 0..n {
                let b = r.take(2)?;
                let slot = u16::from_le_bytes([b[0], b[1]]);
                if slot as usize >= crate::SLOT_COUNT {
                    return Err(LogDecodeError("slot out of range"));
                }
                slots.push(slot);
            }
            Ok(slots)
        };
        Ok(match r.u8()? {
            1 => MigrateOp::Seal {
                migration: r.u64()?,
                target: r.u64()?,
                slots: slots(r)?,
            },
            2 => MigrateOp::Import {
                migration: r.u64()?,
                source: r.u64()?,
                slots: slots(r)?,
            },
            3 => MigrateOp::Proof {
                migration: r.u64()?,
                index: r.u64()?,
                log_ms: r.u64()?,
            },
            4 => {
                let migration = r.u64()?;
                let db = r.u8()?;
                let n = r.count(4 + 8 + 4)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(MovedKey {
                        key: r.bytes()?,
                        expire_at: r.u64()?,
                        payload: r.bytes()?,
                    });
                }
                MigrateOp::Keys {
                    migration,
                    db,
                    keys,
                }
            }
            5 => MigrateOp::Finish {
                migration: r.u64()?,
            },
            6 => MigrateOp::Part {
                migration: r.u64()?,
                db: r.u8()?,
                key: r.bytes()?,
                expire_at: r.u64()?,
                offset: r.u64()?,
                total: r.u64()?,
                chunk: r.bytes()?,
            },
            _ => return Err(LogDecodeError("unknown migration op")),
        })
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Lengths come from requests bounded far below 4 GiB (proto-max-bulk-len, 512 MB).
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn put_argv(out: &mut Vec<u8>, argv: &[Bytes]) {
    put_u32(out, argv.len());
    for a in argv {
        put_bytes(out, a);
    }
}

/// A cursor over an encoded batch. With `shared`, byte strings are cut out of it
/// (reference-counted slices) instead of copied.
struct Reader<'a, 'b> {
    rest: &'b mut &'a [u8],
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogDecodeError> {
        if self.rest.len() < n {
            return Err(LogDecodeError("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        *self.rest = tail;
        Ok(head)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn u8(&mut self) -> Result<u8, LogDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, LogDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, LogDecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count of items each at least `min_item` bytes long: more than the input can
    /// hold is corrupt, which also bounds the allocation.
    fn count(&mut self, min_item: usize) -> Result<usize, LogDecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(LogDecodeError("count larger than the entry"));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Bytes, LogDecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        Ok(match self.shared {
            Some(base) => base.slice_ref(b),
            None => Bytes::copy_from_slice(b),
        })
    }

    fn argv(&mut self) -> Result<Vec<Bytes>, LogDecodeError> {
        let n = self.count(4)?;
        let mut argv = Vec::with_capacity(n);
        for _ in 0..n {
            argv.push(self.bytes()?);
        }
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn round_trip_every_kind() {
        let batch = LogBatch {
            now_ms: 1_700_000_000_123,
            commands: vec![
                LogCommand::Single {
                    db: 3,
                    argv: vec![b("SET"), b("k"), Bytes::from_static(b"\0\xff")],
                },
                LogCommand::Transaction {
                    watch_since: 42,
                    watch: vec![(0, b("w"))],
                    items: vec![
                        TxItem::Data {
                            db: 0,
                            argv: vec![b("INCR"), b("n")],
                        },
                        TxItem::Literal(b("+PONG\r\n")),
                    ],
                },
                LogCommand::ExpireKeys {
                    db: 15,
                    keys: vec![b("a"), b("")],
                },
                LogCommand::EvictKeys {
                    db: 2,
                    keys: vec![b("old"), b("older")],
                },
            ]
            .into_iter()
            .chain(migrate_ops().into_iter().map(LogCommand::Migrate))
            .collect(),
        };
        let mut out = Vec::new();
        batch.encode(&mut out);
        assert_eq!(
            LogBatch::decode_shared(&Bytes::from(out.clone())),
            Ok(batch.clone())
        );
        assert_eq!(LogBatch::decode(&out), Ok(batch));
    }

    fn migrate_ops() -> Vec<MigrateOp> {
        vec![
            MigrateOp::Seal {
                migration: 7,
                target: 3,
                slots: vec![0, 16383],
            },
            MigrateOp::Import {
                migration: 7,
                source: 1,
                slots: vec![5],
            },
            MigrateOp::Proof {
                migration: 7,
                index: 99,
                log_ms: 1_700_000_000_000,
            },
            MigrateOp::Keys {
                migration: 7,
                db: 2,
                keys: vec![MovedKey {
                    key: b("sess:1"),
                    expire_at: 5,
                    payload: Bytes::from_static(b"\x00\x01x\x0a\x00"),
                }],
            },
            MigrateOp::Finish { migration: 7 },
            MigrateOp::Part {
                migration: 7,
                db: 1,
                key: b("big"),
                expire_at: 0,
                offset: 4,
                total: 9,
                chunk: b("abcd"),
            },
        ]
    }

    #[test]
    fn migration_entries_refuse_what_they_do_not_know() {
        for op in migrate_ops() {
            let batch = LogBatch {
                now_ms: 1,
                commands: vec![LogCommand::Migrate(op)],
            };
            let mut out = Vec::new();
            batch.encode(&mut out);
            for cut in 0..out.len() {
                assert!(LogBatch::decode(&out[..cut]).is_err(), "cut at {cut}");
            }
            // The op version follows the batch header (13 bytes) and the kind byte.
            let mut newer = out.clone();
            newer[14] = MIGRATE_OP_VERSION_2 + 1;
            assert_eq!(
                LogBatch::decode(&newer),
                Err(LogDecodeError("unsupported migration entry version"))
            );
        }
        let bad_slot = LogCommand::Migrate(MigrateOp::Seal {
            migration: 1,
            target: 2,
            slots: vec![16384],
        });
        let mut out = Vec::new();
        LogBatch {
            now_ms: 0,
            commands: vec![bad_slot],
        }
        .encode(&mut out);
        assert_eq!(
            LogBatch::decode(&out),
            Err(LogDecodeError("slot out of range"))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let batch = LogBatch {
            now_ms: 1,
            commands: vec![LogCommand::Single {
                db: 0,
                argv: vec![b("SET"), b("key"), b("value")],
            }],
        };
        let mut out = Vec::new();
        batch.encode(&mut out);
        for cut in 0..out.len() {
            assert!(LogBatch::decode(&out[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = LogBatch::decode(&data);
        }

        #[test]
        fn singles_round_trip(now in any::<u64>(), cmds in proptest::collection::vec(
            (0u8..16, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5)), 0..10)) {
            let batch = LogBatch {
                now_ms: now,
                commands: cmds.into_iter().map(|(db, argv)| LogCommand::Single {
                    db,
                    argv: argv.into_iter().map(Bytes::from).collect(),
                }).collect(),
            };
            let mut out = Vec::new();
            batch.encode(&mut out);
            prop_assert_eq!(LogBatch::decode(&out), Ok(batch));
        }
    }
}
