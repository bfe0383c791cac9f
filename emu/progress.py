"""Progress bars (tqdm) on a terminal's stderr, nothing elsewhere: piped or
redirected output stays clean."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any


class _Silent:
    """A bar that draws nothing (not a terminal, or --no-progress)."""

    n = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_description_str(self, text: str) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: float, desc: str, unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on stderr if it is a terminal and `enabled`, else a silent one."""
    if not (enabled and sys.stderr.isatty()):
        return _Silent()
    from tqdm import tqdm

    # a bar of seconds shows times, not the fractional count of them
    fmt = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}" if unit == "s" else None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                bar_format=fmt)


class Ticker:
    """Advance a bar by wall-clock seconds from a thread, while the main thread
    is busy in one long call (a run); `settle(to)` sets it exactly after."""

    def __init__(self, b: Any, period: float = 0.5) -> None:
        self.b, self.period = b, period
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._base, self._t0, self._cap = 0.0, time.monotonic(), 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def start(self, base: float, cap: float) -> None:
        """A new stretch: from `base`, at most to `cap`."""
        with self._lock:
            self._base, self._t0, self._cap = base, time.monotonic(), cap

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                want = min(self._cap, self._base + time.monotonic() - self._t0)
                if want > self.b.n:
                    self.b.update(want - self.b.n)

    def settle(self, to: float) -> None:
        with self._lock:
            self._base, self._cap = to, to
            if to > self.b.n:
                self.b.update(to - self.b.n)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.b.close()
