"""Ground truth and invariants beside the emulated kernel: what each page
really is (the shadow), the checks that compare it with what the kernel code
sees, and the record of violations. Kernel code (emu.mm) feeds them at its
transitions; nothing here is kernel code."""

CHECKS = ("lockdep", "kcsan")  # the checkers on kernel accesses: emu.check.lockdep, emu.check.kcsan
EXPLORE_CHECKS = frozenset(CHECKS)  # explore's and replay's default
RUN_CHECKS = frozenset({"lockdep"})  # run's default (kcsan needs a controlled schedule)
