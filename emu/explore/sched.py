"""One execution of a scenario under a controlled schedule.

Each CPU's role script runs in a greenlet of this one process (a switch costs
about a microsecond; an OS-process handoff would cost tens, and the state
space wants hundreds of thousands of steps a second). Every access to the
emulated kernel bytes goes through the CPU's `SchedMem`, which first calls
`Runner.point`: there the step that CPU was running ends and the strategy
chooses which CPU runs the next one. Only one greenlet runs at a time, and a
switch happens only when the strategy picks another CPU.

A step is one kernel access (the one at the scheduling point) plus what the
CPU does until its next access: Python-local work and ghost accesses (the
shadow, the free list), which are recorded into the step's footprint, so the
dependency relation sees them, but never preempted. A CPU's first step starts
its script. A CPU waiting for a lock word (`MM.spin_wait`) is not enabled
until the bytes say it may proceed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from greenlet import getcurrent, greenlet

from ..check.kcsan import RaceDetector
from ..mm.context import kernel_function

START = ("start", 0, 0, False)


class Nondeterminism(RuntimeError):
    """A replayed step did something else than before: state outside the mapping
    (a module global, an unseeded random, the time) decides what the code does."""


class Abort(BaseException):
    """Unwinds the greenlet of a CPU whose execution is being abandoned."""


class SchedMem:
    """A CPU's kernel accessor under the scheduler: each access is a scheduling point."""

    __slots__ = ("_r", "_pt", "_p")

    def __init__(self, real: object, runner: Runner, proc: int) -> None:
        self._r, self._pt, self._p = real, runner.point, proc

    def load(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load", off, size, False)
        return self._r.load(off, size, signed, **kw)

    def load_once(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load_once", off, size, False)
        return self._r.load(off, size, signed, **kw)

    def store(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store", off, size, True)
        self._r.store(off, size, value, **kw)

    def store_once(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store_once", off, size, True)
        self._r.store(off, size, value, **kw)

    def atomic_read(self, off: int) -> int:
        self._pt(self._p, "atomic_read", off, 4, False)
        return self._r.atomic_read(off)

    def atomic_set(self, off: int, value: int) -> None:
        self._pt(self._p, "atomic_set", off, 4, True)
        self._r.atomic_set(off, value)

    def store_release(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store_release", off, size, True)
        self._r.store(off, size, value, **kw)

    def cas(self, off: int, size: int, expected: int, desired: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "cas", off, size, True)
        return self._r.cas(off, size, expected, desired, signed, **kw)

    def xchg(self, off: int, size: int, value: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "xchg", off, size, True)
        return self._r.xchg(off, size, value, signed, **kw)

    def fetch_add(self, off: int, size: int, delta: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "fetch_add", off, size, True)
        return self._r.fetch_add(off, size, delta, signed, **kw)

    def fetch_or(self, off: int, size: int, mask: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "fetch_or", off, size, True)
        return self._r.fetch_or(off, size, mask, signed, **kw)

    def fetch_and(self, off: int, size: int, mask: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "fetch_and", off, size, True)
        return self._r.fetch_and(off, size, mask, signed, **kw)

    def atomic_inc_not_zero(self, off: int) -> bool:
        self._pt(self._p, "atomic_inc_not_zero", off, 4, True)
        return self._r.atomic_inc_not_zero(off)


class GhostMem:
    """A CPU's ghost accessor: the emulator's shared state kernel decisions and
    checks depend on. Part of the running step's footprint, never a point."""

    __slots__ = ("_r", "_run")

    def __init__(self, real: object, runner: Runner) -> None:
        self._r, self._run = real, runner

    def load(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, False)
        return self._r.load(off, size, signed, **kw)

    def store(self, off: int, size: int, value: int, **kw: object) -> None:
        self._run.ghost(off, size, True)
        self._r.store(off, size, value, **kw)

    def cas(self, off: int, size: int, expected: int, desired: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, True, rmw=True)
        return self._r.cas(off, size, expected, desired, signed, **kw)

    def xchg(self, off: int, size: int, value: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, True, rmw=True)
        return self._r.xchg(off, size, value, signed, **kw)

    def fetch_add(self, off: int, size: int, delta: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, True, rmw=True)
        return self._r.fetch_add(off, size, delta, signed, **kw)


class VirtualClock:
    """Time under a controlled schedule: the number of steps taken."""

    def __init__(self, runner: Runner) -> None:
        self._run = runner

    def now_ns(self) -> int:
        return len(self._run.choices)

    def sleep_ns(self, ns: int) -> None:
        pass

    def delay_ns(self, ns: int) -> None:
        pass


@dataclass
class Proc:
    """One CPU of a scenario: its role's name, emulated CPU id, task and script."""

    name: str
    cpu: int
    task: int
    script: Callable


@dataclass
class Step:
    """A step as the timeline shows it (recorded on replays only)."""

    index: int
    proc: int
    op: str
    off: int
    size: int
    before: bytes
    after: bytes = b""
    function: str = ""
    ghosts: list = field(default_factory=list)


class Strategy:
    """What chooses: `begin` before an execution (False: nothing left to run),
    `choose` at every step, `on_step` once a step's footprint is known, `end`
    after the execution (with its length)."""

    def begin(self) -> bool:
        return True

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        raise NotImplementedError

    def on_step(self, i: int, proc: int, fp: list) -> None:
        pass

    def end(self, steps: int) -> None:
        pass


class Runner:
    """Runs the CPUs of one world under a strategy, one execution at a time."""

    def __init__(self, world: object, procs: list[Proc], max_steps: int = 200_000,
                 checks: frozenset = frozenset()) -> None:
        self.world, self.procs, self.max_steps = world, procs, max_steps
        self.checks = checks
        self.kcsan: RaceDetector | None = None
        self.n = len(procs)
        self.kmem = world.kernel_mem
        self.clock = VirtualClock(self)
        self.choices: list[int] = []
        m = world.machine
        self._lo = min(r.offset for r in m.regions.values())
        self._snap = bytes(m.mm[self._lo:m.size])
        self.recording: list[Step] | None = None

    # -- one execution --------------------------------------------------------------
    def execute(self, strategy: Strategy, env: object, policy: str = "report",
                record: bool = False) -> str | None:
        """Run every CPU's script to the end (or until the execution cannot go
        on). None when all finished, else why not: "deadlock", "blocked" (the
        strategy refused every enabled CPU), "step limit", or "exception: ..."."""
        m = self.world.machine
        m.mm[self._lo:m.size] = self._snap
        self.strategy = strategy
        strategy.runner = self
        self.pending = [START] * self.n
        self.guard: list = [None] * self.n
        self.finished = [False] * self.n
        self.choices = []
        self.fp: list = []
        self.outcome: str | None = None
        self.ending = False
        self.aborting = False
        self.recording = [] if record else None
        self.main = getcurrent()
        if "kcsan" in self.checks:  # the free list's head stands for zone->lock
            fl = self.world.offsets["freelist"]
            self.kcsan = RaceDetector(self.n, self.world.machine.cfg.word_bytes, ((fl, fl + 8),))
        ctxs = [self.world.context(cpu=p.cpu, task=p.task, role=p.name, policy=policy,
                                   mem=SchedMem(self.kmem, self, i), ghost=GhostMem(self.world.host_mem, self),
                                   wait=self._wait, clock=self.clock, checks=self.checks)
                for i, p in enumerate(self.procs)]
        self.glets = [greenlet(partial(self._body, i, ctxs[i], env), parent=self.main) for i in range(self.n)]
        nxt = self._choose(None)
        try:
            while nxt is not None:
                self.glets[nxt].switch()
                if self.ending:
                    break
                nxt = self._choose(None)
        except Nondeterminism:
            raise
        except Exception as e:  # a role script raised: a finding, replayable like any other
            self.outcome = f"exception: {type(e).__name__}: {e}"
        finally:
            self._abort_rest()
        return self.outcome

    def _body(self, p: int, mm: object, env: object) -> None:
        self._open(p, START)
        try:
            self.procs[p].script(mm, env)
        except Abort:
            return
        self._close(p)
        self.finished[p] = True

    def _abort_rest(self) -> None:
        self.aborting = True
        for g in self.glets:
            if not g.dead:
                try:
                    g.throw(Abort)
                except Abort:
                    pass
        self.glets = []

    # -- the scheduling point ------------------------------------------------------------
    def point(self, p: int, op: str, off: int, size: int, write: bool) -> None:
        if self.aborting:
            raise Abort
        self._close(p)
        pend = (op, off, size, write)
        self.pending[p] = pend
        q = self._choose(p)
        if q is None:
            self.ending = True
            self.main.switch()
            raise Abort
        if q != p:
            self.glets[q].switch()
            if self.aborting:
                raise Abort
        self._open(p, pend)

    def ghost(self, off: int, size: int, write: bool, rmw: bool = False) -> None:
        if self.aborting:
            raise Abort
        self.fp.append((off, off + size, write))
        if rmw and self.kcsan is not None:
            self.kcsan.ghost_rmw(self.current, off, size)
        if self.recording is not None:
            self.recording[-1].ghosts.append((off, size, write))

    def _wait(self, mm: object, off: int, size: int, can: Callable[[int], bool], spins: int) -> None:
        """MM.spin_wait: the CPU's next access waits until can(bytes at off) holds."""
        self.guard[mm.a._p] = (off, size, can)

    def _open(self, p: int, pend: tuple) -> None:
        self.guard[p] = None
        self.current = p
        op, off, size, write = pend
        if self.kcsan is not None and op != "start":
            self.kcsan.access(p, op, off, size, write, len(self.choices) - 1)
        self.fp = [(off, off + size, write)] if op != "start" else []
        if self.recording is not None:
            self.recording.append(Step(len(self.choices) - 1, p, op, off, size,
                                       bytes(self.world.machine.mm[off:off + size]), function=kernel_function(2)))

    def _close(self, p: int) -> None:
        if self.recording is not None and self.recording:
            s = self.recording[-1]
            s.after = bytes(self.world.machine.mm[s.off:s.off + s.size])
        self.strategy.on_step(len(self.choices) - 1, p, self.fp)

    def _choose(self, current: int | None) -> int | None:
        enabled = [q for q in range(self.n) if not self.finished[q]
                   and (self.guard[q] is None or self._guard_ok(q))]
        if not enabled:
            if not all(self.finished):
                self.outcome = "deadlock"
            return None
        if len(self.choices) >= self.max_steps:
            self.outcome = "step limit"
            return None
        q = self.strategy.choose(len(self.choices), enabled, current)
        if q is None:
            self.outcome = self.outcome or "blocked"
            return None
        self.choices.append(q)
        return q

    def _guard_ok(self, q: int) -> bool:
        off, size, can = self.guard[q]
        return can(self.kmem.load(off, size))
