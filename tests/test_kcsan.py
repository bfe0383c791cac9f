"""The data race checker reports every race of an execution, each pair of
accesses once: in explore's counterexample, in its replay, and in the JSON;
against a brute-force reference on random access sequences; and a checker
that lets a plain read acquire (KSM_EMU_TEST_BREAK=kcsan-plain-read-acquires)
fails these tests, because it hides the race after the plain read."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.check.kcsan import READS, RaceDetector
from emu.explore import Scenario, explore, replay
from emu.explore.render import replayed_json, result_json
from emu.mm import testbreak
from emu.mm.mem import MARKED, PLAIN

PFN = 20  # free pages of the scenario's machine: data in one, the flag in the next


def _data(mm):
    return mm.page_off(PFN) + mm.index_rel


def _flag(mm):
    return mm.page_off(PFN + 1) + mm.index_rel


def _producer(mm, env):
    mm.a.store(_data(mm), mm.word, 42)
    mm.a.store(_flag(mm), mm.word, 1)


def _consumer(mm, env):
    if mm.a.load(_flag(mm), mm.word):
        env.data["data"] = mm.a.load(_data(mm), mm.word)


MP = Scenario("mp", [("p0", _producer), ("p1", _consumer)], summary="message passing, all plain")


def _two_races(findings: list[dict]) -> None:
    """Exactly the two races of message passing done with plain accesses:
    P0's store of data with P1's load of data, P0's store of flag with P1's load of flag."""
    races = [f for f in findings if f["kind"] == "data race"]
    got = sorted((a["role"], a["access"], a["marking"], b["role"], b["access"], b["marking"],
                  "page 20" in f["overlap"]) for f in races for a, b in [f["accesses"]])
    assert got == [("p0", "store", "plain", "p1", "load", "plain", False),
                   ("p0", "store", "plain", "p1", "load", "plain", True)], races
    assert len(findings) == 2, findings  # and nothing else


def _check_message_passing() -> None:
    r = explore(MP)
    assert not r.holds and r.schedules_explored == 1  # P0 then P1: the flag read is 1, data read too
    _two_races(r.counterexample.findings)
    _two_races([v for v in result_json(r)["violations"]])
    again = replay(r.counterexample.schedule, scenarios={"mp": MP})
    _two_races(again.findings)
    _two_races(replayed_json(again)["violations"])


def test_message_passing_through_plain_flag_has_two_races():
    _check_message_passing()


def test_a_plain_read_that_acquires_fails_the_two_race_test(monkeypatch):
    """The flag's plain load would order the data's after P0's store: one race hidden."""
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"kcsan-plain-read-acquires"}))
    with pytest.raises(AssertionError):
        _check_message_passing()
    (race,) = explore(MP).counterexample.findings
    assert "page 21" in race["overlap"]  # the flag's race alone


# -- against a brute-force reference ---------------------------------------------------------
WRITES = frozenset(("store", "store_once", "atomic_set", "store_release", "cas", "xchg", "fetch_add",
                    "fetch_or", "fetch_and", "atomic_inc_not_zero"))
OPS = sorted(READS | WRITES)
FOUR = frozenset(("atomic_read", "atomic_set", "atomic_inc_not_zero"))  # atomic_t: 4 bytes
SYNC = (64, 72)  # a ghost lock word (the free list's head in explore)


def reference(nprocs: int, word: int, trace: list[tuple]) -> set[tuple[int, int]]:
    """The races of a trace by definition: every pair of accesses on a common
    byte from two CPUs, one a write, one plain, neither happening before the
    other (vector clocks kept per access, every pair compared), less what
    KCSAN_ASSUME_PLAIN_WRITES_ATOMIC excuses. ("ghost", p) is a lock's RMW."""
    vc = [[int(i == j) for j in range(nprocs)] for i in range(nprocs)]
    rel: dict[int, list[int]] = {}
    accs = []
    for p, op, off, size in trace:
        c = vc[p]
        kind = 0 if op in PLAIN else 1 if op in MARKED else 2
        if op != "ghost":
            accs.append((p, tuple(c), kind, op in WRITES, off, size))
        acquires = op == "ghost" or (kind != 0 and op in READS)
        for b in range(off, off + size):
            if acquires and b in rel:
                c[:] = [max(x, y) for x, y in zip(c, rel[b])]
        if op == "ghost" or op in WRITES:
            for b in range(off, off + size):
                rel[b] = list(c)
            c[p] += 1

    def excused(x, y):  # x an aligned plain write of at most a word, y a marked or atomic read
        return x[2] == 0 and x[3] and x[5] <= word and x[4] % x[5] == 0 and y[2] != 0 and not y[3]

    out = set()
    for j, y in enumerate(accs):
        for i, x in enumerate(accs[:j]):
            if x[0] == y[0] or not (x[3] or y[3]) or (x[2] and y[2]):
                continue
            if x[4] >= y[4] + y[5] or y[4] >= x[4] + x[5]:
                continue
            if x[1][x[0]] <= y[1][x[0]]:  # x happens before y
                continue
            if excused(x, y) or excused(y, x):
                continue
            out.add((i, j))
    return out


def _detect(nprocs: int, word: int, trace: list[tuple]) -> list[tuple[int, int]]:
    d = RaceDetector(nprocs, word, (SYNC,))
    for step, (p, op, off, size) in enumerate(trace):
        if op == "ghost":
            d.ghost_rmw(p, off, size)
        else:
            d.access(p, op, off, size, op in WRITES, step)
    return d.races


@st.composite
def traces(draw):
    nprocs = draw(st.integers(2, 3))
    out = []
    for _ in range(draw(st.integers(1, 40))):
        p = draw(st.integers(0, nprocs - 1))
        op = draw(st.sampled_from([*OPS, "ghost"]))
        if op == "ghost":
            out.append((p, op, SYNC[0], 8))
            continue
        size = 4 if op in FOUR else draw(st.sampled_from([1, 2, 4, 8]))
        off = draw(st.integers(0, 24 // size)) * size  # a few words: plenty of overlap
        out.append((p, op, off, size))
    return nprocs, out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_every_race_each_pair_once(t):
    nprocs, trace = t
    races = _detect(nprocs, 8, trace)
    assert len(races) == len(set(races))
    assert set(races) == reference(nprocs, 8, trace)


def test_a_race_after_a_race_on_the_same_bytes():
    """What a checker that keeps one write per byte misses: P1's read races
    with P0's write though P1's own write came between (and so with both)."""
    trace = [(0, "store", 0, 8), (1, "store", 0, 8), (1, "load", 0, 8),
             (0, "load", 8, 8), (0, "load", 8, 8), (1, "store", 8, 8)]  # two reads, then a write
    assert _detect(2, 8, trace) == [(0, 1), (0, 2), (3, 5), (4, 5)]


def test_accesses_that_cannot_race_any_more_are_dropped():
    """A long lock-ordered history keeps a handful of accesses per byte, not all."""
    d = RaceDetector(2, 8, (SYNC,))
    for i in range(200):
        p = i % 2
        d.ghost_rmw(p, SYNC[0], 8)  # lock
        d.access(p, "load", 0, 8, False, 2 * i)
        d.access(p, "store", 0, 8, True, 2 * i + 1)
        d.ghost_rmw(p, SYNC[0], 8)  # unlock
    assert d.races == [] and max(len(v) for v in d._live.values()) < RaceDetector.PRUNE


def test_a_plain_read_that_acquires_fails_the_reference(monkeypatch):
    """Message passing as a bare trace: the broken checker reports the flag's race alone."""
    trace = [(0, "store", 0, 8), (0, "store", 8, 8), (1, "load", 8, 8), (1, "load", 0, 8)]
    assert set(_detect(2, 8, trace)) == reference(2, 8, trace) == {(1, 2), (0, 3)}
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"kcsan-plain-read-acquires"}))
    assert set(_detect(2, 8, trace)) == {(1, 2)}
