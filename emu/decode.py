"""Bytes and records in the kernel's names: what the bytes at an offset are,
page->mapping per user, a violation record as data. Below the checkers and
the reports, which all decode through here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .check.shadow import KSM, PAGETABLE, STATE_NAMES, W_PTL, WRITER_NAMES
from .check.violations import (
    BAD_COUNT,
    BAD_FLAGS,
    BAD_MAPCOUNT,
    BAD_MAPPING,
    V_BAD_PAGE,
    V_CHANGED_WHILE_REF,
    V_DOUBLE_ALLOC,
    V_FALSE_OPEN,
    V_KEY_FORGED,
    V_NODE_FREED_WITH_KEY,
    VIOLATION_NAMES,
)
from .findings import Finding, Kind
from .layout import Layout
from .machine import Machine
from .records import ROLE_NAMES

if TYPE_CHECKING:
    from .mm.boot import World


def mapping_members(m: Machine, mapping: int) -> list[str]:
    """The union members (other than mapping) lying on mapping's bytes, with the
    values those bytes give them: `ptl.magic=0xdead4ead`, ..."""
    cfg, lay = m.cfg, m.page_layout
    raw = mapping.to_bytes(cfg.word_bytes, cfg.byte_order)
    _, _, bits = lay.overlap("mapping")
    out = []
    for b in bits:
        lo, hi = b.member_bytes
        out.append(f"{b.other.path}={int.from_bytes(raw[lo:hi + 1], cfg.byte_order):#x}")
    return out


def decode_mapping(m: Machine, mapping: int, state: int, node: int) -> str:
    """page->mapping as its user (per the shadow) means it."""
    if mapping == 0:
        return ""
    if state == PAGETABLE and m.page_layout.has("ptl"):
        return "ptl: " + " ".join(mapping_members(m, mapping))
    low = mapping & 3
    if low == 3:
        if mapping == 3:
            return "PageKsm, no stable_node"
        key_ok = state == KSM and node == mapping - 3
        return f"stable_node {mapping - 3:#x}" + ("" if key_ok else " (stale key)")
    if low == 1:
        return f"anon_vma {mapping - 1:#x}"
    return f"address_space/driver {mapping:#x}"


_BAD_BITS = ((BAD_MAPCOUNT, "_mapcount"), (BAD_MAPPING, "mapping"), (BAD_COUNT, "_count"), (BAD_FLAGS, "flags"))


def decode_violation(m: Machine, rec: np.void) -> Finding:
    """A violation record as a finding; `m` needs only cfg and page_layout."""
    cfg = m.cfg
    mapping = int(rec["mapping"])
    writer = int(rec["writer"])
    kind = int(rec["kind"])
    detail = int(rec["detail"])
    out = {
        "pfn": int(rec["pfn"]),
        "stable_node": f"{int(rec['node']):#x}" if rec["node"] else None,
        "expected_key": f"{int(rec['expected']):#x}" if rec["expected"] else None,
        "mapping": f"{mapping:#x}",
        # the word's bytes: a record's mapping wider than the word (a corrupt file) shows its low bytes
        "mapping_bytes": (mapping & ((1 << 8 * cfg.word_bytes) - 1)).to_bytes(cfg.word_bytes, cfg.byte_order).hex(" "),
        "written_by": WRITER_NAMES[writer] if writer < len(WRITER_NAMES) else str(writer),
        "union_members": mapping_members(m, mapping) if writer == W_PTL and m.page_layout.has("ptl") else [],
        "role": ROLE_NAMES[int(rec["role"])] if int(rec["role"]) < len(ROLE_NAMES) else str(int(rec["role"])),
        "cpu": int(rec["cpu"]),
    }
    # the record's detail word, named for its kind
    if kind in (V_FALSE_OPEN, V_CHANGED_WHILE_REF, V_DOUBLE_ALLOC, V_KEY_FORGED):
        out["page_really_is"] = STATE_NAMES[detail] if detail < len(STATE_NAMES) else str(detail)
    elif kind == V_BAD_PAGE:
        out["free_pages_check"] = [f"bad {name}" for bit, name in _BAD_BITS if detail & bit]
    elif kind == V_NODE_FREED_WITH_KEY:
        out["page_count"] = detail - (1 << 32) if detail >= 1 << 31 else detail
    return Finding(VIOLATION_NAMES[kind] if kind < len(VIOLATION_NAMES) else Kind.of(str(kind)), out)


def members_on_mapping(m: Machine, v: Finding) -> list[str]:
    """The union members on a violation's mapping bytes: those its ptl writer
    left, else every member that lies there, with the values they read."""
    return list(v["union_members"]) or mapping_members(m, int(v["mapping"], 16))


def describe(world: World, off: int, size: int) -> str:
    """What the bytes at file offset `off` are, in the kernel's names."""
    m, o = world.machine, world.offsets
    for r in m.regions.values():
        if r.offset <= off < r.offset + r.size:
            rel = off - r.offset
            if r.name == "mem_map":
                return f"page {rel // m.page_size}: " + _members(m.page_layout, rel % m.page_size, size)
            if r.name == "stable_nodes":
                lay = Layout(m.kernel.stable_node, m.cfg.byte_order, "stable_node")
                return f"stable_node {rel // o['sn_size']}: " + _members(lay, rel % o["sn_size"], size)
            if r.name == "rmap_items":
                lay = Layout(m.kernel.rmap_item, m.cfg.byte_order, "rmap_item")
                return f"rmap_item of slot {rel // o['ri_size']}: " + _members(lay, rel % o["ri_size"], size)
            if r.name == "ptes":
                return f"pte of slot {rel // o['word']}"
            if r.name == "pgtables":
                return f"pmd of group {rel // o['word']}"
            if r.name == "kmalloc":
                return _kmalloc(world, m.offset_to_addr(off))
            return f"{r.name}+{rel:#x}"
    return f"file offset {off:#x}"


def _members(lay: Layout, rel: int, size: int) -> str:
    try:
        covers = lay.covers(rel, size)
    except ValueError:
        return f"+{rel:#x}"
    return " | ".join(dict.fromkeys(c.label() for c in covers)) or f"+{rel:#x} (padding)"


def _kmalloc(world: World, addr: int) -> str:
    objs = world.objects
    for kind in ("mm_struct", "task", "anon_vma", "address_space", "kmem_cache", "driver"):
        for i, base in enumerate(getattr(objs, kind)):
            if base <= addr < base + 1024 and (kind in ("mm_struct", "task") or addr - base < 64):
                tail = " page_table_lock" if kind == "mm_struct" and addr - base >= 64 else ""
                return f"{kind} {i}+{addr - base:#x}{tail}"
    return f"kmalloc {addr:#x}"
