"""Every input mistake, from any CLI path, is one line on stderr and exit 2:
no traceback, nothing created, no existing file changed. A table of bad
invocations of `ksm-emu run`, `kmem`, `explore`, `replay` and every `ksm-layout`
subcommand, and of hostile state files given to kmem."""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.kconfig import resolve
from emu.machine import HEADER_MAX, PREFIX, RegionSpec, create
from emu.records import SHADOW_DTYPE

ROOT = Path(__file__).resolve().parent.parent  # run from another cwd: import this tree's emu
EMU = [sys.executable, "-m", "emu.cli"]
LAYOUT = [sys.executable, "-m", "emu.layout_cli"]


def _region(name):
    return lambda h: next(r for r in h["regions"] if r["name"] == name)


HOSTILE = {
    "config-list": lambda h: h.update(config=[1]),
    "config-string": lambda h: h.update(config="x86_64"),
    "arch-list": lambda h: h["config"].update(arch=["x86_64"]),
    "nr-cpus-string": lambda h: h["config"].update(NR_CPUS="64"),
    "page-offset-string": lambda h: h["config"].update(PAGE_OFFSET="0xffff880000000000"),
    "mem-map-float": lambda h: h["config"].update(MEM_MAP=1.5e19),
    "nr-pages-float": lambda h: h.update(nr_pages=64.0),
    "nr-pages-zero": lambda h: h.update(nr_pages=0),
    "region-name-list": lambda h: _region("shadow")(h).update(name=["shadow"]),
    "region-in-header": lambda h: _region("shadow")(h).update(offset=4096),
    "region-offset-float": lambda h: _region("shadow")(h).update(offset=float(_region("shadow")(h)["offset"])),
    "region-offset-string": lambda h: _region("shadow")(h).update(offset=str(_region("shadow")(h)["offset"])),
    "shadow-too-small": lambda h: _region("shadow")(h).update(size=SHADOW_DTYPE.itemsize * 10),
    "meta-list": lambda h: h.update(meta=[]),
    "not-an-object": lambda h: h.clear() or h.update({"x": 1}),
}


def _write_header(path, blob):
    with open(path, "r+b") as f:
        f.write(PREFIX.pack(b"KSMEMU\x00\x01", 1, len(blob)) + blob)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    states = d / "states"
    states.mkdir(mode=0o700)
    good = d / "good.state"
    create(good, resolve(), 64, regions=[RegionSpec("shadow", 64 * SHADOW_DTYPE.itemsize)]).close()
    (d / "notes.txt").write_text("keep me")
    (d / "old.png").write_bytes(b"an earlier plot")
    (d / "sub").mkdir()
    os.mkfifo(d / "fifo")
    os.symlink(d / "loop", d / "loop")
    os.symlink(good, d / "link.state")
    with open(good, "rb") as f:
        _, _, n = PREFIX.unpack(f.read(PREFIX.size))
        header = json.loads(f.read(n))
    for name, mutate in HOSTILE.items():
        h = json.loads(json.dumps(header))
        mutate(h)
        p = d / f"{name}.state"
        p.write_bytes(good.read_bytes())
        _write_header(p, json.dumps(h).encode())
    deep = d / "deep.state"
    deep.write_bytes(good.read_bytes())
    _write_header(deep, b"[" * 5000 + b"]" * 5000)
    (d / "short.state").write_bytes(good.read_bytes()[:72_000])
    big = d / "biglen.state"
    big.write_bytes(good.read_bytes())
    with open(big, "r+b") as f:
        f.write(PREFIX.pack(b"KSMEMU\x00\x01", 1, HEADER_MAX + 1))
    from emu.campaign.spec import example, parse

    (d / "spec.json").write_text(example())
    for name, text in BAD_SPECS.items():
        (d / f"{name}.json").write_text(text)
    # issue 15: a live run's state file (its flock held, as by a run), an
    # unrelated one-line JSON file, another SPEC's results, a locked results file
    (d / "live.state").write_bytes(good.read_bytes())
    held = os.open(d / "live.state", os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    (d / "settings.json").write_text('{"theme": "dark"}')
    job = parse(example())[-1]
    rec = {"job": job, "verdict": "clean", "violations": 0, "kinds": [], "replay": None, "detail": {},
           "worker": "w:1", "elapsed_s": 1.0}
    (d / "other.results.jsonl").write_text(json.dumps({**rec, "job": {**job, "seed": 99}}) + "\n")
    (d / "busy.results.jsonl").write_text(json.dumps(rec) + "\n")
    busy = os.open(d / "busy.results.jsonl", os.O_RDONLY)
    fcntl.flock(busy, fcntl.LOCK_EX)  # as a campaign writing it holds it
    # issue 15 item 16: a state with trace rings whose description overflows
    from emu.explore.api import explore
    from emu.explore.scenarios import SCENARIOS

    explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck", state=d / "traced.state")
    with open(d / "traced.state", "rb") as f:
        _, _, n = PREFIX.unpack(f.read(PREFIX.size))
        traced = json.loads(f.read(n))
    for name, trace in TRACE_HOSTILE.items():
        h = json.loads(json.dumps(traced))
        h["meta"]["trace"].update(trace)
        (d / f"traced-{name}.state").write_bytes((d / "traced.state").read_bytes())
        _write_header(d / f"traced-{name}.state", json.dumps(h).encode())
    (d / "traced.state").unlink()
    yield d
    os.close(held)
    os.close(busy)


TRACE_HOSTILE = {"capacity-inf": {"capacity": float("inf")}, "cpus-huge": {"cpus": [0, 0, 1, 10**30]},
                 "cpus-inf": {"cpus": [0, 0, 1, float("inf")]}, "cpus-negative": {"cpus": [0, 0, 1, -1]}}
BAD_SPECS = {  # campaign SPECs: each malformed in one way
    "torn": '{"explore": {', "empty": "{}", "list": "[1]", "deep": "[" * 5000 + "]" * 5000,
    "section": '{"explroe": {}}', "key": '{"explore": {"scenario": ["merge"]}}',
    "arch": '{"explore": {"configs": [{"arch": "vax"}]}}', "option": '{"run": {"configs": [{"enable": ["FOO"]}]}}',
    "protocol": '{"explore": {"protocols": ["magic"]}}', "scenarios": '{"explore": {"scenarios": "merge"}}',
    "seeds": '{"explore": {"seeds": [1, 2]}}', "cpu": '{"explore": {"cpus": {"allocator": 99}}}',
    "role": '{"explore": {"cpus": {"gpu": 1}}}', "schedules": '{"explore": {"schedules": 0}}',
    "pages": '{"run": {"pages": 10}}', "duration": '{"run": {"duration": -1}}', "number": '{"run": {"seeds": ["x"]}}',
    "explode": '{"explore": {"configs": [' + ",".join(["{}"] * 1000) + '], "strategy": "pct", "schedules": 1, '
               '"protocols": ["keyhole", "refcount"], "scenarios": ["merge", "stale-node"], "seeds": '
               + str(list(range(1000))) + '}}',
    "nr-cpus": '{"run": {"configs": [{"disable": ["SMP"]}]}}', "time-limit": '{"explore": {"time_limit": "soon"}}',
    "endless": '{"explore": {"strategy": "random"}}',
    "dup-seeds": '{"explore": {"strategy": "pct", "schedules": 1, "seeds": [1, 1, "0x1"]}}',  # issue 15 item 12
    "dup-config": '{"run": {"configs": [{}, {"arch": "x86_64"}]}}',
    "direct-map": '{"explore": {"configs": [{"page_offset": "0xffffffffffffff00"}]}}',  # item 15
    "memory-model": '{"explore": {"memory_models": ["pso"]}}',
    "memory-model-drop-sc": '{"explore": {"memory_models": ["sc/-zone_lock"]}}',
    "memory-model-type": '{"explore": {"memory_models": [1]}}',
}


RUN = [
    ["--protocol", "magic"], ["--pages", "10"], ["--pages", "lots"], ["--pages", "1e12"],
    ["--pages", str(1 << 40)], ["--duration", "0"], ["--duration", "nan"], ["--duration", "inf"],
    ["--duration", "-1"], ["--ksmd-sleep-ms", "nan"], ["--ksmd-sleep-ms", "inf"], ["--ksmd-sleep-ms", "1e12"],
    ["--ksmd-sleep-ms", "-5"], ["--ptl-hold-us", "nan"], ["--ptl-hold-us", "1e12"], ["--window-us", "inf"],
    ["--window-us", "-1"], ["--ksmd-pages", "0"], ["--ksmd-pages", str(10**30)], ["--cpu", "ksmd=64"],
    ["--cpu", "gpu=1"], ["--cpu", "ksmd"], ["--cpu", "ksmd=x"], ["--cpu", "ksmd=1", "--cpu", "reclaim=1"],
    ["--cpu", "allocator=3", "--cpu", "allocator.0=4"], ["--allocators", "0"], ["--allocators", "33"],
    ["--arch", "vax"], ["-e", "FOO"], ["-e", "USE_SPLIT_PTLOCKS"], ["--state", "/nonexistent/dir/x"],
    ["--state", "sub/"], ["--state", "sub"], ["--state", "notes.txt"], ["--state", "notes.txt", "--overwrite"],
    ["--state", "good.state"], ["--state", "fifo"], ["--state", "fifo", "--overwrite"],
    ["--state", "link.state", "--overwrite"], ["--state", "loop", "--overwrite"], ["--overwrite"],
    ["--state", "same.state", "--trace", "same.state"],
    ["-d", "SMP", "--allocators", "1"], ["--nr-cpus", "0"], ["--page-offset", "0x1ffffffffffffffff"],
    ["--kernel", "2.6.34"], ["--seed", "x"], ["--arch", "i386", "--pages", "2000000"], ["--frob"],
    ["--trace", "/nonexistent/dir/t.json"], ["--trace", "fifo"], ["--trace", "fifo", "--overwrite"],
    ["--trace", "notes.txt"], ["--trace", "sub"], ["--trace", "sub/"], ["--trace", "link.state", "--overwrite"],
    ["--trace", "notes.txt/t.json"], ["--trace", ""],
    ["--state", "ksmx.out", "--trace", "ksmx.out", "--overwrite"], ["--state", "ksmx.out", "--trace", "ksmx.out"],
    ["--trace", "live.state", "--overwrite"],  # issue 15 items 6 and 5
]
KMEM = [
    ["missing.state"], ["sub"], ["fifo"], ["notes.txt"], ["loop"], ["notes.txt/x"], ["n" * 300], ["/dev/null"],
    ["good.state", "--pfn", "99999"], ["good.state", "--pfn", "x"], ["good.state", "--pfn", "60:10"],
    ["good.state", "--pfn", "0:0"], ["good.state", "--pfn", "-1"], ["good.state", "--is", "bogus"], [],
    ["good.state", "--history", "64"], ["good.state", "--history", "-1"], ["good.state", "--history", "x"],
    ["good.state", "--history", "1"], ["good.state", "--history", "1", "--pfn", "0"],
    ["good.state", "--history", "1", "--is", "ksm"],
    *([f"{name}.state"] for name in HOSTILE), ["deep.state"], ["short.state"], ["biglen.state"],
    *([f"traced-{name}.state", "--history", "3"] for name in TRACE_HOSTILE),  # issue 15 item 16
]
LAYOUT_CASES = [
    ["show", "page", "--arch", "vax"], ["show", "pag"], ["show", "page", "--at", "64"],
    ["show", "page", "--at", "zz"], ["show", "page", "--page-offset", "-1"], ["overlap", "page", "mappin"],
    ["overlap", "page"], ["matrix", "-e", "BOGUS"], ["matrix", "nosuch"], ["hazard", "--max-mem", "0"],
    ["hazard", "--page-offset", "0xffffffffff000000"], ["hazard", "--nr-cpus", "100000"],
    ["hazard", "--all", "--arch", "i386", "--max-mem", str(1 << 33)], ["frob"], [],
]
EXPLORE = [  # the state file flags as run takes them; the rest are in test_explore.test_bad_input
    ["--state", "x.state", "--trace", "x.state"], ["--all", "--scenario", "merge"],
    ["--all", "--cpu", "allocator=99999"],
    ["--state", "notes.txt"], ["--state", "notes.txt", "--overwrite"], ["--state", "good.state"],
    ["--state", "fifo", "--overwrite"], ["--state", "sub/"], ["--state", "link.state", "--overwrite"],
    ["--state", "/nonexistent/dir/x"], ["--overwrite"], ["--all", "--state", "x.state"],
    ["--trace", "/nonexistent/dir/t.json"], ["--trace", "fifo"], ["--trace", "notes.txt"], ["--trace", "sub"],
    ["--all", "--trace", "t.json"],
    ["--trace", "live.state", "--overwrite"],  # issue 15 item 5
    ["--page-offset", "0xffffffffffffff00"], ["--arch", "i386", "--page-offset", "0xfffff000"],  # item 15
    ["--arch", "ppc32", "--page-offset", "0xfffff000", "--scenario", "pagetable-reuse"],  # item 15
]
_NR = "ksmx1:stale-node:keyhole-no-recheck:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0x13.1x30.2x23.0x2"
REPLAY = [["spec.json", "--trace", "spec.json", "--overwrite"], ["notes.txt"], ["fifo"], ["sub"], ["loop"], ["missing.json"], ["deep.state"], ["/dev/null"],
          ["ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0", "--overwrite"],
          ["ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0", "--state", "good.state"],
          ["ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0", "--trace", "fifo"],
          ["ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0", "--trace", "notes.txt"],
          ["ksmx1:stale-node:keyhole:x86_64/2.6.33:ksmd=0,reclaim=1,allocator=2:0", "--trace", "/nonexistent/t"],
          ["ksmx1:bogus", "--trace", "t.json"],
          [_NR, "--trace", "live.state", "--overwrite"],  # issue 15 item 5: a replay that would write its trace
          ["ksmx1:stale-node:keyhole:x86_64/2.6.33/po=0xffffffffffffff00:ksmd=0,reclaim=1,allocator=2:0"],  # item 15
          # items 7, 14, 20: CPU ids range-checked (no 2.5 GB world), ASCII digits, a bounded step count,
          # each role once, no steps after the execution's end
          [_NR.replace("ksmd=0", "ksmd=20000000")], [_NR.replace("ksmd=0", "ksmd=64")],
          [_NR.replace("ksmd=0", "ksmd=\u00b2")], [_NR.replace("ksmd=0", "ksmd=0,ksmd=1")],
          [_NR.replace(":0x13.", ":0x" + "9" * 4400 + ".")], [_NR + ".1"]]
CAMPAIGN = [["spec.json", "--out", "spec.json"], ["spec.json", "--out", "notes.txt"], ["--example", "--jobs", "0"],
            [], ["missing.json"], ["notes.txt"], ["fifo"], ["sub"], ["loop"], ["--example", "spec.json"],
            ["spec.json", "--jobs", "0"], ["spec.json", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:9"],
            ["spec.json", "--out", "sub"], ["spec.json", "--out", "fifo"], ["spec.json", "--out", "nodir/x.jsonl"],
            ["spec.json", "--scheduler", "localhost:8786"], ["spec.json", "--scheduler", "tcp://127.0.0.1:9"],
            *([f"{name}.json"] for name in BAD_SPECS),
            # issue 15: items 4, 22 (another SPEC's results, --scheduler ''), 17, 12 (the results file's lock)
            ["spec.json", "--out", "settings.json"], ["spec.json", "--out", "other.results.jsonl"],
            ["spec.json", "--scheduler", ""], ["spec.json", "--scheduler", "ucx://127.0.0.1:1"],
            ["spec.json", "--scheduler", "tls://127.0.0.1:1"], ["spec.json", "--out", "busy.results.jsonl"]]
EXPERIMENT = [["reclaim", "--plot", ""], ["reclaim", "--plot", "x.png/"], ["reclaim", "--plot", "old.png"],
              ["reclaim", "--overwrite"], [], ["frob"], ["reclaim", "--rates", "x"], ["reclaim", "--rates", "0"], ["reclaim", "--rates", "5,5"],
              ["reclaim", "--pages", "10"], ["reclaim", "--duration", "0"], ["reclaim", "--duration", "nan"],
              ["reclaim", "--ksmd-sleep-ms", "0"], ["reclaim", "--allocators", "0"], ["reclaim", "--protocol", "magic"],
              ["reclaim", "--plot", "notes.txt"], ["reclaim", "--plot", "nodir/x.png"], ["reclaim", "--plot", "fifo"],
              ["reclaim", "--arch", "vax"], ["reclaim", "--nr-cpus", "2"]]


def _id(command: str, argv: list[str]) -> str:
    """A test id that tells the cases apart: the replay strings' common heads shortened."""
    text = " ".join(argv).replace("ksmx1:stale-node:keyhole-no-recheck:x86_64/2.6.33:", "NR:")
    return f"{command} {text.replace('ksmx1:stale-node:keyhole:x86_64/2.6.33', 'K')}"[:100]


CASES = ([pytest.param(EMU + ["run", *a], id=_id("run", a)) for a in RUN]
         + [pytest.param(EMU + ["campaign", *a], id=_id("campaign", a)) for a in CAMPAIGN]
         + [pytest.param(EMU + ["experiment", *a], id=_id("experiment", a)) for a in EXPERIMENT]
         + [pytest.param(EMU + ["kmem", *a], id=_id("kmem", a)) for a in KMEM]
         + [pytest.param(EMU + ["explore", *a], id=_id("explore", a)) for a in EXPLORE]
         + [pytest.param(EMU + ["replay", *a], id=_id("replay", a)) for a in REPLAY]
         + [pytest.param(LAYOUT + a, id=_id("layout", a)) for a in LAYOUT_CASES]
         + [pytest.param(EMU, id="ksm-emu"), pytest.param(EMU + ["frob"], id="ksm-emu frob")])


def test_the_table_is_long_enough():
    assert len(CASES) >= 60


def snapshot(d: Path) -> dict:
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(d))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.mark.parametrize("argv", CASES)
def test_bad_invocation(work, argv):
    before = snapshot(work)
    env = {**os.environ, "KSM_EMU_STATE_DIR": str(work / "states"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), r.stderr
    assert "Traceback" not in r.stderr and "error" in lines[0]
    assert r.stdout == ""
    assert snapshot(work) == before


def test_ctrl_c_while_importing_is_one_line(monkeypatch, capsys):
    """The console scripts import the command inside emu.entry's guard: a
    KeyboardInterrupt there (forced by the import) is a line and 130."""
    import importlib

    from emu import entry

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    for run, prog in ((entry.ksm_emu, "ksm-emu"), (entry.ksm_layout, "ksm-layout")):
        assert run() == 130
        assert capsys.readouterr().err == f"{prog}: interrupted\n"
