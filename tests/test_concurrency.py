"""Several OS processes on one mapping, counting exactly."""

import os

import pytest
from conftest import run_procs

from emu._atomics import SpinLockOps
from emu.kconfig import resolve
from emu.machine import attach
from emu.mm.ptlock import PtLock
from emu.mm.refcount import PageRefs

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


def _lock_worker(path, pfn, cpu, n, use_lock):
    """Plain (non-atomic) read-modify-write of page->index under page->ptl,
    yielding the CPU inside the critical section to invite races."""
    m = attach(path)
    ptl = PtLock(m) if use_lock else None
    lay = m.page_layout
    pages = m.pages
    task = TASK + cpu * 0x100
    seen_break = 0
    bad = []
    for _ in range(n):
        if use_lock:
            ptl.spin_lock(pfn, cpu, task)
            rec = pages[pfn]
            if lay.has(ptl_path := _p(m, "magic")):
                if (int(rec[ptl_path]), int(rec[_p(m, "owner_cpu")]), int(rec[_p(m, "owner")])) != \
                        (0xDEAD4EAD, cpu, task):
                    bad.append(("held", int(rec[_p(m, "owner_cpu")]), int(rec[_p(m, "owner")])))
            if lay.has(_p(m, "break_lock")) and int(rec[_p(m, "break_lock")]) not in (0, 1):
                bad.append(("break_lock neither 0 nor 1", int(rec[_p(m, "break_lock")])))
        v = int(pages[pfn]["index"])
        os.sched_yield()
        pages[pfn]["index"] = v + 1
        if use_lock:
            if lay.has(_p(m, "break_lock")) and int(pages[pfn][_p(m, "break_lock")]) == 1:
                seen_break += 1
            ptl.spin_unlock(pfn, cpu, task)
    del pages
    m.close()
    return seen_break, bad


def _p(m, member):
    return ("ptl.rlock." if m.cfg.kernel == "2.6.33" else "ptl.") + member


@pytest.mark.parametrize("name", list(LOCK_CONFIGS))
def test_spin_lock_excludes_processes(make_machine, name):
    cfg = resolve(**LOCK_CONFIGS[name])
    m, path = make_machine(cfg)
    ptl = PtLock(m)
    pfn = 7
    ptl.pte_lock_init(pfn)
    n = 2000
    results = run_procs(_lock_worker, [(path, pfn, cpu, n, True) for cpu in (1, 2, 3)])
    assert int(m.pages[pfn]["index"]) == 3 * n, "lost update under the lock"
    assert all(not bad for _, bad in results), [bad[:3] for _, bad in results]
    assert not ptl.spin_is_locked(pfn)
    if m.page_layout.has(_p(m, "magic")):  # after release: SPINLOCK_MAGIC, owner -1, owner_cpu -1
        rec = m.pages[pfn]
        assert int(rec[_p(m, "magic")]) == 0xDEAD4EAD
        assert int(rec[_p(m, "owner_cpu")]) == 0xFFFFFFFF
        assert int(rec[_p(m, "owner")]) == (1 << 8 * cfg.word_bytes) - 1
    if cfg["GENERIC_LOCKBREAK"] and cfg["DEBUG_LOCK_ALLOC"]:
        # lockdep's spin_lock is not BUILD_LOCK_OPS: break_lock is never written
        assert sum(s for s, _ in results) == 0
    elif cfg["GENERIC_LOCKBREAK"]:
        # waiters set it while the lock was held; the last acquirer, with no
        # one left waiting, reset it
        assert sum(s for s, _ in results) > 0, "no waiter ever set break_lock"
        assert int(m.pages[pfn][_p(m, "break_lock")]) == 0


def test_unlocked_rmw_loses_updates(make_machine):
    """The deliberately broken variant: the same RMW without the lock is not exact,
    so the exactness above is the lock's doing."""
    m, path = make_machine(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    n = 2000
    run_procs(_lock_worker, [(path, 7, cpu, n, False) for cpu in (1, 2, 3)])
    assert int(m.pages[7]["index"]) < 3 * n


def test_held_bytes_ppc64_cpu3(make_machine):
    """The seed's case in bytes: CPU 3 holds page->ptl, page->mapping reads 0xdead4ead00000003."""
    m, _ = make_machine(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    ptl, refs = PtLock(m), PageRefs(m)
    ptl.pte_lock_init(5)
    assert refs.page_mapping_raw(5) == 0xDEAD4EADFFFFFFFF
    ptl.spin_lock(5, 3, 0xC000000001234560)
    assert refs.page_mapping_raw(5) == 0xDEAD4EAD00000003
    assert int(m.pages[5]["ptl.raw_lock.slock"]) == 0x80000003
    ptl.spin_unlock(5, 3, 0xC000000001234560)
    ptl.pte_lock_deinit(5)
    assert refs.page_mapping_raw(5) == 0


def test_spin_debug_checks(make_machine):
    from emu._atomics import SpinBug, SpinLockup

    m, _ = make_machine(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    ptl = PtLock(m)
    ptl.pte_lock_init(1)
    with pytest.raises(SpinBug, match="already unlocked"):
        ptl.spin_unlock(1, 0, TASK)
    ptl.spin_lock(1, 2, TASK)
    with pytest.raises(SpinBug, match="recursion"):
        ptl.spin_lock(1, 2, TASK)
    with pytest.raises(SpinBug, match="wrong owner"):
        ptl.spin_unlock(1, 2, TASK + 1)
    assert not ptl.spin_trylock(1, 4, TASK + 4)
    with pytest.raises(SpinLockup):
        ptl.spin_lock(1, 4, TASK + 4, max_spins=1000)
    ptl.spin_unlock(1, 2, TASK)
    assert ptl.spin_trylock(1, 4, TASK + 4)
    ptl.spin_unlock(1, 4, TASK + 4)
    with pytest.raises(SpinBug, match="bad magic"):
        ptl.spin_lock(2, 0, TASK)  # never initialised


def test_spinlock_offsets_checked(make_machine):
    m, _ = make_machine(resolve(**LOCK_CONFIGS["ppc64 lockbreak debug"]))
    ops = PtLock(m).ops
    with pytest.raises(IndexError):
        ops.spin_lock(m.size - 8, 0, 0)
    with pytest.raises(ValueError, match="aligned"):
        ops.spin_lock(m.page_offset(1) + 4, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        SpinLockOps(m.atomics, kind="token", word=8, span=8, lock_rel=6, lock_size=4)


# -- get_page_unless_zero against a process driving the count to zero --------

def _naive_inc_not_zero(m, refs, pfn):
    """Deliberately broken: check, then increment, not one atomic step."""
    off = m.page_offset(pfn) + refs.count_rel
    if m.atomics.load(off, 4) == 0:
        return False
    os.sched_yield()
    m.atomics.fetch_add(off, 4, 1)
    return True


def _refs_role(role, path, npfn, naive=False):
    m = attach(path)
    refs = PageRefs(m)
    scratch = m.region("scratch").offset
    done = scratch + 4 * npfn  # the dropper's "finished" flag
    revived = 0
    if role == "dropper":
        for pfn in range(npfn):
            for _ in range(50):
                os.sched_yield()
            if refs.put_page_testzero(pfn):
                m.atomics.fetch_add(scratch + 4 * pfn, 4, 1)
        m.atomics.store(done, 4, 1)
    else:
        failed = [False] * npfn
        last = False
        while not last:
            last = m.atomics.load(done, 4) == 1  # one more full pass after the dropper ends
            for pfn in range(npfn):
                got = _naive_inc_not_zero(m, refs, pfn) if naive else refs.get_page_unless_zero(pfn)
                if got:
                    revived += failed[pfn]  # raised a count that had been zero
                    if refs.put_page_testzero(pfn):
                        m.atomics.fetch_add(scratch + 4 * pfn, 4, 1)
                else:
                    failed[pfn] = True
    m.close()
    return revived


def _race_refs(make_machine, naive):
    npfn = 64
    m, path = make_machine(resolve("ppc64"), nr_pages=npfn)
    refs = PageRefs(m)
    for pfn in range(npfn):
        refs.page_unfreeze_refs(pfn, 1)  # one reference each: the dropper's
    revived = run_procs(_refs_role, [("getter", path, npfn, naive), ("getter", path, npfn, naive),
                                     ("dropper", path, npfn)])
    zero_hits = [m.atomics.load(m.region("scratch").offset + 4 * p, 4) for p in range(npfn)]
    counts = [refs.page_count(p) for p in range(npfn)]
    return sum(revived), zero_hits, counts


def test_get_page_unless_zero_never_revives(make_machine):
    revived, zero_hits, counts = _race_refs(make_machine, naive=False)
    assert revived == 0
    assert zero_hits == [1] * len(zero_hits)  # exactly one put dropped each page's last ref
    assert counts == [0] * len(counts)


def test_naive_inc_not_zero_is_caught(make_machine):
    """The same checks fail for a check-then-increment: a freed page's count is raised."""
    for _ in range(5):
        revived, zero_hits, counts = _race_refs(make_machine, naive=True)
        if revived or zero_hits != [1] * len(zero_hits) or any(counts):
            return
    pytest.fail("five runs of the broken inc_not_zero went unnoticed")
