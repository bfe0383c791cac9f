"""The one check of explore's and replay's arguments, for the Python API and
the CLI alike: a ValueError (TypeError for a wrong type) with one line,
before anything is booted. The CLI turns it into its one-line error."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..check import CHECKS
from ..mm.protocol import protocol_named
from .strategies import MAX_DEPTH, STRATEGIES

MAX_TIME_LIMIT_S = 1e7
MAX_PAGES = 1 << 16
# A name goes into a replay string (ksmx1:SCENARIO:...:ROLE=CPU,...): none of
# its separators, nothing a shell would read
_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


def checks_of(checks: str | Iterable[str]) -> frozenset[str]:
    """The checkers asked for: an iterable of names from emu.check.CHECKS, or
    a string as --checks takes it ("lockdep,kcsan", "none"). An unknown name
    is an error, never a checker silently left out."""
    if isinstance(checks, str):
        names = [t.strip() for t in checks.split(",") if t.strip()]
        if names == ["none"]:
            return frozenset()
        if not names:
            raise ValueError(f"checks {checks!r}: want a comma-separated list of {', '.join(CHECKS)}, or none")
    else:
        try:
            names = list(checks)
        except TypeError:
            raise TypeError(f"checks: want names from {', '.join(CHECKS)}, not {type(checks).__name__}") from None
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise ValueError(f"checks: unknown checker {bad[0]!r}; choose from {', '.join(CHECKS)} (or none)")
    return frozenset(names)


def _int(name: str, v: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}: want an integer, not {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name} {v}: want {lo}..{hi}" if hi is not None else f"{name} {v}: want at least {lo}")


def check_scenario(scenario: Any) -> None:
    """A scenario's names fit a replay string; its page count is a count."""
    if not _NAME.fullmatch(str(getattr(scenario, "name", ""))):
        raise ValueError(f"scenario name {getattr(scenario, 'name', None)!r}: want 1 to 64 of A-Z a-z 0-9 _ . + - "
                         "(it goes into replay strings)")
    names = scenario.role_names
    for role in names:
        if not _NAME.fullmatch(str(role)):
            raise ValueError(f"role name {role!r}: want 1 to 64 of A-Z a-z 0-9 _ . + - (it goes into replay strings)")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"scenario {scenario.name}: want at least one role, each named once")
    _int("pages", scenario.pages, 1, MAX_PAGES)


def check_cpus(scenario: Any, cpus: Any, nr_cpus: int) -> None:
    """cpus: role -> emulated CPU id, for some of the scenario's roles."""
    if not isinstance(cpus, Mapping):
        raise TypeError(f"cpus: want a mapping of role to CPU id, not {type(cpus).__name__}")
    for role, cpu in cpus.items():
        if role not in scenario.role_names:
            raise ValueError(f"unknown role {role!r}; scenario {scenario.name} has {', '.join(scenario.role_names)}")
        if isinstance(cpu, bool) or not isinstance(cpu, int):
            raise TypeError(f"cpus[{role!r}]: want a CPU id, not {type(cpu).__name__}")
        if not 0 <= cpu < nr_cpus:
            raise ValueError(f"CPU {cpu} for {role}: CPU ids are 0..{nr_cpus - 1} (NR_CPUS={nr_cpus})")


def check_replay(text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"replay: want a replay string, not {type(text).__name__}")


def check_explore(scenario: Any, protocol: str, strategy: str, schedules: Any, seed: Any, depth: Any,
                  preemption_bound: Any, time_limit: Any) -> None:
    """explore()'s arguments, as the CLI's flags are checked."""
    check_scenario(scenario)
    protocol_named(protocol)  # ValueError for an unknown one
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if schedules is not None:
        _int("schedules", schedules, 1)
    _int("seed", seed, -(1 << 1024), 1 << 1024)
    _int("depth", depth, 1, MAX_DEPTH)
    if preemption_bound is not None:
        _int("preemption_bound", preemption_bound, 0)
    if time_limit is not None:
        if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)):
            raise TypeError(f"time_limit: want seconds, not {type(time_limit).__name__}")
        if not (math.isfinite(time_limit) and 0 < time_limit < MAX_TIME_LIMIT_S):
            raise ValueError(f"time_limit {time_limit}: want seconds, > 0 and < {MAX_TIME_LIMIT_S:g}")
