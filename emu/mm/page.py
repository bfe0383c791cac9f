"""struct page's fields, as include/linux/mm.h, page-flags.h, pagemap.h and
ksm.h read and write them, and the data of the page frame it describes.

Every store the ground truth must follow goes through one primitive here
(set_page_mapping, set_page_stable_node, ...), which tells the truth keeper
in the same breath: no caller labels a store by hand.
"""

from __future__ import annotations

from ..check.lockdep import PAGE_LOCK
from ..check.shadow import W_SLAB
from ..records import PAGE_DATA_DTYPE
from . import testbreak
from .context import MM, PAGE_MAPPING_ANON, PAGE_MAPPING_KSM, PG_LOCKED
from .trace import traced

SLAB_INUSE_OBJECTS = 0x00200000  # the u16 pair over _mapcount, as one 32-bit value


# -- page->mapping -------------------------------------------------------------------
def page_mapping_raw(mm: MM, pfn: int) -> int:
    """page->mapping as stored, with its PAGE_MAPPING_* low bits."""
    return mm.a.load(mm.mem_map + pfn * mm.psize + mm.mapping_rel, mm.word)


def page_mapping_once(mm: MM, pfn: int) -> int:
    """READ_ONCE(page->mapping): a look at a page that may not be ours, whose
    mapping another CPU may be changing (get_ksm_page's keyhole; mainline
    spells it READ_ONCE there since the keyhole was made KCSAN-clean)."""
    return mm.a.load_once(mm.mem_map + pfn * mm.psize + mm.mapping_rel, mm.word)


def set_page_mapping(mm: MM, pfn: int, value: int, writer: int) -> None:
    """page->mapping = value; `writer` (a W_* label) says which user of struct
    page stored it, for the reports."""
    mm.truth.mapping_written(pfn, writer)
    mm.a.store(mm.mem_map + pfn * mm.psize + mm.mapping_rel, mm.word, value)


def PageAnon(mapping: int) -> bool:  # noqa: N802 - the kernel's name
    return bool(mapping & PAGE_MAPPING_ANON)


def PageKsm(mapping: int) -> bool:  # noqa: N802 - the kernel's name
    return mapping & (PAGE_MAPPING_ANON | PAGE_MAPPING_KSM) == PAGE_MAPPING_ANON | PAGE_MAPPING_KSM


def page_rmapping(mapping: int) -> int:
    return mapping & ~(PAGE_MAPPING_ANON | PAGE_MAPPING_KSM)


def page_stable_node(mapping: int) -> int:
    """The stable_node address a KSM page's mapping names, or 0."""
    return page_rmapping(mapping) if PageKsm(mapping) else 0


@traced("set_page_stable_node", 0, 1)
def set_page_stable_node(mm: MM, pfn: int, node: int) -> None:
    """page->mapping = node + PAGE_MAPPING_ANON + PAGE_MAPPING_KSM (node 0: the
    bare 0x3 a page carries while it is being merged)."""
    mm.truth.stable_node_set(pfn, node)
    mm.a.store(mm.mem_map + pfn * mm.psize + mm.mapping_rel, mm.word,
               node + PAGE_MAPPING_ANON + PAGE_MAPPING_KSM)


# -- the other words --------------------------------------------------------------------
def set_page_index(mm: MM, pfn: int, index: int) -> None:
    mm.a.store(mm.page_off(pfn) + mm.index_rel, mm.word, index)


def set_page_slab(mm: MM, pfn: int, cache: int) -> None:
    """SLUB's new_slab: page->slab (on private, not mapping) and inuse/objects
    (over _mapcount) of a fresh slab."""
    mm.truth.mapping_written(pfn, W_SLAB)
    mm.a.store(mm.page_off(pfn) + mm.private_rel, mm.word, cache)
    mm.a.store(mm.page_off(pfn) + mm.mapcount_rel, 4, SLAB_INUSE_OBJECTS)


def page_mapcount_add(mm: MM, pfn: int, delta: int) -> int:
    """atomic_add_return on _mapcount."""
    return mm.a.fetch_add(mm.page_off(pfn) + mm.mapcount_rel, 4, delta, True) + delta


def reset_page_mapcount(mm: MM, pfn: int, value: int = -1) -> None:
    mm.a.atomic_set(mm.page_off(pfn) + mm.mapcount_rel, value)


# -- PG_locked: lock_page / trylock_page / unlock_page (pagemap.h) -------------------------
def trylock_page(mm: MM, pfn: int) -> bool:
    """!test_and_set_bit_lock(PG_locked, &page->flags)."""
    off = mm.page_off(pfn) + mm.flags_rel
    if "trylock-read-then-store" in testbreak.BROKEN:
        flags = mm.a.load(off, mm.word)
        if flags & PG_LOCKED:
            return False
        mm.a.store(off, mm.word, flags | PG_LOCKED)
    elif mm.a.fetch_or(off, mm.word, PG_LOCKED) & PG_LOCKED:
        return False
    if mm.lockdep is not None:
        mm.lockdep.acquired(PAGE_LOCK, off)
    return True


def lock_page(mm: MM, pfn: int) -> None:
    off, spins = mm.page_off(pfn) + mm.flags_rel, 0
    while not trylock_page(mm, pfn):
        spins += 1
        mm.spin_wait(off, mm.word, _unlocked, spins, sleeping=True)  # wait_on_page_locked sleeps


def _unlocked(flags: int) -> bool:
    return not flags & PG_LOCKED


def unlock_page(mm: MM, pfn: int) -> None:
    """clear_bit_unlock(PG_locked, &page->flags)."""
    off = mm.page_off(pfn) + mm.flags_rel
    mm.a.fetch_and(off, mm.word, ~PG_LOCKED & ((1 << 8 * mm.word) - 1))
    if mm.lockdep is not None:
        mm.lockdep.released(PAGE_LOCK, off)


# -- the page's data -----------------------------------------------------------------------
# One content id per page frame stands for its 4 KiB (region page_data). Ghost
# accesses, no scheduling point of their own: a fault fills the page before its
# pte is set, and ksmd reads it only once it holds a reference through that pte.
def page_content(mm: MM, pfn: int) -> int:
    """What the page holds, as memcmp_pages and calc_checksum read it."""
    return mm.g.load(mm.page_data + PAGE_DATA_DTYPE.itemsize * pfn, PAGE_DATA_DTYPE.itemsize)


def set_page_content(mm: MM, pfn: int, content: int) -> None:
    """The page filled with `content` (a fault's zeroed or copied page)."""
    mm.g.store(mm.page_data + PAGE_DATA_DTYPE.itemsize * pfn, PAGE_DATA_DTYPE.itemsize, content)
