"""mm and KSM through the real code paths, deterministically, in one process:
the seed's hazard on real bytes, refcount vs keyhole, and each invariant
catching a deliberately broken operation."""

import pytest

from emu.kconfig import resolve
from emu.launch import RunSpec, assign_cpus, decode_violation, setup
from emu.layout import Layout
from emu.mm.core import MM, V_BAD_PAGE, V_COUNT_NEGATIVE, V_DOUBLE_ALLOC, V_FALSE_OPEN, V_NODE_FREED_WITH_KEY
from emu.mm.ksm import Ksm
from emu.mm.page_alloc import _push, alloc_page, nr_free, put_page
from emu.mm.ptlock import PtLock
from emu.mm.rmap import PteLocks, do_anonymous_page, pte, zap_pte
from emu.mm.world import ANON, DRIVER, FREE, KSM, PAGETABLE, VIOLATION_DTYPE
from emu.roles.allocator import use_page

HOSTILE = dict(arch="ppc64", kernel="2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"],
               page_offset=0xDEAD4EACFF000000)  # stable_nodes at 0xdead4ead00000000


class World:
    def __init__(self, tmp_path, protocol="keyhole", pages=1024, **cfg):
        spec = RunSpec(cfg=resolve(**cfg), protocol=protocol, pages=pages,
                       state=str(tmp_path / "w.state"), allocators=2)
        spec.cpus = assign_cpus(spec, {})
        self.m, self.geo, self.obj = setup(spec)
        self.ksmd = self.mm(0)
        self.locks = PteLocks(self.ksmd, 2)
        self.ksm = Ksm(self.ksmd, self.locks)

    def mm(self, cpu, protocol=None):
        return MM(self.m, self.geo, role=3, cpu=cpu, task=0xC0000000 + cpu * 0x1000,
                  protocol=protocol or self.m.protocol)

    def violations(self):
        n = self.ksmd.h.load(self.ksmd.viol, 8)
        import numpy as np

        recs = self.m.region_array("violations", np.uint8)[8:8 + n * VIOLATION_DTYPE.itemsize]
        return [decode_violation(self.m, r) | {"code": int(r["kind"])} for r in recs.view(VIOLATION_DTYPE)]

    def merge_pair(self, s1=0, s2=1, content=7):
        """Two anon pages of one content at slots s1, s2; ksmd merges them."""
        a = self.mm(2)
        for s in (s1, s2):
            assert do_anonymous_page(a, self.locks, s, self.obj["anon_vma"][0], content)
        self.ksm.scan_slot(s1)  # into the unstable tree
        self.ksm.scan_slot(s2)  # merged: a new KSM page and stable_node
        kpfn = pte(self.ksmd, s1)
        assert pte(self.ksmd, s2) == kpfn
        node = int(self.ksm.stable_by_content[content]) - 1
        return kpfn, node


def test_merge_writes_real_bytes(tmp_path):
    w = World(tmp_path)
    kpfn, node = w.merge_pair()
    mm, ksm = w.ksmd, w.ksm
    assert mm.mapping(kpfn) == ksm.node_addr(node) + 3
    assert mm.sh(kpfn, "state") == KSM and mm.sh(kpfn, "node") == ksm.node_addr(node)
    assert ksm.kpfn(node) == kpfn and sorted(ksm.items_of(node)) == [0, 1]
    assert mm.page_count(kpfn) == 2 and int(w.m.pages[kpfn]["_mapcount.counter"]) == 1
    nodes = w.m.region_array("stable_nodes", Layout(w.m.kernel.stable_node, w.m.cfg.byte_order).dtype)
    assert int(nodes[node]["kpfn"]) == kpfn
    assert int(nodes[node]["hlist.first"]) in {ksm.item_addr(s) + mm.ri_hlist for s in (0, 1)}


def _reclaim_all(w, kpfn):
    a = w.mm(1)
    for s in w.ksm.items_of(w.ksm.node_idx(w.ksmd.mapping(kpfn) & ~3)):
        zap_pte(a, w.locks, s, expect=kpfn)


def test_keyhole_frees_at_once(tmp_path):
    w = World(tmp_path)
    kpfn, node = w.merge_pair()
    free0 = nr_free(w.ksmd)
    _reclaim_all(w, kpfn)
    assert w.ksmd.page_count(kpfn) == 0 and w.ksmd.sh(kpfn, "state") == FREE
    assert w.ksmd.mapping(kpfn) == 0 and nr_free(w.ksmd) == free0 + 1
    assert w.ksm.get_ksm_page(node) == -1  # stale: the node goes
    assert w.ksmd.counter("stable_nodes_removed") == 1 and not w.violations()


def test_refcount_holds_until_last_rmap_item(tmp_path):
    w = World(tmp_path, protocol="refcount")
    kpfn, node = w.merge_pair()
    assert w.ksmd.page_count(kpfn) == 3  # two ptes and the stable_node
    _reclaim_all(w, kpfn)
    assert w.ksmd.page_count(kpfn) == 1 and w.ksmd.sh(kpfn, "state") == KSM  # held by the node
    w.ksm.scan_slot(0)  # ksmd comes round: one rmap_item goes
    assert w.ksmd.page_count(kpfn) == 1 and w.ksm.items_of(node) == [1]
    w.ksm.scan_slot(1)  # the last one: the node drops its reference
    assert w.ksmd.page_count(kpfn) == 0 and w.ksmd.sh(kpfn, "state") == FREE
    assert w.ksmd.mapping(kpfn) == 0 and not w.violations()


def _hazard(tmp_path, cpu, **cfg):
    """The seed's case: a KSM page freed, reused as a page table whose ptl CPU `cpu` holds."""
    w = World(tmp_path, **cfg)
    kpfn, node = w.merge_pair()
    assert w.ksm.node_addr(node) == w.m.region("stable_nodes").base
    _reclaim_all(w, kpfn)
    a = w.mm(cpu)
    pt = alloc_page(a, PAGETABLE)
    assert pt == kpfn  # LIFO: the page just freed
    if w.m.cfg["USE_SPLIT_PTLOCKS"]:
        ptl = PtLock(w.m)
        ptl.pte_lock_init(pt, cpu)
        w.ksmd.sh_set(pt, "writer", 6)
        ptl.spin_lock(pt, cpu, a.task)
    return w, node, pt


def test_hazard_false_open_on_ppc64_2_6_32_cpu3(tmp_path):
    w, node, pt = _hazard(tmp_path, 3, **HOSTILE)
    assert w.ksmd.mapping(pt) == 0xDEAD4EAD00000003 == w.ksm.node_addr(node) + 3
    assert w.ksm.get_ksm_page(node) == pt  # the keyhole opens on a page table
    (v,) = w.violations()
    assert v["code"] == V_FALSE_OPEN and v["page_really_is"] == "pagetable"
    assert v["mapping_bytes"] == "de ad 4e ad 00 00 00 03"
    assert v["written_by"].startswith("ptl") and v["union_members"] == ["ptl.magic=0xdead4ead",
                                                                         "ptl.owner_cpu=0x3"]


def test_hazard_needs_cpu3(tmp_path):
    w, node, pt = _hazard(tmp_path, 2, **HOSTILE)
    assert w.ksmd.mapping(pt) == 0xDEAD4EAD00000002
    assert w.ksm.get_ksm_page(node) == -1 and not w.violations()


def test_hazard_gone_in_2_6_33(tmp_path):
    w, node, pt = _hazard(tmp_path, 3, **(HOSTILE | {"kernel": "2.6.33"}))
    assert not w.m.cfg["USE_SPLIT_PTLOCKS"] and w.ksmd.mapping(pt) == 0
    assert w.ksm.get_ksm_page(node) == -1 and not w.violations()


def test_no_recheck_variant_opens_on_a_reused_page(tmp_path):
    """The race no-recheck loses: mapping checked, then the page is freed and
    reused before get_page_unless_zero (the kernel's recheck catches it)."""
    for protocol, caught in (("keyhole", False), ("keyhole-no-recheck", True)):
        (tmp_path / protocol).mkdir()
        w = World(tmp_path / protocol, protocol=protocol)
        kpfn, node = w.merge_pair()
        key = w.ksm.node_addr(node) + 3
        real_load = w.ksmd.a.atomic_inc_not_zero

        def interrupt(off, _real=real_load, _w=w, _k=kpfn):
            _reclaim_all(_w, _k)  # freed during the window ...
            assert alloc_page(_w.mm(2), ANON) == _k  # ... and reused
            _w.mm(2).set_mapping(_k, _w.obj["anon_vma"][1] + 1)
            return _real(off)

        w.ksmd.a = _Patched(w.ksmd.a, interrupt)
        assert w.ksmd.mapping(kpfn) == key
        got = w.ksm.get_ksm_page(node)
        kinds = [v["code"] for v in w.violations()]
        assert (V_FALSE_OPEN in kinds) is caught and (got == kpfn) is caught


class _Patched:
    def __init__(self, a, inc):
        self._a, self.atomic_inc_not_zero = a, inc

    def __getattr__(self, name):
        return getattr(self._a, name)


# -- each invariant catches its deliberately broken operation ------------------

def test_count_below_zero_caught(tmp_path):
    w = World(tmp_path)
    pfn = alloc_page(w.ksmd, ANON)
    w.ksmd.set_mapping(pfn, 0)
    assert put_page(w.ksmd, pfn)
    assert not put_page(w.ksmd, pfn)  # a put too many
    assert [v["code"] for v in w.violations()] == [V_COUNT_NEGATIVE]
    assert w.ksmd.page_count(pfn) == 0  # not driven negative
    from emu.mm.page_alloc import get_page

    get_page(w.ksmd, pfn)  # a reference taken on a free page
    assert [v["code"] for v in w.violations()] == [V_COUNT_NEGATIVE] * 2
    assert w.ksmd.page_count(pfn) == 0  # not revived


def test_bad_page_caught(tmp_path):
    w = World(tmp_path)
    pfn = alloc_page(w.ksmd, DRIVER)
    use_page(w.ksmd, DRIVER, pfn, {"driver": w.obj["driver"][0]})
    put_page(w.ksmd, pfn)  # a driver that forgets to clear mapping before the put
    (v,) = w.violations()
    assert v["code"] == V_BAD_PAGE and v["detail"] == 2 and v["written_by"] == "driver pointer"
    assert v["mapping"] == hex(w.obj["driver"][0])


def test_no_clear_variant_caught(tmp_path):
    w = World(tmp_path, protocol="keyhole-no-clear")
    kpfn, node = w.merge_pair()
    _reclaim_all(w, kpfn)
    assert w.ksmd.mapping(kpfn) == w.ksm.node_addr(node) + 3  # the key survives the free
    assert w.ksm.get_ksm_page(node) == -1  # _count is 0: stale, and the node is freed ...
    kinds = [v["code"] for v in w.violations()]
    assert V_BAD_PAGE in kinds and V_NODE_FREED_WITH_KEY in kinds  # ... with its key still there


def test_double_alloc_caught(tmp_path):
    w = World(tmp_path)
    pfn = alloc_page(w.ksmd, ANON)
    _push(w.ksmd, pfn)  # a broken free list hands it out again
    assert alloc_page(w.ksmd, ANON) == pfn
    assert [v["code"] for v in w.violations()] == [V_DOUBLE_ALLOC]


def test_stable_nodes_reused_lifo(tmp_path):
    w = World(tmp_path)
    kpfn, node = w.merge_pair(0, 1, content=3)
    _reclaim_all(w, kpfn)
    assert w.ksm.get_ksm_page(node) == -1
    _, node2 = w.merge_pair(2, 3, content=4)
    assert node2 == node  # the freed node's address is the next one handed out


@pytest.mark.parametrize("arch", ["x86_64", "i386", "sparc64", "s390x", "mips64", "arm"])
def test_merge_on_every_arch(tmp_path, arch):
    w = World(tmp_path, arch=arch, enable=["CPU_CACHE_VIPT"] if arch == "arm" else [])
    kpfn, node = w.merge_pair()
    raw = bytes(w.m.mm[w.ksmd.page_off(kpfn) + w.ksmd.mapping_rel:][:w.ksmd.word])
    assert raw == (w.ksm.node_addr(node) + 3).to_bytes(w.ksmd.word, w.m.cfg.byte_order)
    _reclaim_all(w, kpfn)
    assert w.ksmd.page_count(kpfn) == 0 and not w.violations()


# -- the nogil sweep --------------------------------------------------------------

def test_sweep_matches_per_node_path(tmp_path):
    w = World(tmp_path)
    pairs = [w.merge_pair(2 * i, 2 * i + 1, content=100 + i) for i in range(6)]
    for kpfn, _ in pairs[:2]:
        _reclaim_all(w, kpfn)  # two KSM pages freed: their nodes go stale
    ok, stale, freed, bad, corrupt = w.ksm.sweep()
    assert (ok, stale, freed, bad, corrupt) == (4, 2, 0, 0, 0)
    assert w.ksmd.counter("stable_nodes_removed") == 2
    assert [w.ksm.node_live[n] for _, n in pairs] == [0, 0, 1, 1, 1, 1]
    for kpfn, _ in pairs[2:]:
        assert w.ksmd.page_count(kpfn) == 2  # every reference taken was put back
    assert not w.violations()


def test_sweep_catches_the_hazard(tmp_path):
    w, node, pt = _hazard(tmp_path, 3, **HOSTILE)
    ok, stale, freed, bad, corrupt = w.ksm.sweep()
    assert bad == 1 and ok == 0
    (v,) = w.violations()
    assert v["code"] == V_FALSE_OPEN and v["pfn"] == pt


def test_sweep_checks_geometry(tmp_path):
    import numpy as np

    from emu._ksm_sweep import sweep_get_ksm_page

    w = World(tmp_path)
    mm = w.ksmd
    live = np.ones(4, np.uint8)
    base = dict(nodes_off=mm.sn.offset, node_size=mm.sn_size, kpfn_rel=mm.sn_kpfn, nodes_addr=mm.sn.base,
                live=live, mem_map_off=mm.mem_map, page_size=mm.psize, nr_pages=mm.geo.nr_pages,
                mapping_rel=mm.mapping_rel, count_rel=mm.count_rel, word=8, status=np.zeros(4, np.uint8))
    with pytest.raises(IndexError, match="exceed"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"nodes_off": w.m.size - 8}))
    with pytest.raises(ValueError, match="aligned"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"nodes_off": mm.sn.offset + 4}))
    with pytest.raises(IndexError, match="exceed"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"nr_pages": 1 << 40}))
    with pytest.raises(ValueError, match="status"):
        sweep_get_ksm_page(w.m.mm, "little", **(base | {"status": np.zeros(3, np.uint8)}))
    mm.a.store(mm.sn.offset + mm.sn_kpfn, 8, 1 << 40)  # a corrupt node: kpfn out of range
    assert sweep_get_ksm_page(w.m.mm, "little", **base)[4] == 1


def test_node_freed_mid_free_is_counted_not_flagged(tmp_path):
    """get_page_unless_zero fails on a page whose refs reclaim has frozen on
    its way to the free list: the node goes a moment before mapping is cleared."""
    from emu.mm.page_alloc import free_hot_cold_page, page_freeze_refs

    w = World(tmp_path)
    kpfn, node = w.merge_pair()
    from emu.mm.page_alloc import get_page

    a = w.mm(1)
    get_page(a, kpfn)  # reclaim's own reference; then the ptes go
    for s in (0, 1):
        zap_pte(a, w.locks, s, expect=kpfn)
    assert page_freeze_refs(a, kpfn, 1)  # count 0, mapping still the key
    assert w.ksm.get_ksm_page(node) == -1
    assert w.ksmd.counter("nodes_freed_mid_free") == 1 and not w.violations()
    free_hot_cold_page(a, kpfn)
    assert w.ksmd.mapping(kpfn) == 0 and not w.violations()


def test_node_freed_under_a_live_page_is_flagged(tmp_path):
    w = World(tmp_path)
    kpfn, node = w.merge_pair()
    w.ksm.free_stable_node(node)  # deliberately broken: the page still maps and holds the key
    (v,) = w.violations()
    assert v["code"] == V_NODE_FREED_WITH_KEY and v["pfn"] == kpfn and v["detail"] == 2
