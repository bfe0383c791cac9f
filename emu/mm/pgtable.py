"""The KSM-scanned area's page tables, as words in the ptes and pgtables regions.

A slot is one user virtual page of a MADV_MERGEABLE area; its pte holds pfn + 1
(0: none) and is read and changed under the lock pte_lockptr() names. Slots
come in groups of PTRS_PER_GROUP, one page-table page each (the pmd entry
says which pfn); the area's page-table pages live for the whole run.
"""

from __future__ import annotations

from .context import MM
from .regions import PTRS_PER_GROUP

USER_BASE = {4: 0x40000000, 8: 0x7F0000000000}


def group_of(slot: int) -> int:
    return slot // PTRS_PER_GROUP


def vaddr(mm: MM, slot: int) -> int:
    return USER_BASE[mm.word] + slot * 4096


def pte(mm: MM, slot: int) -> int:
    """pfn mapped at slot, or -1: a pte read, under the pte lock (pte_peek without)."""
    return mm.a.load(mm.ptes + mm.word * slot, mm.word) - 1


def pte_peek(mm: MM, slot: int) -> int:
    """A lockless look at slot's pte (ACCESS_ONCE): a hint, possibly stale by the
    time it is used, so what acts on it looks again under the pte lock."""
    return mm.a.load_once(mm.ptes + mm.word * slot, mm.word) - 1


def set_pte(mm: MM, slot: int, pfn: int) -> None:
    """set_pte_at, or pte_clear with pfn -1; the caller holds the pte lock."""
    mm.a.store(mm.ptes + mm.word * slot, mm.word, pfn + 1)


def pmd(mm: MM, group: int) -> int:
    """The pfn of the group's page-table page, as its pmd entry says."""
    return mm.a.load(mm.pgtables + mm.word * group, mm.word) - 1


def set_pmd(mm: MM, group: int, pfn: int) -> None:
    mm.a.store(mm.pgtables + mm.word * group, mm.word, pfn + 1)
