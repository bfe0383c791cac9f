"""What explore's verdicts claim (issue 14): "complete" only for an exhaustive
search that ran out; every exploration ends (a raising role, a role that loops
with or without accesses, sampling strategies without bounds); roles sharing
an emulated CPU interleave only where that CPU can switch; Ctrl-C, SIGTERM and
SIGHUP end it with what was found so far."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest

from emu.explore import Scenario, explore, replay
from emu.explore.api import Interrupted
from emu.explore.sched import Runner
from emu.explore.stop import Stop
from emu.kconfig import resolve
from emu.machine import RegionSpec
from emu.mm.spinlock import spin_lock, spin_lock_init, spin_unlock

VARS = (RegionSpec("vars", 4096),)
EMU = [sys.executable, "-m", "emu.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this tree's emu, from any cwd
# scratch directories of these tests' explorations go here, not to the /dev/shm
# every other test run on the machine shares: a count of them is then exact
SCRATCH = tempfile.mkdtemp(prefix="ksm-test-scratch-")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "KSM_EMU_SCRATCH_DIR": SCRATCH}


def _var(env_or_world, i):
    w = getattr(env_or_world, "world", env_or_world)
    return w.machine.region("vars").offset + 8 * i


def _lock_setup(world):
    mm = world.context(cpu=0)
    spin_lock_init(mm, _var(world, 2), mm.mm_lock_model)
    return {}


def _writer(locked):
    def run(mm, env):
        x, lk = _var(env, 0), _var(env, 2)
        if locked:
            spin_lock(mm, lk, mm.mm_lock_model)
        mm.a.store(x, 8, 1)
        mm.a.store(x, 8, 2)
        if locked:
            spin_unlock(mm, lk, mm.mm_lock_model)
    return run


def _reader(mm, env):
    env.data["seen"] = mm.a.load(_var(env, 0), 8)


def _two(locked):
    return Scenario("cpu-model", [("writer", _writer(locked)), ("reader", _reader)], setup=_lock_setup,
                    extra=VARS, pages=8, observe=lambda env: env.data["seen"])


class _Hung(BaseException):
    """An exploration still running past its bound (a BaseException: no role catches it)."""


@contextmanager
def _within(seconds):
    """Fail, not hang, if the block runs past `seconds` (what these tests guard
    against is an exploration that never returns)."""
    def hung(signum, frame):
        raise _Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


UP = resolve(disable=["SMP"])
UP_PREEMPT = resolve(disable=["SMP"], enable=["PREEMPT"])


@pytest.mark.parametrize("strategy", ["dpor", "dfs"])
@pytest.mark.parametrize("cfg, cpus, locked, seen", [
    (resolve(), {"writer": 0, "reader": 1}, True, {0, 1, 2}),  # SMP: the reader runs beside the writer
    (UP, None, False, {0, 2}),  # one CPU, no preemption: the writer runs to its end once begun
    (UP_PREEMPT, None, False, {0, 1, 2}),  # PREEMPT: preempted between its stores
    (UP_PREEMPT, None, True, {0, 2}),  # spin_lock disables preemption
    (resolve(), {"writer": 0, "reader": 0}, True, {0, 2}),  # two roles on one CPU of an SMP kernel
], ids=["smp", "up", "up-preempt", "up-preempt-locked", "smp-shared-cpu"])
def test_roles_on_one_cpu_switch_only_where_it_can(strategy, cfg, cpus, locked, seen):
    r = explore(_two(locked), cfg, strategy=strategy, cpus=cpus, checks=())
    assert r.complete and r.holds
    assert set(r.outcomes) == seen


def test_a_cpu_model_that_switches_anywhere_gives_up_false_positives(monkeypatch):
    """The check that makes UP clean: with _may_run always true (any role runs
    on the shared CPU at any step), a correct protocol fails on UP."""
    assert explore(_two(False), UP, checks=()).outcomes.keys() == {0, 2}
    monkeypatch.setattr(Runner, "_may_run", lambda self, q: True)
    assert set(explore(_two(False), UP, checks=()).outcomes) == {0, 1, 2}


@pytest.mark.parametrize("scenario", ["stale-node", "pagetable-reuse", "merge"])
@pytest.mark.parametrize("protocol", ["keyhole", "refcount"])
def test_up_kernels_explore_complete_and_clean(scenario, protocol):
    r = subprocess.run([*EMU, "explore", "-d", "SMP", "--scenario", scenario, "--protocol", protocol, "--json"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    d = json.loads(r.stdout)
    assert d["complete"] and d["holds"] and d["violations"] == []


def test_a_bounded_dfs_never_claims_complete():
    r = subprocess.run([*EMU, "explore", "--protocol", "keyhole-no-recheck", "--strategy", "dfs",
                        "--preemption-bound", "0", "--json"], capture_output=True, text=True, env=ENV, timeout=300)
    d = json.loads(r.stdout)
    assert r.returncode == 0 and d["holds"] and d["complete"] is False
    assert d["preemption_bound"] == 0 and "preemption-bounded" in d["incomplete_because"]
    text = subprocess.run([*EMU, "explore", "--protocol", "keyhole-no-recheck", "--strategy", "dfs",
                           "--preemption-bound", "0"], capture_output=True, text=True, env=ENV, timeout=300).stdout
    assert "no violation within 0 preemptions" in text and "\ncomplete" not in text
    # the same protocol, searched exhaustively, is broken
    assert not explore(__import__("emu.explore.scenarios", fromlist=["SCENARIOS"]).SCENARIOS["stale-node"],
                       protocol="keyhole-no-recheck", checks=()).holds


@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_sampling_strategies_end_and_are_never_complete(strategy):
    with _within(300):  # without the default bound it never returned
        r = explore(_two(False), UP_PREEMPT, strategy=strategy, checks=())  # no bound given: 1000 by default
    assert r.schedules_explored == 1000 and not r.complete and r.stopped == "schedule limit"
    r = explore(_two(False), UP_PREEMPT, strategy=strategy, schedules=5, checks=())
    assert r.schedules_explored == 5 and not r.complete


def test_exhaustive_search_complete_only_when_it_ran_out():
    assert explore(_two(True), strategy="dpor", checks=()).complete
    assert explore(_two(True), strategy="dfs", checks=()).complete
    cut = explore(_two(True), strategy="dfs", schedules=1, checks=())
    assert not cut.complete and cut.stopped == "schedule limit"


# -- exploration always ends ----------------------------------------------------------------------
def _raiser(mm, env):
    if mm.a.load(_var(env, 0), 8) == 1:
        raise RuntimeError("boom: saw the first store")


@pytest.mark.parametrize("strategy", ["dpor", "dfs", "pct", "random"])
def test_keep_going_with_a_raising_role_ends(strategy):
    sc = Scenario("raises", [("writer", _writer(False)), ("reader", _raiser)], extra=VARS, pages=8)
    t0 = time.perf_counter()
    r = explore(sc, strategy=strategy, keep_going=True, schedules=None if strategy in ("dpor", "dfs") else 50,
                checks=())
    assert time.perf_counter() - t0 < 60
    if strategy in ("dpor", "dfs"):
        assert r.complete
    if strategy == "dpor":
        assert r.schedules_explored == 3  # the reader before, between, after the stores
    cx = r.counterexample
    assert not r.holds and cx.findings[0]["kind"] == "exception"
    assert "boom" in cx.findings[0]["detail"] and "in _raiser" in cx.findings[0]["traceback"]


def _spins_without_accesses(mm, env):
    mm.a.load(_var(env, 0), 8)
    while True:
        pass


def _spins_over_accesses(mm, env):
    while True:
        mm.a.load(_var(env, 0), 8)


@pytest.mark.parametrize("role", [_spins_without_accesses, _spins_over_accesses])
def test_time_limit_stops_a_role_that_never_ends(role):
    sc = Scenario("loops", [("looper", role), ("writer", _writer(False))], extra=VARS, pages=8)
    t0 = time.perf_counter()
    with _within(60):  # a role looping without accesses never returned
        r = explore(sc, time_limit=0.5, checks=())
    assert time.perf_counter() - t0 < 10  # the limit, the watchdog's grace, the cleanup
    assert r.stopped == "time limit" and not r.complete and r.holds


# -- interruptions --------------------------------------------------------------------------------
def _shm(pid=None):
    """The explorers' temporary directories (of process `pid`: named after it), in this
    module's own scratch root (KSM_EMU_SCRATCH_DIR), so other tests' cannot confuse it."""
    prefix = "ksm-explore-" if pid is None else f"ksm-explore-{pid}-"
    return {n for n in os.listdir(SCRATCH) if n.startswith(prefix)}


def _interrupts_itself(mm, env):
    mm.a.load(_var(env, 0), 8)
    os.kill(os.getpid(), signal.SIGINT)
    mm.a.store(_var(env, 0), 8, 1)


def test_ctrl_c_in_the_api_ends_cleanly_with_the_partial_result(monkeypatch):
    monkeypatch.setenv("KSM_EMU_SCRATCH_DIR", SCRATCH)
    before = _shm(os.getpid())
    sc = Scenario("interrupted", [("p", _interrupts_itself), ("writer", _writer(False))], extra=VARS, pages=8)
    with pytest.raises(Interrupted) as e:
        explore(sc, checks=())
    r = e.value.result
    assert r.stopped == "interrupted by SIGINT" and not r.complete and r.interrupted
    assert _shm(os.getpid()) == before
    # a caller's own Stop: no exception, the Result says why
    stop = Stop()
    stop.request("asked to")
    r = explore(sc, checks=(), stop=stop)
    assert r.stopped == "asked to" and r.schedules_explored == 0


def test_a_stopped_replay_gives_no_verdict():
    r = explore(_two(True), checks=())
    cx = explore(__import__("emu.explore.scenarios", fromlist=["SCENARIOS"]).SCENARIOS["stale-node"],
                 protocol="keyhole-no-recheck", checks=()).counterexample
    stop = Stop()
    stop.request("interrupted by SIGTERM")
    got = replay(cx.schedule, stop=stop)
    assert got.stopped == "interrupted by SIGTERM" and got.findings == [] and r.holds


def _interrupt(argv, sig, after):
    """Run `ksm-emu ARGV`, send `sig` `after` seconds once it is exploring (its
    temporary directory exists: the signal handlers are in place), and return
    (exit code, stdout, stderr, what it left in /dev/shm)."""
    p = subprocess.Popen([*EMU, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not _shm(p.pid) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(after)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err, _shm(p.pid)


# ksm-emu explore's own main, noting (./found) when an execution first has findings
NOTING = [sys.executable, "-c", """
import os, sys
from emu.explore import api
findings = api.Session.findings
def noted(self, *a):
    out = findings(self, *a)
    if out and not os.path.exists("found"):
        open("found", "w").close()
    return out
api.Session.findings = noted
from emu.cli import main
sys.exit(main(sys.argv[1:]))
"""]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_gives_exit_130_and_the_counterexamples_so_far(tmp_path, sig):
    # DPOR finds its first counterexample in tens of schedules and needs minutes for the
    # rest of this space: the signal, sent once a counterexample is found, is what ends it
    p = subprocess.Popen([*NOTING, "explore", "--scenario", "stale-node", "--protocol", "keyhole-no-recheck",
                          "--arch", "ppc64", "--kernel", "2.6.32", "-e", "PREEMPT", "-e", "DEBUG_SPINLOCK",
                          "--keep-going", "--json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**ENV, "PYTHONPATH": os.pathsep.join([ROOT, ENV.get("PYTHONPATH", "")])})
    deadline = time.monotonic() + 120
    while not (tmp_path / "found").exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.01)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    d = json.loads(out)
    assert d["interrupted"] and d["stopped"] == f"interrupted by {signal.Signals(sig).name}"
    assert not d["complete"] and d["schedules_explored"] > 0
    assert d["violations"] and all(v["schedule"].startswith("ksmx1:stale-node:") for v in d["violations"])
    assert not _shm(p.pid)


@pytest.mark.slow
def test_sigint_at_a_random_moment_twenty_times():
    rng = random.Random(14)
    for i in range(20):
        after = rng.uniform(0.0, 2.0)
        rc, out, err, left = _interrupt(["explore", "--scenario", "merge"], signal.SIGINT, after)
        assert rc == 130, (i, after, rc, out[-500:], err[-2000:])
        assert "Traceback" not in err and "not complete: interrupted by SIGINT" in out, (i, after, out, err)
        assert not left, (i, after, left)
