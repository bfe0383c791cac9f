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

import bisect
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from greenlet import GreenletExit, getcurrent, greenlet

from ..check.kcsan import RaceDetector
from ..findings import Kind
from ..mm.kfunc import kernel_function
from .access import GhostMem, SchedMem
from .lkmm import WordBuffers, choices_per_role
from .stop import Stop, Stopped
from .tso import FENCED, STORES, StoreBuffers, TsoMem, check_cpus, parse_model

START = ("start", 0, 0, False)
_RMW_OPS = ("cas", "xchg", "fetch_add", "fetch_or", "fetch_and", "atomic_inc_not_zero")
RMWS = frozenset((*_RMW_OPS, *(op + "_relaxed" for op in _RMW_OPS)))  # _relaxed: its barrier dropped



def _check_size(size: int) -> None:
    if size not in (1, 2, 4, 8):  # as the accessors themselves say, and before any byte is looked at
        raise ValueError(f"field size must be 1, 2, 4 or 8 bytes, not {size}")


_SIZES = (1, 2, 4, 8)


def _check_aligned(off: int, size: int) -> None:
    if off & (size - 1):  # the mapping is page-aligned: as the accessor says it (tso would buffer it)
        raise ValueError(f"offset {off} is not aligned for a {size}-byte field")


class Nondeterminism(RuntimeError):
    """A replayed step did something else than before: state outside the mapping
    (a module global, an unseeded random, the time) decides what the code does."""


class Abort(BaseException):
    """Unwinds the greenlet of a CPU whose execution is being abandoned."""


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
    `choose` at every step, `on_step` once a step's footprint is known,
    `on_blocked` when a CPU is kept from running, `end` after the execution
    (with its length)."""

    def begin(self) -> bool:
        return True

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        raise NotImplementedError

    def on_step(self, i: int, proc: int, fp: list) -> None:
        pass

    def on_blocked(self, i: int, proc: int, fp: list) -> None:
        """Before step i, `proc` could not run for want of what `fp` reads."""

    def end(self, steps: int) -> None:
        pass


class Runner:
    """Runs the CPUs of one world under a strategy, one execution at a time.

    The CPU model: each role is a task pinned to its emulated CPU. Tasks on
    different CPUs interleave at every access. Tasks sharing a CPU take turns
    as that CPU would let them: the one running keeps the CPU until it ends,
    sleeps (a sleeping wait: lock_page, a mutex) or, under CONFIG_PREEMPT, is
    preempted where its preempt_count is 0 (spin_lock raises it).

    For DPOR, such a CPU is a lock word of its own: a virtual byte that every
    step of its tasks reads, and that a step writes when it changes who may
    run there: without PREEMPT taking the CPU, sleeping or ending; under
    PREEMPT only moving preempt_count between 0 and not 0, since a task at 0
    keeps no one off its CPU (and one can take the CPU only from such a task). A task kept off its CPU is reported
    to the strategy (`on_blocked`) as a failed attempt to read that byte, so
    that DPOR reverses the step that took the CPU from under it."""

    def __init__(self, world: object, procs: list[Proc], max_steps: int = 200_000,
                 checks: frozenset = frozenset(), stop: Stop | None = None, model: str = "sc") -> None:
        base, dropped = parse_model(model)  # ValueError for an unknown model or barrier
        check_cpus(base, {p.name: p.cpu for p in procs})
        self.world, self.procs, self.max_steps = world, procs, max_steps
        self.checks = checks
        self.stop = stop or Stop()
        self.kcsan: RaceDetector | None = None
        self.n = len(procs)
        self.kmem = world.kernel_mem
        self.clock = VirtualClock(self)
        self.choices: list[int] = []
        m = world.machine
        self._lo = min(r.offset for r in m.regions.values())
        self._spans = sorted((r.offset, r.offset + r.size) for r in m.regions.values())
        self._starts = [a for a, _ in self._spans]
        # the 8-byte words of the file wholly inside one region: an aligned access of at
        # most 8 bytes in one needs no search (it cannot cross a word)
        self._inside = bytearray((self._spans[-1][1] >> 3) + 1)
        for lo, hi in self._spans:
            a, b = (lo + 7) >> 3, hi >> 3
            self._inside[a:b] = b"\1" * max(0, b - a)
        self._inside_end = len(self._inside) << 3
        self._snap = bytes(m.mm[self._lo:m.size])
        self._mm = m.mm
        self.recording: list[Step] | None = None
        self.preemptible = bool(m.cfg.options.get("PREEMPT"))
        cpus = [p.cpu for p in procs]
        self.cpu_of = cpus
        # a virtual byte per shared CPU, below every real offset (offsets are >= 0)
        self.cpu_vb = [-1 - c if cpus.count(c) > 1 else None for c in cpus]
        self.shared_cpus = len(set(cpus)) < len(cpus)  # else every task may always run on its CPU
        self.error: str | None = None  # the traceback of a role's exception
        self.executing = False
        # under tso, choice n + p flushes the oldest store of p's buffer; under lkmm
        # n * (1 + slot) + p the oldest of p's stores to one word (emu.explore.lkmm)
        self.model = model
        buffers = {"tso": StoreBuffers, "lkmm": WordBuffers}.get(base)
        self.buffers = buffers(self, m.cfg.byte_order, dropped) if buffers else None
        self.nchoices = choices_per_role(base) * self.n

    # -- one execution --------------------------------------------------------------
    def execute(self, strategy: Strategy, env: object, policy: str = "report",
                record: bool = False) -> str | None:
        """Run every CPU's script to the end (or until the execution cannot go
        on). None when all finished, else why not: "deadlock", "blocked" (the
        strategy refused every enabled CPU), "step limit", "exception: ...",
        or the stop's reason ("time limit", "interrupted by SIGINT", ...)."""
        m = self.world.machine
        m.mm[self._lo:m.size] = self._snap
        self.strategy = strategy
        strategy.runner = self
        self.pending = [START] * self.nchoices
        if self.buffers:
            self.buffers.reset()
        self.guard: list = [None] * self.n
        self.sleeping = [False] * self.n  # parked in a sleeping wait: its CPU is free
        self.finished = [False] * self.n
        self.owner: dict[int, int] = {}  # emulated CPU -> the task running on it
        self.last_ran: dict[int, int] = {}  # emulated CPU -> the task that ran there last
        self.took = False  # the chosen task takes its CPU from another or from none
        self.pc0 = 0  # the running task's preempt_count when its step began
        self.kept_off: set[int] = set()  # tasks ready to run whose CPU another task holds
        self.choices = []
        self.kept_off = set()
        self.fp: list = []
        self.rmw: tuple | None = None
        self.outcome: str | None = None
        self.error = None
        self.fatal: BaseException | None = None
        self.ending = False
        self.aborting = False
        self.recording = [] if record else None
        self.main = getcurrent()
        if "kcsan" in self.checks:  # the free list's head stands for zone->lock
            fl = self.world.offsets["freelist"]
            self.kcsan = RaceDetector(self.n, self.world.machine.cfg.word_bytes, ((fl, fl + 8),))
        self.ctxs = [self.world.context(cpu=p.cpu, task=p.task, role=p.name, policy=policy,
                                        mem=(TsoMem if self.buffers else SchedMem)(self.kmem, self, i), ghost=GhostMem(self.world.host_mem, self),
                                        wait=self._wait, clock=self.clock, checks=self.checks)
                     for i, p in enumerate(self.procs)]
        self.glets = [greenlet(partial(self._body, i, self.ctxs[i], env), parent=self.main)
                      for i in range(self.n)]
        self.executing = True
        try:
            nxt = self._choose(None)
            while nxt is not None:
                if nxt >= self.n:
                    self._flush(nxt)
                else:
                    self.glets[nxt].switch()
                    if self.ending:
                        break
                nxt = self._choose(None)
        except Stopped:  # the watchdog: a step ran on past a stop without a scheduling point
            self.outcome = self.stop.reason or "time limit"
        finally:
            self.executing = False
            self._abort_rest()
        if self.fatal is not None:
            raise self.fatal
        return self.outcome

    def _body(self, p: int, mm: object, env: object) -> None:
        self._open(p, START)
        try:
            self.procs[p].script(mm, env)
        except Abort:
            return
        except (Exception, GreenletExit) as e:  # a role script raised: a finding, replayable like any other
            # (GreenletExit too: greenlet would take it for a normal end, the role never finished)
            if self.aborting:
                return
            self._close(p)  # its last step's footprint: the strategies need it like any other
            self.outcome = f"{Kind.EXCEPTION}: {type(e).__name__}: {e}"
            self.error = traceback.format_exc()
            self.ending = True
            return  # back to the main greenlet, this one's parent
        self._close(p, ends=True)
        self.finished[p] = True
        if self.owner.get(self.cpu_of[p]) == p:
            del self.owner[self.cpu_of[p]]

    def _abort_rest(self) -> None:
        self.aborting = True
        for g in self.glets:
            if not g.dead:
                try:
                    g.throw(Abort)
                except Abort:
                    pass
        self.glets = []

    def _end(self) -> None:
        """End the execution from inside a CPU's step: back to the main greenlet for good."""
        self.ending = True
        self.main.switch()
        raise Abort

    # -- the scheduling point ------------------------------------------------------------
    def point(self, p: int, op: str, off: int, size: int, write: bool) -> None:
        if self.aborting:
            raise Abort
        if not (size in _SIZES and not off & (size - 1) and 0 <= off < self._inside_end
                and self._inside[off >> 3]) and op != "smp_mb":  # a barrier's point (tso's smp_mb) touches no bytes
            _check_size(size)  # before the checkers walk `size` bytes (10**7 of them took 40 s)
            _check_aligned(off, size)
            self._check_span(op, off, size)
        stop = self.stop
        if stop.reason is not None or (stop.deadline is not None and not len(self.choices) & 255 and stop.due()):
            self.outcome = stop.reason
            self._end()
        pend = (op, off, size, write)
        self.pending[p] = pend
        try:
            self._close(p)
            q = self._choose(p)
            while q is not None and q >= self.n:  # a store buffer's flush: no CPU switch
                self._flush(q)
                q = self._choose(p)
        except Nondeterminism as e:  # the strategy's verdict on this execution: unwind it first
            self.fatal = e
            self._end()
        if q is None:
            self._end()
        if q != p:
            self.glets[q].switch()
            if self.aborting:
                raise Abort
        self._open(p, pend)

    def accessed(self, p: int) -> None:
        """The access of p's scheduling point is done: the race checker sees
        it now, never one that raised (a value too wide) and so never happened."""
        if self.kcsan is not None:
            op, off, size, write = self.pending[p]
            self.kcsan.access(p, op, off, size, write, len(self.choices) - 1)

    def _check_span(self, op: str, off: int, size: int) -> None:
        """An access inside one region, else the role's exception (a finding),
        raised before it happens: not a write into the header or between regions."""
        i = bisect.bisect_right(self._starts, off) - 1
        if i < 0 or off + size > self._spans[i][1]:
            raise ValueError(f"{op} of {size} bytes at file offset {off}: in no region of the machine")

    def fence(self, p: int, op: str) -> None:
        """A barrier that is no scheduling point (under sc): the race checker's alone."""
        if self.kcsan is not None:
            self.kcsan.fence(p, op)

    def ghost(self, off: int, size: int, write: bool, rmw: bool = False) -> None:
        if self.aborting:
            raise Abort
        if not (size in _SIZES and not off & (size - 1) and 0 <= off < self._inside_end and self._inside[off >> 3]):
            _check_size(size)
            self._check_span("access", off, size)
        self.fp.append((off, off + size, write))
        if rmw and self.kcsan is not None:
            self.kcsan.ghost_rmw(self.current, off, size)
        if self.recording is not None:
            self.recording[-1].ghosts.append((off, size, write))

    def _wait(self, mm: object, off: int, size: int, can: Callable[[int], bool], spins: int,
              sleeping: bool = False) -> None:
        """MM.spin_wait: park the CPU until can(bytes at off) holds. A sleeping
        wait gives its emulated CPU to the other tasks there."""
        p = mm.a._p
        if sleeping:
            if mm.preempt_count:
                raise RuntimeError(f"BUG: sleeping function called from invalid context on CPU#{mm.cpu} "
                                   f"(preempt_count {mm.preempt_count})")
            self.sleeping[p] = True
            if self.owner.get(self.cpu_of[p]) == p:
                del self.owner[self.cpu_of[p]]
        self.guard[p] = (off, size, can)
        self.fp.append((off, off + size, False))  # the read that decided to park

    def _open(self, p: int, pend: tuple) -> None:
        self.guard[p] = None
        self.sleeping[p] = False
        self.current = p
        op, off, size, write = pend
        if op == "start":
            fp = []
        elif self.buffers is not None and op in STORES:  # into the store buffer, not memory
            b = self.buffers.next_slot(p)
            fp = [(b, b + 1, True)]
        elif self.buffers is not None and op in FENCED:  # it waited for its stores' flushes
            fp = [(off, off + size, write)]
            fp += [(b, b + 1, False) for b in self.buffers.fence_reads(p)]
        else:
            fp = [(off, off + size, write)]
        vb = self.cpu_vb[p]
        if vb is not None:
            # under PREEMPT a task takes its CPU only from one at preempt_count 0,
            # which could take it back at once: only preempt_count decides
            fp.append((vb, vb + 1, self.took and not self.preemptible))
            self.pc0 = self.ctxs[p].preempt_count
        self.fp = fp
        # an RMW that leaves a byte as it was only read it (a failed cmpxchg, xadd's
        # low bytes, a bit already set): _close classifies its bytes by what it did
        self.rmw = (off, size, self._mm[off:off + size]) if write and op in RMWS else None
        if self.recording is not None:
            self.recording.append(Step(len(self.choices) - 1, p, op, off, size,
                                       bytes(self.world.machine.mm[off:off + size]), function=kernel_function(2)))

    def _flush(self, choice: int) -> None:
        """A step of a CPU's store buffer (choice n + k under tso: CPU k's): a store reaches memory."""
        i = len(self.choices) - 1
        off, size = self.buffers.peek(choice)
        mm = self.world.machine.mm
        if self.recording is not None:
            self.recording.append(Step(i, choice % self.n, "flush", off, size, bytes(mm[off:off + size]),
                                       function="(store buffer)"))
        fp = self.buffers.flush(choice)
        if self.recording is not None:
            self.recording[-1].after = bytes(mm[off:off + size])
        self.strategy.on_step(i, choice, fp)

    def _close(self, p: int, ends: bool = False) -> None:
        if self.rmw is not None:
            self._rmw_footprint()
        vb = self.cpu_vb[p]
        pc = self.ctxs[p].preempt_count
        if vb is not None and (
                ((self.pc0 == 0) != (pc == 0) or (ends and pc > 0)) if self.preemptible
                else (ends or self.sleeping[p])):
            self.fp.append((vb, vb + 1, True))  # the step changed who may run on its CPU
        if self.recording is not None and self.recording:
            s = self.recording[-1]
            s.after = bytes(self.world.machine.mm[s.off:s.off + s.size])
        self.strategy.on_step(len(self.choices) - 1, p, self.fp)

    def _rmw_footprint(self) -> None:
        """The RMW's access as what it did to each byte: the runs it changed are
        writes, the rest reads. Sound for DPOR: which bytes change is a function
        of the bytes it read, which no step independent of it can change."""
        off, size, before = self.rmw
        self.rmw = None
        after = self._mm[off:off + size]
        if after == before:
            self.fp[0] = (off, off + size, False)
            return
        parts, lo = [], 0
        for k in range(1, size + 1):
            if k == size or (after[k] != before[k]) != (after[lo] != before[lo]):
                parts.append((off + lo, off + k, after[lo] != before[lo]))
                lo = k
        self.fp[0:1] = parts

    def _choose(self, current: int | None) -> int | None:
        finished, guard, buffers = self.finished, self.guard, self.buffers
        enabled = [q for q in range(self.n) if not finished[q] and (guard[q] is None or self._wake(q))]
        shared = self.shared_cpus  # else each task may always run on its CPU: no owner to track
        if shared or buffers is not None:
            enabled = self._enabled(enabled)
        if not enabled:
            if not all(self.finished):
                self.outcome = Kind.DEADLOCK
            return None
        if len(self.choices) >= self.max_steps:
            self.outcome = Kind.STEP_LIMIT
            return None
        q = self.strategy.choose(len(self.choices), enabled, current)
        if q is None:
            self.outcome = self.outcome or Kind.BLOCKED
            return None
        self.choices.append(q)
        if q >= self.n or not shared:
            return q
        c = self.cpu_of[q]
        self.took = self.owner.get(c) != q
        self.owner[c] = q
        prev = self.last_ran.get(c)
        if prev != q:
            if prev is not None and self.kcsan is not None:
                self.kcsan.handoff(prev, q)
            self.last_ran[c] = q
        return q

    def _enabled(self, ready: list[int]) -> list[int]:
        """Of the ready tasks, those their CPUs let run (and under tso, not a fence
        waiting for its buffer), plus each non-empty store buffer's flush."""
        buffers = self.buffers
        if buffers is not None:  # a fence waits for its CPU's buffer to drain
            ready = [q for q in ready if not (buffers.nonempty(q) and self.pending[q][0] in FENCED)]
        enabled = [q for q in ready if self._may_run(q)] if self.shared_cpus else list(ready)
        if len(enabled) < len(ready):
            kept = {q for q in ready if q not in enabled}
            i = len(self.choices)
            for q in kept - self.kept_off:  # newly kept off: a failed attempt at its CPU
                vb = self.cpu_vb[q]
                self.strategy.on_blocked(i, q, [(vb, vb + 1, False)])
            self.kept_off = kept
        elif self.kept_off:
            self.kept_off = set()
        if buffers is not None:  # a non-empty store buffer may flush at any step
            pending = self.pending
            for c, off, size in buffers.flushable():
                pending[c] = ("flush", off, size, True)
                enabled.append(c)
        return enabled

    def _wake(self, q: int) -> bool:
        """A parked CPU wakes once its word says it may proceed, and stays
        awake until it runs: a later write that takes the lock again does not
        park it; its next read sees that write and fails, an event of its own
        that DPOR can reverse (a guard that parked it again would hide that race)."""
        off, size, can = self.guard[q]
        if can(self.kmem.load(off, size)):
            self.guard[q] = None
            return True
        return False

    def _may_run(self, q: int) -> bool:
        """Whether q's emulated CPU can switch to it: free, already q's, or its
        task can be switched away from (asleep, or preemptible)."""
        o = self.owner.get(self.cpu_of[q])
        if o is None or o == q or self.sleeping[o]:
            return True
        return self.preemptible and self.ctxs[o].preempt_count == 0
