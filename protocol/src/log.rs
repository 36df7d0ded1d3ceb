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
            _ => Err(LogDecodeError("unknown command kind")),
        }
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
            ],
        };
        let mut out = Vec::new();
        batch.encode(&mut out);
        assert_eq!(
            LogBatch::decode_shared(&Bytes::from(out.clone())),
            Ok(batch.clone())
        );
        assert_eq!(LogBatch::decode(&out), Ok(batch));
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
