"""reclaim: under memory pressure, unmap pages (KSM ones through their
stable_node's rmap_items, as try_to_unmap_ksm does) and free them.

Each page it decides on is stamped in the shadow; whoever frees the page
records the time from that decision to the free list."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..mm.context import MM
from ..mm.memory import follow_page
from ..mm.page_alloc import nr_free
from ..mm.vmscan import shrink_page

IDLE_NS = 1_000_000  # how long reclaim sleeps while memory is plentiful


@dataclass(frozen=True)
class ReclaimParams:
    low: float = 0.10  # start reclaiming below this fraction of pages free
    high: float = 0.20  # stop above this


class Reclaim:
    def __init__(self, mm: MM, params: ReclaimParams, rng: random.Random) -> None:
        self.mm, self.p, self.rng = mm, params, rng
        self.active = False

    def step(self) -> int:
        """One page reclaimed (or tried), or a nap while memory is plentiful."""
        mm = self.mm
        n, free = mm.geo.nr_pages, nr_free(mm)
        self.active = free < self.p.high * n if self.active else free < self.p.low * n
        if not self.active:
            return IDLE_NS
        slot = self.rng.randrange(mm.geo.nslots)
        pfn = follow_page(mm, slot)
        if pfn >= 0:
            shrink_page(mm, slot, pfn)
        return 0

    def finish(self) -> None:
        pass
