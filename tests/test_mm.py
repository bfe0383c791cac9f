"""mm and KSM through the real code paths, deterministically, in one process:
the seed's hazard on real bytes, refcount vs keyhole, and each invariant
catching a deliberately broken operation. The generic ones run on every
platform of word size x byte order."""

import numpy as np
import pytest
from worlds import PLATFORMS, World

from emu.check.shadow import ANON, DRIVER, FREE, KSM
from emu.check.violations import (
    V_BAD_PAGE,
    V_COUNT_NEGATIVE,
    V_DOUBLE_ALLOC,
    V_FALSE_OPEN,
    V_NODE_FREED_WITH_KEY,
)
from emu.layout import Layout
from emu.mm.ksm import free_stable_node, get_ksm_page
from emu.mm.ksm_nodes import item_addr, node_addr, node_idx, rmap_items_of, stable_node_kpfn
from emu.mm.ksm_scan import ksm_sweep, scan_slot
from emu.mm.memory import do_anonymous_page, pte_alloc_one
from emu.mm.page import page_content, page_mapping_raw, set_page_mapping
from emu.mm.page_alloc import _push, alloc_page, free_hot_cold_page, nr_free
from emu.mm.pgtable import pte
from emu.mm.refcount import get_page, page_count, page_freeze_refs, put_page
from emu.mm.rmap import try_to_unmap_one
from emu.mm.spinlock import spin_lock
from emu.records import SHADOW_DTYPE
from emu.roles.allocator import use_page

HOSTILE = dict(arch="ppc64", kernel="2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"],
               page_offset=0xDEAD4EACFF000000)  # stable_nodes at 0xdead4ead00000000


@pytest.fixture(params=list(PLATFORMS))
def platform(request):
    return PLATFORMS[request.param]


@pytest.fixture
def world(tmp_path):
    made = []

    def make(**kw):
        (tmp_path / str(len(made))).mkdir()
        w = World(tmp_path / str(len(made)), **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def test_merge_writes_real_bytes(world, platform):
    w = world(**platform)
    kpfn, node = w.merge_pair()
    mm = w.ksmd
    assert page_mapping_raw(mm, kpfn) == node_addr(mm, node) + 3
    assert mm.truth.get(kpfn, "state") == KSM and mm.truth.get(kpfn, "node") == node_addr(mm, node)
    assert stable_node_kpfn(mm, node) == kpfn and sorted(rmap_items_of(mm, node)) == [0, 1]
    assert page_count(mm, kpfn) == 2 and int(w.m.pages[kpfn]["_mapcount.counter"]) == 1
    nodes = w.m.region_array("stable_nodes", Layout(w.m.kernel.stable_node, w.m.cfg.byte_order).dtype)
    assert int(nodes[node]["kpfn"]) == kpfn
    assert int(nodes[node]["hlist.first"]) in {item_addr(mm, s) + mm.ri_hlist for s in (0, 1)}
    del nodes


def _reclaim_all(w, kpfn):
    a = w.mm(1, "reclaim")
    for s in rmap_items_of(a, node_idx(a, page_mapping_raw(a, kpfn) & ~3)):
        try_to_unmap_one(a, s, kpfn)


def test_keyhole_frees_at_once(world, platform):
    w = world(**platform)
    kpfn, node = w.merge_pair()
    free0 = nr_free(w.ksmd)
    _reclaim_all(w, kpfn)
    assert page_count(w.ksmd, kpfn) == 0 and w.ksmd.truth.get(kpfn, "state") == FREE
    assert page_mapping_raw(w.ksmd, kpfn) == 0 and nr_free(w.ksmd) == free0 + 1
    assert get_ksm_page(w.ksmd, w.tree, node) == -1  # stale: the node goes
    assert w.ksmd.counter("stable_nodes_removed") == 1 and not w.violations()


def test_refcount_holds_until_last_rmap_item(world, platform):
    w = world(protocol="refcount", **platform)
    kpfn, node = w.merge_pair()
    mm = w.ksmd
    assert page_count(mm, kpfn) == 3  # two ptes and the stable_node
    _reclaim_all(w, kpfn)
    assert page_count(mm, kpfn) == 1 and mm.truth.get(kpfn, "state") == KSM  # held by the node
    scan_slot(mm, w.tree, 0)  # ksmd comes round: one rmap_item goes
    assert page_count(mm, kpfn) == 1 and rmap_items_of(mm, node) == [1]
    scan_slot(mm, w.tree, 1)  # the last one: the node drops its reference
    assert page_count(mm, kpfn) == 0 and mm.truth.get(kpfn, "state") == FREE
    assert page_mapping_raw(mm, kpfn) == 0 and not w.violations()


def _hazard(world, cpu, **cfg):
    """The seed's case: a KSM page freed, reused as a page table whose ptl CPU `cpu` holds."""
    w = world(**cfg)
    kpfn, node = w.merge_pair()
    assert node_addr(w.ksmd, node) == w.m.region("stable_nodes").base
    _reclaim_all(w, kpfn)
    a = w.mm(cpu)
    pt = pte_alloc_one(a)
    assert pt == kpfn  # LIFO: the page just freed
    if w.m.cfg["USE_SPLIT_PTLOCKS"]:
        spin_lock(a, a.page_off(pt) + a.ptl_rel, a.ptl_model)
    return w, node, pt


def test_hazard_false_open_on_ppc64_2_6_32_cpu3(world):
    w, node, pt = _hazard(world, 3, **HOSTILE)
    assert page_mapping_raw(w.ksmd, pt) == 0xDEAD4EAD00000003 == node_addr(w.ksmd, node) + 3
    assert get_ksm_page(w.ksmd, w.tree, node) == pt  # the keyhole opens on a page table
    (v,) = w.violations()
    assert v["code"] == V_FALSE_OPEN and v["page_really_is"] == "pagetable"
    assert v["mapping_bytes"] == "de ad 4e ad 00 00 00 03"
    assert v["written_by"].startswith("ptl") and v["union_members"] == ["ptl.magic=0xdead4ead",
                                                                         "ptl.owner_cpu=0x3"]


def test_hazard_needs_cpu3(world):
    w, node, pt = _hazard(world, 2, **HOSTILE)
    assert page_mapping_raw(w.ksmd, pt) == 0xDEAD4EAD00000002
    assert get_ksm_page(w.ksmd, w.tree, node) == -1 and not w.violations()


def test_hazard_gone_in_2_6_33(world):
    w, node, pt = _hazard(world, 3, **(HOSTILE | {"kernel": "2.6.33"}))
    assert not w.m.cfg["USE_SPLIT_PTLOCKS"] and page_mapping_raw(w.ksmd, pt) == 0
    assert get_ksm_page(w.ksmd, w.tree, node) == -1 and not w.violations()


def test_ptl_label_only_where_ptl_lies_on_mapping(world):
    """A page table's mapping is reported as the ptl's bytes only when the ptl
    lies on mapping (x86_64 2.6.32 DEBUG_SPINLOCK), never where it does not."""
    for cfg, on in ((dict(arch="x86_64", kernel="2.6.32"), False),
                    (dict(arch="x86_64", kernel="2.6.32", enable=["DEBUG_SPINLOCK"]), True)):
        w = world(**cfg)
        pt = pte_alloc_one(w.mm(2))
        assert (w.ksmd.truth.get(pt, "writer") == 6) is on


def test_no_recheck_variant_opens_on_a_reused_page(world, platform):
    """The race no-recheck loses: mapping checked, then the page is freed and
    reused before get_page_unless_zero (the kernel's recheck catches it)."""
    for protocol, caught in (("keyhole", False), ("keyhole-no-recheck", True)):
        w = world(protocol=protocol, **platform)
        kpfn, node = w.merge_pair()
        key = node_addr(w.ksmd, node) + 3
        real_inc = w.ksmd.a.atomic_inc_not_zero

        def interrupt(off, _real=real_inc, _w=w, _k=kpfn):
            _reclaim_all(_w, _k)  # freed during the window ...
            a = _w.mm(2)
            assert alloc_page(a, ANON) == _k  # ... and reused
            set_page_mapping(a, _k, _w.obj.anon_vma[1] + 1, 1)
            return _real(off)

        w.ksmd.a = _Patched(w.ksmd.a, interrupt)
        assert page_mapping_raw(w.ksmd, kpfn) == key
        got = get_ksm_page(w.ksmd, w.tree, node)
        kinds = [v["code"] for v in w.violations()]
        assert (V_FALSE_OPEN in kinds) is caught and (got == kpfn) is caught


class _Patched:
    def __init__(self, a, inc):
        self._a, self.atomic_inc_not_zero = a, inc

    def __getattr__(self, name):
        return getattr(self._a, name)


# -- each invariant catches its deliberately broken operation ------------------

def test_count_below_zero_caught(world, platform):
    w = world(**platform)
    mm = w.ksmd
    pfn = alloc_page(mm, ANON)
    assert put_page(mm, pfn)
    assert not put_page(mm, pfn)  # a put too many
    assert [v["code"] for v in w.violations()] == [V_COUNT_NEGATIVE]
    assert page_count(mm, pfn) == 0  # not driven negative
    get_page(mm, pfn)  # a reference taken on a free page
    assert [v["code"] for v in w.violations()] == [V_COUNT_NEGATIVE] * 2
    assert page_count(mm, pfn) == 0  # not revived


def test_bad_page_caught(world, platform):
    w = world(**platform)
    pfn = alloc_page(w.ksmd, DRIVER)
    use_page(w.ksmd, DRIVER, pfn, {"driver": w.obj.driver[0]})
    put_page(w.ksmd, pfn)  # a driver that forgets to clear mapping before the put
    (v,) = w.violations()
    assert v["code"] == V_BAD_PAGE and v["free_pages_check"] == ["bad mapping"] and v["written_by"] == "driver pointer"
    assert v["mapping"] == hex(w.obj.driver[0])


def test_no_clear_variant_caught(world, platform):
    w = world(protocol="keyhole-no-clear", **platform)
    kpfn, node = w.merge_pair()
    _reclaim_all(w, kpfn)
    assert page_mapping_raw(w.ksmd, kpfn) == node_addr(w.ksmd, node) + 3  # the key survives the free
    assert get_ksm_page(w.ksmd, w.tree, node) == -1  # _count is 0: stale, and the node is freed ...
    kinds = [v["code"] for v in w.violations()]
    assert V_BAD_PAGE in kinds and V_NODE_FREED_WITH_KEY in kinds  # ... with its key still there


def test_double_alloc_caught(world, platform):
    w = world(**platform)
    pfn = alloc_page(w.ksmd, ANON)
    _push(w.ksmd, pfn)  # a broken free list hands it out again
    assert alloc_page(w.ksmd, ANON) == pfn
    assert [v["code"] for v in w.violations()] == [V_DOUBLE_ALLOC]


def test_stable_nodes_reused_lifo(world, platform):
    w = world(**platform)
    kpfn, node = w.merge_pair(0, 1, content=3)
    _reclaim_all(w, kpfn)
    assert get_ksm_page(w.ksmd, w.tree, node) == -1
    _, node2 = w.merge_pair(2, 3, content=4)
    assert node2 == node  # the freed node's address is the next one handed out


@pytest.mark.parametrize("arch", ["x86_64", "i386", "sparc64", "s390x", "mips64", "arm"])
def test_merge_on_every_arch(world, arch):
    w = world(arch=arch, enable=["CPU_CACHE_VIPT"] if arch == "arm" else [])
    kpfn, node = w.merge_pair()
    mm = w.ksmd
    raw = bytes(w.m.mm[mm.page_off(kpfn) + mm.mapping_rel:][:mm.word])
    assert raw == (node_addr(mm, node) + 3).to_bytes(mm.word, w.m.cfg.byte_order)
    _reclaim_all(w, kpfn)
    assert page_count(mm, kpfn) == 0 and not w.violations()


# -- the nogil sweep --------------------------------------------------------------

def test_sweep_matches_per_node_path(world, platform):
    w = world(**platform)
    pairs = [w.merge_pair(2 * i, 2 * i + 1, content=100 + i) for i in range(6)]
    for kpfn, _ in pairs[:2]:
        _reclaim_all(w, kpfn)  # two KSM pages freed: their nodes go stale
    ok, stale, freed, bad, corrupt = ksm_sweep(w.ksmd, w.tree)
    assert (ok, stale, freed, bad, corrupt) == (4, 2, 0, 0, 0)
    assert w.ksmd.counter("stable_nodes_removed") == 2
    assert [w.tree.live[n] for _, n in pairs] == [0, 0, 1, 1, 1, 1]
    for kpfn, _ in pairs[2:]:
        assert page_count(w.ksmd, kpfn) == 2  # every reference taken was put back
    assert not w.violations()


def test_sweep_catches_the_hazard(world):
    w, node, pt = _hazard(world, 3, **HOSTILE)
    ok, stale, freed, bad, corrupt = ksm_sweep(w.ksmd, w.tree)
    assert bad == 1 and ok == 0
    (v,) = w.violations()
    assert v["code"] == V_FALSE_OPEN and v["pfn"] == pt


def test_sweep_checks_geometry(world):
    from emu._ksm_sweep import sweep_get_ksm_page

    w = world()
    mm = w.ksmd
    live = np.ones(4, np.uint8)
    base = dict(nodes_off=mm.sn_off, node_size=mm.sn_size, kpfn_rel=mm.sn_kpfn, nodes_addr=mm.sn_base,
                live=live, mem_map_off=mm.mem_map, page_size=mm.psize, nr_pages=mm.geo.nr_pages,
                mapping_rel=mm.mapping_rel, count_rel=mm.count_rel, word=8, status=np.zeros(4, np.uint8))
    with pytest.raises(IndexError, match="exceed"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"nodes_off": w.m.size - 8}))
    with pytest.raises(ValueError, match="aligned"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"nodes_off": mm.sn_off + 4}))
    with pytest.raises(IndexError, match="exceed"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"nr_pages": 1 << 40}))
    with pytest.raises(ValueError, match="status"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"status": np.zeros(3, np.uint8)}))
    mm.a.store(mm.sn_off + mm.sn_kpfn, 8, 1 << 40)  # a corrupt node: kpfn out of range
    assert sweep_get_ksm_page(w.m.mm, "little", **base)[4] == 1


def test_node_freed_mid_free_is_counted_not_flagged(world, platform):
    """get_page_unless_zero fails on a page whose refs reclaim has frozen on
    its way to the free list: the node goes a moment before mapping is cleared."""
    w = world(**platform)
    kpfn, node = w.merge_pair()
    a = w.mm(1, "reclaim")
    get_page(a, kpfn)  # reclaim's own reference; then the ptes go
    for s in (0, 1):
        try_to_unmap_one(a, s, kpfn)
    assert page_freeze_refs(a, kpfn, 1)  # count 0, mapping still the key
    assert get_ksm_page(w.ksmd, w.tree, node) == -1
    assert w.ksmd.counter("nodes_freed_mid_free") == 1 and not w.violations()
    free_hot_cold_page(a, kpfn)
    assert page_mapping_raw(w.ksmd, kpfn) == 0 and not w.violations()


def test_node_freed_under_a_live_page_is_flagged(world, platform):
    w = world(**platform)
    kpfn, node = w.merge_pair()
    free_stable_node(w.ksmd, w.tree, node)  # deliberately broken: the page still maps and holds the key
    (v,) = w.violations()
    assert v["code"] == V_NODE_FREED_WITH_KEY and v["pfn"] == kpfn and v["page_count"] == 2


# -- page data apart from the shadow ------------------------------------------------------
def test_ksmd_reads_page_data_never_the_shadow(world, platform):
    """Pages' contents live in their own region (page_data): ksmd merges by them
    with the checker's shadow wiped, and the shadow keeps no content at all."""
    w = world(**platform)
    a = w.mm(2)
    for slot, content in ((0, 7), (1, 7), (2, 8)):
        assert do_anonymous_page(a, slot, w.obj.anon_vma[0], content)
    assert page_content(a, pte(a, 0)) == page_content(a, pte(a, 1)) == 7 and page_content(a, pte(a, 2)) == 8
    shadow = w.m.region("shadow")
    w.m.mm[shadow.offset:shadow.offset + shadow.size] = bytes(shadow.size)  # what the checks know: gone
    for slot in (0, 1, 2):
        scan_slot(w.ksmd, w.tree, slot)
    assert pte(a, 0) == pte(a, 1) != pte(a, 2)  # 0 and 1 merged by their data; 2's differs
    assert "content" not in SHADOW_DTYPE.names and "page_data" in w.m.regions
