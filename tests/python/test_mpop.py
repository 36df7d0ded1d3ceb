"""LMPOP, BLMPOP, ZMPOP, BZMPOP, BZPOPMIN, BZPOPMAX (every expectation holds on
redis-server 7 too)."""

import threading
import time

import pytest
import redis

pytestmark = pytest.mark.lists


def test_lmpop(r):
    r.rpush("mp:b", "x", "y", "z")
    assert r.execute_command("LMPOP", 2, "mp:a", "mp:b", "LEFT") == ["mp:b", ["x"]]
    assert r.execute_command("LMPOP", 2, "mp:a", "mp:b", "RIGHT", "COUNT", 5) == ["mp:b", ["z", "y"]]
    assert r.exists("mp:b") == 0
    assert r.execute_command("LMPOP", 1, "mp:a", "LEFT") is None
    with pytest.raises(redis.ResponseError, match="^numkeys should be greater than 0$"):
        r.execute_command("LMPOP", 0, "mp:a", "LEFT")
    with pytest.raises(redis.ResponseError, match="^count should be greater than 0$"):
        r.execute_command("LMPOP", 1, "mp:a", "LEFT", "COUNT", 0)
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("LMPOP", 3, "mp:a", "LEFT")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("LMPOP", 1, "mp:a", "UP")
    r.set("mp:s", "v")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.execute_command("LMPOP", 1, "mp:s", "LEFT")


def test_zmpop_and_blocking_zset_pops(r):
    r.zadd("mp:z", {"a": 1, "b": 2, "c": 3})
    assert r.execute_command("ZMPOP", 1, "mp:z", "MIN") == ["mp:z", [["a", "1"]]]
    assert r.execute_command("ZMPOP", 2, "mp:y", "mp:z", "MAX", "COUNT", 10) == [
        "mp:z", [["c", "3"], ["b", "2"]]]
    assert r.execute_command("ZMPOP", 1, "mp:z", "MAX") is None
    r.zadd("mp:z", {"a": 1, "b": 2})
    assert r.execute_command("BZPOPMIN", "mp:y", "mp:z", 0) == ("mp:z", "a", 1.0)
    assert r.execute_command("BZPOPMAX", "mp:z", 0) == ("mp:z", "b", 2.0)
    assert r.execute_command("BZMPOP", "0.05", 1, "mp:z", "MIN") is None


def test_blocked_pops_wake_on_writes(server, r):
    results = {}

    def waiter(name, *cmd):
        c = server.client(socket_timeout=30)
        try:
            results[name] = c.execute_command(*cmd)
        finally:
            c.close()

    threads = [
        threading.Thread(target=waiter, args=("l", "BLMPOP", 20, 1, "mp:wl", "LEFT", "COUNT", 2)),
        threading.Thread(target=waiter, args=("z", "BZMPOP", 20, 1, "mp:wz", "MAX")),
        threading.Thread(target=waiter, args=("m", "BZPOPMIN", "mp:wm", 20)),
    ]
    for t in threads:
        t.start()
    # Bounded wait until all three are blocked.
    for _ in range(100):
        if int(r.info("clients")["blocked_clients"]) >= 3:
            break
        time.sleep(0.05)
    r.rpush("mp:wl", "p", "q", "s")
    r.zadd("mp:wz", {"hi": 9, "lo": 1})
    r.zadd("mp:wm", {"only": 4})
    for t in threads:
        t.join(timeout=30)
    assert results == {"l": ["mp:wl", ["p", "q"]], "z": ["mp:wz", [["hi", "9"]]],
                       "m": ("mp:wm", "only", 4.0)}
