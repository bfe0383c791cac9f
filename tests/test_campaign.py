"""ksm-emu campaign: the example SPEC on the local pool and on a Dask
LocalCluster of 2 worker processes gives the same verdicts; a campaign killed
midway (SIGINT, then SIGKILL) and run again completes only the missing jobs."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emu.campaign.spec import example, key, parse

ROOT = Path(__file__).resolve().parent.parent
EMU = [sys.executable, "-m", "emu.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def campaign(*args, cwd):
    return subprocess.run([*EMU, "campaign", *args], cwd=cwd, capture_output=True, text=True, env=ENV,
                          stdin=subprocess.DEVNULL, timeout=300)


def outcome(recs: list[dict]) -> dict:
    """What must not depend on the executor: per job, its verdict, kinds and replay string."""
    return {key(r["job"]): (r["verdict"], tuple(r["kinds"]), r["replay"]) for r in recs}


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("campaign")
    (d / "c.json").write_text(example())
    return d


@pytest.fixture(scope="module")
def local_run(spec_dir):
    r = campaign("c.json", "--jobs", "2", cwd=spec_dir)
    assert r.returncode == 0, r.stderr
    return r, records(spec_dir / "c.results.jsonl")


def test_example_is_big_enough_and_every_job_once(local_run):
    jobs = parse(example())
    assert len(jobs) >= 8 and len({key(j) for j in jobs}) == len(jobs)
    r, recs = local_run
    assert outcome(recs).keys() == {key(j) for j in jobs} and len(recs) == len(jobs)
    for rec in recs:
        assert {"job", "verdict", "violations", "replay", "elapsed_s", "worker"} <= rec.keys()
        assert (rec["verdict"] == "violation") == (rec["violations"] > 0), rec
        if rec["verdict"] == "violation" and rec["job"]["kind"] == "explore":
            assert rec["replay"].startswith("ksmx1:" + rec["job"]["scenario"])
    # the broken protocol is caught, the seed's hazard found where the static analysis says HAZARD
    assert re.search(r"\| ppc64 [^|]*\| explore \| pagetable-reuse \| keyhole \| HAZARD \| violation 1/1 \|[^|]*\| yes \|",
                     r.stdout), r.stdout
    # "clean" only where the search covered the space; a time-limited one says it is incomplete
    assert "| x86_64 2.6.33 | explore | pagetable-reuse | keyhole | safe | clean (complete) 1/1 | - | yes |" in r.stdout
    assert re.search(r"\| no violation found \(\d+ schedules, incomplete\) 1/1 \|", r.stdout), r.stdout
    assert "replay: ksm-emu replay ksmx1:" in r.stdout


def test_a_failing_jobs_replay_string_replays(local_run):
    _, recs = local_run
    rec = next(r for r in recs if r["replay"])
    r = subprocess.run([*EMU, "replay", rec["replay"], "--json"], capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert r.returncode == 1 and {f["kind"] for f in json.loads(r.stdout)["violations"]} == set(rec["kinds"])


@pytest.mark.slow  # starts a Dask cluster, reruns the campaign
def test_dask_local_cluster_gives_the_local_verdicts(spec_dir, local_run):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_port=0) as cluster:
        r = campaign("c.json", "--scheduler", cluster.scheduler_address, "--out", "dask.jsonl", cwd=spec_dir)
        workers = set(cluster.scheduler_info["workers"])
    assert r.returncode == 0, r.stderr
    recs = records(spec_dir / "dask.jsonl")
    assert outcome(recs) == outcome(local_run[1])
    assert {rec["worker"] for rec in recs} <= workers and len({rec["worker"] for rec in recs}) == 2
    assert f"run now on Dask at {cluster.scheduler_address}" in r.stdout


def _wait_lines(path: Path, n: int, p: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        assert p.poll() is None, "the campaign ended before it was killed"
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} lines in {path} after {timeout} s")


@pytest.mark.slow  # the campaign, three times
def test_killed_midway_then_rerun_completes_only_the_missing_jobs(spec_dir):
    out = spec_dir / "kill.jsonl"
    argv = [*EMU, "campaign", "c.json", "--jobs", "1", "--out", out.name]
    total = len(parse(example()))
    p = subprocess.Popen(argv, cwd=spec_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_lines(out, 3, p)
    p.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, what is done stays
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "run the same command again" in err and "Traceback" not in err, err
    first = records(out)
    assert 3 <= len(first) < total
    p = subprocess.Popen(argv, cwd=spec_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_lines(out, len(first) + 3, p)
    p.kill()  # SIGKILL: no chance to clean up
    p.communicate(timeout=60)
    second = records(out)
    assert len(first) + 3 <= len(second) < total
    r = campaign(*argv[4:], cwd=spec_dir)
    assert r.returncode == 0, r.stderr
    final = records(out)
    keys = [key(rec["job"]) for rec in final]
    assert len(keys) == len(set(keys)) == total  # every job once: none run twice, none lost
    assert final[:len(second)] == second  # what was written stays as it was
    assert f"{total - len(second)} run now on 1 local worker, {len(second)} already in kill.jsonl" in r.stdout


def test_memory_models_make_jobs_of_their_own(tmp_path):
    """A SPEC's memory_models: each model a job of its own (an sc job keeps the
    identity it had before memory models), run under that model, shown apart in
    the table; dropping the free path's barrier under tso is found, with a
    replay string that names the model."""
    spec = {"explore": {"scenarios": ["pagetable-reuse"], "memory_models": ["sc", "tso", "tso/-zone_lock", "tso"]}}
    jobs = parse(json.dumps(spec))
    assert [j.get("memory_model") for j in jobs] == [None, "tso", "tso/-zone_lock"]
    (tmp_path / "m.json").write_text(json.dumps(spec))
    r = campaign("m.json", "--jobs", "1", cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # a violation among the jobs
    recs = {r["job"].get("memory_model", "sc"): r for r in records(tmp_path / "m.results.jsonl")}
    assert recs["sc"]["verdict"] == recs["tso"]["verdict"] == "clean"
    assert recs["tso"]["detail"]["complete"] and recs["tso"]["detail"]["schedules"] > recs["sc"]["detail"]["schedules"]
    dropped = recs["tso/-zone_lock"]
    assert dropped["verdict"] == "violation" and ":tso/-zone_lock:" in dropped["replay"]
    assert "stable_node freed while its page carries its key" in dropped["kinds"]
    table = (tmp_path / "m.results.md").read_text() if (tmp_path / "m.results.md").exists() else r.stdout
    assert "pagetable-reuse (tso/-zone_lock)" in table and "pagetable-reuse (tso)" in table
    replayed = subprocess.run([*EMU, "replay", dropped["replay"]], capture_output=True, text=True, env=ENV)
    assert replayed.returncode == 1 and "stable_node freed while its page carries its key" in replayed.stdout
