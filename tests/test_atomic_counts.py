"""Every read-modify-write helper of emu._atomics, raced by several OS
processes on one file-backed mapping, counted exactly: cas, xchg, fetch_add,
fetch_sub, fetch_or, fetch_and, fetch_xor, inc_not_zero, dec_and_test, on 4
and 8 bytes, in both byte orders.

A lost update needs two processes inside one op at once, so a fixed number of
ops proves nothing on a busy host: a process may run its whole share before
the next one is even scheduled. Each worker therefore runs its nogil loop in
chunks and all go on past their N iterations until, in PARALLEL chunks
between them, a worker saw another make progress while it itself was never
switched out (its context-switch count unchanged: the two ran on two CPUs at
once); the exact count is of what was done. A non-atomic op loses updates
then, every run: test_exact_counts_catch_non_atomic_ops shows it against each
op's read-then-store variant (emu._atomics.set_broken, KSM_EMU_TEST_BREAK).

One process group runs `rounds` rounds, separated by barriers of plain
stores and loads (never a helper under test): the test of the test runs the
same exact-count round 20 times without forking 4 processes 20 times.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from support.procs import run_procs

from emu import _atomics
from emu.machine import attach

NPROC = 4
N = 50_000  # iterations per worker at least
CHUNK_S = 200e-6  # seconds per nogil call, between looks at the others (the count adapts)
TIME_LIMIT = 60  # per round: a host that never runs two workers at once fails the test
PARALLEL = 32  # chunks, all workers' together, that ran on a CPU while another worker progressed on another
M64 = (1 << 64) - 1
RUNS = 20  # the test of the test: runs against the broken op, and against the real one

# on one CPU no two workers ever run at once: nothing to race, and the workers would wait TIME_LIMIT
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to race on")

OPS = ("cas", "xchg", "fetch_add", "fetch_sub", "fetch_or", "fetch_and", "fetch_xor", "inc_not_zero",
       "dec_and_test")
VARIANTS = [(op, size, order) for op in OPS for size in (4, 8) for order in ("little", "big")]

# the control block in the scratch region: one 8-byte word each, the field on its own cache line
GO, COLLECTED = 0, 8
READY, PROGRESS, PAR, FIN = 64, 128, 192, 256  # + 8 * worker
FIELD = 512


def break_name(op: str) -> str:
    return f"atomics-{op.replace('_', '-')}-read-then-store"


@dataclass(frozen=True)
class Workload:
    """What each worker does (emu._atomics' loop_rmw op and its argument) and
    the field's value before a round."""

    op: str
    size: int
    big: bool

    @property
    def start(self) -> int:
        top = 1 << (8 * self.size - 8)  # counts cross into the top byte: a swap bug shows
        if self.op in ("cas", "fetch_add", "inc_not_zero"):
            return top - NPROC * N // 2
        if self.op == "fetch_sub":
            return top + NPROC * N // 2
        if self.op == "dec_and_test":  # far from 0, however long the round goes on
            return 3 << (8 * self.size - 2)
        if self.op == "xchg":
            return 0x5A
        return int.from_bytes(b"\x80" * self.size, "little")  # bits no worker touches

    def arg(self, worker: int, done: int) -> int:
        if self.op == "xchg":  # unique values: worker's base, plus the iteration
            return ((worker + 1) << (28 if self.size == 4 else 40)) + done
        if self.op in ("fetch_or", "fetch_and", "fetch_xor"):  # a bit of its own, each in another byte
            return 1 << ((3, 11, 19, 27) if self.size == 4 else (3, 19, 35, 59))[worker]
        return 1


def _wait(a, off: int, value: int, n: int = 1) -> None:
    """Until the n words from off all hold value (plain loads: never an op under test)."""
    deadline = time.monotonic() + TIME_LIMIT
    while any(a.load(off + 8 * j, 8) != value for j in range(n)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier at +{off} never reached {value}")
        os.sched_yield()


def _switches() -> int:
    """Times this process was switched out, so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw + r.ru_nivcsw


def _worker(me: int, path, w: Workload, rounds: int) -> list:
    m = attach(path)
    a = m.atomics
    ctl = m.region("scratch").offset
    field = ctl + FIELD
    others = [ctl + PROGRESS + 8 * j for j in range(NPROC) if j != me]
    out = []
    try:
        for r in range(1, rounds + 1):
            a.store(ctl + PROGRESS + 8 * me, 8, 0)
            a.store(ctl + PAR + 8 * me, 8, 0)
            a.store(ctl + READY + 8 * me, 8, r)
            deadline = time.monotonic() + TIME_LIMIT
            if me == 0:  # the coordinator
                _wait(a, ctl + READY, r, NPROC)
                a.store(field, w.size, w.start, big=w.big)
                a.store(ctl + GO, 8, r)
            else:
                _wait(a, ctl + GO, r)
            done = parallel = x = y = 0
            chunk = 1000
            while True:
                switches = _switches()  # before the first look, after the last: no gap unwatched
                before = [a.load(o, 8) for o in others]
                t0 = time.perf_counter()
                dx, dy = a.loop_rmw(w.op, field, w.size, chunk, w.arg(me, done), big=w.big)
                dt = time.perf_counter() - t0
                x, y, done = (x + dx) & M64, (y + dy) & M64, done + chunk
                a.store(ctl + PROGRESS + 8 * me, 8, done)
                moved = [a.load(o, 8) for o in others] != before
                if moved and _switches() == switches:
                    parallel += 1
                    a.store(ctl + PAR + 8 * me, 8, parallel)
                if done >= N and sum(a.load(ctl + PAR + 8 * j, 8) for j in range(NPROC)) >= PARALLEL:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {me}: fewer than {PARALLEL} chunks with two workers on two "
                                       f"CPUs in {TIME_LIMIT} s: no parallelism to race with")
                chunk = chunk * 2 if dt < CHUNK_S / 2 else max(1000, chunk // 2) if dt > CHUNK_S * 2 else chunk
            a.store(ctl + FIN + 8 * me, 8, r)
            final = None
            if me == 0:
                _wait(a, ctl + FIN, r, NPROC)
                final = a.load(field, w.size, big=w.big)
                a.store(ctl + COLLECTED, 8, r)
            else:
                _wait(a, ctl + COLLECTED, r)
            out.append((done, parallel, x, y, final))
    finally:
        m.close()
    return out


def _verdict(w: Workload, got: list[tuple]) -> str | None:
    """None when the round's count is exact, else what went wrong. `got`: each
    worker's (done, parallel, x, y, final) of the round (final: worker 0's)."""
    final = got[0][4]
    done = [g[0] for g in got]
    total = sum(done)
    mask = (1 << 8 * w.size) - 1
    if w.op in ("cas", "fetch_add", "inc_not_zero"):
        want = (w.start + total) & mask
        if w.op == "inc_not_zero" and [g[2] for g in got] != done:
            return f"inc_not_zero refused {total - sum(g[2] for g in got)} of {total} times on a live count"
    elif w.op in ("fetch_sub", "dec_and_test"):
        want = (w.start - total) & mask
        if w.op == "dec_and_test" and any(g[2] for g in got):
            return f"dec_and_test reported zero {sum(g[2] for g in got)} times; the count never got there"
    elif w.op == "xchg":  # every value put in comes out once, but the last
        s, sq = w.start, w.start ** 2
        for i, d in enumerate(done):  # worker i sent b, b + 1, ..., b + d - 1
            b = w.arg(i, 0)
            s += d * b + d * (d - 1) // 2
            sq += d * b * b + b * d * (d - 1) + (d - 1) * d * (2 * d - 1) // 6
        got_s = (sum(g[2] for g in got) + final) & M64
        got_sq = (sum(g[3] for g in got) + final * final) & M64
        if (got_s, got_sq) != (s & M64, sq & M64):
            return f"xchg: the values handed back do not add up (sum off by {(got_s - s) & M64:#x})"
        return None if final in {w.arg(i, d - 1) for i, d in enumerate(done)} else \
            f"xchg: the field holds {final:#x}, no worker's last value"
    else:
        want = w.start
        wrong = [(i, g[0] - g[2], g[0] - g[3]) for i, g in enumerate(got) if (g[2], g[3]) != (g[0], g[0])]
        if wrong:
            i, sets, clears = wrong[0]
            return (f"{w.op}: worker {i}'s bit was already set at {sets} of its sets, already clear at "
                    f"{clears} of its clears ({len(wrong)} workers saw others' stale stores)")
    if final != want:
        lost = (final - want if w.op in ("fetch_sub", "dec_and_test") else want - final) & mask
        return f"{w.op}: {final:#x} after {total} ops, not {want:#x} ({lost} updates lost)"
    return None


def exact_count(make_machine, op: str, size: int, order: str, rounds: int = 1) -> list[str | None]:
    """`rounds` rounds of the op's exact-count test in one group of NPROC processes:
    each round's verdict, None when the count was exact."""
    m, path = make_machine()
    w = Workload(op, size, order == "big")
    per_worker = run_procs(_worker, [(i, path, w, rounds) for i in range(NPROC)], timeout=300)
    verdicts = []
    for r in range(rounds):
        got = [per_worker[i][r] for i in range(NPROC)]
        v = _verdict(w, got)
        if v is None:  # and the bytes are the value's in its byte order (the field keeps the last round's)
            final = got[0][4]
            off = m.region("scratch").offset + FIELD
            raw = bytes(m.mm[off:off + size])
            if r == rounds - 1 and raw != final.to_bytes(size, order):
                v = f"the field's bytes {raw.hex()} are not {final:#x} {order}-endian"
        verdicts.append(v)
    return verdicts


@pytest.fixture(autouse=True)
def _real_atomics():
    """Every test starts and ends with the real ops, whatever the environment said."""
    saved = _atomics.set_broken(())
    yield
    _atomics.set_broken(saved)


@two_cpus
@pytest.mark.parametrize("op,size,order", VARIANTS)
def test_exact_count(make_machine, op, size, order):
    assert exact_count(make_machine, op, size, order) == [None]


@pytest.mark.slow
@two_cpus
@pytest.mark.parametrize("op,size,order", VARIANTS)
def test_exact_counts_catch_non_atomic_ops(make_machine, op, size, order, capsys):
    """The test of the test: against the op's read-then-store variant every one of
    RUNS runs fails; against the real op every one passes."""
    _atomics.set_broken({break_name(op)})  # inherited by the forked workers
    try:
        broken = exact_count(make_machine, op, size, order, RUNS)
    finally:
        _atomics.set_broken(())
    real = exact_count(make_machine, op, size, order, RUNS)
    with capsys.disabled():
        print(f"\n{op} {size} {order}: broken failed {sum(v is not None for v in broken)}/{RUNS}, "
              f"real passed {sum(v is None for v in real)}/{RUNS}", end="")
    assert all(v is not None for v in broken), f"the non-atomic {op} passed: {broken}"
    assert real == [None] * RUNS, real


def test_break_switch_reaches_the_extension():
    """KSM_EMU_TEST_BREAK names reach emu._atomics at import (role processes
    inherit them), and emu.mm.testbreak knows them; a broken op is still
    correct when nobody races it."""
    env = {**os.environ, "KSM_EMU_TEST_BREAK": f"{break_name('cas')},{break_name('xchg')},nonsense"}
    code = ("import json, mmap; from emu import _atomics as x; from emu.mm import testbreak as t; "
            "a = x.Atomics(mmap.mmap(-1, 64), 'big'); a.store(0, 8, 5); "
            "print(json.dumps([sorted(x.broken()), sorted(t.BROKEN), a.cas(0, 8, 5, 6), a.xchg(0, 8, 7), "
            "a.load(0, 8)]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    names = sorted([break_name("cas"), break_name("xchg")])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [names, names, 5, 6, 7]
    assert set(_atomics.TEST_BREAKS) == {break_name(op) for op in OPS}
