"""Data races, KCSAN-like, under a controlled schedule: happens-before with
vector clocks (ThreadSanitizer's algorithm) over byte ranges, so a 4-byte
store and an 8-byte load of overlapping bytes are one race.

Accesses are plain, marked or atomic (emu.mm.mem). Happens-before comes from
atomics: every atomic access to a byte acquires what the last write of that
byte released (a lock's release -> its next acquire, an atomic RMW chain),
and every write releases its CPU's clock into the bytes it writes. A marked
or atomic read also acquires from the write it reads (what the kernel's
READ_ONCE plus dependency ordering gives the reader of a published value);
a plain read acquires nothing. The page allocator's free list (zone->lock in
the kernel, a ghost here) orders a free before the allocation that reuses
the page.

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
READS = frozenset(("load", "load_once", "atomic_read", "cas", "xchg", "fetch_add", "fetch_or", "fetch_and",
                   "atomic_inc_not_zero"))


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
        self._rel: dict[int, tuple[int, ...]] = {}  # byte -> clock its last write released
        self.accesses: list[tuple] = []  # (proc, op, off, size, step, kind, write)
        self.races: list[tuple[int, int]] = []  # (earlier access, later access)
        self._sync = sync_ranges
        # a deliberately wrong model, for the test that shows the checker's tests can fail
        self._plain_read_acquires = "kcsan-plain-read-acquires" in testbreak.BROKEN

    def access(self, p: int, op: str, off: int, size: int, write: bool, step: int) -> None:
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
        if (kind != PLAIN_K or self._plain_read_acquires) and op in READS:
            self._acquire(c, off, end)  # what the bytes' last write released
        if write:  # release this CPU's clock into the bytes
            self._rel.update(dict.fromkeys(range(off, end), tuple(c)))
            c[p] += 1

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
                snap = tuple(c)
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
            if v is not None:
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
