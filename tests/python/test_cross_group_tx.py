"""Transactions across groups (issue 19): MULTI/EXEC whose keys live in several groups of
a 3-node, 3-group cluster, through plain clients on the main port of every node, run all
or nothing, isolated, with WATCH, by a two-phase commit over the groups' logs.

The `test_tx_phases_*` tests end the coordinating node at each step of the commit
(fail points, `--features failpoints`): every participant must end the same way, by
asking the record group. They run in scripts/test on the fault tests' build and skip on a
binary without fail points."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time

import pytest
import redis

from support import TARGET, wait_for
from test_cluster_kelvin import create, kelvin_cli, three_nodes
from test_cluster_membership import four  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster")

# `cluster create --groups 3` over 16384 slots: 0-5461, 5462-10922, 10923-16383.
BOUNDS = (5461, 10922)


@pytest.fixture
def trio():
    yield from three_nodes()


def group_of(c: redis.Redis, key: str) -> int:
    s = int(c.execute_command("CLUSTER", "KEYSLOT", key))
    return 0 if s <= BOUNDS[0] else 1 if s <= BOUNDS[1] else 2


def keys_by_group(c: redis.Redis, prefix: str, per_group: int) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {0: [], 1: [], 2: []}
    i = 0
    while min(len(v) for v in found.values()) < per_group:
        k = f"{prefix}{i}"
        g = group_of(c, k)
        if len(found[g]) < per_group:
            found[g].append(k)
        i += 1
    return found


def formed(nodes):
    done = create(nodes, "--replicas", "3", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr

    def healthy():
        st = subprocess.run([kelvin_cli(), "cluster", "status", f"127.0.0.1:{nodes[0].port}"],
                            capture_output=True, text=True, timeout=30)
        return st.returncode == 0
    assert wait_for(healthy, timeout=30), "the cluster did not come up"
    return nodes


def test_multi_exec_across_groups_runs_as_one_on_every_node(trio):
    nodes = formed(trio)
    c0 = nodes[0].client()
    k = keys_by_group(c0, "acct:", 2)
    for i, n in enumerate(nodes):
        c = n.client()
        tx = c.pipeline(transaction=True)
        tx.set(k[0][0], f"a{i}").set(k[1][0], f"b{i}").set(k[2][0], f"c{i}")
        tx.incr(k[1][1]).get(k[0][0]).ping().get(k[2][0])
        assert tx.execute() == [True, True, True, i + 1, f"a{i}", True, f"c{i}"]
        for other in nodes:
            assert other.client().mget(k[0][0], k[1][0], k[2][0], k[1][1]) == \
                [f"a{i}", f"b{i}", f"c{i}", str(i + 1)]

    # A command that fails at run time takes its place in the reply; the rest applies,
    # as in Redis.
    c = nodes[1].client()
    c.set(k[2][1], "not a number")
    tx = c.pipeline(transaction=True)
    tx.set(k[0][1], "x").incr(k[2][1]).set(k[1][0], "y")
    got = tx.execute(raise_on_error=False)
    assert got[0] is True and got[2] is True
    assert isinstance(got[1], redis.exceptions.ResponseError)
    assert "not an integer" in str(got[1])
    assert c.mget(k[0][1], k[1][0]) == ["x", "y"]

    # An error while queueing discards the whole transaction (EXECABORT).
    tx = c.pipeline(transaction=True)
    tx.set(k[0][0], "never").execute_command("NOSUCHCOMMAND").set(k[1][0], "never")
    with pytest.raises(redis.exceptions.ResponseError):
        tx.execute()
    assert c.mget(k[0][0], k[1][0]) != ["never", "never"]

    # RESP3: the replies come in the client's protocol.
    c3 = redis.Redis(port=nodes[2].port, protocol=3, decode_responses=True)
    tx = c3.pipeline(transaction=True)
    tx.hset(k[0][1] + "h", mapping={"f": "1"}).hgetall(k[0][1] + "h").set(k[2][0], "z")
    assert tx.execute() == [1, {"f": "1"}, True]


def test_watch_across_groups_aborts_on_a_write_and_applies_nothing(trio):
    nodes = formed(trio)
    c = nodes[0].client()
    k = keys_by_group(c, "w:", 2)
    c.set(k[0][0], "watched")
    # Unchanged: the transaction (keys in the two other groups) runs.
    with c.pipeline(transaction=True) as tx:
        tx.watch(k[0][0])
        tx.multi()
        tx.set(k[1][0], "1").set(k[2][0], "1")
        assert tx.execute() == [True, True]
    # Written from another node between WATCH and EXEC: nothing is applied anywhere.
    with c.pipeline(transaction=True) as tx:
        tx.watch(k[0][0])
        assert nodes[2].client().set(k[0][0], "changed")
        tx.multi()
        tx.set(k[1][0], "2").set(k[2][0], "2").set(k[0][1], "2")
        with pytest.raises(redis.exceptions.WatchError):
            tx.execute()
    for n in nodes:
        assert n.client().mget(k[1][0], k[2][0], k[0][1]) == ["1", "1", None]


def test_django_redis_set_many_across_groups(trio):
    pytest.importorskip("django")
    pytest.importorskip("django_redis")
    from test_django_redis import cache_at

    nodes = formed(trio)
    cache = cache_at(nodes[1].port)
    try:
        values = {f"item:{i}": {"n": i} for i in range(40)}
        cache.set_many(values, timeout=600)
        assert cache.get_many(list(values)) == values
        c = nodes[0].client()
        assert len({group_of(c, f":1:item:{i}") for i in range(40)}) == 3
        assert 590 <= c.ttl(":1:item:7") <= 600
        cache.delete_many(list(values)[:10])
        assert cache.get_many(list(values)) == {k: v for k, v in list(values.items())[10:]}
    finally:
        cache.close()


def test_transfers_across_groups_conserve_the_total_and_reads_are_never_torn(trio):
    nodes = formed(trio)
    c = nodes[0].client()
    accounts = [a for g in keys_by_group(c, "bank:", 2).values() for a in g]
    for a in accounts:
        c.set(a, 100)
    total = 100 * len(accounts)
    stop = time.monotonic() + 8
    counts = {"transfers": 0, "reads": 0, "retries": 0}
    torn: list = []
    errors: list = []
    lock = threading.Lock()

    def transfers(seed):
        rng = random.Random(seed)
        cs = [n.client() for n in nodes]
        for _ in range(2000):
            if time.monotonic() > stop:
                return
            a, b = rng.sample(accounts, 2)
            tx = rng.choice(cs).pipeline(transaction=True)
            tx.decrby(a, 7).incrby(b, 7)
            try:
                tx.execute()
                with lock:
                    counts["transfers"] += 1
            except redis.exceptions.ResponseError as e:
                if "TRYAGAIN" not in str(e):
                    errors.append(repr(e))
                with lock:
                    counts["retries"] += 1

    def reads(seed):
        rng = random.Random(seed)
        cs = [n.client() for n in nodes]
        for _ in range(2000):
            if time.monotonic() > stop:
                return
            tx = rng.choice(cs).pipeline(transaction=True)
            for a in accounts:
                tx.get(a)
            try:
                got = tx.execute()
            except redis.exceptions.ResponseError as e:
                if "TRYAGAIN" not in str(e):
                    errors.append(repr(e))
                continue
            if sum(int(v) for v in got) != total:
                torn.append(got)
            with lock:
                counts["reads"] += 1

    threads = [threading.Thread(target=transfers, args=(s,)) for s in range(4)]
    threads += [threading.Thread(target=reads, args=(10 + s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(counts)
    assert not errors, errors[:5]
    assert not torn, torn[:3]
    # Enough happened for the checks to mean something.
    assert counts["transfers"] >= 50 and counts["reads"] >= 20, counts
    for n in nodes:
        assert sum(int(v) for v in n.client().mget(*accounts)) == total


def failpoints_or_skip(n) -> None:
    try:
        n.client().execute_command("CLUSTER", "KELVIN-FAILPOINT-HITS", "tx-after-prepare")
    except redis.exceptions.ResponseError as e:
        if os.environ.get("KELVIN_REQUIRE_FAILPOINTS") == "1":
            pytest.fail(f"{n.command()[0]} has no fail points: {e}")
        pytest.skip("this kelvin-server has no fail points (scripts/test runs these on one)")


@pytest.mark.parametrize("phase,committed,replicated", [
    ("tx-after-prepare", False, False),
    ("tx-after-decide", True, False),
    ("tx-after-prepare", False, True),
    ("tx-after-decide", True, True),
])
def test_tx_phases_coordinator_killed_mid_commit(trio, phase, committed, replicated):
    """The coordinating node ends (as by SIGKILL) with every participant prepared, or
    right after the commit was recorded: the participants resolve it themselves, all
    the same way, and the keys it locked are free again. Replicated (one MSET over the
    three groups): the participants finish from the view kept with the decision."""
    nodes = formed(trio)
    failpoints_or_skip(nodes[0])
    c = nodes[1].client()
    k = keys_by_group(c, "phase:", 1)
    keys = [k[0][0], k[1][0], k[2][0]]
    c.mset({keys[0]: "old"})
    c.mset({keys[1]: "old"})
    c.mset({keys[2]: "old"})
    victim = nodes[0]
    assert victim.client().execute_command("CLUSTER", "KELVIN-FAILPOINT", phase, "return(abort)")
    tx = victim.client().pipeline(transaction=True)
    if replicated:
        tx.mset({key: "new" for key in keys})
    else:
        for key in keys:
            tx.set(key, "new")
    with pytest.raises(redis.exceptions.ConnectionError):
        tx.execute()
    victim.proc.wait(timeout=10)
    want = "new" if committed else "old"

    def reads(n, expected):
        try:
            return n.client().mget(*keys) == expected
        except redis.RedisError:
            return False
    # Resolved by the participants within seconds, from both surviving nodes; writes to
    # the keys go through again.
    for n in nodes[1:]:
        assert wait_for(lambda n=n: reads(n, [want] * 3), timeout=20), n.client().mget(*keys)
    assert c.set(keys[0], "after")
    victim.start(keep_port=True)
    assert wait_for(lambda: reads(victim, ["after", want, want]), timeout=30)


def test_plain_reads_never_see_part_of_a_committed_transaction(trio):
    """A writer sets a key in each of two groups to the same rising number in one
    transaction; readers read one key, then the other, with plain GETs on any node. Once
    a reader has seen number i in one group, the other group's key must be at least i:
    a key whose transaction is prepared in its group waits for the transaction to finish
    there (reads included), so no reader sees one group's half without the other's."""
    nodes = formed(trio)
    c = nodes[0].client()
    k = keys_by_group(c, "pair:", 1)
    a, b = k[0][0], k[2][0]
    c.set(a, 0)
    c.set(b, 0)
    stop = time.monotonic() + 6
    seen = {"writes": 0, "reads": 0}
    bad: list = []

    def writer():
        w = nodes[1].client()
        for i in range(1, 5000):
            if time.monotonic() > stop:
                return
            tx = w.pipeline(transaction=True)
            tx.set(a, i).set(b, i)
            tx.execute()
            seen["writes"] = i

    def reader(first, second, node):
        r = nodes[node].client()
        for _ in range(20000):
            if time.monotonic() > stop:
                return
            x = int(r.get(first))
            y = int(r.get(second))
            if y < x:
                bad.append((first, x, second, y))
            seen["reads"] += 1

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(a, b, i % 3)) for i in range(2)]
    threads += [threading.Thread(target=reader, args=(b, a, (i + 1) % 3)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:5]
    assert seen["writes"] >= 50 and seen["reads"] >= 200, seen


def test_multi_key_commands_and_scripts_across_groups_are_atomic(trio):
    nodes = formed(trio)
    c = nodes[1].client()
    k = keys_by_group(c, "s:", 3)
    a, b, z = k[0][0], k[1][0], k[2][0]
    # A session id change: RENAME to a key of another group keeps value and TTL.
    c.hset(a, mapping={"user": "7", "cart": "3"})
    c.expire(a, 100)
    assert c.rename(a, b)
    for n in nodes:
        r = n.client()
        assert r.exists(a) == 0
        assert r.hgetall(b) == {"user": "7", "cart": "3"}
        assert 95 <= r.ttl(b) <= 100
    c.set(z, "taken")
    assert c.renamenx(b, z) is False
    assert c.get(z) == "taken" and c.exists(b) == 1
    with pytest.raises(redis.exceptions.ResponseError, match="no such key"):
        c.rename(k[0][1], k[1][1])
    # MSET and MSETNX over every group: all or nothing.
    m = [k[0][1], k[1][1], k[2][1]]
    assert c.mset({m[0]: "1", m[1]: "2", m[2]: "3"})
    assert c.mget(*m) == ["1", "2", "3"]
    assert c.msetnx({m[0] + "n": "x", m[2]: "no"}) is False
    assert c.exists(m[0] + "n") == 0 and c.get(m[2]) == "3"
    assert c.msetnx({m[0] + "n": "x", m[1] + "n": "y"}) is True
    assert c.mget(m[0] + "n", m[1] + "n") == ["x", "y"]
    # Moves between groups.
    c.sadd(k[0][2], "m1", "m2")
    assert c.smove(k[0][2], k[1][2], "m1") is True
    assert c.smembers(k[0][2]) == {"m2"} and c.smembers(k[1][2]) == {"m1"}
    c.rpush(k[2][2], "e1", "e2")
    assert c.lmove(k[2][2], k[0][2] + "l", "LEFT", "RIGHT") == "e1"
    assert c.lrange(k[2][2], 0, -1) == ["e2"] and c.lrange(k[0][2] + "l", 0, -1) == ["e1"]
    assert c.copy(k[2][2], k[1][2] + "c")
    assert c.lrange(k[1][2] + "c", 0, -1) == ["e2"]
    # Inside MULTI, a command over several groups and a read of its result.
    tx = c.pipeline(transaction=True)
    tx.set(k[0][0], "moved").rename(k[0][0], k[2][0] + "r").get(k[2][0] + "r").incr(k[1][0] + "i")
    assert tx.execute() == [True, True, "moved", 1]
    assert nodes[0].client().get(k[2][0] + "r") == "moved"
    # A script over keys of several groups, run as one.
    script = c.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]) "
        "local v = redis.call('INCRBY', KEYS[2], 5) "
        "return {redis.call('GET', KEYS[1]), v}")
    assert script(keys=[k[0][1] + "L", k[2][1] + "L"], args=["v"]) == ["v", 5]
    assert script(keys=[k[0][1] + "L", k[2][1] + "L"], args=["w"]) == ["w", 10]
    for n in nodes:
        assert n.client().mget(k[0][1] + "L", k[2][1] + "L") == ["w", "10"]
    # A script error leaves nothing half done: the failing call stops it in every group.
    bad = c.register_script(
        "redis.call('SET', KEYS[1], 'x') return redis.call('INCR', KEYS[2])")
    c.set(k[2][1] + "bad", "not a number")
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        bad(keys=[k[0][1] + "bad", k[2][1] + "bad"])
    # (As in Redis, the write before the error stands: scripts are not rolled back.)
    assert c.get(k[0][1] + "bad") == "x"


def test_a_transaction_on_keys_not_moved_yet_pulls_them(four):
    """Slots moving to a new group with a drain throttled to a crawl: a transaction over
    keys still at their source (and keys of other groups) pulls them at PREPARE instead
    of waiting for the drain, and sees their values. (The keys are big, so that the
    eager push, which ranks by heat per byte, leaves them to the drain.)"""
    from test_reshard import reshard_slowly

    first = four[0]
    done = create(four[:3], "--replicas", "1", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = first.client()
    pad = "x" * 4000
    pipe = c.pipeline(transaction=False)
    for i in range(400):
        pipe.hset(f"{{t{i}}}:h", mapping={"n": i, "pad": pad})
    pipe.execute()
    c.set("counter", 0)
    moved = reshard_slowly(four, 2000)
    # The drain walks the slots in order: the keys of the last slots wait longest.
    ids = sorted((i for i in range(400) if moved(f"{{t{i}}}:h")),
                 key=lambda i: -c.cluster("keyslot", f"{{t{i}}}:h"))[:6]
    assert len(ids) == 6 and not moved("counter")
    for i in ids[:3]:
        # Partitioned: each command in one group.
        tx = c.pipeline(transaction=True)
        tx.hincrby(f"{{t{i}}}:h", "n", 1).incr("counter")
        assert tx.execute()[0] == i + 1
    for i in ids[3:]:
        # Replicated: a RENAME from a key not moved yet to a key of another group.
        to = f"{{counter}}:renamed{i}"
        assert c.rename(f"{{t{i}}}:h", to)
        assert c.hget(to, "n") == str(i)
        assert c.exists(f"{{t{i}}}:h") == 0
    assert c.get("counter") == "3"
    for node in four:
        node.client().config_set("kelvin-migration-drain-rate", 0)
