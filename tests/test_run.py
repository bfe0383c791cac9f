"""ksm-emu run end to end: real processes, JSON summary, exit codes, failures."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

CMD = [sys.executable, "-m", "emu.cli", "run"]


def run(tmp_path, *args, timeout=120):
    r = subprocess.run([*CMD, "--state", str(tmp_path / "s.state"), "--json", *args],
                       capture_output=True, text=True, timeout=timeout)
    return r, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else None)


def test_keyhole_run_clean(tmp_path):
    r, d = run(tmp_path, "--duration", "3", "--pages", "8192", "--ksmd-pages", "1000")
    assert r.returncode == 0, r.stderr
    assert d["violations"] == [] and d["violations_total"] == 0 and d["exit_code"] == 0
    c = d["counts"]
    for key in ("get_ksm_page_ok", "get_ksm_page_stale", "stable_nodes_removed", "ksm_pages_merged",
                "pages_freed", "pages_allocated"):
        assert c[key] > 0, key
    assert c["get_ksm_page_stale"] == c["stable_nodes_removed"]
    lat = d["reclaim_time_to_free_us"]
    assert set(lat) == {"p50", "p99", "max", "n"} and lat["n"] > 0 and lat["p50"] <= lat["p99"] <= lat["max"]
    assert d["config"]["arch"] == "x86_64" and d["config"]["kernel"] == "2.6.33" and d["protocol"] == "keyhole"
    assert [x["role"] for x in d["roles"]] == ["ksmd", "reclaim", "allocator.0", "allocator.1"]
    assert all(x["exitcode"] == 0 for x in d["roles"])
    assert os.path.exists(tmp_path / "s.state")  # kept for inspection


def test_refcount_run_never_stale(tmp_path):
    r, d = run(tmp_path, "--protocol", "refcount", "--duration", "3", "--pages", "8192", "--ksmd-pages", "1000")
    assert r.returncode == 0, r.stderr
    assert d["counts"]["get_ksm_page_stale"] == 0 and d["counts"]["get_ksm_page_ok"] > 0


def test_no_clear_caught(tmp_path):
    r, d = run(tmp_path, "--protocol", "keyhole-no-clear", "--pages", "4096", "--duration", "3")
    assert r.returncode == 1
    assert d["violations_by_kind"]["bad_page (free_pages_check)"] > 0
    assert d["violations_by_kind"]["stable_node freed while its page carries its key"] > 0


def test_text_summary(tmp_path):
    r = subprocess.run([*CMD, "--state", str(tmp_path / "t.state"), "--duration", "2", "--pages", "4096",
                        "--arch", "ppc64", "--cpu", "allocator=3", "--cpu", "reclaim=9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ppc64 2.6.33, protocol keyhole" in r.stdout and "violations: none" in r.stdout
    assert "reclaim cpu9" in r.stdout and "allocator.0 cpu3" in r.stdout


def _start(tmp_path, *args):
    return subprocess.Popen([*CMD, "--state", str(tmp_path / "k.state"), "--pages", "4096", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _role_pids(p, want):
    pids, deadline = {}, time.monotonic() + 30
    while len(pids) < want and time.monotonic() < deadline:
        line = p.stderr.readline()
        m = re.search(r" (\S+) cpu\d+ pid\d+: started, pid (\d+)", line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    return pids


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_child_killed_stops_run(tmp_path):
    p = _start(tmp_path, "--duration", "60", "-v")
    pids = _role_pids(p, 4)
    assert set(pids) == {"ksmd", "reclaim", "allocator.0", "allocator.1"}
    time.sleep(1)
    os.kill(pids["allocator.0"], signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3
    assert f"DIED: allocator.0 (pid {pids['allocator.0']}, CPU 2) killed by SIGKILL" in out
    assert "violations" in out  # the summary is still printed
    time.sleep(0.2)
    assert all(_gone(pid) for pid in pids.values())


def test_ctrl_c_partial_summary(tmp_path):
    p = _start(tmp_path, "--duration", "60", "--json", "-v")
    pids = _role_pids(p, 4)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    d = json.loads(out)
    assert p.returncode == 130 and d["interrupted"] is True and d["duration_s"] < 30
    assert d["counts"]["pages_allocated"] > 0 and "Traceback" not in err
    assert all(_gone(pid) for pid in pids.values())


@pytest.mark.parametrize("args,msg", [
    (["--protocol", "magic"], "invalid choice: 'magic'"),
    (["--pages", "10"], "too few"),
    (["--pages", "lots"], "not a number"),
    (["--duration", "0"], "--duration"),
    (["--cpu", "ksmd=64"], "CPU ids are 0..63"),
    (["--cpu", "gpu=1"], "unknown role 'gpu'"),
    (["--cpu", "ksmd"], "want ROLE=ID"),
    (["--cpu", "ksmd=1", "--cpu", "reclaim=1"], "two roles on one CPU"),
    (["--allocators", "0"], "--allocators"),
    (["--arch", "vax"], "invalid choice: 'vax'"),
    (["-e", "FOO"], "unknown option 'FOO'"),
    (["--state", "/nonexistent/dir/x"], "does not exist"),
    (["-d", "SMP", "--allocators", "1"], "too few CPUs"),
])
def test_bad_flags(tmp_path, args, msg):
    r = subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_refuses_to_overwrite_other_files(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    r = subprocess.run([*CMD, "--state", str(precious), "--duration", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "not a ksm-emu state file" in r.stderr
    assert precious.read_text() == "keep me"


def test_kmem_reads_a_finished_run(tmp_path):
    state = tmp_path / "k.state"
    r = subprocess.run([*CMD, "--state", str(state), "--duration", "2", "--pages", "4096", "--arch", "ppc64",
                        "--kernel", "2.6.32", "-e", "PREEMPT", "-e", "DEBUG_SPINLOCK"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kmem = [sys.executable, "-m", "emu.cli", "kmem", str(state)]
    d = json.loads(subprocess.run([*kmem, "--json"], capture_output=True, text=True).stdout)
    pages = d["pages"]
    assert len(pages) == 4096 and d["config"]["arch"] == "ppc64"
    ksm = [p for p in pages if p["is"] == "ksm"]
    assert ksm and all(p["decoded"] == f"stable_node {int(p['mapping'], 16) - 3:#x}" for p in ksm)
    pt = [p for p in pages if p["is"] == "pagetable"]
    assert pt and all(p["decoded"].startswith("ptl: ptl.magic=0xdead4ead ptl.owner_cpu=") for p in pt)
    assert all(p["count"] == 0 and p["mapping"] == "0x0" for p in pages if p["is"] == "free")
    # issue 15 item 26: addresses are "0x..." strings in every JSON output
    assert d["config"]["MEM_MAP"] == "0xf000000000000000" and pages[5]["page"] == "0xf000000000000140"
    text = subprocess.run([*kmem, "--pfn", "5:3"], capture_output=True, text=True).stdout.splitlines()
    assert text[0].split()[:3] == ["PAGE", "PHYSICAL", "MAPPING"] and len(text) == 4
    assert text[1].startswith("f000000000000140")  # vmemmap + 5 * 64
    r = subprocess.run([*kmem, "--pfn", "99999"], capture_output=True, text=True)
    assert r.returncode == 2 and "pfns 0..4095" in r.stderr
    r = subprocess.run([*kmem[:-1], str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such machine file" in r.stderr and "Traceback" not in r.stderr
