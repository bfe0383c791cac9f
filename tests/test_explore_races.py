"""The racing demos that used to hope for an unlucky OS schedule, now forced:
each broken variant found by explore on the first try, deterministically,
and the correct code shown clean over every interleaving.

Every read-modify-write helper (page_freeze_refs, get_page_unless_zero,
atomic_dec_and_test, PG_locked's test_and_set_bit) is raced against its
concurrent users: the correct one holds in every interleaving with the data
race checker on; its broken variant (KSM_EMU_TEST_BREAK, here set on
emu.mm.testbreak) is caught twice over: by the invariant the interleaving
breaks (checks off, so the invariant alone must catch it) and by the data
race checker, in the very first schedule."""

import pytest

from emu.explore import Scenario, explore
from emu.machine import RegionSpec
from emu.mm import testbreak
from emu.mm.page import trylock_page, unlock_page
from emu.mm.refcount import (
    get_page_unless_zero,
    page_count,
    page_freeze_refs,
    page_unfreeze_refs,
    put_page_testzero,
)
from emu.mm.spinlock import spin_lock, spin_unlock

NO_CHECKS = ()

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
    r = explore(broken, checks=NO_CHECKS)
    assert not r.holds and "an update was lost" in r.counterexample.findings[0]["detail"]
    assert r.schedules_explored <= 3
    race = explore(broken)  # the checker needs no lost update: the first schedule has the race
    assert race.schedules_explored == 1 and _races(race) == {("plain", "plain")}
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
    r = explore(broken, checks=NO_CHECKS)
    assert not r.holds and "revived" in r.counterexample.findings[0]["detail"]
    assert r.counterexample.preemptions == 1
    assert explore(broken).schedules_explored == 1 and _races(explore(broken)) == {("plain", "atomic")}
    ok = explore(fixed)
    assert ok.holds and ok.complete and ok.schedules_explored == 2


def _races(result):
    """(marking, marking) of each data race of the counterexample, in step order."""
    return {tuple(a["marking"] for a in f["accesses"]) for f in result.counterexample.findings
            if f["kind"] == "data race"}


def _refs(n):
    def setup(world):
        page_unfreeze_refs(world.context(cpu=0), PFN, n)
        return {}
    return setup


# -- page_freeze_refs against get_page_unless_zero ---------------------------------
def _freeze(mm, env):
    env.data["frozen"] = page_freeze_refs(mm, PFN, 1)  # reclaim's __remove_mapping


def _speculative_get(mm, env):
    env.data["got"] = get_page_unless_zero(mm, PFN)  # a speculative reference, kept


def _not_frozen_under_a_ref(env):
    if env.data.get("frozen") and env.data.get("got"):
        return "page_freeze_refs froze a page another CPU holds a reference to"
    return None


# -- atomic_dec_and_test against another put ------------------------------------------
def _put(mm, env):
    env.data.setdefault("zero", []).append(put_page_testzero(mm, PFN))


def _one_put_sees_zero(env):
    zero, count = env.data.get("zero", []), page_count(env.world.context(cpu=0), PFN)
    if zero.count(True) != 1 or count != 0:
        return f"{zero.count(True)} of the puts saw the count reach zero; _count is {count}"
    return None


# -- test_and_set_bit(PG_locked) against another locker -----------------------------------
def _trylock(mm, env):
    """Holders counted in the machine (a ghost access, so DPOR sees who depends on it)."""
    if trylock_page(mm, PFN):
        holders = mm.m.region("scratch").offset
        if mm.g.fetch_add(holders, 4, 1) >= 1:
            mm.g.store(holders + 4, 4, 1)  # another CPU holds it too
        mm.a.load_once(mm.page_off(PFN) + mm.index_rel, mm.word)  # the critical section: a point
        mm.g.fetch_add(holders, 4, -1, True)
        unlock_page(mm, PFN)


def _exclusive(env):
    mm = env.world.context(cpu=0)
    if mm.h.load(mm.m.region("scratch").offset + 4, 4):
        return "two CPUs held PG_locked at once"
    return None


RMW = {
    "freeze-read-then-store": (_refs(1), [("reclaim", _freeze), ("ksmd", _speculative_get)],
                               _not_frozen_under_a_ref, {("plain", "atomic"), ("atomic", "plain")}),
    "dec-read-then-store": (_refs(2), [("cpu1", _put), ("cpu2", _put)], _one_put_sees_zero,
                            {("plain", "plain")}),
    "trylock-read-then-store": (_refs(1), [("cpu1", _trylock), ("cpu2", _trylock)], _exclusive,
                                {("plain", "plain"), ("atomic", "plain"), ("plain", "atomic")}),
}


@pytest.mark.parametrize("broken", list(RMW))
def test_rmw_helper_raced(broken, monkeypatch):
    setup, roles, check, markings = RMW[broken]
    sc = Scenario(broken, roles, setup=setup, check=check, extra=[RegionSpec("scratch", 64)])
    ok = explore(sc)
    assert ok.holds and ok.complete, ok.counterexample and ok.counterexample.findings
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({broken}))
    bad = explore(sc, checks=NO_CHECKS)
    assert not bad.holds and bad.counterexample.findings[0]["kind"] == "invariant"
    assert bad.counterexample.preemptions >= 1  # it takes an interleaving: the invariant alone
    race = explore(sc)
    assert race.schedules_explored == 1 and _races(race) and _races(race) <= markings
