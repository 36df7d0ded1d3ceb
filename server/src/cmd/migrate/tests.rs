//! Unit tests of the migration commands, against a store in process.

use super::*;
use crate::store::{Entry, Store, Value};
use kelvin_protocol::ReplyWriter;

fn run(store: &mut Store, words: &[&str], now_ms: u64) -> Vec<u8> {
    let argv: Vec<Bytes> = words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let spec = crate::cmd::lookup(&argv[0]).unwrap();
    let crate::cmd::Handler::Data(handler) = spec.handler else {
        panic!("a data command")
    };
    let mut out = ReplyWriter::default();
    let (mut events, mut lazy) = (Vec::new(), Vec::new());
    let mut ex = Exec {
        store,
        db: 0,
        now_ms,
        out: &mut out,
        events: &mut events,
        lazy_expired: &mut lazy,
        may_block: false,
        local_read: false,
        block: None,
    };
    if let Err(e) = handler(&mut ex, &argv) {
        out.error(&e.0);
    }
    out.buf
}

/// The bulk strings of a reply, in order (keys without CR or LF).
fn bulks(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply).to_string();
    let lines: Vec<&str> = text.split("\r\n").collect();
    lines
        .windows(2)
        .filter(|w| w[0].starts_with('$') && w[0] != "$-1")
        .map(|w| w[1].to_string())
        .collect()
}

/// Every name `KELVIN.MIGRATE-NAMES` gives for migration 7 in pages of `count`.
fn all_names(store: &mut Store, count: &str, options: &[&str]) -> Vec<String> {
    let (mut slot, mut cursor, mut names) = ("0".to_string(), "0".to_string(), Vec::new());
    for _ in 0..100 {
        let mut words = vec!["KELVIN.MIGRATE-NAMES", "7", "0", &slot, &cursor, count];
        words.extend_from_slice(options);
        let page = String::from_utf8_lossy(&run(store, &words, 100)).to_string();
        assert!(page.starts_with("*3\r\n:"), "{page}");
        let fields: Vec<&str> = page.split("\r\n").collect();
        (slot, cursor) = (fields[1][1..].to_string(), fields[2][1..].to_string());
        names.extend(bulks(page.as_bytes()));
        if slot == "16384" {
            names.sort();
            return names;
        }
    }
    panic!("KELVIN.MIGRATE-NAMES never ended")
}

/// Every key of a whole SCAN iteration (`words` before the cursor).
fn scan_all(store: &mut Store, words: &[&str]) -> Vec<String> {
    let (mut cursor, mut keys) = ("0".to_string(), Vec::new());
    for _ in 0..100 {
        let mut argv = words.to_vec();
        argv.extend(["SCAN", &cursor, "COUNT", "1000"]);
        let page = bulks(&run(store, &argv, 100));
        cursor = page[0].clone();
        keys.extend(page[1..].iter().cloned());
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN never ended")
}

fn put(store: &mut Store, key: &str, value: Value, expire_at: u64) {
    let mut e = Entry::new(value);
    e.expire_at = expire_at;
    store.db(0).insert(key.as_bytes(), e);
}

#[test]
fn hot_lists_the_sealed_slots_keys_read_most_lately() {
    let mut store = Store::default();
    let slot = kelvin_protocol::key_slot(b"{m}a");
    put(&mut store, "{m}a", Value::Str(b"va".to_vec()), 0);
    put(&mut store, "{m}b", Value::Str(b"vb".to_vec()), 0);
    put(&mut store, "{m}old", Value::Str(b"v".to_vec()), 50);
    put(&mut store, "elsewhere", Value::Str(b"v".to_vec()), 0);
    let mut read = |key: &str, times: usize| {
        for _ in 0..times * crate::store::recent::RECENT_EVERY as usize {
            store.recent.note(0, key.as_bytes());
        }
    };
    read("{m}b", 1);
    read("{m}a", 3);
    read("elsewhere", 5);
    read("{m}gone", 5);
    read("{m}old", 5);
    let hot = ["KELVIN.MIGRATE-HOT", "7", "10"];
    assert_eq!(
        run(&mut store, &hot, 100),
        b"-ERR no slot is sealed by migration 7 in this group\r\n"
    );
    store.migrations.seal(7, &[slot], 2).unwrap();
    // Live keys of the sealed slot only (not the one gone, nor the expired one), the
    // most read first, with their bytes.
    let a = 4 + Value::Str(b"va".to_vec()).approx_bytes();
    let b = 4 + Value::Str(b"vb".to_vec()).approx_bytes();
    let want =
        format!("*2\r\n*3\r\n:0\r\n$4\r\n{{m}}a\r\n:{a}\r\n*3\r\n:0\r\n$4\r\n{{m}}b\r\n:{b}\r\n");
    assert_eq!(String::from_utf8_lossy(&run(&mut store, &hot, 100)), want);
    let one = run(&mut store, &["KELVIN.MIGRATE-HOT", "7", "1"], 100);
    assert!(one.starts_with(b"*1\r\n*3\r\n:0\r\n$4\r\n{m}a\r\n"));
    assert!(run(&mut store, &["KELVIN.MIGRATE-HOT", "8", "1"], 100).starts_with(b"-ERR no slot"));
    assert!(run(&mut store, &["KELVIN.MIGRATE-HOT", "7", "x"], 100).starts_with(b"-ERR"));
}

/// The after-the-fact comparison's two questions: at the target, which keys were
/// accessed since a migration wrote them; at the source, which of the keys only the
/// heat planner would have pushed were pulled (fault-ins), each counted once.
#[test]
fn touched_counts_accesses_since_arrival_and_compare_counts_pulls_of_heat_only_keys() {
    let mut target = Store::default();
    for (key, accesses) in [("{m}a", 1u64), ("{m}b", 2), ("{m}c", 5)] {
        let mut e = Entry::new(Value::Str(b"v".to_vec()));
        for i in 0..accesses {
            e.heat.touch(1_000 + i * 1_000, false);
        }
        target.db(0).insert(key.as_bytes(), e);
    }
    // Arrived and never accessed since, accessed after, and a key not here.
    let touched = [
        "KELVIN.MIGRATE-TOUCHED",
        "7",
        "0",
        "{m}a",
        "{m}b",
        "{m}c",
        "{m}x",
    ];
    assert_eq!(run(&mut target, &touched, 9_000), b":2\r\n");
    let mut too_many = vec!["KELVIN.MIGRATE-TOUCHED", "7", "0"];
    too_many.extend(std::iter::repeat_n("{m}a", MAX_MOVE_BATCH + 1));
    assert!(run(&mut target, &too_many, 9_000).starts_with(b"-ERR at most 1000 keys"));

    // The comparison's keys are process-wide: not while another test evicts them.
    let _alone = crate::migrate::compare::TESTS_USING_KEPT.lock();
    let migration = 4_242_001u64;
    let id = migration.to_string();
    let mut source = Store::default();
    for k in ["{m}a", "{m}b", "{m}c"] {
        put(&mut source, k, Value::Str(b"v".to_vec()), 0);
    }
    let slot = kelvin_protocol::key_slot(b"{m}a");
    source.migrations.seal(migration, &[slot], 2).unwrap();
    let compare = ["KELVIN.MIGRATE-COMPARE", id.as_str()];
    assert!(run(&mut source, &compare, 100).starts_with(b"-ERR no plan of migration"));
    crate::migrate::compare::planned(migration, [(0, b"{m}b".to_vec()), (0, b"{m}c".to_vec())]);
    // The eager push pulls the model's keys ({m}a); a fault-in pulls {m}b, twice.
    for key in ["{m}a", "{m}b", "{m}b"] {
        let pulled = run(&mut source, &["KELVIN.MIGRATE-PULL", &id, "0", key], 100);
        assert!(pulled.starts_with(b"*1\r\n*2\r\n"), "{pulled:?}");
    }
    assert_eq!(run(&mut source, &compare, 100), b"*3\r\n:2\r\n:1\r\n:0\r\n");
}

#[test]
fn names_list_both_sides_and_unsettled_says_what_is_still_the_sources() {
    let slot = kelvin_protocol::key_slot(b"{m}a");
    let mut source = Store::default();
    for k in ["{m}a", "{m}b", "{m}c"] {
        put(&mut source, k, Value::Str(b"v".to_vec()), 0);
    }
    put(&mut source, "{m}h", Value::Hash(Default::default()), 0);
    put(&mut source, "{m}gone", Value::Str(b"v".to_vec()), 10);
    put(&mut source, "elsewhere", Value::Str(b"v".to_vec()), 0);
    assert_ne!(kelvin_protocol::key_slot(b"elsewhere"), slot);
    let names = ["KELVIN.MIGRATE-NAMES", "7", "0", "0", "0", "10"];
    assert_eq!(
        run(&mut source, &names, 100),
        b"-ERR no migration 7 here\r\n"
    );
    assert_eq!(run(&mut source, &["DBSIZE"], 100), b":6\r\n");
    source.migrations.seal(7, &[slot], 2).unwrap();
    // The source's own listings leave the sealed slot out; its names are all there,
    // the expired key aside, in pages of any size, with MATCH and TYPE.
    assert_eq!(run(&mut source, &["DBSIZE"], 100), b":1\r\n");
    assert_eq!(bulks(&run(&mut source, &["KEYS", "*"], 100)), ["elsewhere"]);
    assert_eq!(scan_all(&mut source, &[]), ["elsewhere"]);
    assert_eq!(bulks(&run(&mut source, &["RANDOMKEY"], 100)), ["elsewhere"]);
    let every = ["{m}a", "{m}b", "{m}c", "{m}h"];
    assert_eq!(all_names(&mut source, "1", &[]), every);
    assert_eq!(all_names(&mut source, "1000", &[]), every);
    assert_eq!(all_names(&mut source, "2", &["MATCH", "*a"]), ["{m}a"]);
    assert_eq!(all_names(&mut source, "2", &["TYPE", "hash"]), ["{m}h"]);
    let bad = ["KELVIN.MIGRATE-NAMES", "7", "0", "0", "0", "10", "MATCH"];
    assert!(run(&mut source, &bad, 100).starts_with(b"-ERR syntax"));

    // The target: b written there, c moved there, a and h still the source's.
    let mut target = Store::default();
    let unsettled = ["KELVIN.MIGRATE-UNSETTLED", "7", "0", "{m}a", "{m}b", "{m}c"];
    assert_eq!(
        run(&mut target, &unsettled, 100),
        b"-ERR no migration 7 here\r\n"
    );
    target.migrations.import(7, &[slot], 1).unwrap();
    assert_eq!(
        bulks(&run(&mut target, &unsettled, 100)),
        ["{m}a", "{m}b", "{m}c"]
    );
    target.migrations.settle(0, b"{m}b");
    assert!(target.migrations.accept_moved(0, b"{m}c"));
    put(&mut target, "{m}c", Value::Str(b"v".to_vec()), 0);
    put(&mut target, "own", Value::Str(b"v".to_vec()), 0);
    assert_eq!(bulks(&run(&mut target, &unsettled, 100)), ["{m}a"]);
    let wrong = ["KELVIN.MIGRATE-UNSETTLED", "7", "0", "elsewhere"];
    assert!(run(&mut target, &wrong, 100).starts_with(b"-ERR slot"));
    assert_eq!(all_names(&mut target, "10", &[]), ["{m}c"]);
    // Plain listings keep an imported slot; KELVIN.OUTSIDE leaves it out.
    assert_eq!(run(&mut target, &["DBSIZE"], 100), b":2\r\n");
    assert_eq!(
        run(&mut target, &["KELVIN.OUTSIDE", "DBSIZE"], 100),
        b":1\r\n"
    );
    assert_eq!(
        bulks(&run(&mut target, &["KELVIN.OUTSIDE", "KEYS", "*"], 100)),
        ["own"]
    );
    assert_eq!(scan_all(&mut target, &["KELVIN.OUTSIDE"]), ["own"]);
    assert_eq!(scan_all(&mut target, &[]).len(), 2);
    assert_eq!(
        bulks(&run(&mut target, &["KELVIN.OUTSIDE", "RANDOMKEY"], 100)),
        ["own"]
    );
    assert!(run(&mut target, &["KELVIN.OUTSIDE", "GET", "x"], 100).starts_with(b"-ERR"));
    assert!(run(&mut target, &["KELVIN.OUTSIDE", "KEYS"], 100).starts_with(b"-ERR wrong number"));
    // Finished: nothing left to ask either side.
    target.migrations.finish(7).unwrap();
    assert_eq!(
        run(&mut target, &unsettled, 100),
        b"-ERR no migration 7 here\r\n"
    );
    assert_eq!(
        run(&mut target, &["KELVIN.OUTSIDE", "DBSIZE"], 100),
        b":2\r\n"
    );
}

#[test]
fn pull_and_scan_read_only_sealed_slots() {
    let mut store = Store::default();
    let slot = kelvin_protocol::key_slot(b"{m}a");
    for (k, exp) in [("{m}a", 0), ("{m}b", 5000), ("{m}gone", 10)] {
        let mut e = Entry::new(Value::Str(k.as_bytes().to_vec()));
        e.expire_at = exp;
        store.db(0).insert(k.as_bytes(), e);
    }
    let pull = [
        "KELVIN.MIGRATE-PULL",
        "7",
        "0",
        "{m}a",
        "{m}missing",
        "{m}gone",
    ];
    let refused = run(&mut store, &pull, 100);
    assert!(
        refused.starts_with(b"-ERR slot"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    store.migrations.seal(7, &[slot], 2).unwrap();
    let got = run(&mut store, &pull, 100);
    let payload = crate::rdb::dump(&Value::Str(b"{m}a".to_vec()));
    let mut want = b"*3\r\n*2\r\n:0\r\n".to_vec();
    want.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    want.extend_from_slice(&payload);
    want.extend_from_slice(b"\r\n$-1\r\n$-1\r\n");
    assert_eq!(got, want);
    // Pages of one key; the expired key never moves.
    let (mut at, mut cursor, mut seen, mut pages) = (slot.to_string(), "0".to_string(), 0, 0);
    while at != "16384" && pages < 10 {
        let page = run(
            &mut store,
            &["KELVIN.MIGRATE-SCAN", "7", "0", &at, &cursor, "1"],
            100,
        );
        let text = String::from_utf8_lossy(&page).to_string();
        assert!(text.starts_with("*3\r\n:"), "{text}");
        let fields: Vec<&str> = text.split("\r\n").collect();
        at = fields[1][1..].to_string();
        cursor = fields[2][1..].to_string();
        seen += text.matches("{m}").count();
        pages += 1;
    }
    assert_eq!(at, "16384");
    // {m}a and {m}b, each named twice (the key, and inside its DUMP payload).
    assert_eq!(seen, 4);
    let other = run(
        &mut store,
        &[
            "KELVIN.MIGRATE-SCAN",
            "8",
            "0",
            &slot.to_string(),
            "0",
            "10",
        ],
        100,
    );
    assert!(other.starts_with(b"-ERR slot"));
}
