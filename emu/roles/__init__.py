"""The processes of a run, by name: each a role object whose `step()` does one
bounded unit of kernel work; `drive` owns sleeping and stopping."""

from __future__ import annotations

from .allocator import Allocator
from .driver import drive
from .ksmd import Ksmd
from .reclaim import Reclaim

ROLES = {"ksmd": Ksmd, "reclaim": Reclaim, "allocator": Allocator}

__all__ = ["ROLES", "Allocator", "Ksmd", "Reclaim", "drive"]
