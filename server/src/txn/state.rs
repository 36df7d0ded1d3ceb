//! What a group knows of transactions across groups: replicated state, changed only by
//! applying `KELVIN.TX` entries (so the same on every replica), carried by snapshots
//! ([`TxState::encode`]). Pure: no I/O, no clock but the log's.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use super::{TxId, PREPARE_LOCKED, RESOLVE_AFTER_MS};

/// Most decisions a record group keeps that no coordinator has told it to forget (a
/// coordinator that died after deciding leaves its decision behind): the oldest go first.
pub const MAX_DECISIONS: usize = 1_000_000;
/// How long (log time) such a decision is kept at most. A participant asks for a decision
/// [`RESOLVE_AFTER_MS`] after its prepare, as soon as its group has a leader; one that
/// could not ask for an hour (its group had no leader that long) finds no decision and
/// aborts, the one case where a transaction's groups could disagree.
pub const DECISION_KEEP_MS: u64 = 3_600_000;
/// Most outcomes of finished transactions a group keeps (so that a late PREPARE or a
/// repeated FINISH of one of them is answered, not applied).
pub const MAX_FINISHED: usize = 100_000;

/// A transaction prepared in this group: its keys are locked until it finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The group whose log holds the decision.
    pub record: u64,
    /// Log time of the prepare.
    pub prepared_ms: u64,
    /// The keys it locks (its commands' keys and the watched keys of this group).
    pub keys: Vec<(u8, Bytes)>,
    /// Its commands in this group, in order: (database, argv). When `replicated`, every
    /// command of the transaction: they run here over a copy of all its keys (the
    /// others' as their groups read them at PREPARE), and only `own` keys are kept.
    pub items: Vec<(u8, Vec<Bytes>)>,
    /// A transaction with a command whose keys span groups: see `items`.
    pub replicated: bool,
    /// When `replicated`: the transaction's keys this group holds.
    pub own: Vec<(u8, Bytes)>,
}

/// The keys of a replicated transaction with their values as each group read them at
/// PREPARE (locked since): `(db, key, None)` for an absent key, else `Some((expire_at,
/// DUMP payload))`. FINISH COMMIT carries it to every participant, and DECIDE to the
/// record group, so that a participant resolving alone can finish.
pub type View = Vec<(u8, Bytes, Option<(u64, Bytes)>)>;

/// [`View`]'s encoding.
pub fn encode_view(view: &View) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put(&mut out, view.len() as u64);
    for (db, key, value) in view {
        out.push(*db);
        put_bytes(&mut out, key);
        match value {
            None => out.push(0),
            Some((expire_at, payload)) => {
                out.push(1);
                put(&mut out, *expire_at);
                put_bytes(&mut out, payload);
            }
        }
    }
    out
}

/// Decodes [`encode_view`]'s output.
pub fn decode_view(mut buf: &[u8]) -> Result<View, &'static str> {
    let r = &mut buf;
    if take(r, 1)? != [FORMAT] {
        return Err("a transaction view of an unknown format");
    }
    let mut view = Vec::new();
    for _ in 0..count(r)? {
        let db = take(r, 1)?[0];
        let key = get_bytes(r)?;
        let value = match take(r, 1)?[0] {
            0 => None,
            1 => Some((get(r)?, get_bytes(r)?)),
            _ => return Err("bad value in a transaction view"),
        };
        view.push((db, key, value));
    }
    if !r.is_empty() {
        return Err("trailing bytes after a transaction view");
    }
    Ok(view)
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxState {
    prepared: BTreeMap<TxId, Prepared>,
    /// key -> (database, holder): looked up by the key's bytes, with no allocation.
    locks: HashMap<Bytes, Vec<(u8, TxId)>>,
    /// Decisions recorded here (this group is their record group): commit?, log time,
    /// and a replicated transaction's view ([`View`], encoded).
    decisions: HashMap<TxId, (bool, u64, Option<Bytes>)>,
    decision_order: VecDeque<(TxId, u64)>,
    /// Outcomes of the transactions that finished here (commit?), oldest first.
    finished: HashMap<TxId, bool>,
    finished_order: VecDeque<TxId>,
}

impl TxState {
    /// Whether no transaction is prepared here (nothing is locked).
    pub fn is_idle(&self) -> bool {
        self.prepared.is_empty()
    }

    /// Whether nothing at all is kept (no snapshot chunk needed).
    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty() && self.decisions.is_empty() && self.finished.is_empty()
    }

    /// The transaction holding `key` of database `db`, if one does.
    pub fn holder(&self, db: u8, key: &[u8]) -> Option<TxId> {
        if self.locks.is_empty() {
            return None;
        }
        let holders = self.locks.get(key)?;
        holders.iter().find(|(d, _)| *d == db).map(|&(_, tx)| tx)
    }

    pub fn prepared(&self, tx: TxId) -> Option<&Prepared> {
        self.prepared.get(&tx)
    }

    /// How many transactions are prepared here.
    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }

    /// Prepares `tx`: locks its keys. Preparing a transaction that is prepared already is
    /// a no-op (a coordinator's retry); one that finished here, or whose keys another
    /// transaction holds, is refused.
    pub fn prepare(&mut self, tx: TxId, p: Prepared) -> Result<(), String> {
        if self.prepared.contains_key(&tx) {
            return Ok(());
        }
        if let Some(&commit) = self.finished.get(&tx) {
            return Err(format!(
                "ERR transaction {tx} already {} here",
                if commit { "committed" } else { "aborted" }
            ));
        }
        if p.keys.iter().any(|(db, k)| self.holder(*db, k).is_some()) {
            return Err(PREPARE_LOCKED.to_string());
        }
        for (db, k) in &p.keys {
            self.locks.entry(k.clone()).or_default().push((*db, tx));
        }
        self.prepared.insert(tx, p);
        Ok(())
    }

    /// Records the decision on `tx` if none is recorded yet; returns the recorded one
    /// (the first logged wins: a coordinator's COMMIT and a resolver's ABORT race here).
    pub fn decide(&mut self, tx: TxId, commit: bool, now_ms: u64) -> bool {
        self.decide_with(tx, commit, None, now_ms).0
    }

    /// [`TxState::decide`] with a replicated transaction's view kept beside a COMMIT;
    /// returns the decision recorded and its view.
    pub fn decide_with(
        &mut self,
        tx: TxId,
        commit: bool,
        view: Option<Bytes>,
        now_ms: u64,
    ) -> (bool, Option<Bytes>) {
        if let Some((recorded, _, view)) = self.decisions.get(&tx) {
            return (*recorded, view.clone());
        }
        let view = view.filter(|_| commit);
        self.decisions.insert(tx, (commit, now_ms, view.clone()));
        self.decision_order.push_back((tx, now_ms));
        while let Some(&(old, at)) = self.decision_order.front() {
            let expired = at.saturating_add(DECISION_KEEP_MS) < now_ms;
            if !expired && self.decision_order.len() <= MAX_DECISIONS {
                break;
            }
            self.decision_order.pop_front();
            if self.decisions.get(&old).is_some_and(|d| d.1 == at) {
                self.decisions.remove(&old);
            }
        }
        (commit, view)
    }

    /// The decision recorded here on `tx`, if any.
    pub fn decision(&self, tx: TxId) -> Option<bool> {
        self.decisions.get(&tx).map(|d| d.0)
    }

    /// Drops the decision on `tx` (every participant finished).
    pub fn forget(&mut self, tx: TxId) {
        self.decisions.remove(&tx);
    }

    /// Finishes `tx` here: unlocks its keys and returns it (its commands run if
    /// `commit`); `None` if it is not prepared here.
    pub fn finish(&mut self, tx: TxId, commit: bool) -> Option<Prepared> {
        let p = self.prepared.remove(&tx)?;
        for (db, k) in &p.keys {
            if let Some(holders) = self.locks.get_mut(k) {
                holders.retain(|h| *h != (*db, tx));
                if holders.is_empty() {
                    self.locks.remove(k);
                }
            }
        }
        self.remember(tx, commit);
        Some(p)
    }

    /// Remembers `tx` as aborted here though it was never prepared here (its PREPARE
    /// was lost or refused), so that a PREPARE of it arriving late locks nothing.
    pub fn mark_aborted(&mut self, tx: TxId) {
        if !self.finished.contains_key(&tx) && !self.prepared.contains_key(&tx) {
            self.remember(tx, false);
        }
    }

    fn remember(&mut self, tx: TxId, commit: bool) {
        self.finished.insert(tx, commit);
        self.finished_order.push_back(tx);
        while self.finished_order.len() > MAX_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// How `tx` ended here, if it did (and is still remembered).
    pub fn outcome(&self, tx: TxId) -> Option<bool> {
        self.finished.get(&tx).copied()
    }

    /// Whether a prepared transaction holds a key of one of `slots`.
    pub fn holds_any_slot(&self, slots: &[u16]) -> bool {
        self.locks
            .keys()
            .any(|k| slots.contains(&kelvin_protocol::key_slot(k)))
    }

    /// The transactions prepared here for longer than [`RESOLVE_AFTER_MS`] of log time
    /// at `now_ms`, with their record groups.
    pub fn stale(&self, now_ms: u64) -> Vec<(TxId, u64)> {
        self.prepared
            .iter()
            .filter(|(_, p)| p.prepared_ms.saturating_add(RESOLVE_AFTER_MS) <= now_ms)
            .map(|(tx, p)| (*tx, p.record))
            .collect()
    }

    /// The state's encoding, for snapshots.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        put(&mut out, self.prepared.len() as u64);
        for (tx, p) in &self.prepared {
            put_tx(&mut out, *tx);
            put(&mut out, p.record);
            put(&mut out, p.prepared_ms);
            put(&mut out, p.keys.len() as u64);
            for (db, key) in &p.keys {
                out.push(*db);
                put_bytes(&mut out, key);
            }
            put(&mut out, p.items.len() as u64);
            for (db, argv) in &p.items {
                out.push(*db);
                put(&mut out, argv.len() as u64);
                for a in argv {
                    put_bytes(&mut out, a);
                }
            }
            out.push(u8::from(p.replicated));
            put(&mut out, p.own.len() as u64);
            for (db, key) in &p.own {
                out.push(*db);
                put_bytes(&mut out, key);
            }
        }
        put(&mut out, self.decision_order.len() as u64);
        for &(tx, at) in &self.decision_order {
            put_tx(&mut out, tx);
            put(&mut out, at);
            // The decision, or 2: forgotten or replaced since (kept for the order only);
            // then its view, if any.
            match self.decisions.get(&tx) {
                Some((c, t, view)) if *t == at => {
                    out.push(u8::from(*c));
                    match view {
                        Some(v) => {
                            out.push(1);
                            put_bytes(&mut out, v);
                        }
                        None => out.push(0),
                    }
                }
                _ => out.push(2),
            }
        }
        put(&mut out, self.finished_order.len() as u64);
        for tx in &self.finished_order {
            put_tx(&mut out, *tx);
            out.push(self.finished.get(tx).map_or(2, |&c| u8::from(c)));
        }
        out
    }

    /// Decodes [`TxState::encode`]'s output; the locks are rebuilt from the prepared
    /// transactions.
    pub fn decode(mut buf: &[u8]) -> Result<TxState, &'static str> {
        let r = &mut buf;
        if take(r, 1)? != [FORMAT] {
            return Err("transaction state of an unknown format");
        }
        let mut s = TxState::default();
        for _ in 0..count(r)? {
            let tx = get_tx(r)?;
            let record = get(r)?;
            let prepared_ms = get(r)?;
            let mut keys = Vec::new();
            for _ in 0..count(r)? {
                let db = take(r, 1)?[0];
                keys.push((db, get_bytes(r)?));
            }
            let mut items = Vec::new();
            for _ in 0..count(r)? {
                let db = take(r, 1)?[0];
                let mut argv = Vec::new();
                for _ in 0..count(r)? {
                    argv.push(get_bytes(r)?);
                }
                items.push((db, argv));
            }
            let replicated = match take(r, 1)?[0] {
                0 => false,
                1 => true,
                _ => return Err("bad mode in transaction state"),
            };
            let mut own = Vec::new();
            for _ in 0..count(r)? {
                let db = take(r, 1)?[0];
                own.push((db, get_bytes(r)?));
            }
            let p = Prepared {
                record,
                prepared_ms,
                keys,
                items,
                replicated,
                own,
            };
            s.prepare(tx, p)
                .map_err(|_| "transaction state with overlapping locks")?;
        }
        for _ in 0..count(r)? {
            let tx = get_tx(r)?;
            let at = get(r)?;
            match take(r, 1)?[0] {
                c @ (0 | 1) => {
                    let view = match take(r, 1)?[0] {
                        0 => None,
                        1 => Some(get_bytes(r)?),
                        _ => return Err("bad view in transaction state"),
                    };
                    s.decisions.insert(tx, (c == 1, at, view));
                }
                2 => {}
                _ => return Err("bad decision in transaction state"),
            }
            s.decision_order.push_back((tx, at));
        }
        for _ in 0..count(r)? {
            let tx = get_tx(r)?;
            match take(r, 1)?[0] {
                c @ (0 | 1) => {
                    s.finished.insert(tx, c == 1);
                }
                2 => {}
                _ => return Err("bad outcome in transaction state"),
            }
            s.finished_order.push_back(tx);
        }
        if !r.is_empty() {
            return Err("trailing bytes after transaction state");
        }
        Ok(s)
    }
}

const FORMAT: u8 = 1;

fn put(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_tx(out: &mut Vec<u8>, tx: TxId) {
    put(out, tx.origin);
    put(out, tx.seq);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if r.len() < n {
        return Err("truncated transaction state");
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

fn get(r: &mut &[u8]) -> Result<u64, &'static str> {
    let b = take(r, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// A count, bounded by the bytes left (each element takes at least one): a corrupt
/// count cannot make the decoder reserve or loop past its input.
fn count(r: &mut &[u8]) -> Result<u64, &'static str> {
    let n = get(r)?;
    if n > r.len() as u64 {
        return Err("bad count in transaction state");
    }
    Ok(n)
}

fn get_tx(r: &mut &[u8]) -> Result<TxId, &'static str> {
    Ok(TxId {
        origin: get(r)?,
        seq: get(r)?,
    })
}

fn get_bytes(r: &mut &[u8]) -> Result<Bytes, &'static str> {
    let n = count(r)? as usize;
    Ok(Bytes::copy_from_slice(take(r, n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(seq: u64) -> TxId {
        TxId { origin: 7, seq }
    }

    fn prepared(keys: &[&str], at: u64) -> Prepared {
        Prepared {
            record: 1,
            prepared_ms: at,
            keys: keys
                .iter()
                .map(|k| (0, Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
            items: vec![(
                0,
                vec![Bytes::from_static(b"SET"), Bytes::from_static(b"a")],
            )],
            replicated: false,
            own: Vec::new(),
        }
    }

    #[test]
    fn locks_are_exclusive_until_finish() {
        let mut s = TxState::default();
        assert_eq!(s.prepare(tx(1), prepared(&["a", "b"], 10)), Ok(()));
        // A retry of the same prepare is a no-op.
        assert_eq!(s.prepare(tx(1), prepared(&["a", "b"], 11)), Ok(()));
        assert_eq!(s.holder(0, b"b"), Some(tx(1)));
        assert_eq!(s.holder(1, b"b"), None);
        assert_eq!(
            s.prepare(tx(2), prepared(&["b", "c"], 12)),
            Err(PREPARE_LOCKED.to_string())
        );
        assert_eq!(s.holder(0, b"c"), None);
        assert!(s.finish(tx(1), true).is_some());
        assert_eq!(s.holder(0, b"a"), None);
        assert!(s.is_idle());
        // Finished: a late prepare of it is refused, and it is not finished twice.
        assert!(s.prepare(tx(1), prepared(&["a"], 13)).is_err());
        assert!(s.finish(tx(1), false).is_none());
        assert_eq!(s.outcome(tx(1)), Some(true));
        assert_eq!(s.prepare(tx(2), prepared(&["b", "c"], 14)), Ok(()));
    }

    #[test]
    fn the_first_decision_logged_wins() {
        let mut s = TxState::default();
        assert!(!s.decide(tx(1), false, 5));
        assert!(!s.decide(tx(1), true, 6));
        assert!(s.decide(tx(2), true, 6));
        assert_eq!(s.decision(tx(2)), Some(true));
        s.forget(tx(2));
        assert_eq!(s.decision(tx(2)), None);
    }

    #[test]
    fn decisions_are_kept_an_hour_of_log_time() {
        let mut s = TxState::default();
        s.decide(tx(1), true, 1000);
        s.decide(tx(2), true, 1000 + DECISION_KEEP_MS);
        assert_eq!(s.decision(tx(1)), Some(true));
        s.decide(tx(3), false, 1001 + DECISION_KEEP_MS);
        assert_eq!(s.decision(tx(1)), None);
        assert_eq!(s.decision(tx(2)), Some(true));
    }

    #[test]
    fn views_round_trip_and_a_commit_keeps_its_view() {
        let view: View = vec![
            (0, Bytes::from_static(b"a"), None),
            (
                3,
                Bytes::from_static(b"b"),
                Some((17, Bytes::from_static(b"payload"))),
            ),
        ];
        let bytes = encode_view(&view);
        assert_eq!(decode_view(&bytes).unwrap(), view);
        for cut in 0..bytes.len() {
            assert!(decode_view(&bytes[..cut]).is_err());
        }
        let mut s = TxState::default();
        let v = Some(Bytes::from(bytes));
        assert_eq!(s.decide_with(tx(1), true, v.clone(), 1), (true, v.clone()));
        // A resolver's ABORT afterwards learns the COMMIT and its view.
        assert_eq!(s.decide_with(tx(1), false, None, 2), (true, v));
        // An ABORT keeps no view.
        assert_eq!(
            s.decide_with(tx(2), false, Some(Bytes::from_static(b"x")), 3),
            (false, None)
        );
    }

    #[test]
    fn stale_transactions_are_found_by_log_time() {
        let mut s = TxState::default();
        s.prepare(tx(1), prepared(&["a"], 1000)).unwrap();
        s.prepare(tx(2), prepared(&["b"], 2500)).unwrap();
        assert_eq!(s.stale(2999), vec![]);
        assert_eq!(s.stale(3000), vec![(tx(1), 1)]);
    }

    #[test]
    fn state_round_trips_and_corrupt_input_is_refused() {
        let mut s = TxState::default();
        s.prepare(tx(1), prepared(&["a", "b"], 10)).unwrap();
        s.prepare(tx(2), prepared(&["c"], 11)).unwrap();
        s.finish(tx(2), false);
        s.decide(tx(3), true, 12);
        s.decide(tx(4), false, 13);
        s.decide_with(tx(5), true, Some(Bytes::from_static(b"view")), 14);
        let mut r = prepared(&["r"], 15);
        r.replicated = true;
        r.own = vec![(0, Bytes::from_static(b"r"))];
        s.prepare(tx(6), r).unwrap();
        s.forget(tx(3));
        let bytes = s.encode();
        let back = TxState::decode(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.holder(0, b"a"), Some(tx(1)));
        for cut in 0..bytes.len() {
            assert!(TxState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut big = bytes.clone();
        big[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(TxState::decode(&big).is_err());
    }
}
