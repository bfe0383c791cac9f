"""The launcher and its role processes: whatever ends the launcher ends the
roles; signals stop a run cleanly; a role's failure and a truncated state
file are reported in a line, not lost."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from emu.machfile import read_header

CMD = [sys.executable, "-m", "emu.cli", "run"]
ROLES = 4  # ksmd, reclaim, two allocators


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def children(pid):
    """The pids whose parent is `pid`, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st and int(st[1]) == pid:
                out.append(int(name))
    return out


def alive(pid):
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def start(tmp_path, *args, env=None):
    p = subprocess.Popen([*CMD, "--state", str(tmp_path / "s.state"), "--pages", "4096", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while len(kids := children(p.pid)) < ROLES:
        assert time.monotonic() < deadline and p.poll() is None, "the roles did not start"
        time.sleep(0.05)
    time.sleep(0.5)  # past their start-up
    return p, kids


def all_gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_is_a_clean_stop(tmp_path):
    p, kids = start(tmp_path, "--duration", "60", "--json")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    d = json.loads(out)
    assert p.returncode == 130 and d["interrupted"] is True and d["interrupted_by"] == "SIGTERM"
    assert d["exit_code"] == 130 and d["counts"]["pages_allocated"] > 0 and d["duration_s"] < 30
    assert "Traceback" not in err
    assert all_gone_within(kids, 2)


def test_sigkill_of_the_launcher_kills_every_role(tmp_path):
    p, kids = start(tmp_path, "--duration", "60")
    assert len(kids) == ROLES
    p.kill()
    p.wait(10)
    assert all_gone_within(kids, 2), [k for k in kids if alive(k)]
    # nobody holds the launcher's stdout any more: a reader gets EOF
    out, _ = p.communicate(timeout=5)


def test_second_ctrl_c_keeps_the_partial_summary(tmp_path):
    p, kids = start(tmp_path, "--duration", "60", "--json")
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    d = json.loads(out)
    assert p.returncode == 130 and d["interrupted_by"] == "SIGINT" and "Traceback" not in err
    assert all_gone_within(kids, 2)


def test_role_exception_reaches_the_report(tmp_path):
    """The test hook (KSM_EMU_TEST_ROLE_RAISES=ROLE, read by supervise's child)
    makes that role raise at its first step."""
    env = {"KSM_EMU_TEST_ROLE_RAISES": "allocator.1"}
    r = subprocess.run([*CMD, "--state", str(tmp_path / "j.state"), "--pages", "4096", "--duration", "20",
                        "--json"], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    d = json.loads(r.stdout)
    assert r.returncode == 3 and d["exit_code"] == 3 and d["duration_s"] < 15
    (died,) = d["died"]
    assert died["role"] == "allocator.1" and died["exitcode"] == 1
    assert died["failure"] == "RuntimeError: KSM_EMU_TEST_ROLE_RAISES asked allocator.1 to fail"
    assert "failed: RuntimeError: KSM_EMU_TEST_ROLE_RAISES" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*CMD, "--state", str(tmp_path / "t.state"), "--pages", "4096", "--duration", "20"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert r.returncode == 3
    assert "DIED: allocator.1 (pid" in r.stdout and "failed: RuntimeError: KSM_EMU_TEST_ROLE_RAISES" in r.stdout


def test_verbose_logs_every_start_and_stop(tmp_path):
    r = subprocess.run([*CMD, "--state", str(tmp_path / "v.state"), "--pages", "4096", "--duration", "1",
                        "-v"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for role in ("ksmd", "reclaim", "allocator.0", "allocator.1"):
        assert f" {role} cpu" in r.stderr
    assert r.stderr.count(": started, pid") == ROLES and r.stderr.count(": stopped") == ROLES


def test_two_default_runs_at_once(tmp_path):
    env = {**os.environ, "KSM_EMU_STATE_DIR": str(tmp_path / "states")}
    procs = [subprocess.Popen([*CMD, "--pages", "4096", "--duration", "2", "--json", "--seed", str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in (11, 22)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    summaries = [json.loads(o) for o, _ in outs]
    assert summaries[0]["state"] != summaries[1]["state"]
    for s, p in zip(summaries, procs):
        meta = read_header(s["state"])["meta"]
        assert meta["seed"] == s["seed"] and meta["pid"] == s["pid"] == p.pid
        assert os.stat(s["state"]).st_mode & 0o777 == 0o600


def test_stopped_role_is_continued_not_waited_for(tmp_path):
    p, kids = start(tmp_path, "--duration", "3", "--json")
    t0 = time.monotonic()
    os.kill(kids[-1], signal.SIGSTOP)
    out, err = p.communicate(timeout=30)
    d = json.loads(out)
    assert p.returncode == 0 and d["died"] == [], err
    assert time.monotonic() - t0 < 6
    (note,) = [n for n in d["notes"] if "SIGSTOP" in n]  # beside the note on ksmd's passes
    assert f"(pid {kids[-1]}) was stopped (SIGSTOP)" in note
    assert all_gone_within(kids, 2)


def test_truncated_state_file_is_one_line_and_exit_3(tmp_path):
    p, kids = start(tmp_path, "--duration", "30")
    os.truncate(tmp_path / "s.state", 100_000)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3 and out == ""
    assert err.count("\n") == 1 and "was truncated to 100000 bytes during the run" in err, err
    assert all_gone_within(kids, 2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_during_setup_leaves_nothing(tmp_path, sig):
    """A big machine boots for a while: the signal lands during setup (the
    state file exists then), and the run exits 130 with the file removed."""
    state = tmp_path / "big.state"
    p = subprocess.Popen([*CMD, "--state", str(state), "--pages", str(1 << 21)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not state.exists():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.01)
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err == "ksm-emu: interrupted during setup\n" and out == ""
    assert not state.exists() and children(p.pid) == []


def test_racing_starts_on_one_state_path(tmp_path):
    """Two runs started at once on one --state: one runs, the other is refused
    in one line (exit 2), and the file holds the winner's run."""
    state = tmp_path / "race.state"
    procs = [subprocess.Popen([*CMD, "--state", str(state), "--pages", "4096", "--duration", "1", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    winner = next(p for p in procs if p.returncode == 0)
    loser_err = next(e for p, (_, e) in zip(procs, outs) if p.returncode == 2)
    assert loser_err.count("\n") == 1 and "Traceback" not in loser_err
    assert read_header(state)["meta"]["pid"] == winner.pid
