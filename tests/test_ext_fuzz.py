"""Hostile arguments to the compiled extensions raise; they never crash.

Every call here that could reach memory outside its buffer runs in a forked
child (`forked`): a segfault or bus error fails that one test, naming the
signal, instead of killing the test run. The buffers lie between inaccessible
guard pages (`guarded`), so an access even one byte before or after them
faults at once instead of silently touching a neighbouring allocation.

For each entry point there is also a valid call at the edge of the buffer, so
the checks are shown not to refuse what is in bounds.
"""

from __future__ import annotations

import array
import ctypes
import functools
import mmap
import os
import select
import signal
import struct
import threading
import time
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu._atomics import RELEASE, Atomics
from emu._ksm_sweep import sweep_get_ksm_page

PAGE = mmap.PAGESIZE
I64_MIN, I64_MAX, U64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
CHILD_TIMEOUT = 60.0
OUT_OF_RANGE = (ValueError, IndexError, OverflowError)


# -- harness -----------------------------------------------------------------

def forked(fn):
    """Run the test body in a forked child; its exception, exit or signal fails the test."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            code = 0
            try:
                os.close(r)
                fn(*args, **kwargs)
            except BaseException:
                code = 1
                os.write(w, traceback.format_exc().encode()[-60000:])  # fits the pipe: never blocks
            os._exit(code)
        os.close(w)
        out = b""
        deadline = time.monotonic() + CHILD_TIMEOUT
        try:
            while True:
                ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail(f"child hung for {CHILD_TIMEOUT:.0f} s", pytrace=False)
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            pytest.fail(f"child killed by {signal.Signals(os.WTERMSIG(status)).name}", pytrace=False)
        if os.WEXITSTATUS(status):
            pytest.fail("in the child:\n" + out.decode(errors="replace"), pytrace=False)

    return run


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def guarded(npages: int) -> memoryview:
    """A writable, page-aligned buffer of npages pages with a PROT_NONE page on each side."""
    m = mmap.mmap(-1, (npages + 2) * PAGE)
    pin = ctypes.c_char.from_buffer(m)  # the mapping's address; pins it while the view lives
    addr = ctypes.addressof(pin)
    for a in (addr, addr + (npages + 1) * PAGE):
        if _libc.mprotect(a, PAGE, 0):  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")
    del pin
    return memoryview(m)[PAGE:(npages + 1) * PAGE]


def readonly_buffer() -> memoryview:
    return memoryview(mmap.mmap(-1, PAGE, prot=mmap.PROT_READ))


# -- the sweep's machine ---------------------------------------------------------
# 6 stable_nodes of 32 bytes (kpfn at +16), 8 struct pages of 64 bytes (_count
# at +8, mapping at +24), the shadow's 32-byte records (state +0, node +8).

N_NODES, NODE, KPFN = 6, 32, 16
NR_PAGES, PSIZE, COUNT, MAPPING = 8, 64, 8, 24
SHSIZE, SH_STATE, SH_NODE = 32, 0, 8
KSM_STATE = 2
NODES_ADDR = 0xFFFF880000100000
LIVE = [1, 1, 0, 1, 1, 1]
EXPECT_STATUS = [1, 2, 0, 5, 4, 2]  # ok, stale, not live, corrupt, false open, stale (count 0)
EXPECT_COUNTS = (1, 2, 0, 1, 1)  # ok, stale, freed, false_open, corrupt
SWEEP_NPAGES = 4
SWEEP_LEN = SWEEP_NPAGES * PAGE
REGION_BYTES = {"nodes": N_NODES * NODE, "mem_map": NR_PAGES * PSIZE, "shadow": NR_PAGES * SHSIZE}


def machine(order: str = "little", flush: str = "shadow") -> tuple[memoryview, dict]:
    """A small valid machine in a guarded buffer, one region (`flush`) ending on
    its last byte; returns the buffer and the sweep's keyword arguments."""
    buf = guarded(SWEEP_NPAGES)
    offs = {"nodes": 0, "mem_map": PAGE, "shadow": 2 * PAGE}
    offs[flush] = SWEEP_LEN - REGION_BYTES[flush]
    o = "<" if order == "little" else ">"

    def node(i, kpfn):
        struct.pack_into(o + "Q", buf, offs["nodes"] + i * NODE + KPFN, kpfn)

    def page(pfn, mapping, count):
        struct.pack_into(o + "Q", buf, offs["mem_map"] + pfn * PSIZE + MAPPING, mapping)
        struct.pack_into(o + "i", buf, offs["mem_map"] + pfn * PSIZE + COUNT, count)

    def shadow(pfn, state, node_addr):
        struct.pack_into("=I", buf, offs["shadow"] + pfn * SHSIZE + SH_STATE, state)
        struct.pack_into("=Q", buf, offs["shadow"] + pfn * SHSIZE + SH_NODE, node_addr)

    key = [NODES_ADDR + i * NODE + 3 for i in range(N_NODES)]
    node(0, 1), page(1, key[0], 1), shadow(1, KSM_STATE, key[0] - 3)  # ok
    node(1, 2), page(2, 0, 0)  # stale: its page was freed
    node(2, 3)  # not live
    node(3, 1000)  # corrupt: kpfn out of range
    node(4, 4), page(4, key[4], 1), shadow(4, 1, 0)  # the keyhole opens on a page that is not KSM
    node(5, 7), page(7, key[5], 0)  # mid-free: count 0, still keyed
    kw = dict(nodes_off=offs["nodes"], node_size=NODE, kpfn_rel=KPFN, nodes_addr=NODES_ADDR,
              live=np.array(LIVE, np.uint8), mem_map_off=offs["mem_map"], page_size=PSIZE,
              nr_pages=NR_PAGES, mapping_rel=MAPPING, count_rel=COUNT, word=8,
              status=np.zeros(N_NODES, np.uint8), shadow_off=offs["shadow"], shadow_size=SHSIZE,
              shadow_state_rel=SH_STATE, shadow_node_rel=SH_NODE, ksm_state=KSM_STATE)
    return buf, kw


_OWN = object()


def _sweep(over: dict | None = None, order: str = "little", buf=_OWN):
    """The sweep over the valid machine, with some arguments (or the buffer) replaced."""
    mbuf, kw = machine(order)
    kw.update(over or {})
    return sweep_get_ksm_page(mbuf if buf is _OWN else buf, order, **kw), kw


# -- sweep: valid calls ---------------------------------------------------------

@pytest.mark.parametrize("flush", ["nodes", "mem_map", "shadow"])
@pytest.mark.parametrize("order", ["little", "big"])
def test_sweep_valid_machine(order, flush):
    """Each region may end on the buffer's last byte; the counts and statuses are the expected ones."""
    buf, kw = machine(order, flush)
    assert sweep_get_ksm_page(buf, order, **kw) == EXPECT_COUNTS
    assert kw["status"].tolist() == EXPECT_STATUS
    o = "<" if order == "little" else ">"
    for pfn, count in ((1, 1), (4, 1), (7, 0)):  # every reference taken was put back
        assert struct.unpack_from(o + "i", buf, kw["mem_map_off"] + pfn * PSIZE + COUNT)[0] == count


def test_sweep_valid_without_shadow():
    (counts, kw) = _sweep({"shadow_off": -1})
    assert counts == (2, 2, 0, 0, 1)  # node 4 is not checked against the shadow


def test_sweep_valid_last_key_just_below_2_64():
    """nodes_addr as high as it can be: the last node's key is 2**64 - 1."""
    top = U64_MAX - 3 - (N_NODES - 1) * NODE
    counts, _ = _sweep({"nodes_addr": top})
    assert counts == (0, 4, 0, 0, 1)  # no key matches now, but no error either


def test_sweep_valid_empty():
    buf = guarded(1)[:0]
    kw = dict(nodes_off=0, node_size=NODE, kpfn_rel=KPFN, nodes_addr=NODES_ADDR, live=np.zeros(0, np.uint8),
              mem_map_off=0, page_size=PSIZE, nr_pages=0, mapping_rel=MAPPING, count_rel=COUNT, word=8,
              status=np.zeros(0, np.uint8), shadow_off=0)
    assert sweep_get_ksm_page(buf, "little", **kw) == (0, 0, 0, 0, 0)


def test_sweep_valid_odd_arrays():
    """live may be a bool array or strided; status strided: all in bounds."""
    buf, kw = machine()
    kw["live"] = np.repeat(np.array(LIVE, bool), 2)[::2]
    st_ = np.zeros(2 * N_NODES, np.uint8)
    kw["status"] = st_[::2]
    assert sweep_get_ksm_page(buf, "little", **kw) == EXPECT_COUNTS
    assert st_[::2].tolist() == EXPECT_STATUS and not st_[1::2].any()


# -- sweep: hostile calls ---------------------------------------------------------
L = SWEEP_LEN
SHADOW_AT = L - REGION_BYTES["shadow"]

# the audit's three crashes (SIGSEGV before the fix)
AUDIT = [
    ("node_size=2**62", {"node_size": 1 << 62}, IndexError),
    ("kpfn_rel=-64", {"kpfn_rel": -64}, ValueError),
    ("page_size=2**62", {"page_size": 1 << 62}, IndexError),
]

HOSTILE_SWEEP = AUDIT + [
    # offsets of the regions
    ("nodes_off=-8", {"nodes_off": -8}, IndexError),
    ("nodes_off=-2**63", {"nodes_off": I64_MIN}, IndexError),
    ("nodes_off=2**62", {"nodes_off": 1 << 62}, IndexError),
    ("nodes_off=2**63-1", {"nodes_off": I64_MAX}, IndexError),
    ("nodes_off=2**64-1", {"nodes_off": U64_MAX}, OverflowError),
    ("nodes_off=len", {"nodes_off": L}, IndexError),
    ("nodes_off=one-word-past", {"nodes_off": L - REGION_BYTES["nodes"] + 8}, IndexError),
    ("nodes_off=misaligned", {"nodes_off": 4}, ValueError),
    ("mem_map_off=-64", {"mem_map_off": -64}, IndexError),
    ("mem_map_off=len", {"mem_map_off": L}, IndexError),
    ("mem_map_off=2**63-1", {"mem_map_off": I64_MAX}, IndexError),
    ("mem_map_off=-2**63", {"mem_map_off": I64_MIN}, IndexError),
    ("mem_map_off=one-word-past", {"mem_map_off": L - REGION_BYTES["mem_map"] + 8}, IndexError),
    ("mem_map_off=misaligned", {"mem_map_off": PAGE + 4}, ValueError),
    ("shadow_off=-2", {"shadow_off": -2}, ValueError),
    ("shadow_off=-2**63", {"shadow_off": I64_MIN}, ValueError),
    ("shadow_off=2**62", {"shadow_off": 1 << 62}, IndexError),
    ("shadow_off=len", {"shadow_off": L}, IndexError),
    ("shadow_off=one-word-past", {"shadow_off": SHADOW_AT + 8}, IndexError),
    ("shadow_off=misaligned", {"shadow_off": 2 * PAGE + 4}, ValueError),
    # record sizes
    ("node_size=0", {"node_size": 0}, ValueError),
    ("node_size=-32", {"node_size": -32}, ValueError),
    ("node_size=-2**63", {"node_size": I64_MIN}, ValueError),
    ("node_size=2**63-1", {"node_size": I64_MAX}, ValueError),
    ("node_size=2**63-8", {"node_size": I64_MAX - 7}, IndexError),
    ("node_size=2**64-1", {"node_size": U64_MAX}, OverflowError),
    ("node_size=misaligned", {"node_size": 36}, ValueError),
    ("node_size=kpfn-outside", {"node_size": 16}, ValueError),
    ("page_size=0", {"page_size": 0}, ValueError),
    ("page_size=-64", {"page_size": -64}, ValueError),
    ("page_size=2**63-8", {"page_size": I64_MAX - 7}, IndexError),
    ("page_size=misaligned", {"page_size": 60}, ValueError),
    ("page_size=mapping-outside", {"page_size": 24}, ValueError),
    ("shadow_size=0", {"shadow_size": 0}, ValueError),
    ("shadow_size=-32", {"shadow_size": -32}, ValueError),
    ("shadow_size=2**62", {"shadow_size": 1 << 62}, IndexError),
    ("shadow_size=misaligned", {"shadow_size": 12}, ValueError),
    ("shadow_size=node-outside", {"shadow_size": 8}, ValueError),
    # counts
    ("nr_pages=-1", {"nr_pages": -1}, ValueError),
    ("nr_pages=2**62", {"nr_pages": 1 << 62}, IndexError),
    ("nr_pages=2**63-1", {"nr_pages": I64_MAX}, IndexError),
    ("nr_pages=one-past", {"nr_pages": NR_PAGES + 1}, IndexError),  # the shadow ends on the last byte
    ("nr_pages=2**64-1", {"nr_pages": U64_MAX}, OverflowError),
    # fields relative to their records
    ("kpfn_rel=-8", {"kpfn_rel": -8}, ValueError),
    ("kpfn_rel=-2**63", {"kpfn_rel": I64_MIN}, ValueError),
    ("kpfn_rel=2**63-1", {"kpfn_rel": I64_MAX}, ValueError),
    ("kpfn_rel=past-record", {"kpfn_rel": NODE - 4}, ValueError),
    ("kpfn_rel=record-size", {"kpfn_rel": NODE}, ValueError),
    ("kpfn_rel=misaligned", {"kpfn_rel": 4}, ValueError),
    ("mapping_rel=-8", {"mapping_rel": -8}, ValueError),
    ("mapping_rel=-2**63", {"mapping_rel": I64_MIN}, ValueError),
    ("mapping_rel=2**63-1", {"mapping_rel": I64_MAX}, ValueError),
    ("mapping_rel=past-record", {"mapping_rel": PSIZE - 4}, ValueError),
    ("mapping_rel=misaligned", {"mapping_rel": 12}, ValueError),
    ("count_rel=-4", {"count_rel": -4}, ValueError),
    ("count_rel=2**63-1", {"count_rel": I64_MAX}, ValueError),
    ("count_rel=past-record", {"count_rel": PSIZE - 2}, ValueError),
    ("count_rel=record-size", {"count_rel": PSIZE}, ValueError),
    ("count_rel=misaligned", {"count_rel": 2}, ValueError),
    ("shadow_state_rel=-4", {"shadow_state_rel": -4}, ValueError),
    ("shadow_state_rel=-2**40", {"shadow_state_rel": -(1 << 40)}, ValueError),
    ("shadow_state_rel=-2**63", {"shadow_state_rel": I64_MIN}, ValueError),
    ("shadow_state_rel=2**63-1", {"shadow_state_rel": I64_MAX}, ValueError),
    ("shadow_state_rel=past-record", {"shadow_state_rel": SHSIZE - 2}, ValueError),
    ("shadow_state_rel=misaligned", {"shadow_state_rel": 2}, ValueError),
    ("shadow_node_rel=-8", {"shadow_node_rel": -8}, ValueError),
    ("shadow_node_rel=-2**40", {"shadow_node_rel": -(1 << 40)}, ValueError),
    ("shadow_node_rel=2**63-1", {"shadow_node_rel": I64_MAX}, ValueError),
    ("shadow_node_rel=past-record", {"shadow_node_rel": SHSIZE - 4}, ValueError),
    ("shadow_node_rel=misaligned", {"shadow_node_rel": 4}, ValueError),
    # the keys
    ("nodes_addr=2**64-1", {"nodes_addr": U64_MAX}, ValueError),
    ("nodes_addr=last-key-wraps", {"nodes_addr": U64_MAX - 2 - (N_NODES - 1) * NODE}, ValueError),
    ("nodes_addr=-1", {"nodes_addr": -1}, OverflowError),
    ("nodes_addr=2**64", {"nodes_addr": 1 << 64}, OverflowError),
    # other scalars
    ("word=0", {"word": 0}, ValueError),
    ("word=2", {"word": 2}, ValueError),
    ("word=16", {"word": 16}, ValueError),
    ("word=-8", {"word": -8}, ValueError),
    ("word=2**62", {"word": 1 << 62}, OverflowError),
    ("ksm_state=-1", {"ksm_state": -1}, OverflowError),
    ("ksm_state=2**32", {"ksm_state": 1 << 32}, OverflowError),
    # live and status
    ("live=None", {"live": None}, TypeError),
    ("status=None", {"status": None}, TypeError),
    ("live,status=None", {"live": None, "status": None}, TypeError),
    ("status=short", {"status": np.zeros(N_NODES - 1, np.uint8)}, ValueError),
    ("status=long", {"status": np.zeros(N_NODES + 1, np.uint8)}, ValueError),
    ("status=empty", {"status": np.zeros(0, np.uint8)}, ValueError),
    ("live=int32", {"live": np.ones(N_NODES, np.int32)}, ValueError),
    ("live=float64", {"live": np.ones(N_NODES)}, ValueError),
    ("live=2d", {"live": np.ones((N_NODES, 1), np.uint8)}, ValueError),
    ("status=int8", {"status": np.zeros(N_NODES, np.int8)}, ValueError),
    ("status=uint64", {"status": np.zeros(N_NODES, np.uint64)}, ValueError),
    ("status=read-only", {"status": "read-only"}, ValueError),
]


def _resolve(over: dict) -> dict:
    """The overrides, with a fresh read-only status array where one is asked for."""
    over = dict(over)
    if isinstance(over.get("status"), str):
        ro = np.zeros(N_NODES, np.uint8)
        ro.setflags(write=False)
        over["status"] = ro
    return over


@pytest.mark.parametrize("over,exc", [pytest.param(o, e, id=i) for i, o, e in HOSTILE_SWEEP])
@forked
def test_sweep_hostile_argument_raises(over, exc):
    with pytest.raises(exc):
        _sweep(_resolve(over))


@pytest.mark.parametrize("order", ["middle", "", None])
@forked
def test_sweep_bad_byte_order_raises(order):
    buf, kw = machine()
    with pytest.raises(ValueError):
        sweep_get_ksm_page(buf, order, **kw)


@pytest.mark.parametrize("make,exc", [
    pytest.param(readonly_buffer, BufferError, id="read-only-mmap"),
    pytest.param(lambda: bytes(SWEEP_LEN), BufferError, id="bytes"),
    pytest.param(lambda: guarded(SWEEP_NPAGES + 1)[::2], BufferError, id="non-contiguous"),
    pytest.param(lambda: guarded(SWEEP_NPAGES + 1)[4:], ValueError, id="misaligned"),
    pytest.param(lambda: guarded(1)[:0], IndexError, id="empty"),
    pytest.param(lambda: guarded(1), IndexError, id="too-small"),
    pytest.param(lambda: None, TypeError, id="None"),
])
@forked
def test_sweep_hostile_buffer_raises(make, exc):
    with pytest.raises(exc):
        _sweep(buf=make())


@pytest.mark.parametrize("over,exc", [pytest.param(o, e, id=i) for i, o, e in AUDIT])
@forked
def test_sweep_audit_crashes_raise_one_line(over, exc):
    """The audit's three crashes: now one clear line naming the region or field."""
    with pytest.raises(exc) as ei:
        _sweep(over)
    msg = str(ei.value)
    assert "\n" not in msg and ("stable_node" in msg or "mem_map" in msg), msg


def _sweep_valid(kw: dict, length: int) -> bool:
    """The sweep's contract, restated: is this geometry inside the buffer?"""
    def region(off, stride, count, align):
        return 0 <= off <= length and count <= (length - off) // stride and off % align == 0

    def rec(stride, align, *fields):
        return stride > 0 and stride % align == 0 and all(0 <= r <= stride - s and r % s == 0
                                                          for r, s in fields)

    if not (rec(kw["node_size"], 8, (kw["kpfn_rel"], 8))
            and rec(kw["page_size"], 8, (kw["mapping_rel"], 8), (kw["count_rel"], 4))
            and rec(kw["shadow_size"], 8, (kw["shadow_state_rel"], 4), (kw["shadow_node_rel"], 8))):
        return False
    if kw["nr_pages"] < 0 or kw["shadow_off"] < -1:
        return False
    return (region(kw["nodes_off"], kw["node_size"], N_NODES, 8)
            and region(kw["mem_map_off"], kw["page_size"], kw["nr_pages"], 8)
            and (kw["shadow_off"] == -1 or region(kw["shadow_off"], kw["shadow_size"], kw["nr_pages"], 8)))


def _ints(lo: int, hi: int, edges: list[int]):
    return st.one_of(st.integers(lo, hi), st.sampled_from(edges), st.integers(I64_MIN, I64_MAX))


_OFF = _ints(-16, L + 16, [0, 8, L - 8, L, L + 8, -1, -2, -8, I64_MIN, I64_MAX, 1 << 62, U64_MAX])
_SIZE = _ints(-8, 256, [0, 8, 32, 64, 1 << 62, I64_MAX, I64_MAX - 7, I64_MIN, -1])
_REL = _ints(-16, 72, [0, 8, 24, 56, I64_MIN, I64_MAX, -(1 << 40)])


@pytest.mark.slow  # fuzz: 300 random cases
@forked
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from([("nodes_off", "node_size", "kpfn_rel"),
                              ("mem_map_off", "page_size", "mapping_rel"),
                              ("mem_map_off", "page_size", "count_rel"),
                              ("shadow_off", "shadow_size", "shadow_state_rel"),
                              ("shadow_off", "shadow_size", "shadow_node_rel"),
                              ("shadow_off", "nr_pages", "shadow_node_rel")]),
       off=_OFF, size=_SIZE, rel=_REL)
def test_sweep_random_geometry_in_bounds_or_raises(field, off, size, rel):
    buf, kw = machine()
    kw.update(dict(zip(field, (off, size, rel), strict=True)))
    if _sweep_valid(kw, L):
        counts = sweep_get_ksm_page(buf, "little", **kw)
        assert len(counts) == 5 and sum(counts) <= N_NODES
    else:
        with pytest.raises(OUT_OF_RANGE):
            sweep_get_ksm_page(buf, "little", **kw)


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
