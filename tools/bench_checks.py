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

from pathlib import Path

from benchlib import ab_lines, counts_per_s, main_guard, measure, parser, print_json, run_json

SETTINGS = {"off": "none", "lockdep": "lockdep"}


def one_run(where: Path, args: list[str], kind: str) -> dict:
    d = run_json(where / "s.state", ["--checks", SETTINGS[kind], *args])
    return {**counts_per_s(d), "lockdep_findings": d["checks"]["lockdep_total"]}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "with lockdep and without")
    args = p.parse_args(argv)
    out = {"default_checks_of_run": "lockdep", **measure(p, args, ("off", "lockdep"), one_run, "bench_checks")}
    if args.json:
        print_json(out)
        return 0
    print("\n".join(ab_lines(out, ("off", "lockdep"))))
    return 0


if __name__ == "__main__":
    main_guard(main, "bench_checks")
