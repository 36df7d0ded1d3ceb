#!/usr/bin/env python3
"""Measures DBSIZE, KEYS * and a full SCAN (COUNT 1000) on a Kelvin node's main port
before a live reshard, during its lazy phase (the drain throttled, so most keys of the
moving slots are still at their old owner: the node walks those slots on both sides)
and after the drain; and the same commands on a redis-server holding the same keys, in
the same run, as the base of the ratios.

    python3 bench/keyless_lazy.py --keys 20000

3 nodes (--replicas 1 --groups 3), a 4th joins with add-node, `reshard --slots 4096 --to`
it. Prints one line per phase: the median time of each command and its ratio to Redis's.
Exit status 1 if a DBSIZE or KEYS answer was not the number of keys written.

Uses target/release/kelvin-server and kelvin-cli (KELVIN_SERVER_BIN to override), the
Python test suite's server harness (tests/python/support.py), and redis-server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
os.environ.setdefault("KELVIN_TEST_TARGET", "kelvin")

from support import free_port  # noqa: E402
from test_cluster_kelvin import cluster_nodes, create  # noqa: E402
from test_cluster_membership import addr, cli  # noqa: E402
from test_reshard import migrating, reshard_slowly  # noqa: E402


def start_redis() -> tuple[subprocess.Popen, redis.Redis, str]:
    """A redis-server on a free loopback port, without persistence."""
    port, folder = free_port(), tempfile.mkdtemp(prefix="keyless-bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    for _ in range(100):
        try:
            client.ping()
            return proc, client, folder
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def full_scan(c) -> int:
    cursor, n = 0, 0
    for _ in range(1_000_000):
        cursor, keys = c.scan(cursor, count=1000)
        n += len(keys)
        if cursor == 0:
            return n
    raise RuntimeError("SCAN never ended")


COMMANDS = {"DBSIZE": lambda c: c.dbsize(), "KEYS *": lambda c: len(c.keys("*")),
            "SCAN": full_scan}


def measure(kelvin, redis_client, n: int, runs: int) -> tuple[str, bool]:
    """Median ms per command, Kelvin and Redis alternating; whether counts were right."""
    times = {(who, name): [] for who in ("kelvin", "redis") for name in COMMANDS}
    right = True
    for _ in range(runs):
        for name, f in COMMANDS.items():
            for who, c in (("kelvin", kelvin), ("redis", redis_client)):
                began = time.perf_counter()
                got = f(c)
                times[(who, name)].append(time.perf_counter() - began)
                right &= got == n
    cells = []
    for name in COMMANDS:
        k, r = (statistics.median(times[(w, name)]) for w in ("kelvin", "redis"))
        cells.append(f"{name} {k * 1000:.2f} ms ({k / r:.2f}x redis)")
    return ", ".join(cells), right


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--value-bytes", type=int, default=500)
    ap.add_argument("--runs", type=int, default=7)
    opts = ap.parse_args()
    started = cluster_nodes(4, "redirect_port")
    nodes = next(started)
    first, second, third, new = nodes
    reference, redis_client, folder = start_redis()
    ok = True
    try:
        done = create([first, second, third], "--replicas", "1", "--groups", "3", "--yes")
        if done.returncode != 0:
            print(done.stdout + done.stderr)
            return 1
        value = "x" * opts.value_bytes
        for c in (first.client(), redis_client):
            pipe = c.pipeline(transaction=False)
            for i in range(opts.keys):
                pipe.set(f"k:{i}", value)
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
        kelvin = second.client()
        line, right = measure(kelvin, redis_client, opts.keys, opts.runs)
        print(f"before: {line}")
        ok &= right
        reshard_slowly(nodes, 2000)
        line, right = measure(kelvin, redis_client, opts.keys, opts.runs)
        lazy = migrating(first)
        print(f"lazy phase ({lazy} migrations still draining): {line}")
        ok &= right and lazy > 0
        for n in nodes:
            n.client().config_set("kelvin-migration-drain-rate", 0)
        out = cli("reshard", addr(first), "--wait-drained", timeout=600)
        ok &= out.returncode == 0
        line, right = measure(kelvin, redis_client, opts.keys, opts.runs)
        print(f"drained: {line}")
        ok &= right
    finally:
        reference.kill()
        reference.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
        for _ in started:
            pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
