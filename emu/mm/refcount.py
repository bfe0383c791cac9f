"""Page reference counts (include/linux/mm.h, pagemap.h, mm/swap.c): every
operation one atomic on page->_count, an atomic_t, so any number of CPUs may
race on it. A BUG (a reference taken on a free page, a put too many) is
undone, so the evidence stays intact, and handed to the context's policy."""

from __future__ import annotations

from ..check.violations import V_COUNT_NEGATIVE
from . import testbreak
from .context import MM
from .page_alloc import free_hot_cold_page

M32 = 0xFFFFFFFF


def page_count(mm: MM, pfn: int) -> int:
    return mm.a.atomic_read(mm.page_off(pfn) + mm.count_rel)


def get_page(mm: MM, pfn: int) -> None:
    """atomic_inc; the kernel BUGs when the page was free."""
    off = mm.page_off(pfn) + mm.count_rel
    old = mm.a.fetch_add(off, 4, 1, True)
    if old <= 0:
        mm.a.fetch_add(off, 4, -1, True)
        mm.truth.bug(V_COUNT_NEGATIVE, pfn, f"get_page on pfn {pfn} with _count {old}", old & M32)


def get_page_unless_zero(mm: MM, pfn: int) -> bool:
    """atomic_inc_not_zero: a speculative reference, refused on a free page."""
    return mm.a.atomic_inc_not_zero(mm.page_off(pfn) + mm.count_rel)


def put_page_testzero(mm: MM, pfn: int) -> bool:
    """atomic_dec_and_test; True when this put dropped the last reference."""
    off = mm.page_off(pfn) + mm.count_rel
    if "dec-read-then-store" in testbreak.BROKEN:
        old = mm.a.load(off, 4, True)
        mm.a.store(off, 4, (old - 1) & M32)
    else:
        old = mm.a.fetch_add(off, 4, -1, True)
    if old <= 0:
        mm.a.fetch_add(off, 4, 1, True)
        mm.truth.bug(V_COUNT_NEGATIVE, pfn, f"put_page on pfn {pfn} with _count {old}", old & M32)
        return False
    return old == 1


def put_page(mm: MM, pfn: int) -> bool:
    """put_page_testzero, then free_hot_cold_page on the last reference."""
    if put_page_testzero(mm, pfn):
        free_hot_cold_page(mm, pfn)
        return True
    return False


def page_freeze_refs(mm: MM, pfn: int, count: int) -> bool:
    """cmpxchg(_count, count, 0) == count: while frozen, get_page_unless_zero fails."""
    off = mm.page_off(pfn) + mm.count_rel
    if "freeze-read-then-store" in testbreak.BROKEN:
        if mm.a.load(off, 4, True) != count:
            return False
        mm.a.store(off, 4, 0)
        return True
    return mm.a.cas(off, 4, count, 0, True) == count


def page_unfreeze_refs(mm: MM, pfn: int, count: int) -> None:
    mm.a.atomic_set(mm.page_off(pfn) + mm.count_rel, count)
