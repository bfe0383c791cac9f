"""The accessors a CPU's kernel code uses under a controlled schedule: every
kernel access a scheduling point (`SchedMem`), every ghost access part of the
running step's footprint (`GhostMem`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sched import Runner


class SchedMem:
    """A CPU's kernel accessor under the scheduler: each access is a scheduling point."""

    __slots__ = ("_r", "_pt", "_ok", "_p", "_fence")

    def __init__(self, real: object, runner: Runner, proc: int) -> None:
        # _pt before the access (the scheduling point), _ok once it is done: an
        # access that raised (misaligned, a value too wide) never reaches the race checker
        # (None without the race checker: the common case pays no call)
        self._r, self._pt, self._p, self._fence = real, runner.point, proc, runner.fence
        self._ok = runner.accessed if runner.kcsan is not None else None

    def load(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load", off, size, False)
        v = self._r.load(off, size, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def load_once(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load_once", off, size, False)
        v = self._r.load(off, size, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def store(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store", off, size, True)
        self._r.store(off, size, value, **kw)
        if self._ok is not None:
            self._ok(self._p)

    def store_once(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store_once", off, size, True)
        self._r.store(off, size, value, **kw)
        if self._ok is not None:
            self._ok(self._p)

    def atomic_read(self, off: int) -> int:
        self._pt(self._p, "atomic_read", off, 4, False)
        v = self._r.atomic_read(off)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def atomic_set(self, off: int, value: int) -> None:
        self._pt(self._p, "atomic_set", off, 4, True)
        self._r.atomic_set(off, value)
        if self._ok is not None:
            self._ok(self._p)

    def load_acquire(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "load_acquire", off, size, False)
        v = self._r.load(off, size, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def store_release(self, off: int, size: int, value: int, **kw: object) -> None:
        self._pt(self._p, "store_release", off, size, True)
        self._r.store(off, size, value, **kw)
        if self._ok is not None:
            self._ok(self._p)

    def cas(self, off: int, size: int, expected: int, desired: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "cas", off, size, True)
        v = self._r.cas(off, size, expected, desired, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def xchg(self, off: int, size: int, value: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "xchg", off, size, True)
        v = self._r.xchg(off, size, value, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def fetch_add(self, off: int, size: int, delta: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "fetch_add", off, size, True)
        v = self._r.fetch_add(off, size, delta, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def fetch_or(self, off: int, size: int, mask: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "fetch_or", off, size, True)
        v = self._r.fetch_or(off, size, mask, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def fetch_and(self, off: int, size: int, mask: int, signed: bool = False, **kw: object) -> int:
        self._pt(self._p, "fetch_and", off, size, True)
        v = self._r.fetch_and(off, size, mask, signed, **kw)
        if self._ok is not None:
            self._ok(self._p)
        return v

    def atomic_inc_not_zero(self, off: int) -> bool:
        self._pt(self._p, "atomic_inc_not_zero", off, 4, True)
        v = self._r.atomic_inc_not_zero(off)
        if self._ok is not None:
            self._ok(self._p)
        return v

    # barriers: no scheduling point under sequential consistency, which orders
    # everything anyway (emu.explore.tso has what TSO does); the race checker's
    # happens-before still has them
    def smp_mb(self, site: str | None = None) -> None:
        self._fence(self._p, "smp_mb")

    def smp_rmb(self) -> None:
        self._fence(self._p, "smp_rmb")

    def smp_wmb(self) -> None:
        self._fence(self._p, "smp_wmb")

    def ctrl_dep(self) -> None:
        self._fence(self._p, "ctrl_dep")


class GhostMem:
    """A CPU's ghost accessor: the emulator's shared state kernel decisions and
    checks depend on. Part of the running step's footprint, never a point."""

    __slots__ = ("_r", "_run")

    def __init__(self, real: object, runner: Runner) -> None:
        self._r, self._run = real, runner

    def load(self, off: int, size: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, False)
        return self._r.load(off, size, signed, **kw)

    def store(self, off: int, size: int, value: int, **kw: object) -> None:
        self._run.ghost(off, size, True)
        self._r.store(off, size, value, **kw)

    def cas(self, off: int, size: int, expected: int, desired: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, True, rmw=True)
        return self._r.cas(off, size, expected, desired, signed, **kw)

    def xchg(self, off: int, size: int, value: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, True, rmw=True)
        return self._r.xchg(off, size, value, signed, **kw)

    def fetch_add(self, off: int, size: int, delta: int, signed: bool = False, **kw: object) -> int:
        self._run.ghost(off, size, True, rmw=True)
        return self._r.fetch_add(off, size, delta, signed, **kw)
