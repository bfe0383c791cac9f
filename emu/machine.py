"""The emulated machine: one shared, file-backed mapping of struct pages.

File format (all offsets from the start of the file):

    0      8   magic b"KSMEMU\\x00\\x01"
    8      4   format version (little-endian u32)
    12     4   length N of the JSON header that follows
    16     N   JSON: config (Config.as_dict), protocol, nr_pages, regions
    ...        regions, each at a 4 KiB aligned offset

A region is {name, offset, size, base}: `base` is the emulated kernel address
of its first byte, so a pointer stored in a record (a struct page address, a
stable_node address) translates to a file offset and back.  The struct page
array is region "mem_map" at the config's mem_map address; the regions the
emulation adds live in the direct map (PAGE_OFFSET + a physical offset), as
kmalloc'd objects do.

Creating a machine writes the header and initialises each struct page as
free (_count 0, _mapcount -1) with one vectorised write: no Python object per
page.  Attaching checks everything before it maps a byte and never writes.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomics import Atomics
from .kconfig import Config, ConfigError, from_dict
from .layout import Layout
from .structs import Kernel, kernel_for

MAGIC = b"KSMEMU\x00\x01"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<8sII")
HEADER_MAX = 1 << 16  # room for the JSON header: regions can be added later
ALIGN = 4096
PAGE_SIZE = 4096  # emulated PAGE_SIZE (pfn <-> physical address)
DEFAULT_STATE = "/dev/shm/ksm-emu.state"
DIRECT_MAP_START = 16 << 20  # first physical byte the direct-map regions use


class MachineError(Exception):
    """The machine file cannot be created or attached; the message says why."""


@dataclass(frozen=True)
class Region:
    name: str
    offset: int  # in the file
    size: int
    base: int  # emulated kernel address of the first byte

    def as_dict(self) -> dict:
        return {"name": self.name, "offset": self.offset, "size": self.size, "base": self.base}


@dataclass(frozen=True)
class RegionSpec:
    """A region to create: its size, and its address (None: next free direct-map range)."""

    name: str
    size: int
    base: int | None = None


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def _layout_regions(cfg: Config, nr_pages: int, page_size: int,
                    specs: Iterable[RegionSpec]) -> list[Region]:
    regions = []
    off = _align(PREFIX.size + HEADER_MAX)
    regions.append(Region("mem_map", off, nr_pages * page_size, cfg.mem_map))
    off = _align(off + nr_pages * page_size)
    phys = DIRECT_MAP_START
    for s in specs:
        if s.name in {r.name for r in regions}:
            raise MachineError(f"region {s.name!r} given twice")
        if s.size <= 0:
            raise MachineError(f"region {s.name!r} must have a positive size, not {s.size}")
        base = s.base
        while base is None:  # next direct-map range that no region occupies
            cand = cfg.page_offset + phys
            clash = [r for r in regions if cand < r.base + r.size and r.base < cand + s.size]
            if not clash:
                base = cand
            else:
                phys = _align(max(r.base + r.size for r in clash) - cfg.page_offset, 1 << 20)
        regions.append(Region(s.name, off, s.size, base))
        phys = _align(base + s.size - cfg.page_offset, 1 << 20) if base >= cfg.page_offset else phys
        off = _align(off + s.size)
    _check_regions(regions, None, cfg)
    return regions


def _check_regions(regions: list[Region], file_size: int | None, cfg: Config) -> None:
    limit = 1 << cfg.arch.word_bits
    for r in regions:
        if r.offset % ALIGN or r.offset < PREFIX.size or r.size < 0:
            raise MachineError(f"region {r.name!r} at file offset {r.offset} is misplaced")
        if file_size is not None and r.offset + r.size > file_size:
            raise MachineError(f"region {r.name!r} (offset {r.offset}, size {r.size}) lies beyond "
                               f"the end of the file ({file_size} bytes): truncated?")
        if not (0 <= r.base and r.base + r.size <= limit):
            raise MachineError(f"region {r.name!r} at {r.base:#x} does not fit the "
                               f"{cfg.arch.word_bits}-bit address space")
    by_off = sorted(regions, key=lambda r: r.offset)
    for a, b in zip(by_off, by_off[1:]):
        if a.offset + a.size > b.offset:
            raise MachineError(f"regions {a.name!r} and {b.name!r} overlap in the file")
    by_addr = sorted(regions, key=lambda r: r.base)
    for a, b in zip(by_addr, by_addr[1:]):
        if a.base + a.size > b.base:
            raise MachineError(f"regions {a.name!r} and {b.name!r} overlap in the emulated "
                               f"address space ({a.base:#x}, {b.base:#x})")


class Machine:
    """An attached machine: the mapping, its atomics, the struct page array."""

    def __init__(self, path: Path, fd: int, header: dict, cfg: Config, regions: list[Region]) -> None:
        self.path = path
        self.header = header
        self.cfg = cfg
        self.protocol: str = header["protocol"]
        self.nr_pages: int = header["nr_pages"]
        self.kernel: Kernel = kernel_for(cfg)
        self.page_layout = Layout(self.kernel.page, cfg.byte_order, "page")
        self.page_size = self.page_layout.size
        self.regions = {r.name: r for r in regions}
        self.size = os.fstat(fd).st_size
        self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.atomics = Atomics(self.mm, cfg.byte_order)
        mem_map = self.regions["mem_map"]
        self.mem_map_offset = mem_map.offset
        # frombuffer holds a buffer export: the mapping cannot be closed under a view
        self.pages = np.frombuffer(self.mm, self.page_layout.dtype, self.nr_pages, mem_map.offset)

    # -- emulated addresses ------------------------------------------------
    def page_offset(self, pfn: int) -> int:
        """File offset of struct page `pfn` (bounds-checked)."""
        if not 0 <= pfn < self.nr_pages:
            raise IndexError(f"pfn {pfn} out of range 0..{self.nr_pages - 1}")
        return self.mem_map_offset + pfn * self.page_size

    def pfn_to_page(self, pfn: int) -> int:
        """Emulated address of struct page `pfn`."""
        self.page_offset(pfn)
        return self.cfg.mem_map + pfn * self.page_size

    def page_to_pfn(self, page: int) -> int:
        d = page - self.cfg.mem_map
        if d < 0 or d % self.page_size or d // self.page_size >= self.nr_pages:
            raise ValueError(f"{page:#x} is not a struct page address of this machine")
        return d // self.page_size

    def addr_to_offset(self, addr: int, size: int = 1) -> int:
        """File offset of emulated address `addr` (and the `size` bytes after it)."""
        for r in self.regions.values():
            if r.base <= addr and addr + size <= r.base + r.size:
                return r.offset + (addr - r.base)
        raise ValueError(f"address {addr:#x} is in no region of this machine")

    def offset_to_addr(self, off: int) -> int:
        for r in self.regions.values():
            if r.offset <= off < r.offset + r.size:
                return r.base + (off - r.offset)
        raise ValueError(f"file offset {off} is in no region")

    def region(self, name: str) -> Region:
        try:
            return self.regions[name]
        except KeyError:
            raise MachineError(f"no region {name!r}; regions: {', '.join(self.regions)}") from None

    def region_array(self, name: str, dtype: np.dtype | str) -> np.ndarray:
        """A numpy view of a region as records of `dtype` (for reading and inspection)."""
        r = self.region(name)
        dt = np.dtype(dtype)
        return np.frombuffer(self.mm, dt, r.size // dt.itemsize, r.offset)

    def close(self) -> None:
        """Detach. Views the caller still holds keep the mapping alive (and
        valid) until they go; it is unmapped when the last one does."""
        self.atomics.release()
        self.pages = None  # type: ignore[assignment]
        try:
            self.mm.close()
        except BufferError:
            pass  # a caller's numpy view pins it; it closes with that view

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_space(path: Path, size: int) -> None:
    """The file is sparse: running out of space would come later, as SIGBUS on a
    page fault in the middle of a run. Refuse now instead."""
    try:
        st = os.statvfs(path.parent if str(path.parent) else ".")
    except OSError as e:
        raise MachineError(f"cannot create {path}: {e.strerror}") from None
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise MachineError(f"{path}: the machine needs {size >> 20} MiB, the file system has "
                           f"{free >> 20} MiB free")


def create(path: str | os.PathLike, cfg: Config, nr_pages: int, *, protocol: str = "keyhole",
           regions: Iterable[RegionSpec] = (), overwrite: bool = False,
           meta: Mapping | None = None) -> Machine:
    """Create a machine file and attach to it. `meta` is stored in the header
    as is (the emulation's geometry, for tools that inspect the file)."""
    path = Path(path)
    if nr_pages <= 0:
        raise MachineError(f"a machine needs at least one page, not {nr_pages}")
    k = kernel_for(cfg)
    page_size = k.page.size
    regs = _layout_regions(cfg, nr_pages, page_size, regions)
    header = {"config": cfg.as_dict(), "protocol": protocol, "nr_pages": nr_pages,
              "page_size": page_size, "regions": [r.as_dict() for r in regs], "meta": dict(meta or {})}
    blob = json.dumps(header).encode()
    if len(blob) > HEADER_MAX:
        raise MachineError("header too large: too many regions")
    size = max(_align(r.offset + r.size) for r in regs)
    _check_space(path, size)
    flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise MachineError(f"{path} exists; remove it or pass overwrite") from None
    except OSError as e:
        raise MachineError(f"cannot create {path}: {e.strerror}") from None
    try:
        os.ftruncate(fd, size)  # sparse: untouched regions cost nothing
        os.pwrite(fd, PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob, 0)
        m = Machine(path, fd, header, cfg, regs)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise MachineError(f"cannot create {path}: {e.strerror}") from None
    os.close(fd)
    # Free pages: _count 0 (the file is zero), _mapcount -1.
    m.pages["_mapcount.counter"] = -1
    return m


def read_header(path: str | os.PathLike) -> dict:
    """Read and check a machine file's header without mapping or writing it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(PREFIX.size)
            if len(prefix) < PREFIX.size:
                raise MachineError(f"{path}: {size} bytes is too short for a machine header (truncated?)")
            magic, version, n = PREFIX.unpack(prefix)
            if magic != MAGIC:
                raise MachineError(f"{path}: not a ksm-emu machine file (bad magic {magic!r})")
            if version != FORMAT_VERSION:
                raise MachineError(f"{path}: format version {version}, this ksm-emu reads {FORMAT_VERSION}")
            if n > HEADER_MAX:
                raise MachineError(f"{path}: header length {n} exceeds {HEADER_MAX}")
            blob = f.read(n)
    except FileNotFoundError:
        raise MachineError(f"{path}: no such machine file") from None
    except IsADirectoryError:
        raise MachineError(f"{path}: is a directory, not a machine file") from None
    except PermissionError:
        raise MachineError(f"{path}: permission denied") from None
    if len(blob) < n:
        raise MachineError(f"{path}: header truncated ({len(blob)} of {n} bytes)")
    try:
        header = json.loads(blob)
        header["file_size"] = size
        for key in ("config", "protocol", "nr_pages", "page_size", "regions"):
            header[key]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError) as e:
        raise MachineError(f"{path}: header is corrupt ({e})") from None
    return header


def attach(path: str | os.PathLike, expect: Config | None = None,
           expect_protocol: str | None = None) -> Machine:
    """Attach to an existing machine, refusing anything that does not add up."""
    path = Path(path)
    header = read_header(path)
    try:
        cfg = from_dict(header["config"])
    except ConfigError as e:
        raise MachineError(f"{path}: config in header is invalid: {e}") from None
    if expect is not None and expect.as_dict() != cfg.as_dict():
        diffs = [f"{k}={cfg.as_dict().get(k)!r} (expected {v!r})"
                 for k, v in expect.as_dict().items() if cfg.as_dict().get(k) != v]
        raise MachineError(f"{path}: config does not match: {', '.join(diffs)}")
    if expect_protocol is not None and header["protocol"] != expect_protocol:
        raise MachineError(f"{path}: protocol is {header['protocol']!r}, expected {expect_protocol!r}")
    try:
        regions = [Region(r["name"], int(r["offset"]), int(r["size"]), int(r["base"]))
                   for r in header["regions"]]
    except (KeyError, TypeError, ValueError) as e:
        raise MachineError(f"{path}: region table is corrupt ({e})") from None
    _check_regions(regions, header["file_size"], cfg)
    names = [r.name for r in regions]
    if len(set(names)) != len(names) or "mem_map" not in names:
        raise MachineError(f"{path}: region table is corrupt (names {names})")
    page_size = kernel_for(cfg).page.size
    mem_map = regions[names.index("mem_map")]
    if header["page_size"] != page_size or mem_map.size != header["nr_pages"] * page_size:
        raise MachineError(f"{path}: mem_map holds {mem_map.size} bytes, but {header['nr_pages']} "
                           f"struct pages of {page_size} bytes need {header['nr_pages'] * page_size}")
    if mem_map.base != cfg.mem_map:
        raise MachineError(f"{path}: mem_map at {mem_map.base:#x}, config says {cfg.mem_map:#x}")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise MachineError(f"{path}: cannot open for writing: {e.strerror}") from None
    try:
        return Machine(path, fd, header, cfg, regions)
    finally:
        os.close(fd)

