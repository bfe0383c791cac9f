"""The multi-process test helper fails fast and clean: a worker's exception
reaches the test with its traceback, a wedged worker is named with the stack
it is stuck in, and no worker outlives the call."""

import os
import time

import pytest
from support.procs import WorkerError, run_procs


def _worker(kind, flag_path):
    if kind == "raise":
        raise ValueError("worker 0 could not map the scratch region")
    if kind == "spin":  # waits for a flag the raising worker was to set: wedged
        while not os.path.exists(flag_path):
            pass
    return os.getpid()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _children():
    me = str(os.getpid())
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                out.add(int(d))
    return out


def test_a_raising_worker_fails_the_test_at_once(tmp_path):
    before = _children()
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as e:
        run_procs(_worker, [("raise", tmp_path / "flag"), ("spin", tmp_path / "flag")], timeout=60)
    assert time.monotonic() - t0 < 10  # not the 60 s deadline: the spinner is not waited for
    text = str(e.value)
    assert "worker 0 raised" in text and "ValueError: worker 0 could not map the scratch region" in text
    assert "Traceback" in text and "_worker" in text
    assert _children() <= before  # the spinning worker was killed and reaped


def test_a_wedged_worker_is_named_with_its_stack(tmp_path):
    before = _children()
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as e:
        run_procs(_worker, [("ok", tmp_path / "flag"), ("spin", tmp_path / "flag")], timeout=2)
    assert time.monotonic() - t0 < 10
    text = str(e.value)
    assert "1 worker(s) still running after 2 s" in text and "worker 1 stuck in" in text and "_worker" in text
    assert _children() <= before


def test_results_in_order(tmp_path):
    pids = run_procs(_worker, [("ok", tmp_path / "f")] * 3)
    assert len(set(pids)) == 3 and os.getpid() not in pids and not any(_alive(p) for p in pids)
