"""Keyspace notifications and expiry (active and lazy)."""

import time

import pytest

from support import next_message, notify_events, wait_for, wait_subscribed


@pytest.fixture
def ps(server):
    client = server.client()
    p = client.pubsub()
    try:
        yield p
    finally:
        p.close()
        client.close()


@pytest.mark.notifications
def test_expired_event_by_active_expiry(r, ps):
    with notify_events(r, "Ex"):
        assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": "xE"}
        ps.psubscribe("__keyevent@0__:expired")
        wait_subscribed(ps, 1)
        r.set("n:exp", "v", px=100)
        # Nobody reads the key: only the server's own expiry cycle can find it.
        msg = next_message(ps, timeout=5.0)
        assert msg is not None, "no expired event within 5 s"
        assert msg["type"] == "pmessage"
        assert msg["channel"] == "__keyevent@0__:expired"
        assert msg["data"] == "n:exp"
    assert r.exists("n:exp") == 0


@pytest.mark.notifications
def test_expired_event_many_keys(r, ps):
    with notify_events(r, "Ex"):
        ps.subscribe("__keyevent@0__:expired")
        wait_subscribed(ps, 1)
        keys = {f"n:many:{i}" for i in range(20)}
        with r.pipeline(transaction=False) as p:
            for k in keys:
                p.set(k, "v", px=50)
            p.execute()
        got = set()
        deadline = time.monotonic() + 8
        while got != keys and time.monotonic() < deadline:
            msg = next_message(ps, timeout=0.5)
            if msg is not None:
                got.add(msg["data"])
        assert got == keys


@pytest.mark.notifications
def test_del_set_events_with_kea(r, ps):
    with notify_events(r, "KEA"):
        assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": "AKE"}
        ps.subscribe("__keyevent@0__:del", "__keyevent@0__:set", "__keyspace@0__:n:ks")
        wait_subscribed(ps, 3)
        r.set("n:ks", "v")
        r.delete("n:ks")
        msgs = [next_message(ps) for _ in range(4)]
        assert None not in msgs, msgs
        pairs = {(m["channel"], m["data"]) for m in msgs}
        assert pairs == {
            ("__keyevent@0__:set", "n:ks"),
            ("__keyspace@0__:n:ks", "set"),
            ("__keyevent@0__:del", "n:ks"),
            ("__keyspace@0__:n:ks", "del"),
        }
        # DEL of a missing key notifies nothing; the next event is the one after it
        r.delete("n:missing")
        r.set("n:after", "v")
        m = next_message(ps)
        assert (m["channel"], m["data"]) == ("__keyevent@0__:set", "n:after")


@pytest.mark.notifications
def test_no_events_when_disabled(r, ps):
    r.config_set("notify-keyspace-events", "")
    ps.psubscribe("__key*__:*")
    wait_subscribed(ps, 1)
    r.set("n:quiet", "v")
    r.delete("n:quiet")
    assert next_message(ps, timeout=0.5) is None


@pytest.mark.notifications
def test_generic_expire_event(r, ps):
    with notify_events(r, "Eg"):
        ps.subscribe("__keyevent@0__:expire")
        wait_subscribed(ps, 1)
        r.set("n:g", "v")
        r.expire("n:g", 100)
        m = next_message(ps)
        assert m is not None and m["data"] == "n:g"


@pytest.mark.expiry
def test_px_key_disappears(r):
    r.set("e:short", "v", px=50)
    assert wait_for(lambda: r.exists("e:short") == 0, timeout=3.0)
    assert r.get("e:short") is None
    assert r.ttl("e:short") == -2


@pytest.mark.expiry
def test_expired_key_invisible_to_reads(r):
    r.set("e:a", "v", px=100)
    r.rpush("e:l", "x")
    r.pexpire("e:l", 100)
    r.set("e:keep", "v")
    time.sleep(0.3)
    assert r.get("e:a") is None
    assert r.exists("e:a", "e:l") == 0
    assert r.lrange("e:l", 0, -1) == []
    assert r.type("e:l") == "none"
    assert "e:a" not in r.keys("e:*")
    assert r.get("e:keep") == "v"


@pytest.mark.expiry
def test_active_expiry_shrinks_dbsize(server):
    c = server.client(db=11)
    try:
        c.flushdb()
        with c.pipeline(transaction=False) as p:
            for i in range(200):
                p.set(f"e:bulk:{i}", "v", px=50)
            p.set("e:stay", "v")
            p.execute()
        # never touched again: active expiry must reclaim them
        assert wait_for(lambda: c.dbsize() == 1, timeout=8.0)
        c.flushdb()
    finally:
        c.close()


@pytest.mark.expiry
def test_set_clears_ttl_and_expire_refresh(r):
    r.set("e:r", "v", px=300)
    r.pexpire("e:r", 100000)  # refreshed before it expired
    time.sleep(0.5)
    assert r.get("e:r") == "v"
