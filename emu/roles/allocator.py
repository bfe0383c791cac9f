"""allocator: the page users. Faults anon pages into its own mm's slots and
unmaps them; allocates page-cache, slab and driver pages and frees them; and
churns page-table pages (pte_lock_init, spin_lock/unlock as faults would on
this CPU, pte_lock_deinit, free), which is how a just-freed KSM page comes to
hold a spinlock. Each writes exactly the struct page bytes its kernel
counterpart writes."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from ..check.shadow import DRIVER, PAGECACHE, SLAB, W_ADDRESS_SPACE, W_DRIVER, W_NULL
from ..mm.context import MM
from ..mm.memory import do_anonymous_page, pte_alloc_one, pte_free, zap_pte
from ..mm.page import reset_page_mapcount, set_page_index, set_page_mapping, set_page_slab
from ..mm.page_alloc import alloc_page
from ..mm.pgtable import pte_peek
from ..mm.refcount import put_page
from ..mm.regions import PTRS_PER_GROUP
from ..mm.spinlock import spin_lock, spin_unlock

POOL = 64  # page-cache/slab/driver pages each allocator keeps
PT_POOL = 4  # short-lived page-table pages each allocator keeps
NOMEM_NS = 1_000_000  # how long a fault that found no free page waits for reclaim
OPS = ["fault"] * 6 + ["unmap"] * 1 + ["other"] * 2 + ["pt"] * 3


@dataclass(frozen=True)
class AllocatorParams:
    index: int
    count: int
    ptl_hold_us: float = 20.0
    objects: dict = field(default_factory=dict)  # emulated addresses: anon_vma, address_space, ...


class Allocator:
    def __init__(self, mm: MM, params: AllocatorParams, rng: random.Random) -> None:
        self.mm, self.p, self.rng = mm, params, rng
        self.groups = [g for g in range(mm.geo.ngroups) if g % params.count == params.index]
        self.pools: dict[int, deque] = {PAGECACHE: deque(), SLAB: deque(), DRIVER: deque()}
        self.pts: deque[int] = deque()

    def step(self) -> int:
        """One operation, chosen at random: a fault, an unmap, a page-cache/slab/
        driver page taken or given back, or a fault on a short-lived page table."""
        mm, rng, obj = self.mm, self.rng, self.p.objects
        op = rng.choice(OPS)
        slot = rng.choice(self.groups) * PTRS_PER_GROUP + rng.randrange(PTRS_PER_GROUP)
        if op == "fault" and pte_peek(mm, slot) < 0:
            if not do_anonymous_page(mm, slot, obj["anon_vma"], rng.randrange(mm.geo.contents)):
                return NOMEM_NS  # no free page: wait for reclaim
        elif op == "unmap" and pte_peek(mm, slot) >= 0:
            zap_pte(mm, slot)
        elif op == "other":
            kind = rng.choice((PAGECACHE, SLAB, DRIVER))
            pool = self.pools[kind]
            if len(pool) >= POOL or (pool and rng.random() < 0.3):
                release_page(mm, kind, pool.popleft())
            pfn = alloc_page(mm, kind)
            if pfn is not None:
                use_page(mm, kind, pfn, obj)
                pool.append(pfn)
        elif op == "pt" and mm.split_ptlocks:
            self.churn_pagetable()
        return 0

    def churn_pagetable(self) -> None:
        """A fault on a short-lived mm: new page table, locked on this CPU for a while."""
        mm, rng, pts = self.mm, self.rng, self.pts
        if len(pts) >= PT_POOL or (pts and rng.random() < 0.25):
            pte_free(mm, pts.popleft())
            mm.count("pagetables_churned")
        if len(pts) < PT_POOL:
            pfn = pte_alloc_one(mm)
            if pfn is None:
                return
            pts.append(pfn)
        pfn = pts[rng.randrange(len(pts))]
        off, lm = mm.page_off(pfn) + mm.ptl_rel, mm.ptl_model
        spin_lock(mm, off, lm)
        mm.clock.delay_ns(int(self.p.ptl_hold_us * 1000))
        spin_unlock(mm, off, lm)
        mm.count("ptl_locks")

    def finish(self) -> None:
        for kind, pool in self.pools.items():
            for pfn in pool:
                release_page(self.mm, kind, pfn)
        for pfn in self.pts:
            pte_free(self.mm, pfn)


def use_page(mm: MM, kind: int, pfn: int, obj: dict) -> None:
    if kind == PAGECACHE:  # add_to_page_cache: mapping = address_space, index
        set_page_mapping(mm, pfn, obj["address_space"], W_ADDRESS_SPACE)
        set_page_index(mm, pfn, pfn & 0xFFFF)
    elif kind == SLAB:  # SLUB: page->slab, inuse/objects over _mapcount; mapping untouched
        set_page_slab(mm, pfn, obj["kmem_cache"])
    else:  # a driver keeping its own pointer in page->mapping
        set_page_mapping(mm, pfn, obj["driver"], W_DRIVER)


def release_page(mm: MM, kind: int, pfn: int) -> None:
    if kind in (PAGECACHE, DRIVER):  # remove_from_page_cache / the driver: mapping = NULL
        set_page_mapping(mm, pfn, 0, W_NULL)
    else:  # SLUB: reset_page_mapcount, page->slab left as is (it is not mapping)
        reset_page_mapcount(mm, pfn)
    put_page(mm, pfn)
