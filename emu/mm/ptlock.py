"""Page-table locks: pte_lockptr() and what a page-table page's constructor
and destructor do to page->ptl (include/linux/mm.h).

With USE_SPLIT_PTLOCKS a pte is guarded by page->ptl of its page-table page,
a spinlock_t inside struct page that lies on private and, for some configs,
on mapping; without, by mm->page_table_lock in the owning mm_struct. Both are
real spinlock_t bytes of the config, taken on the context's CPU.
"""

from __future__ import annotations

from ..check.shadow import W_NULL, W_PTL
from ..check.violations import V_SPIN_BUG
from .context import MM
from .page import set_page_mapping
from .pgtable import pmd
from .regions import PAGE_TABLE_LOCK_REL
from .spinlock import SpinBug, spin_lock, spin_lock_init, spin_unlock


def mm_struct_of(mm: MM, group: int) -> int:
    """Emulated address of the mm_struct whose page table holds this group."""
    return mm.world.objects.mm_struct[group % mm.geo.nmms]


def pte_lockptr(mm: MM, group: int) -> int:
    """File offset of the lock guarding the group's ptes."""
    if mm.split_ptlocks:
        return mm.page_off(pmd(mm, group)) + mm.ptl_rel
    return mm.m.addr_to_offset(mm_struct_of(mm, group) + PAGE_TABLE_LOCK_REL)


def pte_lock(mm: MM, group: int) -> int:
    """spin_lock(pte_lockptr()): the lock's offset, for pte_unlock."""
    off = pte_lockptr(mm, group)
    try:
        spin_lock(mm, off, mm.pte_lock_model)
    except SpinBug as e:
        mm.truth.violation(V_SPIN_BUG, detail=0)
        raise RuntimeError(f"page-table lock at {off}: {e}") from e
    mm.count("ptl_locks")
    return off


def pte_unlock(mm: MM, off: int) -> None:
    spin_unlock(mm, off, mm.pte_lock_model)


def pte_lock_init(mm: MM, pfn: int) -> None:
    """A page-table page's constructor: spin_lock_init(&page->ptl) (split ptlocks only)."""
    if not mm.split_ptlocks:
        return
    if mm.ptl_on_mapping:  # from here on the lock's bytes are what mapping holds
        mm.truth.mapping_written(pfn, W_PTL)
    spin_lock_init(mm, mm.page_off(pfn) + mm.ptl_rel, mm.ptl_model, mm.cpu)


def pte_lock_deinit(mm: MM, pfn: int) -> None:
    """The destructor: page->mapping = NULL "so free_pages_check won't complain"."""
    if mm.split_ptlocks:
        set_page_mapping(mm, pfn, 0, W_NULL)


def mm_locks_init(mm: MM) -> None:
    """spin_lock_init of every mm->page_table_lock (at boot, when they are used)."""
    if mm.split_ptlocks:
        return
    for addr in mm.world.objects.mm_struct:
        spin_lock_init(mm, mm.m.addr_to_offset(addr + PAGE_TABLE_LOCK_REL), mm.mm_lock_model, mm.cpu)
