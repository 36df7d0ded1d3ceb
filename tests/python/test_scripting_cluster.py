"""Scripts on a three-node Kelvin group: a script is one log entry, applied whole on every
replica, so kill -9 in the middle of a write-heavy script leaves all of its writes or none
after the restart, the same on every replica, and a script's writes survive a leader
failover as one unit. Kelvin only (Redis has no such group)."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from support import TARGET, RawConn, wait_for
from test_cluster_kelvin import create, raft_info, three_nodes

pytestmark = [
    pytest.mark.scripting,
    pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own 3-node group"),
]

# HSETs field 1..ARGV[1] of KEYS[1], then marks KEYS[2] (same slot: one hash tag).
WRITE_HEAVY = """
local spin = tonumber(ARGV[2] or '0')
for i = 1, tonumber(ARGV[1]) do
  redis.call('HSET', KEYS[1], i, i)
  for _ = 1, spin do end
end
redis.call('SET', KEYS[2], 'done')
return redis.call('HLEN', KEYS[1])
"""
HASH, MARK = "{w}:h", "{w}:done"

# Fields of the script killed in its middle, and empty loop turns after each: enough to
# run for seconds (three replicas apply it at once on two cores), little enough memory on
# a shared machine.
KILLED_FIELDS = 1_000_000
KILLED_SPIN = 100

# How long one FUNCTION STATS may take before it is given up (see the kill -9 test).
STATS_TIMEOUT = 0.5

# How long to wait for a leader or for replicas to agree.
SETTLE_TIMEOUT = 30


@pytest.fixture
def trio():
    yield from three_nodes()


def leader_of(nodes):
    assert wait_for(lambda: sum(raft_info(n)["raft_role"] == "leader" for n in nodes
                                if n.alive()) == 1, timeout=SETTLE_TIMEOUT)
    return next(n for n in nodes if n.alive() and raft_info(n)["raft_role"] == "leader")


def replica_state(srv) -> tuple[int, str | None]:
    """(HLEN of the hash, the mark) in this node's own replica (READONLY)."""
    with RawConn(srv.port) as raw:
        assert raw.call("READONLY") == "OK"
        return raw.call("HLEN", HASH), raw.call("GET", MARK)


def agreed(nodes):
    """The state every replica holds, once they all hold the same; None until then."""
    try:
        states = {replica_state(n) for n in nodes}
    except (OSError, ConnectionError, TimeoutError):
        return None
    return states.pop() if len(states) == 1 else None


def test_kill_9_in_the_middle_of_a_script_leaves_all_or_nothing_on_every_replica(trio):
    done = create(trio, "--replicas", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    leader = leader_of(trio)
    assert leader.client().set("{w}:before", "x")

    # The script goes out on its own connection; its reply is never read.
    sender = socket.create_connection(("127.0.0.1", leader.port), timeout=10)
    sender.sendall(RawConn.encode("EVAL", WRITE_HEAVY, "2", HASH, MARK, str(KILLED_FIELDS),
                                  str(KILLED_SPIN)))

    # Kill every node while the script runs: FUNCTION STATS names it on a node that
    # applies it, answered at the connection. A FUNCTION STATS that arrived just before
    # the script began waits for the store behind it and answers "none running" only once
    # it ended: so each is asked on a new connection with a short timeout, and one that
    # waits is given up for the next.
    def running():
        for n in trio:
            c = n.client(socket_timeout=STATS_TIMEOUT)
            try:
                stats = c.execute_command("FUNCTION", "STATS")
            except redis.RedisError:
                continue
            finally:
                c.close()
            if stats[1] is not None:
                return True
        return False
    saw_it_running = wait_for(running, timeout=10, interval=0.005)
    for n in trio:
        n.proc.kill()
    for n in trio:
        n.proc.wait(timeout=10)
        n.stop()
    sender.close()
    assert saw_it_running, "the script ended before it was seen running"

    for n in trio:
        n.start(keep_port=True)
    leader_of(trio)
    state = None

    def settled():
        nonlocal state
        state = agreed(trio)
        return state is not None
    assert wait_for(settled, timeout=SETTLE_TIMEOUT), [replica_state(n) for n in trio]
    fields, mark = state
    assert (fields, mark) in ((0, None), (KILLED_FIELDS, "done")), state
    # The write before the script is there either way.
    assert all(n.client().get("{w}:before") == "x" for n in trio)


def test_a_scripts_writes_survive_a_leader_failover_as_one_unit(trio):
    done = create(trio, "--replicas", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    leader = leader_of(trio)
    followers = [n for n in trio if n is not leader]
    c = followers[0].client()
    sha = c.script_load(WRITE_HEAVY)
    # Through a follower, which relays the script to the leader.
    assert c.evalsha(sha, 2, HASH, MARK, 1000) == 1000

    leader.proc.kill()
    leader.proc.wait(timeout=10)
    leader.stop()
    new_leader = leader_of(followers)
    # Both survivors hold the whole script's writes.
    assert wait_for(lambda: agreed(followers) == (1000, "done"), timeout=SETTLE_TIMEOUT)
    # The loaded script went through the log too: the new leader runs it by SHA1.
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            assert new_leader.client().evalsha(sha, 2, HASH, MARK, 2000) == 2000
            break
        except redis.exceptions.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)

    # The old leader comes back and catches up with the script run in its absence.
    leader.start(keep_port=True)
    assert wait_for(lambda: agreed(trio) == (2000, "done"), timeout=SETTLE_TIMEOUT), \
        [replica_state(n) for n in trio]
