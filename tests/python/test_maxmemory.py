"""maxmemory and the eviction policies: which keys go, which stay, the OOM error.

Every test here runs against redis-server too (KELVIN_TEST_TARGET=redis), which checks
that the expectations are Redis's. Loads are bounded in keys; the pauses only let the
one-second LRU clock of both servers move on (no timing is asserted)."""

from __future__ import annotations

import time

import pytest

from support import (TARGET, RespError, next_message, running_server, wait_for,
                     wait_subscribed)

pytestmark = pytest.mark.maxmemory

# One session: a 1 KB value, as a serialized session blob.
VALUE = "s" * 1000
# How far past the limit used memory may be seen: the writes of one pipeline can land
# between two evictions (Redis evicts before each command, Kelvin's leader evicts
# through the log while the writes keep coming).
TOLERANCE = 0.05
# Keys per pipeline.
BATCH = 500
OOM = "OOM command not allowed when used memory > 'maxmemory'."


def used(c) -> int:
    return int(c.info("memory")["used_memory"])


def evicted(c) -> int:
    return int(c.info("stats")["evicted_keys"])


def load(c, keys, ex=None):
    p = c.pipeline(transaction=False)
    for k in keys:
        p.set(k, VALUE, ex=ex)
    p.execute()


def present(c, keys) -> list[str]:
    p = c.pipeline(transaction=False)
    for k in keys:
        p.exists(k)
    return [k for k, n in zip(keys, p.execute()) if n]


def test_allkeys_lru_keeps_the_recent_sessions_and_stays_under_the_limit():
    limit = 12 * 1024 * 1024
    with running_server(maxmemory="12mb", maxmemory_policy="allkeys-lru") as srv:
        c = srv.client()
        assert c.config_get("maxmemory") == {"maxmemory": str(limit)}
        assert c.info("memory")["maxmemory_policy"] == "allkeys-lru"
        recent = [f"recent:{i}" for i in range(300)]
        old = [f"old:{i}" for i in range(6000)]
        load(c, recent)
        load(c, old)
        # Let the one-second LRU clock move past the old sessions.
        time.sleep(1.2)
        ceiling = limit * (1 + TOLERANCE)
        highest = 0
        # Three times the limit of new sessions, the recent ones read between batches.
        for b in range(72):
            load(c, [f"new:{b}:{i}" for i in range(BATCH)])
            p = c.pipeline(transaction=False)
            for k in recent:
                p.get(k)
            p.execute()
            highest = max(highest, used(c))
            # A writer at a session store's pace, so a second's writes are a fraction
            # of the limit (what the LRU clock's resolution can tell apart).
            time.sleep(0.15)
        assert highest <= ceiling, f"used_memory reached {highest} > {ceiling}"
        kept_recent = present(c, recent)
        kept_old = present(c, old)
        assert len(kept_recent) >= 0.9 * len(recent), f"{len(kept_recent)} recent kept"
        assert len(kept_old) <= 0.1 * len(old), f"{len(kept_old)} old kept"
        assert evicted(c) >= len(old) - len(kept_old)


def over_the_limit(c, keys: int) -> list[str]:
    """Loads `keys` sessions, then sets `maxmemory` just under what they take: the data
    alone is over the limit (a limit reached by filling would be crossed by the
    request's own buffers on Redis, which counts them, and fall back after)."""
    names = [f"plain:{i}" for i in range(keys)]
    load(c, names)
    c.config_set("maxmemory", used(c) - 10_000)
    return names


def test_noeviction_refuses_growing_writes_with_the_exact_error():
    with running_server(maxmemory_policy="noeviction") as srv:
        c = srv.client()
        queued = srv.raw()
        assert queued.call("MULTI") == "OK"
        assert queued.call("SET", "tx", "v") == "QUEUED"
        names = over_the_limit(c, 300)
        # EXEC of a queued write is refused too, and the transaction discarded.
        assert queued.call("EXEC") == f"EXECABORT Transaction discarded because of: {OOM}"
        assert queued.call("EXEC") == "ERR EXEC without MULTI"
        queued.close()
        with srv.raw() as raw:
            # Every command flagged denyoom is refused; reads and deletes go on.
            for args in (("SET", "k", "v"), ("LPUSH", "l", "x"), ("HSET", "h", "f", "v"),
                         ("SADD", "s", "m"), ("APPEND", names[0], "more")):
                assert raw.call(*args) == OOM, args
            assert raw.call("GET", names[0]) == VALUE
            assert raw.call("EXISTS", names[1]) == 1
            assert raw.call("EXPIRE", names[1], 1000) == 1
            # Queued in MULTI: refused there, and EXEC aborts (Redis's rejectCommand).
            assert raw.call("MULTI") == "OK"
            assert raw.call("SET", "tx", "v") == OOM
            assert raw.call("EXEC").startswith("EXECABORT")
            assert raw.call("DEL", *names) == len(names)
            assert raw.call("SET", "after-del", "v") == "OK"
        assert evicted(c) == 0
        assert c.get("after-del") == "v"


def test_volatile_ttl_evicts_the_nearest_expiry_first_and_never_keys_without_one():
    with running_server(maxmemory_policy="volatile-ttl") as srv:
        c = srv.client()
        persistent = [f"keep:{i}" for i in range(500)]
        near = [f"near:{i}" for i in range(1000)]
        far = [f"far:{i}" for i in range(2000)]
        load(c, persistent)
        load(c, near, ex=600)
        load(c, far, ex=100_000)
        # About 700 sessions' worth over the limit: the near ones are what should go.
        limit = used(c) - 700 * 1100
        c.config_set("maxmemory", limit)
        c.set("trigger", "x")
        assert wait_for(lambda: used(c) <= limit, timeout=10)
        # Redis counts request buffers too: lift the limit before looking, or the checks'
        # own pipelines evict more.
        c.config_set("maxmemory", 0)
        gone = evicted(c)
        assert gone >= 500
        kept_near = present(c, near)
        kept_far = present(c, far)
        assert present(c, persistent) == persistent
        assert len(near) - len(kept_near) >= 0.8 * gone, (len(kept_near), gone)
        assert len(kept_far) >= 0.9 * len(far)
        assert len(near) + len(far) - len(kept_near) - len(kept_far) == gone


def test_volatile_policy_without_ttl_keys_answers_oom():
    with running_server(maxmemory_policy="volatile-lru") as srv:
        c = srv.client()
        names = over_the_limit(c, 300)
        with srv.raw() as raw:
            assert raw.call("SET", "one-more", "v") == OOM
            assert raw.call("DEL", *names) == len(names)
            assert raw.call("SET", "one-more", "v") == "OK"
        assert evicted(c) == 0


def test_config_set_maxmemory_evicts_at_once_and_info_reports_it():
    with running_server() as srv:
        c = srv.client()
        info = c.info("memory")
        assert int(info["maxmemory"]) == 0 and info["maxmemory_policy"] == "noeviction"
        load(c, [f"k:{i}" for i in range(2000)])
        assert c.config_set("maxmemory-policy", "allkeys-random")
        assert c.config_set("maxmemory-samples", "10")
        assert c.config_get("maxmemory-samples") == {"maxmemory-samples": "10"}
        c.config_set("notify-keyspace-events", "Ee")
        events = c.pubsub()
        events.subscribe("__keyevent@0__:evicted")
        wait_subscribed(events, 1)
        limit = used(c) - 1000 * 1100
        assert c.config_set("maxmemory", limit)
        c.set("trigger", "x")
        assert wait_for(lambda: used(c) <= limit, timeout=10)
        msg = next_message(events)
        assert msg is not None and msg["data"].startswith(("k:", "trigger")), msg
        events.close()
        info = c.info("memory")
        c.config_set("maxmemory", 0)
        assert int(info["maxmemory"]) == limit
        assert info["maxmemory_policy"] == "allkeys-random"
        assert c.dbsize() + evicted(c) == 2001


@pytest.fixture
def trio():
    if TARGET != "kelvin":
        pytest.skip("Kelvin's own 3-node group")
    from test_cluster_kelvin import three_nodes
    yield from three_nodes()


def replica_keys(srv) -> set[str]:
    """The keys of this node's own replica (READONLY: no relaying to the leader)."""
    with srv.raw() as raw:
        assert raw.call("READONLY") == "OK"
        return set(raw.call("KEYS", "*"))


def test_every_replica_of_a_group_evicts_the_same_keys(trio):
    from test_cluster_kelvin import create, raft_info
    done = create(trio, "--replicas", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(lambda: sum(raft_info(n)["raft_role"] == "leader" for n in trio) == 1,
                    timeout=15)
    leader = next(n for n in trio if raft_info(n)["raft_role"] == "leader")
    follower = next(n for n in trio if n is not leader)
    # Settings are per node, as in Redis: the leader's decide, the others' take over
    # with the leadership.
    limit = 4 * 1024 * 1024
    for n in trio:
        assert n.client().config_set("maxmemory", "4mb")
        assert n.client().config_set("maxmemory-policy", "allkeys-lru")
    c = follower.client()
    sessions = [f"sess:{i}" for i in range(10_000)]
    for b in range(0, len(sessions), BATCH):
        load(c, sessions[b:b + BATCH])

    def converged():
        sets = [replica_keys(n) for n in trio]
        return sets if all(s == sets[0] for s in sets) else None
    sets = wait_for(converged, timeout=20)
    assert sets, "the replicas hold different keys"
    kept = sets[0]
    assert 0 < len(kept) < len(sessions) / 2
    for n in trio:
        info = n.client().info()
        assert int(info["evicted_keys"]) == len(sessions) - len(kept), n.port
        assert int(info["used_memory"]) <= limit * (1 + TOLERANCE), n.port
    # Under noeviction, a write through any node gets the leader's OOM, exactly.
    for n in trio:
        assert n.client().config_set("maxmemory-policy", "noeviction")
        assert n.client().config_set("maxmemory", "1mb")
    for n in trio:
        with n.raw() as raw:
            assert raw.call("SET", "more", "v") == OOM, n.port
            assert raw.call("GET", next(iter(kept))) == VALUE


def test_allkeys_lfu_keeps_the_often_read_sessions():
    with running_server(maxmemory_policy="allkeys-lfu") as srv:
        c = srv.client()
        hot = [f"hot:{i}" for i in range(200)]
        cold = [f"cold:{i}" for i in range(3000)]
        load(c, hot)
        load(c, cold)
        for _ in range(30):
            p = c.pipeline(transaction=False)
            for k in hot:
                p.get(k)
            p.execute()
        # Room for about half of the sessions, then as many new ones as were cold.
        limit = used(c) - 1600 * 1100
        c.config_set("maxmemory", limit)
        for b in range(0, 3000, BATCH):
            load(c, [f"new:{i}" for i in range(b, b + BATCH)])
        assert wait_for(lambda: used(c) <= limit, timeout=10)
        c.config_set("maxmemory", 0)
        assert len(present(c, hot)) >= 0.9 * len(hot)
        assert len(present(c, cold)) <= 0.5 * len(cold)
