"""A recorded execution as a per-CPU timeline: each step's CPU, role, kernel
function, access, emulated address, size and bytes before and after, what
those bytes are (struct page fields of every union arm lying there), and, for
the read a violation rests on, the union members its bytes belong to."""

from __future__ import annotations

from ..decode import describe, mapping_members
from ..findings import OPENED_KINDS, Finding

_LOADS = ("load", "load_once", "atomic_read", "load_acquire")
_OPENED = OPENED_KINDS


def steps_as_dicts(session: object, steps: list, findings: list[Finding]) -> list[dict]:
    world = session.world
    m = world.machine
    procs = session.runner.procs
    out = []
    for s in steps:
        p = procs[s.proc]
        d = {"step": s.index, "cpu": p.cpu, "role": p.name, "function": s.function, "access": s.op}
        if s.size:  # not a CPU's start nor a barrier (smp_mb under tso), which touch no bytes
            d.update(address=f"{m.offset_to_addr(s.off):#x}", size=s.size, before=s.before.hex(" "),
                     after=s.after.hex(" "), what=describe(world, s.off, s.size))
        out.append(d)
    _mark_violating_reads(world, out, steps, procs, findings)
    return out


def _mark_violating_reads(world: object, out: list[dict], steps: list, procs: list, findings: list[Finding]) -> None:
    """The step each finding was recorded in; and for a keyhole that opened,
    the last load of that page->mapping by the CPU that opened it."""
    m, o = world.machine, world.offsets
    by_index = {d["step"]: d for d in out}
    for f in findings:
        if f.get("step") in by_index:
            by_index[f["step"]].setdefault("findings", []).append(f.kind)
        if f.kind not in _OPENED or "pfn" not in f:
            continue
        lo = m.page_offset(f["pfn"]) + o["mapping_rel"]
        for d, s in zip(reversed(out), reversed(steps)):
            if procs[s.proc].cpu == f["cpu"] and s.op in _LOADS and s.off <= lo < s.off + s.size:
                d["violating"] = True
                d["members"] = mapping_members(m, int.from_bytes(s.before, m.cfg.byte_order))
                break


def render(timeline: list[dict]) -> str:
    """One line a step, a blank line where another CPU takes over."""
    lines = [f"{'step':>5} {'cpu':>3} {'role':10} {'function':38} {'access':22} {'address':18} "
             f"bytes before -> after   (what)"]
    last = None
    for d in timeline:
        if last is not None and d["cpu"] != last:
            lines.append("")
        last = d["cpu"]
        head = f"{d['step']:>5} {d['cpu']:>3} {d['role'][:10]:10} {d['function'][:38]:38} "
        if d["access"] == "start":
            lines.append(head + "(starts)")
            continue
        if "address" not in d:  # a barrier: smp_mb under tso (its store buffer has drained)
            lines.append(head + d["access"])
            continue
        access = f"{d['access']} {d['size']}"
        change = d["before"] if d["before"] == d["after"] else f"{d['before']} -> {d['after']}"
        mark = ""
        if d.get("violating"):
            mark = "  <== the keyhole opened on this" + (": " + ", ".join(d["members"]) if d["members"] else "")
        if d.get("findings"):
            mark += "  <== found here: " + "; ".join(d["findings"])
        lines.append(head + f"{access:22} {d['address']:18} {change}   ({d['what']}){mark}")
    return "\n".join(lines)
