use super::*;
use crate::store::{Keyspace, INLINE_KEY_LEN};
use kelvin_protocol::key_slot;
use proptest::prelude::*;

fn encode_all(store: &Store, target: usize) -> Vec<Vec<u8>> {
    let mut enc = SnapshotEncoder::with_target(target);
    let mut chunks = Vec::new();
    let mut out = Vec::new();
    while enc.encode_next(store, &mut out).unwrap() {
        assert!(!out.is_empty());
        chunks.push(out.clone());
    }
    assert!(out.is_empty());
    // Once done, stays done.
    assert!(!enc.encode_next(store, &mut out).unwrap());
    chunks
}

fn load_all<'a>(chunks: impl IntoIterator<Item = &'a Vec<u8>>) -> (Store, usize) {
    let mut store = Store::default();
    let mut keys = 0;
    for c in chunks {
        keys += load_chunk(&mut store, c).unwrap();
    }
    (store, keys)
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Hash(x), Value::Hash(y)) => x == y,
        (Value::Set(x), Value::Set(y)) => x == y,
        (Value::ZSet(x), Value::ZSet(y)) => {
            let bits = |z: &ZSet| -> Vec<(Vec<u8>, u64)> {
                z.iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect()
            };
            bits(x) == bits(y)
        }
        (Value::List(x), Value::List(y)) => x == y,
        _ => false,
    }
}

fn assert_same_keyspace(db: usize, a: &Keyspace, b: &Keyspace) {
    assert_eq!(a.len(), b.len(), "db {db} len");
    assert_eq!(a.expires_count(), b.expires_count(), "db {db} expires");
    assert_eq!(a.iter().count(), a.len());
    assert_eq!(b.iter().count(), b.len());
    for slot in 0..SLOT_COUNT {
        let (sa, sb) = (a.slot(slot), b.slot(slot));
        assert_eq!(sa.map.len(), sb.map.len(), "db {db} slot {slot} keys");
        assert_eq!(sa.expires, sb.expires, "db {db} slot {slot} expires");
    }
    for (key, ea) in a.iter() {
        let eb = b
            .raw_get(key)
            .unwrap_or_else(|| panic!("db {db}: {key:?} missing"));
        assert_eq!(ea.expire_at, eb.expire_at, "db {db}: {key:?} expire_at");
        assert_eq!(ea.heat, eb.heat, "db {db}: {key:?} heat");
        assert!(
            same_value(&ea.value, &eb.value),
            "db {db}: {key:?}: {:?} != {:?}",
            ea.value,
            eb.value
        );
    }
}

/// Equal data in every database (a database used but empty equals one never used).
fn assert_same(a: &Store, b: &Store) {
    let empty = Keyspace::default();
    for db in 0..DATABASES {
        let ka = a.db_ref(db).unwrap_or(&empty);
        let kb = b.db_ref(db).unwrap_or(&empty);
        assert_same_keyspace(db, ka, kb);
    }
}

fn entry(value: Value, expire_at: u64, heat: u32) -> Entry {
    Entry {
        value,
        expire_at,
        heat: Heat::from_snapshot(heat),
    }
}

fn blobs<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> std::vec::IntoIter<Blob> {
    let v: Vec<Blob> = items.into_iter().map(Blob::from).collect();
    v.into_iter()
}

/// Every value type, in several databases, with the edge cases.
fn sample_store() -> Store {
    let mut store = Store::default();
    let ks = store.db(0);
    let inline_max = vec![0xAB; INLINE_KEY_LEN];
    let heap_min = vec![0xCD; INLINE_KEY_LEN + 1];
    ks.insert(b"", entry(Value::Str(Vec::new()), 0, 0));
    ks.insert(&inline_max, entry(Value::Str(b"inline".to_vec()), 5, 1));
    ks.insert(&heap_min, entry(Value::Str(b"heap".to_vec()), 0, u32::MAX));
    ks.insert(
        b"\0\xff\x00bin",
        entry(Value::Str(vec![0, 255, 0]), u64::MAX, 7),
    );
    ks.insert(b"big", entry(Value::Str(vec![b'x'; 3 << 20]), 0, 0));
    let hash: HashMap<Blob, Blob> = blobs([&b"f1"[..], b"", b"\0"])
        .zip(blobs([&b"v1"[..], b"empty-field", b""]))
        .collect();
    ks.insert(
        b"hash",
        entry(Value::Hash(Box::new(hash)), 1_700_000_000_000, 3),
    );
    let set: HashSet<Blob> = blobs([&b"a"[..], b"", &[0xFF; 40]]).collect();
    ks.insert(b"set", entry(Value::Set(Box::new(set)), 0, 0));
    let mut z = ZSet::default();
    for (m, s) in [
        (&b"lo"[..], f64::NEG_INFINITY),
        (b"hi", f64::INFINITY),
        (b"zero", -0.0),
        (b"neg", -1.5),
        (b"tie-a", 2.0),
        (b"tie-b", 2.0),
        (b"", 1e-300),
    ] {
        z.insert(m, s);
    }
    ks.insert(b"zset", entry(Value::ZSet(Box::new(z)), 0, 9));
    let list: VecDeque<Blob> = blobs([&b"3"[..], b"1", b"", b"2", b"1"]).collect();
    ks.insert(b"list", entry(Value::List(Box::new(list)), 42, 0));
    ks.insert(
        b"one-elem-list",
        entry(Value::List(Box::new(blobs([&b"x"[..]]).collect())), 0, 0),
    );

    // Many keys, a thousand of them sharing one slot, so chunks end mid-slot.
    let ks = store.db(3);
    for i in 0..1000u32 {
        let expire = if i % 3 == 0 { 10_000 + i as u64 } else { 0 };
        ks.insert(
            format!("{{tag}}:{i}").as_bytes(),
            entry(Value::Str(i.to_le_bytes().to_vec()), expire, i),
        );
        ks.insert(
            format!("spread:{i}").as_bytes(),
            entry(Value::Str(vec![1; i as usize % 50]), 0, 0),
        );
    }
    // Used but emptied, and the last database.
    store
        .db(7)
        .insert(b"gone", entry(Value::Str(b"x".to_vec()), 1, 0));
    store.db(7).remove(b"gone");
    store
        .db(15)
        .insert(b"last", entry(Value::Str(b"db15".to_vec()), 99, 1));
    store
}

#[test]
fn round_trip_small_chunks() {
    let store = sample_store();
    for target in [1, 200, 4096] {
        let chunks = encode_all(&store, target);
        assert!(chunks.len() > 10, "{target}: {} chunks", chunks.len());
        let (loaded, keys) = load_all(&chunks);
        assert_eq!(keys, store.dbs().map(|(_, ks)| ks.len()).sum::<usize>());
        assert_same(&store, &loaded);
        // Chunks are independent: any order loads the same store.
        let (reversed, _) = load_all(chunks.iter().rev());
        assert_same(&store, &reversed);
        // A db used but empty writes nothing.
        assert!(loaded.db_ref(7).is_none());
    }
}

#[test]
fn the_migration_state_travels_with_the_snapshot() {
    let mut store = sample_store();
    store.migrations.seal(4, &[10, 11], 2).unwrap();
    store.migrations.import(5, &[key_slot(b"k")], 3).unwrap();
    store.migrations.settle(0, b"k");
    let chunks = encode_all(&store, 4096);
    let (loaded, keys) = load_all(chunks.iter().rev());
    assert_eq!(keys, store.dbs().map(|(_, ks)| ks.len()).sum::<usize>());
    assert_eq!(loaded.migrations, store.migrations);
    assert_same(&store, &loaded);
    // Without migrations, no chunk for them.
    let plain = sample_store();
    assert_eq!(encode_all(&plain, 4096).len(), chunks.len() - 1);
}

#[test]
fn the_transaction_state_travels_with_the_snapshot() {
    use crate::txn::state::Prepared;
    use crate::txn::TxId;
    let mut store = sample_store();
    let tx = TxId { origin: 9, seq: 1 };
    let prepared = Prepared {
        record: 2,
        prepared_ms: 77,
        keys: vec![(0, bytes::Bytes::from_static(b"locked"))],
        items: vec![(
            0,
            vec![
                bytes::Bytes::from_static(b"DEL"),
                bytes::Bytes::from_static(b"locked"),
            ],
        )],
        replicated: false,
        own: Vec::new(),
    };
    store.tx.prepare(tx, prepared).unwrap();
    store.tx.decide(TxId { origin: 9, seq: 2 }, true, 78);
    let chunks = encode_all(&store, 4096);
    let (loaded, _) = load_all(chunks.iter().rev());
    assert_eq!(loaded.tx, store.tx);
    assert_eq!(loaded.tx.holder(0, b"locked"), Some(tx));
    assert_same(&store, &loaded);
    // Without any, no chunk for them.
    let plain = sample_store();
    assert_eq!(encode_all(&plain, 4096).len(), chunks.len() - 1);
}

#[test]
fn the_log_time_travels_with_the_snapshot() {
    // A leader's clock once ahead leaves the log's time ahead of later stamps: a
    // replica loaded from the snapshot must apply them at the same time as the others.
    let mut store = sample_store();
    store.last_apply_ms = 1_800_000_000_000;
    let chunks = encode_all(&store, 1 << 20);
    let (loaded, _) = load_all(&chunks);
    assert_eq!(loaded.last_apply_ms, 1_800_000_000_000);
    assert_same(&store, &loaded);
    // A store never written has no log time and no chunk for it.
    assert!(encode_all(&Store::default(), 1 << 20).is_empty());
    // A chunk that is not 8 bytes is refused.
    let mut bad = Vec::new();
    state_chunk(LOG_TIME_DB, LOG_TIME_KEY, b"short", &mut bad).unwrap();
    let mut target = Store::default();
    assert!(load_chunk(&mut target, &bad).is_err());
}

#[test]
fn round_trip_default_target() {
    let store = sample_store();
    let chunks = encode_all(&store, CHUNK_TARGET_BYTES);
    // db 0 (cut after its 3 MiB key, wherever the table puts it), db 3, db 15.
    assert!((3..=4).contains(&chunks.len()), "{} chunks", chunks.len());
    assert!(chunks.iter().any(|c| c.len() > 3 << 20));
    let (loaded, _) = load_all(&chunks);
    assert_same(&store, &loaded);
}

#[test]
fn empty_store_has_no_chunks() {
    let mut store = Store::default();
    store.db(2);
    assert!(encode_all(&store, CHUNK_TARGET_BYTES).is_empty());
}

#[test]
fn unaligned_chunks_load() {
    let store = sample_store();
    for chunk in encode_all(&store, 1000) {
        // 8 mod 16 loads in place; the others are copied.
        for shift in 1..=8 {
            let mut buf = AlignedVec::<16>::with_capacity(chunk.len() + shift);
            buf.extend_from_slice(&vec![0; shift]);
            buf.extend_from_slice(&chunk);
            let mut into = Store::default();
            let keys = load_chunk(&mut into, &buf[shift..]).unwrap();
            assert!(keys > 0);
        }
    }
}

#[test]
fn clear_all_drops_every_db_and_keeps_the_rest() {
    let mut store = sample_store();
    store.notify_flags = 5;
    store.clear_all();
    assert_eq!(store.dbs().count(), 0);
    assert_eq!(store.notify_flags, 5);
    let (loaded, _) = load_all(&encode_all(&sample_store(), 500));
    let chunks = encode_all(&loaded, 500);
    for c in &chunks {
        load_chunk(&mut store, c).unwrap();
    }
    assert_same(&loaded, &store);
}

#[test]
fn types_travel_between_threads() {
    fn check<T: Send + Sync + 'static>() {}
    check::<SnapshotError>();
    check::<SnapshotEncoder>();
}

#[test]
fn repeated_key_is_an_error() {
    let store = sample_store();
    let chunks = encode_all(&store, CHUNK_TARGET_BYTES);
    let mut into = Store::default();
    let last = chunks.last().unwrap(); // db 15
    load_chunk(&mut into, last).unwrap();
    assert!(matches!(
        load_chunk(&mut into, last),
        Err(SnapshotError::DuplicateKey { db: 15, .. })
    ));
}

/// Loading `bytes` must not panic; if it succeeds, the store must be consistent.
fn load_corrupt(bytes: &[u8]) -> bool {
    let mut store = Store::default();
    match load_chunk(&mut store, bytes) {
        Err(_) => false,
        Ok(n) => {
            let total: usize = store.dbs().map(|(_, ks)| ks.len()).sum();
            assert_eq!(total, n);
            for (_, ks) in store.dbs() {
                assert_eq!(ks.iter().count(), ks.len());
                let expiring = ks.iter().filter(|(_, e)| e.expire_at != 0).count();
                assert_eq!(expiring, ks.expires_count());
                for (k, _) in ks.iter() {
                    assert!(ks.slot(key_slot(k) as usize).map.contains_key(&k[..]));
                }
            }
            true
        }
    }
}

fn small_chunk() -> Vec<u8> {
    let mut store = Store::default();
    let s = sample_store();
    for (key, e) in s
        .db_ref(0)
        .unwrap()
        .iter()
        .filter(|(k, _)| &k[..] != b"big")
    {
        store.db(4).insert(key, e.clone());
    }
    let chunks = encode_all(&store, CHUNK_TARGET_BYTES);
    assert_eq!(chunks.len(), 1);
    chunks.into_iter().next().unwrap()
}

#[test]
fn truncated_chunks_are_errors() {
    let chunk = small_chunk();
    for len in 0..chunk.len() {
        assert!(!load_corrupt(&chunk[..len]), "truncated to {len} loaded");
        // Cut at the front too, and at an unaligned start.
        assert!(
            !load_corrupt(&chunk[chunk.len() - len..]),
            "last {len} loaded"
        );
    }
    assert!(load_corrupt(&chunk));
}

#[test]
fn bit_flips_never_panic() {
    // bytecheck catches every flip that breaks the archive's structure (offsets,
    // lengths, tags) plus version, db, slot runs, NaN scores and repeated members;
    // a flip inside key or value bytes is a valid chunk of other data, which the
    // file's per-chunk CRC catches. Either way: no panic, a consistent store.
    let chunk = small_chunk();
    let mut rejected = 0;
    // One bit of every byte (each load builds a 16384-slot keyspace: all 8 bits of
    // every byte take most of a minute in debug builds).
    for byte in 0..chunk.len() {
        let mut c = chunk.clone();
        c[byte] ^= 1 << (byte * 5 % 8);
        if !load_corrupt(&c) {
            rejected += 1;
        }
    }
    assert!(rejected > 0);
    // The root (the last bytes: version, db, padding, then offset and length of both
    // vectors) is checked but for the db, which may be any of the 16.
    let tail = std::mem::size_of::<ArchivedChunk<'static>>();
    for byte in chunk.len() - tail..chunk.len() {
        for bit in 0..8 {
            let mut c = chunk.clone();
            c[byte] ^= 1 << bit;
            let db_or_padding = matches!(byte - (chunk.len() - tail), 2 | 3);
            let db_ok = byte - (chunk.len() - tail) == 2 && (4 ^ (1 << bit)) < DATABASES;
            assert!(
                (db_or_padding && (db_ok || byte - (chunk.len() - tail) == 3)) || !load_corrupt(&c),
                "flip {byte}:{bit} of {} loaded; tail {tail}",
                chunk.len()
            );
        }
    }
}

#[test]
fn random_bytes_are_errors() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..512);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        assert!(!load_corrupt(&bytes));
    }
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..12);
    let score = prop_oneof![
        -1e6f64..1e6,
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY)
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..120).prop_map(Value::Str),
        prop::collection::vec((bytes(), bytes()), 0..6).prop_map(|fs| {
            Value::Hash(Box::new(
                fs.into_iter().map(|(f, v)| (f.into(), v.into())).collect(),
            ))
        }),
        prop::collection::vec(bytes(), 0..6)
            .prop_map(|ms| Value::Set(Box::new(ms.into_iter().map(Blob::from).collect()))),
        prop::collection::vec((bytes(), score), 0..6).prop_map(|ms| {
            let mut z = ZSet::default();
            for (m, s) in ms {
                z.insert(&m, s);
            }
            Value::ZSet(Box::new(z))
        }),
        prop::collection::vec(bytes(), 0..6)
            .prop_map(|es| Value::List(Box::new(es.into_iter().map(Blob::from).collect()))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_stores_round_trip(
        keys in prop::collection::vec(
            (
                // Few databases: building a 16384-slot keyspace is slow in debug.
                0..4usize,
                prop::collection::vec(any::<u8>(), 0..40),
                value_strategy(),
                prop_oneof![Just(0u64), any::<u64>()],
                any::<u32>(),
            ),
            0..80,
        ),
        target in 1usize..3000,
    ) {
        let mut store = Store::default();
        for (db, key, value, expire_at, heat) in keys {
            store.db(db).insert(&key, entry(value, expire_at, heat));
        }
        let (loaded, keys) = load_all(&encode_all(&store, target));
        prop_assert_eq!(keys, store.dbs().map(|(_, ks)| ks.len()).sum::<usize>());
        assert_same(&store, &loaded);
    }
}

/// `cargo test --release -p kelvin-server --lib snapshot -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_one_million_strings() {
    use std::time::Instant;
    const KEYS: usize = 1_000_000;
    let mut store = Store::default();
    let t = Instant::now();
    for i in 0..KEYS {
        let key = format!("session:{i:08}");
        let mut value = vec![b'v'; 100];
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let expire = if i % 4 == 0 { 1_800_000_000_000 } else { 0 };
        store
            .db(0)
            .insert(key.as_bytes(), entry(Value::Str(value), expire, 0));
    }
    println!("build store:  {:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);

    let t = Instant::now();
    let mut enc = SnapshotEncoder::new();
    let mut out = Vec::new();
    // As the file would hold them: a length before each chunk, so most start unaligned.
    let mut file = vec![0u8; 1];
    let mut chunks = 0;
    while enc.encode_next(&store, &mut out).unwrap() {
        file.extend_from_slice(&(out.len() as u32).to_le_bytes());
        file.extend_from_slice(&out);
        chunks += 1;
    }
    let encode = t.elapsed();
    println!(
        "encode:       {:>7.1} ms  ({chunks} chunks, {:.1} MiB)",
        encode.as_secs_f64() * 1e3,
        file.len() as f64 / (1 << 20) as f64
    );

    let file = &file[..];
    let slices = || {
        let mut pos = 1;
        std::iter::from_fn(move || {
            let len_bytes: [u8; 4] = file.get(pos..pos + 4)?.try_into().ok()?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let chunk = &file[pos + 4..pos + 4 + len];
            pos += 4 + len;
            Some(chunk)
        })
    };
    let t = Instant::now();
    for c in slices() {
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(c);
        rkyv::access::<ArchivedChunk<'static>, rancor::Error>(&buf).unwrap();
    }
    println!("copy+validate {:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);
    // Load times vary mostly with how much of the ~250 MiB the store grows to must be
    // faulted in fresh (the aligned run's copies take fresh pages of their own).
    for (label, aligned) in [
        ("load (cold)", false),
        ("load aligned", true),
        ("load unaligned", false),
    ] {
        let owned: Vec<AlignedVec> = if aligned {
            slices()
                .map(|c| {
                    let mut v = AlignedVec::new();
                    v.extend_from_slice(c);
                    v
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut loaded = Store::default();
        let t = Instant::now();
        let mut keys = 0;
        if aligned {
            for c in &owned {
                keys += load_chunk(&mut loaded, c).unwrap();
            }
        } else {
            for c in slices() {
                keys += load_chunk(&mut loaded, c).unwrap();
            }
        }
        println!("{label:<14}{:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(keys, KEYS);
        assert_eq!(loaded.db_ref(0).unwrap().len(), KEYS);
        assert_eq!(loaded.db_ref(0).unwrap().expires_count(), KEYS / 4);
        let t = Instant::now();
        drop(loaded);
        println!("drop store:    {:>7.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}
