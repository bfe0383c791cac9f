"""lockdep-lite and the data race checker: each catches its deliberately broken
variant (KSM_EMU_TEST_BREAK), in a run and under explore, and says nothing
about the correct code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.check.lockdep import LOCK_ORDER, LOCK_RECURSION, findings, records
from emu.explore import explore
from emu.explore.scenarios import SCENARIOS
from emu.kconfig import resolve
from emu.mm import testbreak
from emu.mm.boot import boot
from emu.mm.page import lock_page, unlock_page
from emu.mm.ptlock import pte_lock, pte_unlock
from emu.mm.testbreak import ENV

ROOT = Path(__file__).resolve().parent.parent
HAZARD = ["--arch", "ppc64", "--kernel", "2.6.32", "-e", "PREEMPT", "-e", "DEBUG_SPINLOCK"]


def run(tmp_path, *args, broken=None):
    env = {**os.environ, "KSM_EMU_STATE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop(ENV, None)
    if broken:
        env[ENV] = broken
    r = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--json", "--no-progress", *args],
                       capture_output=True, text=True, timeout=120, env=env)
    return r, json.loads(r.stdout) if r.stdout else None


@pytest.mark.parametrize("config", [[], HAZARD], ids=["x86_64 2.6.33", "ppc64 2.6.32 PREEMPT DEBUG_SPINLOCK"])
def test_correct_run_has_no_lockdep_findings(tmp_path, config):
    r, d = run(tmp_path, "--duration", "4", "--pages", "4096", *config)
    assert r.returncode == 0, r.stderr
    assert d["checks"] == {"enabled": ["lockdep"], "lockdep": [], "lockdep_total": 0}
    assert d["counts"]["ptl_locks"] > 0 and d["counts"]["ksm_pages_merged"] > 0  # the locks were used


def test_pte_under_another_tables_lock_caught_in_a_run(tmp_path):
    r, d = run(tmp_path, "--duration", "3", "--pages", "4096", broken="pte-lock-of-other-table")
    assert r.returncode == 1, r.stderr
    f = next(f for f in d["checks"]["lockdep"] if f["kind"] == "lock not held")
    assert f["function"].startswith("try_to_unmap_one") and f["bytes"].startswith("pte of slot")
    assert f["expected"].startswith("page->ptl of pfn") and f["expected"] not in f["held"]
    assert any(h.startswith("page->ptl of pfn") for h in f["held"])  # it held a ptl: the wrong one
    assert "pte_offset_map_lock" in f["rule"] and d["checks"]["lockdep_total"] >= 1
    off = run(tmp_path, "--duration", "2", "--pages", "4096", "--checks", "none", broken="pte-lock-of-other-table")
    assert off[0].returncode == 0 and off[1]["checks"]["lockdep_total"] == 0  # the checker did it


def test_pte_under_another_tables_lock_caught_by_explore(monkeypatch):
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"pte-lock-of-other-table"}))
    r = explore(SCENARIOS["pagetable-reuse"])
    f = r.counterexample.findings[0]
    assert f["kind"] == "lock not held" and f["function"] == "try_to_unmap_one > pte"
    assert r.schedules_explored == 1  # no interleaving needed: the lock is wrong in every one


@pytest.mark.slow  # explores stale-node in full, twice
def test_plain_store_racing_with_an_atomic_of_another_size(monkeypatch):
    """set_page_refcounted as one plain 8-byte store over _count and _mapcount,
    against ksmd's 4-byte atomic_inc_not_zero on _count of the reused page."""
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"refcounted-plain-store"}))
    r = explore(SCENARIOS["stale-node"])
    race = next(f for f in r.counterexample.findings if f["kind"] == "data race")
    a, b = race["accesses"]
    assert {(a["marking"], a["size"]), (b["marking"], b["size"])} == {("plain", 8), ("atomic", 4)}
    assert "_count" in race["overlap"] and {a["role"], b["role"]} == {"ksmd", "allocator"}
    assert all(x["function"] for x in (a, b))  # from the recorded replay
    assert not explore(SCENARIOS["stale-node"], checks=()).counterexample  # no other check sees it


def test_freeze_by_read_then_store_found_by_explore(monkeypatch):
    monkeypatch.setattr(testbreak, "BROKEN", frozenset({"freeze-read-then-store"}))
    r = explore(SCENARIOS["stale-node"])
    race = next(f for f in r.counterexample.findings if f["kind"] == "data race")
    assert "_count" in race["overlap"] and "plain" in {a["marking"] for a in race["accesses"]}
    assert any(a["function"].endswith("page_freeze_refs") for a in race["accesses"])


# explore with every check on over every scenario and correct protocol: test_explore.py


def _world(tmp_path):
    w = boot(tmp_path / "w.state", resolve(), 256)
    return w, [w.context(cpu=c, role=role, checks={"lockdep"}) for c, role in ((0, "ksmd"), (1, "reclaim"))]


def test_lock_order_abba(tmp_path):
    """CPU 0 takes PG_locked then a ptl; CPU 1 a ptl then PG_locked: lockdep's ABBA."""
    w, (a, b) = _world(tmp_path)
    pfn = 100
    lock_page(a, pfn)
    off = pte_lock(a, 0)
    pte_unlock(a, off)
    unlock_page(a, pfn)
    assert records(w)[1] == 0  # one order seen so far: fine
    off = pte_lock(b, 1)
    lock_page(b, pfn + 1)
    unlock_page(b, pfn + 1)
    pte_unlock(b, off)
    rec, n = records(w)
    assert n == 1 and rec[0]["kind"] == LOCK_ORDER and rec[0]["cpu"] == 1
    (f,), _ = findings(w)
    assert f["taking"] == f"PG_locked of pfn {pfn + 1}" and f["after"].startswith("page->ptl of pfn")
    assert "ABBA" in f["detail"]
    w.close()


def test_same_class_nested(tmp_path):
    w, (a, _) = _world(tmp_path)
    lock_page(a, 100)
    lock_page(a, 101)
    rec, n = records(w)
    assert n == 1 and rec[0]["kind"] == LOCK_RECURSION
    w.close()
