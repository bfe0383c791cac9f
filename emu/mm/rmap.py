"""Virtual pages ("slots"), their ptes, and the locks that guard them.

A slot is one user virtual page in a MADV_MERGEABLE area. Its pte lives in
the ptes region (pfn + 1, 0 for none) and changes only under the lock the
kernel would take: page->ptl of the slot's page-table page with split
ptlocks, else mm->page_table_lock, a spinlock_t inside the owning
mm_struct (in the kmalloc region). Both are real spinlock_t bytes of the
config, taken on this process's emulated CPU.
"""

from __future__ import annotations

from .._atomics import SpinBug, SpinLockOps
from ..layout import Layout
from .core import MM, V_COUNT_NEGATIVE, V_SPIN_BUG
from .page_alloc import alloc_page, put_page
from .ptlock import spinlock_spec
from .world import ANON, PTRS_PER_GROUP, W_ANON

MM_STRUCT_SIZE = 1024
PAGE_TABLE_LOCK_REL = 64  # offset of page_table_lock inside the emulated mm_struct
USER_BASE = {4: 0x40000000, 8: 0x7F0000000000}


class PteLocks:
    """pte_lockptr(): page->ptl of the page-table page, or mm->page_table_lock."""

    def __init__(self, mm: MM, nmms: int) -> None:
        self.mm = mm
        self.nmms = nmms
        cfg = mm.m.cfg
        self.split = cfg["USE_SPLIT_PTLOCKS"]
        if self.split:
            spec = spinlock_spec(cfg, mm.m.page_layout, "ptl.")
            self.rel = mm.m.page_layout.offset("ptl")
        else:
            spec = spinlock_spec(cfg, Layout(mm.m.kernel.spinlock, cfg.byte_order, "spinlock_t"))
            self.rel = 0
        self.ops = SpinLockOps(mm.a, **spec)

    def mm_of_group(self, group: int) -> int:
        return group % self.nmms

    def mm_struct(self, idx: int) -> int:
        """Emulated address of mm_struct `idx` (one per allocator)."""
        return self.mm.kmalloc.base + (64 << 10) + idx * MM_STRUCT_SIZE

    def lock_offset(self, group: int) -> int:
        mm = self.mm
        if self.split:
            pt = mm.h.load(mm.pgtables + 8 * group, 8) - 1
            return mm.page_off(pt) + self.rel
        addr = self.mm_struct(self.mm_of_group(group)) + PAGE_TABLE_LOCK_REL
        return mm.m.addr_to_offset(addr)

    def lock(self, group: int) -> int:
        off = self.lock_offset(group)
        try:
            self.ops.spin_lock(off, self.mm.cpu, self.mm.task)
        except SpinBug as e:
            self.mm.violation(V_SPIN_BUG, detail=0)
            raise RuntimeError(f"page-table lock at {off}: {e}") from e
        self.mm.count("ptl_locks")
        return off

    def unlock(self, off: int) -> None:
        self.ops.spin_unlock(off, self.mm.cpu, self.mm.task)

    def init_mm_locks(self) -> None:
        """spin_lock_init of every mm->page_table_lock (launcher, once)."""
        if not self.split:
            for i in range(self.nmms):
                self.ops.spin_lock_init(self.mm.m.addr_to_offset(self.mm_struct(i) + PAGE_TABLE_LOCK_REL))


def group_of(slot: int) -> int:
    return slot // PTRS_PER_GROUP


def pte(mm: MM, slot: int) -> int:
    """pfn mapped at slot, or -1 (an unlocked peek, like a racy pte read)."""
    return mm.h.load(mm.ptes + 8 * slot, 8) - 1


def set_pte(mm: MM, slot: int, pfn: int) -> None:
    mm.h.store(mm.ptes + 8 * slot, 8, pfn + 1)


def vaddr(mm: MM, slot: int) -> int:
    return USER_BASE[mm.word] + slot * 4096


def page_remove_rmap(mm: MM, pfn: int) -> None:
    if mm.mapcount_add(pfn, -1) < -1:
        mm.violation(V_COUNT_NEGATIVE, pfn, detail=1)


def do_anonymous_page(mm: MM, locks: PteLocks, slot: int, anon_vma: int, content: int) -> bool:
    """Fault a new anon page in at an empty slot."""
    pfn = alloc_page(mm, ANON)
    if pfn is None:
        return False
    mm.sh_set(pfn, "content", content)
    mm.sh_set(pfn, "writer", W_ANON)
    mm.set_mapping(pfn, anon_vma + 1)  # page_add_new_anon_rmap: PAGE_MAPPING_ANON
    mm.a.store(mm.page_off(pfn) + mm.index_rel, mm.word, vaddr(mm, slot) >> 12)
    off = locks.lock(group_of(slot))
    mapped = pte(mm, slot) < 0
    if mapped:
        mm.set_mapcount(pfn, 0)
        set_pte(mm, slot, pfn)
    locks.unlock(off)
    if not mapped:
        put_page(mm, pfn)  # someone else faulted it in first
    return mapped


def zap_pte(mm: MM, locks: PteLocks, slot: int, expect: int = -1) -> int:
    """Unmap slot (only if it maps `expect`, when given); drop the mapping's
    reference. Returns the pfn unmapped, or -1."""
    off = locks.lock(group_of(slot))
    pfn = pte(mm, slot)
    if pfn >= 0 and (expect < 0 or pfn == expect):
        set_pte(mm, slot, -1)
    else:
        pfn = -1
    locks.unlock(off)
    if pfn >= 0:
        page_remove_rmap(mm, pfn)
        put_page(mm, pfn)
    return pfn


def get_pte_page(mm: MM, locks: PteLocks, slot: int) -> int:
    """follow_page with FOLL_GET: the page at slot with a reference, or -1."""
    from .page_alloc import get_page

    off = locks.lock(group_of(slot))
    pfn = pte(mm, slot)
    if pfn >= 0:
        get_page(mm, pfn)
    locks.unlock(off)
    return pfn
