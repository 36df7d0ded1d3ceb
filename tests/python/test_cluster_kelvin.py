"""A three-node Kelvin group formed with `kelvin-cli cluster create`, used through plain
redis-py clients on every node. Kelvin only: Redis has no such command."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import redis

from support import TARGET, ServerProcess, free_port, kelvin_bin, wait_for

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster admin")

SECRET = "pytest-secret"


def kelvin_cli() -> str:
    return os.path.join(os.path.dirname(kelvin_bin()), "kelvin-cli")


def raft_info(srv: ServerProcess) -> dict[str, str]:
    return {k: str(v) for k, v in srv.client().info("raft").items()}


@pytest.fixture
def trio():
    nodes = [ServerProcess(cluster_port=free_port(), cluster_secret=SECRET,
                           appendfsync="always") for _ in range(3)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.cleanup()


def create(nodes, *extra) -> subprocess.CompletedProcess:
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    return subprocess.run([kelvin_cli(), "cluster", "create", *addrs, *extra],
                          capture_output=True, text=True, timeout=60)


def test_cluster_create_forms_one_group_that_plain_clients_use_on_every_node(trio):
    if not os.path.exists(kelvin_cli()):
        pytest.fail(f"{kelvin_cli()} missing: build it with cargo build --release -p kelvin-client")
    bad = create(trio, "--replicas", "2", "--yes")
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

    # Forming again is refused: the nodes already belong to a group.
    again = create(trio, "--replicas", "3", "--yes")
    assert again.returncode != 0 and "not empty" in again.stderr


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
