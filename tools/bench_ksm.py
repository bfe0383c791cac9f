#!/usr/bin/env python3
"""Benchmark the emulation's goals, each against a baseline in the same run.

1. sweep: get_ksm_page over every stable node as one nogil Cython loop
   (emu._ksm_sweep), beside the real get_ksm_page (emu.mm.ksm, the Python
   every run and exploration calls) with its put_ksm_page, over live KSM
   pages ksmd merged. Nodes per second, on one core.
2. time-to-free: reclaim's decision to a KSM page on the free list, p50/p99,
   with the keyhole and the refcount protocol at several ksmd rates (the runs
   of `ksm-emu experiment reclaim`, at the kernel's default size).
3. big run: 4M struct pages (16 GiB emulated) with ksmd, reclaim and two
   allocators; the proportional set size of every process together, against
   the size of the mapping; violations.

Prints a table, or one JSON object with --json; progress goes to stderr as
each part starts. Every state file lives in one temporary directory that is
removed at the end, also when the benchmark is stopped (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import base_parser, goals_line, main_guard, print_json, run_command, say, scratch

from emu._ksm_sweep import sweep_get_ksm_page
from emu.check.shadow import KSM
from emu.kconfig import resolve
from emu.machine import RegionSpec, create
from emu.records import SHADOW_DTYPE

TMP: Path = Path(".")  # the run's temporary directory (main sets it)


def _say(text: str) -> None:
    say("bench_ksm", text)


def build_nodes(path: Path, nodes: int, stale_every: int) -> tuple:
    """A machine whose pages are the KSM pages of the nodes, in a random order
    (as KSM pages are scattered over memory); every stale_every-th node's page
    has been freed (mapping NULL, _count 0)."""
    cfg = resolve()
    from emu.structs import kernel_for

    k = kernel_for(cfg)
    m = create(path, cfg, nodes, regions=[RegionSpec("stable_nodes", nodes * k.stable_node.size),
                                          RegionSpec("shadow", nodes * SHADOW_DTYPE.itemsize)])
    from emu.layout import Layout

    sn = m.region("stable_nodes")
    lay = Layout(k.stable_node, cfg.byte_order)
    arr = m.region_array("stable_nodes", lay.dtype)
    kpfn = np.random.default_rng(1).permutation(nodes).astype(np.uint64)
    arr["kpfn"] = kpfn
    keys = sn.base + np.arange(nodes, dtype=np.uint64) * k.stable_node.size + 3
    live = np.ones(nodes, np.uint8)
    stale = np.zeros(nodes, bool)
    stale[::stale_every] = True
    m.pages["mapping"][kpfn] = np.where(stale, 0, keys)
    m.pages["_count.counter"][kpfn] = np.where(stale, 0, 1)
    sh = m.region_array("shadow", SHADOW_DTYPE)
    sh["state"][kpfn] = np.where(stale, 0, KSM)
    sh["node"][kpfn] = np.where(stale, 0, keys - 3)
    del arr, sh
    return m, k, live, sn


def real_get_ksm_page_rate(path: Path, nodes: int, repeats: int) -> float:
    """emu.mm.ksm.get_ksm_page itself (the code every run and exploration runs),
    with put_ksm_page after it, over `nodes` live KSM pages that ksmd merged:
    nodes per second, the best of `repeats`."""
    from emu.kconfig import resolve
    from emu.mm.boot import boot
    from emu.mm.ksm import StableTree, get_ksm_page, put_ksm_page
    from emu.mm.ksm_scan import scan_slot
    from emu.mm.memory import do_anonymous_page

    w = boot(path, resolve(), 2 * nodes + 64, nmms=2)  # the keyhole
    try:
        ksmd = w.context(cpu=0, task=0xC0000000, role="ksmd")
        alloc = w.context(cpu=2, task=0xC0002000, role="allocator.0")
        tree = StableTree(w.geo)
        for i in range(nodes):  # two pages of one content, merged into a KSM page and its stable_node
            for slot in (2 * i, 2 * i + 1):
                do_anonymous_page(alloc, slot, w.objects.anon_vma[0], i + 1)
                scan_slot(ksmd, tree, slot)
        idxs = [int(tree.by_content[i + 1]) - 1 for i in range(nodes)]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for idx in idxs:
                pfn = get_ksm_page(ksmd, tree, idx)
                put_ksm_page(ksmd, pfn, idx)
            times.append(time.perf_counter() - t0)
        stale = [idx for idx in idxs if (pfn := get_ksm_page(ksmd, tree, idx)) < 0 or put_ksm_page(ksmd, pfn, idx)]
        assert not stale, f"{len(stale)} of {nodes} nodes stale"  # every node's page is live: the ok path timed
    finally:
        w.close()
    return nodes / min(times)


def bench_sweep(nodes: int, py_nodes: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(dir=TMP) as d:
        m, k, live, sn = build_nodes(Path(d) / "sweep.ksm", nodes, 10)
        lay = m.page_layout
        kw = dict(nodes_off=sn.offset, node_size=k.stable_node.size, kpfn_rel=k.stable_node.member("kpfn")[0],
                  nodes_addr=sn.base, mem_map_off=m.mem_map_offset, page_size=m.page_size,
                  nr_pages=nodes, mapping_rel=lay.offset("mapping"), count_rel=lay.offset("_count.counter"),
                  word=8, shadow_off=m.region("shadow").offset)
        status = np.zeros(nodes, np.uint8)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            counts = sweep_get_ksm_page(m.mm, "little", live=live, status=status, **kw)
            times.append(time.perf_counter() - t0)
        assert counts[0] == nodes - len(range(0, nodes, 10)) and counts[3] == 0, counts
        m.close()
        py_rate = real_get_ksm_page_rate(Path(d) / "real.ksm", py_nodes, repeats)
    c_rate = nodes / min(times)
    return {"nodes": nodes, "stale_fraction": 0.1, "nogil_nodes_per_s": c_rate,
            "python_nodes": py_nodes, "python_nodes_per_s": py_rate, "speedup": c_rate / py_rate}


def bench_time_to_free(duration: float, pages: int, rates: list[int]) -> list[dict]:
    """The runs of `ksm-emu experiment reclaim` (emu.experiment.reclaim), with the
    kernel's default size and two allocators."""
    from emu.experiment.reclaim import Plan, measure_one

    plan = Plan(pages=pages, duration=duration, allocators=2, rates=tuple(rates))
    out = []
    for protocol, rate in plan.runs():
        _say(f"time to free: {protocol}, ksmd {rate} pages per 20 ms, {duration:g} s ...")
        m = measure_one(plan, protocol, rate, TMP)
        s = m.summary
        out.append({"protocol": protocol, "ksmd_pages_per_20ms": rate, "duration_s": duration,
                    "ksm": s["reclaim_time_to_free_us"], "anon": s["reclaim_time_to_free_anon_us"],
                    "ksmd_passes": s["counts"]["ksmd_passes"], "violations": s["violations_total"],
                    "pinned": m.row["pinned"]})
    return out


def _pss_kb(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_big_run(pages: int, duration: float) -> dict:
    _say(f"big run: {pages} pages for {duration:g} s ...")
    state = Path(tempfile.mkdtemp(dir=TMP)) / "big.state"
    cmd = run_command(["--pages", str(pages), "--duration", str(duration), "--state", str(state), "--json", "-v",
                       "--no-progress"])
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = {"launcher": p.pid}
    while len(pids) < 5:
        line = p.stderr.readline()
        if not line:
            break
        m = re.search(r" (\S+) cpu\d+ pid\d+: started, pid (\d+)", line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    setup_s = time.monotonic() - t0
    samples = []
    while p.poll() is None:
        time.sleep(1.0)
        total = sum(_pss_kb(pid) for pid in pids.values())
        if total:
            samples.append(total)
    out, err = p.communicate()
    summary = json.loads(out)
    mapping = state.stat().st_size
    state.unlink()
    state.parent.rmdir()
    peak = max(samples) * 1024 if samples else 0
    return {"pages": pages, "emulated_gib": pages * 4096 / 2**30, "duration_s": duration,
            "setup_s": round(setup_s, 2), "mapping_mb": mapping / 2**20, "peak_pss_mb": peak / 2**20,
            "pss_over_mapping": peak / mapping, "processes": len(pids),
            "violations": summary["violations_total"], "exit_code": p.returncode,
            "reclaim_time_to_free_us": summary["reclaim_time_to_free_us"],
            "counts": {k: summary["counts"][k] for k in ("get_ksm_page_ok", "get_ksm_page_stale",
                                                         "ksm_pages_merged", "pages_freed")}}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--nodes", type=int, default=4_000_000, help="stable nodes in the sweep (default 4M)")
    p.add_argument("--python-nodes", type=int, default=20_000, help="KSM pages for the real get_ksm_page")
    p.add_argument("--repeats", type=int, default=3, help="sweep samples; the best is reported")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per time-to-free run")
    p.add_argument("--pages", type=int, default=65536, help="pages in the time-to-free runs")
    p.add_argument("--rates", default="10,100,1000", help="ksmd pages per 20 ms to compare")
    p.add_argument("--big-pages", type=int, default=4 << 20, help="pages of the big run (default 4M)")
    p.add_argument("--big-duration", type=float, default=30.0)
    p.add_argument("--skip", action="append", default=[], choices=["sweep", "free", "big"],
                   help="skip a part (repeatable)")
    args = p.parse_args(argv)
    try:
        rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        p.error(f"--rates wants comma-separated integers, not {args.rates!r}")
    if min([args.nodes, args.python_nodes, args.repeats, args.pages, args.big_pages, *rates]) < 1 \
            or args.duration <= 0 or args.big_duration <= 0:
        p.error("counts, rates and durations must be positive")
    global TMP
    r: dict = {"cpus": os.cpu_count()}
    with scratch("bench-ksm-") as tmp:
        TMP = Path(tmp)
        if "sweep" not in args.skip:
            _say(f"sweep: {args.nodes} nodes ...")
            r["sweep"] = bench_sweep(args.nodes, min(args.python_nodes, args.nodes), args.repeats)
        if "free" not in args.skip:
            r["time_to_free"] = bench_time_to_free(args.duration, args.pages, rates)
        if "big" not in args.skip:
            r["big_run"] = bench_big_run(args.big_pages, args.big_duration)
    r["goals"] = {}
    if "sweep" in r:
        r["goals"]["sweep >= 10M nodes/s"] = r["sweep"]["nogil_nodes_per_s"] >= 10e6
    if "time_to_free" in r:
        kh = [x["ksm"]["p99"] for x in r["time_to_free"] if x["protocol"] == "keyhole"]
        r["goals"]["keyhole p99 < 1 ms at every rate"] = all(v is not None and v < 1000 for v in kh)
    if "big_run" in r:
        b = r["big_run"]
        r["goals"]["big run: no violations"] = b["violations"] == 0 and b["exit_code"] == 0
        r["goals"]["big run: PSS <= 1.3x mapping"] = b["pss_over_mapping"] <= 1.3
    if args.json:
        print_json(r)
        return 0
    if "sweep" in r:
        s = r["sweep"]
        print(f"sweep of get_ksm_page, {s['nodes']} nodes (10% stale): nogil {s['nogil_nodes_per_s'] / 1e6:.1f}M "
              f"nodes/s; the real get_ksm_page {s['python_nodes_per_s'] / 1e6:.3f}M nodes/s; x{s['speedup']:.0f}")
    if "time_to_free" in r:
        print(f"\nreclaim time to free, {args.pages} pages, {args.duration:.0f} s per run (us):")
        print(f"{'protocol':10} {'ksmd/20ms':>9} {'KSM p50':>9} {'KSM p99':>9} {'KSM max':>9} {'n':>6} "
              f"{'anon p99':>9} {'passes':>6}")
        for x in r["time_to_free"]:
            k, a = x["ksm"], x["anon"]
            print(f"{x['protocol']:10} {x['ksmd_pages_per_20ms']:>9} {k['p50'] or '-':>9} {k['p99'] or '-':>9} "
                  f"{k['max'] or '-':>9} {k['n']:>6} {a['p99'] or '-':>9} {x['ksmd_passes']:>6}")
    if "big_run" in r:
        b = r["big_run"]
        print(f"\nbig run: {b['pages']} pages ({b['emulated_gib']:.0f} GiB emulated), {b['processes']} processes, "
              f"setup {b['setup_s']} s: mapping {b['mapping_mb']:.0f} MiB, peak PSS {b['peak_pss_mb']:.0f} MiB "
              f"({b['pss_over_mapping']:.2f}x), violations {b['violations']}, exit {b['exit_code']}")
    print("\n" + goals_line(r["goals"]))
    return 0


if __name__ == "__main__":
    main_guard(main, "bench_ksm")
