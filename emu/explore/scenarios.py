"""The built-in scenarios: small machines, a KSM page and its stable_node made
at setup, and per role a finite script of the same kernel calls `ksm-emu run`
makes. Each execution ends with emu.check.fsck over the machine."""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..check.fsck import fsck
from ..mm.boot import World
from ..mm.context import MM
from ..mm.ksm import StableTree, get_ksm_page, ksm_thread_mutex_lock, ksm_thread_mutex_unlock, put_ksm_page
from ..mm.ksm_nodes import stable_node_kpfn
from ..mm.ksm_scan import scan_slot
from ..mm.memory import do_anonymous_page, follow_page, pte_alloc_one, pte_free
from ..mm.pgtable import group_of, pte
from ..mm.refcount import get_page
from ..mm.regions import PAGE_TABLE_LOCK_REL, PTRS_PER_GROUP
from ..mm.spinlock import spin_lock, spin_unlock
from ..mm.vmscan import shrink_page
from .scenario import Env, Scenario

# -- setup ----------------------------------------------------------------------------------------
SLOT_OTHER, SLOT_NEW = PTRS_PER_GROUP + 1, PTRS_PER_GROUP + 2  # in group 1: another page table, another lock


def _fault(world: World, slots: tuple[int, ...], content: int) -> None:
    a = world.context(cpu=0, role="allocator.0")
    for s in slots:
        anon_vma = world.objects.anon_vma[group_of(s) % world.geo.nmms]
        assert do_anonymous_page(a, s, anon_vma, content)


def _merged(world: World) -> dict:
    """A KSM page mapped at slots 0 and 1, its stable_node, and a reference to
    it that reclaim took when it found the page; in group 1, an anon page in
    ksmd's unstable tree (content 2) and an empty slot beside it."""
    tree = StableTree(world.geo)
    ksmd = world.context(cpu=0, role="ksmd")
    _fault(world, (0, 1), 1)
    for s in (0, 1):
        scan_slot(ksmd, tree, s)
    _fault(world, (SLOT_OTHER,), 2)
    scan_slot(ksmd, tree, SLOT_OTHER)
    node = int(tree.by_content[1]) - 1
    kpfn = pte(ksmd, 0)
    assert node >= 0 and pte(ksmd, 1) == kpfn == stable_node_kpfn(ksmd, node)
    get_page(world.context(cpu=0, role="reclaim"), kpfn)  # reclaim's follow_page found it
    return {"tree": tree, "node": node, "kpfn": kpfn, "slots": (0, 1), "slot_new": SLOT_NEW, "content_new": 2}


def _unmerged(world: World) -> dict:
    """Two anon pages of one content at slots 0 and 1; ksmd has seen slot 0."""
    tree = StableTree(world.geo)
    _fault(world, (0, 1), 1)
    scan_slot(world.context(cpu=0, role="ksmd"), tree, 0)
    return {"tree": tree, "slots": (0, 1), "slot_new": SLOT_NEW, "content_new": 1}


def _check(env: Env) -> str | None:
    tree = env.data["tree"]
    mm = env.world.context(cpu=0)
    live = {int(i): stable_node_kpfn(mm, int(i)) for i in tree.live.nonzero()[0]}
    problems = fsck(env.world, live)
    return "; ".join(problems[:3]) if problems else None


# -- the roles' scripts -----------------------------------------------------------------------------
def under_ksm_thread_mutex(script: Callable[[MM, Env], None]) -> Callable[[MM, Env], None]:
    """A ksmd script runs as ksm_do_scan does: holding ksm_thread_mutex."""

    @functools.wraps(script)
    def run(mm: MM, env: Env) -> None:
        ksm_thread_mutex_lock(mm)
        try:
            script(mm, env)
        finally:
            ksm_thread_mutex_unlock(mm)

    return run


def meet_node(mm: MM, env: Env) -> None:
    """ksmd meets the node, as stable_tree_search does: get_ksm_page, use, put."""
    tree, node = env.data["tree"], env.data["node"]
    page = get_ksm_page(mm, tree, node)
    if page >= 0:
        put_ksm_page(mm, page, node)


def reclaim_ksm_page(mm: MM, env: Env) -> None:
    """reclaim frees the KSM page it holds a reference to (try_to_unmap, freeze, free)."""
    shrink_page(mm, env.data["slots"][0], env.data["kpfn"])


def reclaim_slot(mm: MM, env: Env) -> None:
    """reclaim finds the page at the first slot and frees it."""
    slot = env.data["slots"][0]
    pfn = follow_page(mm, slot)
    if pfn >= 0:
        shrink_page(mm, slot, pfn)


def use_pagetable(mm: MM, env: Env) -> None:
    """A fault on another mm: a new page table, its lock taken on this CPU, released, freed."""
    pt = pte_alloc_one(mm)
    if pt is None:
        return
    if mm.split_ptlocks:
        off, lm = mm.page_off(pt) + mm.ptl_rel, mm.ptl_model
    else:
        off, lm = mm.m.addr_to_offset(mm.world.objects.mm_struct[1] + PAGE_TABLE_LOCK_REL), mm.mm_lock_model
    spin_lock(mm, off, lm)
    spin_unlock(mm, off, lm)
    pte_free(mm, pt)


def fault_then_pagetable(mm: MM, env: Env) -> None:
    """The allocator takes pages again: an anon page at an empty slot, then a page table."""
    do_anonymous_page(mm, env.data["slot_new"], env.world.objects.anon_vma[0], env.data["content_new"])
    use_pagetable(mm, env)


def ksmd_stale_node(mm: MM, env: Env) -> None:
    """ksmd meets the node; scans the new slot (merging its page, perhaps the
    reused pfn, into another node); meets the node again if it is still there."""
    tree = env.data["tree"]
    meet_node(mm, env)
    scan_slot(mm, tree, env.data["slot_new"])
    if tree.live[env.data["node"]]:
        meet_node(mm, env)


def ksmd_merge(mm: MM, env: Env) -> None:
    """ksmd scans slot 1: its page and slot 0's merge into a new KSM page."""
    scan_slot(mm, env.data["tree"], 1)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("stale-node", [("ksmd", under_ksm_thread_mutex(ksmd_stale_node)), ("reclaim", reclaim_ksm_page),
                            ("allocator", fault_then_pagetable)],
             summary="ksmd meets a stable_node while reclaim frees its KSM page and an allocator "
                     "takes the pfn again (anon page, another node's KSM page, page table)",
             setup=_merged, check=_check),
    Scenario("pagetable-reuse", [("ksmd", under_ksm_thread_mutex(meet_node)), ("reclaim", reclaim_ksm_page),
                                 ("allocator", use_pagetable)],
             summary="the seed's hazard: the freed KSM page becomes a page table whose split ptlock "
                     "the allocator takes on its CPU while ksmd looks through the keyhole",
             setup=_merged, check=_check),
    Scenario("merge", [("ksmd", under_ksm_thread_mutex(ksmd_merge)), ("reclaim", reclaim_slot), ("allocator", fault_then_pagetable)],
             summary="ksmd merges two anon pages into a KSM page while reclaim unmaps one of them "
                     "and an allocator takes freed pages",
             setup=_unmerged, check=_check),
)}
