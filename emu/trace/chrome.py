"""Rings as Chrome trace-event JSON (chrome://tracing, ui.perfetto.dev): a
track per traced CPU named by role and CPU, a complete ("X") event per
slice, an instant per violation whose args repeat its report, and the counter
tracks. Time is in microseconds: since the first event of a free run, or,
under a controlled schedule, the step number."""

from __future__ import annotations

from ..mm.ring import (
    CLOCK_STEPS,
    GAUGES,
    LOCK_HELD,
    NAMES,
    PH_COUNTER,
    PH_INSTANT,
    SCAN_BATCH,
    VIOLATION,
    Ring,
    RingLayout,
)
from .decode import TraceContext, slice_args, slice_name
from .slices import pair

PID = 1


def _category(code: int) -> str:
    return "lock" if code == LOCK_HELD else "ksmd" if code == SCAN_BATCH else "mm"


def timebase(lay: RingLayout, rings: list[Ring]):
    """ts of a record -> microseconds on the trace's axis."""
    if lay.clock == CLOCK_STEPS:
        return lambda ts: max(ts - 1, 0)  # the clock reads step + 1; setup records 0
    firsts = [int(r.events["ts"][0]) for r in rings if len(r.events)]
    t0 = min(firsts) if firsts else 0
    return lambda ts: (ts - t0) / 1000


def chrome_trace(ctx: TraceContext, lay: RingLayout, rings: list[Ring], violations: dict[int, dict],
                 title: str, other: dict | None = None) -> dict:
    """The trace as a JSON-ready dict; `violations` maps a violation record's
    index to its decoded report (what its instant event's args repeat)."""
    us = timebase(lay, rings)
    meta = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": title}}]
    events: list[dict] = []
    counters: list[tuple] = []
    used: set[int] = set()
    for i, ring in enumerate(rings):
        tid = ring.cpu if ring.cpu not in used else 1000 + i  # setup shares the boot CPU with a role
        used.add(tid)
        label = f"{ring.name} (CPU {ring.cpu})" + (f", {ring.dropped} events dropped" if ring.dropped else "")
        meta.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": label}})
        meta.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": i}})
        slices, marks = pair(ring)
        track = []
        for s in slices:
            t0 = us(s.t0)
            track.append(((t0, -(us(s.t1) - t0), s.depth), {
                "ph": "X", "name": slice_name(ctx, s), "cat": _category(s.code), "pid": PID, "tid": tid,
                "ts": t0, "dur": us(s.t1) - t0, "args": slice_args(ctx, s)}))
        for mk in marks:
            if mk.ph == PH_INSTANT and mk.code == VIOLATION:
                v = violations.get(mk.a, {"record": mk.a, "pfn": mk.b})
                track.append(((us(mk.ts), 1, 1 << 30), {
                    "ph": "i", "s": "t", "name": f"violation: {v.get('kind', 'unknown')}", "cat": "violation",
                    "pid": PID, "tid": tid, "ts": us(mk.ts), "args": v}))
            elif mk.ph == PH_COUNTER:
                counters.append((mk.ts, mk.seq, mk.code, mk.a))
        track.sort(key=lambda x: x[0])
        events.extend(e for _, e in track)
    for ts, _, code, value in sorted(counters):
        events.append({"ph": "C", "name": NAMES[code], "pid": PID, "ts": us(ts), "args": {"value": value}})
    info = {"clock": "virtual: 1 us = 1 step" if lay.clock == CLOCK_STEPS else "CLOCK_MONOTONIC",
            "rings": [{"role": r.name, "cpu": r.cpu, "written": r.written, "dropped": r.dropped} for r in rings],
            "counters": list(GAUGES), **(other or {})}
    return {"traceEvents": meta + events, "displayTimeUnit": "ns", "otherData": info}
