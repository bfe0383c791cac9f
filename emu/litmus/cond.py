"""Evaluate a final condition on final states, and herd7's verdict on a set of
executions.

A final state maps `"x"` (shared location) and `"0:r0"` (register r0 of P0)
to a value: an int, or `Addr("x")` for a pointer to x.  Ints compare as
Python ints, so the caller gives each value as its C type reads it
(`wrap(v, ctype)`: a 32-bit int register holding 0xffffffff is -1).

Verdict words, as herd7 computes them (herdtools7 herd/top_herd.ml):
- Positive/Negative count *executions* (not distinct states) whose final
  state does / does not satisfy the condition's proposition P, whatever the
  quantifier.  Executions whose state fails the `filter` are not counted.
- The Observation word depends on those counts only: `Never` if no execution
  satisfies P, `Always` if every one does (and there is at least one), else
  `Sometimes`.  So for `~exists P` and `forall P` the word is still about P:
  `~exists (0:r0=0 /\\ 1:r0=0)` that no execution satisfies prints `Never`.
- Ok/No: `exists P` is Ok when Positive > 0; `~exists P` when Positive = 0;
  `forall P` when Negative = 0.  herd prints the Witnesses line as
  (Positive, Negative) except for `~exists`, where it swaps them.
- The test kind herd prints: exists Allowed, ~exists Forbidden, forall Required.

The kernel's `Result:` line is compared with the Observation word
(tools/memory-model/scripts/judgelitmus.sh): `Result: Never` passes when no
execution satisfies P; `Result: DEADLOCK` when there is no execution at all
("Never 0 0"); `Result: Maybe` always passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .ast import (
    Addr,
    And,
    Condition,
    CType,
    Eq,
    Implies,
    LocEq,
    Not,
    Or,
    PFalse,
    Prop,
    PTrue,
    Quantifier,
    Value,
)

State = Mapping[str, Value]

__all__ = ["State", "Verdict", "eval_prop", "judge", "wrap"]


def wrap(value: int, ctype: CType) -> int:
    """`value` as a variable of type `ctype` holds it (truncated, then signed or not)."""
    size = ctype.size
    if size is None:
        raise ValueError(f"{ctype} has no value")
    bits = 8 * size
    v = value & ((1 << bits) - 1)
    if ctype.signed and v >> (bits - 1):
        v -= 1 << bits
    return v


def _get(state: State, key: str) -> Value:
    try:
        return state[key]
    except KeyError:
        raise KeyError(f"the final state has no {key}") from None


def eval_prop(prop: Prop, state: State) -> bool:
    """Whether `state` satisfies `prop`."""
    if isinstance(prop, Eq):
        v = _get(state, prop.loc.key)
        want = prop.value
        return isinstance(v, Addr) == isinstance(want, Addr) and v == want
    if isinstance(prop, LocEq):
        a, b = _get(state, prop.left.key), _get(state, prop.right.key)
        return isinstance(a, Addr) == isinstance(b, Addr) and a == b
    if isinstance(prop, And):
        return eval_prop(prop.left, state) and eval_prop(prop.right, state)
    if isinstance(prop, Or):
        return eval_prop(prop.left, state) or eval_prop(prop.right, state)
    if isinstance(prop, Implies):
        return not eval_prop(prop.left, state) or eval_prop(prop.right, state)
    if isinstance(prop, Not):
        return not eval_prop(prop.operand, state)
    if isinstance(prop, PTrue):
        return True
    if isinstance(prop, PFalse):
        return False
    raise TypeError(f"not a proposition: {prop!r}")


_KIND = {"exists": "Allowed", "~exists": "Forbidden", "forall": "Required"}


@dataclass(frozen=True)
class Verdict:
    """herd7's verdict on a set of executions (see the module docstring)."""

    quantifier: Quantifier
    positive: int  # executions whose final state satisfies the proposition
    negative: int  # executions whose final state does not

    @property
    def observation(self) -> str:
        """Never, Sometimes or Always: herd's Observation word, the kernel's Result word."""
        if self.positive == 0:
            return "Never"
        return "Always" if self.negative == 0 else "Sometimes"

    @property
    def ok(self) -> bool:
        """herd's Ok (True) or No (False) for the quantified condition."""
        if self.quantifier == "exists":
            return self.positive > 0
        if self.quantifier == "~exists":
            return self.positive == 0
        return self.negative == 0

    @property
    def kind(self) -> str:
        """Allowed, Forbidden or Required, as herd's `Test NAME KIND` line."""
        return _KIND[self.quantifier]

    @property
    def witnesses(self) -> tuple[int, int]:
        """herd's `Witnesses Positive: a Negative: b` pair (swapped for ~exists)."""
        if self.quantifier == "~exists":
            return self.negative, self.positive
        return self.positive, self.negative

    def agrees(self, result: str | None) -> bool:
        """Whether a test whose `Result:` word is `result` passes, as judgelitmus.sh judges it."""
        if result is None:
            return False
        if result == "Maybe":
            return True
        if result == "DEADLOCK":
            return self.positive == 0 and self.negative == 0
        return self.observation == result


def judge(condition: Condition, states: Iterable[State], counts: Iterable[int] | None = None,
          filter: Prop | None = None) -> Verdict:
    """herd7's verdict for `condition` over the final states of a set of executions.

    `states` has one state per execution, or with `counts` one state per
    distinct outcome and how many executions ended in it.  Executions whose
    state fails `filter` are left out, as herd does."""
    pos = neg = 0
    weights: Iterable[int] = counts if counts is not None else _ones()
    for state, n in zip(states, weights, strict=counts is not None):
        if n < 0:
            raise ValueError("a count is negative")
        if filter is not None and not eval_prop(filter, state):
            continue
        if eval_prop(condition.prop, state):
            pos += n
        else:
            neg += n
    return Verdict(condition.quantifier, pos, neg)


def _ones() -> Iterable[int]:
    while True:
        yield 1
