#!/usr/bin/env python3
"""Draws the plots of `kelvin-bench reshard` from the runs.json it wrote:

    python3 bench/plot_reshard.py DIR

- DIR/timeline.png (and timeline-<sessions>.png per size): throughput and p99 latency
  per second, every system on one time axis (0 = the reshard command starts), each
  system's move shaded from its start to its completion, its handover dashed;
- DIR/handover-vs-size.png: handover and completion time against the data size.

matplotlib (pip) is the only dependency: plotting stays out of the Rust build.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"kelvin": "tab:blue", "kelvin-heat": "tab:cyan", "kelvin-r3": "tab:green",
          "redis-cluster": "tab:red"}


def details_rate(runs):
    """The highest per-second count of any run (the offered rate, unless it stalled)."""
    return max((s["ops"] for r in runs for s in r["seconds"]), default=0)


def timeline(runs, path, title):
    fig, (thr, lat) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for r in runs:
        name, color = r["system"], COLORS.get(r["system"], "black")
        t0 = r["reshard_at_ms"] / 1000
        secs = r["seconds"][:-1]  # the last second is cut short by the stop
        ts = [s["t"] - t0 for s in secs]
        thr.plot(ts, [s["ops"] for s in secs], color=color, label=name)
        lat.plot(ts, [max(s["p99_ms"], 0.01) for s in secs], color=color, label=name)
        done = (r["complete_at_ms"] - r["reshard_at_ms"]) / 1000
        hand = (r["handover_at_ms"] - r["reshard_at_ms"]) / 1000
        for ax in (thr, lat):
            ax.axvspan(0, max(done, 0.05), color=color, alpha=0.12)
            ax.axvline(hand, color=color, linestyle="--", linewidth=1)
    thr.set_ylabel("requests/s completed")
    thr.set_ylim(0, max(details_rate(runs) * 1.15, 1))
    lat.set_ylabel("p99 latency (ms, log)")
    lat.set_yscale("log")
    lat.set_xlabel("seconds from the reshard's start (shaded: the move, dashed: handover)")
    thr.legend(loc="lower left")
    thr.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep(summary, path):
    fig, ax = plt.subplots(figsize=(8, 5))
    for system in COLORS:
        rs = sorted((r for r in summary if r["system"] == system), key=lambda r: r["data_bytes"])
        if not rs:
            continue
        mb = [r["data_bytes"] / 1e6 for r in rs]
        ax.plot(mb, [max(r["handover_ms"], 1) for r in rs], "o-", color=COLORS[system],
                label=f"{system} handover")
        ax.plot(mb, [max(r["complete_ms"], 1) for r in rs], "s:", color=COLORS[system],
                label=f"{system} complete")
    ax.set_xlabel("data size (MB of sessions, log)")
    ax.set_xscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_yscale("log")
    ax.set_title("Time until the new node owns its slots (handover), and until the move is done")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "runs.json")) as f:
        details = json.load(f)
    runs = details["runs"]
    sizes = sorted({r["sessions"] for r in runs})
    for n in sizes:
        these = [r for r in runs if r["sessions"] == n]
        title = (f"{n} sessions of ~{details['value_bytes']} B, open loop at "
                 f"{details['rate']} req/s, 4096 slots to a 4th node")
        timeline(these, os.path.join(out, f"timeline-{n}.png"), title)
        if n == sizes[-1]:
            timeline(these, os.path.join(out, "timeline.png"), title)
    sweep([r["summary"] for r in runs], os.path.join(out, "handover-vs-size.png"))
    print(f"plots written to {out}")


if __name__ == "__main__":
    main()
