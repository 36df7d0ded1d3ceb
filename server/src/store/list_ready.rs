//! The signal that wakes connections blocked in BLPOP, BZPOPMIN and friends (and the
//! blocking commands over several groups, `conn::crosstx::wake_on`): every list,
//! sorted-set or generic write of a group bumps it, and they run their command again.
//!
//! A bump reaches only receivers that exist when it is made; one subscribed later starts
//! at the value then current. So a bump with no receiver is never seen by anyone, and
//! is skipped: it cost a watch channel's lock and wake-up (some 460 instructions) on
//! every such write, blocked clients or not. Receivers subscribe and writes bump under
//! the store's lock, so the count read here is never behind a subscription.

use tokio::sync::watch;

#[derive(Debug)]
pub struct ListReady {
    tx: watch::Sender<u64>,
    /// Bumps made, received or not: lets a receiver taken after some writes see them
    /// ([`ListReady::subscribe_since`]).
    writes: u64,
}

impl Default for ListReady {
    fn default() -> Self {
        ListReady {
            tx: watch::channel(0).0,
            writes: 0,
        }
    }
}

impl ListReady {
    /// A write blocked commands may wait for: wakes every receiver.
    pub fn bump(&mut self) {
        self.writes = self.writes.wrapping_add(1);
        if self.tx.receiver_count() > 0 {
            self.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// A receiver that sees the bumps made from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// The bumps made so far, for [`ListReady::subscribe_since`].
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// A receiver that sees the bumps made from now on, and already holds a change if
    /// any was made since [`ListReady::writes`] returned `since` (a spurious wake only
    /// runs the command again).
    pub fn subscribe_since(&self, since: u64) -> watch::Receiver<u64> {
        let mut rx = self.tx.subscribe();
        if self.writes != since {
            rx.mark_changed();
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_see_the_bumps_after_them_and_none_before() {
        let mut ready = ListReady::default();
        ready.bump(); // nobody listens
        let mut rx = ready.subscribe();
        assert!(!rx.has_changed().unwrap());
        ready.bump();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();

        let since = ready.writes();
        let quiet = ready.subscribe_since(since);
        assert!(!quiet.has_changed().unwrap());
        drop(quiet);
        drop(rx);
        ready.bump(); // nobody listens, but it counts
        let late = ready.subscribe_since(since);
        assert!(late.has_changed().unwrap());
        let mut clone = late.clone();
        assert!(clone.has_changed().unwrap());
        clone.mark_unchanged();
        ready.bump();
        assert!(clone.has_changed().unwrap());
    }
}
