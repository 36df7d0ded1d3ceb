"""Publish/subscribe."""

import pytest

from support import next_message, wait_for, wait_subscribed

pytestmark = pytest.mark.pubsub


@pytest.fixture
def ps(server):
    client = server.client()
    p = client.pubsub()
    try:
        yield p
    finally:
        p.close()
        client.close()


def test_subscribe_publish(r, ps):
    ps.subscribe("ps:ch1", "ps:ch2")
    wait_subscribed(ps, 2)
    assert r.publish("ps:ch1", "hello") == 1
    assert r.publish("ps:ch2", "world") == 1
    assert r.publish("ps:nobody", "x") == 0
    m1 = next_message(ps)
    m2 = next_message(ps)
    assert m1 is not None and m2 is not None
    assert (m1["type"], m1["channel"], m1["data"]) == ("message", "ps:ch1", "hello")
    assert (m2["type"], m2["channel"], m2["data"]) == ("message", "ps:ch2", "world")


def test_psubscribe_publish(r, ps):
    ps.psubscribe("ps:news.*")
    wait_subscribed(ps, 1)
    assert r.publish("ps:news.tech", "t1") == 1
    assert r.publish("ps:other", "o") == 0
    m = next_message(ps)
    assert m is not None
    assert m["type"] == "pmessage"
    assert m["pattern"] == "ps:news.*"
    assert m["channel"] == "ps:news.tech"
    assert m["data"] == "t1"


def test_channel_and_pattern_both_deliver(r, ps):
    ps.subscribe("ps:both")
    ps.psubscribe("ps:b*")
    wait_subscribed(ps, 2)
    assert r.publish("ps:both", "x") == 2
    got = {next_message(ps)["type"], next_message(ps)["type"]}
    assert got == {"message", "pmessage"}


def test_unsubscribe(r, ps):
    ps.subscribe("ps:u")
    wait_subscribed(ps, 1)
    ps.unsubscribe("ps:u")
    msg = next_message(ps, kinds=("unsubscribe",))
    assert msg is not None and msg["channel"] == "ps:u"
    assert wait_for(lambda: r.publish("ps:u", "x") == 0)


def test_binary_payload(server):
    pub = server.client(decode_responses=False)
    sub_client = server.client(decode_responses=False)
    p = sub_client.pubsub()
    try:
        p.subscribe(b"ps:bin")
        wait_subscribed(p, 1)
        payload = bytes(range(256)) * 4
        assert pub.publish(b"ps:bin", payload) == 1
        m = next_message(p)
        assert m is not None and m["data"] == payload
    finally:
        p.close()
        sub_client.close()
        pub.close()


def test_pubsub_introspection(r, server):
    c1, c2 = server.client(), server.client()
    p1, p2 = c1.pubsub(), c2.pubsub()
    try:
        p1.subscribe("ps:intro:a", "ps:intro:b")
        p2.subscribe("ps:intro:a")
        p2.psubscribe("ps:pat:*", "ps:pat2:*")
        wait_subscribed(p1, 2)
        wait_subscribed(p2, 3)
        assert sorted(r.pubsub_channels("ps:intro:*")) == ["ps:intro:a", "ps:intro:b"]
        assert "ps:intro:a" in r.pubsub_channels()
        assert r.pubsub_numsub("ps:intro:a", "ps:intro:b", "ps:intro:none") == [
            ("ps:intro:a", 2), ("ps:intro:b", 1), ("ps:intro:none", 0)]
        assert r.pubsub_numpat() >= 2
        p2.punsubscribe("ps:pat2:*")
        next_message(p2, kinds=("punsubscribe",))
        p1.unsubscribe("ps:intro:b")
        next_message(p1, kinds=("unsubscribe",))
        assert wait_for(lambda: r.pubsub_channels("ps:intro:*") == ["ps:intro:a"])
    finally:
        for p in (p1, p2):
            p.close()
        c1.close()
        c2.close()
    # once the subscribers are gone, so are their channels
    assert wait_for(lambda: r.pubsub_channels("ps:intro:*") == [])
    assert wait_for(lambda: r.pubsub_numpat() == 0)


def test_subscribed_mode_rejects_commands(raw):
    c = raw()
    assert c.call("SUBSCRIBE", "ps:mode") == ["subscribe", "ps:mode", 1]
    err = c.call("GET", "x")
    assert isinstance(err, str) and err.startswith("ERR")
    assert "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed" in err
    assert c.call("PING") == ["pong", ""]
    assert c.call("UNSUBSCRIBE") == ["unsubscribe", "ps:mode", 0]
    assert c.call("PING") == "PONG"
