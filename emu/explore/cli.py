"""ksm-emu explore and ksm-emu replay: argument parsing and the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..check import EXPLORE_CHECKS
from ..cliutil import (
    UserError,
    add_config_args,
    checks_arg,
    config_from_args,
    cpu_arg,
    distinct_outputs,
    json_config,
    number,
    print_json,
    read_regular_file,
)
from ..kconfig import KERNELS, ConfigError
from ..machfile import MachineError
from ..mm.protocol import PROTOCOLS
from .api import _cpus as _role_cpus
from .dpor import Nondeterminism
from .schedule import MAGIC, MAGIC_MODEL, ScheduleError
from .stop import Stop, catching
from .strategies import ENDLESS_DEFAULT, MAX_DEPTH, SAMPLING, STRATEGIES
from .tso import BARRIERS, MODELS, check_cpus, for_arch, model_name, parse_model


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from .scenarios import SCENARIOS

    e = sub.add_parser("explore", help="explore a scenario's interleavings on purpose (DPOR by default)",
                       description="Run a small scenario's roles under a controlled schedule: every access "
                                   "to the emulated kernel bytes is a scheduling point. Exit 0: no violation "
                                   "(complete: in no interleaving), 1: a violation (its timeline and replay "
                                   "string are printed), 2: a mistake in the input.")
    add_config_args(e, kernel_default=None, kernel_help="both with --all, else 2.6.33",
                    arch_help="x86_64; with --all, every arch")
    g = e.add_argument_group("exploration")
    g.add_argument("--scenario", choices=list(SCENARIOS), metavar="NAME",
                   help=f"{', '.join(SCENARIOS)} (default stale-node, with --all pagetable-reuse; "
                        "--list-scenarios says what each does)")
    g.add_argument("--protocol", default="keyhole", choices=list(PROTOCOLS),
                   help="keyhole (2.6.33), refcount, or a broken variant (default keyhole)")
    g.add_argument("--strategy", default="dpor", choices=STRATEGIES,
                   help="dpor (default: one schedule per equivalence class, complete), dfs (every "
                        "interleaving; --preemption-bound K), pct (--depth D, --seed S), random (--seed S)")
    g.add_argument("--memory-model", default="sc", choices=(*MODELS, "arch"),
                   help="sc (default: one interleaving of every access), tso (x86's store buffers: each "
                        "CPU's stores reach memory later, flushes are scheduling choices of their own), lkmm "
                        "(the kernel's model on the store side: stores to different words reach memory in any "
                        "order the code's barriers allow; loads in order; docs/memory-models.md) or arch "
                        "(the port's: tso for x86, s390x and sparc64; lkmm for ppc, arm and mips)")
    g.add_argument("--drop-barrier", action="append", default=[], choices=list(BARRIERS), metavar="NAME",
                   help=f"with --memory-model tso or lkmm: run that site without its barrier "
                        f"({', '.join(BARRIERS)}; spin_unlock under lkmm only); repeatable")
    g.add_argument("--barriers", action="store_true",
                   help="the table of which barriers the keyhole protocol needs: each dropped in turn, "
                        "explored under tso and lkmm over pagetable-reuse and stale-node (or --scenario's; "
                        "--time-limit per cell, default 60 s); exit 0")
    g.add_argument("--preemption-bound", type=number, metavar="K", help="dfs: at most K preemptions")
    g.add_argument("--depth", type=number, metavar="D", help="pct: the bug depth it aims at (default 3)")
    g.add_argument("--seed", type=number, metavar="S", help="pct, random: the random seed (default 0)")
    g.add_argument("--schedules", type=number, metavar="N",
                   help=f"stop after N schedules (default: dpor and dfs until complete; pct and random, which "
                        f"never are, {ENDLESS_DEFAULT} unless --time-limit is given)")
    g.add_argument("--time-limit", type=float, metavar="SECONDS", help="stop after this long (default: none)")
    g.add_argument("--cpu", type=cpu_arg, action="append", default=[], metavar="ROLE=ID",
                   help="emulated CPU of a role (default 0, 1, 2 in the scenario's order)")
    g.add_argument("--minimize", action="store_true", help="shorten the counterexample: fewer preemptions")
    g.add_argument("--keep-going", action="store_true",
                   help="go on after a violation: the first counterexample of each kind of finding")
    _add_outputs(g, state="keep the machine file: the final state of the counterexample's replay",
                 trace="the counterexample's replay (with no violation: the first schedule's)")
    g.add_argument("--all", action="store_true",
                   help="pagetable-reuse on every row of `ksm-layout hazard --all` (same flags): the "
                        "static and dynamic verdicts side by side; exit 1 on a disagreement")
    g.add_argument("--max-mem", type=number, metavar="BYTES", help="with --all: the direct map's size, as hazard")
    e.add_argument("--list-scenarios", action="store_true", help="print the scenarios, one line each, and exit")
    e.add_argument("--json", action="store_true", help="one JSON object")
    e.set_defaults(func=cmd_explore)

    r = sub.add_parser("replay", help="re-run a counterexample's schedule exactly",
                       description="Re-execute a schedule printed by explore (the string, or its --json "
                                   "output file): the same timeline and findings every time. Exit 0 when "
                                   "it holds, 1 on a violation, 2 on a bad string.")
    r.add_argument("schedule", metavar="STRING|FILE.json")
    _add_outputs(r, state="keep the machine file with the replay's final state", trace="the replay")
    r.add_argument("--json", action="store_true", help="one JSON object: schedule, holds, violations, timeline")
    r.set_defaults(func=cmd_replay)


def _add_outputs(g: argparse._ActionsContainer, state: str, trace: str) -> None:
    """The flags explore and replay share: the files they keep, and the checkers."""
    g.add_argument("--state", metavar="FILE", help=state)
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing --state FILE if it is a ksm-emu state file no live run holds, "
                        "and an existing --trace FILE")
    g.add_argument("--trace", metavar="FILE",
                   help=f"write {trace} as Chrome trace-event JSON to FILE, for ui.perfetto.dev or "
                        "chrome://tracing; time is the step number")
    g.add_argument("--checks", type=checks_arg, default=EXPLORE_CHECKS, metavar="LIST",
                   help="checkers on every execution: lockdep (the lock each plain access needs, lock "
                        "order), kcsan (data races by happens-before), or none (default: lockdep,kcsan)")


def _check_flags(args: argparse.Namespace) -> None:
    args.table_scenarios = (args.scenario,) if args.scenario else None  # --barriers: the default pair
    if args.scenario is None:
        args.scenario = "pagetable-reuse" if args.all else "stale-node"
    elif args.all and args.scenario != "pagetable-reuse":
        raise UserError(f"--all runs pagetable-reuse over the hazard matrix; not --scenario {args.scenario}")
    s = args.strategy
    if args.preemption_bound is not None and s != "dfs":
        raise UserError("--preemption-bound goes with --strategy dfs")
    if args.depth is not None and s != "pct":
        raise UserError("--depth goes with --strategy pct")
    if args.seed is not None and s not in SAMPLING:
        raise UserError(f"--seed goes with --strategy pct or random; {s} is deterministic")
    for flag, value in (("--preemption-bound", args.preemption_bound), ("--schedules", args.schedules)):
        if value is not None and value < (0 if flag == "--preemption-bound" else 1):
            raise UserError(f"{flag} {value}: want a {'non-negative' if flag[2] == 'p' else 'positive'} number")
    if args.depth is not None and not 1 <= args.depth <= MAX_DEPTH:
        raise UserError(f"--depth {args.depth}: want 1..{MAX_DEPTH}")
    if args.time_limit is not None and not 0 < args.time_limit < 1e7:
        raise UserError(f"--time-limit {args.time_limit}: want a positive number of seconds")
    if args.max_mem is not None and (not args.all or args.max_mem < 1):
        raise UserError("--max-mem goes with --all and wants a positive number of bytes")
    if args.drop_barrier and args.memory_model == "sc":
        raise UserError("--drop-barrier goes with --memory-model tso or lkmm (sc reorders nothing: no barrier to drop)")
    try:
        parse_model(model_name(args.memory_model, frozenset(args.drop_barrier)), allow_arch=True)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.barriers and (args.all or args.drop_barrier or args.memory_model != "sc" or args.state or args.trace
                          or args.keep_going or args.minimize or args.strategy != "dpor"):
        raise UserError("--barriers makes its own table (dpor, tso and lkmm, each barrier dropped in turn); "
                        "it takes --time-limit, --protocol and the config flags only")
    if args.all and (args.state or args.minimize or args.keep_going or args.trace or args.drop_barrier):
        raise UserError("--all runs --scenario pagetable-reuse over the hazard matrix; "
                        "it takes none of --state, --minimize, --keep-going, --trace, --drop-barrier")
    if s in SAMPLING and args.schedules is None and args.time_limit is None:
        args.schedules = ENDLESS_DEFAULT
    _check_overwrite(args)


def _check_overwrite(args: argparse.Namespace) -> None:
    if args.overwrite and args.state is None and args.trace is None:
        raise UserError("--overwrite goes with --state FILE or --trace FILE")
    distinct_outputs(("--state", args.state), ("--trace", args.trace),
                     ("the schedule file", _schedule_file(getattr(args, "schedule", None))))
    if args.trace is not None:
        from ..trace.output import TraceFileError, check_trace_path

        try:
            check_trace_path(args.trace, args.overwrite)
        except TraceFileError as e:
            raise UserError(str(e)) from None


def _files(args: argparse.Namespace) -> dict:
    """The files this command wrote, by what they hold."""
    out = {}
    if getattr(args, "state", None):
        out["state"] = os.path.abspath(args.state)
    if getattr(args, "trace", None):
        out["trace_file"] = os.path.abspath(args.trace)
    return out


def _files_text(args: argparse.Namespace) -> str:
    names = {"state": "state file", "trace_file": "trace"}
    return "".join(f"\n{names[k]}: {v}" for k, v in _files(args).items())


def _write_trace(args: argparse.Namespace, trace: dict | None) -> None:
    from pathlib import Path

    from ..trace.output import TraceFileError, write_trace

    if args.trace is None or trace is None:
        return
    try:
        write_trace(Path(args.trace), trace, args.overwrite)
    except TraceFileError as e:
        raise UserError(str(e)) from None


def _cpus(args: argparse.Namespace, roles: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for role, cpu in args.cpu:
        if role not in roles:
            raise UserError(f"--cpu: unknown role {role!r}; this scenario has {', '.join(roles)}")
        if role in out:
            raise UserError(f"--cpu {role} given twice")
        out[role] = cpu
    return out


def _progress(enabled: bool):
    if not enabled:
        return None

    def show(done: int, steps: int) -> None:
        if done % 50 == 0:
            sys.stderr.write(f"\r  {done} schedules, {steps} steps ")
            sys.stderr.flush()

    return show


def cmd_explore(args: argparse.Namespace) -> int:
    from . import render
    from .api import explore
    from .scenarios import SCENARIOS

    if args.list_scenarios:
        for name, sc in SCENARIOS.items():
            print(f"{name:16} {sc.summary}")
        return 0
    _check_flags(args)
    scenario = SCENARIOS[args.scenario]
    cpus = _cpus(args, scenario.role_names)
    if args.barriers:
        return _barriers(args)
    if args.all:
        return _explore_all(args, cpus)
    cfg = config_from_args(args, kernel=args.kernel or KERNELS[-1])
    for role, cpu in cpus.items():
        if not 0 <= cpu < cfg.nr_cpus:
            raise UserError(f"--cpu {role}={cpu}: CPU ids are 0..{cfg.nr_cpus - 1} (NR_CPUS={cfg.nr_cpus})")
    asked, args.memory_model = args.memory_model, for_arch(args.memory_model, cfg.arch)  # "arch": the port's
    try:
        base = parse_model(model_name(args.memory_model, frozenset(args.drop_barrier)))[0]
        check_cpus(base, _role_cpus(scenario, cfg, cpus))
    except ValueError as e:
        port = f" (--memory-model arch on {cfg.arch.name} is {args.memory_model})" if asked == "arch" else ""
        raise UserError(f"{e}{port}") from None
    from ..hazard import DirectMapError, analyse
    from .validate import check_explore

    try:
        analyse(cfg)  # the direct map must fit the address space before a world is booted in it
        # the API's own validator: what the flags above did not catch is one line here too
        check_explore(scenario, args.protocol, args.strategy, args.schedules, args.seed or 0, args.depth or 3,
                      args.preemption_bound, args.time_limit)
    except (DirectMapError, ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    # SIGINT, SIGTERM and SIGHUP end the exploration at its next step: what it
    # found so far is printed, its temporary files go, and the exit is 130
    with catching(Stop()) as stop:
        try:
            r = explore(scenario, cfg, protocol=args.protocol, strategy=args.strategy, schedules=args.schedules,
                        seed=args.seed or 0, depth=args.depth or 3, preemption_bound=args.preemption_bound,
                        cpus=cpus, minimize=args.minimize, keep_going=args.keep_going, time_limit=args.time_limit,
                        state=args.state, overwrite=args.overwrite, checks=args.checks,
                        progress=_progress(sys.stderr.isatty() and not args.json), trace=args.trace is not None,
                        stop=stop, memory_model=args.memory_model, drop_barriers=args.drop_barrier)
        except MachineError as e:
            raise UserError(str(e)) from None
        if not r.interrupted:
            _write_trace(args, r.trace)
        if sys.stderr.isatty() and not args.json:
            sys.stderr.write("\r\033[K")
        if args.json:
            print_json({**render.result_json(r), **_files(args)})
        else:
            print(render.result_text(r) + _files_text(args))
    if r.interrupted:
        return 130
    return 0 if r.holds else 1


def _barriers(args: argparse.Namespace) -> int:
    from . import barriers

    cfg = config_from_args(args, kernel=args.kernel or KERNELS[-1])
    tty = sys.stderr.isatty() and not args.json
    with catching(Stop()) as stop:  # a signal ends the cell running; the table so far is printed
        rows = barriers.table(cfg, args.table_scenarios or barriers.DEFAULT_SCENARIOS,
                              time_limit=args.time_limit or 60.0, protocol=args.protocol, stop=stop,
                              progress=(lambda i, n: sys.stderr.write(f"\r  {i}/{n} cells ")) if tty else None)
    if tty:
        sys.stderr.write("\r\033[K")
    if args.json:
        print_json({"config": json_config(cfg), "rows": rows})
    else:
        print(barriers.text(rows))
    return 130 if stop.reason is not None else 0


def _explore_all(args: argparse.Namespace, cpus: dict[str, int]) -> int:
    from ..hazard import DirectMapError, analyse
    from ..layout_cli import combos
    from . import render
    from .agree import check_rows

    config_from_args(args, kernel=args.kernel or KERNELS[-1])  # a typo is an error, not n/a cells
    rows: list = []  # exactly `ksm-layout hazard --all`'s rows, with the same flags
    for kernel, label, arch, cfg in combos(args):
        try:
            if isinstance(cfg, ConfigError):
                raise cfg
            analyse(cfg, args.max_mem)
            rows.append((label, cfg))
        except (ConfigError, DirectMapError) as e:
            rows.append((label, f"{arch}|{kernel}|{e}"))
    alloc = cpus.get("allocator")
    if alloc is not None and all(isinstance(c, str) or alloc >= c.nr_cpus for _, c in rows):
        raise UserError(f"--cpu allocator={alloc}: no row of the matrix has that many CPUs")
    out = check_rows(rows, args.max_mem, cpus.get("allocator"), memory_model=args.memory_model,
                     progress=(lambda i, n: sys.stderr.write(f"\r  {i}/{n} rows ")) if sys.stderr.isatty() and
                     not args.json else None)
    if sys.stderr.isatty() and not args.json:
        sys.stderr.write("\r\033[K")
    bad = [r for r in out if r["agree"] == "NO"]
    if args.json:
        print_json({"rows": out, "disagreements": len(bad)})
    else:
        print(render.agreement_text(out))
        applicable = [r for r in out if r["agree"] != "n/a"]
        print(f"\n{len(out)} rows: {len(applicable)} compared, {len(out) - len(applicable)} not applicable; "
              + (f"{len(bad)} DISAGREE: " + "; ".join(f"{r['kernel']} {r['options']} {r['arch']}" for r in bad)
                 if bad else "static and dynamic agree on every row"))
    return 1 if bad else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from . import render
    from .api import replay

    _check_overwrite(args)
    text = args.schedule if _schedule_file(args.schedule) is None else _schedule_from_file(args.schedule)
    with catching(Stop()) as stop:
        try:
            r = replay(text, state=args.state, overwrite=args.overwrite, checks=args.checks, stop=stop)
        except (ScheduleError, Nondeterminism, MachineError) as e:
            raise UserError(str(e)) from None
        if r.stopped is None:
            _write_trace(args, r.trace)
        if args.json:
            print_json({**render.replayed_json(r), **_files(args)})
        else:
            print(render.replayed_text(r) + _files_text(args))
    if r.stopped is not None:
        return 130
    return 1 if r.findings else 0


_JSON_MAX = 64 << 20  # explore --json output with its timelines is well under this


def _schedule_file(arg: str | None) -> str | None:
    """replay's argument if it names a file: anything but a replay string
    (which begins ksmx1: or ksmx2:, a colon no file name of ours needs)."""
    return None if arg is None or arg.startswith((MAGIC + ":", MAGIC_MODEL + ":")) else arg


def _schedule_from_file(path: str) -> str:
    """The replay string in an explore/replay --json output file. Opened without
    blocking (a FIFO would hang open()) and read only if it is a regular file."""
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such file, and not a replay string (ksmx1:... or ksmx2:...)")
    blob = read_regular_file(path, _JSON_MAX, "explore --json output")
    try:
        d = json.loads(blob)
        # explore --json names it "replay" (or per violation); replay --json, "schedule"
        text = d.get("replay") or d.get("schedule") or d["violations"][0]["schedule"]
        if not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        raise UserError(f"{path}: not a replay string nor explore --json output with a violation") from None
    return text
