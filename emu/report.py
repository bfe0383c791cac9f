"""What a run and a state file say, as data and as text: the bytes of
page->mapping decoded per user, violation records decoded, the run summary
and its rendering. `ksm-emu run` and `ksm-emu kmem` both decode through here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .check.violations import VIOLATION_NAMES
from .cliutil import json_config
from .decode import decode_violation
from .findings import line, run_violation_line
from .mm.protocol import PROTOCOLS
from .mm.regions import Geometry, latency_bucket_bounds
from .records import COUNTERS, LAT_ANON, LAT_KSM, LAT_NBUCKETS, LAT_REL_ERROR, VIOLATION_DTYPE

if TYPE_CHECKING:
    from .mm.boot import World
    from .runspec import RunSpec
    from .runview import RunView


def violation_records(world: World) -> np.ndarray:
    """The violation records a world's ring holds (a view)."""
    m, h, o = world.machine, world.host_mem, world.offsets
    n = min(h.load(o["ctl_nviol"], 8), world.geo.violation_capacity)
    return m.region_array("violations", VIOLATION_DTYPE)[:n]


def percentiles(hist: np.void) -> dict:
    """p50, p99 (nearest rank) and max in us from one latency histogram record:
    a percentile is its bucket's midpoint, within LAT_REL_ERROR of the true
    value; max and n are exact."""
    buckets = np.asarray(hist["buckets"], dtype=np.uint64)
    n = int(buckets.sum())
    if not n:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    cum = np.cumsum(buckets)
    top = int(hist["max"])
    out = {}
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        i = int(np.searchsorted(cum, max(1, math.ceil(q * n))))
        lo, hi = latency_bucket_bounds(i)
        out[name] = round(min((lo + hi) / 2, top) / 1000.0, 1)
    return {**out, "max": round(top / 1000.0, 1), "n": n}


def counts(world: World) -> dict[str, int]:
    h, base = world.host_mem, world.offsets["counters"]
    return {name: h.load(base + 8 * i, 8) for i, name in enumerate(COUNTERS)}


def ksmd_pass_note(spec: RunSpec, c: dict[str, int], ksm_freed: int, elapsed: float) -> str | None:
    """Why ksmd completed no pass, and (refcount) why no KSM page was freed:
    a run shorter than ksmd's pass leaves every stable_node's reference held."""
    if c["ksmd_passes"]:
        return None
    nslots = Geometry.for_pages(spec.pages, spec.cfg.nr_cpus).nslots
    pass_s = nslots / spec.pages_to_scan * spec.sleep_ms / 1000.0
    shown = f"{pass_s:.1f}" if pass_s >= 0.1 else f"{pass_s:.2g}"  # never "above 0"
    note = (f"ksmd completed no pass: it walks {nslots} rmap_items at {spec.pages_to_scan} per "
            f"{spec.sleep_ms:g} ms, at least {shown} s a pass, and ran {elapsed:.1f} s")
    if PROTOCOLS[spec.protocol].holds_ref and not ksm_freed:
        note += ("; with refcount a reclaimed KSM page is freed only when ksmd's pass reaches its "
                 "rmap_items and drops the stable_node's reference, so no KSM page was freed")
    return note + (f"; for full passes give --duration above {shown}, a larger --ksmd-pages or fewer --pages "
                   "(ksm-emu experiment reclaim is sized for it)")


def summarise(spec: RunSpec, view: RunView, elapsed: float, roles: list[dict], died: list[dict],
              interrupted: str | None, notes: list[str] = ()) -> dict:
    """The run's summary from a RunView (the state file's bookkeeping regions)."""
    c = view.counts()
    lat = view.latency()
    ksmd_note = ksmd_pass_note(spec, c, percentiles(lat[LAT_KSM])["n"], elapsed)
    notes = [*notes, *([ksmd_note] if ksmd_note else [])]
    records = view.violation_records()
    by_kind = view.by_kind()
    lockdep, lockdep_total = view.lockdep()
    return {
        "config": json_config(spec.cfg),  # addresses as hex strings, as everywhere in JSON
        "protocol": spec.protocol,
        "pages": spec.pages,
        "emulated_bytes": spec.pages * 4096,
        "duration_s": round(elapsed, 2),
        "seed": spec.seed,
        "pid": spec.pid,
        "roles": roles,
        "counts": c,
        "reclaim_time_to_free_us": percentiles(lat[LAT_KSM]),
        "reclaim_time_to_free_anon_us": percentiles(lat[LAT_ANON]),
        "latency_histogram": {"relative_error": LAT_REL_ERROR, "buckets": LAT_NBUCKETS,
                              "covers": "every page freed after reclaim chose it"},
        "violations": [decode_violation(view, r).as_dict() for r in records],
        "violations_total": c["violations"],
        "violations_by_kind": {k: v for k, v in by_kind.items() if v},
        "violation_records_per_kind": view.violation_capacity // len(VIOLATION_NAMES),
        "checks": {"enabled": sorted(spec.checks), "lockdep": [f.as_dict() for f in lockdep],
                   "lockdep_total": lockdep_total},
        "died": died,
        "notes": list(notes),
        "interrupted": bool(interrupted),
        "interrupted_by": interrupted,
        "state": spec.state,
    }


def progress_line(c: dict[str, int], t: float, total: float) -> str:
    return (f"[{t:5.1f}/{total:.0f}s] get_ksm_page ok {c['get_ksm_page_ok']} stale "
            f"{c['get_ksm_page_stale']}, merged {c['ksm_pages_merged']}, freed {c['pages_freed']}, "
            f"violations {c['violations']}   ")


def first_of_each_kind(violations: list[dict], limit: int) -> list[dict]:
    """The first record of every kind, then the others in order, up to `limit`:
    a flood of one kind cannot bury another."""
    firsts, seen = [], set()
    for v in violations:
        if v["kind"] not in seen:
            seen.add(v["kind"])
            firsts.append(v)
    rest = [v for v in violations if not any(v is f for f in firsts)]
    return (firsts + rest)[:limit]


def _latency_line(r: dict, what: str) -> str:
    if not r["n"]:
        return f"reclaim time to free ({what}): no page reached the free list"
    return (f"reclaim time to free ({what}): p50 {r['p50']} us, p99 {r['p99']} us, max {r['max']} us "
            f"over all {r['n']} pages (percentiles within {LAT_REL_ERROR:.1%})")


def render_summary(s: dict, shown: int = 20) -> str:
    c = s["config"]
    lines = [f"ksm-emu run: {c['arch']} {c['kernel']}, protocol {s['protocol']}, {s['pages']} pages "
             f"({s['emulated_bytes'] >> 20} MiB emulated), {s['duration_s']} s, seed {s['seed']}"
             + (f" (interrupted by {s['interrupted_by']}: partial)" if s["interrupted"] else "")
             + (f"; KSM_EMU_TEST_BREAK={','.join(s['test_break'])}: deliberately broken" if s.get("test_break") else "")]
    lines.append("roles: " + ", ".join(f"{r['role']} cpu{r['cpu']}" for r in s["roles"]))
    k = s["counts"]
    lines.append(f"get_ksm_page: {k['get_ksm_page_ok']} ok, {k['get_ksm_page_stale']} stale; "
                 f"stable nodes removed {k['stable_nodes_removed']}; KSM pages created "
                 f"{k['ksm_pages_created']}, pages merged {k['ksm_pages_merged']}")
    lines.append(f"pages allocated {k['pages_allocated']}, freed {k['pages_freed']}; reclaimed "
                 f"{k['reclaimed']} (ptes unmapped {k['reclaim_unmapped']}); ksmd passes "
                 f"{k['ksmd_passes']}; ptl locks {k['ptl_locks']}")
    lines.append(_latency_line(s["reclaim_time_to_free_us"], "KSM pages"))
    lines.append(_latency_line(s["reclaim_time_to_free_anon_us"], "anon pages"))
    for d in s["died"]:
        lines.append(f"DIED: {d['how']}")
    for note in s.get("notes", []):
        lines.append(f"note: {note}")
    if s["violations_total"]:
        lines.append(f"VIOLATIONS: {s['violations_total']} ("
                     + ", ".join(f"{k}: {v}" for k, v in s["violations_by_kind"].items()) + ")")
        recorded = s["violations"]
        lines.extend("  " + run_violation_line(v) for v in first_of_each_kind(recorded, shown))
        if len(recorded) > shown or s["violations_total"] > len(recorded):
            lines.append(f"  (the first of each kind, then in order: {min(shown, len(recorded))} of the "
                         f"{len(recorded)} records kept, which --json lists; records are kept up to "
                         f"{s['violation_records_per_kind']} per kind, the counts above are of all)")
    else:
        lines.append("violations: none")
    lines.extend(checks_lines(s.get("checks", {"enabled": []})))
    lines.append(f"state file: {s['state']}")
    if s.get("trace"):
        lines.append(trace_line(s["trace"]))
    return "\n".join(lines)


def checks_lines(c: dict) -> list[str]:
    if "lockdep" not in c["enabled"]:
        return []
    if not c["lockdep_total"]:
        return ["lockdep: no findings"]
    return [f"LOCKDEP: {c['lockdep_total']} findings", *("  " + line(f) for f in c["lockdep"][:10])]


def trace_line(t: dict) -> str:
    """What --trace wrote, and what the rings lost."""
    lost = [f"{role} {r['dropped']}" for role, r in t["per_role"].items() if r["dropped"]]
    dropped = f"; dropped (rings full, oldest overwritten): {', '.join(lost)}" if lost else "; none dropped"
    if t.get("error"):
        return f"trace: NOT WRITTEN: {t['error']} ({t['events']} records in the state file's rings{dropped})"
    # what the file holds: a begin and an end record make one slice
    return f"trace: {t['file']} ({t.get('trace_events', t['events'])} trace events from {t['events']} ring records{dropped})"
