//! DBSIZE, KEYS, SCAN and RANDOMKEY on the main port while slots move between groups:
//! answered as one Redis holding the keys would, with no key counted twice or missed.
//!
//! How it fits: during a migration (a `migrate` line in the topology) the keys of its
//! slots are in two places. The target holds those moved or written there; the source
//! holds every key of the slots it sealed until FINISH, moved or not, and a key deleted
//! at the target is still there. So [`run`] splits the keyspace: each group answers for
//! its slots in no migration (`KELVIN.OUTSIDE <command>`, a part as in
//! [`super::merge::broadcast`]), and the node walks each migration's slots itself, in
//! SCAN order, a page at a time ([`Walk::page`]):
//!
//! ```text
//! source  KELVIN.MIGRATE-NAMES m db slot cursor count   the names it holds there
//! target  KELVIN.MIGRATE-UNSETTLED m db names...         which of those are not settled
//! target  KELVIN.MIGRATE-NAMES m db slot cursor count   the names it holds there
//! page    unsettled ∪ target's names, each once, up to the nearer of the two sides' ends
//! ```
//!
//! A key's move (drain, fault-in) or a write at the target settles it, and a key is
//! settled before it is written at the target: asked in this order, a key moved meanwhile
//! is found unsettled, or among the target's names, or both (then once), never in
//! neither. The source's names only shrink (at FINISH), and a target that finished
//! ("no migration") holds the slots as its own: the group parts run first, and if a
//! walk found a target finished they run again, now with those slots in them.
//!
//! A migration still `planned` is waited out first (briefly, as requests for its slots
//! wait): between the seal and the topology's change neither side would list its keys.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kelvin_protocol::{ReplyWriter, RespVersion, SLOT_COUNT};

use crate::cluster::{MigrationPhase, MigrationSpec};
use crate::cmd::{self, CommandSpec};
use crate::node::Node;
use crate::store::{cursor_hash, CURSOR_HASH_BITS};

use super::drive::wait_leader_change;
use super::faultin::internal;
use super::merge::{array_elements, bulk_body, split_replies, Merge};
use super::route::pin;
use super::*;

/// Keys one page of a walk asks each side for (and so checks at the target).
pub const WALK_PAGE_KEYS: usize = crate::cmd::migrate::MAX_MOVE_BATCH;
/// How long one command may walk the migrations' keys before it gives up.
pub const WALK_TIME: Duration = Duration::from_secs(30);
/// The answer when the walk took longer than [`WALK_TIME`]: never a partial count.
pub const WALK_TOO_LONG: &str =
    "TRYAGAIN the keys being moved between groups could not all be listed in time; send the command again";
/// How long a command waits for `planned` migrations to be handed over.
pub const PLANNED_WAIT: Duration = Duration::from_secs(5);

/// The position of a key in SCAN order over the whole keyspace (a SCAN cursor).
fn position(key: &[u8]) -> u64 {
    (u64::from(kelvin_protocol::key_slot(key)) << CURSOR_HASH_BITS) | cursor_hash(key)
}

/// The position past the last slot: a walk that reached it is done.
const END: u64 = (SLOT_COUNT as u64) << CURSOR_HASH_BITS;

/// A keyless command to answer with the migrations' keys.
pub struct Keyless {
    kind: Kind,
    argv: Vec<Bytes>,
}

enum Kind {
    DbSize,
    Keys {
        pattern: Bytes,
    },
    Scan {
        cursor: u64,
        count: usize,
        /// `MATCH p` and `TYPE t`, as given.
        filter: Vec<Bytes>,
    },
    RandomKey,
}

/// `Some` for DBSIZE, KEYS, SCAN and RANDOMKEY on the main port while the topology lists
/// a migration (a SCAN whose arguments do not parse is left to the group, whose error
/// is then the reply).
pub(super) fn plan(
    node: &Node,
    client: &ClientState,
    spec: &CommandSpec,
    argv: &[Bytes],
) -> Option<Keyless> {
    if client.redirect || client.multi.is_some() || !spec.arity_ok(argv.len()) {
        return None;
    }
    if !node
        .membership
        .read()
        .migrations
        .iter()
        .any(|m| m.phase < MigrationPhase::Drained)
    {
        return None;
    }
    let kind = match spec.name {
        "dbsize" => Kind::DbSize,
        "randomkey" => Kind::RandomKey,
        "keys" => Kind::Keys {
            pattern: argv[1].clone(),
        },
        "scan" => {
            let cursor = cmd::keys::parse_cursor(&argv[1]).ok()?;
            if cursor >= END {
                return None;
            }
            let (mut count, mut filter) = (10, Vec::new());
            for option in argv[2..].chunks(2) {
                match option {
                    [name, value] if cmd::is(name, "count") => {
                        count = cmd::count_arg(value).ok().filter(|&c| c >= 1)?
                    }
                    [name, _] if cmd::is(name, "match") || cmd::is(name, "type") => {
                        filter.extend(option.iter().cloned())
                    }
                    _ => return None,
                }
            }
            Kind::Scan {
                cursor,
                count: count.min(WALK_PAGE_KEYS),
                filter,
            }
        }
        _ => return None,
    };
    Some(Keyless {
        kind,
        argv: argv.to_vec(),
    })
}

/// Answers `k` into `out`.
pub(super) async fn run(
    node: &Arc<Node>,
    client: &mut ClientState,
    out: &mut ReplyWriter,
    k: Keyless,
) {
    let began = tokio::time::Instant::now();
    let waited = began + PLANNED_WAIT;
    let migrations = loop {
        let seen = *node.leaders_changed.borrow();
        let migrations: Vec<MigrationSpec> = node
            .membership
            .read()
            .migrations
            .iter()
            .filter(|m| m.phase < MigrationPhase::Drained)
            .cloned()
            .collect();
        let planned = migrations
            .iter()
            .any(|m| m.phase == MigrationPhase::Planned);
        if !planned || tokio::time::Instant::now() >= waited {
            break migrations;
        }
        wait_leader_change(node, waited, seen).await;
    };
    let mut walk = Walk {
        node,
        client,
        version: out.version,
        deadline: began + WALK_TIME,
        finished: HashSet::new(),
    };
    let answer = match &k.kind {
        Kind::Scan {
            cursor,
            count,
            filter,
        } => {
            walk.scan(&k.argv, &migrations, *cursor, *count, filter)
                .await
        }
        Kind::RandomKey => walk.random_key(&k, &migrations).await,
        _ => walk.whole(&k, &migrations).await,
    };
    match answer {
        Ok(reply) => out.buf.extend_from_slice(&reply),
        Err(err) => out.buf.extend_from_slice(&err),
    }
}

/// The groups every part goes to: each group of the topology, by lowest slot, then
/// those that own none yet (a migration's target before its handover).
fn every_group(node: &Node, migrations: &[MigrationSpec]) -> Vec<u64> {
    let mut order: Vec<u64> = Vec::new();
    if let Some(groups) = node.groups() {
        for &g in &groups.slot_group {
            if !order.contains(&g) {
                order.push(g);
            }
        }
    }
    for m in migrations {
        for g in [m.source, m.target] {
            if !order.contains(&g) {
                order.push(g);
            }
        }
    }
    order
}

/// What one side of a migration answered for a page.
enum Side {
    /// Names, and the position up to which it listed them all.
    Names { names: Vec<Bytes>, end: u64 },
    /// The group has no slot in the migration (not sealed yet, or finished).
    Gone,
}

/// One command's walk over the migrations' slots (and its group parts).
struct Walk<'a> {
    node: &'a Arc<Node>,
    client: &'a mut ClientState,
    version: RespVersion,
    deadline: tokio::time::Instant,
    /// Migrations whose target answered that it has no slot in them (finished: the
    /// slots are its own; or not importing yet: the source holds them as its own).
    finished: HashSet<u64>,
}

/// A reply, or the error reply that answers the command instead.
type Reply<T> = Result<T, Vec<u8>>;

impl Walk<'_> {
    fn error(&self, text: &str) -> Vec<u8> {
        let mut out = ReplyWriter::new(self.version);
        out.error(text);
        out.buf.to_vec()
    }

    /// Runs `requests` (each pinned to its group) and returns their replies, or the
    /// first error among them.
    async fn requests(&mut self, requests: Vec<Vec<Bytes>>) -> Reply<Vec<Vec<u8>>> {
        let n = requests.len();
        let mut sub = ReplyWriter::new(self.version);
        let saved = (self.client.redirect, self.client.readonly);
        self.client.redirect = false;
        self.client.readonly = false;
        Box::pin(super::drive::drive(
            self.node,
            self.client,
            &mut sub,
            requests,
        ))
        .await;
        (self.client.redirect, self.client.readonly) = saved;
        let replies: Vec<Vec<u8>> = split_replies(&sub.buf, self.version)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        if replies.len() != n {
            return Err(self.error("ERR a group gave no reply"));
        }
        match replies.iter().find(|r| r.first() == Some(&b'-')) {
            Some(err) => Err(err.clone()),
            None => Ok(replies),
        }
    }

    /// `argv` over every group's slots in no migration: each group's reply.
    async fn parts(&mut self, groups: &[u64], argv: &[Bytes]) -> Reply<Vec<Vec<u8>>> {
        let requests = groups
            .iter()
            .map(|&g| {
                let mut inner = vec![Bytes::from_static(b"KELVIN.OUTSIDE")];
                inner.extend(argv.iter().cloned());
                pin(g, inner)
            })
            .collect();
        self.requests(requests).await
    }

    /// One side's names from `from` on (`KELVIN.MIGRATE-NAMES`).
    async fn names(
        &mut self,
        group: u64,
        m: &MigrationSpec,
        from: u64,
        count: usize,
        filter: &[Bytes],
    ) -> Reply<Side> {
        let db = self.client.db;
        let mut argv: Vec<Bytes> = [
            "KELVIN.MIGRATE-NAMES".to_string(),
            m.id.to_string(),
            db.to_string(),
            (from >> CURSOR_HASH_BITS).to_string(),
            (from & ((1 << CURSOR_HASH_BITS) - 1)).to_string(),
            count.to_string(),
        ]
        .into_iter()
        .map(Bytes::from)
        .collect();
        argv.extend(filter.iter().cloned());
        let reply = internal(self.node, self.client, self.version, pin(group, argv)).await;
        if reply.starts_with(b"-ERR no migration") {
            return Ok(Side::Gone);
        }
        names_reply(&reply, self.version).ok_or(reply)
    }

    /// Which of `names` the target has not settled (`KELVIN.MIGRATE-UNSETTLED`);
    /// `None` if it finished the migration.
    async fn unsettled(&mut self, m: &MigrationSpec, names: &[Bytes]) -> Reply<Option<Vec<Bytes>>> {
        if names.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut argv = vec![
            Bytes::from_static(b"KELVIN.MIGRATE-UNSETTLED"),
            Bytes::from(m.id.to_string()),
            Bytes::from(self.client.db.to_string()),
        ];
        argv.extend(names.iter().cloned());
        let reply = internal(self.node, self.client, self.version, pin(m.target, argv)).await;
        if reply.starts_with(b"-ERR no migration") {
            return Ok(None);
        }
        let keys = array_elements(&reply, self.version).and_then(|e| {
            e.into_iter()
                .map(|k| bulk_body(k).map(Bytes::copy_from_slice))
                .collect::<Option<Vec<Bytes>>>()
        });
        keys.map(Some).ok_or(reply)
    }

    /// One page of migration `m`'s keys from position `from` on: the keys (each once)
    /// before the page's end, and that end ([`END`]: done). `None` if the target has
    /// finished the migration (its slots are its own: the group parts list them).
    async fn page(
        &mut self,
        m: &MigrationSpec,
        from: u64,
        count: usize,
        filter: &[Bytes],
    ) -> Reply<Option<(Vec<Bytes>, u64)>> {
        if tokio::time::Instant::now() >= self.deadline {
            return Err(self.error(WALK_TOO_LONG));
        }
        // The source first, then which of its names the target has not settled, then
        // the target's own names: a key moved meanwhile is seen by one of the two.
        let (source, source_end) = match self.names(m.source, m, from, count, filter).await? {
            Side::Names { names, end } => (names, end),
            Side::Gone => (Vec::new(), END),
        };
        let Some(mut keys) = self.unsettled(m, &source).await? else {
            self.finished.insert(m.id);
            return Ok(None);
        };
        let (target, target_end) = match self.names(m.target, m, from, count, filter).await? {
            Side::Names { names, end } => (names, end),
            Side::Gone => {
                self.finished.insert(m.id);
                return Ok(None);
            }
        };
        let end = source_end.min(target_end);
        if end <= from {
            return Err(self.error("ERR the keys of a migration could not be listed"));
        }
        let mut seen: HashSet<Bytes> = keys.iter().cloned().collect();
        keys.extend(target.into_iter().filter(|k| seen.insert(k.clone())));
        keys.retain(|k| position(k) < end);
        Ok(Some((keys, end)))
    }

    /// Every key of migration `m` (matching `filter`), page after page, to `each`.
    async fn all(
        &mut self,
        m: &MigrationSpec,
        filter: &[Bytes],
        mut each: impl FnMut(Bytes),
    ) -> Reply<()> {
        let mut from = first_position(m);
        while from < END {
            let Some((keys, end)) = self.page(m, from, WALK_PAGE_KEYS, filter).await? else {
                return Ok(());
            };
            keys.into_iter().for_each(&mut each);
            from = end;
        }
        Ok(())
    }

    /// DBSIZE or KEYS: the groups' parts, then every migration's keys (each page
    /// checked as [`Walk::page`] says). A target that turned out to have finished had
    /// its slots in no part (it imported them then) and has them in its own now: the
    /// parts run again, and the walks of the others after them, until a round in which
    /// no target finished (at most one round per migration).
    async fn whole(&mut self, k: &Keyless, migrations: &[MigrationSpec]) -> Reply<Vec<u8>> {
        let groups = every_group(self.node, migrations);
        let filter: Vec<Bytes> = match &k.kind {
            Kind::Keys { pattern } if &pattern[..] != b"*" => {
                vec![Bytes::from_static(b"MATCH"), pattern.clone()]
            }
            _ => Vec::new(),
        };
        let names = matches!(k.kind, Kind::Keys { .. });
        let (parts, walked, count) = loop {
            let finished = self.finished.len();
            let parts = self.parts(&groups, &k.argv).await?;
            let (mut walked, mut count) = (Vec::new(), 0usize);
            let walking: Vec<&MigrationSpec> = migrations
                .iter()
                .filter(|m| !self.finished.contains(&m.id))
                .collect();
            for m in walking {
                let (mut keys, mut n) = (Vec::new(), 0usize);
                self.all(m, &filter, |key| {
                    n += 1;
                    if names {
                        keys.push(key);
                    }
                })
                .await?;
                walked.extend(keys);
                count += n;
            }
            if self.finished.len() == finished {
                break (parts, walked, count);
            }
        };
        let mut out = ReplyWriter::new(self.version);
        if names {
            let mut elements: Vec<&[u8]> = Vec::new();
            for p in &parts {
                elements.extend(array_elements(p, self.version).unwrap_or_default());
            }
            out.array(elements.len() + walked.len());
            for e in elements {
                out.buf.extend_from_slice(e);
            }
            for key in &walked {
                out.bulk(key);
            }
        } else {
            let own: i64 = parts.iter().filter_map(|p| integer(p)).sum();
            out.int(own + count as i64);
        }
        Ok(out.buf.to_vec())
    }

    /// RANDOMKEY: a key of the groups' parts, else one of the first page of a
    /// migration's keys that has any.
    async fn random_key(&mut self, k: &Keyless, migrations: &[MigrationSpec]) -> Reply<Vec<u8>> {
        let groups = every_group(self.node, migrations);
        let mut out = ReplyWriter::new(self.version);
        let parts = self.parts(&groups, &k.argv).await?;
        Merge::FirstKey.write(&parts.concat(), &mut out);
        if !is_null(&out.buf) {
            return Ok(out.buf.to_vec());
        }
        for m in migrations {
            let mut from = first_position(m);
            while from < END {
                let Some((keys, end)) = self.page(m, from, WALK_PAGE_KEYS, &[]).await? else {
                    break;
                };
                if !keys.is_empty() {
                    let pick = rand::random::<u64>() as usize % keys.len();
                    out.buf.clear();
                    out.bulk(&keys[pick]);
                    return Ok(out.buf.to_vec());
                }
                from = end;
            }
        }
        if !self.finished.is_empty() {
            out.buf.clear();
            let parts = self.parts(&groups, &k.argv).await?;
            Merge::FirstKey.write(&parts.concat(), &mut out);
        }
        Ok(out.buf.to_vec())
    }

    /// SCAN from `cursor`: in a migration's slots, a page of its walk; elsewhere, the
    /// owning group's SCAN over its run of slots in no migration.
    async fn scan(
        &mut self,
        argv: &[Bytes],
        migrations: &[MigrationSpec],
        cursor: u64,
        count: usize,
        filter: &[Bytes],
    ) -> Reply<Vec<u8>> {
        let start = (cursor >> CURSOR_HASH_BITS) as usize;
        let in_migration = |s: usize| {
            migrations.iter().find_map(|m| {
                m.slots
                    .iter()
                    .find(|&&(a, b)| (a as usize..=b as usize).contains(&s))
                    .map(|&(_, b)| (m, b as usize + 1))
            })
        };
        let mut out = ReplyWriter::new(self.version);
        if let Some((m, run_end)) = in_migration(start) {
            if !self.finished.contains(&m.id) {
                if let Some((keys, end)) = self.page(m, cursor, count, filter).await? {
                    let limit = (run_end as u64) << CURSOR_HASH_BITS;
                    let next = match end.min(limit) {
                        e if e >= END => 0,
                        e => e,
                    };
                    out.array(2);
                    out.bulk(next.to_string().as_bytes());
                    let keys: Vec<&Bytes> = keys.iter().filter(|k| position(k) < limit).collect();
                    out.bulks(keys.into_iter());
                    return Ok(out.buf.to_vec());
                }
            }
        }
        // A run of one owner's slots, cut where a migration's slots begin or end.
        let Some(groups) = self.node.groups() else {
            return Err(self.error(super::CLUSTER_DOWN));
        };
        let owner = |s: usize| groups.slot_group.get(s).copied().unwrap_or(0);
        let moving =
            |s: usize| in_migration(s).is_some_and(|(m, _)| !self.finished.contains(&m.id));
        let g = owner(start);
        let end = (start + 1..SLOT_COUNT)
            .find(|&s| owner(s) != g || moving(s) != moving(start))
            .unwrap_or(SLOT_COUNT);
        let parts = self.parts(&[g], argv).await?;
        Merge::Scan { start, end }.write(&parts.concat(), &mut out);
        Ok(out.buf.to_vec())
    }
}

/// Where a walk of migration `m` starts: its first slot.
fn first_position(m: &MigrationSpec) -> u64 {
    m.slots
        .first()
        .map_or(0, |&(a, _)| u64::from(a) << CURSOR_HASH_BITS)
}

/// The value of an integer reply.
fn integer(reply: &[u8]) -> Option<i64> {
    std::str::from_utf8(reply.strip_prefix(b":")?)
        .ok()?
        .trim_end()
        .parse()
        .ok()
}

fn is_null(reply: &[u8]) -> bool {
    reply.starts_with(b"$-1") || reply.starts_with(b"_")
}

/// A `KELVIN.MIGRATE-NAMES` reply: the names, and the position up to which they are all.
fn names_reply(reply: &[u8], version: RespVersion) -> Option<Side> {
    let [slot, cursor, names] = <[&[u8]; 3]>::try_from(array_elements(reply, version)?).ok()?;
    let int = |r: &[u8]| integer(r).and_then(|n| u64::try_from(n).ok());
    let (slot, cursor) = (int(slot)?, int(cursor)?);
    if slot > SLOT_COUNT as u64 || cursor >> CURSOR_HASH_BITS != 0 {
        return None;
    }
    let names = array_elements(names, version)?
        .into_iter()
        .map(|k| bulk_body(k).map(Bytes::copy_from_slice))
        .collect::<Option<Vec<Bytes>>>()?;
    Some(Side::Names {
        names,
        end: (slot << CURSOR_HASH_BITS) | cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_replies_parse_into_positions() {
        let v2 = RespVersion::Resp2;
        let Some(Side::Names { names, end }) =
            names_reply(b"*3\r\n:5\r\n:7\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n", v2)
        else {
            panic!("a names reply")
        };
        assert_eq!(
            names,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")]
        );
        assert_eq!(end, (5 << CURSOR_HASH_BITS) | 7);
        let Some(Side::Names { end, .. }) = names_reply(b"*3\r\n:16384\r\n:0\r\n*0\r\n", v2) else {
            panic!("a names reply")
        };
        assert_eq!(end, END);
        assert!(names_reply(b"*3\r\n:16385\r\n:0\r\n*0\r\n", v2).is_none());
        assert!(names_reply(b"-ERR no\r\n", v2).is_none());
        // Positions order keys as SCAN does: by slot, then by cursor hash.
        let k = b"some-key";
        assert_eq!(
            position(k) >> CURSOR_HASH_BITS,
            u64::from(kelvin_protocol::key_slot(k))
        );
        assert!(position(k) < END);
    }
}
