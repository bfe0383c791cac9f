"""The explorer's lkmm: store buffers that only the kernel's barriers order
(the store side of the Linux-kernel memory model), per byte as under tso.

A CPU's stores wait in its buffer as under x86-TSO (emu.explore.tso), but
one may reach memory before an older one of its CPU unless something in the
kernel's code orders them, as LKMM says (tools/memory-model: ppo and the
cumul-fences):
- two stores to one 8-byte word stay in order (coherence: an aligned access
  of at most 8 bytes lies in one word);
- smp_wmb() orders its CPU's earlier stores before its later ones;
- a release store (smp_store_release, spin_unlock) waits for every earlier
  store of its CPU; a later one may still pass it;
- smp_mb() and every atomic RMW run only with the buffer empty, as on tso.
Loads stay in order and read memory at their step (with store forwarding
from their own buffer): no load->load or load->store reordering, and one
memory, so the model is multicopy atomic. That is stronger than LKMM, which
lets reads go early where nothing orders them (MP with smp_wmb but no
smp_rmb, IRIW, LB): docs/memory-models.md has the table. In exchange no
address dependency needs tracking through the Python values the kernel code
computes: every dependent read comes after the read it depends on.

Each (CPU, word) pair has its FIFO, a scheduling choice of its own:
choice N * (1 + slot) + p flushes the oldest store of CPU p's FIFO `slot`,
where slot numbers the words p has stored to in this execution in the order
it first did (a function of p's own history, so the same in every execution
that shares the prefix, and on replay). For DPOR each store keeps its
virtual byte (tso's `slot`); a flush writes it, and reads those of the stores
it must follow, as a fence reads those of every store since its CPU's
previous fence: each footprint is fixed when the store is made."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .tso import StoreBuffers

if TYPE_CHECKING:
    from .sched import Runner

MAX_WORDS = 48  # words one CPU may store to in one execution (choice ids stay small for DPOR's clocks)



def choices_per_role(base: str) -> int:
    """Scheduling choices per role: its CPU, and under tso its store buffer's
    flush, under lkmm one per word its buffer may hold."""
    return {"tso": 2, "lkmm": 1 + MAX_WORDS}.get(base, 1)


class WordBuffers(StoreBuffers):
    """Every CPU's buffered stores: per word a FIFO, with what each must follow.
    `q` keeps them in program order for store forwarding (StoreBuffers.load)."""

    def __init__(self, runner: Runner, byte_order: str, dropped: frozenset[str] = frozenset()) -> None:
        super().__init__(runner, byte_order, dropped)
        self.n = runner.n
        self.reset()

    def reset(self) -> None:
        n = self.n
        self.q: list[list] = [[] for _ in range(n)]  # program order: [off, size, value, seq, slot]
        self.fifo: list[dict[int, list]] = [{} for _ in range(n)]  # slot -> entries, oldest first
        self.after: dict[tuple[int, int], tuple[int, ...]] = {}  # (p, seq) -> the seqs it must follow
        self.words: list[dict[int, int]] = [{} for _ in range(n)]  # word -> slot
        self.stored = [0] * n
        self.current: list[list[int]] = [[] for _ in range(n)]  # seqs since the last wmb or fence
        self.before: list[tuple[int, ...]] = [() for _ in range(n)]  # ... and the group before that wmb
        self.since_fence: list[list[int]] = [[] for _ in range(n)]
        self.pending: list[set[int]] = [set() for _ in range(n)]
        self._heads: list | None = []  # flushable()'s answer until the buffers change

    def fence_reads(self, p: int) -> list[int]:
        """The bytes a fence of p reads (every store since its previous fence,
        all flushed now), and the start of a new fence-free stretch."""
        out = [self.slot(p, s) for s in self.since_fence[p]]
        self.since_fence[p] = []
        self.current[p] = []
        self.before[p] = ()
        return out

    def wmb(self, p: int) -> None:
        if self.current[p]:
            self.before[p] = tuple(self.current[p])
            self.current[p] = []

    def put(self, p: int, off: int, size: int, value: int, release: bool = False) -> None:
        value = self.fitted(value, size)
        word = off >> 3
        slots = self.words[p]
        slot = slots.get(word)
        if slot is None:
            if len(slots) >= MAX_WORDS:  # the explorer's limit, not the kernel code's fault: no finding
                self.run.fatal = RuntimeError(f"CPU #{p} stored to more than {MAX_WORDS} words in one execution "
                                              "under lkmm: raise emu.explore.lkmm.MAX_WORDS")
                self.run._end()
            slot = slots[word] = len(slots)
        self.stored[p] += 1
        seq = self.stored[p]
        # a release follows every store since the fence; any other the group before the last wmb
        self.after[(p, seq)] = tuple(self.before[p]) + tuple(self.current[p]) if release else self.before[p]
        entry = [off, size, value, seq, slot]
        self.q[p].append(entry)
        self.fifo[p].setdefault(slot, []).append(entry)
        self.current[p].append(seq)
        self.since_fence[p].append(seq)
        self.pending[p].add(seq)
        self._heads = None

    def flushable(self) -> list[tuple[int, int, int]]:
        """(choice, off, size) of every FIFO's oldest store that may reach memory now."""
        if self._heads is not None:
            return self._heads
        out = self._heads = []
        n = self.n
        for p in range(n):
            if not self.q[p]:
                continue
            pending = self.pending[p]
            for slot, entries in self.fifo[p].items():
                if entries:
                    e = entries[0]
                    if not any(s in pending for s in self.after[(p, e[3])]):
                        out.append((n * (1 + slot) + p, e[0], e[1]))
        return out

    def peek(self, choice: int) -> tuple[int, int]:
        e = self.fifo[choice % self.n][choice // self.n - 1][0]
        return e[0], e[1]

    def flush(self, choice: int) -> list:
        p, slot = choice % self.n, choice // self.n - 1
        off, size, value, seq, _ = e = self.fifo[p][slot].pop(0)
        self.q[p].remove(e)
        self.pending[p].discard(seq)
        self._heads = None
        self.run.kmem.store(off, size, value)
        b = self.slot(p, seq)
        return [(off, off + size, True), (b, b + 1, True),
                *((self.slot(p, s), self.slot(p, s) + 1, False) for s in self.after[(p, seq)])]
