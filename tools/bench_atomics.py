#!/usr/bin/env python3
"""Benchmark emu._atomics against its baselines, in one run on one mapping.

1. ns per op (median of repeats) for cas, fetch_add and load called from
   Python: emu._atomics, (a) a numpy element read-modify-write under a
   multiprocessing.Lock, (b) the `atomics` package from PyPI.
2. A nogil Cython loop of N CAS increments against the same loop in plain C
   (compiled here with gcc -O2 and called through ctypes on the same bytes).
3. Time and peak memory to create and attach a machine of 4M struct pages,
   and what an attached idle process adds to its RSS.

Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import os
import statistics
import subprocess
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
from benchlib import base_parser, goals_line, main_guard, print_json, scratch

from emu._atomics import Atomics

C_LOOP = r"""
#include <stdint.h>
void cas_loop(uint64_t *p, long n) {
    for (long i = 0; i < n; i++) {
        uint64_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(p, &old, old + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
    }
}
"""


def per_op_ns(stmt: str, env: dict, repeats: int, target_s: float = 0.05) -> float:
    """Median over `repeats` samples of ns per execution of `stmt` (timeit's
    empty-loop cost subtracted); each sample runs about target_s seconds."""
    t = timeit.Timer(stmt, globals=env)
    empty = timeit.Timer("pass")
    n = 1
    while (dt := t.timeit(n)) < target_s / 10:
        n *= 10
    n = max(1, int(n * target_s / max(dt, 1e-9)))
    return statistics.median((t.timeit(n) - empty.timeit(n)) / n * 1e9 for _ in range(repeats))


def bench_python_ops(repeats: int) -> dict:
    import atomics as pypi_atomics

    buf = mmap.mmap(-1, 4096)
    env = {"a": Atomics(buf, "little"), "q": Atomics(buf, "little", release_gil=False),
           "arr": np.frombuffer(buf, np.uint64, 8, 64), "lock": mp.get_context("fork").Lock()}
    mv = memoryview(buf)
    ops = {  # emu statement, numpy+Lock statement, atomics(PyPI) statement
        "load": ("{a}.load(8, 8)", "with lock: v = arr[0]", "pa.load()"),
        "fetch_add": ("{a}.fetch_add(8, 8, 1)", "with lock:\n    v = arr[0]\n    arr[0] = v + 1",
                      "pa.fetch_add(1)"),
        "cas": ("{a}.cas(8, 8, 5, 5)", "with lock:\n    v = arr[0]\n    if v == 5:\n        arr[0] = 5",
                "pa.cmpxchg_strong(5, 5)"),
    }
    out = {}
    with pypi_atomics.atomicview(buffer=mv[128:136], atype=pypi_atomics.UINT) as pa:
        env["pa"] = pa
        for name, (ours, np_lock, pypi) in ops.items():
            row = {"emu_ns": per_op_ns(ours.format(a="a"), env, repeats),
                   "emu_gil_held_ns": per_op_ns(ours.format(a="q"), env, repeats),
                   "numpy_lock_ns": per_op_ns(np_lock, env, repeats),
                   "atomics_pypi_ns": per_op_ns(pypi, env, max(3, repeats // 2))}
            for k in ("emu_ns", "emu_gil_held_ns"):
                row[f"x_vs_numpy_lock{k[3:-3]}"] = row["numpy_lock_ns"] / row[k]
                row[f"x_vs_atomics_pypi{k[3:-3]}"] = row["atomics_pypi_ns"] / row[k]
            out[name] = row
        del env["pa"]
    for k in ("a", "q"):
        env[k].release()
    del env, mv
    return out


def bench_loops(n: int, repeats: int, workdir: Path) -> dict:
    src = workdir / "cas_loop.c"
    lib = workdir / "cas_loop.so"
    src.write_text(C_LOOP)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    c = ctypes.CDLL(str(lib))
    c.cas_loop.argtypes = [ctypes.c_void_p, ctypes.c_long]
    buf = mmap.mmap(-1, 4096)
    a = Atomics(buf, "little")
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf, 64))
    cy, cc = [], []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        a.loop_cas_increment(64, 8, n)
        t1 = time.perf_counter_ns()
        c.cas_loop(addr, n)
        t2 = time.perf_counter_ns()
        cy.append((t1 - t0) / n)
        cc.append((t2 - t1) / n)
    assert a.load(64, 8) == 2 * n * repeats, "a loop lost an increment"
    a.release()
    cy_ns, c_ns = statistics.median(cy), statistics.median(cc)
    return {"n": n, "cython_nogil_ns": cy_ns, "plain_c_ns": c_ns, "ratio_cython_over_c": cy_ns / c_ns}


def _rss_kb(pid: str = "self") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _machine_child(mode: str, path: str, q) -> None:
    import resource

    from emu.kconfig import resolve
    from emu.machine import RegionSpec, attach, create

    cfg = resolve()
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    if mode == "create":
        m = create(path, cfg, 4 << 20, regions=[RegionSpec("stable_nodes", 16 << 20)])
    else:
        m = attach(path, expect=cfg)
    dt = time.perf_counter() - t0
    rss1 = _rss_kb()
    q.put({"seconds": dt, "rss_before_mb": rss0 / 1024, "rss_after_mb": rss1 / 1024,
           "added_mb": (rss1 - rss0) / 1024,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "mapping_mb": m.size / 2**20})
    m.close()


def bench_machine(workdir: Path) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: no memory inherited from this one
    out = {}
    with scratch("bench-atomics-") as d:  # /dev/shm: the machine file is memory, as a run's is
        path = str(Path(d) / "bench.ksm")
        for mode in ("create", "attach"):
            q = ctx.Queue()
            p = ctx.Process(target=_machine_child, args=(mode, path, q))
            p.start()
            out[mode] = q.get(timeout=120)
            p.join()
    out["pages"] = 4 << 20
    return out


GOALS = {
    "op_ns_max": 150, "x_vs_numpy_lock_min": 10, "x_vs_atomics_pypi_min": 20,
    "loop_ratio_max": 1.5, "attach_seconds_max": 1.0, "attach_added_mb_max": 50,
}


def verdicts(r: dict) -> dict:
    ops = r["python_ops"]
    return {
        "op_ns<=150": all(v["emu_ns"] <= GOALS["op_ns_max"] for v in ops.values()),
        ">=10x numpy+Lock": all(v["x_vs_numpy_lock"] >= GOALS["x_vs_numpy_lock_min"] for v in ops.values()),
        ">=20x atomics(PyPI)": all(v["x_vs_atomics_pypi"] >= GOALS["x_vs_atomics_pypi_min"] for v in ops.values()),
        "nogil loop <=1.5x C": r["loops"]["ratio_cython_over_c"] <= GOALS["loop_ratio_max"],
        "attach <1s": r["machine"]["attach"]["seconds"] < GOALS["attach_seconds_max"],
        "attach adds <=50MB": r["machine"]["attach"]["added_mb"] <= GOALS["attach_added_mb_max"],
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--loop-n", type=int, default=10_000_000, help="CAS operations per loop sample")
    p.add_argument("--repeats", type=int, default=7, help="samples; the median is reported")
    p.add_argument("--skip-machine", action="store_true", help="skip the 4M-page create/attach")
    args = p.parse_args(argv)
    if args.loop_n < 1 or args.repeats < 1:
        p.error("--loop-n and --repeats must be positive")
    with tempfile.TemporaryDirectory() as d:
        r = {"python_ops": bench_python_ops(args.repeats),
             "loops": bench_loops(args.loop_n, args.repeats, Path(d))}
        if not args.skip_machine:
            r["machine"] = bench_machine(Path(d))
    r["cpus"] = os.cpu_count()
    if "machine" in r:
        r["goals"] = verdicts(r)
    if args.json:
        print_json(r)
        return 0
    print("ns per op called from Python (median); 'GIL held' = Atomics(release_gil=False)")
    print(f"{'op':10} {'emu':>7} {'GIL held':>9} {'numpy+Lock':>11} {'atomics':>9} "
          f"{'x Lock':>7} {'x Lock(held)':>12} {'x atomics':>9}")
    for name, v in r["python_ops"].items():
        print(f"{name:10} {v['emu_ns']:7.1f} {v['emu_gil_held_ns']:9.1f} {v['numpy_lock_ns']:11.1f} "
              f"{v['atomics_pypi_ns']:9.1f} {v['x_vs_numpy_lock']:7.1f} "
              f"{v['x_vs_numpy_lock_gil_held']:12.1f} {v['x_vs_atomics_pypi']:9.1f}")
    lp = r["loops"]
    print(f"\nCAS loop, {lp['n']} ops: Cython nogil {lp['cython_nogil_ns']:.2f} ns/op, "
          f"plain C {lp['plain_c_ns']:.2f} ns/op, ratio {lp['ratio_cython_over_c']:.2f}")
    if "machine" in r:
        for mode in ("create", "attach"):
            v = r["machine"][mode]
            print(f"{mode} 4M pages ({v['mapping_mb']:.0f} MiB mapping): {v['seconds'] * 1000:.1f} ms, "
                  f"RSS +{v['added_mb']:.1f} MB (peak {v['peak_rss_mb']:.1f} MB)")
        print("\n" + goals_line(r["goals"]))
    return 0


if __name__ == "__main__":
    main_guard(main, "bench_atomics")
