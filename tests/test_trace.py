"""--trace and kmem --history: the Chrome trace-event JSON is well formed (ph,
ts, pid, tid, dur, nesting and monotonic time per track), every violation of
the report has its instant event with the same pfn and bytes, a SIGKILLed
role's events survive, and a pfn's history tells the seed's hazard."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from emu.mm.ring import EVENT_DTYPE, PH_BEGIN, PH_END, RingLayout, RingWriter, read_rings
from emu.trace.slices import pair

ROOT = Path(__file__).resolve().parent.parent
EMU = [sys.executable, "-m", "emu.cli"]
HAZARD = ["explore", "--scenario", "pagetable-reuse", "--arch", "ppc64", "--kernel", "2.6.32", "-e", "PREEMPT",
          "-e", "DEBUG_SPINLOCK", "--page-offset", "0xdead4ead00000000", "--cpu", "allocator=3"]
EPS = 1e-6  # us: wall-clock slices are ns / 1000 in floating point


def emu(*args, timeout=120):
    return subprocess.run([*EMU, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def validate(trace: dict) -> dict:
    """Check the trace-event format; the tracks' names by tid."""
    assert set(trace) >= {"traceEvents"}
    names = {}
    last: dict = {}
    open_: dict = {}
    for e in trace["traceEvents"]:
        ph = e["ph"]
        assert ph in ("M", "X", "i", "C"), e
        assert isinstance(e["pid"], int) and isinstance(e["name"], str)
        if ph == "M":
            if e["name"] == "thread_name":
                names[e["tid"]] = e["args"]["name"]
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        track = (e["pid"], e["tid"]) if ph != "C" else (e["pid"], "C", e["name"])
        assert e["ts"] >= last.get(track, 0) - EPS, f"time goes back on {track}: {e}"
        last[track] = e["ts"]
        if ph == "X":
            assert isinstance(e["tid"], int) and e["dur"] >= 0, e
            stack = open_.setdefault(track, [])
            while stack and e["ts"] >= stack[-1] - EPS and e["ts"] + e["dur"] > stack[-1] + EPS:
                stack.pop()  # those ended before this one starts
            if stack:  # inside the enclosing slice, wholly
                assert e["ts"] + e["dur"] <= stack[-1] + EPS, f"{e} overlaps its parent on {track}"
            stack.append(e["ts"] + e["dur"])
        elif ph == "i":
            assert e["s"] in ("t", "p", "g") and isinstance(e["tid"], int)
        else:
            assert all(isinstance(v, (int, float)) for v in e["args"].values())
    assert all(tid in names for pid, tid, *_ in last if tid != "C"), "a track without a name"
    return names


def instants(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "i"]


def each_violation_has_its_instant(trace: dict, violations: list[dict]) -> None:
    marks = [(e["args"]["kind"], e["args"]["pfn"], e["args"]["mapping_bytes"], e["args"]["stable_node"])
             for e in instants(trace)]
    for v in violations:
        assert (v["kind"], v["pfn"], v["mapping_bytes"], v["stable_node"]) in marks, v


def test_ring_wraps_and_counts_what_it_dropped():
    lay = RingLayout(("a", "b"), (0, 5), 4, "steps")
    buf = bytearray(lay.size)
    clock = iter(range(1, 100))
    w = RingWriter(buf, 0, 4, lambda: next(clock))
    for i in range(10):
        w.emit(PH_BEGIN if i % 2 == 0 else PH_END, 0, i)
    a, b = read_rings(bytes(buf), lay)
    assert (a.written, a.dropped, a.events["a"].tolist()) == (10, 6, [6, 7, 8, 9])
    assert (b.written, b.dropped, len(b.events), b.cpu) == (0, 0, 0, 5)
    again = RingWriter(buf, 0, 4, lambda: 50)  # a second writer on the ring goes on after the first
    again.emit(PH_BEGIN, 3, 42)
    a, _ = read_rings(bytes(buf), lay)
    assert a.events["a"].tolist() == [7, 8, 9, 42] and a.written == 11
    assert EVENT_DTYPE.itemsize == 40


def test_pairing_closes_unfinished_and_drops_orphans():
    lay = RingLayout(("r",), (1,), 16, "steps")
    buf = bytearray(lay.size)
    clock = iter(range(1, 100))
    w = RingWriter(buf, 0, 16, lambda: next(clock))
    w.emit(PH_END, 2, 0)  # its begin was overwritten
    w.emit(PH_BEGIN, 1, 7)
    w.emit(PH_BEGIN, 2, 8)
    w.emit(PH_END, 2, 99)
    w.emit(PH_BEGIN, 3, 9)  # a killed role never ends it, nor its parent
    (ring,) = read_rings(bytes(buf), lay)
    slices, marks = pair(ring)
    got = [(s.code, s.t0, s.t1, s.result, s.depth, s.unfinished) for s in slices]
    assert got == [(1, 2, 5, -1, 0, True), (2, 3, 4, 99, 1, False), (3, 5, 5, -1, 1, True)]
    assert marks == [] and np.all(ring.events["seq"] == np.arange(1, 6))


def test_run_trace(tmp_path):
    """A short broken-protocol run: the trace is valid, every reported violation has its instant."""
    out = tmp_path / "run.json"
    r = emu("run", "--protocol", "keyhole-no-clear", "--pages", "2048", "--duration", "1", "--ksmd-sleep-ms", "1",
            "--json", "--no-progress", "--state", str(tmp_path / "s.state"), "--trace", str(out))
    assert r.returncode == 1, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    trace = json.loads(out.read_text())
    names = validate(trace)
    # a track says so when its ring wrapped (how fast the roles ran decides that)
    assert sorted(n.split(",")[0] for n in names.values()) == \
        ["allocator.0 (CPU 2)", "allocator.1 (CPU 3)", "ksmd (CPU 0)", "reclaim (CPU 1)"]
    kinds = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {"get_ksm_page", "try_to_unmap", "free_hot_cold_page", "do_anonymous_page", "alloc_page",
            "ptl held", "ksmd scan batch"} <= kinds
    assert {e["name"] for e in trace["traceEvents"] if e["ph"] == "C"} == {"free pages", "stable nodes", "KSM pages"}
    assert summary["violations"], "keyhole-no-clear leaves mapping on every freed anon page"
    t = summary["trace"]
    # a ring that wrapped lost its oldest events, instants among them: the
    # violations seen on CPUs whose rings kept everything must all be there
    whole = {r["cpu"] for r in t["per_role"].values() if not r["dropped"]}
    kept = [v for v in summary["violations"] if v["cpu"] in whole]
    assert kept, "no ring kept every event: make the run shorter"
    each_violation_has_its_instant(trace, kept)
    assert t["file"] == str(out) and t["events"] > 1000 and set(t["per_role"]) == {
        "ksmd", "reclaim", "allocator.0", "allocator.1"}
    text = emu("run", "--duration", "0.5", "--pages", "2048", "--no-progress", "--state",
               str(tmp_path / "t.state"), "--trace", str(tmp_path / "t.json")).stdout
    assert f"trace: {tmp_path / 't.json'} (" in text


def test_a_killed_roles_events_survive(tmp_path):
    out = tmp_path / "killed.json"
    p = subprocess.Popen([*EMU, "run", "--pages", "2048", "--duration", "20", "--json", "--no-progress",
                          "--state", str(tmp_path / "s.state"), "--trace", str(out)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(kids := _children(p.pid)) < 4:
        assert time.monotonic() < deadline and p.poll() is None, "the roles did not start"
        time.sleep(0.05)
    time.sleep(1.0)
    victim = max(kids)
    os.kill(victim, signal.SIGKILL)
    stdout, _ = p.communicate(timeout=60)
    assert p.returncode == 3
    summary = json.loads(stdout)
    # the victim, and perhaps a role that spun on a lock the victim held and was killed at the stop
    (dead,) = [d for d in summary["died"] if d["pid"] == victim]
    assert "SIGKILL" in dead["how"]
    trace = json.loads(out.read_text())
    names = validate(trace)
    tid = next(t for t, n in names.items() if n.startswith(dead["role"] + " "))
    mine = [e for e in trace["traceEvents"] if e.get("tid") == tid and e["ph"] == "X"]
    assert len(mine) > 100, "the killed role's events are gone"
    assert summary["trace"]["per_role"][dead["role"]]["written"] > 100


def _children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_explore_counterexample_trace_and_history(tmp_path):
    """The seed's hazard: the trace of the counterexample, and pfn 3's history
    from its state file: KSM page -> freed -> page table -> ptl taken by CPU 3."""
    state, out = tmp_path / "F", tmp_path / "cx.json"
    r = emu(*HAZARD, "--json", "--state", str(state), "--trace", str(out))
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    trace = json.loads(out.read_text())
    names = validate(trace)
    assert set(names.values()) == {"setup (CPU 0)", "ksmd (CPU 0)", "reclaim (CPU 1)", "allocator (CPU 3)"}
    steps = [e["ts"] for e in trace["traceEvents"] if e["ph"] != "M"]
    assert all(isinstance(t, int) for t in steps) and max(steps) <= report["counterexample"]["steps"]
    assert report["violations"]
    each_violation_has_its_instant(trace, report["violations"])
    for v in report["violations"]:  # at the step the report names
        assert any(e["args"]["pfn"] == v["pfn"] and e["ts"] == v["step"] for e in instants(trace))
    pfn = report["violations"][0]["pfn"]

    h = emu("kmem", str(state), "--history", str(pfn), "--json")
    assert h.returncode == 0, h.stderr
    events = json.loads(h.stdout)["events"]
    story = []
    for e in events:
        if e["event"] == "set_page_stable_node" and e["args"]["stable_node"] != "0x0":
            story.append("KSM page")
        elif e["event"] == "free_hot_cold_page":
            story.append("freed")
        elif e["event"] == "alloc_page" and e["args"]["as"] == "pagetable":
            story.append("page table")
        elif e["event"] == "ptl held":
            story.append(f"ptl taken by CPU {e['cpu']}")
    assert story[:4] == ["KSM page", "freed", "page table", "ptl taken by CPU 3"], story
    ksm = next(e for e in events if e["event"] == "set_page_stable_node" and e["args"]["stable_node"] != "0x0")
    assert ksm["args"]["stable_node"] == report["violations"][0]["stable_node"]
    text = emu("kmem", str(state), "--history", str(pfn)).stdout
    assert "its ptl taken by CPU 3 (spin_lock)" in text and "allocator" in text

    again = tmp_path / "replay.json"
    rr = emu("replay", report["replay"], "--trace", str(again))
    assert rr.returncode == 1
    replayed = json.loads(again.read_text())
    validate(replayed)
    assert [e for e in replayed["traceEvents"] if e["ph"] != "M"] == \
        [e for e in trace["traceEvents"] if e["ph"] != "M"], "a replay traces the same"
