"""explore's and replay's answers as text and JSON."""

from __future__ import annotations

from ..cliutil import json_config
from ..findings import line
from .api import Replayed, Result
from .strategies import SAMPLING
from .timeline import render as render_timeline


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def result_json(r: Result) -> dict:
    cx = r.counterexample
    violations = [{**f, "schedule": c.schedule, "timeline": c.timeline}
                  for c in r.counterexamples for f in c.findings]
    return {"config": json_config(r.config), "protocol": r.protocol, "scenario": r.scenario, "strategy": r.strategy,
            "memory_model": r.memory_model,
            "checks": sorted(r.checks),
            "holds": r.holds, "schedules_explored": r.schedules_explored, "complete": r.complete,
            "incomplete_because": None if r.complete else incomplete_because(r),
            "stopped": r.stopped, "interrupted": r.interrupted, "step_limited": r.cut,
            "preemption_bound": r.preemption_bound,
            "blocked": r.blocked, "elapsed_s": round(r.elapsed_s, 3), "steps": r.steps,
            "steps_per_s": round(r.steps_per_s), "violations": violations,
            "replay": cx.schedule if cx else None,
            "counterexample": {k: v for k, v in cx.as_dict().items() if k not in ("findings", "timeline")}
            if cx else None}


def incomplete_because(r: Result) -> str:
    """Why a Result is not complete, in a few words."""
    if r.stopped is not None:
        return {"time limit": "stopped at the time limit", "schedule limit": "stopped at the schedule limit"}.get(
            r.stopped, r.stopped)
    if r.cut:
        return f"{_n(r.cut, 'execution')} hit the step limit; their ends are unexplored"
    if r.strategy in SAMPLING:
        return f"{r.strategy} samples schedules; it never covers the space"
    if r.preemption_bound is not None:
        return f"a preemption-bounded search (at most {r.preemption_bound})"
    if not r.holds:
        return "stopped at the first violation"
    return "stopped early"


def result_text(r: Result) -> str:
    c = r.config
    head = (f"ksm-emu explore: {r.scenario}, protocol {r.protocol}, {c.arch.name} {c.kernel}, "
            f"strategy {r.strategy}" + (f", memory model {r.memory_model}" if r.memory_model != "sc" else ""))
    stats = (f"{_n(r.schedules_explored, 'schedule')}, {r.steps} steps in {r.elapsed_s:.2f} s "
             f"({r.steps_per_s:,.0f} steps/s)")
    cx = r.counterexample
    if cx is None:
        within = (f" within {_n(r.preemption_bound, 'preemption')}"
                  if r.preemption_bound is not None and r.stopped is None else "")
        space = ("complete: no interleaving of this scenario left unexplored, up to equivalence"
                 if r.complete else f"not complete: {incomplete_because(r)}")
        return "\n".join([head, f"no violation{within} in {stats}", space])
    lines = [head, f"VIOLATION after {stats}" + (f"; {'complete' if r.complete else 'not complete'}, "
                                                  f"{_n(len(r.counterexamples), 'kind')} of failing execution"
                                                  if len(r.counterexamples) > 1 else "")]
    if r.stopped is not None:
        lines.append(f"{incomplete_because(r)}: {_n(len(r.counterexamples), 'counterexample')} found so far")
    for i, c in enumerate(r.counterexamples):
        lines += ["  " + line(f) for f in c.findings]
        minimized = (f", minimized from {c.minimized_from['steps']} steps and "
                     f"{_n(c.minimized_from['preemptions'], 'preemption')}" if c.minimized_from else "")
        lines.append(f"counterexample: {c.steps} steps, {_n(c.preemptions, 'preemption')}{minimized}")
        if i == 0:
            lines += ["", render_timeline(c.timeline), ""]
        lines.append(f"replay: ksm-emu replay {c.schedule}")
        if i + 1 < len(r.counterexamples):
            lines.append("")
    return "\n".join(lines)


def replayed_json(r: Replayed) -> dict:
    return {"schedule": r.schedule, "holds": not r.findings if r.stopped is None else None,
            "stopped": r.stopped, "violations": [f.as_dict() for f in r.findings], "timeline": r.timeline}


def replayed_text(r: Replayed) -> str:
    lines = [render_timeline(r.timeline), ""]
    if r.stopped is not None:
        lines.append(f"replay {r.stopped} after {_n(len(r.timeline), 'step')}: no verdict")
    elif r.findings:
        lines.append("VIOLATION:")
        lines += ["  " + line(f) for f in r.findings]
    else:
        lines.append("no violation")
    return "\n".join(lines)


def agreement_text(rows: list[dict]) -> str:
    head = {"kernel": "kernel", "options": "options", "arch": "arch", "static": "static (ksm-layout hazard)",
            "dynamic": "dynamic (explore)"}
    width = {k: max(len(h), *(len(str(r[k])) for r in rows)) for k, h in head.items()}
    lines = [" ".join(f"{h:{width[k]}}" for k, h in head.items()) + " agree"]
    for r in rows:
        lines.append(" ".join(f"{str(r[k]):{width[k]}}" for k in head) + f" {r['agree']}")
    return "\n".join(lines)
