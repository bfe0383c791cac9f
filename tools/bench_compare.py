#!/usr/bin/env python3
"""Run throughput of this tree against another revision, side by side.

Builds REV (default: the last commit before the restructure) in a temporary
git worktree, then alternates default `ksm-emu run`s of both trees (same
flags, same machine, interleaved so drift hits both alike) and reports
get_ksm_page calls (ok + stale) per second of each and their ratio. Prints a
table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REV = "bf7471a"  # main before "One home per concern"


def build_worktree(rev: str, where: Path) -> Path:
    tree = where / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), rev],
                   check=True, capture_output=True, text=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tree, check=True,
                   capture_output=True, text=True)
    return tree


def one_run(tree: Path, state: Path, args: list[str]) -> dict:
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--json", "--no-progress", "--state", str(state),
                        *args], cwd=tree, capture_output=True, text=True, timeout=600)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"run in {tree} failed ({r.returncode}): {r.stderr[-500:]}")
    d = json.loads(r.stdout)
    state.unlink(missing_ok=True)
    c = d["counts"]
    return {"calls_per_s": (c["get_ksm_page_ok"] + c["get_ksm_page_stale"]) / d["duration_s"],
            "ksmd_scanned_per_s": c["ksmd_scanned"] / d["duration_s"], "violations": d["violations_total"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", default=DEFAULT_REV, help=f"revision to compare with (default {DEFAULT_REV})")
    p.add_argument("--pairs", type=int, default=3, help="runs of each tree, interleaved (default 3)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10, the default run)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.duration <= 0:
        p.error("--pairs and --duration must be positive")
    run_args = ["--duration", str(args.duration)]
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        where = Path(d)
        before = build_worktree(args.rev, where)
        try:
            rows: dict[str, list[dict]] = {"before": [], "after": []}
            for i in range(args.pairs):
                for name, tree in (("before", before), ("after", ROOT)) if i % 2 == 0 else \
                        (("after", ROOT), ("before", before)):
                    rows[name].append(one_run(tree, where / f"{name}.state", run_args))
                    if not args.json:
                        print(f"  {name:6} run {len(rows[name])}: {rows[name][-1]['calls_per_s']:.0f} "
                              f"get_ksm_page/s", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                           capture_output=True)
    out: dict = {"rev": args.rev, "pairs": args.pairs, "duration_s": args.duration}
    for name, rs in rows.items():
        xs = [r["calls_per_s"] for r in rs]
        out[name] = {"calls_per_s_mean": statistics.mean(xs), "calls_per_s": xs,
                     "ksmd_scanned_per_s_mean": statistics.mean(r["ksmd_scanned_per_s"] for r in rs),
                     "violations": sum(r["violations"] for r in rs)}
    out["ratio_after_over_before"] = out["after"]["calls_per_s_mean"] / out["before"]["calls_per_s_mean"]
    out["within_10_percent"] = abs(out["ratio_after_over_before"] - 1) <= 0.10
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for name in ("before", "after"):
            o = out[name]
            print(f"{name:6}: {o['calls_per_s_mean']:.0f} get_ksm_page/s "
                  f"({', '.join(f'{x:.0f}' for x in o['calls_per_s'])}), ksmd "
                  f"{o['ksmd_scanned_per_s_mean']:.0f} slots/s, violations {o['violations']}")
        print(f"after/before: {out['ratio_after_over_before']:.3f}"
              f" ({'within' if out['within_10_percent'] else 'NOT within'} 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
