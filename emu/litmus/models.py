"""Run a litmus test under a memory model: sc, tso, lkmm, or explore-lkmm
(what `ksm-emu explore --memory-model lkmm` runs: LKMM's store side).

    outcome = run(parse_file("tests/litmus/kernel/SB+poonceonces.litmus"), "tso")
    outcome.verdict.observation        # "Sometimes": TSO allows (0,0)
    outcome.states                     # [(final state, executions ending in it), ...]

sc, tso and explore-lkmm are operational (emu.litmus.operational), lkmm axiomatic
(emu.litmus.lkmm); all three run the same per-process semantics
(emu.litmus.events) and count executions as herd7 does: one per distinct
execution graph.  Byte order is the machine's, chosen by `endian`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from .ast import Addr, LitmusTest, Loc
from .cond import Verdict, eval_prop, judge
from .events import Layout, walk

MODELS = ("sc", "tso", "lkmm", "explore-lkmm")

State = dict[str, object]


@dataclass
class Outcome:
    """What one model says of one test."""

    test: LitmusTest
    model: str
    endian: str
    states: list[tuple[State, int]]  # every distinct full final state, with its execution count
    verdict: Verdict
    data_races: list[str]  # lkmm: the racing access pairs (herd's `flag ~empty ... as data-race`)
    seconds: float

    @property
    def executions(self) -> int:
        """Executions the verdict counts (those passing the filter)."""
        return self.verdict.positive + self.verdict.negative

    @property
    def agrees(self) -> bool | None:
        """Whether the verdict agrees with the file's Result line (None: it has none)."""
        return None if self.test.result is None else self.verdict.agrees(self.test.result)

    def shown_keys(self) -> list[str]:
        """What herd shows of a final state: the `locations` clause, then every
        location and register the filter and the condition mention."""
        keys: list[str] = [loc.key for loc in self.test.locations]
        for node in (self.test.filter, self.test.condition):
            for x in walk(node):
                if isinstance(x, Loc) and x.key not in keys:
                    keys.append(x.key)
        return keys

    def shown_states(self) -> list[tuple[State, int]]:
        """The states that pass the filter, cut to shown_keys(), with counts, sorted."""
        keys = self.shown_keys()
        counts: Counter = Counter()
        for state, n in self.states:
            if self.test.filter is not None and not eval_prop(self.test.filter, state):
                continue
            counts[tuple((k, state[k]) for k in keys)] += n
        return sorted(((dict(k), n) for k, n in counts.items()), key=lambda s: _sort_key(s[0]))


def _sort_key(state: State) -> list:
    return [(1, v.name) if isinstance(v, Addr) else (0, v) for v in state.values()]


def run(test: LitmusTest, model: str = "lkmm", endian: str = "little") -> Outcome:
    """Every execution of `test` under `model`, and herd7's verdict on them."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    layout = Layout.of(test, endian)
    t0 = time.perf_counter()
    races: list[str] = []
    if model == "lkmm":
        from .lkmm import executions

        finals = []
        for ex in executions(test, layout):
            finals.append(ex.state)
            for a, b in ex.races:
                text = f"P{a.proc} line {a.line} {a.text} / P{b.proc} line {b.line} {b.text}"
                if text not in races:
                    races.append(text)
    else:
        from .operational import executions as op_executions

        finals = op_executions(test, layout, model)
    counts: Counter = Counter(tuple(sorted(s.items(), key=lambda kv: kv[0])) for s in finals)
    states = [(dict(k), n) for k, n in counts.items()]
    verdict = judge(test.condition, [s for s, _ in states], [n for _, n in states], filter=test.filter)
    return Outcome(test, model, endian, states, verdict, races, time.perf_counter() - t0)
