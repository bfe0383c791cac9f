"""What the benchmarks share: the parser with --json and the JSON output,
progress on stderr, SIGTERM as Ctrl-C and the exit that says what was
removed, one scratch directory (in /dev/shm where there is one) removed at the
end, `ksm-emu run`'s command line and `ksm-emu run --json` as a function, the
goals line, and the A/B loop: `ksm-emu run`s of two settings alternated per
workload (so drift hits both alike), with medians and the B/A ratio
(bench_checks.py, bench_trace.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"default": [], "busy-ksmd": ["--ksmd-sleep-ms", "0"]}


def say(name: str, text: str) -> None:
    """A progress line on stderr, named for the benchmark."""
    sys.stderr.write(f"{name}: {text}\n")
    sys.stderr.flush()


def _stop(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM stops a benchmark as Ctrl-C does, so its scratch files are removed."""
    signal.signal(signal.SIGTERM, _stop)


def scratch(prefix: str = "bench-") -> tempfile.TemporaryDirectory:
    """A temporary directory for state files: in /dev/shm where there is one (a run's file is its memory)."""
    return tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix=prefix)


def run_command(flags: list[str]) -> list[str]:
    """`ksm-emu run` with `flags`, as this checkout's Python runs it."""
    return [sys.executable, "-m", "emu.cli", "run", *flags]


def run_json(state: Path, flags: list[str], timeout: float = 900) -> dict:
    """`ksm-emu run --json` with `flags` into the state file `state` (removed after); its summary."""
    r = subprocess.run(run_command(["--json", "--no-progress", "--state", str(state), *flags]),
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    state.unlink(missing_ok=True)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"run failed ({r.returncode}): {r.stderr[-500:]}")
    return json.loads(r.stdout)


def goals_line(goals: Mapping[str, bool]) -> str:
    return "goals: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in goals.items())


def base_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser, described by its docstring's first line, with --json."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return p


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    print()


def parser(doc: str, what: str) -> argparse.ArgumentParser:
    """The A/B loop's parser."""
    p = base_parser(doc)
    p.add_argument("--pairs", type=int, default=3, help=f"runs {what} per workload (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--pages", type=int, default=65536, help="--pages of each run (default 65536, the default run)")
    p.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both", help="default: both")
    return p


def measure(p: argparse.ArgumentParser, args: argparse.Namespace, kinds: tuple[str, str],
            one_run: Callable[[Path, list[str], str], dict], label: str) -> dict:
    """Alternate one_run(dir, flags, kind) for kinds (A, B) per workload; B/A ratios."""
    if args.pairs < 1 or args.duration <= 0 or args.pages < 1024:
        p.error("--pairs and --duration must be positive, --pages at least 1024")
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    a, b = kinds
    out: dict = {"pairs": args.pairs, "duration_s": args.duration, "pages": args.pages, "goal": 0.8, "workloads": {}}
    with scratch() as d:
        for name in names:
            flags = ["--duration", str(args.duration), "--pages", str(args.pages), *WORKLOADS[name]]
            rows: dict[str, list[dict]] = {a: [], b: []}
            for i in range(args.pairs):
                for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                    rows[kind].append(one_run(Path(d), flags, kind))
                    print(f"  {label}: {name}: {kind:8} run {len(rows[kind])}: "
                          f"{rows[kind][-1]['calls_per_s']:.0f} get_ksm_page/s", file=sys.stderr)
            w: dict = {"flags": flags}
            for kind, rs in rows.items():
                w[kind] = {"calls_per_s_median": statistics.median(r["calls_per_s"] for r in rs),
                           "ksmd_scanned_per_s_median": statistics.median(r["ksmd_scanned_per_s"] for r in rs),
                           "runs": rs}
            w["ratio"] = w[b]["calls_per_s_median"] / w[a]["calls_per_s_median"]
            w["ratio_ksmd_scanned"] = w[b]["ksmd_scanned_per_s_median"] / w[a]["ksmd_scanned_per_s_median"]
            w["meets_goal"] = w["ratio"] >= 0.8
            out["workloads"][name] = w
    return out


def ab_lines(out: dict, kinds: tuple[str, str], extra: Callable[[str, dict], str] = lambda kind, o: "") -> list[str]:
    """measure()'s result as text: per workload each kind's medians (and what
    `extra` adds), then B/A against the 0.8 goal."""
    a, b = kinds
    width = max(len(k) for k in kinds)
    lines = []
    for name, w in out["workloads"].items():
        lines.append(f"{name} ({' '.join(w['flags'])}):")
        for kind in kinds:
            o = w[kind]
            lines.append(f"  {kind:{width}}: {o['calls_per_s_median']:.0f} get_ksm_page/s, ksmd "
                         f"{o['ksmd_scanned_per_s_median']:.0f} slots/s (medians of "
                         f"{', '.join(format(x['calls_per_s'], '.0f') for x in o['runs'])}){extra(kind, o)}")
        lines.append(f"  {b}/{a}: {w['ratio']:.3f} get_ksm_page/s, {w['ratio_ksmd_scanned']:.3f} slots/s "
                     f"({'meets' if w['meets_goal'] else 'MISSES'} the 0.8 goal)")
    return lines


def counts_per_s(d: dict) -> dict:
    """A run summary's rates: get_ksm_page calls (ok + stale) and ksmd's slots, per second."""
    c, s = d["counts"], d["duration_s"]
    return {"calls_per_s": (c["get_ksm_page_ok"] + c["get_ksm_page_stale"]) / s,
            "ksmd_scanned_per_s": c["ksmd_scanned"] / s, "violations": d["violations_total"]}


def main_guard(main: Callable[[], int], name: str) -> None:
    """Run a benchmark's main: Ctrl-C or SIGTERM ends it with 130, its scratch
    directory removed on the way out."""
    stop_on_sigterm()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say(name, "stopped; its temporary files are removed")
        sys.exit(130)
