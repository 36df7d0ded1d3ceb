#!/usr/bin/env python3
"""Where a Kelvin move's latency goes: p99 per phase of the move, from the per-request
samples of `kelvin-bench reshard` runs made with KELVIN_BENCH_SAMPLES=1.

    KELVIN_BENCH_SAMPLES=1 kelvin-bench reshard --systems kelvin --largest-only --out DIR
    python3 bench/reshard_phases.py DIR [DIR ...]

Phases (ms from the `reshard` command): the plan and eager push (the first 700 ms), the
drain's middle, and its last 400 ms (the finishes, the topology changes); then the share
of the move's requests that took over 2 ms and over twice the steady p99 (issue 13's bar:
the p99 during the move is within 2x of the steady one when this is under 1%), the
fault-ins (mean, and of it the wait for the pull, from `cluster migrations`) and the
share of requests after the handover served without one. One markdown row per run (the
first Kelvin run of each DIR).

With the servers' logs in DIR/logs (KELVIN_BENCH_LOG_DIR=DIR/logs and
KELVIN_BENCH_LOG=info,kelvin_server::conn::faultin=debug), also how many of the fault-ins
came in the first 0.2 s and 0.5 s after the handover (the `handed over` line).
"""
import datetime
import glob
import json
import re
import sys

PLAN_MS = 700
END_MS = 400


def p99(latencies_us):
    if not latencies_us:
        return float("nan")
    v = sorted(latencies_us)
    return v[min(len(v) - 1, int(len(v) * 0.99))] / 1000


def log_time(line):
    """The timestamp a server log line starts with (colour codes stripped), in s."""
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    stamp = line.split(" ", 1)[0].rstrip("Z")
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def early_fault_ins(out):
    """Fault-ins in the first 0.2 s and 0.5 s after the handover, from the servers' logs."""
    handed, faults = None, []
    for path in glob.glob(f"{out}/logs/*.log"):
        for line in open(path, errors="replace"):
            if "faulted in" in line:
                faults.append(log_time(line))
            elif "handed over" in line and " INFO" in line:
                handed = log_time(line)
    if handed is None or not faults:
        return "-"
    after = [t - handed for t in faults if t is not None]
    return f"{sum(1 for a in after if a < 0.2)} / {sum(1 for a in after if a < 0.5)}"


def row(out):
    runs = json.load(open(f"{out}/runs.json"))["runs"]
    r = next(x for x in runs if x["system"].startswith("kelvin"))
    s = r["summary"]
    start, end = r["reshard_at_ms"], r["complete_at_ms"]
    csvs = glob.glob(f"{out}/samples-{r['system']}-{r['sessions']}.csv")
    if not csvs:
        sys.exit(f"{out}: no samples (run with KELVIN_BENCH_SAMPLES=1)")
    move = []
    with open(csvs[0]) as f:
        next(f)
        for line in f:
            due, latency = line.split(",")[:2]
            t = float(due) - start
            if 0 <= t < end - start:
                move.append((t, int(latency)))
    if not move:
        sys.exit(f"{out}: no request during the move")
    plan = [l for t, l in move if t < PLAN_MS]
    last = [l for t, l in move if t >= end - start - END_MS]
    middle = [l for t, l in move if PLAN_MS <= t < end - start - END_MS]
    slow = sum(1 for _, l in move if l > 2000) / len(move)
    over_2x = sum(1 for _, l in move if l > 2000 * s["p99_steady_ms"]) / len(move)
    m = re.search(r"mean (\d+) us(?: \(waiting for the pull (\d+) us\))?", r["kelvin_migrations"])
    fault = "-"
    if m:
        fault = f"{int(m.group(1)) / 1000:.2f}" + (f" ({int(m.group(2)) / 1000:.2f})" if m.group(2) else "")
    return (
        f"| {out} | {s['complete_ms']} | {s['p99_steady_ms']:.2f} | {s['p99_during_ms']:.2f} | "
        f"{p99(plan):.2f} | {p99(middle):.2f} | {p99(last):.2f} | {slow:.1%} | {over_2x:.1%} | "
        f"{s['fault_ins']} | {early_fault_ins(out)} | {fault} | {s['served_without_fault_in']:.2%} |"
    )


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(
        "| run | complete ms | p99 steady | p99 during | p99 plan + eager (first 0.7 s) | "
        "p99 drain | p99 last 0.4 s | requests over 2 ms | over 2x steady p99 | fault-ins | "
        "of them in the first 0.2 / 0.5 s | fault-in ms (pull) | served w/o fault-in |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for out in sys.argv[1:]:
        print(row(out))


if __name__ == "__main__":
    main()
