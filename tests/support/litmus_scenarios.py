"""Litmus-shaped scenarios for the explorer's memory-model tests: a few
4-byte variables in a region of their own, each role a CPU of its own."""

from __future__ import annotations

from emu.explore import Scenario
from emu.machine import RegionSpec

VARS = (RegionSpec("vars", 4096),)


def var(env, i: int) -> int:
    """The file offset of variable i (8 bytes apart: one word each)."""
    return env.world.machine.region("vars").offset + 8 * i


def litmus(name: str, *roles, observe) -> Scenario:
    """Roles P0, P1, ...; `observe` gets the roles' shared dict."""
    return Scenario(name, [(f"P{i}", r) for i, r in enumerate(roles)], extra=VARS, pages=8,
                    observe=lambda env: observe(env.data))


def sb(fence: bool) -> Scenario:
    """SB: x = 1; [smp_mb]; r0 = y || y = 1; [smp_mb]; r1 = x. Observes (r0, r1)."""
    def p(me, other):
        def run(mm, env):
            mm.a.store_once(var(env, me), 4, 1)
            if fence:
                mm.a.smp_mb()
            env.data[me] = mm.a.load_once(var(env, other), 4)
        return run
    return litmus("SB", p(0, 1), p(1, 0), observe=lambda d: (d[0], d[1]))


def mp(order: str = "po") -> Scenario:
    """MP: data = 1; `order` (po: none, wmb: smp_wmb, release: the flag's store);
    flag = 1 || r0 = flag; r1 = data. Observes (flag, data)."""
    def writer(mm, env):
        mm.a.store_once(var(env, 0), 4, 1)
        if order == "wmb":
            mm.a.smp_wmb()
        (mm.a.store_release if order == "release" else mm.a.store_once)(var(env, 1), 4, 1)

    def reader(mm, env):
        env.data["flag"] = mm.a.load_once(var(env, 1), 4)
        env.data["data"] = mm.a.load_once(var(env, 0), 4)
    return litmus(f"MP+{order}", writer, reader, observe=lambda d: (d["flag"], d["data"]))
