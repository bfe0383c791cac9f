"""Exploring under the explorer's lkmm (emu.explore.lkmm): stores to
different words pass each other unless smp_wmb, a release or a full barrier
orders them; loads stay in order. Checked on message passing, store
buffering, coherence and real spin_lock/spin_unlock, against the litmus
engines (the same machine on the kernel's litmus tests lies between TSO and
LKMM), against brute force on generated programs with barriers, and with
the release of spin_unlock dropped."""

import glob
import itertools
import json
import os
import subprocess
import sys

import pytest

from emu.explore import Scenario, explore, replay
from emu.explore.scenarios import SCENARIOS
from emu.kconfig import resolve
from emu.litmus.models import run
from emu.litmus.parse import parse_file
from tests.support import progs
from tests.support.litmus_scenarios import VARS, mp, sb, var

HERE = os.path.dirname(__file__)


def _outcomes(sc, model, strategy="dpor", cfg=None, drop=()):
    r = explore(sc, cfg, memory_model=model, strategy=strategy, checks=(), drop_barriers=drop)
    assert r.complete and r.holds
    return set(r.outcomes)


@pytest.mark.parametrize("strategy", ["dpor", "dfs"])
def test_message_passing_needs_a_write_barrier_under_lkmm(strategy):
    assert _outcomes(mp("po"), "tso", strategy) == {(0, 0), (0, 1), (1, 1)}
    assert _outcomes(mp("po"), "lkmm", strategy) == {(0, 0), (0, 1), (1, 1), (1, 0)}  # flag passed data
    assert _outcomes(mp("wmb"), "lkmm", strategy) == {(0, 0), (0, 1), (1, 1)}
    assert _outcomes(mp("release"), "lkmm", strategy) == {(0, 0), (0, 1), (1, 1)}


def test_store_buffering_and_its_fence_under_lkmm():
    assert _outcomes(sb(False), "lkmm") == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert _outcomes(sb(True), "lkmm") == {(0, 1), (1, 0), (1, 1)}


def test_two_plus_two_writes_under_lkmm_only():
    """2+2W: x = 1; y = 2 || y = 1; x = 2. Under sc and tso one of the second
    stores ends last; under lkmm both first stores can (x = 1 and y = 1)."""
    def p(first, second):
        def run_(mm, env):
            mm.a.store_once(var(env, first[0]), 4, first[1])
            mm.a.store_once(var(env, second[0]), 4, second[1])
        return run_

    def finals(model):
        sc = Scenario("2+2W", [("P0", p((0, 1), (1, 2))), ("P1", p((1, 1), (0, 2)))], extra=VARS, pages=8,
                      observe=lambda env: (env.world.kernel_mem.load(var(env, 0), 4),
                                           env.world.kernel_mem.load(var(env, 1), 4)))
        return _outcomes(sc, model)
    assert (1, 1) not in finals("sc") | finals("tso")
    assert (1, 1) in finals("lkmm")


@pytest.mark.parametrize("arch, order", [("x86_64", "little"), ("ppc64", "big")])
def test_stores_to_one_word_stay_in_order(arch, order):
    """Coherence, mixed-size: the halves of one word, stored in turn, reach
    memory in order; a reader of the whole word never sees the second without the first."""
    cfg = resolve(arch=arch)
    assert cfg.byte_order == order

    def writer(mm, env):
        mm.a.store_once(var(env, 0), 4, 0x11)
        mm.a.store_once(var(env, 0) + 4, 4, 0x22)
        mm.a.store_once(var(env, 1), 4, 0x33)

    def reader(mm, env):
        env.data["w"] = mm.a.load_once(var(env, 0), 8)
    sc = Scenario("halves", [("P0", writer), ("P1", reader)], extra=VARS, pages=8, observe=lambda env: env.data["w"])
    lo, hi = (0x11, 0x22 << 32) if order == "little" else (0x11 << 32, 0x22)
    assert _outcomes(sc, "lkmm", cfg=cfg) == {0, lo, lo | hi}  # never the second half alone


def _section_prog(config):
    """P0: lock; x0 = a; x1 = b; unlock || P1: lock; r = x1; r = x0; unlock."""
    return progs.Prog((
        (progs.Locked(0, (progs.Store(0, 0, 8, 0xA), progs.Store(1, 0, 8, 0xB))),),
        (progs.Locked(0, (progs.Load(1), progs.Load(0))),),
    ), ("spin",), config, model="lkmm")


@pytest.mark.parametrize("config", ["x86_64", "ppc64 PREEMPT"])
def test_spin_unlock_releases_the_sections_stores(config):
    """With the real spinlock: P1's section never sees P0's second store
    without its first; with spin_unlock's release dropped, it can."""
    prog = _section_prog(config)
    sc, cfg = progs.scenario(prog), progs.config(prog)

    def seen(drop):
        return {obs[0][1] for obs in _outcomes(sc, "lkmm", cfg=cfg, drop=drop)}
    assert seen(()) == {(0, 0), (0xB, 0xA)}
    assert (0xB, 0) in seen(("spin_unlock",))


@pytest.mark.parametrize("broken", ["wmb orders nothing", "release orders nothing", "no order at all"])
def test_the_outcome_checks_catch_a_broken_model(monkeypatch, broken):
    """Each ordering the model keeps, taken away, shows in the outcomes above."""
    from emu.explore import lkmm
    if broken == "wmb orders nothing":
        monkeypatch.setattr(lkmm.WordBuffers, "wmb", lambda self, p: None)
        assert (1, 0) in _outcomes(mp("wmb"), "lkmm")
    elif broken == "release orders nothing":
        put = lkmm.WordBuffers.put
        monkeypatch.setattr(lkmm.WordBuffers, "put", lambda self, *a, release=False: put(self, *a))
        assert (1, 0) in _outcomes(mp("release"), "lkmm")
    else:  # a store follows nothing: put keeps no order
        put = lkmm.WordBuffers.put

        def unordered(self, p, *a, **kw):
            put(self, p, *a, **kw)
            self.after[(p, self.stored[p])] = ()
        monkeypatch.setattr(lkmm.WordBuffers, "put", unordered)
        assert (1, 0) in _outcomes(mp("wmb"), "lkmm") and (1, 0) in _outcomes(mp("release"), "lkmm")


def test_explore_lkmm_lies_between_tso_and_lkmm_on_the_litmus_corpus():
    """The explorer's machine (litmus model explore-lkmm) on every supported
    kernel litmus test, both byte orders: its final states include TSO's and
    lie within LKMM's; and it is weaker than TSO somewhere (MP) and stronger
    than LKMM somewhere (loads in order: IRIW, LB)."""
    weaker, stronger, n = set(), set(), 0
    for path in sorted(glob.glob(os.path.join(HERE, "litmus", "**", "*.litmus"), recursive=True)):
        try:
            test = parse_file(path)
        except Exception:  # RCU: refused by the parser (test_litmus_models lists them)
            continue
        for endian in ("little", "big"):
            st = {m: {tuple(sorted((k, str(v)) for k, v in s.items())) for s, _ in run(test, m, endian).states}
                  for m in ("tso", "explore-lkmm", "lkmm")}
            assert st["tso"] <= st["explore-lkmm"] <= st["lkmm"], (path, endian)
            n += 1
            name = os.path.basename(path)
            if st["tso"] != st["explore-lkmm"]:
                weaker.add(name)
            if st["explore-lkmm"] != st["lkmm"]:
                stronger.add(name)
    assert n >= 100
    assert "MP+poonceonces.litmus" in weaker and "SB+poonceonces.litmus" not in weaker
    assert {"IRIW+poonceonces+OnceOnce.litmus", "LB+poonceonces.litmus"} <= stronger
    assert "MP+wmbonceonce+rmbonceonce.litmus" not in stronger


LKMM_PROGRAMS = int(os.environ.get("KSM_EMU_DPOR_LKMM_PROGRAMS", "40"))


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(2))
def test_dpor_equals_dfs_under_lkmm(chunk):
    """DPOR against brute force on generated programs with smp_wmb and release
    stores, under lkmm: the same end states and the same Mazurkiewicz traces."""
    want = LKMM_PROGRAMS // 2
    failed, skipped = progs.weak_differential(itertools.count(20_000 + chunk, 2), want, "lkmm", progs.BARRIER_PARAMS)
    assert len(skipped) <= want, f"seeds {skipped}: too big for brute force under lkmm"
    if failed:
        pytest.fail("\n\n".join(v.report(seed) for seed, v in failed[:3]) + f"\n\nseeds {[s for s, _ in failed]}; "
                    "each again: python tests/support/progs.py --model lkmm SEED", pytrace=False)


@pytest.mark.parametrize("scenario, protocol", [("pagetable-reuse", "keyhole"), ("pagetable-reuse", "refcount"),
                                                ("stale-node", "refcount")])
@pytest.mark.parametrize("arch", ["x86_64", "ppc64"])
def test_builtin_scenarios_clean_under_lkmm(scenario, protocol, arch):
    """The rest (stale-node keyhole, merge: minutes each) by
    python3 tools/bench_models.py --arch x86_64 --arch ppc64 --protocol keyhole --protocol refcount."""
    r = explore(SCENARIOS[scenario], resolve(arch=arch), protocol=protocol, memory_model="lkmm", checks=())
    assert r.complete and r.holds, r.counterexample and r.counterexample.schedule


def test_a_dropped_barrier_under_lkmm_is_found_and_replays():
    """free_hot_cold_page's smp_mb dropped: a flush of reclaim's mapping = NULL
    comes after the page is free; the counterexample's string names the model
    and replays to the same findings and the same timeline."""
    r = explore(SCENARIOS["pagetable-reuse"], resolve(arch="ppc64"), memory_model="lkmm",
                drop_barriers=("zone_lock",), checks=())
    cx = r.counterexample
    assert not r.holds and r.memory_model == "lkmm/-zone_lock"
    assert cx.schedule.startswith("ksmx2:pagetable-reuse:keyhole:ppc64/2.6.33:lkmm/-zone_lock:")
    again = replay(cx.schedule, checks=())
    assert [f["kind"] for f in again.findings] == [f["kind"] for f in cx.findings]
    assert json.dumps(again.timeline) == json.dumps(cx.timeline)
    assert any("flush" in json.dumps(s) for s in cx.timeline)


@pytest.mark.parametrize("arch", ["x86_64", "ppc64"])
def test_spin_unlocks_release_is_needed_in_stale_node(arch):
    """Without spin_unlock's release the allocator's _mapcount store (in its pte
    lock) lands after ksmd's increment under the same lock: the invariant check
    sees it, the replay string shows it again, and with the release it is clean
    (test_builtin_scenarios_clean_under_lkmm's stale-node cells, slow)."""
    r = explore(SCENARIOS["stale-node"], resolve(arch=arch), memory_model="lkmm", drop_barriers=("spin_unlock",),
                checks=())
    cx = r.counterexample
    assert cx is not None and any("_mapcount 0" in str(f.as_dict()) for f in cx.findings), cx and cx.findings
    assert f":{arch}/2.6.33:lkmm/-spin_unlock:" in cx.schedule
    again = replay(cx.schedule, checks=())
    assert [f.as_dict() for f in again.findings] == [f.as_dict() for f in cx.findings]


# -- the port's own model, and the flags' errors ---------------------------------------------------
EMU = [sys.executable, "-m", "emu.cli"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.mark.parametrize("arch, want", [("x86_64", "tso"), ("s390x", "tso"), ("ppc64", "lkmm"), ("arm", "lkmm")])
def test_arch_is_the_ports_model(arch, want):
    sc = SCENARIOS["pagetable-reuse"]
    assert explore(sc, resolve(arch=arch), memory_model="arch", checks=(), schedules=1).memory_model == want
    r = explore(sc, resolve(arch=arch), memory_model="arch", drop_barriers=("zone_lock",), checks=(), schedules=1)
    assert r.memory_model == f"{want}/-zone_lock"


def test_arch_on_the_command_line_and_in_a_campaign(tmp_path):
    r = subprocess.run([*EMU, "explore", "--memory-model", "arch", "--arch", "ppc64", "--scenario", "pagetable-reuse",
                        "--checks", "none", "--json"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["memory_model"] == "lkmm", r.stderr
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"explore": {"configs": [{"arch": "x86_64"}, {"arch": "ppc64"}],
                                            "scenarios": ["pagetable-reuse"], "memory_models": ["arch", "tso"]}}))
    r = subprocess.run([*EMU, "campaign", str(spec), "--out", str(tmp_path / "out.jsonl"), "--no-progress"],
                       capture_output=True, text=True, env=ENV, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = [json.loads(line)["job"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    # arch is tso on x86_64: one job, not the same job twice
    assert sorted((j["config"]["arch"], j["memory_model"]) for j in jobs) == \
        [("ppc64", "lkmm"), ("ppc64", "tso"), ("x86_64", "tso")]


@pytest.mark.parametrize("argv, message", [
    (["explore", "--memory-model", "tso", "--drop-barrier", "spin_unlock"], "tso keeps spin_unlock's order"),
    (["explore", "--memory-model", "arch", "--drop-barrier", "spin_unlock"], "tso keeps spin_unlock's order"),
    (["replay", "ksmx2:stale-node:keyhole:x86_64/2.6.33:arch:ksmd=0,reclaim=1,allocator=2:0x3"],
     "unknown memory model 'arch'"),
])
def test_model_flag_errors(argv, message, tmp_path):
    r = subprocess.run([*EMU, *argv], capture_output=True, text=True, env=ENV, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_campaign_with_a_drop_its_model_keeps_is_refused(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"explore": {"configs": [{"arch": "x86_64"}], "scenarios": ["pagetable-reuse"],
                                            "memory_models": ["arch/-spin_unlock"]}}))
    r = subprocess.run([*EMU, "campaign", str(spec), "--out", str(tmp_path / "out.jsonl")],
                       capture_output=True, text=True, env=ENV, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "tso keeps spin_unlock's order" in r.stderr and r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


def test_more_words_than_the_buffers_hold_is_an_error_not_a_finding(monkeypatch):
    from emu.explore import lkmm
    monkeypatch.setattr(lkmm, "MAX_WORDS", 2)

    def writer(mm, env):
        for i in range(3):
            mm.a.store_once(var(env, i), 4, 1)
    sc = Scenario("three-words", [("P0", writer), ("P1", lambda mm, env: None)], extra=VARS, pages=8)
    with pytest.raises(RuntimeError, match="more than 2 words"):
        explore(sc, memory_model="lkmm", checks=())


@pytest.mark.parametrize("model", ["tso", "lkmm"])
def test_tasks_sharing_a_cpu_are_refused_under_store_buffers(model, tmp_path):
    """Store buffers are per role: two tasks on one CPU would not forward each
    other's stores and would show SB's r0 = r1 = 0, which one CPU cannot. So
    tso and lkmm refuse it, in the API, the CLI, a replay string and a campaign."""
    roles = ((progs.Store(0, 0, 8, 1), progs.Load(1)), (progs.Store(1, 0, 8, 1), progs.Load(0)))
    prog = progs.Prog(roles, (), "x86_64", (0, 0), model=model)
    with pytest.raises(ValueError, match="p0 and p1 share CPU 0"):
        explore(progs.scenario(prog), progs.config(prog), memory_model=model, checks=(), cpus=prog.cpu_map())
    r = explore(progs.scenario(prog), progs.config(prog), memory_model=model, checks=())  # on two CPUs: SB
    assert ((0,), (0,)) in {o[0] for o in r.outcomes}
    for argv in (["explore", "--memory-model", model, "--cpu", "ksmd=0", "--cpu", "allocator=0"],
                 ["explore", "--memory-model", model, "-d", "SMP"],
                 ["replay", f"ksmx2:stale-node:keyhole:x86_64/2.6.33:{model}:ksmd=0,reclaim=0,allocator=2:0x3"]):
        p = subprocess.run([*EMU, *argv], capture_output=True, text=True, env=ENV, timeout=120, cwd=tmp_path)
        assert p.returncode == 2 and "each role needs a CPU of its own" in p.stderr, (argv, p.stderr)
        assert p.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []

