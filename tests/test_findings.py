"""One Finding type: truth's violations, lockdep, kcsan and explore's ends all
produce `emu.findings.Finding` values with a `Kind`; every kind's words are
spelled once, in emu/findings.py; JSON output holds plain dicts of the same
shape as before, and a finding reads like that dict."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from worlds import World

from emu.check.lockdep import findings as lockdep_findings
from emu.check.violations import V_FALSE_OPEN
from emu.explore import Scenario, explore, replay
from emu.explore.render import replayed_json, result_json
from emu.explore.scenarios import SCENARIOS
from emu.findings import Finding, Kind, brief, history_line, line
from emu.kconfig import resolve
from emu.mm import testbreak
from emu.mm.boot import boot
from emu.mm.page import lock_page, unlock_page
from emu.mm.ptlock import pte_lock, pte_unlock

EMU = Path(__file__).resolve().parent.parent / "emu"


def test_every_kind_is_spelled_in_findings_only():
    """No string literal outside emu/findings.py is a kind's words (a dict key
    that happens to match, like the JSON's "blocked" count, is not a kind)."""
    words = {k.value for k in Kind}
    spelled = []
    for path in EMU.rglob("*.py"):
        if path.name == "findings.py" and path.parent == EMU:
            continue
        tree = ast.parse(path.read_text(), str(path))
        keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}
        spelled += [f"{path.relative_to(EMU.parent)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and n.value in words and id(n) not in keys]
    assert not spelled, spelled


def test_a_finding_reads_like_its_json_dict():
    f = Finding(Kind.DATA_RACE, {"overlap": "page 3: _count", "accesses": []})
    d = {"kind": "data race", "overlap": "page 3: _count", "accesses": []}
    assert f == d and f.as_dict() == d and {**f} == d and f["kind"] == "data race" and f.kind is Kind.DATA_RACE
    assert f.get("pfn") is None and "overlap" in f and list(f) == ["kind", "overlap", "accesses"]
    assert json.loads(json.dumps(f.as_dict())) == d
    assert Finding.of(d) == f and Finding.of(f) is f and Finding.of(d).kind is Kind.DATA_RACE
    assert Finding.of({"kind": "a kind of its own"}).kind == "a kind of its own"  # words no kind has stay words
    g = f.adding(step=4)
    assert g["step"] == 4 and "step" not in f  # a new finding; the first unchanged


def test_violations_are_findings(tmp_path):
    w = World(tmp_path)
    try:
        w.ksmd.truth.violation(V_FALSE_OPEN, pfn=5)
        (v,) = w.violations()
    finally:
        w.close()
    assert isinstance(v, Finding) and v.kind is Kind.KEYHOLE_FALSE_OPEN and v["pfn"] == 5
    assert brief(v) == "kind=keyhole false open, pfn=5, stable_node=None, mapping=0x0"
    assert history_line(v.adding(members_on_mapping=[])).startswith("VIOLATION keyhole false open: mapping 0x0")


def test_lockdep_findings_are_findings(tmp_path):
    w = boot(tmp_path / "w.state", resolve(), 256)
    try:
        a, b = (w.context(cpu=c, role=role, checks={"lockdep"}) for c, role in ((0, "ksmd"), (1, "reclaim")))
        lock_page(a, 100)
        pte_unlock(a, pte_lock(a, 0))
        unlock_page(a, 100)
        off = pte_lock(b, 1)
        lock_page(b, 101)
        unlock_page(b, 101)
        pte_unlock(b, off)
        (f,), n = lockdep_findings(w)
        assert n == 1 and isinstance(f, Finding) and f.kind is Kind.LOCK_ORDER
        assert line(f).startswith("lock order: ") and "ABBA" in line(f)
    finally:
        w.close()


def _writer(mm, env):
    mm.a.store(mm.page_off(20) + mm.index_rel, mm.word, 1)


def test_kcsan_and_explore_findings_are_findings_and_json_is_dicts():
    """kcsan's race and a scenario's invariant are Findings in the API, dicts in the JSON."""
    sc = Scenario("two-writers", [("p0", _writer), ("p1", _writer)], check=lambda env: "checked")
    r = explore(sc)
    kinds = [f.kind for f in r.counterexample.findings]
    assert kinds == [Kind.INVARIANT, Kind.DATA_RACE], kinds
    assert all(isinstance(f, Finding) for f in r.counterexample.findings)
    again = replay(r.counterexample.schedule, scenarios={sc.name: sc})
    assert again.findings == r.counterexample.findings
    for out in (result_json(r)["violations"], replayed_json(again)["violations"]):
        assert [type(v) for v in out] == [dict, dict]
        assert json.loads(json.dumps(out))[1]["kind"] == "data race"
        assert out[0]["detail"] == "checked"


def test_an_execution_end_is_a_finding(monkeypatch):
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"pte-lock-of-other-table"}))
    r = explore(SCENARIOS["pagetable-reuse"])
    f = r.counterexample.findings[0]
    assert isinstance(f, Finding) and f.kind is Kind.LOCK_NOT_HELD

    def boom(mm, env):
        raise RuntimeError("boom")

    cx = explore(Scenario("boom", [("a", boom)])).counterexample
    (f,) = cx.findings
    assert f.kind is Kind.EXCEPTION and f["detail"].startswith("exception: RuntimeError: boom")
    assert cx.as_dict()["findings"][0]["kind"] == "exception" and type(cx.as_dict()["findings"][0]) is dict
