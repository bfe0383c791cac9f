"""ksm-emu: run the emulation (ksmd, reclaim, allocators racing on struct pages)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .check.shadow import STATE_NAMES
from .cliutil import Parser, UserError, add_config_args, config_from_args, number, print_json, run_main
from .explore.cli import add_parsers as add_explore_parsers
from .machine import MachineError
from .mm.protocol import PROTOCOLS
from .runspec import DEFAULT_STATE

MIN_PAGES = 1024


def _cpu_arg(text: str) -> tuple[str, int]:
    role, sep, cpu = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"bad --cpu {text!r}: want ROLE=ID, e.g. allocator=3 or allocator.1=5")
    try:
        return role.strip(), int(cpu, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --cpu {text!r}: {cpu!r} is not a CPU number") from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ksm-emu", description=(
        "Emulate Linux 2.6.32/2.6.33 KSM's keyhole reference: ksmd, reclaim and allocator "
        "processes race on byte-exact struct pages in a shared mapping; every get_ksm_page is "
        "checked against ground truth."))
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True
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
    g.add_argument("--cpu", type=_cpu_arg, action="append", default=[], metavar="ROLE=ID",
                   help="emulated CPU id of a role: ksmd, reclaim, allocator (the first), allocator.N; "
                        "repeatable (default: 0, 1, 2, ... in that order)")
    g.add_argument("--ksmd-pages", type=number, default=100, metavar="N",
                   help="ksmd's pages_to_scan per wake-up (kernel default 100)")
    g.add_argument("--ksmd-sleep-ms", type=float, default=20.0, metavar="MS",
                   help="ksmd's sleep_millisecs (kernel default 20)")
    g.add_argument("--seed", type=number, default=1, help="random seed of the roles (default 1)")
    g.add_argument("--state", default=DEFAULT_STATE, metavar="FILE",
                   help="the machine file, kept after the run (default /dev/shm/ksm-emu.state; "
                        "an old state file there is replaced, any other file is refused)")
    g.add_argument("--window-us", type=float, default=0.0, metavar="US",
                   help="delay inside get_ksm_page between the first mapping check and "
                        "get_page_unless_zero, as an interrupt there would (default 0)")
    g.add_argument("--ptl-hold-us", type=float, default=20.0, metavar="US",
                   help="how long an allocator holds a page-table lock per fault (default 20)")
    r.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    r.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    r.add_argument("-v", "--verbose", action="store_true", help="log every role's start and stop")
    r.set_defaults(func=cmd_run)

    k = sub.add_parser("kmem", help="crash-style 'kmem -p' rows of a machine file's struct pages")
    k.add_argument("state", nargs="?", default=DEFAULT_STATE, metavar="STATE",
                   help="machine file (default /dev/shm/ksm-emu.state, the last run's)")
    k.add_argument("--pfn", default="0", metavar="N[:COUNT]",
                   help="first pfn and how many (default: all from 0)")
    k.add_argument("--is", dest="kind", choices=STATE_NAMES, help="only pages that really are this")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_kmem)
    add_explore_parsers(sub)
    return p


def make_spec(args: argparse.Namespace):
    from .runspec import RunSpec, assign_cpus

    cfg = config_from_args(args)
    if args.pages < MIN_PAGES:
        raise UserError(f"--pages {args.pages} is too few; at least {MIN_PAGES}")
    if cfg.word_bytes == 4 and args.pages > (1 << 20):
        raise UserError(f"--pages {args.pages}: a 32-bit lowmem direct map holds at most {1 << 20} pages here")
    if not 0 < args.duration <= 24 * 3600:
        raise UserError(f"--duration {args.duration}: want 0 < SECONDS <= 86400")
    if not 1 <= args.allocators <= 32:
        raise UserError(f"--allocators {args.allocators}: want 1..32")
    if args.ksmd_pages < 1 or args.ksmd_sleep_ms < 0 or args.window_us < 0 or args.ptl_hold_us < 0:
        raise UserError("--ksmd-pages must be positive; --ksmd-sleep-ms, --window-us, --ptl-hold-us not negative")
    roles = {"ksmd", "reclaim"} | {f"allocator.{i}" for i in range(args.allocators)}
    requested: dict[str, int] = {}
    for role, cpu in args.cpu:
        role = "allocator.0" if role == "allocator" else role
        if role not in roles:
            raise UserError(f"--cpu: unknown role {role!r}; choose from {', '.join(sorted(roles))}")
        if not 0 <= cpu < cfg.nr_cpus:
            raise UserError(f"--cpu {role}={cpu}: CPU ids are 0..{cfg.nr_cpus - 1} (NR_CPUS={cfg.nr_cpus})")
        requested[role] = cpu
    if len(set(requested.values())) != len(requested):
        raise UserError("--cpu: two roles on one CPU")
    state_dir = os.path.dirname(os.path.abspath(args.state))
    if not os.path.isdir(state_dir):
        raise UserError(f"--state {args.state}: directory {state_dir} does not exist")
    spec = RunSpec(cfg=cfg, protocol=args.protocol, pages=args.pages, duration=args.duration,
                   allocators=args.allocators, pages_to_scan=args.ksmd_pages,
                   sleep_ms=args.ksmd_sleep_ms, seed=args.seed, state=args.state,
                   window_us=args.window_us, ptl_hold_us=args.ptl_hold_us,
                   progress=not args.no_progress)
    try:
        spec.cpus = assign_cpus(spec, requested)
    except ValueError as e:
        raise UserError(str(e)) from None
    return spec


def cmd_run(args: argparse.Namespace) -> int:
    from .report import render_summary
    from .supervise import run

    spec = make_spec(args)
    try:
        outcome = run(spec, logging.INFO if args.verbose else logging.WARNING)
    except MachineError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:  # before the roles started: nothing to summarise
        sys.stderr.write("ksm-emu: interrupted during setup\n")
        return 130
    if args.json:
        print_json(outcome.summary)
    else:
        print(render_summary(outcome.summary))
    return outcome.exit_code


def cmd_kmem(args: argparse.Namespace) -> int:
    from . import kmem
    from .machine import attach

    first, _, count = args.pfn.partition(":")
    try:
        start, n = int(first, 0), (int(count, 0) if count else None)
    except ValueError:
        raise UserError(f"bad --pfn {args.pfn!r}: want N or N:COUNT") from None
    try:
        m = attach(args.state)
    except MachineError as e:
        raise UserError(str(e)) from None
    try:
        if not 0 <= start < m.nr_pages or (n is not None and n < 1):
            raise UserError(f"--pfn {args.pfn}: this machine has pfns 0..{m.nr_pages - 1}")
        rs = kmem.rows(m, start, n if n is not None else m.nr_pages, args.kind)
        if args.json:
            print_json({"state": args.state, "config": m.cfg.as_dict(), "pages": rs})
        else:
            print(kmem.render(m, rs))
    finally:
        m.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("ksm-emu", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
