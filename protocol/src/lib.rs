//! Kelvin's wire formats, with no I/O.
//!
//! How it fits: the server reads bytes from a socket into a `BytesMut`, hands them to
//! [`RequestDecoder`] (a `tokio_util` codec that understands RESP multibulk requests and
//! the inline commands a person types into `nc`), executes each command and writes its
//! answer through [`ReplyWriter`], which speaks RESP2 or RESP3 as the connection chose
//! with `HELLO`. [`slot`] maps keys to the 16384 Redis Cluster hash slots, and [`glob`]
//! is Redis's pattern matcher (KEYS, SCAN MATCH, PSUBSCRIBE). [`peer`] holds the
//! node-to-node frames (handshake, Raft messages, snapshot chunks) the transport speaks.
//!
//! The general-purpose frame codec for the client side (`kelvin-cli`, tests) is the
//! `redis-protocol` crate, re-exported as [`frames`]; the server's request path uses the
//! specialised decoder here because requests are always arrays of bulk strings, and it
//! must enforce `proto-max-bulk-len` before buffering a declared bulk.

pub mod glob;
pub mod log;
pub mod migrate;
pub mod peer;
pub mod reply;
pub mod request;
pub mod slot;

pub use redis_protocol as frames;
pub use reply::{ReplyWriter, RespVersion};
pub use request::{ProtocolError, RequestDecoder, RequestLimits};
pub use slot::{key_slot, SLOT_COUNT};
