#!/usr/bin/env python3
"""Benchmark explore per memory model: for each built-in scenario, DPOR under
sc, tso and lkmm (keyhole, no checkers): schedules, steps, steps/s, and
whether the search completed within the time cap; tso's and lkmm's figures
as ratios to sc's, measured in the same run.

With --baseline DIR (another checkout of ksm-emu with its extensions built,
e.g. the revision before the memory models), the sc cells are also run there,
in a subprocess with DIR on PYTHONPATH, side by side: sc steps/s after /
before (the goal: within 10%).

    python3 tools/bench_models.py [--time-limit S] [--scenario NAME] [--arch A] [--protocol P]
                                  [--baseline DIR] [--json]
"""

from __future__ import annotations

import argparse
import itertools
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
from emu.kconfig import resolve
name, model, limit, arch, protocol = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
kw = {} if model == "sc" else {"memory_model": model}
t0 = time.process_time()
r = explore(SCENARIOS[name], resolve(arch=arch), protocol=protocol, checks=(), time_limit=limit, **kw)
print(json.dumps({"schedules": r.schedules_explored, "steps": r.steps, "elapsed_s": round(r.elapsed_s, 3),
                  "cpu_s": round(time.process_time() - t0, 3),
                  "steps_per_s": round(r.steps / r.elapsed_s) if r.elapsed_s else 0, "complete": r.complete,
                  "holds": r.holds}))
"""


def cell(root: Path, scenario: str, model: str, limit: float, arch: str = "x86_64", protocol: str = "keyhole") -> dict:
    """One exploration in a fresh interpreter of the checkout at `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, "-c", CELL, scenario, model, str(limit), arch, protocol],
                       capture_output=True, text=True,
                       env=env, cwd=root, timeout=limit + 300)
    if p.returncode != 0:
        raise SystemExit(f"bench_models: {scenario} {model} in {root}: {p.stderr.strip().splitlines()[-1]}")
    return json.loads(p.stdout)


def model_rows(names: list[str], limit: float, baseline: Path | None = None, arches: tuple = ("x86_64",),
               protocols: tuple = ("keyhole",)) -> list[dict]:
    """Per arch, protocol and scenario: sc, tso and lkmm here, and sc in `baseline` if given."""
    rows = []
    for arch, protocol, name in itertools.product(arches, protocols, names):
        sc = cell(ROOT, name, "sc", limit, arch, protocol)
        row = {"arch": arch, "protocol": protocol, "scenario": name, "sc": sc}
        for m in WEAK:
            c = row[m] = cell(ROOT, name, m, limit, arch, protocol)
            row[f"{m}_over_sc_schedules"] = round(c["schedules"] / sc["schedules"], 2) if sc["schedules"] else None
            row[f"{m}_over_sc_steps_per_s"] = (round(c["steps_per_s"] / sc["steps_per_s"], 2)
                                               if sc["steps_per_s"] else None)
        if baseline is not None:
            before = cell(baseline.resolve(), name, "sc", limit, arch, protocol)
            row["sc_before"] = before
            row["sc_after_over_before_steps_per_s"] = (round(sc["steps_per_s"] / before["steps_per_s"], 3)
                                                       if before["steps_per_s"] else None)
            row["sc_after_over_before_cpu_s"] = (round(sc["cpu_s"] / before["cpu_s"], 3)
                                                 if before.get("cpu_s") else None)
        rows.append(row)
    return rows


def print_rows(rows: list[dict], limit: float) -> None:
    def fmt(c: dict) -> str:
        done = "VIOL" if not c["holds"] else "yes" if c["complete"] else "no"
        return f"{c['schedules']:>7} {c['steps_per_s']:>8,} {c.get('cpu_s', 0):>7.1f} {done:>4}"
    before = any("sc_before" in r for r in rows)
    head = f"{'arch':7} {'protocol':8} {'scenario':16} {'sc: sched':>9} {'steps/s':>8} {'cpu s':>7} {'done':>4}" + "".join(
        f"   {m + ': sched':>10} {'steps/s':>8} {'cpu s':>7} {'done':>4}" for m in WEAK)
    if before:
        head += f"   {'sc before':>9} {'steps/s':>8} {'cpu s':>7} {'done':>4} {'steps/s a/b':>11} {'cpu a/b':>7}"
    print(head)
    for r in rows:
        line = f"{r['arch']:7} {r['protocol']:8} {r['scenario']:16} {fmt(r['sc'])}" + "".join(
            f"    {fmt(r[m])}" for m in WEAK)
        if before:
            line += f"    {fmt(r['sc_before'])} {r['sc_after_over_before_steps_per_s']:>11} " \
                    f"{r['sc_after_over_before_cpu_s']:>7}"
        print(line)
    print(f"(DPOR, no checkers, at most {limit:g} s each; done: yes = complete and clean, no = cut by the "
          "time limit, VIOL = a violation)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per exploration (default 60)")
    ap.add_argument("--scenario", action="append", help="a built-in scenario (default: all)")
    ap.add_argument("--arch", action="append", choices=["x86_64", "ppc64", "i386", "arm", "ppc32", "s390x", "sparc64",
                                                        "mips64"], help="an arch (repeatable; default x86_64)")
    ap.add_argument("--protocol", action="append", choices=["keyhole", "refcount"],
                    help="a protocol (repeatable; default keyhole)")
    ap.add_argument("--baseline", type=Path, help="another checkout: its sc figures side by side")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from emu.explore.scenarios import SCENARIOS

    rows = model_rows(args.scenario or list(SCENARIOS), args.time_limit, args.baseline,
                      tuple(args.arch or ("x86_64",)), tuple(args.protocol or ("keyhole",)))
    if args.json:
        print(json.dumps({"time_limit_s": args.time_limit, "rows": rows}, indent=2))
        return 0
    print_rows(rows, args.time_limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
