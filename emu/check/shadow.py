"""The shadow: ground truth per pfn, beside the struct page bytes under test.

Host order, one record per pfn, never read by kernel code: the mm primitives
update it at each transition (allocation, free, a store to page->mapping, a
page becoming a KSM page) and only checks and reports read it.
"""

from __future__ import annotations

from ..records import SHADOW_DTYPE

# state: what a pfn really is
FREE, ANON, KSM, PAGECACHE, PAGETABLE, SLAB, DRIVER = range(7)
STATE_NAMES = ["free", "anon", "ksm", "pagecache", "pagetable", "slab", "driver"]

# writer: which user of struct page last wrote the bytes of page->mapping
W_NULL, W_ANON, W_KSM_KEY, W_KSM_NULL, W_ADDRESS_SPACE, W_DRIVER, W_PTL, W_SLAB = range(8)
WRITER_NAMES = ["NULL", "anon_vma+1 (PAGE_MAPPING_ANON)", "stable_node+3 (KSM key)",
                "0x3 (PageKsm, NULL stable_node)", "address_space pointer (page cache)",
                "driver pointer", "ptl (split page-table lock)", "slab (mapping untouched)"]

# field -> (offset in the record, size)
FIELDS = {name: (SHADOW_DTYPE.fields[name][1], SHADOW_DTYPE.fields[name][0].itemsize)
          for name in SHADOW_DTYPE.names}
