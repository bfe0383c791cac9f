"""Stopping an exploration from outside it: the time limit, a signal, or a
caller's request, honoured at the next scheduling point; and a watchdog for
a step that never reaches one (a role looping without kernel accesses)."""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Stop:
    """Why exploring must stop now, set from outside an execution: a signal
    handler (`catching`), the time limit or the caller. The runner looks at
    `reason` at every scheduling point; a step that reaches none (a role
    looping without kernel accesses) is interrupted by `Watchdog`."""

    __slots__ = ("reason", "deadline")

    def __init__(self, deadline: float | None = None) -> None:
        self.reason: str | None = None
        self.deadline = deadline  # time.perf_counter() value, or None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def due(self) -> bool:
        """True once a stop is requested or the deadline has passed."""
        if self.reason is None and self.deadline is not None and time.perf_counter() >= self.deadline:
            self.reason = "time limit"
        return self.reason is not None


class Stopped(BaseException):
    """Raised into the exploring thread by `Watchdog` when a step runs on past
    a requested stop without reaching a scheduling point."""


class Watched(Protocol):
    executing: bool  # inside an execution, where Stopped is caught
    stop: Stop


class Watchdog:
    """Stops a step that runs on past a requested stop (or the deadline)
    without reaching a scheduling point: a role looping without kernel
    accesses. After `grace` seconds it raises `Stopped` in the exploring
    thread, in whatever frame runs there."""

    def __init__(self, runner: Watched, grace: float = 1.0) -> None:
        self.runner, self.grace = runner, grace
        self.tid = threading.get_ident()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ksm-explore-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        since = None
        while not self._done.wait(0.1):
            r = self.runner
            if r.executing and r.stop.due():
                now = time.monotonic()
                if since is None:
                    since = now
                elif now - since >= self.grace:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), ctypes.py_object(Stopped))
                    since = None
            else:
                since = None

    def close(self) -> None:
        self._done.set()
        self._thread.join()


@contextmanager
def catching(stop: Stop, signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[Stop]:
    """While inside, these signals request `stop` ("interrupted by SIGINT")
    instead of raising in whatever frame runs: the execution in progress ends
    at its next scheduling point and the caller keeps what it found. Outside
    the main thread (where Python delivers no signals) it does nothing, and
    a signal set to be ignored stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum: int, frame: object) -> None:
        stop.request(f"interrupted by {signal.Signals(signum).name}")

    # a signal the process ignores (a pool worker's SIGINT) stays ignored
    old = {s: signal.signal(s, request) for s in signums if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
