"""A counterexample as one string: what to run and the CPU chosen at each step.

    ksmx1:SCENARIO:PROTOCOL:CONFIG:CPUS:STEPS          (sequential consistency)
    ksmx2:SCENARIO:PROTOCOL:CONFIG:MODEL:CPUS:STEPS    (any memory model: sc, tso, lkmm,
                                                        tso/-BARRIER... with barriers dropped)

CONFIG is the arch and kernel and what differs from their defaults, joined
by "/" (+OPTION, -OPTION, nr=N, split=N, po=PAGE_OFFSET, mm=MEM_MAP); CPUS
names every role's emulated CPU (ksmd=0,reclaim=1,allocator=3); STEPS is the
run-length encoded choice per step, by the role's position in the scenario
(0x12.2x3.1: role 0 for 12 steps, role 2 for 3, role 1 for 1); under tso,
N + i is a flush of the store buffer of role i's CPU, N the number of roles;
under lkmm N * (1 + k) + i flushes the oldest store to the k-th word that
CPU stored to (emu.explore.lkmm). Only shell-safe characters, so it pastes
as one argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..kconfig import Config, ConfigError, ConfigRequest
from .lkmm import choices_per_role
from .tso import check_cpus, parse_model

MAGIC = "ksmx1"
MAGIC_MODEL = "ksmx2"  # with the memory model; sc strings keep the first form


class ScheduleError(ValueError):
    """A replay string that cannot be this program's."""


@dataclass(frozen=True)
class Schedule:
    scenario: str
    protocol: str
    cfg: Config
    cpus: dict[str, int]
    choices: tuple[int, ...]
    model: str = "sc"

    def encode(self) -> str:
        head = [MAGIC] if self.model == "sc" else [MAGIC_MODEL]
        model = [] if self.model == "sc" else [self.model]
        return ":".join([*head, self.scenario, self.protocol, encode_config(self.cfg), *model,
                         ",".join(f"{r}={c}" for r, c in self.cpus.items()), encode_steps(self.choices)])


def encode_config(cfg: Config) -> str:
    return ConfigRequest.of(cfg).encode()


def decode_config(text: str) -> Config:
    try:
        request = ConfigRequest.decode(text)
    except ValueError as e:
        raise ScheduleError(str(e)) from None
    from ..hazard import DirectMapError, analyse

    try:
        cfg = request.resolve()
        analyse(cfg)  # a direct map that cannot fit (po=) is a bad string, as explore's flags are
    except (ConfigError, DirectMapError) as e:
        raise ScheduleError(f"config {text!r}: {e}") from None
    return cfg


def encode_steps(choices: tuple[int, ...] | list[int]) -> str:
    runs: list[list[int]] = []
    for c in choices:
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    return ".".join(f"{c}x{n}" if n > 1 else str(c) for c, n in runs)


# ASCII digits only (\d takes "²", which int() refuses), and few of them: a
# count of 4,300 digits is not parsed at all
_RUN = re.compile(r"([0-9]{1,4})(?:x([0-9]{1,9}))?")
_CPU = re.compile(r"[0-9]{1,9}")


def decode_steps(text: str, nprocs: int) -> tuple[int, ...]:
    out: list[int] = []
    for run in text.split(".") if text else []:
        m = _RUN.fullmatch(run)
        if not m:
            raise ScheduleError(f"bad step run {run[:40]!r}{'...' * (len(run) > 40)}: want ROLE or ROLExCOUNT")
        c, n = int(m.group(1)), int(m.group(2) or 1)
        if c >= nprocs or n < 1:
            raise ScheduleError(f"bad step run {run!r}: choices are 0..{nprocs - 1} (roles, then store "
                                f"buffers' flushes), counts at least 1")
        if len(out) + n > 10_000_000:
            raise ScheduleError("schedule longer than 10,000,000 steps")
        out.extend([c] * n)
    return tuple(out)


def decode(text: str, roles_of: dict[str, list[str]]) -> Schedule:
    """Parse a replay string; `roles_of` maps each known scenario to its roles."""
    parts = text.strip().split(":")
    if parts[0] == MAGIC_MODEL and len(parts) == 7:
        model = parts.pop(4)
        try:
            parse_model(model)
        except ValueError as e:
            raise ScheduleError(str(e)) from None
    elif parts[0] == MAGIC and len(parts) == 6:
        model = "sc"
    else:
        raise ScheduleError(f"not a ksm-emu replay string (want {MAGIC}:SCENARIO:PROTOCOL:CONFIG:CPUS:STEPS "
                            f"or {MAGIC_MODEL}:SCENARIO:PROTOCOL:CONFIG:MODEL:CPUS:STEPS)")
    _, scenario, protocol, config, cpus_text, steps = parts
    if scenario not in roles_of:
        raise ScheduleError(f"unknown scenario {scenario!r}; known: {', '.join(roles_of)}")
    roles = roles_of[scenario]
    cfg = decode_config(config)
    cpus: dict[str, int] = {}
    for item in cpus_text.split(",") if cpus_text else []:
        role, sep, cpu = item.partition("=")
        if not sep or role not in roles or not _CPU.fullmatch(cpu):
            raise ScheduleError(f"bad CPU assignment {item!r}: want ROLE=CPU for roles {', '.join(roles)}")
        if role in cpus:
            raise ScheduleError(f"bad CPU assignment {item!r}: {role} is given a CPU twice")
        if int(cpu) >= cfg.nr_cpus:  # as explore --cpu: a CPU of this config (a huge id would size the world)
            raise ScheduleError(f"bad CPU assignment {item!r}: CPU ids are 0..{cfg.nr_cpus - 1} "
                                f"(NR_CPUS={cfg.nr_cpus})")
        cpus[role] = int(cpu)
    if sorted(cpus) != sorted(roles):
        raise ScheduleError(f"the CPU assignment names {', '.join(cpus) or 'no role'}; scenario "
                            f"{scenario} has {', '.join(roles)}")
    try:
        check_cpus(parse_model(model)[0], cpus)
    except ValueError as e:
        raise ScheduleError(str(e)) from None
    nchoices = len(roles) * choices_per_role(parse_model(model)[0])  # and the store buffers' flushes
    return Schedule(scenario, protocol, cfg, cpus, decode_steps(steps, nchoices), model)
