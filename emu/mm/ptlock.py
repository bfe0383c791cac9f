"""page->ptl: the split page-table lock, at the offsets of the current config.

`lock_spec(cfg, layout)` says how the arch lock word behaves and where each
spinlock_t field lies relative to page->ptl; `PtLock` binds that to a
machine's atomics (emu._atomics.SpinLockOps does the work without the GIL).

Held values follow KERNEL.md: x86 ticket locks (8-bit tickets when
NR_CPUS < 256, else 16-bit), mips64 ticket lock (16-bit serving in the low
half, next ticket in the high half: representative), ppc64 0x80000000|cpu,
ppc32 and arm 1, s390x ~cpu, sparc64 0xff (1-byte word); a uniprocessor
kernel's lock is an empty struct, or under DEBUG_SPINLOCK a word that is 1
when free and 0 when held (spinlock_up.h).
"""

from __future__ import annotations

from .._atomics import SpinLockOps
from ..kconfig import LOCK_TICKET, Config
from ..layout import Layout

LOCKDEP_IP = {4: 0xC0100000, 8: 0xFFFFFFFF81000000}  # an emulated caller address (LOCK_STAT)


class PtlAbsent(Exception):
    """USE_SPLIT_PTLOCKS is off: page tables use mm->page_table_lock, not page->ptl."""


def lock_spec(cfg: Config, page: Layout) -> dict:
    """Keyword arguments for SpinLockOps on page->ptl, relative to the ptl."""
    if not page.has("ptl"):
        raise PtlAbsent(f"no page->ptl in this config (USE_SPLIT_PTLOCKS off, "
                        f"NR_CPUS={cfg.nr_cpus} < SPLIT_PTLOCK_CPUS={cfg.split_ptlock_cpus})")
    return spinlock_spec(cfg, page, "ptl.")


def spinlock_spec(cfg: Config, lay: Layout, prefix: str = "") -> dict:
    """Keyword arguments for SpinLockOps on a spinlock_t at `prefix` of `lay`
    (a struct page's "ptl." or a bare spinlock_t's ""), relative to its start."""
    base = lay.offset(prefix[:-1]) if prefix else 0
    size = lay.field(prefix[:-1]).size if prefix else lay.size
    pre = prefix + ("rlock." if cfg.kernel == "2.6.33" else "")

    def rel(member: str) -> int:
        return lay.offset(pre + member) - base if lay.has(pre + member) else -1

    spec: dict = {"word": cfg.word_bytes, "span": size,
                  "break_rel": rel("break_lock"), "magic_rel": rel("magic"),
                  "owner_cpu_rel": rel("owner_cpu"), "owner_rel": rel("owner"),
                  # BUILD_LOCK_OPS (which writes break_lock) is not used with DEBUG_LOCK_ALLOC
                  "lockbreak": not cfg["DEBUG_LOCK_ALLOC"]}
    if cfg["LOCK_STAT"]:
        spec.update(dep_cpu_rel=rel("dep_map.cpu"), dep_ip_rel=rel("dep_map.ip"),
                    dep_ip=LOCKDEP_IP[cfg.word_bytes])
    a = cfg.arch
    if not cfg["SMP"]:
        if not cfg["DEBUG_SPINLOCK"]:
            spec.update(kind="none")
            return spec
        spec.update(kind="token", lock_rel=rel("raw_lock.slock"), lock_size=4, free_val=1, token_base=0)
        return spec
    spec.update(lock_rel=rel(f"raw_lock.{a.lock_member}"), lock_size=a.lock_size)
    if a.lock_kind == LOCK_TICKET:
        bits = 8 if (a.is_x86 and cfg.nr_cpus < 256) else 16
        spec.update(kind="ticket", ticket_bits=bits, ticket_shift=bits)
    elif a.name in ("ppc64", "s390x"):
        # ppc64: lock token 0x80000000 | cpu; s390x: ~cpu = 0xffffffff ^ cpu
        spec.update(kind="token", token_base=0x80000000 if a.name == "ppc64" else 0xFFFFFFFF,
                    token_cpu=True)
    else:
        spec.update(kind="token", token_base=a.held_value(0))
    return spec


class PtLock:
    """pte_lock_init / spin_lock / spin_unlock / pte_lock_deinit on page->ptl of a pfn."""

    def __init__(self, machine: object) -> None:
        from ..machine import Machine

        assert isinstance(machine, Machine)
        self.m = machine
        self.spec = lock_spec(machine.cfg, machine.page_layout)
        self.ops = SpinLockOps(machine.atomics, **self.spec)
        self.ptl_rel = machine.page_layout.offset("ptl")
        self.mapping_rel = machine.page_layout.offset("mapping")

    def ptl_offset(self, pfn: int) -> int:
        return self.m.page_offset(pfn) + self.ptl_rel

    def pte_lock_init(self, pfn: int, cpu: int = 0) -> None:
        """A page-table page's constructor: spin_lock_init(&page->ptl)."""
        self.ops.spin_lock_init(self.ptl_offset(pfn), cpu)

    def pte_lock_deinit(self, pfn: int) -> None:
        """The destructor: page->mapping = NULL "so free_pages_check won't complain"."""
        self.m.atomics.store(self.m.page_offset(pfn) + self.mapping_rel, self.m.cfg.word_bytes, 0)

    def spin_lock(self, pfn: int, cpu: int, task: int, max_spins: int = 0) -> None:
        self.ops.spin_lock(self.ptl_offset(pfn), cpu, task, max_spins)

    def spin_trylock(self, pfn: int, cpu: int, task: int) -> bool:
        return self.ops.spin_trylock(self.ptl_offset(pfn), cpu, task)

    def spin_unlock(self, pfn: int, cpu: int, task: int) -> None:
        self.ops.spin_unlock(self.ptl_offset(pfn), cpu, task)

    def spin_is_locked(self, pfn: int) -> bool:
        return self.ops.spin_is_locked(self.ptl_offset(pfn))
