#!/usr/bin/env python3
"""Benchmark `ksm-emu kmem` on a big state file: time to the first row and
peak RSS of printing every row (the goal: first row < 1 s, RSS < 200 MB on
4M pages).

Boots a machine of --pages struct pages as `ksm-emu run` does (free list,
page tables, rmap_items) in a temporary directory, runs `ksm-emu kmem` on it
as a user would, reads its output as it comes, and removes the file after,
also when stopped by Ctrl-C or SIGTERM. Prints a table, or one JSON object
with --json. Progress goes to stderr.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from benchlib import base_parser, goals_line, main_guard, print_json, say, scratch

GOAL_FIRST_ROW_S, GOAL_RSS_MB = 1.0, 200


def _say(text: str) -> None:
    say("bench_kmem", text)


def boot_state(path: Path, pages: int) -> float:
    from emu.kconfig import resolve
    from emu.mm.boot import boot

    t0 = time.monotonic()
    boot(path, resolve(), pages).close()
    return time.monotonic() - t0


def measure(path: Path, fmt: list[str]) -> dict:
    """Run kmem in a child whose only child is kmem: its RUSAGE_CHILDREN max RSS
    is kmem's peak. The first row is timed from the start of kmem."""
    probe = ("import resource, subprocess, sys, time\n"
             "t0 = time.monotonic()\n"
             "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
             "p.stdout.readline(); p.stdout.readline()\n"  # the header line, then the first row
             "first = time.monotonic() - t0\n"
             "rows = 1 + sum(1 for _ in p.stdout)\n"
             "p.wait()\n"
             "print(p.returncode, first, time.monotonic() - t0, rows,"
             " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "emu.cli", "kmem", str(path), *fmt],
                       capture_output=True, text=True, check=True)
    code, first, total, rows, peak_kib = r.stdout.split()
    return {"format": "json" if fmt else "text", "exit_code": int(code), "first_row_s": round(float(first), 3),
            "all_rows_s": round(float(total), 1), "lines_after_header": int(rows), "peak_rss_mb": round(int(peak_kib) / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--pages", type=int, default=4 << 20, help="struct pages of the state (default 4M)")
    args = p.parse_args(argv)
    if args.pages < 1024:
        p.error("--pages must be at least 1024")
    with scratch("bench-kmem-") as d:
        path = Path(d) / "big.state"
        _say(f"booting {args.pages} pages in {path} ...")
        boot_s = boot_state(path, args.pages)
        _say(f"booted in {boot_s:.1f} s; kmem, text ...")
        runs = [measure(path, [])]
        _say("kmem --json ...")
        runs.append(measure(path, ["--json"]))
        size = path.stat().st_size
    r = {"pages": args.pages, "state_mb": round(size / 2**20), "boot_s": round(boot_s, 1), "kmem": runs,
         "self_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
         "goals": {f"first row < {GOAL_FIRST_ROW_S:g} s": all(x["first_row_s"] < GOAL_FIRST_ROW_S for x in runs),
                   f"peak RSS < {GOAL_RSS_MB} MB": all(x["peak_rss_mb"] < GOAL_RSS_MB for x in runs)}}
    if args.json:
        print_json(r)
        return 0
    print(f"kmem on {r['pages']} pages ({r['state_mb']} MiB state file, booted in {r['boot_s']} s):")
    for x in runs:
        print(f"  {x['format']:5} first row {x['first_row_s']} s, all {x['lines_after_header']} lines in {x['all_rows_s']} s, "
              f"peak RSS {x['peak_rss_mb']} MB, exit {x['exit_code']}")
    print(goals_line(r["goals"]))
    return 0


if __name__ == "__main__":
    main_guard(main, "bench_kmem")
