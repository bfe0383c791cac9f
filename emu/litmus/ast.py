"""Typed AST of a C litmus test (the tools/memory-model/litmus-tests dialect).

Every node carries the source line it starts on (`line`, 1-based; 0 when
built by hand).  `line` takes no part in equality, so a test can compare a
parsed tree with one written out by hand.

Addresses are expressions: a parameter `x` of `P0(int *x)` is `LocAddr("x")`
(the address of shared location x), a local pointer register is `Reg("r1")`,
and mixed-size accesses (docs/litmus-format.md) add `Cast` and `PtrAdd`.
Every access (Load, Store, Rmw, Xchg, Cmpxchg, AddUnless) carries `size`, its
width in bytes, taken from the static type of its address expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# --------------------------------------------------------------------------
# Types

#: Sizes in bytes of the base types a litmus test may declare (LP64, as the
#: kernel's 64-bit ports).  `spinlock_t` has no size: it is only locked.
BASE_SIZES: dict[str, int] = {
    "int": 4, "unsigned int": 4, "long": 8, "unsigned long": 8,
    "char": 1, "unsigned char": 1, "short": 2, "unsigned short": 2,
    "u8": 1, "u16": 2, "u32": 4, "u64": 8,
    "s8": 1, "s16": 2, "s32": 4, "s64": 8,
    "intptr_t": 8, "uintptr_t": 8,
    "atomic_t": 4,
}
#: Base types whose values are unsigned (for a consumer that truncates).
UNSIGNED_BASES = frozenset({"unsigned int", "unsigned long", "unsigned char", "unsigned short",
                            "u8", "u16", "u32", "u64", "uintptr_t"})
#: All base types the parser accepts.
BASE_TYPES = frozenset(BASE_SIZES) | {"spinlock_t"}
POINTER_SIZE = 8


@dataclass(frozen=True)
class CType:
    """A C type: a base type name and a pointer depth (`int **` is CType("int", 2))."""

    base: str
    pointers: int = 0

    def deref(self) -> CType:
        """The pointee type (`int *` -> `int`)."""
        if not self.pointers:
            raise ValueError(f"{self} is not a pointer type")
        return CType(self.base, self.pointers - 1)

    def pointer(self) -> CType:
        """The type of a pointer to this type."""
        return CType(self.base, self.pointers + 1)

    @property
    def size(self) -> int | None:
        """Width in bytes; None for spinlock_t."""
        return POINTER_SIZE if self.pointers else BASE_SIZES.get(self.base)

    @property
    def signed(self) -> bool:
        return not self.pointers and self.base not in UNSIGNED_BASES

    def __str__(self) -> str:
        return self.base + (" " + "*" * self.pointers if self.pointers else "")


INT = CType("int")


@dataclass(frozen=True)
class Node:
    line: int = field(default=0, compare=False, repr=False, kw_only=True)


# --------------------------------------------------------------------------
# Values and locations (init block, final condition)


@dataclass(frozen=True)
class Addr(Node):
    """The address of shared location `name` as a value (`int *p = &x;`,
    `exists (1:r0=x)`)."""

    name: str

    def __str__(self) -> str:
        return self.name


Value = int | Addr


@dataclass(frozen=True)
class Loc(Node):
    """A shared location `x` (proc None) or register `r0` of process `proc` (`0:r0`)."""

    name: str
    proc: int | None = None

    @property
    def key(self) -> str:
        """The key of this location in a final state: "x" or "0:r0"."""
        return self.name if self.proc is None else f"{self.proc}:{self.name}"

    @property
    def is_reg(self) -> bool:
        return self.proc is not None

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class InitEntry(Node):
    """One item of the init block: `int x;`, `x=1;`, `int *p=&x;`, `0:r1=2;`.

    `ctype` is None when the item names no type (`x=1;`); `value` None means 0."""

    loc: Loc
    ctype: CType | None
    value: Value | None


# --------------------------------------------------------------------------
# Expressions

LoadKind = Literal["plain", "once", "acquire"]
StoreKind = Literal["plain", "once", "release"]
Order = Literal["relaxed", "acquire", "release", "mb"]


@dataclass(frozen=True)
class Expr(Node):
    pass


@dataclass(frozen=True)
class Const(Expr):
    value: int


@dataclass(frozen=True)
class Reg(Expr):
    """A local variable (register) of the process."""

    name: str


@dataclass(frozen=True)
class LocAddr(Expr):
    """A parameter used as a value: the address of the shared location it names."""

    name: str


@dataclass(frozen=True)
class Cast(Expr):
    """`(u32 *)e` (mixed-size extension): e's value, retyped."""

    ctype: CType
    operand: Expr


@dataclass(frozen=True)
class PtrAdd(Expr):
    """`p + k` on a pointer (mixed-size extension): p's address plus `offset` bytes
    (k already scaled by the pointee size)."""

    base: Expr
    offset: int


@dataclass(frozen=True)
class BinOp(Expr):
    """Arithmetic, bitwise, comparison and logical operators (C semantics;
    `&&`/`||` short-circuit)."""

    op: str  # + - * / % & | ^ << >> == != < <= > >= && ||
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnOp(Expr):
    op: str  # ! ~ -
    operand: Expr


@dataclass(frozen=True)
class Load(Expr):
    """A load from `addr`: `*p` (plain), READ_ONCE(*p) and atomic_read(p) (once),
    smp_load_acquire(p) and atomic_read_acquire(p) (acquire)."""

    kind: LoadKind
    addr: Expr
    size: int = 4
    func: str = ""  # the kernel name as written; "" for a plain `*p`


@dataclass(frozen=True)
class Rmw(Expr):
    """An atomic arithmetic read-modify-write: atomic_add(V, X), atomic_inc_return(X),
    atomic_fetch_and_acquire(V, X), atomic_dec_and_test(X), ...

    `op` is the arithmetic (+ - & | ^ or &~ for andnot); `returns` says what the
    expression is worth: "void" (atomic_add: no value, unordered), "new"
    (*_return), "old" (fetch_*), "zero" (new == 0, *_and_test), "negative"
    (new < 0, atomic_add_negative)."""

    func: str
    addr: Expr
    op: str
    operand: Expr
    returns: Literal["void", "new", "old", "zero", "negative"]
    order: Order
    size: int = 4


@dataclass(frozen=True)
class Xchg(Expr):
    """xchg/atomic_xchg and their _relaxed/_acquire/_release forms: store
    `value`, return the old value."""

    func: str
    addr: Expr
    value: Expr
    order: Order
    size: int = 4


@dataclass(frozen=True)
class Cmpxchg(Expr):
    """cmpxchg/atomic_cmpxchg and variants: if *addr == old store new; return
    the old value.  `order` is the ordering when it succeeds; a failed cmpxchg is
    an unordered load (Documentation/atomic_t.txt), though smp_mb__after_atomic()
    after it still orders (Documentation/litmus-tests/atomic/cmpxchg-fail-ordered-*)."""

    func: str
    addr: Expr
    old: Expr
    new: Expr
    order: Order
    size: int = 4


@dataclass(frozen=True)
class AddUnless(Expr):
    """atomic_add_unless(X, a, u) (and atomic_inc_not_zero(X) = add_unless(X, 1, 0)):
    add `add` unless *X == unless; 1 if it added, else 0.  Fully ordered when it
    adds, unordered when it does not."""

    func: str
    addr: Expr
    add: Expr
    unless: Expr
    order: Order = "mb"
    size: int = 4


@dataclass(frozen=True)
class TryLock(Expr):
    """spin_trylock(l): 1 and an acquire if it took the lock, else 0."""

    lock: Expr


@dataclass(frozen=True)
class IsLocked(Expr):
    """spin_is_locked(l): 1 if the lock is held, else 0."""

    lock: Expr


# --------------------------------------------------------------------------
# Statements


@dataclass(frozen=True)
class Stmt(Node):
    pass


@dataclass(frozen=True)
class Decl(Stmt):
    """`int r0;`, `int *r1;`, `int a = READ_ONCE(*x);`: a register, zero unless
    initialised."""

    name: str
    ctype: CType
    init: Expr | None = None


@dataclass(frozen=True)
class Assign(Stmt):
    """`r0 = e;`"""

    reg: str
    value: Expr


@dataclass(frozen=True)
class Store(Stmt):
    """A store to `addr`: `*p = v` (plain), WRITE_ONCE(*p, v) and atomic_set(p, v)
    (once), smp_store_release(p, v) and atomic_set_release(p, v) (release).
    smp_store_mb(*p, v) is a once Store followed by Fence("smp_mb")."""

    kind: StoreKind
    addr: Expr
    value: Expr
    size: int = 4
    func: str = ""  # the kernel name as written; "" for `*p = v`


FenceName = Literal[
    "smp_mb", "smp_rmb", "smp_wmb", "smp_read_barrier_depends",
    "smp_mb__before_atomic", "smp_mb__after_atomic", "smp_mb__after_spinlock",
    "smp_mb__after_unlock_lock", "barrier",
]


@dataclass(frozen=True)
class Fence(Stmt):
    """smp_mb(), smp_rmb(), smp_wmb(), smp_read_barrier_depends(),
    smp_mb__{before,after}_atomic(), smp_mb__after_spinlock(),
    smp_mb__after_unlock_lock(), barrier() (compiler only)."""

    name: FenceName


@dataclass(frozen=True)
class Lock(Stmt):
    """spin_lock(l): an acquire."""

    lock: Expr


@dataclass(frozen=True)
class Unlock(Stmt):
    """spin_unlock(l): a release."""

    lock: Expr


@dataclass(frozen=True)
class ExprStmt(Stmt):
    """An expression evaluated for its effect: `atomic_inc(v);`,
    `cmpxchg(x, 0, 1);`, `(void)atomic_add_unless(v, 1, 0);`."""

    expr: Expr


@dataclass(frozen=True)
class If(Stmt):
    """`if (cond) {then} else {orelse}`: a control dependency on every load in cond."""

    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


# --------------------------------------------------------------------------
# Processes and the test


@dataclass(frozen=True)
class Param(Node):
    """A process parameter `int *x`: the address of shared location `x`."""

    name: str
    ctype: CType


@dataclass(frozen=True)
class Process(Node):
    index: int
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]

    @property
    def registers(self) -> dict[str, CType]:
        """Every register the body declares (at any depth), with its type."""
        out: dict[str, CType] = {}

        def walk(stmts: tuple[Stmt, ...]) -> None:
            for s in stmts:
                if isinstance(s, Decl):
                    out[s.name] = s.ctype
                elif isinstance(s, If):
                    walk(s.then)
                    walk(s.orelse)

        walk(self.body)
        return out


# Final-condition propositions


@dataclass(frozen=True)
class Prop(Node):
    pass


@dataclass(frozen=True)
class PTrue(Prop):
    pass


@dataclass(frozen=True)
class PFalse(Prop):
    pass


@dataclass(frozen=True)
class Eq(Prop):
    """`loc=value` (herd also accepts `==`); `loc!=value` is Not(Eq)."""

    loc: Loc
    value: Value


@dataclass(frozen=True)
class LocEq(Prop):
    """`0:r0=1:r0` or `0:r0=*x`: two locations hold the same value."""

    left: Loc
    right: Loc


@dataclass(frozen=True)
class Not(Prop):
    operand: Prop


@dataclass(frozen=True)
class And(Prop):
    left: Prop
    right: Prop


@dataclass(frozen=True)
class Or(Prop):
    left: Prop
    right: Prop


@dataclass(frozen=True)
class Implies(Prop):
    left: Prop
    right: Prop


Quantifier = Literal["exists", "~exists", "forall"]


@dataclass(frozen=True)
class Condition(Node):
    """The final condition: `exists P`, `~exists P` or `forall P`."""

    quantifier: Quantifier
    prop: Prop


@dataclass(frozen=True)
class LitmusTest(Node):
    """A parsed litmus test.

    `result` is the word of the comment's `Result:` line (Never, Sometimes,
    Always, DEADLOCK, ...) or None; `info` holds `Key=Value` lines between the
    header and the init block (the mixed-size extension's `Endian=`)."""

    name: str
    filename: str
    result: str | None
    init: tuple[InitEntry, ...]
    processes: tuple[Process, ...]
    condition: Condition
    locations: tuple[Loc, ...] = ()
    filter: Prop | None = None
    info: tuple[tuple[str, str], ...] = ()
    shared: tuple[tuple[str, CType], ...] = ()  # every shared location and its type, sorted

    @property
    def shared_types(self) -> dict[str, CType]:
        return dict(self.shared)

    @property
    def registers(self) -> dict[int, dict[str, CType]]:
        return {p.index: p.registers for p in self.processes}
