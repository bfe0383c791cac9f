"""ksm-emu: the root parser. Each command group is its feature package's
(`add_parsers` in emu/run/cli.py, emu/kmem/cli.py, emu/explore/cli.py,
emu/experiment/cli.py, emu/campaign/cli.py, emu/litmus/cli.py); shared
argument helpers are emu.cliutil's."""

from __future__ import annotations

import argparse
import sys

from .campaign.cli import add_parsers as add_campaign_parsers
from .cliutil import Parser, UserError, run_main
from .experiment.cli import add_parsers as add_experiment_parsers
from .explore.cli import add_parsers as add_explore_parsers
from .kmem.cli import add_parsers as add_kmem_parsers
from .litmus.cli import add_parsers as add_litmus_parsers
from .run.cli import add_parsers as add_run_parsers


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ksm-emu")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ksm-emu", description=(
        "Emulate Linux 2.6.32/2.6.33 KSM's keyhole reference: ksmd, reclaim and allocator "
        "processes race on byte-exact struct pages in a shared mapping; every get_ksm_page is "
        "checked against ground truth."))
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in (add_run_parsers, add_kmem_parsers, add_explore_parsers, add_experiment_parsers,
                add_campaign_parsers, add_litmus_parsers):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:  # building the parser imports the commands' modules: Ctrl-C there is no traceback either
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write("ksm-emu: interrupted\n")
        return 130
    return run_main("ksm-emu", lambda: _check_test_break() or args.func(args))


def _check_test_break() -> None:
    """KSM_EMU_TEST_BREAK names only known breaks: a typo would run the correct
    code while the test believes it broke it."""
    import os

    text = os.environ.get("KSM_EMU_TEST_BREAK")
    if text:
        from .mm.testbreak import NAMES

        bad = [n for n in text.split(",") if n not in NAMES]
        if bad:
            raise UserError(f"KSM_EMU_TEST_BREAK={text}: unknown {bad[0]!r}; known: {', '.join(NAMES)}")


if __name__ == "__main__":
    sys.exit(main())
