"""A campaign's verdicts as a Markdown table, one row per config x job kind x
scenario x protocol (the seeds counted together), beside `ksm-layout
hazard`'s static verdict for the config; where they are comparable
(pagetable-reuse under the keyhole), whether they agree (emu.explore.agree)."""

from __future__ import annotations

from collections import Counter

from ..cliutil import printable
from ..explore.agree import agrees
from ..hazard import analyse
from ..kconfig import ConfigRequest
from .spec import config_of


def config_label(c: dict) -> str:
    return ConfigRequest.from_dict(c).label()


COMPLETE, INCOMPLETE = "clean (complete)", "no violation found (incomplete)"


def _verdict(rec: dict) -> str:
    """A record's verdict as the table shows it: "clean" only for a search
    that covered the space; an incomplete one (pct, random, a limit, a run
    job) found no violation, which says less."""
    v = rec["verdict"]
    if v != "clean":
        return v
    return COMPLETE if rec["job"]["kind"] == "explore" and rec["detail"].get("complete") is True else INCOMPLETE


def rows(records: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        j = r["job"]
        g = (config_label(j["config"]), j["kind"], j.get("scenario", "-"), j.get("memory_model", ""), j["protocol"])
        groups.setdefault(g, []).append(r)
    statics: dict[str, str] = {}
    out = []
    for (label, kind, scenario, model, protocol), recs in sorted(groups.items()):
        if label not in statics:
            try:
                statics[label] = analyse(config_of(recs[0]["job"]["config"])).verdict
            except Exception as e:  # a config the analysis cannot take: say so in the cell
                statics[label] = f"n/a ({type(e).__name__})"
        verdicts = Counter(_verdict(r) for r in recs)
        kinds = set().union(*(r["kinds"] for r in recs))
        agree = "-"
        if kind == "explore" and scenario == "pagetable-reuse" and protocol == "keyhole":
            agree = "yes" if all(agrees(statics[label], set(r["kinds"])) for r in recs
                                 if r["verdict"] != "error") else "NO"
        schedules = sum(r["detail"].get("schedules", 0) for r in recs if _verdict(r) == INCOMPLETE)
        out.append({"config": label, "kind": kind, "scenario": scenario + (f" ({model})" if model else ""),
                    "protocol": protocol,
                    "static": statics[label],
                    "dynamic": ", ".join((v if v != INCOMPLETE or kind != "explore" else
                                          f"no violation found ({schedules} schedules, incomplete)") + f" {n}/{len(recs)}"
                                         for v, n in sorted(verdicts.items())),
                    "kinds": ", ".join(sorted(kinds)) or "-", "agree": agree})
    return out


def markdown(records: list[dict]) -> str:
    head = ["config", "job", "scenario", "protocol", "static (ksm-layout hazard)", "dynamic (seeds)",
            "violation kinds", "agree"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows(records):
        cells = [r["config"], r["kind"], r["scenario"], r["protocol"], r["static"], r["dynamic"], r["kinds"],
                 r["agree"]]
        lines.append("| " + " | ".join(printable(c) for c in cells) + " |")  # a forged record breaks no row
    return "\n".join(lines)
