//! Durability of a single node, black box: the real binary, killed with SIGKILL or shut
//! down, restarted on the same data dir; every acknowledged write must be there after.
//! Only `OK`/integer replies count as acknowledged; a write that failed may or may not
//! have been applied, and the checks allow both.

mod process;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{get_many, wal_records, wal_segments, ServerProc, WalRecord};

/// Most operations a writer sends in one round, so no loop is unbounded.
const MAX_OPS_PER_ROUND: u64 = 50_000;

/// What one writer thread sent and what was acknowledged, over all rounds.
#[derive(Default, Clone)]
struct WriterLog {
    id: usize,
    /// SET key → value, acknowledged with OK.
    sets: Vec<(String, String)>,
    /// SETs that got no answer: the key may hold this value or not exist.
    sets_unknown: Vec<(String, String)>,
    /// Last value an INCR of `ctr:<id>` returned.
    counter_acked: i64,
    /// INCRs that got no answer (each may have been applied).
    counter_unknown: i64,
    /// Elements RPUSHed to `list:<id>` and acknowledged, in order.
    list: Vec<String>,
    list_unknown: Vec<String>,
    /// HSET `hash:<id>` field → value, acknowledged.
    hash: Vec<(String, String)>,
    hash_unknown: Vec<(String, String)>,
    /// Acknowledged writes in the last round.
    acked_this_round: u64,
}

impl WriterLog {
    fn counter_key(&self) -> String {
        format!("ctr:{}", self.id)
    }
    fn list_key(&self) -> String {
        format!("list:{}", self.id)
    }
    fn hash_key(&self) -> String {
        format!("hash:{}", self.id)
    }

    /// Writes until the first error (the server went away), `stop`, or the op bound.
    fn write_round(mut self, server_url: String, round: usize, stop: Arc<AtomicBool>) -> Self {
        self.acked_this_round = 0;
        let Ok(client) = redis::Client::open(server_url) else {
            return self;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return self;
        };
        let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
        let (ctr, list, hash) = (self.counter_key(), self.list_key(), self.hash_key());
        for i in 0..MAX_OPS_PER_ROUND {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let tag = format!("{}-{round}-{i}", self.id);
            let ok = match i % 4 {
                0 => {
                    let (k, v) = (format!("key:{tag}"), format!("value:{tag}"));
                    let r: redis::RedisResult<String> =
                        redis::cmd("SET").arg(&k).arg(&v).query(&mut con);
                    match r {
                        Ok(s) if s == "OK" => {
                            self.sets.push((k, v));
                            true
                        }
                        _ => {
                            self.sets_unknown.push((k, v));
                            false
                        }
                    }
                }
                1 => match redis::cmd("INCR").arg(&ctr).query::<i64>(&mut con) {
                    Ok(n) => {
                        assert!(
                            n > self.counter_acked,
                            "INCR {ctr} returned {n} after {} was acknowledged",
                            self.counter_acked
                        );
                        self.counter_acked = n;
                        true
                    }
                    Err(_) => {
                        self.counter_unknown += 1;
                        false
                    }
                },
                2 => {
                    let e = format!("elem:{tag}");
                    match redis::cmd("RPUSH")
                        .arg(&list)
                        .arg(&e)
                        .query::<i64>(&mut con)
                    {
                        Ok(_) => {
                            self.list.push(e);
                            true
                        }
                        Err(_) => {
                            self.list_unknown.push(e);
                            false
                        }
                    }
                }
                _ => {
                    let (f, v) = (format!("field:{tag}"), format!("hv:{tag}"));
                    let mut r = redis::cmd("HSET");
                    r.arg(&hash).arg(&f).arg(&v);
                    match r.query::<i64>(&mut con) {
                        Ok(1) => {
                            self.hash.push((f, v));
                            true
                        }
                        Ok(n) => panic!("HSET of the new field {f} returned {n}"),
                        Err(_) => {
                            self.hash_unknown.push((f, v));
                            false
                        }
                    }
                }
            };
            if !ok {
                break;
            }
            self.acked_this_round += 1;
        }
        self
    }

    /// Checks that everything acknowledged is on the server, and nothing that was never
    /// sent is.
    fn verify(&self, con: &mut redis::Connection, when: &str) {
        let keys: Vec<&str> = self.sets.iter().map(|(k, _)| k.as_str()).collect();
        for ((k, v), got) in self.sets.iter().zip(get_many(con, &keys)) {
            assert_eq!(
                got.as_deref(),
                Some(v.as_str()),
                "{when}: acknowledged SET {k} lost"
            );
        }
        let keys: Vec<&str> = self.sets_unknown.iter().map(|(k, _)| k.as_str()).collect();
        for ((k, v), got) in self.sets_unknown.iter().zip(get_many(con, &keys)) {
            assert!(
                got.is_none() || got.as_deref() == Some(v.as_str()),
                "{when}: unacknowledged SET {k} holds {got:?}"
            );
        }

        let ctr = self.counter_key();
        let n: Option<i64> = redis::cmd("GET").arg(&ctr).query(con).expect("GET counter");
        let n = n.unwrap_or(0);
        assert!(
            n >= self.counter_acked && n <= self.counter_acked + self.counter_unknown,
            "{when}: {ctr} is {n}; last acknowledged {}, {} INCRs unanswered",
            self.counter_acked,
            self.counter_unknown
        );

        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(self.list_key())
            .arg(0)
            .arg(-1)
            .query(con)
            .expect("LRANGE");
        let acked: Vec<&String> = list
            .iter()
            .filter(|e| !self.list_unknown.contains(e))
            .collect();
        let want: Vec<&String> = self.list.iter().collect();
        assert!(
            acked == want,
            "{when}: {} holds {} acknowledged-or-stray elements, want the {} acknowledged in order (first difference at {:?})",
            self.list_key(),
            acked.len(),
            want.len(),
            acked.iter().zip(&want).position(|(a, b)| a != b)
        );

        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.hash_key())
            .query(con)
            .expect("HGETALL");
        for (f, v) in &self.hash {
            assert_eq!(
                hash.get(f),
                Some(v),
                "{when}: acknowledged HSET {} {f} lost",
                self.hash_key()
            );
        }
        for (f, v) in &hash {
            let known = self.hash.iter().any(|(af, _)| af == f)
                || self.hash_unknown.iter().any(|(uf, uv)| uf == f && uv == v);
            assert!(
                known,
                "{when}: {} has a field never sent: {f}",
                self.hash_key()
            );
        }
    }
}

/// Runs `writers` writer threads against `server`, calls `during` while they write,
/// and returns their logs once they stopped.
fn run_writers(
    server: &mut ServerProc,
    logs: Vec<WriterLog>,
    round: usize,
    during: impl FnOnce(&mut ServerProc),
) -> Vec<WriterLog> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = logs
        .into_iter()
        .map(|log| {
            let (url, stop) = (server.url(), stop.clone());
            std::thread::spawn(move || log.write_round(url, round, stop))
        })
        .collect();
    during(server);
    stop.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .collect()
}

#[test]
fn sigkill_under_always_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut server = ServerProc::single("sigkill", "always");
    server.start();
    let mut logs: Vec<WriterLog> = (0..4)
        .map(|id| WriterLog {
            id,
            ..WriterLog::default()
        })
        .collect();
    for round in 0..3 {
        // Round 1 takes a snapshot mid-load: its recovery is snapshot + log.
        let with_save = round == 1;
        logs = run_writers(&mut server, logs, round, |server| {
            let t0 = Instant::now();
            if with_save {
                std::thread::sleep(Duration::from_millis(700));
                let mut con = server.client();
                let r: String = redis::cmd("SAVE").query(&mut con).expect("SAVE");
                assert_eq!(r, "OK");
            }
            std::thread::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed()));
            server.kill();
        });
        let acked: u64 = logs.iter().map(|l| l.acked_this_round).sum();
        eprintln!("round {round}: {acked} writes acknowledged before SIGKILL");
        assert!(
            logs.iter().all(|l| l.acked_this_round > 0),
            "round {round}: some writer got nothing acknowledged"
        );
        server.start();
        if with_save {
            assert!(
                server.last_run_log().contains("snapshot loaded"),
                "the restart after SAVE did not load a snapshot; log:\n{}",
                server.last_run_log()
            );
        }
        let mut con = server.client();
        for log in &logs {
            log.verify(&mut con, &format!("after SIGKILL #{}", round + 1));
        }
    }
    eprintln!("sigkill test took {:?}", started.elapsed());
}

#[test]
fn graceful_restart_keeps_everything_under_everysec() {
    let mut server = ServerProc::single("graceful", "everysec");
    server.start();
    let mut logs: Vec<WriterLog> = (0..2)
        .map(|id| WriterLog {
            id,
            ..WriterLog::default()
        })
        .collect();
    for round in 0..2 {
        // Writers are still writing when SHUTDOWN arrives: what was acknowledged within
        // the last second (not fsynced yet under everysec) must be flushed by the shutdown.
        logs = run_writers(&mut server, logs, round, |server| {
            std::thread::sleep(Duration::from_millis(800));
            server.shutdown();
        });
        assert!(logs.iter().all(|l| l.acked_this_round > 0));
        server.start();
        let mut con = server.client();
        for log in &logs {
            log.verify(&mut con, &format!("after SHUTDOWN #{}", round + 1));
        }
    }
    // A quiet write right before SHUTDOWN, nothing else in flight.
    let mut con = server.client();
    let r: String = redis::cmd("SET")
        .arg("last")
        .arg("word")
        .query(&mut con)
        .unwrap();
    assert_eq!(r, "OK");
    drop(con);
    server.shutdown();
    server.start();
    let mut con = server.client();
    let got: Option<String> = redis::cmd("GET").arg("last").query(&mut con).unwrap();
    assert_eq!(got.as_deref(), Some("word"));
    for log in &logs {
        log.verify(&mut con, "after the last SHUTDOWN");
    }
}

/// Writes `key:<i>` = `value:<i>` for `range`, one acknowledged SET at a time.
fn set_keys(server: &ServerProc, range: std::ops::Range<u32>) {
    let mut con = server.client();
    for i in range {
        let r: String = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value:{i}"))
            .query(&mut con)
            .unwrap_or_else(|e| panic!("SET key:{i}: {e}"));
        assert_eq!(r, "OK");
    }
}

/// Checks `key:<i>` for `range`; `maybe_lost` may be missing (never wrong).
fn check_keys(server: &ServerProc, range: std::ops::Range<u32>, maybe_lost: &[u32], when: &str) {
    let mut con = server.client();
    let keys: Vec<String> = range.clone().map(|i| format!("key:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    for (i, got) in range.zip(get_many(&mut con, &refs)) {
        let want = format!("value:{i}");
        match got {
            Some(v) => assert_eq!(v, want, "{when}: key:{i}"),
            None => assert!(
                maybe_lost.contains(&i),
                "{when}: acknowledged key:{i} is missing"
            ),
        }
    }
}

fn newest_segment(server: &ServerProc) -> std::path::PathBuf {
    wal_segments(&server.wal_dir())
        .pop()
        .expect("at least one WAL segment")
}

/// Writes `keys`, kills the server, damages the newest segment around its last record
/// with `damage`, restarts, and checks that the start repaired a torn tail.
fn damage_tail(
    server: &mut ServerProc,
    keys: std::ops::Range<u32>,
    what: &str,
    damage: impl FnOnce(&mut Vec<u8>, WalRecord),
) {
    set_keys(server, keys);
    server.kill();
    let seg = newest_segment(server);
    let mut data = std::fs::read(&seg).unwrap();
    let last = *wal_records(&data).last().expect("records");
    damage(&mut data, last);
    std::fs::write(&seg, &data).unwrap();
    server.start();
    assert!(
        server.last_run_log().contains("truncating torn tail"),
        "no torn-tail warning after {what} in {}; log:\n{}",
        seg.display(),
        server.last_run_log()
    );
}

#[test]
fn corrupt_wal_refuses_to_start_and_torn_tail_is_repaired() {
    let mut server = ServerProc::single("corrupt", "always");
    server.start();

    // (a1) The last record lost its last bytes (a write cut short by the crash): in the
    // preallocated segment, they read as zeros. The cut record may have been the last
    // SET's entry.
    damage_tail(&mut server, 0..200, "cutting the tail", |data, last| {
        data[last.end() - last.len / 2 - 1..last.end()].fill(0)
    });
    check_keys(&server, 0..200, &[199], "after cutting the tail");

    // (a2) Garbage after the last complete record (a write that never finished).
    damage_tail(&mut server, 200..400, "appending garbage", |data, last| {
        data[last.end()..last.end() + 5].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x42])
    });
    check_keys(&server, 0..400, &[199], "after appending garbage");

    // (b) A flipped byte well before the tail: corruption, not a torn write.
    set_keys(&server, 400..600);
    server.kill();
    let seg = newest_segment(&server);
    let mut data = std::fs::read(&seg).unwrap();
    let records = wal_records(&data);
    assert!(
        records.len() > 50,
        "expected many records in {}",
        seg.display()
    );
    let victim = records[records.len() / 3..records.len() - 10]
        .iter()
        .find(|r| r.ty == WalRecord::ENTRIES && r.len > 4)
        .copied()
        .expect("an entries record in the middle of the segment");
    data[victim.offset + WalRecord::HEADER + victim.len / 2] ^= 0x20;
    std::fs::write(&seg, &data).unwrap();
    let status = server.start_or_exit().unwrap_or_else(|| {
        panic!(
            "the server started on a corrupt WAL; log:\n{}",
            server.last_run_log()
        )
    });
    assert!(!status.success(), "exit status {status} on a corrupt WAL");
    let out = server.last_run_log();
    let file_name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        out.contains(&file_name),
        "the error does not name the segment {file_name}:\n{out}"
    );
    assert!(
        out.contains(&format!("offset {}", victim.offset)),
        "the error does not name offset {}:\n{out}",
        victim.offset
    );
    assert!(
        !out.contains("truncating torn tail"),
        "mid-file damage was taken for a torn tail:\n{out}"
    );
}

/// A damaged length field in the middle of the last segment makes its record look like
/// it runs past the end of the file, which is what a torn final write looks like; but
/// complete, valid records follow it, so it is corruption and the node must refuse to
/// start rather than drop every acknowledged write after it.
#[test]
fn corrupt_length_mid_segment_is_not_a_torn_tail() {
    let mut server = ServerProc::single("corrupt-len", "always");
    server.start();
    set_keys(&server, 0..200);
    server.kill();
    let seg = newest_segment(&server);
    let mut data = std::fs::read(&seg).unwrap();
    let records = wal_records(&data);
    let victim = records[records.len() / 2..records.len() - 10]
        .iter()
        .find(|r| r.ty == WalRecord::ENTRIES)
        .copied()
        .expect("an entries record in the middle of the segment");
    // Highest byte of the little-endian length: the record now claims ~2 GiB.
    data[victim.offset + 3] = 0x7f;
    std::fs::write(&seg, &data).unwrap();
    let exited = server.start_or_exit();
    if exited.is_none() {
        // It started: whatever it says, no acknowledged write may be gone.
        check_keys(&server, 0..200, &[], "after damaging a length field");
    }
    let out = server.last_run_log();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "started on a WAL whose middle is damaged; log:\n{out}"
    );
    assert!(out.contains(&format!("offset {}", victim.offset)), "{out}");
}
