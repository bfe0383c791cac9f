"""ksmd: scan the rmap_items at pages_to_scan per sleep_millisecs, merging and
meeting stable nodes through get_ksm_page (the kernel defaults: 100 per 20 ms)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..mm.core import MM
from ..mm.ksm import Ksm
from ..mm.rmap import PteLocks


@dataclass(frozen=True)
class KsmdParams:
    pages_to_scan: int = 100
    sleep_ms: float = 20.0


def run(mm: MM, locks: PteLocks, p: KsmdParams, progress) -> None:
    ksm = Ksm(mm, locks)
    nslots = mm.geo.nslots
    cursor = 0
    while not mm.stopping():
        for _ in range(p.pages_to_scan):
            ksm.scan_slot(cursor)
            cursor += 1
            if cursor == nslots:  # a full pass: the unstable tree starts afresh
                cursor = 0
                ksm.unstable[:] = 0
                ksm.sweep()
                mm.count("ksmd_passes")
        mm.count("ksmd_scanned", p.pages_to_scan)
        ksm.meet_nodes()
        progress()
        if p.sleep_ms:
            time.sleep(p.sleep_ms / 1000)
