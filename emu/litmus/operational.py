"""The operational engines: sc (every interleaving) and tso (x86-TSO: per-CPU
FIFO store buffers with store forwarding).

A machine state is each process's run (events.ThreadRun), the memory (per
byte: the value and the write it came from) and, under tso, each CPU's store
buffer.  A step runs one process's next action, or under tso flushes the
oldest store of one buffer to memory: flushes are scheduling choices like any
other.  Every sequence of steps is explored (depth first); states already
seen are skipped, and a state records the reads-from and per-byte coherence
order built so far, so two schedules meet only when they have built the same
execution graph.  An execution is counted once per distinct graph (the
process paths, rf and co), as herd7 counts candidate executions.

TSO (Sewell et al., CACM 2010; Linux's x86, and sparc64 as Linux runs it):
- a store enters its CPU's buffer; a load takes each byte from the newest
  buffered store of its own CPU that covers it, else from memory;
- smp_mb() (and smp_store_mb's), every RMW instruction (atomics, xchg,
  cmpxchg, also when it fails: x86's lock prefix), spin_lock and
  spin_trylock wait for an empty buffer and then act on memory directly; an
  RMW's read and write are one step;
- spin_unlock is a store like any other: x86 releases a lock with an
  unlocked store (2.6.32's ticket lock `incb`, today's `movb $0`), so it
  goes through the buffer and does not drain it;
- smp_rmb, smp_wmb, acquire/release and the smp_mb__* fences are compiler
  barriers on x86: no effect.
explore-lkmm (the explorer's lkmm, emu.explore.lkmm): the same buffers, but
a store may reach memory before older ones of its CPU unless they write one
location, an smp_wmb() lies between them, or it is a release (spin_unlock,
smp_store_release, a _release RMW's write), which follows every older store;
smp_mb() and every RMW instruction drain as under tso; loads stay in order.
A lock operation whose read cannot see the value it needs (spin_lock on a
held lock) is not enabled; a state where nothing is enabled before every
process ends is a deadlock and yields no execution (herd's DEADLOCK).
"""

from __future__ import annotations

from collections.abc import Iterator

from .ast import LitmusTest
from .errors import TooBig
from .events import (
    Byte,
    Choice,
    Event,
    Infeasible,
    Layout,
    ThreadRun,
    decode,
    final_state,
)

# states one exploration may visit: the kernel's tests need at most a few hundred; a
# test with many stores per location can need millions, each a dict of the memory
MAX_STATES = 200_000
Writer = tuple[int, object]  # (proc, event id); (-1, loc) for the initial value
Cell = tuple[str, int]

# reads that are locked instructions on x86 (wait for an empty buffer)
_LOCKED_READS = ("LKR", "LF")


class Machine:
    """Explores every execution of `test` under sc, tso or explore-lkmm."""

    def __init__(self, test: LitmusTest, layout: Layout, model: str) -> None:
        self.test = test
        self.layout = layout
        self.model = model
        self.tso = model in ("tso", "explore-lkmm")  # store buffers
        self.relaxed = model == "explore-lkmm"  # ... whose stores may pass each other
        self.seen: set[object] = set()
        self.executions: dict[object, dict[str, object]] = {}

    def run(self) -> list[dict[str, object]]:
        """The final state of each distinct execution."""
        runs = tuple(ThreadRun(p, self.layout) for p in self.test.processes)
        mem: dict[Cell, tuple[Byte, Writer]] = {
            (loc, i): (b, (-1, loc)) for loc, data in self.layout.init.items() for i, b in enumerate(data)}
        stack = [(runs, mem, tuple(() for _ in runs), frozenset(), {})]
        while stack:
            stack.extend(self._successors(*stack.pop()))
        return list(self.executions.values())

    # ------------------------------------------------------------ steps

    def _successors(self, runs, mem, bufs, rf, co) -> Iterator[tuple]:
        for i, r in enumerate(runs):
            if isinstance(r.pending, Choice):  # a local choice, not a scheduling point
                for c in range(r.pending.n):
                    nxt = _step(r, c)
                    if nxt is not None:
                        yield _with(runs, i, nxt), mem, bufs, rf, co
                return
        key = (tuple(r.history for r in runs), tuple(tuple(e and e.id for e, _ in b) for b in bufs), rf,
               tuple(sorted(co.items())))
        if key in self.seen:
            return
        if len(self.seen) >= MAX_STATES:
            raise TooBig(f"more than {MAX_STATES:,} machine states under {self.model}: too big for the "
                         "operational engines (lkmm, the axiomatic one, may still decide it)")
        self.seen.add(key)
        moved = False
        for i, r in enumerate(runs):
            a = r.pending
            if a is None:
                continue
            assert isinstance(a, Event)
            succ = self._action(i, r, a, runs, mem, bufs, rf, co)
            if succ is not None:
                moved = True
                yield succ
        if self.tso:
            for i, b in enumerate(bufs):
                for k in (range(len(b)) if self.relaxed else range(min(1, len(b)))):
                    if k and not _may_pass(b, k):
                        continue
                    moved = True
                    m2, co2 = self._write(mem, co, i, b[k][0])
                    yield runs, m2, _with(bufs, i, _strip(b[:k] + b[k + 1:])), rf, co2
        if not moved and all(r.done for r in runs):
            self._record(runs, mem, rf, co)

    def _action(self, i, r, a: Event, runs, mem, bufs, rf, co):
        drains = self.tso and (a.rmw_insn or a.lock in _LOCKED_READS or (a.kind == "F" and a.annot == "smp_mb"))
        if drains and bufs[i]:
            return None  # waits for its store buffer to drain (flushes are other steps)
        if a.kind == "R":
            data, srcs = self._read(i, a, mem, bufs)
            if a.need is not None and decode(data, self.layout.endian) != a.need:
                return None  # spin_lock on a held lock, etc.: not enabled now
            nxt = _step(r, data)
            if nxt is None:
                return None
            rf = rf | {((i, a.id, r.history), srcs)}
            w = nxt.pending
            if isinstance(w, Event) and w.kind == "W" and w.rmw_pair == a.id:
                mem, co = self._write(mem, co, i, w)  # the RMW's write, atomically with its read
                nxt = _step(nxt, None)
                if nxt is None:
                    return None
            return _with(runs, i, nxt), mem, bufs, rf, co
        nxt = _step(r, None)
        if nxt is None:
            return None
        if a.kind == "F" and a.annot == "smp_wmb" and self.relaxed:
            return _with(runs, i, nxt), mem, _with(bufs, i, _strip(bufs[i] + (_WMB,))), rf, co
        if a.kind == "W":
            if self.tso and not drains:
                return _with(runs, i, nxt), mem, _with(bufs, i, bufs[i] + ((a, a.annot == "release"),)), rf, co
            mem, co = self._write(mem, co, i, a)
        return _with(runs, i, nxt), mem, bufs, rf, co

    def _read(self, i: int, a: Event, mem, bufs) -> tuple[tuple[Byte, ...], tuple[Writer, ...]]:
        data: list[Byte] = []
        srcs: list[Writer] = []
        for k in range(a.size):
            cell = (a.loc, a.off + k)
            got = mem[cell]
            if self.tso:  # store forwarding: the newest of my own buffered stores to this byte
                for w, _ in reversed(bufs[i]):
                    if w is not None and w.loc == cell[0] and w.off <= cell[1] < w.off + w.size:
                        got = (w.value[cell[1] - w.off], (i, w.id))
                        break
            data.append(got[0])
            srcs.append(got[1])
        return tuple(data), tuple(srcs)

    @staticmethod
    def _write(mem, co, i: int, w: Event):
        mem = dict(mem)
        co = dict(co)
        for k in range(w.size):
            cell = (w.loc, w.off + k)
            mem[cell] = (w.value[k], (i, w.id))
            co[cell] = co.get(cell, ()) + ((i, w.id),)
        return mem, co

    def _record(self, runs, mem, rf, co) -> None:
        key = (tuple(r.history for r in runs), rf, tuple(sorted(co.items())))
        if key in self.executions:
            return
        memory = {loc: tuple(mem[(loc, k)][0] for k in range(size)) for loc, size in self.layout.sizes.items()}
        self.executions[key] = final_state(self.layout, [r.thread for r in runs], memory)


def _with(t: tuple, i: int, v: object) -> tuple:
    return t[:i] + (v,) + t[i + 1:]


def _step(r: ThreadRun, reply: object) -> ThreadRun | None:
    try:
        return r.step(reply)
    except Infeasible:
        return None


def executions(test: LitmusTest, layout: Layout, model: str) -> list[dict[str, object]]:
    """The final state of every execution of `test` under "sc", "tso" or "explore-lkmm"."""
    return Machine(test, layout, model).run()


_WMB = (None, False)  # an smp_wmb() in a buffer (explore-lkmm): stores after it wait for those before


def _strip(buf: tuple) -> tuple:
    """Without the smp_wmb()s that no older store is left for."""
    k = 0
    while k < len(buf) and buf[k][0] is None:
        k += 1
    return buf[k:]


def _may_pass(buf: tuple, k: int) -> bool:
    """Whether buffered store k may reach memory before the older entries:
    none to its location, no smp_wmb between, and it is no release."""
    w, release = buf[k]
    if w is None or release:
        return False
    for v, _ in buf[:k]:
        if v is None or v.loc == w.loc:
            return False
    return True
