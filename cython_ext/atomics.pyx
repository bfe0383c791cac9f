# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Atomic operations on a shared writable buffer, in the emulated byte order.

`Atomics(buf, byte_order)` binds to a writable buffer (the machine's mmap) and
holds its buffer export until `release()`, so the mapping cannot be closed
underneath it.  Every offset is checked for bounds and natural alignment
before a pointer is formed: a bad offset raises, it never crashes.  The GIL is
released around each hardware operation and in the nogil loops.

The kernel's operations built on these (spinlocks, page references) are
Python over this accessor (emu.mm), so a controlled schedule sees each access.

Test breaks: KSM_EMU_TEST_BREAK (emu.mm.testbreak's switch, read here at
import, so forked and spawned role processes inherit it) may name
`atomics-<op>-read-then-store` for any read-modify-write helper: that op then
loads, computes and stores, each access atomic but the whole not, in every
caller (Python method and nogil loop). Only the tests that prove the
multi-process exact-count tests can fail set it (`set_broken`).
"""

import os

from libc.stdint cimport uint64_t, int64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "Python.h":
    unsigned long long PyLong_AsUnsignedLongLong(object) except? -1
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1

from ksm_atomic cimport (
    KO_ADD, KO_AND, KO_OR, KO_SUB, KO_XOR, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE,
    __ATOMIC_RELAXED, __ATOMIC_RELEASE, __ATOMIC_SEQ_CST, ko_cas, ko_fetch_op, ko_host_big, ko_load,
    ko_mask, ko_store, ko_xchg,
)

RELAXED = __ATOMIC_RELAXED
ACQUIRE = __ATOMIC_ACQUIRE
RELEASE = __ATOMIC_RELEASE
ACQ_REL = __ATOMIC_ACQ_REL
SEQ_CST = __ATOMIC_SEQ_CST
_ORDERS = {RELAXED: "relaxed", ACQUIRE: "acquire", RELEASE: "release",
           ACQ_REL: "acq_rel", SEQ_CST: "seq_cst"}



cdef inline int _check_order(int order, bint is_load, bint is_store) except -1:
    if order not in _ORDERS:
        raise ValueError(f"unknown memory order {order}; use RELAXED, ACQUIRE, RELEASE, ACQ_REL or SEQ_CST")
    if is_load and (order == __ATOMIC_RELEASE or order == __ATOMIC_ACQ_REL):
        raise ValueError(f"a load cannot have {_ORDERS[order]} order")
    if is_store and (order == __ATOMIC_ACQUIRE or order == __ATOMIC_ACQ_REL):
        raise ValueError(f"a store cannot have {_ORDERS[order]} order")
    return 0


cdef inline uint64_t _to_bits(object v, int size) except? 0x7FFFFFFFFFFFFFF1:
    """A Python int as the field's bits; signed or unsigned, checked for range."""
    cdef int overflow = 0
    cdef long long s
    cdef unsigned long long u
    if size != 1 and size != 2 and size != 4 and size != 8:  # before any shift by 8 * size
        raise ValueError(f"field size must be 1, 2, 4 or 8 bytes, not {size}")
    s = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow == 0:
        if size < 8 and (s > <long long>ko_mask(size) or s < -(<long long>1 << (8 * size - 1))):
            raise OverflowError(f"{v} does not fit a {size}-byte field")
        return (<uint64_t>s) & ko_mask(size)
    if overflow > 0 and size == 8:  # 2**63 .. 2**64-1
        try:
            return PyLong_AsUnsignedLongLong(v)
        except OverflowError:
            pass
    raise OverflowError(f"{v} does not fit a {size}-byte field")


cdef inline object _from_bits(uint64_t u, int size, bint signed):
    if signed and size < 8 and (u >> (8 * size - 1)) & 1:
        return <long long>(u | ~ko_mask(size))
    if signed:
        return <long long>u
    return u


cdef enum:
    _LOOP_CHUNK = 1 << 20  # the nogil loops: iterations per nogil stretch between signal checks


# -- test breaks: a non-atomic variant of each read-modify-write -----------------
cdef enum:
    _B_CAS = 1 << 0
    _B_XCHG = 1 << 1
    _B_ADD = 1 << 2
    _B_SUB = 1 << 3
    _B_OR = 1 << 4
    _B_AND = 1 << 5
    _B_XOR = 1 << 6
    _B_INC_NOT_ZERO = 1 << 7
    _B_DEC_AND_TEST = 1 << 8

_BREAKS = {"atomics-cas-read-then-store": _B_CAS, "atomics-xchg-read-then-store": _B_XCHG,
           "atomics-fetch-add-read-then-store": _B_ADD, "atomics-fetch-sub-read-then-store": _B_SUB,
           "atomics-fetch-or-read-then-store": _B_OR, "atomics-fetch-and-read-then-store": _B_AND,
           "atomics-fetch-xor-read-then-store": _B_XOR,
           "atomics-inc-not-zero-read-then-store": _B_INC_NOT_ZERO,
           "atomics-dec-and-test-read-then-store": _B_DEC_AND_TEST}
TEST_BREAKS = tuple(_BREAKS)

# one C int, tested once per op (a predictable branch): the real path's cost
cdef unsigned int _broken = 0


def broken():
    """The test breaks of this module in force (a frozenset of TEST_BREAKS names)."""
    return frozenset(n for n, b in _BREAKS.items() if _broken & b)


def set_broken(names):
    """Break exactly the ops `names` ask for (names not in TEST_BREAKS are
    ignored, as emu.mm.testbreak ignores unknown ones); return the previous
    set. For tests: a forked process inherits it."""
    global _broken
    cdef unsigned int bits = 0
    for n in names:
        bits |= _BREAKS.get(n, 0)
    old = broken()
    _broken = bits
    return old


set_broken(os.environ.get("KSM_EMU_TEST_BREAK", "").split(","))


cdef inline uint64_t _apply(int op, uint64_t old, uint64_t v, int size) noexcept nogil:
    if op == KO_ADD:
        return (old + v) & ko_mask(size)
    if op == KO_SUB:
        return (old - v) & ko_mask(size)
    if op == KO_AND:
        return old & v
    if op == KO_OR:
        return old | v
    return old ^ v


cdef inline unsigned int _op_bit(int op) noexcept nogil:
    if op == KO_ADD:
        return _B_ADD
    if op == KO_SUB:
        return _B_SUB
    if op == KO_AND:
        return _B_AND
    if op == KO_OR:
        return _B_OR
    return _B_XOR


# Each RMW as its callers see it: the hardware op, or under its test break a
# load and a store (in logical values: ko_load/ko_store do the byte swap).
cdef inline uint64_t _xchg(char *p, int size, int sw, uint64_t v, int order) noexcept nogil:
    cdef uint64_t old
    if _broken & _B_XCHG:
        old = ko_load(p, size, sw, __ATOMIC_RELAXED)
        ko_store(p, size, sw, v, __ATOMIC_RELAXED)
        return old
    return ko_xchg(p, size, sw, v, order)


cdef inline uint64_t _cas(char *p, int size, int sw, uint64_t e, uint64_t d, int order) noexcept nogil:
    cdef uint64_t old
    if _broken & _B_CAS:
        old = ko_load(p, size, sw, __ATOMIC_RELAXED)
        if old == e:
            ko_store(p, size, sw, d, __ATOMIC_RELAXED)
        return old
    return ko_cas(p, size, sw, e, d, order)


cdef inline uint64_t _fetch_op(char *p, int size, int sw, int op, uint64_t v, int order) noexcept nogil:
    cdef uint64_t old
    if _broken and _broken & _op_bit(op):
        old = ko_load(p, size, sw, __ATOMIC_RELAXED)
        ko_store(p, size, sw, _apply(op, old, v, size), __ATOMIC_RELAXED)
        return old
    return ko_fetch_op(p, size, sw, op, v, order)


cdef inline uint64_t _inc_not_zero(char *p, int size, int sw) noexcept nogil:
    """atomic_inc_not_zero: a CAS loop that gives up when it reads 0. Returns
    the value it found: 0 when it refused, else the one it incremented."""
    cdef uint64_t c, seen
    if _broken & _B_INC_NOT_ZERO:
        c = ko_load(p, size, sw, __ATOMIC_RELAXED)
        if c != 0:
            ko_store(p, size, sw, (c + 1) & ko_mask(size), __ATOMIC_RELAXED)
        return c
    c = ko_load(p, size, sw, __ATOMIC_RELAXED)
    while c != 0:
        seen = ko_cas(p, size, sw, c, (c + 1) & ko_mask(size), __ATOMIC_SEQ_CST)
        if seen == c:
            return c
        c = seen
    return 0


cdef inline uint64_t _dec(char *p, int size, int sw) noexcept nogil:
    """atomic_dec_and_test's decrement: returns the old value (1: it reached 0)."""
    cdef uint64_t old
    if _broken & _B_DEC_AND_TEST:
        old = ko_load(p, size, sw, __ATOMIC_RELAXED)
        ko_store(p, size, sw, (old - 1) & ko_mask(size), __ATOMIC_RELAXED)
        return old
    return ko_fetch_op(p, size, sw, KO_SUB, 1, __ATOMIC_SEQ_CST)


# loop_rmw's workloads
cdef enum:
    _L_CAS = 0
    _L_XCHG = 1
    _L_ADD = 2
    _L_SUB = 3
    _L_OR_AND = 4
    _L_XOR = 5
    _L_INC_NOT_ZERO = 6
    _L_DEC_AND_TEST = 7

_LOOPS = {"cas": _L_CAS, "xchg": _L_XCHG, "fetch_add": _L_ADD, "fetch_sub": _L_SUB, "fetch_or": _L_OR_AND,
          "fetch_and": _L_OR_AND, "fetch_xor": _L_XOR, "inc_not_zero": _L_INC_NOT_ZERO,
          "dec_and_test": _L_DEC_AND_TEST}


cdef void _loop(int kind, char *p, int size, int sw, uint64_t v, Py_ssize_t n,
                uint64_t *x, uint64_t *y) noexcept nogil:
    """n iterations of one workload (see Atomics.loop_rmw), adding to *x and *y."""
    cdef Py_ssize_t i
    cdef uint64_t m = ko_mask(size), notv = ~v & ko_mask(size), old, seen
    for i in range(n):
        if kind == _L_CAS:
            old = ko_load(p, size, sw, __ATOMIC_RELAXED)
            while True:
                seen = _cas(p, size, sw, old, (old + v) & m, __ATOMIC_SEQ_CST)
                if seen == old:
                    break
                old = seen
        elif kind == _L_XCHG:
            old = _xchg(p, size, sw, (v + <uint64_t>i) & m, __ATOMIC_SEQ_CST)
            x[0] += old
            y[0] += old * old
        elif kind == _L_ADD:
            _fetch_op(p, size, sw, KO_ADD, v, __ATOMIC_SEQ_CST)
        elif kind == _L_SUB:
            _fetch_op(p, size, sw, KO_SUB, v, __ATOMIC_SEQ_CST)
        elif kind == _L_OR_AND:  # test_and_set_bit, then test_and_clear_bit, of the bits v
            x[0] += (_fetch_op(p, size, sw, KO_OR, v, __ATOMIC_SEQ_CST) & v) == 0
            y[0] += (_fetch_op(p, size, sw, KO_AND, notv, __ATOMIC_SEQ_CST) & v) == v
        elif kind == _L_XOR:
            x[0] += (_fetch_op(p, size, sw, KO_XOR, v, __ATOMIC_SEQ_CST) & v) == 0
            y[0] += (_fetch_op(p, size, sw, KO_XOR, v, __ATOMIC_SEQ_CST) & v) == v
        elif kind == _L_INC_NOT_ZERO:
            x[0] += _inc_not_zero(p, size, sw) != 0
        else:
            x[0] += _dec(p, size, sw) == 1


cdef class Atomics:
    """Atomic load/store/xchg/cas/fetch_* on fields of a writable buffer.

    `byte_order` is the emulated machine's ("little" or "big"); every op may
    override it per call with `big=True/False`.  Values are Python ints;
    `signed=True` reads a field as two's complement.  `cas` returns the value
    it found, as the kernel's cmpxchg does: it swapped iff that equals
    `expected`.

    Every op converts all its Python arguments (which may run Python code:
    `__index__`, `__bool__`) before it forms the field's pointer, and counts
    itself in flight from then until its hardware operation is done;
    `release()` refuses while any op is in flight (another thread's op runs
    without the GIL), so the buffer cannot be given back and unmapped under it.
    """
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef readonly Py_ssize_t length
    cdef readonly bint big
    cdef readonly bint release_gil
    cdef bint host_big
    cdef Py_ssize_t inflight  # ops between enter() and the end of their access

    def __cinit__(self, object buf, str byte_order="little", bint release_gil=True):
        if byte_order not in ("little", "big"):
            raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
        PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE | PyBUF_SIMPLE)
        self.has_view = True
        self.base = <char *>self.view.buf
        self.length = self.view.len
        self.big = byte_order == "big"
        self.host_big = ko_host_big()
        self.release_gil = release_gil

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)

    def release(self):
        """Give the buffer back (the mapping may be closed after this).

        BufferError while an op of another thread is still on the buffer."""
        if self.inflight:
            raise BufferError(f"cannot release the buffer: {self.inflight} operation(s) on it in flight")
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self.base = NULL
            self.length = 0

    @property
    def byte_order(self):
        return "big" if self.big else "little"

    cdef inline char *ptr(self, Py_ssize_t off, int size) except NULL:
        if size != 1 and size != 2 and size != 4 and size != 8:
            raise ValueError(f"field size must be 1, 2, 4 or 8 bytes, not {size}")
        if not self.has_view:
            raise ValueError("atomics released: the buffer is no longer bound")
        if off < 0 or off > self.length - size:
            raise IndexError(f"offset {off} (+{size}) out of bounds of a {self.length}-byte buffer")
        if (<size_t>(self.base + off)) & (size - 1):
            raise ValueError(f"offset {off} is not aligned for a {size}-byte field")
        return self.base + off

    cdef inline char *enter(self, Py_ssize_t off, int size) except NULL:
        """The field's checked pointer, counted in flight: call it after every
        conversion of the op's Python arguments, and end with leave()."""
        cdef char *p = self.ptr(off, size)
        self.inflight += 1
        return p

    cdef inline void leave(self) noexcept:
        self.inflight -= 1

    cdef inline int swap(self, object big) except -1:
        if big is None:
            return self.big != self.host_big
        return (<bint>big) != self.host_big

    def load(self, Py_ssize_t off, int size, bint signed=False, int order=SEQ_CST, big=None):
        cdef int sw = self.swap(big)
        cdef uint64_t r
        cdef char *p
        if order != SEQ_CST:
            _check_order(order, True, False)
        p = self.enter(off, size)
        if self.release_gil:
            with nogil:
                r = ko_load(p, size, sw, order)
        else:
            r = ko_load(p, size, sw, order)
        self.leave()
        return _from_bits(r, size, signed)

    def store(self, Py_ssize_t off, int size, object value, int order=SEQ_CST, big=None):
        cdef uint64_t v = _to_bits(value, size)
        cdef int sw = self.swap(big)
        cdef char *p
        if order != SEQ_CST:
            _check_order(order, False, True)
        p = self.enter(off, size)
        if self.release_gil:
            with nogil:
                ko_store(p, size, sw, v, order)
        else:
            ko_store(p, size, sw, v, order)
        self.leave()

    def xchg(self, Py_ssize_t off, int size, object value, bint signed=False, int order=SEQ_CST, big=None):
        cdef uint64_t v = _to_bits(value, size)
        cdef int sw = self.swap(big)
        cdef uint64_t r
        cdef char *p
        if order != SEQ_CST:
            _check_order(order, False, False)
        p = self.enter(off, size)
        if self.release_gil:
            with nogil:
                r = _xchg(p, size, sw, v, order)
        else:
            r = _xchg(p, size, sw, v, order)
        self.leave()
        return _from_bits(r, size, signed)

    def cas(self, Py_ssize_t off, int size, object expected, object desired, bint signed=False,
            int order=SEQ_CST, big=None):
        cdef uint64_t e = _to_bits(expected, size)
        cdef uint64_t d = _to_bits(desired, size)
        cdef int sw = self.swap(big)
        cdef uint64_t r
        cdef char *p
        if order != SEQ_CST:
            _check_order(order, False, False)
        p = self.enter(off, size)
        if self.release_gil:
            with nogil:
                r = _cas(p, size, sw, e, d, order)
        else:
            r = _cas(p, size, sw, e, d, order)
        self.leave()
        return _from_bits(r, size, signed)

    cdef object _fetch(self, Py_ssize_t off, int size, int op, object value, bint signed, int order, object big):
        cdef uint64_t v = _to_bits(value, size)
        cdef int sw = self.swap(big)
        cdef uint64_t r
        cdef char *p
        if order != SEQ_CST:
            _check_order(order, False, False)
        p = self.enter(off, size)
        if self.release_gil:
            with nogil:
                r = _fetch_op(p, size, sw, op, v, order)
        else:
            r = _fetch_op(p, size, sw, op, v, order)
        self.leave()
        return _from_bits(r, size, signed)

    def fetch_add(self, Py_ssize_t off, int size, object delta, bint signed=False, int order=SEQ_CST, big=None):
        """Add `delta` (negative subtracts), wrapping at the field width; return the old value."""
        return self._fetch(off, size, KO_ADD, delta, signed, order, big)

    def fetch_sub(self, Py_ssize_t off, int size, object delta, bint signed=False, int order=SEQ_CST, big=None):
        """Subtract `delta`, wrapping at the field width; return the old value."""
        return self._fetch(off, size, KO_SUB, delta, signed, order, big)

    def fetch_and(self, Py_ssize_t off, int size, object mask, bint signed=False, int order=SEQ_CST, big=None):
        return self._fetch(off, size, KO_AND, mask, signed, order, big)

    def fetch_or(self, Py_ssize_t off, int size, object mask, bint signed=False, int order=SEQ_CST, big=None):
        return self._fetch(off, size, KO_OR, mask, signed, order, big)

    def fetch_xor(self, Py_ssize_t off, int size, object mask, bint signed=False, int order=SEQ_CST, big=None):
        return self._fetch(off, size, KO_XOR, mask, signed, order, big)

    # -- the kernel's atomic_t helpers (4-byte signed counter) ------------
    def atomic_read(self, Py_ssize_t off):
        return self.load(off, 4, True)

    def atomic_set(self, Py_ssize_t off, int value):
        self.store(off, 4, value)

    def atomic_inc_not_zero(self, Py_ssize_t off):
        """Increment unless zero (get_page_unless_zero); True if incremented."""
        cdef int sw = self.swap(None)
        cdef bint ok
        cdef char *p = self.enter(off, 4)
        with nogil:
            ok = _inc_not_zero(p, 4, sw) != 0
        self.leave()
        return ok

    def atomic_dec_and_test(self, Py_ssize_t off):
        """Decrement; True if the result is zero (put_page_testzero)."""
        cdef int sw = self.swap(None)
        cdef bint z
        cdef char *p = self.enter(off, 4)
        with nogil:
            z = _dec(p, 4, sw) == 1
        self.leave()
        return z

    def inc_not_zero(self, Py_ssize_t off, int size, big=None):
        """atomic_inc_not_zero on a field of any width (atomic64_inc_not_zero on 8 bytes)."""
        cdef int sw = self.swap(big)
        cdef bint ok
        cdef char *p = self.enter(off, size)
        with nogil:
            ok = _inc_not_zero(p, size, sw) != 0
        self.leave()
        return ok

    def dec_and_test(self, Py_ssize_t off, int size, big=None):
        """atomic_dec_and_test on a field of any width (atomic64_dec_and_test on 8 bytes)."""
        cdef int sw = self.swap(big)
        cdef bint z
        cdef char *p = self.enter(off, size)
        with nogil:
            z = _dec(p, size, sw) == 1
        self.leave()
        return z

    def atomic_cmpxchg(self, Py_ssize_t off, int old, int new):
        """cmpxchg on an atomic_t; page_freeze_refs(page, n) is cmpxchg(n, 0) == n."""
        return self.cas(off, 4, old, new, True)

    def loop_cas_increment(self, Py_ssize_t off, int size, Py_ssize_t n):
        """n CAS-loop increments of one field without the GIL (benchmarks, tests).

        Signals are checked every 2**20 increments, so a huge n can be interrupted."""
        if n < 0:
            raise ValueError(f"increment count must be >= 0, not {n}")
        self._loop(_L_CAS, off, size, n, 1, None)

    def loop_rmw(self, str op, Py_ssize_t off, int size, Py_ssize_t n, object arg=1, big=None):
        """n iterations of one read-modify-write helper on one field, without the
        GIL: the multi-process exact-count tests' workloads. Returns (x, y):

          op            each iteration                            x, y
          cas           CAS-loop increment by arg                 0, 0
          fetch_add     fetch_add(arg)                            0, 0
          fetch_sub     fetch_sub(arg)                            0, 0
          xchg          xchg(arg + i), i = 0..n-1                 sum, sum of squares of the old
                                                                  values, mod 2**64
          fetch_or,     test_and_set_bit of the bits arg by       sets that found them clear,
          fetch_and     fetch_or, test_and_clear_bit by fetch_and clears that found them set
          fetch_xor     the same, both by fetch_xor               the same
          inc_not_zero  atomic_inc_not_zero                       increments, 0
          dec_and_test  atomic_dec_and_test                       times it reached 0, 0

        Signals are checked every 2**20 iterations, so a huge n can be interrupted."""
        kind = _LOOPS.get(op)
        if kind is None:
            raise ValueError(f"unknown loop op {op!r}; choose from {', '.join(_LOOPS)}")
        if n < 0:
            raise ValueError(f"iteration count must be >= 0, not {n}")
        return self._loop(kind, off, size, n, arg, big)

    cdef tuple _loop(self, int kind, Py_ssize_t off, int size, Py_ssize_t n, object arg, object big):
        cdef uint64_t v = _to_bits(arg, size)
        cdef int sw = self.swap(big)
        cdef Py_ssize_t chunk
        cdef uint64_t x = 0, y = 0
        cdef char *p = self.enter(off, size)
        try:
            while n > 0:
                chunk = n if n < _LOOP_CHUNK else _LOOP_CHUNK
                with nogil:
                    _loop(kind, p, size, sw, v, chunk, &x, &y)
                n -= chunk
                v = (v + <uint64_t>chunk) & ko_mask(size) if kind == _L_XCHG else v
                PyErr_CheckSignals()  # a handler may raise; release() still refuses here
        finally:
            self.leave()
        return (x, y)
