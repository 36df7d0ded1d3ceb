"""Redis compatibility details found by Redis's own test suite (scripts/redis-suite):
CONFIG tunables, CLIENT REPLY, EXPIRE conditions, INCRBYFLOAT, UNSUBSCRIBE, CLIENT
UNBLOCK, INFO commandstats/errorstats, WAIT."""

import pytest
import redis

from support import next_message, wait_for

pytestmark = pytest.mark.compat


def test_config_set_tunables_are_kept_and_reported(r):
    old = r.config_get("hash-max-ziplist-entries")["hash-max-ziplist-entries"]
    try:
        assert r.config_set("hash-max-ziplist-entries", 16)
        assert r.config_get("hash-max-ziplist-entries") == {"hash-max-ziplist-entries": "16"}
        assert r.config_get("hash-max-listpack-entries") == {"hash-max-listpack-entries": "16"}
    finally:
        r.config_set("hash-max-ziplist-entries", old)
    depth = r.config_get("list-compress-depth")["list-compress-depth"]
    assert r.execute_command("CONFIG", "SET", "list-compress-depth", "2",
                             "lazyfree-lazy-user-del", "yes") == "OK"
    try:
        assert r.config_get("list-compress-depth") == {"list-compress-depth": "2"}
        assert r.config_get("lazyfree-lazy-user-del") == {"lazyfree-lazy-user-del": "yes"}
    finally:
        r.execute_command("CONFIG", "SET", "list-compress-depth", depth,
                          "lazyfree-lazy-user-del", "no")
    names = r.config_get("*")
    for name in ["activedefrag", "zset-max-listpack-value", "hz", "maxmemory-policy"]:
        assert name in names


def test_config_set_is_all_or_nothing(r):
    depth = r.config_get("list-compress-depth")["list-compress-depth"]
    with pytest.raises(redis.ResponseError, match="argument couldn't be parsed into an integer"):
        r.execute_command("CONFIG", "SET", "list-compress-depth", "7", "hz", "often")
    assert r.config_get("list-compress-depth") == {"list-compress-depth": depth}
    with pytest.raises(redis.ResponseError, match="duplicate parameter"):
        r.execute_command("CONFIG", "SET", "hz", "5", "hz", "6")
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.execute_command("CONFIG", "SET", "list-compress-depth", "1", "no-such-thing", "1")
    assert r.config_get("list-compress-depth") == {"list-compress-depth": depth}
    with pytest.raises(redis.ResponseError, match="can't set immutable config"):
        r.execute_command("CONFIG", "SET", "daemonize", "yes")
    with pytest.raises(redis.ResponseError, match="argument must be 'yes' or 'no'"):
        r.execute_command("CONFIG", "SET", "activedefrag", "maybe")


def test_client_reply_off_skip_on(raw):
    c = raw()
    c.send("CLIENT", "REPLY", "OFF")
    c.send("SET", "cr:a", "1")
    c.send("CLIENT", "REPLY", "SKIP")
    c.send("GET", "cr:a")
    c.send("CLIENT", "REPLY", "ON")
    assert c.call("GET", "cr:a") == "OK", "the first reply after OFF is ON's own OK"
    assert c.read_reply() == "1"
    c.send("CLIENT", "REPLY", "SKIP")
    c.send("INCR", "cr:n")
    assert c.call("INCR", "cr:n") == 2, "SKIP drops exactly the next command's reply"
    assert str(c.call("CLIENT", "REPLY", "MAYBE")) == "ERR syntax error"
    assert c.call("PING") == "PONG"
    c.send("CLIENT", "REPLY", "OFF")
    assert c.call("SUBSCRIBE", "cr:ch") == ["subscribe", "cr:ch", 1], \
        "subscription confirmations are pushes, sent with replies off"


def test_expire_lt_xx_needs_an_existing_ttl(r):
    r.set("ex:k", "v")
    assert r.execute_command("EXPIRE", "ex:k", 200, "LT", "XX") == 0
    assert r.ttl("ex:k") == -1
    r.expire("ex:k", 300)
    assert r.execute_command("EXPIRE", "ex:k", 200, "LT", "XX") == 1
    assert r.execute_command("EXPIRE", "ex:k", 250, "GT", "XX") == 1
    assert 240 <= r.ttl("ex:k") <= 250


def test_incrbyfloat_never_answers_negative_zero(r):
    r.incrbyfloat("f:k", "0.024390243902439025")
    assert r.incrbyfloat("f:k", "-0.024390243902439025") == 0
    assert r.get("f:k") == "0"
    r.set("f:k", "1.5")
    r.incrbyfloat("f:k", "-1.5")
    assert r.get("f:k") == "0"
    r.incrbyfloat("f:k", "0.1")
    r.incrbyfloat("f:k", "0.2")
    assert r.get("f:k") == "0.3"


def test_unsubscribe_without_arguments_stops_delivery(server, r):
    sub = server.client()
    p = sub.pubsub()
    try:
        p.subscribe("us:a", "us:b")
        p.psubscribe("us:*")
        for _ in range(3):
            assert p.get_message(timeout=2)["type"] in ("subscribe", "psubscribe")
        assert r.publish("us:a", "x") == 2
        for _ in range(2):
            assert p.get_message(timeout=2)["type"] in ("message", "pmessage")
        p.unsubscribe()
        for _ in range(2):
            assert p.get_message(timeout=2)["type"] == "unsubscribe"
        assert r.publish("us:a", "x") == 1
        assert p.get_message(timeout=2)["type"] == "pmessage"
        p.punsubscribe()
        assert p.get_message(timeout=2)["type"] == "punsubscribe"
        assert r.publish("us:a", "x") == 0
    finally:
        p.close()
        sub.close()


def _blocked(r, client_id):
    return "flags=b" in r.execute_command("CLIENT", "LIST", "ID", client_id)


def test_client_unblock_timeout_and_error(r, raw):
    c = raw()
    cid = c.call("CLIENT", "ID")
    for how, reply in [((), None), (("TIMEOUT",), None),
                       (("ERROR",), "UNBLOCKED client unblocked via CLIENT UNBLOCK")]:
        c.send("BLPOP", "cu:l", 0)
        assert wait_for(lambda: _blocked(r, cid))
        assert r.execute_command("CLIENT", "UNBLOCK", cid, *how) == 1
        assert c.read_reply() == reply
    # Not blocked: 0. Bad arguments: Redis's errors.
    assert r.execute_command("CLIENT", "UNBLOCK", cid) == 0
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        r.execute_command("CLIENT", "UNBLOCK", "abc")
    with pytest.raises(redis.ResponseError,
                       match="^CLIENT UNBLOCK reason should be TIMEOUT or ERROR$"):
        r.execute_command("CLIENT", "UNBLOCK", cid, "LATER")
    # The connection still works, and a later block is not cut short by the old request.
    c.send("BLPOP", "cu:l", 0)
    assert wait_for(lambda: _blocked(r, cid))
    r.rpush("cu:l", "x")
    assert c.read_reply() == ["cu:l", "x"]


def test_woken_brpoplpush_answers_wrongtype_of_its_destination(r, raw):
    c = raw()
    cid = c.call("CLIENT", "ID")
    c.send("BRPOPLPUSH", "cu:src", "cu:dst", 0)
    assert wait_for(lambda: _blocked(r, cid))
    r.set("cu:dst", "not a list")
    r.rpush("cu:src", "x")
    assert c.read_reply().startswith("WRONGTYPE")
    assert r.lrange("cu:src", 0, -1) == ["x"], "the element stays in the source"


def test_info_commandstats_and_errorstats(r):
    r.config_resetstat()
    r.set("cs:k", "v")
    r.get("cs:k")
    with pytest.raises(redis.ResponseError):
        r.execute_command("LPUSH", "cs:k", "x")  # WRONGTYPE: a failed call
    with pytest.raises(redis.ResponseError):
        r.execute_command("GET")  # arity: a rejected call
    stats = r.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 1
    assert stats["cmdstat_get"]["calls"] == 1
    assert stats["cmdstat_get"]["rejected_calls"] == 1
    assert stats["cmdstat_lpush"]["failed_calls"] == 1
    assert "usec_per_call" in stats["cmdstat_set"]
    errors = r.info("errorstats")
    assert errors["errorstat_WRONGTYPE"]["count"] == 1
    assert errors["errorstat_ERR"]["count"] == 1
    assert r.info("stats")["total_error_replies"] == 2
    assert "cmdstat_set" not in r.info()
    assert "cmdstat_set" in r.info("everything")


def test_wait_on_a_single_server_answers_zero(r):
    r.set("w:k", "v")
    assert r.execute_command("WAIT", 0, 0) == 0
    assert r.execute_command("WAIT", 1, 10) == 0
    with pytest.raises(redis.ResponseError, match="^timeout is negative$"):
        r.execute_command("WAIT", 0, -1)
    with pytest.raises(redis.ResponseError,
                       match="^timeout is not an integer or out of range$"):
        r.execute_command("WAIT", 0, "soon")


def test_new_key_events(r, r2):
    r.config_set("notify-keyspace-events", "En")
    try:
        p = r2.pubsub()
        p.psubscribe("__keyevent@0__:new")
        assert next_message(p, kinds=("psubscribe",)) is not None
        r.set("nk:a", "1")
        r.set("nk:a", "2")  # not new
        r.rpush("nk:l", "x")
        r.rpush("nk:l", "y")  # not new
        got = [next_message(p), next_message(p)]
        assert [m["data"] for m in got] == ["nk:a", "nk:l"]
        assert next_message(p, timeout=0.3) is None
        p.close()
    finally:
        r.config_set("notify-keyspace-events", "")


def test_save_and_shutdown_are_refused_inside_multi(single):
    single.execute_command("MULTI")
    single.execute_command("SET", "m:k", "v")
    for cmd in ("SAVE", "SHUTDOWN"):
        with pytest.raises(redis.ResponseError,
                           match="^Command not allowed inside a transaction$"):
            single.execute_command(cmd)
    # redis-py strips the EXECABORT code.
    with pytest.raises(redis.ResponseError, match="^Transaction discarded"):
        single.execute_command("EXEC")
    assert single.get("m:k") is None


def test_client_pause_write_holds_writes_until_unpause(r, raw):
    r.set("cp:k", "old")
    writer = raw()
    try:
        assert r.execute_command("CLIENT", "PAUSE", 60000, "WRITE") == "OK"
        writer.send("SET", "cp:k", "new")
        # Reads go on; the write waits for the end of the pause.
        assert r.get("cp:k") == "old"
        assert r.execute_command("CLIENT", "UNPAUSE") == "OK"
        assert writer.read_reply() == "OK"
        assert r.get("cp:k") == "new"
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    with pytest.raises(redis.ResponseError, match="^CLIENT PAUSE mode must be WRITE or ALL$"):
        r.execute_command("CLIENT", "PAUSE", 10, "READS")
    with pytest.raises(redis.ResponseError, match="^timeout is negative$"):
        r.execute_command("CLIENT", "PAUSE", -1)
    with pytest.raises(redis.ResponseError,
                       match="^timeout is not an integer or out of range$"):
        r.execute_command("CLIENT", "PAUSE", "soon")
