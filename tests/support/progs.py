"""Small concurrent programs over a few words, to check the explorer against
brute force.

A `Prog` is 2-3 roles, each a short script of loads, stores, fetch_adds,
xchgs and cass of 4 and 8 bytes at overlapping offsets of a few 8-byte words
(`x0`..`x3`) in an extra region, branches on the last value read, and
critical sections under locks: a test-and-set lock built from `mm.a.cas`,
`mm.spin_wait` and `mm.a.load_once` (the token lock of emu/mm/spinlock.py),
optionally marking a flag when it finds the lock held (as GENERIC_LOCKBREAK's
waiters write break_lock), trylocks whose failure branch marks that flag, and
the project's own spin_lock/spin_trylock/spin_unlock on a spinlock_t of the
config (`mm.mm_lock_model`). Every role ends in every interleaving: locks are
never nested and always released, and only lock acquisition spins.

`random_prog(rng)` draws one (`Params`: what from); `compare(prog)` runs it
under brute force (`Dfs(None)` over a `Session`) and under
`explore(strategy="dpor")`, recording every step's (proc, footprint) through
the strategies' `on_step`, canonicalises each execution to its Mazurkiewicz
trace (`trace_key`, over `emu.explore.dpor.independent`) and compares: the
traces of DPOR's full executions must be exactly dfs's, with the same end
states (every role's reads, the final bytes of the words, flags and locks),
and DPOR must say complete. `shrink(prog, fails)` makes a failing program
smaller. From a shell: python tests/support/progs.py [--shrink] SEED...
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple
from unittest import mock

from emu.explore import Scenario, explore
from emu.explore import api as explore_api
from emu.explore.api import Session, _cpus
from emu.explore.dpor import independent
from emu.explore.strategies import Dfs
from emu.kconfig import resolve
from emu.machine import RegionSpec
from emu.mm.protocol import KEYHOLE
from emu.mm.spinlock import spin_lock, spin_lock_init, spin_trylock, spin_unlock

VARS = (RegionSpec("vars", 4096),)
DATA, FLAGS, LOCKS, LOCK_STRIDE = 0, 64, 128, 32  # within the vars region
MAX_WORDS, MAX_LOCKS = 4, 2
SPAN = LOCKS + LOCK_STRIDE * MAX_LOCKS  # the bytes an end state shows

# name -> emu.kconfig.resolve's arguments: the spinlock_t a "spin" lock is
CONFIGS = {
    "x86_64": dict(arch="x86_64"),  # ticket lock: xadd, then wait for "now serving"
    "x86_64 PREEMPT": dict(arch="x86_64", enable=["PREEMPT"]),
    "ppc64 PREEMPT": dict(arch="ppc64", enable=["PREEMPT"]),  # token lock, break_lock
    "ppc64 PREEMPT DEBUG_SPINLOCK": dict(arch="ppc64", kernel="2.6.32",  # + magic, owner, owner_cpu
                                         enable=["PREEMPT", "DEBUG_SPINLOCK"]),
}
LOCK_KINDS = ("tas", "spin")
SPANS = {"x86_64": 4, "x86_64 PREEMPT": 4, "ppc64 PREEMPT": 8,  # sizeof(spinlock_t) (checked by a test)
         "ppc64 PREEMPT DEBUG_SPINLOCK": 24}


# -- the program ---------------------------------------------------------------------------------
class Load(NamedTuple):
    w: int
    rel: int = 0
    size: int = 8


class Store(NamedTuple):
    w: int
    rel: int
    size: int
    val: int
    release: bool = False  # smp_store_release


class Wmb(NamedTuple):
    """smp_wmb()."""


class FetchAdd(NamedTuple):
    w: int
    rel: int
    size: int
    delta: int = 1


class Xchg(NamedTuple):
    w: int
    rel: int
    size: int
    val: int


class Cas(NamedTuple):
    w: int
    rel: int
    size: int
    expected: int | None  # None: the last value this role read
    desired: int


class If(NamedTuple):
    """if the last value read == k: then, else orelse."""
    k: int
    then: tuple
    orelse: tuple = ()


class Locked(NamedTuple):
    """lock(L); body; unlock(L). With `mark`, a failed attempt on a "tas" lock
    sets L's flag (as GENERIC_LOCKBREAK's waiters set break_lock)."""
    lock: int
    body: tuple
    mark: bool = False


class TryLocked(NamedTuple):
    """if trylock(L): body; unlock(L); else: flag(L) = 1."""
    lock: int
    body: tuple


class Peek(NamedTuple):
    """r = a load of `size` bytes at `rel` in lock L's bytes (its word, break_lock,
    the debug fields: what a load of a field that overlaps them sees)."""
    lock: int
    rel: int = 0
    size: int = 4


class Contended(NamedTuple):
    """r = whether another CPU waits for lock L (spin_is_contended, the way the
    holder looks for contention): its flag for a "tas" lock, break_lock where
    the config has it, else next - serving > 1 of the ticket word."""
    lock: int


@dataclass(frozen=True)
class Prog:
    roles: tuple  # per role, a tuple of ops
    locks: tuple = ()  # per lock: "tas" (cas + spin_wait + load_once) or "spin" (emu.mm.spinlock)
    config: str = "x86_64"
    cpus: tuple | None = None  # per role, its emulated CPU; None: one each
    model: str = "sc"  # the memory model both explorations run under

    @property
    def names(self) -> list[str]:
        return [f"p{i}" for i in range(len(self.roles))]

    def cpu_map(self) -> dict[str, int] | None:
        return None if self.cpus is None else dict(zip(self.names, self.cpus))

    def show(self) -> str:
        """The program as pseudo-code, then as Python (paste into a regression table)."""
        cpus = self.cpus or tuple(range(len(self.roles)))
        locks = ", ".join(f"L{i}: {k}" for i, k in enumerate(self.locks)) or "none"
        out = [f"config {self.config}; locks {locks}" + (f"; memory model {self.model}" if self.model != "sc" else "")]
        for i, ops in enumerate(self.roles):
            out.append(f"p{i} (CPU {cpus[i]}):")
            out.extend(_show(ops, self.locks, 1))
        out.append(repr(self))
        return "\n".join(out)


def _loc(op) -> str:
    return f"x{op.w}" + (f"+{op.rel}" if op.rel else "")


def _show(ops: tuple, locks: tuple, depth: int) -> list[str]:
    pad = "    " * depth
    out = []
    for op in ops:
        if isinstance(op, Load):
            out.append(f"{pad}r = load{op.size} {_loc(op)}")
        elif isinstance(op, Store):
            out.append(f"{pad}store{'_release' if op.release else ''}{op.size} {_loc(op)} = {op.val:#x}")
        elif isinstance(op, Wmb):
            out.append(f"{pad}smp_wmb")
        elif isinstance(op, FetchAdd):
            out.append(f"{pad}r = fetch_add{op.size} {_loc(op)} += {op.delta}")
        elif isinstance(op, Xchg):
            out.append(f"{pad}r = xchg{op.size} {_loc(op)} <- {op.val:#x}")
        elif isinstance(op, Cas):
            exp = "r" if op.expected is None else f"{op.expected:#x}"
            out.append(f"{pad}r = cas{op.size} {_loc(op)} {exp} -> {op.desired:#x}")
        elif isinstance(op, Peek):
            out.append(f"{pad}r = load{op.size} L{op.lock}" + (f"+{op.rel}" if op.rel else ""))
        elif isinstance(op, Contended):
            out.append(f"{pad}r = is_contended L{op.lock}")
        elif isinstance(op, If):
            out.append(f"{pad}if r == {op.k:#x}:")
            out.extend(_show(op.then, locks, depth + 1) or [pad + "    pass"])
            if op.orelse:
                out.append(f"{pad}else:")
                out.extend(_show(op.orelse, locks, depth + 1))
        elif isinstance(op, Locked):
            mark = f", marking flag{op.lock} when held" if op.mark and locks[op.lock] == "tas" else ""
            out.append(f"{pad}lock L{op.lock} ({locks[op.lock]}{mark})")
            out.extend(_show(op.body, locks, depth + 1))
            out.append(f"{pad}unlock L{op.lock}")
        elif isinstance(op, TryLocked):
            out.append(f"{pad}if trylock L{op.lock} ({locks[op.lock]}):")
            out.extend(_show(op.body, locks, depth + 1))
            out.append(f"{pad}    unlock L{op.lock}")
            out.append(f"{pad}else:")
            out.append(f"{pad}    flag{op.lock} = 1")
    return out


# -- running it ------------------------------------------------------------------------------------
def _free(v: int) -> bool:
    return v == 0


class _Role:
    """One role's interpreter, over one execution's MM."""

    def __init__(self, prog: Prog, mm, env, me: int) -> None:
        self.prog, self.mm, self.a = prog, mm, mm.a
        self.base = env.world.machine.region("vars").offset
        self.seen = env.data.setdefault(me, [])
        self.last = 0

    def off(self, op) -> int:
        return self.base + DATA + 8 * op.w + op.rel

    def note(self, v: int) -> None:
        self.seen.append(v)
        self.last = v

    def run(self, ops: tuple) -> None:
        a = self.a
        for op in ops:
            if isinstance(op, Load):
                self.note(a.load(self.off(op), op.size))
            elif isinstance(op, Store):
                (a.store_release if op.release else a.store)(self.off(op), op.size, op.val)
            elif isinstance(op, Wmb):
                a.smp_wmb()
            elif isinstance(op, FetchAdd):
                self.note(a.fetch_add(self.off(op), op.size, op.delta))
            elif isinstance(op, Xchg):
                self.note(a.xchg(self.off(op), op.size, op.val))
            elif isinstance(op, Cas):
                mask = (1 << 8 * op.size) - 1
                exp = self.last & mask if op.expected is None else op.expected
                self.note(a.cas(self.off(op), op.size, exp, op.desired))
            elif isinstance(op, Peek):
                self.note(a.load(self.lock_off(op.lock) + op.rel, op.size))
            elif isinstance(op, Contended):
                self.note(int(self.contended(op.lock)))
            elif isinstance(op, If):
                self.run(op.then if self.last == op.k else op.orelse)
            elif isinstance(op, Locked):
                self.lock(op.lock, op.mark)
                self.run(op.body)
                self.unlock(op.lock)
            elif isinstance(op, TryLocked):
                got = self.trylock(op.lock)
                self.seen.append("locked" if got else "busy")
                if got:
                    self.run(op.body)
                    self.unlock(op.lock)
                else:
                    a.store_once(self.flag(op.lock), 4, 1)

    def lock_off(self, i: int) -> int:
        return self.base + LOCKS + LOCK_STRIDE * i

    def flag(self, i: int) -> int:
        return self.base + FLAGS + 8 * i

    def lock(self, i: int, mark: bool) -> None:
        kind, lk, a = self.prog.locks[i], self.lock_off(i), self.a
        if kind == "spin":
            spin_lock(self.mm, lk, self.mm.mm_lock_model)
            return
        while a.cas(lk, 4, 0, 1) != 0:  # the token lock's pattern: test-and-set, then test
            if mark:
                a.store_once(self.flag(i), 4, 1)
            spins = 0
            while True:
                spins += 1
                self.mm.spin_wait(lk, 4, _free, spins)
                if a.load_once(lk, 4) == 0:
                    break

    def contended(self, i: int) -> bool:
        a, lk = self.a, self.lock_off(i)
        if self.prog.locks[i] != "spin":
            return a.load_once(self.flag(i), 4) != 0
        lm = self.mm.mm_lock_model
        if lm.break_rel >= 0:
            return a.load_once(lk + lm.break_rel, 4) != 0
        v = a.load_once(lk + lm.lock_rel, lm.lock_size)
        return (lm.next_ticket(v) - lm.serving(v)) & lm.ticket_mask > 1

    def trylock(self, i: int) -> bool:
        if self.prog.locks[i] == "spin":
            return spin_trylock(self.mm, self.lock_off(i), self.mm.mm_lock_model)
        return self.a.cas(self.lock_off(i), 4, 0, 1) == 0

    def unlock(self, i: int) -> None:
        if self.prog.locks[i] == "spin":
            spin_unlock(self.mm, self.lock_off(i), self.mm.mm_lock_model)
        else:
            self.a.store_release(self.lock_off(i), 4, 0)


def scenario(prog: Prog) -> Scenario:
    def role(me: int) -> Callable:
        def run(mm, env) -> None:
            _Role(prog, mm, env, me).run(prog.roles[me])
        return run

    def setup(world) -> dict:
        mm = world.context(cpu=0)
        base = world.machine.region("vars").offset
        for i, kind in enumerate(prog.locks):
            if kind == "spin":
                spin_lock_init(mm, base + LOCKS + LOCK_STRIDE * i, mm.mm_lock_model)
        return {}

    def observe(env) -> tuple:
        base = env.world.machine.region("vars").offset
        return (tuple(tuple(env.data.get(i, ())) for i in range(len(prog.roles))),
                bytes(env.world.machine.mm[base:base + SPAN]))

    return Scenario("prog", [(n, role(i)) for i, n in enumerate(prog.names)], setup=setup, observe=observe,
                    extra=VARS, pages=8)


def config(prog: Prog):
    return resolve(**CONFIGS[prog.config])


# -- traces ------------------------------------------------------------------------------------------
_INDEPENDENT: dict = {}  # (footprint, footprint) -> dpor.independent's verdict: they recur


def _independent(a: tuple, b: tuple) -> bool:
    key = (a, b)
    v = _INDEPENDENT.get(key)
    if v is None:
        if len(_INDEPENDENT) > 1 << 18:
            _INDEPENDENT.clear()
        v = _INDEPENDENT[key] = independent(a, b)
    return v


def trace_key(events: list) -> tuple:
    """The Mazurkiewicz trace of an execution, given its steps as (proc, footprint):
    per proc, its steps' footprints, each with its vector clock over the dependency
    relation of emu.explore.dpor (same proc, or footprints overlapping with a
    write: `dpor.independent`). Two executions get the same key exactly when they
    are equal up to swapping adjacent independent steps."""
    n = 1 + max((p for p, _ in events), default=-1)
    per: list[list] = [[] for _ in range(n)]  # per proc: [(footprint, vector clock)]
    for p, fp in events:
        mine = per[p]
        vc = list(mine[-1][1]) if mine else [0] * n
        for q in range(n):
            if q == p:
                continue
            theirs = per[q]
            # only q's latest step dependent with this one matters, and only if it is
            # not already known to happen before it (q's steps up to vc[q] are)
            for k in range(len(theirs) - 1, vc[q] - 1, -1):
                fa, va = theirs[k]
                if not _independent(fa, fp):
                    for r in range(n):
                        if va[r] > vc[r]:
                            vc[r] = va[r]
                    break
        vc[p] += 1
        mine.append((fp, tuple(vc)))
    return tuple(tuple(s) for s in per)


def show_trace(key: tuple, base: int = 0) -> str:
    """A trace as its steps, one linearisation (by vector clock), each with what it
    touched: w/r, then the bytes (named within the vars region at `base`)."""
    steps = sorted(((sum(vc), p, i, fp) for p, s in enumerate(key) for i, (fp, vc) in enumerate(s)))
    return " ".join(f"p{p}{_fp(fp, base)}" for _, p, i, fp in steps)


def _name(lo: int, hi: int, base: int) -> str:
    if hi <= 0:
        return f"cpu{-hi}"  # a shared CPU's virtual byte
    rel = lo - base
    for name, start, stride, n in (("x", DATA, 8, MAX_WORDS), ("flag", FLAGS, 8, MAX_LOCKS),
                                   ("L", LOCKS, LOCK_STRIDE, MAX_LOCKS)):
        if start <= rel < start + stride * n:
            k, at = divmod(rel - start, stride)
            return f"{name}{k}" + (f"+{at}" if at else "") + (f":{hi - lo}" if name != "flag" else "")
    return f"{lo}:{hi - lo}"


def _fp(fp: tuple, base: int) -> str:
    return "[" + ",".join(f"{'w' if w else 'r'} {_name(lo, hi, base)}" for lo, hi, w in fp) + "]"


@dataclass
class Explored:
    """What one strategy saw: per trace, the end states it reached there."""

    strategy: str
    executions: int = 0  # full executions
    blocked: int = 0  # executions cut short as redundant (sleep sets)
    repeats: int = 0  # full executions of a trace already explored
    complete: bool = False
    outcomes: set = field(default_factory=set)  # explore()'s Result.outcomes, for DPOR
    traces: dict = field(default_factory=dict)  # trace -> {end state}
    elapsed: float = 0.0
    base: int = 0  # the vars region's offset, to name bytes

    def add(self, events: list, state: tuple) -> None:
        key = trace_key(events)
        if key in self.traces:
            self.repeats += 1
        self.traces.setdefault(key, set()).add(state)
        self.executions += 1

    @property
    def states(self) -> set:
        return set().union(*self.traces.values()) if self.traces else set()


class TooBig(Exception):
    """The brute force would take more executions than allowed."""


def brute_force(prog: Prog, cap: int | None = None) -> Explored:
    """Every interleaving, by Dfs(None) over a Session, each canonicalised to its trace."""
    sc, cfg = scenario(prog), config(prog)
    session = Session(sc, cfg, KEYHOLE, _cpus(sc, cfg, prog.cpu_map()), model=prog.model)
    st = Dfs(None)
    events: list = []
    st.on_step = lambda i, p, fp: events.append((p, tuple(fp)))
    out = Explored("dfs", base=session.world.machine.region("vars").offset)
    t0 = time.perf_counter()
    try:
        while st.begin():
            events.clear()
            outcome, env = session.run(st)
            out.add(list(events), (outcome, sc.observe(env)))
            st.end(len(session.runner.choices))
            if cap is not None and out.executions > cap:
                raise TooBig(f"more than {cap} interleavings")
        out.complete = st.finished
    finally:
        session.close()
    out.elapsed = time.perf_counter() - t0
    return out


@contextmanager
def _recording(out: Explored, sc: Scenario):
    """explore() with its strategy's steps recorded: each full execution's
    (proc, footprint) steps and end state go to `out`."""
    make = explore_api.make

    def wrapped(*args, **kw):
        st = make(*args, **kw)
        events: list = []
        on_step, begin, end = st.on_step, st.begin, st.end

        def rec_step(i, p, fp):
            events.append((p, tuple(fp)))
            return on_step(i, p, fp)

        def rec_begin():
            events.clear()
            return begin()

        def rec_end(*a, **k):
            runner = st.runner
            if runner.outcome == "blocked":
                out.blocked += 1
            else:
                out.add(list(events), (runner.outcome, observed.pop()))
            return end(*a, **k)

        st.on_step, st.begin, st.end = rec_step, rec_begin, rec_end
        return st

    observed: list = []
    observe = sc.observe

    def obs(env):
        v = observe(env)
        observed.append(v)
        return v

    with mock.patch.object(explore_api, "make", wrapped):
        yield _with_observe(sc, obs)


def _with_observe(sc: Scenario, obs: Callable) -> Scenario:
    return Scenario(sc.name, sc.roles, summary=sc.summary, setup=sc.setup, check=sc.check, observe=obs,
                    pages=sc.pages, extra=sc.extra)


def by_dpor(prog: Prog, time_limit: float = 120.0) -> Explored:
    """explore(strategy="dpor") with every full execution's trace and end state recorded."""
    sc = scenario(prog)
    out = Explored("dpor")
    t0 = time.perf_counter()
    with _recording(out, sc) as rec:
        r = explore(rec, config(prog), strategy="dpor", cpus=prog.cpu_map(), checks=(), keep_going=True,
                    time_limit=time_limit, memory_model=prog.model)
    out.elapsed = time.perf_counter() - t0
    out.complete = r.complete
    out.outcomes = set(r.outcomes)
    if r.schedules_explored != out.executions or r.blocked != out.blocked:
        raise AssertionError(f"recorded {out.executions} executions and {out.blocked} blocked; explore says "
                             f"{r.schedules_explored} and {r.blocked}")
    return out


# -- the comparison ------------------------------------------------------------------------------------
@dataclass
class Verdict:
    prog: Prog
    dfs: Explored
    dpor: Explored
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, seed: int | None = None, limit: int = 4) -> str:
        d, p = self.dfs, self.dpor
        head = [f"seed {seed}" if seed is not None else "program",
                self.prog.show(),
                f"dfs: {d.executions} executions, {len(d.traces)} traces, {len(d.states)} end states; "
                f"dpor: {p.executions} executions ({p.repeats} of a trace explored before, {p.blocked} blocked), "
                f"{len(p.traces)} traces, {len(p.states)} end states, complete={p.complete}"]
        body = []
        for problem in self.problems:
            body.append(problem)
        missing = [k for k in d.traces if k not in p.traces]
        extra = [k for k in p.traces if k not in d.traces]
        for name, keys, src in (("missing trace", missing, d), ("extra trace", extra, p)):
            for k in keys[:limit]:
                ends = ", ".join(show_state(self.prog, st) for st in sorted(src.traces[k], key=repr))
                body.append(f"{name}: {show_trace(k, d.base)}\n    ends in {ends}")
            if len(keys) > limit:
                body.append(f"... and {len(keys) - limit} more {name}s")
        for name, states in (("missing state", d.states - p.states), ("extra state", p.states - d.states)):
            for s in sorted(states, key=repr)[:limit]:
                body.append(f"{name}: {show_state(self.prog, s)}")
        return "\n".join(head + body)


def show_state(prog: Prog, state: tuple) -> str:
    """An end state: what each role read, then every word, flag and lock not all zero."""
    outcome, (seen, raw) = state
    reads = "; ".join(f"p{i} read [{', '.join(v if isinstance(v, str) else hex(v) for v in s)}]"
                      for i, s in enumerate(seen))
    parts = [(f"x{w}", raw[DATA + 8 * w:DATA + 8 * w + 8]) for w in range(MAX_WORDS)]
    parts += [(f"flag{i}", raw[FLAGS + 8 * i:FLAGS + 8 * i + 4]) for i in range(MAX_LOCKS)]
    parts += [(f"L{i}", raw[LOCKS + LOCK_STRIDE * i:LOCKS + LOCK_STRIDE * (i + 1)]) for i in range(MAX_LOCKS)]
    shown = " ".join(f"{name}={b.hex().rstrip('0') or '0'}.." if len(b) > 8 else f"{name}={b.hex()}"
                     for name, b in parts if any(b))
    return f"{reads}; {shown or 'all zero'}" + (f" ({outcome})" if outcome else "")


def compare(prog: Prog, cap: int | None = None) -> Verdict:
    """dfs and DPOR on one program: the problems found (none when DPOR is right)."""
    d = brute_force(prog, cap)
    p = by_dpor(prog)
    problems = []
    if not d.complete:
        problems.append("dfs did not finish")
    if not p.complete:
        problems.append("DPOR does not say complete")
    if set(p.traces) != set(d.traces):
        problems.append(f"traces differ: {len(set(d.traces) - set(p.traces))} of dfs's {len(d.traces)} missed by "
                        f"DPOR, {len(set(p.traces) - set(d.traces))} DPOR's only")
    if p.states != d.states:
        problems.append(f"end states differ: {len(d.states - p.states)} missed by DPOR, "
                        f"{len(p.states - d.states)} DPOR's only")
    ended = sorted({o for o, _ in d.states | p.states if o is not None})
    if ended:  # every role ends in every interleaving: the generator promises it
        problems.append(f"executions ended with {ended}")
    if p.outcomes != {s for _, s in p.states}:
        problems.append("explore()'s Result.outcomes differ from the end states recorded")
    for e in (d, p):  # one trace, one end state: the dependency relation misses nothing
        split = [k for k, s in e.traces.items() if len(s) > 1]
        if split:
            problems.append(f"{e.strategy}: {len(split)} traces reach several end states, e.g. "
                            f"{show_trace(split[0], d.base)} -> "
                            + " | ".join(show_state(prog, st) for st in sorted(e.traces[split[0]], key=repr)))
    for k in set(d.traces) & set(p.traces):
        if d.traces[k] != p.traces[k]:
            problems.append(f"one trace, different end states under dfs and DPOR: {show_trace(k, d.base)}")
            break
    return Verdict(prog, d, p, problems)


# -- the generator ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """What `random_prog` draws from."""

    roles: tuple = (2, 2, 3)  # drawn uniformly: 2 roles twice as often as 3
    words: tuple = (2, 4)  # inclusive range
    top_ops: tuple = (1, 3)  # top-level items per role (inclusive; one less at most with 3 roles)
    body_ops: tuple = (1, 2)  # ops in a critical section or branch
    p_lock: float = 0.8  # a program with locks
    p_if: float = 0.2
    p_shared_cpu: float = 0.15  # two roles on one CPU
    p_twice: float = 0.3  # with locks, the first role starts with two sections of one lock
    configs: tuple = ("x86_64", "x86_64", "x86_64 PREEMPT", "ppc64 PREEMPT", "ppc64 PREEMPT", "ppc64 PREEMPT",
                      "ppc64 PREEMPT DEBUG_SPINLOCK")  # drawn uniformly, for a program with locks
    # the most interleavings of the steps as if no lock were contended (see `interleavings`),
    # without locks and with them (which block most of them)
    max_interleavings: tuple = (1500, 4500)
    max_debug_interleavings: int = 600  # DEBUG_SPINLOCK's: nothing blocks there
    # barriers (for the weak models; 0 draws no random number, so sc's programs stay as they were)
    p_wmb: float = 0.0  # an op is smp_wmb()
    p_release: float = 0.0  # a store is smp_store_release


PARAMS = Params()
# under lkmm: smp_wmb and release stores, the orderings its store buffers obey
BARRIER_PARAMS = Params(p_wmb=0.15, p_release=0.3)


# steps of a lock and unlock, and of a successful trylock and unlock, without contention
_SPIN_STEPS = {"x86_64": (3, 3), "x86_64 PREEMPT": (3, 3), "ppc64 PREEMPT": (3, 3),
               "ppc64 PREEMPT DEBUG_SPINLOCK": (14, 10)}


def _steps(ops: tuple, prog: Prog) -> int:
    """The most steps a role's ops take when no lock is contended."""
    n = 0
    for op in ops:
        if isinstance(op, If):
            n += max(_steps(op.then, prog), _steps(op.orelse, prog))
        elif isinstance(op, (Locked, TryLocked)):
            spin = prog.locks[op.lock] == "spin"
            n += _steps(op.body, prog) + (_SPIN_STEPS[prog.config][isinstance(op, TryLocked)] if spin else 2)
        elif not isinstance(op, Wmb):  # a barrier is no scheduling point
            n += 1
    return n


def interleavings(prog: Prog) -> int:
    """The interleavings of the roles' steps (a START step each, then their
    accesses) if no lock were ever contended: what sizes a program for brute force."""
    total, out = 0, 1
    for ops in prog.roles:
        k = 1 + _steps(ops, prog)
        total += k
        out *= math.comb(total, k)
    return out


def random_prog(rng: random.Random, params: Params = PARAMS) -> Prog:
    """A program small enough for brute force (`params.max_interleavings`): drawn
    again from the same generator until one is."""
    while True:
        prog = _draw(rng, params)
        limit = params.max_interleavings[bool(prog.locks)]
        if prog.config == "ppc64 PREEMPT DEBUG_SPINLOCK":
            limit = params.max_debug_interleavings
        if interleavings(prog) <= limit:
            return prog


def _draw(rng: random.Random, params: Params) -> Prog:
    nroles = rng.choice(params.roles)
    nwords = rng.randint(*params.words)
    locks: tuple = ()
    cfg = "x86_64"
    if rng.random() < params.p_lock:
        cfg = rng.choice(params.configs)
        kinds = ("tas", "spin") if cfg != "ppc64 PREEMPT DEBUG_SPINLOCK" else ("spin",)
        locks = tuple(rng.choice(kinds) for _ in range(rng.choice([1, 1, 2])))
    # DEBUG_SPINLOCK's lock and unlock take 14 accesses: two of them contending are far
    # beyond brute force, so one role takes the lock and the other only looks at it
    debug = cfg == "ppc64 PREEMPT DEBUG_SPINLOCK"
    if debug:
        nroles = 2
    values = iter(range(1, 1 << 16))  # every stored value distinct: end states tell who wrote what

    def val(me: int) -> int:
        return (me + 1) << 8 | next(values)

    def loc() -> tuple:
        w = rng.randrange(nwords)
        size = rng.choice([4, 8])
        rel = rng.choice([0, 4]) if size == 4 else 0
        return w, rel, size

    def peek():
        i = rng.randrange(len(locks))
        span = SPANS[cfg] if locks[i] == "spin" else 4
        size = rng.choice([4, 8])
        return Peek(i, rng.randrange(0, max(span, size), size), size)

    def data_op(me: int, stored: list, held: int | None = None):
        if locks:
            r = rng.random()
            if r < 0.12:
                return peek()
            if r < 0.24:
                return Contended(held if held is not None else rng.randrange(len(locks)))
        if params.p_wmb and rng.random() < params.p_wmb:
            return Wmb()
        kind = rng.choices(["load", "store", "fadd", "xchg", "cas"], [4, 4, 2, 1, 2])[0]
        w, rel, size = loc()
        if kind == "load":
            return Load(w, rel, size)
        if kind == "store":
            v = val(me)
            stored.append(v)
            return Store(w, rel, size, v, bool(params.p_release) and rng.random() < params.p_release)
        if kind == "fadd":
            return FetchAdd(w, rel, size, 1)
        if kind == "xchg":
            v = val(me)
            stored.append(v)
            return Xchg(w, rel, size, v)
        v = val(me)
        stored.append(v)
        return Cas(w, rel, size, rng.choice([None, 0, *stored[-2:]]), v)

    def ops(me: int, n: int, stored: list, top: bool, branch: bool = False, held: int | None = None) -> tuple:
        """n items; lock sections only at the top (never nested), no branch in a branch."""
        out = []
        for _ in range(n):
            r = rng.random()
            if top and locks and r < 0.6:
                i = rng.randrange(len(locks))
                body = ops(me, rng.randint(*params.body_ops), stored, False, held=i)
                if rng.random() < 0.65:
                    out.append(Locked(i, body, locks[i] == "tas" and rng.random() < 0.5))
                else:
                    out.append(TryLocked(i, body))
            elif r > 1 - params.p_if and not branch:
                k = rng.choice([0, 1, *stored[-3:]])
                then = ops(me, rng.randint(*params.body_ops), stored, top, True, held)
                orelse = ops(me, rng.randint(0, 1), stored, top, True, held)
                out.append(If(k, then, orelse))
            else:
                out.append(data_op(me, stored, held))
        return tuple(out)

    stored: list = []
    roles = []
    if debug:  # p0 takes the lock once, p1 looks at it and around
        i = rng.randrange(len(locks))
        p0 = [Locked(i, (data_op(0, stored, i),))]
        if rng.random() < 0.5:
            p0.insert(rng.randrange(2), data_op(0, stored))
        roles = [tuple(p0), tuple(peek() if rng.random() < 0.5 else data_op(1, stored)
                                  for _ in range(rng.randint(1, 2)))]
    for me in range(len(roles), nroles):
        n = rng.randint(params.top_ops[0], params.top_ops[1] - (nroles > 2))
        if locks and me == 0 and rng.random() < params.p_twice:
            # two sections of one lock in a row: where another role's waiting matters most
            i = rng.randrange(len(locks))
            twice = tuple(Locked(i, ops(me, rng.randint(0, 1), stored, False, held=i),
                                 locks[i] == "tas" and rng.random() < 0.5) for _ in range(2))
            roles.append(twice + ops(me, n - 2, stored, True))
        else:
            roles.append(ops(me, n, stored, True))
    cpus = None
    if nroles > 1 and rng.random() < params.p_shared_cpu:
        a, b = rng.sample(range(nroles), 2)
        cpus = tuple(0 if i in (a, b) else 1 + i for i in range(nroles))
    return Prog(tuple(roles), locks, cfg, cpus)


# -- shrinking ------------------------------------------------------------------------------------------
def _smaller_ops(ops: tuple):
    """Variants of an op list with one thing removed or simplified."""
    for i in range(len(ops)):
        yield ops[:i] + ops[i + 1:]
    for i, op in enumerate(ops):
        if isinstance(op, (Locked, TryLocked)):
            yield ops[:i] + op.body + ops[i + 1:]  # the section without its lock
            for b in _smaller_ops(op.body):
                yield ops[:i] + (op._replace(body=b),) + ops[i + 1:]
            if isinstance(op, TryLocked):
                yield ops[:i] + (Locked(op.lock, op.body),) + ops[i + 1:]
            elif op.mark:
                yield ops[:i] + (op._replace(mark=False),) + ops[i + 1:]
        elif isinstance(op, If):
            yield ops[:i] + op.then + ops[i + 1:]
            yield ops[:i] + op.orelse + ops[i + 1:]
            for b in _smaller_ops(op.then):
                yield ops[:i] + (op._replace(then=b),) + ops[i + 1:]
            for b in _smaller_ops(op.orelse):
                yield ops[:i] + (op._replace(orelse=b),) + ops[i + 1:]
        elif isinstance(op, (Load, Store, FetchAdd, Xchg, Cas)):
            if op.size == 4 or op.rel:
                yield ops[:i] + (op._replace(rel=0, size=8),) + ops[i + 1:]
            if op.w:
                yield ops[:i] + (op._replace(w=0),) + ops[i + 1:]
            if isinstance(op, (Xchg, Cas)):
                yield ops[:i] + (Store(op.w, op.rel, op.size, op.val if isinstance(op, Xchg) else op.desired),) \
                    + ops[i + 1:]
            if isinstance(op, FetchAdd):
                yield ops[:i] + (Load(op.w, op.rel, op.size),) + ops[i + 1:]
            if isinstance(op, Store) and op.release:
                yield ops[:i] + (op._replace(release=False),) + ops[i + 1:]


def _used_locks(ops: tuple, acc: set) -> set:
    for op in ops:
        if isinstance(op, (Locked, TryLocked)):
            acc.add(op.lock)
            _used_locks(op.body, acc)
        elif isinstance(op, If):
            _used_locks(op.then, acc)
            _used_locks(op.orelse, acc)
    return acc


def _smaller(prog: Prog):
    n = len(prog.roles)
    if n > 2:
        for i in range(n):
            cpus = None if prog.cpus is None else prog.cpus[:i] + prog.cpus[i + 1:]
            yield replace(prog, roles=prog.roles[:i] + prog.roles[i + 1:], cpus=cpus)
    if prog.cpus is not None:
        yield replace(prog, cpus=None)
    for i, ops in enumerate(prog.roles):
        for s in _smaller_ops(ops):
            if s:
                yield replace(prog, roles=prog.roles[:i] + (s,) + prog.roles[i + 1:])
    used = set()
    for ops in prog.roles:
        _used_locks(ops, used)
    if len(prog.locks) > 1 and used <= {0}:
        yield replace(prog, locks=prog.locks[:1])
    for i, kind in enumerate(prog.locks):
        for simpler in LOCK_KINDS[:LOCK_KINDS.index(kind)]:
            yield replace(prog, locks=prog.locks[:i] + (simpler,) + prog.locks[i + 1:])
    if "spin" not in prog.locks and prog.config != "x86_64":
        yield replace(prog, config="x86_64")
    elif prog.config == "ppc64 PREEMPT DEBUG_SPINLOCK":
        yield replace(prog, config="ppc64 PREEMPT")


def shrink(prog: Prog, fails: Callable[[Prog], bool], budget: float = 120.0) -> Prog:
    """Greedily the smallest variant of `prog` that still `fails`."""
    t0 = time.perf_counter()
    progress = True
    while progress and time.perf_counter() - t0 < budget:
        progress = False
        for cand in _smaller(prog):
            try:
                bad = fails(cand)
            except TooBig:
                bad = False
            if bad:
                prog, progress = cand, True
                break
    return prog


def weak_differential(seeds, want: int, model: str, params: Params = PARAMS,
                      cap: int = 20_000) -> tuple[list, list]:
    """DPOR against brute force on `want` programs drawn from `seeds` under a store-buffer
    model, each role on a CPU of its own (the buffers are per role: emu.explore.tso.check_cpus).
    (failed (seed, Verdict) pairs, skipped seeds: too big for brute force)."""
    failed, skipped, done = [], [], 0
    for seed in seeds:
        if done >= want:
            break
        prog = replace(random_prog(random.Random(seed), params), model=model, cpus=None)
        try:
            v = compare(prog, cap)
        except TooBig:
            skipped.append(seed)
            continue
        done += 1
        if not v.ok:
            failed.append((seed, v))
    return failed, skipped


def check_seed(seed: int, params: Params = PARAMS, cap: int | None = None) -> Verdict:
    """The generated program of `seed`, compared."""
    return compare(random_prog(random.Random(seed), params), cap)


def main(argv: list[str] | None = None) -> int:
    """python tests/support/progs.py [--shrink] [--model tso] SEED...: each seed's program and
    verdict (with --shrink, the smallest failing variant too)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--shrink", action="store_true")
    ap.add_argument("--model", default="sc", help="the memory model: sc (default), tso, or lkmm "
                    "(whose programs have smp_wmb and release stores too)")
    ap.add_argument("seeds", type=int, nargs="+")
    args = ap.parse_args(argv)
    bad = 0
    for seed in args.seeds:
        try:
            params = BARRIER_PARAMS if args.model == "lkmm" else PARAMS
            prog = random_prog(random.Random(seed), params)
            if args.model != "sc":  # store buffers are per role: each on a CPU of its own
                prog = replace(prog, cpus=None)
            v = compare(replace(prog, model=args.model), 20000)
        except TooBig as e:
            print(f"seed {seed}: skipped, {e} for brute force\n")
            continue
        print(v.report(seed) if not v.ok else f"seed {seed}: DPOR equals dfs\n{v.prog.show()}")
        if not v.ok:
            bad += 1
            if args.shrink:
                small = shrink(v.prog, lambda p: not compare(p, 20000).ok)
                print("shrunk to:\n" + compare(small).report())
        print()
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
