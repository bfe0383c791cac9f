#!/usr/bin/env python3
"""Benchmark ksm-emu explore, each figure against a baseline in the same run.

1. dpor vs dfs: schedules explored to complete the same scenario, DPOR and
   depth-first search without a bound (every interleaving). The scenario is a
   small keyhole race (the built-in ones have far too many interleavings for
   an unbounded DFS to finish): get_ksm_page's look / reference / look again
   against reclaim's freeze-and-clear and a third CPU reading the page.
2. steps/s on stale-node (DPOR, keyhole, to completion), with the cost per
   step split: the kernel code alone (the same scripts run straight, no
   scheduler), the scheduler (the same schedules replayed), and DPOR's
   bookkeeping (the rest).
3. time to the first violation of keyhole-no-recheck: explore (DPOR) against a
   free `ksm-emu run --protocol keyhole-no-recheck` with default flags, capped.
4. PCT (depth 3) on stale-node with keyhole-no-recheck: schedules to the
   violation for seeds 0..9.
5. per memory model (tools/bench_models.py): each built-in scenario under sc
   tso and lkmm, schedules and steps/s, as ratios to sc; with --baseline DIR
   (a checkout of the revision before the memory models, extensions built)
   sc there too, side by side (the goal: sc within 10% of before).
6. the litmus suite (tools/bench_litmus.py): its total time per model.

Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from pathlib import Path

from benchlib import base_parser, goals_line, main_guard, print_json, run_command, scratch

from emu.explore import Scenario, explore
from emu.explore.api import Env, Session, _cpus
from emu.explore.scenarios import SCENARIOS
from emu.explore.strategies import Dpor, Replay
from emu.kconfig import resolve
from emu.mm.page import page_mapping_raw, set_page_mapping
from emu.mm.protocol import KEYHOLE
from emu.mm.refcount import (
    get_page_unless_zero,
    page_count,
    page_freeze_refs,
    page_unfreeze_refs,
    put_page_testzero,
)

PFN = 20
KEY = 0xFFFF880001000003  # an emulated stable_node's key (x86_64)


def _mini_setup(world):
    mm = world.context(cpu=0)
    page_unfreeze_refs(mm, PFN, 1)
    set_page_mapping(mm, PFN, KEY, 2)
    return {}


def _look(mm, env):
    if page_mapping_raw(mm, PFN) == KEY and get_page_unless_zero(mm, PFN):
        page_mapping_raw(mm, PFN)
        put_page_testzero(mm, PFN)


def _freeze(mm, env):
    if page_freeze_refs(mm, PFN, 1):
        set_page_mapping(mm, PFN, 0, 0)


def _peek(mm, env):
    page_mapping_raw(mm, PFN)
    page_count(mm, PFN)


MINI = Scenario("keyhole-mini", [("ksmd", _look), ("reclaim", _freeze), ("reader", _peek)], setup=_mini_setup)


def bench_dpor_vs_dfs() -> dict:
    d = explore(MINI, strategy="dpor", checks=())  # its plain accesses would stop both at a data race
    f = explore(MINI, strategy="dfs", checks=())
    assert d.complete and f.complete and d.holds and f.holds
    return {"scenario": MINI.name, "dpor_schedules": d.schedules_explored, "dfs_schedules": f.schedules_explored,
            "ratio": f.schedules_explored / d.schedules_explored, "dpor_s": d.elapsed_s, "dfs_s": f.elapsed_s}


def bench_steps() -> dict:
    sc, cfg = SCENARIOS["stale-node"], resolve()
    session = Session(sc, cfg, KEYHOLE, _cpus(sc, cfg, None))
    try:
        st, schedules = Dpor(len(sc.roles)), []
        t0, steps = time.perf_counter(), 0
        while st.begin():
            outcome, _ = session.run(st)
            steps += len(session.runner.choices)
            if outcome is None:  # ran to the end (not cut short as redundant)
                schedules.append(list(session.runner.choices))
            st.end(len(session.runner.choices))
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        for choices in schedules:
            session.run(Replay(choices))
        replayed = time.perf_counter() - t0
        # the kernel code alone: each execution's scripts, one CPU after another, no scheduling points
        world = session.world
        t0 = time.perf_counter()
        for _ in schedules:
            m = world.machine
            m.mm[session.runner._lo:m.size] = session.runner._snap
            env = Env(world, copy.deepcopy(session.data), dict(session.cpus))
            for p in session.runner.procs:
                p.script(world.context(cpu=p.cpu, task=p.task, role=p.name), env)
        straight = time.perf_counter() - t0
    finally:
        session.close()
    n = len(schedules)
    per = 1e6 / steps
    checked = explore(sc, checks=("lockdep", "kcsan"))  # explore's default: every access checked too
    return {"scenario": "stale-node", "protocol": "keyhole", "schedules": n, "steps": steps,
            "elapsed_s": total, "steps_per_s": steps / total,
            "with_checks": {"checks": ["lockdep", "kcsan"], "steps_per_s": checked.steps_per_s,
                            "elapsed_s": checked.elapsed_s, "complete": checked.complete},
            "us_per_step": {"total": total * per, "kernel_code": straight * per,
                            "scheduler": max(0.0, replayed - straight) * per,
                            "dpor_bookkeeping": max(0.0, total - replayed) * per}}


def _violations_so_far(state: Path) -> int:
    from emu.machine import attach
    from emu.mm.boot import World
    from emu.report import counts

    try:
        w = World.over(attach(state))
    except Exception:  # not created yet, or mid-creation
        return 0
    try:
        return counts(w)["violations"]
    finally:
        w.close()


def bench_first_violation(cap: float) -> dict:
    r = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck")
    assert not r.holds
    with scratch("bench-explore-") as d:
        state = Path(d) / "run.state"
        p = subprocess.Popen(run_command(["--protocol", "keyhole-no-recheck", "--duration", str(cap),
                                          "--state", str(state), "--no-progress", "--json"]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0, found = time.monotonic(), None
        while p.poll() is None:
            time.sleep(0.05)
            if found is None and state.exists() and _violations_so_far(state):
                found = time.monotonic() - t0
                p.terminate()
        p.communicate()
    return {"explore_s": r.elapsed_s, "explore_schedules": r.schedules_explored,
            "run_cap_s": cap, "run_s": found, "run_found": found is not None,
            "ratio_run_over_explore": (found if found is not None else cap) / r.elapsed_s,
            "ratio_is_lower_bound": found is None}


def bench_pct(seeds: int, limit: int) -> dict:
    out = []
    for seed in range(seeds):
        r = explore(SCENARIOS["stale-node"], protocol="keyhole-no-recheck", strategy="pct", depth=3, seed=seed,
                    schedules=limit)
        out.append(None if r.holds else r.schedules_explored)
    return {"depth": 3, "limit": limit, "schedules_to_violation": out,
            "found_within_200": sum(1 for x in out if x is not None and x <= 200),
            "found_within_limit": sum(1 for x in out if x is not None), "seeds": seeds}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--run-cap", type=float, default=60.0, help="seconds the free run may take (default 60)")
    p.add_argument("--pct-seeds", type=int, default=10)
    p.add_argument("--pct-limit", type=int, default=400, help="schedules per PCT seed (default 400)")
    p.add_argument("--skip", action="append", default=[], choices=["dfs", "steps", "first", "pct", "models", "litmus"])
    p.add_argument("--model-time-limit", type=float, default=60.0,
                   help="seconds per exploration in the per-model section (default 60)")
    p.add_argument("--baseline", type=Path, help="another checkout: its sc figures beside this one's")
    args = p.parse_args(argv)
    if args.run_cap <= 0 or args.pct_seeds < 1 or args.pct_limit < 1:
        p.error("--run-cap, --pct-seeds and --pct-limit must be positive")
    r: dict = {"cpus": os.cpu_count()}
    if "dfs" not in args.skip:
        r["dpor_vs_dfs"] = bench_dpor_vs_dfs()
    if "steps" not in args.skip:
        r["steps"] = bench_steps()
    if "first" not in args.skip:
        r["first_violation"] = bench_first_violation(args.run_cap)
    if "pct" not in args.skip:
        r["pct"] = bench_pct(args.pct_seeds, args.pct_limit)
    if "models" not in args.skip:
        import bench_models

        from emu.explore.scenarios import SCENARIOS

        r["models"] = bench_models.model_rows(list(SCENARIOS), args.model_time_limit, args.baseline)
    if "litmus" not in args.skip:
        import bench_litmus

        from emu.litmus.models import MODELS

        files = sorted((Path(__file__).resolve().parent.parent / "tests" / "litmus").rglob("*.litmus"))
        r["litmus"] = [{k: v for k, v in bench_litmus.bench(files, m, "little").items()
                        if k in ("model", "files", "seconds", "executions", "agree", "disagree", "unsupported")}
                       for m in MODELS]
    goals = {}
    if "dpor_vs_dfs" in r:
        goals["dpor >= 10x fewer schedules than dfs"] = r["dpor_vs_dfs"]["ratio"] >= 10
    if "steps" in r:
        goals["steps/s >= 100,000 on stale-node"] = r["steps"]["steps_per_s"] >= 100_000
    if "pct" in r:
        goals["pct: 10 of 10 seeds within 200"] = r["pct"]["found_within_200"] == r["pct"]["seeds"] == 10
    if "models" in r and args.baseline is not None:
        goals["sc steps/s within 10% of the baseline"] = all(
            (x["sc_after_over_before_steps_per_s"] or 0) >= 0.9 for x in r["models"])
    r["goals"] = goals
    if args.json:
        print_json(r)
        return 0
    if "dpor_vs_dfs" in r:
        x = r["dpor_vs_dfs"]
        print(f"{x['scenario']}: dpor {x['dpor_schedules']} schedules, dfs (no bound) {x['dfs_schedules']}: "
              f"x{x['ratio']:.0f} fewer, both complete")
    if "steps" in r:
        x = r["steps"]
        u = x["us_per_step"]
        print(f"stale-node keyhole, dpor to completion: {x['schedules']} schedules, {x['steps']} steps, "
              f"{x['steps_per_s']:,.0f} steps/s; per step {u['total']:.1f} us = kernel code {u['kernel_code']:.1f} "
              f"+ scheduler {u['scheduler']:.1f} + DPOR {u['dpor_bookkeeping']:.1f}")
    if "first_violation" in r:
        x = r["first_violation"]
        run = f"{x['run_s']:.1f} s" if x["run_found"] else f"none within {x['run_cap_s']:.0f} s"
        print(f"first keyhole-no-recheck violation: explore {x['explore_s'] * 1000:.0f} ms "
              f"({x['explore_schedules']} schedules), free run {run}: "
              f"x{x['ratio_run_over_explore']:.0f}{' at least' if x['ratio_is_lower_bound'] else ''}")
    if "pct" in r:
        x = r["pct"]
        print(f"pct depth 3, seeds 0..{x['seeds'] - 1}: schedules to the violation {x['schedules_to_violation']}; "
              f"{x['found_within_200']}/{x['seeds']} within 200, {x['found_within_limit']}/{x['seeds']} within "
              f"{x['limit']}")
    if "models" in r:
        import bench_models

        print()
        bench_models.print_rows(r["models"], args.model_time_limit)
    if "litmus" in r:
        print("litmus suite: " + ", ".join(f"{x['model']} {x['seconds']:.2f} s ({x['files']} files, "
                                           f"{x['agree']} agree, {x['unsupported']} unsupported)" for x in r["litmus"]))
    print("\n" + goals_line(goals))
    return 0


if __name__ == "__main__":
    main_guard(main, "bench_explore")
