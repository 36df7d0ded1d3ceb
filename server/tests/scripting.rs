//! Lua scripting through the `redis` crate against a real server: EVAL, EVALSHA (and its
//! `Script` type's EVALSHA-then-EVAL fallback), SCRIPT, conversions and Redis's error
//! texts, the read-only variants, the instruction budget, and scripts surviving a restart
//! (the script cache is in the log and in snapshots).

mod common;

use common::{err_text, q, TestServer};

#[test]
fn script_type_loads_on_noscript_and_runs_atomically() {
    let server = TestServer::start();
    let mut con = server.client();
    let incr_by = redis::Script::new(
        r"local v = redis.call('INCRBY', KEYS[1], ARGV[1])
          redis.call('SET', KEYS[2], v)
          return v",
    );
    // First call: EVALSHA answers NOSCRIPT, the crate falls back to EVAL, which caches.
    let v: i64 = incr_by
        .key("{c}n")
        .key("{c}copy")
        .arg(5)
        .invoke(&mut con)
        .unwrap();
    assert_eq!(v, 5);
    let v: i64 = incr_by
        .key("{c}n")
        .key("{c}copy")
        .arg(2)
        .invoke(&mut con)
        .unwrap();
    assert_eq!(v, 7);
    let copy: String = q(&mut con, &["GET", "{c}copy"]);
    assert_eq!(copy, "7");
    let exists: Vec<i64> = q(&mut con, &["SCRIPT", "EXISTS", incr_by.get_hash(), "0000"]);
    assert_eq!(exists, vec![1, 0]);
}

#[test]
fn conversions_and_error_texts_match_redis() {
    let server = TestServer::start();
    let mut con = server.client();
    let v: Vec<redis::Value> = q(
        &mut con,
        &["EVAL", "return {1, 'two', {3}, false, nil, 6}", "0"],
    );
    assert_eq!(
        v,
        vec![
            redis::Value::Int(1),
            redis::Value::BulkString(b"two".to_vec()),
            redis::Value::Array(vec![redis::Value::Int(3)]),
            redis::Value::Nil,
        ]
    );
    let s: String = q(
        &mut con,
        &["EVAL", "return redis.status_reply('FINE')", "0"],
    );
    assert_eq!(s, "FINE");
    let n: i64 = q(&mut con, &["EVAL", "return 3.99", "0"]);
    assert_eq!(n, 3);
    assert_eq!(
        err_text(&mut con, &["EVAL", "return redis.call('nosuch')", "0"]),
        "ERR Unknown Redis command called from script script: 206396248e12c6e742fd7296250433c8d7343b74, on @user_script:1."
    );
    assert_eq!(
        err_text(
            &mut con,
            &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"]
        ),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    let _: () = q(&mut con, &["HSET", "h", "a", "b"]);
    assert_eq!(
        err_text(&mut con, &["EVAL", "return redis.call('incr', KEYS[1])", "1", "h"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value script: 2bab3b661081db58bd2341920e0ba7cf5dc77b25, on @user_script:1."
    );
    assert_eq!(
        err_text(
            &mut con,
            &["EVAL", "return redis.pcall('incr', KEYS[1])", "1", "h"]
        ),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(
        err_text(
            &mut con,
            &["EVAL", "return redis.error_reply('My Error')", "0"]
        ),
        "My Error"
    );
    assert_eq!(
        err_text(&mut con, &["EVAL", "x = 1", "0"]),
        "ERR user_script:1: Attempt to modify a readonly table script: 34bce5f775de97f557a34088509c8bfe1ea17e52, on @user_script:1."
    );
    assert_eq!(
        err_text(&mut con, &["EVAL", "return loadfile", "0"]),
        "ERR user_script:1: Script attempted to access nonexistent global variable 'loadfile' script: 2ea5b5e6f7f1c1f6c8cf0b5c8b4b0c1e4a4c1f2e, on @user_script:1."
            .replace("2ea5b5e6f7f1c1f6c8cf0b5c8b4b0c1e4a4c1f2e", &sha1("return loadfile"))
    );
    assert_eq!(
        err_text(&mut con, &["EVAL", "return redis.call('get')", "0"]),
        "ERR Wrong number of args calling Redis command from script script: f187dee77f607f7cff00bbabc9df38507582c78d, on @user_script:1."
    );
    assert_eq!(
        err_text(&mut con, &["EVAL", "return 1", "-1"]),
        "ERR Number of keys can't be negative"
    );
    assert_eq!(
        err_text(&mut con, &["EVAL", "return 1 +", "0"]),
        "ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"
    );
}

fn sha1(body: &str) -> String {
    redis::Script::new(body).get_hash().to_string()
}

#[test]
fn read_only_variants_refuse_writes_and_read() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = q(&mut con, &["SET", "k", "v"]);
    let v: String = q(
        &mut con,
        &["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k"],
    );
    assert_eq!(v, "v");
    assert_eq!(
        err_text(&mut con, &["EVAL_RO", "return redis.call('set','a','b')", "0"]),
        "ERR Write commands are not allowed from read-only scripts. script: ff967d0ae0e68b4f9e360fa91c54598bc25ad9b6, on @user_script:1."
    );
    let sha: String = q(
        &mut con,
        &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
    );
    let v: String = q(&mut con, &["EVALSHA_RO", &sha, "1", "k"]);
    assert_eq!(v, "v");
}

#[test]
fn a_script_past_its_budget_is_stopped_with_no_writes() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = q(&mut con, &["SET", "k", "before"]);
    let err = err_text(
        &mut con,
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], 'during') while true do end",
            "1",
            "k",
        ],
    );
    assert!(err.starts_with("ERR Script exceeded its budget"), "{err}");
    let v: String = q(&mut con, &["GET", "k"]);
    assert_eq!(v, "before");
    // The server goes on serving scripts.
    let v: i64 = q(&mut con, &["EVAL", "return 1", "0"]);
    assert_eq!(v, 1);
}

#[test]
fn loaded_scripts_survive_a_restart_and_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let sha;
    {
        let server = TestServer::start_with(|s| s.data_dir = path.clone());
        let mut con = server.client();
        sha = q::<String>(&mut con, &["SCRIPT", "LOAD", "return 'one'"]);
        // A snapshot holds the first script, the log after it the second.
        let _: () = q(&mut con, &["SAVE"]);
        let _: String = q(&mut con, &["EVAL", "return 'two'", "0"]);
    }
    let server = TestServer::start_with(|s| s.data_dir = path.clone());
    let mut con = server.client();
    let v: String = q(&mut con, &["EVALSHA", &sha, "0"]);
    assert_eq!(v, "one");
    let v: String = q(&mut con, &["EVALSHA", &sha1("return 'two'"), "0"]);
    assert_eq!(v, "two");
}

/// Waits (bounded) until `PING` on `con` answers an error, and returns it.
fn wait_for_busy(con: &mut redis::Connection) -> String {
    for _ in 0..500 {
        let reply: redis::RedisResult<String> = redis::cmd("PING").query(con);
        if let Err(e) = reply {
            return e.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the script never made the server busy");
}

#[test]
fn busy_clients_get_busy_and_script_kill_stops_a_script_that_has_not_written() {
    let server = TestServer::start();
    let mut con = server.client();
    let _: () = q(&mut con, &["CONFIG", "SET", "busy-reply-threshold", "10"]);
    let notbusy = err_text(&mut con, &["SCRIPT", "KILL"]);
    assert_eq!(notbusy, "NOTBUSY No scripts in execution right now.");
    // A script that wrote cannot be killed; it runs to its budget, writes undone.
    let mut writer = server.client();
    let wrote = std::thread::spawn(move || {
        err_text(
            &mut writer,
            &[
                "EVAL",
                "redis.call('SET', KEYS[1], 'x') while true do end",
                "1",
                "w",
            ],
        )
    });
    let busy = wait_for_busy(&mut con);
    assert!(
        busy.contains("Redis is busy running a script. You can only call SCRIPT KILL"),
        "{busy}"
    );
    let unkillable = err_text(&mut con, &["SCRIPT", "KILL"]);
    assert!(unkillable.starts_with("UNKILLABLE"), "{unkillable}");
    assert!(wrote
        .join()
        .unwrap()
        .starts_with("ERR Script exceeded its budget"));
    // A script that has not written is killed.
    let mut reader = server.client();
    let killed =
        std::thread::spawn(move || err_text(&mut reader, &["EVAL", "while true do end", "0"]));
    wait_for_busy(&mut con);
    let wrong = err_text(&mut con, &["FUNCTION", "KILL"]);
    assert!(wrong.starts_with("BUSY"), "{wrong}");
    let ok: String = q(&mut con, &["SCRIPT", "KILL"]);
    assert_eq!(ok, "OK");
    let err = killed.join().unwrap();
    assert!(err.contains("Script killed by user"), "{err}");
    let pong: String = q(&mut con, &["PING"]);
    assert_eq!(pong, "PONG");
    let exists: i64 = q(&mut con, &["EXISTS", "w"]);
    assert_eq!(exists, 0);
}
