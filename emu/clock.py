"""Time as the emulated kernel sees it. A free run uses the wall clock; a
controlled schedule passes a virtual one, so that no result depends on it."""

from __future__ import annotations

import time


class WallClock:
    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, ns: int) -> None:
        """The CPU sleeps (ksmd's schedule_timeout, an allocator waiting for memory)."""
        time.sleep(ns / 1e9)

    def delay_ns(self, ns: int) -> None:
        """The CPU is busy for ns without giving itself away (udelay, an interrupt)."""
        end = time.perf_counter_ns() + ns
        while time.perf_counter_ns() < end:
            pass


WALL = WallClock()
