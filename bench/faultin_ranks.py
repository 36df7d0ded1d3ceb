#!/usr/bin/env python3
"""Which keys faulted in during a Kelvin move, by the Zipf rank of their session.

Usage: python3 bench/faultin_ranks.py DIR

DIR is a `kelvin-bench reshard --out DIR` run made with
`KELVIN_BENCH_LOG_DIR=DIR/logs KELVIN_BENCH_LOG=info,kelvin_server::conn::faultin=debug`
(one Kelvin system, one size, e.g. `--systems kelvin --largest-only`). Each fault-in's
debug line names its first key and how many keys the source held (`found`); a
`session:N` key is mapped back to its popularity rank with the bench's scatter
(`bench/src/openloop.rs`, `Zipf::new`: rank -> id is a multiplication mod the session
count). Prints, per 200 ms after the handover (the last row: 2 s and after), the
fault-ins of the 12,000 most popular sessions (`top12k`), of ranks 12,000-130,000
(`top130k`), of the rest (`tail`) and of new logins (`login`); `-absent`: the source did
not hold the key (a key its filter had not yet ruled out).
"""
import glob
import json
import re
import sys
from datetime import datetime

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"faulted in migration=\d+ keys=\d+ found=(\d+) first=(\S+)")


def scatter_inverse(sessions):
    """The inverse of the bench's rank multiplier mod `sessions` (see `Zipf::new`)."""

    def gcd(a, b):
        while b:
            a, b = b, a % b
        return a

    s = 2_654_435_761 % sessions
    while gcd(max(s, 1), sessions) != 1:
        s += 1
    return pow(max(s, 1), -1, sessions)


def when(line):
    return datetime.fromisoformat(line[:26])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    run = json.load(open(f"{out}/runs.json"))["runs"][0]
    sessions = run["sessions"]
    inverse = scatter_inverse(sessions)
    handed, faults = None, []
    for path in glob.glob(f"{out}/logs/*.log"):
        for line in open(path, errors="replace"):
            line = ANSI.sub("", line)
            if "INFO" in line and "handed over" in line:
                handed = when(line)
            m = LINE.search(line)
            if m:
                faults.append((when(line), int(m.group(1)), m.group(2)))
    if handed is None or not faults:
        sys.exit(f"{out}: no handover or no fault-in lines (see the usage)")
    rows = {}
    for t, found, key in faults:
        if key.startswith("session:"):
            rank = int(key.split(":")[1]) * inverse % sessions
            kind = "top12k" if rank < 12_000 else "top130k" if rank < 130_000 else "tail"
        else:
            kind = "login"
        if not found:
            kind += "-absent"
        at = min(int((t - handed).total_seconds() / 0.2), 10)
        row = rows.setdefault(at, {})
        row[kind] = row.get(kind, 0) + 1
    total = {}
    for at in sorted(rows):
        for k, n in rows[at].items():
            total[k] = total.get(k, 0) + n
        print(f"+{at * 0.2:.1f} s", dict(sorted(rows[at].items())))
    print(f"all {len(faults)}", dict(sorted(total.items())))


if __name__ == "__main__":
    main()
