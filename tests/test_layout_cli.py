"""ksm-layout: each subcommand, the JSON schema, and one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest

from emu.layout_cli import main

PPC = ["--arch", "ppc64", "--kernel", "2.6.32", "-e", "PREEMPT", "-e", "DEBUG_SPINLOCK"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_installed():
    r = subprocess.run(["ksm-layout", "show", "page"], capture_output=True, text=True)
    assert r.returncode == 0 and "struct page {" in r.stdout


def test_show_text_ppc64_magic_on_mapping(capsys):
    code, out, _ = run(capsys, "show", "page", *PPC)
    assert code == 0
    assert "USE_SPLIT_PTLOCKS" in out.splitlines()[1]  # resolved config on top
    magic = next(line for line in out.splitlines() if "magic;" in line)
    owner = next(line for line in out.splitlines() if "owner_cpu;" in line)
    assert "/*    24     4 */" in magic and "on mapping bits 63..32" in magic
    assert "/*    28     4 */" in owner and "on mapping bits 31..0" in owner
    assert "/* size: 64, cachelines: 1, members: 6 */" in out


def test_show_text_x86_64_magic_not_on_mapping(capsys):
    _, out, _ = run(capsys, "show", "page", "--kernel", "2.6.32", "-e", "PREEMPT", "-e", "DEBUG_SPINLOCK")
    magic = next(line for line in out.splitlines() if "magic;" in line)
    assert "on mapping" not in magic
    assert "XXX 4 bytes hole" in out


def test_show_json_schema(capsys):
    code, out, _ = run(capsys, "show", "page", "--json", *PPC)
    d = json.loads(out)
    assert code == 0
    assert set(d) >= {"struct", "size", "align", "byte_order", "word_bits", "config", "members"}
    assert (d["struct"], d["size"], d["align"], d["byte_order"], d["word_bits"]) == ("page", 64, 8, "big", 64)
    assert d["config"]["GENERIC_LOCKBREAK"] is True and d["config"]["USE_SPLIT_PTLOCKS"] is True
    m = {x["path"]: x for x in d["members"]}
    for path in ("ptl.magic", "ptl.raw_lock.slock", "_count.counter", "mapping", "lru.next", "ptl", "lru"):
        assert path in m, path
    assert m["ptl.magic"] == {"path": "ptl.magic", "offset": 24, "size": 4, "type": "unsigned int"}
    assert m["ptl"]["size"] == 24
    assert all(set(x) == {"path", "offset", "size", "type"} for x in d["members"])


def test_show_json_233_paths(capsys):
    _, out, _ = run(capsys, "show", "page", "--json", "-e", "LOCK_STAT", "--split-ptlock-cpus", "4")
    paths = {x["path"] for x in json.loads(out)["members"]}
    assert {"ptl.rlock.raw_lock.slock", "ptl.rlock.dep_map.ip", "ptl.dep_map.cpu", "ptl.__padding"} <= paths


def test_show_233_ptl_absent(capsys):
    code, out, _ = run(capsys, "show", "page", "--json", *PPC[:2], "--kernel", "2.6.33", *PPC[4:])
    d = json.loads(out)
    assert d["config"]["USE_SPLIT_PTLOCKS"] is False and d["config"]["SPLIT_PTLOCK_CPUS"] == 999999
    assert not any(x["path"].startswith("ptl") for x in d["members"])
    _, text, _ = run(capsys, "show", "page", *PPC[:2], "--kernel", "2.6.33", *PPC[4:])
    assert "n: " in text and "USE_SPLIT_PTLOCKS" in text.splitlines()[2] and "ptl" not in text


def test_show_at(capsys):
    code, out, _ = run(capsys, "show", "page", "--at", "0x1c", *PPC)
    assert code == 0 and "mapping+0x4 / ptl.owner_cpu" in out
    _, out, _ = run(capsys, "show", "page", "--at", "20:4", *PPC)
    assert "private+0x4 [4:8]" in out and "ptl.break_lock" in out
    _, out, _ = run(capsys, "show", "page", "--at", "28:4", "--json", "--kernel", "2.6.32", "-e", "DEBUG_SPINLOCK")
    d = json.loads(out)
    assert d["uncovered"] == []
    assert [(c["path"], c["byte"], c["bytes"]) for c in d["covered_by"]] == [("mapping", 4, 4)]


def test_overlap(capsys):
    code, out, _ = run(capsys, "overlap", "page", "mapping", *PPC)
    assert code == 0
    assert "ptl.owner_cpu (unsigned int, offset 28, size 4): all of it forms bits 31..0 of mapping" in out
    assert "ptl.magic (unsigned int, offset 24, size 4): all of it forms bits 63..32 of mapping" in out
    _, out, _ = run(capsys, "overlap", "page", "mapping", "--json", *PPC)
    d = json.loads(out)
    bits = {m["path"]: m["member_bits"] for m in d["members"]}
    assert bits == {"ptl.magic": [63, 32], "ptl.owner_cpu": [31, 0]}


def test_overlap_x86_64_no_magic(capsys):
    _, out, _ = run(capsys, "overlap", "page", "mapping", "--kernel", "2.6.32", "-e", "PREEMPT", "-e",
                    "DEBUG_SPINLOCK")
    assert "ptl.magic" not in out and "ptl.owner_cpu" in out and "hole in ptl" in out


def test_matrix(capsys):
    code, out, _ = run(capsys, "matrix", "--json")
    d = json.loads(out)
    assert code == 0 and d["struct"] == "page"
    rows = {(r["kernel"], r["options"], r["arch"]): r for r in d["rows"]}
    r = rows[("2.6.32", "PREEMPT DEBUG_SPINLOCK", "ppc64")]
    assert (r["size"], r["mapping"], r["ptl"]) == (64, 24, 16)
    assert rows[("2.6.33", "PREEMPT DEBUG_SPINLOCK", "ppc64")]["ptl"] is None
    assert rows[("2.6.33", "SMP", "i386")]["size"] == 32
    code, out, _ = run(capsys, "matrix")
    assert code == 0 and "ppc64" in out and "m@24" in out and max(map(len, out.splitlines())) <= 100


@pytest.mark.parametrize("argv,msg", [
    (["show", "page", "--arch", "vax"], "invalid choice: 'vax'"),
    (["show", "page", "-e", "FOO"], "unknown option 'FOO'; choose from SMP"),
    (["show", "pag"], "unknown struct 'pag'"),
    (["overlap", "page", "mappin"], "no member 'mappin'"),
    (["show", "page", "--at", "64"], "out of range"),
    (["show", "page", "--at", "zz"], "bad --at"),
    (["show", "page", "--nr-cpus", "lots"], "not a number: 'lots'"),
    (["show", "page", "--kernel", "2.6.34"], "invalid choice"),
    (["show", "page", "-e", "USE_SPLIT_PTLOCKS"], "derived by Kconfig"),
    (["frob"], "invalid choice: 'frob'"),
    (["matrix", "-e", "BOGUS"], "unknown option 'BOGUS'"),
])
def test_errors_one_line_exit_2(argv, msg):
    r = subprocess.run([sys.executable, "-m", "emu.layout_cli", *argv], capture_output=True, text=True)
    assert r.returncode == 2
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_layout_tool_needs_no_compiled_extension():
    """ksm-layout works where emu._atomics and emu._ksm_sweep cannot be imported
    (a venv without the built extensions), and never loads the emulator."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['emu._atomics'] = None; sys.modules['emu._ksm_sweep'] = None\n"
            "from emu.layout_cli import main\n"
            "for argv in (['show', 'page'], ['overlap', 'page', 'mapping'], ['matrix'], ['hazard', '--all'],\n"
            "             ['hazard', '--arch', 'ppc64', '--kernel', '2.6.32', '-e', 'PREEMPT', '-e', 'DEBUG_SPINLOCK']):\n"
            "    assert main(argv) == 0, argv\n"
            "loaded = sorted(m for m in sys.modules if m.startswith(('emu.mm', 'emu.machine', 'emu.check')))\n"
            "print('LOADED', loaded)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "struct page {" in r.stdout and "safe here" in r.stdout
    assert "LOADED []" in r.stdout
    # and blocking the import does block it: the emulator itself cannot start
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['emu._atomics'] = None\n"
                        "import emu.mm.boot"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "emu._atomics" in r.stderr


def test_hazard_all_honours_the_flags(capsys):
    """The README's example: --all with the seed's page offset shows the HAZARD."""
    code, out, _ = run(capsys, "hazard", "--all", "--page-offset", "0xdead4eacff000000")
    assert code == 0 and "2.6.32  PREEMPT DEBUG_SPINLOCK           ppc64    HAZARD" in out
    code, out, _ = run(capsys, "hazard", "--all", "--json", "--arch", "ppc64", "--nr-cpus", "4",
                       "--page-offset", "0xdead4eacff000000")
    d = json.loads(out)
    assert {r["config"]["arch"] for r in d["rows"]} == {"ppc64"}
    assert {r["config"]["NR_CPUS"] for r in d["rows"]} == {4} and d["skipped"]  # the UP sets cannot take it
    assert any(r["verdict"] == "HAZARD" for r in d["rows"])
    code, out, _ = run(capsys, "hazard", "--all", "--json", "--split-ptlock-cpus", "999999", "--arch", "x86_64")
    assert {r["verdict"] for r in json.loads(out)["rows"]} == {"no ptl"}


def test_hazard_labels_read_forwards(capsys):
    code, out, _ = run(capsys, "hazard", "--json", *PPC)
    states = [k["state"] for k in json.loads(out)["key_values"]]
    assert "held by CPU 3, owner_cpu set, owner not yet (or already cleared), break_lock 0" in states
    assert "held by CPU 3, owner_cpu and owner set (fully held), break_lock 0" in states


def test_hazard_refuses_a_direct_map_past_the_address_space(capsys):
    code, _, err = run(capsys, "hazard", "--page-offset", "0xffffffffff000000")
    assert code == 2 and "runs past the 64-bit address space" in err
    code, _, err = run(capsys, "hazard", "--arch", "i386", "--max-mem", str(1 << 32))
    assert code == 2 and "32-bit" in err


def test_matrix_honours_arch_and_cpus_and_fits(capsys):
    code, out, _ = run(capsys, "matrix", "--json", "--arch", "ppc64", "--nr-cpus", "2")
    rows = json.loads(out)["rows"]
    assert {r["arch"] for r in rows} == {"ppc64"}
    smp = [r for r in rows if r["options"] == "SMP"]
    assert all(r["use_split_ptlocks"] is False for r in smp)  # NR_CPUS 2 < SPLIT_PTLOCK_CPUS 4
    code, out, _ = run(capsys, "matrix", "spinlock_t")
    assert "ptl@" not in out and "m@" not in out and "struct spinlock_t: size in bytes" in out
    assert max(map(len, out.splitlines())) <= 100


def test_show_at_explains_its_notation(capsys):
    code, out, _ = run(capsys, "show", "page", "--at", "28:4", *PPC)
    assert "(offset 28, size 4)" in out and "[A:B]: MEMBER's bytes A..B-1" in out
