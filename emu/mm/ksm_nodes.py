"""The shared bytes of KSM's structs (mm/ksm.c): struct stable_node in its
kmem_cache, struct rmap_item per slot, and the hlist of rmap_items hanging
from each stable_node, linked by emulated pointers.

What reclaim needs (try_to_unmap_ksm walks a node's hlist under the page lock)
reads only these bytes, never ksmd's private state.
"""

from __future__ import annotations

from .context import MM
from .pgtable import vaddr

STABLE_FLAG = 0x200  # rmap_item->address: listed from a stable_node


# -- addresses ----------------------------------------------------------------------
def node_addr(mm: MM, idx: int) -> int:
    return mm.sn_base + idx * mm.sn_size


def node_off(mm: MM, idx: int) -> int:
    return mm.sn_off + idx * mm.sn_size


def node_idx(mm: MM, addr: int) -> int:
    return (addr - mm.sn_base) // mm.sn_size


def item_off(mm: MM, slot: int) -> int:
    return mm.ri_off + slot * mm.ri_size


def item_addr(mm: MM, slot: int) -> int:
    return mm.ri_base + slot * mm.ri_size


def _ld(mm: MM, off: int) -> int:
    return mm.a.load(off, mm.word)


def _st(mm: MM, off: int, value: int) -> None:
    mm.a.store(off, mm.word, value)


# -- struct stable_node ---------------------------------------------------------------
def stable_node_kpfn(mm: MM, idx: int) -> int:
    return _ld(mm, node_off(mm, idx) + mm.sn_kpfn)


def init_stable_node(mm: MM, idx: int, kpfn: int) -> None:
    """A fresh stable_node: its kpfn, an empty hlist."""
    _st(mm, node_off(mm, idx) + mm.sn_kpfn, kpfn)
    _st(mm, node_off(mm, idx) + mm.sn_hlist, 0)


def hlist_empty(mm: MM, idx: int) -> bool:
    return _ld(mm, node_off(mm, idx) + mm.sn_hlist) == 0


def rmap_items_of(mm: MM, idx: int) -> list[int]:
    """Slots on node idx's hlist (the caller holds the KSM page lock, or is ksmd)."""
    out = []
    p = _ld(mm, node_off(mm, idx) + mm.sn_hlist)
    while p:
        slot = (p - mm.ri_hlist - mm.ri_base) // mm.ri_size
        out.append(slot)
        p = _ld(mm, item_off(mm, slot) + mm.ri_hlist)
    return out


# -- struct rmap_item -------------------------------------------------------------------
def rmap_item_node(mm: MM, slot: int) -> int:
    """Node index of a stable rmap_item, or -1."""
    io = item_off(mm, slot)
    if not _ld(mm, io + mm.ri_address) & STABLE_FLAG:
        return -1
    return node_idx(mm, _ld(mm, io + mm.ri_head))


def stable_tree_append(mm: MM, slot: int, idx: int, content: int) -> None:
    """The slot's rmap_item joins node idx's hlist (hlist_add_head) as a stable item."""
    io, head = item_off(mm, slot), node_off(mm, idx) + mm.sn_hlist
    first = _ld(mm, head)
    node_link = item_addr(mm, slot) + mm.ri_hlist
    _st(mm, io + mm.ri_hlist, first)
    if first:
        _st(mm, mm.m.addr_to_offset(first) + (mm.ri_pprev - mm.ri_hlist), node_link)
    _st(mm, head, node_link)
    _st(mm, io + mm.ri_pprev, node_addr(mm, idx) + mm.sn_hlist)
    _st(mm, io + mm.ri_head, node_addr(mm, idx))
    mm.a.store(io + mm.ri_oldchecksum, 4, content)
    _st(mm, io + mm.ri_address, vaddr(mm, slot) | STABLE_FLAG)


def hlist_del_rmap_item(mm: MM, slot: int) -> None:
    """The slot's rmap_item leaves its node's hlist and stops being stable."""
    io = item_off(mm, slot)
    nxt, pprev = _ld(mm, io + mm.ri_hlist), _ld(mm, io + mm.ri_pprev)
    _st(mm, mm.m.addr_to_offset(pprev), nxt)
    if nxt:
        _st(mm, mm.m.addr_to_offset(nxt) + (mm.ri_pprev - mm.ri_hlist), pprev)
    clear_rmap_item(mm, slot)


def clear_rmap_item(mm: MM, slot: int) -> None:
    io = item_off(mm, slot)
    for rel in (mm.ri_hlist, mm.ri_pprev, mm.ri_head):
        _st(mm, io + rel, 0)
    _st(mm, io + mm.ri_address, vaddr(mm, slot))
    mm.count("rmap_items_removed")


def clear_node_hlist(mm: MM, idx: int) -> None:
    _st(mm, node_off(mm, idx) + mm.sn_hlist, 0)
