"""The loop around a role: step, sleep when the step asks to, stop when told
or when the launcher is gone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..mm.context import MM

SLEEP_SLICE_NS = 50_000_000


class Role(Protocol):
    def step(self) -> int:
        """One bounded unit of work; the ns to sleep before the next (0: none)."""

    def finish(self) -> None:
        """Give back what the role holds, at the end of the run."""


def drive(role: Role, mm: MM, progress: Callable[[], None] | None = None,
          alive: Callable[[], bool] | None = None) -> bool:
    """Step `role` until the stop flag is set (then `finish`, True) or `alive()`
    says the launcher is gone (False: nobody is left to read what the role holds)."""
    while not mm.stopping():
        if alive is not None and not alive():
            return False
        pause = role.step()
        if progress is not None:
            progress()
        while pause > 0 and not mm.stopping():  # a long sleep still hears the stop flag
            mm.clock.sleep_ns(min(pause, SLEEP_SLICE_NS))
            pause -= SLEEP_SLICE_NS
    role.finish()
    return True
