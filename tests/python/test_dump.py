"""DUMP and RESTORE in Redis's serialization format, across servers: a payload DUMPed by
a real redis-server restores into the server under test and reads the same, and the
reverse, for every type and each of Redis's encodings of it (listpack, intset, hashtable,
skiplist, quicklist, integer and LZF-compressed strings)."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

from support import HOST, TARGET, free_port

pytestmark = pytest.mark.dump


@pytest.fixture(scope="module")
def real_redis():
    """A redis-server of its own, whatever the target: the other side of each exchange."""
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        pytest.fail("redis-server is needed (scripts/test installs it)")
    workdir = tempfile.mkdtemp(prefix="kelvin-dump-redis-")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", HOST, "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host=HOST, port=port, decode_responses=False, socket_timeout=10)
    try:
        for _ in range(200):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)



def fill(c, kind):
    """Writes one key `d:<kind>` of each shape Redis encodes differently."""
    k = f"d:{kind}"
    c.delete(k)
    if kind == "int":
        c.set(k, 12345)
    elif kind == "str":
        c.set(k, b"hello \x00\xff world")
    elif kind == "lzf":
        c.set(k, b"abc" * 2000)
    elif kind == "list":
        c.rpush(k, *[f"e{i}" for i in range(10)], 7, -70000)
    elif kind == "biglist":
        c.rpush(k, *[f"element-{i}" * 3 for i in range(3000)])
    elif kind == "intset":
        c.sadd(k, 1, -5, 70000, 2**40)
    elif kind == "set":
        c.sadd(k, *[f"m{i}" for i in range(600)])
    elif kind == "smallzset":
        c.zadd(k, {"a": 1.5, "b": -2, "c": 1e100, "d": 3})
    elif kind == "zset":
        c.zadd(k, {f"m{i}": i / 7 for i in range(300)})
    elif kind == "smallhash":
        c.hset(k, mapping={"f1": "v1", "n": 42, "neg": -3000000000})
    elif kind == "hash":
        c.hset(k, mapping={f"f{i}": f"v{i}" * 20 for i in range(600)})
    return k


def contents(c, k):
    t = c.type(k)
    if t == b"string":
        return t, c.get(k)
    if t == b"list":
        return t, c.lrange(k, 0, -1)
    if t == b"set":
        return t, sorted(c.smembers(k))
    if t == b"zset":
        return t, c.zrange(k, 0, -1, withscores=True)
    if t == b"hash":
        return t, sorted(c.hgetall(k).items())
    return t, None


KINDS = ["int", "str", "lzf", "list", "biglist", "intset", "set", "smallzset", "zset",
         "smallhash", "hash"]


@pytest.mark.parametrize("kind", KINDS)
def test_redis_dump_restores_here(real_redis, rb, kind):
    k = fill(real_redis, kind)
    payload = real_redis.dump(k)
    assert rb.restore(k, 0, payload) == b"OK"
    assert contents(rb, k) == contents(real_redis, k)


@pytest.mark.parametrize("kind", KINDS)
def test_dump_here_restores_in_redis(real_redis, rb, kind):
    k = fill(rb, kind)
    payload = rb.dump(k)
    real_redis.delete(k)
    assert real_redis.restore(k, 0, payload) == b"OK"
    assert contents(real_redis, k) == contents(rb, k)
    # And back: the round trip is the identity.
    rb.delete(k)
    assert rb.restore(k, 0, real_redis.dump(k)) == b"OK"
    assert contents(rb, k) == contents(real_redis, k)


def test_restore_options_and_errors(rb):
    rb.set("d:k", "v")
    payload = rb.dump("d:k")
    assert rb.dump("d:missing") is None
    with pytest.raises(redis.ResponseError, match="^BUSYKEY Target key name already exists.$"):
        rb.restore("d:k", 0, payload)
    assert rb.restore("d:k", 0, payload, replace=True) == b"OK"
    assert rb.restore("d:t", 100000, payload) == b"OK"
    assert 95000 < rb.pttl("d:t") <= 100000
    assert rb.restore("d:t", 1000, payload, replace=True, absttl=True) == b"OK"
    assert rb.exists("d:t") == 0, "an absolute TTL in the past: nothing is created"
    bad = bytearray(payload)
    bad[1] ^= 0xFF
    with pytest.raises(redis.ResponseError, match="^DUMP payload version or checksum are wrong$"):
        rb.restore("d:x", 0, bytes(bad))
    with pytest.raises(redis.ResponseError, match="^Invalid TTL value, must be >= 0$"):
        rb.restore("d:x", -1, payload)
    with pytest.raises(redis.ResponseError, match="^Invalid FREQ value"):
        rb.execute_command("RESTORE", "d:x", 0, payload, "FREQ", 256)
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        rb.execute_command("RESTORE", "d:x", 0, payload, "IDLETIME", 10, "FREQ", 5)
    assert rb.execute_command("RESTORE", "d:f", 0, payload, "FREQ", 100) == b"OK"
    assert rb.execute_command("RESTORE", "d:i", 0, payload, "IDLETIME", 1000) == b"OK"
    assert rb.object("idletime", "d:i") >= 900


def test_hyperloglog_counts_like_redis_and_moves_both_ways(real_redis, rb):
    elements = [f"user:{i}" for i in range(5000)]
    real_redis.delete("d:hll")
    real_redis.pfadd("d:hll", *elements[:20])  # sparse in Redis
    assert rb.restore("d:hll", 0, real_redis.dump("d:hll")) == b"OK"
    assert rb.pfcount("d:hll") == real_redis.pfcount("d:hll")
    real_redis.pfadd("d:hll", *elements)  # dense in Redis
    rb.pfadd("d:hll", *elements)
    assert rb.pfcount("d:hll") == real_redis.pfcount("d:hll")
    real_redis.delete("d:back")
    assert real_redis.restore("d:back", 0, rb.dump("d:hll")) == b"OK"
    assert real_redis.pfcount("d:back") == real_redis.pfcount("d:hll")
    rb.pfadd("d:other", *[f"x{i}" for i in range(300)])
    real_redis.pfadd("d:other", *[f"x{i}" for i in range(300)])
    assert rb.pfcount("d:hll", "d:other") == real_redis.pfcount("d:hll", "d:other")
    assert rb.pfmerge("d:m", "d:hll", "d:other") is True
    real_redis.pfmerge("d:m", "d:hll", "d:other")
    assert rb.pfcount("d:m") == real_redis.pfcount("d:m")


def test_hyperloglog_errors(rb):
    assert rb.pfadd("d:h") == 1, "creating the key counts as a change"
    assert rb.pfadd("d:h") == 0
    assert rb.pfadd("d:h", "a") == 1
    assert rb.pfadd("d:h", "a") == 0
    assert rb.pfcount("d:h", "d:missing") == 1
    rb.set("d:s", "not an hll")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE Key is not a valid HyperLogLog string value.$"):
        rb.pfcount("d:s")
    rb.lpush("d:l", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE Operation against"):
        rb.pfadd("d:l", "x")
    # The cached cardinality marked stale (top bit of byte 15), so PFCOUNT decodes.
    rb.set("d:bad", b"HYLL\x01" + b"\x00" * 10 + b"\x80" + b"\x7f\xff\x80")
    with pytest.raises(redis.ResponseError, match="Corrupted HLL object detected"):
        rb.pfcount("d:bad")


@pytest.mark.parametrize("count", [0, 3, 40, 400, 3000])
def test_hyperloglog_bytes_are_redis_bytes(real_redis, rb, count):
    """The same PFADDs write the same string as redis-server: sparse while small (edited
    in place as Redis does), dense past hll-sparse-max-bytes; PFCOUNT writes the cached
    cardinality back alike; PFMERGE too. So the values match byte for byte."""
    elements = [f"e{i}" for i in range(count)]
    for c in (real_redis, rb):
        c.delete("d:hb", "d:hb2", "d:hm", "d:hr")
        c.pfadd("d:hb", *elements)
        for i in range(0, count, 97):  # later adds, one at a time
            c.pfadd("d:hb", f"late{i}")
    assert rb.get("d:hb") == real_redis.get("d:hb")
    assert rb.execute_command("PFDEBUG", "ENCODING", "d:hb") == \
        real_redis.execute_command("PFDEBUG", "ENCODING", "d:hb")
    assert rb.pfcount("d:hb") == real_redis.pfcount("d:hb")
    assert rb.get("d:hb") == real_redis.get("d:hb"), "the cached cardinality"
    for c in (real_redis, rb):
        c.pfadd("d:hb2", *[f"other{i}" for i in range(25)])
        c.pfmerge("d:hm", "d:hb2", "d:hb")
    assert rb.get("d:hm") == real_redis.get("d:hm")
    # Each DUMP restores on the other side to the same bytes.
    real_redis.restore("d:hr", 0, rb.dump("d:hm"), replace=True)
    rb.restore("d:hr", 0, real_redis.dump("d:hm"), replace=True)
    assert rb.get("d:hr") == real_redis.get("d:hr") == rb.get("d:hm")


def test_pfdebug(rb):
    rb.pfadd("d:pd", "a", "b", "c")
    assert rb.execute_command("PFDEBUG", "ENCODING", "d:pd") == b"sparse"
    assert rb.execute_command("PFDEBUG", "DECODE", "d:pd").startswith(b"Z:")
    registers = rb.execute_command("PFDEBUG", "GETREG", "d:pd")
    assert len(registers) == 16384 and sum(1 for r in registers if r) == 3
    assert rb.execute_command("PFDEBUG", "ENCODING", "d:pd") == b"dense"
    assert rb.execute_command("PFDEBUG", "TODENSE", "d:pd") == 0
    with pytest.raises(redis.ResponseError, match="^HLL encoding is not sparse$"):
        rb.execute_command("PFDEBUG", "DECODE", "d:pd")
    with pytest.raises(redis.ResponseError, match="^The specified key does not exist$"):
        rb.execute_command("PFDEBUG", "ENCODING", "d:nope")
    with pytest.raises(redis.ResponseError, match="^Unknown PFDEBUG subcommand 'Nope'$"):
        rb.execute_command("PFDEBUG", "Nope", "d:pd")
    assert rb.pfcount("d:pd") == 3


def _port(c):
    return c.connection_pool.connection_kwargs["port"]


def test_migrate_to_redis_and_back(real_redis, server, rb):
    """MIGRATE to a redis-server (COPY, REPLACE, KEYS, TTLs, the target's errors), and
    from redis-server into the server under test."""
    target = _port(real_redis)
    real_redis.delete("m:a", "m:l", "m:b", "m:h")
    rb.set("m:a", "1")
    rb.rpush("m:l", "x", "y")
    rb.pexpire("m:l", 100000)
    assert rb.migrate(HOST, target, "m:a", 0, 1000) == b"OK"
    assert rb.exists("m:a") == 0 and real_redis.get("m:a") == b"1"
    assert rb.execute_command("MIGRATE", HOST, target, "", 0, 1000,
                              "KEYS", "m:l", "m:nokey") == b"OK"
    assert real_redis.lrange("m:l", 0, -1) == [b"x", b"y"]
    assert 0 < real_redis.pttl("m:l") <= 100000
    assert rb.execute_command("MIGRATE", HOST, target, "m:nokey", 0, 1000) == b"NOKEY"
    rb.set("m:b", "here")
    real_redis.set("m:b", "there")
    with pytest.raises(redis.ResponseError,
                       match="^Target instance replied with error: BUSYKEY Target key name already exists.$"):
        rb.execute_command("MIGRATE", HOST, target, "m:b", 0, 1000)
    assert rb.get("m:b") == b"here", "a key the target refused stays"
    assert rb.execute_command("MIGRATE", HOST, target, "m:b", 0, 1000, "COPY", "REPLACE") == b"OK"
    assert rb.get("m:b") == real_redis.get("m:b") == b"here"
    with pytest.raises(redis.ResponseError, match="^Target instance replied with error: ERR AUTH"):
        rb.execute_command("MIGRATE", HOST, target, "m:b", 0, 1000, "AUTH", "pw")
    assert rb.get("m:b") == b"here", "nothing moves after a failed AUTH"
    with pytest.raises(redis.ResponseError, match="^When using MIGRATE KEYS option"):
        rb.execute_command("MIGRATE", HOST, target, "m:b", 0, 1000, "KEYS", "m:b")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        rb.execute_command("MIGRATE", HOST, target, "m:b", 0, 1000, "AUTH2", "u")
    # From redis-server into the server under test, database 5.
    real_redis.hset("m:h", mapping={"f": "v"})
    assert real_redis.migrate(HOST, _port(rb), "m:h", 5, 1000) == b"OK"
    other = server.client(decode_responses=False, db=5)
    try:
        assert other.hgetall("m:h") == {b"f": b"v"}
        other.delete("m:h")
    finally:
        other.close()


def test_migrate_with_auth_and_into_itself(real_redis, server, rb):
    target = _port(real_redis)
    real_redis.config_set("requirepass", "s3cret")
    try:
        real_redis.execute_command("AUTH", "s3cret")
        real_redis.delete("m:p", "m:p2")
        rb.set("m:p", "1")
        rb.set("m:p2", "2")
        assert rb.execute_command("MIGRATE", HOST, target, "m:p", 0, 1000,
                                  "AUTH", "s3cret") == b"OK"
        assert rb.execute_command("MIGRATE", HOST, target, "m:p2", 0, 1000,
                                  "AUTH2", "default", "s3cret") == b"OK"
        assert real_redis.mget("m:p", "m:p2") == [b"1", b"2"]
    finally:
        real_redis.config_set("requirepass", "")
    # A refused connection fails on the write in Redis (its connect is non-blocking).
    with pytest.raises(redis.ResponseError, match="^IOERR error or timeout writing to target instance$"):
        rb.set("m:gone", "v")
        rb.execute_command("MIGRATE", HOST, free_port(), "m:gone", 0, 200)
    if TARGET == "redis":
        return  # redis-server waits on its own reply until the timeout: IOERR
    # Kelvin may be its own target (another database): each connection has its task.
    rb.set("m:self", "v")
    assert rb.migrate(HOST, _port(rb), "m:self", 9, 1000) == b"OK"
    assert rb.exists("m:self") == 0
    other = server.client(decode_responses=False, db=9)
    try:
        assert other.get("m:self") == b"v"
        other.delete("m:self")
    finally:
        other.close()


def test_pfcount_cache_write_aborts_watch_only_when_written(r, r2):
    """PFCOUNT writes the cached cardinality back when it was stale: a WATCH on the key
    sees that change (as in Redis), and not a PFCOUNT that found it valid."""
    r.pfadd("d:w", "a", "b")
    # The first PFCOUNT writes the cache (WATCH aborts); the second finds it valid.
    for aborted in (True, False):
        with r.pipeline() as p:
            p.watch("d:w")
            r2.pfcount("d:w")
            p.multi()
            p.set("d:w-done", "1")
            if aborted:
                with pytest.raises(redis.WatchError):
                    p.execute()
            else:
                assert p.execute() == [True]
