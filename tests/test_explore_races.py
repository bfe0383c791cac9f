"""The racing demos that used to hope for an unlucky OS schedule, now forced:
each broken variant found by explore on the first try, deterministically,
and the correct code shown clean over every interleaving."""

from emu.explore import Scenario, explore
from emu.mm.refcount import get_page_unless_zero, page_count, page_unfreeze_refs, put_page_testzero
from emu.mm.spinlock import spin_lock, spin_unlock

PFN = 20  # a free page of the scenario's machine


def _rmw(locked):
    """page->index += 1 as a plain load and store, under page->ptl or not."""
    def run(mm, env):
        page = mm.page_off(PFN)
        lock = page + mm.ptl_rel
        if locked:
            spin_lock(mm, lock, mm.ptl_model)
        v = mm.a.load(page + mm.index_rel, mm.word)
        mm.a.store(page + mm.index_rel, mm.word, v + 1)
        if locked:
            spin_unlock(mm, lock, mm.ptl_model)
    return run


def _init_ptl(world):
    from emu.mm.ptlock import pte_lock_init

    pte_lock_init(world.context(cpu=0), PFN)
    return {}


def _index_is(n):
    def check(env):
        mm = env.world.context(cpu=0)
        got = mm.a.load(mm.page_off(PFN) + mm.index_rel, mm.word)
        return None if got == n else f"page->index is {got}, not {n}: an update was lost"
    return check


def test_unlocked_rmw_loses_an_update():
    broken = Scenario("rmw", [("cpu1", _rmw(False)), ("cpu2", _rmw(False))], setup=_init_ptl, check=_index_is(2))
    fixed = Scenario("rmw", [("cpu1", _rmw(True)), ("cpu2", _rmw(True))], setup=_init_ptl, check=_index_is(2))
    r = explore(broken)
    assert not r.holds and "an update was lost" in r.counterexample.findings[0]["detail"]
    assert r.schedules_explored <= 3
    ok = explore(fixed)
    assert ok.holds and ok.complete


def _one_ref(world):
    page_unfreeze_refs(world.context(cpu=0), PFN, 1)  # the dropper's reference
    return {}


def _naive_get(mm, env):
    """Deliberately broken get_page_unless_zero: check, then increment."""
    off = mm.page_off(PFN) + mm.count_rel
    if mm.a.load(off, 4) != 0:
        mm.a.fetch_add(off, 4, 1)
        env.data["got"] = True


def _real_get(mm, env):
    env.data["got"] = get_page_unless_zero(mm, PFN)


def _drop(mm, env):
    env.data["freed"] = put_page_testzero(mm, PFN)


def _never_revived(env):
    """Once the last reference is gone, no get may have succeeded after it."""
    count = page_count(env.world.context(cpu=0), PFN)
    if env.data.get("freed") and count != 0:
        return f"the freed page's count is {count}: revived"
    return None


def test_check_then_increment_revives_a_freed_page():
    broken = Scenario("revive", [("getter", _naive_get), ("dropper", _drop)], setup=_one_ref, check=_never_revived)
    fixed = Scenario("revive", [("getter", _real_get), ("dropper", _drop)], setup=_one_ref, check=_never_revived)
    r = explore(broken)
    assert not r.holds and "revived" in r.counterexample.findings[0]["detail"]
    assert r.counterexample.preemptions == 1
    ok = explore(fixed)
    assert ok.holds and ok.complete and ok.schedules_explored == 2
