//! CLIENT PAUSE / CLIENT UNPAUSE: holding clients' commands for a while (a failover
//! script's usual first step).
//!
//! How it fits: the node keeps one [`ClientPause`]; CLIENT PAUSE sets it (a second pause
//! extends the first: the later end and the stronger mode win, as in Redis), CLIENT
//! UNPAUSE or the end time clears it. A connection checks it before it runs a batch of
//! requests (`conn::drive`): if a request in the batch is held, the whole batch waits,
//! its order kept, until the pause ends. In WRITE mode the held requests are writes and
//! the commands Redis flags "may replicate" (EVAL, EVALSHA, FCALL, PUBLISH, PFCOUNT...),
//! and an EXEC whose queue holds one; in ALL mode every request but CLIENT's own (so
//! CLIENT UNPAUSE gets through). Commands queued inside MULTI are answered QUEUED.

use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::cmd;

/// Commands Redis flags `may-replicate` that are not writes: held in WRITE mode too.
const MAY_REPLICATE: [&str; 6] = ["eval", "evalsha", "fcall", "publish", "pfcount", "spublish"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pause {
    until: Instant,
    /// ALL (every command) rather than WRITE.
    all: bool,
}

/// The node's pause state.
#[derive(Default)]
pub struct ClientPause {
    state: Mutex<Option<Pause>>,
    unpaused: Notify,
}

impl ClientPause {
    /// CLIENT PAUSE: until `until`, every command (`all`) or writes only.
    pub fn pause(&self, until: Instant, all: bool) {
        let mut state = self.state.lock();
        let next = match *state {
            Some(p) => Pause {
                until: p.until.max(until),
                all: p.all || all,
            },
            None => Pause { until, all },
        };
        *state = Some(next);
    }

    /// CLIENT UNPAUSE.
    pub fn unpause(&self) {
        *self.state.lock() = None;
        self.unpaused.notify_waiters();
    }

    /// The pause in force now, if any: `Some(all)`.
    fn current(&self) -> Option<(Instant, bool)> {
        let mut state = self.state.lock();
        match *state {
            Some(p) if p.until > Instant::now() => Some((p.until, p.all)),
            Some(_) => {
                *state = None;
                None
            }
            None => None,
        }
    }

    /// Waits while the pause holds one of `batch`'s requests. `queued_write`: the
    /// connection is in MULTI with a write queued (its EXEC is a write).
    pub async fn wait(&self, batch: &[Vec<Bytes>], in_multi: bool, queued_write: bool) {
        loop {
            // Registered before the check, so an UNPAUSE right after it is not missed.
            let unpaused = self.unpaused.notified();
            let Some((until, all)) = self.current() else {
                return;
            };
            if !batch
                .iter()
                .any(|argv| held(argv, all, in_multi, queued_write))
            {
                return;
            }
            tokio::select! {
                _ = unpaused => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }
}

/// Whether a pause holds this request.
fn held(argv: &[Bytes], all: bool, in_multi: bool, queued_write: bool) -> bool {
    let Some(spec) = argv.first().and_then(|name| cmd::lookup(name)) else {
        return false; // answered with an error at once
    };
    if spec.name == "client" {
        return false;
    }
    if in_multi && !matches!(spec.name, "exec" | "discard" | "multi" | "watch" | "reset") {
        return false; // queued
    }
    all || spec.is_write()
        || MAY_REPLICATE.contains(&spec.name)
        || (spec.name == "exec" && queued_write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn write_pause_holds_writes_and_may_replicate_commands() {
        assert!(held(&argv(&["set", "k", "v"]), false, false, false));
        assert!(held(&argv(&["publish", "c", "m"]), false, false, false));
        assert!(!held(&argv(&["get", "k"]), false, false, false));
        assert!(!held(&argv(&["client", "unpause"]), true, false, false));
        assert!(held(&argv(&["get", "k"]), true, false, false));
        assert!(
            !held(&argv(&["set", "k", "v"]), false, true, false),
            "queued"
        );
        assert!(held(&argv(&["exec"]), false, true, true));
        assert!(!held(&argv(&["exec"]), false, true, false));
    }

    #[test]
    fn pauses_merge_and_end() {
        let p = ClientPause::default();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        p.pause(later, false);
        p.pause(Instant::now(), true);
        assert_eq!(p.current(), Some((later, true)));
        p.unpause();
        assert_eq!(p.current(), None);
        p.pause(Instant::now(), true);
        assert_eq!(p.current(), None, "an end in the past is no pause");
    }
}
