"""The kernel's C litmus-test format (tools/memory-model/litmus-tests): a
parser to a typed AST, and herd7's verdict words over a set of final states.

    test = parse_file("tests/litmus/kernel/SB+poonceonces.litmus")
    verdict = judge(test.condition, final_states, filter=test.filter)
    verdict.observation        # "Never" | "Sometimes" | "Always"
    verdict.agrees(test.result)

Constructs the format has but ksm-emu does not model (RCU, SRCU, loops, calls
outside emu.litmus.prims) raise UnsupportedConstruct; malformed input raises
LitmusSyntaxError.  The mixed-size extension is in docs/litmus-format.md.
"""

from .ast import (
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
    Expr,
    ExprStmt,
    Fence,
    If,
    Implies,
    InitEntry,
    IsLocked,
    LitmusTest,
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
    Prop,
    PtrAdd,
    PTrue,
    Reg,
    Rmw,
    Stmt,
    Store,
    TryLock,
    Unlock,
    UnOp,
    Value,
    Xchg,
)
from .cond import State, Verdict, eval_prop, judge, wrap
from .errors import LitmusError, LitmusSyntaxError, UnsupportedConstruct
from .parse import parse, parse_file

__all__ = [
    "AddUnless", "Addr", "And", "Assign", "BinOp", "CType", "Cast", "Cmpxchg", "Condition", "Const",
    "Decl", "Eq", "Expr", "ExprStmt", "Fence", "If", "Implies", "InitEntry", "IsLocked",
    "LitmusError", "LitmusSyntaxError", "LitmusTest", "Load", "Loc", "LocAddr", "LocEq", "Lock", "Not",
    "Or", "PFalse", "PTrue", "Param", "Process", "Prop", "PtrAdd", "Reg", "Rmw", "State", "Stmt",
    "Store", "TryLock", "UnOp", "Unlock", "UnsupportedConstruct", "Value", "Verdict", "Xchg",
    "eval_prop", "judge", "parse", "parse_file", "wrap",
]
