//! Node-to-node frames: the handshake, Raft messages and snapshot chunks, with no I/O.
//!
//! How it fits: the server's peer transport (`kelvin-server`'s `transport` module) owns the
//! sockets; it encodes [`PeerFrame`]s into one buffer per batch with [`encode`] and cuts
//! frames out of its read buffer with [`decode`]. Raft messages travel as opaque bytes
//! (protobuf-encoded `eraftpb::Message`), so this crate stays independent of raft-rs.
//!
//! Every frame is length-prefixed; all integers are big-endian unless noted:
//!
//! ```text
//! frame         = len:u32 kind:u8 body          len counts kind + body, 1..=MAX_PEER_FRAME_BYTES
//! kind 1 Challenge     nonce:[32]                                   acceptor -> connector
//! kind 2 Hello         node_id:u64 nonce:[32] proof:[32]            connector -> acceptor
//! kind 3 Welcome       node_id:u64 proof:[32]                       acceptor -> connector
//! kind 4 Raft          group:u64 message:[rest]                     after the handshake
//! kind 5 SnapshotChunk group:u64 offset:u64 last:u8(0|1)
//!                      name_len:u16 name:[name_len, UTF-8] data:[rest]
//! kind 6 Publish       channel_len:u32 channel message:[rest]
//! kind 7 Migrate       body:[rest]   a versioned resharding message (crate::migrate)
//!
//! Hello.proof   = SHA-256(secret || Challenge.nonce || connector node_id as u64 LE || "kelvin-peer-hello")
//! Welcome.proof = SHA-256(secret || Hello.nonce     || acceptor  node_id as u64 LE || "kelvin-peer-welcome")
//! ```
//!
//! The two proofs carry different labels so that one side's proof can never be replayed
//! as the other's. Compare proofs with [`proofs_equal`], which takes the same time
//! whatever the inputs.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio_util::codec::{Decoder, Encoder};

/// The largest frame accepted or produced, counting the kind byte and the body (not the
/// 4-byte length prefix). Bounds the memory one peer connection can make us buffer; a
/// Raft append batch or a snapshot chunk must fit.
pub const MAX_PEER_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Length of the handshake nonces.
pub const NONCE_LEN: usize = 32;

/// Length of a handshake proof (a SHA-256 digest).
pub const PROOF_LEN: usize = 32;

/// Length of the length prefix in front of every frame.
pub const LEN_PREFIX_BYTES: usize = 4;

/// Domain label appended to the connector's proof.
const HELLO_LABEL: &[u8] = b"kelvin-peer-hello";
/// Domain label appended to the acceptor's proof.
const WELCOME_LABEL: &[u8] = b"kelvin-peer-welcome";

const KIND_CHALLENGE: u8 = 1;
const KIND_HELLO: u8 = 2;
const KIND_WELCOME: u8 = 3;
const KIND_RAFT: u8 = 4;
const KIND_SNAPSHOT_CHUNK: u8 = 5;
const KIND_PUBLISH: u8 = 6;
const KIND_MIGRATE: u8 = 7;

/// One node-to-node frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    /// Sent by the acceptor right after accepting: the nonce the connector must prove over.
    Challenge { nonce: [u8; NONCE_LEN] },
    /// The connector's answer: who it is, its proof, and its own nonce for the acceptor
    /// to prove over in turn.
    Hello {
        node_id: u64,
        nonce: [u8; NONCE_LEN],
        proof: [u8; PROOF_LEN],
    },
    /// The acceptor's proof over the connector's nonce; the connection is authenticated
    /// both ways once this is checked.
    Welcome {
        node_id: u64,
        proof: [u8; PROOF_LEN],
    },
    /// A protobuf-encoded `raft::eraftpb::Message` for Raft group `group`.
    Raft { group: u64, message: Bytes },
    /// A piece of snapshot file `name` for group `group`, starting at byte `offset`;
    /// `last` marks the final piece.
    SnapshotChunk {
        group: u64,
        name: String,
        offset: u64,
        data: Bytes,
        last: bool,
    },
    /// A PUBLISH made on the sending node, for this node's subscribers (Redis Cluster
    /// sends every PUBLISH to every node).
    Publish { channel: Bytes, message: Bytes },
    /// A live-resharding negotiation message; the body is [`crate::migrate::MigrateMsg`]'s
    /// encoding, versioned on its own.
    Migrate { body: Bytes },
}

impl PeerFrame {
    /// The frame's name, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            PeerFrame::Challenge { .. } => "Challenge",
            PeerFrame::Hello { .. } => "Hello",
            PeerFrame::Welcome { .. } => "Welcome",
            PeerFrame::Raft { .. } => "Raft",
            PeerFrame::SnapshotChunk { .. } => "SnapshotChunk",
            PeerFrame::Publish { .. } => "Publish",
            PeerFrame::Migrate { .. } => "Migrate",
        }
    }

    fn kind_byte(&self) -> u8 {
        match self {
            PeerFrame::Challenge { .. } => KIND_CHALLENGE,
            PeerFrame::Hello { .. } => KIND_HELLO,
            PeerFrame::Welcome { .. } => KIND_WELCOME,
            PeerFrame::Raft { .. } => KIND_RAFT,
            PeerFrame::SnapshotChunk { .. } => KIND_SNAPSHOT_CHUNK,
            PeerFrame::Publish { .. } => KIND_PUBLISH,
            PeerFrame::Migrate { .. } => KIND_MIGRATE,
        }
    }

    /// Bytes of kind + body, i.e. the value of the length prefix.
    fn framed_len(&self) -> usize {
        1 + match self {
            PeerFrame::Challenge { .. } => NONCE_LEN,
            PeerFrame::Hello { .. } => 8 + NONCE_LEN + PROOF_LEN,
            PeerFrame::Welcome { .. } => 8 + PROOF_LEN,
            PeerFrame::Raft { message, .. } => 8 + message.len(),
            PeerFrame::SnapshotChunk { name, data, .. } => 8 + 8 + 1 + 2 + name.len() + data.len(),
            PeerFrame::Publish { channel, message } => 4 + channel.len() + message.len(),
            PeerFrame::Migrate { body } => body.len(),
        }
    }
}

/// Why a frame could not be encoded or decoded. Any of these ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerFrameError {
    #[error("peer frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty peer frame (no kind byte)")]
    Empty,
    #[error("unknown peer frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        kind: &'static str,
        reason: &'static str,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn malformed(kind: &'static str, reason: &'static str) -> PeerFrameError {
    PeerFrameError::Malformed { kind, reason }
}

/// Appends `frame` to `dst`, length prefix included.
///
/// Fails, leaving `dst` untouched, if the frame would exceed [`MAX_PEER_FRAME_BYTES`] or a
/// snapshot name is longer than `u16::MAX` bytes.
pub fn encode(frame: &PeerFrame, dst: &mut BytesMut) -> Result<(), PeerFrameError> {
    let len = frame.framed_len();
    if len > MAX_PEER_FRAME_BYTES {
        return Err(PeerFrameError::TooLarge {
            len,
            max: MAX_PEER_FRAME_BYTES,
        });
    }
    if let PeerFrame::SnapshotChunk { name, .. } = frame {
        if name.len() > usize::from(u16::MAX) {
            return Err(malformed("SnapshotChunk", "name longer than 65535 bytes"));
        }
    }
    dst.reserve(LEN_PREFIX_BYTES + len);
    // Cannot truncate: len <= MAX_PEER_FRAME_BYTES < u32::MAX.
    dst.put_u32(len as u32);
    dst.put_u8(frame.kind_byte());
    match frame {
        PeerFrame::Challenge { nonce } => dst.put_slice(nonce),
        PeerFrame::Hello {
            node_id,
            nonce,
            proof,
        } => {
            dst.put_u64(*node_id);
            dst.put_slice(nonce);
            dst.put_slice(proof);
        }
        PeerFrame::Welcome { node_id, proof } => {
            dst.put_u64(*node_id);
            dst.put_slice(proof);
        }
        PeerFrame::Raft { group, message } => {
            dst.put_u64(*group);
            dst.put_slice(message);
        }
        PeerFrame::SnapshotChunk {
            group,
            name,
            offset,
            data,
            last,
        } => {
            dst.put_u64(*group);
            dst.put_u64(*offset);
            dst.put_u8(u8::from(*last));
            // Cannot truncate: checked against u16::MAX above.
            dst.put_u16(name.len() as u16);
            dst.put_slice(name.as_bytes());
            dst.put_slice(data);
        }
        PeerFrame::Publish { channel, message } => {
            // Cannot truncate: the whole frame is at most MAX_PEER_FRAME_BYTES.
            dst.put_u32(channel.len() as u32);
            dst.put_slice(channel);
            dst.put_slice(message);
        }
        PeerFrame::Migrate { body } => dst.put_slice(body),
    }
    Ok(())
}

/// Cuts one frame off the front of `src`.
///
/// Returns `Ok(None)` and consumes nothing when `src` holds less than a whole frame;
/// `Err` when the declared length is zero or over [`MAX_PEER_FRAME_BYTES`] (checked before
/// waiting for the body), the kind is unknown, or the body does not parse. Never panics.
pub fn decode(src: &mut BytesMut) -> Result<Option<PeerFrame>, PeerFrameError> {
    decode_with_limit(src, MAX_PEER_FRAME_BYTES)
}

/// The largest handshake frame (a Hello: kind + node id + nonce + proof). Before a peer
/// has authenticated, the transport decodes with this limit so a stranger cannot make it
/// buffer a large declared frame.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 1 + 8 + NONCE_LEN + PROOF_LEN;

/// [`decode`] with a smaller bound than [`MAX_PEER_FRAME_BYTES`] (larger values are
/// clamped to it).
pub fn decode_with_limit(
    src: &mut BytesMut,
    max: usize,
) -> Result<Option<PeerFrame>, PeerFrameError> {
    let max = max.min(MAX_PEER_FRAME_BYTES);
    if src.len() < LEN_PREFIX_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if len == 0 {
        return Err(PeerFrameError::Empty);
    }
    if len > max {
        return Err(PeerFrameError::TooLarge { len, max });
    }
    if src.len() < LEN_PREFIX_BYTES + len {
        src.reserve(LEN_PREFIX_BYTES + len - src.len());
        return Ok(None);
    }
    src.advance(LEN_PREFIX_BYTES);
    let mut body = src.split_to(len);
    let kind = body.get_u8();
    parse_body(kind, body).map(Some)
}

fn take_array<const N: usize>(body: &mut BytesMut) -> [u8; N] {
    let mut out = [0u8; N];
    body.copy_to_slice(&mut out);
    out
}

fn parse_body(kind: u8, mut body: BytesMut) -> Result<PeerFrame, PeerFrameError> {
    match kind {
        KIND_CHALLENGE => {
            if body.len() != NONCE_LEN {
                return Err(malformed("Challenge", "body is not 32 bytes"));
            }
            Ok(PeerFrame::Challenge {
                nonce: take_array(&mut body),
            })
        }
        KIND_HELLO => {
            if body.len() != 8 + NONCE_LEN + PROOF_LEN {
                return Err(malformed("Hello", "body is not 72 bytes"));
            }
            let node_id = body.get_u64();
            let nonce = take_array(&mut body);
            let proof = take_array(&mut body);
            Ok(PeerFrame::Hello {
                node_id,
                nonce,
                proof,
            })
        }
        KIND_WELCOME => {
            if body.len() != 8 + PROOF_LEN {
                return Err(malformed("Welcome", "body is not 40 bytes"));
            }
            let node_id = body.get_u64();
            let proof = take_array(&mut body);
            Ok(PeerFrame::Welcome { node_id, proof })
        }
        KIND_RAFT => {
            if body.len() < 8 {
                return Err(malformed("Raft", "missing group"));
            }
            let group = body.get_u64();
            Ok(PeerFrame::Raft {
                group,
                message: body.freeze(),
            })
        }
        KIND_SNAPSHOT_CHUNK => {
            const HEADER: usize = 8 + 8 + 1 + 2;
            if body.len() < HEADER {
                return Err(malformed("SnapshotChunk", "truncated header"));
            }
            let group = body.get_u64();
            let offset = body.get_u64();
            let last = match body.get_u8() {
                0 => false,
                1 => true,
                _ => return Err(malformed("SnapshotChunk", "last flag is not 0 or 1")),
            };
            let name_len = usize::from(body.get_u16());
            if body.len() < name_len {
                return Err(malformed("SnapshotChunk", "name runs past the frame"));
            }
            let name = String::from_utf8(body.split_to(name_len).to_vec())
                .map_err(|_| malformed("SnapshotChunk", "name is not UTF-8"))?;
            Ok(PeerFrame::SnapshotChunk {
                group,
                name,
                offset,
                data: body.freeze(),
                last,
            })
        }
        KIND_MIGRATE => Ok(PeerFrame::Migrate {
            body: body.freeze(),
        }),
        KIND_PUBLISH => {
            if body.len() < 4 {
                return Err(malformed("Publish", "truncated header"));
            }
            let channel_len = body.get_u32() as usize;
            if body.len() < channel_len {
                return Err(malformed("Publish", "channel runs past the frame"));
            }
            let channel = body.split_to(channel_len).freeze();
            Ok(PeerFrame::Publish {
                channel,
                message: body.freeze(),
            })
        }
        other => Err(PeerFrameError::UnknownKind(other)),
    }
}

/// [`encode`] and [`decode`] as a `tokio_util` codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeerCodec;

impl Decoder for PeerCodec {
    type Item = PeerFrame;
    type Error = PeerFrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<PeerFrame>, PeerFrameError> {
        decode(src)
    }
}

impl Encoder<PeerFrame> for PeerCodec {
    type Error = PeerFrameError;

    fn encode(&mut self, item: PeerFrame, dst: &mut BytesMut) -> Result<(), PeerFrameError> {
        encode(&item, dst)
    }
}

fn proof(secret: &[u8], nonce: &[u8; NONCE_LEN], node_id: u64, label: &[u8]) -> [u8; PROOF_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(secret);
    hasher.update(nonce);
    hasher.update(node_id.to_le_bytes());
    hasher.update(label);
    hasher.finalize().into()
}

/// The connector's proof for [`PeerFrame::Hello`]: SHA-256(secret ‖ acceptor's challenge
/// nonce ‖ connector's node id, little-endian ‖ `"kelvin-peer-hello"`).
pub fn hello_proof(
    secret: &[u8],
    challenge_nonce: &[u8; NONCE_LEN],
    node_id: u64,
) -> [u8; PROOF_LEN] {
    proof(secret, challenge_nonce, node_id, HELLO_LABEL)
}

/// The acceptor's proof for [`PeerFrame::Welcome`]: SHA-256(secret ‖ connector's Hello
/// nonce ‖ acceptor's node id, little-endian ‖ `"kelvin-peer-welcome"`).
pub fn welcome_proof(
    secret: &[u8],
    hello_nonce: &[u8; NONCE_LEN],
    node_id: u64,
) -> [u8; PROOF_LEN] {
    proof(secret, hello_nonce, node_id, WELCOME_LABEL)
}

/// Compares two proofs in time independent of where they differ, so a prober learns
/// nothing from how fast a wrong proof is rejected.
pub fn proofs_equal(a: &[u8; PROOF_LEN], b: &[u8; PROOF_LEN]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The longest snapshot file name accepted, in bytes.
pub const MAX_SNAPSHOT_NAME_BYTES: usize = 255;

/// Whether `name` is safe to use as a file name inside a snapshot directory: non-empty,
/// at most [`MAX_SNAPSHOT_NAME_BYTES`], no path separators, no NUL, not `.` and no `..`.
pub fn snapshot_name_is_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME_BYTES
        && name != "."
        && !name.contains("..")
        && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: PeerFrame) {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf).expect("encodable");
        assert_eq!(buf.len(), LEN_PREFIX_BYTES + frame.framed_len());
        // Every strict prefix is incomplete and consumes nothing.
        for cut in 0..buf.len() {
            let mut partial = BytesMut::from(&buf[..cut]);
            assert!(decode(&mut partial)
                .expect("prefix is not an error")
                .is_none());
            assert_eq!(partial.len(), cut);
        }
        let decoded = decode(&mut buf).expect("decodes").expect("complete");
        assert_eq!(decoded, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn each_kind_round_trips() {
        roundtrip(PeerFrame::Migrate {
            body: crate::migrate::MigrateMsg::Accept { migration: 5 }.encode(),
        });
        roundtrip(PeerFrame::Challenge { nonce: [7; 32] });
        roundtrip(PeerFrame::Hello {
            node_id: u64::MAX,
            nonce: [1; 32],
            proof: [2; 32],
        });
        roundtrip(PeerFrame::Welcome {
            node_id: 3,
            proof: [9; 32],
        });
        roundtrip(PeerFrame::Raft {
            group: 42,
            message: Bytes::from_static(b"\x08\x01proto"),
        });
        roundtrip(PeerFrame::Raft {
            group: 0,
            message: Bytes::new(),
        });
        roundtrip(PeerFrame::SnapshotChunk {
            group: 5,
            name: "snap-00000007.rkyv".into(),
            offset: 1 << 20,
            data: Bytes::from(vec![0xAB; 1000]),
            last: true,
        });
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        let a = PeerFrame::Raft {
            group: 1,
            message: Bytes::from_static(b"a"),
        };
        let b = PeerFrame::Challenge { nonce: [0; 32] };
        encode(&a, &mut buf).unwrap();
        encode(&b, &mut buf).unwrap();
        assert_eq!(decode(&mut buf).unwrap(), Some(a));
        assert_eq!(decode(&mut buf).unwrap(), Some(b));
        assert_eq!(decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversize_is_rejected_before_the_body_arrives() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_PEER_FRAME_BYTES as u32 + 1);
        assert!(matches!(
            decode(&mut buf),
            Err(PeerFrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        assert!(matches!(decode(&mut buf), Err(PeerFrameError::Empty)));
        let mut buf = BytesMut::new();
        encode(
            &PeerFrame::Raft {
                group: 1,
                message: Bytes::from(vec![0; 100]),
            },
            &mut buf,
        )
        .unwrap();
        assert!(matches!(
            decode_with_limit(&mut buf, MAX_HANDSHAKE_FRAME_BYTES),
            Err(PeerFrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn oversize_is_not_encoded() {
        let mut buf = BytesMut::new();
        let frame = PeerFrame::Raft {
            group: 1,
            message: Bytes::from(vec![0; MAX_PEER_FRAME_BYTES]),
        };
        assert!(matches!(
            encode(&frame, &mut buf),
            Err(PeerFrameError::TooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_kind_and_bad_bodies() {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 99][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(PeerFrameError::UnknownKind(99))
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 3, KIND_CHALLENGE, 1, 2][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(PeerFrameError::Malformed { .. })
        ));
        // Name length pointing past the end of the frame.
        let mut buf = BytesMut::new();
        buf.put_u32(1 + 19);
        buf.put_u8(KIND_SNAPSHOT_CHUNK);
        buf.put_u64(1);
        buf.put_u64(0);
        buf.put_u8(0);
        buf.put_u16(10);
        assert!(matches!(
            decode(&mut buf),
            Err(PeerFrameError::Malformed { .. })
        ));
    }

    #[test]
    fn proofs_depend_on_every_input_and_label() {
        let nonce = [5u8; 32];
        let p = hello_proof(b"secret", &nonce, 1);
        assert!(proofs_equal(&p, &hello_proof(b"secret", &nonce, 1)));
        assert!(!proofs_equal(&p, &hello_proof(b"secreT", &nonce, 1)));
        assert!(!proofs_equal(&p, &hello_proof(b"secret", &[6; 32], 1)));
        assert!(!proofs_equal(&p, &hello_proof(b"secret", &nonce, 2)));
        assert!(!proofs_equal(&p, &welcome_proof(b"secret", &nonce, 1)));
    }

    #[test]
    fn snapshot_names() {
        assert!(snapshot_name_is_safe("snap-1-2.rkyv"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "x..y", "a\0b"] {
            assert!(!snapshot_name_is_safe(bad), "{bad:?}");
        }
        assert!(!snapshot_name_is_safe(&"a".repeat(256)));
    }

    fn arb_frame() -> impl Strategy<Value = PeerFrame> {
        let arr = || prop::array::uniform32(any::<u8>());
        let data = || prop::collection::vec(any::<u8>(), 0..512).prop_map(Bytes::from);
        prop_oneof![
            arr().prop_map(|nonce| PeerFrame::Challenge { nonce }),
            (any::<u64>(), arr(), arr()).prop_map(|(node_id, nonce, proof)| PeerFrame::Hello {
                node_id,
                nonce,
                proof
            }),
            (any::<u64>(), arr())
                .prop_map(|(node_id, proof)| PeerFrame::Welcome { node_id, proof }),
            (any::<u64>(), data()).prop_map(|(group, message)| PeerFrame::Raft { group, message }),
            (any::<u64>(), ".{0,40}", any::<u64>(), data(), any::<bool>()).prop_map(
                |(group, name, offset, data, last)| PeerFrame::SnapshotChunk {
                    group,
                    name,
                    offset,
                    data,
                    last
                }
            ),
            (data(), data()).prop_map(|(channel, message)| PeerFrame::Publish { channel, message }),
        ]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until incomplete or an error; either is fine, a panic is not.
            while let Ok(Some(_)) = decode(&mut buf) {}
        }

        #[test]
        fn small_lengths_with_random_bodies_never_panic(
            kind in 0u8..8,
            body in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut buf = BytesMut::new();
            buf.put_u32(1 + body.len() as u32);
            buf.put_u8(kind);
            buf.put_slice(&body);
            let _ = decode(&mut buf);
        }

        #[test]
        fn encode_then_decode_round_trips(frames in prop::collection::vec(arb_frame(), 1..8)) {
            let mut buf = BytesMut::new();
            for f in &frames {
                encode(f, &mut buf).unwrap();
            }
            for f in &frames {
                let decoded = decode(&mut buf).unwrap();
                prop_assert_eq!(decoded.as_ref(), Some(f));
            }
            prop_assert!(buf.is_empty());
        }
    }
}
