"""numpy dtypes, reverse lookup and overlap analysis of the layout engine."""

import numpy as np
import pytest

from emu.kconfig import ARCHES, resolve
from emu.layout import Layout, LayoutError
from emu.structs import kernel_for


def page_layout(*a, **kw) -> Layout:
    cfg = resolve(*a, **kw)
    return Layout(kernel_for(cfg).page, cfg.byte_order, "page")


@pytest.mark.parametrize("arch", list(ARCHES))
@pytest.mark.parametrize("kernel", ["2.6.32", "2.6.33"])
def test_dtype_agrees_with_engine(arch, kernel):
    lay = page_layout(arch, kernel, enable=["PREEMPT", "LOCK_STAT"], split_ptlock_cpus=2)
    dt = lay.dtype
    assert dt.itemsize == lay.size
    for f in lay.leaves:
        sub, off = dt.fields[f.path][:2]
        assert off == f.offset and sub.itemsize == f.size
        if f.size > 1 and not sub.subdtype:
            assert sub.byteorder == (">" if lay.big else "<") or (sub.isnative and not lay.big)


def test_big_endian_field_bytes_and_union_overlap():
    """On ppc64 2.6.32 PREEMPT DEBUG_SPINLOCK the lock's magic and owner_cpu
    are page->mapping: write them through the dtype, read mapping back."""
    lay = page_layout("ppc64", "2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"])
    pages = np.zeros(2, lay.dtype)
    pages[1]["ptl.magic"] = 0xDEAD4EAD
    pages[1]["ptl.owner_cpu"] = 3
    raw = pages.view(np.uint8).reshape(2, lay.size)[1]
    m = lay.offset("mapping")
    assert bytes(raw[m:m + 8]) == bytes.fromhex("dead4ead00000003")
    assert int(pages[1]["mapping"]) == 0xDEAD4EAD00000003
    assert int(pages[1]["mapping"]) & 3 == 3  # PageKsm's low bits


def test_little_endian_counterpart():
    lay = page_layout("x86_64", "2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"])
    pages = np.zeros(1, lay.dtype)
    pages[0]["ptl.owner_cpu"] = 3
    assert int(pages[0]["mapping"]) == 3  # low 32 bits; magic is elsewhere
    assert lay.offset("ptl.magic") < lay.offset("mapping")


def test_member_at_lists_every_union_arm():
    lay = page_layout("ppc64", "2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"])
    labels = [c.label() for c in lay.member_at(lay.offset("mapping") + 4)]
    assert labels == ["mapping+0x4", "ptl.owner_cpu"]
    labels = [c.label() for c in lay.member_at(lay.offset("private") + 4)]
    assert "private+0x4" in labels and "ptl.break_lock" in labels and "slab+0x4" in labels


def test_overlap_bits_big_endian():
    lay = page_layout("ppc64", "2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"])
    _, _, bits = lay.overlap("mapping")
    got = {b.other.path: (b.member_bits, b.other_bits) for b in bits}
    assert got == {"ptl.magic": ((63, 32), (31, 0)), "ptl.owner_cpu": ((31, 0), (31, 0))}


def test_overlap_32bit_break_lock():
    """The seed's 32-bit GENERIC_LOCKBREAK case: break_lock lands in mapping."""
    lay = page_layout("ppc32", "2.6.33", enable=["PREEMPT"])
    _, _, bits = lay.overlap("mapping")
    assert [b.other.path for b in bits] == ["ptl.rlock.break_lock"]


def test_overlap_holes_reported():
    lay = page_layout("x86_64", "2.6.32", enable=["DEBUG_SPINLOCK"])
    m = lay.offset("mapping")
    assert lay.holes_in_other_arms("mapping", m + 4) == ["ptl"]
    assert lay.holes_in_other_arms("mapping", m) == []


def test_errors():
    lay = page_layout()
    with pytest.raises(LayoutError, match="no member 'nope'"):
        lay.field("nope")
    with pytest.raises(LayoutError, match="out of range"):
        lay.covers(lay.size, 1)
    with pytest.raises(LayoutError, match="out of range"):
        lay.covers(lay.size - 2, 4)
