"""Live resharding under faults at each phase boundary, made deterministic by the server's
fail points (`--features failpoints`, CLUSTER KELVIN-FAILPOINT):

- the node driving the migrations (the new group's leader) ends (abort, as a SIGKILL)
  right at each boundary of the driver, then restarts: the move completes;
- the driver waits at a boundary while a source group's leader is SIGKILLed and
  restarted: the move completes;
- the kelvin-cli process that asked for the move is killed: the move completes.

Meanwhile a client keeps writing, deleting and reading keys of the moving slots. Every
read must return a value the key may hold (the last acknowledged write, or one whose
reply was lost), and afterwards so must every key through every node; no deleted key comes
back, TTLs travel, the new node owns its 4096 slots.

Runs in scripts/test against the fail point build (the fault tests' static binary, with
KELVIN_REQUIRE_FAILPOINTS=1, where a binary without fail points fails the run); skipped
in the plain suite, whose binary has none."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import redis

from support import TARGET, ServerProcess
from test_cluster_kelvin import create, kelvin_cli
from test_cluster_membership import addr, cli, four, topology  # noqa: F401 (a fixture)
from test_reshard import kill_leader_and_restart, migrating, owners

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own resharding")

# The driver's phase boundaries, in order (server/src/failpoint.rs MIGRATE_PHASES).
PHASES = [
    "migrate-after-plan",
    "migrate-after-import",
    "migrate-after-seal",
    "migrate-after-proof",
    "migrate-after-handover",
    "migrate-mid-drain",
    "migrate-after-drain",
    "migrate-after-finish-target",
    "migrate-after-finish",
]
KEYS = 1500
VALUE = "x" * 200


def require_failpoints(n: ServerProcess):
    try:
        n.client().execute_command("CLUSTER", "KELVIN-FAILPOINT-HITS", PHASES[0])
    except redis.exceptions.ResponseError as e:
        if os.environ.get("KELVIN_REQUIRE_FAILPOINTS") == "1":
            pytest.fail(f"{n.command()[0]} has no fail points: {e}")
        pytest.skip("this kelvin-server has no fail points (scripts/test runs these on one)")
    # The server's phases are these (its error for an unknown one lists them): a phase
    # added there and not here would go untested.
    with pytest.raises(redis.exceptions.ResponseError) as e:
        n.client().execute_command("CLUSTER", "KELVIN-FAILPOINT", "migrate-none", "off")
    assert [p for p in str(e.value).rstrip(")").split(", ") if p.startswith("migrate-")] \
        == PHASES, str(e.value)


def start_reshard(first: ServerProcess, new: ServerProcess) -> subprocess.Popen:
    """`cluster reshard` of 4096 slots to `new`, left running."""
    return subprocess.Popen(
        [kelvin_cli(), "cluster", "reshard", addr(first), "--slots", "4096", "--to", addr(new),
         "--yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def failpoint(n: ServerProcess, name: str, actions: str):
    assert n.client().execute_command("CLUSTER", "KELVIN-FAILPOINT", name, actions)


def hits(n: ServerProcess, name: str) -> int:
    return n.client().execute_command("CLUSTER", "KELVIN-FAILPOINT-HITS", name)


def prepare(four, replicas: str):
    """Three nodes, three groups, KEYS keys (a fifth with TTLs, every 25th deleted), a
    4th node added; drains throttled to small pages so that a drain has several."""
    first, second, third, new = four
    done = create([first, second, third], "--replicas", replicas, "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    c = first.client()
    pipe = c.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.set(f"k:{i}", f"v{i}{VALUE}", ex=3600 if i % 5 == 0 else None)
    pipe.execute()
    gone = [f"k:{i}" for i in range(0, KEYS, 25)]
    assert c.delete(*gone) == len(gone)
    out = cli("add-node", addr(new), addr(first), "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    for node in four:
        node.client().config_set("kelvin-migration-drain-rate", 30000)
    return gone


class Registers:
    """One client writing, deleting and reading keys k:1..k:299 (not the deleted ones)
    on a plain connection, bounded in count and time. Per key it keeps the values the key
    may hold: the last acknowledged write or delete, plus any sent after it whose reply
    was lost. A read outside them is a wrong answer."""

    def __init__(self, port: int):
        self.possible = {f"k:{i}": {f"v{i}{VALUE}"} for i in range(1, 300) if i % 25}
        self.wrong: list[str] = []
        self.errors = 0
        self.ok = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(port,))
        self.thread.start()

    def _run(self, port):
        client = redis.Redis(port=port, socket_timeout=5, decode_responses=True)
        keys = sorted(self.possible)
        deadline = time.monotonic() + 150
        i = 0
        while not self.stop.is_set() and i < 30000 and time.monotonic() < deadline:
            key = keys[i % len(keys)]
            op = (i // len(keys)) % 3
            try:
                if op == 0:
                    got = client.get(key)
                    if got not in self.possible[key]:
                        self.wrong.append(f"GET {key} = {got!r}, may be {self.possible[key]!r}")
                    self.possible[key] = {got}
                elif op == 1 or i % 7:
                    value = f"w{i}"
                    self.possible[key].add(value)
                    client.set(key, value)
                    self.possible[key] = {value}
                else:
                    self.possible[key].add(None)
                    client.delete(key)
                    self.possible[key] = {None}
                self.ok += 1
            except (redis.exceptions.RedisError, OSError):
                self.errors += 1
                time.sleep(0.02)
            i += 1
        client.close()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def settle_and_check(four, gone: list[str], writer: Registers):
    """Unthrottled drain to the end, then every check of the module's docstring."""
    first = four[0]
    for node in four:
        node.client().config_set("kelvin-migration-drain-rate", 0)
    out = cli("reshard", addr(first), "--wait-drained", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # Enough of the client's operations ran while the slots moved, and some more after.
    during = writer.ok
    assert during >= 50, (during, writer.errors)
    deadline = time.monotonic() + 60
    while writer.ok < during + 200 and writer.thread.is_alive():
        assert time.monotonic() < deadline, (writer.ok, writer.errors)
        time.sleep(0.05)
    writer.finish()
    assert writer.wrong == [], writer.wrong[:10]
    assert owners(first) == {0: 4096, 1: 4096, 2: 4096, 3: 4096}, owners(first)
    for n in four:
        assert migrating(n) == 0, topology(n)
    expected = {f"k:{i}": {f"v{i}{VALUE}"} for i in range(KEYS) if i % 25}
    expected.update(writer.possible)
    keys = sorted(expected)
    for n in four:
        c = n.client()
        for start in range(0, len(keys), 250):
            chunk = keys[start:start + 250]
            for key, got in zip(chunk, c.mget(chunk)):
                assert got in expected[key], (n.port, key, got, expected[key])
        assert c.exists(*gone) == 0, n.port
        for i in (i for i in range(300, KEYS, 37) if i % 25):
            ttl = c.ttl(f"k:{i}")
            assert (0 < ttl <= 3600) if i % 5 == 0 else ttl == -1, (n.port, i, ttl)
    present = sum(1 for v in (first.client().mget(keys)) if v is not None)
    assert first.client().dbsize() == present


@pytest.mark.parametrize("phase", PHASES)
def test_the_driving_node_dies_at_each_phase_boundary(four, phase):
    first, second, third, new = four
    require_failpoints(new)
    gone = prepare(four, "1")
    # The new node leads the new group, whose leader drives the move: it ends at `phase`.
    failpoint(new, phase, "return(abort)")
    writer = Registers(second.port)
    reshard = start_reshard(first, new)
    try:
        try:
            code = new.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver never reached {phase}: the fault would be a no-op")
        assert code == -signal.SIGABRT, (code, new.log_tail())
        time.sleep(0.5)
        new.start(keep_port=True)
        out, err = reshard.communicate(timeout=180)
        assert reshard.returncode == 0, out + err
        settle_and_check(four, gone, writer)
    finally:
        writer.stop.set()
        reshard.kill()


HOLD_PHASES = ["migrate-after-seal", "migrate-after-proof", "migrate-mid-drain",
               "migrate-after-drain", "migrate-after-finish-target"]


@pytest.mark.parametrize("phase", HOLD_PHASES)
def test_a_source_leader_killed_while_the_move_waits_at_a_phase(four, phase):
    """--replicas 3: the driver (wherever the new group's leader is) waits at `phase`;
    group 0's leader, a source, is SIGKILLed and restarted; then the driver goes on."""
    first, second, third, new = four
    require_failpoints(new)
    gone = prepare(four, "3")
    for n in four:
        failpoint(n, phase, "return(hold)")
    writer = Registers(second.port)
    reshard = start_reshard(first, new)
    try:
        deadline = time.monotonic() + 120
        while not any(hits(n, phase) for n in four):
            assert time.monotonic() < deadline, f"the driver never reached {phase}"
            time.sleep(0.05)
        assert migrating(first) > 0
        kill_leader_and_restart([first, second, third], 0)
        for n in four:
            failpoint(n, phase, "off")
        out, err = reshard.communicate(timeout=180)
        assert reshard.returncode == 0, out + err
        settle_and_check(four, gone, writer)
    finally:
        writer.stop.set()
        reshard.kill()


def test_the_cli_killed_after_asking_for_the_move(four):
    """kelvin-cli only asks for the move (the topology's migrate lines); the cluster's own
    driver carries it out, so killing the CLI at once changes nothing."""
    first, second, third, new = four
    gone = prepare(four, "1")
    writer = Registers(third.port)
    reshard = start_reshard(first, new)
    deadline = time.monotonic() + 60
    while migrating(first) == 0:
        assert reshard.poll() is None, reshard.communicate()
        assert time.monotonic() < deadline, "the move was never asked for"
        time.sleep(0.01)
    reshard.kill()
    reshard.wait(timeout=10)
    settle_and_check(four, gone, writer)
