#!/usr/bin/env python3
"""Benchmark `ksm-emu litmus`: the whole litmus suite (tests/litmus: the
kernel's tests, Documentation/litmus-tests and the mixed-size ones) under each
model, with the total time per model and how many verdicts agree with their
file's Result line, disagree, or are refused (unsupported constructs).

The Result lines are herd7's under LKMM, so under sc and tso a disagreement
is expected wherever the kernel's model is weaker (MP, LB, IRIW ...): the
counts say how far each model is from LKMM, not that it is wrong.

Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emu.litmus import LitmusError, parse_file  # noqa: E402
from emu.litmus.models import MODELS, run  # noqa: E402


def bench(files: list[Path], model: str, endian: str) -> dict:
    agree, disagree, unsupported, errors = [], [], [], []
    executions = 0
    t0 = time.perf_counter()
    for f in files:
        try:
            o = run(parse_file(f), model, endian)
        except LitmusError as e:
            (unsupported if "unsupported" in str(e) else errors).append(f.stem)
            continue
        executions += o.executions
        (agree if o.agrees is not False else disagree).append(f.stem)
    return {"model": model, "files": len(files), "seconds": round(time.perf_counter() - t0, 3),
            "executions": executions, "agree": len(agree), "disagree": len(disagree),
            "unsupported": len(unsupported), "errors": errors, "disagreeing": disagree,
            "unsupported_tests": unsupported}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", choices=MODELS, help="a model to run (repeatable; default all)")
    ap.add_argument("--dir", type=Path, default=ROOT / "tests" / "litmus", help="where the .litmus files are")
    ap.add_argument("--endian", choices=("little", "big"), default="little")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args(argv)
    files = sorted(args.dir.rglob("*.litmus"))
    if not files:
        ap.error(f"no .litmus files under {args.dir}")
    rows = [bench(files, m, args.endian) for m in (args.model or MODELS)]
    if args.json:
        json.dump({"suite": str(args.dir), "endian": args.endian, "models": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"litmus suite: {len(files)} files under {args.dir} ({args.endian}-endian)")
    print(f"{'model':12} {'total s':>8} {'executions':>11} {'agree':>6} {'disagree':>9} {'unsupported':>12}")
    for r in rows:
        print(f"{r['model']:12} {r['seconds']:8.2f} {r['executions']:11} {r['agree']:6} {r['disagree']:9} "
              f"{r['unsupported']:12}")
    for r in rows:
        if r["disagreeing"]:
            print(f"{r['model']}: disagrees with the (LKMM) Result line on {', '.join(r['disagreeing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
