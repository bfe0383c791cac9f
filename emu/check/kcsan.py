"""Data races, KCSAN-like, under a controlled schedule: happens-before with
vector clocks (ThreadSanitizer's algorithm) over byte ranges, so a 4-byte
store and an 8-byte load of overlapping bytes are one race.

Accesses are plain, marked or atomic (emu.mm.mem). Happens-before is the
kernel memory model's (LKMM, tools/memory-model), not "every marked access
orders": it comes from releases read by acquires, and nothing else.

  releases   store_release (smp_store_release, spin_unlock), a value-returning
             RMW (a full barrier), and a marked or atomic write after an
             smp_wmb()/smp_mb()/RMW/acquire/ctrl_dep of its CPU, which releases
             what came before that point (a fence-release; after an acquire,
             LKMM's acq-po: what the acquire saw, too)
  acquires   an RMW (spin_lock's, get_page_unless_zero's), and a marked or
             atomic read followed by smp_rmb()/smp_mb()/an RMW of its CPU,
             which acquires at that barrier (a fence-acquire)
  ctrl_dep   where the mm code says it relies on a control dependency
             (`mm.a.ctrl_dep()`), the marked reads before it acquire, as at
             an smp_rmb, and later marked writes release them: stronger than
             LKMM, which orders a control dependency to later writes only,
             and bounds no plain access with one (docs/memory-models.md)
  neither    plain reads; plain writes but those KCSAN_ASSUME_PLAIN_WRITES_ATOMIC
             takes for marked ones (aligned, at most a word); a marked write
             with no ordering point before it; a
             marked read with no barrier after it; an RMW whose barrier
             `--drop-barrier` dropped (op "..._relaxed")

A read acquires from the last write of each byte it reads (per byte: a load
may read different bytes from different writes). Context switches on one
CPU order everything (schedule() is a full barrier), and the page
allocator's free list (zone->lock in the kernel, a ghost here) orders a free
before the allocation that reuses the page.

Where this is stronger than LKMM (it can only hide races, never invent
them): every RMW counts as fully ordered, the failed cmpxchg and the
non-value-returning bit ops (set_bit) too, because the accessor does not
say which is which; under tso a read acquires from the last write *issued*
to its bytes, not the last flushed; ctrl_dep, above. Where it is weaker:
address dependencies order nothing here (LKMM lets one bound a plain access).

Two accesses race when they touch a common byte from different CPUs, at
least one writes, neither happens before the other, and at least one is
plain. As KCSAN_ASSUME_PLAIN_WRITES_ATOMIC (the kernel's default) does, an
aligned plain write of at most a word is taken as atomic against a marked
or atomic read, whatever its size; never against another write.

Every race of an execution is reported, each pair of accesses once. So no
access is forgotten because a later one on the same bytes supersedes it (as
FastTrack does, which finds the first race on each byte, not all): a byte
keeps its accesses until each happens before every other CPU's clock, when
it can race with nothing to come.
"""

from __future__ import annotations

from collections.abc import Callable

from ..findings import Finding, Kind
from ..mm import testbreak
from ..mm.mem import MARKED, PLAIN

PLAIN_K, MARKED_K, ATOMIC_K = 0, 1, 2
KIND_NAMES = ("plain", "marked", "atomic")
RMWS = frozenset(("cas", "xchg", "fetch_add", "fetch_or", "fetch_and", "atomic_inc_not_zero"))
READS = frozenset(("load", "load_once", "atomic_read", *RMWS, *(f"{op}_relaxed" for op in RMWS)))
FENCES = frozenset(("smp_mb", "smp_rmb", "smp_wmb", "ctrl_dep"))


class RaceDetector:
    """One execution's happens-before and the races found in it."""

    PRUNE = 8  # a byte's accesses are pruned when it has this many

    def __init__(self, nprocs: int, word: int, sync_ranges: tuple[tuple[int, int], ...] = ()) -> None:
        self.word = word
        self.vc = [[0] * nprocs for _ in range(nprocs)]
        for i in range(nprocs):
            self.vc[i][i] = 1
        # byte -> its accesses that may still race: (cpu, its epoch, access, write)
        self._live: dict[int, list[tuple[int, int, int, bool]]] = {}
        self._rel: dict[int, tuple[int, ...] | None] = {}  # byte -> clock its last write released
        self._fence_rel: list[tuple[int, ...] | None] = [None] * nprocs  # clock at the CPU's last wmb/mb/RMW
        self._pending: list[list[int] | None] = [None] * nprocs  # what marked reads await an rmb/mb for
        self.accesses: list[tuple] = []  # (proc, op, off, size, step, kind, write)
        self.races: list[tuple[int, int]] = []  # (earlier access, later access)
        self._sync = sync_ranges
        # a deliberately wrong model, for the test that shows the checker's tests can fail
        self._plain_read_acquires = "kcsan-plain-read-acquires" in testbreak.BROKEN
        # ... and the model this checker had before it followed LKMM: every write
        # releases, every marked read acquires
        self._every_access_orders = "kcsan-every-access-orders" in testbreak.BROKEN

    def fence(self, p: int, op: str) -> None:
        """smp_mb/smp_rmb/smp_wmb, or a control dependency (ctrl_dep), on CPU p."""
        c = self.vc[p]
        if op != "smp_wmb":  # rmb, mb, ctrl_dep: the marked reads before it acquire now
            self._join_pending(p, c)
        if op != "smp_rmb":  # what came before it is released by the marked writes after it
            self._fence_rel[p] = tuple(c)
            c[p] += 1

    def _join_pending(self, p: int, c: list[int]) -> None:
        pend = self._pending[p]
        if pend is not None:
            for i, e in enumerate(pend):
                if e > c[i]:
                    c[i] = e
            self._pending[p] = None

    def access(self, p: int, op: str, off: int, size: int, write: bool, step: int) -> None:
        if op in FENCES:
            self.fence(p, op)
            return
        kind = PLAIN_K if op in PLAIN else MARKED_K if op in MARKED else ATOMIC_K
        c, live = self.vc[p], self._live
        a = len(self.accesses)
        self.accesses.append((p, op, off, size, step, kind, write))
        me = (p, c[p], a, write)
        end = off + size
        racing = None
        for b in range(off, end):
            accs = live.get(b)
            if accs is None:
                live[b] = [me]
                continue
            for q, e, x, w in accs:
                if e > c[q] and q != p and (write or w):  # not before this access, and conflicting
                    if racing is None:
                        racing = {x}
                    else:
                        racing.add(x)
            accs.append(me)
            if len(accs) % self.PRUNE == 0:
                self._prune(b, accs)
        if racing:
            for x in sorted(racing):
                self._pair(x, a)
        if self._every_access_orders:
            if kind != PLAIN_K and op in READS:
                self._acquire(c, off, end)
            if write:
                self._rel.update(dict.fromkeys(range(off, end), tuple(c)))
                c[p] += 1
            return
        full = op in RMWS  # value-returning RMW: a full barrier around an atomic access
        if full:
            self._join_pending(p, c)
            self._acquire(c, off, end)
        elif op == "load_acquire":  # and LKMM's acq-po: later writes are ordered after it
            self._acquire(c, off, end)
            self._fence_rel[p] = tuple(c)
            c[p] += 1
        elif op in READS and kind == PLAIN_K and self._plain_read_acquires:
            self._acquire(c, off, end)  # the broken variant's
        elif op in READS and kind != PLAIN_K:  # acquires at its CPU's next rmb/mb/RMW/ctrl_dep, if any
            pend = self._pending[p]
            self._pending[p] = pend = list(c) if pend is None else pend
            self._acquire(pend, off, end)
        if write:
            if full or op == "store_release":  # releases everything before it
                snap = tuple(c)
                if full:
                    self._fence_rel[p] = snap
                c[p] += 1
            else:  # a marked write releases what came before its CPU's last ordering point
                snap = self._fence_rel[p] if kind != PLAIN_K or self._assumed_atomic(off, size) else None
            self._rel.update(dict.fromkeys(range(off, end), snap))

    def _prune(self, b: int, accs: list) -> None:
        """Drop the byte's accesses that happen before every other CPU's clock:
        nothing still to come can race with them."""
        vc, n = self.vc, len(self.vc)
        floor = [min([vc[r][q] for r in range(n) if r != q], default=1 << 62) for q in range(n)]
        kept = [t for t in accs if t[1] > floor[t[0]]]
        if len(kept) < len(accs):
            self._live[b] = kept

    def ghost_rmw(self, p: int, off: int, size: int) -> None:
        """An atomic read-modify-write of emulator state that stands for a lock
        (the free list's head: zone->lock): acquire and release, no race check."""
        for lo, hi in self._sync:
            if lo <= off < hi:
                c = self.vc[p]
                self._acquire(c, off, off + size)
                snap = self._fence_rel[p] = tuple(c)  # a lock's acquire orders later writes after it
                for b in range(off, off + size):
                    self._rel[b] = snap
                c[p] += 1
                return

    def handoff(self, prev: int, nxt: int) -> None:
        """A context switch from task `prev` to `nxt` on one CPU: schedule()
        orders everything before it (the runqueue lock, a full barrier) before
        what the next task does there."""
        c, src = self.vc[nxt], self.vc[prev]
        for i, e in enumerate(src):
            if e > c[i]:
                c[i] = e
        src[prev] += 1

    def _acquire(self, c: list[int], off: int, end: int) -> None:
        rel = self._rel
        for b in range(off, end):
            v = rel.get(b)
            if v:
                for i, e in enumerate(v):
                    if e > c[i]:
                        c[i] = e

    def _pair(self, x: int, y: int) -> None:
        ax, ay = self.accesses[x], self.accesses[y]
        if ax[5] != PLAIN_K and ay[5] != PLAIN_K:
            return
        if self._excused(ax, ay) or self._excused(ay, ax):
            return
        self.races.append((x, y))

    def _assumed_atomic(self, off: int, size: int) -> bool:
        """KCSAN_ASSUME_PLAIN_WRITES_ATOMIC: an aligned plain write of at most a word."""
        return size <= self.word and off % size == 0

    def _excused(self, plain: tuple, other: tuple) -> bool:
        """KCSAN_ASSUME_PLAIN_WRITES_ATOMIC: `plain` an aligned plain write of at
        most a word, `other` a marked or atomic read (and the only other plain
        access, if any, is `plain` itself)."""
        _, _, off, size, _, kind, write = plain
        return (kind == PLAIN_K and write and size <= self.word and off % size == 0
                and other[5] != PLAIN_K and not other[6])

    def reports(self, describe: Callable[[int, int], str], who: Callable[[int], dict],
                function: Callable[[int], str]) -> list[Finding]:
        """The races as findings: both accesses with CPU, role, function, access and bytes."""
        out = []
        for x, y in self.races:
            accs = []
            for i in (x, y):
                p, op, off, size, step, kind, write = self.accesses[i]
                accs.append({**who(p), "step": step, "function": function(step), "access": op,
                             "marking": KIND_NAMES[kind], "offset": off, "size": size,
                             "bytes": describe(off, size)})
            lo = max(accs[0]["offset"], accs[1]["offset"])
            hi = min(accs[0]["offset"] + accs[0]["size"], accs[1]["offset"] + accs[1]["size"])
            out.append(Finding(Kind.DATA_RACE, {
                "accesses": accs, "overlap": describe(lo, hi - lo),
                "detail": f"{accs[0]['marking']} {accs[0]['access']} {accs[0]['size']} by "
                          f"{accs[0]['role']} (step {accs[0]['step']}) and {accs[1]['marking']} "
                          f"{accs[1]['access']} {accs[1]['size']} by {accs[1]['role']} (step "
                          f"{accs[1]['step']}) on {describe(lo, hi - lo)}, unordered"}))
        return out
