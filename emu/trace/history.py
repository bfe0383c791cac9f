"""`ksm-emu kmem STATE --history PFN`: what the trace rings recorded for one
pfn, oldest first, each with the CPU and role that did it: allocated as what,
made a KSM page, unmapped, freed, its ptl taken, a violation seen on it."""

from __future__ import annotations

from ..findings import history_line
from ..machine import Machine, MachineError
from ..mm.ring import CLOCK_STEPS, CODE, LOCK_HELD, NAMES, PH_INSTANT, VIOLATION, RingLayout, read_rings
from .decode import TraceContext, slice_args, slice_name, slice_pfn
from .export import decoded_violations
from .slices import pair

# where the page's change happens at the slice's end (the pfn is its result, or
# the free list takes it last): a role preempted inside the call must not
# place the change before the events that made it possible
_AT_END = {CODE[n] for n in ("alloc_page", "pte_alloc_one", "zap_pte", "get_ksm_page", "free_hot_cold_page")}


def _what(ctx: TraceContext, name: str, args: dict, ring_cpu: int) -> str:
    """One line of what happened to the page, in the kernel's words."""
    if name == "alloc_page":
        return f"allocated as {args['as']}"
    if name == "set_page_stable_node":
        if args["stable_node"] == "0x0":
            return "mapping = 0x3: PageKsm, being merged (no stable_node yet)"
        return f"KSM page of stable_node {args['stable_node']}: mapping = {args['mapping']} (the key)"
    if name == "try_to_unmap":
        return f"unmapped: {args['ptes_cleared']} pte(s) cleared"
    if name == "zap_pte":
        return f"unmapped from slot {args['slot']}"
    if name == "shrink_page":
        return "reclaim chose it: " + ("freed" if args["freed"] else "not freed (referenced)")
    if name == "free_hot_cold_page":
        return "freed"
    if name == "pte_alloc_one":
        return "became a page table"
    if name == "pte_free":
        return "page table freed"
    if name == "get_ksm_page":
        return f"get_ksm_page of stable_node {args['stable_node']} took a reference to it"
    if name == "ptl held":
        return f"its ptl taken by CPU {ring_cpu} (spin_lock)"
    return name


def history(m: Machine, pfn: int) -> dict:
    """The pfn's recorded events as data (MachineError: the file has no rings)."""
    if "trace" not in m.regions or "trace" not in m.meta:
        raise MachineError(f"{m.path} has no trace rings (a run records them with --trace; explore and "
                           "replay with --state always do)")
    region = m.regions["trace"]
    try:
        lay = RingLayout.from_meta(m.meta["trace"], region.size)
    except ValueError as e:
        raise MachineError(f"{m.path}: {e}") from None
    rings = read_rings(bytes(m.mm[region.offset:region.offset + lay.size]), lay)
    ctx = TraceContext.of(m)
    steps = lay.clock == CLOCK_STEPS
    firsts = [int(r.events["ts"][0]) for r in rings if len(r.events)]
    t0 = min(firsts) if firsts else 0

    def when(ts: int) -> str:
        if steps:
            return "setup" if ts == 0 else f"step {ts - 1}"
        return f"{(ts - t0) / 1e9:.6f} s"

    records = _violations(m)
    rows = []
    for i, ring in enumerate(rings):
        slices, marks = pair(ring)
        for s in slices:
            if slice_pfn(ctx, s) != pfn:
                continue
            name, args = slice_name(ctx, s), slice_args(ctx, s)
            at = s.t1 if s.code in _AT_END else s.t0
            row = {"time": when(at), "cpu": ring.cpu, "role": ring.name, "event": name, "args": args,
                   "what": _what(ctx, name, args, ring.cpu), "_key": (at, i, s.seq)}
            if s.parent >= 0:
                row["in"] = NAMES[s.parent] if s.parent < len(NAMES) else f"code {s.parent}"  # a forged ring
            if s.code == LOCK_HELD:
                row["until"] = when(s.t1) + (" (unfinished)" if s.unfinished else "")
            rows.append(row)
        for mk in marks:
            if mk.ph == PH_INSTANT and mk.code == VIOLATION and mk.b == pfn:
                v = records.get(mk.a, {"kind": "violation", "record": mk.a})
                rows.append({"time": when(mk.ts), "cpu": ring.cpu, "role": ring.name, "event": "violation",
                             "args": v, "what": history_line(v), "_key": (mk.ts, i, mk.seq)})
    rows.sort(key=lambda r: r["_key"])
    for r in rows:
        del r["_key"]
    return {"state": str(m.path), "pfn": pfn, "page": f"{ctx.mem_map_addr + pfn * ctx.page_size:#x}",
            "clock": "steps" if steps else "CLOCK_MONOTONIC", "events": rows,
            "rings": [{"role": r.name, "cpu": r.cpu, "written": r.written, "dropped": r.dropped} for r in rings]}


def _violations(m: Machine) -> dict[int, dict]:
    from ..records import CONTROL_DTYPE, VIOLATION_DTYPE

    if "violations" not in m.regions or "control" not in m.regions:
        return {}
    recs = m.region_array("violations", VIOLATION_DTYPE)
    n = m.atomics.load(m.regions["control"].offset + CONTROL_DTYPE.fields["nr_violations"][1], 8)
    return decoded_violations(m, recs[:n])


def render(h: dict) -> str:
    lines = [f"pfn {h['pfn']} (struct page {h['page']}): {len(h['events'])} events in the trace rings, "
             f"oldest first ({'virtual time: explore steps' if h['clock'] == 'steps' else 'time since the first event'})"]
    lost = [f"{r['role']} {r['dropped']}" for r in h["rings"] if r["dropped"]]
    if lost:
        lines.append(f"(rings wrapped: older events dropped: {', '.join(lost)})")
    lines.append(f"{'time':>11}  {'cpu':>3}  {'role':12} {'function':22} what")
    for r in h["events"]:
        inside = f"  [in {r['in']}]" if r.get("in") else ""
        until = f", held until {r['until']}" if r.get("until") else ""
        lines.append(f"{r['time']:>11}  {r['cpu']:>3}  {r['role'][:12]:12} {r['event'][:22]:22} {r['what']}{until}{inside}")
    if not h["events"]:
        lines.append("  (nothing recorded for this pfn)")
    return "\n".join(lines)
