#!/usr/bin/env python3
"""Run throughput with lock-discipline checking (--checks lockdep, run's
default) over without (--checks none), side by side on this machine.

Alternates `ksm-emu run`s of this tree with each setting (same flags,
interleaved so drift hits both alike) and reports get_ksm_page calls (ok +
stale) per second, ksmd's slots scanned per second and the ratio on/off (the
goal: >= 0.8). Two workloads: the default run (ksmd sleeps 20 ms per 100
slots) and a busy ksmd (--ksmd-sleep-ms 0), where ksmd's own CPU time, and
so the checker's cost per plain access, decides the rate. A table, or one
JSON object with --json. State files live in one temporary directory,
removed at the end or when stopped (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"default": [], "busy-ksmd": ["--ksmd-sleep-ms", "0"]}
SETTINGS = {"off": "none", "lockdep": "lockdep"}


def one_run(where: Path, args: list[str], checks: str) -> dict:
    state = where / "s.state"
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--json", "--no-progress", "--state", str(state),
                        "--checks", checks, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"run failed ({r.returncode}): {r.stderr[-500:]}")
    d = json.loads(r.stdout)
    state.unlink(missing_ok=True)
    c, s = d["counts"], d["duration_s"]
    return {"calls_per_s": (c["get_ksm_page_ok"] + c["get_ksm_page_stale"]) / s,
            "ksmd_scanned_per_s": c["ksmd_scanned"] / s, "violations": d["violations_total"],
            "lockdep_findings": d["checks"]["lockdep_total"]}


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3, help="runs of each setting per workload (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--pages", type=int, default=65536, help="--pages of each run (default 65536, the default run)")
    p.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both", help="default: both")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.duration <= 0 or args.pages < 1024:
        p.error("--pairs and --duration must be positive, --pages at least 1024")
    signal.signal(signal.SIGTERM, _stop)
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    out: dict = {"pairs": args.pairs, "duration_s": args.duration, "pages": args.pages, "goal": 0.8,
                 "default_checks_of_run": "lockdep", "workloads": {}}
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        for name in names:
            flags = ["--duration", str(args.duration), "--pages", str(args.pages), *WORKLOADS[name]]
            rows: dict[str, list[dict]] = {k: [] for k in SETTINGS}
            for i in range(args.pairs):
                for kind in (list(SETTINGS) if i % 2 == 0 else list(SETTINGS)[::-1]):
                    rows[kind].append(one_run(Path(d), flags, SETTINGS[kind]))
                    print(f"  {name}: {kind:7} run {len(rows[kind])}: {rows[kind][-1]['calls_per_s']:.0f} "
                          f"get_ksm_page/s", file=sys.stderr)
            w: dict = {"flags": flags}
            for kind, rs in rows.items():
                w[kind] = {"calls_per_s_median": statistics.median(r["calls_per_s"] for r in rs),
                           "ksmd_scanned_per_s_median": statistics.median(r["ksmd_scanned_per_s"] for r in rs),
                           "runs": rs}
            w["ratio"] = w["lockdep"]["calls_per_s_median"] / w["off"]["calls_per_s_median"]
            w["ratio_ksmd_scanned"] = w["lockdep"]["ksmd_scanned_per_s_median"] / w["off"]["ksmd_scanned_per_s_median"]
            w["meets_goal"] = w["ratio"] >= 0.8
            out["workloads"][name] = w
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    for name, w in out["workloads"].items():
        print(f"{name} ({' '.join(w['flags'])}):")
        for kind in SETTINGS:
            o = w[kind]
            print(f"  {kind:7}: {o['calls_per_s_median']:.0f} get_ksm_page/s, ksmd "
                  f"{o['ksmd_scanned_per_s_median']:.0f} slots/s (medians of "
                  f"{', '.join(format(x['calls_per_s'], '.0f') for x in o['runs'])})")
        print(f"  lockdep/off: {w['ratio']:.3f} get_ksm_page/s, {w['ratio_ksmd_scanned']:.3f} slots/s "
              f"({'meets' if w['meets_goal'] else 'MISSES'} the 0.8 goal)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("bench_checks: interrupted\n")
        sys.exit(130)
