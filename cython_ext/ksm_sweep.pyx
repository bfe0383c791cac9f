# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""ksmd's sweep of get_ksm_page over every stable node, without the GIL.

For each live node, the variant of get_ksm_page that `get_ksm_page` names
(emu.mm.protocol.GET_KSM_PAGE; any other name is refused with ValueError):
  keyhole             read kpfn, check page->mapping holds node address + 3,
                      get_page_unless_zero, check again
  keyhole-no-recheck  the same without the second check
  refcount            get_page: the node's own reference keeps the page
then drop the reference at once. The ground truth (shadow) is checked for
every page the keyhole opened.

Before the loop forms any pointer, every argument is checked, with arithmetic
that cannot wrap: each record size is positive; each field the loop touches
(kpfn, mapping, _count, shadow state and node) lies inside its record and is
naturally aligned in it and in memory; each region (offset, record size,
count) lies inside the buffer; the last node's key (nodes_addr + i * node_size
+ 3) does not wrap. A bad argument raises ValueError, IndexError or
OverflowError. Inside the loop each kpfn read from the nodes is checked
against nr_pages.

status[i] after the sweep:
  0 not live   1 ok   2 stale (caller removes the node)
  3 ok, but our put_page dropped the last reference (caller frees the page)
  4 keyhole false open (the shadow says the page is not this node's KSM page)
  5 kpfn out of range (a corrupt node)
  6 refcount: get_page on a page with _count <= 0, which the kernel BUGs on;
    undone, and counted with the false opens as what the checks found
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE

from ksm_atomic cimport KO_ADD, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED, __ATOMIC_SEQ_CST, ko_cas, ko_fetch_op, ko_host_big, ko_load, ko_mask

# get_ksm_page's variants, as emu.mm.protocol.GET_KSM_PAGE names them
cdef enum:
    KEYHOLE, KEYHOLE_NO_RECHECK, REFCOUNT
VARIANTS = {"keyhole": KEYHOLE, "keyhole-no-recheck": KEYHOLE_NO_RECHECK, "refcount": REFCOUNT}


cdef int _record(Py_ssize_t stride, int align, str what) except -1:
    """A record size: positive and a multiple of the alignment its fields need."""
    if stride <= 0:
        raise ValueError(f"{what}: record size {stride} is not positive")
    if stride % align:
        raise ValueError(f"{what}: record size {stride} is not {align}-byte aligned")
    return 0


cdef int _field(Py_ssize_t stride, Py_ssize_t rel, int size, str what) except -1:
    """A field of `size` bytes at `rel` inside a record of `stride` bytes,
    naturally aligned relative to the record (stride > 0, size <= 8: no overflow)."""
    if rel < 0 or rel > stride - size:
        raise ValueError(f"{what}: field at offset {rel} ({size} bytes) is outside the {stride}-byte record")
    if rel % size:
        raise ValueError(f"{what}: field at offset {rel} is not {size}-byte aligned")
    return 0


cdef int _region(char *base, Py_ssize_t length, Py_ssize_t off, Py_ssize_t stride, Py_ssize_t count,
                 int align, str what) except -1:
    """`count` records of `stride` bytes at `off` lie inside the buffer, with no
    arithmetic that can wrap: off <= length first, then count against the room left."""
    if count < 0:
        raise ValueError(f"{what}: negative record count {count}")
    if off < 0 or off > length:
        raise IndexError(f"{what}: offset {off} is outside the {length}-byte buffer")
    if count > (length - off) // stride:
        raise IndexError(f"{what}: {count} records of {stride} bytes at {off} exceed the {length}-byte buffer")
    if off % align or (<size_t>base + <size_t>off) % align:
        raise ValueError(f"{what}: offset {off} is not {align}-byte aligned")
    return 0


cdef void _sweep(char *base, int swap, Py_ssize_t n, const uint8_t[:] live, uint8_t[:] status,
                 Py_ssize_t nodes_off, Py_ssize_t node_size, Py_ssize_t kpfn_rel, uint64_t nodes_addr,
                 Py_ssize_t mem_map_off, Py_ssize_t page_size, Py_ssize_t nr_pages,
                 Py_ssize_t mapping_rel, Py_ssize_t count_rel, int word,
                 bint check_shadow, Py_ssize_t shadow_off, Py_ssize_t shadow_size,
                 Py_ssize_t shadow_state_rel, Py_ssize_t shadow_node_rel,
                 uint32_t ksm_state, int variant, uint64_t *counts) noexcept nogil:
    """The loop, on arguments sweep_get_ksm_page has checked; counts: ok, stale, freed, bad, corrupt."""
    cdef Py_ssize_t i
    cdef char *page
    cdef uint64_t kpfn, expected, c, seen, old
    cdef uint64_t ok = 0, stale = 0, freed = 0, bad = 0, corrupt = 0
    cdef bint opened
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
        if variant == REFCOUNT:
            # get_page: an increment, BUG on a free page (undone, as emu.mm.refcount does)
            old = ko_fetch_op(page + count_rel, 4, swap, KO_ADD, 1, __ATOMIC_SEQ_CST)
            if <int32_t>(<uint32_t>old) <= 0:
                ko_fetch_op(page + count_rel, 4, swap, KO_ADD, ko_mask(4), __ATOMIC_SEQ_CST)
                status[i] = 6
                bad += 1
                continue
            status[i] = 1
            ok += 1
        else:
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
            if variant == KEYHOLE and ko_load(page + mapping_rel, word, swap, __ATOMIC_ACQUIRE) != expected:
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
    counts[0], counts[1], counts[2], counts[3], counts[4] = ok, stale, freed, bad, corrupt


def sweep_get_ksm_page(object buf, str byte_order, *, Py_ssize_t nodes_off, Py_ssize_t node_size,
                       Py_ssize_t kpfn_rel, uint64_t nodes_addr, const uint8_t[:] live,
                       Py_ssize_t mem_map_off, Py_ssize_t page_size, Py_ssize_t nr_pages,
                       Py_ssize_t mapping_rel, Py_ssize_t count_rel, int word, uint8_t[:] status,
                       Py_ssize_t shadow_off=-1, Py_ssize_t shadow_size=32,
                       Py_ssize_t shadow_state_rel=0, Py_ssize_t shadow_node_rel=8,
                       uint32_t ksm_state=2, str get_ksm_page="keyhole"):
    """Run the sweep; return (ok, stale, freed, bad, corrupt) counts (bad: status 4 and 6)."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef int swap = (byte_order == "big") != ko_host_big()
    cdef uint64_t counts[5]
    cdef bint check_shadow = shadow_off >= 0
    cdef int variant
    if get_ksm_page not in VARIANTS:
        raise ValueError(f"the sweep has no get_ksm_page variant {get_ksm_page!r}; it implements "
                         f"{', '.join(VARIANTS)}")
    variant = VARIANTS[get_ksm_page]
    if word not in (4, 8):
        raise ValueError(f"word must be 4 or 8, not {word}")
    if byte_order not in ("little", "big"):
        raise ValueError("byte_order must be 'little' or 'big'")
    if live is None or status is None:
        raise TypeError("live and status must be uint8 arrays, not None")
    n = live.shape[0]
    if status.shape[0] != n:
        raise ValueError(f"status has {status.shape[0]} entries for {n} nodes")
    if shadow_off < -1:
        raise ValueError(f"shadow_off must be -1 (no shadow) or a buffer offset, not {shadow_off}")
    # Record geometry first: every field the loop touches lies inside its
    # record and is naturally aligned in it; each record size keeps that
    # alignment from one record to the next.
    _record(node_size, word, "stable_nodes")
    _field(node_size, kpfn_rel, word, "stable_node.kpfn")
    _record(page_size, word, "mem_map")
    _field(page_size, mapping_rel, word, "page->mapping")
    _field(page_size, count_rel, 4, "page->_count")
    _record(shadow_size, 8, "shadow")
    _field(shadow_size, shadow_state_rel, 4, "shadow.state")
    _field(shadow_size, shadow_node_rel, 8, "shadow.node")
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE | PyBUF_SIMPLE)
    try:
        # The buffer 8-byte aligned, each region's offset aligned, the record
        # sizes and the fields in them aligned: every field is aligned in memory.
        if (<size_t>view.buf) % 8:
            raise ValueError("buffer is not 8-byte aligned")
        _region(<char *>view.buf, view.len, nodes_off, node_size, n, word, "stable_nodes")
        _region(<char *>view.buf, view.len, mem_map_off, page_size, nr_pages, word, "mem_map")
        if check_shadow:
            _region(<char *>view.buf, view.len, shadow_off, shadow_size, nr_pages, 8, "shadow")
        # node i's key is nodes_addr + i * node_size + 3: it must not wrap for the
        # last node ((n - 1) * node_size < view.len, no overflow)
        if n and nodes_addr > <uint64_t>0xFFFFFFFFFFFFFFFF - 3 - <uint64_t>(n - 1) * <uint64_t>node_size:
            raise ValueError(f"nodes_addr {nodes_addr:#x}: the last node's key, nodes_addr + "
                             f"{(n - 1) * node_size} + 3, wraps past 2**64")
        with nogil:
            _sweep(<char *>view.buf, swap, n, live, status, nodes_off, node_size, kpfn_rel, nodes_addr,
                   mem_map_off, page_size, nr_pages, mapping_rel, count_rel, word,
                   check_shadow, shadow_off, shadow_size, shadow_state_rel, shadow_node_rel,
                   ksm_state, variant, counts)
    finally:
        PyBuffer_Release(&view)
    return counts[0], counts[1], counts[2], counts[3], counts[4]
