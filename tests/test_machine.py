"""The shared mapping: layout of the file, emulated addresses, refused attaches."""

import hashlib
import json
import os
import re

import numpy as np
import pytest

from emu.kconfig import resolve
from emu.machine import HEADER_MAX, PREFIX, MachineError, RegionSpec, attach, create, read_header


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns


def test_create_initialises_free_pages(make_machine):
    m, path = make_machine(resolve("ppc64"), nr_pages=1000)
    assert (m.pages["_count.counter"] == 0).all() and (m.pages["_mapcount.counter"] == -1).all()
    off = m.page_offset(999) + m.page_layout.offset("_mapcount.counter")
    assert bytes(m.mm[off:off + 4]) == b"\xff" * 4
    assert (m.pages["mapping"] == 0).all()


def test_header_and_regions(make_machine):
    cfg = resolve("sparc64", "2.6.32", enable=["PREEMPT"])
    m, path = make_machine(cfg, nr_pages=100, regions=[RegionSpec("stable_nodes", 8192),
                                                        RegionSpec("shadow", 4096)], meta={"protocol": "keyhole"})
    h = read_header(path)
    assert h["config"] == cfg.as_dict() and h["meta"]["protocol"] == "keyhole" and h["nr_pages"] == 100
    regions = {r["name"]: r for r in h["regions"]}
    assert regions["mem_map"]["base"] == cfg.mem_map
    assert regions["stable_nodes"]["base"] == cfg.page_offset + (16 << 20)
    assert regions["mem_map"]["size"] == 100 * m.page_size
    assert all(r["offset"] % 4096 == 0 for r in regions.values())


@pytest.mark.parametrize("arch", ["x86_64", "i386", "ppc64", "s390x"])
def test_address_translation(make_machine, arch):
    cfg = resolve(arch)
    m, _ = make_machine(cfg, nr_pages=50, regions=[RegionSpec("stable_nodes", 8192)])
    page = m.pfn_to_page(17)
    assert page == cfg.mem_map + 17 * m.page_size
    assert m.page_to_pfn(page) == 17
    assert m.addr_to_offset(page) == m.page_offset(17)
    sn = m.region("stable_nodes")
    assert m.addr_to_offset(sn.base + 40) == sn.offset + 40
    assert m.offset_to_addr(sn.offset + 40) == sn.base + 40
    for bad in (page + 1, cfg.mem_map + 50 * m.page_size):
        with pytest.raises(ValueError):
            m.page_to_pfn(bad)
    with pytest.raises(IndexError):
        m.pfn_to_page(50)
    with pytest.raises(ValueError, match="no region"):
        m.addr_to_offset(sn.base + sn.size)


def test_pointer_bytes_in_arch_order(make_machine):
    m, _ = make_machine(resolve("ppc64"), nr_pages=8)
    page = m.pfn_to_page(3)
    off = m.page_offset(1) + m.page_layout.offset("lru.next")
    m.atomics.store(off, 8, page)
    assert bytes(m.mm[off:off + 8]) == page.to_bytes(8, "big")
    assert int(m.pages[1]["lru.next"]) == page


def test_address_map_override_and_clash(tmp_path):
    cfg = resolve("x86_64", page_offset=0xFFFF880100000000)
    m = create(tmp_path / "a", cfg, 8, regions=[RegionSpec("stable_nodes", 4096)])
    assert m.region("stable_nodes").base == 0xFFFF880100000000 + (16 << 20)
    m.close()
    with pytest.raises(MachineError, match="overlap in the emulated address space"):
        create(tmp_path / "b", cfg, 8, regions=[RegionSpec("x", 4096, base=cfg.mem_map + 64)])


def test_create_refuses_beyond_free_space(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(MachineError, match="MiB free"):
        create(tmp_path / "huge", resolve(), free // 32)  # 64-byte struct pages: twice the space
    assert not (tmp_path / "huge").exists()


def test_create_errors(tmp_path, make_machine):
    _, path = make_machine()
    with pytest.raises(MachineError, match="exists"):
        create(path, resolve(), 8)
    with pytest.raises(MachineError, match="at least one page"):
        create(tmp_path / "z", resolve(), 0)
    with pytest.raises(MachineError, match="cannot create"):
        create(tmp_path / "no" / "dir", resolve(), 8)


# -- refused attaches: each with its message, and the file left untouched ----

def _rewrite_header(path, mutate):
    with open(path, "r+b") as f:
        magic, version, n = PREFIX.unpack(f.read(PREFIX.size))
        h = json.loads(f.read(n))
        mutate(h)
        blob = json.dumps(h).encode()
        f.seek(0)
        f.write(PREFIX.pack(magic, version, len(blob)) + blob)


def _set_prefix(path, magic=None, version=None, n=None):
    with open(path, "r+b") as f:
        m0, v0, n0 = PREFIX.unpack(f.read(PREFIX.size))
        f.seek(0)
        f.write(PREFIX.pack(magic or m0, v0 if version is None else version, n0 if n is None else n))


CORRUPTIONS = {
    "magic": (lambda p: _set_prefix(p, magic=b"NOTKSMEM"), "bad magic"),
    "version": (lambda p: _set_prefix(p, version=99), "format version 99"),
    "header length": (lambda p: _set_prefix(p, n=HEADER_MAX + 1), "exceeds"),
    "json": (lambda p: open(p, "r+b").write(PREFIX.size * b"\0" + b"{"), "bad magic"),
    "json body": (lambda p: _rewrite_header(p, lambda h: h.pop("regions")), "corrupt"),
    "region out of bounds": (lambda p: _rewrite_header(
        p, lambda h: h["regions"][1].update(offset=h["regions"][1]["offset"] + (1 << 30))), "beyond the end"),
    "region overlap": (lambda p: _rewrite_header(
        p, lambda h: h["regions"][1].update(offset=h["regions"][0]["offset"])), "overlap in the file"),
    "page count": (lambda p: _rewrite_header(p, lambda h: h.update(nr_pages=h["nr_pages"] + 1)), "mem_map holds"),
    "config": (lambda p: _rewrite_header(p, lambda h: h["config"].update(USE_SPLIT_PTLOCKS=False)),
               "inconsistent"),
    "truncated": (lambda p: os.truncate(p, os.path.getsize(p) // 2), "beyond the end of the file"),
    "truncated header": (lambda p: os.truncate(p, 10), "too short"),
}


@pytest.mark.parametrize("what", list(CORRUPTIONS))
def test_refused_attach(make_machine, what):
    m, path = make_machine(resolve("ppc64"), nr_pages=64)
    m.close()
    corrupt, msg = CORRUPTIONS[what]
    corrupt(path)
    before = digest(path)
    with pytest.raises(MachineError, match=msg):
        attach(path)
    assert digest(path) == before


def test_refused_attach_expectations(make_machine, tmp_path):
    m, path = make_machine(resolve("ppc64"), nr_pages=64, meta={"protocol": "keyhole"})
    before = digest(path)
    with pytest.raises(MachineError, match=r"arch='ppc64' \(expected 'x86_64'\)"):
        attach(path, expect=resolve("x86_64"))
    with pytest.raises(MachineError, match="PREEMPT=False"):
        attach(path, expect=resolve("ppc64", enable=["PREEMPT"]))
    with pytest.raises(MachineError, match="protocol is 'keyhole', expected 'refcount'"):
        attach(path, expect_meta={"protocol": "refcount"})
    with pytest.raises(MachineError, match="no such machine file"):
        attach(tmp_path / "missing")
    with pytest.raises(MachineError, match="is a directory"):
        attach(tmp_path)
    assert digest(path) == before
    m2 = attach(path, expect=resolve("ppc64"), expect_meta={"protocol": "keyhole"})
    assert m2.nr_pages == 64
    m2.close()


def test_two_attaches_share_bytes(make_machine):
    m, path = make_machine(nr_pages=16)
    m2 = attach(path)
    m.atomics.store(m.page_offset(3) + m.page_layout.offset("flags"), 8, 0x1234)
    assert int(m2.pages[3]["flags"]) == 0x1234
    assert np.shares_memory(m2.pages, m2.pages)  # a view, not a copy
    m2.close()


def test_close_with_live_view_is_safe(make_machine):
    m, _ = make_machine(nr_pages=4)
    arr = m.region_array("scratch", np.uint64)
    rec = m.pages[2]
    m.close()  # no error, and the views stay valid (no use-after-unmap)
    arr[0] = 5
    assert arr[0] == 5 and int(rec["_mapcount.counter"]) == -1
    with pytest.raises(ValueError, match="released"):
        m.atomics.load(0, 4)


def test_page_refs_bug_on_zero(tmp_path):
    """Under the unit tests' policy a BUG raises, and leaves the count as it was."""
    from emu.check.truth import RAISE
    from emu.check.violations import RefcountBug
    from emu.mm.boot import boot
    from emu.mm.page import page_mapping_raw, set_page_mapping
    from emu.mm.refcount import get_page, page_count, page_freeze_refs, page_unfreeze_refs, put_page_testzero

    w = boot(tmp_path / "w", resolve("s390x"), 64)
    mm = w.context(cpu=0, policy=RAISE)
    pfn = 40  # free
    with pytest.raises(RefcountBug, match=f"get_page on pfn {pfn} with _count 0"):
        get_page(mm, pfn)
    with pytest.raises(RefcountBug, match=f"put_page on pfn {pfn}"):
        put_page_testzero(mm, pfn)
    assert page_count(mm, pfn) == 0  # neither left it changed
    page_unfreeze_refs(mm, pfn, 2)
    assert not page_freeze_refs(mm, pfn, 1) and page_freeze_refs(mm, pfn, 2) and page_count(mm, pfn) == 0
    set_page_mapping(mm, pfn, 0x3, 0)
    m = w.machine
    assert page_mapping_raw(mm, pfn) == 3 and bytes(m.mm[m.page_offset(pfn) + mm.mapping_rel:][:8]) == \
        (3).to_bytes(8, "big")
    w.close()


# -- hostile headers: each a MachineError naming the field, never a crash ----

def _deep(n):
    return "[" * n + "]" * n


HOSTILE = {
    "config is a list": (lambda h: h.update(config=[1, 2]), "config is not an object"),
    "config is a string": (lambda h: h.update(config="x86_64"), "config is not an object"),
    "arch is a list": (lambda h: h["config"].update(arch=["x86_64"]), "arch is"),
    "NR_CPUS is a string": (lambda h: h["config"].update(NR_CPUS="64"), "NR_CPUS is '64', not a int"),
    "PAGE_OFFSET is a string": (lambda h: h["config"].update(PAGE_OFFSET="0"), "PAGE_OFFSET"),
    "MEM_MAP is a float": (lambda h: h["config"].update(MEM_MAP=1.5), "MEM_MAP"),
    "SMP is a number": (lambda h: h["config"].update(SMP=1), "SMP"),
    "nr_pages is a float": (lambda h: h.update(nr_pages=64.0), "nr_pages is 64.0"),
    "nr_pages is 0": (lambda h: h.update(nr_pages=0), "nr_pages is 0"),
    "nr_pages is true": (lambda h: h.update(nr_pages=True), "nr_pages is True"),
    "region name is a list": (lambda h: h["regions"][1].update(name=["x"]), "has no name"),
    "region offset is a float": (lambda h: h["regions"][1].update(offset=float(h["regions"][1]["offset"])),
                                 "offset is"),
    "region offset is a string": (lambda h: h["regions"][1].update(offset=str(h["regions"][1]["offset"])),
                                  "offset is"),
    "region inside the header": (lambda h: h["regions"][1].update(offset=4096), "misplaced"),
    "regions is an object": (lambda h: h.update(regions={}), "regions is not a list"),
    "meta is a list": (lambda h: h.update(meta=[]), "meta is not an object"),
    "header is a list": (lambda h: h.clear(), "no 'config'"),
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_hostile_header_refused(make_machine, what):
    m, path = make_machine(resolve("ppc64"), nr_pages=64)
    m.close()
    mutate, msg = HOSTILE[what]
    _rewrite_header(path, mutate)
    before = digest(path)
    with pytest.raises(MachineError, match=re.escape(msg) if "(" not in msg else msg):
        attach(path, readonly=True)
    assert digest(path) == before


def test_hostile_json_refused(make_machine):
    m, path = make_machine(nr_pages=8)
    m.close()
    for blob, msg in ((_deep(5000).encode(), "nested too deeply"), (b"[1, 2]", "not an object"),
                      (b"\xff\xfe", "corrupt")):
        with open(path, "r+b") as f:
            f.write(PREFIX.pack(b"KSMEMU\x00\x01", 1, len(blob)) + blob)
        with pytest.raises(MachineError, match=msg):
            attach(path)


def test_special_and_broken_paths_refused(tmp_path):
    """FIFOs are refused before an open that would block; OS errors are one message."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    (tmp_path / "file").write_text("x")
    for path, msg in ((fifo, "is a FIFO"), (loop, "symbolic links"), (tmp_path / "file" / "x", "Not a directory"),
                      (tmp_path / ("n" * 300), "File name too long"), ("/dev/null", "character device")):
        with pytest.raises(MachineError, match=msg):
            attach(path, readonly=True)


def test_readonly_attach(make_machine):
    m, path = make_machine(nr_pages=16)
    m.atomics.store(m.page_offset(3) + m.page_layout.offset("flags"), 8, 0x1234)
    os.chmod(path, 0o400)
    ro = attach(path, readonly=True)
    off = ro.page_offset(3) + ro.page_layout.offset("flags")
    assert ro.atomics.load(off, 8) == 0x1234 and int(ro.pages[3]["flags"]) == 0x1234
    with pytest.raises(MachineError, match="read-only"):
        ro.atomics.store(off, 8, 0)
    with pytest.raises(MachineError, match="read-only"):
        ro.atomics.cas(off, 8, 0x1234, 0)
    with pytest.raises(ValueError, match="read-only"):
        ro.pages["flags"][3] = 0
    with pytest.raises(IndexError):
        ro.atomics.load(ro.size, 8)
    assert int(m.pages[3]["flags"]) == 0x1234
    ro.close()


def test_attach_maps_the_file_it_checked(make_machine, monkeypatch):
    """A file replaced between the header check and the map is not what gets
    mapped: attach maps the descriptor it read (the replacement is forced
    right after the header is read)."""
    import emu.machine as machine

    good, path = make_machine(resolve("x86_64"), nr_pages=16)
    good.atomics.store(good.page_offset(1) + good.page_layout.offset("flags"), 8, 0xC0FFEE)
    other, opath = make_machine(resolve("ppc64"), nr_pages=32)
    real = machine.read_header_fd

    def swap_after_read(fd, p):
        h = real(fd, p)
        os.replace(opath, path)  # the path now names another machine
        return h

    monkeypatch.setattr(machine, "read_header_fd", swap_after_read)
    m = attach(path)
    assert m.cfg.arch.name == "x86_64" and m.nr_pages == 16 and int(m.pages[1]["flags"]) == 0xC0FFEE
    m.close()


def test_addr_to_offset_refuses_bad_sizes(make_machine):
    m, _ = make_machine(nr_pages=8)
    page = m.pfn_to_page(2)
    for size in (0, -200):
        with pytest.raises(ValueError, match="at least one byte"):
            m.addr_to_offset(page, size)
    with pytest.raises(ValueError, match="no region"):
        m.addr_to_offset(m.pfn_to_page(7), 2 * m.page_size)
