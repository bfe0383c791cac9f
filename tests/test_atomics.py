"""emu._atomics in one process: byte order, widths, signedness, checks, orders."""

import mmap

import pytest

from emu import _atomics
from emu._atomics import ACQ_REL, ACQUIRE, RELAXED, RELEASE, Atomics


@pytest.fixture
def buf():
    m = mmap.mmap(-1, 4096)
    yield m


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("order", ["little", "big"])
def test_store_load_bytes(buf, size, order):
    a = Atomics(buf, order)
    v = int.from_bytes(bytes(range(1, size + 1)), "big")
    a.store(64, size, v)
    assert bytes(buf[64:64 + size]) == v.to_bytes(size, order)
    assert a.load(64, size) == v
    a.release()


@pytest.mark.parametrize("order", ["little", "big"])
def test_ops_big_and_little(buf, order):
    a = Atomics(buf, order)
    a.store(0, 8, 0x00000000FFFFFFFF)
    assert a.fetch_add(0, 8, 1) == 0xFFFFFFFF  # carry across bytes
    assert bytes(buf[0:8]) == (1 << 32).to_bytes(8, order)
    assert a.cas(0, 8, 1 << 32, 7) == 1 << 32 and a.load(0, 8) == 7
    assert a.cas(0, 8, 1, 9) == 7 and a.load(0, 8) == 7  # failed CAS leaves it
    assert a.xchg(0, 8, 5) == 7
    assert a.fetch_or(0, 8, 0xF0) == 5 and a.fetch_and(0, 8, 0x30) == 0xF5
    assert a.fetch_xor(0, 8, 0xFF) == 0x30 and a.load(0, 8) == 0xCF
    a.store(8, 4, -1)
    assert a.load(8, 4) == 0xFFFFFFFF and a.load(8, 4, signed=True) == -1
    assert a.fetch_add(8, 4, 1, signed=True) == -1 and a.load(8, 4) == 0  # wraps
    assert a.fetch_add(8, 4, -2, signed=True) == 0 and a.load(8, 4, signed=True) == -2
    a.store(12, 2, 0x1234)
    assert bytes(buf[12:14]) == (0x1234).to_bytes(2, order)
    assert a.fetch_add(12, 2, 0xFFFF) == 0x1234 and a.load(12, 2) == 0x1233


def test_per_call_byte_order_override(buf):
    a = Atomics(buf, "little")
    a.store(0, 4, 0x11223344, big=True)
    assert bytes(buf[0:4]) == bytes.fromhex("11223344")
    assert a.load(0, 4) == 0x44332211


@pytest.mark.parametrize("off,size,exc,msg", [
    (4093, 4, IndexError, "out of bounds"),
    (-1, 1, IndexError, "out of bounds"),
    (4096, 1, IndexError, "out of bounds"),
    (2, 4, ValueError, "not aligned"),
    (4, 8, ValueError, "not aligned"),
    (0, 3, ValueError, "1, 2, 4 or 8"),
])
def test_bad_offsets_raise(buf, off, size, exc, msg):
    a = Atomics(buf)
    for call in (lambda: a.load(off, size), lambda: a.store(off, size, 1),
                 lambda: a.cas(off, size, 0, 1), lambda: a.fetch_add(off, size, 1)):
        with pytest.raises(exc, match=msg):
            call()


def test_value_range(buf):
    a = Atomics(buf)
    with pytest.raises(OverflowError):
        a.store(0, 1, 256)
    with pytest.raises(OverflowError):
        a.store(0, 1, -129)
    with pytest.raises(OverflowError):
        a.store(0, 8, 1 << 64)
    with pytest.raises(TypeError):
        a.store(0, 8, "x")
    a.store(0, 1, -128)
    assert a.load(0, 1) == 0x80
    a.store(0, 8, -1)
    assert a.load(0, 8) == (1 << 64) - 1


def test_orders(buf):
    a = Atomics(buf)
    a.store(0, 4, 1, order=RELEASE)
    assert a.load(0, 4, order=ACQUIRE) == 1
    assert a.load(0, 4, order=RELAXED) == 1
    assert a.cas(0, 4, 1, 2, order=ACQ_REL) == 1
    with pytest.raises(ValueError, match="load cannot have release"):
        a.load(0, 4, order=RELEASE)
    with pytest.raises(ValueError, match="store cannot have acquire"):
        a.store(0, 4, 1, order=ACQUIRE)
    with pytest.raises(ValueError, match="unknown memory order"):
        a.load(0, 4, order=99)


def test_buffer_is_pinned_and_released(buf):
    a = Atomics(buf)
    with pytest.raises(BufferError):
        buf.close()  # cannot unmap under the atomics
    a.release()
    with pytest.raises(ValueError, match="released"):
        a.load(0, 4)
    buf.close()


def test_readonly_buffer_refused():
    with pytest.raises(BufferError):
        Atomics(b"\0" * 16)


def test_kernel_atomic_helpers(buf):
    a = Atomics(buf, "big")
    a.atomic_set(0, 2)
    assert a.atomic_inc_not_zero(0) and a.atomic_read(0) == 3
    assert not a.atomic_dec_and_test(0) and not a.atomic_dec_and_test(0)
    assert a.atomic_dec_and_test(0) and a.atomic_read(0) == 0
    assert not a.atomic_inc_not_zero(0) and a.atomic_read(0) == 0
    a.atomic_set(0, 1)
    assert a.atomic_cmpxchg(0, 2, 0) == 1 and a.atomic_read(0) == 1  # page_freeze_refs fails
    assert a.atomic_cmpxchg(0, 1, 0) == 1 and a.atomic_read(0) == 0  # and succeeds
    a.atomic_set(4, -1)
    assert a.atomic_read(4) == -1 and bytes(buf[4:8]) == b"\xff" * 4


@pytest.mark.parametrize("size", [4, 8])
@pytest.mark.parametrize("order", ["little", "big"])
def test_fetch_sub_inc_not_zero_dec_and_test(buf, size, order):
    a = Atomics(buf, order)
    top, mask = 1 << (8 * size - 8), (1 << 8 * size) - 1
    a.store(0, size, top)
    assert a.fetch_sub(0, size, 1) == top and a.load(0, size) == top - 1  # a borrow across every byte
    assert bytes(buf[0:size]) == (top - 1).to_bytes(size, order)
    assert a.inc_not_zero(0, size) and a.load(0, size) == top
    assert a.fetch_sub(0, size, -2) == top and a.load(0, size) == top + 2
    a.store(0, size, 2)
    assert not a.dec_and_test(0, size) and a.dec_and_test(0, size) and a.load(0, size) == 0
    assert not a.inc_not_zero(0, size) and a.load(0, size) == 0  # zero stays zero
    assert not a.dec_and_test(0, size) and a.load(0, size) == mask  # wraps, and it is not zero
    assert a.inc_not_zero(0, size) and a.load(0, size) == 0  # -1 + 1
    a.release()


LOOPS = {  # op: (arg, start, n, (x, y), final)
    "cas": (3, 10, 5, (0, 0), 25),
    "fetch_add": (3, 10, 5, (0, 0), 25),
    "fetch_sub": (3, 25, 5, (0, 0), 10),
    "xchg": (100, 7, 3, (7 + 100 + 101, 49 + 100 ** 2 + 101 ** 2), 102),
    "fetch_or": (0x0101, 0x80, 6, (6, 6), 0x80),
    "fetch_and": (0x0101, 0x80, 6, (6, 6), 0x80),
    "fetch_xor": (0x0101, 0x80, 6, (6, 6), 0x80),
    "inc_not_zero": (1, 5, 4, (4, 0), 9),
    "dec_and_test": (1, 3, 5, (1, 0), -2),
}


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("op", list(LOOPS))
def test_loop_rmw(buf, op, order):
    """Each workload alone: what it returns and leaves, in both byte orders."""
    arg, start, n, xy, final = LOOPS[op]
    a = Atomics(buf, "little")
    for size in (4, 8):
        a.store(8, size, start, big=order == "big")
        assert a.loop_rmw(op, 8, size, n, arg, big=order == "big") == xy
        assert a.load(8, size, signed=True, big=order == "big") == final
        assert bytes(buf[8:8 + size]) == final.to_bytes(size, order, signed=True)
    a.store(8, 4, 0)
    assert a.loop_rmw("inc_not_zero", 8, 4, 3) == (0, 0) and a.load(8, 4) == 0
    with pytest.raises(ValueError, match="unknown loop op"):
        a.loop_rmw("fetch_nand", 8, 4, 1)
    with pytest.raises(ValueError, match=">= 0"):
        a.loop_rmw("cas", 8, 4, -1)
    with pytest.raises(ValueError, match="not aligned"):
        a.loop_rmw("cas", 10, 4, 1)
    a.release()


def test_broken_ops_are_right_when_nobody_races_them(buf):
    """A read-then-store op differs from the real one only under a race: alone it
    returns and leaves the same, so the exact-count tests fail it for its lost updates."""
    def run(a):
        out = []
        for op, (arg, start, n, _, _) in LOOPS.items():
            for size, big in ((4, False), (8, True)):
                a.store(8, size, start, big=big)
                out += [a.loop_rmw(op, 8, size, n, arg, big=big), a.load(8, size, big=big)]
        a.store(16, 8, 5)
        out += [a.cas(16, 8, 5, 6), a.cas(16, 8, 5, 7), a.xchg(16, 8, 9), a.fetch_add(16, 8, 1),
                a.fetch_sub(16, 8, 2), a.fetch_or(16, 8, 0xF0), a.fetch_and(16, 8, 0x3F),
                a.fetch_xor(16, 8, 0xFF), a.load(16, 8)]
        a.atomic_set(24, 1)
        a.store(32, 8, 0)
        out += [a.atomic_inc_not_zero(24), a.atomic_dec_and_test(24), a.atomic_dec_and_test(24),
                a.atomic_inc_not_zero(24), a.atomic_read(24), a.inc_not_zero(32, 8), a.dec_and_test(32, 8)]
        return out

    a = Atomics(buf, "big")
    want = run(a)
    saved = _atomics.set_broken(_atomics.TEST_BREAKS)
    try:
        assert _atomics.broken() == set(_atomics.TEST_BREAKS)
        assert run(a) == want
    finally:
        _atomics.set_broken(saved)
    assert _atomics.broken() == saved
    a.release()


def test_set_broken_keeps_only_its_names():
    saved = _atomics.set_broken(("atomics-cas-read-then-store", "pte-lock-of-other-table", ""))
    try:
        assert _atomics.broken() == {"atomics-cas-read-then-store"}
        assert _atomics.set_broken(()) == {"atomics-cas-read-then-store"} and not _atomics.broken()
    finally:
        _atomics.set_broken(saved)
