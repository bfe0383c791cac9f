"""The kernel memory accessor: how mm code touches the emulated kernel bytes.

Every load and store of struct pages, stable_nodes, rmap_items, spinlocks and
page tables goes through one accessor object (`MM.a`), and each method says
what the kernel code does at that place:

  load, store              a plain C access
  load_once, store_once    a marked one (ACCESS_ONCE / READ_ONCE / WRITE_ONCE)
  atomic_read, atomic_set  an atomic_t's plain-but-atomic read and set
  load_acquire             smp_load_acquire / the read that ends a ticket lock's spin
  store_release            smp_store_release / arch_spin_unlock's releasing store
  cas, xchg, fetch_add, fetch_or, fetch_and, atomic_inc_not_zero
                           atomic read-modify-writes (cmpxchg, bit ops, ...)
  smp_mb, smp_rmb, smp_wmb the kernel's barriers (Documentation/memory-barriers.txt);
                           smp_mb(site) names the kernel function it stands for
  ctrl_dep                 no instruction: says that what follows runs only because
                           of a value just read (a control dependency the code relies on)

What each orders, as Documentation/atomic_t.txt says: the value-returning
RMWs (cmpxchg, xchg, atomic_inc_not_zero, test_and_set_bit...) are full
barriers; atomic_read/atomic_set and the non-returning bit ops are
unordered; spin_lock is an acquire, spin_unlock a release. Under a
controlled schedule with memory_model="tso" (emu.explore.tso) the stores
wait in store buffers and the full barriers wait for them to drain.

In a free run the accessor is `KernelAtomics`: the Cython atomics themselves
(each access one hardware atomic in the emulated byte order), with the marked
names as aliases, so it costs nothing. A controlled schedule or a checker
wraps it with an object of the same methods that sees each access first.
"""

from __future__ import annotations

from .._atomics import Atomics

ACCESSES = ("load", "store", "load_once", "store_once", "atomic_read", "atomic_set", "load_acquire", "store_release",
            "cas", "xchg", "fetch_add", "fetch_or", "fetch_and", "atomic_inc_not_zero")
PLAIN = frozenset(("load", "store"))  # an ordinary C access: lockdep's and KCSAN's business
MARKED = frozenset(("load_once", "store_once"))  # READ_ONCE / WRITE_ONCE: racy on purpose
# the rest are atomic: they order CPUs (the checkers' happens-before) and never race


class KernelAtomics(Atomics):
    load_once = Atomics.load
    store_once = Atomics.store
    load_acquire = Atomics.load  # every Atomics op is sequentially consistent
    store_release = Atomics.store

    # ... so a barrier has nothing left to order in a free run
    def smp_mb(self, site: str | None = None) -> None:
        pass

    def smp_rmb(self) -> None:
        pass

    def smp_wmb(self) -> None:
        pass

    def ctrl_dep(self) -> None:
        pass
