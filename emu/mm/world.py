"""The emulated world beside the struct pages: its geometry and shared regions.

Kernel-byte regions (layout of the config, emulated byte order, emulated
addresses in the direct map):
  stable_nodes   the kmem_cache of struct stable_node
  rmap_items     one struct rmap_item per KSM-scanned virtual page (a "slot")
  kmalloc        small objects whose addresses pages point to: mm_structs,
                 anon_vmas, address_spaces, task_structs, driver objects
Host-order metadata (the emulator's own, never confused with kernel bytes):
  shadow         ground truth per pfn (what it is, generation, stable node)
  ptes           slot -> pfn+1, changed only under the slot's page-table ptl
  pgtables       page-table group -> pfn+1 of its page-table page
  freelist       the page allocator's free list (lock-free, ABA-tagged)
  counters, percpu, control, violations, latency
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..machine import RegionSpec

# shadow.state: what a pfn really is
FREE, ANON, KSM, PAGECACHE, PAGETABLE, SLAB, DRIVER = range(7)
STATE_NAMES = ["free", "anon", "ksm", "pagecache", "pagetable", "slab", "driver"]
# shadow.writer: which user of struct page last wrote the bytes of mapping
W_NULL, W_ANON, W_KSM_KEY, W_KSM_NULL, W_ADDRESS_SPACE, W_DRIVER, W_PTL, W_SLAB = range(8)
WRITER_NAMES = ["NULL", "anon_vma+1 (PAGE_MAPPING_ANON)", "stable_node+3 (KSM key)",
                "0x3 (PageKsm, NULL stable_node)", "address_space pointer (page cache)",
                "driver pointer", "ptl (split page-table lock)", "slab (mapping untouched)"]

SHADOW_DTYPE = np.dtype([("state", "<u4"), ("gen", "<u4"), ("node", "<u8"),
                         ("t_reclaim", "<u8"), ("content", "<u4"), ("writer", "<u4")])
NODE_META_DTYPE = np.dtype([("state", "<u4"), ("gen", "<u4"), ("content", "<u8")])
VIOLATION_DTYPE = np.dtype([("kind", "<u4"), ("role", "<u4"), ("cpu", "<u4"), ("writer", "<u4"),
                            ("pfn", "<u8"), ("node", "<u8"), ("expected", "<u8"),
                            ("mapping", "<u8"), ("t_ns", "<u8"), ("detail", "<u8")])
LATENCY_DTYPE = np.dtype([("ns", "<u8"), ("kind", "<u8")])

COUNTERS = ["get_ksm_page_ok", "get_ksm_page_stale", "stable_nodes_removed", "ksm_pages_merged",
            "ksm_pages_created", "pages_freed", "pages_allocated", "alloc_failed", "reclaimed",
            "reclaim_unmapped", "ksmd_scanned", "ksmd_passes", "ptl_locks", "pagetables_churned",
            "rmap_items_removed", "violations", "latency_dropped", "nodes_freed_mid_free"]
CTR = {name: i for i, name in enumerate(COUNTERS)}
# control words
CTL_STOP = 0

PTRS_PER_GROUP = 64  # slots per page-table page
KMALLOC_SIZE = 1 << 20


@dataclass(frozen=True)
class Geometry:
    nr_pages: int
    nslots: int
    ngroups: int
    node_capacity: int
    contents: int  # distinct page contents: duplicates give KSM work
    violation_capacity: int = 4096
    latency_capacity: int = 1 << 18
    ncpus: int = 64

    @classmethod
    def for_pages(cls, nr_pages: int, ncpus: int) -> Geometry:
        # Twice as many virtual pages as memory, with as many contents as pages
        # (each content on ~1.7 mapped pages): even with ksmd merging at full
        # speed memory stays short, so reclaim works whatever ksmd's rate.
        nslots = max(PTRS_PER_GROUP, (2 * nr_pages) // PTRS_PER_GROUP * PTRS_PER_GROUP)
        return cls(nr_pages=nr_pages, nslots=nslots, ngroups=nslots // PTRS_PER_GROUP,
                   node_capacity=nslots // 2 + 16, contents=max(2, nslots // 2), ncpus=ncpus)

    def as_dict(self) -> dict:
        return asdict(self)

    def regions(self, stable_node_size: int, rmap_item_size: int) -> list[RegionSpec]:
        g = self
        return [
            RegionSpec("stable_nodes", g.node_capacity * stable_node_size),
            RegionSpec("rmap_items", g.nslots * rmap_item_size),
            RegionSpec("kmalloc", KMALLOC_SIZE),
            RegionSpec("node_meta", g.node_capacity * NODE_META_DTYPE.itemsize),
            RegionSpec("shadow", g.nr_pages * SHADOW_DTYPE.itemsize),
            RegionSpec("ptes", g.nslots * 8),
            RegionSpec("pgtables", g.ngroups * 8),
            RegionSpec("freelist", 8 + 4 * g.nr_pages),
            RegionSpec("counters", 8 * len(COUNTERS)),
            RegionSpec("percpu", 64 * g.ncpus),
            RegionSpec("control", 4096),
            RegionSpec("violations", 8 + g.violation_capacity * VIOLATION_DTYPE.itemsize),
            RegionSpec("latency", 8 + g.latency_capacity * LATENCY_DTYPE.itemsize),
        ]


def log2_ceil(n: int) -> int:
    return max(1, math.ceil(math.log2(max(2, n))))
