"""--trace on `ksm-emu run`: a ring per role in the state file, each role
writing its own from its process, and the Chrome trace written by the
launcher at the end, from the file (so a killed role's events are there)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..cliutil import json_config
from ..machfile import RegionSpec
from ..mm.ring import CLOCK_WALL, RUN_CAPACITY, RingLayout
from .decode import TraceContext
from .export import trace_of_view
from .output import TraceFileError, write_trace

if TYPE_CHECKING:
    from ..mm.boot import World
    from ..runspec import RunSpec
    from ..runview import RunView


def layout(spec: RunSpec) -> RingLayout:
    names = spec.role_names()
    return RingLayout(tuple(names), tuple(spec.cpus[n] for n in names), RUN_CAPACITY, CLOCK_WALL)


def region_and_meta(spec: RunSpec) -> tuple[list[RegionSpec], dict]:
    """What boot adds for a traced run: the rings' region and their description."""
    if not spec.trace:
        return [], {}
    lay = layout(spec)
    return [lay.region()], {"trace": lay.meta()}


def start_role(spec: RunSpec, world: World) -> None:
    """In a role's process, before its context is made: its ring is its role's."""
    if spec.trace:
        from ..mm.trace import TraceRings

        world.trace = TraceRings(world)


@dataclass
class Export:
    ctx: TraceContext
    lay: RingLayout

    @classmethod
    def before_close(cls, spec: RunSpec, world: World) -> Export | None:
        """What the launcher keeps of the machine to decode the trace after unmapping it."""
        return cls(TraceContext.of(world.machine), layout(spec)) if spec.trace else None

    def write(self, spec: RunSpec, view: RunView, summary: dict) -> dict:
        """Write the trace; what the summary says of it."""
        c = spec.cfg
        title = f"ksm-emu run: {c.arch.name} {c.kernel}, protocol {spec.protocol}, {spec.pages} pages"
        trace, rings = trace_of_view(view, self.ctx, self.lay, title,
                                     {"config": json_config(c), "protocol": spec.protocol, "state": spec.state})
        out = {"file": spec.trace, **rings, "trace_events": len(trace["traceEvents"])}
        try:
            write_trace(Path(spec.trace), trace, spec.overwrite)
        except TraceFileError as e:
            out["error"] = str(e)
        return out
