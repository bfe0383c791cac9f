"""The console scripts' entry points: import the command, then run it.

A Ctrl-C while the command's modules (numpy, the extensions) are still being
imported is a line and exit 130 like any other interruption, not a traceback:
so the scripts point here, a module that imports nothing heavy itself.
"""

from __future__ import annotations

import importlib
import sys


def _run(module: str, prog: str) -> int:
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    return main()


def ksm_emu() -> int:
    return _run("emu.cli", "ksm-emu")


def ksm_layout() -> int:
    return _run("emu.layout_cli", "ksm-layout")
