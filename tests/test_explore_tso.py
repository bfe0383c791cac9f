"""Exploring under total store order (emu.explore.tso): store buffering is
seen and nothing weaker; fences and locked RMWs drain; store forwarding is
per byte on both byte orders; counterexamples replay; the built-in scenarios
stay clean where the kernel orders what it must, and a dropped barrier shows."""

import json
import os
import subprocess
import sys

import pytest

from emu.explore import explore, replay
from emu.explore.scenarios import SCENARIOS
from emu.kconfig import resolve
from emu.mm.mem import KernelAtomics
from tests.support.litmus_scenarios import litmus, mp, sb, var

EMU = [sys.executable, "-m", "emu.cli"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _outcomes(sc, model, strategy="dpor", cfg=None):
    r = explore(sc, cfg, memory_model=model, strategy=strategy, checks=())
    assert r.complete and r.holds
    return set(r.outcomes)


@pytest.mark.parametrize("strategy", ["dpor", "dfs"])
def test_store_buffering_only_under_tso(strategy):
    assert _outcomes(sb(False), "sc", strategy) == {(0, 1), (1, 0), (1, 1)}
    assert _outcomes(sb(False), "tso", strategy) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert _outcomes(sb(True), "tso", strategy) == {(0, 1), (1, 0), (1, 1)}  # smp_mb forbids (0, 0)


def test_locked_rmw_is_a_full_barrier_under_tso():
    def p(me, other):
        def run(mm, env):
            mm.a.xchg(var(env, me), 4, 1)  # x86 xchg: locked, drains the buffer
            env.data[me] = mm.a.load_once(var(env, other), 4)
        return run
    assert (0, 0) not in _outcomes(litmus("SB+xchg", p(0, 1), p(1, 0), observe=lambda d: (d[0], d[1])), "tso")


def test_message_passing_holds_under_tso():
    assert _outcomes(mp(), "tso") == {(0, 0), (0, 1), (1, 1)}  # never flag 1, data 0


@pytest.mark.parametrize("arch, order", [("x86_64", "little"), ("ppc64", "big")])
def test_store_forwarding_is_per_byte(arch, order):
    """P0 stores 4 bytes into the low-addressed half of a zeroed 8-byte word
    then loads all 8: it sees its own buffered half and memory's other half.
    P1 stores the other half: without its flush P0 reads 0 there; with it, P1's."""
    def p0(mm, env):
        mm.a.store(var(env, 0), 4, 0x11223344)
        env.data["p0"] = mm.a.load(var(env, 0), 8)

    def p1(mm, env):
        mm.a.store(var(env, 0) + 4, 4, 0x55667788)
    mine = (0x11223344).to_bytes(4, order)
    other = (0x55667788).to_bytes(4, order)
    want = {int.from_bytes(mine + bytes(4), order), int.from_bytes(mine + other, order)}
    sc = litmus("forward", p0, p1, observe=lambda d: d["p0"])
    assert _outcomes(sc, "tso", cfg=resolve(arch)) == want
    assert _outcomes(sc, "sc", cfg=resolve(arch)) == want


def test_a_tso_counterexample_replays():
    r = explore(SCENARIOS["stale-node"], memory_model="tso", protocol="keyhole-no-recheck", checks=())
    cx = r.counterexample
    assert cx is not None and cx.schedule.startswith("ksmx2:stale-node:keyhole-no-recheck:x86_64/2.6.33:tso:")
    again = replay(cx.schedule)
    assert [f["kind"] for f in again.findings] == [f["kind"] for f in cx.findings]
    assert json.dumps(again.timeline) == json.dumps(cx.timeline)
    assert any(s["access"].startswith("flush") for s in cx.timeline if "access" in s) or any(
        "flush" in json.dumps(s) for s in cx.timeline)


@pytest.mark.parametrize("scenario, protocol", [("pagetable-reuse", "keyhole"), ("pagetable-reuse", "refcount"),
                                                ("stale-node", "refcount")])
def test_builtin_scenarios_clean_under_tso(scenario, protocol):
    r = subprocess.run([*EMU, "explore", "--memory-model", "tso", "--scenario", scenario, "--protocol", protocol,
                        "--checks", "none", "--json"], capture_output=True, text=True, env=ENV, timeout=600)
    d = json.loads(r.stdout)
    assert r.returncode == 0 and d["complete"] and d["holds"] and d["memory_model"] == "tso", r.stdout[-3000:]


def test_the_free_paths_barrier_is_needed_under_tso(monkeypatch):
    """free_hot_cold_page's smp_mb (zone->lock's locked instruction): without it
    the page is free while its mapping = NULL is still in reclaim's store buffer,
    and ksmd frees the stable_node while memory still carries its key."""
    sc = SCENARIOS["pagetable-reuse"]
    assert explore(sc, memory_model="tso", checks=()).holds
    from emu.explore.tso import TsoMem
    monkeypatch.setattr(TsoMem, "smp_mb", lambda self, site=None: None)
    r = explore(sc, memory_model="tso", checks=())
    assert not r.holds
    assert "stable_node freed while its page carries its key" in {f["kind"] for f in r.counterexample.findings}


def test_barriers_cost_nothing_in_a_free_run():
    for name in ("smp_mb", "smp_rmb", "smp_wmb"):
        assert getattr(KernelAtomics, name)(None) is None


def test_memory_model_flag_errors():
    r = subprocess.run([*EMU, "explore", "--memory-model", "lkmmm"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "invalid choice: 'lkmmm'" in r.stderr and "Traceback" not in r.stderr
    bad = "ksmx2:stale-node:keyhole:x86_64/2.6.33:pso:ksmd=0,reclaim=1,allocator=2:0x3"
    r = subprocess.run([*EMU, "replay", bad], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "unknown memory model 'pso'" in r.stderr and r.stderr.count("\n") == 1


# -- which barriers the keyhole needs (explore --barriers) ----------------------------------------
def test_a_dropped_barrier_is_found_and_its_replay_string_replays():
    r = explore(SCENARIOS["pagetable-reuse"], memory_model="tso", drop_barriers=("zone_lock",), checks=())
    cx = r.counterexample
    assert not r.holds and r.memory_model == "tso/-zone_lock"
    assert ":tso/-zone_lock:" in cx.schedule
    again = replay(cx.schedule, checks=())
    assert [f["kind"] for f in again.findings] == [f["kind"] for f in cx.findings]
    # the same schedule without the drop is another program: replay says so, it does not pass it
    with pytest.raises(Exception, match="not enabled|not this scenario"):
        replay(cx.schedule.replace(":tso/-zone_lock:", ":tso:"), checks=())


def test_barrier_table_says_needed_only_with_a_counterexample():
    from emu.explore import barriers

    rows = barriers.table(resolve(), ("pagetable-reuse",), time_limit=120)
    by = {r["barrier"]: r for r in rows}
    assert by["zone_lock"]["tso"].startswith("NEEDED") and by["zone_lock"]["replay"].startswith("ksmx2:")
    for name in ("get_page_unless_zero", "page_freeze_refs"):  # x86 keeps what these order here
        assert by[name]["tso"].startswith("not needed (complete"), by[name]
    assert all(r["sc"].startswith("not needed") for r in rows)
    r = subprocess.run([*EMU, "explore", "--barriers", "--scenario", "pagetable-reuse", "--json"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0
    assert {x["barrier"]: x["tso"][:6] for x in json.loads(r.stdout)["rows"]} == \
        {x["barrier"]: x["tso"][:6] for x in rows}


@pytest.mark.parametrize("argv, message", [
    (["--drop-barrier", "zone_lock"], "--drop-barrier goes with --memory-model tso"),
    (["--memory-model", "tso", "--drop-barrier", "zone"], "invalid choice: 'zone'"),
    (["--barriers", "--memory-model", "tso"], "--barriers makes its own table"),
])
def test_barrier_flag_errors(argv, message):
    r = subprocess.run([*EMU, "explore", *argv], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_replay_string_with_an_unknown_barrier_is_refused():
    bad = "ksmx2:stale-node:keyhole:x86_64/2.6.33:tso/-zone:ksmd=0,reclaim=1,allocator=2:0x3"
    r = subprocess.run([*EMU, "replay", bad], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "unknown barrier '-zone'" in r.stderr and r.stderr.count("\n") == 1
