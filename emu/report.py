"""What a run and a state file say, as data and as text: the bytes of
page->mapping decoded per user, violation records decoded, the run summary
and its rendering. `ksm-emu run` and `ksm-emu kmem` both decode through here."""

from __future__ import annotations

import numpy as np

from .check.shadow import KSM, PAGETABLE, STATE_NAMES, W_PTL, WRITER_NAMES
from .check.violations import (
    V_CHANGED_WHILE_REF,
    V_FALSE_OPEN,
    V_KEY_FORGED,
    VIOLATION_DTYPE,
    VIOLATION_NAMES,
)
from .machine import Machine
from .mm.context import ROLE_NAMES
from .mm.regions import COUNTERS, LATENCY_DTYPE


def mapping_members(m: Machine, mapping: int) -> list[str]:
    """The union members (other than mapping) lying on mapping's bytes, with the
    values those bytes give them: `ptl.magic=0xdead4ead`, ..."""
    cfg, lay = m.cfg, m.page_layout
    raw = mapping.to_bytes(cfg.word_bytes, cfg.byte_order)
    _, _, bits = lay.overlap("mapping")
    out = []
    for b in bits:
        lo, hi = b.member_bytes
        out.append(f"{b.other.path}={int.from_bytes(raw[lo:hi + 1], cfg.byte_order):#x}")
    return out


def decode_mapping(m: Machine, mapping: int, state: int, node: int) -> str:
    """page->mapping as its user (per the shadow) means it."""
    if mapping == 0:
        return ""
    if state == PAGETABLE and m.page_layout.has("ptl"):
        return "ptl: " + " ".join(mapping_members(m, mapping))
    low = mapping & 3
    if low == 3:
        if mapping == 3:
            return "PageKsm, no stable_node"
        key_ok = state == KSM and node == mapping - 3
        return f"stable_node {mapping - 3:#x}" + ("" if key_ok else " (stale key)")
    if low == 1:
        return f"anon_vma {mapping - 1:#x}"
    return f"address_space/driver {mapping:#x}"


def decode_violation(m: Machine, rec: np.void) -> dict:
    cfg = m.cfg
    mapping = int(rec["mapping"])
    writer = int(rec["writer"])
    kind = int(rec["kind"])
    detail = int(rec["detail"])
    out = {
        "kind": VIOLATION_NAMES[kind],
        "pfn": int(rec["pfn"]),
        "stable_node": f"{int(rec['node']):#x}" if rec["node"] else None,
        "expected_key": f"{int(rec['expected']):#x}" if rec["expected"] else None,
        "mapping": f"{mapping:#x}",
        "mapping_bytes": mapping.to_bytes(cfg.word_bytes, cfg.byte_order).hex(" "),
        "written_by": WRITER_NAMES[writer] if writer < len(WRITER_NAMES) else str(writer),
        "union_members": mapping_members(m, mapping) if writer == W_PTL and m.page_layout.has("ptl") else [],
        "role": ROLE_NAMES[int(rec["role"])], "cpu": int(rec["cpu"]),
    }
    if kind in (V_FALSE_OPEN, V_CHANGED_WHILE_REF, V_KEY_FORGED):
        out["page_really_is"] = STATE_NAMES[detail] if detail < len(STATE_NAMES) else str(detail)
    elif detail:
        out["detail"] = detail
    return out


def violation_records(world: object) -> np.ndarray:
    """The violation records a world's ring holds (a view)."""
    m, h, o = world.machine, world.host_mem, world.offsets
    n = min(h.load(o["ctl_nviol"], 8), world.geo.violation_capacity)
    return m.region_array("violations", VIOLATION_DTYPE)[:n]


def percentiles(ns: np.ndarray) -> dict:
    if not len(ns):
        return {"p50": None, "p99": None, "max": None, "n": 0}
    us = ns / 1000.0
    return {"p50": round(float(np.percentile(us, 50)), 1), "p99": round(float(np.percentile(us, 99)), 1),
            "max": round(float(us.max()), 1), "n": int(len(us))}


def counts(world: object) -> dict[str, int]:
    h, base = world.host_mem, world.offsets["counters"]
    return {name: h.load(base + 8 * i, 8) for i, name in enumerate(COUNTERS)}


def summarise(spec: object, world: object, elapsed: float, roles: list[dict], died: list[dict],
              interrupted: bool) -> dict:
    m, h, o = world.machine, world.host_mem, world.offsets
    c = counts(world)
    nlat = min(h.load(o["ctl_nlat"], 8), world.geo.latency_capacity)
    lat = m.region_array("latency", LATENCY_DTYPE)[:nlat]
    by_kind = {name: h.load(o["ctl_by_kind"] + 8 * i, 8) for i, name in enumerate(VIOLATION_NAMES)}
    out = {
        "config": spec.cfg.as_dict(),
        "protocol": spec.protocol,
        "pages": spec.pages,
        "emulated_bytes": spec.pages * 4096,
        "duration_s": round(elapsed, 2),
        "seed": spec.seed,
        "roles": roles,
        "counts": c,
        "reclaim_time_to_free_us": percentiles(lat["ns"][lat["kind"] == 1]),
        "reclaim_time_to_free_anon_us": percentiles(lat["ns"][lat["kind"] == 0]),
        "violations": [decode_violation(m, r) for r in violation_records(world)],
        "violations_total": c["violations"],
        "violations_by_kind": {k: v for k, v in by_kind.items() if v},
        "died": died,
        "interrupted": interrupted,
        "state": spec.state,
    }
    del lat
    return out


def progress_line(c: dict[str, int], t: float, total: float) -> str:
    return (f"[{t:5.1f}/{total:.0f}s] get_ksm_page ok {c['get_ksm_page_ok']} stale "
            f"{c['get_ksm_page_stale']}, merged {c['ksm_pages_merged']}, freed {c['pages_freed']}, "
            f"violations {c['violations']}   ")


def render_summary(s: dict) -> str:
    c = s["config"]
    lines = [f"ksm-emu run: {c['arch']} {c['kernel']}, protocol {s['protocol']}, {s['pages']} pages "
             f"({s['emulated_bytes'] >> 20} MiB emulated), {s['duration_s']} s, seed {s['seed']}"
             + (" (interrupted: partial)" if s["interrupted"] else "")]
    lines.append("roles: " + ", ".join(f"{r['role']} cpu{r['cpu']}" for r in s["roles"]))
    k = s["counts"]
    lines.append(f"get_ksm_page: {k['get_ksm_page_ok']} ok, {k['get_ksm_page_stale']} stale; "
                 f"stable nodes removed {k['stable_nodes_removed']}; KSM pages created "
                 f"{k['ksm_pages_created']}, pages merged {k['ksm_pages_merged']}")
    lines.append(f"pages allocated {k['pages_allocated']}, freed {k['pages_freed']}; reclaimed "
                 f"{k['reclaimed']} (ptes unmapped {k['reclaim_unmapped']}); ksmd passes "
                 f"{k['ksmd_passes']}; ptl locks {k['ptl_locks']}")
    for key, what in (("reclaim_time_to_free_us", "KSM pages"), ("reclaim_time_to_free_anon_us", "anon pages")):
        r = s[key]
        if r["n"]:
            lines.append(f"reclaim time to free ({what}): p50 {r['p50']} us, p99 {r['p99']} us, "
                         f"max {r['max']} us, n {r['n']}")
        else:
            lines.append(f"reclaim time to free ({what}): no page reached the free list")
    for d in s["died"]:
        lines.append(f"DIED: {d['how']}")
    if s["violations_total"]:
        lines.append(f"VIOLATIONS: {s['violations_total']} ("
                     + ", ".join(f"{k}: {v}" for k, v in s["violations_by_kind"].items()) + ")")
        for v in s["violations"][:20]:
            extra = f", page really is {v['page_really_is']}" if "page_really_is" in v else ""
            lines.append(f"  {v['kind']}: pfn {v['pfn']}, stable_node {v['stable_node']}, expected key "
                         f"{v['expected_key']}, mapping {v['mapping']} [{v['mapping_bytes']}] written by "
                         f"{v['written_by']}{' (' + ', '.join(v['union_members']) + ')' if v['union_members'] else ''}"
                         f"{extra}; seen by {v['role']} on CPU {v['cpu']}")
        if len(s["violations"]) > 20:
            lines.append(f"  ... {len(s['violations']) - 20} more in --json")
    else:
        lines.append("violations: none")
    lines.append(f"state file: {s['state']}")
    return "\n".join(lines)
