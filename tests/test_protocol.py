"""The protocol is a value, resolved from its name at the edge and passed in:
boot's world runs the Protocol it is given (not one read back from the file),
an exploration's setup gets a World of its own with the protocol it should
use, the protocol selects its get_ksm_page variant, and the nogil sweep runs
each variant as the Python does or refuses a name it does not know."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from worlds import World

from emu._ksm_sweep import sweep_get_ksm_page
from emu.check.truth import RAISE
from emu.check.violations import V_COUNT_NEGATIVE, RefcountBug
from emu.explore import Scenario, explore
from emu.kconfig import resolve
from emu.mm import ksm, ksm_scan
from emu.mm.boot import attach_world, boot
from emu.mm.ksm import get_ksm_page, put_ksm_page
from emu.mm.ksm_nodes import rmap_items_of
from emu.mm.ksm_scan import ksm_sweep
from emu.mm.page import page_mapping_raw
from emu.mm.protocol import GET_KSM_PAGE, KEYHOLE, PROTOCOLS, Protocol, protocol_named
from emu.mm.refcount import page_count
from emu.mm.rmap import try_to_unmap_one


def test_names_resolve_once_with_one_error():
    assert protocol_named("refcount") is PROTOCOLS["refcount"] and KEYHOLE is PROTOCOLS["keyhole"]
    for bad in ("keyhole-typo", ["keyhole"]):
        with pytest.raises(ValueError, match="unknown protocol .*; choose from keyhole, refcount"):
            protocol_named(bad)
    assert {p.get_ksm_page for p in PROTOCOLS.values()} == set(GET_KSM_PAGE) == set(ksm._GET_KSM_PAGE)
    with pytest.raises(ValueError, match="does not go with holds_ref"):  # the refcount variant needs the reference
        Protocol("odd", holds_ref=False, get_ksm_page="refcount", clear_on_free=True, summary="")


def test_boot_runs_the_protocol_it_is_given(tmp_path):
    """The value passed in, not its name read back from the file's meta (which
    names it for whoever attaches the file later)."""
    own = replace(PROTOCOLS["keyhole-no-recheck"], name="not-a-known-name")
    w = boot(tmp_path / "w.state", resolve(), 256, protocol=own)
    try:
        assert w.protocol is own and w.context(cpu=1).protocol is own
        assert w.machine.meta["protocol"] == "not-a-known-name"
    finally:
        w.close()
    w = boot(tmp_path / "r.state", resolve(), 256, protocol=PROTOCOLS["refcount"])
    w.close()
    w = attach_world(tmp_path / "r.state")  # attached afterwards: the meta says which
    try:
        assert w.protocol is PROTOCOLS["refcount"]
    finally:
        w.close()


def _setup(world):
    return {"setup": world.protocol.name}


def _role(mm, env):
    env.data["role"] = mm.protocol.name


@pytest.mark.parametrize("protocol,setup_runs", [("keyhole", "keyhole"), ("refcount", "refcount"),
                                                 ("keyhole-no-clear", "keyhole"),
                                                 ("keyhole-no-recheck", "keyhole")])
def test_a_broken_protocols_setup_runs_the_correct_kernel(protocol, setup_runs):
    seen = []
    sc = Scenario("protocols", [("a", _role)], setup=_setup,
                  check=lambda env: seen.append((env.data["setup"], env.data["role"], env.world.protocol.name)))
    r = explore(sc, protocol=protocol, checks=())
    assert r.holds and seen == [(setup_runs, protocol, protocol)]


# -- the variants, in Python and in the nogil sweep -------------------------------------------
def _merged(tmp_path, protocol, n=6, reclaimed=2, policy="report"):
    w = World(tmp_path, protocol=protocol, policy=policy)
    pairs = [w.merge_pair(2 * i, 2 * i + 1, content=100 + i) for i in range(n)]
    a = w.mm(1, "reclaim")
    for kpfn, node in pairs[:reclaimed]:  # keyhole: freed, their nodes stale; refcount: the node keeps them
        for s in rmap_items_of(a, node):
            try_to_unmap_one(a, s, kpfn)
    return w, pairs


def _state(w, pairs):
    return ([int(w.tree.live[n]) for _, n in pairs], [page_count(w.ksmd, k) for k, _ in pairs],
            [page_mapping_raw(w.ksmd, k) for k, _ in pairs],
            {c: w.ksmd.counter(c) for c in ("get_ksm_page_ok", "get_ksm_page_stale", "stable_nodes_removed")},
            [v.as_dict() for v in w.violations()])


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_sweep_runs_the_protocols_get_ksm_page(tmp_path, protocol, monkeypatch):
    (tmp_path / "py").mkdir()
    (tmp_path / "c").mkdir()
    py, pairs = _merged(tmp_path / "py", protocol)
    c, _ = _merged(tmp_path / "c", protocol)
    try:
        for _, node in pairs:
            if py.tree.live[node]:
                page = get_ksm_page(py.ksmd, py.tree, node)
                if page >= 0:
                    put_ksm_page(py.ksmd, page, node)
        asked = []
        real = ksm_scan.sweep_get_ksm_page
        monkeypatch.setattr(ksm_scan, "sweep_get_ksm_page", lambda *a, **kw: asked.append(kw["get_ksm_page"])
                            or real(*a, **kw))
        ok, stale, freed, bad, corrupt = ksm_sweep(c.ksmd, c.tree)
        assert asked == [PROTOCOLS[protocol].get_ksm_page]
        assert (ok, stale, bad, corrupt) == ((6, 0, 0, 0) if PROTOCOLS[protocol].holds_ref else (4, 2, 0, 0))
        assert _state(c, pairs) == _state(py, pairs)
    finally:
        py.close()
        c.close()


def test_sweep_by_reference_reports_a_get_page_on_a_free_page(tmp_path):
    """refcount: a node whose page lost every reference (its own included) is
    get_page's BUG in the sweep as in Python: recorded, or raised by policy."""
    for policy in ("report", RAISE):
        (tmp_path / policy).mkdir()
        w, pairs = _merged(tmp_path / policy, "refcount", n=2, reclaimed=0, policy=policy)
        try:
            kpfn, _ = pairs[0]
            w.ksmd.a.atomic_set(w.ksmd.page_off(kpfn) + w.ksmd.count_rel, 0)  # a reference too few
            if policy == RAISE:
                with pytest.raises(RefcountBug, match=f"get_page on pfn {kpfn} with _count 0"):
                    ksm_sweep(w.ksmd, w.tree)
                continue
            ok, stale, freed, bad, corrupt = ksm_sweep(w.ksmd, w.tree)
            assert (ok, stale, freed, bad, corrupt) == (1, 0, 0, 1, 0) and page_count(w.ksmd, kpfn) == 0
            (v,) = w.violations()
            assert v["code"] == V_COUNT_NEGATIVE and v["pfn"] == kpfn
        finally:
            w.close()


def test_sweep_refuses_a_variant_it_does_not_implement(tmp_path):
    w, _ = _merged(tmp_path, "keyhole", n=1, reclaimed=0)
    mm = w.ksmd
    try:
        kw = dict(nodes_off=mm.sn_off, node_size=mm.sn_size, kpfn_rel=mm.sn_kpfn, nodes_addr=mm.sn_base,
                  live=w.tree.live, mem_map_off=mm.mem_map, page_size=mm.psize, nr_pages=mm.geo.nr_pages,
                  mapping_rel=mm.mapping_rel, count_rel=mm.count_rel, word=8,
                  status=np.zeros(len(w.tree.live), np.uint8))
        with pytest.raises(ValueError, match="no get_ksm_page variant 'keyhole-v2'; it implements keyhole, "
                                             "keyhole-no-recheck, refcount"):
            sweep_get_ksm_page(w.m.mm, "little", get_ksm_page="keyhole-v2", **kw)
        assert sweep_get_ksm_page(w.m.mm, "little", **kw) == (1, 0, 0, 0, 0)  # the keyhole by default
        mm.protocol = replace(KEYHOLE)
        object.__setattr__(mm.protocol, "get_ksm_page", "keyhole-v2")  # past Protocol's check: a variant no one wrote
        with pytest.raises(ValueError, match="no get_ksm_page variant 'keyhole-v2'"):
            ksm_sweep(mm, w.tree)
    finally:
        w.close()
