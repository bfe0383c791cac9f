#!/usr/bin/env python3
"""Run throughput with --trace over without, side by side on this machine.

Alternates `ksm-emu run`s of this tree with and without `--trace` (same
flags, interleaved so drift hits both alike) and reports get_ksm_page calls
(ok + stale) per second of each, ksmd's slots scanned per second, and the
ratio traced/untraced (the goal: >= 0.8). Two workloads: the default run
(ksmd sleeps 20 ms per 100 slots) and a busy ksmd (--ksmd-sleep-ms 0), where
ksmd's own CPU time, and so the hooks' cost, decides the rate. Also the time
the launcher takes to write the trace after the run. A table, or one JSON
object with --json. State and trace files live in one temporary directory,
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"default": [], "busy-ksmd": ["--ksmd-sleep-ms", "0"]}


def one_run(where: Path, args: list[str], trace: bool) -> dict:
    state, out = where / "s.state", where / "t.json"
    extra = ["--trace", str(out)] if trace else []
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--json", "--no-progress", "--state", str(state),
                        *args, *extra], cwd=ROOT, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    if r.returncode not in (0, 1):
        raise RuntimeError(f"run failed ({r.returncode}): {r.stderr[-500:]}")
    d = json.loads(r.stdout)
    state.unlink(missing_ok=True)
    size = out.stat().st_size if trace else 0
    out.unlink(missing_ok=True)
    c, s = d["counts"], d["duration_s"]
    t = d.get("trace", {})
    return {"calls_per_s": (c["get_ksm_page_ok"] + c["get_ksm_page_stale"]) / s,
            "ksmd_scanned_per_s": c["ksmd_scanned"] / s, "violations": d["violations_total"],
            "after_run_s": round(wall - s, 2), "trace_events": t.get("events", 0),
            "trace_dropped": t.get("dropped", 0), "trace_bytes": size}


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3, help="runs with and without --trace per workload (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--pages", type=int, default=65536, help="--pages of each run (default 65536, the default run)")
    p.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both", help="default: both")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.duration <= 0 or args.pages < 1024:
        p.error("--pairs and --duration must be positive, --pages at least 1024")
    signal.signal(signal.SIGTERM, _stop)
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    out: dict = {"pairs": args.pairs, "duration_s": args.duration, "pages": args.pages, "goal": 0.8, "workloads": {}}
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        for name in names:
            flags = ["--duration", str(args.duration), "--pages", str(args.pages), *WORKLOADS[name]]
            rows: dict[str, list[dict]] = {"untraced": [], "traced": []}
            for i in range(args.pairs):
                for kind in (("untraced", "traced") if i % 2 == 0 else ("traced", "untraced")):
                    rows[kind].append(one_run(Path(d), flags, kind == "traced"))
                    print(f"  {name}: {kind:8} run {len(rows[kind])}: {rows[kind][-1]['calls_per_s']:.0f} "
                          f"get_ksm_page/s", file=sys.stderr)
            w: dict = {"flags": flags}
            for kind, rs in rows.items():
                w[kind] = {"calls_per_s_median": statistics.median(r["calls_per_s"] for r in rs),
                           "ksmd_scanned_per_s_median": statistics.median(r["ksmd_scanned_per_s"] for r in rs),
                           "runs": rs}
            w["ratio"] = w["traced"]["calls_per_s_median"] / w["untraced"]["calls_per_s_median"]
            w["ratio_ksmd_scanned"] = (w["traced"]["ksmd_scanned_per_s_median"]
                                       / w["untraced"]["ksmd_scanned_per_s_median"])
            w["meets_goal"] = w["ratio"] >= 0.8
            out["workloads"][name] = w
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    for name, w in out["workloads"].items():
        print(f"{name} ({' '.join(w['flags'])}):")
        for kind in ("untraced", "traced"):
            o = w[kind]
            extra = ""
            if kind == "traced":
                r = o["runs"][0]
                extra = (f"; trace {r['trace_events']} events ({r['trace_dropped']} dropped), "
                         f"{r['trace_bytes'] >> 20} MiB, written in {r['after_run_s']} s after the run")
            print(f"  {kind:8}: {o['calls_per_s_median']:.0f} get_ksm_page/s, ksmd "
                  f"{o['ksmd_scanned_per_s_median']:.0f} slots/s (medians of "
                  f"{', '.join(format(x['calls_per_s'], '.0f') for x in o['runs'])}){extra}")
        print(f"  traced/untraced: {w['ratio']:.3f} get_ksm_page/s, {w['ratio_ksmd_scanned']:.3f} slots/s "
              f"({'meets' if w['meets_goal'] else 'MISSES'} the 0.8 goal)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("bench_trace: interrupted\n")
        sys.exit(130)
