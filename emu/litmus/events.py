"""Event-level semantics of a litmus test: each process's statements executed
into events (reads, writes, fences) with program order, dependencies and
per-byte locations.

One executor serves every engine.  A process runs as a generator
(`Thread.run`) that yields what it needs from the outside world:

- an `Event` of kind "R": the engine sends back the bytes it reads;
- an `Event` of kind "W" or "F": the engine sends back None;
- a `Choice(n)`: the engine picks 0..n-1 (spin_trylock succeeds or fails,
  spin_is_locked says yes or no: herd's lock.cat makes both candidates).

The operational engines (sc, tso) answer reads from their memory; the
axiomatic one (lkmm) answers each read with every value it might take and
then checks which rf/co choices explain them.  `ThreadRun` wraps the
generator so that a run can be forked by replaying its answers.

Memory is bytes: a location of type u64 is 8 byte cells, so a 4-byte store
to half of it and an 8-byte load of all of it touch overlapping cells
(docs/litmus-format.md, mixed-size extension).  A pointer is stored as 8
symbolic cells `("&", name, offset, i)` so that address dependencies through
memory keep their meaning without inventing numeric addresses.

Events carry herd7's classification (tools/memory-model/linux-kernel.bell,
lock.cat, linux-kernel.def):

- `annot`: "plain", "once", "acquire", "release", "noreturn" (the read of
  a non-value-returning atomic such as atomic_inc) or "mb" (a fully ordered
  RMW); for a fence, its kernel name.
- `lock`: "" or lock.cat's LKR/LKW (spin_lock, a successful spin_trylock),
  UL (spin_unlock), LF (a failed spin_trylock), RL/RU (spin_is_locked true /
  false).  A lock word is an ordinary 4-byte location holding 0 (free) or 1
  (held); LKR and RU must read 0, LF and RL must read 1 (`need`).  With the
  atomicity axiom this gives lock.cat's co and rf for lock events.
- `rmw_insn`: the event comes from an RMW instruction (herd's RMW set:
  atomics, xchg, cmpxchg, add_unless, also when they fail and write
  nothing); `rmw_pair` on the write names its read (herd's rmw relation).
- A fully ordered RMW (xchg, cmpxchg, atomic_inc_return, ... without a
  suffix) that succeeds is bracketed by two F[smp_mb] events: the
  implicit smp_mb() before and after it (Documentation/atomic_t.txt;
  herd7 expands __xchg{mb} the same way).  A failed one gets none.
- `addr`, `data`, `ctrl`: ids of this thread's reads whose values flow
  into the event's address, into the value it writes, or into a branch
  that decides whether it runs (herd's addr, data, ctrl before the
  bell's carry-dep, which lkmm.py applies).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from .ast import (
    Addr,
    AddUnless,
    Assign,
    BinOp,
    Cast,
    Cmpxchg,
    Const,
    CType,
    Decl,
    Expr,
    ExprStmt,
    Fence,
    If,
    IsLocked,
    LitmusTest,
    Load,
    LocAddr,
    Lock,
    Process,
    PtrAdd,
    Reg,
    Rmw,
    Stmt,
    Store,
    TryLock,
    Unlock,
    UnOp,
    Xchg,
)
from .cond import wrap
from .errors import LitmusError

LOCK_SIZE = 4  # spinlock_t has no size in the format; its word is 4 bytes here
LOCKED, UNLOCKED = 1, 0

Byte = int | tuple  # 0..255, or ("&", name, offset, i): byte i of a pointer
Taint = frozenset[int]
NO_TAINT: Taint = frozenset()


@dataclass(frozen=True)
class Ptr:
    """A pointer value: `offset` bytes into shared location `name`."""

    name: str
    offset: int = 0


Value = int | Ptr


class Infeasible(Exception):
    """This path cannot happen (a dereference of something that is not a pointer:
    only reached with a read value that no write explains)."""


def encode(value: Value, size: int, endian: str) -> tuple[Byte, ...]:
    """The bytes of `value` stored in `size` bytes."""
    if isinstance(value, Ptr):
        if size != 8:
            raise LitmusError(f"a pointer stored in {size} bytes")
        return tuple(("&", value.name, value.offset, i) for i in range(8))
    return tuple((value & ((1 << (8 * size)) - 1)).to_bytes(size, endian))


def decode(data: tuple[Byte, ...], endian: str) -> Value:
    """The value of `data` read as one access: an unsigned int or a pointer."""
    if data and isinstance(data[0], tuple):
        first = data[0]
        if len(data) == 8 and all(isinstance(b, tuple) and b == ("&", first[1], first[2], i)
                                  for i, b in enumerate(data)):
            return Ptr(first[1], first[2])
        raise LitmusError("a load takes part of a pointer (mixed-size access to a pointer)")
    if any(isinstance(b, tuple) for b in data):
        raise LitmusError("a load takes part of a pointer (mixed-size access to a pointer)")
    return int.from_bytes(bytes(data), endian)  # type: ignore[arg-type]


@dataclass(eq=False)
class Event:
    """One event of one process (see the module docstring for the fields)."""

    id: int
    proc: int
    kind: str  # "R" | "W" | "F"
    annot: str
    loc: str = ""
    off: int = 0
    size: int = 0
    lock: str = ""
    rmw_insn: bool = False
    rmw_pair: int | None = None
    need: int | None = None
    value: tuple[Byte, ...] = ()
    addr: Taint = NO_TAINT
    data: Taint = NO_TAINT
    ctrl: Taint = NO_TAINT
    line: int = 0
    text: str = ""

    @cached_property
    def cells(self) -> frozenset[tuple[str, int]]:
        return frozenset((self.loc, self.off + i) for i in range(self.size))

    def __repr__(self) -> str:
        where = f" {self.loc}+{self.off}/{self.size}" if self.kind != "F" else ""
        return f"<P{self.proc}#{self.id} {self.kind}[{self.lock or self.annot}]{where}>"


@dataclass(frozen=True)
class Choice:
    n: int


Action = Event | Choice

# RMW orderings (linux-kernel.def: __xchg{mb}, {once}, {acquire}, {release}):
# annotation of the read and of the write.
_RMW_ANNOT = {"relaxed": ("once", "once"), "acquire": ("acquire", "once"),
              "release": ("once", "release"), "mb": ("once", "once")}


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def arith(op: str, a: Value, b: Value) -> Value:
    """C's binary operators on ints; == and != on pointers."""
    if isinstance(a, Ptr) or isinstance(b, Ptr):
        if op == "==":
            return int(a == b)
        if op == "!=":
            return int(a != b)
        raise LitmusError(f"operator {op} on a pointer")
    if op in ("/", "%") and b == 0:
        raise Infeasible("division by zero")
    table = {
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
        "/": lambda: _c_div(a, b), "%": lambda: a - b * _c_div(a, b),
        "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b, "&~": lambda: a & ~b,
        "<<": lambda: a << b, ">>": lambda: a >> b,
        "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b),
        "<=": lambda: int(a <= b), ">": lambda: int(a > b), ">=": lambda: int(a >= b),
    }
    return table[op]()


def _truth(v: Value) -> bool:
    return True if isinstance(v, Ptr) else v != 0


@dataclass
class Layout:
    """The shared locations of a test: size, type and initial bytes, for one byte order."""

    endian: str
    sizes: dict[str, int]
    types: dict[str, CType]
    init: dict[str, tuple[Byte, ...]]
    reg_init: dict[tuple[int, str], Value]

    @classmethod
    def of(cls, test: LitmusTest, endian: str) -> Layout:
        types = test.shared_types
        sizes = {name: (ct.size or LOCK_SIZE) for name, ct in types.items()}
        values: dict[str, Value] = {}
        reg_init: dict[tuple[int, str], Value] = {}
        for e in test.init:
            v: Value = 0 if e.value is None else (Ptr(e.value.name) if isinstance(e.value, Addr) else e.value)
            if e.loc.proc is None:
                values[e.loc.name] = v
            else:
                reg_init[(e.loc.proc, e.loc.name)] = v
        init = {name: encode(values.get(name, 0), sizes[name], endian) for name in types}
        return cls(endian, sizes, types, init, reg_init)

    def is_lock(self, loc: str) -> bool:
        return self.types[loc].base == "spinlock_t" and not self.types[loc].pointers

    def final_value(self, loc: str, data: tuple[Byte, ...]) -> Value:
        return typed(decode(data, self.endian), self.types[loc])


def typed(v: Value, ctype: CType) -> Value:
    """`v` as a variable of `ctype` holds it (ints wrapped; pointers kept)."""
    if isinstance(v, Ptr) or ctype.size is None:
        return v
    return wrap(v, ctype)


def state_value(v: Value) -> Value | Addr:
    """A value as the final condition compares it (emu.litmus.cond)."""
    if isinstance(v, Ptr):
        if v.offset:
            raise LitmusError(f"a final pointer into the middle of {v.name}")
        return Addr(v.name)
    return v


class Thread:
    """One process executing: `run()` is the generator of its actions; `events`
    (in program order) and `regs` are its trace so far."""

    def __init__(self, proc: Process, layout: Layout) -> None:
        self.proc = proc
        self.layout = layout
        self.events: list[Event] = []
        self.regs: dict[str, Value] = {}
        self.taint: dict[str, Taint] = {}
        self.types: dict[str, CType] = proc.registers
        self._next_id = 0

    # ---------------------------------------------------------- helpers

    def _new(self, kind: str, annot: str, **kw) -> Event:
        ev = Event(self._next_id, self.proc.index, kind, annot, **kw)
        self._next_id += 1
        self.events.append(ev)
        return ev

    def _assign(self, name: str, v: Value, t: Taint) -> None:
        ct = self.types.get(name)
        self.regs[name] = typed(v, ct) if ct is not None else v
        self.taint[name] = t

    def run(self) -> Generator[Action, object, None]:
        for (p, name), v in self.layout.reg_init.items():
            if p == self.proc.index:
                self._assign(name, v, NO_TAINT)
        for name in self.types:
            self.regs.setdefault(name, 0)
            self.taint.setdefault(name, NO_TAINT)
        yield from self._block(self.proc.body, NO_TAINT)

    def _block(self, stmts: tuple[Stmt, ...], ctrl: Taint) -> Generator[Action, object, None]:
        for s in stmts:
            yield from self._stmt(s, ctrl)

    def _stmt(self, s: Stmt, ctrl: Taint) -> Generator[Action, object, None]:
        if isinstance(s, Decl):
            if s.init is not None:
                v, t = yield from self._expr(s.init, ctrl)
                self._assign(s.name, v, t)
            elif (self.proc.index, s.name) not in self.layout.reg_init:
                self._assign(s.name, 0, NO_TAINT)
        elif isinstance(s, Assign):
            v, t = yield from self._expr(s.value, ctrl)
            self._assign(s.reg, v, t)
        elif isinstance(s, Store):
            loc, off, at = yield from self._address(s.addr, ctrl)
            v, dt = yield from self._expr(s.value, ctrl)
            yield self._new("W", s.kind, loc=loc, off=off, size=s.size, value=self._bytes(v, s.size),
                            addr=at, data=dt, ctrl=ctrl, line=s.line, text=s.func or "*p = v")
        elif isinstance(s, Fence):
            yield self._new("F", s.name, ctrl=ctrl, line=s.line, text=s.name)
        elif isinstance(s, Lock):
            loc, off, at = yield from self._address(s.lock, ctrl)
            yield from self._lock_rmw(loc, at, ctrl, s.line, "spin_lock")
        elif isinstance(s, Unlock):
            loc, off, at = yield from self._address(s.lock, ctrl)
            yield self._new("W", "release", loc=loc, size=LOCK_SIZE, lock="UL", addr=at, ctrl=ctrl,
                            value=self._bytes(UNLOCKED, LOCK_SIZE), line=s.line, text="spin_unlock")
        elif isinstance(s, ExprStmt):
            yield from self._expr(s.expr, ctrl)
        elif isinstance(s, If):
            c, t = yield from self._expr(s.cond, ctrl)
            # ctrl: every event the branch decides on depends on the condition's reads
            yield from self._block(s.then if _truth(c) else s.orelse, ctrl | t)
        else:
            raise LitmusError(f"line {s.line}: cannot execute {type(s).__name__}")

    def _bytes(self, v: Value, size: int) -> tuple[Byte, ...]:
        return encode(v, size, self.layout.endian)

    def _read(self, ev: Event) -> Generator[Action, object, Value]:
        data = yield ev
        assert isinstance(data, tuple)
        ev.value = data
        return decode(data, self.layout.endian)

    def _lock_rmw(self, loc: str, at: Taint, ctrl: Taint, line: int, text: str
                  ) -> Generator[Action, object, Event]:
        """LKR (an acquire that must find the lock free) and its LKW (lock.cat's lk-rmw)."""
        r = self._new("R", "acquire", loc=loc, size=LOCK_SIZE, lock="LKR", need=UNLOCKED, addr=at,
                      ctrl=ctrl, line=line, text=text)
        yield from self._read(r)
        yield self._new("W", "once", loc=loc, size=LOCK_SIZE, lock="LKW", rmw_pair=r.id, addr=at,
                        ctrl=ctrl, value=self._bytes(LOCKED, LOCK_SIZE), line=line, text=text)
        return r

    def _address(self, e: Expr, ctrl: Taint) -> Generator[Action, object, tuple[str, int, Taint]]:
        v, t = yield from self._expr(e, ctrl)
        if not isinstance(v, Ptr):
            raise Infeasible(f"line {e.line}: dereference of {v!r}")
        if v.name not in self.layout.sizes:
            raise LitmusError(f"line {e.line}: no location {v.name}")
        return v.name, v.offset, t

    def _expr(self, e: Expr, ctrl: Taint) -> Generator[Action, object, tuple[Value, Taint]]:
        if isinstance(e, Const):
            return e.value, NO_TAINT
        if isinstance(e, Reg):
            return self.regs.get(e.name, 0), self.taint.get(e.name, NO_TAINT)
        if isinstance(e, LocAddr):
            return Ptr(e.name), NO_TAINT
        if isinstance(e, Cast):
            return (yield from self._expr(e.operand, ctrl))
        if isinstance(e, PtrAdd):
            v, t = yield from self._expr(e.base, ctrl)
            if not isinstance(v, Ptr):
                raise Infeasible(f"line {e.line}: pointer arithmetic on {v!r}")
            return Ptr(v.name, v.offset + e.offset), t
        if isinstance(e, UnOp):
            v, t = yield from self._expr(e.operand, ctrl)
            if e.op == "!":
                return int(not _truth(v)), t
            if isinstance(v, Ptr):
                raise LitmusError(f"line {e.line}: operator {e.op} on a pointer")
            return (~v if e.op == "~" else -v), t
        if isinstance(e, BinOp):
            a, ta = yield from self._expr(e.left, ctrl)
            if e.op in ("&&", "||"):
                # short circuit: whether the right side runs depends on the left's reads
                if _truth(a) == (e.op == "||"):
                    return int(_truth(a)), ta
                b, tb = yield from self._expr(e.right, ctrl | ta)
                return int(_truth(b)), ta | tb
            b, tb = yield from self._expr(e.right, ctrl)
            return arith(e.op, a, b), ta | tb
        if isinstance(e, Load):
            loc, off, at = yield from self._address(e.addr, ctrl)
            r = self._new("R", e.kind, loc=loc, off=off, size=e.size, addr=at, ctrl=ctrl, line=e.line,
                          text=e.func or "*p")
            v = yield from self._read(r)
            return v, frozenset({r.id})
        if isinstance(e, (Rmw, Xchg, Cmpxchg, AddUnless)):
            return (yield from self._rmw(e, ctrl))
        if isinstance(e, TryLock):
            loc, _, at = yield from self._address(e.lock, ctrl)
            took = yield Choice(2)
            if took:
                r = yield from self._lock_rmw(loc, at, ctrl, e.line, "spin_trylock")
                return 1, frozenset({r.id})
            r = self._new("R", "once", loc=loc, size=LOCK_SIZE, lock="LF", need=LOCKED, addr=at,
                          ctrl=ctrl, line=e.line, text="spin_trylock")
            yield from self._read(r)
            return 0, frozenset({r.id})
        if isinstance(e, IsLocked):
            loc, _, at = yield from self._address(e.lock, ctrl)
            held = yield Choice(2)
            r = self._new("R", "once", loc=loc, size=LOCK_SIZE, lock="RL" if held else "RU",
                          need=LOCKED if held else UNLOCKED, addr=at, ctrl=ctrl, line=e.line,
                          text="spin_is_locked")
            yield from self._read(r)
            return int(bool(held)), frozenset({r.id})
        raise LitmusError(f"line {e.line}: cannot evaluate {type(e).__name__}")

    def _rmw(self, e: Rmw | Xchg | Cmpxchg | AddUnless, ctrl: Taint
             ) -> Generator[Action, object, tuple[Value, Taint]]:
        loc, off, at = yield from self._address(e.addr, ctrl)
        size = e.size
        operands: list[tuple[Value, Taint]] = []
        for sub in ((e.operand,) if isinstance(e, Rmw) else (e.value,) if isinstance(e, Xchg)
                    else (e.old, e.new) if isinstance(e, Cmpxchg) else (e.add, e.unless)):
            operands.append((yield from self._expr(sub, ctrl)))
        ra, wa = _RMW_ANNOT[e.order]
        if isinstance(e, Rmw) and e.returns == "void":
            ra = "noreturn"  # linux-kernel.bell: the R of a non-value-returning RMW
        start = len(self.events)
        r = self._new("R", ra, loc=loc, off=off, size=size, rmw_insn=True, addr=at, ctrl=ctrl,
                      line=e.line, text=e.func)
        old = yield from self._read(r)
        rt = frozenset({r.id})
        if isinstance(e, Cmpxchg):
            expected = operands[0][0]
            if not isinstance(expected, Ptr):
                expected = expected & ((1 << (8 * size)) - 1)
            if old != expected:
                return old, rt  # failed: a lone read, unordered (atomic_t.txt)
            new, dt = operands[1]
        elif isinstance(e, AddUnless):
            unless = operands[1][0]
            if not isinstance(unless, Ptr):
                unless = unless & ((1 << (8 * size)) - 1)
            if old == unless:
                return 0, rt  # did not add: a lone read, unordered
            new, dt = arith("+", old, operands[0][0]), operands[0][1]
        elif isinstance(e, Xchg):
            new, dt = operands[0]
        else:
            new, dt = arith(e.op, old, operands[0][0]), operands[0][1]
        w = self._new("W", wa, loc=loc, off=off, size=size, rmw_insn=True, rmw_pair=r.id,
                      value=self._bytes(new, size), addr=at, data=dt, ctrl=ctrl, line=e.line, text=e.func)
        yield w
        if e.order == "mb":
            # the implicit smp_mb() before and after a fully ordered RMW that succeeds
            before = self._new("F", "smp_mb", ctrl=ctrl, line=e.line, text=f"{e.func} (implied smp_mb)")
            self.events.pop()
            self.events.insert(start, before)
            self._new("F", "smp_mb", ctrl=ctrl, line=e.line, text=f"{e.func} (implied smp_mb)")
        if isinstance(e, AddUnless):
            return 1, rt
        if isinstance(e, (Xchg, Cmpxchg)):
            return old, rt
        assert isinstance(e, Rmw)
        if e.returns == "old":
            return old, rt
        newv = typed(new, CType("long" if size == 8 else "int"))
        if e.returns == "zero":
            return int(newv == 0), rt
        if e.returns == "negative":
            return int(isinstance(newv, int) and newv < 0), rt
        return newv, rt


@dataclass
class ThreadRun:
    """A thread at some point of its run, reached by sending `history`; forked by
    replaying it (litmus processes are a handful of statements)."""

    proc: Process
    layout: Layout
    history: tuple = ()
    thread: Thread = field(init=False)
    pending: Action | None = field(init=False)

    def __post_init__(self) -> None:
        self.thread = Thread(self.proc, self.layout)
        self._gen = self.thread.run()
        self.pending = self._advance(None, first=True)
        for reply in self.history:
            self.pending = self._advance(reply)

    def _advance(self, reply: object, first: bool = False) -> Action | None:
        try:
            return next(self._gen) if first else self._gen.send(reply)
        except StopIteration:
            return None

    def step(self, reply: object) -> ThreadRun:
        """A new run: this one after `reply` to its pending action."""
        return ThreadRun(self.proc, self.layout, self.history + (reply,))

    @property
    def done(self) -> bool:
        return self.pending is None


def walk(node: object) -> Iterator[object]:
    """Every AST node under `node` (dataclass fields and tuples)."""
    yield node
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from walk(getattr(node, f.name))
    elif isinstance(node, tuple):
        for x in node:
            yield from walk(x)


def final_state(layout: Layout, threads: list[Thread], memory: dict[str, tuple[Byte, ...]]) -> dict[str, object]:
    """The final state as the condition reads it: every register of every process
    ("0:r0") and every shared location but the locks ("x"), each as its C type holds it."""
    state: dict[str, object] = {}
    for t in threads:
        for name, v in t.regs.items():
            state[f"{t.proc.index}:{name}"] = state_value(v)
    for loc, data in memory.items():
        if not layout.is_lock(loc):
            state[loc] = state_value(layout.final_value(loc, data))
    return state
