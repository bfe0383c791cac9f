"""allocator: the page users. Faults anon pages into its own mm's slots and
unmaps them; allocates page-cache, slab and driver pages and frees them; and
churns page-table pages (pte_lock_init, spin_lock/unlock as faults would on
this CPU, pte_lock_deinit, free), which is how a just-freed KSM page comes to
hold a spinlock. Each writes exactly the struct page bytes its kernel
counterpart writes."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass

from ..mm.core import MM
from ..mm.page_alloc import alloc_page, put_page
from ..mm.ptlock import PtLock
from ..mm.rmap import PTRS_PER_GROUP, PteLocks, do_anonymous_page, pte, zap_pte
from ..mm.world import DRIVER, PAGECACHE, PAGETABLE, SLAB, W_ADDRESS_SPACE, W_DRIVER, W_NULL, W_PTL, W_SLAB

POOL = 64  # page-cache/slab/driver pages each allocator keeps
PT_POOL = 4  # short-lived page-table pages each allocator keeps


@dataclass(frozen=True)
class AllocatorParams:
    index: int
    count: int
    ptl_hold_us: float = 20.0
    objects: dict | None = None  # emulated addresses: anon_vma, address_space, kmem_cache, driver


def run(mm: MM, locks: PteLocks, p: AllocatorParams, rng: random.Random, progress) -> None:
    groups = [g for g in range(mm.geo.ngroups) if g % p.count == p.index]
    obj = p.objects or {}
    pools: dict[int, deque] = {PAGECACHE: deque(), SLAB: deque(), DRIVER: deque()}
    pts: deque[int] = deque()
    ptl = PtLock(mm.m) if mm.m.cfg["USE_SPLIT_PTLOCKS"] else None
    contents = mm.geo.contents
    ops = ["fault"] * 6 + ["unmap"] * 1 + ["other"] * 2 + ["pt"] * 3
    while not mm.stopping():
        op = rng.choice(ops)
        slot = rng.choice(groups) * PTRS_PER_GROUP + rng.randrange(PTRS_PER_GROUP)
        if op == "fault" and pte(mm, slot) < 0:
            if not do_anonymous_page(mm, locks, slot, obj["anon_vma"], rng.randrange(contents)):
                time.sleep(0.001)  # no free page: wait for reclaim
        elif op == "unmap" and pte(mm, slot) >= 0:
            zap_pte(mm, locks, slot)
        elif op == "other":
            kind = rng.choice((PAGECACHE, SLAB, DRIVER))
            pool = pools[kind]
            if len(pool) >= POOL or (pool and rng.random() < 0.3):
                release_page(mm, kind, pool.popleft())
            pfn = alloc_page(mm, kind)
            if pfn is not None:
                use_page(mm, kind, pfn, obj)
                pool.append(pfn)
        elif op == "pt" and ptl is not None:
            churn_pagetable(mm, ptl, pts, rng, p.ptl_hold_us)
        progress()
    for kind, pool in pools.items():
        for pfn in pool:
            release_page(mm, kind, pfn)
    if ptl is not None:
        for pfn in pts:
            free_pagetable(mm, ptl, pfn)


def use_page(mm: MM, kind: int, pfn: int, obj: dict) -> None:
    if kind == PAGECACHE:  # add_to_page_cache: mapping = address_space, index
        mm.sh_set(pfn, "writer", W_ADDRESS_SPACE)
        mm.set_mapping(pfn, obj["address_space"])
        mm.a.store(mm.page_off(pfn) + mm.index_rel, mm.word, pfn & 0xFFFF)
    elif kind == SLAB:  # SLUB: page->slab, inuse/objects over _mapcount; mapping untouched
        mm.sh_set(pfn, "writer", W_SLAB)
        mm.a.store(mm.page_off(pfn) + mm.private_rel, mm.word, obj["kmem_cache"])
        mm.a.store(mm.page_off(pfn) + mm.mapcount_rel, 4, 0x00200000)
    else:  # a driver keeping its own pointer in page->mapping
        mm.sh_set(pfn, "writer", W_DRIVER)
        mm.set_mapping(pfn, obj["driver"])


def release_page(mm: MM, kind: int, pfn: int) -> None:
    if kind in (PAGECACHE, DRIVER):  # remove_from_page_cache / the driver: mapping = NULL
        mm.set_mapping(pfn, 0)
        mm.sh_set(pfn, "writer", W_NULL)
    else:  # SLUB: reset_page_mapcount, page->slab left as is (it is not mapping)
        mm.set_mapcount(pfn, -1)
    put_page(mm, pfn)


def churn_pagetable(mm: MM, ptl: PtLock, pts: deque, rng: random.Random, hold_us: float) -> None:
    """A fault on a short-lived mm: new page table, locked on this CPU for a while."""
    if len(pts) >= PT_POOL or (pts and rng.random() < 0.25):
        free_pagetable(mm, ptl, pts.popleft())
        mm.count("pagetables_churned")
    if len(pts) < PT_POOL:
        pfn = alloc_page(mm, PAGETABLE)
        if pfn is None:
            return
        mm.sh_set(pfn, "writer", W_PTL)
        ptl.pte_lock_init(pfn, mm.cpu)
        pts.append(pfn)
    pfn = pts[rng.randrange(len(pts))]
    ptl.spin_lock(pfn, mm.cpu, mm.task)
    end = time.perf_counter_ns() + int(hold_us * 1000)
    while time.perf_counter_ns() < end:
        pass
    ptl.spin_unlock(pfn, mm.cpu, mm.task)
    mm.count("ptl_locks")


def free_pagetable(mm: MM, ptl: PtLock, pfn: int) -> None:
    ptl.pte_lock_deinit(pfn)  # mapping = NULL "so free_pages_check won't complain"
    mm.sh_set(pfn, "writer", W_NULL)
    put_page(mm, pfn)
