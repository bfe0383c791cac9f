"""KSM's stable tree (mm/ksm.c, 2.6.33): get_ksm_page, the stable_node's life,
and the merge primitives ksmd's scan uses.

Bytes other CPUs may read are real (emu.mm.ksm_nodes): struct stable_node
(kpfn, hlist) at direct-map addresses, struct rmap_item, page->mapping (0x3
while merging, then node + 3). What only ksmd touches in the kernel, under
ksm_thread_mutex, is ksmd's own Python state here (`StableTree`).

The stable tree is an index by content rather than an rbtree, so a lookup
meets one node; ksmd's scan (emu.mm.ksm_scan) makes up for the nodes a descent
would meet.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..check.lockdep import KSM_MUTEX, KSM_MUTEX_OFF
from .context import MM, PAGE_MAPPING_ANON, PAGE_MAPPING_KSM
from .ksm_nodes import (
    clear_node_hlist,
    clear_rmap_item,
    hlist_del_rmap_item,
    hlist_empty,
    init_stable_node,
    node_addr,
    rmap_items_of,
    stable_node_kpfn,
)
from .page import lock_page, page_mapping_once, set_page_stable_node, unlock_page
from .refcount import get_page, get_page_unless_zero, put_page
from .regions import Geometry
from .trace import traced


class StableTree:
    """ksmd's private state: the stable tree (content -> node), this pass's
    unstable tree (content -> slot), and the stable_node kmem_cache, whose
    free objects are a LIFO stack: a freed node's address is the next handed out."""

    def __init__(self, geo: Geometry) -> None:
        # numpy, not dicts: millions of pages
        self.by_content = np.zeros(geo.contents, np.int64)  # node index + 1, 0: none
        self.unstable = np.zeros(geo.contents, np.int64)  # slot + 1, 0: none
        self.free_nodes = np.arange(geo.node_capacity - 1, -1, -1, dtype=np.int64)  # node 0 on top
        self.nfree = geo.node_capacity
        self.live = np.zeros(geo.node_capacity, np.uint8)
        self.content = np.zeros(geo.node_capacity, np.int64)

    def alloc_node(self) -> int:
        """kmem_cache_alloc: a free stable_node index, or -1 when the slab is full."""
        if not self.nfree:
            return -1
        self.nfree -= 1
        return int(self.free_nodes[self.nfree])

    def free_node(self, idx: int) -> None:
        """kmem_cache_free: the node's memory is handed out next."""
        self.free_nodes[self.nfree] = idx
        self.nfree += 1


def ksm_thread_mutex_lock(mm: MM) -> None:
    """mutex_lock(&ksm_thread_mutex): what serialises ksmd's changes to the
    stable tree and the rmap_item lists. Only ksmd takes it here, so it has no
    bytes; lockdep still knows ksmd holds it."""
    if mm.lockdep is not None:
        mm.lockdep.acquired(KSM_MUTEX, KSM_MUTEX_OFF)


def ksm_thread_mutex_unlock(mm: MM) -> None:
    if mm.lockdep is not None:
        mm.lockdep.released(KSM_MUTEX, KSM_MUTEX_OFF)


@traced("get_ksm_page", 1)
def get_ksm_page(mm: MM, tree: StableTree, idx: int) -> int:
    """The stable_node's KSM page with a reference taken, or -1 when the page
    has gone (the stale node is then removed from the stable tree).

    The node holds no reference to its page. If it did, reclaim could not free
    the page until ksmd came round to this node again, which can take minutes.
    Instead the node keeps only a "keyhole reference": its kpfn, through which
    this peeps at the page to see whether it still holds the right key,
    page->mapping pointing back to this very node (address + 3). That relies on
    the free path resetting an anon page's mapping to NULL, and on no other
    user of a struct page ever storing something equal to our key in mapping,
    or in any union member lying on mapping's bytes (a split page-table lock).

    The order is page_cache_get_speculative's: look at mapping; take a
    reference only if the count is not zero (a free page's count stays 0, and
    a reference on it would revive it); then look again, because between the
    first look and the reference the page may have been freed and reused, and
    only a key seen while we hold the reference proves the page is ours. The
    rcu_read_lock is not for KSM: it keeps that speculative protocol's rules.

    A page whose refs are frozen (page_freeze_refs, on its way to the free
    list) makes this return -1 one moment; unfrozen, it may come back. The
    page is going anyway, so that is harmless, but it is an anomaly to keep in mind.

    The CPU's protocol selects the variant (emu.mm.protocol.GET_KSM_PAGE).
    """
    return _GET_KSM_PAGE[mm.protocol.get_ksm_page](mm, tree, idx)


def _by_reference(mm: MM, tree: StableTree, idx: int) -> int:
    """Before 2.6.33: the node's own reference keeps the page, so no keyhole."""
    kpfn = stable_node_kpfn(mm, idx)
    get_page(mm, kpfn)
    mm.count("get_ksm_page_ok")
    return kpfn


def _keyhole(mm: MM, tree: StableTree, idx: int, recheck: bool = True) -> int:
    kpfn = stable_node_kpfn(mm, idx)
    node = node_addr(mm, idx)
    expected = node + PAGE_MAPPING_ANON + PAGE_MAPPING_KSM
    mm.rcu_read_lock()
    if page_mapping_once(mm, kpfn) != expected:
        return _stale(mm, tree, idx)
    if mm.window_ns:  # an interrupt landing here: widens the race window
        mm.clock.delay_ns(mm.window_ns)
    if not get_page_unless_zero(mm, kpfn):
        return _stale(mm, tree, idx)
    if recheck and page_mapping_once(mm, kpfn) != expected:
        put_page(mm, kpfn)
        return _stale(mm, tree, idx)
    mm.rcu_read_unlock()
    mm.count("get_ksm_page_ok")
    mm.truth.keyhole_opened(kpfn, node)
    return kpfn


def _keyhole_no_recheck(mm: MM, tree: StableTree, idx: int) -> int:
    return _keyhole(mm, tree, idx, recheck=False)


_GET_KSM_PAGE: dict[str, Callable[[MM, StableTree, int], int]] = {
    "keyhole": _keyhole, "keyhole-no-recheck": _keyhole_no_recheck, "refcount": _by_reference}


def _stale(mm: MM, tree: StableTree, idx: int) -> int:
    # A control dependency: removing the node, plain stores into its rmap_items,
    # happens only because mapping (or the count) was read gone. That orders the
    # free path's last looks at the node (try_to_unmap's hlist walk) before them;
    # LKMM orders a control dependency to marked writes only (docs/memory-models.md)
    mm.a.ctrl_dep()
    mm.rcu_read_unlock()
    mm.count("get_ksm_page_stale")
    remove_node_from_stable_tree(mm, tree, idx)
    return -1


def put_ksm_page(mm: MM, pfn: int, idx: int) -> None:
    """put_page of get_ksm_page's reference; with the keyhole, the truth keeper
    checks the page stayed the node's while it was held."""
    if not mm.protocol.holds_ref:
        mm.truth.keyhole_closed(pfn, node_addr(mm, idx))
    put_page(mm, pfn)


def remove_node_from_stable_tree(mm: MM, tree: StableTree, idx: int) -> None:
    for slot in rmap_items_of(mm, idx):
        clear_rmap_item(mm, slot)
    clear_node_hlist(mm, idx)
    free_stable_node(mm, tree, idx)


@traced("free_stable_node", 1)
def free_stable_node(mm: MM, tree: StableTree, idx: int) -> None:
    mm.truth.stable_node_freed(stable_node_kpfn(mm, idx), node_addr(mm, idx))
    content = int(tree.content[idx])
    if tree.by_content[content] == idx + 1:
        tree.by_content[content] = 0
    tree.live[idx] = 0
    tree.free_node(idx)
    mm.count("stable_nodes_removed")


def stable_tree_insert(mm: MM, tree: StableTree, kpfn: int, content: int) -> int:
    """A new stable_node for kpfn, whose mapping gets the key. -1 if the slab is full."""
    idx = tree.alloc_node()
    if idx < 0:
        return -1
    init_stable_node(mm, idx, kpfn)
    tree.content[idx] = content
    if mm.protocol.holds_ref:
        get_page(mm, kpfn)  # the stable_node's reference
    set_page_stable_node(mm, kpfn, node_addr(mm, idx))
    tree.by_content[content] = idx + 1
    tree.live[idx] = 1
    return idx


def remove_rmap_item_from_tree(mm: MM, tree: StableTree, slot: int, idx: int) -> None:
    """Unlink a stable rmap_item whose slot no longer maps the node's page."""
    if mm.protocol.holds_ref:
        kpfn = stable_node_kpfn(mm, idx)
        lock_page(mm, kpfn)
        hlist_del_rmap_item(mm, slot)
        empty = hlist_empty(mm, idx)
        if empty:  # the last rmap_item: the page loses its node and the node's reference
            set_page_stable_node(mm, kpfn, 0)
        unlock_page(mm, kpfn)
        if empty:
            free_stable_node(mm, tree, idx)
            put_page(mm, kpfn)
        return
    kpfn = get_ksm_page(mm, tree, idx)
    if kpfn < 0:
        return  # stale: remove_node_from_stable_tree unlinked it already
    lock_page(mm, kpfn)
    hlist_del_rmap_item(mm, slot)
    unlock_page(mm, kpfn)
    put_ksm_page(mm, kpfn, idx)
