"""Live resharding (`kelvin-cli cluster reshard`): slots move to a new node's group while
a RedisCluster client (redirect ports) and plain clients (main ports) keep reading and
writing. The handover comes first; keys not moved yet fault in from the old owner on
first touch; a drain moves the rest. No client may see an error, every acknowledged
write must be there afterwards, nothing deleted may come back, TTLs travel with keys.
Kelvin only: Redis has no such command."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
import redis
import redis.cluster

from support import TARGET, ServerProcess, wait_for
from test_cluster_kelvin import cluster_nodes, create, kelvin_cli, rport

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster admin")


@pytest.fixture
def four():
    yield from cluster_nodes(4, "redirect_port")


def cli(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([kelvin_cli(), "cluster", *args], capture_output=True, text=True,
                          timeout=timeout)


def addr(n: ServerProcess) -> str:
    return f"127.0.0.1:{n.port}"


def topology(n: ServerProcess) -> str:
    return n.client().execute_command("CLUSTER", "KELVIN-TOPOLOGY")


def owners(n: ServerProcess) -> dict[int, int]:
    """Slots per group, from the topology."""
    out = {}
    for line in topology(n).splitlines():
        f = line.split()
        if f and f[0] == "group":
            count = 0
            for r in f[2].split(","):
                if r == "-":
                    continue
                a, _, b = r.partition("-")
                count += int(b or a) - int(a) + 1
            out[int(f[1])] = count
    return out


class Traffic:
    """Clients reading and writing while slots move (bounded in count and time). Each
    remembers the last value acknowledged per key, and every error it saw."""

    def __init__(self, preloaded: dict[str, str], cluster_port: int, plain_port: int):
        self.expected = dict(preloaded)
        self.deleted: set[str] = set()
        self.errors: list[str] = []
        self.ops = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        keys = sorted(preloaded)
        self.threads = [
            threading.Thread(target=self._run, args=(
                lambda: redis.cluster.RedisCluster(host="127.0.0.1", port=cluster_port,
                                                   socket_timeout=15),
                "rc", keys[0::2])),
            threading.Thread(target=self._run, args=(
                lambda: redis.Redis(port=plain_port, socket_timeout=15), "plain", keys[1::2])),
        ]
        for t in self.threads:
            t.start()

    def _run(self, connect, name, keys):
        client = connect()
        deadline = time.monotonic() + 120
        i = 0
        while not self.stop.is_set() and i < 50000 and time.monotonic() < deadline:
            key = keys[i % len(keys)]
            try:
                op = i % 4
                if op == 0:
                    # Read-your-writes on an old key (a fault-in if it has not moved).
                    got = client.get(key)
                    want = self.expected.get(key)
                    if got != (want.encode() if want is not None else None):
                        self.errors.append(f"{name}: GET {key} = {got!r}, want {want!r}")
                elif op == 1:
                    value = f"{name}-{i}"
                    if client.set(key, value):
                        with self.lock:
                            self.expected[key] = value
                elif op == 2:
                    new = f"{name}:new:{i}"
                    if client.set(new, new):
                        with self.lock:
                            self.expected[new] = new
                else:
                    # APPEND depends on what is there: a pull first, never a blind write.
                    n = client.append(key, "+")
                    with self.lock:
                        self.expected[key] = self.expected[key] + "+"
                    if n != len(self.expected[key]):
                        self.errors.append(f"{name}: APPEND {key} -> {n}")
                self.ops += 1
            except (redis.exceptions.RedisError, OSError) as e:
                self.errors.append(f"{name}: {key}: {e!r}")
                time.sleep(0.05)
            i += 1
        client.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_reshard_to_a_new_node_while_clients_read_and_write(four):
    first, second, third, new = four
    done = create([first, second, third], "--replicas", "1", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = second.client()
    # Sessions of 1 KB, some with TTLs, some to be deleted during the move.
    preloaded = {}
    pipe = c.pipeline(transaction=False)
    for i in range(3000):
        key, value = f"sess:{i}", f"{i}:" + "x" * 1000
        preloaded[key] = value
        pipe.set(key, value, ex=3600 if i % 3 == 0 else None)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    for i in range(100):
        c.set(f"gone:{i}", "x")
    out = cli("add-node", addr(new), addr(first), "--yes")
    assert out.returncode == 0, out.stdout + out.stderr

    traffic = Traffic({k: v for k, v in list(preloaded.items())[:1000]}, rport(first),
                      third.port)
    try:
        time.sleep(0.5)
        out = cli("reshard", addr(first), "--slots", "4096", "--to", addr(new), "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "[OK] Handover" in out.stdout, out.stdout
        print(out.stdout)
        # The lazy phase: keys not moved yet are served from the new owner after a pull.
        for i in range(1000, 3000, 97):
            key = f"sess:{i}"
            assert c.get(key) == preloaded[key], key
            if i % 3 == 0:
                assert 3000 < c.ttl(key) <= 3600, key
            else:
                assert c.ttl(key) == -1, key
        assert c.delete(*[f"gone:{i}" for i in range(100)]) == 100
        time.sleep(1)
        out = cli("reshard", addr(first), "--wait-drained", timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        traffic.finish()
    assert traffic.ops > 500, (traffic.ops, traffic.errors[:5])
    assert traffic.errors == [], traffic.errors[:10]

    # The new node's group owns 4096 slots, and the topology has no migration left.
    slots = owners(first)
    # Taken from the three groups in proportion: each is left with a quarter too.
    assert slots == {0: 4096, 1: 4096, 2: 4096, 3: 4096}, slots
    assert not [x for x in topology(first).splitlines() if x.startswith("migrate ")]

    # Every acknowledged value, through every node; nothing deleted came back.
    expected = dict(preloaded)
    expected.update(traffic.expected)
    for n in four:
        cn = n.client()
        keys = sorted(expected)
        for start in range(0, len(keys), 200):
            chunk = keys[start:start + 200]
            assert cn.mget(chunk) == [expected[k] for k in chunk], f"node {n.port}"
        assert cn.exists(*[f"gone:{i}" for i in range(100)]) == 0
    assert c.dbsize() == len(expected)
    # The new group holds its keys itself (drained, the sources dropped theirs).
    held = new.client().execute_command("KELVIN.ON", 3, "DBSIZE")
    assert held > 0.2 * len(expected), held
