"""Ground truth and invariants as one CPU sees them.

The mm primitives call these at their transitions (a page allocated, its
mapping written, freed, made a KSM page, opened through the keyhole); each
keeps the shadow and, where an invariant can be broken there, checks it and
records a violation. Reads of the shadow and peeks at kernel bytes go through
the context's ghost accessor: under a controlled schedule they are part of the
step they follow, never a scheduling point of their own.

A BUG (get_page on a free page, a put too many) is handled by policy: raised
under the unit tests (`RAISE`), recorded and survived in runs (`REPORT`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mm.regions import latency_bucket
from ..records import LAT_ANON, LAT_KSM, LATENCY_DTYPE, SHADOW_DTYPE, VIOLATION_DTYPE
from .shadow import FIELDS, FREE, KSM, W_KSM_KEY, W_KSM_NULL
from .violations import (
    V_BAD_PAGE,
    V_CHANGED_WHILE_REF,
    V_COUNT_NEGATIVE,
    V_DOUBLE_ALLOC,
    V_FALSE_OPEN,
    V_KEY_FORGED,
    V_NODE_FREED_WITH_KEY,
    VIOLATION_NAMES,
    KernelBug,
    RefcountBug,
)

if TYPE_CHECKING:
    from ..mm.context import MM

RAISE, REPORT = "raise", "report"
_SH = SHADOW_DTYPE.itemsize
_LAT_MAX, _LAT_BUCKETS = LATENCY_DTYPE.fields["max"][1], LATENCY_DTYPE.fields["buckets"][1]
_VREC = [(VIOLATION_DTYPE.fields[n][1], VIOLATION_DTYPE.fields[n][0].itemsize) for n in VIOLATION_DTYPE.names]


class Truth:
    def __init__(self, mm: MM, policy: str = REPORT) -> None:
        if policy not in (RAISE, REPORT):
            raise ValueError(f"policy must be {RAISE!r} or {REPORT!r}, not {policy!r}")
        self.mm, self.policy = mm, policy
        self.g, self.h = mm.g, mm.h
        self.big = mm.cfg.byte_order == "big"
        self._opened: dict[tuple[int, int], bool] = {}  # get_ksm_page's references held

    # -- the shadow ------------------------------------------------------------------
    def get(self, pfn: int, field: str) -> int:
        off, size = FIELDS[field]
        return self.g.load(self.mm.shadow + pfn * _SH + off, size)

    def _set(self, pfn: int, field: str, value: int) -> None:
        off, size = FIELDS[field]
        self.g.store(self.mm.shadow + pfn * _SH + off, size, value)

    def _xchg(self, pfn: int, field: str, value: int) -> int:
        off, size = FIELDS[field]
        return self.g.xchg(self.mm.shadow + pfn * _SH + off, size, value)

    def peek(self, off: int, size: int, signed: bool = False) -> int:
        """Kernel bytes as the checks read them (emulated order; not a kernel access)."""
        return self.g.load(off, size, signed, big=self.big)

    # -- transitions ----------------------------------------------------------------------
    def page_allocated(self, pfn: int, state: int) -> None:
        off = self.mm.shadow + pfn * _SH
        seen = self.g.cas(off + FIELDS["state"][0], 4, FREE, state)
        if seen != FREE:  # the free list handed out a page that is in use
            self.violation(V_DOUBLE_ALLOC, pfn, detail=seen)
            self._set(pfn, "state", state)
        self.g.fetch_add(off + FIELDS["gen"][0], 4, 1)

    def page_freed(self, pfn: int) -> int:
        """The page reached the free list: what it was. Records reclaim's latency."""
        was = self._xchg(pfn, "state", FREE)
        self._set(pfn, "node", 0)
        self.g.fetch_add(self.mm.shadow + pfn * _SH + FIELDS["gen"][0], 4, 1)
        t0 = self._xchg(pfn, "t_reclaim", 0)
        if t0:
            self.record_latency(self.mm.clock.now_ns() - t0, LAT_KSM if was == KSM else LAT_ANON)
        return was

    def mapping_written(self, pfn: int, writer: int) -> None:
        self._set(pfn, "writer", writer)

    def stable_node_set(self, pfn: int, node: int) -> None:
        """set_page_stable_node is about to store node + 3 (or, node 0, the bare 0x3):
        the truth changes first, so no one sees a key the shadow does not know."""
        self._set(pfn, "node", node)
        if node:
            self._set(pfn, "state", KSM)
        self._set(pfn, "writer", W_KSM_KEY if node else W_KSM_NULL)

    def reclaim_decided(self, pfn: int) -> None:
        """Reclaim chose this page: whoever frees it records the time since."""
        off, _ = FIELDS["t_reclaim"]
        self.g.cas(self.mm.shadow + pfn * _SH + off, 8, 0, self.mm.clock.now_ns())

    # -- checks -----------------------------------------------------------------------------
    def keyhole_opened(self, pfn: int, node: int) -> bool:
        """get_ksm_page handed out pfn for the stable_node at `node`: it must be
        that node's KSM page (else a keyhole false open)."""
        ok = self._is_ksm_page_of(pfn, node, V_FALSE_OPEN)
        self._opened[(pfn, node)] = ok
        return ok

    def keyhole_closed(self, pfn: int, node: int) -> None:
        """The reference get_ksm_page took is about to be dropped: the page must
        have stayed the node's all along (a false open is reported once)."""
        if self._opened.pop((pfn, node), True):
            self._is_ksm_page_of(pfn, node, V_CHANGED_WHILE_REF)

    def _is_ksm_page_of(self, pfn: int, node: int, kind: int) -> bool:
        state = self.get(pfn, "state")
        if state == KSM and self.get(pfn, "node") == node:
            return True
        self.violation(kind, pfn, node, node + 3, detail=state)
        return False

    def stable_node_freed(self, kpfn: int, node: int) -> None:
        """No stable_node may be freed while its page still carries its key."""
        mm = self.mm
        key = node + 3
        # Read truth, then count, then mapping: free_hot_cold_page clears mapping
        # before the shadow says FREE, so a key seen last was there at both reads.
        state = self.get(kpfn, "state")
        count = self.peek(mm.page_off(kpfn) + mm.count_rel, 4, True)
        if self.peek(mm.page_off(kpfn) + mm.mapping_rel, mm.word) != key:
            return
        if count == 0 and state == KSM:
            # mid-free: get_page_unless_zero failed on a page whose last put has
            # happened and whose mapping free_hot_cold_page is about to clear; no
            # reference can be taken at 0, so the key is dead
            mm.count("nodes_freed_mid_free")
        elif state in (KSM, FREE):  # alive with a dangling key, or already free with it
            self.violation(V_NODE_FREED_WITH_KEY, kpfn, node, key, detail=count & 0xFFFFFFFF)
        else:  # another user of the page (a page table's lock) put the key there
            self.violation(V_KEY_FORGED, kpfn, node, key, detail=state)

    def page_bad(self, pfn: int, bad: int) -> None:
        """free_pages_check found `bad` (BAD_* bits)."""
        self.violation(V_BAD_PAGE, pfn, detail=bad)

    def bug(self, kind: int, pfn: int, message: str, detail: int = 0) -> None:
        """The kernel would BUG() here: raise or record, by policy."""
        if self.policy == RAISE:
            raise RefcountBug(message) if kind == V_COUNT_NEGATIVE else KernelBug(message)
        self.violation(kind, pfn, detail=detail)

    # -- records --------------------------------------------------------------------------------
    def violation(self, kind: int, pfn: int = 0, node: int = 0, expected: int = 0,
                  mapping: int | None = None, detail: int = 0) -> None:
        """Record a violation with the bytes of mapping and who wrote them."""
        mm, h = self.mm, self.h
        mm.count("violations")
        # every kind counted; records kept per kind up to a share of the ring,
        # so a flood of one kind cannot hide another
        cap = mm.geo.violation_capacity
        if h.fetch_add(mm.ctl_by_kind + 8 * kind, 8, 1) >= cap // len(VIOLATION_NAMES):
            return
        idx = h.fetch_add(mm.ctl_nviol, 8, 1)
        if idx >= cap:
            return
        if mapping is None:
            mapping = self.peek(mm.page_off(pfn) + mm.mapping_rel, mm.word)
        rec = (kind, mm.role_code, mm.cpu, self.get(pfn, "writer"), pfn, node, expected, mapping,
               mm.clock.now_ns(), detail)
        off = mm.violations + idx * VIOLATION_DTYPE.itemsize
        for (o, size), value in zip(_VREC, rec):
            h.store(off + o, size, value)
        if mm.tr is not None:  # its instant event in the CPU's trace ring
            mm.tr.violation(idx, pfn)

    def record_latency(self, ns: int, kind: int) -> None:
        """One more sample in the `kind` histogram (LAT_ANON, LAT_KSM): every
        sample counted, whichever process frees the page."""
        mm, h = self.mm, self.h
        ns = max(0, ns)
        rec = mm.latency + kind * LATENCY_DTYPE.itemsize
        h.fetch_add(rec + _LAT_BUCKETS + 8 * latency_bucket(ns), 8, 1)
        h.fetch_add(mm.ctl_nlat, 8, 1)
        seen = h.load(rec + _LAT_MAX, 8)
        while ns > seen:  # an atomic max
            got = h.cas(rec + _LAT_MAX, 8, seen, ns)
            if got == seen:
                break
            seen = got
