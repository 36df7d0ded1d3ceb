"""Blocking commands whose keys live in several groups (issue 19), outside MULTI, through
plain clients on the main port of a 3-node, 3-group cluster: BLMOVE, BRPOPLPUSH and
BLPOP run as their non-blocking selves in a transaction across the groups and park the
connection while there is nothing to take, as a single redis-server does."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from support import TARGET
from test_cross_group_tx import formed, keys_by_group, trio  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster")


def later(seconds: float, fn) -> threading.Thread:
    def run():
        time.sleep(seconds)
        fn()
    t = threading.Thread(target=run)
    t.start()
    return t


def test_blmove_across_groups_waits_for_an_element_and_moves_it_atomically(trio):
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), "bq:", 2)
    for i, n in enumerate(nodes):
        src, dst = k[i][0] + f".{i}", k[(i + 1) % 3][0] + f".{i}"
        c = n.client()
        # Something there: moved at once, as LMOVE.
        nodes[(i + 2) % 3].client().rpush(src, "first")
        assert c.blmove(src, dst, 5, "LEFT", "RIGHT") == "first"
        # Nothing there: parked until a push from a client of another node.
        pusher = later(0.3, lambda: nodes[(i + 1) % 3].client().rpush(src, "second"))
        assert c.blmove(src, dst, 0, "LEFT", "RIGHT") == "second"
        pusher.join()
        assert c.lrange(dst, 0, -1) == ["first", "second"]
        assert c.exists(src) == 0
        # BRPOPLPUSH likewise, and the connection goes on with what came behind.
        pusher = later(0.2, lambda: nodes[i].client().rpush(src, "third"))
        pipe = c.pipeline(transaction=False)
        pipe.brpoplpush(src, dst, 5).lrange(dst, 0, -1)
        assert pipe.execute() == ["third", ["third", "first", "second"]]
        pusher.join()


def test_blocking_across_groups_times_out_with_nil_whatever_else_is_written(trio):
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), "bt:", 2)
    # The socket's timeout is far above the command's: a timeout that never came would
    # fail the call instead of answering nil.
    c = redis.Redis(port=nodes[1].port, decode_responses=True, socket_timeout=20)
    stop = threading.Event()

    def churn():
        # List writes in the same groups, to other keys, all along: each wakes the parked
        # command, which finds nothing and parks again; its timeout must still count from
        # the first block.
        w = nodes[2].client()
        while not stop.is_set():
            w.rpush(k[0][1], "x")
            w.rpush(k[1][1], "x")
            time.sleep(0.02)
    t = threading.Thread(target=churn)
    t.start()
    try:
        assert c.blmove(k[0][0], k[1][0], 1, "LEFT", "RIGHT") is None
        assert c.blpop([k[0][0], k[1][0], k[2][0]], 1) is None
    finally:
        stop.set()
        t.join()
    assert c.exists(k[0][0], k[1][0]) == 0


def test_blpop_across_groups_takes_from_the_first_list_that_gets_an_element(trio):
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), "bp:", 1)
    c = nodes[0].client()
    pusher = later(0.3, lambda: nodes[2].client().rpush(k[2][0], "v"))
    assert c.blpop([k[0][0], k[1][0], k[2][0]], 10) == (k[2][0], "v")
    pusher.join()
    # Elements already there: the first key's, as BLPOP in one Redis.
    c.rpush(k[1][0], "b")
    c.rpush(k[2][0], "c")
    assert c.blpop([k[0][0], k[1][0], k[2][0]], 10) == (k[1][0], "b")
    # A source of another type: WRONGTYPE, as in Redis.
    c.set(k[0][0], "s")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        c.blmove(k[0][0], k[1][0], 1, "LEFT", "RIGHT")
