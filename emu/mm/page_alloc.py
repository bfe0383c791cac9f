"""The page allocator: a shared free list, alloc, put_page, free_hot_cold_page.

The free list is a Treiber stack over the freelist region: `next[pfn]` links
and one head word (ABA tag << 32 | top pfn + 1), changed only by CAS, so any
number of processes allocate and free at once. It is LIFO, like the per-CPU
hot lists: the page freed last is allocated next, which is what makes reuse
of a just-freed KSM page (the keyhole's hazard) frequent.
"""

from __future__ import annotations

import time

import numpy as np

from .core import MM, PG_LOCKED, V_BAD_PAGE, V_COUNT_NEGATIVE, V_DOUBLE_ALLOC
from .world import FREE, KSM, W_NULL

M32 = 0xFFFFFFFF
NR_FREE_OFF = 8  # in the control region


def freelist_init(mm: MM) -> None:
    """All pages free, pfn 0 on top (launcher, before any role runs)."""
    n = mm.geo.nr_pages
    nxt = mm.m.region_array("freelist", np.uint32)[2:2 + n]
    nxt[:] = np.arange(2, n + 2, dtype=np.uint32)
    nxt[n - 1] = 0
    del nxt
    mm.h.store(mm.regions["freelist"].offset, 8, 1)
    mm.h.store(mm.control + NR_FREE_OFF, 8, n)


def nr_free(mm: MM) -> int:
    return mm.h.load(mm.control + NR_FREE_OFF, 8, True)


def _push(mm: MM, pfn: int) -> None:
    head = mm.regions["freelist"].offset
    h = mm.h.load(head, 8)
    while True:
        mm.h.store(head + 8 + 4 * pfn, 4, h & M32)
        new = ((((h >> 32) + 1) & M32) << 32) | (pfn + 1)
        seen = mm.h.cas(head, 8, h, new)
        if seen == h:
            break
        h = seen
    mm.h.fetch_add(mm.control + NR_FREE_OFF, 8, 1)


def _pop(mm: MM) -> int | None:
    head = mm.regions["freelist"].offset
    h = mm.h.load(head, 8)
    while True:
        top = h & M32
        if top == 0:
            return None
        nxt = mm.h.load(head + 8 + 4 * (top - 1), 4)
        new = ((((h >> 32) + 1) & M32) << 32) | nxt
        seen = mm.h.cas(head, 8, h, new)
        if seen == h:
            mm.h.fetch_add(mm.control + NR_FREE_OFF, 8, -1, True)
            return top - 1
        h = seen


def alloc_page(mm: MM, state: int) -> int | None:
    """Take a free page for `state` (ANON, PAGECACHE, ...): _count 1, _mapcount -1."""
    pfn = _pop(mm)
    if pfn is None:
        mm.count("alloc_failed")
        return None
    seen = mm.sh_cas(pfn, "state", FREE, state)
    if seen != FREE:  # the free list handed out a page that is in use
        mm.violation(V_DOUBLE_ALLOC, pfn, detail=seen)
        mm.sh_set(pfn, "state", state)
    mm.sh_add(pfn, "gen", 1)
    mm.a.store(mm.page_off(pfn) + mm.count_rel, 4, 1)  # set_page_refcounted
    mm.count("pages_allocated")
    return pfn


def get_page(mm: MM, pfn: int) -> None:
    """atomic_inc; on a free page (the kernel's BUG) report it and undo, so the
    first violation is not buried under the ones a revived page would cause."""
    off = mm.page_off(pfn) + mm.count_rel
    old = mm.a.fetch_add(off, 4, 1, True)
    if old <= 0:
        mm.a.fetch_add(off, 4, -1, True)
        mm.violation(V_COUNT_NEGATIVE, pfn, detail=old & M32)


def put_page(mm: MM, pfn: int) -> bool:
    """put_page_testzero, then free_hot_cold_page on the last reference."""
    off = mm.page_off(pfn) + mm.count_rel
    old = mm.a.fetch_add(off, 4, -1, True)
    if old <= 0:
        mm.violation(V_COUNT_NEGATIVE, pfn, detail=old & M32)
        mm.a.fetch_add(off, 4, 1, True)
        return False
    if old == 1:
        free_hot_cold_page(mm, pfn)
        return True
    return False


def page_freeze_refs(mm: MM, pfn: int, count: int) -> bool:
    """cmpxchg(_count, count, 0) == count: while frozen, get_page_unless_zero fails."""
    return mm.a.atomic_cmpxchg(mm.page_off(pfn) + mm.count_rel, count, 0) == count


def free_pages_check(mm: MM, pfn: int) -> int:
    """Bitmask of what is wrong with a page being freed (0: fine)."""
    off = mm.page_off(pfn)
    bad = 0
    if mm.a.load(off + mm.mapcount_rel, 4, True) != -1:
        bad |= 1
    if mm.a.load(off + mm.mapping_rel, mm.word) != 0:
        bad |= 2
    if mm.a.load(off + mm.count_rel, 4, True) != 0:
        bad |= 4
    if mm.a.load(off + mm.flags_rel, mm.word) & PG_LOCKED:
        bad |= 8
    return bad


def free_hot_cold_page(mm: MM, pfn: int) -> None:
    mapping = mm.mapping(pfn)
    if mapping & 1 and mm.protocol != "keyhole-no-clear":
        mm.set_mapping(pfn, 0)  # "if (PageAnon(page)) page->mapping = NULL"
        mm.sh_set(pfn, "writer", W_NULL)
    bad = free_pages_check(mm, pfn)
    if bad:
        # The kernel leaks a bad page; the emulator reports it and frees it
        # anyway, so the run goes on and shows what such a page does next.
        mm.violation(V_BAD_PAGE, pfn, detail=bad)
    was = mm.sh_xchg(pfn, "state", FREE)
    mm.sh_set(pfn, "node", 0)
    mm.sh_add(pfn, "gen", 1)
    t0 = mm.sh_xchg(pfn, "t_reclaim", 0)
    if t0:
        mm.record_latency(time.monotonic_ns() - t0, 1 if was == KSM else 0)
    mm.count("pages_freed")
    _push(mm, pfn)
