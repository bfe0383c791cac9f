"""The page allocator: a shared free list, alloc_page, free_hot_cold_page.

The free list is a Treiber stack over the freelist region: `next[pfn]` links
and one head word (ABA tag << 32 | top pfn + 1), changed only by CAS, so any
number of processes allocate and free at once. It is LIFO, like the per-CPU
hot lists: the page freed last is allocated next, which is what makes reuse
of a just-freed KSM page (the keyhole's hazard) frequent. The kernel guards
its lists with zone->lock and interrupts off, so the list's accesses are
ghost accesses: part of the step, never a point where another CPU cuts in.
"""

from __future__ import annotations

import numpy as np

from ..check.shadow import W_NULL
from ..check.violations import BAD_COUNT, BAD_FLAGS, BAD_MAPCOUNT, BAD_MAPPING
from . import testbreak
from .context import MM, PG_LOCKED
from .page import PageAnon, page_mapping_raw, set_page_mapping
from .regions import freelist_dtype
from .trace import traced

M32 = 0xFFFFFFFF


def freelist_init(mm: MM) -> None:
    """All pages free, pfn 0 on top (at boot, before any other CPU runs)."""
    n = mm.geo.nr_pages
    fl = mm.m.region_array("freelist", freelist_dtype(n))
    fl[0]["next"][:] = np.arange(2, n + 2, dtype=np.uint32)
    fl[0]["next"][n - 1] = 0
    del fl
    mm.h.store(mm.freelist, 8, 1)
    mm.h.store(mm.ctl_nr_free, 8, n)


def nr_free(mm: MM) -> int:
    return mm.g.load(mm.ctl_nr_free, 8, True)


def _push(mm: MM, pfn: int) -> None:
    g, head = mm.g, mm.freelist
    h = g.load(head, 8)
    while True:
        g.store(head + 8 + 4 * pfn, 4, h & M32)
        new = ((((h >> 32) + 1) & M32) << 32) | (pfn + 1)
        seen = g.cas(head, 8, h, new)
        if seen == h:
            break
        h = seen
    g.fetch_add(mm.ctl_nr_free, 8, 1)


def _pop(mm: MM) -> int | None:
    g, head = mm.g, mm.freelist
    h = g.load(head, 8)
    while True:
        top = h & M32
        if top == 0:
            return None
        nxt = g.load(head + 8 + 4 * (top - 1), 4)
        new = ((((h >> 32) + 1) & M32) << 32) | nxt
        seen = g.cas(head, 8, h, new)
        if seen == h:
            g.fetch_add(mm.ctl_nr_free, 8, -1, True)
            return top - 1
        h = seen


def set_page_refcounted(mm: MM, pfn: int) -> None:
    if "refcounted-plain-store" in testbreak.BROKEN and mm.mapcount_rel == mm.count_rel + 4 \
            and mm.count_rel % 8 == 0:
        # broken: _count = 1 and _mapcount = -1 as one plain 8-byte store
        raw = (1).to_bytes(4, mm.cfg.byte_order) + (-1).to_bytes(4, mm.cfg.byte_order, signed=True)
        mm.a.store(mm.page_off(pfn) + mm.count_rel, 8, int.from_bytes(raw, mm.cfg.byte_order))
        return
    mm.a.atomic_set(mm.page_off(pfn) + mm.count_rel, 1)


@traced("alloc_page", 0)
def alloc_page(mm: MM, state: int) -> int | None:
    """A free page for `state` (ANON, PAGECACHE, ...: what the shadow records it
    as): _count 1, _mapcount -1. None when memory is exhausted."""
    pfn = _pop(mm)
    if pfn is None:
        mm.count("alloc_failed")
        return None
    mm.truth.page_allocated(pfn, state)
    set_page_refcounted(mm, pfn)
    mm.count("pages_allocated")
    return pfn


def free_pages_check(mm: MM, pfn: int) -> int:
    """BAD_* bits of what is wrong with a page being freed (0: fine)."""
    off, a = mm.page_off(pfn), mm.a
    bad = 0
    if a.atomic_read(off + mm.mapcount_rel) != -1:
        bad |= BAD_MAPCOUNT
    if a.load(off + mm.mapping_rel, mm.word) != 0:
        bad |= BAD_MAPPING
    if a.atomic_read(off + mm.count_rel) != 0:
        bad |= BAD_COUNT
    if a.load(off + mm.flags_rel, mm.word) & PG_LOCKED:
        bad |= BAD_FLAGS
    return bad


@traced("free_hot_cold_page", 0)
def free_hot_cold_page(mm: MM, pfn: int) -> None:
    if PageAnon(page_mapping_raw(mm, pfn)) and mm.protocol.clear_on_free:
        set_page_mapping(mm, pfn, 0, W_NULL)  # "if (PageAnon(page)) page->mapping = NULL"
    bad = free_pages_check(mm, pfn)
    if bad:
        # The kernel leaks a bad page; the emulator reports it and frees it
        # anyway, so the run goes on and shows what such a page does next.
        mm.truth.page_bad(pfn, bad)
    # The page reaches another CPU only through zone->lock (free_pcppages_bulk's
    # spin_lock, a locked instruction on x86): this CPU's stores to it, the
    # mapping = NULL above, are in memory before anyone can allocate it.
    mm.a.smp_mb("free_hot_cold_page")
    mm.truth.page_freed(pfn)
    mm.count("pages_freed")
    _push(mm, pfn)
