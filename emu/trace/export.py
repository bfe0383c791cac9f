"""A machine's trace rings as a Chrome trace: from a mapped world (explore,
replay) or through a run's RunView (the launcher never maps a live run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..decode import decode_violation, members_on_mapping
from ..mm.ring import Ring, RingLayout, read_rings
from .chrome import chrome_trace
from .decode import TraceContext

if TYPE_CHECKING:
    from ..mm.boot import World
    from ..runview import RunView


def decoded_violations(m: object, records: np.ndarray) -> dict[int, dict]:
    """Record index -> the violation as the JSON report gives it; `m` needs cfg and page_layout."""
    out = {}
    for i, rec in enumerate(records):
        v = decode_violation(m, rec)
        out[i] = v.adding(members_on_mapping=members_on_mapping(m, v)).as_dict()
    return out


def ring_summary(rings: list[Ring]) -> dict:
    return {"events": sum(len(r.events) for r in rings), "dropped": sum(r.dropped for r in rings),
            "per_role": {r.name: {"cpu": r.cpu, "written": r.written, "dropped": r.dropped} for r in rings}}


def world_rings(world: World) -> tuple[RingLayout, list[Ring]]:
    m = world.machine
    region = m.region("trace")
    lay = RingLayout.from_meta(m.meta.get("trace"), region.size)
    return lay, read_rings(bytes(m.mm[region.offset:region.offset + lay.size]), lay)


def trace_of_world(world: World, title: str, other: dict | None = None) -> tuple[dict, dict]:
    """(the Chrome trace, its ring summary) of a mapped world."""
    from ..report import violation_records

    lay, rings = world_rings(world)
    viol = decoded_violations(world.machine, violation_records(world))
    return chrome_trace(TraceContext.of(world.machine), lay, rings, viol, title, other), ring_summary(rings)


def trace_of_view(view: RunView, ctx: TraceContext, lay: RingLayout, title: str,
                  other: dict | None = None) -> tuple[dict, dict]:
    """(the Chrome trace, its ring summary) of a run, read with pread."""
    rings = read_rings(view.read_region("trace", lay.size), lay)
    viol = decoded_violations(view, view.violation_records())
    return chrome_trace(ctx, lay, rings, viol, title, other), ring_summary(rings)
