"""ksm-emu experiment reclaim: argument parsing and output only (the
measuring is emu.experiment.reclaim, the picture emu.experiment.plot)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..cliutil import (
    UserError,
    add_config_args,
    check_output_path,
    config_from_args,
    number,
    print_json,
    stop_signals_interrupt,
    write_beside,
)
from .reclaim import DEFAULT_DURATION, DEFAULT_PAGES, DEFAULT_RATES, DEFAULT_SLEEP_MS, PROTOCOLS

MAX_RUN_S = 3600.0


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(x, 0) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --rates {text!r}: want comma-separated integers, e.g. 25,100") from None
    return rates


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("experiment", help="measured experiments over many runs (reclaim: keyhole vs refcount)")
    esub = e.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(e))
    esub.required = True
    r = esub.add_parser(
        "reclaim", help="time from reclaim's decision to a KSM page on the free list, per protocol and ksmd rate",
        description="For each protocol and ksmd rate (pages_to_scan per sleep), one run; the time from "
                    "reclaim's decision to the KSM page reaching the free list: p50, p99, max, n and the "
                    "pages still pinned at the end. With refcount the page waits for ksmd's next round "
                    "(about half a pass); with the keyhole it is freed at once.")
    add_config_args(r)
    g = r.add_argument_group("experiment")
    g.add_argument("--protocol", action="append", choices=list(PROTOCOLS), metavar="P",
                   help="keyhole or refcount; repeatable (default: both)")
    g.add_argument("--rates", type=_rates, default=DEFAULT_RATES, metavar="N,N,...",
                   help="ksmd's pages_to_scan per sleep, one run each "
                        f"(default {','.join(map(str, DEFAULT_RATES))})")
    g.add_argument("--ksmd-sleep-ms", type=float, default=DEFAULT_SLEEP_MS, metavar="MS",
                   help=f"ksmd's sleep_millisecs in every run (default {DEFAULT_SLEEP_MS:g})")
    g.add_argument("--pages", type=number, default=DEFAULT_PAGES, metavar="N",
                   help=f"struct pages per run (default {DEFAULT_PAGES}: twice as many rmap_items, so ksmd "
                        "completes passes at every default rate)")
    g.add_argument("--duration", type=float, default=DEFAULT_DURATION, metavar="SECONDS",
                   help=f"seconds per run (default {DEFAULT_DURATION:g}; the default grid of 8 runs takes "
                        "about 2.5 minutes)")
    g.add_argument("--allocators", type=number, default=1, metavar="N",
                   help="allocator processes (default 1: with ksmd and reclaim, 3 processes on 2 cores, so "
                        "the times measure the protocol more than the OS scheduler)")
    g.add_argument("--seed", type=number, default=1, help="random seed of the roles' choices (default 1)")
    r.add_argument("--json", action="store_true",
                   help='print {"config": ..., "rows": [{"protocol", "pages_to_scan", "sleep_ms", "pass_s", '
                        '"n", "p50_us", "p99_us", "max_us", "pinned"}]}')
    r.add_argument("--plot", metavar="FILE.png",
                   help="also draw the CDFs (log time axis) and refcount's expected wait into FILE "
                        "(.png, .svg or .pdf; needs matplotlib: pip install 'ksm-emu[plot]')")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --plot FILE")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    r.set_defaults(func=cmd_experiment)


def _plot_path(text: str, overwrite: bool) -> Path:
    from .plot import FORMATS, INSTALL_HINT, available

    p = Path(text)
    if text.endswith(os.sep) or p.suffix.lower() not in FORMATS:
        raise UserError(f"--plot {text!r}: want a file name ending in {', '.join(FORMATS)}")
    check_output_path(p, "--plot", overwrite)
    if not available():
        raise UserError(f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}")
    return p


def plan_from_args(args: argparse.Namespace):
    from ..run.cli import limits
    from ..runspec import MAX_PAGES_TO_SCAN, MAX_SLEEP_MS, check_allocators, check_pages
    from .reclaim import Plan

    cfg = config_from_args(args)
    limits(lambda: check_pages(args.pages, cfg), lambda: check_allocators(args.allocators))
    if not all(1 <= r <= MAX_PAGES_TO_SCAN for r in args.rates) or len(set(args.rates)) != len(args.rates):
        raise UserError(f"--rates {','.join(map(str, args.rates))}: want distinct pages_to_scan in "
                        f"1..{MAX_PAGES_TO_SCAN}")
    if not math.isfinite(args.ksmd_sleep_ms) or not 0 < args.ksmd_sleep_ms <= MAX_SLEEP_MS:
        raise UserError(f"--ksmd-sleep-ms {args.ksmd_sleep_ms:g}: want a number > 0 and <= {MAX_SLEEP_MS:g}")
    if not math.isfinite(args.duration) or not 0 < args.duration <= MAX_RUN_S:
        raise UserError(f"--duration {args.duration:g}: want seconds > 0 and <= {MAX_RUN_S:g}")
    if cfg.nr_cpus < 2 + args.allocators:
        raise UserError(f"NR_CPUS={cfg.nr_cpus} is too few CPUs for {2 + args.allocators} roles")
    protocols = tuple(dict.fromkeys(args.protocol)) if args.protocol else PROTOCOLS
    return Plan(cfg=cfg, pages=args.pages, rates=tuple(args.rates), sleep_ms=args.ksmd_sleep_ms,
                duration=args.duration, allocators=args.allocators, seed=args.seed, protocols=protocols)


def cmd_experiment(args: argparse.Namespace) -> int:
    from ..machine import MachineError
    from ..progress import Ticker, bar
    from . import reclaim as rx

    plan = plan_from_args(args)
    if args.overwrite and args.plot is None:
        raise UserError("--overwrite goes with --plot FILE")
    plot_to = _plot_path(args.plot, args.overwrite) if args.plot is not None else None
    stop_signals_interrupt()
    runs = plan.runs()
    ticker = Ticker(bar(len(runs) * plan.duration, "reclaim experiment", "s", not args.no_progress))
    done = [0]

    def started(protocol: str, rate: int) -> None:
        ticker.b.set_description_str(f"{protocol} {rate}/{plan.sleep_ms:g}ms ({done[0] + 1}/{len(runs)})")
        ticker.start(done[0] * plan.duration, (done[0] + 1) * plan.duration)

    def finished(m: rx.Measured) -> None:
        done[0] += 1
        ticker.settle(done[0] * plan.duration)

    try:
        results = rx.measure(plan, started, finished)
    except MachineError as e:
        raise UserError(str(e)) from None
    except rx.RunFailed as e:
        sys.stderr.write(f"ksm-emu: error: a run failed: {e}\n")
        return 1
    finally:
        ticker.close()
    interrupted = any(m.summary["interrupted"] for m in results)
    if interrupted:  # the run cut short is not a measurement
        results = [m for m in results if not m.summary["interrupted"]]
    if args.json:
        print_json({"config": plan.config(), "rows": [m.row for m in results]})
    else:
        print(rx.table(plan, results))
    if plot_to is not None and results:
        from .plot import plot

        # checked at the start, written at the end: beside it, then renamed over
        # it, so a directory gone or a symlink planted meanwhile is one line
        fmt = plot_to.suffix.lower().lstrip(".")
        write_beside(plot_to, "--plot", args.overwrite, lambda f: plot(plan, results, f, fmt))
        if not args.json:
            print(f"plot: {plot_to}")
    if interrupted:
        sys.stderr.write(f"ksm-emu: interrupted: {len(results)} of {len(runs)} runs measured\n")
        return 130
    bad = [(m.row, why) for m in results if (why := rx.failed(m))]
    for row, why in bad:
        sys.stderr.write(f"ksm-emu: run {row['protocol']} at {row['pages_to_scan']}: {why}\n")
    return 1 if bad else 0
