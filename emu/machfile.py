"""The machine file's format: a prefix, a JSON header and a region table.

File layout (all offsets from the start of the file):

    0      8   magic b"KSMEMU\\x00\\x01"
    8      4   format version (little-endian u32)
    12     4   length N of the JSON header that follows
    16     N   JSON: config (Config.as_dict), nr_pages, page_size, regions, meta
    ...        regions, each at a 4 KiB aligned offset

A region is {name, offset, size, base}: `base` is the emulated kernel address
of its first byte, so a pointer stored in a record (a struct page address, a
stable_node address) translates to a file offset and back. The struct page
array is region "mem_map" at the config's mem_map address; the regions the
emulation adds live in the direct map (PAGE_OFFSET + a physical offset), as
kmalloc'd objects do. Everything here reads and checks; nothing maps or writes.
A header is read from the open file that is then mapped, never by path twice.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .kconfig import Config

MAGIC = b"KSMEMU\x00\x01"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<8sII")
HEADER_MAX = 1 << 16  # room for the JSON header: regions can be added later
ALIGN = 4096
PAGE_SIZE = 4096  # emulated PAGE_SIZE (pfn <-> physical address)
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


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


DATA_START = align_up(PREFIX.size + HEADER_MAX)  # the first byte a region may use: after the header


def layout_regions(cfg: Config, nr_pages: int, page_size: int,
                    specs: Iterable[RegionSpec]) -> list[Region]:
    regions = []
    off = DATA_START
    regions.append(Region("mem_map", off, nr_pages * page_size, cfg.mem_map))
    off = align_up(off + nr_pages * page_size)
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
                phys = align_up(max(r.base + r.size for r in clash) - cfg.page_offset, 1 << 20)
        regions.append(Region(s.name, off, s.size, base))
        phys = align_up(base + s.size - cfg.page_offset, 1 << 20) if base >= cfg.page_offset else phys
        off = align_up(off + s.size)
    check_regions(regions, None, cfg)
    return regions


def check_regions(regions: list[Region], file_size: int | None, cfg: Config) -> None:
    limit = 1 << cfg.arch.word_bits
    for r in regions:
        if r.offset % ALIGN or r.offset < DATA_START or r.size < 0:
            raise MachineError(f"region {r.name!r} at file offset {r.offset} is misplaced "
                               f"(regions start at {DATA_START}, {ALIGN}-aligned)")
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


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def open_regular(path: str | os.PathLike, flags: int) -> int:
    """Open an existing machine file, refusing anything but a regular file
    before any open that could block (a FIFO) or act (a device)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise MachineError(f"{path}: is a directory, not a machine file")
        if not stat.S_ISREG(st.st_mode):
            raise MachineError(f"{path}: is a {file_kind(st.st_mode)}, not a machine file")
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MachineError(f"{path}: no such machine file") from None
    except PermissionError:
        raise MachineError(f"{path}: permission denied") from None
    except (OSError, ValueError) as e:  # ELOOP, ENOTDIR, ENAMETOOLONG, a NUL byte
        raise MachineError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
        os.close(fd)
        raise MachineError(f"{path}: not a regular file")
    return fd


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "special file"


def read_header(path: str | os.PathLike) -> dict:
    """Read and check a machine file's header without mapping or writing it."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        return read_header_fd(fd, path)
    finally:
        os.close(fd)


def read_header_fd(fd: int, path: str | os.PathLike) -> dict:
    """The header of the open file `fd`, every field checked for type and range
    (a hostile file gets a MachineError, never a crash or a silent conversion)."""
    try:
        size = os.fstat(fd).st_size
        prefix = os.pread(fd, PREFIX.size, 0)
        if len(prefix) < PREFIX.size:
            raise MachineError(f"{path}: {size} bytes is too short for a machine header (truncated?)")
        magic, version, n = PREFIX.unpack(prefix)
        if magic != MAGIC:
            # not the file's bytes: they may be anyone's (a password file), and are no help
            raise MachineError(f"{path}: not a ksm-emu machine file (bad magic)")
        if version != FORMAT_VERSION:
            raise MachineError(f"{path}: format version {version}, this ksm-emu reads {FORMAT_VERSION}")
        if n > HEADER_MAX:
            raise MachineError(f"{path}: header length {n} exceeds {HEADER_MAX}")
        blob = os.pread(fd, n, PREFIX.size)
    except OSError as e:
        raise MachineError(f"{path}: {e.strerror}") from None
    if len(blob) < n:
        raise MachineError(f"{path}: header truncated ({len(blob)} of {n} bytes)")
    try:
        header = json.loads(blob)
    except RecursionError:
        raise MachineError(f"{path}: header is corrupt (JSON nested too deeply)") from None
    except ValueError as e:
        raise MachineError(f"{path}: header is corrupt ({str(e)[:80]})") from None
    check_header(header, path)
    header["file_size"] = size
    return header


def check_header(h: object, path: str | os.PathLike) -> None:
    """Types and ranges of the header's fields (the config is checked by kconfig.from_dict)."""

    def bad(what: str) -> MachineError:
        return MachineError(f"{path}: header is corrupt ({what})")

    if not isinstance(h, dict):
        raise bad(f"a JSON {type(h).__name__}, not an object")
    for key in ("config", "nr_pages", "page_size", "regions"):
        if key not in h:
            raise bad(f"no {key!r}")
    if not isinstance(h["config"], dict):
        raise bad("config is not an object")
    if not isinstance(h.get("meta", {}), dict):
        raise bad("meta is not an object")
    for key in ("nr_pages", "page_size"):
        if not _int(h[key]) or h[key] < 1:
            raise bad(f"{key} is {h[key]!r}, not a positive integer")
    if not isinstance(h["regions"], list):
        raise bad("regions is not a list")
    for r in h["regions"]:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise bad(f"region {str(r)[:60]} has no name")
        for key in ("offset", "size", "base"):
            if not _int(r.get(key)) or r[key] < 0:
                raise bad(f"region {r['name']!r}: {key} is {r.get(key)!r}, not an integer >= 0")
