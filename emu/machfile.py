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
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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


def layout_regions(cfg: Config, nr_pages: int, page_size: int,
                    specs: Iterable[RegionSpec]) -> list[Region]:
    regions = []
    off = align_up(PREFIX.size + HEADER_MAX)
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
        for key in ("config", "nr_pages", "page_size", "regions"):
            header[key]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError) as e:
        raise MachineError(f"{path}: header is corrupt ({e})") from None
    return header
