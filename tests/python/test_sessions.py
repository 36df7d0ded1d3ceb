"""The command sequences that session-store libraries send, replayed as they send them."""

import json
import pickle
import time
import uuid

import pytest
import redis

from support import next_message, notify_events, wait_subscribed

pytestmark = pytest.mark.sessions


def test_connect_redis_flow(r):
    """connect-redis (Express): SET sess:<id> <json> EX ttl, GET, EXPIRE on touch,
    SCAN MATCH sess:* COUNT 100 for all(), MGET of what SCAN found."""
    sessions = {}
    for i in range(250):
        sid = f"sess:{uuid.uuid4().hex}"
        data = json.dumps({"cookie": {"originalMaxAge": 86400000}, "user": i})
        assert r.execute_command("SET", sid, data, "EX", "86400") in (True, "OK")
        sessions[sid] = data
    some = next(iter(sessions))
    assert r.get(some) == sessions[some]
    assert r.expire(some, 86400) == True  # touch()
    assert 86390 <= r.ttl(some) <= 86400
    r.set("other:key", "not a session")

    found = []
    cursor = "0"
    for _ in range(10000):
        cursor, keys = r.execute_command("SCAN", cursor, "MATCH", "sess:*", "COUNT", "100")
        found.extend(keys)
        if str(cursor) == "0":
            break
    else:
        raise AssertionError("SCAN never returned cursor 0")
    assert set(found) == set(sessions)
    unique = sorted(set(found))
    values = r.mget(unique)
    assert dict(zip(unique, values)) == sessions
    # destroy()
    assert r.delete(some) == 1
    assert r.get(some) is None


def test_spring_session_flow(r):
    """Spring Session (RedisIndexedSessionRepository)."""
    sid = str(uuid.uuid4())
    key = f"spring:session:sessions:{sid}"
    now_ms = int(time.time() * 1000)
    fields = {
        "creationTime": str(now_ms),
        "lastAccessedTime": str(now_ms),
        "maxInactiveInterval": "1800",
        "sessionAttr:SPRING_SECURITY_CONTEXT": "\xac\xed\x00\x05sr",
        "sessionAttr:cart": "3 items",
    }
    # older versions send HMSET, newer HSET with several pairs
    assert r.execute_command("HMSET", key, *[x for kv in fields.items() for x in kv]) == True
    assert r.hset(key, mapping={"lastAccessedTime": str(now_ms + 1)}) == 0
    fields["lastAccessedTime"] = str(now_ms + 1)
    expire_at = now_ms + 1800_000 + 300_000
    assert r.pexpireat(key, expire_at) == True
    assert r.pexpiretime(key) == expire_at
    assert r.hgetall(key) == fields

    # changeSessionId(): RENAME to the new id
    new_sid = str(uuid.uuid4())
    new_key = f"spring:session:sessions:{new_sid}"
    assert r.rename(key, new_key) == True
    assert r.exists(key) == 0
    assert r.hgetall(new_key) == fields
    assert r.pexpiretime(new_key) == expire_at
    # renaming a session that expired meanwhile: the library catches exactly this error
    with pytest.raises(redis.ResponseError) as e:
        r.rename(key, f"spring:session:sessions:{uuid.uuid4()}")
    assert str(e.value) == "no such key"

    # principal index set
    index = ("spring:session:index:org.springframework.session."
             "FindByIndexNameSessionRepository.PRINCIPAL_NAME_INDEX_NAME:alice")
    assert r.sadd(index, new_sid) == 1
    assert r.sadd(index, sid) == 1
    assert r.srem(index, sid) == 1
    assert r.smembers(index) == {new_sid}

    # expirations zset (Spring Session 3.x) / expirations minute buckets
    exp_key = "spring:session:sessions:expirations"
    assert r.zadd(exp_key, {new_sid: expire_at, "older": now_ms - 1000, "newest": expire_at + 5})
    assert r.zrevrangebyscore(exp_key, now_ms, "-inf", start=0, num=100) == ["older"]
    assert r.zrevrangebyscore(exp_key, "+inf", "-inf", start=0, num=2) == ["newest", new_sid]
    assert r.zrem(exp_key, "older") == 1


def test_spring_session_expired_events(r, server):
    """Spring enables `notify-keyspace-events Egx` and listens on __keyevent@*__:expired."""
    sub_client = server.client()
    ps = sub_client.pubsub()
    try:
        with notify_events(r, "Egx"):
            ps.psubscribe("__keyevent@*__:expired", "__keyevent@*__:del")
            wait_subscribed(ps, 2)
            sid = str(uuid.uuid4())
            expires_key = f"spring:session:sessions:expires:{sid}"
            r.set(expires_key, "", px=100)
            msg = next_message(ps, timeout=5.0)
            assert msg is not None, "no expired event"
            assert msg["pattern"] == "__keyevent@*__:expired"
            assert msg["channel"] == "__keyevent@0__:expired"
            assert msg["data"] == expires_key
            # explicit deletion shows up on :del
            r.set(f"spring:session:sessions:{sid}", "x")
            r.delete(f"spring:session:sessions:{sid}")
            msg = next_message(ps, timeout=5.0)
            assert msg is not None
            assert (msg["channel"], msg["data"]) == (
                "__keyevent@0__:del", f"spring:session:sessions:{sid}")
    finally:
        ps.close()
        sub_client.close()


def test_django_cache_flow(server):
    """django-redis / Django's RedisCache: pickled values, add() = SET NX EX."""
    c = server.client(decode_responses=False)
    try:
        key = b":1:django.contrib.sessions.cache" + uuid.uuid4().hex.encode()
        value = pickle.dumps({"_auth_user_id": "42", "blob": bytes(range(256))})
        assert c.set(key, value, nx=True, ex=300) == True
        assert c.set(key, b"other", nx=True, ex=300) is None
        assert c.get(key) == value
        assert pickle.loads(c.get(key))["_auth_user_id"] == "42"
        assert 290 <= c.ttl(key) <= 300
        # set() overwrites, touch() is EXPIRE, delete() is DEL
        assert c.set(key, value, ex=600) == True
        assert c.expire(key, 1200) == True
        assert 1190 <= c.ttl(key) <= 1200
        assert c.exists(key) == 1
        assert c.delete(key) == 1
        assert c.set(key, value, nx=True, ex=300) == True
    finally:
        c.close()


def test_phpredis_exact_replies(raw):
    """phpredis compares some replies byte for byte."""
    c = raw()
    c.send_raw(b"*4\r\n$5\r\nSETEX\r\n$12\r\nPHPREDIS_SES\r\n$4\r\n1440\r\n$9\r\na|s:1:\"b\"\r\n")
    assert c.read_exact(5) == b"+OK\r\n"
    c.send_raw(b"*2\r\n$3\r\nGET\r\n$12\r\nPHPREDIS_SES\r\n")
    assert c.read_exact(len(b'$9\r\na|s:1:"b"\r\n')) == b'$9\r\na|s:1:"b"\r\n'
    c.send_raw(b"*2\r\n$3\r\nDEL\r\n$12\r\nPHPREDIS_SES\r\n")
    assert c.read_exact(4) == b":1\r\n"
    c.send_raw(b"*2\r\n$3\r\nDEL\r\n$12\r\nPHPREDIS_SES\r\n")
    assert c.read_exact(4) == b":0\r\n"
    c.send_raw(b"*1\r\n$4\r\nPING\r\n")
    assert c.read_exact(7) == b"+PONG\r\n"


def test_gorilla_redistore_pool_flow(server):
    """gorilla/sessions redistore (redigo pool): PING on every borrow (TestOnBorrow), then
    SETEX / GET / EXPIRE / DEL of session:<id>."""
    pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, max_connections=4,
                                decode_responses=True, socket_timeout=10, protocol=2)
    try:
        ids = [uuid.uuid4().hex for _ in range(12)]
        for i, sid in enumerate(ids):
            conn = pool.get_connection()
            try:
                conn.send_command("PING")
                assert conn.read_response() == "PONG"
                conn.send_command("SETEX", f"session_{sid}", 86400, f"gob-{i}")
                assert conn.read_response() == "OK"
            finally:
                pool.release(conn)
        for i, sid in enumerate(ids):
            conn = pool.get_connection()
            try:
                conn.send_command("PING")
                assert conn.read_response() == "PONG"
                conn.send_command("GET", f"session_{sid}")
                assert conn.read_response() == f"gob-{i}"
                conn.send_command("EXPIRE", f"session_{sid}", 10)
                assert conn.read_response() == 1
                conn.send_command("DEL", f"session_{sid}")
                assert conn.read_response() == 1
            finally:
                pool.release(conn)
    finally:
        pool.disconnect()
