//! Live-resharding negotiation: the messages the target's leader and the source's leader
//! exchange over the node-to-node channel, inside a [`crate::peer::PeerFrame::Migrate`]
//! frame. No I/O.
//!
//! Every body starts with its format version, so a node that does not know a version
//! answers with a [`MigrateMsg::Reject`] naming it instead of dropping the connection
//! ([`decode`] returns [`Decoded::Unsupported`]). Integers big-endian.
//!
//! ```text
//! body        = version:u8 (MIGRATE_VERSION) type:u8 migration:u64 payload
//! type 1 PlanRequest  source:u64 target:u64 nranges:u16 (first:u16 last:u16)*   T -> S
//! type 2 PlanOffer    keys:u64 bytes:u64 heat:u64                                S -> T
//!                     then per class critical, eager, lazy, skip: keys:u64 bytes:u64
//! type 3 Accept                                                                  T -> S
//! type 4 Reject       reason_len:u16 reason:[UTF-8]                              either way
//! type 5 PhaseAck     phase:u8 index:u64                                         either way
//! ```
//!
//! A migration id names one move of one slot range; every message carries it, so a late
//! answer to an earlier attempt is recognised and ignored.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The body format this node speaks.
pub const MIGRATE_VERSION: u8 = 1;
/// Most slot ranges one plan request may name (a range per slot at worst).
pub const MAX_PLAN_RANGES: usize = crate::SLOT_COUNT;
/// Longest rejection reason.
pub const MAX_REASON_BYTES: usize = 1024;

const T_PLAN_REQUEST: u8 = 1;
const T_PLAN_OFFER: u8 = 2;
const T_ACCEPT: u8 = 3;
const T_REJECT: u8 = 4;
const T_PHASE_ACK: u8 = 5;

/// Keys and bytes of one transfer class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCount {
    pub keys: u64,
    pub bytes: u64,
}

/// One negotiation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateMsg {
    /// The target's leader asks the source's for a plan for `ranges` (inclusive).
    PlanRequest {
        migration: u64,
        source: u64,
        target: u64,
        ranges: Vec<(u16, u16)>,
    },
    /// The source's plan: the range's profile (keys, bytes, summed heat) and what each
    /// class (critical, eager, lazy, skip) holds.
    PlanOffer {
        migration: u64,
        keys: u64,
        bytes: u64,
        heat: u64,
        classes: [ClassCount; 4],
    },
    Accept {
        migration: u64,
    },
    /// Refused: memory limit, already migrating, version... shown to the operator.
    Reject {
        migration: u64,
        reason: String,
    },
    /// A phase is in the sender's log at `index`.
    PhaseAck {
        migration: u64,
        phase: u8,
        index: u64,
    },
}

/// What [`decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Msg(MigrateMsg),
    /// A body of another format version (answer with a Reject naming it).
    Unsupported {
        version: u8,
        migration: Option<u64>,
    },
}

/// A body that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed migration message: {0}")]
pub struct MigrateDecodeError(pub &'static str);

impl MigrateMsg {
    pub fn migration(&self) -> u64 {
        match self {
            MigrateMsg::PlanRequest { migration, .. }
            | MigrateMsg::PlanOffer { migration, .. }
            | MigrateMsg::Accept { migration }
            | MigrateMsg::Reject { migration, .. }
            | MigrateMsg::PhaseAck { migration, .. } => *migration,
        }
    }

    /// The body, for a `PeerFrame::Migrate`. Ranges past [`MAX_PLAN_RANGES`] and reasons
    /// past [`MAX_REASON_BYTES`] are cut (never sent whole, never refused on decode).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(MIGRATE_VERSION);
        match self {
            MigrateMsg::PlanRequest {
                migration,
                source,
                target,
                ranges,
            } => {
                b.put_u8(T_PLAN_REQUEST);
                b.put_u64(*migration);
                b.put_u64(*source);
                b.put_u64(*target);
                let ranges = &ranges[..ranges.len().min(MAX_PLAN_RANGES)];
                // Cannot truncate: at most MAX_PLAN_RANGES (16384) ranges.
                b.put_u16(ranges.len() as u16);
                for &(a, z) in ranges {
                    b.put_u16(a);
                    b.put_u16(z);
                }
            }
            MigrateMsg::PlanOffer {
                migration,
                keys,
                bytes,
                heat,
                classes,
            } => {
                b.put_u8(T_PLAN_OFFER);
                b.put_u64(*migration);
                b.put_u64(*keys);
                b.put_u64(*bytes);
                b.put_u64(*heat);
                for c in classes {
                    b.put_u64(c.keys);
                    b.put_u64(c.bytes);
                }
            }
            MigrateMsg::Accept { migration } => {
                b.put_u8(T_ACCEPT);
                b.put_u64(*migration);
            }
            MigrateMsg::Reject { migration, reason } => {
                b.put_u8(T_REJECT);
                b.put_u64(*migration);
                let mut end = reason.len().min(MAX_REASON_BYTES);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                // Cannot truncate: at most MAX_REASON_BYTES.
                b.put_u16(end as u16);
                b.put_slice(&reason.as_bytes()[..end]);
            }
            MigrateMsg::PhaseAck {
                migration,
                phase,
                index,
            } => {
                b.put_u8(T_PHASE_ACK);
                b.put_u64(*migration);
                b.put_u8(*phase);
                b.put_u64(*index);
            }
        }
        b.freeze()
    }
}

fn need(buf: &[u8], n: usize, what: &'static str) -> Result<(), MigrateDecodeError> {
    if buf.len() < n {
        return Err(MigrateDecodeError(what));
    }
    Ok(())
}

/// Parses a body. Never panics; trailing bytes are an error.
pub fn decode(mut buf: &[u8]) -> Result<Decoded, MigrateDecodeError> {
    need(buf, 1, "empty")?;
    let version = buf.get_u8();
    if version != MIGRATE_VERSION {
        let migration =
            (buf.len() >= 9).then(|| u64::from_be_bytes(buf[1..9].try_into().unwrap_or_default()));
        return Ok(Decoded::Unsupported { version, migration });
    }
    need(buf, 9, "truncated header")?;
    let kind = buf.get_u8();
    let migration = buf.get_u64();
    let msg = match kind {
        T_PLAN_REQUEST => {
            need(buf, 18, "truncated plan request")?;
            let source = buf.get_u64();
            let target = buf.get_u64();
            let n = buf.get_u16() as usize;
            if n > MAX_PLAN_RANGES {
                return Err(MigrateDecodeError("too many ranges"));
            }
            need(buf, n * 4, "ranges run past the body")?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, z) = (buf.get_u16(), buf.get_u16());
                if a > z || z as usize >= crate::SLOT_COUNT {
                    return Err(MigrateDecodeError("bad slot range"));
                }
                ranges.push((a, z));
            }
            MigrateMsg::PlanRequest {
                migration,
                source,
                target,
                ranges,
            }
        }
        T_PLAN_OFFER => {
            need(buf, 8 * 3 + 16 * 4, "truncated plan offer")?;
            let (keys, bytes, heat) = (buf.get_u64(), buf.get_u64(), buf.get_u64());
            let mut classes = [ClassCount::default(); 4];
            for c in &mut classes {
                c.keys = buf.get_u64();
                c.bytes = buf.get_u64();
            }
            MigrateMsg::PlanOffer {
                migration,
                keys,
                bytes,
                heat,
                classes,
            }
        }
        T_ACCEPT => MigrateMsg::Accept { migration },
        T_REJECT => {
            need(buf, 2, "truncated reject")?;
            let n = buf.get_u16() as usize;
            if n > MAX_REASON_BYTES {
                return Err(MigrateDecodeError("reason too long"));
            }
            need(buf, n, "reason runs past the body")?;
            let reason = std::str::from_utf8(&buf[..n])
                .map_err(|_| MigrateDecodeError("reason is not UTF-8"))?
                .to_string();
            buf.advance(n);
            MigrateMsg::Reject { migration, reason }
        }
        T_PHASE_ACK => {
            need(buf, 9, "truncated phase ack")?;
            let phase = buf.get_u8();
            let index = buf.get_u64();
            MigrateMsg::PhaseAck {
                migration,
                phase,
                index,
            }
        }
        _ => return Err(MigrateDecodeError("unknown message type")),
    };
    if !buf.is_empty() {
        return Err(MigrateDecodeError("trailing bytes"));
    }
    Ok(Decoded::Msg(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<MigrateMsg> {
        vec![
            MigrateMsg::PlanRequest {
                migration: 7,
                source: 1,
                target: 3,
                ranges: vec![(0, 100), (16000, 16383)],
            },
            MigrateMsg::PlanOffer {
                migration: 7,
                keys: 50_000,
                bytes: 51_200_000,
                heat: 260_000,
                classes: [
                    ClassCount {
                        keys: 10,
                        bytes: 1000,
                    },
                    ClassCount {
                        keys: 4000,
                        bytes: 5_000_000,
                    },
                    ClassCount {
                        keys: 45_000,
                        bytes: 46_000_000,
                    },
                    ClassCount {
                        keys: 990,
                        bytes: 199_000,
                    },
                ],
            },
            MigrateMsg::Accept { migration: 7 },
            MigrateMsg::Reject {
                migration: 7,
                reason: "target over its memory limit".into(),
            },
            MigrateMsg::PhaseAck {
                migration: 7,
                phase: 3,
                index: 1234,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(decode(&m.encode()), Ok(Decoded::Msg(m.clone())), "{m:?}");
            assert_eq!(m.migration(), 7);
        }
    }

    #[test]
    fn another_version_is_reported_not_misread() {
        let mut body = MigrateMsg::Accept { migration: 9 }.encode().to_vec();
        body[0] = MIGRATE_VERSION + 1;
        assert_eq!(
            decode(&body),
            Ok(Decoded::Unsupported {
                version: MIGRATE_VERSION + 1,
                migration: Some(9)
            })
        );
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(decode(&[]).is_err());
        let mut req = samples()[0].encode().to_vec();
        req.push(0);
        assert_eq!(decode(&req), Err(MigrateDecodeError("trailing bytes")));
        let bad_range = MigrateMsg::PlanRequest {
            migration: 1,
            source: 1,
            target: 2,
            ranges: vec![(5, 4)],
        };
        assert_eq!(
            decode(&bad_range.encode()),
            Err(MigrateDecodeError("bad slot range"))
        );
        // A long reason is cut at a character boundary, and still decodes.
        let long = MigrateMsg::Reject {
            migration: 1,
            reason: "é".repeat(MAX_REASON_BYTES),
        };
        let Ok(Decoded::Msg(MigrateMsg::Reject { reason, .. })) = decode(&long.encode()) else {
            panic!("a cut reason decodes");
        };
        assert_eq!(reason.len(), MAX_REASON_BYTES);
    }

    proptest! {
        #[test]
        fn decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&body);
        }

        #[test]
        fn truncations_never_decode_as_something_else(cut in 0usize..80) {
            for m in samples() {
                let body = m.encode();
                if cut < body.len() {
                    prop_assert!(decode(&body[..cut]).is_err());
                }
            }
        }
    }
}
