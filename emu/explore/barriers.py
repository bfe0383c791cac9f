"""Which barriers carry the keyhole protocol: each ordering it relies on,
dropped one at a time and explored, per memory model.

Under sc nothing is reordered, so no barrier is needed there; under tso and
lkmm the barriers of emu.explore.tso.BARRIERS are dropped in turn (tso keeps
spin_unlock's release by itself); UNORDERED are orderings the kernel puts no
barrier on, which tso keeps and lkmm reorders in every exploration. A barrier
is "needed" when the exploration without it finds a violation (its replay
string reproduces it), "not needed" only when that exploration is complete
and clean."""

from __future__ import annotations

from collections.abc import Callable

from ..kconfig import Config
from .api import explore
from .scenarios import SCENARIOS
from .stop import Stop
from .tso import BARRIERS, DROPPABLE, MODELS, UNORDERED

DEFAULT_SCENARIOS = ("pagetable-reuse", "stale-node")


def _verdict(r: object) -> tuple[str, str | None]:
    """A cell's words and replay string from the exploration without the barrier."""
    if r.counterexample is not None:
        kinds = sorted({f.kind for f in r.counterexample.findings})
        return "NEEDED: " + ", ".join(kinds), r.counterexample.schedule
    if r.interrupted:
        return f"unknown ({r.stopped})", None
    if r.complete:
        return f"not needed (complete, {r.schedules_explored} schedules)", None
    return f"unknown (no violation in {r.schedules_explored} schedules, incomplete)", None


def row(name: str, cfg: Config, scenario: str, protocol: str = "keyhole",
        time_limit: float | None = None, stop: Stop | None = None) -> dict:
    """One barrier over one scenario under tso and lkmm: needed, not needed, or unknown."""
    out = {"barrier": name, "site": BARRIERS[name][0], "orders": BARRIERS[name][1], "scenario": scenario,
           "protocol": protocol, "sc": "not needed (sc reorders nothing)", "schedules": {}, "replay": None,
           "replays": {}}
    for model in MODELS[1:]:
        if name not in DROPPABLE[model]:
            out[model] = f"not needed ({model} keeps this order)"
            continue
        if stop is not None and stop.reason is not None:
            out[model] = f"unknown ({stop.reason})"
            continue
        r = explore(SCENARIOS[scenario], cfg, protocol=protocol, memory_model=model, drop_barriers=(name,),
                    checks=(), time_limit=time_limit, stop=stop)
        out[model], replay = _verdict(r)
        out["schedules"][model] = r.schedules_explored
        if replay:
            out["replays"][model] = replay
            out["replay"] = out["replay"] or replay
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
    for name, why in UNORDERED.items():
        out.append({"barrier": name, "site": name, "orders": why, "scenario": "-", "protocol": protocol,
                    "sc": "not needed (sc reorders nothing)", "tso": "not needed (tso keeps this order)",
                    "lkmm": "no barrier: lkmm reorders it in every scenario's exploration",
                    "schedules": {}, "replay": None, "replays": {}})
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
    lines += [f"{name}: {why}" for name, why in UNORDERED.items()]
    lines.append("lkmm here is the explorer's: stores reordered as LKMM allows, loads in order, so a barrier "
                 "is tested for the stores it orders, not for a later read it keeps from going early "
                 "(docs/memory-models.md)")
    replays = [(r, m, x) for r in rows for m, x in r.get("replays", {}).items()]
    if replays:
        lines.append("")
        lines += [f"replay ({r['barrier']} dropped, {r['scenario']}, {m}): ksm-emu replay {x}" for r, m, x in replays]
    return "\n".join(lines)
