"""Static and dynamic agree: for each row of `ksm-layout hazard --all`, the
pagetable-reuse scenario explored under the keyhole protocol must find a
keyhole violation exactly where the static analysis says HAZARD.

The allocator runs on the CPU of the first key-like lock state the analysis
enumerated (inside the direct map if any), else on CPU 2, unless told; the
stable_nodes lie where such a key would name them (emu.explore.api). So a
"safe here" row is explored with the very CPU whose lock value looks like a
key, and must still be clean: the node it names is not in the direct map.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..findings import KEYHOLE_KINDS, SHORT
from ..hazard import analyse
from ..kconfig import Config
from ..machfile import MachineError
from .api import explore
from .scenarios import SCENARIOS


def allocator_cpu(cfg: Config, max_mem: int | None, default: int = 2) -> int:
    v = analyse(cfg, max_mem)
    cands = [c for c in v.candidates if c.in_direct_map] or v.candidates
    if cands:
        m = re.search(r"CPU (\d+)", cands[0].state)
        if m:
            return int(m.group(1))
    return min(default, cfg.nr_cpus - 1)




def check_row(label: str, cfg: Config, max_mem: int | None = None, cpu: int | None = None,
              schedules: int | None = None, memory_model: str = "sc") -> dict:
    """One row: both verdicts, and whether they agree."""
    v = analyse(cfg, max_mem)
    alloc = cpu if cpu is not None else allocator_cpu(cfg, max_mem)
    row = {"kernel": cfg.kernel, "options": label, "arch": cfg.arch.name, "static": v.verdict,
           "allocator_cpu": alloc}
    if alloc >= cfg.nr_cpus:
        row.update(dynamic=f"n/a: no CPU {alloc} (NR_CPUS={cfg.nr_cpus})", agree="n/a")
        return row
    try:
        # the verdicts compared are the keyhole's; lockdep and kcsan have their own tests
        r = explore(SCENARIOS["pagetable-reuse"], cfg, protocol="keyhole", cpus={"allocator": alloc},
                    schedules=schedules, checks=(), memory_model=memory_model)
    except MachineError as e:  # the address map leaves no room for the machine
        row.update(dynamic=f"n/a: {e}", agree="n/a")
        return row
    except ValueError as e:  # under tso or lkmm: the allocator on ksmd's or reclaim's CPU
        row.update(dynamic=f"n/a: {e}", agree="n/a")
        return row
    kinds = {f.kind for f in r.counterexample.findings} if r.counterexample else set()
    if r.counterexample is None:
        row["dynamic"] = (f"clean ({r.schedules_explored} schedules, complete)" if r.complete else
                          f"no violation found ({r.schedules_explored} schedules, incomplete)")
    else:
        row["dynamic"] = ", ".join(sorted(SHORT.get(k, k) for k in kinds))
        row["replay"] = r.counterexample.schedule
    row["schedules"] = r.schedules_explored
    row["agree"] = "yes" if agrees(v.verdict, kinds) else "NO"
    return row


def agrees(static: str, kinds: set[str]) -> bool:
    """Whether pagetable-reuse under the keyhole, finding `kinds`, agrees with
    the static verdict: a keyhole violation exactly where it says HAZARD."""
    if static == "HAZARD":
        return bool(kinds & KEYHOLE_KINDS)
    if static == "cannot rule out":
        return not kinds - KEYHOLE_KINDS
    return not kinds


def check_rows(rows: list[tuple[str, Config | str]], max_mem: int | None = None, cpu: int | None = None,
               schedules: int | None = None, progress: Callable[[int, int], None] | None = None,
               memory_model: str = "sc") -> list[dict]:
    """rows: (options label, config, or the reason it does not apply)."""
    out = []
    for i, (label, cfg) in enumerate(rows):
        if isinstance(cfg, str):
            arch, kernel, why = cfg.split("|", 2)
            out.append({"kernel": kernel, "options": label, "arch": arch, "static": "n/a",
                        "dynamic": f"n/a: {why}", "agree": "n/a"})
        else:
            out.append(check_row(label, cfg, max_mem, cpu, schedules, memory_model))
        if progress is not None:
            progress(i + 1, len(rows))
    return out
