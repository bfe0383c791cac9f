"""The lock-value model: where each field of a spinlock_t lies and which value
each lock state leaves in it, for one Config.

This is the one place that knows how the arch lock word behaves (docs/KERNEL.md):
x86 ticket locks (8-bit tickets when NR_CPUS < 256, else 16-bit; x86 only ever
runs little-endian), mips64's ticket lock (16-bit serving in the low half, the
next ticket in the high half: representative), ppc64's lock token
0x80000000 | cpu, ppc32 and arm 1, s390x ~cpu, sparc64 0xff in a one-byte word;
a uniprocessor kernel's lock is an empty struct, or under DEBUG_SPINLOCK a word
that is 1 when free and 0 when held (spinlock_up.h).

The lock operations (emu.mm.spinlock), the static hazard analysis
(emu.hazard) and the tests all read it; it needs no compiled code, so
ksm-layout runs without the extensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .kconfig import LOCK_TICKET, Config
from .layout import Layout

SPINLOCK_MAGIC = 0xDEAD4EAD  # include/linux/spinlock_types.h
LOCKDEP_IP = {4: 0xC0100000, 8: 0xFFFFFFFF81000000}  # an emulated caller address (LOCK_STAT)

# arch -> (value of a held token lock, whether the holder's CPU is xor'ed in)
_TOKENS = {"ppc64": (0x80000000, True), "s390x": (0xFFFFFFFF, True), "sparc64": (0xFF, False),
           "arm": (1, False), "ppc32": (1, False)}


class PtlAbsent(Exception):
    """USE_SPLIT_PTLOCKS is off: page tables use mm->page_table_lock, not page->ptl."""


@dataclass(frozen=True)
class LockModel:
    """One spinlock_t: field offsets relative to its first byte (-1: absent) and
    the values the arch lock word takes."""

    kind: str  # "none" (UP without debug: an empty struct), "token" (CAS free -> held), "ticket"
    word: int  # sizeof(unsigned long)
    span: int  # sizeof(spinlock_t)
    lock_rel: int = -1
    lock_size: int = 0
    free_val: int = 0
    token_base: int = 0
    token_cpu: bool = False  # the held value is token_base ^ cpu
    ticket_bits: int = 0  # bits of "now serving" and of "next", each
    big: bool = False  # byte order (where the halves of a ticket word lie)
    break_rel: int = -1
    magic_rel: int = -1
    owner_cpu_rel: int = -1
    owner_rel: int = -1
    dep_cpu_rel: int = -1
    dep_ip_rel: int = -1
    dep_ip: int = 0
    lockbreak: bool = False  # BUILD_LOCK_OPS writes break_lock (GENERIC_LOCKBREAK, no lockdep)
    align: int = field(init=False, default=1)  # what the whole lock needs: each field naturally aligned

    def __post_init__(self) -> None:
        if self.kind not in ("none", "token", "ticket"):
            raise ValueError(f"lock kind must be none, token or ticket, not {self.kind!r}")
        if self.word not in (4, 8):
            raise ValueError(f"word size must be 4 or 8, not {self.word}")
        if (self.magic_rel < 0) != (self.owner_cpu_rel < 0) or (self.magic_rel < 0) != (self.owner_rel < 0):
            raise ValueError("magic, owner_cpu and owner come together (DEBUG_SPINLOCK)")
        fields = [(self.break_rel, 4), (self.magic_rel, 4), (self.owner_cpu_rel, 4),
                  (self.owner_rel, self.word), (self.dep_cpu_rel, 4), (self.dep_ip_rel, self.word)]
        if self.kind != "none":
            if self.lock_size not in (1, 2, 4, 8):
                raise ValueError(f"lock word size must be 1, 2, 4 or 8, not {self.lock_size}")
            fields.append((self.lock_rel, self.lock_size))
        for rel, size in fields:
            if rel >= 0 and (rel + size > self.span or rel % size):
                raise ValueError(f"spinlock field at +{rel} ({size} bytes) is outside the "
                                 f"{self.span}-byte lock or misaligned")
        object.__setattr__(self, "align", max([1] + [size for rel, size in fields if rel >= 0]))

    @property
    def debug(self) -> bool:
        return self.magic_rel >= 0

    # -- token locks -----------------------------------------------------------
    def held_value(self, cpu: int) -> int:
        """The lock word while CPU `cpu` holds a token lock."""
        return self.token_base ^ cpu if self.token_cpu else self.token_base

    # -- ticket locks: "now serving" in the low bits, "next" above it ------------
    @property
    def ticket_mask(self) -> int:
        return (1 << self.ticket_bits) - 1

    def serving(self, v: int) -> int:
        return v & self.ticket_mask

    def next_ticket(self, v: int) -> int:
        return (v >> self.ticket_bits) & self.ticket_mask

    def ticket_add(self) -> tuple[int, int, int]:
        """(offset in the lock word, size, addend) of the one read-modify-write that
        takes a ticket: x86's xaddw on the low half with 8-bit tickets, else an
        add to the whole word whose carry out falls off the top."""
        if self.ticket_bits * 2 < 8 * self.lock_size:  # the halves fill only part of the word
            size = 2 * self.ticket_bits // 8
            return (self.lock_size - size if self.big else 0), size, 1 << self.ticket_bits
        return 0, self.lock_size, 1 << self.ticket_bits

    def serving_field(self) -> tuple[int, int]:
        """(offset in the lock word, size) of "now serving": x86's incb/incw target."""
        size = self.ticket_bits // 8
        return (self.lock_size - size if self.big else 0), size

    # -- either kind -----------------------------------------------------------------
    def is_locked(self, v: int) -> bool:
        """Is the lock held, given the arch lock word's value?"""
        if self.kind == "none":
            return False
        if self.kind == "ticket":
            return self.serving(v) != self.next_ticket(v)
        return v != self.free_val


def lock_model(cfg: Config, lay: Layout, prefix: str = "") -> LockModel:
    """The model of a spinlock_t at `prefix` of `lay` (a struct page's "ptl." or a
    bare spinlock_t's ""), with offsets relative to the lock's first byte."""
    base = lay.offset(prefix[:-1]) if prefix else 0
    span = lay.field(prefix[:-1]).size if prefix else lay.size
    pre = prefix + ("rlock." if cfg.kernel == "2.6.33" else "")

    def rel(member: str) -> int:
        return lay.offset(pre + member) - base if lay.has(pre + member) else -1

    kw: dict = {"word": cfg.word_bytes, "span": span, "big": cfg.byte_order == "big",
                "break_rel": rel("break_lock"), "magic_rel": rel("magic"),
                "owner_cpu_rel": rel("owner_cpu"), "owner_rel": rel("owner"),
                # BUILD_LOCK_OPS (which writes break_lock) is not used with DEBUG_LOCK_ALLOC
                "lockbreak": rel("break_lock") >= 0 and not cfg["DEBUG_LOCK_ALLOC"]}
    if cfg["LOCK_STAT"]:
        kw.update(dep_cpu_rel=rel("dep_map.cpu"), dep_ip_rel=rel("dep_map.ip"), dep_ip=LOCKDEP_IP[cfg.word_bytes])
    a = cfg.arch
    if not cfg["SMP"]:
        if not cfg["DEBUG_SPINLOCK"]:
            return LockModel(kind="none", **kw)
        return LockModel(kind="token", lock_rel=rel("raw_lock.slock"), lock_size=4, free_val=1,
                         token_base=0, **kw)
    kw.update(lock_rel=rel(f"raw_lock.{a.lock_member}"), lock_size=a.lock_size)
    if a.lock_kind == LOCK_TICKET:
        return LockModel(kind="ticket", ticket_bits=8 if (a.is_x86 and cfg.nr_cpus < 256) else 16, **kw)
    token, with_cpu = _TOKENS[a.name]
    return LockModel(kind="token", token_base=token, token_cpu=with_cpu, **kw)


def ptl_model(cfg: Config, page: Layout) -> LockModel:
    """The model of page->ptl, relative to the ptl's first byte."""
    if not page.has("ptl"):
        raise PtlAbsent(f"no page->ptl in this config (USE_SPLIT_PTLOCKS off, "
                        f"NR_CPUS={cfg.nr_cpus} < SPLIT_PTLOCK_CPUS={cfg.split_ptlock_cpus})")
    return lock_model(cfg, page, "ptl.")
