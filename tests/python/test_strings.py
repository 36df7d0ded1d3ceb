"""String commands: SET and its options, GETEX/GETDEL, M*, INCR family, ranges."""

import pytest
import redis

pytestmark = pytest.mark.strings


def test_set_get_basic(r):
    assert r.set("s:a", "hello") == True
    assert r.get("s:a") == "hello"
    assert r.get("s:missing") is None
    assert r.set("s:a", "") == True
    assert r.get("s:a") == ""


def test_set_binary_safe(server):
    c = server.client(decode_responses=False)
    try:
        value = bytes(range(256)) + b"\r\n\x00end"
        assert c.set(b"s:bin\x00key", value)
        assert c.get(b"s:bin\x00key") == value
    finally:
        c.close()


def test_set_ex_px(r):
    assert r.set("s:ex", "v", ex=100)
    assert 95 <= r.ttl("s:ex") <= 100
    assert r.set("s:px", "v", px=100000)
    assert 95000 <= r.pttl("s:px") <= 100000
    # a plain SET clears the TTL
    assert r.set("s:ex", "w")
    assert r.ttl("s:ex") == -1


def test_set_invalid_expire(r):
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.execute_command("SET", "s:k", "v", "EX", "0")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.execute_command("SET", "s:k", "v", "PX", "-5")
    with pytest.raises(redis.ResponseError, match="not an integer or out of range"):
        r.execute_command("SET", "s:k", "v", "EX", "abc")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "s:k", "v", "EX", "10", "PX", "100")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "s:k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "s:k", "v", "BOGUS")
    assert r.exists("s:k") == 0


def test_set_nx_xx(r):
    assert r.set("s:nx", "1", nx=True) == True
    assert r.set("s:nx", "2", nx=True) is None
    assert r.get("s:nx") == "1"
    assert r.set("s:xx", "1", xx=True) is None
    assert r.get("s:xx") is None
    assert r.set("s:nx", "3", xx=True) == True
    assert r.get("s:nx") == "3"


def test_set_get_option(r):
    assert r.set("s:g", "new", get=True) is None
    assert r.get("s:g") == "new"
    assert r.set("s:g", "newer", get=True) == "new"
    assert r.get("s:g") == "newer"
    # NX + GET (Redis 7): returns the old value and does not set
    assert r.set("s:g", "x", nx=True, get=True) == "newer"
    assert r.get("s:g") == "newer"
    r.rpush("s:list", "a")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.set("s:list", "v", get=True)
    assert r.type("s:list") == "list"


def test_set_keepttl(r):
    r.set("s:kt", "a", ex=1000)
    assert r.set("s:kt", "b", keepttl=True)
    assert r.get("s:kt") == "b"
    assert 990 <= r.ttl("s:kt") <= 1000
    r.set("s:kt", "c")
    assert r.ttl("s:kt") == -1


def test_setex_psetex_setnx(r):
    assert r.setex("s:se", 100, "v")
    assert 95 <= r.ttl("s:se") <= 100
    assert r.psetex("s:pse", 100000, "v")
    assert 95000 <= r.pttl("s:pse") <= 100000
    assert r.setnx("s:snx", "1") == True
    assert r.setnx("s:snx", "2") == False
    assert r.get("s:snx") == "1"
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'setex' command"):
        r.setex("s:se", 0, "v")


def test_getex(r):
    assert r.getex("s:none") is None
    r.set("s:ge", "v")
    assert r.getex("s:ge", ex=100) == "v"
    assert 95 <= r.ttl("s:ge") <= 100
    assert r.getex("s:ge", px=200000) == "v"
    assert 195000 <= r.pttl("s:ge") <= 200000
    assert r.getex("s:ge", persist=True) == "v"
    assert r.ttl("s:ge") == -1
    assert r.getex("s:ge") == "v"
    assert r.ttl("s:ge") == -1
    r.rpush("s:gl", "a")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.getex("s:gl")


def test_getdel(r):
    r.set("s:gd", "v")
    assert r.getdel("s:gd") == "v"
    assert r.exists("s:gd") == 0
    assert r.getdel("s:gd") is None


def test_getset(r):
    assert r.getset("s:gs", "a") is None
    assert r.getset("s:gs", "b") == "a"
    assert r.get("s:gs") == "b"


def test_mset_mget(r):
    assert r.mset({"s:m1": "1", "s:m2": "2", "s:m3": "3"})
    assert r.mget("s:m1", "s:nope", "s:m3", "s:m2") == ["1", None, "3", "2"]
    r.rpush("s:mlist", "x")
    # MGET answers nil for a key of another type rather than an error
    assert r.mget("s:m1", "s:mlist") == ["1", None]
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset' command"):
        r.execute_command("MSET", "a", "1", "b")


def test_msetnx(r):
    assert r.msetnx({"s:n1": "1", "s:n2": "2"}) == True
    assert r.msetnx({"s:n2": "x", "s:n3": "3"}) == False
    assert r.mget("s:n1", "s:n2", "s:n3") == ["1", "2", None]


def test_incr_family(r):
    assert r.incr("s:i") == 1
    assert r.incr("s:i") == 2
    assert r.incrby("s:i", 10) == 12
    assert r.decr("s:i") == 11
    assert r.decrby("s:i", 20) == -9
    assert r.get("s:i") == "-9"
    assert r.incrby("s:i", -1) == -10
    r.set("s:i2", "  5")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("s:i2")


def test_incr_errors(r):
    r.set("s:str", "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("s:str")
    r.set("s:max", "9223372036854775807")
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.incr("s:max")
    r.set("s:min", "-9223372036854775808")
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.decr("s:min")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.execute_command("INCRBY", "s:x", "1.5")
    r.rpush("s:l", "a")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.incr("s:l")
    assert r.get("s:max") == "9223372036854775807"


def test_incrbyfloat(r):
    assert float(r.incrbyfloat("s:f", 1.5)) == 1.5
    assert float(r.incrbyfloat("s:f", "0.25")) == 1.75
    assert r.get("s:f") == "1.75"
    r.set("s:f2", "5.0e3")
    assert float(r.incrbyfloat("s:f2", 200)) == 5200
    assert r.get("s:f2") == "5200"
    r.set("s:fs", "abc")
    with pytest.raises(redis.ResponseError, match="value is not a valid float"):
        r.incrbyfloat("s:fs", 1)


def test_append_strlen(r):
    assert r.append("s:ap", "Hello") == 5
    assert r.append("s:ap", " World") == 11
    assert r.get("s:ap") == "Hello World"
    assert r.strlen("s:ap") == 11
    assert r.strlen("s:none") == 0
    r.set("s:num", 12)
    assert r.append("s:num", "3") == 3
    assert r.get("s:num") == "123"


def test_getrange(r):
    r.set("s:gr", "This is a string")
    assert r.getrange("s:gr", 0, 3) == "This"
    assert r.getrange("s:gr", -3, -1) == "ing"
    assert r.getrange("s:gr", 0, -1) == "This is a string"
    assert r.getrange("s:gr", 10, 100) == "string"
    assert r.getrange("s:gr", 5, 3) == ""
    assert r.getrange("s:none", 0, 10) == ""
    assert r.execute_command("SUBSTR", "s:gr", 0, 3) == "This"


def test_setrange(r):
    r.set("s:sr", "Hello World")
    assert r.setrange("s:sr", 6, "Redis") == 11
    assert r.get("s:sr") == "Hello Redis"
    assert r.setrange("s:pad", 3, "abc") == 6
    assert r.get("s:pad") == "\x00\x00\x00abc"
    assert r.setrange("s:empty", 5, "") == 0
    assert r.exists("s:empty") == 0
    with pytest.raises(redis.ResponseError, match="offset is out of range"):
        r.setrange("s:sr", -1, "x")


def test_wrongtype_on_get(r):
    r.sadd("s:set", "a")
    with pytest.raises(redis.ResponseError) as e:
        r.get("s:set")
    assert str(e.value) == "WRONGTYPE Operation against a key holding the wrong kind of value"
