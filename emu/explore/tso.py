"""Total store order under a controlled schedule: x86-TSO's store buffers
(Owens, Sarkar, Sewell, TPHOLs 2009), per byte so that mixed sizes stay exact.

Each CPU's stores go into its FIFO store buffer instead of memory; the CPU
reads its own buffered bytes first (store forwarding, byte by byte: a load
may take some bytes from its buffer and the rest from memory); a locked
read-modify-write or smp_mb() waits until the buffer has drained. Flushing
the oldest entry of a CPU's buffer is a scheduling choice of its own, so the
strategies interleave flushes with every CPU's steps: the explorer sees store
buffering (SB's r0 = r1 = 0) and nothing weaker.

For DPOR each buffered store has a virtual byte of its own (`slot`: CPU p's
k-th store of the execution), which the store and its flush write and a
fence of p after it reads: the store enables its flush, the last flush
enables the fence, and a store and the flush of an older entry commute.
Every step's footprint is fixed by its own CPU's history, as sleep sets need
(a footprint that changed with the buffer's length, say "the flush that
empties it", would let an independent step change a sleeping flush). A
forwarded load and the flush of what it forwards conflict through the
memory bytes. A fence waits for the flushes rather
than doing them itself: a step that flushed on the fence's behalf would
disable the buffer's own next flush, and DPOR only reverses races between
steps that both ran."""

from __future__ import annotations

import sys
from collections import deque
from typing import TYPE_CHECKING

from .access import SchedMem

if TYPE_CHECKING:
    from .sched import Runner

MODELS = ("sc", "tso", "lkmm")
# The orderings the keyhole path relies on that TSO keeps only by a barrier: a
# name, where it is, and what it orders. Dropping one (`--drop-barrier`) runs
# that site without it; the kernel functions named are the sites.
BARRIERS = {
    "zone_lock": ("free_hot_cold_page", "the page reaches another CPU only through zone->lock: "
                  "page->mapping = NULL is in memory before anyone can allocate the page"),
    "get_page_unless_zero": ("get_page_unless_zero", "atomic_inc_not_zero is a full barrier: "
                             "get_ksm_page's second page->mapping read comes after it"),
    "page_freeze_refs": ("page_freeze_refs", "reclaim's cmpxchg of _count to 0 is a full barrier: "
                         "the page's earlier stores are in memory when the count says free"),
    "spin_unlock": ("spin_unlock", "spin_unlock is a release: the critical section's stores are in memory "
                    "before the lock is seen free (tso keeps that order by itself)"),
}
# the barriers each model can drop: tso keeps a release's order by itself
DROPPABLE = {"tso": ("zone_lock", "get_page_unless_zero", "page_freeze_refs"), "lkmm": tuple(BARRIERS)}
# read-modify-writes x86 does without the lock prefix (2.6.33's __ticket_spin_unlock:
# UNLOCK_LOCK_PREFIX is empty but for PPro errata): a load and an ordinary, buffered store
UNLOCKED_RMW = frozenset(("spin_unlock",))
# orderings the kernel code puts no barrier on: TSO keeps them (stores stay in order), lkmm does not
UNORDERED = {
    "set_page_refcounted": "the allocator's _count = 1 and its page->mapping store: no barrier between them",
}


# the model each port's hardware is closest to, as Linux runs it (memory-barriers.txt,
# the arch barrier headers): x86, s390 and sparc64 (in TSO mode) order all but
# store->load; ppc, arm and mips order next to nothing without barriers
PORTS = {"i386": "tso", "x86_64": "tso", "s390x": "tso", "sparc64": "tso",
         "arm": "lkmm", "ppc32": "lkmm", "ppc64": "lkmm", "mips64": "lkmm"}


def for_arch(text: str, arch: object) -> str:
    """"arch" (or "arch/-zone_lock") as the model of that arch's port (an Arch or its name)."""
    if not isinstance(text, str):
        raise TypeError(f"memory model must be a string such as \"tso\", not {text!r}")
    base, sep, rest = text.partition("/")
    return PORTS[getattr(arch, "name", arch)] + sep + rest if base == "arch" else text


def parse_model(text: str, allow_arch: bool = False) -> tuple[str, frozenset[str]]:
    """"tso" or "tso/-zone_lock/-get_page_unless_zero": the model and the barriers
    dropped. With `allow_arch`, "arch" too (resolved per config by for_arch,
    which checks its drops against the model it becomes)."""
    if not isinstance(text, str):
        raise TypeError(f"memory model must be a string such as \"tso\", not {text!r}")
    base, *drops = text.split("/")
    known = (*MODELS, "arch") if allow_arch else MODELS
    if base not in known:
        raise ValueError(f"unknown memory model {base!r}; choose from {', '.join(known)}")
    names = set()
    for d in drops:
        name = d[1:] if d.startswith("-") else None
        if name not in BARRIERS:
            raise ValueError(f"unknown barrier {d!r} in memory model {text!r}; the barriers: "
                             f"{', '.join('-' + b for b in BARRIERS)}")
        names.add(name)
    if base == "arch":
        return base, frozenset(names)
    if names and base == "sc":
        raise ValueError(f"{text!r}: barriers are dropped under tso or lkmm; sc orders everything anyway")
    kept = sorted(names - set(DROPPABLE.get(base, ())))
    if kept:
        raise ValueError(f"{text!r}: {base} keeps {kept[0]}'s order without the barrier; "
                         f"the barriers {base} can drop: {', '.join(DROPPABLE[base])}")
    return base, frozenset(names)


def check_cpus(base: str, cpus: dict[str, int]) -> None:
    """Under tso and lkmm each role has a CPU of its own: the store buffers are
    per role, so two tasks on one CPU would not see each other's buffered stores
    (and would show what one CPU cannot, SB's r0 = r1 = 0)."""
    if base == "sc":
        return
    for c in sorted(set(cpus.values())):
        names = [r for r, x in cpus.items() if x == c]
        if len(names) > 1:
            raise ValueError(f"under {base} each role needs a CPU of its own (store buffers are per role): "
                             f"{' and '.join(names)} share CPU {c}")


def model_name(base: str, dropped: frozenset[str] | set[str] | tuple = ()) -> str:
    return "/".join([base, *(f"-{b}" for b in sorted(dropped))])
BUFFER_BASE = -(1 << 20)  # below the CPUs' virtual bytes (-1 - cpu), which are above -2**20
STORES = frozenset(("store", "store_once", "store_release", "atomic_set"))
# a CPU runs these only with its store buffer empty: x86's lock prefix, mfence
FENCED = frozenset(("cas", "xchg", "fetch_add", "fetch_or", "fetch_and", "atomic_inc_not_zero", "smp_mb"))


class StoreBuffers:
    """Every CPU's FIFO of (off, size, value) not yet in memory."""

    def __init__(self, runner: Runner, byte_order: str, dropped: frozenset[str] = frozenset()) -> None:
        self.run, self.order = runner, byte_order
        self.q: list[deque] = [deque() for _ in range(runner.n)]
        self.stored = [0] * runner.n  # stores each CPU has put in its buffer this execution
        self.flushed = [0] * runner.n  # ... and of those, how many have reached memory
        self.dropped = frozenset(BARRIERS[b][0] for b in dropped)  # the kernel functions that lose theirs

    def reset(self) -> None:
        for q in self.q:
            q.clear()
        self.stored = [0] * self.run.n
        self.flushed = [0] * self.run.n

    def slot(self, p: int, k: int) -> int:
        """The virtual byte of CPU p's k-th store (1-based) while it is buffered."""
        return BUFFER_BASE - (p << 24) - k

    def next_slot(self, p: int) -> int:
        """The byte the store p is about to make writes."""
        return self.slot(p, self.stored[p] + 1)

    def nonempty(self, p: int) -> bool:
        return bool(self.q[p])

    def fence_reads(self, p: int) -> list[int]:
        """The byte of p's latest store, which a fence of p waits to see flushed (FIFO: all are)."""
        return [self.slot(p, self.stored[p])] if self.stored[p] else []

    def wmb(self, p: int) -> None:
        """TSO keeps stores in order anyway."""

    def flushable(self) -> list[tuple[int, int, int]]:
        """(choice, off, size): choice n + p flushes the oldest store of p's buffer."""
        n = self.run.n
        return [(n + p, q[0][0], q[0][1]) for p, q in enumerate(self.q) if q]

    def peek(self, choice: int) -> tuple[int, int]:
        off, size, _ = self.q[choice - self.run.n][0]
        return off, size

    def flush(self, choice: int) -> list:
        return self.flush_one(choice - self.run.n)

    @staticmethod
    def fitted(value: int, size: int) -> int:
        """The bytes a store of `value` writes: as the accessor refuses a value too wide, not cut to fit."""
        if not -(1 << 8 * size - 1) <= value < 1 << 8 * size:
            raise OverflowError(f"{value} does not fit a {size}-byte field")
        return value & ((1 << 8 * size) - 1)

    def put(self, p: int, off: int, size: int, value: int, release: bool = False) -> None:
        self.q[p].append((off, size, self.fitted(value, size)))
        self.stored[p] += 1

    def flush_one(self, p: int) -> list:
        """Write the oldest entry to memory: the flush step's footprint."""
        off, size, value = self.q[p].popleft()
        self.run.kmem.store(off, size, value)
        self.flushed[p] += 1
        b = self.slot(p, self.flushed[p])
        return [(off, off + size, True), (b, b + 1, True)]

    def load(self, p: int, off: int, size: int, signed: bool) -> int:
        q = self.q[p]
        hits = [e for e in q if e[0] < off + size and off < e[0] + e[1]]
        if not hits:
            return self.run.kmem.load(off, size, signed)
        raw = bytearray(self.run.world.machine.mm[off:off + size])
        for o, s, v, *_ in hits:  # oldest first: the newest store to a byte wins
            lo, hi = max(o, off), min(o + s, off + size)
            raw[lo - off:hi - off] = v.to_bytes(s, self.order)[lo - o:hi - o]
        return int.from_bytes(raw, self.order, signed=signed)


class TsoMem(SchedMem):
    """A CPU's kernel accessor under TSO: stores buffered, loads forwarded,
    locked RMWs and smp_mb() drain first."""

    __slots__ = ("_sb",)

    def __init__(self, real: object, runner: Runner, proc: int) -> None:
        super().__init__(real, runner, proc)
        self._sb = runner.buffers

    def load(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load", off, size, False)
        v = self._sb.load(self._p, off, size, signed)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def load_once(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load_once", off, size, False)
        v = self._sb.load(self._p, off, size, signed)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def load_acquire(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load_acquire", off, size, False)  # TSO: every load is an acquire
        v = self._sb.load(self._p, off, size, signed)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def atomic_read(self, off: int) -> int:
        self._pt(self._p, "atomic_read", off, 4, False)
        v = self._sb.load(self._p, off, 4, True)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def store(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store", off, size, True)
        self._sb.put(self._p, off, size, value)
        if self._ok is not None:
            self._ok(self._p)

    def store_once(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store_once", off, size, True)
        self._sb.put(self._p, off, size, value)
        if self._ok is not None:
            self._ok(self._p)

    def store_release(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store_release", off, size, True)  # TSO: every store is a release
        sb = self._sb
        sb.put(self._p, off, size, value, release=not (
            "spin_unlock" in sb.dropped and "spin_unlock" in (sys._getframe(1).f_code.co_name,
                                                              sys._getframe(2).f_code.co_name)))
        if self._ok is not None:
            self._ok(self._p)

    def atomic_set(self, off: int, value: int) -> None:
        self._pt(self._p, "atomic_set", off, 4, True)
        self._sb.put(self._p, off, 4, value)
        if self._ok is not None:
            self._ok(self._p)

    def _locked(self, op: str, off: int, size: int) -> None:
        sb = self._sb
        if sb.dropped and sys._getframe(2).f_code.co_name in sb.dropped \
                and not any(o < off + size and off < o + s for o, s, *_ in sb.q[self._p]):
            op += "_relaxed"  # its barrier dropped: older stores of this CPU may stay buffered
        self._pt(self._p, op, off, size, True)  # FENCED: runs once the buffer is empty

    def cas(self, off: int, size: int, expected: int, desired: int, signed: bool = False, **kw: object) -> int:
        self._locked("cas", off, size)
        v = self._r.cas(off, size, expected, desired, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def xchg(self, off: int, size: int, value: int, signed: bool = False, **kw: object) -> int:
        self._locked("xchg", off, size)
        v = self._r.xchg(off, size, value, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def fetch_add(self, off: int, size: int, delta: int, signed: bool = False, **kw: object) -> int:
        if sys._getframe(1).f_code.co_name in UNLOCKED_RMW:  # x86's unlock: incb without a lock prefix
            old = self.load_once(off, size, signed)  # asm: marked; only the owner writes it, so a load,
            self.store_release(off, size, old + delta)  # then a buffered store: spin_unlock's release
            return old
        self._locked("fetch_add", off, size)
        v = self._r.fetch_add(off, size, delta, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def fetch_or(self, off: int, size: int, mask: int, signed: bool = False, **kw: object) -> int:
        self._locked("fetch_or", off, size)
        v = self._r.fetch_or(off, size, mask, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def fetch_and(self, off: int, size: int, mask: int, signed: bool = False, **kw: object) -> int:
        self._locked("fetch_and", off, size)
        v = self._r.fetch_and(off, size, mask, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def atomic_inc_not_zero(self, off: int) -> bool:
        self._locked("atomic_inc_not_zero", off, 4)
        v = self._r.atomic_inc_not_zero(off)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def smp_wmb(self) -> None:
        self._sb.wmb(self._p)
        self._fence(self._p, "smp_wmb")

    def smp_mb(self, site: str | None = None) -> None:
        if site is not None and site in self._sb.dropped:
            return
        self._pt(self._p, "smp_mb", 0, 0, False)
        if self._ok is not None:
            self._ok(self._p)
