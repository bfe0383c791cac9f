"""Controlled schedules over the real kernel code: explore the interleavings
of a small scenario on purpose (DPOR, preemption-bounded DFS, PCT, random)
and replay a counterexample exactly.

The Python API for your own scenarios is `Scenario`, `explore` and `replay`
(emu.explore.api); the built-in scenarios are in emu.explore.scenarios.
"""

from .api import Counterexample, Env, Result, Scenario, explore, replay

__all__ = ["Counterexample", "Env", "Result", "Scenario", "explore", "replay"]
