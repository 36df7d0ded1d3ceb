"""Live resharding under contention: many clients on the same keys not moved yet, at the
same moment, while the target pulls them from the source on first touch and a drain
moves the rest; and TTLs across the move. Each key answers as one Redis would: every
increment counts exactly once, exactly one of several racing DELs (GETDELs, SET NXs,
RENAMEs) wins, a deleted or expired key never comes back, TTLs keep their absolute
deadlines. Kelvin only: Redis has no such command."""

from __future__ import annotations

import re
import threading
import time

import pytest
import redis
import redis.cluster
from redis.crc import key_slot

from support import TARGET, ServerProcess
from test_cluster_kelvin import cluster_nodes, create, rport
from test_cluster_membership import addr, cli
from test_reshard import slot_ranges

pytestmark = pytest.mark.skipif(TARGET != "kelvin", reason="Kelvin's own cluster admin")


@pytest.fixture
def four(tmp_path):
    """Four nodes with redirect ports whose migrations push no key eagerly and skip none
    for expiring soon: every key of a moving range waits for its fault-in or the drain."""
    rules = tmp_path / "rules.toml"
    rules.write_text("eager_budget_percent = 0\nskip_expiring_within_ms = 0\n")
    yield from cluster_nodes(4, "redirect_port", migration_rules=str(rules))


def form_and_add(four, drain_rate: int):
    """Three nodes, three groups, one replica each; the fourth node joins; every node
    drains at `drain_rate` bytes/s once slots move."""
    first, second, third, new = four
    done = create([first, second, third], "--replicas", "1", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    out = cli("add-node", addr(new), addr(first), "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    set_drain_rate(four, drain_rate)


def set_drain_rate(nodes, rate: int):
    for node in nodes:
        node.client().config_set("kelvin-migration-drain-rate", rate)


def reshard(first: ServerProcess, new: ServerProcess):
    """4096 slots to the new node's group; a test of which key moved."""
    out = cli("reshard", addr(first), "--slots", "4096", "--to", addr(new), "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    ranges = slot_ranges(first, 3)
    assert sum(b - a + 1 for a, b in ranges) == 4096

    def moved(key: str) -> bool:
        s = key_slot(key.encode())
        return any(a <= s <= b for a, b in ranges)
    return moved


def wait_drained(four):
    set_drain_rate(four, 0)
    out = cli("reshard", addr(four[0]), "--wait-drained", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# The races: per key kind, what each of the racing clients does to it (a fresh key not
# moved yet each round), and its value at the source before.
KINDS = ["incr", "hincrby", "append", "rpush", "sadd", "zincrby", "del", "getdel",
         "delget", "nx_absent", "nx_present", "blind", "rename", "watch", "getset", "mdel",
         "lpop", "hsetnx", "pipeline"]
REPS = 3


def preload_race_keys(c: redis.Redis, ids: range):
    pipe = c.pipeline(transaction=False)
    for i in ids:
        t = f"{{r{i}}}"
        pipe.set(f"{t}:incr", 10)
        pipe.hset(f"{t}:hincrby", mapping={"f": 10, "g": "x"})
        pipe.set(f"{t}:append", "abc")
        pipe.rpush(f"{t}:rpush", "a", "b")
        pipe.sadd(f"{t}:sadd", "a", "b")
        pipe.zadd(f"{t}:zincrby", {"m": 10, "n": 1})
        for k in ("del", "getdel", "delget", "blind", "rename", "getset"):
            pipe.set(f"{t}:{k}", f"{k}{i}")
        pipe.set(f"{t}:nx_present", "here")
        pipe.set(f"{t}:watch", 100)
        pipe.set(f"{t}:mdel:1", 1)
        pipe.set(f"{t}:mdel:2", 2)
        pipe.hset(f"{t}:mdel:3", "f", 3)
        pipe.rpush(f"{t}:lpop", *range(10))
        pipe.hset(f"{t}:hsetnx", "other", "x")
        pipe.set(f"{t}:pipeline:a", 10)
        pipe.set(f"{t}:pipeline:b", 10)
        pipe.set(f"{t}:pipeline:c", "x")
        pipe.hset(f"{t}:fill", mapping={f"f{j}": "y" * 40 for j in range(4)})
        if i % 50 == 49:
            pipe.execute()
    pipe.execute()


class Racers:
    """`n` clients that, round by round, all start on the same fresh key together (a
    barrier) and record every reply; any exception is an error."""

    def __init__(self, clients: list[tuple[str, object]], rounds: list[tuple[int, str]],
                 on_round=None):
        self.clients = clients
        self.rounds = rounds
        self.on_round = on_round
        self.barrier = threading.Barrier(len(clients), timeout=30)
        # (round, client) -> list of replies
        self.replies: dict[tuple[int, int], list] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def run(self):
        threads = [threading.Thread(target=self._run, args=(n,)) for n in range(len(self.clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "racers did not finish"

    def _run(self, n: int):
        name, client = self.clients[n]
        deadline = time.monotonic() + 45
        for r, (i, kind) in enumerate(self.rounds):
            if time.monotonic() > deadline:
                self.errors.append(f"{name}: out of time at round {r}")
                return
            if n == 0 and self.on_round:
                self.on_round(r)
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.errors.append(f"{name}: barrier broken at round {r}")
                return
            got = []
            try:
                self._op(n, name, client, i, kind, got)
            except Exception as e:  # noqa: BLE001 (every failure is recorded)
                self.errors.append(f"{name}: {kind} {i}: {e!r}")
            with self.lock:
                self.replies[(r, n)] = got

    def _op(self, n, name, client, i, kind, got):
        t = f"{{r{i}}}"
        key = f"{t}:{kind}"
        me = f"{name}#{n}"
        if kind == "incr":
            got += [client.incr(key) for _ in range(REPS)]
        elif kind == "hincrby":
            got += [client.hincrby(key, "f", 1) for _ in range(REPS)]
        elif kind == "append":
            got += [client.append(key, "x") for _ in range(REPS)]
        elif kind == "rpush":
            got += [client.rpush(key, f"{me}:{j}") for j in range(REPS)]
        elif kind == "sadd":
            got += [client.sadd(key, f"{me}:{j}") for j in range(REPS)]
        elif kind == "zincrby":
            got += [client.zincrby(key, 1, "m") for _ in range(REPS)]
        elif kind == "del":
            got.append(client.delete(key))
        elif kind == "getdel":
            got.append(client.getdel(key))
        elif kind == "delget":
            # Half delete, half read (a pull racing the DEL of the same key).
            got.append(("del", client.delete(key)) if n % 2 == 0 else ("get", client.get(key)))
        elif kind in ("nx_absent", "nx_present"):
            got.append((me, client.set(key, me, nx=True)))
        elif kind == "blind":
            # A blind SET (no pull) racing a DEL and a GET (both pull first).
            op = n % 3
            if op == 0:
                got.append(("set", client.set(key, me)))
            elif op == 1:
                got.append(("del", client.delete(key)))
            else:
                got.append(("get", client.get(key)))
        elif kind == "rename":
            try:
                got.append(client.rename(key, f"{t}:renamed"))
            except redis.exceptions.ResponseError as e:
                got.append(str(e))
        elif kind == "getset":
            got.append((me, client.set(key, me, get=True)))
        elif kind == "mdel":
            # The same keys in another order by each client, and one never there.
            keys = [f"{key}:{j}" for j in (1, 2, 3)] + [f"{key}:absent"]
            got.append(client.delete(*(keys[n % 4:] + keys[:n % 4])))
        elif kind == "lpop":
            got += [client.lpop(key) for _ in range(REPS)]
        elif kind == "hsetnx":
            got.append((me, client.hsetnx(key, "f", me)))
        elif kind == "pipeline":
            # Several unmoved keys in one pipeline: each pulled in its turn, the replies
            # in order, a read after a write seeing it.
            p = client.pipeline(transaction=False)
            p.incr(f"{key}:a")
            p.incr(f"{key}:b")
            p.get(f"{key}:a")
            p.delete(f"{key}:c")
            p.incr(f"{key}:a")
            got.append(p.execute())
        elif kind == "watch":
            if isinstance(client, redis.cluster.RedisCluster):
                got.append(("incr", client.incr(key)))
                return
            for _ in range(REPS):
                with client.pipeline(transaction=True) as p:
                    try:
                        p.watch(key)
                        v = int(p.get(key))
                        p.multi()
                        p.set(key, v + 1)
                        p.execute()
                        got.append(("exec", v + 1))
                    except redis.exceptions.WatchError:
                        got.append(("aborted", None))


def check_race_round(i: int, kind: str, replies: list[list], read):
    """What the racing replies for key kind `kind` of id `i` must be, and what the key
    holds now (`read(cmd, *args)` runs a command through some node)."""
    t = f"{{r{i}}}"
    key = f"{t}:{kind}"
    flat = [x for r in replies for x in r]
    where = f"{kind} {i}: {replies}"
    if kind in ("incr", "hincrby", "zincrby"):
        # Each increment counted once: the replies are 11, 12, ... in some order.
        n = len(flat)
        assert sorted(int(float(x)) for x in flat) == list(range(11, 11 + n)), where
        now = {"incr": lambda: read("GET", key), "hincrby": lambda: read("HGET", key, "f"),
               "zincrby": lambda: read("ZSCORE", key, "m")}[kind]()
        assert int(float(now)) == 10 + n, where
    elif kind == "append":
        n = len(flat)
        assert sorted(flat) == list(range(4, 4 + n)), where
        assert read("GET", key) == "abc" + "x" * n, where
    elif kind == "rpush":
        n = len(flat)
        assert sorted(flat) == list(range(3, 3 + n)), where
        items = read("LRANGE", key, 0, -1)
        assert items[:2] == ["a", "b"] and len(items) == 2 + n, where
        # Each client's pushes in its own order.
        mine = {}
        for x in items[2:]:
            me, _, j = x.rpartition(":")
            mine.setdefault(me, []).append(int(j))
        assert all(js == list(range(len(js))) for js in mine.values()), (where, items)
    elif kind == "sadd":
        assert flat == [1] * len(flat), where
        assert read("SCARD", key) == 2 + len(flat), where
    elif kind == "del":
        assert sorted(flat) == [0] * (len(flat) - 1) + [1], where
        assert read("EXISTS", key) == 0, where
    elif kind == "getdel":
        assert [x for x in flat if x is not None] == [f"getdel{i}"], where
        assert read("EXISTS", key) == 0, where
    elif kind == "delget":
        dels = [x for op, x in flat if op == "del"]
        assert sorted(dels) == [0] * (len(dels) - 1) + [1], where
        assert all(x in (None, f"delget{i}") for op, x in flat if op == "get"), where
        assert read("EXISTS", key) == 0, where
    elif kind == "nx_absent":
        winners = [me for me, ok in flat if ok]
        assert len(winners) == 1 and read("GET", key) == winners[0], where
    elif kind == "nx_present":
        assert not any(ok for _, ok in flat), where
        assert read("GET", key) == "here", where
    elif kind == "blind":
        # A GET sees the old value, nothing, or a value a racing SET wrote; what is left
        # is nothing or one of those writes, never the old value once a write ran.
        final = read("GET", key)
        for op, x in flat:
            if op == "get":
                assert x is None or x == f"blind{i}" or "#" in x, where
        assert final is None or "#" in final, (where, final)
    elif kind == "rename":
        oks = [x for x in flat if x is True]
        assert len(oks) == 1, where
        assert all(x is True or x == "no such key" for x in flat), where
        assert read("EXISTS", key) == 0 and read("GET", f"{t}:renamed") == f"rename{i}", where
    elif kind == "getset":
        # SET ... GET in a chain: the old value once, then each writer's value once but
        # the last one's, which the key holds.
        final = read("GET", key)
        olds = sorted(old for _, old in flat)
        writers = [me for me, _ in flat]
        assert final in writers, (where, final)
        assert olds == sorted([f"getset{i}"] + [w for w in writers if w != final]), where
    elif kind == "mdel":
        assert sum(flat) == 3, where
        assert read("EXISTS", f"{key}:1", f"{key}:2", f"{key}:3") == 0, where
    elif kind == "lpop":
        # Each item popped once, in order of the pops that answered.
        popped = [x for x in flat if x is not None]
        assert sorted(popped, key=int) == [str(j) for j in range(10)][:len(flat)], where
        assert read("LLEN", key) == max(0, 10 - len(flat)), where
    elif kind == "hsetnx":
        winners = [me for me, ok in flat if ok]
        assert len(winners) == 1 and read("HGET", key, "f") == winners[0], where
        assert read("HGET", key, "other") == "x", where
    elif kind == "pipeline":
        firsts = [a1 for a1, _, _, _, _ in flat]
        seconds = [a2 for _, _, _, _, a2 in flat]
        n = len(flat)
        assert sorted(firsts + seconds) == list(range(11, 11 + 2 * n)), where
        assert sorted(b for _, b, _, _, _ in flat) == list(range(11, 11 + n)), where
        assert all(a1 <= int(got) < a2 for a1, _, got, _, a2 in flat), where
        assert sorted(d for _, _, _, d, _ in flat) == [0] * (n - 1) + [1], where
        assert read("MGET", f"{key}:a", f"{key}:b") == [str(10 + 2 * n), str(10 + n)], where
        assert read("EXISTS", f"{key}:c") == 0, where
    elif kind == "watch":
        execs = [x for op, x in flat if op == "exec"]
        incrs = [x for op, x in flat if op == "incr"]
        assert int(read("GET", key)) == 100 + len(execs) + len(incrs), where
        assert len(set(execs) | set(incrs)) == len(execs) + len(incrs), where


def test_writes_and_deletes_race_fault_ins_and_the_drain(four):
    """Six clients (plain ones on every node, RedisCluster ones on the redirect ports)
    hit the same unmoved key together, key after key, kind after kind; halfway through
    the drain goes to full speed, so the later rounds race it too."""
    first, second, third, new = four
    form_and_add(four, 300)
    c = first.client()
    preload_race_keys(c, range(400))
    moved = reshard(first, new)
    ids = [i for i in range(400) if moved(f"{{r{i}}}")]
    assert len(ids) >= 40, len(ids)
    ids = ids[:16]
    rounds = [(i, kind) for i in ids for kind in KINDS]
    clients: list[tuple[str, object]] = [
        (f"plain{n}", node.client(socket_timeout=15)) for n, node in enumerate(four)]
    clients += [(f"rc{n}", redis.cluster.RedisCluster(
        host="127.0.0.1", port=rport(node), socket_timeout=15, decode_responses=True))
        for n, node in enumerate((first, new))]

    def on_round(r):
        if r == len(rounds) // 2:
            set_drain_rate(four, 0)
    racers = Racers(clients, rounds, on_round)
    racers.run()
    assert racers.errors == [], racers.errors[:10]
    # The rounds met keys not moved yet (a fault-in each, at least, in the first half).
    figures = cli("migrations", addr(first)).stdout
    faultins = sum(int(m) for m in re.findall(r"(\d+) fault-ins", figures))
    assert faultins >= len(rounds) // 3, figures

    def per_round(r):
        return [racers.replies.get((r, n), []) for n in range(len(clients))]

    reader = first.client()
    raw = first.client(decode_responses=False)
    finals = {}
    for r, (i, kind) in enumerate(rounds):
        check_race_round(i, kind, per_round(r), lambda *a: reader.execute_command(*a))
        finals[(i, kind)] = raw.dump(f"{{r{i}}}:{kind}")
    wait_drained(four)
    # Nothing changed by the drain, read through every node.
    for node in four:
        cn = node.client()
        for r, (i, kind) in enumerate(rounds):
            check_race_round(i, kind, per_round(r), lambda *a: cn.execute_command(*a))
    for node in four:
        raw = node.client(decode_responses=False)
        for (i, kind), dump in finals.items():
            assert raw.dump(f"{{r{i}}}:{kind}") == dump, (node.port, i, kind)
    for cl in clients:
        cl[1].close()


def now_ms() -> int:
    return int(time.time() * 1000)


def sleep_until_ms(at: int):
    time.sleep(max(0, at - now_ms()) / 1000)


def test_ttls_across_the_move(four):
    """Keys keep their absolute deadlines across the move: one expired before the
    handover, one expiring while it waits to be pulled, one expiring at the target
    after its pull are gone then, on every node, and stay gone after the drain. TTL
    commands on keys not moved yet pull them first and answer as Redis does."""
    first, second, third, new = four
    form_and_add(four, 300)
    c = first.client()
    n = 400
    set_at = now_ms()
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        t = f"{{t{i}}}"
        pipe.set(f"{t}:pre", "p", px=300)
        for k in ("expire", "persist0", "pexat", "zero", "pexpast", "blind", "gone",
                  "getexpast", "keep0"):
            pipe.set(f"{t}:{k}", k)
        for k in ("persist", "getex", "getexp", "keepttl", "neg", "nx", "gt", "later"):
            pipe.set(f"{t}:{k}", k, ex=1000)
        pipe.hset(f"{t}:fill", mapping={f"f{j}": "y" * 40 for j in range(4)})
        if i % 50 == 49:
            pipe.execute()
    pipe.execute()
    time.sleep(0.5)  # the `pre` keys expire at the source, before the handover
    # Deadlines a few seconds on (absolute, as the source stores them): `lazy` expires
    # while it waits for its pull, `pulled` after it was pulled, `ttl` much later.
    t0 = now_ms()
    lazy_at, pulled_at, ttl_at = t0 + 5000, t0 + 6500, t0 + 600_000
    for i in range(n):
        t = f"{{t{i}}}"
        pipe.set(f"{t}:lazy", "l")
        pipe.pexpireat(f"{t}:lazy", lazy_at)
        pipe.set(f"{t}:drained", "d")
        pipe.pexpireat(f"{t}:drained", lazy_at)
        pipe.set(f"{t}:pulled", "u")
        pipe.pexpireat(f"{t}:pulled", pulled_at)
        pipe.set(f"{t}:ttl", "t")
        pipe.pexpireat(f"{t}:ttl", ttl_at)
    pipe.execute()
    moved = reshard(first, new)
    began = now_ms()
    assert began < lazy_at - 2000, "the handover took too long for this test's deadlines"
    ids = [i for i in range(n) if moved(f"{{t{i}}}")][:12]
    assert len(ids) >= 8, ids
    cn = new.client()
    # Pulled now, before their deadline; `lazy` and `drained` are left alone.
    for i in ids:
        t = f"{{t{i}}}"
        assert c.get(f"{t}:pulled") == "u"
        assert pulled_at - now_ms() - 50 <= c.pttl(f"{t}:pulled") <= pulled_at - began
        assert c.exists(f"{t}:pre") == 0 and c.get(f"{t}:pre") is None
        assert c.ttl(f"{t}:pre") == -2
        # TTL and PTTL on keys not moved yet: their deadline, less the time elapsed.
        before = now_ms()
        ttl = c.pttl(f"{t}:ttl")
        assert ttl_at - now_ms() - 50 <= ttl <= ttl_at - before, (ttl, ttl_at - before)
        assert 999 - (now_ms() - set_at) / 1000 <= cn.ttl(f"{t}:later") <= 1000
    # The TTL commands on unmoved keys, with Redis's replies.
    for i in ids:
        t = f"{{t{i}}}"
        assert c.expire(f"{t}:expire", 100) is True and 99 <= c.ttl(f"{t}:expire") <= 100
        assert c.persist(f"{t}:persist") is True and c.ttl(f"{t}:persist") == -1
        assert c.persist(f"{t}:persist0") is False and c.ttl(f"{t}:persist0") == -1
        assert c.pexpireat(f"{t}:pexat", ttl_at) is True
        assert ttl_at - now_ms() - 50 <= c.pttl(f"{t}:pexat") <= ttl_at - began
        assert c.getex(f"{t}:getex", ex=50) == "getex" and 49 <= c.ttl(f"{t}:getex") <= 50
        assert c.getex(f"{t}:getexp", persist=True) == "getexp"
        assert c.ttl(f"{t}:getexp") == -1
        assert c.set(f"{t}:keepttl", "new", keepttl=True) is True
        assert c.get(f"{t}:keepttl") == "new" and 990 <= c.ttl(f"{t}:keepttl") <= 1000
        assert c.expire(f"{t}:nx", 100, nx=True) is False and c.ttl(f"{t}:nx") > 990
        assert c.expire(f"{t}:gt", 100, gt=True) is False
        assert c.expire(f"{t}:gt", 5000, gt=True) is True and c.ttl(f"{t}:gt") > 4990
        assert c.expire(f"{t}:absent", 100) is False and c.ttl(f"{t}:absent") == -2
        assert c.persist(f"{t}:absent") is False
        # Deadlines in the past delete the key (it must not come back with the drain).
        assert c.expire(f"{t}:zero", 0) is True and c.exists(f"{t}:zero") == 0
        assert c.expire(f"{t}:neg", -5) is True and c.get(f"{t}:neg") is None
        assert c.pexpireat(f"{t}:pexpast", 1) is True and c.ttl(f"{t}:pexpast") == -2
        assert c.getex(f"{t}:getexpast", pxat=1) == "getexpast"
        assert c.exists(f"{t}:getexpast") == 0
        assert c.set(f"{t}:keep0", "k", keepttl=True) is True and c.ttl(f"{t}:keep0") == -1
        # The absolute deadline, as the source stored it.
        assert c.execute_command("PEXPIRETIME", f"{t}:ttl") == ttl_at
        assert c.execute_command("EXPIRETIME", f"{t}:keep0") == -1
        # A blind write with a short TTL: no pull; when it expires, the old value does
        # not come back.
        assert c.set(f"{t}:blind", "mine", px=1500) is True
        assert c.delete(f"{t}:gone") == 1
    # `lazy` expires before anything touched it; `pulled` after its pull.
    sleep_until_ms(lazy_at + 100)
    for node in four:
        cn = node.client()
        for i in ids[: len(ids) // 2]:
            t = f"{{t{i}}}"
            assert cn.get(f"{t}:lazy") is None, (node.port, i)
            assert cn.ttl(f"{t}:lazy") == -2 and cn.exists(f"{t}:lazy") == 0
    sleep_until_ms(pulled_at + 100)

    def gone_for_good(nodes):
        for node in nodes:
            cn = node.client()
            for i in ids:
                t = f"{{t{i}}}"
                for k in ("pre", "lazy", "drained", "pulled", "zero", "neg", "pexpast",
                          "blind", "gone", "getexpast"):
                    assert cn.get(f"{t}:{k}") is None, (node.port, i, k)
                    assert cn.exists(f"{t}:{k}") == 0, (node.port, i, k)
                assert cn.get(f"{t}:keepttl") == "new"
                assert 0 < cn.ttl(f"{t}:expire") <= 100
                assert cn.ttl(f"{t}:persist") == -1 and cn.ttl(f"{t}:getexp") == -1
                assert 999 - (now_ms() - set_at) / 1000 <= cn.ttl(f"{t}:later") <= 1000
                assert ttl_at - now_ms() - 50 <= cn.pttl(f"{t}:ttl") <= ttl_at - began
    gone_for_good(four)
    wait_drained(four)
    gone_for_good(four)
    # Every key of every id, moved or not, holds the right thing after the drain.
    for node in (first, new):
        cn = node.client()
        for i in range(0, n, 7):
            t = f"{{t{i}}}"
            assert cn.exists(f"{t}:pre", f"{t}:lazy", f"{t}:drained", f"{t}:pulled") == 0
            if i not in ids:
                assert cn.get(f"{t}:blind") == "blind" and cn.ttl(f"{t}:ttl") > 500


def tags_in(lo: int, hi: int, count: int, prefix: str) -> list[str]:
    """`count` hash tags whose slot is in lo..=hi."""
    out = []
    for i in range(200000):
        tag = f"{{{prefix}{i}}}"
        if lo <= key_slot(tag.encode()) <= hi:
            out.append(tag)
            if len(out) == count:
                break
    return out


def test_transactions_across_the_handover(four):
    """MULTI/EXEC keeps running while the slots of its keys are sealed and handed over:
    no error, each transaction applied exactly once; a WATCH made at the old owner and a
    write at the new one abort the EXEC (the watch index belongs to the old group's log),
    as Redis aborts a transaction whose watched key moved away."""
    first, second, third, new = four
    form_and_add(four, 300)
    # Group 0 holds 0-5461 and gives its highest slots (4096 on) to the new group.
    tags = tags_in(4300, 5400, 9, "x")
    c = first.client()
    for t in tags:
        c.set(f"{t}:a", 0)
        c.set(f"{t}:b", 0)
        c.set(f"{t}:w", "old")
    # The source's log well ahead of the new group's (one entry per write): an index of
    # one is no floor in the other.
    for i in range(1500):
        c.incr("{b}:ahead")
    assert key_slot(b"b") < 4096
    watchers = []
    # (Each client kept: one dropped closes its connection, and its WATCH with it.)
    watching = [node.client() for node in four]
    for n, t in enumerate(tags[:4]):
        p = watching[n].pipeline(transaction=True)
        p.watch(f"{t}:w")
        assert p.get(f"{t}:w") == "old"
        watchers.append(p)
    stop = threading.Event()
    errors: list[str] = []
    done = [0] * len(four)

    def run(n: int):
        cl = four[n].client(socket_timeout=15)
        t = tags[4 + n]
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and done[n] < 20000:
            try:
                p = cl.pipeline(transaction=True)
                p.incr(f"{t}:a")
                p.incr(f"{t}:b")
                a, b = p.execute()
                # And one outside a transaction (refused at the seal, it runs again).
                c = cl.incr(f"{t}:c")
                if a != b or a != done[n] + 1 or c != a:
                    errors.append(f"{n}: EXEC -> {a}, {b}, INCR -> {c} after {done[n]}")
                    return
                done[n] += 1
            except redis.exceptions.RedisError as e:
                errors.append(f"{n}: {e!r}")
                return
    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(four))]
    rc_done = [0]

    def cluster_client():
        rc = redis.cluster.RedisCluster(host="127.0.0.1", port=rport(third), socket_timeout=15,
                                        decode_responses=True)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and rc_done[0] < 20000:
            try:
                if rc.incr(f"{tags[8]}:rc") != rc_done[0] + 1:
                    errors.append(f"rc: INCR after {rc_done[0]}")
                    return
                rc_done[0] += 1
            except redis.exceptions.RedisError as e:
                errors.append(f"rc: {e!r} {e}")
                return
        rc.close()
    threads.append(threading.Thread(target=cluster_client))
    for th in threads:
        th.start()
    try:
        time.sleep(0.3)
        moved = reshard(first, new)
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    # The clients' errors first: a count below is off when one stopped on an error.
    assert errors == [], errors
    assert all(moved(t) for t in tags), tags
    assert min(done) > 0, done
    for n, t in enumerate(tags[4:8]):
        assert c.mget(f"{t}:a", f"{t}:b", f"{t}:c") == [str(done[n])] * 3
    assert rc_done[0] > 0 and c.get(f"{tags[8]}:rc") == str(rc_done[0])
    # The watched keys, written at the new owner after the WATCH: every EXEC aborts.
    for n, (t, p) in enumerate(zip(tags, watchers)):
        assert c.set(f"{t}:w", f"new{n}")
        p.multi()
        p.set(f"{t}:w", "from the transaction")
        with pytest.raises(redis.exceptions.WatchError):
            p.execute()
        assert c.get(f"{t}:w") == f"new{n}"
    assert errors == [], errors
    wait_drained(four)


def test_fault_ins_racing_the_end_of_the_drain(four):
    """Keys never written at the source are pulled on every first touch until the
    migration finishes (the drain settles only keys that exist): clients creating new
    keys in the moved slots while the drain finishes on both sides see no error."""
    first, second, third, new = four
    form_and_add(four, 300)
    c = first.client()
    pipe = c.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"fill:{i}", "z" * 50)
    pipe.execute()
    moved = reshard(first, new)
    keys = [f"new:{i}" for i in range(100000) if moved(f"new:{i}")][:20000]
    errors: list[str] = []
    counts = [0] * 6
    stop = threading.Event()

    def run(n: int):
        cl = four[n % 4].client(socket_timeout=15)
        deadline = time.monotonic() + 30
        for j in range(n, len(keys), 6):
            if stop.is_set() or time.monotonic() > deadline:
                break
            try:
                if cl.incr(keys[j]) != 1:
                    errors.append(f"INCR {keys[j]} twice")
                counts[n] += 1
            except redis.exceptions.RedisError as e:
                errors.append(f"{keys[j]}: {e!r} {e}")
    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.3)
        wait_drained(four)
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    assert errors == [], errors[:10]
    assert c.dbsize() == 3000 + sum(counts)


def test_moves_between_databases_pull_the_other_databases_key(four):
    """MOVE and COPY ... DB depend on the key in the other database too: it is pulled
    first, so they answer as Redis does, and the drain never lands the other database's
    old copy over what they wrote."""
    first, second, third, new = four
    form_and_add(four, 300)
    tags = tags_in(4300, 5400, 4, "m")
    c0, c1 = first.client(db=0), first.client(db=1)
    for t in tags:
        c0.set(f"{t}:k", "a")
        c1.set(f"{t}:k", "b")
        c0.set(f"{t}:free", "f")
        c0.set(f"{t}:src", "src")
        c1.set(f"{t}:dst", "old")
    moved = reshard(first, new)
    assert all(moved(t) for t in tags)
    t, u = tags[0], tags[1]
    # Redis: 0, the key stays where it was; the other database's copy is untouched.
    assert c0.move(f"{t}:k", 1) is False
    assert c0.get(f"{t}:k") == "a" and c1.get(f"{t}:k") == "b"
    assert c0.move(f"{t}:free", 1) is True
    assert c0.execute_command("COPY", f"{t}:src", f"{t}:dst", "DB", 1) == 0
    assert c0.execute_command("COPY", f"{u}:src", f"{u}:dst", "DB", 1, "REPLACE") == 1
    assert c0.execute_command("COPY", f"{u}:src", f"{u}:new", "DB", 1) == 1
    wait_drained(four)
    for node in four:
        d0, d1 = node.client(db=0), node.client(db=1)
        assert d0.get(f"{t}:k") == "a" and d1.get(f"{t}:k") == "b"
        assert d0.exists(f"{t}:free") == 0 and d1.get(f"{t}:free") == "f"
        assert d1.get(f"{t}:dst") == "old"
        assert d1.get(f"{u}:dst") == "src" and d1.get(f"{u}:new") == "src"


def test_readonly_replicas_read_unmoved_keys_right(four):
    """--replicas 3: READONLY reads away from the new owner's leader (its followers, a node
    with no replica of the new group, and replica reads of a RedisCluster client) answer
    keys not moved yet with their values and TTLs, never as if they were absent."""
    first, second, third, new = four
    done = create([first, second, third], "--replicas", "3", "--groups", "3", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    out = cli("add-node", addr(new), addr(first), "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    set_drain_rate(four, 300)
    tags = tags_in(4300, 5400, 40, "o")
    c = first.client()
    for t in tags:
        c.set(f"{t}:k", f"v{t}", ex=1000)
    moved = reshard(first, new)
    assert all(moved(t) for t in tags)
    at = 0
    for node in four:
        r = node.client()
        assert r.execute_command("READONLY")
        for t in tags[at:at + 5]:
            assert r.get(f"{t}:k") == f"v{t}", (node.port, t)
            assert 990 <= r.ttl(f"{t}:k") <= 1000, (node.port, t)
        at += 5
    rc = redis.cluster.RedisCluster(
        host="127.0.0.1", port=rport(second), socket_timeout=15, decode_responses=True,
        load_balancing_strategy=redis.cluster.LoadBalancingStrategy.ROUND_ROBIN)
    for t in tags[at:]:
        assert rc.get(f"{t}:k") == f"v{t}", t
    rc.close()
    wait_drained(four)
