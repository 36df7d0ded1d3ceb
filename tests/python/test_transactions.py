"""MULTI/EXEC, WATCH, DISCARD, EXECABORT."""

import pytest
import redis

from support import RespError

pytestmark = pytest.mark.transactions


def test_multi_exec_pipeline(r):
    with r.pipeline(transaction=True) as p:
        p.set("t:a", "1")
        p.incr("t:a")
        p.get("t:a")
        p.mget("t:a", "t:none")
        assert p.execute() == [True, 2, "2", ["2", None]]


def test_exec_runtime_error_does_not_abort(raw):
    c = raw()
    assert c.call("MULTI") == "OK"
    assert c.call("SET", "t:k", "abc") == "QUEUED"
    assert c.call("INCR", "t:k") == "QUEUED"
    assert c.call("SET", "t:k2", "v") == "QUEUED"
    res = c.call("EXEC")
    assert res[0] == "OK"
    assert isinstance(res[1], RespError)
    assert res[1] == "ERR value is not an integer or out of range"
    assert res[2] == "OK"
    assert c.call("GET", "t:k2") == "v"


def test_watch_abort(server, r, r2):
    r.set("t:w", "0")
    with r.pipeline() as p:
        p.watch("t:w")
        assert p.get("t:w") == "0"
        r2.set("t:w", "changed-by-other-client")
        p.multi()
        p.set("t:w", "mine")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("t:w") == "changed-by-other-client"


def test_watch_no_change_succeeds(r):
    r.set("t:w2", "0")
    with r.pipeline() as p:
        p.watch("t:w2")
        current = int(p.get("t:w2"))
        p.multi()
        p.set("t:w2", current + 1)
        assert p.execute() == [True]
    assert r.get("t:w2") == "1"


def test_watch_abort_raw(raw):
    a, b = raw(), raw()
    assert a.call("SET", "t:raw", "1") == "OK"
    assert a.call("WATCH", "t:raw") == "OK"
    assert b.call("SET", "t:raw", "2") == "OK"
    assert a.call("MULTI") == "OK"
    assert a.call("SET", "t:raw", "3") == "QUEUED"
    assert a.call("EXEC") is None  # nil array: the transaction was aborted
    assert a.call("GET", "t:raw") == "2"
    # the watch is gone after EXEC: a new transaction goes through
    assert a.call("MULTI") == "OK"
    assert a.call("SET", "t:raw", "4") == "QUEUED"
    assert a.call("EXEC") == ["OK"]


def test_unwatch(raw):
    a, b = raw(), raw()
    a.call("WATCH", "t:uw")
    assert a.call("UNWATCH") == "OK"
    b.call("SET", "t:uw", "x")
    a.call("MULTI")
    a.call("SET", "t:uw", "y")
    assert a.call("EXEC") == ["OK"]


def test_discard(raw):
    c = raw()
    assert c.call("MULTI") == "OK"
    assert c.call("SET", "t:d", "v") == "QUEUED"
    assert c.call("DISCARD") == "OK"
    assert c.call("GET", "t:d") is None
    assert c.call("DISCARD") == "ERR DISCARD without MULTI"
    assert c.call("EXEC") == "ERR EXEC without MULTI"


def test_nested_multi(raw):
    c = raw()
    assert c.call("MULTI") == "OK"
    err = c.call("MULTI")
    assert isinstance(err, RespError) and err == "ERR MULTI calls can not be nested"
    assert c.call("DISCARD") == "OK"


def test_execabort_after_bad_command(raw):
    c = raw()
    assert c.call("MULTI") == "OK"
    assert c.call("SET", "t:ea", "v") == "QUEUED"
    err = c.call("NOSUCHCOMMAND", "x")
    assert isinstance(err, RespError) and err.startswith("ERR unknown command 'NOSUCHCOMMAND'")
    err = c.call("GET")  # wrong arity is also caught at queue time
    assert isinstance(err, RespError) and "wrong number of arguments" in err
    res = c.call("EXEC")
    assert isinstance(res, RespError)
    assert res == "EXECABORT Transaction discarded because of previous errors."
    assert c.call("GET", "t:ea") is None
    assert c.call("PING") == "PONG"  # no longer in MULTI


def test_execabort_redis_py(r):
    p = r.pipeline(transaction=True)
    p.set("t:ea2", "v")
    p.execute_command("NOSUCHCOMMAND")
    with pytest.raises(redis.ResponseError):
        p.execute()
    assert r.get("t:ea2") is None
