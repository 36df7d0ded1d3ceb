"""Sorted-set commands."""

import math

import pytest
import redis

pytestmark = pytest.mark.zsets


@pytest.fixture
def z(r):
    r.zadd("z:s", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    return r


def test_zadd_basic(r):
    assert r.zadd("z:1", {"a": 1, "b": 2}) == 2
    assert r.zadd("z:1", {"a": 10, "c": 3}) == 1
    assert r.zscore("z:1", "a") == 10.0
    assert r.zcard("z:1") == 3
    assert r.zscore("z:1", "nope") is None
    assert r.zscore("z:none", "a") is None
    r.zadd("z:1", {"inf": "+inf", "ninf": "-inf"})
    assert r.zscore("z:1", "inf") == math.inf
    assert r.zscore("z:1", "ninf") == -math.inf
    assert r.zrange("z:1", 0, 0) == ["ninf"]


def test_zadd_flags(r):
    r.zadd("z:f", {"a": 5})
    # NX: only new members
    assert r.zadd("z:f", {"a": 1, "b": 2}, nx=True) == 1
    assert r.zscore("z:f", "a") == 5.0
    # XX: only existing members
    assert r.zadd("z:f", {"a": 6, "c": 3}, xx=True) == 0
    assert r.zscore("z:f", "a") == 6.0
    assert r.zscore("z:f", "c") is None
    # CH: count changed, not just added
    assert r.zadd("z:f", {"a": 7, "b": 2, "d": 4}, ch=True) == 2
    # GT / LT
    assert r.zadd("z:f", {"a": 3}, gt=True) == 0
    assert r.zscore("z:f", "a") == 7.0
    assert r.zadd("z:f", {"a": 9}, gt=True, ch=True) == 1
    assert r.zscore("z:f", "a") == 9.0
    assert r.zadd("z:f", {"a": 10}, lt=True) == 0
    assert r.zscore("z:f", "a") == 9.0
    assert r.zadd("z:f", {"a": 1}, lt=True, ch=True) == 1
    assert r.zscore("z:f", "a") == 1.0
    # GT still adds new members
    assert r.zadd("z:f", {"new": 1}, gt=True) == 1
    # INCR
    assert r.zadd("z:f", {"a": 2.5}, incr=True) == 3.5
    assert r.zadd("z:f", {"a": 1}, incr=True, nx=True) is None
    assert r.zscore("z:f", "a") == 3.5


def test_zadd_errors(r):
    with pytest.raises(redis.ResponseError,
                       match="XX and NX options at the same time are not compatible"):
        r.execute_command("ZADD", "z:e", "NX", "XX", "1", "a")
    with pytest.raises(redis.ResponseError,
                       match="GT, LT, and/or NX options at the same time are not compatible"):
        r.execute_command("ZADD", "z:e", "GT", "NX", "1", "a")
    with pytest.raises(redis.ResponseError, match="value is not a valid float"):
        r.execute_command("ZADD", "z:e", "abc", "a")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("ZADD", "z:e", "1", "a", "2")
    with pytest.raises(redis.ResponseError, match="INCR option supports a single"):
        r.execute_command("ZADD", "z:e", "INCR", "1", "a", "2", "b")
    assert r.exists("z:e") == 0


def test_zrange_by_index(z):
    assert z.zrange("z:s", 0, -1) == ["a", "b", "c", "d", "e"]
    assert z.zrange("z:s", 1, 2) == ["b", "c"]
    assert z.zrange("z:s", -2, -1) == ["d", "e"]
    assert z.zrange("z:s", 3, 100) == ["d", "e"]
    assert z.zrange("z:s", 4, 2) == []
    assert z.zrange("z:s", 0, 1, withscores=True) == [("a", 1.0), ("b", 2.0)]
    assert z.zrange("z:s", 0, 1, desc=True) == ["e", "d"]
    assert z.zrevrange("z:s", 0, 2) == ["e", "d", "c"]
    assert z.zrevrange("z:s", 0, 0, withscores=True) == [("e", 5.0)]
    assert z.zrange("z:none", 0, -1) == []


def test_zrange_byscore_bylex_forms(z):
    assert z.zrange("z:s", 2, 4, byscore=True) == ["b", "c", "d"]
    assert z.zrange("z:s", "(2", "+inf", byscore=True) == ["c", "d", "e"]
    assert z.zrange("z:s", "-inf", "(3", byscore=True, withscores=True) == [
        ("a", 1.0), ("b", 2.0)]
    assert z.zrange("z:s", 1, 5, byscore=True, offset=1, num=2) == ["b", "c"]
    # REV BYSCORE takes max first
    assert z.zrange("z:s", 4, 2, byscore=True, desc=True) == ["d", "c", "b"]
    assert z.execute_command("ZRANGE", "z:s", "+inf", "-inf", "BYSCORE", "REV",
                             "LIMIT", "0", "2") == ["e", "d"]
    z.zadd("z:lex", {"a": 0, "b": 0, "c": 0, "d": 0})
    assert z.zrange("z:lex", "[b", "(d", bylex=True) == ["b", "c"]
    assert z.zrange("z:lex", "-", "+", bylex=True, offset=1, num=2) == ["b", "c"]
    assert z.zrangebylex("z:lex", "(a", "+") == ["b", "c", "d"]
    assert z.zrevrangebylex("z:lex", "+", "[c") == ["d", "c"]
    with pytest.raises(redis.ResponseError, match="syntax error"):
        z.execute_command("ZRANGE", "z:s", "0", "1", "LIMIT", "0", "1")


def test_zrangestore(z):
    assert z.zrangestore("z:dst", "z:s", 1, 3) == 3
    assert z.zrange("z:dst", 0, -1, withscores=True) == [("b", 2.0), ("c", 3.0), ("d", 4.0)]


def test_zrangebyscore_limit(z):
    assert z.zrangebyscore("z:s", 2, 4) == ["b", "c", "d"]
    assert z.zrangebyscore("z:s", "-inf", "+inf", start=1, num=3) == ["b", "c", "d"]
    assert z.zrangebyscore("z:s", "(1", "(5") == ["b", "c", "d"]
    assert z.zrangebyscore("z:s", 1, 5, start=3, num=10, withscores=True) == [
        ("d", 4.0), ("e", 5.0)]
    assert z.zrangebyscore("z:s", 1, 5, start=10, num=10) == []
    assert z.zrangebyscore("z:s", 1, 5, start=0, num=-1) == ["a", "b", "c", "d", "e"]
    with pytest.raises(redis.ResponseError, match="min or max is not a float"):
        z.zrangebyscore("z:s", "x", 5)


def test_zrevrangebyscore_limit(z):
    assert z.zrevrangebyscore("z:s", 4, 2) == ["d", "c", "b"]
    assert z.zrevrangebyscore("z:s", "+inf", "-inf", start=0, num=2) == ["e", "d"]
    assert z.zrevrangebyscore("z:s", "(5", "(1", withscores=True) == [
        ("d", 4.0), ("c", 3.0), ("b", 2.0)]
    assert z.zrevrangebyscore("z:s", "+inf", "-inf", start=4, num=5) == ["a"]
    assert z.zrevrangebyscore("z:s", 2, 4) == []


def test_zpopmin_zpopmax(z):
    assert z.zpopmin("z:s") == [("a", 1.0)]
    assert z.zpopmax("z:s") == [("e", 5.0)]
    assert z.zpopmin("z:s", 2) == [("b", 2.0), ("c", 3.0)]
    assert z.zpopmax("z:s", 10) == [("d", 4.0)]
    assert z.exists("z:s") == 0
    assert z.zpopmin("z:s") == []
    assert z.zpopmax("z:none", 3) == []


def test_zrank_zcount_zincrby(z):
    assert z.zrank("z:s", "c") == 2
    assert z.zrevrank("z:s", "c") == 2
    assert z.zrank("z:s", "a") == 0
    assert z.zrevrank("z:s", "a") == 4
    assert z.zrank("z:s", "nope") is None
    assert z.zcount("z:s", 2, 4) == 3
    assert z.zcount("z:s", "(2", "+inf") == 3
    assert z.zincrby("z:s", 10, "a") == 11.0
    assert z.zrange("z:s", -1, -1) == ["a"]
    assert z.zincrby("z:s", 1.5, "new") == 1.5
    assert z.zmscore("z:s", ["a", "nope", "b"]) == [11.0, None, 2.0]


def test_zrem_and_ranges(z):
    assert z.zrem("z:s", "a", "nope") == 1
    assert z.zremrangebyscore("z:s", 2, 3) == 2
    assert z.zrange("z:s", 0, -1) == ["d", "e"]
    z.zadd("z:s", {"x": 10, "y": 11})
    assert z.zremrangebyrank("z:s", 0, 1) == 2
    assert z.zrange("z:s", 0, -1) == ["x", "y"]
    assert z.zrem("z:s", "x", "y") == 2
    assert z.exists("z:s") == 0


def test_zset_ties_sorted_lexicographically(r):
    r.zadd("z:t", {"b": 1, "a": 1, "c": 1, "0": 2})
    assert r.zrange("z:t", 0, -1) == ["a", "b", "c", "0"]


def test_zscan(r):
    members = {f"m{i}": float(i) for i in range(300)}
    r.zadd("z:scan", members)
    seen = {}
    cursor = 0
    for _ in range(10000):
        cursor, page = r.zscan("z:scan", cursor, count=30)
        seen.update(dict(page))
        if cursor == 0:
            break
    assert seen == members


def test_zset_wrongtype(r):
    r.set("z:str", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.zadd("z:str", {"a": 1})
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.zrange("z:str", 0, -1)
