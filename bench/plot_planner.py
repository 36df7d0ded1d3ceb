#!/usr/bin/env python3
"""Draws DIR/planner.png from DIR/planner.json (kelvin-bench planner-eval): the fault-in
rate after the handover against the eager budget, one line per strategy."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
data = json.load(open(f"{out}/planner.json"))
budgets = sorted(
    (int(k[len("budget_"):-len("pct")]), v) for k, v in data.items() if k.startswith("budget_")
)
strategies = list(budgets[0][1].keys())
fig, ax = plt.subplots(figsize=(8, 5))
for s in strategies:
    style = {"model": dict(linewidth=2.5, color="black"), "oracle": dict(linestyle="--", color="gray")}.get(s, {})
    ax.plot([b for b, _ in budgets], [v[s] for _, v in budgets], marker="o", label=s, **style)
ax.set_xlabel("eager budget (% of the live bytes)")
ax.set_ylabel("fault-in rate (fault-ins / accesses in the window)")
ax.set_title(f"{data['trace']}: window {data['window_ms'] / 1000:.0f} s after the handover")
ax.set_xticks([b for b, _ in budgets])
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(f"{out}/planner.png", dpi=110)
print(f"wrote {out}/planner.png")
