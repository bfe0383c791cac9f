"""One emulated CPU's view of the machine: the context every mm function takes.

An `MM` carries the CPU's id and task pointer, its three accessors, its
clock and its truth keeper:
  a   kernel bytes in the emulated byte order (emu.mm.mem): every access a
      kernel access, a scheduling point under a controlled schedule
  g   ghost: the emulator's own shared state that kernel decisions depend on
      (a page's data, the free list) or the checks keep (the shadow): part of
      the step it follows
  h   bookkeeping nobody decides on (counters, records, the stop flag)
Offsets come precomputed from the `World`, so hot paths do arithmetic, not
layout queries.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._atomics import ACQUIRE
from ..check.truth import REPORT, Truth
from ..clock import WALL, WallClock
from ..records import COUNTERS_DTYPE, ROLE_NAMES

if TYPE_CHECKING:
    from .boot import World

COUNTER_OFF = {name: COUNTERS_DTYPE.fields[name][1] for name in COUNTERS_DTYPE.names}
PAGE_MAPPING_ANON, PAGE_MAPPING_KSM = 1, 2
PG_LOCKED = 1 << 0  # page->flags bit 0, as in include/linux/page-flags.h


def cpu_relax(mm: MM, off: int, size: int, can: Callable[[int], bool], spins: int,
              sleeping: bool = False) -> None:
    """A wait step in a free run: give the real CPU away now and then, since
    the emulated CPUs outnumber the real ones and the holder may be preempted."""
    if spins & 63 == 63:
        os.sched_yield()


class MM:
    def __init__(self, world: World, *, cpu: int, task: int, role: str = "launcher", policy: str = REPORT,
                 clock: WallClock | None = None, mem: object = None, ghost: object = None,
                 wait: Callable | None = None, window_ns: int = 0, checks: frozenset = frozenset()) -> None:
        self.__dict__.update(world.offsets)
        self.world = world
        self.m = world.machine
        self.cfg = self.m.cfg
        self.geo = world.geo
        self.protocol = world.protocol
        self.cpu, self.task, self.role = cpu, task, role
        self.role_code = ROLE_NAMES.index(role.split(".")[0]) if role.split(".")[0] in ROLE_NAMES else 0
        self.a = world.kernel_mem if mem is None else mem
        self.g = world.host_mem if ghost is None else ghost
        self.h = world.host_mem
        self.clock = clock or WALL
        self.window_ns = window_ns
        self.preempt_count = 0  # the task's: spinlocks held (a controlled schedule's CPU model reads it)
        self._wait = wait or cpu_relax
        self.truth = Truth(self, policy)
        self.lockdep = None  # emu.check.lockdep, with checks={"lockdep"}
        if "lockdep" in checks:
            from ..check.lockdep import Lockdep, LockdepMem

            self.lockdep = Lockdep(self)
            self.a = LockdepMem(self.a, self.lockdep)
        self.tr = None if world.trace is None else world.trace.tracer(self)  # emu.mm.trace

    # -- addresses -------------------------------------------------------------
    def page_off(self, pfn: int) -> int:
        """File offset of struct page `pfn`."""
        return self.mem_map + pfn * self.psize

    def pfn_addr(self, pfn: int) -> int:
        """Emulated address of struct page `pfn` (pfn_to_page)."""
        return self.mem_map_addr + pfn * self.psize

    # -- waiting -----------------------------------------------------------------
    def spin_wait(self, off: int, size: int, can: Callable[[int], bool], spins: int,
                  sleeping: bool = False) -> None:
        """A CPU waiting on the `size` bytes at `off` until `can(value)` may hold
        (a free run relaxes; a controlled schedule runs another CPU until it
        does). `sleeping`: the task sleeps (lock_page, a mutex) rather than
        spins, so another task may have its CPU meanwhile."""
        self._wait(self, off, size, can, spins, sleeping)

    # -- preemption (include/linux/preempt.h) ------------------------------------------
    def preempt_disable(self) -> None:
        self.preempt_count += 1

    def preempt_enable(self) -> None:
        self.preempt_count -= 1

    # -- bookkeeping ----------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.h.fetch_add(self.counters + COUNTER_OFF[name], 8, n)

    def counter(self, name: str) -> int:
        return self.h.load(self.counters + COUNTER_OFF[name], 8)

    def stopping(self) -> bool:
        return self.h.load(self.ctl_stop, 4, order=ACQUIRE) != 0

    def rcu_read_lock(self) -> None:
        self.h.fetch_add(self.percpu + 64 * self.cpu, 4, 1)

    def rcu_read_unlock(self) -> None:
        self.h.fetch_add(self.percpu + 64 * self.cpu, 4, -1, True)
