"""Generic key commands: DEL, EXISTS, TYPE, RENAME, KEYS, SCAN, EXPIRE family, COPY..."""

import time

import pytest
import redis

pytestmark = pytest.mark.keys


def test_del_unlink(r):
    r.mset({"k:a": 1, "k:b": 2, "k:c": 3})
    r.rpush("k:l", "x")
    assert r.delete("k:a", "k:b", "k:missing") == 2
    assert r.exists("k:a", "k:b") == 0
    assert r.unlink("k:c", "k:l", "k:missing") == 2
    assert r.exists("k:c", "k:l") == 0
    assert r.delete("k:missing") == 0


def test_exists_counts_repeats(r):
    r.set("k:e", "v")
    assert r.exists("k:e") == 1
    assert r.exists("k:e", "k:e", "k:nope") == 2
    assert r.exists("k:nope") == 0


def test_type(r):
    r.set("k:str", "v")
    r.rpush("k:list", "a")
    r.sadd("k:set", "a")
    r.zadd("k:zset", {"a": 1})
    r.hset("k:hash", "f", "v")
    assert r.type("k:str") == "string"
    assert r.type("k:list") == "list"
    assert r.type("k:set") == "set"
    assert r.type("k:zset") == "zset"
    assert r.type("k:hash") == "hash"
    assert r.type("k:none") == "none"


def test_rename(r):
    r.set("k:src", "v", ex=1000)
    assert r.rename("k:src", "k:dst")
    assert r.exists("k:src") == 0
    assert r.get("k:dst") == "v"
    assert 990 <= r.ttl("k:dst") <= 1000  # the TTL moves with the value
    # overwrites an existing destination of any type
    r.rpush("k:other", "x")
    assert r.rename("k:dst", "k:other")
    assert r.type("k:other") == "string"
    # renaming onto itself is fine
    assert r.rename("k:other", "k:other")
    assert r.get("k:other") == "v"


def test_rename_missing_source(r):
    with pytest.raises(redis.ResponseError) as e:
        r.rename("k:nosuch", "k:whatever")
    assert str(e.value) == "no such key"
    assert r.exists("k:whatever") == 0


def test_renamenx(r):
    r.set("k:a", "1")
    r.set("k:b", "2")
    assert r.renamenx("k:a", "k:b") == False
    assert r.get("k:a") == "1"
    assert r.renamenx("k:a", "k:c") == True
    assert r.get("k:c") == "1"
    assert r.exists("k:a") == 0
    with pytest.raises(redis.ResponseError, match="no such key"):
        r.renamenx("k:nosuch", "k:d")


def test_keys_pattern(r):
    for k in ["kp:hello", "kp:hallo", "kp:hxllo", "kp:hllo", "kp:heeeello", "kp:other"]:
        r.set(k, 1)
    assert sorted(r.keys("kp:h?llo")) == ["kp:hallo", "kp:hello", "kp:hxllo"]
    assert sorted(r.keys("kp:h*llo")) == ["kp:hallo", "kp:heeeello", "kp:hello", "kp:hllo",
                                          "kp:hxllo"]
    assert sorted(r.keys("kp:h[ae]llo")) == ["kp:hallo", "kp:hello"]
    assert sorted(r.keys("kp:h[^e]llo")) == ["kp:hallo", "kp:hxllo"]
    assert sorted(r.keys("kp:*")) == sorted(
        ["kp:hello", "kp:hallo", "kp:hxllo", "kp:hllo", "kp:heeeello", "kp:other"])
    assert r.keys("kp:nomatch*") == []


def _scan_all(r, **kwargs):
    """Runs a full SCAN iteration (bounded); returns the keys seen, with repeats."""
    seen = []
    cursor = 0
    for _ in range(100000):
        cursor, keys = r.scan(cursor=cursor, **kwargs)
        seen.extend(keys)
        if int(cursor) == 0:
            return seen
    raise AssertionError("SCAN did not finish")


def test_scan_full_iteration(r):
    keys = {f"sc:{i}" for i in range(1000)}
    with r.pipeline(transaction=False) as p:
        for k in keys:
            p.set(k, "v")
        p.execute()
    seen = _scan_all(r, match="sc:*", count=37)
    assert set(seen) == keys  # every key found at least once
    seen_default = _scan_all(r, match="sc:*")
    assert set(seen_default) == keys


def test_scan_match_count_type(r):
    for i in range(50):
        r.set(f"st:s:{i}", "v")
        r.rpush(f"st:l:{i}", "v")
    r.hset("st:h:0", "f", "v")
    assert set(_scan_all(r, match="st:l:*", count=10)) == {f"st:l:{i}" for i in range(50)}
    assert set(_scan_all(r, match="st:*", _type="list", count=20)) == {
        f"st:l:{i}" for i in range(50)}
    assert set(_scan_all(r, match="st:*", _type="string", count=1000)) == {
        f"st:s:{i}" for i in range(50)}
    assert set(_scan_all(r, match="st:*", _type="hash")) == {"st:h:0"}
    assert _scan_all(r, match="st:nomatch:*") == []


def test_scan_replies_shape(r):
    r.set("shape:1", "v")
    reply = r.execute_command("SCAN", "0", "MATCH", "shape:*", "COUNT", "1000")
    # redis-py leaves SCAN replies as [cursor, [keys]]
    cursor, keys = reply
    assert isinstance(cursor, (int, str))
    assert "shape:1" in keys
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.execute_command("SCAN", "notanumber")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SCAN", "0", "COUNT", "0")


def test_randomkey(server):
    c = server.client(db=9)
    try:
        c.flushdb()
        assert c.randomkey() is None
        c.set("rk:a", 1)
        c.set("rk:b", 2)
        for _ in range(20):
            assert c.randomkey() in ("rk:a", "rk:b")
        c.flushdb()
    finally:
        c.close()


def test_expire_basic(r):
    r.set("k:x", "v")
    assert r.expire("k:x", 100) == True
    assert 95 <= r.ttl("k:x") <= 100
    assert r.pexpire("k:x", 200000) == True
    assert 195000 <= r.pttl("k:x") <= 200000
    assert r.expire("k:missing", 100) == False
    assert r.pexpire("k:missing", 100) == False


def test_expire_past_deletes(r):
    r.set("k:x", "v")
    assert r.expire("k:x", -1) == True
    assert r.exists("k:x") == 0
    r.set("k:y", "v")
    assert r.expireat("k:y", int(time.time()) - 10) == True
    assert r.exists("k:y") == 0


def test_expireat_pexpireat(r):
    now = int(time.time())
    r.set("k:a", "v")
    assert r.expireat("k:a", now + 500) == True
    assert 490 <= r.ttl("k:a") <= 500
    assert r.expiretime("k:a") == now + 500
    r.set("k:b", "v")
    at_ms = int(time.time() * 1000) + 500000
    assert r.pexpireat("k:b", at_ms) == True
    assert r.pexpiretime("k:b") == at_ms
    assert 490000 <= r.pttl("k:b") <= 500000
    assert r.expireat("k:missing", now + 100) == False


def test_expire_nx_xx_gt_lt(r):
    r.set("k:o", "v")
    # XX: only when a TTL exists
    assert r.expire("k:o", 100, xx=True) == False
    assert r.ttl("k:o") == -1
    # GT on a key without TTL fails (no TTL counts as infinite)
    assert r.expire("k:o", 100, gt=True) == False
    assert r.ttl("k:o") == -1
    # NX: only when there is no TTL
    assert r.expire("k:o", 100, nx=True) == True
    assert r.expire("k:o", 200, nx=True) == False
    assert 95 <= r.ttl("k:o") <= 100
    assert r.expire("k:o", 300, xx=True) == True
    assert 295 <= r.ttl("k:o") <= 300
    # GT/LT compare with the current TTL
    assert r.expire("k:o", 100, gt=True) == False
    assert r.expire("k:o", 1000, gt=True) == True
    assert 995 <= r.ttl("k:o") <= 1000
    assert r.expire("k:o", 2000, lt=True) == False
    assert r.expire("k:o", 50, lt=True) == True
    assert 45 <= r.ttl("k:o") <= 50
    # LT on a key without TTL succeeds
    r.set("k:p", "v")
    assert r.expire("k:p", 50, lt=True) == True
    assert 45 <= r.ttl("k:p") <= 50
    # the same flags on PEXPIRE / EXPIREAT / PEXPIREAT
    assert r.pexpire("k:p", 10, gt=True) == False
    assert r.pexpire("k:p", 900000, gt=True) == True
    at = int(time.time()) + 5000
    assert r.expireat("k:p", at, lt=True) == False
    assert r.expireat("k:p", at, gt=True) == True
    assert r.pexpireat("k:p", at * 1000 + 1000, xx=True) == True
    assert r.pexpiretime("k:p") == at * 1000 + 1000
    r.set("k:q", "v")
    assert r.pexpireat("k:q", at * 1000, nx=True) == True
    assert r.pexpireat("k:q", at * 1000 + 5, nx=True) == False
    with pytest.raises(redis.ResponseError,
                       match="NX and XX, GT or LT options at the same time are not compatible"):
        r.execute_command("EXPIRE", "k:q", 10, "NX", "XX")
    with pytest.raises(redis.ResponseError,
                       match="GT and LT options at the same time are not compatible"):
        r.execute_command("EXPIRE", "k:q", 10, "GT", "LT")
    with pytest.raises(redis.ResponseError, match="Unsupported option"):
        r.execute_command("EXPIRE", "k:q", 10, "BOGUS")


def test_expire_not_integer(r):
    r.set("k:x", "v")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.execute_command("EXPIRE", "k:x", "ten")
    assert r.ttl("k:x") == -1


def test_persist_ttl_pttl(r):
    assert r.ttl("k:none") == -2
    assert r.pttl("k:none") == -2
    r.set("k:x", "v")
    assert r.ttl("k:x") == -1
    assert r.pttl("k:x") == -1
    assert r.persist("k:x") == False
    r.expire("k:x", 100)
    assert r.persist("k:x") == True
    assert r.ttl("k:x") == -1
    assert r.persist("k:none") == False


def test_expiretime(r):
    assert r.expiretime("k:none") == -2
    assert r.pexpiretime("k:none") == -2
    r.set("k:x", "v")
    assert r.expiretime("k:x") == -1
    assert r.pexpiretime("k:x") == -1
    before = int(time.time())
    r.expire("k:x", 1000)
    et = r.expiretime("k:x")
    assert before + 999 <= et <= int(time.time()) + 1001
    pet = r.pexpiretime("k:x")
    assert abs(pet - et * 1000) <= 1000  # EXPIRETIME rounds to the nearest second


def test_touch(r):
    r.set("k:a", 1)
    r.set("k:b", 2)
    assert r.touch("k:a", "k:b", "k:c") == 2
    assert r.touch("k:c") == 0


def test_copy(r):
    r.set("k:src", "v", ex=1000)
    assert r.copy("k:src", "k:dst") == True
    assert r.get("k:dst") == "v"
    assert r.get("k:src") == "v"
    assert 990 <= r.ttl("k:dst") <= 1000
    r.set("k:src", "w")
    assert r.get("k:dst") == "v"  # an independent copy
    assert r.copy("k:src", "k:dst") == False
    assert r.get("k:dst") == "v"
    assert r.copy("k:src", "k:dst", replace=True) == True
    assert r.get("k:dst") == "w"
    assert r.copy("k:missing", "k:dst2") == False
    # deep copies of collections
    r.rpush("k:list", "a", "b")
    assert r.copy("k:list", "k:list2") == True
    r.rpush("k:list", "c")
    assert r.lrange("k:list2", 0, -1) == ["a", "b"]
    r.hset("k:h", mapping={"f": "1"})
    assert r.copy("k:h", "k:h2")
    assert r.hgetall("k:h2") == {"f": "1"}


def test_copy_db(server, r):
    other = server.client(db=3)
    try:
        other.delete("k:cp")
        r.set("k:cp", "v")
        assert r.copy("k:cp", "k:cp", destination_db=3) == True
        assert other.get("k:cp") == "v"
        other.delete("k:cp")
    finally:
        other.close()
