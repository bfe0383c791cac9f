"""Faults and unmaps in the KSM-scanned area (mm/memory.c): do_anonymous_page,
zap_pte, follow_page, and the short-lived page-table pages allocators churn."""

from __future__ import annotations

from ..check.shadow import ANON, PAGETABLE
from .context import MM
from .page import set_page_content, set_page_index
from .page_alloc import alloc_page
from .pgtable import group_of, pte, set_pte, vaddr
from .ptlock import pte_lock, pte_lock_deinit, pte_lock_init, pte_unlock
from .refcount import get_page, put_page
from .rmap import page_add_new_anon_rmap, try_to_unmap_one
from .trace import traced


@traced("do_anonymous_page", 0, 2)
def do_anonymous_page(mm: MM, slot: int, anon_vma: int, content: int) -> bool:
    """Fault a new anon page, filled with `content`, in at an empty slot."""
    pfn = alloc_page(mm, ANON)
    if pfn is None:
        return False
    set_page_content(mm, pfn, content)
    page_add_new_anon_rmap(mm, pfn, anon_vma)
    set_page_index(mm, pfn, vaddr(mm, slot) >> 12)
    off = pte_lock(mm, group_of(slot))
    mapped = pte(mm, slot) < 0
    if mapped:
        mm.a.atomic_set(mm.page_off(pfn) + mm.mapcount_rel, 0)
        set_pte(mm, slot, pfn)
    pte_unlock(mm, off)
    if not mapped:
        put_page(mm, pfn)  # someone else faulted it in first
    return mapped


@traced("zap_pte", 0)
def zap_pte(mm: MM, slot: int) -> int:
    """zap_pte_range on one pte: unmap whatever slot maps and drop the
    mapping's reference. Returns the pfn unmapped, or -1."""
    return try_to_unmap_one(mm, slot, -1)


def follow_page(mm: MM, slot: int) -> int:
    """follow_page(FOLL_GET): the page at slot with a reference, or -1."""
    off = pte_lock(mm, group_of(slot))
    pfn = pte(mm, slot)
    if pfn >= 0:
        get_page(mm, pfn)
    pte_unlock(mm, off)
    return pfn


@traced("pte_alloc_one")
def pte_alloc_one(mm: MM) -> int | None:
    """A new page-table page: allocated, its constructor run (pte_lock_init)."""
    pfn = alloc_page(mm, PAGETABLE)
    if pfn is not None:
        pte_lock_init(mm, pfn)
    return pfn


@traced("pte_free", 0)
def pte_free(mm: MM, pfn: int) -> None:
    """pte_lock_deinit, then the page goes back."""
    pte_lock_deinit(mm, pfn)
    put_page(mm, pfn)
