"""emu.litmus: the C litmus parser on every test in tests/litmus, a few ASTs
checked by hand, condition evaluation and herd7's verdicts, and the one-line
errors for malformed input and unsupported constructs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import emu.litmus as lit
from emu.litmus import (
    Addr,
    AddUnless,
    And,
    Assign,
    BinOp,
    Cast,
    Cmpxchg,
    Condition,
    Const,
    CType,
    Decl,
    Eq,
    ExprStmt,
    Fence,
    If,
    Implies,
    InitEntry,
    IsLocked,
    LitmusSyntaxError,
    Load,
    Loc,
    LocAddr,
    LocEq,
    Lock,
    Not,
    Or,
    Param,
    PFalse,
    Process,
    PtrAdd,
    PTrue,
    Reg,
    Rmw,
    Store,
    Unlock,
    UnOp,
    UnsupportedConstruct,
    Xchg,
    eval_prop,
    judge,
    parse,
    parse_file,
    wrap,
)
from emu.litmus.cond import Verdict

LITMUS = Path(__file__).resolve().parent / "litmus"
ALL_FILES = sorted(LITMUS.rglob("*.litmus"))

# Every test that has been in the Linux tree's tools/memory-model/litmus-tests,
# with its Result line (the last eight are the pre-2018 names of fence tests).
KERNEL = {
    "CoRR+poonceonce+Once": "Never",
    "CoRW+poonceonce+Once": "Never",
    "CoWR+poonceonce+Once": "Never",
    "CoWW+poonceonce": "Never",
    "IRIW+fencembonceonces+OnceOnce": "Never",
    "IRIW+poonceonces+OnceOnce": "Sometimes",
    "ISA2+pooncelock+pooncelock+pombonce": "Never",
    "ISA2+poonceonces": "Sometimes",
    "ISA2+pooncerelease+poacquirerelease+poacquireonce": "Never",
    "LB+fencembonceonce+ctrlonceonce": "Never",
    "LB+poacquireonce+pooncerelease": "Never",
    "LB+poonceonces": "Sometimes",
    "LB+unlocklockonceonce+poacquireonce": "Never",
    "MP+fencewmbonceonce+fencermbonceonce": "Never",
    "MP+onceassign+derefonce": "Never",
    "MP+polockmbonce+poacquiresilsil": "Never",
    "MP+polockonce+poacquiresilsil": "Sometimes",
    "MP+polocks": "Never",
    "MP+poonceonces": "Sometimes",
    "MP+pooncerelease+poacquireonce": "Never",
    "MP+porevlocks": "Never",
    "MP+unlocklockonceonce+fencermbonceonce": "Never",
    "R+fencembonceonces": "Never",
    "R+poonceonces": "Sometimes",
    "S+fencewmbonceonce+poacquireonce": "Never",
    "S+poonceonces": "Sometimes",
    "SB+fencembonceonces": "Never",
    "SB+poonceonces": "Sometimes",
    "SB+rfionceonce-poonceonces": "Sometimes",
    "WRC+poonceonces+Once": "Sometimes",
    "WRC+pooncerelease+fencermbonceonce+Once": "Never",
    "Z6.0+pooncelock+poonceLock+pombonce": "Never",
    "Z6.0+pooncelock+pooncelock+pombonce": "Sometimes",
    "Z6.0+pooncerelease+poacquirerelease+fencembonceonce": "Sometimes",
    "dep+plain": "Never",
    "IRIW+mbonceonces+OnceOnce": "Never",
    "LB+ctrlonceonce+mbonceonce": "Never",
    "MP+wmbonceonce+rmbonceonce": "Never",
    "R+mbonceonces": "Never",
    "S+wmbonceonce+poacquireonce": "Never",
    "SB+mbonceonces": "Never",
    "WRC+pooncerelease+rmbonceonce+Once": "Never",
    "Z6.0+pooncerelease+poacquirerelease+mbonceonce": "Sometimes",
}
# Documentation/litmus-tests (atomic/, locking/, rcu/).
KERNEL_DOC = {
    "Atomic-RMW+mb__after_atomic-is-stronger-than-acquire": "Never",
    "Atomic-RMW-ops-are-atomic-WRT-atomic_set": "Never",
    "cmpxchg-fail-ordered-1": "Never",
    "cmpxchg-fail-ordered-2": "Never",
    "cmpxchg-fail-unordered-1": "Sometimes",
    "cmpxchg-fail-unordered-2": "Sometimes",
    "DCL-broken": "Sometimes",
    "DCL-fixed": "Never",
    "RM-broken": "DEADLOCK",
    "RM-fixed": "Never",
    "RCU+sync+free": "Never",
    "RCU+sync+read": "Never",
}
# The tests that use a construct ksm-emu does not model: name -> (construct, line).
UNSUPPORTED = {
    "MP+onceassign+derefonce": ("rcu_assign_pointer()", 18),  # and rcu_read_lock, rcu_dereference
    "RCU+sync+free": ("rcu_read_lock()", 20),  # rcu_dereference, rcu_assign_pointer, synchronize_rcu
    "RCU+sync+read": ("rcu_read_lock()", 16),  # synchronize_rcu
}


def src(body: str) -> str:
    return "C T\n\n{}\n\n" + body


def test_the_corpus_is_complete():
    assert {p.stem for p in (LITMUS / "kernel").glob("*.litmus")} == set(KERNEL)
    assert {p.stem for p in (LITMUS / "kernel-doc").glob("*.litmus")} == set(KERNEL_DOC)
    assert len(ALL_FILES) == len(KERNEL) + len(KERNEL_DOC) + 4


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_file_parses_or_is_unsupported(path: Path):
    if path.stem in UNSUPPORTED:
        with pytest.raises(UnsupportedConstruct) as e:
            parse_file(path)
        name, line = UNSUPPORTED[path.stem]
        assert (e.value.name, e.value.line) == (name, line)
        assert str(e.value).startswith(f"{path}:{line}:") and "\n" not in str(e.value)
        assert "RCU" in str(e.value)
        return
    t = parse_file(path)
    assert t.name == path.stem and t.filename == str(path)
    assert t.result == {**KERNEL, **KERNEL_DOC}.get(path.stem, t.result)
    assert t.result in ("Never", "Sometimes", "Always", "DEADLOCK")
    regs = t.registers
    for loc in t.locations:
        assert loc.name in (regs[loc.proc] if loc.is_reg else t.shared_types)


def test_sb_by_hand():
    t = parse_file(LITMUS / "kernel" / "SB+poonceonces.litmus")
    ptr = CType("int", 1)

    def proc(i: int, mine: str, other: str) -> Process:
        return Process(i, (Param("x", ptr), Param("y", ptr)), (
            Decl("r0", CType("int")),
            Store("once", LocAddr(mine), Const(1), 4, "WRITE_ONCE"),
            Assign("r0", Load("once", LocAddr(other), 4, "READ_ONCE")),
        ))

    assert t.name == "SB+poonceonces" and t.result == "Sometimes" and t.init == ()
    assert t.processes == (proc(0, "x", "y"), proc(1, "y", "x"))
    assert t.condition == Condition("exists", And(Eq(Loc("r0", 0), 0), Eq(Loc("r0", 1), 0)))
    assert t.shared_types == {"x": CType("int"), "y": CType("int")}
    assert t.registers == {0: {"r0": CType("int")}, 1: {"r0": CType("int")}}
    # Source lines: the header comment is 7 lines, then "{}", then P0 at line 11.
    p0 = t.processes[0]
    assert (p0.line, p0.body[0].line, p0.body[1].line, p0.body[2].line) == (11, 11 + 2, 11 + 4, 11 + 5)
    assert t.condition.line == 27


def test_mp_release_acquire_by_hand():
    t = parse_file(LITMUS / "kernel" / "MP+pooncerelease+poacquireonce.litmus")
    assert t.processes[0].body == (
        Store("once", LocAddr("buf"), Const(1), 4, "WRITE_ONCE"),
        Store("release", LocAddr("flag"), Const(1), 4, "smp_store_release"),
    )
    assert t.processes[1].body[2:] == (
        Assign("r0", Load("acquire", LocAddr("flag"), 4, "smp_load_acquire")),
        Assign("r1", Load("once", LocAddr("buf"), 4, "READ_ONCE")),
    )


def test_spin_lock_by_hand():
    t = parse_file(LITMUS / "kernel" / "MP+polocks.litmus")
    assert t.init == (InitEntry(Loc("mylock"), CType("spinlock_t"), None),
                      InitEntry(Loc("buf"), CType("int"), None), InitEntry(Loc("flag"), CType("int"), None))
    assert t.processes[1].params[2] == Param("mylock", CType("spinlock_t", 1))
    assert t.processes[1].body[2:] == (
        Lock(LocAddr("mylock")),
        Assign("r0", Load("once", LocAddr("flag"), 4, "READ_ONCE")),
        Unlock(LocAddr("mylock")),
        Assign("r1", Load("once", LocAddr("buf"), 4, "READ_ONCE")),
    )
    sil = parse_file(LITMUS / "kernel" / "MP+polockmbonce+poacquiresilsil.litmus")
    assert sil.processes[0].body[1] == Fence("smp_mb__after_spinlock")
    assert sil.processes[1].body[4] == Assign("r2", IsLocked(LocAddr("lo")))


def test_if_by_hand():
    t = parse_file(LITMUS / "kernel" / "LB+fencembonceonce+ctrlonceonce.litmus")
    assert t.processes[0].body[2] == If(Reg("r0"), (Store("once", LocAddr("y"), Const(1), 4, "WRITE_ONCE"),))
    dep = parse_file(LITMUS / "kernel" / "dep+plain.litmus")
    assert dep.processes[0].body == (
        Decl("a", CType("int"), Load("once", LocAddr("x"), 4, "READ_ONCE")),
        Store("plain", LocAddr("z1"), Reg("a"), 4),
        Store("plain", LocAddr("z2"), Load("plain", LocAddr("z1"), 4), 4),
        If(BinOp("==", Load("plain", LocAddr("z2"), 4), Const(1)),
           (Store("once", LocAddr("y"), Const(1), 4, "WRITE_ONCE"),)),
    )
    dcl = parse_file(LITMUS / "kernel-doc" / "DCL-broken.litmus")
    outer = dcl.processes[0].body[4]
    assert isinstance(outer, If) and outer.cond == BinOp("==", Reg("r0"), Const(0)) and outer.orelse == ()
    assert [type(s).__name__ for s in outer.then] == ["Lock", "Assign", "If", "Unlock"]
    assert outer.then[2].then[1] == Store("once", LocAddr("flag"), Const(1), 4, "WRITE_ONCE")


def test_else_and_else_if():
    t = parse(src("P0(int *x) {\n int r0;\n r0 = READ_ONCE(*x);\n"
                  " if (r0 == 1 && !(r0 & 2)) WRITE_ONCE(*x, 2); else if (r0 || r0 > 3) { *x = 3; } else ;\n}\n"
                  "exists (0:r0=1)\n"))
    s = t.processes[0].body[2]
    assert s == If(BinOp("&&", BinOp("==", Reg("r0"), Const(1)), UnOp("!", BinOp("&", Reg("r0"), Const(2)))),
                   (Store("once", LocAddr("x"), Const(2), 4, "WRITE_ONCE"),),
                   (If(BinOp("||", Reg("r0"), BinOp(">", Reg("r0"), Const(3))),
                       (Store("plain", LocAddr("x"), Const(3), 4),), ()),))


def test_address_dependency_by_hand():
    t = parse(
        "C MP+onceassign+derefonce-without-rcu\n"
        "{\n\tint *p=y;\n\tint x;\n\tint y=0;\n}\n"
        "P0(int *x, int **p)\n{\n\tWRITE_ONCE(*x, 1);\n\tsmp_store_release(p, x);\n}\n"
        "P1(int *x, int **p)\n{\n\tint *r0;\n\tint r1;\n\n"
        "\tr0 = READ_ONCE(*p);\n\tr1 = READ_ONCE(*r0);\n}\n"
        "exists (1:r0=x /\\ 1:r1=0)\n", "dep.litmus")
    assert t.init[0] == InitEntry(Loc("p"), CType("int", 1), Addr("y"))
    assert t.shared_types == {"p": CType("int", 1), "x": CType("int"), "y": CType("int")}
    assert t.processes[0].body[1] == Store("release", LocAddr("p"), LocAddr("x"), 8, "smp_store_release")
    assert t.processes[1].body == (
        Decl("r0", CType("int", 1)), Decl("r1", CType("int")),
        Assign("r0", Load("once", LocAddr("p"), 8, "READ_ONCE")),   # a pointer: 8 bytes
        Assign("r1", Load("once", Reg("r0"), 4, "READ_ONCE")),      # through the register
    )
    assert t.condition.prop == And(Eq(Loc("r0", 1), Addr("x")), Eq(Loc("r1", 1), 0))


def test_atomics_by_hand():
    t = parse_file(LITMUS / "kernel-doc" / "Atomic-RMW-ops-are-atomic-WRT-atomic_set.litmus")
    assert t.init == (InitEntry(Loc("v"), CType("atomic_t"), 1),)
    assert t.processes[0].body == (ExprStmt(AddUnless("atomic_add_unless", LocAddr("v"), Const(1), Const(0))),)
    assert t.processes[1].body == (Store("once", LocAddr("v"), Const(0), 4, "atomic_set"),)
    rm = parse_file(LITMUS / "kernel-doc" / "RM-broken.litmus")
    assert rm.processes[0].body[2] == Assign("r2", Rmw("atomic_inc_return", LocAddr("y"), "+", Const(1),
                                                      "new", "mb"))
    assert rm.filter == And(Eq(Loc("r0", 1), 0), Eq(Loc("r1", 1), 1))
    assert rm.locations == (Loc("x"), Loc("r2", 0), Loc("r0", 1), Loc("r1", 1), Loc("r2", 1))
    inc = parse_file(LITMUS / "kernel-doc" / "Atomic-RMW+mb__after_atomic-is-stronger-than-acquire.litmus")
    assert inc.processes[1].body[:2] == (
        ExprStmt(Rmw("atomic_inc", LocAddr("y"), "+", Const(1), "void", "relaxed")),
        Fence("smp_mb__after_atomic"))
    assert inc.processes[0].body[4] == Assign("r1", Load("once", LocAddr("y"), 4, "atomic_read"))
    cx = parse_file(LITMUS / "kernel-doc" / "cmpxchg-fail-ordered-2.litmus")
    assert cx.processes[0].body[2] == Assign("r1", Cmpxchg("cmpxchg", LocAddr("y"), Const(0), Const(1), "mb"))


ATOMIC_CALLS = [
    ("atomic_add(2, v)", Rmw("atomic_add", LocAddr("v"), "+", Const(2), "void", "relaxed")),
    ("atomic_dec(v)", Rmw("atomic_dec", LocAddr("v"), "-", Const(1), "void", "relaxed")),
    ("atomic_andnot(4, v)", Rmw("atomic_andnot", LocAddr("v"), "&~", Const(4), "void", "relaxed")),
    ("r0 = atomic_sub_return_release(3, v)",
     Rmw("atomic_sub_return_release", LocAddr("v"), "-", Const(3), "new", "release")),
    ("r0 = atomic_fetch_or_acquire(1, v)", Rmw("atomic_fetch_or_acquire", LocAddr("v"), "|", Const(1), "old",
                                               "acquire")),
    ("r0 = atomic_fetch_inc_relaxed(v)", Rmw("atomic_fetch_inc_relaxed", LocAddr("v"), "+", Const(1), "old",
                                             "relaxed")),
    ("r0 = atomic_dec_and_test(v)", Rmw("atomic_dec_and_test", LocAddr("v"), "-", Const(1), "zero", "mb")),
    ("r0 = atomic_add_negative_relaxed(5, v)",
     Rmw("atomic_add_negative_relaxed", LocAddr("v"), "+", Const(5), "negative", "relaxed")),
    ("r0 = atomic_xchg_acquire(v, 7)", Xchg("atomic_xchg_acquire", LocAddr("v"), Const(7), "acquire")),
    ("r0 = xchg_release(x, 7)", Xchg("xchg_release", LocAddr("x"), Const(7), "release")),
    ("r0 = cmpxchg_relaxed(x, 0, 1)", Cmpxchg("cmpxchg_relaxed", LocAddr("x"), Const(0), Const(1), "relaxed")),
    ("r0 = atomic_cmpxchg(v, 0, 1)", Cmpxchg("atomic_cmpxchg", LocAddr("v"), Const(0), Const(1), "mb")),
    ("r0 = atomic_inc_not_zero(v)", AddUnless("atomic_inc_not_zero", LocAddr("v"), Const(1), Const(0))),
    ("r0 = spin_trylock(s)", lit.TryLock(LocAddr("s"))),
    ("r0 = atomic_read_acquire(v)", Load("acquire", LocAddr("v"), 4, "atomic_read_acquire")),
    ("atomic_set_release(v, 1)", Store("release", LocAddr("v"), Const(1), 4, "atomic_set_release")),
    ("smp_mb__before_atomic()", Fence("smp_mb__before_atomic")),
    ("smp_read_barrier_depends()", Fence("smp_read_barrier_depends")),
    ("smp_mb__after_unlock_lock()", Fence("smp_mb__after_unlock_lock")),
]


@pytest.mark.parametrize(("call", "node"), ATOMIC_CALLS, ids=[c for c, _ in ATOMIC_CALLS])
def test_kernel_calls(call, node):
    t = parse(src(f"P0(atomic_t *v, int *x, spinlock_t *s)\n{{\n\tint r0;\n\t{call};\n}}\n"
                  "exists (0:r0=0)\n"))
    stmt = t.processes[0].body[1]
    got = stmt.value if isinstance(stmt, Assign) else stmt.expr if isinstance(stmt, ExprStmt) else stmt
    assert got == node


def test_smp_store_mb_is_a_store_and_a_full_barrier():
    t = parse(src("P0(int *x) { smp_store_mb(*x, 1); }\nexists (x=1)\n"))
    assert t.processes[0].body == (Store("once", LocAddr("x"), Const(1), 4, "smp_store_mb"), Fence("smp_mb"))


def test_mixed_size_by_hand():
    t = parse_file(LITMUS / "mixed" / "MIXED+store32+load64.litmus")
    u32p = CType("u32", 1)
    assert t.init == (InitEntry(Loc("w"), CType("u64"), 0x0102030405060708),)
    assert t.processes[0].body == (Store("once", PtrAdd(Cast(u32p, LocAddr("w")), 4), Const(0xaabbccdd), 4,
                                         "WRITE_ONCE"),)
    assert t.processes[1].body[2:] == (
        Assign("r0", Load("once", LocAddr("w"), 8, "READ_ONCE")),
        Assign("r1", Load("once", PtrAdd(Cast(u32p, LocAddr("w")), 4), 4, "READ_ONCE")),
    )
    rel = parse_file(LITMUS / "mixed" / "MIXED+wrc+halves+release.litmus")
    assert rel.processes[1].body[2] == Store("release", PtrAdd(Cast(u32p, LocAddr("w")), 4), Const(2), 4,
                                             "smp_store_release")


def test_comments():
    t = parse("C T (* after the name,\n on two lines *)\n(* one (* nested *) comment\n Result: Always *)\n"
              "\"a doc string\"\nEndian=little\n{ x=1; /* c */ }\n"
              "P0(int *x) // producer\n{\n\tint r0;\n\tr0 = (*x); /* C */ // line\n}\n"
              "(* before *) exists (* inside *) (0:r0=1) (* after *)\n")
    assert t.result == "Always" and t.info == (("Endian", "little"),)
    assert t.processes[0].body[1] == Assign("r0", Load("plain", LocAddr("x"), 4))
    assert t.init == (InitEntry(Loc("x"), None, 1),)


# ------------------------------------------------------------------ conditions


def cond(text: str, procs: str = "P0(int *x, int *y) { int r0; int r1; }\nP1(int *x) { int r0; }\n") -> Condition:
    return parse(src(procs + text + "\n")).condition


def test_condition_precedence():
    a, b, c = Eq(Loc("r0", 0), 1), Eq(Loc("r1", 0), 2), Eq(Loc("x"), 3)
    assert cond("exists (0:r0=1 \\/ 0:r1=2 /\\ x=3)").prop == Or(a, And(b, c))
    assert cond("exists 0:r0=1 /\\ 0:r1=2 \\/ x=3").prop == Or(And(a, b), c)
    assert cond("exists ~0:r0=1 /\\ 0:r1=2").prop == And(Not(a), b)
    assert cond("exists 0:r0=1 /\\ 0:r1=2 => x=3").prop == And(a, Implies(b, c))   # => binds tighter
    assert cond("exists 0:r0=1 => 0:r1=2 => x=3").prop == Implies(a, Implies(b, c))
    assert cond("forall (0:r0!=1 \\/ true)").prop == Or(Not(a), PTrue())
    assert cond("~exists (x=3 /\\ false)") == Condition("~exists", And(c, PFalse()))
    assert cond("exists (0:r0==1 /\\ P0:r1=2)").prop == And(a, b)
    assert cond("exists (0:r0=1:r0 /\\ 0:r1=*x /\\ [x]=-3 /\\ y=x)").prop == And(And(And(
        LocEq(Loc("r0", 0), Loc("r0", 1)), LocEq(Loc("r1", 0), Loc("x"))), Eq(Loc("x"), -3)),
        Eq(Loc("y"), Addr("x")))
    assert cond("locations [x;]\nexists (x=0)").prop == Eq(Loc("x"), 0)


def test_condition_evaluation_round_trip():
    """Parse every shape of proposition over three atoms; evaluation agrees with Python's."""
    atoms = {"A": "0:r0=1", "B": "0:r1=2", "C": "x=3"}
    shapes = ["A /\\ B \\/ C", "A \\/ B /\\ C", "~A /\\ ~(B \\/ C)", "A => B", "A /\\ B => C", "~(A => C) \\/ B",
              "(A \\/ B) /\\ (B \\/ C) /\\ ~(A /\\ C)", "A => B => C"]
    py = {"A /\\ B \\/ C": lambda a, b, c: (a and b) or c,
          "A \\/ B /\\ C": lambda a, b, c: a or (b and c),
          "~A /\\ ~(B \\/ C)": lambda a, b, c: not a and not (b or c),
          "A => B": lambda a, b, c: (not a) or b,
          "A /\\ B => C": lambda a, b, c: a and ((not b) or c),
          "~(A => C) \\/ B": lambda a, b, c: (a and not c) or b,
          "(A \\/ B) /\\ (B \\/ C) /\\ ~(A /\\ C)": lambda a, b, c: (a or b) and (b or c) and not (a and c),
          "A => B => C": lambda a, b, c: (not a) or ((not b) or c)}
    for shape in shapes:
        text = shape
        for k, v in atoms.items():
            text = text.replace(k, v)
        c = cond(f"exists ({text})")
        for a, b, cc in itertools.product((False, True), repeat=3):
            state = {"0:r0": 1 if a else 0, "0:r1": 2 if b else 5, "x": 3 if cc else -3, "y": 0, "1:r0": 0}
            assert eval_prop(c.prop, state) == py[shape](a, b, cc), (shape, a, b, cc)


def test_addresses_compare_by_name_not_as_ints():
    c = cond("exists (0:r0=x)", "P0(int *x, int **p) { int *r0; }\n")
    assert eval_prop(c.prop, {"0:r0": Addr("x")})
    assert not eval_prop(c.prop, {"0:r0": Addr("p")}) and not eval_prop(c.prop, {"0:r0": 0})
    assert not eval_prop(cond("exists (0:r0=0)").prop, {"0:r0": Addr("x")})
    with pytest.raises(KeyError, match="no 0:r1"):
        eval_prop(cond("exists (0:r1=0)").prop, {"0:r0": 0})


def sb_states(model: str) -> list[dict[str, int]]:
    sc = [{"0:r0": a, "1:r0": b} for a, b in ((0, 1), (1, 0), (1, 1))]
    return sc + ([{"0:r0": 0, "1:r0": 0}] if model == "tso" else [])


def test_verdicts_on_sb():
    t = parse_file(LITMUS / "kernel" / "SB+poonceonces.litmus")
    sc, tso = judge(t.condition, sb_states("sc")), judge(t.condition, sb_states("tso"))
    assert (sc.observation, sc.ok, sc.positive, sc.negative, sc.kind) == ("Never", False, 0, 3, "Allowed")
    assert (tso.observation, tso.ok, tso.witnesses) == ("Sometimes", True, (1, 3))
    assert tso.agrees(t.result) and not sc.agrees(t.result)
    never = Condition("~exists", t.condition.prop)
    v = judge(never, sb_states("sc"))
    assert (v.observation, v.ok, v.kind, v.witnesses) == ("Never", True, "Forbidden", (3, 0))
    v = judge(never, sb_states("tso"))
    assert (v.observation, v.ok, v.witnesses) == ("Sometimes", False, (3, 1))
    some_zero = parse(src("P0(int *x) { int r0; }\nP1(int *x) { int r0; }\n"
                          "forall (0:r0=1 \\/ 1:r0=1)\n")).condition
    v = judge(some_zero, sb_states("sc"))
    assert (v.observation, v.ok, v.kind, v.witnesses) == ("Always", True, "Required", (3, 0))
    v = judge(some_zero, sb_states("tso"))
    assert (v.observation, v.ok) == ("Sometimes", False)


def test_judge_counts_and_filter():
    t = parse_file(LITMUS / "kernel-doc" / "RM-fixed.litmus")
    states = [{"1:r0": 0, "1:r1": 1, "1:r2": 2}, {"1:r0": 0, "1:r1": 0, "1:r2": 1}, {"1:r0": 1, "1:r1": 1, "1:r2": 1}]
    v = judge(t.condition, states, counts=[4, 2, 3], filter=t.filter)
    assert (v.positive, v.negative, v.observation) == (0, 4, "Never") and v.agrees("Never")
    v = judge(t.condition, states, counts=[4, 2, 3])
    assert (v.positive, v.negative, v.observation) == (5, 4, "Sometimes")
    with pytest.raises(ValueError):
        judge(t.condition, states, counts=[1, 2])
    dead = judge(t.condition, [], filter=t.filter)
    assert (dead.observation, dead.positive, dead.negative) == ("Never", 0, 0)
    assert dead.agrees("DEADLOCK") and dead.agrees("Never") and not v.agrees("DEADLOCK")


@pytest.mark.parametrize(("q", "pos", "neg", "word", "ok"), [
    ("exists", 0, 5, "Never", False), ("exists", 2, 3, "Sometimes", True), ("exists", 5, 0, "Always", True),
    ("~exists", 0, 5, "Never", True), ("~exists", 2, 3, "Sometimes", False), ("~exists", 5, 0, "Always", False),
    ("forall", 0, 5, "Never", False), ("forall", 2, 3, "Sometimes", False), ("forall", 5, 0, "Always", True),
])
def test_herd_verdict_table(q, pos, neg, word, ok):
    v = Verdict(q, pos, neg)
    assert (v.observation, v.ok) == (word, ok)
    assert v.agrees(word) and v.agrees("Maybe") and not v.agrees(None)


def test_wrap():
    assert wrap(0xffffffff, CType("int")) == -1
    assert wrap(0xffffffff, CType("u32")) == 0xffffffff
    assert wrap(-1, CType("u64")) == (1 << 64) - 1
    assert wrap(0x1_0000_0001, CType("int")) == 1
    with pytest.raises(ValueError):
        wrap(1, CType("spinlock_t"))


# ------------------------------------------------------------------ mixed-size expectations


def test_mixed_expectations_are_consistent():
    """expected.json: each file parses, every model's set holds the keys its condition
    needs, SC <= TSO <= LKMM, and the condition's verdict on each set is the one recorded."""
    data = json.loads((LITMUS / "mixed" / "expected.json").read_text())
    data.pop("_comment")
    assert set(data) == {p.stem for p in (LITMUS / "mixed").glob("*.litmus")}
    for name, exp in data.items():
        t = parse_file(LITMUS / "mixed" / f"{name}.litmus")
        assert t.result == exp["verdict"]["lkmm"]
        assert set(exp["outcomes"]) == {"little", "big"}
        for order, models in exp["outcomes"].items():
            sets = {m: {tuple(sorted(s.items())) for s in states} for m, states in models.items()}
            assert sets["sc"] <= sets["tso"] <= sets["lkmm"], (name, order)
            for m, states in models.items():
                assert len(sets[m]) == len(states)
                ints = [{k: int(v, 16) for k, v in s.items()} for s in states]
                for s in ints:
                    assert all(0 <= v < 1 << 64 for v in s.values())
                assert judge(t.condition, ints).observation == exp["verdict"][m], (name, order, m)


# ------------------------------------------------------------------ errors

SYNTAX_ERRORS = [
    ("", "t.litmus:1:1: empty file: expected 'C NAME'"),
    ("C\n", "t.litmus:1:2: expected a test name after 'C'"),
    ("Test SB\n{}\n", "t.litmus:1:1: expected 'C NAME' on the first line, found 'Test'"),
    ("C T\nP0(int *x) {}\n", "t.litmus:2:1: expected '{' to open the init block, found 'P0'"),
    ("C T\n{ x=1 y=2; }\n", "t.litmus:2:7: expected ';' between init items, found 'y'"),
    ("C T\n{ x=1; x=2; }\nP0(int *x) {}\nexists (x=1)\n", "t.litmus:2:8: x is initialised twice"),
    ("C T\n{}\nP1(int *x) {}\n", "t.litmus:3:1: expected P0, found P1 (processes are numbered from P0 in order)"),
    ("C T\n{}\nP0(int x) {}\n", "t.litmus:3:8: parameter x must be a pointer (e.g. 'int *x')"),
    ("C T\n{}\nP0(int *x) {\n\tWRITE_ONCE(*x 1);\n}\n",
     "t.litmus:4:16: expected ')' to close WRITE_ONCE(, found '1'"),
    ("C T\n{}\nP0(int *x) {\n\tWRITE_ONCE(x, 1);\n}\nexists (x=1)\n",
     "t.litmus:4:2: WRITE_ONCE() needs a dereference as its location, e.g. WRITE_ONCE(*x, v)"),
    ("C T\n{}\nP0(int *x) {\n\tint r0;\n\tr0 = READ_ONCE(*y);\n}\n",
     "t.litmus:5:18: unknown identifier 'y' in P0 (declare it, or pass it as a parameter)"),
    ("C T\n{}\nP0(int *x) {\n\tint r0;\n\tr0 = smp_mb();\n}\n",
     "t.litmus:5:7: smp_mb() is a statement, not a value"),
    ("C T\n{}\nP0(atomic_t *v) {\n\tint r0;\n\tr0 = atomic_inc(v);\n}\n",
     "t.litmus:5:7: atomic_inc() returns no value"),
    ("C T\n{}\nP0(int *x) {\n\tsmp_mb(1);\n}\n", "t.litmus:4:2: smp_mb() takes 0 arguments, got 1"),
    ("C T\n{}\nP0(int *x) {\n\tint r0;\n\tint r0;\n}\n", "t.litmus:5:6: r0 is already declared in P0"),
    ("C T\n{}\nP0(int *x) {\n\tx = 1;\n}\n",
     "t.litmus:4:2: cannot assign to parameter x (write *x = ... to store)"),
    ("C T\n{}\nP0(int *x) {\n\tint r0;\n\tr0 = *r0;\n}\n",
     "t.litmus:5:7: dereference of a non-pointer (declare it 'int *' or pass it as a parameter)"),
    ("C T\n{}\nP0(int *x) {\n\tWRITE_ONCE(*x, 1);\n", "t.litmus:5:1: expected '}', found end of file"),
    ("C T\n{}\nP0(int *x) {\n}\n", "t.litmus:5:1: expected exists, ~exists or forall, found end of file"),
    ("C T\n{}\nP0(int *x) {\n}\nexists (0:r0=1)\n", "t.litmus:5:11: 0:r0: P0 declares no register r0"),
    ("C T\n{}\nP0(int *x) {\n}\nexists (2:r0=1)\n", "t.litmus:5:9: 2:r0: there is no P2"),
    ("C T\n{}\nP0(int *x) {\n}\nexists (z=1)\n", "t.litmus:5:9: z is not a location of this test"),
    ("C T\n{}\nP0(int *x) {\n}\nexists (x=1 /\\)\n", "t.litmus:5:15: expected a location (x or 0:r0), found ')'"),
    ("C T\n{}\nP0(int *x) {\n}\nexists (x 1)\n", "t.litmus:5:11: expected '=' or '!=' after x, found '1'"),
    ("C T\n{}\nP0(int *x) {\n}\nexists (x=1) junk\n",
     "t.litmus:5:14: unexpected 'junk' after the final condition"),
    ("C T\n{ int x; }\nP0(u64 *x) {\n}\nexists (x=1)\n",
     "t.litmus:3:4: P0's parameter x is 'u64 *' but the init block makes x 'int'"),
    ("C T\n(* open\n{}\n", "t.litmus:2:1: unterminated (* comment"),
    ("C T extra\n{}\n", "t.litmus:1:5: expected '{' to open the init block, found 'extra'"),
    ("C T\n{}\nP0(int *x) {}\nP1(u64 *x) {}\nexists (x=1)\n",
     "t.litmus:4:4: P1's parameter x is 'u64 *' but P0's parameters makes x 'int'"),
    ("C T\n{}\nP0(int *x) {\n\tint r0;\n\tr0 = 1 @ 2;\n}\n", "t.litmus:5:9: unexpected character '@'"),
    ("C T\n{}\nP0(u64 *w) {\n\tWRITE_ONCE(*((u32 *)w + 2), 1);\n}\nexists (w=1)\n",
     "t.litmus:4:13: access of 4 bytes at offset 8 is outside w (8 bytes)"),
]


@pytest.mark.parametrize(("text", "message"), SYNTAX_ERRORS, ids=[m.split(": ", 1)[1][:40] for _, m in SYNTAX_ERRORS])
def test_syntax_errors(text, message):
    with pytest.raises(LitmusSyntaxError) as e:
        parse(text, "t.litmus")
    assert str(e.value) == message
    assert (e.value.filename, e.value.line) == ("t.litmus", int(message.split(":")[1]))


UNSUPPORTED_SNIPPETS = [
    ("\trcu_read_lock();", "rcu_read_lock()", "RCU is not modelled"),
    ("\tr0 = rcu_dereference(*x);", "rcu_dereference()", "RCU is not modelled"),
    ("\tsynchronize_rcu();", "synchronize_rcu()", "RCU is not modelled"),
    ("\tr0 = srcu_read_lock(x);", "srcu_read_lock()", "SRCU is not modelled"),
    ("\tcall_rcu(x, x);", "call_rcu()", "RCU is not modelled"),
    ("\twhile (r0 == 0) r0 = READ_ONCE(*x);", "while loop", "loops and jumps are not modelled"),
    ("\tfor (;;) ;", "for loop", "loops and jumps are not modelled"),
    ("\tdo { } while (0);", "do-while loop", "loops and jumps are not modelled"),
    ("\tr0 = foo(x);", "foo()", "not a kernel primitive the litmus format supports"),
    ("\tatomic64_inc(x);", "atomic64_inc()", "not a kernel primitive the litmus format supports"),
    ("\tr0 = (int)r0;", "cast to int", "only pointer casts (mixed-size accesses) are read"),
    ("\tr0 = r0 ? 1 : 2;", "operator ?:", "write an if statement instead"),
    ("\tr0++;", "operator ++", "write r = r + 1 instead"),
    ("\tr0 += 1;", "operator +=", "write r = r OP v instead"),
    ("\tWRITE_ONCE(*x, &r0);", "address-of operator &", "pass the location as a parameter"),
    ("\tvolatile int r1;", "volatile", "type qualifiers are not modelled"),
    ("\tstruct page *p;", "type struct", "not a type the litmus format supports"),
    ("\tfoo_t r1;", "type foo_t", "not a type the litmus format supports"),
    ("\tint r1[2];", "array", "arrays are not modelled"),
    ("\tWRITE_ONCE(*(u16 *)((u8 *)x + 1), 1);", "misaligned access", "accesses must be aligned to their size"),
]


@pytest.mark.parametrize(("stmt", "name", "reason"), UNSUPPORTED_SNIPPETS, ids=[n for _, n, _ in UNSUPPORTED_SNIPPETS])
def test_unsupported_constructs(stmt, name, reason):
    text = f"C T\n{{}}\nP0(int *x)\n{{\n\tint r0;\n{stmt}\n}}\nexists (0:r0=0)\n"
    with pytest.raises(UnsupportedConstruct) as e:
        parse(text, "u.litmus")
    assert (e.value.name, e.value.line, e.value.reason) == (name, 6, reason)
    assert str(e.value) == f"u.litmus:6:{e.value.col}: unsupported construct {name} ({reason})"


def test_other_architectures_are_unsupported():
    with pytest.raises(UnsupportedConstruct) as e:
        parse("\nX86 SB\n\"Fre PodWR Fre PodWR\"\n{ x=0; }\n P0 | P1 ;\n", "x86.litmus")
    assert (e.value.name, e.value.line) == ("X86 litmus test", 2)
    assert str(e.value) == "x86.litmus:2:1: unsupported construct X86 litmus test (only C litmus tests are read)"


def test_package_exports():
    for name in lit.__all__:
        assert hasattr(lit, name), name


def test_mangled_files_fail_cleanly():
    """Truncated or mangled tests parse or raise a one-line LitmusError, never anything else."""
    import random

    from emu.litmus import LitmusError

    texts = [p.read_text() for p in ALL_FILES]
    rng = random.Random(17)
    pieces = list("{}()[];,*&=+-/%^|!~<>:?.\\ \n0123456789xr") + [
        "(*", "*)", "/\\", "\\/", "exists", "P0", "P1", "int", "READ_ONCE", "if", "else", "0:r0", "u32 *", "//"]
    for _ in range(1000):
        s = rng.choice(texts)
        i = rng.randrange(len(s))
        j = min(len(s), i + rng.randrange(1, 12))
        s = rng.choice((s[:i], s[:i] + s[j:], s[:i] + rng.choice(pieces) + s[i:], s[:i] + rng.choice(pieces) + s[j:]))
        try:
            parse(s, "f.litmus")
        except LitmusError as e:
            assert "\n" not in str(e) and str(e).startswith("f.litmus:")
