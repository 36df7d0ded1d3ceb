"""WATCH across groups (issue 19): keys watched in several groups of a 3-node, 3-group
cluster, through plain clients on the main port of every node, behave as against one
redis-server: EXEC answers nil (redis-py raises WatchError) and applies nothing in any
group when a watched key was written, deleted or expired since its WATCH, by anyone,
and commits otherwise. Each group holding a watched key checks it in its own PREPARE
against its own index, also a group that holds nothing else of the transaction.

Every group has a replica on each of the three nodes, so going through every node takes
each group both at its leader and at a follower (where WATCH first asks the leader for
its index)."""

from __future__ import annotations

import random
import threading

import pytest
import redis

from support import TARGET, RawConn, wait_for
from test_cluster_kelvin import rport, three_nodes
from test_cross_group_tx import formed, keys_by_group, trio  # noqa: F401 (a fixture)
from test_reshard_races import form_and_add, four, reshard, tags_in  # noqa: F401 (four)

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster")


def attempt(c: redis.Redis, watched: list[str], writes: dict[str, str], touch=None) -> bool:
    """WATCH `watched`, run `touch()` (a write by another client, or nothing), then
    MULTI, SET each of `writes`, EXEC: whether it committed (False: WatchError)."""
    with c.pipeline(transaction=True) as p:
        p.watch(*watched)
        if touch is not None:
            touch()
        p.multi()
        for k, v in writes.items():
            p.set(k, v)
        try:
            assert p.execute() == [True] * len(writes)
            return True
        except redis.WatchError:
            return False


def values(nodes, keys: list[str]) -> list[list]:
    return [n.client().mget(*keys) for n in nodes]


@pytest.mark.parametrize("width", [2, 3])
def test_watch_of_keys_in_several_groups_through_every_node(trio, width):
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), f"wx{width}:", 2)
    groups = list(range(width))
    watched = [k[g][0] for g in groups]
    written = [k[g][1] for g in range(3)]
    for i, n in enumerate(nodes):
        c = n.client()
        other = nodes[(i + 1) % 3].client()
        # The watched keys were just written through another node: WATCH here must take
        # an index that covers those writes (a follower here may not have applied them
        # yet), or the untouched transaction would abort.
        other.mset({w: f"seen{i}" for w in watched})
        want = {w: f"n{i}" for w in written}
        assert attempt(c, watched, want), f"untouched, through node {i}"
        assert values(nodes, written) == [list(want.values())] * 3
        # One watched key written by another client between WATCH and EXEC, in each
        # group in turn: nil, and nothing applied in any group.
        for g in groups:
            def touch(g=g):
                assert other.set(watched[g], f"touched{i}")
            lost = {w: f"lost{i}.{g}" for w in written}
            assert not attempt(c, watched, lost, touch), f"node {i}, key of group {g}"
            assert values(nodes, written) == [list(want.values())] * 3


def test_a_group_holding_only_watched_keys_checks_them(trio):
    """The watched key in one group, the write in another, both ways round."""
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), "wo:", 2)
    for watch_g, write_g in [(0, 1), (1, 0), (2, 0)]:
        w, target = k[watch_g][0], k[write_g][1]
        for i, n in enumerate(nodes):
            c, other = n.client(), nodes[(i + 2) % 3].client()
            assert attempt(c, [w], {target: f"ok{i}"})
            assert c.get(target) == f"ok{i}"
            assert not attempt(c, [w], {target: "lost"}, lambda: other.incr(w))
            assert c.get(target) == f"ok{i}"
            # Deleted counts as written too.
            assert not attempt(c, [w], {target: "lost"}, lambda: other.delete(w))
            assert [m.client().get(target) for m in nodes] == [f"ok{i}"] * 3


def test_watches_of_several_calls_the_same_client_expiry_and_unwatch(trio):
    nodes = formed(trio)
    c = nodes[1].client()
    other = nodes[2].client()
    k = keys_by_group(c, "wm:", 3)
    a, b, z = k[0][0], k[1][0], k[2][0]
    out = [k[0][1], k[2][1]]

    # Several WATCH calls, one group each: each key keeps its own group's index.
    for touched in (a, b):
        with c.pipeline(transaction=True) as p:
            p.watch(a)
            other.set(b, "before its watch")  # (not watched yet: no abort)
            p.watch(b)
            other.set(touched, "x")
            p.multi()
            p.set(out[0], "lost").set(out[1], "lost")
            with pytest.raises(redis.WatchError):
                p.execute()
    with c.pipeline(transaction=True) as p:
        p.watch(a)
        other.set(b, "before its watch")
        p.watch(b)
        p.multi()
        p.set(out[0], "1").set(out[1], "1")
        assert p.execute() == [True, True]
    assert c.mget(*out) == ["1", "1"]

    # Written by the same client between WATCH and EXEC: nil, as in Redis.
    with c.pipeline(transaction=True) as p:
        p.watch(a, z)
        c.set(z, "mine")
        p.multi()
        p.set(out[0], "lost").set(out[1], "lost")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert c.mget(*out) == ["1", "1"]

    # A watched key that expires before EXEC.
    c.set(b, "short", px=1500)
    with c.pipeline(transaction=True) as p:
        p.watch(a, b, z)
        # Gone for every client (a read that finds it expired deletes it everywhere).
        assert wait_for(lambda: other.exists(b) == 0, timeout=10)
        p.multi()
        p.set(out[0], "lost").set(out[1], "lost")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert c.mget(*out) == ["1", "1"]

    # UNWATCH, then writes: commits.
    with c.pipeline(transaction=True) as p:
        p.watch(a, b, z)
        p.unwatch()
        other.set(a, "y")
        other.set(z, "y")
        p.multi()
        p.set(out[0], "2").set(out[1], "2")
        assert p.execute() == [True, True]
    assert c.mget(*out) == ["2", "2"]


def test_watch_across_groups_on_the_wire(trio):
    """Replies byte for byte (RESP2 and RESP3), empty transactions, DISCARD and EXEC
    clearing the watches, WATCH inside MULTI."""
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), "ww:", 1)
    a, b, z = k[0][0], k[1][0], k[2][0]
    other = nodes[0].client()
    for proto, nil in ((2, b"*-1"), (3, b"_")):
        with RawConn(nodes[1].port) as r:
            if proto == 3:
                assert isinstance(r.call("HELLO", "3"), dict)
            # Empty body: untouched is an empty array, touched is nil.
            assert r.call("WATCH", a, b) == "OK"
            assert r.call("MULTI") == "OK"
            assert r.call("EXEC") == []
            assert r.call("WATCH", a, b) == "OK"
            other.set(b, "t")
            assert r.call("MULTI") == "OK"
            r.send("EXEC")
            assert r.read_line() == nil
            # WATCH inside MULTI is refused; the transaction still runs.
            assert r.call("WATCH", a, z) == "OK"
            assert r.call("MULTI") == "OK"
            err = r.call("WATCH", b)
            assert str(err) == "ERR WATCH inside MULTI is not allowed"
            assert r.call("SET", b, "v") == "QUEUED"
            other.set(z, "t")
            r.send("EXEC")
            assert r.read_line() == nil
            assert other.get(b) == "t"
            # EXEC and DISCARD drop every watch.
            assert r.call("WATCH", a, z) == "OK"
            assert r.call("MULTI") == "OK"
            assert r.call("DISCARD") == "OK"
            other.set(a, "t")
            assert r.call("MULTI") == "OK"
            assert r.call("SET", b, "v1") == "QUEUED"
            assert r.call("SET", z, "v1") == "QUEUED"
            assert r.call("EXEC") == ["OK", "OK"]
            other.set(z, "t")
            assert r.call("MULTI") == "OK"
            assert r.call("SET", a, "v2") == "QUEUED"
            assert r.call("EXEC") == ["OK"]
            assert other.mget(a, b, z) == ["v2", "v1", "t"]


def test_optimistic_counters_in_three_groups_lose_no_increment(trio):
    """redis-py's transaction(): read three counters (one per group) under WATCH, write
    each plus one, again on WatchError; several clients at once, on every node. A watch
    that missed a write would let two clients write the same value: the counters would
    end below the number of transactions that committed."""
    nodes = formed(trio)
    k = keys_by_group(nodes[0].client(), "ctr:", 1)
    counters = [k[0][0], k[1][0], k[2][0]]
    nodes[0].client().mset({c: 0 for c in counters})
    done = {"commits": 0, "aborts": 0}
    errors: list = []
    lock = threading.Lock()

    def worker(seed):
        rng = random.Random(seed)
        c = nodes[seed % 3].client()
        for _ in range(20):
            tries = []

            def increment(pipe):
                tries.append(1)
                now = [int(v) for v in pipe.mget(*counters)]
                pipe.multi()
                for name, v in zip(counters, now):
                    pipe.set(name, v + 1)
            try:
                c.transaction(increment, *rng.sample(counters, 3))
            except redis.RedisError as e:
                errors.append(repr(e))
                continue
            with lock:
                done["commits"] += 1
                done["aborts"] += len(tries) - 1

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert done["commits"] == 120, done
    for n in nodes:
        assert n.client().mget(*counters) == [str(done["commits"])] * 3
    # The clients did meet: some transactions were aborted and run again.
    assert done["aborts"] > 0, done


def test_a_watched_key_whose_slot_moved_makes_exec_nil(four):
    """WATCH of keys in two groups, then one key's slot moves to a new group: EXEC
    answers nil and applies nothing, the key written at its new owner or not (its index
    counts in the old group's log), as Redis aborts a transaction whose watched key
    MIGRATE moved away."""
    first, second, third, new = four
    form_and_add(four, 0)
    # Group 0 (0-5461) gives its highest 4096 slots to the new node's group.
    moving = [f"{t}:w" for t in tags_in(4300, 5400, 2, "mv")]
    staying = [f"{t}:w" for t in tags_in(6000, 10000, 2, "st")]
    targets = [f"{t}:x" for t in tags_in(11000, 16000, 2, "tg")]
    c = first.client()
    c.mset({k: "old" for k in moving + staying})
    watching = [second.client(), third.client()]
    pipes = []
    for w, m, s in zip(watching, moving, staying):
        p = w.pipeline(transaction=True)
        p.watch(m, s)
        pipes.append(p)
    moved = reshard(first, new)
    assert all(moved(k) for k in moving) and not any(moved(k) for k in staying + targets)
    assert c.set(moving[0], "new")
    for p, m, s, t in zip(pipes, moving, staying, targets):
        p.multi()
        p.set(t, "lost").set(s, "lost")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert c.mget(*targets, *staying) == [None, None, "old", "old"]
    assert c.mget(*moving) == ["new", "old"]


@pytest.fixture
def trio_redirect():
    yield from three_nodes("redirect_port")


def test_the_redirect_port_keeps_crossslot_for_watches_across_slots(trio_redirect):
    nodes = formed(trio_redirect)
    k = keys_by_group(nodes[0].client(), "wr:", 1)
    with RawConn(rport(nodes[0])) as r:
        # One WATCH over two slots: refused at once, as Redis Cluster does.
        err = r.call("WATCH", k[0][0], k[1][0])
        assert str(err).startswith("CROSSSLOT"), err
        # Two WATCH calls of one slot each are accepted; EXEC then finds them in
        # different slots.
        assert r.call("WATCH", k[0][0]) == "OK"
        assert r.call("WATCH", k[1][0]) == "OK"
        assert r.call("MULTI") == "OK"
        r.call("PING")
        err = r.call("EXEC")
        assert str(err).startswith("CROSSSLOT"), err
