"""The loop around a role: step, sleep when the step asks to, stop when told."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..mm.context import MM


class Role(Protocol):
    def step(self) -> int:
        """One bounded unit of work; the ns to sleep before the next (0: none)."""

    def finish(self) -> None:
        """Give back what the role holds, at the end of the run."""


def drive(role: Role, mm: MM, progress: Callable[[], None] | None = None) -> None:
    while not mm.stopping():
        pause = role.step()
        if progress is not None:
            progress()
        if pause:
            mm.clock.sleep_ns(pause)
    role.finish()
