"""The kernel primitives a litmus test may call, by kernel name.

Taken from tools/memory-model/linux-kernel.def (the herd7 macros LKMM is
defined with) and Documentation/atomic_t.txt; `atomic_inc_not_zero` and
`smp_read_barrier_depends` are accepted too (the first is
atomic_add_unless(v, 1, 0); the second was in linux-kernel.def until 4.15 folded
it into READ_ONCE).  Names LKMM has but ksm-emu does not model are in
UNSUPPORTED with the reason given in the error.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Address-argument styles: "lvalue" takes `*p` (READ_ONCE(*p)), "pointer" takes `p`.


@dataclass(frozen=True)
class LoadSpec:
    kind: str  # once | acquire
    style: str  # lvalue | pointer


@dataclass(frozen=True)
class StoreSpec:
    kind: str  # once | release
    style: str
    then_mb: bool = False  # smp_store_mb


@dataclass(frozen=True)
class RmwSpec:
    op: str  # + - & | ^ &~
    returns: str  # void new old zero negative
    order: str  # relaxed acquire release mb
    value_arg: bool  # takes V (atomic_add(V, X)); else V is 1 (atomic_inc(X))


@dataclass(frozen=True)
class XchgSpec:
    order: str


@dataclass(frozen=True)
class CmpxchgSpec:
    order: str


@dataclass(frozen=True)
class AddUnlessSpec:
    inc_not_zero: bool


LOADS: dict[str, LoadSpec] = {
    "READ_ONCE": LoadSpec("once", "lvalue"),
    "smp_load_acquire": LoadSpec("acquire", "pointer"),
    "atomic_read": LoadSpec("once", "pointer"),
    "atomic_read_acquire": LoadSpec("acquire", "pointer"),
}

STORES: dict[str, StoreSpec] = {
    "WRITE_ONCE": StoreSpec("once", "lvalue"),
    "smp_store_release": StoreSpec("release", "pointer"),
    "atomic_set": StoreSpec("once", "pointer"),
    "atomic_set_release": StoreSpec("release", "pointer"),
    "smp_store_mb": StoreSpec("once", "lvalue", then_mb=True),
}

FENCES = frozenset({
    "smp_mb", "smp_rmb", "smp_wmb", "smp_read_barrier_depends",
    "smp_mb__before_atomic", "smp_mb__after_atomic", "smp_mb__after_spinlock",
    "smp_mb__after_unlock_lock", "barrier",
})

LOCK_STMTS = frozenset({"spin_lock", "spin_unlock"})
LOCK_EXPRS = frozenset({"spin_trylock", "spin_is_locked"})

_SUFFIX_ORDER = {"": "mb", "_relaxed": "relaxed", "_acquire": "acquire", "_release": "release"}
_OPS = {"add": "+", "sub": "-", "and": "&", "or": "|", "xor": "^", "andnot": "&~"}


def _rmw_table() -> dict[str, RmwSpec]:
    t: dict[str, RmwSpec] = {}
    for name, op in _OPS.items():
        t[f"atomic_{name}"] = RmwSpec(op, "void", "relaxed", True)
        for suf, order in _SUFFIX_ORDER.items():
            t[f"atomic_fetch_{name}{suf}"] = RmwSpec(op, "old", order, True)
            if name in ("add", "sub"):
                t[f"atomic_{name}_return{suf}"] = RmwSpec(op, "new", order, True)
    for name, op in (("inc", "+"), ("dec", "-")):
        t[f"atomic_{name}"] = RmwSpec(op, "void", "relaxed", False)
        for suf, order in _SUFFIX_ORDER.items():
            t[f"atomic_{name}_return{suf}"] = RmwSpec(op, "new", order, False)
            t[f"atomic_fetch_{name}{suf}"] = RmwSpec(op, "old", order, False)
        t[f"atomic_{name}_and_test"] = RmwSpec(op, "zero", "mb", False)
    t["atomic_sub_and_test"] = RmwSpec("-", "zero", "mb", True)
    for suf, order in _SUFFIX_ORDER.items():
        t[f"atomic_add_negative{suf}"] = RmwSpec("+", "negative", order, True)
    return t


RMWS: dict[str, RmwSpec] = _rmw_table()
XCHGS: dict[str, XchgSpec] = {f"{p}xchg{s}": XchgSpec(o) for p in ("", "atomic_")
                              for s, o in _SUFFIX_ORDER.items()}
CMPXCHGS: dict[str, CmpxchgSpec] = {f"{p}cmpxchg{s}": CmpxchgSpec(o) for p in ("", "atomic_")
                                    for s, o in _SUFFIX_ORDER.items()}
ADD_UNLESS: dict[str, AddUnlessSpec] = {"atomic_add_unless": AddUnlessSpec(False),
                                        "atomic_inc_not_zero": AddUnlessSpec(True)}

_RCU = "RCU is not modelled"
_SRCU = "SRCU is not modelled"
#: Known names ksm-emu refuses, with the reason the error gives.
UNSUPPORTED: dict[str, str] = {
    "rcu_read_lock": _RCU, "rcu_read_unlock": _RCU, "synchronize_rcu": _RCU,
    "synchronize_rcu_expedited": _RCU, "rcu_dereference": _RCU, "rcu_assign_pointer": _RCU,
    "rcu_access_pointer": _RCU, "rcu_dereference_protected": _RCU, "call_rcu": _RCU,
    "kfree_rcu": _RCU, "rcu_barrier": _RCU, "rcu_replace_pointer": _RCU,
    "srcu_read_lock": _SRCU, "srcu_read_unlock": _SRCU, "synchronize_srcu": _SRCU,
    "synchronize_srcu_expedited": _SRCU, "srcu_down_read": _SRCU, "srcu_up_read": _SRCU,
    "smp_mb__after_srcu_read_unlock": _SRCU, "call_srcu": _SRCU,
}
