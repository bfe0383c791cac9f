"""The data race checker reports every race of an execution, each pair of
accesses once: in explore's counterexample, in its replay, and in the JSON;
against a reference that builds LKMM-style happens-before as a graph on
random access sequences with barriers; and broken checkers fail these
tests: one that lets a plain read acquire
(KSM_EMU_TEST_BREAK=kcsan-plain-read-acquires) hides the race after the plain
read, one where every write releases and every marked read acquires
(kcsan-every-access-orders, the model before LKMM) hides message passing's
race on plain data."""

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


def _races(findings: list[dict]) -> list[tuple]:
    return sorted((a["role"], a["access"], a["marking"], b["role"], b["access"], b["marking"],
                   "page 20" in f["overlap"]) for f in findings if f["kind"] == "data race"
                  for a, b in [f["accesses"]])


def _two_races(findings: list[dict], flag_store: str = "store", flag_marking: str = "plain") -> None:
    """Exactly the two races of message passing read with plain accesses:
    P0's store of data with P1's load of data, P0's store of flag with P1's load of flag."""
    assert _races(findings) == sorted([("p0", "store", "plain", "p1", "load", "plain", True),
                                       ("p0", flag_store, flag_marking, "p1", "load", "plain", False)]), findings
    assert len(findings) == 2, findings  # and nothing else


def _check_message_passing(sc: Scenario, **kw: str) -> None:
    r = explore(sc)
    assert not r.holds and r.schedules_explored == 1  # P0 then P1: the flag read is 1, data read too
    _two_races(r.counterexample.findings, **kw)
    _two_races([v for v in result_json(r)["violations"]], **kw)
    again = replay(r.counterexample.schedule, scenarios={sc.name: sc})
    _two_races(again.findings, **kw)
    _two_races(replayed_json(again)["violations"], **kw)


def _release_producer(mm, env):
    mm.a.store(_data(mm), mm.word, 42)
    mm.a.store_release(_flag(mm), mm.word, 1)


MP_REL = Scenario("mp-rel", [("p0", _release_producer), ("p1", _consumer)],
                  summary="message passing: plain data, smp_store_release of the flag, plain reads")


def test_message_passing_through_plain_flag_has_two_races():
    _check_message_passing(MP)


def test_a_released_flag_read_plainly_still_has_two_races():
    """The reader's plain load acquires nothing, so the release orders nothing for it."""
    _check_message_passing(MP_REL, flag_store="store_release", flag_marking="atomic")


def test_a_plain_read_that_acquires_fails_the_two_race_test(monkeypatch):
    """The flag's plain load would acquire P0's release and order the data's after
    P0's store: the data race hidden."""
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"kcsan-plain-read-acquires"}))
    with pytest.raises(AssertionError):
        _check_message_passing(MP_REL, flag_store="store_release", flag_marking="atomic")
    (race,) = explore(MP_REL).counterexample.findings
    assert "page 21" in race["overlap"]  # the flag's race alone


# -- message passing as LKMM sees it (tools/memory-model: MP+... with plain data) -----------------
def _mp(writer: tuple[str, ...], reader: tuple[str, ...]) -> Scenario:
    """P0: data = 42 (plain); then `writer` (barriers, and the flag's store op).
    P1: `reader` (the flag's load op, then barriers); if flag: r = data (plain)."""

    def p0(mm, env):
        mm.a.store(_data(mm), mm.word, 42)
        for op in writer[:-1]:
            getattr(mm.a, op)()
        getattr(mm.a, writer[-1])(_flag(mm), mm.word, 1)

    def p1(mm, env):
        flag = getattr(mm.a, reader[0])(_flag(mm), mm.word)
        for op in reader[1:]:
            getattr(mm.a, op)()
        if flag:
            env.data["data"] = mm.a.load(_data(mm), mm.word)

    return Scenario("mp-" + "-".join(writer + reader), [("p0", p0), ("p1", p1)], pages=24)


# P0's ops, P1's ops: the flag's store and load, with barriers around them
MP_VARIANTS = [
    (("store_once",), ("load_once",)),
    (("smp_wmb", "store_once"), ("load_once",)),  # the reader unordered
    (("store_once",), ("load_once", "smp_rmb")),  # the writer unordered
    (("smp_wmb", "store_once"), ("load_once", "smp_rmb")),
    (("smp_mb", "store_once"), ("load_once", "smp_mb")),
    (("store_release",), ("load_acquire",)),
    (("store_release",), ("load_once",)),
    (("smp_wmb", "store_once"), ("load_acquire",)),
    (("store_release",), ("load_once", "smp_rmb")),
    (("smp_rmb", "store_once"), ("load_once", "smp_rmb")),  # rmb orders no write
    (("store_once",), ("load_once", "smp_wmb")),  # wmb orders no read
]
_LITMUS = {"store_once": "WRITE_ONCE(*y, 1);", "store_release": "smp_store_release(y, 1);",
           "load_once": "r0 = READ_ONCE(*y);", "load_acquire": "r0 = smp_load_acquire(y);"}


def lkmm_says_data_race(writer: tuple[str, ...], reader: tuple[str, ...]) -> bool:
    """The same program as a C litmus test, judged by ksm-emu litmus's LKMM
    engine (linux-kernel.cat, agreeing with herd7 on the kernel's own tests)."""
    from emu.litmus.models import run
    from emu.litmus.parse import parse

    def body(ops):
        return "\n".join("\t" + (_LITMUS.get(op) or f"{op}();") for op in ops)

    text = (f"C MP+{'+'.join(writer)}+{'+'.join(reader)}\n\n{{}}\n\n"
            f"P0(int *x, int *y)\n{{\n\t*x = 42;\n{body(writer)}\n}}\n\n"
            f"P1(int *x, int *y)\n{{\n\tint r0;\n\tint r1;\n\n{body(reader)}\n\tif (r0)\n\t\tr1 = *x;\n}}\n\n"
            "exists (1:r0=1 /\\ 1:r1=0)\n")
    return bool(run(parse(text), "lkmm").data_races)


def test_lkmm_engine_sees_the_textbook_cases():
    """The reference the next test uses: unordered message passing races, ordered does not."""
    assert lkmm_says_data_race(("store_once",), ("load_once",))
    assert not lkmm_says_data_race(("store_release",), ("load_acquire",))


@pytest.mark.parametrize("writer, reader", MP_VARIANTS, ids=lambda v: "-".join(v))
def test_message_passing_with_plain_data_as_lkmm_says(writer, reader):
    races = lkmm_says_data_race(writer, reader)
    r = explore(_mp(writer, reader))
    if races:  # the data's race alone: the flag's accesses are marked
        assert not r.holds
        found = r.counterexample.findings
        assert _races(found) == [("p0", "store", "plain", "p1", "load", "plain", True)] and len(found) == 1, found
    else:  # in every interleaving
        assert r.complete and r.holds, r.counterexample.findings


def test_the_model_where_every_access_orders_fails_message_passing(monkeypatch):
    """The checker's model before LKMM: a WRITE_ONCE flag read by READ_ONCE orders the data."""
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"kcsan-every-access-orders"}))
    with pytest.raises(AssertionError):
        test_message_passing_with_plain_data_as_lkmm_says(("store_once",), ("load_once",))


# -- against a brute-force reference ---------------------------------------------------------
WRITES = frozenset(("store", "store_once", "atomic_set", "store_release", "cas", "xchg", "fetch_add",
                    "fetch_or", "fetch_and", "atomic_inc_not_zero"))
OPS = sorted((READS | WRITES | {"load_acquire"}) - {op for op in READS if op.endswith("_relaxed")})
FOUR = frozenset(("atomic_read", "atomic_set", "atomic_inc_not_zero", "atomic_inc_not_zero_relaxed"))  # atomic_t
SYNC = (64, 72)  # a ghost lock word (the free list's head in explore)


ACQ_RMW = frozenset(("cas", "xchg", "fetch_add", "fetch_or", "fetch_and", "atomic_inc_not_zero", "ghost"))
FENCE_OPS = ("smp_mb", "smp_rmb", "smp_wmb", "ctrl_dep")
ACQ_POINTS = ACQ_RMW - {"ghost"} | {"smp_mb", "smp_rmb", "ctrl_dep"}  # a marked read before it acquires there
REL_POINTS = ACQ_RMW | {"smp_mb", "smp_wmb", "ctrl_dep", "load_acquire"}  # a marked write after it releases it


def reference(nprocs: int, word: int, trace: list[tuple]) -> set[tuple[int, int]]:
    """The races of a trace by definition, with happens-before built as a graph
    (no vector clocks). Each event i is two nodes: 2i its access, 2i+1 what
    comes after it (an RMW's or load_acquire's acquire, and an RMW's release of
    what it acquired). Edges: program order, and for each byte a read reads
    from its last write, the write's release point -> the read's acquire point.
    Release point: the write itself (store_release, an RMW, a ghost lock), else
    for a marked write (or a plain one assumed atomic: aligned, at most a word)
    its CPU's last REL_POINT before it. Acquire point: after the read itself
    (an RMW, load_acquire, a ghost lock), else for a marked read its CPU's first
    ACQ_POINT after it. Then every pair of accesses on a common byte from two
    CPUs, one a write, one plain, neither reaching the other, less what
    KCSAN_ASSUME_PLAIN_WRITES_ATOMIC excuses."""
    n = len(trace)
    succ: list[set[int]] = [set() for _ in range(2 * n)]
    last: dict[int, int] = {}
    for i, (p, *_rest) in enumerate(trace):
        succ[2 * i].add(2 * i + 1)
        if p in last:
            succ[2 * last[p] + 1].add(2 * i)
        last[p] = i

    def kind(op: str) -> int:
        return 0 if op in PLAIN else 1 if op in MARKED else 2

    def writes(op: str) -> bool:
        return op in WRITES or op == "ghost" or op.endswith("_relaxed")

    def reads(op: str) -> bool:
        return op in READS or op in ("ghost", "load_acquire")

    def point(j: int) -> int:  # a barrier: its node; an access: after it
        return 2 * j if trace[j][1] in FENCE_OPS else 2 * j + 1

    def rel_point(i: int) -> int | None:
        p, op, off, size = trace[i]
        if op == "store_release" or op in ACQ_RMW:
            return 2 * i + 1
        if kind(op) == 0 and not (size <= word and off % size == 0):
            return None
        for j in range(i - 1, -1, -1):
            if trace[j][0] == p and trace[j][1] in REL_POINTS:
                return point(j)
        return None

    def acq_point(i: int) -> int | None:
        p, op = trace[i][:2]
        if op in ACQ_RMW or op == "load_acquire":
            return 2 * i + 1
        if kind(op) == 0:
            return None
        for j in range(i + 1, n):
            if trace[j][0] == p and trace[j][1] in ACQ_POINTS:
                return point(j)
        return None

    writer: dict[int, int] = {}  # byte -> its last write
    for i, (_p, op, off, size) in enumerate(trace):
        if op in FENCE_OPS:
            continue
        if reads(op):
            tgt = acq_point(i)
            for b in range(off, off + size):
                w = writer.get(b)
                r = None if w is None or tgt is None else rel_point(w)
                if r is not None:
                    succ[r].add(tgt)
        if writes(op):
            for b in range(off, off + size):
                writer[b] = i

    reach: list[set[int]] = [set() for _ in range(2 * n)]
    for v in range(2 * n - 1, -1, -1):  # every edge goes forward in the trace
        for w in succ[v]:
            reach[v] |= {w} | reach[w]

    def excused(x, y):  # x an aligned plain write of at most a word, y a marked or atomic read
        (_, ox, offx, sx), (_, oy, _, _) = trace[x], trace[y]
        return kind(ox) == 0 and writes(ox) and sx <= word and offx % sx == 0 and kind(oy) != 0 and not writes(oy)

    accs = [i for i, t in enumerate(trace) if t[1] not in FENCE_OPS and t[1] != "ghost"]
    index = {i: k for k, i in enumerate(accs)}
    out = set()
    for j in accs:
        for i in accs:
            if i >= j:
                break
            (pi, oi, fi, si), (pj, oj, fj, sj) = trace[i], trace[j]
            if pi == pj or not (writes(oi) or writes(oj)) or (kind(oi) and kind(oj)):
                continue
            if fi >= fj + sj or fj >= fi + si:
                continue
            if 2 * j in reach[2 * i]:  # i happens before j
                continue
            if excused(i, j) or excused(j, i):
                continue
            out.add((index[i], index[j]))
    return out


def _detect(nprocs: int, word: int, trace: list[tuple]) -> list[tuple[int, int]]:
    d = RaceDetector(nprocs, word, (SYNC,))
    for step, (p, op, off, size) in enumerate(trace):
        if op == "ghost":
            d.ghost_rmw(p, off, size)
        elif op in FENCE_OPS:
            d.fence(p, op)
        else:
            d.access(p, op, off, size, op in WRITES or op.endswith("_relaxed"), step)
    return d.races


@st.composite
def traces(draw):
    nprocs = draw(st.integers(2, 3))
    out = []
    for _ in range(draw(st.integers(1, 40))):
        p = draw(st.integers(0, nprocs - 1))
        op = draw(st.sampled_from([*OPS, "ghost", *FENCE_OPS, "cas_relaxed", "atomic_inc_not_zero_relaxed"]))
        if op == "ghost":
            out.append((p, op, SYNC[0], 8))
            continue
        if op in FENCE_OPS:
            out.append((p, op, 0, 0))
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
    trace = [(0, "store", 0, 8), (0, "store_release", 8, 8), (1, "load", 8, 8), (1, "load", 0, 8)]
    assert set(_detect(2, 8, trace)) == reference(2, 8, trace) == {(1, 2), (0, 3)}
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"kcsan-plain-read-acquires"}))
    assert set(_detect(2, 8, trace)) == {(1, 2)}
