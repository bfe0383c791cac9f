"""Page reference counts, in the kernel's names, on a machine's struct pages.

Every operation is one atomic on page->_count (an atomic_t) through the
Cython atomics, so any number of processes may race on it.
"""

from __future__ import annotations

from ..machine import Machine


class RefcountBug(RuntimeError):
    """The kernel would BUG(): get_page on a free page, put_page on a zero count."""


class PageRefs:
    def __init__(self, m: Machine) -> None:
        self.m = m
        self.a = m.atomics
        lay = m.page_layout
        self.count_rel = lay.offset("_count.counter")
        self.mapcount_rel = lay.offset("_mapcount.counter")
        self.mapping_rel = lay.offset("mapping")
        self.word = m.cfg.word_bytes

    def _count(self, pfn: int) -> int:
        return self.m.page_offset(pfn) + self.count_rel

    def page_count(self, pfn: int) -> int:
        return self.a.atomic_read(self._count(pfn))

    def get_page(self, pfn: int) -> None:
        """atomic_inc; the kernel BUGs when the page was free."""
        old = self.a.fetch_add(self._count(pfn), 4, 1, True)
        if old <= 0:
            self.a.fetch_add(self._count(pfn), 4, -1, True)  # undo: leave the evidence intact
            raise RefcountBug(f"get_page on pfn {pfn} with _count {old}")

    def get_page_unless_zero(self, pfn: int) -> bool:
        return self.a.atomic_inc_not_zero(self._count(pfn))

    def put_page_testzero(self, pfn: int) -> bool:
        """atomic_dec_and_test; True when this put dropped the last reference."""
        old = self.a.fetch_add(self._count(pfn), 4, -1, True)
        if old <= 0:
            self.a.fetch_add(self._count(pfn), 4, 1, True)  # undo: leave the evidence intact
            raise RefcountBug(f"put_page on pfn {pfn} with _count {old}")
        return old == 1

    def page_freeze_refs(self, pfn: int, count: int) -> bool:
        """cmpxchg(_count, count, 0) == count."""
        return self.a.atomic_cmpxchg(self._count(pfn), count, 0) == count

    def page_unfreeze_refs(self, pfn: int, count: int) -> None:
        self.a.atomic_set(self._count(pfn), count)

    def page_mapping_raw(self, pfn: int) -> int:
        """page->mapping as stored (with its low PAGE_MAPPING_* bits)."""
        return self.a.load(self.m.page_offset(pfn) + self.mapping_rel, self.word)

    def set_page_mapping(self, pfn: int, value: int) -> None:
        self.a.store(self.m.page_offset(pfn) + self.mapping_rel, self.word, value)
