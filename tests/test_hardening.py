"""Issue 15's hardening items that are not a line in test_cli_errors' table:
the output-path rules (write beside, rename, never follow a planted symlink),
the campaign results file (lock, foreign files), replay's inputs, and the
Python API's argument validator."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.cliutil import UserError, check_output_path, live_state, write_beside

ROOT = Path(__file__).resolve().parent.parent
EMU = [sys.executable, "-m", "emu.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def emu(*args, cwd, timeout=120):
    return subprocess.run([*EMU, *args], cwd=cwd, capture_output=True, text=True, env=ENV,
                          stdin=subprocess.DEVNULL, timeout=timeout)


# -- item 11: a symlink planted between the check and the write is never followed ---------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_plot_symlink_planted_meanwhile_is_not_followed(tmp_path, overwrite):
    target = tmp_path / "precious"
    target.write_text("keep me")
    out = tmp_path / "cdf.png"
    check_output_path(out, "--plot", overwrite)

    def write(f):
        os.symlink(target, out)  # planted while the experiment ran
        f.write(b"PNG")

    if overwrite:
        write_beside(out, "--plot", True, write)
        assert not out.is_symlink() and out.read_bytes() == b"PNG"
    else:
        with pytest.raises(UserError, match="exists"):
            write_beside(out, "--plot", False, write)
        assert out.is_symlink()
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdf.png", "precious"]  # no temporary left


def test_plot_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    out = tmp_path / "cdf.png"
    os.symlink(target, tmp_path / f".cdf.png.{os.getpid()}.tmp")
    with pytest.raises(UserError, match="cannot create"):
        write_beside(out, "--plot", True, lambda f: f.write(b"PNG"))
    assert target.read_text() == "keep me" and not out.exists()


# -- item 18: the --plot directory removed mid-run is one line, not FileNotFoundError -----------
def test_plot_directory_removed_midrun_is_a_user_error(tmp_path):
    d = tmp_path / "plots"
    d.mkdir()
    out = d / "cdf.png"
    check_output_path(out, "--plot", False)
    d.rmdir()
    with pytest.raises(UserError, match="--plot .*cdf.png"):
        write_beside(out, "--plot", False, lambda f: f.write(b"PNG"))


# -- items 11 and 18 end to end: experiment reclaim --plot, its target changed while it runs -------
def _experiment_until_running(tmp_path, *extra):
    """Start a short experiment with --plot d/cdf.png; return once its run is
    up (its state file exists in the scratch root): --plot was checked before."""
    import glob
    import time

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "d").mkdir()
    p = subprocess.Popen([*EMU, "experiment", "reclaim", "--duration", "2", "--rates", "50", "--protocol", "keyhole",
                          "--plot", "d/cdf.png", "--no-progress", *extra], cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env={**ENV, "KSM_EMU_SCRATCH_DIR": str(scratch)})
    deadline = time.monotonic() + 120
    while not glob.glob(str(scratch / "ksm-experiment-*" / "*.state")):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.01)
    return p


def test_experiment_plot_directory_removed_midrun(tmp_path):
    p = _experiment_until_running(tmp_path)
    (tmp_path / "d").rmdir()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err.count("\n") == 1 and "--plot d/cdf.png" in err and "Traceback" not in err, err
    assert "keyhole" in out  # the table: the measurement is printed before the plot fails
    assert sorted(os.listdir(tmp_path)) == ["scratch"] and os.listdir(tmp_path / "scratch") == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_experiment_plot_symlink_planted_midrun(tmp_path, overwrite):
    target = tmp_path / "precious"
    target.write_text("keep me")
    p = _experiment_until_running(tmp_path, *(["--overwrite"] if overwrite else []))
    os.symlink(target, tmp_path / "d" / "cdf.png")
    out, err = p.communicate(timeout=120)
    assert target.read_text() == "keep me" and "Traceback" not in err, err
    if overwrite:  # the name is replaced, not followed
        assert p.returncode == 0, err
        assert not (tmp_path / "d" / "cdf.png").is_symlink()
        assert (tmp_path / "d" / "cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:  # a file appeared meanwhile: not replaced without --overwrite
        assert p.returncode == 2 and "exists" in err, err
        assert (tmp_path / "d" / "cdf.png").is_symlink()
    assert os.listdir(tmp_path / "d") == ["cdf.png"]  # no temporary left


# -- item 5: a live run's state file is refused by every output flag ----------------------------
def test_live_state_is_refused_as_an_output(tmp_path):
    live = tmp_path / "live.state"
    live.write_bytes(b"KSMEMU\x00\x01")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert live_state(live)
        for flag in ("--trace", "--plot", "--out"):
            with pytest.raises(UserError, match="live run"):
                check_output_path(live, flag, True)
        with pytest.raises(UserError, match="live run"):
            write_beside(live, "--trace", True, lambda f: f.write(b"{}"))
        from emu.trace.output import TraceFileError, check_trace_path, write_trace

        with pytest.raises(TraceFileError, match="live run"):
            check_trace_path(str(live), True)
        with pytest.raises(TraceFileError, match="live run"):
            write_trace(live, {"traceEvents": []}, True)
    finally:
        os.close(fd)
    assert live.read_bytes() == b"KSMEMU\x00\x01"
    assert not live_state(live)


# -- items 7, 14, 20: a bad replay string is refused for what is wrong with it, before a world boots
_NR = "ksmx1:stale-node:keyhole-no-recheck:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0x13.1x30.2x23.0x2"


@pytest.mark.parametrize("text, says", [
    (_NR.replace("ksmd=0", "ksmd=20000000"), "CPU ids are 0..63"),  # item 7: it booted a 2.5 GB world first
    (_NR.replace("ksmd=0", "ksmd=64"), "CPU ids are 0..63"),  # item 20: it blamed the schedule
    (_NR.replace("ksmd=0", "ksmd=0,ksmd=1"), "ksmd is given a CPU twice"),  # item 20: it blamed the schedule
    (_NR.replace("ksmd=0", "ksmd=\u00b2"), "want ROLE=CPU"),  # item 14: a traceback
    (_NR.replace(":0x13.", ":0x" + "9" * 4400 + "."), "bad step run"),  # item 14: a traceback
    (_NR + ".1", "the schedule has 1 more"),  # item 20: a step after the end was ignored
], ids=["cpu-20000000", "cpu-64", "cpu-twice", "unicode-digit", "4400-digits", "step-past-the-end"])
def test_replay_string_errors_name_the_fault(text, says):
    import resource
    import time

    from emu.explore.api import replay
    from emu.explore.dpor import Nondeterminism
    from emu.explore.schedule import ScheduleError

    t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises((ScheduleError, Nondeterminism), match=says):
        replay(text)
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KB


# -- item 15: explore --all over a direct map that cannot fit: every row n/a, no DirectMapError ----
def test_explore_all_with_a_direct_map_that_cannot_fit(tmp_path):
    p = emu("explore", "--all", "--arch", "x86_64", "--page-offset", "0xffffffffffffff00", "--json", cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    rows = json.loads(p.stdout)["rows"]
    assert rows and all(r["agree"] == "n/a" and "runs past the 64-bit address space" in r["dynamic"] for r in rows)


# -- item 6: replay reads a file whose name begins "ksmx" ---------------------------------------
def test_replay_reads_a_file_named_ksmx(tmp_path):
    from emu.explore.api import explore
    from emu.explore.scenarios import SCENARIOS

    r = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck", strategy="dpor")
    assert r.counterexample is not None
    (tmp_path / "ksmx-named.json").write_text(json.dumps({"replay": r.counterexample.schedule}))
    p = emu("replay", "ksmx-named.json", "--json", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["violations"] and out["schedule"] == r.counterexample.schedule
    # item 20: replay reads its own --json too
    (tmp_path / "again.json").write_text(p.stdout)
    q = emu("replay", "again.json", "--json", cwd=tmp_path)
    assert q.returncode == 1 and json.loads(q.stdout)["schedule"] == r.counterexample.schedule, q.stderr


# -- items 22 and 12: the campaign results file ------------------------------------------------
def _record(job, **kw):
    return {"job": job, "verdict": "clean", "violations": 0, "kinds": [], "replay": None, "detail": {},
            "worker": "w:1", "elapsed_s": 1.0, **kw}


def test_campaign_reruns_errored_jobs_and_prints_no_forged_text(tmp_path):
    from emu.campaign.spec import key, parse

    spec = {"explore": {"scenarios": ["stale-node"], "protocols": ["keyhole", "refcount", "keyhole-no-recheck"]}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    a, b, c = parse(json.dumps(spec))
    forged = [_record(a, verdict="error", detail={"error": "boom\x1b[2J\nline | two"}),  # errored: runs again
              _record(b, verdict="violation", violations=1, kinds=["x"], replay="ksmx1:$(touch pwned)"),
              _record(c, kinds=["\x1b[31mred"])]
    (tmp_path / "s.results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forged))
    p = emu("campaign", "s.json", "--jobs", "1", "--no-progress", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "1 job(s) that errored last time run again" in p.stderr
    assert "2 unreadable line(s)" in p.stderr
    assert "\x1b" not in p.stdout + p.stderr and "pwned" not in p.stdout
    assert "3 run now" in p.stdout
    recs = [json.loads(line) for line in (tmp_path / "s.results.jsonl").read_text().splitlines()]
    last = {key(r["job"]): r["verdict"] for r in recs}
    assert last == {key(a): "clean", key(b): "clean", key(c): "violation"}
    assert not (tmp_path / "pwned").exists()


def test_a_second_campaign_on_one_results_file_is_told_so(tmp_path):
    """Item 12: the first campaign's lock (store.Appender) refuses the second;
    the message said it was 'the state file of a live run'."""
    from emu.campaign.spec import example, parse
    from emu.campaign.store import Appender

    (tmp_path / "s.json").write_text(example())
    out = tmp_path / "s.results.jsonl"
    out.write_text(json.dumps(_record(parse(example())[0])) + "\n")
    before = out.read_bytes()
    first = Appender(out)
    try:
        p = emu("campaign", "s.json", "--jobs", "1", "--no-progress", cwd=tmp_path)
    finally:
        first.close()
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "results file of a campaign still running" in p.stderr and "state file" not in p.stderr, p.stderr
    assert out.read_bytes() == before


def test_markdown_cells_escape_forged_text():
    from emu.cliutil import printable

    assert printable("a|b\nc\x1b[31m") == "a\\|b\\nc\\x1b[31m"


# -- items 10, 13, 25: the API's arguments, checked by the validator the CLI shares -------------
def _idle(mm, env):
    pass


def test_api_load_of_ten_million_bytes_is_a_finding_at_once():
    import resource
    import time

    from emu.explore.api import Scenario, explore

    def big(mm, env):
        mm.a.load(4096, 10**7)

    t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = explore(Scenario("big", [("a", big), ("b", _idle)]), strategy="dfs", schedules=2)
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KB: no 2.7 GB walk
    assert not r.holds and "field size must be 1, 2, 4 or 8 bytes" in r.counterexample.findings[0]["detail"]


@pytest.mark.parametrize("checks, want", [("kcsan", {"kcsan"}), ("none", set()), ("lockdep,kcsan", {"lockdep", "kcsan"}),
                                          (["lockdep"], {"lockdep"}), ((), set())])
def test_api_checks_as_the_cli_takes_them(checks, want):
    from emu.explore.api import Scenario, explore

    assert explore(Scenario("c", [("a", _idle)]), checks=checks).checks == want


@pytest.mark.parametrize("checks", [["kcsn"], "kcsn", "lockdep,kcsn", "", 5])
def test_api_unknown_checker_is_an_error_not_checking_off(checks):
    from emu.explore.api import Scenario, explore, replay

    with pytest.raises((ValueError, TypeError), match="checks"):
        explore(Scenario("c", [("a", _idle)]), checks=checks)
    with pytest.raises((ValueError, TypeError), match="checks"):
        replay("ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0", checks=checks)


@pytest.mark.parametrize("name, role, kw, msg", [
    ("a:b", "x", {}, "scenario name"), ("a,b", "x", {}, "scenario name"), ("ok", "x=y", {}, "role name"),
    ("ok", "x:y", {}, "role name"), ("ok", "x", {"pages": -1}, "pages -1"), ("ok", "x", {"pages": 1.5}, "pages"),
])
def test_api_names_that_break_replay_strings_and_bad_pages_are_refused(name, role, kw, msg):
    from emu.explore.api import Scenario, explore

    with pytest.raises((ValueError, TypeError), match=msg):
        explore(Scenario(name, [(role, _idle)], **kw))


@pytest.mark.parametrize("kw, msg", [({"strategy": "bfs"}, "strategy"), ({"schedules": 0}, "schedules"),
                                     ({"depth": 0}, "depth"), ({"time_limit": float("nan")}, "time_limit"),
                                     ({"time_limit": -1}, "time_limit"), ({"preemption_bound": -1}, "preemption"),
                                     ({"protocol": "magic"}, "protocol"), ({"schedules": "10"}, "schedules")])
def test_api_numbers_checked_as_the_cli_checks_them(kw, msg):
    from emu.explore.api import Scenario, explore

    with pytest.raises((ValueError, TypeError), match=msg):
        explore(Scenario("c", [("a", _idle)]), **kw)


@pytest.mark.parametrize("case, msg", [("cpu-a-string", "cpus"), ("cpus-a-list", "cpus"),
                                       ("cpu-of-no-role", "unknown role"), ("replay-None", "replay string"),
                                       ("replay-int", "replay string")])
def test_api_cpus_and_replay_text_checked_by_the_validator(case, msg):
    """They were AttributeError ('NoneType' object has no attribute 'strip') and a
    TypeError comparing an int with a str, from deep inside."""
    from emu.explore.api import explore, replay
    from emu.explore.scenarios import SCENARIOS

    sc = SCENARIOS["stale-node"]
    calls = {"cpu-a-string": lambda: explore(sc, cpus={"ksmd": "1"}),
             "cpus-a-list": lambda: explore(sc, cpus=[("ksmd", 1)]),
             "cpu-of-no-role": lambda: explore(sc, cpus={"gpu": 1}),
             "replay-None": lambda: replay(None), "replay-int": lambda: replay(123)}
    with pytest.raises((ValueError, TypeError), match=msg):
        calls[case]()


# -- items 16 and 23: kmem on hostile files -----------------------------------------------------
def test_decode_violation_of_an_i386_mapping_above_4g():
    from types import SimpleNamespace

    import numpy as np

    from emu.decode import decode_violation
    from emu.kconfig import resolve
    from emu.records import VIOLATION_DTYPE

    rec = np.zeros(1, VIOLATION_DTYPE)[0]
    rec["mapping"] = (1 << 40) + 0x1234
    v = decode_violation(SimpleNamespace(cfg=resolve("i386"), page_layout=None), rec)
    assert v["mapping"] == "0x10000001234" and v["mapping_bytes"] == "34 12 00 00"


def test_kmem_history_with_an_unknown_code_in_a_ring(tmp_path):
    from emu.explore.api import explore
    from emu.explore.scenarios import SCENARIOS
    from emu.machine import attach
    from emu.records import EVENT_DTYPE
    from emu.trace import decode

    state = tmp_path / "x.state"
    explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck", state=state)
    m = attach(state)
    recs = m.region_array("trace", EVENT_DTYPE)
    recs["code"][recs["code"] == decode.NAMES.index("do_anonymous_page")] = 40  # no such code
    del recs
    m.close()
    p = emu("kmem", "x.state", "--history", "3", cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "[in code 40]" in p.stdout


def test_kmem_does_not_echo_a_files_bytes(tmp_path):
    (tmp_path / "passwd").write_text("root:*:0:0:root:/root:/bin/sh\n" * 4)
    p = emu("kmem", "passwd", cwd=tmp_path)
    assert p.returncode == 2 and "root" not in p.stderr and "bad magic" in p.stderr, p.stderr


def test_a_state_dir_that_is_a_regular_file_is_called_one(tmp_path):
    (tmp_path / "dir").write_text("")
    p = subprocess.run([*EMU, "run", "--duration", "1"], cwd=tmp_path, capture_output=True, text=True,
                       env={**ENV, "KSM_EMU_STATE_DIR": str(tmp_path / "dir")}, timeout=60)
    assert p.returncode == 2 and "a regular file" in p.stderr and "special" not in p.stderr, p.stderr


# -- item 21: --keep-going --state keeps the state of the counterexample it reports --------------
def test_keep_going_state_holds_the_first_counterexample(tmp_path):
    from emu.explore.api import explore
    from emu.explore.scenarios import SCENARIOS
    from emu.machine import attach
    from emu.trace.history import _violations

    state = tmp_path / "k.state"
    r = explore(SCENARIOS["pagetable-reuse"], protocol="keyhole-no-clear", keep_going=True, state=state)
    assert len(r.counterexamples) > 1
    m = attach(state, readonly=True)
    try:
        in_file = {v["kind"] for v in _violations(m).values()}
    finally:
        m.close()
    first = {f["kind"] for f in r.counterexamples[0].findings}
    last = {f["kind"] for f in r.counterexamples[-1].findings}
    assert in_file and in_file <= first and not (last - first) <= in_file, (in_file, first, last)


# -- item 24: run's summary says what the trace holds, a sane hint, and any test break ----------
def test_run_summary_trace_events_hint_and_test_break(tmp_path):
    p = subprocess.run([*EMU, "run", "--duration", "0.5", "--pages", "4096", "--trace", "t.json", "--state", "r.state",
                        "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**ENV, "KSM_EMU_TEST_BREAK": "dec-read-then-store"})
    assert p.returncode in (0, 1), p.stderr
    held = len(json.loads((tmp_path / "t.json").read_text())["traceEvents"])
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("trace:"))
    assert f"({held} trace events from " in line, line
    assert "give --duration above 0," not in p.stdout and "give --duration above 0 " not in p.stdout
    assert "KSM_EMU_TEST_BREAK=dec-read-then-store: deliberately broken" in p.stdout.splitlines()[0]


def test_run_says_on_a_terminal_that_it_writes_the_trace(tmp_path):
    """Decoding and writing a trace takes seconds after the progress line ends:
    on a terminal, a line says what is happening (it was 3 to 9 s of silence)."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.run([*EMU, "run", "--duration", "0.5", "--pages", "1024", "--trace", "t.json"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True, timeout=120,
                           env=ENV)
        os.close(slave)
        slave = None
        tty = b""
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            tty += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0, tty[-2000:]
    assert b"writing the trace to t.json ..." in tty, tty[-2000:]
    assert (tmp_path / "t.json").is_file() and "trace: t.json" in p.stdout


def test_an_unknown_test_break_is_an_error(tmp_path):
    p = subprocess.run([*EMU, "run", "--duration", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**ENV, "KSM_EMU_TEST_BREAK": "bogus"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "KSM_EMU_TEST_BREAK=bogus" in p.stderr, p.stderr


def test_ksmd_pass_hint_never_says_above_0():
    from types import SimpleNamespace

    from emu.kconfig import resolve
    from emu.report import ksmd_pass_note

    spec = SimpleNamespace(pages=1024, cfg=resolve(), pages_to_scan=5000, sleep_ms=1.0, protocol="keyhole")
    note = ksmd_pass_note(spec, {"ksmd_passes": 0}, 0, 0.5)
    assert "give --duration above 0.00041," in note and "at least 0.00041 s a pass" in note, note


# -- item 19: an access outside every region is the role's exception, a finding ----------------
def test_api_store_outside_every_region_is_a_finding():
    from emu.explore.api import Scenario, explore

    def outside(mm, env):
        mm.a.store(8, 8, 1)  # the machine file's header

    r = explore(Scenario("out", [("a", outside), ("b", _idle)]), strategy="dfs", schedules=3, checks=())
    assert not r.holds
    f = r.counterexample.findings[0]
    assert f["kind"] == "exception" and "in no region" in f["detail"] and r.counterexample.timeline


# -- item 25: the race checker never reports an access that raised and so never happened --------
def _vars(env):
    return env.world.machine.region("vars").offset


def _reads_var(mm, env):
    mm.a.load(_vars(env), 8)


def _too_wide(mm, env):
    mm.a.store(_vars(env), 8, 1 << 70)  # OverflowError: the store never happens


def _misaligned(mm, env):
    mm.a.store(_vars(env) + 1, 8, 1)  # ValueError: the store never happens


@pytest.mark.parametrize("model", ["sc", "tso"])
@pytest.mark.parametrize("bad", [_too_wide, _misaligned], ids=["too-wide", "misaligned"])
def test_api_an_access_that_raised_is_no_race(model, bad):
    """Before: the store was given to kcsan at its scheduling point, before the
    accessor refused it, so every order with the reader's load was a 'data
    race' besides the exception; under tso the value was cut to fit (no
    finding at all) and a misaligned store raised out of explore() itself."""
    from emu.explore.api import Scenario, explore
    from emu.machine import RegionSpec

    sc = Scenario("raised", [("reader", _reads_var), ("writer", bad)], extra=(RegionSpec("vars", 4096),), pages=8)
    r = explore(sc, strategy="dfs", keep_going=True, memory_model=model)
    assert r.complete and not r.holds
    kinds = [f["kind"] for cx in r.counterexamples for f in cx.findings]
    assert kinds == ["exception"], [f["detail"] for cx in r.counterexamples for f in cx.findings]
    detail = r.counterexample.findings[0]["detail"]
    assert ("does not fit a 8-byte field" if bad is _too_wide else "is not aligned for a 8-byte field") in detail


# -- item 25: GreenletExit is a role's exception; a spin without spin_wait gets a hint -----------
def test_api_greenletexit_in_a_role_is_an_exception_not_a_step_limit():
    from greenlet import GreenletExit

    from emu.explore.api import Scenario, explore

    def quits(mm, env):
        raise GreenletExit

    r = explore(Scenario("quits", [("a", quits), ("b", _idle)]), strategy="dfs", schedules=2, checks=())
    f = r.counterexample.findings[0]
    assert f["kind"] == "exception" and "GreenletExit" in f["detail"]


@pytest.mark.slow  # 200,000 steps
def test_api_a_spin_without_spin_wait_says_so():
    from emu.explore.api import Scenario, explore

    def spins(mm, env):
        while mm.a.load(4096 * 20, 8) == 0:  # no spin_wait: the writer never gets a turn under dfs
            pass

    def writes(mm, env):
        mm.a.store(4096 * 20, 8, 1)

    r = explore(Scenario("spin", [("spinner", spins), ("writer", writes)]), strategy="dfs", schedules=1, checks=())
    f = r.counterexample.findings[0]
    assert f["kind"] == "step limit" and "spinner's" in f["detail"] and "spin_wait" in f["detail"], f


# -- item 19: a scenario whose setup breaks an invariant: one ValueError, nothing left -----------
def test_api_setup_that_breaks_an_invariant_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    from emu.check.violations import V_FALSE_OPEN
    from emu.explore.api import Scenario, ScenarioError, explore

    def broken_setup(world):
        mm = world.context(cpu=0, task=world.objects.task[0], role="setup")
        mm.truth.violation(V_FALSE_OPEN, pfn=1)
        return {}

    monkeypatch.setenv("KSM_EMU_SCRATCH_DIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    with pytest.raises(ScenarioError, match="its setup broke an invariant") as e:
        explore(Scenario("broken", [("a", _idle)], setup=broken_setup), state=tmp_path / "s.state")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    assert not (tmp_path / "s.state").exists()
    with pytest.raises(ScenarioError):
        explore(Scenario("broken", [("a", _idle)], setup=broken_setup))
    assert os.listdir(tmp_path / "scratch") == []  # the session's scratch directory went with it


def test_every_kind_explore_reports_is_a_well_formed_record():
    """The results file's vetting keeps real records: a kind with an apostrophe
    or parentheses is explore's own (a stricter check ran such jobs twice)."""
    from emu.campaign.store import well_formed

    for kind in ("stable_node's key in the mapping of a page it does not own", "bad_page (free_pages_check)",
                 "keyhole false open", "data race"):
        assert well_formed(_record({"kind": "explore"}, verdict="violation", violations=1, kinds=[kind],
                                   replay="ksmx1:pagetable-reuse:keyhole:ppc64/2.6.32/+PREEMPT/po=0xdead4ead00000000:"
                                          "ksmd=0,reclaim=1,allocator=2:0x3.1"))
    assert not well_formed(_record({"kind": "explore"}, kinds=["red\x1b[31m"]))
    assert not well_formed(_record({"kind": "explore"}, kinds=["two\nlines"]))


# -- item 26: every JSON output gives addresses as "0x..." strings, never integers jq rounds ------
def _big_ints(obj, path="$"):
    """Where `obj` holds an integer jq would round (above 2**53)."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _big_ints(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _big_ints(v, f"{path}[{i}]")]
    return [path] if type(obj) is int and abs(obj) > 1 << 53 else []


def _configs(obj):
    if isinstance(obj, dict):
        if "PAGE_OFFSET" in obj:
            yield obj
        for v in obj.values():
            yield from _configs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _configs(v)


LAYOUT = [sys.executable, "-m", "emu.layout_cli"]
_CX = "ksmx1:stale-node:keyhole-no-recheck:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0x13.1x30.2x23.0x2"


@pytest.mark.parametrize("argv", [
    [*EMU, "explore", "--json", "--protocol", "keyhole-no-recheck"],
    [*EMU, "explore", "--json", "--all", "--arch", "x86_64", "--kernel", "2.6.33"],
    [*EMU, "explore", "--json", "--barriers", "--scenario", "stale-node", "--time-limit", "0.2"],
    [*EMU, "replay", "--json", _CX],
    [*EMU, "run", "--json", "--duration", "0.3", "--pages", "1024"],
    [*LAYOUT, "show", "page", "--json"], [*LAYOUT, "show", "page", "--at", "24", "--json"],
    [*LAYOUT, "overlap", "page", "mapping", "--json"], [*LAYOUT, "hazard", "--json"],
    [*LAYOUT, "hazard", "--all", "--arch", "ppc64", "--json"],
], ids=lambda a: " ".join(a[3:6])[:30])
def test_json_addresses_are_hex_strings(tmp_path, argv):
    """Before: explore --json, --barriers, ksm-layout --json and the trace's
    metadata gave PAGE_OFFSET and MEM_MAP as decimal integers above 2**53."""
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL,
                       timeout=300)
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr[-2000:]
    d = json.loads(p.stdout)
    assert _big_ints(d) == []
    configs = list(_configs(d))
    assert configs or argv[3] == "replay" or "--all" in argv and argv[3] == "explore"  # no config of their own
    for c in configs:
        assert c["PAGE_OFFSET"].startswith("0x") and c["MEM_MAP"].startswith("0x"), c


def test_a_runs_trace_metadata_gives_addresses_as_hex_strings(tmp_path):
    p = emu("run", "--duration", "0.3", "--pages", "1024", "--trace", "t.json", "--no-progress", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    trace = json.loads((tmp_path / "t.json").read_text())
    assert _big_ints(trace) == []
    configs = list(_configs(trace))
    assert configs and all(c["PAGE_OFFSET"] == "0xffff880000000000" for c in configs)
