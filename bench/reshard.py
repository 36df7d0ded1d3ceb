#!/usr/bin/env python3
"""Measures a live reshard on loopback, the scenario of issue 12's "Done when":

    3 nodes (--replicas R --groups 3) hold N sessions of SIZE bytes; a 4th node joins
    (add-node) and `kelvin-cli cluster reshard --slots 4096 --to` it while a RedisCluster
    client (redirect ports) and a plain client (main port of another node) keep reading
    and writing; then `reshard --wait-drained`. Optionally the leader of a source group
    is SIGKILLed during the drain, then restarted.

Prints one line per run: sessions, handover time (as `reshard` reports it, and the
command's wall time), drain time and rate, client operations and errors, and whether
every acknowledged value was read back afterwards. Exit status 1 if a client saw an
error (with --kill-source-leader: the killed node's clients may), a value was missing
or wrong, or too few operations ran (a run that proves nothing fails).

    python3 bench/reshard.py --sessions 50000
    python3 bench/reshard.py --sessions 500000
    python3 bench/reshard.py --sessions 50000 --replicas 3 --appendfsync always --kill-source-leader

Uses target/release/kelvin-server and kelvin-cli (KELVIN_SERVER_BIN to override), and
the Python test suite's server harness (tests/python/support.py).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
os.environ.setdefault("KELVIN_TEST_TARGET", "kelvin")


from test_cluster_kelvin import cluster_nodes, kelvin_cli  # noqa: E402
from test_reshard import Traffic, group_leader  # noqa: E402

#: A run with fewer client operations than this during the move proves nothing.
MIN_OPS = 200


def cli(*args, timeout=900):
    return subprocess.run([kelvin_cli(), "cluster", *args], capture_output=True, text=True,
                          timeout=timeout)


def cpu_seconds(nodes) -> float:
    """User + system CPU time the nodes' processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for n in nodes:
        if n.proc is None or n.proc.poll() is not None:
            continue
        with open(f"/proc/{n.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run(opts) -> bool:
    started = cluster_nodes(4, "redirect_port", appendfsync=opts.appendfsync)
    nodes = next(started)
    first, second, third, new = nodes
    ok = True
    try:
        addrs = [f"127.0.0.1:{n.port}" for n in (first, second, third)]
        out = subprocess.run([kelvin_cli(), "cluster", "create", *addrs, "--replicas",
                              str(opts.replicas), "--groups", "3", "--yes"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            print(out.stdout + out.stderr)
            return False
        t0 = time.monotonic()
        value = "x" * opts.value_size
        keys = [f"session:{i:08d}" for i in range(opts.sessions)]
        clients = [n.client() for n in (first, second, third)]
        for start in range(0, len(keys), 1000):
            pipe = clients[(start // 1000) % 3].pipeline(transaction=False)
            for k in keys[start:start + 1000]:
                pipe.set(k, value)
            pipe.execute()
        load_s = time.monotonic() - t0
        out = cli("add-node", f"127.0.0.1:{new.port}", addrs[0], "--yes")
        if out.returncode != 0:
            print(out.stdout + out.stderr)
            return False
        # Reads (checked against the last acknowledged value), overwrites, new keys and
        # APPENDs, on a RedisCluster client and a plain client (tests/python/test_reshard.py).
        traffic = Traffic({k: value for k in keys[:20000]}, int(first.options["redirect_port"]),
                          third.port)
        try:
            time.sleep(1)
            ops_before = traffic.ops
            t1 = time.monotonic()
            out = cli("reshard", addrs[0], "--slots", "4096", "--to", f"127.0.0.1:{new.port}",
                      "--yes")
            reshard_s = time.monotonic() - t1
            if out.returncode != 0:
                print(out.stdout + out.stderr)
                return False
            m = re.search(r"after (\d+) ms", out.stdout)
            handover_ms = int(m.group(1)) if m else -1
            t2 = time.monotonic()
            cpu_before = cpu_seconds(nodes)
            killed = ""
            if opts.kill_source_leader:
                time.sleep(0.2)
                victim = group_leader(nodes[:3], 0)
                if victim is None:
                    print("no leader of group 0 found to kill: the fault would be a no-op")
                    return False
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait(timeout=10)
                killed = f"killed group 0's leader (port {victim.port}); "
                time.sleep(1)
                victim.start(keep_port=True)
            out = cli("reshard", addrs[1], "--wait-drained", timeout=1800)
            drain_s = time.monotonic() - t2
            drain_cpu = cpu_seconds(nodes) - cpu_before
            if out.returncode != 0:
                print(out.stdout + out.stderr)
                return False
            time.sleep(0.5)
        finally:
            traffic.finish()
        during = traffic.ops - ops_before
        # The drivers' own figures: bytes drained and the time the drains took.
        figures = cli("migrations", addrs[1]).stdout
        drained = [(int(b), int(ms)) for b, ms in
                   re.findall(r"drained \d+ keys, (\d+) bytes in (\d+) ms", figures)]
        drained_mb = sum(b for b, _ in drained) / 1e6
        # The drains of the migrations run side by side: the longest is the drain's time.
        drain_ms = max((ms for _, ms in drained), default=0)
        window_ms = max((int(x) for x in re.findall(r": handover (\d+) ms;", figures)),
                        default=-1)
        faultins = sum(int(x) for x in re.findall(r"(\d+) fault-ins", figures))
        # Every value read back through the new node and another.
        expected = {k: value for k in keys}
        expected.update(traffic.expected)
        # A request that failed (the killed node's) may or may not have been applied.
        unknown = sorted(traffic.uncertain)
        for k in unknown:
            expected.pop(k, None)
        bad = 0
        for n in (new, second):
            c = n.client()
            ks = sorted(expected)
            for s in range(0, len(ks), 1000):
                chunk = ks[s:s + 1000]
                got = c.mget(chunk)
                bad += sum(1 for k, g in zip(chunk, got) if g != expected[k])
        dbsize = second.client().dbsize() - (second.client().exists(*unknown) if unknown else 0)
        print(f"sessions {opts.sessions} x {opts.value_size} B, replicas {opts.replicas}, "
              f"appendfsync {opts.appendfsync}: load {load_s:.1f} s; {killed}"
              f"handover {window_ms} ms (first seal to the topology's change; reshard "
              f"printed {handover_ms} ms and returned in {reshard_s * 1000:.0f} ms); "
              f"drains moved {drained_mb:.1f} MB in {drain_ms} ms "
              f"({drained_mb / max(drain_ms, 1) * 1000:.0f} MB/s; --wait-drained returned after "
              f"{drain_s:.1f} s; the nodes used {drain_cpu:.1f} CPU s meanwhile: "
              f"{drained_mb / max(drain_cpu, 0.01):.0f} MB per CPU s); "
              f"fault-ins {faultins}; client ops during the move {during}, "
              f"errors {len(traffic.errors)}; values wrong or missing {bad}; "
              f"DBSIZE {dbsize} (want {len(expected)})")
        if traffic.errors:
            print("  first errors:", traffic.errors[:5])
        # With a node killed, its clients' requests in flight fail (not acknowledged, so
        # not checked); without, no client may see an error.
        clean = not traffic.errors or opts.kill_source_leader
        ok = clean and bad == 0 and during >= MIN_OPS and dbsize == len(expected)
        return ok
    finally:
        started.close()  # stops every node and deletes its data


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=50000)
    p.add_argument("--value-size", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--appendfsync", default="everysec")
    p.add_argument("--kill-source-leader", action="store_true")
    opts = p.parse_args()
    sys.exit(0 if run(opts) else 1)


if __name__ == "__main__":
    main()
