"""The emulated machine: one shared, file-backed mapping of struct pages.

The file's format (header, region table) is emu.machfile's.

Creating a machine writes the header and initialises each struct page as
free (_count 0, _mapcount -1) with one vectorised write: no Python object per
page.  Attaching checks everything before it maps a byte and never writes;
it maps the very file descriptor whose header it checked.  A read-only attach
(`kmem`) opens and maps the file read-only: numpy views are read-only and its
atomics refuse every write.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ._atomics import Atomics
from .kconfig import Config, ConfigError, from_dict
from .layout import Layout
from .machfile import (  # noqa: F401 - re-exported: the file format's names
    ALIGN,
    DATA_START,
    FORMAT_VERSION,
    HEADER_MAX,
    MAGIC,
    PAGE_SIZE,
    PREFIX,
    MachineError,
    Region,
    RegionSpec,
    align_up,
    check_regions,
    layout_regions,
    open_regular,
    read_header,
    read_header_fd,
)
from .structs import Kernel, kernel_for


class ReadOnlyAtomics:
    """Loads from a read-only mapping, checked like Atomics'; every write refused."""

    def __init__(self, buf: mmap.mmap, byte_order: str) -> None:
        self.buf, self.byte_order = buf, byte_order
        self.length = len(buf)

    def load(self, off: int, size: int, signed: bool = False, order: int = 0, big: bool | None = None) -> int:
        if size not in (1, 2, 4, 8):
            raise ValueError(f"field size must be 1, 2, 4 or 8 bytes, not {size}")
        if not 0 <= off <= self.length - size:
            raise IndexError(f"offset {off} (+{size}) out of bounds of a {self.length}-byte buffer")
        if off % size:
            raise ValueError(f"offset {off} is not aligned for a {size}-byte field")
        order_ = self.byte_order if big is None else ("big" if big else "little")
        return int.from_bytes(self.buf[off:off + size], order_, signed=signed)

    def _refuse(self, *args: object, **kw: object) -> int:
        raise MachineError("the machine is attached read-only: no writes")

    store = xchg = cas = fetch_add = fetch_sub = fetch_and = fetch_or = fetch_xor = _refuse

    def release(self) -> None:
        pass


class Machine:
    """An attached machine: the mapping, its atomics, the struct page array."""

    def __init__(self, path: Path, fd: int, header: dict, cfg: Config, regions: list[Region],
                 readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.header = header
        self.cfg = cfg
        self.meta: dict = header.get("meta", {})
        self.nr_pages: int = header["nr_pages"]
        self.kernel: Kernel = kernel_for(cfg)
        self.page_layout = Layout(self.kernel.page, cfg.byte_order, "page")
        self.page_size = self.page_layout.size
        self.regions = {r.name: r for r in regions}
        self.size = os.fstat(fd).st_size
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, prot)
        self.atomics = ReadOnlyAtomics(self.mm, cfg.byte_order) if readonly else Atomics(self.mm, cfg.byte_order)
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
        if size < 1:
            raise ValueError(f"size {size}: want at least one byte")
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

    def drop_resident(self, off: int, size: int) -> None:
        """Unmap the resident pages of [off, off + size) from this process (the
        file keeps them): a reader streaming a big machine stays small."""
        lo = off // mmap.PAGESIZE * mmap.PAGESIZE
        hi = min(self.size, align_up(off + size, mmap.PAGESIZE))
        if hi > lo:
            self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

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


def create(path: str | os.PathLike, cfg: Config, nr_pages: int, *,
           regions: Iterable[RegionSpec] = (), overwrite: bool = False,
           meta: Mapping | None = None, fd: int | None = None) -> Machine:
    """Create a machine file (mode 0600, never through a symlink) and attach to
    it. `meta` is stored in the header as is: what the emulation on top keeps
    there (its geometry, protocol, CPUs), for the processes that attach and the
    tools that inspect the file. `fd`: an empty file the caller has already
    created (and locked) at `path`; it stays the caller's to close."""
    path = Path(path)
    if nr_pages <= 0:
        raise MachineError(f"a machine needs at least one page, not {nr_pages}")
    k = kernel_for(cfg)
    page_size = k.page.size
    regs = layout_regions(cfg, nr_pages, page_size, regions)
    header = {"config": cfg.as_dict(), "nr_pages": nr_pages,
              "page_size": page_size, "regions": [r.as_dict() for r in regs], "meta": dict(meta or {})}
    blob = json.dumps(header).encode()
    if len(blob) > HEADER_MAX:
        raise MachineError("header too large: too many regions")
    size = max(align_up(r.offset + r.size) for r in regs)
    _check_space(path, size)
    own = fd is None
    if fd is None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise MachineError(f"{path} exists; not replacing it") from None
        except OSError as e:
            raise MachineError(f"cannot create {path}: {e.strerror}") from None
    try:
        os.ftruncate(fd, size)  # sparse: untouched regions cost nothing
        os.pwrite(fd, PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob, 0)
        m = Machine(path, fd, header, cfg, regs)
    except OSError as e:
        if own:
            os.close(fd)
            path.unlink(missing_ok=True)
        raise MachineError(f"cannot create {path}: {e.strerror}") from None
    if own:
        os.close(fd)
    # Free pages: _count 0 (the file is zero), _mapcount -1.
    m.pages["_mapcount.counter"] = -1
    return m


def attach(path: str | os.PathLike, expect: Config | None = None,
           expect_meta: Mapping | None = None, readonly: bool = False) -> Machine:
    """Attach to an existing machine, refusing anything that does not add up.
    `expect_meta` names entries of the header's meta that must hold given values.
    The header is read from, and checked against, the descriptor that is mapped."""
    path = Path(path)
    fd = open_regular(path, os.O_RDONLY if readonly else os.O_RDWR)
    try:
        header = read_header_fd(fd, path)
        cfg, regions = _check_attach(path, header, expect, expect_meta)
        return Machine(path, fd, header, cfg, regions, readonly=readonly)
    except OSError as e:
        raise MachineError(f"{path}: cannot map: {e.strerror}") from None
    finally:
        os.close(fd)


def _check_attach(path: Path, header: dict, expect: Config | None,
                  expect_meta: Mapping | None) -> tuple[Config, list[Region]]:
    try:
        cfg = from_dict(header["config"])
    except ConfigError as e:
        raise MachineError(f"{path}: config in header is invalid: {e}") from None
    if expect is not None and expect.as_dict() != cfg.as_dict():
        diffs = [f"{k}={cfg.as_dict().get(k)!r} (expected {v!r})"
                 for k, v in expect.as_dict().items() if cfg.as_dict().get(k) != v]
        raise MachineError(f"{path}: config does not match: {', '.join(diffs)}")
    meta = header.get("meta", {})
    for key, want in (expect_meta or {}).items():
        if meta.get(key) != want:
            raise MachineError(f"{path}: {key} is {meta.get(key)!r}, expected {want!r}")
    regions = [Region(r["name"], r["offset"], r["size"], r["base"]) for r in header["regions"]]
    check_regions(regions, header["file_size"], cfg)
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
    return cfg, regions
