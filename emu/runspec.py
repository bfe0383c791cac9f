"""What a run is: its configuration, protocol, size, roles and their CPUs."""

from __future__ import annotations

from dataclasses import dataclass, field

from .check import RUN_CHECKS
from .kconfig import Config

# The limits of a run, one home for the CLIs and the campaign SPEC that check them.
MIN_PAGES = 1024
MAX_PAGES = 1 << 26  # 256 GiB emulated; the free list's links are 32-bit pfns
LOWMEM_PAGES = 1 << 20  # a 32-bit kernel's direct map (lowmem) holds no more here
MAX_ALLOCATORS = 32
MAX_PAGES_TO_SCAN = (1 << 32) - 1  # ksm's pages_to_scan is an unsigned int
# upper bounds of the timing flags: each must leave a role able to stop within
# supervise.STOP_GRACE_S of the stop flag
MAX_SLEEP_MS, MAX_WINDOW_US, MAX_HOLD_US = 60_000.0, 100_000.0, 100_000.0


class LimitError(ValueError):
    """A run's number out of its range: `name` is its RunSpec field, `want` what it must be."""

    def __init__(self, name: str, value: object, want: str) -> None:
        super().__init__(f"{name} {value}: {want}")
        self.name, self.value, self.want = name, value, want


def check_pages(pages: int, cfg: Config | None = None) -> None:
    """A run's struct pages: in range, and (given the config) within a 32-bit lowmem."""
    if not MIN_PAGES <= pages <= MAX_PAGES:
        raise LimitError("pages", pages, f"want {MIN_PAGES}..{MAX_PAGES}" + (" (too few)" if pages < MIN_PAGES else ""))
    if cfg is not None and cfg.word_bytes == 4 and pages > LOWMEM_PAGES:
        raise LimitError("pages", pages, f"a 32-bit lowmem direct map holds at most {LOWMEM_PAGES} pages here")


def check_allocators(allocators: int) -> None:
    if not 1 <= allocators <= MAX_ALLOCATORS:
        raise LimitError("allocators", allocators, f"want 1..{MAX_ALLOCATORS}")


@dataclass
class RunSpec:
    cfg: Config
    protocol: str = "keyhole"
    pages: int = 65536
    duration: float = 10.0
    allocators: int = 2
    cpus: dict[str, int] = field(default_factory=dict)  # "ksmd", "reclaim", "allocator.N"
    pages_to_scan: int = 100
    sleep_ms: float = 20.0
    seed: int = 1
    state: str | None = None  # None: a fresh file in the user's state directory (emu.statefile)
    overwrite: bool = False  # an existing --state may be replaced (never one a live run holds)
    window_us: float = 0.0
    ptl_hold_us: float = 20.0
    progress: bool = True
    checks: frozenset = RUN_CHECKS  # emu.check's checkers on the roles' accesses
    pid: int = 0  # the launcher's, recorded in the state file's meta
    trace: str | None = None  # --trace FILE: Chrome trace-event JSON of the roles' rings (emu.trace)

    def role_names(self) -> list[str]:
        return ["ksmd", "reclaim"] + [f"allocator.{i}" for i in range(self.allocators)]

    def roles(self) -> list[tuple[str, int]]:
        """(name, cpu) per process."""
        return [(n, self.cpus[n]) for n in self.role_names()]


def assign_cpus(spec: RunSpec, requested: dict[str, int]) -> dict[str, int]:
    """Default CPU ids 0, 1, 2... in role order; `requested` overrides some."""
    names = spec.role_names()
    taken = set(requested.values())
    free = (c for c in range(spec.cfg.nr_cpus) if c not in taken)
    out = {}
    for n in names:
        if n in requested:
            out[n] = requested[n]
        else:
            try:
                out[n] = next(free)
            except StopIteration:
                raise ValueError(f"NR_CPUS={spec.cfg.nr_cpus} is too few CPUs for {len(names)} roles") from None
    return out
