"""The seed's second claim, measured: with the refcount protocol a reclaimed
KSM page waits for ksmd's next round; with the keyhole it is freed at once.

For each protocol and ksmd rate, one `ksm-emu run` (emu.supervise) in a
temporary directory; its latency histogram (reclaim's decision to the free
list, every KSM page counted) gives p50/p99/max and the CDF, and its shadow,
read after the run, the KSM pages reclaim chose that are still pinned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..check.shadow import KSM
from ..kconfig import Config, resolve
from ..machine import attach
from ..mm.regions import Geometry, latency_bucket_bounds
from ..records import LAT_KSM, LATENCY_DTYPE, SHADOW_DTYPE
from ..report import percentiles
from ..runspec import RunSpec, assign_cpus
from ..scratch import scratch_dir

PROTOCOLS = ("keyhole", "refcount")
# Sized so that at every default rate ksmd completes several passes in a run
# (1024 pages: 2048 rmap_items, a pass of 0.2 to 1.6 s) and the whole grid,
# 8 runs of 15 s, stays under 3 minutes on 2 cores.
DEFAULT_PAGES, DEFAULT_RATES, DEFAULT_DURATION, DEFAULT_SLEEP_MS = 1024, (25, 50, 100, 200), 15.0, 20.0


@dataclass
class Plan:
    cfg: Config = field(default_factory=resolve)
    pages: int = DEFAULT_PAGES
    rates: tuple[int, ...] = DEFAULT_RATES
    sleep_ms: float = DEFAULT_SLEEP_MS
    duration: float = DEFAULT_DURATION
    allocators: int = 1
    seed: int = 1
    protocols: tuple[str, ...] = PROTOCOLS

    @property
    def nslots(self) -> int:
        """rmap_items ksmd walks per pass (the run's virtual pages)."""
        return Geometry.for_pages(self.pages, self.cfg.nr_cpus).nslots

    def pass_s(self, rate: int) -> float:
        """The kernel's pass length: rmap_items / pages_to_scan x sleep_millisecs."""
        return self.nslots / rate * self.sleep_ms / 1000.0

    def runs(self) -> list[tuple[str, int]]:
        return [(p, r) for p in self.protocols for r in self.rates]

    def config(self) -> dict:
        return {"arch": self.cfg.arch.name, "kernel": self.cfg.kernel, "pages": self.pages,
                "rmap_items": self.nslots, "duration_s": self.duration, "sleep_ms": self.sleep_ms,
                "rates": list(self.rates), "protocols": list(self.protocols),
                "allocators": self.allocators, "seed": self.seed}


@dataclass
class Measured:
    """One run: the row of the table and what the plot and the notes need."""

    row: dict
    cdf_us: np.ndarray  # upper bound of each non-empty histogram bucket, us
    cdf: np.ndarray  # fraction of freed KSM pages at or below it
    passes: int  # ksmd passes completed
    scanned_per_s: float
    summary: dict  # the run's own summary (emu.report.summarise)
    nslots: int

    @property
    def measured_pass_s(self) -> float | None:
        """The pass as ksmd really went: rmap_items over its scan rate in the run."""
        return self.nslots / self.scanned_per_s if self.scanned_per_s else None


def cdf_of(hist: np.void) -> tuple[np.ndarray, np.ndarray]:
    """The histogram as a CDF: (bucket upper bound in us, cumulative fraction),
    non-empty buckets only."""
    buckets = np.asarray(hist["buckets"], dtype=np.uint64)
    idx = np.flatnonzero(buckets)
    if not len(idx):
        return np.zeros(0), np.zeros(0)
    top = np.array([latency_bucket_bounds(int(i))[1] + 1 for i in idx], dtype=float) / 1000.0
    return top, np.cumsum(buckets[idx]) / float(buckets.sum())


def pinned_ksm_pages(state: Path) -> tuple[int, np.void]:
    """After the run: KSM pages reclaim chose and nobody has freed (refcount:
    the stable_node's reference holds them), and the KSM latency histogram."""
    m = attach(state, readonly=True)
    try:
        sh = m.region_array("shadow", SHADOW_DTYPE)
        pinned = int(np.count_nonzero((sh["state"] == KSM) & (sh["t_reclaim"] != 0)))
        hist = m.region_array("latency", LATENCY_DTYPE)[LAT_KSM].copy()
        del sh
        return pinned, hist
    finally:
        m.close()


def measure_one(plan: Plan, protocol: str, rate: int, tmp: Path) -> Measured:
    """One run of `plan.duration` seconds; a KeyboardInterrupt (Ctrl-C,
    SIGTERM during setup) goes to the caller, which removes `tmp`."""
    from ..supervise import run

    state = tmp / f"{protocol}-{rate}.state"
    spec = RunSpec(cfg=plan.cfg, protocol=protocol, pages=plan.pages, duration=plan.duration,
                   allocators=plan.allocators, pages_to_scan=rate, sleep_ms=plan.sleep_ms, seed=plan.seed,
                   state=str(state), progress=False)
    spec.cpus = assign_cpus(spec, {})
    outcome = run(spec, logging.ERROR)
    s = outcome.summary
    if s is None:
        raise RunFailed(f"{protocol} at {rate} pages per {plan.sleep_ms:g} ms: {outcome.error}")
    pinned, hist = pinned_ksm_pages(state)
    os.unlink(state)
    p = percentiles(hist)
    row = {"protocol": protocol, "pages_to_scan": rate, "sleep_ms": plan.sleep_ms,
           "pass_s": round(plan.pass_s(rate), 4), "n": p["n"], "p50_us": p["p50"], "p99_us": p["p99"],
           "max_us": p["max"], "pinned": pinned}
    x, y = cdf_of(hist)
    c = s["counts"]
    return Measured(row, x, y, c["ksmd_passes"], c["ksmd_scanned"] / max(s["duration_s"], 1e-9), s,
                    plan.nslots)


class RunFailed(Exception):
    """A run gave no summary (its state file was truncated, ...)."""


def measure(plan: Plan, on_start: Callable[[str, int], None] | None = None,
            on_done: Callable[[Measured], None] | None = None) -> list[Measured]:
    """Every run of the plan in turn (one at a time: two runs at once would
    share the 2 cores and measure the OS scheduler), in a temporary directory
    removed at the end, also when interrupted."""
    out = []
    with scratch_dir("experiment") as d:  # a SIGKILL too: the janitor removes it
        for protocol, rate in plan.runs():
            if on_start is not None:
                on_start(protocol, rate)
            m = measure_one(plan, protocol, rate, d.path)
            out.append(m)
            if on_done is not None:
                on_done(m)
            if m.summary["interrupted"]:
                break
    return out


def failed(m: Measured) -> str | None:
    """Why a run counts as failed (a role died, a violation), or None."""
    s = m.summary
    if s["died"]:
        return "; ".join(d["how"] for d in s["died"])
    if s["violations_total"]:
        return f"{s['violations_total']} violations ({', '.join(s['violations_by_kind'])})"
    return None


def goals(results: list[Measured]) -> dict[str, bool | None]:
    """The issue's criteria on the measured rows; None where nothing was measured."""
    kh = [m.row for m in results if m.row["protocol"] == "keyhole"]
    rc = [m.row for m in results if m.row["protocol"] == "refcount" and m.row["n"]]
    return {
        "keyhole p99 < 1 ms at every rate": all(r["p99_us"] is not None and r["p99_us"] < 1000 for r in kh)
        if kh else None,
        "refcount p50 within 2x of half the pass, where it frees pages":
            all(0.5 <= ratio(r) <= 2.0 for r in rc) if rc else None,
    }


def ratio(row: dict) -> float:
    """Median over the expected wait (half the pass)."""
    return row["p50_us"] / 1e6 / (row["pass_s"] / 2)


def table(plan: Plan, results: list[Measured]) -> str:
    lines = [f"reclaim's decision to the free list, KSM pages: {plan.cfg.arch.name} {plan.cfg.kernel}, "
             f"{plan.pages} pages ({plan.nslots} rmap_items), {plan.duration:g} s per run, "
             f"ksmd sleep {plan.sleep_ms:g} ms",
             f"{'protocol':9} {'pages/scan':>10} {'pass s':>7} {'measured':>8} {'p50 us':>11} {'p99 us':>11} "
             f"{'max us':>11} {'n':>6} {'pinned':>6} {'p50/(pass/2)':>12}"]
    for m in results:
        r = m.row
        mp = m.measured_pass_s
        cells = [f"{r['protocol']:9}", f"{r['pages_to_scan']:>10}", f"{r['pass_s']:>7.2f}",
                 f"{mp:>8.2f}" if mp else f"{'-':>8}"]
        cells += [f"{r[k]:>11,.1f}" if r[k] is not None else f"{'-':>11}" for k in ("p50_us", "p99_us", "max_us")]
        cells += [f"{r['n']:>6}", f"{r['pinned']:>6}",
                  f"{ratio(r):>12.2f}" if r["protocol"] == "refcount" and r["n"] else f"{'':>12}"]
        lines.append(" ".join(cells))
    lines.append("pass s: rmap_items / pages_to_scan x sleep (the kernel's); measured: from ksmd's scan rate "
                 "in the run; pinned: KSM pages reclaim chose that were still unfreed at the end")
    for name, ok in goals(results).items():
        lines.append(f"goal: {name}: " + ("n/a" if ok is None else "ok" if ok else "MISSED"))
    return "\n".join(lines)
