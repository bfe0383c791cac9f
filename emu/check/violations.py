"""Violation kinds and the record each one leaves in the violations region."""

from __future__ import annotations

from ..findings import VIOLATION_KINDS
from ..records import NR_VIOLATION_KINDS

V_FALSE_OPEN, V_CHANGED_WHILE_REF, V_COUNT_NEGATIVE, V_BAD_PAGE, V_NODE_FREED_WITH_KEY, \
    V_DOUBLE_ALLOC, V_SPIN_BUG, V_KEY_FORGED = range(8)
VIOLATION_NAMES = VIOLATION_KINDS  # a record stores its kind's index here
# free_pages_check's findings, as the bits of a bad_page record's detail
BAD_MAPCOUNT, BAD_MAPPING, BAD_COUNT, BAD_FLAGS = 1, 2, 4, 8

assert len(VIOLATION_NAMES) == NR_VIOLATION_KINDS  # the control region counts each kind


class KernelBug(RuntimeError):
    """The kernel would BUG() here (raised under the unit tests' policy)."""


class RefcountBug(KernelBug):
    """get_page on a free page, put_page on a zero count."""
