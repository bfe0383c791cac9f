#!/usr/bin/env python3
"""Benchmark explore per memory model: for each built-in scenario, DPOR under
sc, tso and lkmm (keyhole, no checkers): schedules, steps, steps/s, and
whether the search completed within the time cap; tso's and lkmm's figures
as ratios to sc's, measured in the same run.

With --baseline DIR (another checkout of ksm-emu with its extensions built,
e.g. the revision before the memory models), the sc cells are also run there,
in a subprocess with DIR on PYTHONPATH, side by side: sc steps/s after /
before (the goal: within 10%).

    python3 tools/bench_models.py [--time-limit S] [--scenario NAME] [--baseline DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WEAK = ("tso", "lkmm")
CELL = """
import json, sys, time
from emu.explore import explore
from emu.explore.scenarios import SCENARIOS
name, model, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
kw = {} if model == "sc" else {"memory_model": model}
r = explore(SCENARIOS[name], checks=(), time_limit=limit, **kw)
print(json.dumps({"schedules": r.schedules_explored, "steps": r.steps, "elapsed_s": round(r.elapsed_s, 3),
                  "steps_per_s": round(r.steps / r.elapsed_s) if r.elapsed_s else 0, "complete": r.complete,
                  "holds": r.holds}))
"""


def cell(root: Path, scenario: str, model: str, limit: float) -> dict:
    """One exploration in a fresh interpreter of the checkout at `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, "-c", CELL, scenario, model, str(limit)], capture_output=True, text=True,
                       env=env, cwd=root, timeout=limit + 300)
    if p.returncode != 0:
        raise SystemExit(f"bench_models: {scenario} {model} in {root}: {p.stderr.strip().splitlines()[-1]}")
    return json.loads(p.stdout)


def model_rows(names: list[str], limit: float, baseline: Path | None = None) -> list[dict]:
    """Per scenario: sc, tso and lkmm here, and sc in `baseline` if given."""
    rows = []
    for name in names:
        sc = cell(ROOT, name, "sc", limit)
        row = {"scenario": name, "sc": sc}
        for m in WEAK:
            c = row[m] = cell(ROOT, name, m, limit)
            row[f"{m}_over_sc_schedules"] = round(c["schedules"] / sc["schedules"], 2) if sc["schedules"] else None
            row[f"{m}_over_sc_steps_per_s"] = (round(c["steps_per_s"] / sc["steps_per_s"], 2)
                                               if sc["steps_per_s"] else None)
        if baseline is not None:
            before = cell(baseline.resolve(), name, "sc", limit)
            row["sc_before"] = before
            row["sc_after_over_before_steps_per_s"] = (round(sc["steps_per_s"] / before["steps_per_s"], 3)
                                                       if before["steps_per_s"] else None)
        rows.append(row)
    return rows


def print_rows(rows: list[dict], limit: float) -> None:
    def fmt(c: dict) -> str:
        return f"{c['schedules']:>7} {c['steps_per_s']:>8,} {'yes' if c['complete'] else 'no':>3}"
    before = any("sc_before" in r for r in rows)
    head = f"{'scenario':16} {'sc: sched':>9} {'steps/s':>8} {'done':>4}" + "".join(
        f"   {m + ': sched':>10} {'steps/s':>8} {'done':>4}" for m in WEAK)
    if before:
        head += f"   {'sc before':>9} {'steps/s':>8} {'after/before':>12}"
    print(head)
    for r in rows:
        line = f"{r['scenario']:16} {fmt(r['sc'])}" + "".join(f"    {fmt(r[m])}" for m in WEAK)
        if before:
            line += f"    {fmt(r['sc_before'])} {r['sc_after_over_before_steps_per_s']:>12}"
        print(line)
    print(f"(DPOR, keyhole, no checkers, at most {limit:g} s each; done: the search completed)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per exploration (default 60)")
    ap.add_argument("--scenario", action="append", help="a built-in scenario (default: all)")
    ap.add_argument("--baseline", type=Path, help="another checkout: its sc figures side by side")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from emu.explore.scenarios import SCENARIOS

    rows = model_rows(args.scenario or list(SCENARIOS), args.time_limit, args.baseline)
    if args.json:
        print(json.dumps({"time_limit_s": args.time_limit, "rows": rows}, indent=2))
        return 0
    print_rows(rows, args.time_limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
