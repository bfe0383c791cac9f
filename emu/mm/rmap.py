"""Reverse mapping (mm/rmap.c): _mapcount and an anon page's mapping, and
try_to_unmap, which finds every pte of a page (a KSM page's through its
stable_node's rmap_items, as try_to_unmap_ksm does) and clears it."""

from __future__ import annotations

from ..check.shadow import W_ANON
from ..check.violations import V_COUNT_NEGATIVE
from . import testbreak
from .context import MM, PAGE_MAPPING_ANON
from .ksm_nodes import node_idx, rmap_items_of
from .page import page_mapcount_add, page_mapping_raw, page_stable_node, set_page_mapping
from .pgtable import group_of, pte, set_pte
from .ptlock import pte_lock, pte_unlock
from .refcount import put_page
from .trace import traced


def page_add_new_anon_rmap(mm: MM, pfn: int, anon_vma: int) -> None:
    """mapping = anon_vma + PAGE_MAPPING_ANON (the fault maps it after)."""
    set_page_mapping(mm, pfn, anon_vma + PAGE_MAPPING_ANON, W_ANON)


def page_remove_rmap(mm: MM, pfn: int) -> None:
    if page_mapcount_add(mm, pfn, -1) < -1:
        mm.truth.bug(V_COUNT_NEGATIVE, pfn, f"page_remove_rmap on pfn {pfn}: _mapcount below -1", 1)


def try_to_unmap_one(mm: MM, slot: int, pfn: int) -> int:
    """Clear slot's pte if it maps pfn (any page when pfn is -1), under the pte
    lock; then page_remove_rmap and drop the pte's reference. The pfn
    unmapped, or -1."""
    group = group_of(slot)
    if "pte-lock-of-other-table" in testbreak.BROKEN:
        group = (group + 1) % mm.geo.ngroups
    off = pte_lock(mm, group)
    found = pte(mm, slot)
    if found >= 0 and (pfn < 0 or found == pfn):
        set_pte(mm, slot, -1)
    else:
        found = -1
    pte_unlock(mm, off)
    if found >= 0:
        page_remove_rmap(mm, found)
        put_page(mm, found)
    return found


@traced("try_to_unmap", 0, 1)
def try_to_unmap(mm: MM, pfn: int, slot: int) -> int:
    """Every pte of a page the caller holds (referenced and locked), found at
    slot: a KSM page's through its stable_node's hlist, an anon page's is the
    one slot. How many were cleared."""
    node = page_stable_node(page_mapping_raw(mm, pfn))
    slots = rmap_items_of(mm, node_idx(mm, node)) if node else [slot]
    return sum(try_to_unmap_one(mm, s, pfn) >= 0 for s in slots)
