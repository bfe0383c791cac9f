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

import time
from pathlib import Path

from benchlib import ab_lines, counts_per_s, main_guard, measure, parser, print_json, run_json


def one_run(where: Path, args: list[str], kind: str) -> dict:
    trace = kind == "traced"
    out = where / "t.json"
    t0 = time.monotonic()
    d = run_json(where / "s.state", [*args, *(["--trace", str(out)] if trace else [])])
    wall = time.monotonic() - t0
    size = out.stat().st_size if trace else 0
    out.unlink(missing_ok=True)
    t = d.get("trace", {})
    return {**counts_per_s(d), "after_run_s": round(wall - d["duration_s"], 2), "trace_events": t.get("events", 0),
            "trace_dropped": t.get("dropped", 0), "trace_bytes": size}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "with and without --trace")
    args = p.parse_args(argv)
    out = measure(p, args, ("untraced", "traced"), one_run, "bench_trace")
    if args.json:
        print_json(out)
        return 0
    print("\n".join(ab_lines(out, ("untraced", "traced"), _trace_note)))
    return 0


def _trace_note(kind: str, o: dict) -> str:
    if kind != "traced":
        return ""
    r = o["runs"][0]
    return (f"; trace {r['trace_events']} events ({r['trace_dropped']} dropped), "
            f"{r['trace_bytes'] >> 20} MiB, written in {r['after_run_s']} s after the run")


if __name__ == "__main__":
    main_guard(main, "bench_trace")
