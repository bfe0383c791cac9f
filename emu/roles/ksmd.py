"""ksmd: scan the rmap_items at pages_to_scan per sleep_millisecs, merging and
meeting stable nodes through get_ksm_page (the kernel defaults: 100 per 20 ms)."""

from __future__ import annotations

from dataclasses import dataclass

from ..mm.context import MM
from ..mm.ksm import StableTree, ksm_thread_mutex_lock, ksm_thread_mutex_unlock
from ..mm.ksm_scan import ksm_sweep, meet_nodes, scan_slot


@dataclass(frozen=True)
class KsmdParams:
    pages_to_scan: int = 100
    sleep_ms: float = 20.0


class Ksmd:
    def __init__(self, mm: MM, params: KsmdParams) -> None:
        self.mm, self.p = mm, params
        self.tree = StableTree(mm.geo)
        self.cursor = 0  # the next slot to scan
        self.node_cursor = 0  # meet_nodes' place among the stable nodes
        self.scanned = 0  # slots scanned in this batch

    def step(self) -> int:
        """One slot, under ksm_thread_mutex as ksm_do_scan runs."""
        ksm_thread_mutex_lock(self.mm)
        try:
            return self._step()
        finally:
            ksm_thread_mutex_unlock(self.mm)

    def _step(self) -> int:
        """One slot; at the end of a batch, the nodes a descent meets, then sleep."""
        mm = self.mm
        if self.scanned == 0 and mm.tr is not None:
            mm.tr.batch_begin(self.cursor)
        scan_slot(mm, self.tree, self.cursor)
        self.cursor += 1
        if self.cursor == mm.geo.nslots:  # a full pass: the unstable tree starts afresh
            self.cursor = 0
            self.tree.unstable[:] = 0
            ksm_sweep(mm, self.tree)
            mm.count("ksmd_passes")
        self.scanned += 1
        if self.scanned < self.p.pages_to_scan:
            return 0
        self.scanned = 0
        mm.count("ksmd_scanned", self.p.pages_to_scan)
        self.node_cursor = meet_nodes(mm, self.tree, self.node_cursor)
        if mm.tr is not None:
            mm.tr.gauges()
            mm.tr.batch_end(self.p.pages_to_scan)
        return int(self.p.sleep_ms * 1e6)

    def finish(self) -> None:
        pass
