"""Issue 15's signal policy, end to end: SIGINT, SIGTERM, SIGHUP and SIGKILL of
campaign (run and explore jobs), explore, replay and experiment, each at a
moment the test proves was reached (the job's state file exists, the run's
roles are up; the replay waits at its first scheduling point). Within 2 s of the command's end no process of it is alive
(children are tied to their parent's death) and none of its scratch
directories is left (the janitor of emu.scratch); a signal the command can
catch ends it with exit 130."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMU = [sys.executable, "-m", "emu.cli"]

RUN_SPEC = {"run": {"configs": [{"arch": "x86_64", "kernel": "2.6.33"}], "protocols": ["keyhole"],
                    "seeds": [1, 2], "pages": 1024, "duration": 60}}
EXPLORE_SPEC = {"explore": {"configs": [{"arch": "x86_64", "kernel": "2.6.33"}], "protocols": ["keyhole", "refcount"],
                            "scenarios": ["stale-node"], "strategy": "random", "schedules": 10_000_000}}
LONG_EXPLORE = ["--strategy", "random", "--schedules", "10000000", "--protocol", "keyhole"]
# A replay is over in a fraction of a second: ksm-emu replay's own main, with its
# first scheduling point held (after writing ./ready) until a signal asks it to stop
REPLAY = [sys.executable, "-c", """
import os, sys, time
from emu.explore import sched
point = sched.Runner.point
def held(self, *a):
    if not os.path.exists("ready"):
        open("ready", "w").close()
        while self.stop.reason is None:
            time.sleep(0.01)
    return point(self, *a)
sched.Runner.point = held
from emu.cli import main
sys.exit(main(sys.argv[1:]))
"""]
CX = "ksmx1:stale-node:keyhole-no-recheck:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0x13.1x30.2x23.0x2"


def ours(d: Path) -> list[int]:
    """Processes started in `d` (each command here runs with cwd `d`)."""
    pids = []
    for p in glob.glob("/proc/[0-9]*"):
        try:
            if os.readlink(p + "/cwd") == str(d) and int(p[6:]) != os.getpid():
                pids.append(int(p[6:]))
        except OSError:
            pass
    return pids


def wait_for(cond, p: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert p.poll() is None, f"ended before {what}: {p.communicate()[1][-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout} s: {what}")


CASES = {  # name: (command, files proving the stage (under the test's directory), processes up then)
    "campaign-run": ([*EMU, "campaign", "spec.json", "--jobs", "2"], "scratch/ksm-campaign-*/run.state", 5),
    "campaign-explore": ([*EMU, "campaign", "spec.json", "--jobs", "2"], "scratch/ksm-explore-*/explore.state", 3),
    "explore": ([*EMU, "explore", *LONG_EXPLORE], "scratch/ksm-explore-*/explore.state", 1),
    "replay": ([*REPLAY, "replay", CX], "ready", 1),
    "experiment": ([*EMU, "experiment", "reclaim", "--duration", "60", "--no-progress"],
                   "scratch/ksm-experiment-*/*.state", 4),
}
QUICK = ("explore", "replay")  # a few seconds each; the others start pools or runs of processes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: s.name)
@pytest.mark.parametrize("case", [c if c in QUICK else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_signal_leaves_no_process_and_no_directory(tmp_path, case, sig):
    argv, proof, nprocs = CASES[case]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "spec.json").write_text(json.dumps(RUN_SPEC if case == "campaign-run" else EXPLORE_SPEC))
    env = {**os.environ, "KSM_EMU_SCRATCH_DIR": str(scratch), "KSM_EMU_STATE_DIR": str(tmp_path / "states"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: glob.glob(str(tmp_path / proof)) and len(ours(tmp_path)) >= nprocs, p, proof)
        time.sleep(0.3)  # into the job's main loop
        assert os.listdir(scratch), "no scratch directory to leave behind"
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        deadline = time.monotonic() + 2
        while (ours(tmp_path) or os.listdir(scratch)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ours(tmp_path) == [], "processes left alive"
        assert os.listdir(scratch) == [], "scratch directories left"
        if sig == signal.SIGKILL:
            assert p.returncode == -signal.SIGKILL
        else:
            assert p.returncode == 130, (p.returncode, err[-2000:])
            assert "Traceback" not in err, err
            assert "interrupted" in err + out
    finally:
        for pid in ours(tmp_path):
            os.kill(pid, signal.SIGKILL)


def test_janitor_removes_a_dead_processes_directories(tmp_path):
    """The mechanism alone: a process SIGKILLed with a scratch directory open."""
    code = ("import os, sys; from emu.scratch import scratch_dir; d = scratch_dir('t'); "
            "open(os.path.join(d.name, 'f'), 'w').close(); print(d.name, flush=True); sys.stdin.read()")
    env = {**os.environ, "KSM_EMU_SCRATCH_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
    d = p.stdout.readline().strip()
    assert os.path.isfile(os.path.join(d, "f"))
    p.kill()
    p.wait()
    deadline = time.monotonic() + 2
    while os.path.exists(d) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(d)


def test_scratch_dir_removed_when_its_block_raises(tmp_path, monkeypatch):
    from emu.scratch import scratch_dir

    monkeypatch.setenv("KSM_EMU_SCRATCH_DIR", str(tmp_path))
    with pytest.raises(KeyboardInterrupt), scratch_dir("t") as d:
        (d.path / "f").write_text("x")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
