"""ksmd's scan (mm/ksm.c): one rmap_item at a time, merging identical anon
pages into KSM pages and meeting stable nodes through get_ksm_page, plus the
nogil sweep of every stable node at the end of a pass.

The stable tree here is an index by content: a lookup meets one node, so
`meet_nodes` calls get_ksm_page on ceil(log2 n) further live nodes per batch,
taken in turn, as a descent of the rbtree would meet them.
"""

from __future__ import annotations

import numpy as np

from .._ksm_sweep import sweep_get_ksm_page
from ..check.shadow import FIELDS, KSM, W_ANON
from ..check.violations import V_COUNT_NEGATIVE, V_FALSE_OPEN
from ..records import SHADOW_DTYPE
from .context import MM, PAGE_MAPPING_ANON
from .ksm import (
    StableTree,
    get_ksm_page,
    put_ksm_page,
    remove_node_from_stable_tree,
    remove_rmap_item_from_tree,
    stable_tree_insert,
)
from .ksm_nodes import node_addr, rmap_item_node, stable_node_kpfn, stable_tree_append
from .memory import follow_page
from .page import (
    PageKsm,
    lock_page,
    page_content,
    page_mapcount_add,
    page_mapping_raw,
    set_page_mapping,
    set_page_stable_node,
    unlock_page,
)
from .page_alloc import free_hot_cold_page
from .pgtable import group_of, pte, pte_peek, set_pte
from .ptlock import pte_lock, pte_unlock
from .refcount import M32, get_page, put_page
from .regions import log2_ceil
from .rmap import page_remove_rmap


def scan_slot(mm: MM, tree: StableTree, slot: int) -> None:
    """ksmd's work on one rmap_item (scan_get_next_rmap_item + cmp_and_merge_page)."""
    idx = rmap_item_node(mm, slot)
    if idx >= 0:
        if pte_peek(mm, slot) == stable_node_kpfn(mm, idx):
            page = get_ksm_page(mm, tree, idx)  # still merged: meets its node
            if page >= 0:
                put_ksm_page(mm, page, idx)
                return
        else:
            remove_rmap_item_from_tree(mm, tree, slot, idx)
        if rmap_item_node(mm, slot) >= 0:
            return
    pfn = follow_page(mm, slot)  # FOLL_GET: our own reference
    if pfn < 0:
        return
    try:
        cmp_and_merge_page(mm, tree, slot, pfn)
    finally:
        put_page(mm, pfn)


def cmp_and_merge_page(mm: MM, tree: StableTree, slot: int, pfn: int) -> None:
    """Merge the page at slot (the caller holds a reference to it) into the
    stable tree, or with an identical page of the unstable tree."""
    if PageKsm(page_mapping_raw(mm, pfn)):
        return
    content = page_content(mm, pfn)
    node = int(tree.by_content[content]) - 1
    if node >= 0:
        kpage = get_ksm_page(mm, tree, node)  # stable_tree_search
        if kpage >= 0:
            if kpage != pfn:
                try_to_merge_with_ksm_page(mm, tree, slot, pfn, kpage, node, content)
            put_ksm_page(mm, kpage, node)
            return
    other = int(tree.unstable[content]) - 1
    if other >= 0 and other != slot and rmap_item_node(mm, other) < 0:
        q = follow_page(mm, other)  # get_mergeable_page: a reference too
        if q >= 0:
            try:
                if (q != pfn and page_content(mm, q) == content
                        and page_mapping_raw(mm, q) & 3 == PAGE_MAPPING_ANON):
                    tree.unstable[content] = 0
                    try_to_merge_two_pages(mm, tree, slot, pfn, other, q, content)
                    return
            finally:
                put_page(mm, q)
    tree.unstable[content] = slot + 1


def replace_page(mm: MM, slot: int, old: int, new: int) -> bool:
    """slot's pte from old to new, under the pte lock, if it still maps old."""
    off = pte_lock(mm, group_of(slot))
    ok = pte(mm, slot) == old
    if ok:
        get_page(mm, new)
        page_mapcount_add(mm, new, 1)
        set_pte(mm, slot, new)
    pte_unlock(mm, off)
    if ok:
        page_remove_rmap(mm, old)
        put_page(mm, old)
    return ok


def try_to_merge_with_ksm_page(mm: MM, tree: StableTree, slot: int, pfn: int, kpage: int, idx: int,
                               content: int) -> None:
    lock_page(mm, kpage)
    if replace_page(mm, slot, pfn, kpage):
        stable_tree_append(mm, slot, idx, content)
        mm.count("ksm_pages_merged")
    unlock_page(mm, kpage)


def try_to_merge_two_pages(mm: MM, tree: StableTree, slot: int, pfn: int, other: int, q: int,
                           content: int) -> None:
    """pfn becomes a KSM page (mapping 0x3, then the key); other's pte moves to
    it. The caller holds references to pfn and q."""
    lock_page(mm, pfn)
    old_mapping = page_mapping_raw(mm, pfn)
    if pte_peek(mm, slot) != pfn or old_mapping & 3 != PAGE_MAPPING_ANON:
        unlock_page(mm, pfn)
        return
    set_page_stable_node(mm, pfn, 0)  # PageKsm with a NULL stable_node
    if not replace_page(mm, other, q, pfn):
        set_page_mapping(mm, pfn, old_mapping, W_ANON)
        unlock_page(mm, pfn)
        return
    idx = stable_tree_insert(mm, tree, pfn, content)
    if idx < 0:  # slab full: leave it a PageKsm page with no node, like a failed insert
        unlock_page(mm, pfn)
        return
    stable_tree_append(mm, slot, idx, content)
    stable_tree_append(mm, other, idx, content)
    unlock_page(mm, pfn)
    mm.count("ksm_pages_created")
    mm.count("ksm_pages_merged")


def meet_nodes(mm: MM, tree: StableTree, cursor: int) -> int:
    """get_ksm_page on ceil(log2 n) live nodes from `cursor` on; the next cursor."""
    live = tree.live
    want = log2_ceil(len(live) - tree.nfree)
    window = np.flatnonzero(live[cursor:cursor + 64 * want])[:want]
    if not len(window):
        return 0
    for idx in (window + cursor).tolist():
        if live[idx]:
            page = get_ksm_page(mm, tree, idx)
            if page >= 0:
                put_ksm_page(mm, page, idx)
    return int(window[-1]) + cursor + 1


def ksm_sweep(mm: MM, tree: StableTree) -> tuple[int, ...]:
    """get_ksm_page over every live node in one nogil loop (emu._ksm_sweep: the
    protocol's variant of it in C, for speed at the end of each pass); stale
    nodes removed. (ok, stale, freed, bad, corrupt): bad are the false opens
    and, by reference, the get_pages on a free page, each recorded."""
    status = np.zeros(len(tree.live), np.uint8)
    counts = sweep_get_ksm_page(
        mm.m.mm, mm.cfg.byte_order, nodes_off=mm.sn_off, node_size=mm.sn_size,
        kpfn_rel=mm.sn_kpfn, nodes_addr=mm.sn_base, live=tree.live,
        mem_map_off=mm.mem_map, page_size=mm.psize, nr_pages=mm.geo.nr_pages,
        mapping_rel=mm.mapping_rel, count_rel=mm.count_rel, word=mm.word, status=status,
        shadow_off=mm.shadow, shadow_size=SHADOW_DTYPE.itemsize,
        shadow_state_rel=FIELDS["state"][0], shadow_node_rel=FIELDS["node"][0],
        ksm_state=KSM, get_ksm_page=mm.protocol.get_ksm_page)
    ok, stale, freed, bad, corrupt = counts
    mm.count("get_ksm_page_ok", ok)
    mm.count("get_ksm_page_stale", stale)
    for idx in np.flatnonzero(status == 4).tolist():
        kpfn = stable_node_kpfn(mm, idx)
        mm.truth.violation(V_FALSE_OPEN, kpfn, node_addr(mm, idx), node_addr(mm, idx) + 3,
                           detail=mm.truth.get(kpfn, "state"))
    for idx in np.flatnonzero(status == 6).tolist():  # as get_page's BUG: by policy
        kpfn = stable_node_kpfn(mm, idx)
        count = mm.truth.peek(mm.page_off(kpfn) + mm.count_rel, 4, True)
        mm.truth.bug(V_COUNT_NEGATIVE, kpfn, f"get_page on pfn {kpfn} with _count {count}", count & M32)
    for idx in np.flatnonzero(status == 3).tolist():
        free_hot_cold_page(mm, stable_node_kpfn(mm, idx))  # our put was the last one
    for idx in np.flatnonzero(status == 2).tolist():
        remove_node_from_stable_tree(mm, tree, idx)
    return counts
