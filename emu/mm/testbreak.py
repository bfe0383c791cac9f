"""Deliberately broken kernel code, for the tests that show a check catching
it: KSM_EMU_TEST_BREAK=name[,name] in the environment (read at import, so a
run's role processes inherit it). Never set outside tests.

  pte-lock-of-other-table   try_to_unmap_one clears a pte under another page
                            table's lock (lockdep: lock not held)
  freeze-read-then-store    page_freeze_refs reads _count, then stores 0: not
                            one cmpxchg (a data race; a page freed with a
                            reference held)
  refcounted-plain-store    set_page_refcounted sets _count and _mapcount with
                            one plain word store (a data race with a speculative
                            get_page_unless_zero on the 4 bytes of _count)
  dec-read-then-store       put_page_testzero: a read, then a store of count - 1
  trylock-read-then-store   trylock_page: test PG_locked, then store it set
  kcsan-plain-read-acquires the data race checker lets a plain read acquire
                            what the write it reads released (wrong under every
                            kernel memory model: it hides the races after it)
  kcsan-every-access-orders the data race checker's model before LKMM: every
                            write releases, every marked read acquires
  atomics-<op>-read-then-store
                            emu._atomics' <op> (cas, xchg, fetch-add, fetch-sub,
                            fetch-or, fetch-and, fetch-xor, inc-not-zero,
                            dec-and-test) as a load and a store: lost updates
                            (the extension reads the switch itself, at import)
"""

from __future__ import annotations

import os

from .._atomics import TEST_BREAKS

ENV = "KSM_EMU_TEST_BREAK"
NAMES = ("pte-lock-of-other-table", "freeze-read-then-store", "refcounted-plain-store",
         "dec-read-then-store", "trylock-read-then-store", "kcsan-plain-read-acquires",
         "kcsan-every-access-orders", *TEST_BREAKS)
BROKEN: frozenset[str] = frozenset(n for n in os.environ.get(ENV, "").split(",") if n in NAMES)
