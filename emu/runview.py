"""The launcher's view of a live run: the bookkeeping regions read with pread,
and the stop flag written with pwrite, on the state file's descriptor.

The launcher never maps the machine once the roles run, so a state file
truncated under the run cannot SIGBUS it: a short read, or a file shorter
than the machine, says the file was truncated, and the run ends with that
one line instead of a summary.
"""

from __future__ import annotations

import os

import numpy as np

from .check.lockdep import findings, records_offset
from .check.violations import VIOLATION_NAMES
from .findings import Finding
from .mm.boot import World
from .records import COUNTERS, COUNTERS_DTYPE, LATENCY_DTYPE, LOCKDEP_CAPACITY, LOCKDEP_DTYPE, VIOLATION_DTYPE


class StateTruncated(Exception):
    """The state file lost bytes under the run; the message says how many."""


class RunView:
    def __init__(self, fd: int, world: World) -> None:
        m, o = world.machine, world.offsets
        self.fd, self.path, self.size = fd, m.path, m.size
        self.cfg, self.page_layout = m.cfg, m.page_layout  # what decoding a violation needs
        self.violation_capacity = world.geo.violation_capacity
        self._counters = o["counters"]
        self._stop, self._nviol, self._by_kind = o["ctl_stop"], o["ctl_nviol"], o["ctl_by_kind"]
        self._violations, self._latency = o["violations"], o["latency"]
        self.world = world  # the layouts and regions, for decoding (its mapping is not read)
        self._lockdep = m.regions["lockdep"].offset if "lockdep" in m.regions else None
        self._regions = {name: (r.offset, r.size) for name, r in m.regions.items()}

    def truncated(self) -> str | None:
        """Why the file can no longer be trusted (None: it is whole)."""
        try:
            size = os.fstat(self.fd).st_size
        except OSError as e:
            return f"{self.path}: {e.strerror}"
        if size < self.size:
            return (f"{self.path} was truncated to {size} bytes during the run (the machine needs "
                    f"{self.size}); the roles were stopped and no summary can be read")
        return None

    def _read(self, off: int, n: int) -> bytes:
        data = os.pread(self.fd, n, off)
        if len(data) < n:
            raise StateTruncated(self.truncated() or f"{self.path}: short read at {off}")
        return data

    def _u64(self, off: int, n: int) -> list[int]:
        return np.frombuffer(self._read(off, 8 * n), "<u8").tolist()

    def stop(self) -> None:
        """Tell every role to stop (the flag the roles load with acquire order)."""
        if self.truncated() is None:  # a write past the end would grow the file back
            os.pwrite(self.fd, (1).to_bytes(4, "little"), self._stop)

    def counts(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self._u64(self._counters, len(COUNTERS_DTYPE.names))))

    def by_kind(self) -> dict[str, int]:
        return dict(zip(VIOLATION_NAMES, self._u64(self._by_kind, len(VIOLATION_NAMES))))

    def violation_records(self) -> np.ndarray:
        n = min(self._u64(self._nviol, 1)[0], self.violation_capacity)
        return np.frombuffer(self._read(self._violations, n * VIOLATION_DTYPE.itemsize), VIOLATION_DTYPE)

    def read_region(self, name: str, size: int | None = None) -> bytes:
        """The first `size` bytes (default: all) of a region."""
        off, whole = self._regions[name]
        return self._read(off, whole if size is None else min(size, whole))

    def latency(self) -> np.ndarray:
        """The latency histograms, one record per kind (anon, KSM)."""
        return np.frombuffer(self._read(self._latency, 2 * LATENCY_DTYPE.itemsize), LATENCY_DTYPE)

    def lockdep(self) -> tuple[list[Finding], int]:
        """Lock-discipline findings (decoded) and how many there were in all."""
        if self._lockdep is None:
            return [], 0
        n = self._u64(self._lockdep, 1)[0]
        k = min(n, LOCKDEP_CAPACITY)
        rec = np.frombuffer(self._read(records_offset(self._lockdep), k * LOCKDEP_DTYPE.itemsize), LOCKDEP_DTYPE)
        return findings(self.world, rec, n)
