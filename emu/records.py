"""The record formats of the emulator's own regions of the machine file, in one
place at the bottom of the import graph: the kernel code writes them, the
checkers keep them, the reports and the trace readers decode them, and none of
those need import another to know a record's bytes. Host order throughout
(these are the emulator's bookkeeping, not the emulated kernel's bytes)."""

from __future__ import annotations

import struct

import numpy as np

# Who a record says did it: violation and lockdep records store the index.
ROLE_NAMES = ["launcher", "ksmd", "reclaim", "allocator"]

# shadow: ground truth per pfn (emu/check/shadow.py names the values); 32 bytes
# a record, so each 8-byte field is aligned in every record (the sweep checks it)
SHADOW_DTYPE = np.dtype({"names": ["state", "gen", "node", "t_reclaim", "writer"],
                         "formats": ["<u4", "<u4", "<u8", "<u8", "<u4"],
                         "offsets": [0, 4, 8, 16, 24], "itemsize": 32})

# page data: what each page frame holds, as one content id per pfn (emu/mm/page.py)
PAGE_DATA_DTYPE = np.dtype("<u4")

# violations: one record per violation kept (emu/check/violations.py names the kinds)
NR_VIOLATION_KINDS = 8
VIOLATION_DTYPE = np.dtype([("kind", "<u4"), ("role", "<u4"), ("cpu", "<u4"), ("writer", "<u4"),
                            ("pfn", "<u8"), ("node", "<u8"), ("expected", "<u8"),
                            ("mapping", "<u8"), ("t_ns", "<u8"), ("detail", "<u8")])

# counters, control, percpu
COUNTERS = ["get_ksm_page_ok", "get_ksm_page_stale", "stable_nodes_removed", "ksm_pages_merged",
            "ksm_pages_created", "pages_freed", "pages_allocated", "alloc_failed", "reclaimed",
            "reclaim_unmapped", "ksmd_scanned", "ksmd_passes", "ptl_locks", "pagetables_churned",
            "rmap_items_removed", "violations", "nodes_freed_mid_free", "lockdep_findings"]
COUNTERS_DTYPE = np.dtype([(name, "<u8") for name in COUNTERS])
CONTROL_DTYPE = np.dtype([("stop", "<u4"), ("nr_free", "<i8"), ("nr_violations", "<u8"),
                          ("nr_latencies", "<u8"),  # samples recorded, all kinds
                          ("violations_by_kind", "<u8", (NR_VIOLATION_KINDS,))],
                         align=True)
PERCPU_DTYPE = np.dtype({"names": ["rcu_nesting"], "formats": ["<i4"], "offsets": [0], "itemsize": 64})

# Latency histogram: values below 2**LAT_SUB_BITS ns exact, above that 2**LAT_SUB_BITS
# buckets per power of two, so a bucket's midpoint is within LAT_REL_ERROR of
# any value in it: every sample counted, in a fixed 15 KiB per kind.
LAT_SUB_BITS = 5
LAT_NBUCKETS = (64 - LAT_SUB_BITS + 1) << LAT_SUB_BITS
LAT_REL_ERROR = 2.0 ** -(LAT_SUB_BITS + 1)
LAT_ANON, LAT_KSM = 0, 1  # record index: what the freed page was
LATENCY_DTYPE = np.dtype([("max", "<u8"), ("buckets", "<u8", (LAT_NBUCKETS,))])

# lockdep: a count word, the class-order matrix, then the findings kept
# (emu/check/lockdep.py names the classes and kinds)
LOCK_CLASS_NAMES = ["page->ptl", "mm->page_table_lock", "PG_locked", "ksm_thread_mutex", "spinlock_t"]
LOCKDEP_MAX_HELD = 4
LOCKDEP_DTYPE = np.dtype([
    ("kind", "u1"), ("op", "u1"), ("size", "u1"), ("role", "u1"), ("cpu", "<u4"),
    ("off", "<u8"),  # the access's file offset (lock order: the lock being taken)
    ("want_cls", "u1"), ("nheld", "u1"), ("rule", "u1"), ("taken_cls", "u1"), ("pad", "<u4"),
    ("want_off", "<u8"),  # the lock expected (lock order: the lock held first)
    ("held_cls", "u1", (LOCKDEP_MAX_HELD,)), ("pad2", "<u4"), ("held_off", "<u8", (LOCKDEP_MAX_HELD,)),
    ("t_ns", "<u8"), ("function", "S56"),
])
LOCKDEP_HEAD = 64
LOCKDEP_CAPACITY = 256


def lockdep_region_size() -> int:
    n = len(LOCK_CLASS_NAMES)
    return LOCKDEP_HEAD + n * n + LOCKDEP_CAPACITY * LOCKDEP_DTYPE.itemsize + 64


# trace rings: fixed-size event records (emu/mm/ring.py lays the rings out)
EVENT_DTYPE = np.dtype([("ts", "<u8"), ("seq", "<u8"), ("a", "<i8"), ("b", "<u8"),
                        ("code", "<u2"), ("ph", "<u1"), ("pad", "u1", (5,))])
# a signed (a result may be -1), b unsigned (an address); PACK writes EVENT_DTYPE's bytes in one call
EVENT_PACK = struct.Struct("<QQqQHB5x")
assert EVENT_PACK.size == EVENT_DTYPE.itemsize
