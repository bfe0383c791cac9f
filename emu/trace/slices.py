"""A ring's records as slices and marks: each begin paired with its end on
the same CPU, innermost first.

A slice whose end never came (the role was killed inside it, or the run
stopped it there) ends at the ring's last event and is marked unfinished; an
end whose begin was overwritten (the ring wrapped) is dropped, as is a slice
cut short by an outer slice's end."""

from __future__ import annotations

from dataclasses import dataclass

from ..mm.ring import LOCK_HELD, PH_BEGIN, PH_END, Ring


@dataclass
class Slice:
    code: int
    t0: int
    t1: int
    a: int
    b: int
    result: int
    depth: int
    parent: int  # the enclosing slice's code, -1 at the top
    seq: int
    unfinished: bool = False


@dataclass
class Mark:
    """An instant (a violation) or a counter sample."""

    ph: int
    code: int
    ts: int
    a: int
    b: int
    seq: int


def pair(ring: Ring) -> tuple[list[Slice], list[Mark]]:
    ev = ring.events
    slices: list[Slice] = []
    marks: list[Mark] = []
    stack: list[Slice] = []
    last = 0
    for ts, seq, a, b, code, ph in zip(ev["ts"].tolist(), ev["seq"].tolist(), ev["a"].tolist(),
                                       ev["b"].tolist(), ev["code"].tolist(), ev["ph"].tolist()):
        last = ts
        if ph == PH_BEGIN:
            stack.append(Slice(code, ts, ts, a, b, -1, len(stack), stack[-1].code if stack else -1, seq))
        elif ph == PH_END:
            j = len(stack) - 1
            while j >= 0 and not (stack[j].code == code and (code != LOCK_HELD or stack[j].a == a)):
                j -= 1
            if j < 0:
                continue  # its begin was overwritten
            while len(stack) > j + 1:
                inner = stack.pop()
                inner.t1, inner.unfinished = ts, True
                slices.append(inner)
            s = stack.pop()
            s.t1, s.result = ts, a
            slices.append(s)
        else:
            marks.append(Mark(ph, code, ts, a, b, seq))
    for s in stack:
        s.t1, s.unfinished = last, True
        slices.append(s)
    slices.sort(key=lambda s: (s.t0, s.seq))
    return slices, marks
