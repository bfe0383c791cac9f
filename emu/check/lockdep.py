"""Lock discipline, lockdep-lite: which lock protects which kernel bytes, the
locks each CPU holds, and the order CPUs take lock classes in.

`RULES` is the table. A plain access (emu.mm.mem's `load`/`store`: an
ordinary C access) to bytes a rule covers, by a CPU that does not hold the
lock the rule names, is a "lock not held" finding. Marked and atomic
accesses are never checked: they are how kernel code reads and writes
shared bytes without a lock (a lockless peek, the lock word itself, _count).

Lock order is checked per lock class, as lockdep does: taking class B while
holding class A records A -> B in a matrix shared by every CPU (in the
machine, so the processes of a run share it); B -> A recorded earlier, by any
CPU, is a "lock order" finding (the ABBA deadlock lockdep warns of before it
happens). Two locks of one class nested is one too (the kernel would need
spin_lock_nested).

Findings go to the lockdep region as fixed records, so a role process's
survive it; each CPU reports a given (kind, function, lock class) once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..decode import describe
from ..findings import LOCKDEP_KINDS, Finding, Kind
from ..mm.kfunc import kernel_function
from ..mm.regions import PAGE_TABLE_LOCK_REL, PTRS_PER_GROUP
from ..records import (
    LOCK_CLASS_NAMES,
    LOCKDEP_CAPACITY,
    LOCKDEP_DTYPE,
    LOCKDEP_HEAD,
    LOCKDEP_MAX_HELD,
    ROLE_NAMES,
)

if TYPE_CHECKING:
    from ..mm.boot import World
    from ..mm.context import MM
    from ..mm.mem import KernelAtomics

# lock classes
PTL, MM_PTL, PAGE_LOCK, KSM_MUTEX, SPIN = range(5)
NCLASSES = len(LOCK_CLASS_NAMES)
KSM_MUTEX_OFF = 0  # ksm_thread_mutex has no bytes here: ksmd is its only taker

# finding kinds
LOCK_NOT_HELD, LOCK_ORDER, LOCK_RECURSION = range(3)
FINDING_NAMES = LOCKDEP_KINDS  # a record stores its kind's index here
OPS = ("load", "store")


@dataclass(frozen=True)
class Rule:
    name: str
    cite: str


RULES = [
    Rule("pte", "a pte is read and changed under its page table's lock: pte_offset_map_lock() takes "
                "pte_lockptr(), the split page->ptl or mm->page_table_lock (mm/memory.c)"),
    Rule("page->mapping of a mapped page", "an anon page's mapping changes under PG_locked: "
                "page_add_anon_rmap() and ksm's set_page_stable_node() require the page locked; only a "
                "page no pte maps (new: page_add_new_anon_rmap; or freed) is written without (mm/rmap.c)"),
    Rule("stable_node / rmap_item write", "the stable tree and rmap_item lists are changed by ksmd "
                "under ksm_thread_mutex (mm/ksm.c)"),
    Rule("stable_node / rmap_item read", "read by ksmd under ksm_thread_mutex, or by rmap walkers with "
                "the KSM page locked: try_to_unmap_ksm() walks stable_node->hlist under PG_locked (mm/ksm.c)"),
]
R_PTE, R_MAPPING, R_KSM_WRITE, R_KSM_READ = range(len(RULES))


class Lockdep:
    """One CPU's held locks and its checks (lives in its MM)."""

    def __init__(self, mm: MM) -> None:
        self.mm = mm
        self.held: list[tuple[int, int]] = []  # (class, offset), in acquisition order
        self.ksm_mutex_held = False
        self._reported: set = set()
        self.big = mm.cfg.byte_order == "big"
        o, g, m = mm, mm.geo, mm.m
        self.region = m.region("lockdep").offset
        self._spans = (
            (o.ptes, o.ptes + g.nslots * o.word, self._pte),
            (o.mem_map, o.mem_map + g.nr_pages * o.psize, self._page),
            (o.sn_off, o.sn_off + g.node_capacity * o.sn_size, self._node),
            (o.ri_off, o.ri_off + g.nslots * o.ri_size, self._item),
        )
        self._page_lo, self._page_hi = self._spans[1][:2]
        km = m.region("kmalloc")
        self._kmalloc_lo, self._kmalloc_hi = km.offset, km.offset + km.size
        self._known = [False] * (NCLASSES * NCLASSES)

    # -- the held set -------------------------------------------------------------------
    def acquired(self, cls: int, off: int) -> None:
        for hc, ho in self.held:
            if ho == off and hc == cls:
                self._finding(LOCK_RECURSION, off, 0, 0, cls, off)
            elif hc == cls:
                self._finding(LOCK_RECURSION, off, 0, 0, hc, ho)
            else:
                self._order(hc, ho, cls, off)
        self.held.append((cls, off))
        if cls == KSM_MUTEX:
            self.ksm_mutex_held = True

    def released(self, cls: int, off: int) -> None:
        try:
            self.held.remove((cls, off))
        except ValueError:
            pass  # released a lock it did not take: spin_unlock's own debug checks say so
        if cls == KSM_MUTEX:
            self.ksm_mutex_held = False

    def holds(self, cls: int, off: int) -> bool:
        return (cls, off) in self.held

    def spin_class(self, off: int) -> int:
        """A spinlock's class, by where it lives: in a struct page (the split
        ptlock), in a kmalloc'd mm_struct (page_table_lock), elsewhere a test's own."""
        if self._page_lo <= off < self._page_hi:
            return PTL
        return MM_PTL if self._kmalloc_lo <= off < self._kmalloc_hi else SPIN

    def _order(self, a: int, a_off: int, b: int, b_off: int) -> None:
        h, base = self.mm.h, self.region + LOCKDEP_HEAD
        if not self._known[a * NCLASSES + b]:  # the shared matrix is written once per pair, not per lock taken
            self._known[a * NCLASSES + b] = True
            if not h.load(base + a * NCLASSES + b, 1):
                h.store(base + a * NCLASSES + b, 1, 1)
        if h.load(base + b * NCLASSES + a, 1):
            self._finding(LOCK_ORDER, b_off, 0, 0, a, a_off, want_cls_taken=b)

    # -- the table ---------------------------------------------------------------------------
    def check(self, op: int, off: int, size: int) -> None:
        """A plain access (op 0 load, 1 store): is its lock held?"""
        for lo, hi, rule in self._spans:
            if lo <= off < hi:
                want = rule(off, size, op == 1)
                if want is not None and not self.holds(want[1], want[2]) and \
                        not (want[0] == R_KSM_READ and self._holds_page_lock_for(off)):
                    self._finding(LOCK_NOT_HELD, off, op, size, want[1], want[2], rule=want[0])
                return

    def _host(self, off: int, size: int, signed: bool = False) -> int:
        return self.mm.h.load(off, size, signed, big=self.big)

    def pte_lock_of(self, group: int) -> tuple[int, int]:
        """(class, offset) of pte_lockptr(group), read without a kernel access."""
        mm = self.mm
        if mm.split_ptlocks:
            pt = self._host(mm.pgtables + mm.word * group, mm.word) - 1
            return PTL, mm.page_off(pt) + mm.ptl_rel
        addr = mm.world.objects.mm_struct[group % mm.geo.nmms] + PAGE_TABLE_LOCK_REL
        return MM_PTL, mm.m.addr_to_offset(addr)

    def _pte(self, off: int, size: int, write: bool) -> tuple | None:
        return (R_PTE, *self.pte_lock_of((off - self.mm.ptes) // self.mm.word // PTRS_PER_GROUP))

    def _page(self, off: int, size: int, write: bool) -> tuple | None:
        mm = self.mm
        pfn, rel = divmod(off - mm.mem_map, mm.psize)
        if not write or rel != mm.mapping_rel or size != mm.word:
            return None
        if self._host(mm.page_off(pfn) + mm.mapcount_rel, 4, True) == -1:
            return None  # no pte maps it: new, or on its way to the free list
        return R_MAPPING, PAGE_LOCK, mm.page_off(pfn) + mm.flags_rel

    def _node(self, off: int, size: int, write: bool) -> tuple | None:
        return (R_KSM_WRITE if write else R_KSM_READ), KSM_MUTEX, KSM_MUTEX_OFF

    _item = _node

    def _holds_page_lock_for(self, off: int) -> bool:
        """A reader of a stable_node or rmap_item holding its KSM page's lock."""
        mm = self.mm
        if off >= mm.ri_off:
            head = self._host((off - mm.ri_off) // mm.ri_size * mm.ri_size + mm.ri_off + mm.ri_head, mm.word)
            if not head:
                return False
            node_off = mm.m.addr_to_offset(head)
        else:
            node_off = mm.sn_off + (off - mm.sn_off) // mm.sn_size * mm.sn_size
        kpfn = self._host(node_off + mm.sn_kpfn, mm.word)
        return kpfn < mm.geo.nr_pages and self.holds(PAGE_LOCK, mm.page_off(kpfn) + mm.flags_rel)

    # -- findings -------------------------------------------------------------------------------
    def _finding(self, kind: int, off: int, op: int, size: int, want_cls: int, want_off: int,
                 rule: int = 0, want_cls_taken: int | None = None) -> None:

        function = kernel_function(3)
        key = (kind, function, want_cls, rule)
        if key in self._reported:
            return
        self._reported.add(key)
        mm = self.mm
        i = mm.h.fetch_add(self.region, 8, 1)
        mm.count("lockdep_findings")
        if i >= LOCKDEP_CAPACITY:
            return  # counted, not kept
        r = np.zeros((), LOCKDEP_DTYPE)
        r["kind"], r["op"], r["size"], r["role"], r["cpu"] = kind, op, size, mm.role_code, mm.cpu
        r["off"], r["want_cls"], r["want_off"], r["rule"] = off, want_cls, want_off, rule
        if want_cls_taken is not None:  # lock order: `off` is the lock of class want_cls_taken
            r["taken_cls"] = want_cls_taken
        held = self.held[-LOCKDEP_MAX_HELD:]
        r["nheld"] = len(held)
        for j, (c, o) in enumerate(held):
            r["held_cls"][j], r["held_off"][j] = c, o
        r["t_ns"], r["function"] = mm.clock.now_ns(), function.encode()[:56]
        at = records_offset(self.region) + i * LOCKDEP_DTYPE.itemsize
        mm.m.mm[at:at + LOCKDEP_DTYPE.itemsize] = r.tobytes()


def records_offset(base: int) -> int:
    """Where the records start in a lockdep region at `base` (8-aligned)."""
    at = base + LOCKDEP_HEAD + NCLASSES * NCLASSES
    return at + (-at) % 8


def records(world: World) -> tuple[np.ndarray, int]:
    """The findings kept, and how many were found in all."""
    m = world.machine
    if "lockdep" not in m.regions:
        return np.zeros(0, LOCKDEP_DTYPE), 0
    base = m.region("lockdep").offset
    n = world.host_mem.load(base, 8)
    rec = np.frombuffer(m.mm, LOCKDEP_DTYPE, min(n, LOCKDEP_CAPACITY), records_offset(base)).copy()
    return rec, n


class LockdepMem:
    """The kernel accessor of a CPU whose plain accesses lockdep checks; marked
    and atomic accesses are the wrapped accessor's own methods. A plain access
    outside the table's bytes costs two comparisons (loads: the ptes and
    ksm's structs; stores: those and mem_map)."""

    def __init__(self, real: KernelAtomics, lockdep: Lockdep) -> None:
        from ..mm.mem import ACCESSES

        self._r, self._check = real, lockdep.check
        for name in ACCESSES:
            if name not in OPS:
                setattr(self, name, getattr(real, name))
        o, g = lockdep.mm, lockdep.mm.geo
        self._ld = lockdep
        self._pte = (o.ptes, o.ptes + g.nslots * o.word)
        self._ksm = (min(o.sn_off, o.ri_off), max(o.sn_off + g.node_capacity * o.sn_size,
                                                  o.ri_off + g.nslots * o.ri_size))
        self._page = (o.mem_map, o.mem_map + g.nr_pages * o.psize, o.psize, o.mapping_rel)

    def _covered(self, off: int, write: bool) -> bool:
        """Whether some rule may apply: ptes; ksm's structs unless ksmd holds its
        mutex (every rule there is then met); mapping stores."""
        lo, hi = self._pte
        if lo <= off < hi:
            return True
        lo, hi = self._ksm
        if lo <= off < hi:
            return not self._ld.ksm_mutex_held
        if write:
            lo, hi, psize, rel = self._page
            return lo <= off < hi and (off - lo) % psize == rel
        return False

    def load(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        pte, ksm = self._pte, self._ksm  # _covered, inlined: this is every plain load's path
        if pte[0] <= off < pte[1] or (ksm[0] <= off < ksm[1] and not self._ld.ksm_mutex_held):
            self._check(0, off, size)
        return self._r.load(off, size, signed, **kw)

    def store(self, off: int, size: int, value: int, **kw: object) -> None:
        if self._covered(off, True):
            self._check(1, off, size)
        self._r.store(off, size, value, **kw)

    def __getattr__(self, name: str) -> object:  # release(), byte_order, ...
        return getattr(self._r, name)


def lock_name(world: World, cls: int, off: int) -> str:
    """A lock as the kernel would name it: `page->ptl of pfn 7`, ..."""

    if cls == KSM_MUTEX:
        return "ksm_thread_mutex"
    if cls in (PTL, PAGE_LOCK):
        m = world.machine
        pfn = (off - world.offsets["mem_map"]) // m.page_size
        return f"{LOCK_CLASS_NAMES[cls]} of pfn {pfn}"
    return f"{LOCK_CLASS_NAMES[cls]} ({describe(world, off, 1)})"


def decode(world: World, r: np.void) -> Finding:
    """A finding record as the report shows it."""

    kind = int(r["kind"])
    held = [lock_name(world, int(r["held_cls"][j]), int(r["held_off"][j])) for j in range(int(r["nheld"]))]
    out = {"cpu": int(r["cpu"]), "role": ROLE_NAMES[int(r["role"])] if r["role"] < len(ROLE_NAMES) else "?",
           "function": r["function"].decode(errors="replace"), "held": held}
    if kind == LOCK_NOT_HELD:
        out.update(access=f"{OPS[int(r['op'])]} {int(r['size'])}", bytes=describe(world, int(r["off"]),
                                                                                    int(r["size"])),
                   address=f"{world.machine.offset_to_addr(int(r['off'])):#x}",
                   expected=lock_name(world, int(r["want_cls"]), int(r["want_off"])),
                   rule=RULES[int(r["rule"])].cite)
    elif kind == LOCK_ORDER:
        out.update(taking=lock_name(world, int(r["taken_cls"]), int(r["off"])),
                   after=lock_name(world, int(r["want_cls"]), int(r["want_off"])),
                   detail=f"{LOCK_CLASS_NAMES[int(r['taken_cls'])]} taken while holding {LOCK_CLASS_NAMES[int(r['want_cls'])]}, "
                          f"and elsewhere {LOCK_CLASS_NAMES[int(r['want_cls'])]} while holding "
                          f"{LOCK_CLASS_NAMES[int(r['taken_cls'])]}: possible ABBA deadlock")
    else:
        out.update(taking=lock_name(world, int(r["want_cls"]), int(r["off"])),
                   detail="a second lock of one class taken without spin_lock_nested")
    return Finding(FINDING_NAMES[kind] if kind < len(FINDING_NAMES) else Kind.of(str(kind)), out)


def findings(world: World, rec: np.ndarray | None = None, n: int = 0) -> tuple[list[Finding], int]:
    """Decoded findings (of the world's mapping, or of records read elsewhere) and the total."""
    if rec is None:
        rec, n = records(world)
    return [decode(world, r) for r in rec], n
