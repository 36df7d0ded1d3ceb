"""Redis compatibility details found by Redis's own test suite (scripts/redis-suite):
CONFIG tunables, CLIENT REPLY, EXPIRE conditions, INCRBYFLOAT, UNSUBSCRIBE."""

import pytest
import redis

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
