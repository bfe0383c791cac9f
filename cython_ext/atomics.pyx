# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Atomic operations on a shared writable buffer, in the emulated byte order.

`Atomics(buf, byte_order)` binds to a writable buffer (the machine's mmap) and
holds its buffer export until `release()`, so the mapping cannot be closed
underneath it.  Every offset is checked for bounds and natural alignment
before a pointer is formed: a bad offset raises, it never crashes.  The GIL is
released around each hardware operation and in the nogil loops.

The kernel's operations built on these (spinlocks, page references) are
Python over this accessor (emu.mm), so a controlled schedule sees each access.
"""

from libc.stdint cimport uint64_t, int64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "Python.h":
    unsigned long long PyLong_AsUnsignedLongLong(object) except? -1
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1

from ksm_atomic cimport (
    KO_ADD, KO_AND, KO_OR, KO_XOR, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE,
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
    _LOOP_CHUNK = 1 << 20  # loop_cas_increment: increments per nogil stretch between signal checks


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
                r = ko_xchg(p, size, sw, v, order)
        else:
            r = ko_xchg(p, size, sw, v, order)
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
                r = ko_cas(p, size, sw, e, d, order)
        else:
            r = ko_cas(p, size, sw, e, d, order)
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
                r = ko_fetch_op(p, size, sw, op, v, order)
        else:
            r = ko_fetch_op(p, size, sw, op, v, order)
        self.leave()
        return _from_bits(r, size, signed)

    def fetch_add(self, Py_ssize_t off, int size, object delta, bint signed=False, int order=SEQ_CST, big=None):
        """Add `delta` (negative subtracts), wrapping at the field width; return the old value."""
        return self._fetch(off, size, KO_ADD, delta, signed, order, big)

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
        cdef int ok
        cdef char *p = self.enter(off, 4)
        with nogil:
            ok = _inc_not_zero(p, sw)
        self.leave()
        return bool(ok)

    def atomic_dec_and_test(self, Py_ssize_t off):
        """Decrement; True if the result is zero (put_page_testzero)."""
        cdef int sw = self.swap(None)
        cdef uint64_t old
        cdef char *p = self.enter(off, 4)
        with nogil:
            old = ko_fetch_op(p, 4, sw, KO_ADD, ko_mask(4), __ATOMIC_SEQ_CST)
        self.leave()
        return old == 1

    def atomic_cmpxchg(self, Py_ssize_t off, int old, int new):
        """cmpxchg on an atomic_t; page_freeze_refs(page, n) is cmpxchg(n, 0) == n."""
        return self.cas(off, 4, old, new, True)

    def loop_cas_increment(self, Py_ssize_t off, int size, Py_ssize_t n):
        """n CAS-loop increments of one field without the GIL (benchmarks, tests).

        Signals are checked every 2**20 increments, so a huge n can be interrupted."""
        cdef int sw = self.swap(None)
        cdef Py_ssize_t i, chunk
        cdef uint64_t old, seen, m
        cdef char *p
        if n < 0:
            raise ValueError(f"increment count must be >= 0, not {n}")
        p = self.enter(off, size)
        m = ko_mask(size)
        try:
            while n > 0:
                chunk = n if n < _LOOP_CHUNK else _LOOP_CHUNK
                with nogil:
                    for i in range(chunk):
                        old = ko_load(p, size, sw, __ATOMIC_RELAXED)
                        while True:
                            seen = ko_cas(p, size, sw, old, (old + 1) & m, __ATOMIC_SEQ_CST)
                            if seen == old:
                                break
                            old = seen
                n -= chunk
                PyErr_CheckSignals()  # a handler may raise; release() still refuses here
        finally:
            self.leave()


cdef inline int _inc_not_zero(char *p, int sw) nogil:
    cdef uint64_t c = ko_load(p, 4, sw, __ATOMIC_RELAXED), seen
    while c != 0:
        seen = ko_cas(p, 4, sw, c, (c + 1) & ko_mask(4), __ATOMIC_SEQ_CST)
        if seen == c:
            return 1
        c = seen
    return 0
