"""Reclaim's time to free: a bounded histogram, exact in count, with
percentiles within the stated error, whoever records."""

import os
import random

import numpy as np
from support.procs import run_procs

from emu.kconfig import resolve
from emu.mm.boot import attach_world, boot
from emu.mm.regions import latency_bucket, latency_bucket_bounds
from emu.records import LAT_ANON, LAT_KSM, LAT_NBUCKETS, LAT_REL_ERROR, LATENCY_DTYPE
from emu.report import percentiles


def test_buckets_tile_every_value():
    prev = -1
    for i in range(LAT_NBUCKETS):
        lo, hi = latency_bucket_bounds(i)
        assert lo == prev + 1 and latency_bucket(lo) == i == latency_bucket(hi)
        assert lo == 0 or ((hi - lo) / 2) / lo <= LAT_REL_ERROR
        prev = hi
    assert prev == (1 << 64) - 1


def _record(path, seed, n):
    w = attach_world(path)
    mm = w.context(cpu=seed)
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(10, 2)) for _ in range(n)]
    for v in values:
        mm.truth.record_latency(v, LAT_KSM if v & 1 else LAT_ANON)
    w.close()
    return values


def test_every_sample_counted_across_processes(tmp_path):
    """Four processes record 20,000 samples each, more than the old ring kept
    per second of a run: the count is exact and the percentiles are within
    LAT_REL_ERROR of numpy's nearest-rank ones over the same samples."""
    w = boot(tmp_path / "l.state", resolve(), 1024)
    results = run_procs(_record, [(tmp_path / "l.state", s, 20_000) for s in range(4)])
    values = np.array([v for r in results for v in r], dtype=np.uint64)
    hist = w.machine.region_array("latency", LATENCY_DTYPE)
    assert w.machine.region("latency").size == 2 * LATENCY_DTYPE.itemsize  # fixed, whatever the run length
    for kind in (LAT_ANON, LAT_KSM):
        mine = np.sort(values[(values & 1) == kind])
        got = percentiles(hist[kind])
        assert got["n"] == len(mine) and got["max"] == round(int(mine[-1]) / 1000, 1)
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            exact = int(mine[int(np.ceil(q * len(mine))) - 1]) / 1000
            assert abs(got[name] - exact) <= exact * LAT_REL_ERROR + 0.05, (name, got[name], exact)
    w.close()
    os.unlink(tmp_path / "l.state")


def test_empty_histogram():
    assert percentiles(np.zeros(1, LATENCY_DTYPE)[0]) == {"p50": None, "p99": None, "max": None, "n": 0}
