/* The kernel's declarations of the structs ksm-emu models, restated from
 * include/linux/mm_types.h, spinlock_types*.h, lockdep.h, rbtree.h, types.h,
 * arch/<arch>/include/asm/spinlock_types.h and mm/ksm.c of 2.6.32/2.6.33.
 *
 * The tests compile this with a real compiler for each arch and .config
 * (CONFIG_* macros, as Kconfig would write them into autoconf.h) and compare
 * every member's offset and size with the Python layout engine.  It is written
 * from the kernel sources, not from the engine, so the two check each other.
 *
 * Arch selection: one of ARCH_X86, ARCH_PPC, ARCH_S390, ARCH_SPARC, ARCH_ARM,
 * ARCH_MIPS.  Kernel: KERNEL_2_6_33 or not (2.6.32).
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned long pgoff_t;

typedef struct {
	int counter;
} atomic_t;

struct list_head {
	struct list_head *next, *prev;
};

struct hlist_head {
	struct hlist_node *first;
};

struct hlist_node {
	struct hlist_node *next, **pprev;
};

struct rb_node {
	unsigned long  rb_parent_color;
	struct rb_node *rb_right;
	struct rb_node *rb_left;
} __attribute__((aligned(sizeof(long))));

/* ---- the arch lock type ---- */
#ifdef KERNEL_2_6_33
# define ARCH_LOCK_T arch_spinlock_t
#else
# define ARCH_LOCK_T raw_spinlock_t
#endif

#ifdef CONFIG_SMP
# if defined(ARCH_X86)
typedef struct {
	unsigned int slock;
} ARCH_LOCK_T;
# elif defined(ARCH_PPC)
typedef struct {
	volatile unsigned int slock;
} ARCH_LOCK_T;
# elif defined(ARCH_S390)
typedef struct {
	volatile unsigned int owner_cpu;
} __attribute__ ((aligned (4))) ARCH_LOCK_T;
# elif defined(ARCH_SPARC)
typedef struct {
	volatile unsigned char lock;
} ARCH_LOCK_T;
# elif defined(ARCH_ARM) || defined(ARCH_MIPS)
typedef struct {
	volatile unsigned int lock;
} ARCH_LOCK_T;
# else
#  error "no arch"
# endif
#else /* spinlock_types_up.h */
# ifdef CONFIG_DEBUG_SPINLOCK
typedef struct {
	volatile unsigned int slock;
} ARCH_LOCK_T;
# else
typedef struct { } ARCH_LOCK_T;
# endif
#endif

/* ---- lockdep ---- */
struct lock_class_key;
struct lock_class;
struct lockdep_map {
	struct lock_class_key		*key;
	struct lock_class		*class_cache;
	const char			*name;
#ifdef CONFIG_LOCK_STAT
	int				cpu;
	unsigned long			ip;
#endif
};

/* ---- spinlock_t ---- */
#ifdef KERNEL_2_6_33
typedef struct raw_spinlock {
	arch_spinlock_t raw_lock;
#ifdef CONFIG_GENERIC_LOCKBREAK
	unsigned int break_lock;
#endif
#ifdef CONFIG_DEBUG_SPINLOCK
	unsigned int magic, owner_cpu;
	void *owner;
#endif
#ifdef CONFIG_DEBUG_LOCK_ALLOC
	struct lockdep_map dep_map;
#endif
} raw_spinlock_t;

#define LOCK_PADSIZE (__builtin_offsetof(struct raw_spinlock, dep_map))

typedef struct spinlock {
	union {
		struct raw_spinlock rlock;
#ifdef CONFIG_DEBUG_LOCK_ALLOC
		struct {
			u8 __padding[LOCK_PADSIZE];
			struct lockdep_map dep_map;
		};
#endif
	};
} spinlock_t;
#else
typedef struct {
	raw_spinlock_t raw_lock;
#ifdef CONFIG_GENERIC_LOCKBREAK
	unsigned int break_lock;
#endif
#ifdef CONFIG_DEBUG_SPINLOCK
	unsigned int magic, owner_cpu;
	void *owner;
#endif
#ifdef CONFIG_DEBUG_LOCK_ALLOC
	struct lockdep_map dep_map;
#endif
} spinlock_t;
#endif

/* ---- struct page (include/linux/mm_types.h) ---- */
#define USE_SPLIT_PTLOCKS	(CONFIG_NR_CPUS >= CONFIG_SPLIT_PTLOCK_CPUS)

struct address_space;
struct kmem_cache;

struct page {
	unsigned long flags;
	atomic_t _count;
	union {
		atomic_t _mapcount;
		struct {
			u16 inuse;
			u16 objects;
		};
	};
	union {
	    struct {
		unsigned long private;
		struct address_space *mapping;
	    };
#if USE_SPLIT_PTLOCKS
	    spinlock_t ptl;
#endif
	    struct kmem_cache *slab;
	    struct page *first_page;
	};
	union {
		pgoff_t index;
		void *freelist;
	};
	struct list_head lru;
#if defined(WANT_PAGE_VIRTUAL)
	void *virtual;
#endif
#ifdef CONFIG_WANT_PAGE_DEBUG_FLAGS
	unsigned long debug_flags;
#endif
#ifdef CONFIG_KMEMCHECK
	void *shadow;
#endif
};

/* ---- mm/ksm.c ---- */
struct stable_node {
	struct rb_node node;
	struct hlist_head hlist;
	unsigned long kpfn;
};

struct anon_vma;
struct mm_struct;
struct rmap_item {
	struct rmap_item *rmap_list;
	struct anon_vma *anon_vma;
	struct mm_struct *mm;
	unsigned long address;
	unsigned int oldchecksum;
	union {
		struct rb_node node;
		struct {
			struct stable_node *head;
			struct hlist_node hlist;
		};
	};
};
