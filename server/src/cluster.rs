//! Cluster membership as this node knows it, and how a node joins a group.
//!
//! How it fits: a node started with `--cluster-port` has an id (random, kept in
//! `<data-dir>/node-id`) and waits. `kelvin-cli cluster create` asks every node its id
//! (`CLUSTER MYID`) and cluster port, then sends each the full member list
//! and the groups (slot ranges and replicas) with `CLUSTER KELVIN-BOOTSTRAP`. Each node
//! writes them to `<data-dir>/cluster.conf` and starts a replica of each group it belongs
//! to; after a restart the file brings them back.
//! Without `--cluster-port` the node is its own one-voter group, id 1, same code path.
//! Every member also runs a replica of the meta group ([`META_GROUP`]), which holds the
//! same text as the topology's truth; `cluster.conf` is the node's cache of it (see
//! `Node::reconcile`).
//!
//! ```text
//! cluster.conf:   # comment
//!                 epoch <n>                                                       (bumped by every change)
//!                 node <id> <host> <client port> <cluster port> <redirect port>   (per member)
//!                 group <id> <slot ranges a-b,c-d> <replica ids id,id,...>          (per group)
//! ```
//!
//! A file without `group` lines (written before groups existed) means one group, 0, over
//! all slots, replicated on every member.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The id of the single node of the embedded default.
pub const EMBEDDED_NODE_ID: u64 = 1;
/// Group 0: the embedded node's only group, and the one group of a `cluster.conf` written
/// before groups existed.
pub const DATA_GROUP: u64 = 0;
/// The meta group: the Raft group of every member that holds the topology (this file's
/// content, with its epoch). Kept in `<data-dir>/meta`.
pub const META_GROUP: u64 = u64::MAX;

/// Where a member listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub host: IpAddr,
    pub port: u16,
    pub cport: u16,
    /// Its `--redirect-port` (0: none).
    pub rport: u16,
}

impl Member {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub fn cluster_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.cport)
    }

    /// The port cluster-aware clients are sent to: the redirect port if it has one, else
    /// the main port (which forwards, so the client still gets its answers).
    pub fn advertised_port(&self) -> u16 {
        if self.rport != 0 {
            self.rport
        } else {
            self.port
        }
    }
}

/// The members of this node's group.
/// A data group: the slots it owns and the members that replicate it (its voters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub id: u64,
    /// Inclusive slot ranges, ascending.
    pub slots: Vec<(u16, u16)>,
    pub replicas: Vec<u64>,
}

impl GroupSpec {
    /// `0-5460,5461-10922` (a single slot as `7`); [`NO_SLOTS`] for a group that owns
    /// none (a new resharding target, or a source that gave every slot away).
    pub fn slots_text(&self) -> String {
        ranges_text(&self.slots)
    }

    fn parse(id: &str, slots: &str, replicas: &str) -> Result<GroupSpec, String> {
        let id = id.parse().map_err(|_| format!("bad group id '{id}'"))?;
        let ranges =
            parse_ranges(slots).map_err(|r| format!("bad slot range '{r}' in group {id}"))?;
        let replicas = replicas
            .split(',')
            .map(|n| parse_node_name(n).ok_or(format!("bad replica id '{n}' in group {id}")))
            .collect::<Result<Vec<u64>, String>>()?;
        Ok(GroupSpec {
            id,
            slots: ranges,
            replicas,
        })
    }
}

/// Where a migration stands, as the meta group records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MigrationPhase {
    /// Negotiated: the source still owns the slots (critical keys may be moving).
    Planned,
    /// The target owns the slots; keys fault in and drain from the source.
    Handover,
    /// Every key moved; the source has dropped the slots (the line may go).
    Drained,
}

impl MigrationPhase {
    pub fn name(self) -> &'static str {
        match self {
            MigrationPhase::Planned => "planned",
            MigrationPhase::Handover => "handover",
            MigrationPhase::Drained => "drained",
        }
    }

    fn parse(text: &str) -> Option<MigrationPhase> {
        Some(match text {
            "planned" => MigrationPhase::Planned,
            "handover" => MigrationPhase::Handover,
            "drained" => MigrationPhase::Drained,
            _ => return None,
        })
    }
}

/// A live migration of slots from one group to another (`migrate` line of the topology):
/// `migrate <id> <source group> <target group> <slots> <phase>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSpec {
    pub id: u64,
    pub source: u64,
    pub target: u64,
    /// Inclusive slot ranges, ascending.
    pub slots: Vec<(u16, u16)>,
    pub phase: MigrationPhase,
}

impl MigrationSpec {
    /// The group that owns the slots in this phase.
    pub fn owner(&self) -> u64 {
        match self.phase {
            MigrationPhase::Planned => self.source,
            MigrationPhase::Handover | MigrationPhase::Drained => self.target,
        }
    }

    fn parse(f: &[&str]) -> Result<MigrationSpec, String> {
        let [id, source, target, slots, phase] = f else {
            return Err("expected migrate <id> <source> <target> <slots> <phase>".into());
        };
        let num = |t: &str, what: &str| t.parse::<u64>().map_err(|_| format!("bad {what} '{t}'"));
        let ranges =
            parse_ranges(slots).map_err(|r| format!("bad slot range '{r}' in migration {id}"))?;
        if ranges.is_empty() {
            return Err(format!("migration {id} moves no slot"));
        }
        Ok(MigrationSpec {
            id: num(id, "migration id")?,
            source: num(source, "source group")?,
            target: num(target, "target group")?,
            slots: ranges,
            phase: MigrationPhase::parse(phase).ok_or(format!("bad migration phase '{phase}'"))?,
        })
    }
}

/// Parses `0-5460,7` (or [`NO_SLOTS`]: none); `Err` names the bad range.
pub fn parse_ranges(slots: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut ranges = Vec::new();
    for r in slots.split(',').filter(|_| slots != NO_SLOTS) {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        match (a.parse::<u16>(), b.parse::<u16>()) {
            (Ok(a), Ok(b)) if a <= b && (b as usize) < kelvin_protocol::SLOT_COUNT => {
                ranges.push((a, b))
            }
            _ => return Err(r.to_string()),
        }
    }
    Ok(ranges)
}

/// Ranges as `cluster.conf` writes them (`0-99,200`; [`NO_SLOTS`] for none).
pub fn ranges_text(slots: &[(u16, u16)]) -> String {
    if slots.is_empty() {
        return NO_SLOTS.to_string();
    }
    slots
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How `cluster.conf` writes the slots of a group that owns none.
pub const NO_SLOTS: &str = "-";

/// The members and the data groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Bumped by every change of the topology (the meta group accepts a change only on
    /// top of the epoch it was made from). 0: a file from before the meta group.
    pub epoch: u64,
    pub members: Vec<Member>,
    /// Empty for the embedded node (one group 0 of itself, see [`Membership::groups`]).
    pub groups: Vec<GroupSpec>,
    /// Live migrations of slots between groups.
    pub migrations: Vec<MigrationSpec>,
}

const CONF_FILE: &str = "cluster.conf";
const ID_FILE: &str = "node-id";

/// A node id as Redis Cluster shows node names: 40 hex characters.
pub fn node_name(id: u64) -> String {
    format!("{id:040x}")
}

/// Parses a node name back into an id.
pub fn parse_node_name(name: &str) -> Option<u64> {
    u64::from_str_radix(name, 16).ok().filter(|&id| id != 0)
}

/// This node's id: read from `<dir>/node-id`, or made up and written there.
pub fn load_or_create_id(dir: &Path) -> std::io::Result<u64> {
    let path = dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_node_name(text.trim()).ok_or_else(|| {
            std::io::Error::other(format!("{}: not a node id: {text:?}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Ids are positive and fit raft-rs's u64; 0 means "none" there.
            let id = (rand::random::<u64>() >> 1).max(2);
            write_durably(dir, ID_FILE, format!("{}\n", node_name(id)).as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

impl Membership {
    pub fn voters(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// One group 0 over all slots replicated on every member: the topology of a cluster
    /// formed before groups existed.
    fn one_group(&mut self) {
        if self.groups.is_empty() && !self.members.is_empty() {
            self.groups.push(GroupSpec {
                id: DATA_GROUP,
                slots: vec![(0, (kelvin_protocol::SLOT_COUNT - 1) as u16)],
                replicas: self.voters(),
            });
        }
    }

    /// Checks that every slot belongs to exactly one group, that group ids are unique and
    /// that every replica is a member.
    pub fn validate(&self) -> Result<(), String> {
        let mut owner = vec![None; kelvin_protocol::SLOT_COUNT];
        for (i, g) in self.groups.iter().enumerate() {
            if self.groups[..i].iter().any(|h| h.id == g.id) {
                return Err(format!("group {} listed twice", g.id));
            }
            if g.replicas.is_empty() {
                return Err(format!("group {} has no replicas", g.id));
            }
            if let Some(r) = g.replicas.iter().find(|r| self.member(**r).is_none()) {
                return Err(format!(
                    "group {}: replica {} is not a member",
                    g.id,
                    node_name(*r)
                ));
            }
            for &(a, b) in &g.slots {
                for s in a..=b {
                    if let Some(other) = owner[s as usize].replace(g.id) {
                        return Err(format!("slot {s} is in groups {other} and {}", g.id));
                    }
                }
            }
        }
        if let Some(s) = owner.iter().position(|o| o.is_none()) {
            return Err(format!("slot {s} belongs to no group"));
        }
        let mut moving = vec![None; kelvin_protocol::SLOT_COUNT];
        for (i, m) in self.migrations.iter().enumerate() {
            if self.migrations[..i].iter().any(|n| n.id == m.id) {
                return Err(format!("migration {} listed twice", m.id));
            }
            if m.source == m.target
                || self.group(m.source).is_none()
                || self.group(m.target).is_none()
            {
                return Err(format!(
                    "migration {}: needs two different existing groups",
                    m.id
                ));
            }
            for &(a, b) in &m.slots {
                for s in a..=b {
                    if let Some(other) = moving[s as usize].replace(m.id) {
                        return Err(format!("slot {s} is in migrations {other} and {}", m.id));
                    }
                    if owner[s as usize] != Some(m.owner()) {
                        return Err(format!(
                            "migration {} ({}): slot {s} should belong to group {}",
                            m.id,
                            m.phase.name(),
                            m.owner()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `new` may follow `self` in the meta group: a slot changes owner only
    /// together with a migration line of `new`, from its old owner to its new one, at or
    /// past the handover.
    pub fn check_transition(&self, new: &Membership) -> Result<(), String> {
        if self.groups.is_empty() {
            return Ok(());
        }
        let (old_owner, new_owner) = (self.slot_groups(), new.slot_groups());
        for s in 0..kelvin_protocol::SLOT_COUNT {
            if old_owner[s] == new_owner[s] {
                continue;
            }
            let covered = new.migrations.iter().any(|m| {
                m.source == old_owner[s]
                    && m.target == new_owner[s]
                    && m.phase >= MigrationPhase::Handover
                    && m.slots
                        .iter()
                        .any(|&(a, b)| (a as usize..=b as usize).contains(&s))
            });
            if !covered {
                return Err(format!(
                    "slot {s} would move from group {} to group {} without a migration",
                    old_owner[s], new_owner[s]
                ));
            }
        }
        Ok(())
    }

    /// The group owning each slot (after [`Membership::validate`]).
    pub fn slot_groups(&self) -> Vec<u64> {
        let mut owner = vec![DATA_GROUP; kelvin_protocol::SLOT_COUNT];
        for g in &self.groups {
            for &(a, b) in &g.slots {
                owner[a as usize..=b as usize].fill(g.id);
            }
        }
        owner
    }

    /// Gives each slot to the group `owner[slot]` names (every group keeps its replicas;
    /// one left without slots keeps an empty range).
    pub fn set_owners(&mut self, owner: &[u64]) {
        for g in &mut self.groups {
            g.slots.clear();
            for (s, _) in owner.iter().enumerate().filter(|(_, &o)| o == g.id) {
                let s = s as u16;
                match g.slots.last_mut() {
                    Some((_, b)) if *b + 1 == s => *b = s,
                    _ => g.slots.push((s, s)),
                }
            }
        }
    }

    pub fn group(&self, id: u64) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Reads `<dir>/cluster.conf`; `None` if the node never joined a cluster.
    pub fn load(dir: &Path) -> std::io::Result<Option<Membership>> {
        let path = dir.join(CONF_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Membership::parse(&text)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
    }

    /// Parses the text of `cluster.conf` (also what the meta group stores), and checks it.
    pub fn parse(text: &str) -> Result<Membership, String> {
        let mut members = Vec::new();
        let mut groups = Vec::new();
        let mut migrations = Vec::new();
        let mut epoch = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: bad line {line:?}", n + 1);
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 2 && f[0] == "epoch" {
                epoch = f[1].parse().map_err(|_| bad())?;
                continue;
            }
            if f.first() == Some(&"migrate") {
                migrations.push(
                    MigrationSpec::parse(&f[1..]).map_err(|e| format!("line {}: {e}", n + 1))?,
                );
                continue;
            }
            if f.len() == 4 && f[0] == "group" {
                groups.push(
                    GroupSpec::parse(f[1], f[2], f[3])
                        .map_err(|e| format!("line {}: {e}", n + 1))?,
                );
                continue;
            }
            // (The redirect port came later: lines without it have none.)
            if !(f.len() == 5 || f.len() == 6) || f[0] != "node" {
                return Err(bad());
            }
            let member = Member {
                id: parse_node_name(f[1]).ok_or_else(bad)?,
                host: f[2].parse().map_err(|_| bad())?,
                port: f[3].parse().map_err(|_| bad())?,
                cport: f[4].parse().map_err(|_| bad())?,
                rport: match f.get(5) {
                    Some(p) => p.parse().map_err(|_| bad())?,
                    None => 0,
                },
            };
            if members.iter().any(|m: &Member| m.id == member.id) {
                return Err(format!("node {} listed twice", f[1]));
            }
            members.push(member);
        }
        let mut m = Membership {
            epoch,
            members,
            groups,
            migrations,
        };
        m.one_group();
        m.validate()?;
        Ok(m)
    }

    /// The text of `cluster.conf`.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Kelvin cluster topology: epoch, node <id> <host> <port> <cluster port> <redirect port>, group <id> <slots> <replicas>, migrate <id> <source> <target> <slots> <phase>\n",
        );
        text.push_str(&format!("epoch {}\n", self.epoch));
        for m in &self.members {
            text.push_str(&format!(
                "node {} {} {} {} {}\n",
                node_name(m.id),
                m.host,
                m.port,
                m.cport,
                m.rport
            ));
        }
        for g in &self.groups {
            let replicas: Vec<String> = g.replicas.iter().map(|&r| node_name(r)).collect();
            text.push_str(&format!(
                "group {} {} {}\n",
                g.id,
                g.slots_text(),
                replicas.join(",")
            ));
        }
        for m in &self.migrations {
            text.push_str(&format!(
                "migrate {} {} {} {} {}\n",
                m.id,
                m.source,
                m.target,
                ranges_text(&m.slots),
                m.phase.name()
            ));
        }
        text
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_durably(dir, CONF_FILE, self.render().as_bytes())
    }

    /// Parses the arguments of `CLUSTER KELVIN-BOOTSTRAP`: `<id> <host> <port> <cport>`
    /// per member.
    pub fn from_args(args: &[&[u8]]) -> Result<Membership, String> {
        // Members first, then `GROUP <id> <slot ranges> <replica ids>` per group.
        let split = args
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"group"))
            .unwrap_or(args.len());
        let (args, group_args) = args.split_at(split);
        let mut groups = Vec::new();
        for g in group_args.chunks(4) {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            match g {
                [kw, id, slots, replicas] if kw.eq_ignore_ascii_case(b"group") => {
                    groups.push(GroupSpec::parse(&text(id), &text(slots), &text(replicas))?)
                }
                _ => return Err("expected GROUP <id> <slot ranges> <replica ids> per group".into()),
            }
        }
        if args.is_empty() || !args.len().is_multiple_of(5) {
            return Err(
                "expected <node-id> <host> <port> <cluster-port> <redirect-port> per member".into(),
            );
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut members = Vec::new();
        for m in args.chunks(5) {
            let member = Member {
                id: parse_node_name(&text(m[0])).ok_or(format!("bad node id '{}'", text(m[0])))?,
                host: text(m[1])
                    .parse()
                    .map_err(|_| format!("bad host '{}'", text(m[1])))?,
                port: text(m[2])
                    .parse()
                    .map_err(|_| format!("bad port '{}'", text(m[2])))?,
                cport: text(m[3])
                    .parse()
                    .map_err(|_| format!("bad cluster port '{}'", text(m[3])))?,
                rport: text(m[4])
                    .parse()
                    .map_err(|_| format!("bad redirect port '{}'", text(m[4])))?,
            };
            if members.iter().any(|x: &Member| x.id == member.id) {
                return Err(format!("node {} listed twice", text(m[0])));
            }
            members.push(member);
        }
        let mut m = Membership {
            epoch: 1,
            members,
            groups,
            migrations: Vec::new(),
        };
        m.one_group();
        m.validate()?;
        Ok(m)
    }
}

/// The key of the meta group's keyspace (database 0) that holds the topology text.
pub const TOPOLOGY_KEY: &[u8] = b"topology";

/// The topology the meta group holds, if it holds one yet.
pub fn stored_topology(store: &mut crate::store::Store) -> Option<Result<Membership, String>> {
    let entry = store.db(0).raw_get(TOPOLOGY_KEY)?;
    let crate::store::Value::Str(text) = &entry.value else {
        return Some(Err("the stored topology is not a string".into()));
    };
    Some(Membership::parse(&String::from_utf8_lossy(text)))
}

/// The epoch of the topology the meta group holds (its `epoch` line), without parsing
/// the rest: what a redirect compares on every MOVED (a whole parse and check of a
/// topology with migrations costs tens of microseconds).
pub fn stored_epoch(store: &mut crate::store::Store) -> Option<u64> {
    let entry = store.db(0).raw_get(TOPOLOGY_KEY)?;
    let crate::store::Value::Str(text) = &entry.value else {
        return None;
    };
    text.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.trim_ascii().strip_prefix(b"epoch")?;
        std::str::from_utf8(rest).ok()?.trim().parse().ok()
    })
}

/// The meta group's state machine: `KELVIN.TOPOLOGY <expected epoch> <text>` replaces the
/// topology if its epoch is still `expected` (0: none yet) and the new one parses, checks,
/// and has a higher epoch. Deterministic: every replica decides alike.
pub fn apply_topology(
    store: &mut crate::store::Store,
    argv: &[bytes::Bytes],
) -> Result<(), String> {
    let [_, expected, text] = argv else {
        return Err("wrong number of arguments for KELVIN.TOPOLOGY".into());
    };
    let expected: u64 = std::str::from_utf8(expected)
        .ok()
        .and_then(|e| e.parse().ok())
        .ok_or("bad epoch")?;
    let old = match stored_topology(store) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => return Err(e),
    };
    let current = old.as_ref().map_or(0, |m| m.epoch);
    if current != expected {
        return Err(format!(
            "the topology changed meanwhile: its epoch is {current}, not {expected}; read it again"
        ));
    }
    let new = Membership::parse(&String::from_utf8_lossy(text))?;
    if new.epoch <= current {
        return Err(format!(
            "the new topology's epoch {} must be above {current}",
            new.epoch
        ));
    }
    if let Some(old) = &old {
        old.check_transition(&new)?;
    }
    store.db(0).insert(
        TOPOLOGY_KEY,
        crate::store::Entry::new(crate::store::Value::Str(new.render().into_bytes())),
    );
    Ok(())
}

/// Writes `name` in `dir` so that after a crash it is either the old or the new content.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips_through_its_file() {
        let dir = std::env::temp_dir().join(format!("kelvin-cluster-conf-{}", std::process::id()));
        let args: Vec<&[u8]> = vec![
            b"a1",
            b"127.0.0.1",
            b"7001",
            b"17001",
            b"27001",
            b"b2",
            b"127.0.0.2",
            b"7002",
            b"17002",
            b"0",
        ];
        let m = Membership::from_args(&args).unwrap();
        m.save(&dir).unwrap();
        assert_eq!(Membership::load(&dir).unwrap(), Some(m.clone()));
        assert_eq!(m.voters(), vec![0xa1, 0xb2]);
        let id = load_or_create_id(&dir).unwrap();
        assert_eq!(load_or_create_id(&dir).unwrap(), id);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Membership::from_args(&args[..3]).is_err());
        assert!(Membership::from_args(&[b"zz", b"h", b"1", b"2", b"0"]).is_err());
        assert_eq!(m.members[0].advertised_port(), 27001);
        assert_eq!(m.members[1].advertised_port(), 7002);
        // A cluster.conf written before redirect ports: none.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONF_FILE), "node a1 127.0.0.1 7001 17001\n").unwrap();
        let old = Membership::load(&dir).unwrap().unwrap();
        assert_eq!(old.members[0].rport, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_stored_epoch_is_the_parsed_one() {
        let mut store = crate::store::Store::default();
        assert_eq!(stored_epoch(&mut store), None);
        let text = "epoch 12\nnode a1 127.0.0.1 7001 17001 0\nnode b2 127.0.0.1 7002 17002 0\ngroup 0 0-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 - a1,b2\nmigrate 7 0 2 0-99 planned\n";
        let m = Membership::parse(text).unwrap();
        let rendered = m.render();
        store.db(0).insert(
            TOPOLOGY_KEY,
            crate::store::Entry::new(crate::store::Value::Str(rendered.into_bytes())),
        );
        assert_eq!(stored_epoch(&mut store), Some(12));
        assert_eq!(stored_topology(&mut store).unwrap().unwrap().epoch, 12);
    }

    #[test]
    fn migrate_lines_round_trip_and_owners_change_only_with_one() {
        let base = "epoch 3\nnode a1 127.0.0.1 7001 17001 0\nnode b2 127.0.0.1 7002 17002 0\n";
        let before = Membership::parse(&format!(
            "{base}group 0 0-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 - a1,b2\n"
        ))
        .unwrap();
        assert!(before.migrations.is_empty());
        // Planned: the source still owns the slots.
        let planned = Membership::parse(&format!(
            "{base}group 0 0-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 - a1,b2\nmigrate 7 0 2 0-99 planned\n"
        ))
        .unwrap();
        assert_eq!(Membership::parse(&planned.render()).unwrap(), planned);
        assert_eq!(planned.migrations[0].owner(), 0);
        before.check_transition(&planned).unwrap();
        // Handover: the owner changes together with the line.
        let handed = Membership::parse(&format!(
            "{base}group 0 100-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 0-99 a1,b2\nmigrate 7 0 2 0-99 handover\n"
        ))
        .unwrap();
        planned.check_transition(&handed).unwrap();
        assert_eq!(handed.slot_groups()[50], 2);
        // Without the line, or with the owner not matching the phase: refused.
        let bare = Membership::parse(&format!(
            "{base}group 0 100-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 0-99 a1,b2\n"
        ))
        .unwrap();
        assert!(planned
            .check_transition(&bare)
            .unwrap_err()
            .contains("slot 0 would move from group 0 to group 2 without a migration"));
        // Once the line is gone the owner stays: no change, nothing to check.
        handed.check_transition(&bare).unwrap();
        let wrong = format!(
            "{base}group 0 0-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 - a1,b2\nmigrate 7 0 2 0-99 handover\n"
        );
        assert!(Membership::parse(&wrong)
            .unwrap_err()
            .contains("slot 0 should belong to group 2"));
        let twice = format!(
            "{base}group 0 0-8000 a1\ngroup 1 8001-16383 b2\ngroup 2 - a1,b2\nmigrate 7 0 2 0-9 planned\nmigrate 8 0 1 5 planned\n"
        );
        assert!(Membership::parse(&twice)
            .unwrap_err()
            .contains("slot 5 is in migrations 7 and 8"));
        let same =
            format!("{base}group 0 0-8000 a1\ngroup 1 8001-16383 b2\nmigrate 7 0 0 5 planned\n");
        assert!(Membership::parse(&same)
            .unwrap_err()
            .contains("two different"));
        let phase =
            format!("{base}group 0 0-8000 a1\ngroup 1 8001-16383 b2\nmigrate 7 0 1 5 later\n");
        assert!(Membership::parse(&phase)
            .unwrap_err()
            .contains("bad migration phase"));
    }

    #[test]
    fn groups_round_trip_and_must_cover_every_slot_once() {
        let dir = std::env::temp_dir().join(format!("kelvin-groups-conf-{}", std::process::id()));
        let mut args: Vec<&[u8]> = vec![
            b"a1",
            b"127.0.0.1",
            b"7001",
            b"17001",
            b"0",
            b"b2",
            b"127.0.0.1",
            b"7002",
            b"17002",
            b"0",
        ];
        args.extend_from_slice(&[b"GROUP", b"0", b"0-8000", b"a1,b2"]);
        args.extend_from_slice(&[b"GROUP", b"1", b"8001-16382,16383", b"b2"]);
        let m = Membership::from_args(&args).unwrap();
        assert_eq!(m.groups.len(), 2);
        assert_eq!(m.groups[1].slots_text(), "8001-16382,16383");
        let owner = m.slot_groups();
        assert_eq!(
            (owner[0], owner[8000], owner[8001], owner[16383]),
            (0, 0, 1, 1)
        );
        m.save(&dir).unwrap();
        assert_eq!(Membership::load(&dir).unwrap(), Some(m));
        let _ = std::fs::remove_dir_all(&dir);

        let mut gap = args[..10].to_vec();
        gap.extend_from_slice(&[b"GROUP", b"0", b"0-100", b"a1"]);
        assert!(Membership::from_args(&gap)
            .unwrap_err()
            .contains("slot 101 belongs to no group"));
        let mut twice = args[..10].to_vec();
        twice.extend_from_slice(&[
            b"GROUP", b"0", b"0-16383", b"a1", b"GROUP", b"1", b"5", b"a1",
        ]);
        assert!(Membership::from_args(&twice)
            .unwrap_err()
            .contains("slot 5 is in groups 0 and 1"));
        let mut stranger = args[..10].to_vec();
        stranger.extend_from_slice(&[b"GROUP", b"0", b"0-16383", b"c3"]);
        assert!(Membership::from_args(&stranger)
            .unwrap_err()
            .contains("not a member"));
        // A group may own no slot (a resharding target before its first slot, a source
        // after its last): written as `-`, read back as none.
        let mut empty = args.clone();
        empty.extend_from_slice(&[b"GROUP", b"2", b"-", b"a1"]);
        let m = Membership::from_args(&empty).unwrap();
        assert!(m.group(2).unwrap().slots.is_empty());
        assert!(m.render().contains("group 2 - "));
        assert_eq!(Membership::parse(&m.render()).unwrap(), m);
        assert_eq!(m.slot_groups()[16383], 1);
        // Without GROUP: one group of everyone (clusters formed before groups).
        let one = Membership::from_args(&args[..10]).unwrap();
        assert_eq!(one.groups.len(), 1);
        assert_eq!(one.groups[0].replicas, vec![0xa1, 0xb2]);
    }
}
