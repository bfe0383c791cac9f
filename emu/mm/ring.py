"""The trace rings (written by emu/mm/trace.py's hooks, read by emu/trace/): one bounded ring of fixed-size event records per traced
CPU, in a region ("trace") of the machine file.

Each ring has one writer, the CPU's own process (or greenlet), so writing
needs no lock: the record goes into slot seq % capacity with struct.pack_into
straight into the mapping, no Python object per event but the integers. A
full ring overwrites its oldest events; the reader counts those as dropped.
A record carries its own 1-based sequence number, so the reader needs no
head word (which a SIGKILL could leave behind the records): the slot holding
the largest seq is the newest, and a slot never written reads seq 0. What a
killed role wrote is in the file, as the page cache keeps it.

The region's layout (ring names, CPUs, capacity, which clock) is in the
machine header's meta under "trace", so a reader needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..machfile import RegionSpec
from ..records import EVENT_DTYPE, EVENT_PACK

# ph: what a record is
PH_BEGIN, PH_END, PH_INSTANT, PH_COUNTER = 1, 2, 3, 4
PACK = EVENT_PACK
_REC = EVENT_DTYPE.itemsize

# codes: the kernel functions traced (their kernel names), then the emulator's own slices and marks
FUNCTIONS = ("get_ksm_page", "try_to_unmap", "free_hot_cold_page", "do_anonymous_page", "alloc_page",
             "zap_pte", "shrink_page", "set_page_stable_node", "pte_alloc_one", "pte_free",
             "free_stable_node")
CODE = {name: i for i, name in enumerate(FUNCTIONS)}
LOCK_HELD = CODE["spin_lock held"] = len(CODE)  # a: the lock's file offset
SCAN_BATCH = CODE["ksmd scan batch"] = len(CODE)  # a: the first slot of the batch
VIOLATION = CODE["violation"] = len(CODE)  # a: the record's index in the violations region
GAUGES = ("free pages", "stable nodes", "KSM pages")
for _g in GAUGES:
    CODE[_g] = len(CODE)
NAMES = list(CODE)

RUN_CAPACITY = 1 << 17  # events per role in `ksm-emu run` (5 MiB a ring)
EXPLORE_CAPACITY = 1 << 10  # per CPU of a scenario: a counterexample is a few hundred steps
CLOCK_WALL, CLOCK_STEPS = "wall", "steps"  # ts in ns of CLOCK_MONOTONIC, or the step number + 1


@dataclass(frozen=True)
class RingLayout:
    """Which rings the region holds: one per (role, cpu), `capacity` records each."""

    names: tuple[str, ...]
    cpus: tuple[int, ...]
    capacity: int
    clock: str

    @property
    def size(self) -> int:
        return len(self.names) * self.capacity * EVENT_DTYPE.itemsize

    def region(self) -> RegionSpec:
        return RegionSpec("trace", self.size)

    def meta(self) -> dict:
        return {"rings": list(self.names), "cpus": list(self.cpus), "capacity": self.capacity,
                "clock": self.clock, "record_size": EVENT_DTYPE.itemsize}

    @classmethod
    def from_meta(cls, meta: object, region_size: int) -> RingLayout:
        """The layout a header describes; ValueError if it does not add up."""
        try:
            names, cpus = tuple(meta["rings"]), tuple(int(c) for c in meta["cpus"])
            lay = cls(names, cpus, int(meta["capacity"]), str(meta["clock"]))
            ok = (all(isinstance(n, str) for n in names) and len(names) == len(cpus) and lay.capacity > 0
                  and all(0 <= c < 1 << 16 for c in cpus)
                  and meta.get("record_size") == EVENT_DTYPE.itemsize and lay.size <= region_size)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # OverflowError: Infinity
            ok = False
        if not ok:
            raise ValueError("the trace region's description in the header is corrupt")
        return lay


class RingWriter:
    """One CPU's ring: emit() appends a record, overwriting the oldest when full."""

    __slots__ = ("_buf", "_base", "_cap", "_seq", "_now", "_pack")

    def __init__(self, buf: object, base: int, capacity: int, now: object) -> None:
        self._buf, self._base, self._cap, self._now = buf, base, capacity, now
        self._pack = PACK.pack_into
        # go on after what is there already (a role's second context, a replay after setup)
        recs = np.frombuffer(buf, EVENT_DTYPE, capacity, base)
        self._seq = int(recs["seq"].max()) if capacity else 0
        del recs

    def emit(self, ph: int, code: int, a: int = 0, b: int = 0) -> None:
        seq = self._seq + 1
        self._seq = seq
        self._pack(self._buf, self._base + (seq - 1) % self._cap * _REC, self._now(), seq, a, b, code, ph)


@dataclass
class Ring:
    """What one ring holds, oldest first, and how many events it lost."""

    name: str
    cpu: int
    events: np.ndarray  # EVENT_DTYPE records in seq order
    written: int
    dropped: int


def read_rings(raw: bytes | np.ndarray, lay: RingLayout) -> list[Ring]:
    """Every ring of a trace region (its bytes), each in order of its sequence numbers."""
    recs = np.frombuffer(raw, EVENT_DTYPE, len(lay.names) * lay.capacity).reshape(len(lay.names), lay.capacity)
    out = []
    for i, (name, cpu) in enumerate(zip(lay.names, lay.cpus)):
        r = recs[i]
        r = r[r["seq"] > 0]
        r = r[np.argsort(r["seq"], kind="stable")]
        written = int(r["seq"][-1]) if len(r) else 0
        out.append(Ring(name, cpu, r, written, written - len(r)))
    return out
