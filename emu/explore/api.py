"""Explore a scenario's interleavings and replay a counterexample: the Python API.

A `Scenario` is a small workload: a setup that runs on the boot CPU before
any schedule (faults pages in, merges them, ...), and per role a finite script
of kernel calls; each role runs on its own emulated CPU. `explore` runs the
scripts under a strategy, every execution from the same snapshot, and checks
each execution: the truth keeper's violations, the scenario's own end-state
check, deadlocks, and exceptions. It returns a `Result` with `holds`,
`schedules_explored`, `complete` and the first `counterexample`, whose
`.schedule` is a replay string and whose `.replay()` re-runs it.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..check import EXPLORE_CHECKS, lockdep
from ..check.truth import REPORT
from ..decode import decode_violation, describe, members_on_mapping
from ..findings import Finding, Kind, brief
from ..hazard import analyse
from ..kconfig import Config, resolve
from ..mm.boot import boot
from ..mm.protocol import KEYHOLE, Protocol, protocol_named
from ..mm.regions import PTRS_PER_GROUP, Geometry
from ..mm.ring import CLOCK_STEPS, EXPLORE_CAPACITY, RingLayout
from ..report import violation_records
from ..scratch import scratch_dir
from ..statefile import claim
from ..trace.export import trace_of_world
from . import timeline as tl
from .lkmm import choices_per_role
from .scenario import Env, Scenario
from .sched import Proc, Runner, Strategy
from .schedule import Schedule
from .stop import Stop, Stopped, Watchdog, catching
from .strategies import ENDLESS_DEFAULT, SAMPLING, Replay, exhaustive, make
from .tso import check_cpus as check_model_cpus
from .tso import for_arch, model_name, parse_model
from .validate import check_cpus, check_explore, check_replay, checks_of


@dataclass
class Counterexample:
    """The first failing execution: what went wrong and how to get there again."""

    schedule: str  # the replay string
    findings: list[Finding]
    timeline: list[dict]
    steps: int
    preemptions: int
    minimized_from: dict | None = None  # steps and preemptions before --minimize
    trace: dict | None = None  # Chrome trace-event JSON of the replay (with trace=True)
    _session_args: tuple = field(default=(), repr=False)

    def replay(self) -> Replayed:
        """Run the schedule again; the same timeline and findings every time."""
        scenario, cfg, protocol, cpus, choices, checks, model = self._session_args
        return _replay(scenario, cfg, protocol, cpus, choices, checks=checks, model=model)

    def as_dict(self) -> dict:
        return {"schedule": self.schedule, "steps": self.steps, "preemptions": self.preemptions,
                "minimized_from": self.minimized_from, "findings": [f.as_dict() for f in self.findings],
                "timeline": self.timeline}


@dataclass
class Replayed:
    schedule: str
    findings: list[Finding]
    timeline: list[dict]
    trace: dict | None = None
    stopped: str | None = None  # a replay cut short from outside: "interrupted by SIGINT", "time limit"


@dataclass
class Result:
    scenario: str
    protocol: str
    config: Config
    strategy: str
    holds: bool
    schedules_explored: int
    complete: bool
    elapsed_s: float
    steps: int
    blocked: int  # executions cut short as redundant (every enabled CPU asleep)
    counterexample: Counterexample | None
    outcomes: Counter
    counterexamples: list[Counterexample] = field(default_factory=list)  # with keep_going: one per new kind
    checks: frozenset = frozenset()  # the emu.check checkers that ran on every execution
    trace: dict | None = None  # with trace=True: the first counterexample's, else the first schedule's
    stopped: str | None = None  # why exploring ended early: "time limit", "schedule limit", "interrupted by SIGINT"
    cut: int = 0  # executions cut short by the step limit (their ends unexplored)
    preemption_bound: int | None = None  # dfs's bound: complete is then never claimed
    memory_model: str = "sc"

    @property
    def interrupted(self) -> bool:
        return (self.stopped or "").startswith("interrupted")

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0


DEFAULT_CHECKS = EXPLORE_CHECKS


# -- the world a scenario runs on ------------------------------------------------------------
def stable_node_base(cfg: Config) -> int | None:
    """Where the stable_node kmem_cache goes: if some lock state can put a key
    into mapping (emu.hazard), at the first node such a key names inside the
    direct map, so a scenario can reach it; else (None) where boot puts it."""
    if cfg["USE_SPLIT_PTLOCKS"]:
        inside = [c for c in analyse(cfg).candidates if c.in_direct_map]
        if inside:
            return inside[0].node
    return None


class ScenarioError(ValueError):
    """A scenario that cannot be explored as given (its setup broke an invariant)."""


class Session:
    """A booted world for one scenario and config, with its snapshot."""

    def __init__(self, scenario: Scenario, cfg: Config, protocol: Protocol, cpus: dict[str, int],
                 state: str | os.PathLike | None = None, overwrite: bool = False,
                 checks: frozenset = frozenset(), stop: Stop | None = None, model: str = "sc") -> None:
        parse_model(model)  # ValueError for an unknown model or barrier
        self.scenario, self.cfg, self.protocol, self.cpus = scenario, cfg, protocol, cpus
        self.model = model
        self._tmp = self._claimed = None
        fd = None
        if state is None:  # a temporary file of ours, gone with the session
            self._tmp = scratch_dir("explore")  # removed by close(), or by the janitor if we die
            state = Path(self._tmp.name) / "explore.state"
        else:  # the user's: created as run creates it (new, private, locked), never over a file
            self._claimed = claim(state, overwrite)
            state, fd = self._claimed.path, self._claimed.fd
        self.world = None
        try:
            # a trace ring per CPU, and one for the setup: filled on recorded replays only
            self.trace_layout = RingLayout(("setup", *scenario.role_names), (0, *(cpus[r] for r in scenario.role_names)),
                                           EXPLORE_CAPACITY, CLOCK_STEPS)
            ncpus = max([cfg.nr_cpus, *(c + 1 for c in cpus.values())])
            nmms = max(2, len(scenario.roles))
            geo = Geometry(nr_pages=scenario.pages, nslots=2 * PTRS_PER_GROUP, ngroups=2, node_capacity=16,
                           contents=16, nmms=nmms, violation_capacity=64, ncpus=ncpus)
            base = stable_node_base(cfg)
            self.world = boot(state, cfg, scenario.pages, protocol=protocol, nmms=nmms, geo=geo,
                              extra=[*scenario.extra, self.trace_layout.region()],
                              bases={"stable_nodes": base} if base is not None else None,
                              meta={"scenario": scenario.name, "cpus": cpus, "trace": self.trace_layout.meta()}, fd=fd)
            from ..mm.trace import TraceRings

            roles = scenario.role_names
            self._rings = TraceRings(self.world, route=lambda mm: 1 + roles.index(mm.role) if mm.role in roles else None,
                                     gauge_each=True)
            # The setup builds its state as a correct kernel would (a broken variant
            # applies to the explored roles only), on a World of its own over the same
            # machine: that protocol, and its events in its ring at time 0, kept in the snapshot.
            setup = replace(self.world, protocol=KEYHOLE if protocol.broken else protocol,
                            trace=TraceRings(self.world, route=lambda mm: 0, now=lambda: 0, gauge_each=True))
            self.data = scenario.setup(setup) if scenario.setup else {}
            found = self._violations()
            if found:
                raise ScenarioError(f"scenario {scenario.name}: its setup broke an invariant: {brief(found[0])}")
        except BaseException:  # nothing of a session that never was stays behind (as run's setup)
            if self._claimed is not None:
                os.unlink(self._claimed.path)
            self.close()
            raise
        procs = [Proc(name, cpus[name], self.world.objects.task[i], fn)
                 for i, (name, fn) in enumerate(scenario.roles)]
        self.checks = frozenset(checks)
        self.runner = Runner(self.world, procs, checks=self.checks, stop=stop, model=model)

    def run(self, strategy: Strategy, record: bool = False) -> tuple[str | None, Env]:
        env = Env(self.world, copy.deepcopy(self.data), dict(self.cpus))
        self.world.trace = self._rings if record else None  # a recorded replay fills the trace rings
        self._rings.reset()  # the execution restores the rings' bytes before it makes its contexts
        try:
            try:
                return self.runner.execute(strategy, env, policy=REPORT, record=record), env
            except Stopped:  # the watchdog's exception, landed just as the execution ended
                self.runner._abort_rest()
                return self.runner.stop.reason or "time limit", env
        finally:
            self.world.trace = None

    def trace(self, choices: Iterable[int]) -> dict:
        """The Chrome trace of the last recorded run, which ran `choices`."""
        c = self.cfg
        schedule = self.schedule(choices)
        return trace_of_world(self.world, f"ksm-emu {self.scenario.name}, {self.protocol.name}, {c.arch.name} {c.kernel}",
                              {"schedule": schedule, "replay": f"ksm-emu replay {schedule}"})[0]

    def findings(self, outcome: str | None, env: Env) -> list[Finding]:
        out = self._violations()
        if outcome is not None:
            kind = Kind.of(outcome.split(":")[0])
            f = {"detail": self._step_limit_hint() if outcome == Kind.STEP_LIMIT else str(outcome)}
            if kind == Kind.EXCEPTION and self.runner.error:
                f["traceback"] = self.runner.error  # the role's own frames: where it went wrong
            out.append(Finding(kind, f))
        if self.scenario.check is not None:
            problem = self.scenario.check(env)
            if problem:
                out.append(Finding(Kind.INVARIANT, {"detail": problem}))
        if "lockdep" in self.checks:
            out.extend(lockdep.findings(self.world)[0])
        if self.runner.kcsan is not None:
            out.extend(self.runner.kcsan.reports(self._describe, self._who, self._function))
        return out

    def _step_limit_hint(self) -> str:
        """Which role ran the last steps alone, if one did: most likely a loop
        waiting on memory, which never lets the writer it waits for run."""
        tail = self.runner.choices[-1000:]
        if len(tail) < 1000 or len(set(tail)) != 1:
            return f"step limit: {len(self.runner.choices)} steps"
        name = self.runner.procs[tail[0]].name
        return (f"step limit: {len(self.runner.choices)} steps, the last {len(tail)} all {name}'s: a loop "
                "waiting on memory? wait with mm.spin_wait(off, size, can, spins), which parks the CPU "
                "until the word may have changed")

    def _describe(self, off: int, size: int) -> str:
        return describe(self.world, off, size)

    def _who(self, p: int) -> dict:
        proc = self.runner.procs[p]
        return {"cpu": proc.cpu, "role": proc.name}

    def _function(self, step: int) -> str:
        """The kernel function of a step (known when the execution was recorded)."""
        rec = self.runner.recording
        return rec[step].function if rec is not None and 0 <= step < len(rec) else ""

    def _violations(self) -> list[Finding]:
        m = self.world.machine
        out = []
        for r in violation_records(self.world):
            v = decode_violation(m, r)
            out.append(v.adding(step=int(r["t_ns"]) - 1,  # the virtual clock: the step it was found in
                                expected=v["expected_key"], members_on_mapping=members_on_mapping(m, v)))
        return out

    def schedule(self, choices: Iterable[int]) -> str:
        return Schedule(self.scenario.name, self.protocol.name, self.cfg, self.cpus, tuple(choices), self.model).encode()

    def close(self) -> None:
        if self.world is not None:
            self.world.close()
        if self._claimed is not None:  # the file stays; its lock goes
            self._claimed.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _cpus(scenario: Scenario, cfg: Config, cpus: Mapping[str, int] | None) -> dict[str, int]:
    """Role -> emulated CPU: 0, 1, 2... in role order, `cpus` overriding some."""
    check_cpus(scenario, cpus if cpus is not None else {}, cfg.nr_cpus)
    cpus = dict(cpus or {})
    taken = set(cpus.values())
    free = (c for c in range(cfg.nr_cpus) if c not in taken)
    out = {}
    for role in scenario.role_names:
        out[role] = cpus[role] if role in cpus else next(free, 0)  # a UP kernel: all on CPU 0
    return out


# -- exploring ----------------------------------------------------------------------------------
def explore(scenario: Scenario, cfg: Config | None = None, *, protocol: str = "keyhole", strategy: str = "dpor",
            schedules: int | None = None, seed: int = 0, depth: int = 3, preemption_bound: int | None = None,
            cpus: Mapping[str, int] | None = None, minimize: bool = False, keep_going: bool = False,
            time_limit: float | None = None, state: str | os.PathLike | None = None,
            overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
            checks: Iterable[str] = DEFAULT_CHECKS, trace: bool = False, stop: Stop | None = None,
            memory_model: str = "sc", drop_barriers: Iterable[str] = ()) -> Result:
    """Run the scenario's interleavings under `strategy` (dpor, dfs, pct, random)
    until a violation (with `keep_going`, on: the first of each kind is kept),
    the end of the space, `schedules` executions (pct and random: 1000 unless
    this or `time_limit` is given) or `time_limit` seconds, enforced inside
    an execution too. `Result.complete` only when the space was exhausted:
    dpor or unbounded dfs ran out of schedules, no execution hit the step
    limit and nothing stopped it early. A failing execution becomes a
    counterexample, replayed once to record its timeline; with `state`, the
    machine file is kept, holding the final state of the last replay (an
    existing one replaced only with `overwrite`, and only if it is a ksm-emu
    state file no run holds). `checks`: emu.check's checkers on every
    execution, lockdep and kcsan; their findings fail an execution like a
    violation does. With `trace`, `Result.trace` is the Chrome trace of the
    first counterexample or, with none, of the first schedule, replayed.

    `memory_model`: "sc" (one interleaving of every access), "tso" (x86's
    store buffers: a CPU's stores reach memory later, as scheduling choices of
    their own; emu.explore.tso), "lkmm" (stores to different words also pass
    each other unless smp_wmb, a release or a full barrier orders them; loads
    in order; emu.explore.lkmm) or "arch" (the port's: emu.explore.tso.PORTS).
    `drop_barriers` (tso, lkmm): names of emu.explore.tso.BARRIERS, each site
    then run without its barrier.

    `stop`: the caller's way to end it early (`Stop.request`); the Result
    says why in `stopped`. Without one, Ctrl-C (in the main thread) ends the
    exploration cleanly and raises `Interrupted`, which holds the partial Result."""
    check_explore(scenario, protocol, strategy, schedules, seed, depth, preemption_bound, time_limit)
    checks = checks_of(checks)  # "kcsan" or ["kcsn"] is an error, never checking silently off
    cfg = cfg or resolve()
    cpu_map = _cpus(scenario, cfg, cpus)
    nprocs = len(scenario.roles)
    base, dropped = parse_model(model_name(for_arch(memory_model, cfg.arch), frozenset(drop_barriers)),
                                allow_arch=True)
    memory_model = model_name(base, dropped)
    check_model_cpus(base, cpu_map)  # ValueError: two roles on one CPU under tso or lkmm
    nprocs *= choices_per_role(base)  # and store buffers' flushes
    strat = make(strategy, nprocs, seed=seed, depth=depth, bound=preemption_bound)
    if schedules is None and time_limit is None and strategy in SAMPLING:
        schedules = ENDLESS_DEFAULT
    caller = stop is not None
    stop = stop or Stop()
    t0 = time.perf_counter()
    deadline = stop.deadline  # the caller's, given back: our time limit is this call's only
    if time_limit is not None:
        stop.deadline = t0 + time_limit if stop.deadline is None else min(stop.deadline, t0 + time_limit)
    with catching(stop, ()) if caller else catching(stop, (signal.SIGINT,)):
        try:
            r = _explore(scenario, cfg, protocol_named(protocol), strategy, preemption_bound, strat, schedules, cpu_map, minimize,
                         keep_going, state, overwrite, progress, frozenset(checks), trace, stop, t0, memory_model)
        finally:
            stop.deadline = deadline
    if r.interrupted and not caller:
        raise Interrupted(r)
    return r


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended `explore`: the exploration stopped cleanly; `.result` holds
    what it found up to then."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.stopped)
        self.result = result


def _explore(scenario: Scenario, cfg: Config, protocol: Protocol, strategy: str, bound: int | None, strat: Strategy,
             schedules: int | None, cpu_map: dict[str, int], minimize: bool, keep_going: bool,
             state: str | os.PathLike | None, overwrite: bool, progress: Callable[[int, int], None] | None,
             checks: frozenset, trace: bool, stop: Stop, t0: float, model: str = "sc") -> Result:
    explored = blocked = steps = cut = 0
    outcomes: Counter = Counter()
    found: list[tuple] = []  # (choices, findings), the first execution of each new kind
    first: tuple[int, ...] | None = None  # the first schedule run, for a trace without a violation
    kinds: set[Kind | str] = set()
    stopped = None
    session = Session(scenario, cfg, protocol, cpu_map, state, overwrite, checks, stop, model)
    watchdog = Watchdog(session.runner)
    try:
        while not stop.due() and strat.begin():
            outcome, env = session.run(strat)
            n = len(session.runner.choices)
            steps += n
            if stop.reason is not None and outcome == stop.reason:
                break  # cut short from outside: neither a finding nor an explored schedule
            if outcome == Kind.BLOCKED:
                blocked += 1
            else:
                explored += 1
                cut += outcome == Kind.STEP_LIMIT
                first = first or tuple(session.runner.choices)
                findings = session.findings(outcome, env)
                if scenario.observe is not None:
                    outcomes[scenario.observe(env)] += 1
                new = {f.kind for f in findings} - kinds
                if new:
                    kinds |= new
                    found.append((tuple(session.runner.choices), findings))
                    if not keep_going:
                        break
            strat.end(n)
            if progress is not None:
                progress(explored, steps)
            if schedules is not None and explored >= schedules:
                stopped = "schedule limit"
                break
        stopped = stop.reason or stopped
        elapsed = time.perf_counter() - t0
        finished = bool(getattr(strat, "finished", False)) and stopped is None
        complete = finished and exhaustive(strategy, bound) and not cut and (keep_going or not found)
        # the counterexamples' replays run whatever stopped the search; a second
        # signal during them ends them, and then their findings are the search's
        stop.reason = stop.deadline = None
        cxs = [_counterexample(session, c, f, minimize and stopped is None) for c, f in found]
        if len(cxs) > 1 and state is not None and stop.reason is None:
            # each replay leaves its final state in the file: end with the first's, the one reported
            session.run(Replay(list(cxs[0]._session_args[4])), record=True)
        traced = cxs[0].trace if cxs else None
        if trace and not cxs and first is not None and stop.reason is None:
            session.run(Replay(list(first)), record=True)
            traced = session.trace(first)
        if stopped not in (None, "time limit", "schedule limit"):
            stop.reason = stop.reason or stopped  # a request from outside stays the caller's to see
    finally:
        watchdog.close()
        session.close()
    return Result(scenario.name, protocol.name, cfg, strategy, not found, explored, complete, elapsed,
                  steps, blocked, cxs[0] if cxs else None, outcomes, cxs, session.checks,
                  traced if trace else None, stopped, cut, bound, model)


def _counterexample(session: Session, choices: tuple[int, ...], findings: list[Finding],
                    minimize: bool) -> Counterexample:
    before = None
    if minimize:
        kinds = {f.kind for f in findings}
        shorter = _minimize(session, choices, kinds)
        if shorter is not None and shorter != choices:
            before = {"steps": len(choices), "preemptions": _preemptions(session, choices)}
            choices = shorter
    preemptions = _preemptions(session, choices)
    # last, so that a kept state file holds this replay's final bytes and trace rings
    outcome, env = session.run(Replay(list(choices)), record=True)
    if session.runner.stop.reason is None or outcome != session.runner.stop.reason:
        findings = session.findings(outcome, env)
    timeline = tl.steps_as_dicts(session, session.runner.recording, findings)
    traced = session.trace(choices)
    return Counterexample(session.schedule(choices), findings, timeline, len(choices),
                          preemptions, before, traced,
                          (session.scenario, session.cfg, session.protocol, session.cpus, choices,
                           session.checks, session.model))


class _Logged(Replay):
    """Replay that notes, per step, whether the choice preempted a CPU that could go on."""

    def __init__(self, choices: list[int]) -> None:
        super().__init__(choices)
        self.preempted = 0

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        q = super().choose(i, enabled, current)
        if current is not None and current in enabled and q != current:
            self.preempted += 1
        return q


def _preemptions(session: Session, choices: tuple[int, ...]) -> int:
    s = _Logged(list(choices))
    session.run(s)
    return s.preempted


class _PrefixThenRun(Strategy):
    """The given choices, then no preemption: the running CPU goes on while it can."""

    def __init__(self, prefix: tuple[int, ...]) -> None:
        self.prefix = prefix

    def choose(self, i: int, enabled: list[int], current: int | None) -> int | None:
        if i < len(self.prefix):
            q = self.prefix[i]
            return q if q in enabled else None
        return current if current in enabled else enabled[0]


def _minimize(session: Session, choices: tuple[int, ...], kinds: set[Kind | str]) -> tuple[int, ...] | None:
    """The shortest prefix of the schedule after which running without
    preemption still fails the same way: its preemptions all lie in that prefix."""
    for k in range(len(choices) + 1):
        outcome, env = session.run(_PrefixThenRun(choices[:k]))
        if outcome == Kind.BLOCKED:
            continue
        if kinds & {f.kind for f in session.findings(outcome, env)}:
            return tuple(session.runner.choices)
    return None


# -- replaying ----------------------------------------------------------------------------------
def _replay(scenario: Scenario, cfg: Config, protocol: Protocol, cpus: dict[str, int], choices: tuple[int, ...],
            state: str | os.PathLike | None = None, overwrite: bool = False,
            checks: Iterable[str] = DEFAULT_CHECKS, stop: Stop | None = None, model: str = "sc") -> Replayed:
    caller = stop is not None
    stop = stop or Stop()
    with catching(stop, ()) if caller else catching(stop, (signal.SIGINT,)):
        session = Session(scenario, cfg, protocol, cpus, state, overwrite, frozenset(checks), stop, model)
        watchdog = Watchdog(session.runner)
        try:
            outcome, env = session.run(Replay(list(choices)), record=True)
            stopped = stop.reason if outcome is not None and outcome == stop.reason else None
            ran = len(session.runner.recording or ())
            if stopped is None and ran < len(choices):  # steps the execution never asked for
                from .dpor import Nondeterminism

                raise Nondeterminism(f"the execution ended after {ran} steps, but the schedule has "
                                     f"{len(choices) - ran} more: not this scenario's schedule")
            findings = session.findings(outcome, env) if stopped is None else []
            timeline = tl.steps_as_dicts(session, session.runner.recording, findings)
            r = Replayed(session.schedule(choices), findings, timeline, session.trace(choices), stopped)
        finally:
            watchdog.close()
            session.close()
    if r.stopped and r.stopped.startswith("interrupted") and not caller:
        raise KeyboardInterrupt(r.stopped)
    return r


def replay(text: str, scenarios: Mapping[str, Scenario] | None = None,
           state: str | os.PathLike | None = None, overwrite: bool = False,
           checks: Iterable[str] = DEFAULT_CHECKS, stop: Stop | None = None) -> Replayed:
    """Re-run a replay string (of a built-in scenario, or of one in `scenarios`).
    `stop` as for `explore`; a replay cut short says why in `Replayed.stopped`."""
    from . import scenarios as builtin
    from .schedule import decode

    check_replay(text)
    checks = checks_of(checks)
    known = {**builtin.SCENARIOS, **(scenarios or {})}
    s = decode(text, {name: sc.role_names for name, sc in known.items()})
    try:
        protocol = protocol_named(s.protocol)
    except ValueError as e:
        from .schedule import ScheduleError

        raise ScheduleError(str(e)) from None
    return _replay(known[s.scenario], s.cfg, protocol, s.cpus, s.choices, state, overwrite, checks, stop, s.model)
