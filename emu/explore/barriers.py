"""Which barriers carry the keyhole protocol: each ordering it relies on,
dropped one at a time and explored, per memory model.

Under sc nothing is reordered, so no barrier is needed there; under tso the
barriers of emu.explore.tso.BARRIERS are the ones that order anything (the
others TSO keeps by itself: KEPT_BY_TSO). A barrier is "needed" when the
exploration without it finds a violation (its replay string reproduces it),
"not needed" only when that exploration is complete and clean."""

from __future__ import annotations

from collections.abc import Callable

from ..kconfig import Config
from .api import explore
from .scenarios import SCENARIOS
from .stop import Stop
from .tso import BARRIERS, KEPT_BY_TSO

DEFAULT_SCENARIOS = ("pagetable-reuse", "stale-node")


def row(name: str, cfg: Config, scenario: str, protocol: str = "keyhole",
        time_limit: float | None = None, stop: Stop | None = None) -> dict:
    """One barrier under tso over one scenario: needed, not needed, or unknown."""
    r = explore(SCENARIOS[scenario], cfg, protocol=protocol, memory_model="tso", drop_barriers=(name,),
                checks=(), time_limit=time_limit, stop=stop)
    out = {"barrier": name, "site": BARRIERS[name][0], "orders": BARRIERS[name][1], "scenario": scenario,
           "protocol": protocol, "sc": "not needed (sc reorders nothing)", "schedules": r.schedules_explored,
           "lkmm": "not modelled yet"}
    if r.counterexample is not None:
        kinds = sorted({f.kind for f in r.counterexample.findings})
        out.update(tso="NEEDED: " + ", ".join(kinds), replay=r.counterexample.schedule)
    elif r.interrupted:
        out.update(tso=f"unknown ({r.stopped})", replay=None)
    elif r.complete:
        out.update(tso=f"not needed (complete, {r.schedules_explored} schedules)", replay=None)
    else:
        out.update(tso=f"unknown (no violation in {r.schedules_explored} schedules, incomplete)", replay=None)
    return out


def table(cfg: Config, scenarios: tuple[str, ...] = DEFAULT_SCENARIOS, time_limit: float | None = 60.0,
          progress: Callable[[int, int], None] | None = None, protocol: str = "keyhole",
          stop: Stop | None = None) -> list[dict]:
    """Every barrier over every scenario; a `stop` requested ends it after the cell running."""
    cells = [(b, s) for b in BARRIERS for s in scenarios]
    out = []
    for i, (b, s) in enumerate(cells):
        if stop is not None and stop.reason is not None:
            break
        out.append(row(b, cfg, s, protocol, time_limit, stop))
        if progress is not None:
            progress(i + 1, len(cells))
    for name, why in KEPT_BY_TSO.items():
        out.append({"barrier": name, "site": name, "orders": why, "scenario": "-", "protocol": protocol,
                    "sc": "not needed (sc reorders nothing)", "tso": "not needed (tso keeps this order)",
                    "lkmm": "not modelled yet", "schedules": 0, "replay": None})
    return out


def text(rows: list[dict]) -> str:
    head = {"barrier": "barrier", "scenario": "scenario", "sc": "sc", "tso": "tso", "lkmm": "lkmm"}
    width = {k: max(len(h), *(len(str(r[k])) for r in rows)) for k, h in head.items()}
    lines = [" ".join(f"{h:{width[k]}}" for k, h in head.items()).rstrip()]
    for r in rows:
        lines.append(" ".join(f"{str(r[k]):{width[k]}}" for k in head).rstrip())
    lines.append("")
    for name, (site, why) in BARRIERS.items():
        lines.append(f"{name}: in {site}; {why}")
    lines += [f"{name}: {why}" for name, why in KEPT_BY_TSO.items()]
    replays = [r for r in rows if r.get("replay")]
    if replays:
        lines.append("")
        lines += [f"replay ({r['barrier']} dropped, {r['scenario']}): ksm-emu replay {r['replay']}" for r in replays]
    return "\n".join(lines)
