"""Several OS processes on one mapping, counting exactly."""

import os

import pytest
from support.procs import run_procs

from emu.kconfig import resolve
from emu.lockword import LockModel
from emu.machine import RegionSpec, attach
from emu.mm.boot import attach_world, boot
from emu.mm.memory import pte_alloc_one
from emu.mm.page import page_mapping_raw
from emu.mm.ptlock import pte_lock_deinit, pte_lock_init
from emu.mm.refcount import get_page_unless_zero, page_count, page_unfreeze_refs, put_page_testzero
from emu.mm.spinlock import SpinBug, SpinLockup, spin_is_locked, spin_lock, spin_trylock, spin_unlock

NPROC = 4


def _fetch_add_worker(path, off, n):
    m = attach(path)
    a = m.atomics
    for _ in range(n):
        a.fetch_add(off, 4, 1)
    m.close()


def test_fetch_add_4byte_exact(make_machine):
    m, path = make_machine()
    off = m.region("scratch").offset + 64
    n = 50_000
    run_procs(_fetch_add_worker, [(path, off, n)] * NPROC)
    assert m.atomics.load(off, 4) == NPROC * n


def _cas_worker(path, off, n, nogil):
    m = attach(path)
    a = m.atomics
    if nogil:
        a.loop_cas_increment(off, 8, n)
    else:
        for _ in range(n):
            old = a.load(off, 8)
            while (seen := a.cas(off, 8, old, old + 1)) != old:
                old = seen
    m.close()


def test_cas_loop_8byte_big_endian_exact(make_machine):
    m, path = make_machine(resolve("ppc64"))
    off = m.region("scratch").offset + 128
    start = 0x00000000FFFFFF00  # carries into the upper word during the run
    m.atomics.store(off, 8, start)
    n_py, n_c = 30_000, 300_000
    run_procs(_cas_worker, [(path, off, n_py, False), (path, off, n_py, False),
                            (path, off, n_c, True), (path, off, n_c, True)])
    total = start + 2 * n_py + 2 * n_c
    assert m.atomics.load(off, 8) == total
    assert bytes(m.mm[off:off + 8]) == total.to_bytes(8, "big")


# -- page->ptl --------------------------------------------------------------

LOCK_CONFIGS = {
    "x86_64 ticket8 debug": dict(arch="x86_64", kernel="2.6.32", enable=["DEBUG_SPINLOCK"]),
    "i386 ticket16": dict(arch="i386", nr_cpus=256),
    "ppc64 lockbreak debug": dict(arch="ppc64", kernel="2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"]),
    "ppc32 lockbreak": dict(arch="ppc32", enable=["PREEMPT"]),
    "s390x lockbreak lockstat": dict(arch="s390x", enable=["PREEMPT", "LOCK_STAT"], split_ptlock_cpus=4),
    "sparc64 1-byte lockbreak": dict(arch="sparc64", enable=["PREEMPT"]),
    "arm lockbreak": dict(arch="arm", kernel="2.6.32", enable=["PREEMPT", "CPU_CACHE_VIPT"]),
    "mips64 ticket debug": dict(arch="mips64", kernel="2.6.32", enable=["DEBUG_SPINLOCK"]),
    "UP debug split=1": dict(arch="x86_64", kernel="2.6.32", enable=["DEBUG_SPINLOCK"], disable=["SMP"],
                             split_ptlock_cpus=1),
}
TASK = 0x7000
PFN = 17  # a free page (the boot's page tables took the first ones)


@pytest.fixture
def make_world(tmp_path):
    made = []

    def make(cfg, pages=64, extra=()):
        w = boot(tmp_path / f"w{len(made)}.state", cfg, pages, extra=extra)
        made.append(w)
        return w, tmp_path / f"w{len(made) - 1}.state"

    yield make
    for w in made:
        w.close()


def _ptl(w, pfn):
    return w.machine.page_offset(pfn) + w.offsets["ptl_rel"]


def _lock_worker(path, pfn, cpu, n, use_lock):
    """Plain (non-atomic) read-modify-write of page->index under page->ptl,
    yielding the CPU inside the critical section to invite races."""
    w = attach_world(path)
    mm = w.context(cpu=cpu, task=TASK + cpu * 0x100)
    off, lm = _ptl(w, pfn), mm.ptl_model
    m, lay = w.machine, w.machine.page_layout
    pages = m.pages
    seen_break = 0
    bad = []
    for _ in range(n):
        if use_lock:
            spin_lock(mm, off, lm)
            rec = pages[pfn]
            if lay.has(ptl_path := _p(m, "magic")):
                if (int(rec[ptl_path]), int(rec[_p(m, "owner_cpu")]), int(rec[_p(m, "owner")])) != \
                        (0xDEAD4EAD, cpu, mm.task):
                    bad.append(("held", int(rec[_p(m, "owner_cpu")]), int(rec[_p(m, "owner")])))
            if lay.has(_p(m, "break_lock")) and int(rec[_p(m, "break_lock")]) not in (0, 1):
                bad.append(("break_lock neither 0 nor 1", int(rec[_p(m, "break_lock")])))
        v = int(pages[pfn]["index"])
        os.sched_yield()
        pages[pfn]["index"] = v + 1
        if use_lock:
            if lay.has(_p(m, "break_lock")) and int(pages[pfn][_p(m, "break_lock")]) == 1:
                seen_break += 1
            spin_unlock(mm, off, lm)
    del pages
    w.close()
    return seen_break, bad


def _p(m, member):
    return ("ptl.rlock." if m.cfg.kernel == "2.6.33" else "ptl.") + member


@pytest.mark.parametrize("name", list(LOCK_CONFIGS))
def test_spin_lock_excludes_processes(make_world, name):
    cfg = resolve(**LOCK_CONFIGS[name])
    w, path = make_world(cfg)
    m = w.machine
    boot_cpu = w.context(cpu=0)
    pte_lock_init(boot_cpu, PFN)
    n = 2000
    results = run_procs(_lock_worker, [(path, PFN, cpu, n, True) for cpu in (1, 2, 3)])
    assert int(m.pages[PFN]["index"]) == 3 * n, "lost update under the lock"
    assert all(not bad for _, bad in results), [bad[:3] for _, bad in results]
    assert not spin_is_locked(boot_cpu, _ptl(w, PFN), boot_cpu.ptl_model)
    if m.page_layout.has(_p(m, "magic")):  # after release: SPINLOCK_MAGIC, owner -1, owner_cpu -1
        rec = m.pages[PFN]
        assert int(rec[_p(m, "magic")]) == 0xDEAD4EAD
        assert int(rec[_p(m, "owner_cpu")]) == 0xFFFFFFFF
        assert int(rec[_p(m, "owner")]) == (1 << 8 * cfg.word_bytes) - 1
        del rec
    if cfg["GENERIC_LOCKBREAK"] and cfg["DEBUG_LOCK_ALLOC"]:
        # lockdep's spin_lock is not BUILD_LOCK_OPS: break_lock is never written
        assert sum(s for s, _ in results) == 0
    elif cfg["GENERIC_LOCKBREAK"]:
        # waiters set it while the lock was held; the last acquirer, with no
        # one left waiting, reset it
        assert sum(s for s, _ in results) > 0, "no waiter ever set break_lock"
        assert int(m.pages[PFN][_p(m, "break_lock")]) == 0


def test_held_bytes_ppc64_cpu3(make_world):
    """The seed's case in bytes: CPU 3 holds page->ptl, page->mapping reads 0xdead4ead00000003."""
    w, _ = make_world(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    cpu3 = w.context(cpu=3, task=0xC000000001234560)
    pt = pte_alloc_one(cpu3)
    assert page_mapping_raw(cpu3, pt) == 0xDEAD4EADFFFFFFFF
    spin_lock(cpu3, _ptl(w, pt), cpu3.ptl_model)
    assert page_mapping_raw(cpu3, pt) == 0xDEAD4EAD00000003
    assert int(w.machine.pages[pt]["ptl.raw_lock.slock"]) == 0x80000003
    spin_unlock(cpu3, _ptl(w, pt), cpu3.ptl_model)
    pte_lock_deinit(cpu3, pt)
    assert page_mapping_raw(cpu3, pt) == 0


def test_spin_debug_checks(make_world):
    w, _ = make_world(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    cpu0, cpu2, cpu4 = (w.context(cpu=c, task=TASK + c) for c in (0, 2, 4))
    cpu2_other_task = w.context(cpu=2, task=TASK + 1)
    off, lm = _ptl(w, PFN), cpu0.ptl_model
    pte_lock_init(cpu0, PFN)
    with pytest.raises(SpinBug, match="already unlocked"):
        spin_unlock(cpu0, off, lm)
    spin_lock(cpu2, off, lm)
    with pytest.raises(SpinBug, match="recursion"):
        spin_lock(cpu2, off, lm)
    with pytest.raises(SpinBug, match="wrong owner"):
        spin_unlock(cpu2_other_task, off, lm)
    assert not spin_trylock(cpu4, off, lm)
    with pytest.raises(SpinLockup):
        spin_lock(cpu4, off, lm, max_spins=1000)
    spin_unlock(cpu2, off, lm)
    assert spin_trylock(cpu4, off, lm)
    spin_unlock(cpu4, off, lm)
    with pytest.raises(SpinBug, match="bad magic"):
        spin_lock(cpu0, _ptl(w, PFN + 1), lm)  # never initialised


def test_spinlock_offsets_checked(make_world):
    w, _ = make_world(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    mm = w.context(cpu=0)
    with pytest.raises(IndexError):
        spin_lock(mm, w.machine.size - 8, mm.ptl_model)
    with pytest.raises(ValueError, match="aligned"):
        spin_lock(mm, w.machine.page_offset(1) + 4, mm.ptl_model)
    with pytest.raises(ValueError, match="outside"):
        LockModel(kind="token", word=8, span=8, lock_rel=6, lock_size=4)


# -- get_page_unless_zero against a process driving the count to zero --------

def _refs_role(role, path, first, npfn):
    w = attach_world(path)
    mm = w.context(cpu={"dropper": 1}.get(role, 2))
    scratch = w.machine.region("scratch").offset
    a = w.machine.atomics
    done = scratch + 4 * npfn  # the dropper's "finished" flag
    revived = 0
    pfns = range(first, first + npfn)
    if role == "dropper":
        for i, pfn in enumerate(pfns):
            for _ in range(50):
                os.sched_yield()
            if put_page_testzero(mm, pfn):
                a.fetch_add(scratch + 4 * i, 4, 1)
        a.store(done, 4, 1)
    else:
        failed = [False] * npfn
        last = False
        while not last:
            last = a.load(done, 4) == 1  # one more full pass after the dropper ends
            for i, pfn in enumerate(pfns):
                got = get_page_unless_zero(mm, pfn)
                if got:
                    revived += failed[i]  # raised a count that had been zero
                    if put_page_testzero(mm, pfn):
                        a.fetch_add(scratch + 4 * i, 4, 1)
                else:
                    failed[i] = True
    w.close()
    return revived


def _race_refs(make_world):
    npfn, first = 64, 16
    w, path = make_world(resolve("ppc64"), pages=128, extra=[RegionSpec("scratch", 4096)])
    mm = w.context(cpu=0)
    for pfn in range(first, first + npfn):
        page_unfreeze_refs(mm, pfn, 1)  # one reference each: the dropper's
    revived = run_procs(_refs_role, [("getter", path, first, npfn), ("getter", path, first, npfn),
                                     ("dropper", path, first, npfn)])
    scratch = w.machine.region("scratch").offset
    zero_hits = [w.machine.atomics.load(scratch + 4 * i, 4) for i in range(npfn)]
    counts = [page_count(mm, p) for p in range(first, first + npfn)]
    return sum(revived), zero_hits, counts


def test_get_page_unless_zero_never_revives(make_world):
    revived, zero_hits, counts = _race_refs(make_world)
    assert revived == 0
    assert zero_hits == [1] * len(zero_hits)  # exactly one put dropped each page's last ref
    assert counts == [0] * len(counts)
