"""ksm-emu kmem: crash-style `kmem -p` rows from a machine file.

Each struct page as the bytes say (address, physical address, mapping, index,
_count, _mapcount, flags) beside what the shadow says it really is, with
page->mapping decoded for its user: anon_vma, the KSM stable_node, an
address_space, or, on a page table, the spinlock fields lying on it.

Rows are produced a chunk of pages at a time from a read-only mapping, and
each chunk's pages are dropped from memory once read: a state file of any
size is printed in bounded memory, the first row at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..check.shadow import STATE_NAMES
from ..decode import decode_mapping
from ..machine import Machine, MachineError
from ..records import SHADOW_DTYPE

PAGE_SIZE = 4096
CHUNK = 1 << 14  # pages per chunk: 1 MiB of 64-byte struct pages


def check(m: Machine) -> None:
    """What kmem reads must be there: a shadow, if any, covers every pfn."""
    if "shadow" in m.regions and m.regions["shadow"].size < m.nr_pages * SHADOW_DTYPE.itemsize:
        raise MachineError(f"{m.path}: the shadow region holds {m.regions['shadow'].size // SHADOW_DTYPE.itemsize} "
                           f"records for {m.nr_pages} pages (corrupt)")


def rows(m: Machine, start: int, count: int, kind: str | None) -> Iterator[dict]:
    """The rows of pfns [start, start + count), lazily, a chunk at a time."""
    check(m)
    shadow = m.region_array("shadow", SHADOW_DTYPE)[:m.nr_pages] if "shadow" in m.regions else None
    end = min(m.nr_pages, start + count)
    for lo in range(start, end, CHUNK):
        hi = min(end, lo + CHUNK)
        yield from _chunk(m, shadow, lo, hi, kind)
        m.drop_resident(m.page_offset(lo), (hi - lo) * m.page_size)
        if shadow is not None:
            m.drop_resident(m.regions["shadow"].offset + lo * SHADOW_DTYPE.itemsize,
                            (hi - lo) * SHADOW_DTYPE.itemsize)


def _chunk(m: Machine, shadow: np.ndarray | None, lo: int, hi: int, kind: str | None) -> Iterator[dict]:
    pages = m.pages[lo:hi]
    pfns = np.arange(lo, hi)
    if shadow is not None:
        sh = shadow[lo:hi]
        if kind is not None:
            sel = sh["state"] == STATE_NAMES.index(kind)
            pages, pfns, sh = pages[sel], pfns[sel], sh[sel]
        states, nodes, gens = sh["state"].tolist(), sh["node"].tolist(), sh["gen"].tolist()
    else:
        states, nodes, gens = [-1] * len(pfns), [0] * len(pfns), [None] * len(pfns)
    cols = zip(pfns.tolist(), pages["mapping"].tolist(), pages["index"].tolist(),
               pages["_count.counter"].tolist(), pages["_mapcount.counter"].tolist(),
               pages["flags"].tolist(), states, nodes, gens)
    base, psize = m.cfg.mem_map, m.page_size
    for pfn, mapping, index, count, mapcount, flags, state, node, gen in cols:
        yield {
            "page": base + pfn * psize, "physical": pfn * PAGE_SIZE, "pfn": pfn,
            "mapping": mapping, "index": index, "count": count, "mapcount": mapcount, "flags": flags,
            "is": STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else "?",
            "gen": gen, "decoded": decode_mapping(m, mapping, state, node),
        }


ADDRESSES = ("page", "physical", "mapping")


def as_json(r: dict) -> dict:
    """A row for --json: its addresses as "0x..." strings (one convention for every JSON output)."""
    return {**r, **{k: f"{r[k]:#x}" for k in ADDRESSES}}


def header(m: Machine) -> str:
    w = 2 * m.cfg.word_bytes
    return (f"{'PAGE':>{w}}  {'PHYSICAL':>10}  {'MAPPING':>{w}}  {'INDEX':>10} {'CNT':>4} {'MAPCNT':>6} "
            f"{'FLAGS':>6}  {'IS':9}  MAPPING DECODED")


def line(m: Machine, r: dict) -> str:
    w = 2 * m.cfg.word_bytes
    return (f"{r['page']:0{w}x}  {r['physical']:10x}  {r['mapping']:0{w}x}  {r['index']:10x} "
            f"{r['count']:4d} {r['mapcount']:6d} {r['flags']:6x}  {r['is']:9}  {r['decoded']}")


def render(m: Machine, rs: list[dict]) -> str:
    return "\n".join([header(m), *(line(m, r) for r in rs)])
