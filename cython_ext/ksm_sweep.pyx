# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""ksmd's sweep of get_ksm_page over every stable node, without the GIL.

For each live node: read kpfn, check page->mapping holds node address + 3,
get_page_unless_zero, check again (unless `recheck` is off), then drop the
reference at once. The ground truth (shadow) is checked for every page the
keyhole opened. Every region is checked for bounds and alignment before the
loop; each kpfn read from the nodes is checked against nr_pages inside it.

status[i] after the sweep:
  0 not live   1 ok   2 stale (caller removes the node)
  3 ok, but our put_page dropped the last reference (caller frees the page)
  4 keyhole false open (the shadow says the page is not this node's KSM page)
  5 kpfn out of range (a corrupt node)
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE

from ksm_atomic cimport KO_ADD, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED, __ATOMIC_SEQ_CST, ko_cas, ko_fetch_op, ko_host_big, ko_load, ko_mask


cdef int _region(Py_ssize_t length, Py_ssize_t off, Py_ssize_t stride, Py_ssize_t count,
                 Py_ssize_t field_end, int align, str what) except -1:
    if off < 0 or stride <= 0 or count < 0 or field_end > stride:
        raise ValueError(f"{what}: bad geometry (offset {off}, stride {stride}, field end {field_end})")
    if count and off + stride * count > length:
        raise IndexError(f"{what}: {count} records of {stride} bytes at {off} exceed the {length}-byte buffer")
    if off % align or stride % align:
        raise ValueError(f"{what}: offset {off} / stride {stride} not {align}-byte aligned")
    return 0


def sweep_get_ksm_page(object buf, str byte_order, *, Py_ssize_t nodes_off, Py_ssize_t node_size,
                       Py_ssize_t kpfn_rel, uint64_t nodes_addr, const uint8_t[:] live,
                       Py_ssize_t mem_map_off, Py_ssize_t page_size, Py_ssize_t nr_pages,
                       Py_ssize_t mapping_rel, Py_ssize_t count_rel, int word, uint8_t[:] status,
                       Py_ssize_t shadow_off=-1, Py_ssize_t shadow_size=32,
                       Py_ssize_t shadow_state_rel=0, Py_ssize_t shadow_node_rel=8,
                       uint32_t ksm_state=2, bint recheck=True):
    """Run the sweep; return (ok, stale, freed, false_open, corrupt) counts."""
    cdef Py_buffer view
    cdef Py_ssize_t n = live.shape[0], i
    cdef char *base
    cdef char *page
    cdef char *sh
    cdef int swap = (byte_order == "big") != ko_host_big()
    cdef uint64_t kpfn, expected, c, seen, old
    cdef uint64_t ok = 0, stale = 0, freed = 0, bad = 0, corrupt = 0
    cdef bint check_shadow = shadow_off >= 0
    cdef bint opened
    if word not in (4, 8):
        raise ValueError(f"word must be 4 or 8, not {word}")
    if byte_order not in ("little", "big"):
        raise ValueError("byte_order must be 'little' or 'big'")
    if status.shape[0] != n:
        raise ValueError(f"status has {status.shape[0]} entries for {n} nodes")
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE | PyBUF_SIMPLE)
    try:
        if (<size_t>view.buf) % 8:
            raise ValueError("buffer is not 8-byte aligned")
        _region(view.len, nodes_off, node_size, n, kpfn_rel + word, word, "stable_nodes")
        if kpfn_rel % word:
            raise ValueError("kpfn is not word aligned")
        _region(view.len, mem_map_off, page_size, nr_pages, max(mapping_rel + word, count_rel + 4),
                word, "mem_map")
        if mapping_rel % word or count_rel % 4:
            raise ValueError("mapping / _count misaligned")
        if check_shadow:
            _region(view.len, shadow_off, shadow_size, nr_pages, shadow_node_rel + 8, 8, "shadow")
        base = <char *>view.buf
        with nogil:
            for i in range(n):
                if not live[i]:
                    status[i] = 0
                    continue
                kpfn = ko_load(base + nodes_off + i * node_size + kpfn_rel, word, swap, __ATOMIC_RELAXED)
                if kpfn >= <uint64_t>nr_pages:
                    status[i] = 5
                    corrupt += 1
                    continue
                page = base + mem_map_off + <Py_ssize_t>kpfn * page_size
                expected = nodes_addr + <uint64_t>i * node_size + 3
                if ko_load(page + mapping_rel, word, swap, __ATOMIC_ACQUIRE) != expected:
                    status[i] = 2
                    stale += 1
                    continue
                # get_page_unless_zero
                c = ko_load(page + count_rel, 4, swap, __ATOMIC_RELAXED)
                opened = False
                while c != 0:
                    seen = ko_cas(page + count_rel, 4, swap, c, (c + 1) & ko_mask(4), __ATOMIC_SEQ_CST)
                    if seen == c:
                        opened = True
                        break
                    c = seen
                if not opened:
                    status[i] = 2
                    stale += 1
                    continue
                if recheck and ko_load(page + mapping_rel, word, swap, __ATOMIC_ACQUIRE) != expected:
                    status[i] = 2
                    stale += 1
                elif check_shadow and (
                        ko_load(base + shadow_off + <Py_ssize_t>kpfn * shadow_size + shadow_state_rel, 4, 0,
                                __ATOMIC_ACQUIRE) != ksm_state
                        or ko_load(base + shadow_off + <Py_ssize_t>kpfn * shadow_size + shadow_node_rel, 8, 0,
                                   __ATOMIC_ACQUIRE) != expected - 3):
                    status[i] = 4
                    bad += 1
                else:
                    status[i] = 1
                    ok += 1
                # put_page: if ours was the last reference, the caller frees the page
                old = ko_fetch_op(page + count_rel, 4, swap, KO_ADD, ko_mask(4), __ATOMIC_SEQ_CST)
                if old == 1:
                    status[i] = 3
                    freed += 1
    finally:
        PyBuffer_Release(&view)
    return ok, stale, freed, bad, corrupt
