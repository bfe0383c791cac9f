"""Hostile arguments to the compiled atomics (`emu._atomics`) raise; they never crash.

Each call that could reach outside its buffer runs in a forked child over a
guarded buffer (tests/support/guarded.py says why); each entry point also has
a valid call at the edge of the buffer, so the checks refuse only what is out
of bounds.
"""

from __future__ import annotations

import array
import mmap
import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.guarded import I64_MAX, I64_MIN, PAGE, U64_MAX, forked, guarded, readonly_buffer
from support.guarded import ints as _ints

from emu._atomics import RELEASE, Atomics

# -- Atomics ---------------------------------------------------------------------
A_NPAGES = 1
AL = A_NPAGES * PAGE

OPS = {
    "load": lambda a, off, size: a.load(off, size),
    "store": lambda a, off, size: a.store(off, size, 1),
    "xchg": lambda a, off, size: a.xchg(off, size, 1),
    "cas": lambda a, off, size: a.cas(off, size, 0, 1),
    "fetch_add": lambda a, off, size: a.fetch_add(off, size, 1),
    "fetch_and": lambda a, off, size: a.fetch_and(off, size, 1),
    "fetch_or": lambda a, off, size: a.fetch_or(off, size, 1),
    "fetch_xor": lambda a, off, size: a.fetch_xor(off, size, 1),
    "fetch_sub": lambda a, off, size: a.fetch_sub(off, size, -1),
    "inc_not_zero": lambda a, off, size: a.inc_not_zero(off, size),
    "dec_and_test": lambda a, off, size: a.dec_and_test(off, size),
    "loop_cas_increment": lambda a, off, size: a.loop_cas_increment(off, size, 3),
    "loop_rmw": lambda a, off, size: a.loop_rmw("fetch_add", off, size, 3),
}
ATOMIC_T = {
    "atomic_read": lambda a, off: a.atomic_read(off),
    "atomic_set": lambda a, off: a.atomic_set(off, 5),
    "atomic_inc_not_zero": lambda a, off: a.atomic_inc_not_zero(off),
    "atomic_dec_and_test": lambda a, off: a.atomic_dec_and_test(off),
    "atomic_cmpxchg": lambda a, off: a.atomic_cmpxchg(off, 0, 1),
}
VALUE_OPS = {
    "store": lambda a, v: a.store(0, 8, v),
    "xchg": lambda a, v: a.xchg(0, 8, v),
    "cas-expected": lambda a, v: a.cas(0, 8, v, 0),
    "cas-desired": lambda a, v: a.cas(0, 8, 0, v),
    "fetch_add": lambda a, v: a.fetch_add(0, 8, v),
    "fetch_and": lambda a, v: a.fetch_and(0, 8, v),
    "fetch_or": lambda a, v: a.fetch_or(0, 8, v),
    "fetch_xor": lambda a, v: a.fetch_xor(0, 8, v),
}


def _atomics(order: str = "little") -> Atomics:
    return Atomics(guarded(A_NPAGES), order)


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("name", list(OPS))
def test_atomics_valid_at_both_ends(name, size, order):
    """Every op works on the first and on the last field of the buffer."""
    buf = guarded(A_NPAGES)
    a = Atomics(buf, order)
    for off in (0, AL - size):
        a.store(off, size, 0)
        OPS[name](a, off, size)
        want = {"load": 0, "fetch_and": 0, "loop_cas_increment": 3, "loop_rmw": 3, "inc_not_zero": 0,
                "dec_and_test": (1 << 8 * size) - 1}.get(name, 1)
        assert a.load(off, size) == want, (name, off)
        assert bytes(buf[off:off + size]) == want.to_bytes(size, order)
    a.release()


@pytest.mark.parametrize("name", list(ATOMIC_T))
def test_atomic_t_valid_at_both_ends(name):
    a = _atomics("big")
    for off in (0, AL - 4):
        a.atomic_set(off, 1)
        r = ATOMIC_T[name](a, off)
        want = {"atomic_read": (1, 1), "atomic_set": (None, 5), "atomic_inc_not_zero": (True, 2),
                "atomic_dec_and_test": (True, 0), "atomic_cmpxchg": (1, 1)}[name]
        assert (r, a.atomic_read(off)) == want


def test_atomics_valid_constructors():
    """A buffer is bytes, whatever its item size or shape, if it is C-contiguous and writable."""
    a = Atomics(memoryview(array.array("d", [0.0] * 4)))
    assert a.length == 32
    a.store(24, 8, 1)
    with pytest.raises(IndexError):
        a.load(25, 8)
    b = Atomics(memoryview(bytearray(64)).cast("B", (8, 8)))
    assert b.length == 64 and b.fetch_add(56, 8, 1) == 0
    c = Atomics(np.zeros((4, 4), np.int32))
    assert c.length == 64 and c.load(60, 4) == 0
    assert Atomics(bytearray()).length == 0


def test_loop_cas_increment_valid_counts():
    a = _atomics()
    a.loop_cas_increment(AL - 8, 8, 0)
    assert a.load(AL - 8, 8) == 0
    a.loop_cas_increment(AL - 8, 8, (1 << 20) + 5)  # more than one nogil stretch
    assert a.load(AL - 8, 8) == (1 << 20) + 5
    a.store(0, 1, 250)
    a.loop_cas_increment(0, 1, 10)
    assert a.load(0, 1) == 4  # wraps at the field width


BAD_OFF_SIZE = [
    (-1, 1, IndexError), (-8, 8, IndexError), (I64_MIN, 8, IndexError), (I64_MIN, 1, IndexError),
    (1 << 62, 8, IndexError), (I64_MAX, 1, IndexError), (I64_MAX - 7, 8, IndexError),
    (AL, 1, IndexError), (AL - 1, 2, IndexError), (AL - 3, 4, IndexError), (AL - 4, 8, IndexError),
    (AL - 7, 8, IndexError), (1 << 63, 1, OverflowError), (U64_MAX, 8, OverflowError),
    (I64_MIN - 1, 1, OverflowError), (1, 2, ValueError), (2, 4, ValueError), (4, 8, ValueError),
    (0, 0, ValueError), (0, 3, ValueError), (0, 16, ValueError), (0, -1, ValueError),
    (0, -(1 << 31), ValueError), (0, 1 << 31, OverflowError), (0, 1 << 62, OverflowError),
    (AL - 8, -8, ValueError),
]


@pytest.mark.parametrize("name", list(OPS))
@forked
def test_atomics_hostile_offsets_and_sizes_raise(name):
    a = _atomics()
    for off, size, exc in BAD_OFF_SIZE:
        with pytest.raises(exc):
            OPS[name](a, off, size)
            pytest.fail(f"{name}({off}, {size}) did not raise")


@pytest.mark.parametrize("name", list(ATOMIC_T))
@forked
def test_atomic_t_hostile_offsets_raise(name):
    a = _atomics()
    for off, exc in [(-4, IndexError), (-1, IndexError), (I64_MIN, IndexError), (1 << 62, IndexError),
                     (I64_MAX, IndexError), (AL, IndexError), (AL - 3, IndexError), (AL - 1, IndexError),
                     (U64_MAX, OverflowError), (1 << 63, OverflowError), (2, ValueError), (1, ValueError)]:
        with pytest.raises(exc):
            ATOMIC_T[name](a, off)
            pytest.fail(f"{name}({off}) did not raise")


@pytest.mark.parametrize("name", list(VALUE_OPS))
@forked
def test_atomics_hostile_values_raise(name):
    a = _atomics()
    for v, exc in [(1 << 64, OverflowError), (I64_MIN - 1, OverflowError), (1 << 100, OverflowError),
                   ("x", TypeError), (1.5, TypeError), (None, TypeError)]:
        with pytest.raises(exc):
            VALUE_OPS[name](a, v)
    with pytest.raises(OverflowError):
        a.store(0, 1, 256)
    with pytest.raises(OverflowError):
        a.store(0, 4, -(1 << 31) - 1)
    with pytest.raises(OverflowError):
        a.atomic_set(0, 1 << 31)
    with pytest.raises(OverflowError):
        a.atomic_cmpxchg(0, 1 << 40, 0)
    assert a.load(0, 8) == 0  # nothing was written


@forked
def test_atomics_hostile_orders_raise():
    a = _atomics()
    calls = (lambda o: a.load(0, 8, order=o), lambda o: a.store(0, 8, 1, order=o),
             lambda o: a.cas(0, 8, 0, 1, order=o), lambda o: a.fetch_or(0, 8, 1, order=o))
    for order, exc in [(99, ValueError), (-1, ValueError), (1, ValueError), (1 << 40, OverflowError)]:
        for call in calls:
            with pytest.raises(exc):
                call(order)
    with pytest.raises(ValueError):
        a.load(0, 8, order=RELEASE)


@pytest.mark.parametrize("n", [-1, I64_MIN, 1 << 63, U64_MAX])
@forked
def test_loop_cas_increment_hostile_n_raises(n):
    a = _atomics()
    with pytest.raises(ValueError if n < 0 and n >= I64_MIN else OverflowError):
        a.loop_cas_increment(0, 8, n)
    assert a.load(0, 8) == 0


@forked
def test_loop_cas_increment_huge_n_is_interruptible():
    """n = 2**63 - 1 would spin for centuries; a signal handler's exception ends it."""
    a = _atomics()

    def stop(signum, frame):
        raise TimeoutError("stopped")

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        a.loop_cas_increment(0, 8, I64_MAX)
    assert time.monotonic() - t0 < 10 and a.load(0, 8) > 0
    a.release()  # nothing is left in flight


@pytest.mark.parametrize("make,exc", [
    pytest.param(readonly_buffer, BufferError, id="read-only-mmap"),
    pytest.param(lambda: b"\0" * 16, BufferError, id="bytes"),
    pytest.param(lambda: _ro_numpy(), ValueError, id="read-only-numpy"),
    pytest.param(lambda: memoryview(bytearray(64))[::2], BufferError, id="non-contiguous-memoryview"),
    pytest.param(lambda: np.zeros(16)[::2], ValueError, id="non-contiguous-numpy"),
    pytest.param(lambda: np.zeros((4, 4)).T, ValueError, id="fortran-numpy"),
    pytest.param(lambda: None, TypeError, id="None"),
    pytest.param(lambda: 42, TypeError, id="int"),
    pytest.param(lambda: "abc", TypeError, id="str"),
])
@forked
def test_atomics_hostile_constructor_raises(make, exc):
    with pytest.raises(exc):
        Atomics(make())


def _ro_numpy():
    x = np.zeros(8)
    x.setflags(write=False)
    return x


@pytest.mark.parametrize("order", ["middle", "", None])
def test_atomics_bad_byte_order_raises(order):
    with pytest.raises(ValueError):
        Atomics(bytearray(8), order)


@forked
def test_atomics_empty_and_released_buffers_raise():
    e = Atomics(bytearray())
    a = _atomics()
    a.release()
    a.release()  # twice is fine
    for atom, exc in ((e, IndexError), (a, ValueError)):
        for name in OPS:
            for size in (1, 8):
                with pytest.raises(exc):
                    OPS[name](atom, 0, size)
        for name in ATOMIC_T:
            with pytest.raises(exc):
                ATOMIC_T[name](atom, 0)


# A Python callback run while an op converts its arguments (__index__ of a
# value, __bool__ of `big`) that releases the atomics and unmaps the buffer:
# before the fix the op had already formed its pointer and wrote through it
# into the unmapped page (SIGSEGV).

class _Unmapper:
    def __init__(self, a, m):
        self.a, self.m = a, m

    def _unmap(self):
        self.a.release()
        self.m.close()

    def __index__(self):
        self._unmap()
        return 1

    def __bool__(self):
        self._unmap()
        return False


UNMAP_CALLS = {
    "store-value": lambda a, u: a.store(0, 8, u),
    "xchg-value": lambda a, u: a.xchg(0, 8, u),
    "cas-expected": lambda a, u: a.cas(0, 8, u, 0),
    "cas-desired": lambda a, u: a.cas(0, 8, 0, u),
    "fetch_add-value": lambda a, u: a.fetch_add(0, 8, u),
    "fetch_xor-value": lambda a, u: a.fetch_xor(0, 8, u),
    "load-big": lambda a, u: a.load(0, 8, big=u),
    "store-big": lambda a, u: a.store(0, 8, 1, big=u),
    "cas-big": lambda a, u: a.cas(0, 8, 0, 1, big=u),
    "fetch_and-big": lambda a, u: a.fetch_and(0, 8, 1, big=u),
}


@pytest.mark.parametrize("name", list(UNMAP_CALLS))
@forked
def test_atomics_callback_unmapping_the_buffer_raises(name):
    m = mmap.mmap(-1, 1 << 20)  # large: its own mapping, unmapped at close
    a = Atomics(m)
    with pytest.raises(ValueError, match="released"):
        UNMAP_CALLS[name](a, _Unmapper(a, m))
    assert m.closed


@forked
def test_atomics_release_refused_while_another_thread_is_on_the_buffer():
    """release() while a nogil op of another thread is running: before the fix it
    succeeded, the mapping was closed, and the op faulted (SIGSEGV)."""
    m = mmap.mmap(-1, 1 << 20)
    a = Atomics(m)
    outcome = []

    def releaser():
        while a.load(0, 8) == 0:
            time.sleep(0.001)
        try:
            a.release()
            m.close()
            outcome.append("released")
        except BufferError as e:
            outcome.append(e)
        os.kill(os.getpid(), signal.SIGUSR1)  # stop the main thread's loop

    def stop(signum, frame):
        raise InterruptedError("stopped")

    signal.signal(signal.SIGUSR1, stop)
    t = threading.Thread(target=releaser)
    t.start()
    with pytest.raises(InterruptedError):
        a.loop_cas_increment(0, 8, I64_MAX)
    t.join()
    assert isinstance(outcome[0], BufferError), outcome
    a.release()  # now it may go
    m.close()


_SIZES = st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(-(1 << 31), (1 << 31) - 1),
                   st.sampled_from([0, 3, 16, -1, 1 << 31, 1 << 62]))
_AOFF = _ints(-16, AL + 16, [0, AL - 8, AL - 4, AL - 1, AL, -1, I64_MIN, I64_MAX, 1 << 62, 1 << 63, U64_MAX])


def _atomics_expect(off: int, size: int):
    """The error an op must raise for (off, size), or None when the field is in bounds."""
    if not (I64_MIN <= off <= I64_MAX and -(1 << 31) <= size < (1 << 31)):
        return OverflowError
    if size not in (1, 2, 4, 8):
        return ValueError
    if off < 0 or off + size > AL:
        return IndexError
    if off % size:
        return ValueError
    return None


@pytest.mark.slow  # fuzz: 300 random cases
@forked
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(list(OPS)), off=_AOFF, size=_SIZES)
def test_atomics_random_off_size_in_bounds_or_raises(name, off, size):
    a = _atomics()
    exc = _atomics_expect(off, size)
    if exc is None:
        OPS[name](a, off, size)
    else:
        with pytest.raises(exc):
            OPS[name](a, off, size)
    a.release()
