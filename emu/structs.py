"""The kernel's structs for one Config: struct page, spinlock_t and KSM's.

Each member is present only under its option, as in include/linux/mm_types.h,
spinlock_types.h, lockdep.h, rbtree.h, list.h and mm/ksm.c of 2.6.32/2.6.33.
"""

from __future__ import annotations

from functools import lru_cache

from .ctype import Abi, Array, Record, struct, union
from .kconfig import Config


class Kernel:
    """The struct definitions of one configuration, built once."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        a = cfg.arch
        abi = self.abi = Abi(a.word_bytes, a.byte_order, a.align8)
        u8, u16 = abi.scalar("u8", 1), abi.scalar("u16", 2)
        uint, sint = abi.scalar("unsigned int", 4), abi.scalar("int", 4, True)
        ulong = abi.ulong
        ptr = abi.pointer

        self.atomic_t = struct(None, [("counter", sint)], typedef="atomic_t")
        self.list_head = struct("list_head", [("next", ptr("struct list_head")),
                                              ("prev", ptr("struct list_head"))])
        self.rb_node = struct("rb_node", [("rb_parent_color", ulong),
                                          ("rb_right", ptr("struct rb_node")),
                                          ("rb_left", ptr("struct rb_node"))],
                              align=a.word_bytes)
        self.hlist_head = struct("hlist_head", [("first", ptr("struct hlist_node"))])
        self.hlist_node = struct("hlist_node", [("next", ptr("struct hlist_node")),
                                                ("pprev", ptr("struct hlist_node *"))])
        dep = [("key", ptr("struct lock_class_key")), ("class_cache", ptr("struct lock_class")),
               ("name", ptr("const char"))]
        if cfg["LOCK_STAT"]:
            dep += [("cpu", sint), ("ip", ulong)]
        self.lockdep_map = struct("lockdep_map", dep)

        # The arch lock type: spinlock_types.h of the arch, or spinlock_types_up.h.
        v33 = cfg.kernel == "2.6.33"
        lock_t = "arch_spinlock_t" if v33 else "raw_spinlock_t"
        if cfg["SMP"]:
            word = u8 if a.lock_size == 1 else uint
            self.arch_lock_member = a.lock_member
            self.arch_spinlock = struct(None, [(a.lock_member, word)], typedef=lock_t,
                                        align=4 if a.name == "s390x" else 1)
        elif cfg["DEBUG_SPINLOCK"]:
            self.arch_lock_member = "slock"
            self.arch_spinlock = struct(None, [("slock", uint)], typedef=lock_t)
        else:
            self.arch_lock_member = None
            self.arch_spinlock = struct(None, [], typedef=lock_t)

        body: list = [("raw_lock", self.arch_spinlock)]
        if cfg["GENERIC_LOCKBREAK"]:
            body.append(("break_lock", uint))
        if cfg["DEBUG_SPINLOCK"]:
            body += [("magic", uint), ("owner_cpu", uint), ("owner", ptr("void"))]
        if cfg["DEBUG_LOCK_ALLOC"]:
            body.append(("dep_map", self.lockdep_map))
        if v33:
            self.raw_spinlock = struct("raw_spinlock", body, typedef="raw_spinlock_t")
            arms: list = [("rlock", self.raw_spinlock)]
            if cfg["DEBUG_LOCK_ALLOC"]:
                pad = self.raw_spinlock.member("dep_map")[0]
                arms.append((None, struct(None, [("__padding", Array(u8, pad)),
                                                 ("dep_map", self.lockdep_map)])))
            self.spinlock = struct("spinlock", [(None, union(None, arms))], typedef="spinlock_t")
            self.ptl_prefix = "ptl.rlock."
        else:
            self.spinlock = struct(None, body, typedef="spinlock_t")
            self.ptl_prefix = "ptl."

        # struct page
        mapping_arm = struct(None, [("private", ulong), ("mapping", ptr("struct address_space"))])
        ptl_arms: list = [(None, mapping_arm)]
        if cfg["USE_SPLIT_PTLOCKS"]:
            ptl_arms.append(("ptl", self.spinlock))
        ptl_arms += [("slab", ptr("struct kmem_cache")), ("first_page", ptr("struct page"))]
        members: list = [
            ("flags", ulong),
            ("_count", self.atomic_t),
            (None, union(None, [("_mapcount", self.atomic_t),
                                (None, struct(None, [("inuse", u16), ("objects", u16)]))])),
            (None, union(None, ptl_arms)),
            (None, union(None, [("index", abi.scalar("pgoff_t", a.word_bytes)),
                                ("freelist", ptr("void"))])),
            ("lru", self.list_head),
        ]
        if cfg["WANT_PAGE_VIRTUAL"]:
            members.append(("virtual", ptr("void")))
        if cfg["WANT_PAGE_DEBUG_FLAGS"]:
            members.append(("debug_flags", ulong))
        if cfg["KMEMCHECK"]:
            members.append(("shadow", ptr("void")))
        self.page = struct("page", members)

        self.stable_node = struct("stable_node", [("node", self.rb_node),
                                                  ("hlist", self.hlist_head),
                                                  ("kpfn", ulong)])
        self.rmap_item = struct("rmap_item", [
            ("rmap_list", ptr("struct rmap_item")),
            ("anon_vma", ptr("struct anon_vma")),
            ("mm", ptr("struct mm_struct")),
            ("address", ulong),
            ("oldchecksum", uint),
            (None, union(None, [("node", self.rb_node),
                                (None, struct(None, [("head", ptr("struct stable_node")),
                                                     ("hlist", self.hlist_node)]))])),
        ])

    # name -> Record, as the CLI and the compiler tests know them
    @property
    def structs(self) -> dict[str, Record]:
        locks = ({"raw_spinlock_t": self.raw_spinlock, "arch_spinlock_t": self.arch_spinlock}
                 if self.cfg.kernel == "2.6.33" else {"raw_spinlock_t": self.arch_spinlock})
        return {
            "page": self.page,
            "spinlock_t": self.spinlock,
            **locks,
            "lockdep_map": self.lockdep_map,
            "list_head": self.list_head,
            "rb_node": self.rb_node,
            "hlist_head": self.hlist_head,
            "hlist_node": self.hlist_node,
            "stable_node": self.stable_node,
            "rmap_item": self.rmap_item,
            "atomic_t": self.atomic_t,
        }


@lru_cache(maxsize=256)
def kernel_for(cfg: Config) -> Kernel:
    return Kernel(cfg)
