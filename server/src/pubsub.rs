//! Publish/subscribe: channels and patterns to the connections that listen.
//!
//! Each subscribed connection owns a bounded queue ([`PUSH_QUEUE_LEN`]); a publisher
//! never waits on a slow subscriber. A subscriber whose queue is full is disconnected,
//! as Redis does when a pub/sub client passes its output buffer limit.

use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::node::ClientInfo;

/// Messages a subscriber may have queued before it is disconnected as too slow.
pub const PUSH_QUEUE_LEN: usize = 16 * 1024;

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct PushMessage {
    /// The pattern that matched, for `pmessage`.
    pub pattern: Option<Bytes>,
    pub channel: Bytes,
    pub payload: Bytes,
}

/// One subscribed connection: where to send, and how to disconnect it if it lags.
#[derive(Clone)]
pub struct Subscriber {
    pub tx: mpsc::Sender<PushMessage>,
    pub client: Arc<ClientInfo>,
}

#[derive(Default)]
struct Subscriptions {
    channels: HashMap<Bytes, HashMap<u64, Subscriber>>,
    patterns: HashMap<Bytes, HashMap<u64, Subscriber>>,
}

/// The channel and pattern registry of a node.
#[derive(Default)]
pub struct Hub {
    subs: RwLock<Subscriptions>,
}

fn deliver(sub: &Subscriber, msg: PushMessage) {
    if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(msg) {
        tracing::warn!(
            cid = sub.client.id,
            "pub/sub client too slow, disconnecting"
        );
        sub.client.kill();
    }
}

impl Hub {
    /// Subscribes client `id` to `channel`; false if it already was.
    pub fn subscribe(&self, channel: Bytes, id: u64, sub: Subscriber) -> bool {
        self.subs
            .write()
            .channels
            .entry(channel)
            .or_default()
            .insert(id, sub)
            .is_none()
    }

    pub fn unsubscribe(&self, channel: &[u8], id: u64) -> bool {
        let mut subs = self.subs.write();
        let Some(set) = subs.channels.get_mut(channel) else {
            return false;
        };
        let removed = set.remove(&id).is_some();
        if set.is_empty() {
            subs.channels.remove(channel);
        }
        removed
    }

    pub fn psubscribe(&self, pattern: Bytes, id: u64, sub: Subscriber) -> bool {
        self.subs
            .write()
            .patterns
            .entry(pattern)
            .or_default()
            .insert(id, sub)
            .is_none()
    }

    pub fn punsubscribe(&self, pattern: &[u8], id: u64) -> bool {
        let mut subs = self.subs.write();
        let Some(set) = subs.patterns.get_mut(pattern) else {
            return false;
        };
        let removed = set.remove(&id).is_some();
        if set.is_empty() {
            subs.patterns.remove(pattern);
        }
        removed
    }

    /// Delivers `payload` on `channel`; returns how many subscriptions received it.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        let subs = self.subs.read();
        if subs.channels.is_empty() && subs.patterns.is_empty() {
            return 0;
        }
        let channel_b = Bytes::copy_from_slice(channel);
        let payload = Bytes::copy_from_slice(payload);
        let mut receivers = 0;
        if let Some(set) = subs.channels.get(channel) {
            for sub in set.values() {
                deliver(
                    sub,
                    PushMessage {
                        pattern: None,
                        channel: channel_b.clone(),
                        payload: payload.clone(),
                    },
                );
                receivers += 1;
            }
        }
        for (pattern, set) in &subs.patterns {
            if kelvin_protocol::glob::glob_match(pattern, channel, false) {
                for sub in set.values() {
                    deliver(
                        sub,
                        PushMessage {
                            pattern: Some(pattern.clone()),
                            channel: channel_b.clone(),
                            payload: payload.clone(),
                        },
                    );
                    receivers += 1;
                }
            }
        }
        receivers
    }

    /// True if nobody listens at all (keyspace notifications skip their work then).
    pub fn is_idle(&self) -> bool {
        let subs = self.subs.read();
        subs.channels.is_empty() && subs.patterns.is_empty()
    }

    /// Active channels, optionally filtered by a glob (PUBSUB CHANNELS).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.subs
            .read()
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| kelvin_protocol::glob::glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    /// Subscribers of `channel` (PUBSUB NUMSUB).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.subs
            .read()
            .channels
            .get(channel)
            .map_or(0, |s| s.len())
    }

    /// Number of distinct patterns (PUBSUB NUMPAT).
    pub fn numpat(&self) -> usize {
        self.subs.read().patterns.len()
    }

    /// Drops every subscription of client `id` (on disconnect).
    pub fn remove_client(&self, id: u64, channels: &[Bytes], patterns: &[Bytes]) {
        for c in channels {
            self.unsubscribe(c, id);
        }
        for p in patterns {
            self.punsubscribe(p, id);
        }
    }
}
