"""ksm-emu kmem: crash-style `kmem -p` rows from a machine file.

Each struct page as the bytes say (address, physical address, mapping, index,
_count, _mapcount, flags) beside what the shadow says it really is, with
page->mapping decoded for its user: anon_vma, the KSM stable_node, an
address_space, or, on a page table, the spinlock fields lying on it.
"""

from __future__ import annotations

import numpy as np

from .check.shadow import SHADOW_DTYPE, STATE_NAMES
from .machine import Machine
from .report import decode_mapping

PAGE_SIZE = 4096


def rows(m: Machine, start: int, count: int, kind: str | None) -> list[dict]:
    shadow = m.region_array("shadow", SHADOW_DTYPE) if "shadow" in m.regions else None
    end = min(m.nr_pages, start + count)
    pages = m.pages[start:end]
    pfns = np.arange(start, end)
    if shadow is not None and kind is not None:
        sel = shadow["state"][start:end] == STATE_NAMES.index(kind)
        pages, pfns = pages[sel], pfns[sel]
    out = []
    for pfn, rec in zip(pfns.tolist(), pages):
        state = int(shadow[pfn]["state"]) if shadow is not None else -1
        node = int(shadow[pfn]["node"]) if shadow is not None else 0
        mapping = int(rec["mapping"])
        out.append({
            "page": m.pfn_to_page(pfn), "physical": pfn * PAGE_SIZE, "pfn": pfn,
            "mapping": mapping, "index": int(rec["index"]), "count": int(rec["_count.counter"]),
            "mapcount": int(rec["_mapcount.counter"]), "flags": int(rec["flags"]),
            "is": STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else "?",
            "gen": int(shadow[pfn]["gen"]) if shadow is not None else None,
            "decoded": decode_mapping(m, mapping, state, node),
        })
    return out


def render(m: Machine, rs: list[dict]) -> str:
    w = 2 * m.cfg.word_bytes
    head = (f"{'PAGE':>{w}}  {'PHYSICAL':>10}  {'MAPPING':>{w}}  {'INDEX':>10} {'CNT':>4} {'MAPCNT':>6} "
            f"{'FLAGS':>6}  {'IS':9}  MAPPING DECODED")
    lines = [head]
    for r in rs:
        lines.append(f"{r['page']:0{w}x}  {r['physical']:10x}  {r['mapping']:0{w}x}  {r['index']:10x} "
                     f"{r['count']:4d} {r['mapcount']:6d} {r['flags']:6x}  {r['is']:9}  {r['decoded']}")
    return "\n".join(lines)
