//! WATCH on the main port of a node with several groups. Each watched key remembers the
//! group its slot was in at the WATCH and that group's apply index then (its leader's:
//! for a group led elsewhere, [`barrier`] fetches it first, so that the index covers every
//! write the client was already told about). Several WATCH calls, and one WATCH, may name
//! keys of any groups.
//!
//! At EXEC, a transaction whose keys and watched keys are all in one group, watched in
//! that group, goes to it as one log entry, the watch checked at apply against the lowest
//! index of its keys ([`Watch::entry`]). Otherwise it is a transaction across groups
//! ([`super::crosstx`]): each group holding a watched key is a participant (one that
//! holds nothing else runs no command) whose PREPARE checks its own watched keys against
//! its own index. Either way, a key whose slot moved to another group since its WATCH
//! makes EXEC answer nil: its index counts in another group's log.

use bytes::Bytes;
use kelvin_protocol::log::LogCommand;

use super::route::{route, several_groups, Route};
use super::ClientState;
use crate::cmd::CommandSpec;
use crate::node::Node;

/// One key under WATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedKey {
    pub db: u8,
    pub key: Bytes,
    /// The group whose log `since` is an index of: the key's group at the WATCH (`None`
    /// on a node without groups yet).
    pub group: Option<u64>,
    /// That group's apply index at the WATCH: a write of the key's slot in a later entry
    /// of its log aborts EXEC (slot granularity, see `Store::written_since`).
    pub since: u64,
}

/// The keys under WATCH of a connection, in the order first watched. A key watched again
/// keeps its first index, as Redis keeps its first WATCH of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    pub keys: Vec<WatchedKey>,
}

impl Watch {
    pub fn contains(&self, db: u8, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k.db == db && k.key == key)
    }

    /// The watched keys as a transaction's log entry carries them, and the index they are
    /// checked against there: the lowest of theirs (one group's keys watched at different
    /// times: the earliest WATCH, which can only abort more, never less).
    pub fn entry(&self) -> (u64, Vec<(u8, Bytes)>) {
        let since = self.keys.iter().map(|k| k.since).min().unwrap_or(0);
        let keys = self.keys.iter().map(|k| (k.db, k.key.clone())).collect();
        (since, keys)
    }

    /// The group the keys were watched in, for a transaction run in one group (where
    /// [`Watch::moved_from`] is false, every key with a group has that one).
    pub fn group(&self) -> Option<u64> {
        self.keys.iter().find_map(|k| k.group)
    }

    /// Whether a key was watched in a group other than `group`, where the transaction
    /// runs: its slot moved since, and its index belongs to the old owner's log.
    pub fn moved_from(&self, group: u64) -> bool {
        self.keys
            .iter()
            .any(|k| k.group.is_some_and(|g| g != group))
    }

    /// The watch a `KELVIN.EXEC` request carries: its transaction's keys and index, taken
    /// in `group`'s log.
    pub fn of_entry(tx: &LogCommand, group: Option<u64>) -> Watch {
        let LogCommand::Transaction {
            watch_since, watch, ..
        } = tx
        else {
            return Watch::default();
        };
        Watch {
            keys: watch
                .iter()
                .map(|(db, key)| WatchedKey {
                    db: *db,
                    key: key.clone(),
                    group,
                    since: *watch_since,
                })
                .collect(),
        }
    }
}

/// WATCH's work: each key of `keys` not watched yet is watched in database `db`, at its
/// group's index: this node's replica's, or the group's leader's fetched just before by
/// [`barrier`] (`client.watch_floor`) if that is higher (a replica here may lag behind
/// writes the client was told about, or be missing).
pub fn watch_keys(node: &Node, client: &mut ClientState, db: u8, keys: &[Bytes]) {
    let floors = std::mem::take(&mut client.watch_floor);
    let groups = node.groups();
    // (group, index) of the groups looked at so far: one store lock per group.
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let watch = client.watch.get_or_insert_with(Watch::default);
    for key in keys {
        if watch.contains(db, key) {
            continue;
        }
        let (group, since) = match &groups {
            None => (None, 0),
            Some(gs) => {
                let (g, hosted) = gs.for_slot(kelvin_protocol::key_slot(key) as usize);
                let since = match seen.iter().find(|(s, _)| *s == g) {
                    Some(&(_, since)) => since,
                    None => {
                        let local = hosted.map_or(0, |h| h.store.lock().apply_index);
                        let floor = floors.iter().find(|(f, _)| *f == g).map_or(0, |f| f.1);
                        seen.push((g, local.max(floor)));
                        local.max(floor)
                    }
                };
                (Some(g), since)
            }
        };
        watch.keys.push(WatchedKey {
            db,
            key: key.clone(),
            group,
            since,
        });
    }
}

/// The groups whose leaders' indexes a WATCH needs first: with several groups, a WATCH
/// runs on the node the client is connected to, and each new key's index must cover
/// every write the client was told about; this node's replica of a group led elsewhere
/// may not have applied them yet (or there is none here). Empty when nothing is needed
/// (or the floors are fetched already).
pub(super) fn barrier(
    node: &Node,
    client: &ClientState,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Vec<u64> {
    let mut need = Vec::new();
    if spec.name != "watch" || client.multi.is_some() || !several_groups(node) {
        return need;
    }
    let Some(groups) = node.groups() else {
        return need;
    };
    let db = client.db as u8;
    let mut seen: Vec<u64> = Vec::new();
    for key in argv.iter().skip(1) {
        if client.watch.as_ref().is_some_and(|w| w.contains(db, key)) {
            continue;
        }
        let group = groups.for_slot(kelvin_protocol::key_slot(key) as usize).0;
        if seen.contains(&group) {
            continue;
        }
        seen.push(group);
        let ready = client.watch_floor.iter().any(|f| f.0 == group);
        if !ready && route(node, group) != Route::Leader {
            need.push(group);
        }
    }
    need
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelvin_protocol::log::TxItem;

    fn key(k: &'static str, group: Option<u64>, since: u64) -> WatchedKey {
        WatchedKey {
            db: 0,
            key: Bytes::from_static(k.as_bytes()),
            group,
            since,
        }
    }

    /// Seen in tests/python/test_reshard_races.py: a WATCH at the old owner of a slot
    /// (index 1500 of its log), a write at the new owner (index 40 of another log), and
    /// the EXEC ran there: the old group's index was no floor in the new group's log.
    #[test]
    fn a_watch_made_in_another_groups_log_aborts() {
        let watched = Watch {
            keys: vec![key("k", Some(0), 1500)],
        };
        assert!(watched.moved_from(3));
        assert!(!watched.moved_from(0));
        // Nothing watched, or a node without groups: nothing to abort for.
        assert!(!Watch::default().moved_from(3));
        assert!(!Watch {
            keys: vec![key("k", None, 1500)]
        }
        .moved_from(3));
        // Keys watched in two groups never run in one of them alone.
        let two = Watch {
            keys: vec![key("a", Some(0), 10), key("b", Some(1), 20)],
        };
        assert!(two.moved_from(0) && two.moved_from(1));
    }

    #[test]
    fn a_log_entry_checks_the_earliest_index_and_carries_its_group_when_relayed() {
        let watch = Watch {
            keys: vec![key("a", Some(2), 30), key("b", Some(2), 12)],
        };
        let (since, keys) = watch.entry();
        assert_eq!(since, 12);
        assert_eq!(keys.len(), 2);
        assert_eq!(watch.group(), Some(2));
        let tx = LogCommand::Transaction {
            watch_since: since,
            watch: keys,
            items: vec![TxItem::Data {
                db: 0,
                argv: vec![Bytes::from_static(b"SET"), Bytes::from_static(b"k")],
            }],
        };
        // The request a transaction runs again as carries its watch group, and the
        // watch it rebuilds holds every key at that group's index.
        let request = crate::cmd::connection::kelvin_exec_request(&tx, watch.group());
        assert_eq!(request.len(), 3);
        assert_eq!(&request[2][..], b"2");
        let back = Watch::of_entry(&tx, Some(2));
        assert_eq!(
            back.keys,
            vec![key("a", Some(2), 12), key("b", Some(2), 12)]
        );
        assert_eq!(
            crate::cmd::connection::kelvin_exec_request(&tx, None).len(),
            2
        );
    }
}
