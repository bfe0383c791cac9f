"""reclaim: under memory pressure, unmap pages (KSM ones through their
stable_node's rmap_items, as try_to_unmap_ksm does) and drop the references.

Each page it decides on is stamped in the shadow (t_reclaim); whoever frees
the page records the time from that decision to the free list."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ..mm.core import MM
from ..mm.ksm import StableNodes
from ..mm.page_alloc import free_hot_cold_page, nr_free, page_freeze_refs, put_page
from ..mm.rmap import PteLocks, get_pte_page, zap_pte


@dataclass(frozen=True)
class ReclaimParams:
    low: float = 0.10  # start reclaiming below this fraction of pages free
    high: float = 0.20  # stop above this


def run(mm: MM, locks: PteLocks, p: ReclaimParams, rng: random.Random, progress) -> None:
    ksm = StableNodes(mm)  # the hlist walk only: no ksmd state in this process
    n = mm.geo.nr_pages
    active = False
    while not mm.stopping():
        free = nr_free(mm)
        active = free < p.high * n if active else free < p.low * n
        if not active:
            progress()
            time.sleep(0.001)
            continue
        slot = rng.randrange(mm.geo.nslots)
        pfn = get_pte_page(mm, locks, slot)
        if pfn < 0:
            continue
        if mm.trylock_page(pfn):
            shrink_page(mm, locks, ksm, slot, pfn)
            mm.unlock_page(pfn)
            # __remove_mapping: only our reference left? freeze it and free the page;
            # a speculative reference (ksmd's get_ksm_page) makes the freeze fail
            if page_freeze_refs(mm, pfn, 1):
                free_hot_cold_page(mm, pfn)
                progress()
                continue
        put_page(mm, pfn)
        progress()


def shrink_page(mm: MM, locks: PteLocks, ksm: StableNodes, slot: int, pfn: int) -> None:
    """try_to_unmap: every pte of the page, then our reference goes with the caller's put."""
    mapping = mm.mapping(pfn)
    mm.sh_cas(pfn, "t_reclaim", 0, time.monotonic_ns())
    mm.count("reclaimed")
    if mapping & 3 == 3 and mapping != 3:
        slots = ksm.items_of(ksm.node_idx(mapping & ~3))
    else:
        slots = [slot]
    for s in slots:
        if zap_pte(mm, locks, s, expect=pfn) >= 0:
            mm.count("reclaim_unmapped")
