"""List commands."""

import pytest
import redis

pytestmark = pytest.mark.lists


def test_push_pop_range(r):
    assert r.rpush("l:a", "a", "b", "c") == 3
    assert r.lpush("l:a", "z", "y") == 5
    assert r.lrange("l:a", 0, -1) == ["y", "z", "a", "b", "c"]
    assert r.llen("l:a") == 5
    assert r.lrange("l:a", 1, 2) == ["z", "a"]
    assert r.lrange("l:a", -2, -1) == ["b", "c"]
    assert r.lrange("l:a", 10, 20) == []
    assert r.lpop("l:a") == "y"
    assert r.rpop("l:a") == "c"
    assert r.lpop("l:a", 2) == ["z", "a"]
    assert r.rpop("l:a", 5) == ["b"]
    assert r.exists("l:a") == 0
    assert r.lpop("l:a") is None
    assert r.rpop("l:none", 2) is None
    assert r.llen("l:none") == 0


def test_pushx(r):
    assert r.lpushx("l:x", "a") == 0
    assert r.rpushx("l:x", "a") == 0
    assert r.exists("l:x") == 0
    r.rpush("l:x", "m")
    assert r.lpushx("l:x", "a") == 2
    assert r.rpushx("l:x", "z") == 3
    assert r.lrange("l:x", 0, -1) == ["a", "m", "z"]


def test_lindex_lset(r):
    r.rpush("l:i", "a", "b", "c")
    assert r.lindex("l:i", 0) == "a"
    assert r.lindex("l:i", -1) == "c"
    assert r.lindex("l:i", 5) is None
    assert r.lset("l:i", 1, "B")
    assert r.lset("l:i", -1, "C")
    assert r.lrange("l:i", 0, -1) == ["a", "B", "C"]
    with pytest.raises(redis.ResponseError, match="index out of range"):
        r.lset("l:i", 10, "x")
    with pytest.raises(redis.ResponseError, match="no such key"):
        r.lset("l:none", 0, "x")


def test_linsert(r):
    r.rpush("l:ins", "a", "c")
    assert r.linsert("l:ins", "BEFORE", "c", "b") == 3
    assert r.linsert("l:ins", "AFTER", "c", "d") == 4
    assert r.lrange("l:ins", 0, -1) == ["a", "b", "c", "d"]
    assert r.linsert("l:ins", "BEFORE", "zz", "x") == -1
    assert r.linsert("l:none", "BEFORE", "a", "x") == 0
    assert r.exists("l:none") == 0
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("LINSERT", "l:ins", "MIDDLE", "a", "x")


def test_lpos(r):
    r.rpush("l:p", "a", "b", "c", "1", "2", "3", "c", "c")
    assert r.lpos("l:p", "c") == 2
    assert r.lpos("l:p", "nope") is None
    assert r.lpos("l:p", "c", rank=2) == 6
    assert r.lpos("l:p", "c", rank=-1) == 7
    assert r.lpos("l:p", "c", count=2) == [2, 6]
    assert r.lpos("l:p", "c", count=0) == [2, 6, 7]
    assert r.lpos("l:p", "c", rank=-1, count=2) == [7, 6]
    assert r.lpos("l:p", "c", count=0, maxlen=7) == [2, 6]
    assert r.lpos("l:p", "nope", count=3) == []
    assert r.lpos("l:none", "a") is None
    with pytest.raises(redis.ResponseError, match="RANK can't be zero"):
        r.lpos("l:p", "c", rank=0)


def test_lmove_rpoplpush(r):
    r.rpush("l:src", "a", "b", "c")
    assert r.lmove("l:src", "l:dst", "LEFT", "RIGHT") == "a"
    assert r.lmove("l:src", "l:dst", "RIGHT", "LEFT") == "c"
    assert r.lrange("l:src", 0, -1) == ["b"]
    assert r.lrange("l:dst", 0, -1) == ["c", "a"]
    assert r.rpoplpush("l:dst", "l:dst") == "a"  # rotation
    assert r.lrange("l:dst", 0, -1) == ["a", "c"]
    assert r.lmove("l:src", "l:src", "LEFT", "RIGHT") == "b"
    assert r.lmove("l:none", "l:dst", "LEFT", "LEFT") is None
    assert r.lmove("l:src", "l:dst", "LEFT", "LEFT") == "b"
    assert r.exists("l:src") == 0
    r.set("l:str", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.lmove("l:dst", "l:str", "LEFT", "LEFT")
    assert r.lrange("l:dst", 0, -1) == ["b", "a", "c"]  # nothing moved


def test_lrem_ltrim(r):
    r.rpush("l:r", "a", "b", "a", "c", "a", "b")
    assert r.lrem("l:r", 2, "a") == 2
    assert r.lrange("l:r", 0, -1) == ["b", "c", "a", "b"]
    assert r.lrem("l:r", -1, "b") == 1
    assert r.lrange("l:r", 0, -1) == ["b", "c", "a"]
    assert r.lrem("l:r", 0, "zz") == 0
    r.rpush("l:t", *"abcdef")
    assert r.ltrim("l:t", 1, -2)
    assert r.lrange("l:t", 0, -1) == list("bcde")
    assert r.ltrim("l:t", 5, 10)
    assert r.exists("l:t") == 0


def test_blpop_with_data(r):
    # data already there: no blocking
    r.rpush("l:b", "x")
    assert r.blpop(["l:empty", "l:b"], timeout=1) == ("l:b", "x")


def test_list_wrongtype(r):
    r.set("l:str", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.lpush("l:str", "a")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.lrange("l:str", 0, -1)
