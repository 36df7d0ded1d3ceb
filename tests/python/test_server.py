"""Server and connection administration: INFO, DBSIZE, FLUSH*, TIME, CONFIG, COMMAND,
CLIENT, SELECT, HELLO/RESP3."""

import time

import pytest
import redis

from support import TARGET, RespError, running_server, wait_for

pytestmark = pytest.mark.server


def test_ping_echo(r, raw):
    assert r.ping() == True
    assert r.echo("hello") == "hello"
    assert raw().call("PING", "msg") == "msg"


def test_info(r, raw):
    r.set("srv:info", "v")
    info = r.info()
    assert "redis_version" in info
    assert info["loading"] == 0
    assert info["db0"]["keys"] >= 1
    c = raw()
    text = c.call("INFO")
    assert isinstance(text, str)
    lines = text.split("\r\n")
    assert any(line.startswith("redis_version:") for line in lines)
    assert "loading:0" in lines
    assert "# Keyspace" in lines
    assert any(line.startswith("db0:keys=") for line in lines)
    ks = c.call("INFO", "keyspace")
    assert "# Keyspace" in ks
    assert "db0:keys=" in ks
    assert "redis_version" not in ks
    server_section = c.call("INFO", "server")
    assert "redis_version:" in server_section
    assert "tcp_port:" in server_section


def test_dbsize_flushdb(server):
    c = server.client(db=5)
    other = server.client(db=6)
    try:
        c.flushdb()
        other.flushdb()
        assert c.dbsize() == 0
        c.mset({"srv:a": 1, "srv:b": 2, "srv:c": 3})
        other.set("srv:o", 1)
        assert c.dbsize() == 3
        assert c.flushdb() == True
        assert c.dbsize() == 0
        assert other.dbsize() == 1  # FLUSHDB touches only its own database
        assert c.execute_command("FLUSHDB", "ASYNC") in (True, "OK")
        assert c.execute_command("FLUSHDB", "SYNC") in (True, "OK")
        other.flushdb()
    finally:
        c.close()
        other.close()


def test_flushall(server, r):
    other = server.client(db=4)
    try:
        r.set("srv:fa", 1)
        other.set("srv:fa", 1)
        assert r.flushall() == True
        assert r.dbsize() == 0
        assert other.dbsize() == 0
        assert r.execute_command("FLUSHALL", "ASYNC") in (True, "OK")
    finally:
        other.close()


def test_time(r):
    secs, micros = r.time()
    assert abs(secs - time.time()) < 5
    assert 0 <= micros < 1_000_000


def test_config_get_set_maxclients(r):
    original = r.config_get("maxclients")["maxclients"]
    assert int(original) > 0
    try:
        assert r.config_set("maxclients", 500) == True
        assert r.config_get("maxclients") == {"maxclients": "500"}
    finally:
        r.config_set("maxclients", original)
    assert r.config_get("maxclients") == {"maxclients": original}


def test_config_get_set_notify_keyspace_events(r):
    try:
        assert r.config_set("notify-keyspace-events", "KEA") == True
        assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": "AKE"}
        assert r.config_set("notify-keyspace-events", "Ex") == True
        assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": "xE"}
        with pytest.raises(redis.ResponseError):
            r.config_set("notify-keyspace-events", "Q!")
    finally:
        r.config_set("notify-keyspace-events", "")
    assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}


def test_config_get_pattern_and_unknown(r):
    got = r.config_get("maxc*")
    assert "maxclients" in got
    assert r.config_get("no-such-parameter-xyz") == {}
    with pytest.raises(redis.ResponseError):
        r.config_set("no-such-parameter-xyz", "1")


def test_command_count(raw):
    count = raw().call("COMMAND", "COUNT")
    assert isinstance(count, int) and count > 100


def test_command_info_get(raw):
    c = raw()
    reply = c.call("COMMAND", "INFO", "get")
    assert isinstance(reply, list) and len(reply) == 1
    info = reply[0]
    name, arity, flags, first, last, step = info[:6]
    assert name == "get"
    assert arity == 2
    assert "readonly" in flags
    assert (first, last, step) == (1, 1, 1)
    reply = c.call("COMMAND", "INFO", "set", "nosuchcommand")
    assert reply[0][0] == "set" and reply[0][1] == -3
    assert reply[1] is None


def test_command_docs(raw):
    c = raw()
    reply = c.call("COMMAND", "DOCS", "get")
    # RESP2: a flat array name, [field, value, ...]
    assert isinstance(reply, list) and len(reply) == 2
    assert reply[0] == "get"
    doc = reply[1]
    fields = dict(zip(doc[::2], doc[1::2]))
    assert "summary" in fields and fields["summary"]
    assert fields.get("group") == "string"


def test_client_setname_getname_id(single):
    assert single.client_getname() is None
    assert single.client_setname("kelvin-test") == True
    assert single.client_getname() == "kelvin-test"
    cid = single.client_id()
    assert isinstance(cid, int) and cid > 0
    with pytest.raises(redis.ResponseError):
        single.client_setname("has space")


def test_client_list_info(single, r2):
    single.client_setname("listed")
    cid = single.client_id()
    clients = r2.client_list()
    mine = [c for c in clients if c.get("id") == str(cid)]
    assert len(mine) == 1
    assert mine[0]["name"] == "listed"
    assert "addr" in mine[0] and mine[0]["addr"].startswith("127.0.0.1:")
    info = single.client_info()
    assert str(info["id"]) == str(cid)
    assert info["name"] == "listed"
    assert "db" in info


def test_client_list_query_buffer_figures(single, r2):
    """CLIENT LIST's qbuf/qbuf-free are the connection's real query buffer, sized as
    Redis sizes it: 16 KiB to read into, kept after a big request, then trimmed to the
    recent peak and freed when idle."""
    single.client_setname("qbuf")

    def figures():
        mine = [c for c in r2.client_list() if c.get("name") == "qbuf"]
        assert len(mine) == 1
        return int(mine[0]["qbuf"]), int(mine[0]["qbuf-free"]), int(mine[0]["tot-mem"])

    used, free, total = figures()
    assert used == 0 and 16384 <= free < 32768
    assert total >= used + free
    single.set("srv:big", "A" * 400000)
    used, free, _ = figures()
    assert used + free > 32768
    # Quiet, the buffer is given back (checked for up to 10 s).
    deadline = time.time() + 10
    while figures()[:2] != (0, 0) and time.time() < deadline:
        time.sleep(0.2)
    assert figures()[:2] == (0, 0)
    assert single.get("srv:big") == "A" * 400000


def test_select(raw):
    c = raw()
    for db in range(16):
        assert c.call("SELECT", db) == "OK"
        assert c.call("SET", "srv:sel", f"db{db}") == "OK"
    for db in range(16):
        c.call("SELECT", db)
        assert c.call("GET", "srv:sel") == f"db{db}"
        c.call("DEL", "srv:sel")
    err = c.call("SELECT", 16)
    assert isinstance(err, RespError) and err == "ERR DB index is out of range"
    err = c.call("SELECT", "abc")
    assert isinstance(err, RespError) and err == "ERR value is not an integer or out of range"


def test_hello_3_raw(raw):
    c = raw()
    reply = c.call("HELLO", "3")
    assert isinstance(reply, dict)
    assert reply["proto"] == 3
    assert "server" in reply and "version" in reply
    c.call("DEL", "srv:h", "srv:z")
    c.call("HSET", "srv:h", "f1", "v1", "f2", "v2")
    # a RESP3 map is on the wire, not an array
    c.send("HGETALL", "srv:h")
    first = c.read_exact(1)
    assert first == b"%"
    c.buf = b"%" + c.buf
    assert c.read_reply() == {"f1": "v1", "f2": "v2"}
    c.call("ZADD", "srv:z", "1.5", "m")
    c.send("ZSCORE", "srv:z", "m")
    assert c.read_line() == b",1.5"
    c.send("GET", "srv:nokey")
    assert c.read_line() == b"_"
    # back to RESP2
    reply = c.call("HELLO", "2")
    assert isinstance(reply, list)
    c.send("GET", "srv:nokey")
    assert c.read_line() == b"$-1"
    err = c.call("HELLO", "4")
    assert isinstance(err, RespError) and err.startswith("NOPROTO")


def test_resp3_redis_py(server):
    c = server.client(protocol=3)
    try:
        c.delete("srv:h3", "srv:z3")
        c.hset("srv:h3", mapping={"a": "1", "b": "2"})
        assert c.hgetall("srv:h3") == {"a": "1", "b": "2"}
        c.zadd("srv:z3", {"m": 2.5})
        score = c.zscore("srv:z3", "m")
        assert isinstance(score, float) and score == 2.5
        assert c.zrange("srv:z3", 0, -1, withscores=True) == [["m", 2.5]] or \
            c.zrange("srv:z3", 0, -1, withscores=True) == [("m", 2.5)]
        assert c.ping() == True
        c.delete("srv:h3", "srv:z3")
    finally:
        c.close()


def test_quit(raw):
    c = raw()
    assert c.call("QUIT") == "OK"
    assert c.wait_closed(3.0)


def test_reset(raw):
    c = raw()
    c.call("SELECT", 2)
    c.call("MULTI")
    assert c.call("RESET") == "RESET"
    assert c.call("PING") == "PONG"  # no longer in MULTI
    c.call("SET", "srv:reset", "after-reset")
    other = raw()  # a fresh connection is on db 0: RESET went back there too
    assert other.call("GET", "srv:reset") == "after-reset"
    other.call("DEL", "srv:reset")


@pytest.mark.skipif(
    TARGET != "kelvin", reason="Kelvin snapshots as its log grows; the test's redis-server saves nothing"
)
def test_a_snapshot_by_log_growth_forks_and_info_says_so():
    """Past 64 MiB of log the group's snapshot is written by a forked child: INFO stats
    counts the fork and its length (`latest_fork_usec`, `total_forks`, as Redis),
    INFO persistence says while a child writes (`rdb_bgsave_in_progress`)."""
    with running_server() as srv:
        c = srv.client()
        try:
            stats = c.info("stats")
            assert (stats["total_forks"], stats["latest_fork_usec"]) == (0, 0)
            assert c.info("persistence")["rdb_bgsave_in_progress"] == 0
            value = b"x" * (1 << 20)
            for i in range(0, 72, 8):
                p = c.pipeline(transaction=False)
                for j in range(i, i + 8):
                    p.set(f"srv:fork:{j}", value)
                p.execute()
            assert wait_for(lambda: c.info("stats")["total_forks"] >= 1, timeout=30)
            assert c.info("stats")["latest_fork_usec"] > 0
            assert wait_for(lambda: c.info("persistence")["rdb_bgsave_in_progress"] == 0, timeout=60)
            assert c.get("srv:fork:71") == value.decode()
        finally:
            c.close()
