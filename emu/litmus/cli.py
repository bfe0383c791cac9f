"""ksm-emu litmus: run C litmus tests under sc, tso or lkmm and print herd7's verdicts."""

from __future__ import annotations

import argparse
import sys

from ..cliutil import UserError, print_json, read_regular_file
from ..kconfig import ARCHES
from .ast import Addr
from .errors import LitmusError
from .models import MODELS, Outcome, run
from .parse import parse

MAX_FILE = 1 << 20

EXAMPLES = """\
examples:
  ksm-emu litmus tests/litmus/kernel/SB+poonceonces.litmus
      LKMM (the default): (0,0) is Sometimes, as its Result line says
  ksm-emu litmus --model tso tests/litmus/kernel/SB+poonceonces.litmus
      x86's store buffers allow (0,0) too
  ksm-emu litmus --model sc tests/litmus/kernel/MP+poonceonces.litmus
      Never under SC, so it disagrees with the (LKMM) Result line: exit 1
  ksm-emu litmus --arch ppc64 tests/litmus/mixed/*.litmus
      mixed-size tests on a big-endian machine
  ksm-emu litmus --json tests/litmus/kernel/*.litmus
      one JSON list; MP+onceassign+derefonce uses RCU: one error line, exit 2

exit status: 0 every verdict agrees with its file's Result line (or there is
none), 1 some verdict disagrees, 2 bad input (a missing file, a syntax error,
a construct ksm-emu does not model such as RCU: one line naming it).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "litmus", help="run the kernel's C litmus tests under sc, tso or lkmm (herd7's verdicts)",
        description="Run C litmus tests (the tools/memory-model/litmus-tests dialect, with ksm-emu's\n"
                    "mixed-size extension: docs/litmus-format.md) under a memory model, and print each\n"
                    "test's final states with their execution counts, Ok/No, herd7's verdict word\n"
                    "(Never, Sometimes, Always) and whether it agrees with the file's Result line.\n"
                    "lkmm checks linux-kernel.cat on every candidate execution; sc runs every\n"
                    "interleaving; tso adds x86's store buffers; explore-lkmm is what `ksm-emu explore\n"
                    "--memory-model lkmm` runs: stores reordered as barriers allow, loads in order\n"
                    "(docs/memory-models.md).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE.litmus", help="litmus tests to run")
    p.add_argument("--model", default="lkmm", choices=MODELS,
                   help="sc, tso, lkmm or explore-lkmm (default lkmm: the Result lines are herd7's under LKMM)")
    p.add_argument("--arch", default="x86_64", choices=list(ARCHES), metavar="ARCH",
                   help=f"the machine whose byte order mixed-size tests use: {', '.join(ARCHES)} "
                        "(default x86_64, little-endian; the model is --model's whatever the arch)")
    p.add_argument("--json", action="store_true",
                   help="a JSON list, one object per file: {file, name, model, verdict, states, "
                        "executions, data_races, ...}")
    p.set_defaults(func=cmd_litmus)


def _value(v: object) -> str:
    if isinstance(v, Addr):
        return v.name
    assert isinstance(v, int)
    return str(v) if -0x10000 < v < 0x10000 else hex(v)


def _json_value(v: object) -> object:
    return v.name if isinstance(v, Addr) else v


def render(o: Outcome) -> str:
    """herd7-like text for one outcome."""
    t = o.test
    v = o.verdict
    lines = [f"Test {t.name} {v.kind}", f"Model {o.model} ({o.endian}-endian)"]
    shown = o.shown_states()
    lines.append(f"States {len(shown)}")
    for state, n in shown:
        lines.append(f"{n:<6}:> " + " ".join(f"{k}={_value(x)};" for k, x in state.items()))
    lines.append("Ok" if v.ok else "No")
    pos, neg = v.witnesses
    lines.append(f"Witnesses\nPositive: {pos} Negative: {neg}")
    for race in o.data_races:
        lines.append(f"Flag data-race: {race}")
    lines.append(f"Observation {t.name} {v.observation} {v.positive} {v.negative}")
    if t.result is not None:
        lines.append(f"Result: {t.result} ({'agrees' if o.agrees else 'DISAGREES'})")
    lines.append(f"Time {t.name} {o.seconds:.2f}")
    return "\n".join(lines)


def to_json(o: Outcome, path: str) -> dict:
    v = o.verdict
    return {
        "file": path, "name": o.test.name, "model": o.model, "endian": o.endian,
        "verdict": v.observation, "ok": v.ok, "kind": v.kind,
        "positive": v.positive, "negative": v.negative,
        "result": o.test.result, "agrees": o.agrees,
        "states": [{"state": {k: _json_value(x) for k, x in s.items()}, "count": n}
                   for s, n in o.shown_states()],
        "executions": o.executions,
        "data_races": o.data_races,
        "seconds": round(o.seconds, 4),
    }


def run_file(path: str, model: str, endian: str) -> Outcome:
    """Parse and run one file; bad input is a one-line UserError."""
    data = read_regular_file(path, MAX_FILE, "a litmus test")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        return run(parse(text, path), model, endian)
    except LitmusError as e:
        raise UserError(str(e) if path in str(e) else f"{path}: {e}") from None


def cmd_litmus(args: argparse.Namespace) -> int:
    endian = ARCHES[args.arch].byte_order
    status = 0
    results = []
    for i, path in enumerate(args.files):
        try:
            o = run_file(path, args.model, endian)
        except UserError as e:
            sys.stderr.write(f"ksm-emu litmus: error: {e}\n")
            status = 2
            continue
        if o.agrees is False and status == 0:
            status = 1
        if args.json:
            results.append(to_json(o, path))
        else:
            if i:
                print()
            print(render(o))
            sys.stdout.flush()
    if args.json:
        print_json(results)
    return status
