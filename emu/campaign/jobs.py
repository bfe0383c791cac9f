"""One campaign job, run where the executor put it: an explore job in this
process (ksm-emu explore's API), a run job as a `ksm-emu run` subprocess
(a run forks its roles and handles signals, which a pool or Dask worker
thread may not). The result is one JSON-able record."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

from ..kconfig import ConfigRequest

# One job at a time per process: a Dask worker started with several threads
# would otherwise run explores side by side in one interpreter (CPU-bound,
# under one GIL: no faster, and the explorer is not written for threads).
_ONE_AT_A_TIME = threading.Lock()


def worker_name() -> str:
    """The Dask worker's address when inside one, else host:pid. (A Dask worker
    has imported distributed; a pool worker must not pay for importing it.)"""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return distributed.get_worker().address
        except ValueError:  # not inside a Dask worker
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


def _explore(job: dict) -> dict:
    from ..explore.api import explore
    from ..explore.scenarios import SCENARIOS
    from ..explore.stop import Stop
    from .spec import config_of

    # a Stop of our own: explore then leaves the signals alone, and Pool.terminate's
    # SIGTERM ends this worker at once (its scratch directory goes with the janitor)
    r = explore(SCENARIOS[job["scenario"]], config_of(job["config"]), protocol=job["protocol"],
                strategy=job["strategy"], schedules=job["schedules"], seed=job["seed"],
                depth=job.get("depth", 3), cpus=job["cpus"], time_limit=job.get("time_limit"),
                memory_model=job.get("memory_model", "sc"), stop=Stop())
    cx = r.counterexample
    findings = cx.findings if cx else []
    return {"verdict": "violation" if cx else "clean", "violations": len(findings),
            "kinds": sorted({f.kind for f in findings}), "replay": cx.schedule if cx else None,
            "detail": {"schedules": r.schedules_explored, "complete": r.complete, "steps": r.steps}}


def run_argv(job: dict, state: str) -> list[str]:
    """The `ksm-emu run` command line of a run job."""
    c = job["config"]
    argv = [sys.executable, "-m", "emu.cli", "run", "--json", "--no-progress", "--arch", c["arch"],
            "--kernel", c["kernel"], "--protocol", job["protocol"], "--seed", str(job["seed"]),
            "--pages", str(job["pages"]), "--duration", str(job["duration"]),
            "--allocators", str(job["allocators"]), *ConfigRequest.from_dict(c).flags()]
    return argv + ["--state", state]


def _run(job: dict) -> dict:
    from ..scratch import preexec_die_with_parent, scratch_dir

    with scratch_dir("campaign") as d:  # the janitor removes it if this worker is killed
        argv = run_argv(job, str(d.path / "run.state"))
        # the run (and so its roles) dies with this worker, whatever ends it
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=job["duration"] + 120, preexec_fn=preexec_die_with_parent())
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"ksm-emu run exited {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1]}")
    s = json.loads(p.stdout)
    kinds = sorted(s["violations_by_kind"])
    return {"verdict": "violation" if s["violations_total"] else "clean", "violations": s["violations_total"],
            "kinds": kinds, "replay": None,
            "detail": {"command": " ".join(["ksm-emu run", *argv[6:-2]]), "ksmd_passes": s["counts"]["ksmd_passes"],
                       "reclaim_time_to_free_us": s["reclaim_time_to_free_us"]}}


def run_job(job: dict) -> dict:
    """The job's record: job, verdict (clean, violation, error), violations,
    kinds, replay, elapsed_s, worker, detail. Never raises for the job's own
    failure: that is verdict "error" with the message."""
    with _ONE_AT_A_TIME:
        t0 = time.perf_counter()
        try:
            out = _explore(job) if job["kind"] == "explore" else _run(job)
        except Exception as e:  # the job's failure is its result, not the campaign's
            out = {"verdict": "error", "violations": 0, "kinds": [], "replay": None,
                   "detail": {"error": f"{type(e).__name__}: {e}"}}
        return {"job": job, **out, "elapsed_s": round(time.perf_counter() - t0, 3), "worker": worker_name()}
