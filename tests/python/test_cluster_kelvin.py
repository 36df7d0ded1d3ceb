"""A three-node Kelvin group formed with `kelvin-cli cluster create`, used through plain
redis-py clients on every node. Kelvin only: Redis has no such command."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
import redis
import redis.cluster

from support import TARGET, ServerProcess, free_port, kelvin_bin, wait_for

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster admin")

SECRET = "pytest-secret"


def kelvin_cli() -> str:
    return os.path.join(os.path.dirname(kelvin_bin()), "kelvin-cli")


def raft_info(srv: ServerProcess) -> dict[str, str]:
    return {k: str(v) for k, v in srv.client().info("raft").items()}


def three_nodes(*port_options):
    yield from cluster_nodes(3, *port_options)


def cluster_nodes(count, *port_options, appendfsync="always", **options):
    """`count` cluster-mode nodes (with `options` on each). Every port (main, cluster, and
    each of `port_options`) is picked up front and distinct: a port picked for a node not
    started yet must not be handed to another node meanwhile."""
    taken = set()

    def fresh():
        while (p := free_port()) in taken:
            pass
        taken.add(p)
        return p
    nodes = [ServerProcess(cluster_port=fresh(), cluster_secret=SECRET, appendfsync=appendfsync,
                           **{name: fresh() for name in port_options}, **options)
             for _ in range(count)]
    for n in nodes:
        n.port = fresh()
    try:
        for n in nodes:
            n.start(keep_port=True)
        yield nodes
    finally:
        for n in nodes:
            n.cleanup()


@pytest.fixture
def trio():
    yield from three_nodes()


def create(nodes, *extra) -> subprocess.CompletedProcess:
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    return subprocess.run([kelvin_cli(), "cluster", "create", *addrs, *extra],
                          capture_output=True, text=True, timeout=60)


def test_cluster_create_forms_one_group_that_plain_clients_use_on_every_node(trio):
    if not os.path.exists(kelvin_cli()):
        pytest.fail(f"{kelvin_cli()} missing: build it with cargo build --release -p kelvin-client")
    bad = create(trio, "--replicas", "4", "--yes")
    assert bad.returncode != 0 and "give --replicas 3" in bad.stderr

    done = create(trio, "--replicas", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK] All 16384 slots covered." in done.stdout

    infos = [raft_info(n) for n in trio]
    wait_for(lambda: sum(raft_info(n)["raft_role"] == "leader" for n in trio) == 1)
    leader_ids = {i["raft_leader_id"] for i in (raft_info(n) for n in trio)}
    assert len(leader_ids) == 1, infos

    # A plain client on any node reads and writes: followers relay to the leader.
    for i, n in enumerate(trio):
        c = n.client()
        assert c.set(f"sess:{i}", f"user-{i}", ex=3600)
        assert c.hset(f"h:{i}", mapping={"a": "1", "b": "2"}) == 2
    for n in trio:
        c = n.client()
        for i in range(3):
            assert c.get(f"sess:{i}") == f"user-{i}"
            assert c.hgetall(f"h:{i}") == {"a": "1", "b": "2"}
        # MULTI/EXEC through a follower goes to the leader as a whole.
        p = c.pipeline(transaction=True)
        p.incr("counter").incr("counter")
        assert p.execute()[-1] in (2, 4, 6)

    # WAIT: on the leader, the other voters whose log holds every applied write (each
    # acknowledged write is on a majority already; the third catches up); a follower,
    # which does not see their progress, answers 0.
    leader = next(n for n in trio if raft_info(n)["raft_role"] == "leader")
    leader.client().set("w:k", "v")
    assert wait_for(lambda: leader.client().execute_command("WAIT", 2, 0) == 2)
    follower = next(n for n in trio if n is not leader)
    assert follower.client().execute_command("WAIT", 1, 0) == 0

    # Forming the same cluster again (a compose file's init service after a restart) has
    # nothing to do; forming another from some of its nodes is refused.
    again = create(trio, "--replicas", "3", "--yes")
    assert again.returncode == 0 and "already form a cluster" in again.stdout, again.stdout
    part = create(trio[:2], "--replicas", "2", "--yes")
    assert part.returncode != 0 and "not empty" in part.stderr, part.stdout + part.stderr


def test_writes_resume_after_the_leader_is_killed(trio):
    assert create(trio, "--replicas", "3", "--yes").returncode == 0
    wait_for(lambda: sum(raft_info(n)["raft_role"] == "leader" for n in trio) == 1)
    leader = next(n for n in trio if raft_info(n)["raft_role"] == "leader")
    rest = [n for n in trio if n is not leader]
    c = rest[0].client()
    for i in range(50):
        assert c.set(f"before:{i}", i)
    leader.proc.kill()
    leader.proc.wait(timeout=5)

    deadline = time.monotonic() + 15
    while True:
        try:
            if rest[0].client().set("after", "1"):
                break
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "no write accepted within 15 s of the kill"
        time.sleep(0.1)
    for n in rest:
        c = n.client()
        assert c.get("after") == "1"
        assert all(c.get(f"before:{i}") == str(i) for i in range(50))


@pytest.fixture
def trio_redirect():
    """Three nodes that also listen on a redirect port (Redis Cluster's -MOVED)."""
    yield from three_nodes("redirect_port")


def rport(n: ServerProcess) -> int:
    return int(n.options["redirect_port"])


def raw_reply(port: int, *args: str) -> str:
    """The first line of the reply to one command, as the server wrote it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"*{len(args)}\r\n".encode()
                  + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[0].decode()


def test_cluster_aware_and_plain_clients_on_every_node(trio_redirect):
    nodes = trio_redirect
    done = create(nodes, "--replicas", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: sum(raft_info(n)["raft_role"] == "leader" for n in nodes) == 1)
    leader = next(n for n in nodes if raft_info(n)["raft_role"] == "leader")
    followers = [n for n in nodes if n is not leader]

    # A follower knows the leader from its first message (as a Redis Cluster node reports
    # fail until gossip has converged).
    def knows_leader(n):
        info = n.client().execute_command("CLUSTER", "INFO")
        return "cluster_state:ok" in (info.decode() if isinstance(info, bytes) else info)
    wait_for(lambda: all(knows_leader(n) for n in nodes))

    # Every node advertises the redirect ports, the leader as master of all slots.
    for n in nodes:
        c = n.client()
        assert c.info("cluster")["cluster_enabled"] == 1
        slots = c.execute_command("CLUSTER", "SLOTS")
        assert len(slots) == 1 and slots[0][0] == 0 and slots[0][1] == 16383
        assert slots[0][2][1] == rport(leader)
        assert sorted(s[1] for s in slots[0][2:]) == sorted(rport(m) for m in nodes)
        info = c.execute_command("CLUSTER", "INFO")
        info = info.decode() if isinstance(info, bytes) else info
        assert "cluster_state:ok" in info and "cluster_slots_ok:16384" in info

    # A cluster-aware client, seeded with any main port, writes and reads everything.
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=followers[0].port,
                                    decode_responses=True)
    # redis-py's own parser reads CLUSTER NODES.
    parsed = rc.cluster_nodes()
    assert sorted(parsed) == sorted(f"127.0.0.1:{rport(n)}" for n in nodes)
    masters = [v for v in parsed.values() if "master" in v["flags"]]
    assert len(masters) == 1 and masters[0]["slots"] == [["0", "16383"]]
    assert all(v["master_id"] == masters[0]["node_id"]
               for v in parsed.values() if "slave" in v["flags"])
    for i in range(200):
        assert rc.set(f"user:{i}", f"v{i}")
    assert [rc.get(f"user:{i}") for i in range(200)] == [f"v{i}" for i in range(200)]
    assert rc.hset("{s1}:h", mapping={"a": "1"}) == 1
    assert rc.mget("{s1}:a", "{s1}:b") == [None, None]

    # On a follower's redirect port: MOVED to the leader, exactly as Redis writes it.
    slot = int(nodes[0].client().execute_command("CLUSTER", "KEYSLOT", "user:1"))
    assert raw_reply(rport(followers[0]), "GET", "user:1") == \
        f"-MOVED {slot} 127.0.0.1:{rport(leader)}"
    assert raw_reply(rport(followers[0]), "MGET", "a", "b") == \
        "-CROSSSLOT Keys in request don't hash to the same slot"
    assert raw_reply(rport(followers[0]), "ZUNION", "2", "a", "b") == \
        "-CROSSSLOT Keys in request don't hash to the same slot"
    assert raw_reply(rport(followers[0]), "SELECT", "1") == \
        "-ERR SELECT is not allowed in cluster mode"
    raw = redis.Redis(host="127.0.0.1", port=rport(followers[0]), decode_responses=True)
    # READONLY reads the follower's replica instead.
    assert raw.execute_command("READONLY")
    wait_for(lambda: raw.get("user:1") == "v1")
    # The leader's redirect port serves.
    assert redis.Redis(port=rport(leader), decode_responses=True).get("user:1") == "v1"

    # A plain client on any main port just works (the node relays to the leader).
    for n in nodes:
        c = n.client()
        assert c.get("user:7") == "v7"
        assert c.mget("user:1", "user:2") == ["v1", "v2"]

    # The slot key counts are this node's own.
    c = leader.client()
    assert c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) >= 1
    keys = c.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
    assert "user:1" in [k if isinstance(k, str) else k.decode() for k in keys]
    with pytest.raises(redis.exceptions.ResponseError, match="Invalid slot"):
        c.execute_command("CLUSTER", "COUNTKEYSINSLOT", 16384)
    with pytest.raises(redis.exceptions.ResponseError, match="Invalid slot or number of keys"):
        c.execute_command("CLUSTER", "GETKEYSINSLOT", 1, -1)

    # kelvin-cli cluster status: one group, its leader, all replicas up.
    st = subprocess.run([kelvin_cli(), "cluster", "status", f"127.0.0.1:{nodes[0].port}"],
                        capture_output=True, text=True, timeout=30)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "3 nodes, 1 group(s), 16384/16384 slots covered" in st.stdout
    row = next(line for line in st.stdout.splitlines() if line.startswith("0 "))
    assert f"127.0.0.1:{rport(leader)}" in row and "3/3 up" in row and row.endswith("ok")

    # Kill the leader: the cluster-aware client follows the new one, nothing is lost.
    leader.proc.kill()
    leader.proc.wait(timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            if rc.set("after", "1"):
                break
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "no write accepted within 20 s of the kill"
        time.sleep(0.2)
    assert [rc.get(f"user:{i}") for i in range(200)] == [f"v{i}" for i in range(200)]
    for n in followers:
        assert n.client().get("after") == "1"
    st = subprocess.run([kelvin_cli(), "cluster", "status", f"127.0.0.1:{followers[0].port}"],
                        capture_output=True, text=True, timeout=30)
    assert st.returncode == 1, st.stdout + st.stderr
    assert "2/3 up" in st.stdout and "degraded: replicas down" in st.stdout
    assert "unreachable" in st.stdout


def test_topology_commands_need_cluster_mode():
    n = ServerProcess().start()
    try:
        with pytest.raises(redis.exceptions.ResponseError,
                           match="This instance has cluster support disabled"):
            n.client().execute_command("CLUSTER", "SLOTS")
        assert n.client().info("cluster")["cluster_enabled"] == 0
    finally:
        n.cleanup()


def group_rows(status_out: str) -> dict[int, str]:
    """The group table of `kelvin-cli cluster status`, by group id."""
    rows = {}
    for line in status_out.splitlines():
        first = line.split(" ", 1)[0]
        if first.isdigit():
            rows[int(first)] = line
    return rows


def test_three_groups_spread_over_three_nodes(trio_redirect):
    nodes = trio_redirect
    done = create(nodes, "--replicas", "3", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK] All 16384 slots covered." in done.stdout

    def status(n):
        return subprocess.run([kelvin_cli(), "cluster", "status", f"127.0.0.1:{n.port}"],
                              capture_output=True, text=True, timeout=30)
    wait_for(lambda: status(nodes[0]).returncode == 0)
    rows = group_rows(status(nodes[0]).stdout)
    assert sorted(rows) == [0, 1, 2]
    # Each group's first replica stood first: one leader per node.
    leaders = {row.split()[2] for row in rows.values()}
    assert len(leaders) == 3, rows

    # Redis Cluster's view: three masters, each with its slot range.
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=nodes[1].port,
                                    decode_responses=True)
    masters = [v for v in rc.cluster_nodes().values() if "master" in v["flags"]]
    assert sorted(m["slots"][0][0] for m in masters) == ["0", "10923", "5462"]
    for i in range(300):
        assert rc.set(f"user:{i}", f"v{i}")
    assert [rc.get(f"user:{i}") for i in range(300)] == [f"v{i}" for i in range(300)]
    assert rc.mset_nonatomic({"{t}a": "1", "{t}b": "2"}) is not None
    assert rc.mget("{t}a", "{t}b") == ["1", "2"]

    # Plain clients on every main port reach every group, and multi-key commands over
    # several groups are split and merged (not atomically, as proxies do).
    keys = [f"user:{i}" for i in range(12)]
    for n in nodes:
        c = n.client()
        assert all(c.get(f"user:{i}") == f"v{i}" for i in range(0, 300, 7))
        assert c.mget("{t}a", "{t}b") == ["1", "2"]
        assert c.mget(*keys, "nosuchkey") == [f"v{i}" for i in range(12)] + [None]
        assert c.exists(*keys, "nosuchkey", "user:0") == 13
    c = nodes[2].client()
    assert c.mset({f"m:{i}": str(i) for i in range(20)})
    assert c.mget(*[f"m:{i}" for i in range(20)]) == [str(i) for i in range(20)]
    assert c.delete(*[f"m:{i}" for i in range(20)], "nosuchkey") == 20
    assert c.exists(*[f"m:{i}" for i in range(20)]) == 0
    pipe = c.pipeline(transaction=False)
    pipe.set("p1", "a").mget("p1", *keys[:3]).get("p1")
    assert pipe.execute() == [True, ["a", "v0", "v1", "v2"], "a"]
    # Other commands over keys in several groups run as transactions across them
    # (test_cross_group_tx.py).
    c.sadd(keys[0] + "s", "x")
    c.sadd(keys[1] + "s", "x", "y")
    assert c.sinterstore("dst", keys[0] + "s", keys[1] + "s") == 1
    assert c.smembers("dst") == {"x"}
    # numkeys commands too: their keys are found past `numkeys`.
    c.zadd("{z}1", {"a": 1})
    c.zadd("{z}2", {"a": 2, "b": 1})
    assert c.zunionstore("{z}dst", ["{z}1", "{z}2"]) == 2
    assert [tuple(x) for x in c.zunion(["{z}1", "{z}2"], withscores=True)] == [("b", 1.0), ("a", 3.0)]
    c.zadd(keys[5] + "z", {"c": 5})
    assert [tuple(x) for x in c.zunion(["{z}1", keys[5] + "z"], withscores=True)] == \
        [("a", 1.0), ("c", 5.0)]

    # A transaction on the main port runs as one unit where its group is led: here, or
    # relayed whole (queue and watch) to the leader.
    by_group = {}
    for i in range(300):
        s = int(c.execute_command("CLUSTER", "KEYSLOT", f"user:{i}"))
        by_group.setdefault(0 if s <= 5461 else 1 if s <= 10922 else 2, f"user:{i}")
    leader_of = {g: row.split()[2] for g, row in rows.items()}
    here = next(g for g, a in leader_of.items() if a == f"127.0.0.1:{rport(nodes[2])}")
    other = (here + 1) % 3
    tx = c.pipeline(transaction=True)
    tx.set(by_group[here], "tx").get(by_group[here])
    assert tx.execute() == [True, "tx"]
    with c.pipeline(transaction=True) as tx:
        tx.watch(by_group[here])
        tx.multi()
        tx.set(by_group[here], "watched")
        assert tx.execute() == [True]
    tx = c.pipeline(transaction=True)
    tx.set(by_group[other], "relayed").get(by_group[other]).incr("{%s}n" % by_group[other])
    assert tx.execute() == [True, "relayed", 1]
    with c.pipeline(transaction=True) as tx:
        tx.watch(by_group[other])
        tx.multi()
        tx.set(by_group[other], "watched")
        assert tx.execute() == [True]
    assert nodes[0].client().get(by_group[other]) == "watched"
    # The watch holds across the relay: a write from another node in between aborts it.
    with c.pipeline(transaction=True) as tx:
        tx.watch(by_group[other])
        assert nodes[0].client().set(by_group[other], "meanwhile")
        tx.multi()
        tx.set(by_group[other], "lost")
        with pytest.raises(redis.exceptions.WatchError):
            tx.execute()
    assert c.get(by_group[other]) == "meanwhile"
    c.set(by_group[other], f"v{by_group[other].split(':')[1]}")
    c.delete("{%s}n" % by_group[other])
    with pytest.raises(redis.exceptions.ResponseError, match="not a transaction"):
        c.execute_command("KELVIN.EXEC", "\x01garbage")
    # Watched in one group, written in another: a transaction across groups, by two-phase
    # commit (test_cross_group_tx.py).
    with c.pipeline(transaction=True) as tx:
        tx.watch(by_group[other])
        tx.multi()
        tx.set(by_group[here], "x")
        assert tx.execute() == [True]
    assert nodes[0].client().get(by_group[here]) == "x"
    c.set(by_group[here], f"v{by_group[here].split(':')[1]}")
    # MGET over several groups inside MULTI: one read of them all.
    tx = c.pipeline(transaction=True)
    tx.mget(*keys[:4])
    assert tx.execute() == [[f"v{i}" for i in range(4)]]

    # Kill the leader of group 1: groups 0 and 2 keep serving at once, group 1 within
    # seconds, nothing acknowledged is lost.
    g1_addr = rows[1].split()[2]
    victim = next(n for n in nodes if f"127.0.0.1:{rport(n)}" == g1_addr)
    survivors = [n for n in nodes if n is not victim]
    victim.proc.kill()
    victim.proc.wait(timeout=5)
    c = survivors[0].client()
    # Groups 0 and 2 lead elsewhere: their writes succeed on the first try.
    for g in (0, 2):
        assert c.set(by_group[g], "during"), g
    deadline = time.monotonic() + 20
    while True:
        try:
            if c.set(by_group[1], "after"):
                break
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "group 1 accepted no write within 20 s"
        time.sleep(0.2)
    changed = {by_group[0]: "during", by_group[1]: "after", by_group[2]: "during"}
    for n in survivors:
        c = n.client()
        for i in range(300):
            k = f"user:{i}"
            assert c.get(k) == changed.get(k, f"v{i}"), (n.port, k)
    st = status(survivors[0])
    assert st.returncode == 1 and "2/3 up" in st.stdout

    # The killed node comes back on its data and ports; group 1 is led elsewhere now
    # until `cluster rebalance` hands it back to its first replica: one leader per node.
    victim.start(keep_port=True)
    wait_for(lambda: status(victim).returncode == 0)
    assert group_rows(status(victim).stdout)[1].split()[2] != g1_addr
    rb = subprocess.run([kelvin_cli(), "cluster", "rebalance", f"127.0.0.1:{nodes[0].port}"],
                        capture_output=True, text=True, timeout=60)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert "Group 1: leadership" in rb.stdout
    rows = group_rows(status(victim).stdout)
    assert rows[1].split()[2] == g1_addr
    assert len({row.split()[2] for row in rows.values()}) == 3, rows
    assert victim.client().get(by_group[1]) == "after"


def test_groups_on_two_of_three_nodes_survive_a_full_restart(trio_redirect):
    nodes = trio_redirect
    done = create(nodes, "--replicas", "2", "--groups", "4", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = nodes[0].client()
    for i in range(100):
        assert c.set(f"k{i}", f"v{i}")

    def status():
        return subprocess.run([kelvin_cli(), "cluster", "status", f"127.0.0.1:{nodes[2].port}"],
                              capture_output=True, text=True, timeout=30)
    st = status()
    assert st.returncode == 0, st.stdout + st.stderr
    rows = group_rows(st.stdout)
    assert sorted(rows) == [0, 1, 2, 3]
    assert all("2/2 up" in r for r in rows.values()), rows
    # Every node replicates the groups the plan gave it, and only those.
    for n in nodes:
        hosted = n.client().execute_command("CLUSTER", "KELVIN-GROUPS")
        assert len(hosted) in (2, 3), hosted

    # Stop every node, start them again: cluster.conf brings the groups back.
    for n in nodes:
        n.proc.kill()
        n.proc.wait(timeout=5)
    for n in nodes:
        n.start(keep_port=True)
    wait_for(lambda: status().returncode == 0)
    for n in nodes:
        c = n.client()
        assert [c.get(f"k{i}") for i in range(100)] == [f"v{i}" for i in range(100)]


def test_keyless_commands_cover_every_group_on_the_main_port(trio_redirect):
    """DBSIZE, KEYS, SCAN, RANDOMKEY, FLUSHDB and FLUSHALL on a plain client's node answer
    for the whole keyspace, as through a proxy, whichever groups that node leads."""
    nodes = trio_redirect
    done = create(nodes, "--replicas", "2", "--groups", "4", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {f"sess:{i}" for i in range(500)} | {f"other:{i}" for i in range(20)}
    nodes[0].client().mset({k: "x" for k in expected})
    for n in nodes:
        c = n.client()
        assert c.dbsize() == len(expected)
        assert set(c.keys("*")) == expected and len(c.keys("*")) == len(expected)
        assert set(c.keys("other:*")) == {k for k in expected if k.startswith("other:")}
        seen = list(c.scan_iter(count=37))
        assert set(seen) == expected
        assert set(c.scan_iter(match="other:*", count=1000)) == {
            k for k in expected if k.startswith("other:")}
        assert set(c.scan_iter(_type="string")) == expected
        assert c.randomkey() in expected
        pipe = c.pipeline(transaction=False)
        pipe.set("sess:new", "y").dbsize().get("sess:new").delete("sess:new").dbsize()
        assert pipe.execute() == [True, len(expected) + 1, "y", 1, len(expected)]
    c3 = nodes[0].client(protocol=3)
    assert c3.dbsize() == len(expected) and set(c3.keys("*")) == expected
    assert set(c3.scan_iter(count=50)) == expected
    # Each group alone still answers for itself (what KELVIN.ON runs).
    c = nodes[1].client()
    per_group = [c.execute_command("KELVIN.ON", str(g), "DBSIZE") for g in range(4)]
    assert sum(per_group) == len(expected) and all(n > 0 for n in per_group)
    with pytest.raises(redis.exceptions.ResponseError, match="keyless"):
        c.execute_command("KELVIN.ON", "0", "GET", "sess:1")
    with pytest.raises(redis.exceptions.ResponseError, match="no such group"):
        c.execute_command("KELVIN.ON", "9", "DBSIZE")
    assert nodes[2].client().flushall()
    for n in nodes:
        assert n.client().dbsize() == 0
    assert nodes[0].client().randomkey() is None


def test_three_uneven_groups_scan_swapdb_relay_hops_and_big_values(trio):
    """Regressions found with 3 groups (slot ranges that do not end at multiples of
    1024): a full SCAN saw 28,129 of 30,000 keys; SWAPDB swapped one group only; two
    nodes whose maps disagree could relay a request back and forth without end; an 80 MB
    SET stalled its group and moved its leader instead of being refused."""
    nodes = trio
    done = create(nodes, "--replicas", "3", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = nodes[1].client()
    keys = [f"k:{i}" for i in range(30000)]
    for i in range(0, len(keys), 1000):
        assert c.mset({k: "v" for k in keys[i:i + 1000]})
    assert c.dbsize() == len(keys)
    seen = list(c.scan_iter(count=100))
    assert set(seen) == set(keys), f"SCAN missed {len(set(keys) - set(seen))} keys"
    assert len(seen) == len(keys)

    # SWAPDB swaps the databases of every group.
    c1 = nodes[2].client(db=1)
    more = [f"other:{i}" for i in range(300)]
    assert c1.mset({k: "w" for k in more})
    assert nodes[0].client().swapdb(0, 1)
    assert set(nodes[1].client(db=0).keys("*")) == set(more)
    assert nodes[2].client(db=1).dbsize() == len(keys)

    # A relay connection says how many times its requests were relayed: past
    # MAX_RELAY_HOPS (4) a node that does not lead the key's group refuses to relay
    # again (TRYAGAIN), one that leads it serves the request.
    # Which node leads which slots depends on the elections (under load, one node may
    # lead every group, or none): the served case on a node that leads some slot, the
    # refused case on one that does not lead them all.
    led = {}
    for start, end, master, *_ in nodes[0].client().execute_command("CLUSTER", "SLOTS"):
        led.setdefault(int(master[1]), set()).update(range(int(start), int(end) + 1))
    plain = nodes[0].client()

    def key_where(slots, inside):
        for i in range(10000):
            k = f"hop:{i}"
            if (plain.execute_command("CLUSTER", "KEYSLOT", k) in slots) == inside:
                return k
        raise AssertionError(f"no key {'in' if inside else 'outside'} {len(slots)} slots")

    leader = next(n for n in nodes if led.get(n.port))
    follower = next(n for n in nodes if len(led.get(n.port, ())) < 16384)
    served = leader.client(single_connection_client=True)
    assert served.execute_command("KELVIN.RELAYED", 4, 0) == "OK"
    assert served.set(key_where(led[leader.port], True), "1")
    refused = follower.client(single_connection_client=True)
    assert refused.execute_command("KELVIN.RELAYED", 4, 0) == "OK"
    with pytest.raises(redis.exceptions.ResponseError, match="relayed from node to node"):
        refused.set(key_where(led.get(follower.port, set()), False), "1")

    # A write over the log's entry limit is refused at once, naming the limit, and the
    # group keeps its leader; a large one under it is replicated.
    leaders = group_rows(subprocess.run(
        [kelvin_cli(), "cluster", "status", f"127.0.0.1:{nodes[0].port}"],
        capture_output=True, text=True, timeout=30).stdout)
    big = nodes[1].client(socket_timeout=60)
    with pytest.raises(redis.exceptions.ResponseError, match="too large.*61865984 bytes"):
        big.set("big", b"x" * (80 << 20))
    assert big.set("big", b"y" * (20 << 20))
    assert nodes[2].client(socket_timeout=60, decode_responses=False).strlen("big") == 20 << 20
    after = group_rows(subprocess.run(
        [kelvin_cli(), "cluster", "status", f"127.0.0.1:{nodes[0].port}"],
        capture_output=True, text=True, timeout=30).stdout)
    assert [r.split()[2] for r in after.values()] == [r.split()[2] for r in leaders.values()]


def test_heat_profile_shows_the_hottest_keys_per_group(trio):
    """The profiler: reads on the leader heat a key up, `kelvin-cli cluster heat` lists
    it first in its group, INFO heat counts every key, and with the profiler switched
    off (kelvin-profile-keys no) accesses no longer raise a key's counter."""
    nodes = trio
    done = create(nodes, "--replicas", "3", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = nodes[0].client()
    keys = [f"sess:{i}" for i in range(3000)]
    for i in range(0, len(keys), 500):
        assert c.mset({k: "v" * 100 for k in keys[i:i + 500]})
    pipe = c.pipeline(transaction=False)
    for _ in range(3000):
        pipe.get("sess:42")
    assert pipe.execute()[-1] == "v" * 100
    out = subprocess.run([kelvin_cli(), "cluster", "heat", f"127.0.0.1:{nodes[1].port}",
                          "--top", "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    blocks = out.stdout.split(">>> group ")[1:]
    assert len(blocks) == 3, out.stdout
    assert sum(int(b.split(": ", 1)[1].split(" keys")[0]) for b in blocks) == len(keys)
    hot = next(b for b in blocks if "sess:42 " in b)
    first_key_row = [line for line in hot.splitlines() if line.strip().startswith("0 ")][0]
    assert "sess:42" in first_key_row, hot
    freq = c.object("freq", "sess:42")
    assert freq > 5
    info = {}
    for n in nodes:
        text = n.client().execute_command("INFO", "heat")
        info[n.port] = text
        assert text.get("profile_keys") == "yes", text
    total = sum(int(v["keys"]) for k, v in next(iter(info.values())).items()
                if k.startswith("group"))
    assert total == len(keys)

    for n in nodes:
        assert n.client().config_set("kelvin-profile-keys", "no")
    assert c.config_get("kelvin-profile-keys") == {"kelvin-profile-keys": "no"}
    before = c.object("freq", "sess:7")
    pipe = c.pipeline(transaction=False)
    for _ in range(3000):
        pipe.get("sess:7")
    pipe.execute()
    assert c.object("freq", "sess:7") <= before
    with pytest.raises(redis.exceptions.ResponseError):
        c.config_set("kelvin-profile-keys", "maybe")
    for n in nodes:
        assert n.client().config_set("kelvin-profile-keys", "yes")


def set_topology(nodes, change):
    """Applies `change(text) -> text` to the topology through the meta leader (a
    compare-and-set on its epoch) and waits until every node routes by the result."""
    text = nodes[0].client().execute_command("CLUSTER", "KELVIN-TOPOLOGY")
    epoch = int(next(line.split()[1] for line in text.splitlines() if line.startswith("epoch ")))
    new = change(text).replace(f"epoch {epoch}\n", f"epoch {epoch + 1}\n")
    for n in nodes:
        try:
            n.client().execute_command("CLUSTER", "KELVIN-TOPOLOGY", "SET", epoch, new)
            break
        except redis.exceptions.ResponseError as e:
            assert "does not lead" in str(e), e
    else:
        pytest.fail("no meta leader")
    wait_for(lambda: all(f"epoch {epoch + 1}\n" in m.client().execute_command(
        "CLUSTER", "KELVIN-TOPOLOGY") for m in nodes))
    return new


def test_migration_steps_move_a_slot_between_groups_by_hand(trio):
    """The building blocks of live resharding on a real cluster, driven by hand as the
    phase driver will: the target imports, the source seals (after which it applies no
    write for the slot), the target records the seal's proof, the key is pulled from the
    source and written at the target, the topology hands the slot over with a migrate
    line, and both sides finish."""
    nodes = trio
    done = create(nodes, "--replicas", "3", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = nodes[1].client()
    key, slot = "{mv}k", None
    slot = c.cluster("keyslot", key)
    assert c.set(key, "before", ex=3600)
    assert c.set("{mv}gone", "x")
    text = c.execute_command("CLUSTER", "KELVIN-TOPOLOGY")
    groups = {}
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "group":
            for r in f[2].split(","):
                a, _, b = r.partition("-")
                groups[int(f[1])] = groups.get(int(f[1]), []) + [(int(a), int(b or a))]
    src = next(g for g, rs in groups.items() if any(a <= slot <= b for a, b in rs))
    dst = (src + 1) % 3

    def on(group, *cmd):
        return c.execute_command("KELVIN.ON", group, *cmd)

    assert on(dst, "KELVIN.MIGRATE", "IMPORT", 7, src, slot) == "OK"
    with pytest.raises(redis.exceptions.ResponseError, match="already in migration 7"):
        on(dst, "KELVIN.MIGRATE", "IMPORT", 8, src, slot)
    index, log_ms = on(src, "KELVIN.MIGRATE", "SEAL", 7, dst, slot)
    assert index > 0 and log_ms > 0
    # Sealed: the source applies no write for the slot any more (the node still routes
    # to it by the old map: the answer is TRYAGAIN, nothing written).
    with pytest.raises(redis.exceptions.ResponseError, match="moved to another group"):
        c.set(key, "lost")
    assert on(dst, "KELVIN.MIGRATE", "PROOF", 7, index, log_ms) == "OK"
    # Pull from the source, write at the target.
    rb = nodes[2].client(decode_responses=False)
    pulled = rb.execute_command("KELVIN.ON", src, "KELVIN.MIGRATE-PULL", 7, 0, key, "{mv}gone",
                                "{mv}none")
    assert pulled[2] is None and pulled[0][0] > 0
    args = []
    for k, p in zip([key, "{mv}gone"], pulled):
        args += [k, p[0], p[1]]
    assert rb.execute_command("KELVIN.ON", dst, "KELVIN.MIGRATE", "KEYS", 7, 0, *args) == 2
    assert rb.execute_command("KELVIN.ON", dst, "KELVIN.MIGRATE", "KEYS", 7, 0, *args) == 0

    # Hand the slot over in the topology, with its migrate line.
    def handover(text, phase="handover"):
        out = []
        for line in text.splitlines():
            f = line.split()
            if f and f[0] == "group" and int(f[1]) in (src, dst):
                ranges = groups[int(f[1])]
                if int(f[1]) == src:
                    ranges = [r for a, b in ranges for r in ((a, slot - 1), (slot + 1, b))
                              if r[0] <= r[1]]
                else:
                    ranges = sorted(ranges + [(slot, slot)])
                f[2] = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges) or "-"
                line = " ".join(f)
            out.append(line)
        out.append(f"migrate 7 {src} {dst} {slot} {phase}")
        return "\n".join(out) + "\n"

    moved = set_topology(nodes, handover)
    for n in nodes:
        cn = n.client()
        assert cn.get(key) == "before" and 3000 < cn.ttl(key) <= 3600
        assert cn.get("{mv}gone") == "x"
    assert c.set(key, "after")
    # Handed over: the phase driver on the target's leader drains and finishes both
    # sides, then takes the migrate line out.
    assert wait_for(lambda: not [x for x in c.execute_command("CLUSTER", "KELVIN-TOPOLOGY")
                                 .splitlines() if x.startswith("migrate ")], timeout=10)
    for group in (dst, src):
        with pytest.raises(redis.exceptions.ResponseError, match="no migration 7 here"):
            on(group, "KELVIN.MIGRATE", "FINISH", 7)
    # A finished migration never starts over (a driver whose topology lags behind would
    # import again at the target, seal again at the source).
    with pytest.raises(redis.exceptions.ResponseError,
                       match="^migration 7 is finished here$"):
        on(dst, "KELVIN.MIGRATE", "IMPORT", 7, src, slot)
    with pytest.raises(redis.exceptions.ResponseError,
                       match="^migration 7 is finished here$"):
        on(src, "KELVIN.MIGRATE", "SEAL", 7, dst, slot)
    assert on(src, "DBSIZE") + on(dst, "DBSIZE") == c.dbsize() == 2
    for n in nodes:
        assert n.client().get(key) == "after"
    assert moved


def test_publish_reaches_subscribers_on_every_node(trio):
    """As in Redis Cluster, a PUBLISH on any node reaches the subscribers of every node;
    its count is that node's own receivers."""
    nodes = trio
    done = create(nodes, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    subs = []
    for n in nodes:
        p = n.client().pubsub()
        p.subscribe("events")
        assert p.get_message(timeout=5)["type"] == "subscribe"
        subs.append(p)
    pub = nodes[2].client()
    assert pub.publish("events", "hello") == 1
    for p in subs:
        msg = p.get_message(timeout=5)
        assert msg is not None and msg["data"] == "hello", msg
    assert nodes[0].client().publish("elsewhere", "x") == 0
    for p in subs:
        p.close()
