"""ksm-emu experiment reclaim, and the run's note when ksmd completes no pass."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMU = [sys.executable, "-m", "emu.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
ROW_KEYS = {"protocol", "pages_to_scan", "sleep_ms", "pass_s", "n", "p50_us", "p99_us", "max_us", "pinned"}


def emu(*args, cwd, env=ENV, timeout=300):
    return subprocess.run([*EMU, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.mark.slow  # two 4 s runs
def test_reclaim_experiment_json_and_plot(tmp_path):
    """refcount waits for ksmd's pass, the keyhole frees at once: orders of magnitude apart."""
    pytest.importorskip("matplotlib")
    r = emu("experiment", "reclaim", "--rates", "200", "--duration", "4", "--json", "--plot", "out.png",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) == {"config", "rows"} and d["config"]["rates"] == [200]
    rows = {row["protocol"]: row for row in d["rows"]}
    assert set(rows) == {"keyhole", "refcount"} and all(set(row) == ROW_KEYS for row in d["rows"])
    kh, rc = rows["keyhole"], rows["refcount"]
    assert kh["pass_s"] == rc["pass_s"] == pytest.approx(2048 / 200 * 0.020)
    assert kh["n"] > 0 and rc["n"] > 0 and kh["pinned"] == 0
    assert rc["p50_us"] > 100 * kh["p50_us"]  # a pass (~0.1-1 s) against microseconds
    assert kh["p50_us"] <= kh["p99_us"] <= kh["max_us"]
    png = (tmp_path / "out.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_text_table_names_the_goals(tmp_path):
    r = emu("experiment", "reclaim", "--rates", "400", "--protocol", "keyhole", "--duration", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:4] == ["protocol", "pages/scan", "pass", "s"] and lines[2].split()[:2] == ["keyhole", "400"]
    assert "goal: keyhole p99 < 1 ms at every rate:" in r.stdout
    assert "goal: refcount p50 within 2x of half the pass, where it frees pages: n/a" in r.stdout


def test_plot_without_matplotlib_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('blocked for the test')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(blocker), ENV["PYTHONPATH"]])}
    r = emu("experiment", "reclaim", "--plot", "out.png", cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and not (tmp_path / "out.png").exists()
    assert r.stderr.count("\n") == 1 and "pip install 'ksm-emu[plot]'" in r.stderr, r.stderr


def test_run_says_why_refcount_freed_no_ksm_page(tmp_path):
    """The default size: 131072 rmap_items at 100 per 20 ms, no pass in a short run."""
    r = emu("run", "--protocol", "refcount", "--duration", "1", "--state", "s.state", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["counts"]["ksmd_passes"] == 0 and d["reclaim_time_to_free_us"]["n"] == 0
    (note,) = [n for n in d["notes"] if "ksmd completed no pass" in n]
    assert "131072 rmap_items at 100 per 20 ms, at least 26.2 s a pass" in note
    assert "with refcount a reclaimed KSM page is freed only when ksmd's pass reaches" in note


def test_run_with_passes_has_no_such_note(tmp_path):
    r = emu("run", "--pages", "1024", "--ksmd-pages", "1000", "--duration", "2", "--state", "s.state", "--json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["counts"]["ksmd_passes"] >= 1 and not any("ksmd completed no pass" in n for n in d["notes"])
