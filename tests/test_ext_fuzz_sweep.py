"""Hostile arguments to the compiled sweep (`emu._ksm_sweep`) raise; they never crash.

Each call that could reach outside its buffer runs in a forked child over a
guarded buffer (tests/support/guarded.py says why); each entry point also has
a valid call at the edge of the buffer, so the checks refuse only what is out
of bounds.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.guarded import I64_MAX, I64_MIN, OUT_OF_RANGE, PAGE, U64_MAX, forked, guarded, readonly_buffer
from support.guarded import ints as _ints

from emu._ksm_sweep import sweep_get_ksm_page

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
