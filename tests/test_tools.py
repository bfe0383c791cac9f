"""The benchmark tools run and emit the figures they promise (not timings)."""

import json
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def test_bench_atomics_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_atomics.py"), "--json", "--loop-n", "1000",
                        "--repeats", "1", "--skip-machine"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d["python_ops"]) == {"load", "fetch_add", "cas"}
    for row in d["python_ops"].values():
        assert row["emu_ns"] > 0 and row["numpy_lock_ns"] > 0 and row["atomics_pypi_ns"] > 0
    assert d["loops"]["n"] == 1000 and d["loops"]["plain_c_ns"] > 0


def test_bench_atomics_bad_args():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_atomics.py"), "--repeats", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "must be positive" in r.stderr


def test_bench_ksm_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_ksm.py"), "--json", "--nodes", "20000",
                        "--python-nodes", "2000", "--repeats", "1", "--duration", "1", "--pages", "2048",
                        "--rates", "100", "--skip", "big"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["sweep"]["nodes"] == 20000 and d["sweep"]["nogil_nodes_per_s"] > 0
    assert [(x["protocol"], x["ksmd_pages_per_20ms"]) for x in d["time_to_free"]] == [("keyhole", 100),
                                                                                     ("refcount", 100)]
    assert all(x["violations"] == 0 for x in d["time_to_free"])


def test_bench_ksm_bad_args():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_ksm.py"), "--rates", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "--rates" in r.stderr


def test_bench_explore_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_explore.py"), "--json", "--skip", "steps",
                        "--run-cap", "2", "--pct-seeds", "2", "--model-time-limit", "2"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    x = d["dpor_vs_dfs"]
    assert x["dfs_schedules"] > x["dpor_schedules"] > 1 and x["ratio"] == x["dfs_schedules"] / x["dpor_schedules"]
    f = d["first_violation"]
    assert f["explore_schedules"] >= 1 and f["run_cap_s"] == 2 and f["ratio_run_over_explore"] > 0
    assert len(d["pct"]["schedules_to_violation"]) == 2 and set(d["goals"]) >= {"dpor >= 10x fewer schedules than dfs"}
    from emu.explore.scenarios import SCENARIOS

    assert [m["scenario"] for m in d["models"]] == list(SCENARIOS)
    for m in d["models"]:  # each model explored, tso and lkmm against sc in the same run
        for w in ("tso", "lkmm"):
            assert m["sc"]["schedules"] >= 1 and m[w]["schedules"] >= 1
            assert m[f"{w}_over_sc_steps_per_s"] == round(m[w]["steps_per_s"] / m["sc"]["steps_per_s"], 2)
    assert [x["model"] for x in d["litmus"]] == ["sc", "tso", "lkmm", "explore-lkmm"]
    assert all(x["files"] > 50 and x["seconds"] > 0 for x in d["litmus"])
    assert d["litmus"][2]["disagree"] == 0  # the Result lines are LKMM's: sc and tso differ on some


def _bench_dirs():
    return set(Path("/dev/shm").glob("bench-ksm-*")) if Path("/dev/shm").is_dir() else set()


def test_bench_ksm_says_what_it_does_and_cleans_up_when_stopped():
    import signal

    before = _bench_dirs()
    p = subprocess.Popen([sys.executable, str(TOOLS / "bench_ksm.py"), "--nodes", "20000000", "--skip", "free",
                          "--skip", "big"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("bench_ksm: sweep: 20000000 nodes")  # at once, not after a minute
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "removed" in err and "Traceback" not in err
    assert _bench_dirs() == before


def test_bench_trace_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_trace.py"), "--json", "--pairs", "1", "--duration", "1",
                        "--pages", "2048", "--workload", "busy-ksmd"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    w = json.loads(r.stdout)["workloads"]["busy-ksmd"]
    assert w["untraced"]["calls_per_s_median"] > 0 and w["ratio"] > 0 and isinstance(w["meets_goal"], bool)
    assert w["traced"]["runs"][0]["trace_events"] > 0 and w["untraced"]["runs"][0]["trace_events"] == 0


def test_bench_campaign_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_campaign.py"), "--json", "--jobs", "4", "--schedules", "100"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    one, two = d["runs"]
    assert (one["executor"], one["workers"], two["executor"], two["workers"]) == ("local x1", 1, "local x2", 2)
    assert one["jobs"] == two["jobs"] == 4 and one["verdicts"] == two["verdicts"] == ["clean"]
    assert d["speedup_2_over_1"] == round(two["jobs_per_s"] / one["jobs_per_s"], 3)
    assert 0 < d["cpu_capacity_before"] <= 2.5 and "2 local workers >= 1.6x jobs/s of 1" in d["goals"]


def test_bench_checks_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_checks.py"), "--json", "--pairs", "1", "--duration", "1",
                        "--pages", "2048", "--workload", "busy-ksmd"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    w = json.loads(r.stdout)["workloads"]["busy-ksmd"]
    assert w["off"]["calls_per_s_median"] > 0 and w["ratio"] == \
        w["lockdep"]["calls_per_s_median"] / w["off"]["calls_per_s_median"]
    assert w["lockdep"]["runs"][0]["lockdep_findings"] == 0 and isinstance(w["meets_goal"], bool)


def test_bench_ksm_times_the_real_get_ksm_page(monkeypatch, tmp_path):
    """Its Python figure is emu.mm.ksm.get_ksm_page's own, every call it times
    (no copy of it in tools/)."""
    import importlib

    from emu.mm import ksm

    monkeypatch.syspath_prepend(str(TOOLS))  # the tool and its benchlib, from tools/
    bench_ksm = importlib.import_module("bench_ksm")

    calls = []
    real = ksm.get_ksm_page
    monkeypatch.setattr(ksm, "get_ksm_page", lambda *a: calls.append(a[2]) or real(*a))
    assert bench_ksm.real_get_ksm_page_rate(tmp_path / "r.state", 50, 2) > 0
    assert len(calls) == 3 * 50 and len(set(calls)) == 50  # two timed passes and the check, over every node
    for tool in TOOLS.glob("*.py"):
        assert "def get_ksm_page" not in tool.read_text(), tool
