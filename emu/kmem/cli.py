"""ksm-emu kmem: crash-style rows of a machine file's struct pages, and a
pfn's history from the trace rings (the rows are emu.kmem's, the history
emu.trace.history's)."""

from __future__ import annotations

import argparse
import json
import sys

from ..check.shadow import STATE_NAMES
from ..cliutil import UserError, json_config, number, print_json
from ..machine import MachineError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("kmem", help="crash-style 'kmem -p' rows of a machine file's struct pages")
    k.add_argument("state", nargs="?", metavar="STATE",
                   help="machine file (default: the last run's, as recorded in the state directory); "
                        "opened read-only")
    k.add_argument("--pfn", metavar="N[:COUNT]",
                   help="first pfn and how many, all inside the machine (default: all from 0)")
    k.add_argument("--is", dest="kind", choices=STATE_NAMES, help="only pages that really are this")
    k.add_argument("--history", type=number, metavar="PFN",
                   help="what the trace rings recorded for this pfn, oldest first, with the CPU and role of "
                        "each: allocated as what, made a KSM page, unmapped, freed, its ptl taken, violations "
                        "(a state of `run --trace`, or of explore/replay --state)")
    k.add_argument("--json", action="store_true", help="one JSON object (rows streamed one page a line)")
    k.set_defaults(func=cmd_kmem)


def _pfn_range(text: str, nr_pages: int) -> tuple[int, int]:
    first, sep, count = text.partition(":")
    try:
        start, n = int(first, 0), (int(count, 0) if sep else None)
    except ValueError:
        raise UserError(f"bad --pfn {text!r}: want N or N:COUNT") from None
    if not 0 <= start < nr_pages:
        raise UserError(f"--pfn {text}: this machine has pfns 0..{nr_pages - 1}")
    if n is None:
        return start, nr_pages - start
    if n < 1 or start + n > nr_pages:
        raise UserError(f"--pfn {text}: want 1 to {nr_pages - start} pages from pfn {start} "
                        f"(this machine has pfns 0..{nr_pages - 1})")
    return start, n


def cmd_kmem(args: argparse.Namespace) -> int:
    from .. import kmem
    from ..machine import attach
    from ..statefile import last_run

    try:
        state = args.state if args.state is not None else last_run()
        m = attach(state, readonly=True)
    except MachineError as e:
        raise UserError(str(e)) from None
    try:
        if args.history is not None:
            return _history(args, m)
        start, n = _pfn_range(args.pfn or "0", m.nr_pages)
        try:
            kmem.check(m)
        except MachineError as e:
            raise UserError(str(e)) from None
        rows = kmem.rows(m, start, n, args.kind)
        out = sys.stdout
        if args.json:  # streamed: one page per line inside the object
            head = json.dumps({"state": str(state), "config": json_config(m.cfg)})
            out.write(head[:-1] + ', "pages": [')
            for i, r in enumerate(rows):
                out.write(("\n  " if i == 0 else ",\n  ") + json.dumps(kmem.as_json(r)))
            out.write("\n]}\n")
        else:
            out.write(kmem.header(m) + "\n")
            for r in rows:
                out.write(kmem.line(m, r) + "\n")
    finally:
        m.close()
    return 0


def _history(args: argparse.Namespace, m: object) -> int:
    from ..trace.history import history, render

    if args.pfn is not None or args.kind is not None:
        raise UserError("--history shows one pfn; it takes neither --pfn nor --is")
    if not 0 <= args.history < m.nr_pages:
        raise UserError(f"--history {args.history}: this machine has pfns 0..{m.nr_pages - 1}")
    try:
        h = history(m, args.history)
    except MachineError as e:
        raise UserError(str(e)) from None
    if args.json:
        print_json(h)
    else:
        print(render(h))
    return 0
