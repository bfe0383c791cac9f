"""The explorer checked against brute force: on small programs over a few
words, DPOR explores exactly one execution per Mazurkiewicz trace (every class
that exhaustive DFS reaches, none twice), the end states it reaches are all of
them, and a replayed prefix that behaves differently is caught."""

import random
from collections import Counter

import pytest

from emu.explore import Scenario, explore
from emu.explore.api import Session, _cpus
from emu.explore.dpor import Nondeterminism, independent
from emu.explore.strategies import Dfs
from emu.kconfig import resolve
from emu.machine import RegionSpec

VARS = (RegionSpec("vars", 4096),)


def _var(env, i):
    return env.world.machine.region("vars").offset + 8 * i


def _program(ops, me):
    """Role `me` doing `ops`: (op, word, size) with op r (load), w (store), a
    (fetch_add); what it stores and notes depends on its own reads only."""
    def run(mm, env):
        seen = env.data.setdefault(me, [])
        for op, w, size in ops:
            off = _var(env, w) + (8 - size if size < 8 and w % 2 else 0)
            if op == "r":
                seen.append(mm.a.load(off, size))
            elif op == "w":
                mm.a.store(off, size, (sum(seen) + 1 + 16 * me) & 0xFFFFFFFF)
            else:
                seen.append(mm.a.fetch_add(off, size, 1))
    return run


def _scenario(progs):
    return Scenario("t", [(f"p{i}", _program(p, i)) for i, p in enumerate(progs)], extra=VARS, pages=8,
                    observe=lambda env: (tuple(tuple(env.data.get(i, ())) for i in range(len(progs))), bytes(
                        env.world.machine.mm[_var(env, 0):_var(env, 0) + 32])))


def _brute_force(sc):
    """Every interleaving by DFS: (executions, Mazurkiewicz classes, end states)."""
    cfg = resolve()
    session = Session(sc, cfg, "keyhole", _cpus(sc, cfg, None))
    st = Dfs(None)
    events = []
    st.on_step = lambda i, p, fp: events.append((p, tuple(fp)))
    classes, outcomes, n = set(), set(), 0
    try:
        while st.begin():
            events.clear()
            _, env = session.run(st)
            n += 1
            ids, count = [], Counter()
            for p, _ in events:
                count[p] += 1
                ids.append((p, count[p]))
            rel = frozenset((ids[a], ids[b]) for a in range(len(events)) for b in range(a + 1, len(events))
                            if events[a][0] != events[b][0]
                            and not independent(list(events[a][1]), list(events[b][1])))
            classes.add(rel)
            outcomes.add(sc.observe(env))
            st.end(len(events))
    finally:
        session.close()
    return n, len(classes), outcomes


def _random_programs(rng):
    nproc = rng.choice([2, 3])
    return [[(rng.choice("rwa"), rng.randrange(3), rng.choice([4, 8])) for _ in range(rng.randint(1, 3))]
            for _ in range(nproc)]


@pytest.mark.parametrize("seed", range(8))
def test_dpor_one_execution_per_trace(seed):
    progs = _random_programs(random.Random(seed))
    sc = _scenario(progs)
    executions, classes, outcomes = _brute_force(sc)
    r = explore(sc, checks=())  # the schedules, not what the checkers say of them
    assert r.complete and r.holds
    assert r.schedules_explored == classes, (progs, executions, classes)
    assert set(r.outcomes) == outcomes  # every end state reached: no class missed
    assert executions >= classes


def _at(op, rel, size):
    def run(mm, env):
        off = _var(env, 0) + rel
        if op == "w":
            mm.a.store(off, size, 0xFFFFFFFF)
        else:
            env.data["seen"] = mm.a.load(off, size)
    return run


def test_mixed_sizes_are_dependent():
    """A 4-byte store into the high half of a word and an 8-byte load of the
    whole word race; the same store and a 4-byte load of the low half do not."""
    def sc(load_size):
        return Scenario("m", [("w", _at("w", 4, 4)), ("r", _at("r", 0, load_size))], extra=VARS, pages=8,
                        observe=lambda env: env.data["seen"])
    over, apart = explore(sc(8), checks=()), explore(sc(4), checks=())
    assert over.complete and over.schedules_explored == 2 and set(over.outcomes) == {0, 0xFFFFFFFF00000000}
    assert apart.complete and apart.schedules_explored == 1 and set(apart.outcomes) == {0}


_COUNTER = [0]


def _leaky(mm, env):
    """Deliberately broken: which word it touches depends on state outside the
    mapping, which a stateless re-execution does not restore."""
    _COUNTER[0] += 1
    mm.a.load(_var(env, _COUNTER[0] % 2), 8)
    mm.a.store(_var(env, 0), 8, 1)


def test_uncontrolled_nondeterminism_is_caught():
    sc = Scenario("leaky", [("p0", _leaky), ("p1", _program([("r", 0, 8), ("r", 1, 8)], 1))], extra=VARS, pages=8)
    with pytest.raises(Nondeterminism, match="before"):
        explore(sc, checks=())
