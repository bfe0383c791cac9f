"""Source-DPOR with sleep sets (Abdulla, Aronis, Jonsson, Sagonas, POPL 2014),
over byte ranges.

Two steps are dependent when they are of one CPU, or when their footprints
(the kernel access at the scheduling point and the ghost accesses after it)
share a byte and one of them writes it: a 4-byte store to ptl.owner_cpu and
an 8-byte load of page->mapping are dependent exactly when they overlap, on
every arch and byte order, with no special case for unions.

Stateless: every execution re-runs the scenario from its snapshot; the
exploration stack keeps, per position, the CPU chosen, its step's footprint
and vector clock, the CPUs enabled there, the backtrack set, the CPUs already
explored from there (with their steps' footprints) and the sleep set.

After each new step e (of CPU p): for every earlier step e' that races with e
(dependent, another CPU, ordered before e by nothing but their own
dependency), take v = the steps after e' that do not happen after it, then e;
if none of v's initials (CPUs whose first step in v has no predecessor in v)
is in backtrack(e'), add one (p if it is an initial). Sleep sets carry a CPU
already explored at a position past every step independent of its own.

A replayed prefix step whose footprint differs from the one recorded is
uncontrolled nondeterminism (state outside the mapping): an error, never
skipped.
"""

from __future__ import annotations

from .sched import Nondeterminism, Strategy
from .tso import BUFFER_BASE

SLOTS_BELOW = BUFFER_BASE + 1

__all__ = ["Dpor", "Nondeterminism", "independent"]


class _Pos:
    __slots__ = ("proc", "fp", "vc", "own", "enabled", "backtrack", "done", "sleep")

    def __init__(self, proc: int, enabled: list[int], sleep: dict) -> None:
        self.proc = proc
        self.fp: list | None = None
        self.vc: list[int] = []
        self.own = 0
        self.enabled = enabled
        self.backtrack = {proc}
        self.done: dict[int, list] = {}  # CPUs explored from this state, with their steps' footprints
        self.sleep = sleep  # CPU -> the footprint of its next step, asleep here


def _memory(fp: list) -> list:
    """A footprint without its store-buffer slots (emu.explore.tso: far below every other byte)."""
    return [a for a in fp if a[0] > SLOTS_BELOW]


def _at(vc: list[int], q: int) -> int:
    """A vector clock's entry for q (0 past its end: clocks grow with the choices seen)."""
    return vc[q] if q < len(vc) else 0


def independent(a: list, b: list) -> bool:
    for lo, hi, w in a:
        for lo2, hi2, w2 in b:
            if lo < hi2 and lo2 < hi and (w or w2):
                return False
    return True


class Dpor(Strategy):
    def __init__(self, nprocs: int) -> None:
        self.n = nprocs
        self.stack: list[_Pos] = []
        self.b = 0  # positions below b replay their recorded step; b itself runs a new CPU
        self.finished = False

    # -- an execution -------------------------------------------------------------------
    def begin(self) -> bool:
        self.index: dict[int, list] = {}  # byte -> [last write position, {cpu: last read position since}]
        self.last = [-1] * self.n
        self.next_sleep: dict[int, list] = {}
        return not self.finished

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        if i < len(self.stack):  # the recorded prefix, and the new choice at b
            q = self.stack[i].proc
            if q not in enabled:
                raise Nondeterminism(f"step {i}: CPU #{q} is not enabled on replay (enabled: {enabled})")
            return q
        sleep = self.next_sleep
        cands = [q for q in enabled if q not in sleep]
        if not cands:
            return None  # every enabled CPU asleep: this execution is redundant
        q = current if current in cands else cands[0]
        self.stack.append(_Pos(q, enabled, sleep))
        return q

    def on_step(self, i: int, p: int, fp: list) -> None:
        pos = self.stack[i]
        if i < self.b:
            if fp != pos.fp:
                raise Nondeterminism(f"step {i} of CPU #{p} touched {fp}, before {pos.fp}")
            self._index(fp, p, i)
            self.last[p] = i
            return
        pos.fp = fp
        pos.vc, pos.own = self._races(i, p, fp)
        self._index(fp, p, i)
        self.last[p] = i
        sleep = dict(pos.sleep)
        sleep.update(pos.done)
        self.next_sleep = {q: f for q, f in sleep.items() if q != p and independent(f, fp)}

    def on_blocked(self, i: int, p: int, fp: list) -> None:
        """p cannot run before step i for want of what fp reads (its CPU, held by
        another task): a failed attempt, raced like a step against the writes
        that keep it off, so that DPOR tries p before them. Not a step: nothing
        of it is kept."""
        if i >= self.b:
            self._races(i, p, fp)

    def _races(self, i: int, p: int, fp: list) -> tuple[list[int], int]:
        """The vector clock and own index of p's event at position i with
        footprint fp; each race of it with an earlier step gets its backtrack entry."""
        stack, prev = self.stack, self.last[p]
        if prev >= 0:
            vc = list(stack[prev].vc)
            own = stack[prev].own + 1
        else:
            vc = []  # grown to the highest choice it orders after
            own = 1
        cands = self._conflicts(fp)
        for j in cands:
            other = stack[j].vc
            if len(other) > len(vc):  # clocks grow as store buffers' choices appear (n * (1 + slot) + p)
                vc.extend([0] * (len(other) - len(vc)))
            for q, x in enumerate(other):
                if x > vc[q]:
                    vc[q] = x
        if p >= len(vc):
            vc.extend([0] * (p + 1 - len(vc)))
        vc[p] = own
        roles = self._roles()
        for j in cands:
            pj = stack[j].proc
            if pj == p:
                continue
            if roles and pj % roles == p % roles and independent(_memory(stack[j].fp), _memory(fp)):
                continue  # a store and its own flush, a fence and the flush it waited for: never reversed
            oj = stack[j].own
            if prev >= 0 and _at(stack[prev].vc, pj) >= oj:
                continue
            if any(k != j and _at(stack[k].vc, pj) >= oj for k in cands):
                continue
            self._race(j, i, p, vc)
        return vc, own

    def _roles(self) -> int:
        """With store buffers, the number of roles n: choice c is then a step of CPU
        c % n or of its buffer (tso: c = n + p; lkmm: one per word, emu.explore.lkmm)."""
        buffers = getattr(getattr(self, "runner", None), "buffers", None)
        return 0 if buffers is None else self.runner.n

    def end(self, steps: int = 0) -> None:
        """Pick the next branch: the deepest position with a CPU left in its
        backtrack set that is neither explored there nor asleep."""
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            pos = stack[i]
            if pos.fp is not None:
                pos.done[pos.proc] = pos.fp
            left = sorted(q for q in pos.backtrack if q not in pos.done and q not in pos.sleep)
            if left:
                pos.proc, pos.fp, pos.vc, pos.own = left[0], None, [], 0
                del stack[i + 1:]
                self.b = i
                return
        stack.clear()
        self.finished = True

    # -- the happens-before index over bytes ---------------------------------------------
    def _conflicts(self, fp: list) -> set[int]:
        out: set[int] = set()
        index = self.index
        for lo, hi, w in fp:
            for byte in range(lo, hi):
                e = index.get(byte)
                if e is None:
                    continue
                if e[0] >= 0:
                    out.add(e[0])
                if w:
                    out.update(e[1].values())
        return out

    def _index(self, fp: list, p: int, i: int) -> None:
        index = self.index
        for lo, hi, w in fp:
            for byte in range(lo, hi):
                if w:
                    index[byte] = [i, {}]
                else:
                    e = index.get(byte)
                    if e is None:
                        index[byte] = [-1, {p: i}]
                    else:
                        e[1][p] = i

    def _race(self, j: int, i: int, pi: int, vci: list[int]) -> None:
        """e' (step j) races with e (pi's event at position i, vector clock vci)."""
        stack = self.stack
        pos_j = stack[j]
        pj, oj = pos_j.proc, pos_j.own
        first: dict[int, int] = {}  # CPU -> own index of its first step in v
        initials = set()
        for k in range(j + 1, i + 1):
            if k < i:
                s = stack[k]
                if _at(s.vc, pj) >= oj:
                    continue  # happens after e': not in v
                q, vc, own = s.proc, s.vc, s.own
            else:
                q, vc, own = pi, vci, vci[pi]
            if q in first:
                continue
            if not any(_at(vc, r) >= o for r, o in first.items()):
                initials.add(q)
            first[q] = own
            if len(first) == self.n:
                break
        if initials & pos_j.backtrack:
            return
        q = pi if pi in initials else min(initials)
        if q in pos_j.enabled:
            pos_j.backtrack.add(q)
        else:
            pos_j.backtrack.update(pos_j.enabled)
