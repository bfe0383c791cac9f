"""Page reclaim (mm/vmscan.c) on one page: try_to_unmap, then __remove_mapping's
freeze of the last reference and the free."""

from __future__ import annotations

from .context import MM
from .page import trylock_page, unlock_page
from .page_alloc import free_hot_cold_page
from .refcount import page_freeze_refs, put_page
from .rmap import try_to_unmap
from .trace import traced


@traced("shrink_page", 1, 0)
def shrink_page(mm: MM, slot: int, pfn: int) -> bool:
    """Reclaim the page found at slot, which the caller holds a reference to
    (the reference goes either way). True if the page was freed here."""
    if trylock_page(mm, pfn):
        mm.truth.reclaim_decided(pfn)
        mm.count("reclaimed")
        mm.count("reclaim_unmapped", try_to_unmap(mm, pfn, slot))
        unlock_page(mm, pfn)
        # __remove_mapping: only our reference left? freeze it and free the page;
        # a speculative reference (ksmd's get_ksm_page) makes the freeze fail
        if page_freeze_refs(mm, pfn, 1):
            free_hot_cold_page(mm, pfn)
            return True
    put_page(mm, pfn)
    return False
