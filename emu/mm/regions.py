"""The emulated world beside the struct pages: its geometry and its regions,
each declared once as a dtype (offsets are derived from these, never typed).

Kernel bytes (the config's layout and byte order, emulated direct-map addresses):
  stable_nodes   the kmem_cache of struct stable_node
  rmap_items     one struct rmap_item per KSM-scanned virtual page (a "slot")
  kmalloc        small objects pages point to: task_structs, mm_structs (with
                 their page_table_lock), anon_vmas, address_spaces, kmem_caches,
                 driver objects (`Objects`)
  ptes           one word per slot: pfn + 1 of the page it maps, 0 for none
  pgtables       one word per page-table group: pfn + 1 of its page-table page
The page frames' data (host order): what kernel code reads of a page's
contents (ksmd's memcmp_pages) and a fault fills it with:
  page_data      one content id per pfn (emu.mm.page.page_content)
Emulator regions (host order, never read by kernel code):
  freelist       the page allocator's free list (emu.mm.page_alloc)
  shadow         ground truth per pfn, for the checks only (emu.check.shadow)
  counters, percpu, control, violations
  lockdep        lock-class order and lock-discipline findings (emu.check.lockdep)
  latency        reclaim's time to free: a log-bucketed histogram per kind (exact in
                 count, bounded in memory, any process adds with atomics)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..kconfig import Config
from ..machine import RegionSpec
from ..records import (
    CONTROL_DTYPE,
    COUNTERS_DTYPE,
    LAT_SUB_BITS,
    LATENCY_DTYPE,
    PAGE_DATA_DTYPE,
    PERCPU_DTYPE,
    SHADOW_DTYPE,
    VIOLATION_DTYPE,
    lockdep_region_size,
)
from ..structs import kernel_for


def latency_bucket(ns: int) -> int:
    """The histogram bucket of a non-negative value."""
    e = ns.bit_length() - 1
    if e < LAT_SUB_BITS:
        return ns
    return ((e - LAT_SUB_BITS + 1) << LAT_SUB_BITS) | ((ns >> (e - LAT_SUB_BITS)) & ((1 << LAT_SUB_BITS) - 1))


def latency_bucket_bounds(i: int) -> tuple[int, int]:
    """[lo, hi] of the values in bucket i."""
    group, sub = i >> LAT_SUB_BITS, i & ((1 << LAT_SUB_BITS) - 1)
    if group == 0:
        return i, i
    e = group + LAT_SUB_BITS - 1
    lo = (1 << e) | (sub << (e - LAT_SUB_BITS))
    return lo, lo + (1 << (e - LAT_SUB_BITS)) - 1

PTRS_PER_GROUP = 64  # slots per page-table page
TASK_SIZE, MM_STRUCT_SIZE = 1024, 1024
PAGE_TABLE_LOCK_REL = 64  # offset of page_table_lock inside the emulated mm_struct


def freelist_dtype(nr_pages: int) -> np.dtype:
    """The head word (ABA tag << 32 | top pfn + 1) and a next link per pfn (pfn + 1, 0 ends)."""
    return np.dtype([("head", "<u8"), ("next", "<u4", (nr_pages,))])


@dataclass(frozen=True)
class Geometry:
    nr_pages: int
    nslots: int
    ngroups: int
    node_capacity: int
    contents: int  # distinct page contents: duplicates give KSM work
    nmms: int = 2  # mm_structs: one per allocator
    violation_capacity: int = 4096
    ncpus: int = 64

    @classmethod
    def for_pages(cls, nr_pages: int, ncpus: int, nmms: int = 2) -> Geometry:
        # Twice as many virtual pages as memory, with as many contents as pages
        # (each content on ~1.7 mapped pages): even with ksmd merging at full
        # speed memory stays short, so reclaim works whatever ksmd's rate.
        nslots = max(PTRS_PER_GROUP, (2 * nr_pages) // PTRS_PER_GROUP * PTRS_PER_GROUP)
        return cls(nr_pages=nr_pages, nslots=nslots, ngroups=nslots // PTRS_PER_GROUP,
                   node_capacity=nslots // 2 + 16, contents=max(2, nslots // 2), nmms=nmms, ncpus=ncpus)

    def as_dict(self) -> dict:
        return asdict(self)

    def regions(self, cfg: Config, bases: dict[str, int] | None = None) -> list[RegionSpec]:
        """The regions to create; `bases` places some at chosen emulated addresses
        (the rest go to the next free direct-map range)."""
        k, g, word = kernel_for(cfg), self, cfg.word_bytes
        specs = [
            RegionSpec("stable_nodes", g.node_capacity * k.stable_node.size),
            RegionSpec("rmap_items", g.nslots * k.rmap_item.size),
            RegionSpec("kmalloc", Objects.size(g.nmms)),
            RegionSpec("shadow", g.nr_pages * SHADOW_DTYPE.itemsize),
            RegionSpec("ptes", g.nslots * word),
            RegionSpec("pgtables", g.ngroups * word),
            RegionSpec("freelist", freelist_dtype(g.nr_pages).itemsize),
            RegionSpec("counters", COUNTERS_DTYPE.itemsize),
            RegionSpec("percpu", g.ncpus * PERCPU_DTYPE.itemsize),
            RegionSpec("control", CONTROL_DTYPE.itemsize),
            RegionSpec("violations", g.violation_capacity * VIOLATION_DTYPE.itemsize),
            RegionSpec("latency", 2 * LATENCY_DTYPE.itemsize),
            RegionSpec("lockdep", lockdep_region_size()),
            RegionSpec("page_data", g.nr_pages * PAGE_DATA_DTYPE.itemsize),  # last: the others' places unchanged
        ]
        bases = bases or {}
        return [RegionSpec(r.name, r.size, bases.get(r.name)) for r in specs]


# kmalloc placement, in this order: (object kind, size of each)
_OBJECTS = (("task", TASK_SIZE), ("mm_struct", MM_STRUCT_SIZE), ("anon_vma", 64), ("address_space", 256),
            ("kmem_cache", 256), ("driver", 64))


def _object_counts(nmms: int) -> dict[str, int]:
    return {kind: nmms + 3 if kind == "task" else nmms for kind, _ in _OBJECTS}


@dataclass(frozen=True)
class Objects:
    """Emulated addresses of the kmalloc'd objects pages point to: a task per
    CPU role (and the launcher's), and per allocator (each its own mm) an
    mm_struct, an anon_vma, an address_space, a kmem_cache and a driver object."""

    task: tuple[int, ...]
    mm_struct: tuple[int, ...]
    anon_vma: tuple[int, ...]
    address_space: tuple[int, ...]
    kmem_cache: tuple[int, ...]
    driver: tuple[int, ...]

    @classmethod
    def at(cls, base: int, nmms: int) -> Objects:
        out, off = {}, 0
        for kind, size in _OBJECTS:
            n = _object_counts(nmms)[kind]
            out[kind] = tuple(base + off + i * size for i in range(n))
            off += n * size
        return cls(**out)

    @staticmethod
    def size(nmms: int) -> int:
        return sum(size * _object_counts(nmms)[kind] for kind, size in _OBJECTS)

    def of_allocator(self, i: int) -> dict[str, int]:
        return {"anon_vma": self.anon_vma[i], "address_space": self.address_space[i],
                "kmem_cache": self.kmem_cache[i], "driver": self.driver[i], "mm_struct": self.mm_struct[i]}


def log2_ceil(n: int) -> int:
    return max(1, math.ceil(math.log2(max(2, n))))
