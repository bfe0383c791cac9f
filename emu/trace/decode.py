"""What a trace record means, in the kernel's names: a slice's name and
arguments, the pfn it concerns (for a page's history)."""

from __future__ import annotations

from dataclasses import dataclass

from ..check.shadow import STATE_NAMES
from ..mm.ring import CODE, LOCK_HELD, NAMES, SCAN_BATCH
from .slices import Slice


@dataclass(frozen=True)
class TraceContext:
    """The few facts of a machine that decoding needs (so a launcher that no
    longer maps the machine can decode)."""

    mem_map_off: int
    mem_map_addr: int
    page_size: int
    nr_pages: int
    sn_base: int
    sn_size: int
    regions: tuple[tuple[int, int, int], ...]  # (file offset, size, emulated base)

    @classmethod
    def of(cls, m: object) -> TraceContext:
        """From an attached Machine."""
        sn = m.regions["stable_nodes"]
        return cls(m.mem_map_offset, m.cfg.mem_map, m.page_size, m.nr_pages, sn.base, m.kernel.stable_node.size,
                   tuple((r.offset, r.size, r.base) for r in m.regions.values()))

    def node(self, idx: int) -> int:
        return self.sn_base + idx * self.sn_size

    def lock_pfn(self, off: int) -> int | None:
        """The page whose ptl lies at file offset `off` (None: not in a struct page)."""
        rel = off - self.mem_map_off
        return rel // self.page_size if 0 <= rel < self.nr_pages * self.page_size else None

    def addr(self, off: int) -> int:
        for o, size, base in self.regions:
            if o <= off < o + size:
                return base + off - o
        return off


def _state(v: int) -> str:
    return STATE_NAMES[v] if 0 <= v < len(STATE_NAMES) else str(v)


def slice_name(ctx: TraceContext, s: Slice) -> str:
    if s.code == LOCK_HELD:
        return "ptl held" if ctx.lock_pfn(s.a) is not None else "page_table_lock held"
    return NAMES[s.code] if s.code < len(NAMES) else f"code {s.code}"


def slice_args(ctx: TraceContext, s: Slice) -> dict:
    c, a, b, r = s.code, s.a, s.b, s.result
    n = NAMES[c] if c < len(NAMES) else ""
    if n == "get_ksm_page":
        out = {"stable_node": f"{ctx.node(a):#x}", "page": r if r >= 0 else "stale"}
    elif n == "try_to_unmap":
        out = {"pfn": a, "slot": b, "ptes_cleared": r}
    elif n in ("free_hot_cold_page", "pte_free"):
        out = {"pfn": a}
    elif n == "do_anonymous_page":
        out = {"slot": a, "content": b, "mapped": bool(r == 1)}
    elif n == "alloc_page":
        out = {"as": _state(a), "pfn": r if r >= 0 else "none free"}
    elif n == "zap_pte":
        out = {"slot": a, "pfn": r}
    elif n == "shrink_page":
        out = {"pfn": a, "slot": b, "freed": bool(r == 1)}
    elif n == "set_page_stable_node":
        out = {"pfn": a, "stable_node": f"{b:#x}", "mapping": f"{b + 3:#x}"}
    elif n == "pte_alloc_one":
        out = {"pfn": r}
    elif n == "free_stable_node":
        out = {"stable_node": f"{ctx.node(a):#x}"}
    elif c == LOCK_HELD:
        pfn = ctx.lock_pfn(a)
        out = {"lock": f"{ctx.addr(a):#x}", **({"pfn": pfn} if pfn is not None else {})}
    elif c == SCAN_BATCH:
        out = {"first_slot": a, "slots": r}
    else:
        out = {"a": a, "b": b, "result": r}
    if s.unfinished:
        out["unfinished"] = True
    return out


_PFN_ARG = {CODE[n]: "a" for n in ("try_to_unmap", "free_hot_cold_page", "pte_free", "shrink_page",
                                    "set_page_stable_node")}
_PFN_RESULT = {CODE[n] for n in ("get_ksm_page", "alloc_page", "zap_pte", "pte_alloc_one")}


def slice_pfn(ctx: TraceContext, s: Slice) -> int | None:
    """The pfn a slice is about, if any."""
    if s.code in _PFN_ARG:
        return s.a
    if s.code in _PFN_RESULT:
        return s.result if s.result >= 0 else None
    if s.code == LOCK_HELD:
        return ctx.lock_pfn(s.a)
    return None
