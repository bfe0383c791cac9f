"""The other ways of choosing: depth-first search with a preemption bound
(CHESS, Musuvathi and Qadeer, PLDI 2007), PCT (Burckhardt, Kothari, Musuvathi,
Nagarakatte, ASPLOS 2010), a random walk, and replaying a recorded schedule."""

from __future__ import annotations

import random

from .dpor import Dpor, Nondeterminism
from .sched import Strategy

STRATEGIES = ("dpor", "dfs", "pct", "random")
SAMPLING = ("pct", "random")  # they draw schedules and never run out; the others are deterministic
MAX_DEPTH = 10  # pct's bug depth
ENDLESS_DEFAULT = 1000  # schedules of pct and random when neither a count nor a time limit is given


def exhaustive(name: str, bound: int | None = None) -> bool:
    """Whether running out of schedules means every interleaving was covered
    (up to equivalence): dpor, and dfs without a preemption bound."""
    return name == "dpor" or (name == "dfs" and bound is None)


class Dfs(Strategy):
    """Every interleaving, depth first; with a bound, at most `bound` preemptions
    (switching away from a CPU that could have gone on)."""

    def __init__(self, bound: int | None = None) -> None:
        self.bound = bound
        self.stack: list[list] = []  # per position: [chosen, alternatives, preemptions before, current, enabled]
        self.b = -1
        self.finished = False

    def begin(self) -> bool:
        return not self.finished

    def _cost(self, q: int, current: int | None, enabled: list[int]) -> int:
        return 1 if current is not None and current in enabled and q != current else 0

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        if i < len(self.stack):
            q = self.stack[i][0]
            if q not in enabled:
                raise Nondeterminism(f"step {i}: CPU #{q} is not enabled on replay (enabled: {enabled})")
            return q
        pre = self._after(i - 1) if i else 0
        q = current if current in enabled else enabled[0]
        alts = [r for r in enabled if r != q
                and (self.bound is None or pre + self._cost(r, current, enabled) <= self.bound)]
        self.stack.append([q, alts, pre, current, enabled])
        return q

    def _after(self, i: int) -> int:
        q, _, pre, current, enabled = self.stack[i]
        return pre + self._cost(q, current, enabled)

    def end(self, steps: int = 0) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][1]:
                self.stack[i][0] = self.stack[i][1].pop(0)
                del self.stack[i + 1:]
                return
        self.finished = True


class Pct(Strategy):
    """Random distinct priorities per CPU; the highest-priority enabled CPU runs;
    at depth-1 random points its priority drops below every initial one (the
    i-th point to priority i). A bug of depth d shows with probability at least
    1/(n k^(d-1)) per execution, k the number of steps the points are drawn from.

    The points are drawn among the racy steps only: those where another CPU
    could run instead and whose access conflicts with one of another CPU's
    (overlapping bytes, one a write; learned over the executions). A change
    anywhere else orders nothing new, so k shrinks to what matters."""

    def __init__(self, nprocs: int, depth: int, seed: int) -> None:
        self.n, self.depth, self.rng = nprocs, depth, random.Random(seed)
        self.k = 0  # racy steps per execution: the most seen so far (0: not yet measured)
        self.readers: dict[int, int] = {}  # byte -> the CPU that read it, or -1 for several
        self.writers: dict[int, int] = {}  # byte -> the CPU that wrote it, or -1 for several

    def begin(self) -> bool:
        d = self.depth
        prios = list(range(d, d + self.n))
        self.rng.shuffle(prios)
        self.prio = prios
        points = self.rng.sample(range(1, max(self.k, d - 1) + 1), d - 1) if d > 1 and self.k else []
        self.change = {step: i + 1 for i, step in enumerate(points)}
        self.racy = 0
        return True

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        q = max(enabled, key=self.prio.__getitem__)
        if len(enabled) > 1 and self._racy(q):
            self.racy += 1
            if self.racy in self.change:
                self.prio[q] = self.change[self.racy]
                q = max(enabled, key=self.prio.__getitem__)
        return q

    def _racy(self, q: int) -> bool:
        _, off, size, write = self.runner.pending[q]
        w, r = self.writers, self.readers
        for b in range(off, off + size):
            if w.get(b, q) != q or (write and r.get(b, q) != q):
                return True
        return False

    def on_step(self, i: int, proc: int, fp: list) -> None:
        for lo, hi, write in fp:
            t = self.writers if write else self.readers
            for b in range(lo, hi):
                if t.setdefault(b, proc) != proc:
                    t[b] = -1

    def end(self, steps: int) -> None:
        self.k = max(self.k, self.racy)


class RandomWalk(Strategy):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        return self.rng.choice(enabled)


class Replay(Strategy):
    """Exactly the given choices; a choice that is not enabled is an error, never skipped."""

    def __init__(self, choices: list[int]) -> None:
        self.choices = choices

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        if i >= len(self.choices):
            raise Nondeterminism(f"the schedule ends after {len(self.choices)} steps, but CPUs "
                                 f"{', '.join(f'#{q}' for q in enabled)} can still run: not this scenario's schedule")
        q = self.choices[i]
        if q not in enabled:
            raise Nondeterminism(f"step {i}: the schedule runs choice {q}, which is not enabled "
                                 f"(enabled: {enabled}): not this scenario's schedule")
        return q


def make(name: str, nprocs: int, *, seed: int = 0, depth: int = 3, bound: int | None = None) -> Strategy:
    if name == "dpor":
        return Dpor(nprocs)
    if name == "dfs":
        return Dfs(bound)
    if name == "pct":
        return Pct(nprocs, depth, seed)
    if name == "random":
        return RandomWalk(seed)
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
