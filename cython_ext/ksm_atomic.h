/* Atomic operations on 1/2/4/8-byte fields of the shared mapping, in the
 * emulated byte order.  Callers have checked bounds and natural alignment.
 *
 * A field of the other byte order than the host's is byte-swapped on the way
 * in and out of the hardware operation, so the bytes in memory are what the
 * emulated machine would hold.  Addition does not commute with swapping, so a
 * swapped fetch_add or fetch_sub is a CAS loop; the bitwise ops and exchange
 * work on the swapped value directly.
 *
 * GCC's __atomic builtins want a constant memory order to pick weaker
 * barriers, so each op switches on the order.
 */
#ifndef KSM_ATOMIC_H
#define KSM_ATOMIC_H

#include <stdint.h>

static inline uint64_t ko_bswap(uint64_t v, int size)
{
    switch (size) {
    case 2: return __builtin_bswap16((uint16_t)v);
    case 4: return __builtin_bswap32((uint32_t)v);
    case 8: return __builtin_bswap64(v);
    default: return v;
    }
}

static inline int ko_host_big(void)
{
    const uint16_t x = 1;
    return *(const uint8_t *)&x == 0;
}

static inline uint64_t ko_mask(int size)
{
    return size == 8 ? ~(uint64_t)0 : (((uint64_t)1 << (8 * size)) - 1);
}

/* failure order of a CAS: no stronger than success, never release */
#define KO_FAIL(O) ((O) == __ATOMIC_RELEASE ? __ATOMIC_RELAXED : \
                    (O) == __ATOMIC_ACQ_REL ? __ATOMIC_ACQUIRE : (O))

#define KO_BY_ORDER(expr_with_O, order)                                      \
    switch (order) {                                                         \
    case __ATOMIC_RELAXED: { const int O = __ATOMIC_RELAXED; expr_with_O; break; } \
    case __ATOMIC_CONSUME:                                                   \
    case __ATOMIC_ACQUIRE: { const int O = __ATOMIC_ACQUIRE; expr_with_O; break; } \
    case __ATOMIC_RELEASE: { const int O = __ATOMIC_RELEASE; expr_with_O; break; } \
    case __ATOMIC_ACQ_REL: { const int O = __ATOMIC_ACQ_REL; expr_with_O; break; } \
    default:               { const int O = __ATOMIC_SEQ_CST; expr_with_O; break; } \
    }

#define KO_BY_SIZE(size, T_stmt)                                             \
    switch (size) {                                                          \
    case 1: { typedef uint8_t T; T_stmt; break; }                            \
    case 2: { typedef uint16_t T; T_stmt; break; }                           \
    case 4: { typedef uint32_t T; T_stmt; break; }                           \
    default: { typedef uint64_t T; T_stmt; break; }                          \
    }

static inline uint64_t ko_load(char *p, int size, int swap, int order)
{
    uint64_t r = 0;
    KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_load_n((T *)p, O), order));
    return swap ? ko_bswap(r, size) : r;
}

static inline void ko_store(char *p, int size, int swap, uint64_t v, int order)
{
    if (swap) v = ko_bswap(v, size);
    KO_BY_SIZE(size, KO_BY_ORDER(__atomic_store_n((T *)p, (T)v, O), order));
}

static inline uint64_t ko_xchg(char *p, int size, int swap, uint64_t v, int order)
{
    uint64_t r = 0;
    if (swap) v = ko_bswap(v, size);
    KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_exchange_n((T *)p, (T)v, O), order));
    return swap ? ko_bswap(r, size) : r;
}

/* Returns the value found; the swap happened iff it equals `expected`. */
static inline uint64_t ko_cas(char *p, int size, int swap, uint64_t expected,
                              uint64_t desired, int order)
{
    if (swap) {
        expected = ko_bswap(expected, size);
        desired = ko_bswap(desired, size);
    }
    KO_BY_SIZE(size, {
        T e = (T)expected;
        KO_BY_ORDER(__atomic_compare_exchange_n((T *)p, &e, (T)desired, 0, O, KO_FAIL(O)),
                    order);
        expected = e;
    });
    return swap ? ko_bswap(expected, size) : expected;
}

enum { KO_ADD, KO_AND, KO_OR, KO_XOR, KO_SUB };

static inline uint64_t ko_fetch_op(char *p, int size, int swap, int op, uint64_t v, int order)
{
    uint64_t r = 0;
    if (swap && (op == KO_ADD || op == KO_SUB)) {
        uint64_t old = ko_load(p, size, swap, __ATOMIC_RELAXED), seen;
        for (;;) {
            seen = ko_cas(p, size, swap, old, (op == KO_ADD ? old + v : old - v) & ko_mask(size), order);
            if (seen == old) return old;
            old = seen;
        }
    }
    if (swap) v = ko_bswap(v, size);
    switch (op) {
    case KO_ADD: KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_fetch_add((T *)p, (T)v, O), order)); break;
    case KO_SUB: KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_fetch_sub((T *)p, (T)v, O), order)); break;
    case KO_AND: KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_fetch_and((T *)p, (T)v, O), order)); break;
    case KO_OR:  KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_fetch_or((T *)p, (T)v, O), order)); break;
    default:     KO_BY_SIZE(size, KO_BY_ORDER(r = __atomic_fetch_xor((T *)p, (T)v, O), order)); break;
    }
    return swap ? ko_bswap(r, size) : r;
}

#endif
