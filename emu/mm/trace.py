"""The trace hooks of the kernel functions: `@traced("name")` at a function
makes its call a slice (begin and end records in the CPU's ring, emu.mm.ring),
and `mm.tr`, None unless the run is traced, is what the few hooks inside
functions call (a spinlock taken and released, a violation, ksmd's batch).

Untraced, a hook costs one attribute load and a None check. The wrapper is
named with a leading underscore and lives in emu/mm/, so explore's timeline,
which names the innermost public emu.mm functions of an access, reads the
same through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..check.shadow import KSM
from ..records import SHADOW_DTYPE
from .context import COUNTER_OFF
from .ring import (
    CODE,
    EVENT_DTYPE,
    GAUGES,
    LOCK_HELD,
    PH_BEGIN,
    PH_COUNTER,
    PH_END,
    PH_INSTANT,
    SCAN_BATCH,
    VIOLATION,
    RingLayout,
    RingWriter,
)

if TYPE_CHECKING:
    from .boot import World
    from .context import MM

F = TypeVar("F", bound=Callable)
# a gauge sample follows these in a controlled schedule, where every event may count
_GAUGED = {CODE[n] for n in ("alloc_page", "free_hot_cold_page", "set_page_stable_node", "free_stable_node")}
_FREE, _NODES, _KSM = (CODE[g] for g in GAUGES)
GAUGE_EVERY_NS = 50_000_000  # in a free run: counting KSM pages reads the whole shadow, so 20 samples a second


def traced(name: str, first: int | None = None, second: int | None = None) -> Callable[[F], F]:
    """A slice per call of the kernel function `name`; its begin record keeps the
    arguments at positions `first` and `second` after mm, its end the result
    (-1 for None)."""
    code = CODE[name]

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def _traced(mm, *args):
            tr = mm.tr
            if tr is None:
                return fn(mm, *args)
            emit = tr.emit
            emit(PH_BEGIN, code, 0 if first is None else args[first], 0 if second is None else args[second])
            r = None
            try:
                r = fn(mm, *args)
                return r
            finally:
                emit(PH_END, code, -1 if r is None else int(r))
                if tr.gauge_each and code in _GAUGED:
                    tr.gauges()
        return _traced  # type: ignore[return-value]
    return deco


class Tracer:
    """One CPU's hooks into its ring."""

    __slots__ = ("emit", "gauge_each", "_mm", "_next_gauge")

    def __init__(self, writer: RingWriter, mm: MM, gauge_each: bool) -> None:
        self.emit, self._mm, self.gauge_each = writer.emit, mm, gauge_each
        self._next_gauge = 0

    def lock(self, off: int) -> None:
        """spin_lock succeeded on the lock at file offset `off`."""
        self.emit(PH_BEGIN, LOCK_HELD, off)

    def unlock(self, off: int) -> None:
        self.emit(PH_END, LOCK_HELD, off)

    def violation(self, idx: int, pfn: int) -> None:
        """The truth keeper wrote violation record `idx`."""
        self.emit(PH_INSTANT, VIOLATION, idx, pfn)

    def batch_begin(self, slot: int) -> None:
        self.emit(PH_BEGIN, SCAN_BATCH, slot)

    def batch_end(self, slots: int) -> None:
        self.emit(PH_END, SCAN_BATCH, slots)

    def gauges(self) -> None:
        """A sample of the counter tracks: free pages, live stable nodes, KSM pages
        (host-order bookkeeping, never a kernel access)."""
        mm = self._mm
        if not self.gauge_each:
            now = mm.clock.now_ns()
            if now < self._next_gauge:
                return
            self._next_gauge = now + GAUGE_EVERY_NS
        h, c = mm.h, mm.counters
        nodes = h.load(c + COUNTER_OFF["ksm_pages_created"], 8) - h.load(c + COUNTER_OFF["stable_nodes_removed"], 8)
        state = np.frombuffer(mm.m.mm, SHADOW_DTYPE, mm.geo.nr_pages, mm.shadow)["state"]
        ksm = int(np.count_nonzero(state == KSM))
        del state
        self.emit(PH_COUNTER, _FREE, h.load(mm.ctl_nr_free, 8, True))
        self.emit(PH_COUNTER, _NODES, nodes)
        self.emit(PH_COUNTER, _KSM, ksm)


class TraceRings:
    """The trace region of a world, handing each new CPU context its ring's
    tracer. `route(mm)` picks the ring (default: by role name; None: untraced),
    `now` overrides the context's clock."""

    def __init__(self, world: World, route: Callable[[MM], int | None] | None = None,
                 now: Callable[[], int] | None = None, gauge_each: bool = False) -> None:
        m = world.machine
        self.world, self.region = world, m.region("trace")
        self.layout = RingLayout.from_meta(m.meta.get("trace"), self.region.size)
        self.route = route or self.by_role
        self.now, self.gauge_each = now, gauge_each
        self._writers: dict[int, RingWriter] = {}  # one writer a ring: contexts of one CPU share its count

    def reset(self) -> None:
        """Forget the writers: the rings' bytes were restored (a new execution)."""
        self._writers.clear()

    def by_role(self, mm: MM) -> int | None:
        names = self.layout.names
        return names.index(mm.role) if mm.role in names else None

    def tracer(self, mm: MM) -> Tracer | None:
        i = self.route(mm)
        if i is None:
            return None
        w = self._writers.get(i)
        if w is None:
            cap = self.layout.capacity
            w = self._writers[i] = RingWriter(self.world.machine.mm, self.region.offset + i * cap * EVENT_DTYPE.itemsize,
                                              cap, self.now or mm.clock.now_ns)
        return Tracer(w, mm, self.gauge_each)
