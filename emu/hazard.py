"""Can a page table's spinlock put a stable_node's key into page->mapping?

The keyhole trusts a page whose mapping equals node address + 3. A page-table
page's ptl shares bytes with mapping; this enumerates every value those bytes
can hold: each lock state (free; held by each CPU; the debug fields half
written on the way in and out), break_lock 0 or 1, with bytes the lock never
writes left as the clean free left them (0, as free_pages_check demands).
Fields whose values are not enumerable (ticket counters, the owner task
pointer, lockdep pointers) are wildcards.

A value can be a key when its low two bits are 3 and value - 3 is a possible
stable_node address: aligned like struct stable_node and inside the direct
map [PAGE_OFFSET, PAGE_OFFSET + max_mem).
"""

from __future__ import annotations

from dataclasses import dataclass

from .kconfig import Config
from .layout import Layout
from .lockword import SPINLOCK_MAGIC, LockModel, lock_model
from .structs import kernel_for

WILD = None  # a byte whose value cannot be enumerated
ALIGNED = "aligned"  # the low byte of a slab pointer (a task_struct): low bits 0
PTR = "pointer"  # a field holding some task_struct address
DEFAULT_MAX_MEM = {4: 896 << 20, 8: 1 << 40}  # lowmem on 32-bit; 1 TiB on 64-bit


@dataclass(frozen=True)
class Candidate:
    state: str
    value: int
    node: int
    in_direct_map: bool


@dataclass
class Verdict:
    config: Config
    members: list[str]  # ptl fields lying on mapping
    verdict: str  # "no ptl", "safe", "safe here", "HAZARD", "cannot rule out"
    reason: str
    candidates: list[Candidate]
    wildcards: list[str]
    states: int
    direct_map: tuple[int, int]

    def as_dict(self) -> dict:
        return {"config": self.config.as_dict(), "verdict": self.verdict, "reason": self.reason,
                "members_on_mapping": self.members, "states_examined": self.states,
                "direct_map": [f"{self.direct_map[0]:#x}", f"{self.direct_map[1]:#x}"],
                "key_values": [{"state": c.state, "mapping": f"{c.value:#x}", "stable_node": f"{c.node:#x}",
                                "in_direct_map": c.in_direct_map} for c in self.candidates],
                "wildcards": self.wildcards}


def _states(cfg: Config, lm: LockModel) -> list[tuple[str, dict]]:
    """(name, {field offset rel ptl: (size, value or WILD)}) for every reachable lock state."""
    word = cfg.word_bytes
    ones = (1 << 8 * word) - 1
    kind = lm.kind

    def lock_val(cpu: int | None) -> int | None:
        if kind == "ticket":
            return WILD
        return lm.free_val if cpu is None else lm.held_value(cpu)

    debug = lm.debug
    base_states: list[tuple[str, int | None, int | None, int | None]] = [("free", None, 0xFFFFFFFF, ones)]
    for c in range(cfg.nr_cpus):
        # debug_spin_lock_after sets owner_cpu, then owner; debug_spin_unlock
        # clears owner, then owner_cpu: each half-written state occurs both ways
        if not debug:
            base_states.append((f"held by CPU {c}", c, 0xFFFFFFFF, ones))
            continue
        base_states.append((f"held by CPU {c}, owner_cpu and owner not yet set (or already cleared)",
                            c, 0xFFFFFFFF, ones))
        base_states.append((f"held by CPU {c}, owner_cpu set, owner not yet (or already cleared)", c, c, ones))
        base_states.append((f"held by CPU {c}, owner_cpu and owner set (fully held)", c, c, PTR))
    out = []
    seen = set()
    breaks = (0, 1) if lm.break_rel >= 0 else (None,)
    for name, cpu, owner_cpu, owner in base_states:
        for brk in breaks:
            fields: dict[int, tuple[int, int | None]] = {}
            if kind != "none":
                fields[lm.lock_rel] = (lm.lock_size, lock_val(cpu))
            if brk is not None:
                fields[lm.break_rel] = (4, brk)
            if debug:
                fields[lm.magic_rel] = (4, SPINLOCK_MAGIC)
                fields[lm.owner_cpu_rel] = (4, owner_cpu)
                fields[lm.owner_rel] = (word, owner)
            key = tuple(sorted(fields.items()))
            if key in seen:
                continue
            seen.add(key)
            out.append((name + (f", break_lock {brk}" if brk is not None else ""), fields))
    return out


def _mapping_bytes(cfg: Config, fields: dict, rel: int, wild_ranges: list[tuple[int, int]]) -> list:
    """Bytes of mapping (in memory order) given the lock fields; rel = mapping - ptl."""
    order = cfg.byte_order
    mem: dict[int, int | None] = {}
    for start, end in wild_ranges:
        for b in range(start, end):
            mem[b] = WILD
    for off, (size, value) in fields.items():
        if value is PTR:
            raw = [WILD] * size
            raw[0 if order == "little" else size - 1] = ALIGNED
        else:
            raw = [WILD] * size if value is WILD else list(value.to_bytes(size, order))
        for i, b in enumerate(raw):
            mem[off + i] = b
    return [mem.get(rel + i, 0) for i in range(cfg.word_bytes)]


class DirectMapError(ValueError):
    """The direct map asked for does not fit the address space."""


def analyse(cfg: Config, max_mem: int | None = None) -> Verdict:
    k = kernel_for(cfg)
    page = Layout(k.page, cfg.byte_order, "page")
    lo = cfg.page_offset
    hi = lo + (max_mem if max_mem is not None else DEFAULT_MAX_MEM[cfg.word_bytes])
    if hi > 1 << cfg.arch.word_bits:
        raise DirectMapError(f"the direct map [{lo:#x}, {hi:#x}) runs past the {cfg.arch.word_bits}-bit "
                             f"address space of {cfg.arch.name}; lower --max-mem or --page-offset")
    if not page.has("ptl"):
        return Verdict(cfg, [], "no ptl", "USE_SPLIT_PTLOCKS is off: page tables use mm->page_table_lock",
                       [], [], 0, (lo, hi))
    _, _, bits = page.overlap("mapping")
    members = [b.other.path for b in bits if not b.other.path.endswith("__padding")]
    lm = lock_model(cfg, page, "ptl.")
    ptl = page.offset("ptl")
    rel = page.offset("mapping") - ptl
    pre = "ptl.rlock." if cfg.kernel == "2.6.33" else "ptl."
    wild_ranges = []
    if page.has(pre + "dep_map"):
        d = page.field(pre + "dep_map")
        wild_ranges.append((d.offset - ptl, d.end - ptl))
    states = _states(cfg, lm)
    word = cfg.word_bytes
    align = k.stable_node.align
    sig = list(range(word)) if cfg.byte_order == "little" else list(range(word - 1, -1, -1))
    low_index = sig[0]  # memory index of the least significant byte
    candidates: list[Candidate] = []
    wildcards: set[str] = set()
    for name, fields in states:
        raw = _mapping_bytes(cfg, fields, rel, wild_ranges)
        if raw[low_index] is ALIGNED:
            continue  # an aligned pointer's low bits are 0: never a key
        if raw[low_index] is WILD:
            wildcards.add(name)
            continue
        if raw[low_index] & 3 != 3:
            continue
        if any(not isinstance(b, int) for b in raw):
            wildcards.add(name)
            continue
        value = int.from_bytes(bytes(raw), cfg.byte_order)
        node = value - 3
        if node % align:
            continue
        candidates.append(Candidate(name, value, node, lo <= node < hi))
    inside = [c for c in candidates if c.in_direct_map]
    if inside:
        verdict = "HAZARD"
        reason = (f"{inside[0].state}: mapping {inside[0].value:#x} is the key of a stable_node at "
                  f"{inside[0].node:#x}, inside the direct map" + (f" (+{len(inside) - 1} more)" if len(inside) > 1 else ""))
    elif wildcards:
        verdict = "cannot rule out"
        reason = f"mapping's low bits come from values not enumerated here ({sorted(wildcards)[0]}, ...)"
    elif candidates:
        verdict = "safe here"
        reason = (f"{len(candidates)} lock states give key-like values (e.g. {candidates[0].value:#x} when "
                  f"{candidates[0].state}), but the stable_nodes they name lie outside the direct map "
                  f"[{lo:#x}, {hi:#x}); a layout placing nodes there would open the keyhole")
    elif members:
        verdict = "safe"
        reason = f"no lock state puts low bits 3 into mapping ({', '.join(members)} lie on it)"
    else:
        verdict = "safe"
        reason = "no spinlock field lies on mapping"
    return Verdict(cfg, members, verdict, reason, candidates, sorted(wildcards), len(states), (lo, hi))
