"""ksm-emu run: the emulation's command line (the processes are
emu.supervise's, the limits emu.runspec's, the summary emu.report's)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from ..check import RUN_CHECKS
from ..cliutil import (
    UserError,
    add_config_args,
    checks_arg,
    config_from_args,
    cpu_arg,
    distinct_outputs,
    number,
    print_json,
)
from ..machine import MachineError
from ..mm.protocol import PROTOCOLS
from ..runspec import (
    MAX_HOLD_US,
    MAX_PAGES_TO_SCAN,
    MAX_SLEEP_MS,
    MAX_WINDOW_US,
    MIN_PAGES,
    LimitError,
    check_allocators,
    check_pages,
)
from ..statefile import STATE_DIR_ENV


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the emulation and report (default: x86_64, 2.6.33, keyhole, 10 s)")
    add_config_args(r)
    g = r.add_argument_group("emulation")
    g.add_argument("--protocol", default="keyhole", choices=list(PROTOCOLS),
                   help="keyhole (2.6.33), refcount (before it), or a deliberately broken variant: "
                        "keyhole-no-recheck, keyhole-no-clear (default: keyhole)")
    g.add_argument("--pages", type=number, default=65536, metavar="N",
                   help=f"struct pages (4 KiB each emulated; default 65536 = 256 MiB; min {MIN_PAGES})")
    g.add_argument("--duration", type=float, default=10.0, metavar="SECONDS", help="default 10")
    g.add_argument("--allocators", type=number, default=2, metavar="N", help="allocator processes (default 2)")
    g.add_argument("--cpu", type=cpu_arg, action="append", default=[], metavar="ROLE=ID",
                   help="emulated CPU id of a role: ksmd, reclaim, allocator (the first), allocator.N; "
                        "repeatable, once per role (default: 0, 1, 2, ... in that order; the roles not "
                        "named take the lowest free CPUs, so allocator=3 moves allocator.1 to CPU 2)")
    g.add_argument("--ksmd-pages", type=number, default=100, metavar="N",
                   help=f"ksmd's pages_to_scan per wake-up (kernel default 100; 1..{MAX_PAGES_TO_SCAN})")
    g.add_argument("--ksmd-sleep-ms", type=float, default=20.0, metavar="MS",
                   help=f"ksmd's sleep_millisecs (kernel default 20; 0..{MAX_SLEEP_MS:g})")
    g.add_argument("--seed", type=number, default=1,
                   help="random seed of the roles' choices (default 1); the processes' interleaving "
                        "is the OS scheduler's, so two runs with one seed differ")
    g.add_argument("--state", metavar="FILE",
                   help="the machine file, kept after the run (default: run-PID.state in a directory "
                        f"private to you, ${STATE_DIR_ENV} or /dev/shm/ksm-emu-UID; an existing FILE is "
                        "refused without --overwrite)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing --state FILE if it is a ksm-emu state file no live run holds, "
                        "and an existing --trace FILE")
    g.add_argument("--trace", metavar="FILE",
                   help="write a Chrome trace-event JSON of the run to FILE (open it in ui.perfetto.dev or "
                        "chrome://tracing): a track per role's CPU with its kernel functions, page-table locks "
                        "held and ksmd's scan batches, counter tracks, each violation an instant event; each "
                        "role keeps its events in a ring in the state file, so `kmem --history` reads them too")
    g.add_argument("--window-us", type=float, default=0.0, metavar="US",
                   help="delay inside get_ksm_page between the first mapping check and "
                        f"get_page_unless_zero, as an interrupt there would (default 0; max {MAX_WINDOW_US:g})")
    g.add_argument("--ptl-hold-us", type=float, default=20.0, metavar="US",
                   help=f"how long an allocator holds a page-table lock per fault (default 20; max {MAX_HOLD_US:g})")
    g.add_argument("--checks", type=checks_arg, default=RUN_CHECKS, metavar="LIST",
                   help="checkers on the roles' accesses: lockdep (the lock each plain access needs, lock "
                        "order), or none (default: lockdep; kcsan needs explore's controlled schedule)")
    r.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    r.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    r.add_argument("-v", "--verbose", action="store_true", help="log every role's start and stop")
    r.set_defaults(func=cmd_run)


def limits(*checks: Callable[[], None]) -> None:
    """emu.runspec's limits, as the flag's one-line error (its field, dashed)."""
    for check in checks:
        try:
            check()
        except LimitError as e:
            raise UserError(f"--{e.name.replace('_', '-')} {e.value}: {e.want}") from None


def _check_float(flag: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    if not math.isfinite(value) or value < lo or (lo_open and value == lo) or value > hi:
        raise UserError(f"{flag} {value:g}: want a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")


def make_spec(args: argparse.Namespace):
    from ..runspec import RunSpec, assign_cpus

    cfg = config_from_args(args)
    limits(lambda: check_pages(args.pages, cfg), lambda: check_allocators(args.allocators))
    _check_float("--duration", args.duration, 0, 24 * 3600, lo_open=True)
    if not 1 <= args.ksmd_pages <= MAX_PAGES_TO_SCAN:
        raise UserError(f"--ksmd-pages {args.ksmd_pages}: want 1..{MAX_PAGES_TO_SCAN}")
    _check_float("--ksmd-sleep-ms", args.ksmd_sleep_ms, 0, MAX_SLEEP_MS)
    _check_float("--window-us", args.window_us, 0, MAX_WINDOW_US)
    _check_float("--ptl-hold-us", args.ptl_hold_us, 0, MAX_HOLD_US)
    roles = {"ksmd", "reclaim"} | {f"allocator.{i}" for i in range(args.allocators)}
    requested: dict[str, int] = {}
    for role, cpu in args.cpu:
        role = "allocator.0" if role == "allocator" else role
        if role not in roles:
            raise UserError(f"--cpu: unknown role {role!r}; choose from {', '.join(sorted(roles))}")
        if role in requested:
            raise UserError(f"--cpu {role} given twice ({requested[role]} and {cpu}); once per role")
        if not 0 <= cpu < cfg.nr_cpus:
            raise UserError(f"--cpu {role}={cpu}: CPU ids are 0..{cfg.nr_cpus - 1} (NR_CPUS={cfg.nr_cpus})")
        requested[role] = cpu
    if len(set(requested.values())) != len(requested):
        raise UserError("--cpu: two roles on one CPU")
    if args.overwrite and args.state is None and args.trace is None:
        raise UserError("--overwrite needs --state FILE or --trace FILE (a default state file is always new)")
    distinct_outputs(("--state", args.state), ("--trace", args.trace))
    trace = _trace_path(args)
    if "kcsan" in args.checks:
        raise UserError("--checks kcsan: data races are found under a controlled schedule; "
                        "use ksm-emu explore or replay (run takes lockdep or none)")
    spec = RunSpec(cfg=cfg, protocol=args.protocol, pages=args.pages, duration=args.duration,
                   allocators=args.allocators, pages_to_scan=args.ksmd_pages,
                   sleep_ms=args.ksmd_sleep_ms, seed=args.seed, state=args.state, overwrite=args.overwrite,
                   window_us=args.window_us, ptl_hold_us=args.ptl_hold_us,
                   progress=not args.no_progress, checks=args.checks, trace=trace)
    try:
        spec.cpus = assign_cpus(spec, requested)
    except ValueError as e:
        raise UserError(str(e)) from None
    return spec


def _trace_path(args: argparse.Namespace) -> str | None:
    """--trace FILE, checked before anything runs."""
    from ..trace.output import TraceFileError, check_trace_path

    if args.trace is None:
        return None
    try:
        return str(check_trace_path(args.trace, args.overwrite))
    except TraceFileError as e:
        raise UserError(str(e)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from ..report import render_summary
    from ..supervise import run

    spec = make_spec(args)
    try:
        outcome = run(spec, logging.INFO if args.verbose else logging.WARNING)
    except MachineError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:  # before the roles started: nothing to summarise, nothing left
        sys.stderr.write("ksm-emu: interrupted during setup\n")
        return 130
    if outcome.summary is None:
        sys.stderr.write(f"ksm-emu: error: {outcome.error}\n")
        return outcome.exit_code
    from ..mm.testbreak import BROKEN

    if BROKEN:  # a run of deliberately broken kernel code says so in its header
        outcome.summary["test_break"] = sorted(BROKEN)
    if args.json:
        print_json(outcome.summary)
    else:
        print(render_summary(outcome.summary))
    return outcome.exit_code
