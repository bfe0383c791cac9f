"""One emulated CPU's view of the machine: the context every mm function takes.

Each role process builds one `MM` (its CPU id, task pointer, protocol) over
the shared machine. Kernel bytes go through `a` (the emulated byte order);
the emulator's own metadata through `h` (host order). Offsets are looked up
once here, so hot paths do arithmetic, not layout queries.
"""

from __future__ import annotations

import time

from .._atomics import Atomics
from ..machine import Machine
from .world import (
    CTR,
    LATENCY_DTYPE,
    NODE_META_DTYPE,
    SHADOW_DTYPE,
    VIOLATION_DTYPE,
    Geometry,
)

PG_LOCKED = 1 << 0  # page->flags bit 0, as in include/linux/page-flags.h
PAGE_MAPPING_ANON, PAGE_MAPPING_KSM = 1, 2

# violation kinds
V_FALSE_OPEN, V_CHANGED_WHILE_REF, V_COUNT_NEGATIVE, V_BAD_PAGE, V_NODE_FREED_WITH_KEY, \
    V_DOUBLE_ALLOC, V_SPIN_BUG = range(7)
VIOLATION_NAMES = ["keyhole false open", "KSM page changed while referenced",
                   "page count below zero", "bad_page (free_pages_check)",
                   "stable_node freed while its page carries its key", "pfn allocated twice",
                   "spin_bug"]
ROLE_NAMES = ["launcher", "ksmd", "reclaim", "allocator"]
VIOLATION_KIND_OFF = 64  # per-kind counts in the control region


class MM:
    def __init__(self, m: Machine, geo: Geometry, *, role: int, cpu: int, task: int,
                 protocol: str, window_ns: int = 0) -> None:
        self.m, self.geo, self.role, self.cpu, self.task = m, geo, role, cpu, task
        self.protocol = protocol
        self.window_ns = window_ns
        self.a = m.atomics
        self.h = Atomics(m.mm, "little")  # host order for metadata
        self.word = m.cfg.word_bytes
        lay = m.page_layout
        self.psize = m.page_size
        self.mem_map = m.mem_map_offset
        self.count_rel = lay.offset("_count.counter")
        self.mapcount_rel = lay.offset("_mapcount.counter")
        self.mapping_rel = lay.offset("mapping")
        self.flags_rel = lay.offset("flags")
        self.index_rel = lay.offset("index")
        self.private_rel = lay.offset("private")
        r = {name: m.region(name) for name in m.regions}
        self.regions = r
        self.shadow = r["shadow"].offset
        self.ptes = r["ptes"].offset
        self.pgtables = r["pgtables"].offset
        self.counters = r["counters"].offset
        self.percpu = r["percpu"].offset
        self.control = r["control"].offset
        self.viol = r["violations"].offset
        self.lat = r["latency"].offset
        self.node_meta = r["node_meta"].offset
        self.kmalloc = r["kmalloc"]
        k = m.kernel
        self.sn_size = k.stable_node.size
        self.sn = r["stable_nodes"]
        self.sn_kpfn = k.stable_node.member("kpfn")[0]
        self.sn_hlist = k.stable_node.member("hlist")[0]
        from ..layout import Layout

        ri = Layout(k.rmap_item, m.cfg.byte_order, "rmap_item")
        self.ri_size = k.rmap_item.size
        self.ri = r["rmap_items"]
        self.ri_anon_vma = ri.offset("anon_vma")
        self.ri_mm = ri.offset("mm")
        self.ri_address = ri.offset("address")
        self.ri_oldchecksum = ri.offset("oldchecksum")
        self.ri_head = ri.offset("head")
        self.ri_hlist = ri.offset("hlist")  # hlist.next; pprev follows
        self.ri_pprev = ri.offset("hlist.pprev")
        self.shadow_view = m.region_array("shadow", SHADOW_DTYPE)
        self.node_meta_view = m.region_array("node_meta", NODE_META_DTYPE)

    # -- struct page fields ------------------------------------------------
    def page_off(self, pfn: int) -> int:
        return self.mem_map + pfn * self.psize

    def mapping(self, pfn: int) -> int:
        return self.a.load(self.mem_map + pfn * self.psize + self.mapping_rel, self.word)

    def set_mapping(self, pfn: int, value: int) -> None:
        self.a.store(self.mem_map + pfn * self.psize + self.mapping_rel, self.word, value)

    def page_count(self, pfn: int) -> int:
        return self.a.load(self.mem_map + pfn * self.psize + self.count_rel, 4, True)

    def mapcount_add(self, pfn: int, delta: int) -> int:
        """atomic_add on _mapcount; returns the new value."""
        return self.a.fetch_add(self.mem_map + pfn * self.psize + self.mapcount_rel, 4, delta, True) + delta

    def set_mapcount(self, pfn: int, value: int) -> None:
        self.a.store(self.mem_map + pfn * self.psize + self.mapcount_rel, 4, value)

    def pfn_addr(self, pfn: int) -> int:
        return self.m.cfg.mem_map + pfn * self.psize

    # -- page lock (PG_locked in page->flags) -------------------------------
    def trylock_page(self, pfn: int) -> bool:
        return not (self.a.fetch_or(self.page_off(pfn) + self.flags_rel, self.word, PG_LOCKED) & PG_LOCKED)

    def lock_page(self, pfn: int) -> None:
        spins = 0
        while not self.trylock_page(pfn):
            spins += 1
            if spins & 15 == 0:
                time.sleep(0)

    def unlock_page(self, pfn: int) -> None:
        self.a.fetch_and(self.page_off(pfn) + self.flags_rel, self.word, ~PG_LOCKED & ((1 << 8 * self.word) - 1))

    # -- shadow (ground truth) ----------------------------------------------
    def sh(self, pfn: int, field: str) -> int:
        return int(self.shadow_view[pfn][field])

    def sh_set(self, pfn: int, field: str, value: int) -> None:
        off, size = SHADOW_FIELDS[field]
        self.h.store(self.shadow + pfn * SHADOW_DTYPE.itemsize + off, size, value)

    def sh_cas(self, pfn: int, field: str, old: int, new: int) -> int:
        off, size = SHADOW_FIELDS[field]
        return self.h.cas(self.shadow + pfn * SHADOW_DTYPE.itemsize + off, size, old, new)

    def sh_add(self, pfn: int, field: str, delta: int) -> int:
        off, size = SHADOW_FIELDS[field]
        return self.h.fetch_add(self.shadow + pfn * SHADOW_DTYPE.itemsize + off, size, delta)

    def sh_xchg(self, pfn: int, field: str, value: int) -> int:
        off, size = SHADOW_FIELDS[field]
        return self.h.xchg(self.shadow + pfn * SHADOW_DTYPE.itemsize + off, size, value)

    # -- counters, control, RCU --------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.h.fetch_add(self.counters + 8 * CTR[name], 8, n)

    def counter(self, name: str) -> int:
        return self.h.load(self.counters + 8 * CTR[name], 8)

    def stopping(self) -> bool:
        return self.h.load(self.control, 4, order=2) != 0

    def rcu_read_lock(self) -> None:
        self.h.fetch_add(self.percpu + 64 * self.cpu, 4, 1)

    def rcu_read_unlock(self) -> None:
        self.h.fetch_add(self.percpu + 64 * self.cpu, 4, -1, True)

    # -- reports -------------------------------------------------------------
    def violation(self, kind: int, pfn: int = 0, node: int = 0, expected: int = 0,
                  mapping: int | None = None, detail: int = 0) -> None:
        """Record a violation with the bytes of mapping and who wrote them."""
        self.count("violations")
        # every kind counted; records kept per kind up to a share of the ring,
        # so a flood of one kind cannot hide another
        if self.h.fetch_add(self.control + VIOLATION_KIND_OFF + 8 * kind, 8, 1) >= \
                self.geo.violation_capacity // len(VIOLATION_NAMES):
            return
        idx = self.h.fetch_add(self.viol, 8, 1)
        if idx >= self.geo.violation_capacity:
            return
        if mapping is None:
            mapping = self.mapping(pfn)
        off = self.viol + 8 + idx * VIOLATION_DTYPE.itemsize
        rec = (kind, self.role, self.cpu, self.sh(pfn, "writer"), pfn, node, expected, mapping,
               time.monotonic_ns(), detail)
        for (name, _), value in zip(VIOLATION_DTYPE.descr, rec):
            o, size = VIOLATION_DTYPE.fields[name][1], VIOLATION_DTYPE.fields[name][0].itemsize
            self.h.store(off + o, size, value)

    def violations_by_kind(self) -> dict[str, int]:
        return {name: self.h.load(self.control + VIOLATION_KIND_OFF + 8 * i, 8)
                for i, name in enumerate(VIOLATION_NAMES)}

    def record_latency(self, ns: int, kind: int) -> None:
        idx = self.h.fetch_add(self.lat, 8, 1)
        if idx >= self.geo.latency_capacity:
            self.count("latency_dropped")
            return
        off = self.lat + 8 + idx * LATENCY_DTYPE.itemsize
        self.h.store(off, 8, ns)
        self.h.store(off + 8, 8, kind)


SHADOW_FIELDS = {name: (SHADOW_DTYPE.fields[name][1], SHADOW_DTYPE.fields[name][0].itemsize)
                 for name in SHADOW_DTYPE.names}
