"""KSM: stable_nodes, rmap_items, get_ksm_page and merging (mm/ksm.c, 2.6.33).

Bytes that another process may read are real: struct stable_node records
(kpfn, hlist.first) in the stable_nodes slab at direct-map addresses, struct
rmap_item records (address with STABLE_FLAG, head, hlist.next/pprev as
emulated pointers), and page->mapping (0x3 while merging, then node + 3).
What only ksmd touches in the kernel (under ksm_thread_mutex) is ksmd's own
Python state here: the stable tree (content -> node), the unstable tree of
this pass, the stable_node free list (LIFO: a freed node's address is the
next one handed out, as with a kmem_cache).

The stable tree is an index by content rather than an rbtree: a lookup meets
one node, so ksmd also calls get_ksm_page on ceil(log2 n) further nodes per
batch, taken in turn from all live nodes, as a descent would meet them; and
at the end of each full pass it sweeps every stable node in one nogil loop
(emu._ksm_sweep), removing the stale ones.

Protocols (`mm.protocol`):
  keyhole             get_ksm_page exactly as 2.6.33
  keyhole-no-recheck  broken: skips the second mapping check
  keyhole-no-clear    broken: free_hot_cold_page leaves mapping (page_alloc.py)
  refcount            the stable_node holds a page reference until its last
                      rmap_item goes (2.6.32's "stable_node point to page and back")
"""

from __future__ import annotations

import time

import numpy as np

from .._ksm_sweep import sweep_get_ksm_page
from .core import (
    MM,
    PAGE_MAPPING_ANON,
    PAGE_MAPPING_KSM,
    SHADOW_FIELDS,
    V_CHANGED_WHILE_REF,
    V_FALSE_OPEN,
    V_NODE_FREED_WITH_KEY,
)
from .page_alloc import free_hot_cold_page, get_page, put_page
from .rmap import PteLocks, get_pte_page, group_of, page_remove_rmap, pte, set_pte, vaddr
from .world import KSM, SHADOW_DTYPE, W_ANON, W_KSM_KEY, W_KSM_NULL, log2_ceil

STABLE_FLAG = 0x200
PROTOCOLS = ("keyhole", "refcount", "keyhole-no-recheck", "keyhole-no-clear")


class StableNodes:
    """The shared bytes of stable_nodes and rmap_items: addresses and hlist walks.
    What reclaim needs (try_to_unmap_ksm) without ksmd's private state."""

    def __init__(self, mm: MM) -> None:
        self.mm = mm

    # -- addresses -----------------------------------------------------------
    def node_addr(self, idx: int) -> int:
        return self.mm.sn.base + idx * self.mm.sn_size

    def node_off(self, idx: int) -> int:
        return self.mm.sn.offset + idx * self.mm.sn_size

    def node_idx(self, addr: int) -> int:
        return (addr - self.mm.sn.base) // self.mm.sn_size

    def item_off(self, slot: int) -> int:
        return self.mm.ri.offset + slot * self.mm.ri_size

    def item_addr(self, slot: int) -> int:
        return self.mm.ri.base + slot * self.mm.ri_size

    def kpfn(self, idx: int) -> int:
        return self.mm.a.load(self.node_off(idx) + self.mm.sn_kpfn, self.mm.word)


    # -- the hlist of rmap_items, in emulated pointers
    def _ld(self, off: int) -> int:
        return self.mm.a.load(off, self.mm.word)

    def _st(self, off: int, v: int) -> None:
        self.mm.a.store(off, self.mm.word, v)

    def items_of(self, idx: int) -> list[int]:
        """Slots on node idx's hlist (caller holds the KSM page lock, or is ksmd)."""
        mm, out = self.mm, []
        p = self._ld(self.node_off(idx) + mm.sn_hlist)
        while p:
            slot = (p - mm.ri_hlist - mm.ri.base) // mm.ri_size
            out.append(slot)
            p = self._ld(self.item_off(slot) + mm.ri_hlist)
        return out



class Ksm(StableNodes):
    """ksmd's state and the KSM operations on the shared bytes."""

    def __init__(self, mm: MM, locks: PteLocks) -> None:
        super().__init__(mm)
        self.locks = locks
        g = mm.geo
        # content -> node index + 1 (0: none); numpy, not a dict: millions of pages
        self.stable_by_content = np.zeros(g.contents, np.int64)
        # the stable_node kmem_cache's free objects, a LIFO stack: node 0 first
        self.free_nodes = np.arange(g.node_capacity - 1, -1, -1, dtype=np.int64)
        self.nfree = g.node_capacity
        self.unstable = np.zeros(g.contents, np.int64)  # content -> slot + 1, this pass
        self.node_cursor = 0
        self.refcount = mm.protocol == "refcount"
        self.recheck = mm.protocol != "keyhole-no-recheck"
        self.node_live = np.zeros(g.node_capacity, np.uint8)
        self.opened_ok = True

    # -- get_ksm_page ----------------------------------------------------------
    def get_ksm_page(self, idx: int) -> int:
        """The node's KSM page with a reference, or -1 (stale: node removed)."""
        mm = self.mm
        kpfn = self.kpfn(idx)
        if self.refcount:  # the node's own reference keeps the page: no keyhole
            get_page(mm, kpfn)
            mm.count("get_ksm_page_ok")
            return kpfn
        expected = self.node_addr(idx) + PAGE_MAPPING_ANON + PAGE_MAPPING_KSM
        page = mm.page_off(kpfn)
        mm.rcu_read_lock()
        if mm.a.load(page + mm.mapping_rel, mm.word) != expected:
            return self._stale(idx)
        if mm.window_ns:  # an interrupt landing here: widens the race window
            end = time.perf_counter_ns() + mm.window_ns
            while time.perf_counter_ns() < end:
                pass
        if not mm.a.atomic_inc_not_zero(page + mm.count_rel):
            return self._stale(idx)
        if self.recheck and mm.a.load(page + mm.mapping_rel, mm.word) != expected:
            put_page(mm, kpfn)
            return self._stale(idx)
        mm.rcu_read_unlock()
        mm.count("get_ksm_page_ok")
        self.opened_ok = self.check_page(kpfn, idx, V_FALSE_OPEN)
        return kpfn

    def _stale(self, idx: int) -> int:
        self.mm.rcu_read_unlock()
        self.mm.count("get_ksm_page_stale")
        self.remove_node_from_stable_tree(idx)
        return -1

    def check_page(self, pfn: int, idx: int, kind: int) -> bool:
        """Ground truth: pfn must be the KSM page of node idx."""
        mm = self.mm
        if mm.sh(pfn, "state") == KSM and mm.sh(pfn, "node") == self.node_addr(idx):
            return True
        mm.violation(kind, pfn, self.node_addr(idx), self.node_addr(idx) + 3,
                     detail=mm.sh(pfn, "state"))
        return False

    def put_ksm_page(self, pfn: int, idx: int) -> None:
        """Drop get_ksm_page's reference, checking the page stayed the node's."""
        if not self.refcount and self.opened_ok:  # a false open is reported once
            self.check_page(pfn, idx, V_CHANGED_WHILE_REF)
        put_page(self.mm, pfn)

    # -- changing the hlist (ksmd only, under the KSM page lock) -----------------
    def stable_tree_append(self, slot: int, idx: int, content: int) -> None:
        mm = self.mm
        io, head = self.item_off(slot), self.node_off(idx) + mm.sn_hlist
        first = self._ld(head)
        node_link = self.item_addr(slot) + mm.ri_hlist
        self._st(io + mm.ri_hlist, first)
        if first:
            self._st(mm.m.addr_to_offset(first) + (mm.ri_pprev - mm.ri_hlist), node_link)
        self._st(head, node_link)
        self._st(io + mm.ri_pprev, self.node_addr(idx) + mm.sn_hlist)
        self._st(io + mm.ri_head, self.node_addr(idx))
        self.mm.a.store(io + mm.ri_oldchecksum, 4, content)
        self._st(io + mm.ri_address, vaddr(mm, slot) | STABLE_FLAG)

    def _hlist_del(self, slot: int) -> None:
        mm, io = self.mm, self.item_off(slot)
        nxt, pprev = self._ld(io + mm.ri_hlist), self._ld(io + mm.ri_pprev)
        self._st(mm.m.addr_to_offset(pprev), nxt)
        if nxt:
            self._st(mm.m.addr_to_offset(nxt) + (mm.ri_pprev - mm.ri_hlist), pprev)
        self._clear_item(slot)

    def _clear_item(self, slot: int) -> None:
        mm, io = self.mm, self.item_off(slot)
        for rel in (mm.ri_hlist, mm.ri_pprev, mm.ri_head):
            self._st(io + rel, 0)
        self._st(io + mm.ri_address, vaddr(mm, slot))
        mm.count("rmap_items_removed")

    def item_node(self, slot: int) -> int:
        """Node index of a stable rmap_item, or -1."""
        io = self.item_off(slot)
        if not self._ld(io + self.mm.ri_address) & STABLE_FLAG:
            return -1
        return self.node_idx(self._ld(io + self.mm.ri_head))

    # -- stable tree --------------------------------------------------------------
    def remove_node_from_stable_tree(self, idx: int) -> None:
        mm = self.mm
        for slot in self.items_of(idx):
            self._clear_item(slot)
        self._st(self.node_off(idx) + mm.sn_hlist, 0)
        self.free_stable_node(idx)

    def free_stable_node(self, idx: int) -> None:
        mm = self.mm
        kpfn = self.kpfn(idx)
        key = self.node_addr(idx) + 3
        # Read truth, then count, then mapping: free_hot_cold_page clears mapping
        # before the shadow says FREE, so a key seen last was there at both reads.
        state = mm.sh(kpfn, "state")
        count = mm.page_count(kpfn)
        if mm.mapping(kpfn) == key:
            if count == 0 and state == KSM:
                # mid-free: get_page_unless_zero failed on a page whose last put
                # has happened and whose mapping free_hot_cold_page is about to
                # clear; no reference can be taken at 0, so the key is dead
                mm.count("nodes_freed_mid_free")
            else:  # alive with a dangling key, or already free with it
                mm.violation(V_NODE_FREED_WITH_KEY, kpfn, self.node_addr(idx), key, detail=count & 0xFFFFFFFF)
        content = int(mm.node_meta_view[idx]["content"])
        if self.stable_by_content[content] == idx + 1:
            self.stable_by_content[content] = 0
        mm.h.store(mm.node_meta + idx * 16, 4, 0)
        self.node_live[idx] = 0
        self.free_nodes[self.nfree] = idx  # kfree: reused next
        self.nfree += 1
        mm.count("stable_nodes_removed")

    def stable_tree_insert(self, kpfn: int, content: int) -> int:
        """A new stable_node for kpfn; mapping gets the key. -1 if the slab is full."""
        mm = self.mm
        if not self.nfree:
            return -1
        self.nfree -= 1
        idx = int(self.free_nodes[self.nfree])
        off = self.node_off(idx)
        self._st(off + mm.sn_kpfn, kpfn)
        self._st(off + mm.sn_hlist, 0)
        mm.h.store(mm.node_meta + idx * 16, 4, 1)
        mm.h.fetch_add(mm.node_meta + idx * 16 + 4, 4, 1)
        mm.h.store(mm.node_meta + idx * 16 + 8, 8, content)
        if self.refcount:
            get_page(mm, kpfn)  # the stable_node's reference
        # truth first, then the bytes: no one may see the key before the shadow says KSM
        mm.sh_set(kpfn, "node", self.node_addr(idx))
        mm.sh_set(kpfn, "state", KSM)
        mm.sh_set(kpfn, "writer", W_KSM_KEY)
        mm.set_mapping(kpfn, self.node_addr(idx) + 3)  # set_page_stable_node
        self.stable_by_content[content] = idx + 1
        self.node_live[idx] = 1
        return idx

    def remove_rmap_item_from_tree(self, slot: int, idx: int) -> None:
        """Unlink a stable rmap_item whose slot no longer maps the node's page."""
        mm = self.mm
        if self.refcount:
            kpfn = self.kpfn(idx)
            mm.lock_page(kpfn)
            self._hlist_del(slot)
            empty = self._ld(self.node_off(idx) + mm.sn_hlist) == 0
            if empty:  # last rmap_item: the page loses its node and the node's reference
                mm.sh_set(kpfn, "node", 0)
                mm.sh_set(kpfn, "writer", W_KSM_NULL)
                mm.set_mapping(kpfn, PAGE_MAPPING_ANON | PAGE_MAPPING_KSM)
            mm.unlock_page(kpfn)
            if empty:
                self.free_stable_node(idx)
                put_page(mm, kpfn)
            return
        kpfn = self.get_ksm_page(idx)
        if kpfn < 0:
            return  # stale: remove_node_from_stable_tree unlinked it already
        mm.lock_page(kpfn)
        self._hlist_del(slot)
        mm.unlock_page(kpfn)
        self.put_ksm_page(kpfn, idx)

    # -- ksmd's work on one slot ------------------------------------------------
    def scan_slot(self, slot: int) -> None:
        mm = self.mm
        idx = self.item_node(slot)
        if idx >= 0:
            kpfn = self.kpfn(idx)
            if pte(mm, slot) == kpfn:
                page = self.get_ksm_page(idx)  # still merged: meets its node
                if page >= 0:
                    self.put_ksm_page(page, idx)
                    return
            else:
                self.remove_rmap_item_from_tree(slot, idx)
            if self.item_node(slot) >= 0:
                return
        pfn = get_pte_page(mm, self.locks, slot)  # follow_page(FOLL_GET): our own reference
        if pfn < 0:
            return
        try:
            self.cmp_and_merge_page(slot, pfn)
        finally:
            put_page(mm, pfn)

    def cmp_and_merge_page(self, slot: int, pfn: int) -> None:
        """Merge the page at slot (the caller holds a reference to it)."""
        mm = self.mm
        if mm.mapping(pfn) & 3 == 3:
            return
        content = mm.sh(pfn, "content")
        node = int(self.stable_by_content[content]) - 1
        if node >= 0:
            kpage = self.get_ksm_page(node)
            if kpage >= 0:
                if kpage != pfn:
                    self.merge_with_ksm_page(slot, pfn, kpage, node, content)
                self.put_ksm_page(kpage, node)
                return
        other = int(self.unstable[content]) - 1
        if other >= 0 and other != slot and self.item_node(other) < 0:
            q = get_pte_page(mm, self.locks, other)  # get_mergeable_page: a reference too
            if q >= 0:
                try:
                    if (q != pfn and mm.sh(q, "content") == content
                            and mm.mapping(q) & 3 == PAGE_MAPPING_ANON):
                        self.unstable[content] = 0
                        self.merge_two_pages(slot, pfn, other, q, content)
                        return
                finally:
                    put_page(mm, q)
        self.unstable[content] = slot + 1

    def _replace_page(self, slot: int, old: int, new: int) -> bool:
        """replace_page: slot's pte from old to new, under the pte lock."""
        mm = self.mm
        off = self.locks.lock(group_of(slot))
        ok = pte(mm, slot) == old
        if ok:
            get_page(mm, new)
            mm.mapcount_add(new, 1)
            set_pte(mm, slot, new)
        self.locks.unlock(off)
        if ok:
            page_remove_rmap(mm, old)
            put_page(mm, old)
        return ok

    def merge_with_ksm_page(self, slot: int, pfn: int, kpage: int, idx: int, content: int) -> None:
        mm = self.mm
        mm.lock_page(kpage)
        if self._replace_page(slot, pfn, kpage):
            self.stable_tree_append(slot, idx, content)
            mm.count("ksm_pages_merged")
        mm.unlock_page(kpage)

    def merge_two_pages(self, slot: int, pfn: int, other: int, q: int, content: int) -> None:
        """pfn becomes a KSM page (mapping 0x3, then the key); other's pte moves to it.
        The caller holds references to pfn and q."""
        mm = self.mm
        mm.lock_page(pfn)
        old_mapping = mm.mapping(pfn)
        if pte(mm, slot) != pfn or old_mapping & 3 != PAGE_MAPPING_ANON:
            mm.unlock_page(pfn)
            return
        mm.sh_set(pfn, "writer", W_KSM_NULL)
        mm.set_mapping(pfn, PAGE_MAPPING_ANON | PAGE_MAPPING_KSM)  # set_page_stable_node(page, NULL)
        if not self._replace_page(other, q, pfn):
            mm.set_mapping(pfn, old_mapping)
            mm.sh_set(pfn, "writer", W_ANON)
            mm.unlock_page(pfn)
            return
        idx = self.stable_tree_insert(pfn, content)
        if idx < 0:  # slab full: leave it a PageKsm page with no node, like a failed insert
            mm.unlock_page(pfn)
            return
        self.stable_tree_append(slot, idx, content)
        self.stable_tree_append(other, idx, content)
        mm.unlock_page(pfn)
        mm.count("ksm_pages_created")
        mm.count("ksm_pages_merged")

    def meet_nodes(self) -> None:
        """get_ksm_page on ceil(log2 n) live nodes, in turn, as a tree descent meets them."""
        cap = len(self.node_live)
        want = log2_ceil(cap - self.nfree)
        window = np.flatnonzero(self.node_live[self.node_cursor:self.node_cursor + 64 * want])[:want]
        if not len(window):
            self.node_cursor = 0
            return
        for idx in (window + self.node_cursor).tolist():
            if self.node_live[idx]:
                page = self.get_ksm_page(idx)
                if page >= 0:
                    self.put_ksm_page(page, idx)
        self.node_cursor = int(window[-1]) + self.node_cursor + 1

    def sweep(self) -> tuple[int, ...]:
        """get_ksm_page over every live node in one nogil loop; stale nodes removed."""
        mm = self.mm
        status = np.zeros(len(self.node_live), np.uint8)
        counts = sweep_get_ksm_page(
            mm.m.mm, mm.m.cfg.byte_order, nodes_off=mm.sn.offset, node_size=mm.sn_size,
            kpfn_rel=mm.sn_kpfn, nodes_addr=mm.sn.base, live=self.node_live,
            mem_map_off=mm.mem_map, page_size=mm.psize, nr_pages=mm.geo.nr_pages,
            mapping_rel=mm.mapping_rel, count_rel=mm.count_rel, word=mm.word, status=status,
            shadow_off=mm.shadow, shadow_size=SHADOW_DTYPE.itemsize,
            shadow_state_rel=SHADOW_FIELDS["state"][0], shadow_node_rel=SHADOW_FIELDS["node"][0],
            ksm_state=KSM, recheck=self.recheck)
        ok, stale, freed, bad, corrupt = counts
        mm.count("get_ksm_page_ok", ok)
        mm.count("get_ksm_page_stale", stale)
        for idx in np.flatnonzero(status == 4).tolist():
            kpfn = self.kpfn(idx)
            mm.violation(V_FALSE_OPEN, kpfn, self.node_addr(idx), self.node_addr(idx) + 3,
                         detail=mm.sh(kpfn, "state"))
        for idx in np.flatnonzero(status == 3).tolist():
            free_hot_cold_page(mm, self.kpfn(idx))  # our put was the last one
        for idx in np.flatnonzero(status == 2).tolist():
            self.remove_node_from_stable_tree(idx)
        return counts
