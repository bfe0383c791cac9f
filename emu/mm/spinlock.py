"""spinlock_t operations on the emulated bytes (kernel/spinlock.c,
lib/spinlock_debug.c and the arch's spinlock.h of 2.6.32/2.6.33).

Each access to the lock's fields is one kernel access through `mm.a`, at the
offsets and with the values of emu.lockword's model, so a controlled schedule
can cut in between any two of them. Acquisition is a try step plus a wait: a
CPU that finds the lock held calls `mm.spin_wait` on the lock word, which in a
free run relaxes and retries, and under a controlled schedule keeps the CPU
off the run queue until the word says the lock may be taken.
"""

from __future__ import annotations

from ..lockword import SPINLOCK_MAGIC, LockModel
from .context import MM


class SpinBug(RuntimeError):
    """lib/spinlock_debug.c's spin_bug(): a debug check on a spinlock failed."""


class SpinLockup(TimeoutError):
    """A spin wait exceeded its budget (the kernel would print 'spinlock lockup')."""


def _acquired(mm: MM, off: int) -> None:
    if mm.lockdep is not None:
        mm.lockdep.acquired(mm.lockdep.spin_class(off), off)


def check_lock(mm: MM, off: int, lm: LockModel) -> None:
    """The whole spinlock_t lies in the machine and each field is aligned."""
    if off < 0 or off > mm.m.size - lm.span:
        raise IndexError(f"spinlock at {off} (+{lm.span}) out of bounds of a {mm.m.size}-byte machine")
    if off % lm.align:
        raise ValueError(f"spinlock offset {off} is not {lm.align}-byte aligned")


def spin_lock_init(mm: MM, off: int, lm: LockModel, cpu: int = 0) -> None:
    """spin_lock_init: the unlocked word, break_lock 0, the debug fields, the lockdep map."""
    check_lock(mm, off, lm)
    a = mm.a
    if lm.kind != "none":
        a.store(off + lm.lock_rel, lm.lock_size, lm.free_val)
    if lm.break_rel >= 0:
        a.store(off + lm.break_rel, 4, 0)
    if lm.debug:
        a.store(off + lm.magic_rel, 4, SPINLOCK_MAGIC)
        a.store(off + lm.owner_cpu_rel, 4, 0xFFFFFFFF)
        a.store(off + lm.owner_rel, lm.word, (1 << 8 * lm.word) - 1)
    if lm.dep_cpu_rel >= 0:
        a.store(off + lm.dep_cpu_rel, 4, cpu)


def spin_is_locked(mm: MM, off: int, lm: LockModel) -> bool:
    check_lock(mm, off, lm)
    if lm.kind == "none":
        return False
    return lm.is_locked(mm.a.load_once(off + lm.lock_rel, lm.lock_size))


def _raw_trylock(mm: MM, off: int, lm: LockModel) -> bool:
    a, lk = mm.a, off + lm.lock_rel
    if lm.kind == "none":
        return True
    if lm.kind == "token":
        return a.cas(lk, lm.lock_size, lm.free_val, lm.held_value(mm.cpu)) == lm.free_val
    v = a.load_once(lk, lm.lock_size)
    if lm.is_locked(v):
        return False
    both = (1 << 2 * lm.ticket_bits) - 1  # "next" += 1 within its own bits
    nv = ((v + (1 << lm.ticket_bits)) & both) | (v & ~both)
    return a.cas(lk, lm.lock_size, v, nv) == v


def _debug_before(mm: MM, off: int, lm: LockModel) -> None:
    """debug_spin_lock_before: it looks at a lock another CPU may hold, so its
    reads are marked (READ_ONCE), as mainline marked them in 5.9 ("locking/
    spinlock/debug: Fix various data races"); 2.6.32's plain reads were that
    benign data race, which kcsan would report on every DEBUG_SPINLOCK run."""
    if not lm.debug:
        return
    a, cpu = mm.a, mm.cpu
    if a.load_once(off + lm.magic_rel, 4) != SPINLOCK_MAGIC:
        raise SpinBug(f"BUG: spinlock bad magic on CPU#{cpu}")
    if a.load_once(off + lm.owner_rel, lm.word) == mm.task:
        raise SpinBug(f"BUG: spinlock recursion on CPU#{cpu}")
    if a.load_once(off + lm.owner_cpu_rel, 4) == cpu:
        raise SpinBug(f"BUG: spinlock cpu recursion on CPU#{cpu}")


def _after_acquire(mm: MM, off: int, lm: LockModel) -> None:
    a = mm.a
    if lm.lockbreak:  # the acquirer resets break_lock (waiters write it too: marked, see spin_lock)
        a.store_once(off + lm.break_rel, 4, 0)
    if lm.debug:  # debug_spin_lock_after (WRITE_ONCE in mainline since 5.9)
        a.store_once(off + lm.owner_cpu_rel, 4, mm.cpu)
        a.store_once(off + lm.owner_rel, lm.word, mm.task)
    if lm.dep_cpu_rel >= 0:  # LOCK_STAT's lock_acquired: cpu and ip
        a.store(off + lm.dep_cpu_rel, 4, mm.cpu)
        a.store(off + lm.dep_ip_rel, lm.word, lm.dep_ip)
    if mm.tr is not None:  # the held slice (emu.mm.trace)
        mm.tr.lock(off)


def spin_trylock(mm: MM, off: int, lm: LockModel) -> bool:
    check_lock(mm, off, lm)
    mm.preempt_disable()
    if not _raw_trylock(mm, off, lm):
        mm.preempt_enable()
        return False
    _acquired(mm, off)
    _after_acquire(mm, off, lm)
    return True


def spin_lock(mm: MM, off: int, lm: LockModel, max_spins: int = 0) -> None:
    """Spin until the lock is ours; SpinLockup after max_spins waits (0: no limit).
    Preemption is off from here to spin_unlock, and while spinning, except on
    GENERIC_LOCKBREAK's path (BUILD_LOCK_OPS), which waits preemptibly."""
    check_lock(mm, off, lm)
    mm.preempt_disable()
    _debug_before(mm, off, lm)
    a, lk, size = mm.a, off + lm.lock_rel, lm.lock_size
    if lm.kind == "token":
        free = lm.free_val

        def can(v: int) -> bool:
            return v == free

        spins = 0
        while a.cas(lk, size, free, lm.held_value(mm.cpu)) != free:
            if lm.lockbreak:  # GENERIC_LOCKBREAK: a waiter waits preemptibly and says so. Plain
                # in the kernel, a benign race among waiters and the holder: marked here
                # so that kcsan reports the protocol's races, not this one
                mm.preempt_enable()
                if a.load_once(off + lm.break_rel, 4) == 0:
                    a.store_once(off + lm.break_rel, 4, 1)
            while True:  # test before test-and-set
                spins += 1
                if max_spins and spins >= max_spins:
                    raise SpinLockup(f"BUG: spinlock lockup on CPU#{mm.cpu} after {max_spins} spins")
                mm.spin_wait(lk, size, can, spins)
                if a.load_once(lk, size) == free:
                    break
            if lm.lockbreak:
                mm.preempt_disable()
    elif lm.kind == "ticket":
        rel, tsize, add = lm.ticket_add()
        ticket = lm.next_ticket(a.fetch_add(lk + rel, tsize, add))  # x86 xadd: not abandonable
        srel, ssize = lm.serving_field()

        def served(v: int) -> bool:
            return v == ticket

        spins = 0  # the read that sees our ticket served is spin_lock's ACQUIRE (x86: every load is)
        while a.load_acquire(lk + srel, ssize) != ticket:
            spins += 1
            mm.spin_wait(lk + srel, ssize, served, spins)
    _acquired(mm, off)
    _after_acquire(mm, off, lm)


def spin_unlock(mm: MM, off: int, lm: LockModel) -> None:
    check_lock(mm, off, lm)
    a, cpu = mm.a, mm.cpu
    if lm.debug:  # debug_spin_unlock's checks, then reset the owner
        if a.load(off + lm.magic_rel, 4) != SPINLOCK_MAGIC:
            raise SpinBug(f"BUG: spinlock bad magic on CPU#{cpu}")
        if not spin_is_locked(mm, off, lm):
            raise SpinBug(f"BUG: spinlock already unlocked on CPU#{cpu}")
        if a.load(off + lm.owner_rel, lm.word) != mm.task:
            raise SpinBug(f"BUG: spinlock wrong owner on CPU#{cpu}")
        if a.load(off + lm.owner_cpu_rel, 4) != cpu:
            raise SpinBug(f"BUG: spinlock wrong CPU on CPU#{cpu}")
        a.store_once(off + lm.owner_rel, lm.word, (1 << 8 * lm.word) - 1)
        a.store_once(off + lm.owner_cpu_rel, 4, 0xFFFFFFFF)
    if lm.kind == "token":  # arch_spin_unlock: a store with release semantics
        a.store_release(off + lm.lock_rel, lm.lock_size, lm.free_val)
    elif lm.kind == "ticket":  # now serving += 1 within its own bits (x86 incb/incw)
        srel, ssize = lm.serving_field()
        a.fetch_add(off + lm.lock_rel + srel, ssize, 1)
    if mm.lockdep is not None:
        mm.lockdep.released(mm.lockdep.spin_class(off), off)
    if mm.tr is not None:
        mm.tr.unlock(off)
    mm.preempt_enable()
