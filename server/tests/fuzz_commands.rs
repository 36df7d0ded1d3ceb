//! Every command in the table, with thousands of hostile argument lists: the server must
//! answer each one (a reply or an error) and never panic.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{run, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Arguments that sit on the edges of what commands parse.
const POOL: &[&str] = &[
    "k",
    "k2",
    "h",
    "s",
    "z",
    "l",
    "missing",
    "0",
    "1",
    "-1",
    "2",
    "100",
    "-100",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1.5",
    "-0.0",
    "inf",
    "-inf",
    "+inf",
    "nan",
    "(1",
    "(inf",
    "[a",
    "(b",
    "+",
    "-",
    "*",
    "?",
    "a*",
    "",
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "NX",
    "XX",
    "GT",
    "LT",
    "CH",
    "INCR",
    "KEEPTTL",
    "GET",
    "PERSIST",
    "COUNT",
    "MATCH",
    "TYPE",
    "LIMIT",
    "WITHSCORES",
    "WITHSCORE",
    "WITHVALUES",
    "BYSCORE",
    "BYLEX",
    "REV",
    "BEFORE",
    "AFTER",
    "LEFT",
    "RIGHT",
    "RANK",
    "MAXLEN",
    "WEIGHTS",
    "AGGREGATE",
    "SUM",
    "MIN",
    "MAX",
    "REPLACE",
    "DB",
    "NOVALUES",
    "ID",
    "LIB-NAME",
    "ENCODING",
    "FREQ",
    "HELP",
    "GETKEYS",
    "INFO",
    "DOCS",
    "SET",
    "maxclients",
];

/// Commands left out: they end the connection or the server on purpose, (the
/// (un)subscribe family) answer one message per argument, as Redis does, which a
/// request/response client cannot follow, or (blocking pops) may wait forever by design;
/// `blocking_pops_wait_for_a_push_or_time_out` in lists.rs covers those.
const SKIP: &[&str] = &[
    "blpop",
    "brpop",
    "blmove",
    "brpoplpush",
    "blmpop",
    "bzmpop",
    "bzpopmin",
    "bzpopmax",
    "shutdown",
    "quit",
    "client",
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "hello",
    "auth",
];

fn seed_types(con: &mut redis::Connection) {
    for args in [
        &["SET", "k", "10"][..],
        &["HSET", "h", "f", "1", "g", "x"],
        &["SADD", "s", "a", "b", "1"],
        &["ZADD", "z", "1", "a", "2", "b"],
        &["RPUSH", "l", "a", "b", "c"],
    ] {
        let _ = run(con, args);
    }
}

#[test]
fn hostile_arguments_never_panic_the_server() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let server = TestServer::start();
    let mut con = server.client();
    // A command that never answers fails the test instead of hanging it.
    con.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let names: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut con).unwrap();
    assert!(names.len() > 40);
    let mut rng = SmallRng::seed_from_u64(7);
    let long = "x".repeat(5000);
    let mut sent = 0;
    for round in 0..12 {
        seed_types(&mut con);
        for name in &names {
            if SKIP.contains(&name.as_str()) {
                continue;
            }
            for _ in 0..25 {
                let argc = rng.gen_range(0..7);
                let mut args = vec![name.clone()];
                for _ in 0..argc {
                    let a = if rng.gen_ratio(1, 50) {
                        long.clone()
                    } else {
                        POOL[rng.gen_range(0..POOL.len())].to_string()
                    };
                    args.push(a);
                }
                let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
                match run(&mut con, &refs) {
                    Ok(_) => {}
                    Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                        panic!("connection lost after {refs:?} (round {round}): {e}");
                    }
                    Err(_) => {}
                }
                sent += 1;
                // Leave MULTI so the next command runs normally; the reply also proves
                // that the command answered exactly once.
                let reset = run(&mut con, &["RESET"]);
                assert!(
                    matches!(&reset, Ok(redis::Value::SimpleString(s)) if s == "RESET"),
                    "after {refs:?}: {reset:?}"
                );
            }
        }
        let _ = run(&mut con, &["FLUSHALL"]);
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert!(sent > 1000);
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "the server panicked on some input (see stderr)"
    );
}
