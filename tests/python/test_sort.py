"""SORT and SORT_RO: by value, BY weights, LIMIT, GET, ASC/DESC, ALPHA, STORE (every
expectation holds on redis-server 7 too)."""

import pytest
import redis

pytestmark = pytest.mark.sort


def test_sort_numeric_alpha_desc_limit(r):
    r.rpush("so:l", 3, 1, 2, 10)
    assert r.sort("so:l") == ["1", "2", "3", "10"]
    assert r.sort("so:l", desc=True) == ["10", "3", "2", "1"]
    assert r.sort("so:l", alpha=True) == ["1", "10", "2", "3"]
    assert r.sort("so:l", start=1, num=2) == ["2", "3"]
    assert r.sort("so:l", start=-5, num=2) == ["1", "2"]
    assert r.sort("so:l", start=10, num=2) == []
    assert r.execute_command("SORT", "so:l", "LIMIT", 2, -1) == ["3", "10"]
    assert r.execute_command("SORT_RO", "so:l", "DESC", "LIMIT", 0, 1) == ["10"]
    r.sadd("so:s", "b", "a", "c")
    assert r.sort("so:s", alpha=True) == ["a", "b", "c"]
    with pytest.raises(redis.ResponseError, match="^One or more scores can't be converted into double$"):
        r.sort("so:s")
    r.zadd("so:z", {"x": 3, "y": 1, "z": 2})
    assert r.sort("so:z", by="nosort") == ["y", "z", "x"]
    assert r.sort("so:z", by="nosort", desc=True, start=0, num=2) == ["x", "z"]
    assert r.sort("so:missing") == []
    r.set("so:str", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.sort("so:str")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("SORT", "so:l", "SIDEWAYS")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("SORT_RO", "so:l", "STORE", "so:d")


def test_sort_by_and_get_patterns(r):
    r.rpush("so:ids", 1, 2, 3)
    r.mset({"so:w_1": 30, "so:w_2": 10, "so:w_3": 20, "so:name_1": "one", "so:name_3": "three"})
    r.hset("so:h_1", "f", "h-one")
    r.hset("so:h_2", "f", "h-two")
    assert r.sort("so:ids", by="so:w_*") == ["2", "3", "1"]
    assert r.sort("so:ids", by="so:w_*", get=["#", "so:name_*", "so:h_*->f"]) == [
        "2", None, "h-two", "3", "three", None, "1", "one", "h-one"]
    assert r.sort("so:ids", by="so:h_*->f", alpha=True) == ["3", "1", "2"], \
        "a missing weight sorts first"
    assert r.sort("so:ids", by="so:nothing_*") == ["1", "2", "3"], "equal weights: by element"
    assert r.sort("so:ids", by="constant", desc=True) == ["3", "2", "1"]


def test_sort_store(r):
    r.rpush("so:l", 3, 1, 2)
    r.set("so:name_1", "one")
    r.set("so:dst", "old")
    r.expire("so:dst", 100)
    assert r.sort("so:l", store="so:dst") == 3
    assert r.lrange("so:dst", 0, -1) == ["1", "2", "3"]
    assert r.ttl("so:dst") == -1
    assert r.sort("so:l", get="so:name_*", store="so:dst") == 3
    assert r.lrange("so:dst", 0, -1) == ["one", "", ""]
    r.sadd("so:s", "b", "c", "a")
    assert r.sort("so:s", by="nosort", store="so:dst") == 3
    assert r.lrange("so:dst", 0, -1) == ["a", "b", "c"]
    assert r.sort("so:missing", store="so:dst") == 0
    assert r.exists("so:dst") == 0


def test_lcs(r):
    r.mset({"lc:a": "ohmytext", "lc:b": "mynewtext"})
    assert r.execute_command("LCS", "lc:a", "lc:b") == "mytext"
    assert r.execute_command("LCS", "lc:a", "lc:b", "LEN") == 6
    assert r.execute_command("LCS", "lc:a", "lc:b", "IDX") == [
        "matches", [[[4, 7], [5, 8]], [[2, 3], [0, 1]]], "len", 6]
    assert r.execute_command("LCS", "lc:a", "lc:b", "IDX", "MINMATCHLEN", 4, "WITHMATCHLEN") == [
        "matches", [[[4, 7], [5, 8], 4]], "len", 6]
    assert r.execute_command("LCS", "lc:a", "lc:missing") == ""
    with pytest.raises(redis.ResponseError, match="^If you want both the length and indexes"):
        r.execute_command("LCS", "lc:a", "lc:b", "IDX", "LEN")
    r.rpush("lc:l", "x")
    with pytest.raises(redis.ResponseError, match="^The specified keys must contain string values$"):
        r.execute_command("LCS", "lc:a", "lc:l")


def test_memory_usage(r):
    r.set("mu:k", "v" * 1000)
    assert 1000 < r.memory_usage("mu:k") < 2000
    r.hset("mu:h", mapping={f"f{i}": "v" for i in range(100)})
    assert r.memory_usage("mu:h") > 100 * 3
    assert r.memory_usage("mu:missing") is None
    assert r.execute_command("MEMORY", "USAGE", "mu:k", "SAMPLES", 0) > 1000
