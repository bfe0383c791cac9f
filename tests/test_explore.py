"""ksm-emu explore and replay on the built-in scenarios: the broken protocols
found on purpose, the correct ones complete and clean, the seed's hazard where
and only where it lives, static and dynamic agreeing, replay exact."""

import json
import subprocess
import sys

import pytest

from emu.explore import explore, replay
from emu.explore.scenarios import SCENARIOS

CMD = [sys.executable, "-m", "emu.cli"]
SEED = ["--arch", "ppc64", "--kernel", "2.6.32", "-e", "PREEMPT", "-e", "DEBUG_SPINLOCK",
        "--page-offset", "0xdead4ead00000000"]


def cli(*args, timeout=600):
    r = subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)
    d = json.loads(r.stdout) if "--json" in args and r.stdout.startswith("{") else None
    return r, d


def test_list_scenarios():
    r, _ = cli("explore", "--list-scenarios")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["stale-node", "pagetable-reuse", "merge"]
    assert all(len(ln.split(None, 1)[1]) > 20 for ln in lines)


def test_no_recheck_found_by_dpor():
    """No --window-us, no luck: DPOR finds the false open within 50 schedules."""
    r, d = cli("explore", "--scenario", "stale-node", "--protocol", "keyhole-no-recheck", "--json")
    assert r.returncode == 1, r.stderr
    assert d["schedules_explored"] <= 50 and not d["complete"]
    v = d["violations"][0]
    assert v["kind"] == "keyhole false open" and v["page_really_is"] != "ksm"
    assert v["schedule"].startswith("ksmx1:stale-node:keyhole-no-recheck:")
    assert v["timeline"] and any(s.get("violating") for s in v["timeline"])
    for key in ("config", "protocol", "scenario", "strategy", "schedules_explored", "complete", "elapsed_s",
                "steps_per_s", "violations"):
        assert key in d
    for key in ("kind", "pfn", "stable_node", "expected", "mapping", "members_on_mapping", "schedule", "timeline"):
        assert key in v


@pytest.mark.parametrize("seed", range(10))
def test_pct_finds_no_recheck(seed):
    """Every seed finds it (within 400 schedules: the issue's 200 holds for 8 of
    these 10 seeds; tools/bench_explore.py measures it)."""
    r = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck", strategy="pct", depth=3, seed=seed,
                schedules=400)
    assert not r.holds, f"seed {seed}: PCT found nothing in 400 schedules"
    assert r.counterexample.findings[0]["kind"] in ("keyhole false open", "KSM page changed while referenced")


@pytest.mark.parametrize("protocol", ["keyhole", "refcount"])
@pytest.mark.parametrize("scenario", [pytest.param(s, marks=pytest.mark.slow) if s in ("merge", "stale-node") else s
                                      for s in SCENARIOS])  # merge, stale-node: 5 s to 2 min each
def test_correct_protocols_complete_and_clean(scenario, protocol):
    """Every interleaving, with lockdep and the data race checker on (explore's
    default): no violation, no lock-discipline finding, no data race."""
    r = explore(SCENARIOS[scenario], protocol=protocol)
    assert r.checks == {"lockdep", "kcsan"}
    assert r.holds and r.complete and r.schedules_explored > 1
    assert r.counterexample is None, r.counterexample.findings


def test_broken_variants_caught_everywhere():
    for scenario in SCENARIOS:
        r = explore(SCENARIOS[scenario], protocol="keyhole-no-clear")
        assert not r.holds
        assert {f["kind"] for f in r.counterexample.findings} & {"bad_page (free_pages_check)",
                                                                 "stable_node freed while its page carries its key"}


@pytest.mark.parametrize("arch", ["ppc64", "s390x", "sparc64"])
def test_seed_hazard_found(arch):
    args = [a if a != "ppc64" else arch for a in SEED]
    r, d = cli("explore", "--scenario", "pagetable-reuse", *args, "--cpu", "allocator=3", "--json")
    assert r.returncode == 1, r.stderr
    v = d["violations"][0]
    assert v["mapping"] == "0xdead4ead00000003" and v["stable_node"] == "0xdead4ead00000000"
    assert v["members_on_mapping"] == ["ptl.magic=0xdead4ead", "ptl.owner_cpu=0x3"]
    assert v["page_really_is"] == "pagetable"


@pytest.mark.parametrize("change", [["--cpu", "allocator=2"], ["--kernel", "2.6.33", "--cpu", "allocator=3"],
                                   ["--arch", "x86_64", "--cpu", "allocator=3"]])
def test_seed_hazard_absent(change):
    args = list(SEED)
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    r, d = cli("explore", "--scenario", "pagetable-reuse", *args, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert d["complete"] and d["violations"] == [] and d["schedules_explored"] > 1


@pytest.mark.slow  # explores the whole hazard matrix
def test_static_and_dynamic_agree_hostile_map():
    r, d = cli("explore", "--scenario", "pagetable-reuse", "--all", "--kernel", "2.6.32",
               "--page-offset", "0xdead4ead00000000", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    rows = d["rows"]
    assert d["disagreements"] == 0 and all(x["agree"] in ("yes", "n/a") for x in rows)
    hazards = [x for x in rows if x["static"] == "HAZARD"]
    assert hazards and all("key" in x["dynamic"] or "open" in x["dynamic"] for x in hazards)
    assert {x["arch"] for x in hazards} >= {"ppc64", "s390x", "sparc64"}
    na = [x for x in rows if x["agree"] == "n/a"]
    assert na and {x["arch"] for x in na} <= {"i386", "arm", "ppc32"}  # a 64-bit offset on a 32-bit arch
    assert all(x["dynamic"].startswith("clean") for x in rows if x["static"] in ("safe", "safe here", "no ptl"))


@pytest.mark.slow  # explores the whole hazard matrix
def test_static_and_dynamic_agree_real_maps():
    r, d = cli("explore", "--scenario", "pagetable-reuse", "--all", "--kernel", "2.6.33", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    assert d["disagreements"] == 0 and all(x["agree"] == "yes" for x in d["rows"])


@pytest.mark.slow  # explores the whole hazard matrix, both kernels
def test_explore_all_covers_exactly_the_hazard_rows():
    """`explore --all` and `ksm-layout hazard --all` with the same flags: the same
    rows (both kernels by default), and the text table cuts no column."""
    flags = ["--arch", "ppc64", "--page-offset", "0xdead4ead00000000"]
    r, d = cli("explore", "--all", *flags, "--json", timeout=900)
    h = subprocess.run([sys.executable, "-m", "emu.layout_cli", "hazard", "--all", *flags, "--json"],
                       capture_output=True, text=True, timeout=300)
    hz = json.loads(h.stdout)
    want = sorted([(x["config"]["kernel"], x["options"]) for x in hz["rows"]]
                  + [(x["kernel"], x["options"]) for x in hz["skipped"]])
    assert sorted((x["kernel"], x["options"]) for x in d["rows"]) == want
    assert {k for k, _ in want} == {"2.6.32", "2.6.33"}
    text = subprocess.run([*CMD, "explore", "--all", *flags], capture_output=True, text=True, timeout=900).stdout
    for x in d["rows"]:
        assert x["dynamic"] in text


def test_replay_is_exact():
    r = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck")
    cx = r.counterexample
    runs = [json.dumps(replay(cx.schedule).timeline) for _ in range(10)]
    assert len(set(runs)) == 1 and runs[0] == json.dumps(cx.timeline)
    again = cx.replay()
    assert [f["kind"] for f in again.findings] == [f["kind"] for f in cx.findings]


def test_replay_cli_string_and_json_file(tmp_path):
    r, d = cli("explore", "--scenario", "pagetable-reuse", *SEED, "--cpu", "allocator=3", "--json")
    out = tmp_path / "cx.json"
    out.write_text(r.stdout)
    r1, d1 = cli("replay", d["replay"], "--json")
    r2, d2 = cli("replay", str(out), "--json")
    assert r1.returncode == r2.returncode == 1
    assert d1["timeline"] == d2["timeline"] == d["violations"][0]["timeline"]
    r3, _ = cli("replay", d["replay"])
    assert r3.returncode == 1 and "VIOLATION" in r3.stdout and "ptl.owner_cpu=0x3" in r3.stdout


def test_minimize_keeps_the_violation():
    plain = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck")
    small = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck", minimize=True)
    assert not small.holds and small.counterexample.preemptions <= plain.counterexample.preemptions
    assert {f["kind"] for f in small.counterexample.findings} & {f["kind"] for f in plain.counterexample.findings}


def test_state_file_holds_the_counterexample(tmp_path):
    state = tmp_path / "cx.state"
    r, d = cli("explore", "--scenario", "pagetable-reuse", *SEED, "--cpu", "allocator=3", "--state", str(state),
               "--json")
    assert r.returncode == 1 and state.exists()
    k = subprocess.run([*CMD, "kmem", str(state), "--pfn", f"{d['violations'][0]['pfn']}:1", "--json"],
                       capture_output=True, text=True)
    assert k.returncode == 0, k.stderr
    r2, _ = cli("explore", "--scenario", "pagetable-reuse", "--state", str(state))
    assert r2.returncode == 2 and "exists" in r2.stderr  # never overwritten


@pytest.mark.parametrize("args,msg", [
    (["explore", "--scenario", "nope"], "invalid choice: 'nope'"),
    (["explore", "--strategy", "bfs"], "invalid choice: 'bfs'"),
    (["explore", "--depth", "3"], "--depth goes with --strategy pct"),
    (["explore", "--seed", "1"], "--seed goes with --strategy pct or random"),
    (["explore", "--strategy", "pct", "--preemption-bound", "1"], "--preemption-bound goes with --strategy dfs"),
    (["explore", "--schedules", "0"], "--schedules 0"),
    (["explore", "--strategy", "pct", "--depth", "0"], "--depth 0"),
    (["explore", "--cpu", "gpu=1"], "unknown role 'gpu'"),
    (["explore", "--cpu", "ksmd=64"], "CPU ids are 0..63"),
    (["explore", "--cpu", "ksmd=1", "--cpu", "ksmd=2"], "given twice"),
    (["explore", "--all", "--scenario", "merge"], "--all runs pagetable-reuse over the hazard matrix"),
    (["explore", "--all", "--minimize"], "--all runs --scenario pagetable-reuse"),
    (["explore", "--all", "--memory-model", "tso", "--drop-barrier", "zone_lock"], "--all runs --scenario pagetable-reuse"),
    (["explore", "--max-mem", "5"], "--max-mem goes with --all"),
    (["explore", "--time-limit", "-1"], "--time-limit"),
    (["explore", "--arch", "i386", "--page-offset", "0xdead4ead00000000"], "does not fit"),
    (["replay", "garbage"], "not a replay string"),
    (["replay", "ksmx1:nope:keyhole:x86_64/2.6.33:a=1:0"], "unknown scenario 'nope'"),
    (["replay", "ksmx1:stale-node:magic:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0"], "unknown protocol"),
    (["replay", "ksmx1:stale-node:keyhole:vax/2.6.33:ksmd=0,reclaim=1,allocator=2:0"], "bad config"),
    (["replay", "ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0:0"], "scenario stale-node has"),
    (["replay", "ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:7x3"], "choices are 0..2"),
    (["replay", "ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0x3"], "schedule ends"),
    (["replay", "ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0x900"], "not enabled"),
])
def test_bad_input(tmp_path, args, msg):
    before = sorted(tmp_path.iterdir())
    r = subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert sorted(tmp_path.iterdir()) == before
