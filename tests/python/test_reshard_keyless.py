"""DBSIZE, KEYS, SCAN and RANDOMKEY on the main port during the lazy phase of a live
resharding (after the handover, before the source drops the moved slots): they answer as
one Redis holding the keys would. A key moved to the new owner is not counted twice (the
old owner keeps its copy until the end), a key deleted at the new owner is not counted
at the old one, a key not moved yet is counted once. Kelvin only: Redis has no such
command."""

from __future__ import annotations

import fnmatch
import subprocess
import threading

import pytest
import redis

from support import TARGET, ServerProcess
from test_cluster_kelvin import create
from test_cluster_membership import addr, cli, four  # noqa: F401 (a fixture)
from test_reshard import migrating, reshard_slowly

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster admin")


def full_scan(c: redis.Redis, **kwargs) -> list[str]:
    """Every key a SCAN iteration returns, in order, repeats kept (bounded in calls)."""
    seen: list[str] = []
    cursor = 0
    for _ in range(200000):
        cursor, keys = c.scan(cursor, **kwargs)
        seen.extend(keys)
        if cursor == 0:
            return seen
    raise AssertionError("SCAN never ended")


def check_keyspace(clients: list[redis.Redis], strings: set[str], hashes: set[str]):
    """Every keyless command over the whole keyspace sees each key exactly once."""
    every = strings | hashes
    for c in clients:
        port = c.connection_pool.connection_kwargs["port"]
        assert c.dbsize() == len(every), port
        keys = c.keys("*")
        assert len(keys) == len(set(keys)), f"KEYS returned a key twice on {port}"
        assert set(keys) == every, (port, len(keys), len(every))
        some = c.keys("k:1*")
        assert sorted(some) == sorted(k for k in every if fnmatch.fnmatchcase(k, "k:1*")), port
        for count in (10, 1000):
            seen = full_scan(c, count=count)
            assert len(seen) == len(set(seen)), f"SCAN COUNT {count} returned a key twice"
            assert set(seen) == every, (port, count, len(set(seen)), len(every))
        seen = full_scan(c, count=100, match="k:2*")
        assert sorted(seen) == sorted(k for k in every if fnmatch.fnmatchcase(k, "k:2*"))
        seen = full_scan(c, count=100, _type="hash")
        assert sorted(seen) == sorted(hashes), port
        seen = full_scan(c, count=50, match="h:1*", _type="string")
        assert seen == [], port
        for _ in range(5):
            assert c.randomkey() in every, port


def test_keyless_commands_are_exact_during_the_lazy_phase(four):
    first, second, third, new = four
    done = create([first, second, third], "--replicas", "1", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = first.client()
    strings = {f"k:{i}" for i in range(4000)}
    hashes = {f"h:{i}" for i in range(400)}
    pipe = c.pipeline(transaction=False)
    for i, key in enumerate(sorted(strings)):
        pipe.set(key, f"{i}:" + "x" * 500)
        if i % 500 == 499:
            pipe.execute()
    for key in hashes:
        pipe.hset(key, mapping={"a": "1", "b": "x" * 200})
    pipe.execute()
    # A slow drain: about 170 KB per source group at 2 KB/s, so the checks below run
    # while most keys of the moved slots are still at their old owner only.
    moved = reshard_slowly(four, 2000)
    nodes: list[ServerProcess] = [first, second, third, new]
    clients = [second.client(), new.client(protocol=3)]
    check_keyspace(clients, strings, hashes)
    assert migrating(first) == 3, "the drain ended before the checks: slow it down"

    # Fault some in (GET), delete some not moved yet and some moved, write new keys in
    # the moved slots and overwrite some not moved yet.
    in_moved = sorted(k for k in strings if moved(k))
    assert len(in_moved) > 400, len(in_moved)
    faulted, untouched = in_moved[:100], in_moved[100:]
    for k in faulted:
        assert c.get(k) is not None, k
    gone = faulted[:30] + untouched[:30]
    assert c.delete(*gone) == len(gone)
    strings -= set(gone)
    for k in untouched[30:60]:
        assert c.set(k, "overwritten")
    fresh = [k for k in (f"new:{i}" for i in range(2000)) if moved(k)][:100]
    for k in fresh:
        assert c.set(k, "fresh")
    strings |= set(fresh)
    moved_hashes = [h for h in sorted(hashes) if moved(h)][:10]
    for h in moved_hashes:
        assert c.hget(h, "a") == "1"
    assert c.delete(*moved_hashes[:5]) == 5
    hashes -= set(moved_hashes[:5])
    check_keyspace(clients, strings, hashes)
    assert migrating(first) == 3, "the drain ended before the checks: slow it down"

    # Only the moved slots' keys left: RANDOMKEY finds one there (the groups hold no
    # other), moved or not.
    outside = sorted(k for k in strings | hashes if not moved(k))
    for at in range(0, len(outside), 500):
        chunk = outside[at:at + 500]
        assert c.delete(*chunk) == len(chunk)
    strings -= set(outside)
    hashes -= set(outside)
    check_keyspace(clients, strings, hashes)
    assert migrating(first) == 3, "the drain ended before the checks: slow it down"

    # The drain at full speed, to its end (the new owner finishes, then the old ones
    # drop the moved slots): DBSIZE and KEYS stay exact all along, moves and FINISH
    # racing their walks.
    for node in nodes:
        node.client().config_set("kelvin-migration-drain-rate", 0)
    waited: list[subprocess.CompletedProcess] = []
    waiter = threading.Thread(
        target=lambda: waited.append(cli("reshard", addr(first), "--wait-drained", timeout=300)))
    waiter.start()
    every, rounds = strings | hashes, 0
    try:
        while waiter.is_alive() and rounds < 5000:
            cn = clients[rounds % 2]
            assert cn.dbsize() == len(every), rounds
            if rounds % 10 == 0:
                keys = cn.keys("*")
                assert len(keys) == len(every) and set(keys) == every, rounds
            rounds += 1
    finally:
        waiter.join(timeout=300)
    assert waited and waited[0].returncode == 0, waited
    assert migrating(first) == 0
    check_keyspace(clients + [first.client()], strings, hashes)
