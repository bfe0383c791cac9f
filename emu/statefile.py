"""Where a run's machine file goes, and what may be replaced there."""

from __future__ import annotations

import os

from .machine import MAGIC, MachineError


def prepare_state_path(path: str) -> None:
    """Overwrite an old state file, but never anything that is not one."""
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            magic = f.read(len(MAGIC))
    except OSError as e:
        raise MachineError(f"{path}: {e.strerror}") from None
    if magic != MAGIC:
        raise MachineError(f"{path} exists and is not a ksm-emu state file; not overwriting it")
    os.unlink(path)
