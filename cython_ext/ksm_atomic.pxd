# Declarations of ksm_atomic.h, shared by the extension modules.
from libc.stdint cimport uint64_t

cdef extern from "ksm_atomic.h" nogil:
    uint64_t ko_bswap(uint64_t v, int size)
    uint64_t ko_mask(int size)
    uint64_t ko_load(char *p, int size, int swap, int order)
    void ko_store(char *p, int size, int swap, uint64_t v, int order)
    uint64_t ko_xchg(char *p, int size, int swap, uint64_t v, int order)
    uint64_t ko_cas(char *p, int size, int swap, uint64_t expected, uint64_t desired, int order)
    uint64_t ko_fetch_op(char *p, int size, int swap, int op, uint64_t v, int order)
    int ko_host_big()
    enum:
        KO_ADD
        KO_AND
        KO_OR
        KO_XOR
        KO_SUB
        __ATOMIC_RELAXED
        __ATOMIC_CONSUME
        __ATOMIC_ACQUIRE
        __ATOMIC_RELEASE
        __ATOMIC_ACQ_REL
        __ATOMIC_SEQ_CST
