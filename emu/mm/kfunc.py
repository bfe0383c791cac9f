"""The kernel function running: for reports of who made an access (lockdep's
findings, explore's timeline). A module of its own so that a checker can name
the function without importing the CPU context that calls the checker."""

from __future__ import annotations

import sys

MM_DIR = "/emu/mm/"


def kernel_function(depth: int = 2) -> str:
    """`caller > callee`: the innermost two public emu.mm functions running
    `depth` frames above this one (for reports; walks the stack, so not for hot paths)."""
    f = sys._getframe(depth)
    names: list[str] = []
    while f is not None and len(names) < 2:
        if MM_DIR in f.f_code.co_filename.replace("\\", "/"):
            if not f.f_code.co_name.startswith("_"):
                names.append(f.f_code.co_name)
        elif names:
            break
        f = f.f_back
    return " > ".join(reversed(names))
