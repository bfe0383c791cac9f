"""Arch presets and the Kconfig options that shape struct page.

A `Config` is what a kernel build decides: arch, kernel version, the user's
options, and the options Kconfig derives from them (GENERIC_LOCKBREAK,
SPLIT_PTLOCK_CPUS, USE_SPLIT_PTLOCKS), which are computed here and can never be
set by hand.  Facts follow docs/KERNEL.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace


class ConfigError(ValueError):
    """A configuration the kernel's Kconfig would not produce (a user mistake)."""


# Lock word kinds (the values each state leaves are emu.lockword's).
LOCK_TICKET = "ticket"  # x86, mips: fetch-and-add of a ticket, FIFO
LOCK_TOKEN = "token"  # everything else: CAS 0 -> held value


@dataclass(frozen=True)
class Arch:
    """One architecture: ABI facts, the arch lock type and its address map."""

    name: str
    word_bits: int
    byte_order: str  # "little" or "big"
    lock_member: str  # name of the word inside the arch lock type
    lock_size: int  # bytes of that word (1 on sparc64)
    lock_kind: str
    lockbreak_if_smp_preempt: bool  # GENERIC_LOCKBREAK rule
    page_offset: int  # direct map: where kmalloc'd stable_nodes live
    mem_map: int  # where the struct page array lives
    gcc: tuple[str, ...]  # a compiler invocation producing this ABI
    is_arm: bool = False
    is_x86: bool = False
    align8: int = 8  # alignment of 8-byte scalars in structs (i386 SysV: 4)

    @property
    def word_bytes(self) -> int:
        return self.word_bits // 8


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("i386", 32, "little", "slock", 4, LOCK_TICKET, False,
             0xC0000000, 0xC1000000, ("gcc", "-m32"), is_x86=True, align8=4),
        Arch("x86_64", 64, "little", "slock", 4, LOCK_TICKET, False,
             0xFFFF880000000000, 0xFFFFEA0000000000, ("gcc", "-m64"), is_x86=True),
        Arch("arm", 32, "little", "lock", 4, LOCK_TOKEN, True,
             0xC0000000, 0xC1000000, ("arm-linux-gnueabi-gcc-12",), is_arm=True),
        Arch("ppc32", 32, "big", "slock", 4, LOCK_TOKEN, True,
             0xC0000000, 0xC1000000, ("powerpc-linux-gnu-gcc-12",)),
        Arch("ppc64", 64, "big", "slock", 4, LOCK_TOKEN, True,
             0xC000000000000000, 0xF000000000000000, ("powerpc64-linux-gnu-gcc-12",)),
        # s390x: identity-mapped kernel; vmemmap placed above any emulated memory.
        Arch("s390x", 64, "big", "owner_cpu", 4, LOCK_TOKEN, True,
             0x0, 0x40000000000, ("s390x-linux-gnu-gcc-12",)),
        Arch("sparc64", 64, "big", "lock", 1, LOCK_TOKEN, True,
             0xFFFFF80000000000, 0x0000200000000000, ("sparc64-linux-gnu-gcc-12",)),
        Arch("mips64", 64, "big", "lock", 4, LOCK_TICKET, False,
             0x9800000000000000, 0x9800000001000000, ("mips64-linux-gnuabi64-gcc-12",)),
    )
}

KERNELS = ("2.6.32", "2.6.33")

# Options a user may set, with their defaults and what they depend on.
USER_OPTIONS: dict[str, bool] = {
    "SMP": True,
    "PREEMPT": False,
    "DEBUG_SPINLOCK": False,
    "DEBUG_LOCK_ALLOC": False,
    "LOCK_STAT": False,
    "CPU_CACHE_VIPT": False,
    "WANT_PAGE_DEBUG_FLAGS": False,
    "WANT_PAGE_VIRTUAL": False,
    "KMEMCHECK": False,
}
DERIVED_OPTIONS = ("GENERIC_LOCKBREAK", "USE_SPLIT_PTLOCKS")
# "select" relations: enabling the key turns the value on.
SELECTS = {"LOCK_STAT": "DEBUG_LOCK_ALLOC", "DEBUG_LOCK_ALLOC": "DEBUG_SPINLOCK"}
SPLIT_PTLOCK_INFINITY = 999999
NR_CPUS_RANGE = (2, 4096)


def _depends(arch: Arch) -> dict[str, bool]:
    """Which options exist on this arch (Kconfig 'depends on')."""
    return {"CPU_CACHE_VIPT": arch.is_arm, "KMEMCHECK": arch.is_x86}


@dataclass(frozen=True)
class Config:
    """A resolved kernel configuration. Build one with `resolve()`."""

    arch: Arch
    kernel: str
    options: Mapping[str, bool]  # user options after select; derived ones apart
    nr_cpus: int
    split_ptlock_cpus: int
    split_ptlock_override: bool
    page_offset: int
    mem_map: int
    derived: Mapping[str, bool] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().items()))

    def __getitem__(self, name: str) -> bool:
        if name in self.derived:
            return self.derived[name]
        return self.options[name]

    @property
    def word_bytes(self) -> int:
        return self.arch.word_bytes

    @property
    def byte_order(self) -> str:
        return self.arch.byte_order

    def as_dict(self) -> dict:
        """Every resolved option, derived ones included (JSON-ready)."""
        return {
            "arch": self.arch.name,
            "kernel": self.kernel,
            "word_bits": self.arch.word_bits,
            "byte_order": self.arch.byte_order,
            **{k: bool(v) for k, v in self.options.items()},
            **{k: bool(v) for k, v in self.derived.items()},
            "NR_CPUS": self.nr_cpus,
            "SPLIT_PTLOCK_CPUS": self.split_ptlock_cpus,
            "PAGE_OFFSET": self.page_offset,
            "MEM_MAP": self.mem_map,
        }

    def summary(self) -> str:
        on = [k for k, v in {**self.options, **self.derived}.items() if v]
        off = [k for k, v in {**self.options, **self.derived}.items() if not v]
        return (
            f"{self.arch.name} ({self.arch.word_bits}-bit {self.arch.byte_order}-endian), "
            f"kernel {self.kernel}, NR_CPUS={self.nr_cpus}, "
            f"SPLIT_PTLOCK_CPUS={self.split_ptlock_cpus}\n"
            f"  y: {' '.join(on) or '-'}\n  n: {' '.join(off) or '-'}"
        )

    def with_options(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]


def default_split_ptlock_cpus(arch: Arch, kernel: str, options: Mapping[str, bool]) -> int:
    """mm/Kconfig SPLIT_PTLOCK_CPUS default for this kernel."""
    infinity = 4096 if kernel == "2.6.32" else SPLIT_PTLOCK_INFINITY
    if arch.is_arm and not options["CPU_CACHE_VIPT"]:
        return infinity
    # PARISC && !PA20 is the other case; no PA-RISC preset exists here.
    if kernel == "2.6.33" and (options["DEBUG_SPINLOCK"] or options["DEBUG_LOCK_ALLOC"]):
        return SPLIT_PTLOCK_INFINITY
    return 4


def _close_selects(options: dict[str, bool], disabled: set[str]) -> None:
    changed = True
    while changed:
        changed = False
        for src, dst in SELECTS.items():
            if options[src] and not options[dst]:
                if dst in disabled:
                    raise ConfigError(f"{src} selects {dst}: it cannot be disabled while {src} is on")
                options[dst] = True
                changed = True


def resolve(
    arch: str = "x86_64",
    kernel: str = "2.6.33",
    enable: Iterable[str] = (),
    disable: Iterable[str] = (),
    nr_cpus: int | None = None,
    split_ptlock_cpus: int | None = None,
    page_offset: int | None = None,
    mem_map: int | None = None,
) -> Config:
    """Apply Kconfig's rules to the user's choices; raise ConfigError on a mistake."""
    if arch not in ARCHES:
        raise ConfigError(f"unknown arch {arch!r}; choose from {', '.join(ARCHES)}")
    if kernel not in KERNELS:
        raise ConfigError(f"unknown kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    a = ARCHES[arch]
    enable, disable = [o.upper() for o in enable], [o.upper() for o in disable]
    for name in (*enable, *disable):
        if name in DERIVED_OPTIONS:
            raise ConfigError(f"{name} is derived by Kconfig and cannot be set by hand")
        if name not in USER_OPTIONS:
            raise ConfigError(f"unknown option {name!r}; choose from {', '.join(USER_OPTIONS)}")
    both = set(enable) & set(disable)
    if both:
        raise ConfigError(f"option {sorted(both)[0]} is both enabled and disabled")
    deps = _depends(a)
    for name in enable:
        if not deps.get(name, True):
            raise ConfigError(f"option {name} does not exist on {arch}")
    options = dict(USER_OPTIONS)
    options.update({n: True for n in enable})
    options.update({n: False for n in disable})
    _close_selects(options, set(disable))

    if not options["SMP"]:
        if nr_cpus not in (None, 1):
            raise ConfigError("NR_CPUS is 1 on a kernel without SMP; drop --nr-cpus or enable SMP")
        nr = 1
    else:
        nr = 64 if nr_cpus is None else nr_cpus
        lo, hi = NR_CPUS_RANGE
        if not lo <= nr <= hi:
            raise ConfigError(f"NR_CPUS {nr} out of range {lo}..{hi} for an SMP kernel")
    if split_ptlock_cpus is not None and split_ptlock_cpus < 1:
        raise ConfigError(f"SPLIT_PTLOCK_CPUS must be at least 1, not {split_ptlock_cpus}")
    split = split_ptlock_cpus if split_ptlock_cpus is not None else default_split_ptlock_cpus(a, kernel, options)
    limit = 1 << a.word_bits
    for what, value in (("page offset", page_offset), ("mem_map", mem_map)):
        if value is not None and not 0 <= value < limit:
            raise ConfigError(f"{what} {value:#x} does not fit a {a.word_bits}-bit address")
    derived = {
        "GENERIC_LOCKBREAK": a.lockbreak_if_smp_preempt and options["SMP"] and options["PREEMPT"],
        "USE_SPLIT_PTLOCKS": nr >= split,
    }
    return Config(
        arch=a,
        kernel=kernel,
        options=options,
        nr_cpus=nr,
        split_ptlock_cpus=split,
        split_ptlock_override=split_ptlock_cpus is not None,
        page_offset=a.page_offset if page_offset is None else page_offset,
        mem_map=a.mem_map if mem_map is None else mem_map,
        derived=derived,
    )


def from_dict(d: Mapping) -> Config:
    """Rebuild a Config from `Config.as_dict()` output (e.g. a machine header);
    a record of the wrong shape or types is a ConfigError, never a crash."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config record is a {type(d).__name__}, not an object")
    for key, want in (("arch", str), ("kernel", str), ("NR_CPUS", int), ("SPLIT_PTLOCK_CPUS", int),
                      ("PAGE_OFFSET", int), ("MEM_MAP", int), *((k, bool) for k in USER_OPTIONS)):
        value = d.get(key)
        if key in d and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise ConfigError(f"config record's {key} is {str(value)[:40]!r}, not a {want.__name__}")
    try:
        enable = [k for k in USER_OPTIONS if d[k]]
        disable = [k for k in USER_OPTIONS if not d[k]]
        cfg = resolve(
            d["arch"], d["kernel"],
            enable=enable,
            disable=disable,
            nr_cpus=d["NR_CPUS"] if d["SMP"] else None,
            split_ptlock_cpus=d["SPLIT_PTLOCK_CPUS"],
            page_offset=d["PAGE_OFFSET"],
            mem_map=d["MEM_MAP"],
        )
    except KeyError as e:
        raise ConfigError(f"config record lacks {e.args[0]}") from None
    if cfg.as_dict() != dict(d):
        raise ConfigError("config record is inconsistent with Kconfig rules")
    return cfg



# resolve()'s numbers a user may give, each with the short name replay strings
# and campaign tables show it by; the addresses are shown in hex
OVERRIDES = {"nr_cpus": "nr", "split_ptlock_cpus": "split", "page_offset": "po", "mem_map": "mm"}
_HEX = ("page_offset", "mem_map")


def option_name(name: str) -> str:
    """An option as the user may write it (preempt, CONFIG_PREEMPT) in Kconfig's spelling."""
    return name.upper().removeprefix("CONFIG_")


@dataclass(frozen=True)
class ConfigRequest:
    """What is asked of Kconfig, before its rules apply: resolve()'s arguments
    as one value, in each form the tools carry it (a campaign job's object,
    `ksm-emu` flags, a replay string's config, a table's label). `options`
    are the -e/-d settings in the order given: (OPTION, on)."""

    arch: str = "x86_64"
    kernel: str = "2.6.33"
    options: tuple[tuple[str, bool], ...] = ()
    nr_cpus: int | None = None
    split_ptlock_cpus: int | None = None
    page_offset: int | None = None
    mem_map: int | None = None

    @property
    def enable(self) -> list[str]:
        return [o for o, on in self.options if on]

    @property
    def disable(self) -> list[str]:
        return [o for o, on in self.options if not on]

    def overrides(self) -> dict[str, int]:
        """The numbers given, as resolve() keywords."""
        return {k: getattr(self, k) for k in OVERRIDES if getattr(self, k) is not None}

    def resolve(self) -> Config:
        return resolve(self.arch, self.kernel, enable=self.enable, disable=self.disable, **self.overrides())

    def items(self) -> list[str]:
        """+OPTION, -OPTION, nr=N, split=N, po=ADDR, mm=ADDR: what differs from the arch's defaults."""
        out = [("+" if on else "-") + o for o, on in self.options]
        for k, v in self.overrides().items():
            out.append(f"{OVERRIDES[k]}={v:#x}" if k in _HEX else f"{OVERRIDES[k]}={v}")
        return out

    def label(self) -> str:
        return " ".join([self.arch, self.kernel, *self.items()])

    def encode(self) -> str:
        """ARCH/KERNEL[/ITEM...]: a replay string's config."""
        return "/".join([self.arch, self.kernel, *self.items()])

    @classmethod
    def decode(cls, text: str) -> ConfigRequest:
        """A replay string's config; ValueError (never a ConfigError: Kconfig's
        rules are resolve()'s) for one that is not of that form."""
        parts = text.split("/")
        if len(parts) < 2 or parts[0] not in ARCHES:
            raise ValueError(f"bad config {text!r}: want ARCH/KERNEL[/+OPTION...]")
        options, numbers = [], {}
        by_short = {short: k for k, short in OVERRIDES.items()}
        for p in parts[2:]:
            if p[:1] in "+-" and len(p) > 1:
                options.append((p[1:], p[0] == "+"))
                continue
            key, sep, value = p.partition("=")
            if not sep or key not in by_short:
                raise ValueError(f"bad config item {p!r} in {text!r}")
            try:
                numbers[by_short[key]] = int(value, 0)
            except ValueError:
                raise ValueError(f"bad number {value!r} in config item {p!r}") from None
        return cls(parts[0], parts[1], tuple(options), **numbers)

    @classmethod
    def of(cls, cfg: Config) -> ConfigRequest:
        """The shortest request that resolves to `cfg`: the options that differ
        from the arch's and kernel's defaults (in USER_OPTIONS' order), and the
        numbers that do."""
        default = resolve(cfg.arch.name, cfg.kernel)
        options = tuple((name, bool(cfg.options[name])) for name in USER_OPTIONS
                        if cfg.options[name] != default.options[name])
        return cls(cfg.arch.name, cfg.kernel, options,
                   nr_cpus=cfg.nr_cpus if cfg.options["SMP"] and cfg.nr_cpus != default.nr_cpus else None,
                   split_ptlock_cpus=cfg.split_ptlock_cpus if cfg.split_ptlock_override else None,
                   page_offset=cfg.page_offset if cfg.page_offset != cfg.arch.page_offset else None,
                   mem_map=cfg.mem_map if cfg.mem_map != cfg.arch.mem_map else None)

    @classmethod
    def from_dict(cls, d: Mapping) -> ConfigRequest:
        """A campaign job's config object: {"arch", "kernel", "enable", "disable", and OVERRIDES' keys}."""
        options = tuple((option_name(o), True) for o in d.get("enable", ())) + \
            tuple((option_name(o), False) for o in d.get("disable", ()))
        return cls(d.get("arch", cls.arch), d.get("kernel", cls.kernel), options,
                   **{k: d[k] for k in OVERRIDES if d.get(k) is not None})

    def as_dict(self) -> dict:
        """A campaign job's config object, canonical: the same request is the same object."""
        out: dict = {"arch": self.arch, "kernel": self.kernel}
        for key, names in (("enable", self.enable), ("disable", self.disable)):
            if names:
                out[key] = sorted(set(names))
        return {**out, **self.overrides()}

    def flags(self) -> list[str]:
        """The `ksm-emu` flags of the options and numbers (--arch and --kernel apart)."""
        out = [a for o, on in self.options for a in ("-e" if on else "-d", o)]
        for k, v in self.overrides().items():
            out += ["--" + k.replace("_", "-"), hex(v)]
        return out


CONFIG_KEYS = frozenset({"arch", "kernel", "enable", "disable", *OVERRIDES})  # a request's dict's keys
