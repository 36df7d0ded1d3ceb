"""Set commands."""

import pytest
import redis

pytestmark = pytest.mark.sets


def test_sadd_srem_smembers(r):
    assert r.sadd("set:a", "x", "y", "z", "x") == 3
    assert r.sadd("set:a", "x", "w") == 1
    assert r.smembers("set:a") == {"w", "x", "y", "z"}
    assert r.scard("set:a") == 4
    assert r.srem("set:a", "x", "nope") == 1
    assert r.smembers("set:a") == {"w", "y", "z"}
    assert r.srem("set:a", "w", "y", "z") == 3
    assert r.exists("set:a") == 0
    assert r.smembers("set:none") == set()
    assert r.scard("set:none") == 0


def test_sismember_smismember(r):
    r.sadd("set:m", "a", "b")
    assert r.sismember("set:m", "a") == True
    assert r.sismember("set:m", "c") == False
    assert r.sismember("set:none", "a") == False
    assert r.smismember("set:m", ["a", "c", "b"]) == [True, False, True]


def test_spop_srandmember(r):
    members = {str(i) for i in range(20)}
    r.sadd("set:p", *members)
    m = r.spop("set:p")
    assert m in members
    assert r.sismember("set:p", m) == False
    popped = r.spop("set:p", 5)
    assert len(popped) == 5 and set(popped) <= members
    assert r.scard("set:p") == 14
    rand = r.srandmember("set:p", 3)
    assert len(set(rand)) == 3
    assert len(r.srandmember("set:p", -30)) == 30
    assert r.scard("set:p") == 14
    assert r.spop("set:none") is None
    assert r.srandmember("set:none") is None


def test_set_algebra(r):
    r.sadd("set:1", "a", "b", "c", "d")
    r.sadd("set:2", "c")
    r.sadd("set:3", "a", "c", "e")
    assert r.sinter("set:1", "set:2", "set:3") == {"c"}
    assert r.sunion("set:1", "set:2", "set:3") == {"a", "b", "c", "d", "e"}
    assert r.sdiff("set:1", "set:2", "set:3") == {"b", "d"}
    assert r.sinter("set:1", "set:none") == set()
    assert r.sinterstore("set:dst", ["set:1", "set:3"]) == 2
    assert r.smembers("set:dst") == {"a", "c"}
    assert r.sunionstore("set:dst", ["set:2", "set:3"]) == 3
    assert r.smembers("set:dst") == {"a", "c", "e"}
    assert r.sdiffstore("set:dst", ["set:1", "set:3"]) == 2
    assert r.smembers("set:dst") == {"b", "d"}
    assert r.sintercard(2, ["set:1", "set:3"]) == 2
    assert r.sintercard(2, ["set:1", "set:3"], limit=1) == 1


def test_smove(r):
    r.sadd("set:src", "a", "b")
    r.sadd("set:dst", "c")
    assert r.smove("set:src", "set:dst", "a") == True
    assert r.smove("set:src", "set:dst", "zz") == False
    assert r.smembers("set:src") == {"b"}
    assert r.smembers("set:dst") == {"a", "c"}


def test_sscan(r):
    members = {f"m{i}" for i in range(500)}
    r.sadd("set:s", *members)
    seen = set()
    cursor = 0
    for _ in range(10000):
        cursor, page = r.sscan("set:s", cursor, count=40)
        seen.update(page)
        if cursor == 0:
            break
    assert seen == members


def test_set_wrongtype(r):
    r.set("set:str", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.sadd("set:str", "a")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.smembers("set:str")
