"""Hash commands."""

import pytest
import redis

pytestmark = pytest.mark.hashes


def test_hset_hget_hgetall(r):
    assert r.hset("h:1", "f1", "v1") == 1
    assert r.hset("h:1", mapping={"f1": "x", "f2": "v2", "f3": "v3"}) == 2
    assert r.hget("h:1", "f1") == "x"
    assert r.hget("h:1", "nope") is None
    assert r.hget("h:none", "f") is None
    assert r.hgetall("h:1") == {"f1": "x", "f2": "v2", "f3": "v3"}
    assert r.hgetall("h:none") == {}
    assert r.hlen("h:1") == 3
    assert r.hlen("h:none") == 0


def test_hmset_hmget(r):
    assert r.execute_command("HMSET", "h:m", "a", "1", "b", "2") == True
    assert r.hmget("h:m", ["a", "b", "c"]) == ["1", "2", None]
    assert r.hmget("h:none", ["a"]) == [None]
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("HSET", "h:m", "a", "1", "b")


def test_hdel_hexists(r):
    r.hset("h:d", mapping={"a": "1", "b": "2", "c": "3"})
    assert r.hexists("h:d", "a") == True
    assert r.hdel("h:d", "a", "b", "zz") == 2
    assert r.hexists("h:d", "a") == False
    assert r.hdel("h:d", "c") == 1
    # the last field removed removes the key
    assert r.exists("h:d") == 0
    assert r.hdel("h:d", "c") == 0


def test_hkeys_hvals_hstrlen(r):
    r.hset("h:k", mapping={"a": "1", "b": "22", "c": "333"})
    assert sorted(r.hkeys("h:k")) == ["a", "b", "c"]
    assert sorted(r.hvals("h:k")) == ["1", "22", "333"]
    assert r.hstrlen("h:k", "c") == 3
    assert r.hstrlen("h:k", "zz") == 0
    assert r.hkeys("h:none") == []


def test_hsetnx(r):
    assert r.hsetnx("h:n", "f", "1") == True
    assert r.hsetnx("h:n", "f", "2") == False
    assert r.hget("h:n", "f") == "1"


def test_hincrby_hincrbyfloat(r):
    assert r.hincrby("h:i", "n", 5) == 5
    assert r.hincrby("h:i", "n", -7) == -2
    assert float(r.hincrbyfloat("h:i", "f", 1.5)) == 1.5
    assert float(r.hincrbyfloat("h:i", "f", 2)) == 3.5
    r.hset("h:i", "s", "abc")
    with pytest.raises(redis.ResponseError, match="hash value is not an integer"):
        r.hincrby("h:i", "s", 1)
    with pytest.raises(redis.ResponseError, match="hash value is not a float"):
        r.hincrbyfloat("h:i", "s", 1)
    r.hset("h:i", "big", "9223372036854775807")
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.hincrby("h:i", "big", 1)


def test_hrandfield(r):
    fields = {f"f{i}": str(i) for i in range(10)}
    r.hset("h:r", mapping=fields)
    assert r.hrandfield("h:r") in fields
    got = r.hrandfield("h:r", 5)
    assert len(got) == 5 and len(set(got)) == 5 and set(got) <= set(fields)
    assert len(r.hrandfield("h:r", -20)) == 20
    assert set(r.hrandfield("h:r", 100)) == set(fields)
    pairs = r.hrandfield("h:r", 3, withvalues=True)
    assert len(pairs) == 6
    for f, v in zip(pairs[::2], pairs[1::2]):
        assert fields[f] == v
    assert r.hrandfield("h:none") is None


def test_hscan(r):
    fields = {f"f{i}": str(i) for i in range(300)}
    r.hset("h:s", mapping=fields)
    seen = {}
    cursor = 0
    for _ in range(10000):
        cursor, page = r.hscan("h:s", cursor, count=50)
        seen.update(page)
        if cursor == 0:
            break
    assert seen == fields
    _, page = r.hscan("h:s", 0, match="f1?", count=1000)
    assert set(page) == {f"f{i}" for i in range(10, 20)}


def test_hash_wrongtype(r):
    r.set("h:str", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.hset("h:str", "f", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.hgetall("h:str")
    r.hset("h:h", "f", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.get("h:h")
