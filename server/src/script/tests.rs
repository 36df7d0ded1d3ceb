//! Scripts applied through the state machine, as every replica applies them.

use bytes::Bytes;
use kelvin_protocol::log::{LogBatch, LogCommand};
use kelvin_protocol::ReplyWriter;

use crate::machine::{apply_batch, Replies};
use crate::store::Store;

fn apply(store: &mut Store, index: u64, words: &[&str]) -> String {
    let argv = words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    String::from_utf8_lossy(&apply_raw(store, index, argv)).into_owned()
}

/// Applies commands to a new store, one log entry each.
fn store_runner() -> impl FnMut(&[&str]) -> String {
    let mut s = Store::default();
    let mut i = 0;
    move |words| {
        i += 1;
        apply(&mut s, i, words)
    }
}

fn apply_raw(store: &mut Store, index: u64, argv: Vec<Bytes>) -> Vec<u8> {
    let command = LogCommand::Single { db: 0, argv };
    crate::machine::apply(store, index, 1_700_000_000_123, vec![command]).remove(0)
}

#[test]
fn eval_converts_replies_and_errors_as_redis() {
    let mut s = Store::default();
    let mut i = 0;
    let mut run = |words: &[&str]| {
        i += 1;
        apply(&mut s, i, words)
    };
    assert_eq!(
        run(&["EVAL", "return {1,2,3,'ciao',{1,2},nil,5}", "0"]),
        "*5\r\n:1\r\n:2\r\n:3\r\n$4\r\nciao\r\n*2\r\n:1\r\n:2\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return redis.call('incr', KEYS[1])", "1", "n"]),
        ":1\r\n"
    );
    assert_eq!(
        run(&[
            "EVAL",
            "return redis.call('get', KEYS[1]) .. ARGV[1]",
            "1",
            "n",
            "x"
        ]),
        "$2\r\n1x\r\n"
    );
    assert_eq!(run(&["EVAL", "return 3.99", "0"]), ":3\r\n");
    assert_eq!(
        run(&["EVAL", "return redis.call('get', 'missing')", "0"]),
        "$-1\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return redis.status_reply('FINE')", "0"]),
        "+FINE\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return redis.error_reply('My Error')", "0"]),
        "-My Error\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return redis.sha1hex('')", "0"]),
        "$40\r\nda39a3ee5e6b4b0d3255bfef95601890afd80709\r\n"
    );
    assert_eq!(run(&["EVAL", "return redis.call('nosuch')", "0"]),
        "-ERR Unknown Redis command called from script script: 206396248e12c6e742fd7296250433c8d7343b74, on @user_script:1.\r\n");
    assert_eq!(
        run(&["EVAL", "return redis.pcall('nosuch')", "0"]),
        "-ERR Unknown Redis command called from script\r\n"
    );
    assert_eq!(run(&["EVAL", "error('boom')", "0"]),
        "-ERR user_script:1: boom script: 82903a0434f1503e152f89c03c9acd881a0e8150, on @user_script:1.\r\n");
    assert_eq!(run(&["EVAL", "x = 1", "0"]),
        "-ERR user_script:1: Attempt to modify a readonly table script: 34bce5f775de97f557a34088509c8bfe1ea17e52, on @user_script:1.\r\n");
    // The table functions write raw, past a proxy's __newindex: on the libraries they
    // fail as any other write, and the library keeps no trace of the attempt.
    for script in [
        "table.insert(redis, 'x')",
        "table.insert(string, 1, 'x')",
        "table.remove(cjson)",
        "table.sort(math)",
        "table.insert(_G, 1)",
    ] {
        let reply = run(&["EVAL", script, "0"]);
        assert!(
            reply.starts_with("-ERR user_script:1: Attempt to modify a readonly table script:"),
            "{script}: {reply}"
        );
    }
    assert_eq!(run(&["EVAL", "return redis[1]", "0"]), "$-1\r\n");
    assert_eq!(
        run(&[
            "EVAL",
            "local t = {3} table.insert(t, 1, 5) table.sort(t) return {table.remove(t), t[1]}",
            "0"
        ]),
        "*2\r\n:5\r\n:3\r\n"
    );
    let reply = run(&["EVAL", "table.insert(nil, 1)", "0"]);
    assert!(reply.contains("bad argument #1 to 'insert'"), "{reply}");
    assert_eq!(run(&["EVAL", "return a.b", "0"]),
        "-ERR user_script:1: Script attempted to access nonexistent global variable 'a' script: f4bf8d93bcdac3681fcf8fa3183b9e6e77e678b1, on @user_script:1.\r\n");
    assert_eq!(
        run(&["EVAL", "syntax error here", "0"]),
        "-ERR Error compiling script (new function): user_script:1: '=' expected near 'error'\r\n"
    );
    assert_eq!(
        run(&["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(run(&["EVAL", "return os", "0"]),
        "-ERR user_script:1: Script attempted to access nonexistent global variable 'os' script: f03b5ad6e7d58786b6a5e879efbea4a4408f5c2f, on @user_script:1.\r\n");
    assert_eq!(
        run(&[
            "EVAL",
            "math.randomseed(0) return {math.random(100), math.random(100), math.random(100)}",
            "0"
        ]),
        "*3\r\n:18\r\n:75\r\n:10\r\n"
    );
    assert_eq!(
        run(&[
            "EVAL",
            "math.randomseed(12345) return {math.random(1,6), math.random(10,20)}",
            "0"
        ]),
        "*2\r\n:2\r\n:20\r\n"
    );
    assert_eq!(run(&["EVAL", "#!lua flags=no-writes\nreturn redis.call('set','a','b')", "0"]),
        "-ERR Write commands are not allowed from read-only scripts. script: 6acb400a50fe96e33eca4e0af6e9dcfb21193726, on @user_script:2.\r\n");
    assert_eq!(
        run(&["EVAL", "#!lua flags=bad\nreturn 1", "0"]),
        "-ERR Unexpected flag in script shebang: bad\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return redis.call('time')[1]", "0"]),
        "$10\r\n1700000000\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return 1", "2", "a"]),
        "-ERR Number of keys can't be greater than number of args\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return bit.band(0xff, 0x0f)", "0"]),
        ":15\r\n"
    );
}

#[test]
fn booleans_follow_the_scripts_protocol_for_resp3_callers() {
    let mut s = Store::default();
    let batch = LogBatch {
        now_ms: 1,
        commands: [
            "return {true, false}",
            "redis.setresp(3) return {true, false}",
        ]
        .iter()
        .map(|body| LogCommand::Single {
            db: 0,
            argv: vec![
                Bytes::from_static(b"EVAL"),
                Bytes::copy_from_slice(body.as_bytes()),
                Bytes::from_static(b"0"),
            ],
        })
        .collect(),
    };
    let mut writers = vec![
        ReplyWriter::new(kelvin_protocol::RespVersion::Resp3),
        ReplyWriter::new(kelvin_protocol::RespVersion::Resp3),
    ];
    apply_batch(
        &mut s,
        1,
        &batch,
        &mut Vec::new(),
        Some(Replies {
            writers: &mut writers,
            owner: &[0, 1],
        }),
    );
    // As redis-server 7.0 answers a RESP3 client.
    assert_eq!(writers[0].buf, b"*2\r\n:1\r\n_\r\n");
    assert_eq!(writers[1].buf, b"*2\r\n#t\r\n#f\r\n");
}

#[test]
fn script_load_exists_flush_and_evalsha() {
    let mut s = Store::default();
    assert_eq!(
        apply(&mut s, 1, &["SCRIPT", "LOAD", "return 1"]),
        "$40\r\ne0e1f9fabfc9d4800c877a703b823ac0578ff8db\r\n"
    );
    assert_eq!(
        apply(
            &mut s,
            2,
            &["EVALSHA", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB", "0"]
        ),
        ":1\r\n"
    );
    assert_eq!(
        apply(
            &mut s,
            3,
            &[
                "SCRIPT",
                "EXISTS",
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
                "ffff"
            ]
        ),
        "*2\r\n:1\r\n:0\r\n"
    );
    assert_eq!(apply(&mut s, 4, &["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(
        apply(
            &mut s,
            5,
            &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"]
        ),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(apply(&mut s, 6, &["SCRIPT", "LOAD", "return 1 +"]),
        "-ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'\r\n");
}

#[test]
fn a_script_past_its_budget_leaves_no_writes() {
    let mut s = Store::default();
    apply(&mut s, 1, &["SET", "k", "before"]);
    let reply = apply(&mut s, 2, &["EVAL", "redis.call('set', KEYS[1], 'during'); redis.call('set', 'other', 'x'); while true do pcall(function() while true do end end) end", "1", "k"]);
    assert!(
        reply.starts_with("-ERR Script exceeded its budget"),
        "{reply}"
    );
    assert_eq!(apply(&mut s, 3, &["GET", "k"]), "$6\r\nbefore\r\n");
    assert_eq!(apply(&mut s, 4, &["EXISTS", "other"]), ":0\r\n");
    // The state is usable afterwards.
    assert_eq!(
        apply(
            &mut s,
            5,
            &["EVAL", "return redis.call('get', KEYS[1])", "1", "k"]
        ),
        "$6\r\nbefore\r\n"
    );
}

#[test]
fn scripts_travel_in_snapshots() {
    let mut s = Store::default();
    apply(&mut s, 1, &["SCRIPT", "LOAD", "return 'hi'"]);
    apply(&mut s, 2, &["SET", "k", "v"]);
    let mut enc = crate::snapshot::SnapshotEncoder::new();
    let mut chunks = Vec::new();
    let mut buf = Vec::new();
    while enc.encode_next(&s, &mut buf).unwrap() {
        chunks.push(buf.clone());
    }
    let mut t = Store::default();
    for c in &chunks {
        crate::snapshot::load_chunk(&mut t, c).unwrap();
    }
    let sha = crate::script::script_sha(b"return 'hi'");
    assert_eq!(apply(&mut t, 3, &["EVALSHA", &sha, "0"]), "$2\r\nhi\r\n");
}

#[test]
fn functions_load_call_list_delete_as_redis() {
    let mut s = Store::default();
    let mut i = 0;
    let mut run = |words: &[&str]| {
        i += 1;
        apply(&mut s, i, words)
    };
    let lib = "#!lua name=t\nredis.register_function('f', function(keys, args) return redis.call('incr', keys[1]) end)";
    assert_eq!(
        run(&["FUNCTION", "LOAD", "return 1"]),
        "-ERR Missing library metadata\r\n"
    );
    assert_eq!(
        run(&["FUNCTION", "LOAD", "#!lua\nreturn 1"]),
        "-ERR Library name was not given\r\n"
    );
    assert_eq!(
        run(&["FUNCTION", "LOAD", "#!lua name=t\nreturn 1"]),
        "-ERR No functions registered\r\n"
    );
    assert_eq!(run(&["FUNCTION", "LOAD", lib]), "$1\r\nt\r\n");
    assert_eq!(
        run(&["FUNCTION", "LOAD", lib]),
        "-ERR Library 't' already exists\r\n"
    );
    assert_eq!(run(&["FUNCTION", "LOAD", "REPLACE", lib]), "$1\r\nt\r\n");
    assert_eq!(
        run(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=t2\nredis.register_function('f', function(keys, args) return 1 end)"
        ]),
        "-ERR Function f already exists\r\n"
    );
    assert_eq!(run(&["FCALL", "f", "1", "fk"]), ":1\r\n");
    assert_eq!(
        run(&["FCALL", "nosuch", "0"]),
        "-ERR Function not found\r\n"
    );
    assert_eq!(
        run(&["FCALL_RO", "f", "1", "fk"]),
        "-ERR Can not execute a script with write flag using *_ro command.\r\n"
    );
    assert_eq!(
        run(&["FUNCTION", "LOAD", "#!lua name=t3\nredis.register_function{function_name='g', callback=function(keys, args) return args[1] end, flags={'no-writes'}}"]),
        "$2\r\nt3\r\n"
    );
    assert_eq!(run(&["FCALL_RO", "g", "0", "x"]), "$1\r\nx\r\n");
    assert_eq!(run(&["SET", "h", "x"]), "+OK\r\n");
    assert_eq!(
        run(&["FCALL", "f", "1", "h"]),
        "-ERR value is not an integer or out of range script: f, on @user_function:2.\r\n"
    );
    assert_eq!(run(&["FUNCTION", "DELETE", "t3"]), "+OK\r\n");
    assert_eq!(
        run(&["FUNCTION", "DELETE", "t3"]),
        "-ERR Library not found\r\n"
    );
    assert_eq!(run(&["FUNCTION", "LIST"]),
        "*1\r\n*6\r\n$12\r\nlibrary_name\r\n$1\r\nt\r\n$6\r\nengine\r\n$3\r\nLUA\r\n$9\r\nfunctions\r\n*1\r\n*6\r\n$4\r\nname\r\n$1\r\nf\r\n$11\r\ndescription\r\n$-1\r\n$5\r\nflags\r\n*0\r\n");
    assert_eq!(run(&["FUNCTION", "STATS"]),
        "*4\r\n$14\r\nrunning_script\r\n$-1\r\n$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n$15\r\nfunctions_count\r\n:1\r\n");
    // SCRIPT FLUSH leaves functions alone; FUNCTION FLUSH drops them.
    assert_eq!(run(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(run(&["FCALL", "f", "1", "fk"]), ":2\r\n");
    assert_eq!(run(&["FUNCTION", "FLUSH"]), "+OK\r\n");
    assert_eq!(
        run(&["FCALL", "f", "1", "fk"]),
        "-ERR Function not found\r\n"
    );
}

#[test]
fn function_libraries_travel_in_snapshots() {
    let mut s = Store::default();
    apply(
        &mut s,
        1,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function('hello', function() return 'hi' end)",
        ],
    );
    let mut enc = crate::snapshot::SnapshotEncoder::new();
    let mut chunks = Vec::new();
    let mut buf = Vec::new();
    while enc.encode_next(&s, &mut buf).unwrap() {
        chunks.push(buf.clone());
    }
    let mut t = Store::default();
    for c in &chunks {
        crate::snapshot::load_chunk(&mut t, c).unwrap();
    }
    assert_eq!(apply(&mut t, 2, &["FCALL", "hello", "0"]), "$2\r\nhi\r\n");
}

/// `FUNCTION DUMP` of redis-server 7.0.15 after `FUNCTION LOAD "#!lua name=mylib\n
/// redis.register_function('myfunc', function(keys, args) return args[1] end)"` (its
/// code LZF-compressed, as Redis writes strings over 20 bytes).
const REDIS_FUNCTION_DUMP: &str = "f5c34056405b1f23216c7561206e616d653d6d796c69620a72656469732e72656769737465725f0b66756e6374696f6e28276d79400b02272c2040066012116b6579732c2061726773292072657475726e600c075b315d20656e64290a008d5936adc6e707da";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn restore(s: &mut Store, i: u64, payload: &[u8], policy: Option<&str>) -> String {
    let mut argv = vec![
        Bytes::from_static(b"FUNCTION"),
        Bytes::from_static(b"RESTORE"),
        Bytes::copy_from_slice(payload),
    ];
    argv.extend(policy.map(|p| Bytes::copy_from_slice(p.as_bytes())));
    String::from_utf8_lossy(&apply_raw(s, i, argv)).into_owned()
}

#[test]
fn function_restore_reads_redis_payloads_and_dump_writes_them() {
    let mut s = Store::default();
    let payload = unhex(REDIS_FUNCTION_DUMP);
    assert_eq!(restore(&mut s, 1, &payload, None), "+OK\r\n");
    assert_eq!(
        apply(&mut s, 2, &["FCALL", "myfunc", "0", "hi"]),
        "$2\r\nhi\r\n"
    );
    assert_eq!(
        restore(&mut s, 3, &payload, None),
        "-ERR Library mylib already exists\r\n"
    );
    assert_eq!(restore(&mut s, 4, &payload, Some("REPLACE")), "+OK\r\n");
    assert_eq!(
        restore(&mut s, 5, b"bad_payload", None),
        "-ERR payload version or checksum are wrong\r\n"
    );
    // Our own dump (strings not compressed) restores into a fresh store.
    let dump = apply_raw(
        &mut s,
        6,
        vec![Bytes::from_static(b"FUNCTION"), Bytes::from_static(b"DUMP")],
    );
    let start = dump.iter().position(|&b| b == b'\n').unwrap() + 1;
    let body = &dump[start..dump.len() - 2];
    let mut t = Store::default();
    assert_eq!(restore(&mut t, 1, body, Some("FLUSH")), "+OK\r\n");
    assert_eq!(
        apply(&mut t, 2, &["FCALL", "myfunc", "0", "x"]),
        "$1\r\nx\r\n"
    );
}

#[test]
fn a_script_may_not_write_once_past_the_kill_fence() {
    let mut s = Store::default();
    // About four instructions a turn: well past the fence before the write.
    let late = apply(
        &mut s,
        1,
        &[
            "EVAL",
            "local i = 0 while i < 5000000 do i = i + 1 end return redis.call('set', KEYS[1], 'v')",
            "1",
            "k",
        ],
    );
    assert!(
        late.starts_with("-ERR Write commands are not allowed from a script that ran"),
        "{late}"
    );
    assert_eq!(apply(&mut s, 2, &["EXISTS", "k"]), ":0\r\n");
    // Written before the fence: it may go on writing.
    let early = apply(
        &mut s,
        3,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'a') local i = 0 while i < 5000000 do i = i + 1 end return redis.call('set', KEYS[1], 'b')",
            "1",
            "k",
        ],
    );
    assert_eq!(early, "+OK\r\n");
}

#[test]
fn a_kill_stops_only_a_script_that_cannot_write_any_more() {
    use super::busy::{ScriptWatch, KILL_FENCE};
    use std::sync::atomic::Ordering::Relaxed;
    let w = ScriptWatch::default();
    w.start(true, false);
    w.request_kill();
    assert!(
        !w.killed(KILL_FENCE - 1),
        "before the fence it could still write"
    );
    assert!(w.killed(KILL_FENCE));
    w.written.store(true, Relaxed);
    assert!(!w.killed(KILL_FENCE), "a script that wrote is unkillable");
    w.finish();
    // A kill aimed at an earlier run does not stop the next; a read-only run stops at once.
    w.start(true, true);
    assert!(!w.killed(KILL_FENCE));
    w.request_kill();
    assert!(w.killed(1));
    w.finish();
}

#[test]
fn the_sandbox_keeps_globals_and_libraries_read_only() {
    let mut s = Store::default();
    let mut i = 0;
    let mut run = |words: &[&str]| {
        i += 1;
        apply(&mut s, i, words)
    };
    for code in [
        "redis = function() return 1 end",
        "_G = {}",
        "setmetatable(_G, {})",
        "getmetatable(_G).__index.redis = 1",
        "getmetatable('').__index = {}",
        "cmsgpack.pack = nil",
        "KEYS = {}",
    ] {
        let reply = run(&["EVAL", code, "0"]);
        assert!(
            reply.contains("Attempt to modify a readonly table"),
            "{code}: {reply}"
        );
    }
    assert_eq!(
        run(&["EVAL", "return type(redis.call)", "0"]),
        "$8\r\nfunction\r\n"
    );
    // FUNCTION LOAD sees only the library API.
    let reply = run(&["FUNCTION", "LOAD", "#!lua name=l\nlocal r = math.random()"]);
    assert!(
        reply.contains("Script attempted to access nonexistent global variable 'math'"),
        "{reply}"
    );
    assert_eq!(
        run(&["EVAL", "return redis.error_reply('MY_CODE some text')", "0"]),
        "-MY_CODE some text\r\n"
    );
    assert_eq!(
        run(&["EVAL", "return redis.error_reply('')", "0"]),
        "-ERR \r\n"
    );
}

#[test]
fn redis_call_takes_thousands_of_arguments() {
    // Redis's unit/scripting "Script check unpack with massive arguments": the reply
    // must find room on the Lua stack after 7999 arguments.
    let mut s = Store::default();
    let script = "local a = {} for i=1,7999 do a[i] = 1 end \
                  return redis.call('lpush', 'l', unpack(a))";
    assert_eq!(apply(&mut s, 1, &["EVAL", script, "0"]), ":7999\r\n");
    // And an error reply after as many arguments is still the script's error.
    let script = "local a = {} for i=1,7999 do a[i] = 1 end \
                  return redis.pcall('get', unpack(a))";
    assert!(apply(&mut s, 2, &["EVAL", script, "0"]).starts_with("-ERR Wrong number of args"));
}

/// The host's values (KEYS/ARGV, `redis.call`'s replies) are pushed under the memory
/// limit only when they cannot reach it; a big argument or reply, or a state already
/// using much of the limit, has it lifted for them. A script past the limit is still
/// stopped, with its writes undone.
#[test]
fn host_values_and_the_memory_limit() {
    let mut s = Store::default();
    let big = "x".repeat(3 << 20);
    let script = "redis.call('SET', KEYS[1], ARGV[1]) return #redis.call('GET', KEYS[1])";
    assert_eq!(
        apply(&mut s, 1, &["EVAL", script, "1", "big", &big]),
        ":3145728\r\n"
    );
    let script = "local hold = string.rep('y', 150 * 1024 * 1024) \
                  redis.call('SET', KEYS[1], ARGV[1]) \
                  return {#hold, redis.call('GET', KEYS[1]), redis.pcall('INCR', KEYS[1])['err']}";
    assert_eq!(
        apply(&mut s, 2, &["EVAL", script, "1", "k", "v"]),
        "*3\r\n:157286400\r\n$1\r\nv\r\n$43\r\nERR value is not an integer or out of range\r\n"
    );
    let script = "redis.call('SET', KEYS[1], 'new') local t = {} \
                  for i = 1, 8 do t[i] = string.rep(tostring(i), 100 * 1024 * 1024) end return #t";
    let reply = apply(&mut s, 3, &["EVAL", script, "1", "k"]);
    assert!(reply.contains("exceeded the Lua memory limit"), "{reply}");
    assert_eq!(apply(&mut s, 4, &["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(
        apply(&mut s, 5, &["EVAL", "return #KEYS[1]", "1", &big]),
        ":3145728\r\n"
    );
}

/// Not a test: times the EVALSHA row's script against SET through `apply_batch`
/// (`cargo test --release -p kelvin-server evalsha_apply_cost -- --ignored --nocapture`).
#[test]
#[ignore]
fn evalsha_apply_cost() {
    let mut s = Store::default();
    let script = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1]) \
                  redis.call('SET', KEYS[1], v) return v";
    let sha = apply(&mut s, 1, &["SCRIPT", "LOAD", script]);
    let sha = sha.lines().nth(1).unwrap().to_string();
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let keys: Vec<String> = (0..100_000).map(|i| format!("rmw:{i:012}")).collect();
    // The arguments as the log hands them over: slices of one buffer.
    let shared = |words: &[&str]| -> Vec<Bytes> {
        let all = Bytes::from(words.concat());
        let mut at = 0;
        words
            .iter()
            .map(|w| {
                at += w.len();
                all.slice(at - w.len()..at)
            })
            .collect()
    };
    let t = std::time::Instant::now();
    for i in 0..n {
        let k = &keys[(i * 7919 % 100_000) as usize];
        apply_raw(&mut s, 2 + i, shared(&["EVALSHA", &sha, "1", k, "1"]));
    }
    let eval = t.elapsed();
    let t = std::time::Instant::now();
    for i in 0..n {
        let k = &keys[(i * 7919 % 100_000) as usize];
        apply_raw(&mut s, 2 + n + i, shared(&["SET", k, "1"]));
    }
    let set = t.elapsed();
    eprintln!(
        "EVALSHA {:.2} us/op, SET {:.2} us/op",
        eval.as_secs_f64() * 1e6 / n as f64,
        set.as_secs_f64() * 1e6 / n as f64
    );
}

/// `tonumber` is a port of Lua 5.1's (a string converted once): its results and errors.
#[test]
fn tonumber_answers_as_lua() {
    let mut s = Store::default();
    let script = "local out = {} \
        for _, c in ipairs({{'0'}, {'abc'}, {'  12  '}, {'0x10'}, {'1e2'}, {''}, {5}, {{}}, \
                            {'-0'}, {'10', 2}, {'z', 36}, {'8', 8}, {' 7 ', 16}, {'7x', 16}}) do \
          out[#out + 1] = tostring(tonumber(c[1], c[2])) \
        end \
        local _, e1 = pcall(function() return tonumber() end) \
        local _, e2 = pcall(function() return tonumber('1', 99) end) \
        out[#out + 1] = e1 \
        out[#out + 1] = e2 \
        return table.concat(out, ',')";
    let expected = "0,nil,12,16,100,nil,5,nil,-0,2,35,nil,7,nil,\
        user_script:1: bad argument #1 to 'tonumber' (value expected),\
        user_script:1: bad argument #2 to 'tonumber' (base out of range)";
    let reply = apply(&mut s, 1, &["EVAL", script, "0"]);
    assert_eq!(reply, format!("${}\r\n{expected}\r\n", expected.len()));
}

/// `tonumber`'s own reading of plain decimals gives what Lua's `strtod` path gives (the
/// arithmetic coercion `s * 1`, which keeps `-0`), on both sides of its 15-digit bound and around it.
#[test]
fn tonumber_reads_plain_decimals_as_strtod() {
    let mut s = Store::default();
    let script = "local out = {} \
        for _, c in ipairs({'0', '7', '-7', '007', '-0', '123456789012345', '-999999999999999', \
                            '1234567890123456', '9007199254740993', '+5', '5 ', ' 5', '1e3', \
                            '1.5', '-', '', '--1', '0x1A', '12a'}) do \
          local ok, coerced = pcall(function() return c * 1 end) \
          local n = tonumber(c) \
          if ok then \
            if n ~= coerced or 1 / n ~= 1 / coerced then out[#out + 1] = c end \
          elseif n ~= nil then out[#out + 1] = c end \
        end \
        return {#out, table.concat(out, ','), tostring(1 / tonumber('-0'))}";
    let reply = apply(&mut s, 1, &["EVAL", script, "0"]);
    assert_eq!(reply, "*3\r\n:0\r\n$0\r\n\r\n$4\r\n-inf\r\n");
}

/// KEYS and ARGV are as new in every run, whatever the last script did to them (an EVAL
/// may refill the last EVAL's tables), and a function that kept its `keys` keeps them as
/// they were.
#[test]
fn keys_and_argv_are_as_new_in_every_run() {
    let mut run = store_runner();
    let count = "local n = 0 for _ in pairs(KEYS) do n = n + 1 end \
                 for _ in pairs(ARGV) do n = n + 10 end \
                 return {n, KEYS[1], ARGV[1], tostring(getmetatable(KEYS)), KEYS[5]}";
    let fresh = |k: &str, a: &str| format!("*3\r\n:11\r\n$1\r\n{k}\r\n$1\r\n{a}\r\n");
    // `tostring(nil)` ends the array: no metatable, and `KEYS[5]` unread.
    let fresh = |k: &str, a: &str| fresh(k, a).replace("*3", "*4") + "$3\r\nnil\r\n";
    for (n, change) in [
        "KEYS[2] = 'extra' ARGV.x = 1 return #KEYS",
        "KEYS[1] = nil ARGV[1] = 'changed' return 1",
        "setmetatable(KEYS, {__index = function() return 'm' end}) return 1",
        "for i = 1, 100 do KEYS[i] = i end for i = 2, 100 do KEYS[i] = nil end return 1",
        "table.insert(ARGV, 1, 'first') return 1",
        "return 1",
    ]
    .iter()
    .enumerate()
    {
        for _ in 0..3 {
            let changed = run(&["EVAL", change, "1", "k", "a"]);
            assert!(changed.starts_with(':'), "{change}: {changed}");
            let k = ((b'a' + n as u8) as char).to_string();
            assert_eq!(
                run(&["EVAL", count, "1", &k, "v"]),
                fresh(&k, "v"),
                "after {change}"
            );
        }
    }
    let lib = "#!lua name=keep\nlocal kept \
               redis.register_function('keep', function(keys) kept = kept or keys return kept[1] end)";
    assert_eq!(run(&["FUNCTION", "LOAD", lib]), "$4\r\nkeep\r\n");
    assert_eq!(run(&["FCALL", "keep", "1", "first"]), "$5\r\nfirst\r\n");
    for k in ["x", "y"] {
        assert_eq!(
            run(&["EVAL", "return KEYS[1]", "1", k]),
            format!("$1\r\n{k}\r\n")
        );
    }
    assert_eq!(run(&["FCALL", "keep", "1", "second"]), "$5\r\nfirst\r\n");
}

/// EVALSHA runs what EVAL or SCRIPT LOAD added, not what EVAL_RO only compiled.
#[test]
fn evalsha_runs_only_loaded_scripts() {
    let mut run = store_runner();
    let script = "return 'ro'";
    let sha = super::script_sha(script.as_bytes());
    assert_eq!(run(&["EVAL_RO", script, "0"]), "$2\r\nro\r\n");
    assert_eq!(
        run(&["EVALSHA", &sha, "0"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(
        run(&["SCRIPT", "LOAD", script]),
        format!("$40\r\n{sha}\r\n")
    );
    assert_eq!(run(&["EVALSHA", &sha, "0"]), "$2\r\nro\r\n");
    assert_eq!(run(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(
        run(&["EVALSHA", &sha, "0"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(run(&["EVAL", script, "0"]), "$2\r\nro\r\n");
    assert_eq!(run(&["EVALSHA", &sha.to_uppercase(), "0"]), "$2\r\nro\r\n");
}

/// Status replies (`{ok=...}`) are tables of their own within a run and as new in every
/// run, whatever the last script did to its own (an EVAL may be lent the last EVAL's
/// first one), and a function that kept one keeps it as it was.
#[test]
fn status_replies_are_as_new_in_every_run() {
    let mut run = store_runner();
    assert_eq!(
        run(&[
            "EVAL",
            "local a = redis.call('SET', KEYS[1], 'x') local b = redis.call('PING') \
             local c = redis.call('SET', KEYS[1], 'y') \
             return {tostring(a == c), a.ok, b.ok, c.ok}",
            "1",
            "k"
        ]),
        "*4\r\n$5\r\nfalse\r\n$2\r\nOK\r\n$4\r\nPONG\r\n$2\r\nOK\r\n"
    );
    let look = "local r = redis.call(ARGV[1], KEYS[1], 'v') local n = 0 \
                for _ in pairs(r) do n = n + 1 end \
                return {n, r.ok, tostring(getmetatable(r))}";
    let lib = "#!lua name=keepok\nlocal kept \
               redis.register_function('keepok', function(keys) \
                 local r = redis.call('SET', keys[1], 'v') kept = kept or r return kept.ok end)";
    assert_eq!(run(&["FUNCTION", "LOAD", lib]), "$6\r\nkeepok\r\n");
    assert_eq!(run(&["FCALL", "keepok", "1", "k"]), "$2\r\nOK\r\n");
    for change in [
        "local r = redis.call('SET', KEYS[1], 'x') r.extra = 1 return 1",
        "local r = redis.call('SET', KEYS[1], 'x') r.ok = nil r[1] = 'x' return 1",
        "local r = redis.call('SET', KEYS[1], 'x') setmetatable(r, {}) return 1",
        "local r = redis.call('SET', KEYS[1], 'x') r.ok = 'changed' return 1",
        "return redis.call('PING').ok",
        "return 1",
    ] {
        for _ in 0..3 {
            let changed = run(&["EVAL", change, "1", "k"]);
            assert!(
                matches!(changed.as_bytes()[0], b':' | b'$'),
                "{change}: {changed}"
            );
            assert_eq!(
                run(&["EVAL", look, "1", "k", "SET"]),
                "*3\r\n:1\r\n$2\r\nOK\r\n$3\r\nnil\r\n",
                "after {change}"
            );
            assert_eq!(run(&["FCALL", "keepok", "1", "k"]), "$2\r\nOK\r\n");
        }
    }
}

/// Scripts that assign no global read theirs from the libraries' table directly
/// (`Vm::compile`); the sandbox is the same for them and for the others.
#[test]
fn the_sandbox_is_the_same_whatever_a_script_assigns() {
    let mut run = store_runner();
    for code in [
        "local function f() y = 1 end f() return 1",
        "return (function() return function() z = 1 end end)()()",
        "return loadstring('q = 1')()",
        "KEYS = {} return 1",
        "redis = nil return 1",
    ] {
        let reply = run(&["EVAL", code, "1", "k"]);
        assert!(
            reply.contains("Attempt to modify a readonly table"),
            "{code}: {reply}"
        );
    }
    for (code, want) in [
        ("local t = {} t.x = 'a' return t.x", "$1\r\na\r\n"),
        ("return _G.KEYS[1]", "$1\r\nk\r\n"),
        ("return loadstring('return KEYS[1]')()", "$1\r\nk\r\n"),
        ("return tostring(rawget(_G, 'KEYS'))", "$3\r\nnil\r\n"),
        ("return (function() return ARGV[1] end)()", "$1\r\nv\r\n"),
    ] {
        assert_eq!(run(&["EVAL", code, "1", "k", "v"]), want, "{code}");
    }
    let reply = run(&[
        "EVAL",
        "local f = function() return undefined_name end return f()",
        "0",
    ]);
    assert!(
        reply.starts_with(
            "-ERR user_script:1: Script attempted to access nonexistent global variable 'undefined_name'"
        ),
        "{reply}"
    );
}
