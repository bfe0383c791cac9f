"""Recursive-descent parser of the kernel's C litmus format.

The grammar is herd7's C litmus dialect as tools/memory-model/litmus-tests
uses it (herdtools7 lib/CParser.mly for the code, lib/stateParser.mly for the
init block and the final condition), restricted to the kernel primitives of
prims.py, plus the small mixed-size extension of docs/litmus-format.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import prims
from .ast import (
    BASE_TYPES,
    INT,
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
from .errors import LitmusSyntaxError, UnsupportedConstruct
from .lexer import Comment, Token, tokenize

__all__ = ["parse", "parse_file"]

_PROC = re.compile(r"P(\d+)\Z")
_RESULT = re.compile(r"^[\s*]*Result:\s*(\S+)", re.MULTILINE)
_ARCHS = {"X86", "X86_64", "PPC", "ARM", "AArch64", "AARCH64", "RISCV", "MIPS", "LISA", "BPF",
          "PTX", "GPU_PTX", "OpenCL", "JAVA", "ASL"}
_SIGNED = {"int", "long", "char", "short"}
_QUALIFIERS = {"volatile", "const", "static", "register", "extern", "auto", "restrict"}
_NOT_TYPES = {"struct", "union", "enum", "typedef", "bool", "_Bool", "void", "float", "double",
              "atomic_long_t", "atomic64_t", "raw_spinlock_t", "rwlock_t", "seqlock_t", "mutex"}
_LOOPS = {"while": "while loop", "for": "for loop", "do": "do-while loop", "goto": "goto",
          "switch": "switch", "return": "return", "break": "break", "continue": "continue"}
_COMPOUND = {"+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=", "++", "--"}
_BINARY_LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="),
    ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
)
_PRECEDENCE = {op: level for level, ops in enumerate(_BINARY_LEVELS) for op in ops}


def parse(text: str, filename: str = "<litmus>") -> LitmusTest:
    """Parse a C litmus test.  Raises LitmusSyntaxError or UnsupportedConstruct."""
    return _Parser(text, filename).test()


def parse_file(path: str | Path) -> LitmusTest:
    """Parse the litmus test in file `path`."""
    p = Path(path)
    return parse(p.read_text(encoding="utf-8"), str(p))


class _Scope:
    """What the identifiers of one process body name."""

    def __init__(self, index: int, params: dict[str, CType]) -> None:
        self.index = index
        self.params = params
        self.regs: dict[str, CType] = {}


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.toks: list[Token] = []
        self.comments: list[Comment] = []
        self.pos = 0
        self.scope: _Scope | None = None
        self.declared: dict[str, tuple[CType, str]] = {}  # location -> (type, where it was declared)

    # ---------------------------------------------------------------- tokens

    def peek(self, k: int = 0) -> Token:
        try:
            return self.toks[self.pos + k]
        except IndexError:
            return self.toks[-1]

    def next(self) -> Token:
        t = self.peek()
        self.pos += 1
        return t

    def at(self, *texts: str) -> bool:
        t = self.peek()
        return t.kind in ("op", "name") and t.text in texts

    def accept(self, text: str) -> Token | None:
        if self.at(text):
            return self.next()
        return None

    def expect(self, text: str, what: str = "") -> Token:
        t = self.peek()
        if t.kind in ("op", "name") and t.text == text:
            return self.next()
        raise self.error(f"expected '{text}'{' ' + what if what else ''}, found {self.show(t)}", t)

    def expect_name(self, what: str) -> Token:
        t = self.peek()
        if t.kind != "name":
            raise self.error(f"expected {what}, found {self.show(t)}", t)
        return self.next()

    @staticmethod
    def show(t: Token) -> str:
        return "end of file" if t.kind == "eof" else repr(t.text)

    def error(self, msg: str, t: Token) -> LitmusSyntaxError:
        return LitmusSyntaxError(msg, self.filename, t.line, t.col)

    def unsupported(self, name: str, t: Token, reason: str = "") -> UnsupportedConstruct:
        return UnsupportedConstruct(name, t.line, filename=self.filename, col=t.col, reason=reason)

    # ---------------------------------------------------------------- test

    def test(self) -> LitmusTest:
        name, body_start, line = self.header()
        self.toks, self.comments = tokenize(self.text, self.filename, body_start, line)
        info = self.prelude()
        init = self.init_block()
        processes: list[Process] = []
        while self.peek().kind == "name" and _PROC.match(self.peek().text) and self.peek(1).text == "(":
            processes.append(self.process(len(processes)))
        if not processes:
            raise self.error(f"expected a process P0(...), found {self.show(self.peek())}", self.peek())
        shared = self.shared_types(init, processes)
        locations = self.locations(processes, shared)
        filt = None
        if self.at("filter"):
            self.next()
            filt = self.prop(processes, shared)
        cond = self.condition(processes, shared)
        self.accept(";")
        if self.peek().kind != "eof":
            t = self.peek()
            if t.text == "with":
                raise self.unsupported("with", t, "herd7 'with' kinds are not read")
            raise self.error(f"unexpected {self.show(t)} after the final condition", t)
        m = next((m for c in self.comments if (m := _RESULT.search(c.text))), None)
        return LitmusTest(name, self.filename, m.group(1) if m else None, tuple(init), tuple(processes),
                          cond, locations=locations, filter=filt, info=tuple(info),
                          shared=tuple(sorted(shared.items())), line=line)

    def header(self) -> tuple[str, int, int]:
        """`C NAME` on the first non-blank line: the name, and the offset and line where the rest starts."""
        offset = 0
        for lineno, raw in enumerate(self.text.split("\n"), 1):  # lines as the lexer counts them
            words = raw.split()
            if not words:
                offset += len(raw) + 1
                continue
            col = len(raw) - len(raw.lstrip()) + 1
            if words[0] in _ARCHS:
                raise UnsupportedConstruct(f"{words[0]} litmus test", lineno, filename=self.filename,
                                           col=col, reason="only C litmus tests are read")
            if words[0] != "C":
                raise LitmusSyntaxError(f"expected 'C NAME' on the first line, found {words[0]!r}",
                                        self.filename, lineno, col)
            if len(words) < 2:
                raise LitmusSyntaxError("expected a test name after 'C'", self.filename, lineno,
                                        col + 1)
            end = raw.index(words[1], col) + len(words[1])  # the rest of the line is tokenized
            return words[1], offset + end, lineno
        raise LitmusSyntaxError("empty file: expected 'C NAME'", self.filename, 1, 1)

    def prelude(self) -> list[tuple[str, str]]:
        """A doc string and `Key=Value` lines between the header and the init block."""
        info: list[tuple[str, str]] = []
        while not self.at("{"):
            t = self.peek()
            if t.kind == "str":
                self.next()
            elif t.kind == "name" and self.peek(1).text == "=":
                line_text = self.text.split("\n")[t.line - 1]
                info.append((t.text, line_text.split("=", 1)[1].strip()))
                while self.peek().line == t.line and self.peek().kind != "eof":
                    self.next()
            else:
                raise self.error(f"expected '{{' to open the init block, found {self.show(t)}", t)
        return info

    # ---------------------------------------------------------------- init block

    def init_block(self) -> list[InitEntry]:
        self.expect("{")
        entries: list[InitEntry] = []
        seen: set[str] = set()
        while not self.at("}"):
            if self.accept(";"):
                continue
            start = self.peek()
            e = self.init_entry()
            if e.loc.key in seen:
                raise self.error(f"{e.loc.key} is initialised twice", start)
            seen.add(e.loc.key)
            if e.loc.proc is None and e.ctype is not None:
                self.declared[e.loc.name] = (e.ctype, "the init block")
            entries.append(e)
            if not self.at("}"):
                self.expect(";", "between init items")
        self.next()
        return entries

    def init_entry(self) -> InitEntry:
        first = self.peek()
        ctype: CType | None = None
        if self.is_type_start():
            ctype = self.ctype()
        elif self.at("*"):
            ctype = CType("int", 0)
            while self.accept("*"):
                ctype = ctype.pointer()
        loc = self.init_loc()
        if self.at("["):
            raise self.unsupported("array", self.peek(), "arrays are not modelled")
        value: Value | None = None
        if self.accept("="):
            t = self.peek()
            if t.kind == "name" and t.text == "ATOMIC_INIT":
                self.next()
                self.expect("(")
                value = self.init_value()
                self.expect(")")
            else:
                value = self.init_value()
        return InitEntry(loc, ctype, value, line=first.line)

    def init_loc(self) -> Loc:
        t = self.peek()
        if t.kind == "num" and self.peek(1).text == ":":
            self.next()
            self.next()
            return Loc(self.expect_name("a register name").text, t.value, line=t.line)
        if t.kind == "name" and _PROC.match(t.text) and self.peek(1).text == ":":
            self.next()
            self.next()
            return Loc(self.expect_name("a register name").text, int(t.text[1:]), line=t.line)
        return Loc(self.expect_name("a location name").text, line=t.line)

    def init_value(self) -> Value:
        t = self.peek()
        if self.accept("&"):
            return Addr(self.expect_name("a location name after '&'").text, line=t.line)
        if t.kind == "name":
            self.next()
            return Addr(t.text, line=t.line)
        return self.number("an initial value")

    def number(self, what: str) -> int:
        neg = self.accept("-") is not None
        t = self.peek()
        if t.kind != "num":
            raise self.error(f"expected {what}, found {self.show(t)}", t)
        self.next()
        return -t.value if neg else t.value

    # ---------------------------------------------------------------- types

    def is_type_start(self) -> bool:
        t = self.peek()
        if t.kind != "name":
            return False
        return t.text in BASE_TYPES or t.text in ("unsigned", "signed") or t.text in _QUALIFIERS \
            or t.text in _NOT_TYPES

    def ctype(self) -> CType:
        t = self.next()
        word = t.text
        if word in _QUALIFIERS:
            raise self.unsupported(word, t, "type qualifiers are not modelled")
        if word in _NOT_TYPES:
            raise self.unsupported(f"type {word}", t, "not a type the litmus format supports")
        if word in ("unsigned", "signed"):
            base = "int"
            if self.peek().kind == "name" and self.peek().text in _SIGNED:
                base = self.next().text
            if self.peek().kind == "name" and self.peek().text in ("int", "long"):  # long int, long long
                self.next()
            word = base if word == "signed" else f"unsigned {base}"
        elif word == "long" and self.peek().kind == "name" and self.peek().text in ("int", "long"):
            self.next()
        ct = CType(word)
        while self.accept("*"):
            ct = ct.pointer()
        return ct

    # ---------------------------------------------------------------- processes

    def process(self, expected: int) -> Process:
        t = self.next()
        index = int(t.text[1:])
        if index != expected:
            raise self.error(f"expected P{expected}, found {t.text} (processes are numbered from P0 in order)",
                             t)
        self.expect("(")
        params: list[Param] = []
        names: dict[str, CType] = {}
        if not self.at(")"):
            while True:
                pt = self.peek()
                if not self.is_type_start():
                    raise self.error(f"expected a parameter type, found {self.show(pt)}", pt)
                ct = self.ctype()
                nt = self.expect_name("a parameter name")
                if not ct.pointers:
                    raise self.error(f"parameter {nt.text} must be a pointer (e.g. 'int *{nt.text}')", nt)
                if nt.text in names:
                    raise self.error(f"parameter {nt.text} is declared twice", nt)
                known = self.declared.setdefault(nt.text, (ct.deref(), f"P{index}'s parameters"))
                if known[0] != ct.deref():
                    raise self.error(f"P{index}'s parameter {nt.text} is '{ct}' but {known[1]} "
                                     f"makes {nt.text} '{known[0]}'", pt)
                names[nt.text] = ct
                params.append(Param(nt.text, ct, line=pt.line))
                if not self.accept(","):
                    break
        self.expect(")", "to close the parameter list")
        self.scope = _Scope(index, names)
        body = self.block()
        self.scope = None
        return Process(index, tuple(params), tuple(body), line=t.line)

    def block(self) -> list[Stmt]:
        self.expect("{")
        out: list[Stmt] = []
        while not self.at("}"):
            if self.peek().kind == "eof":
                raise self.error("expected '}', found end of file", self.peek())
            out.extend(self.statement())
        self.next()
        return out

    def body_or_statement(self) -> list[Stmt]:
        return self.block() if self.at("{") else self.statement()

    def statement(self) -> list[Stmt]:
        t = self.peek()
        if t.kind == "op":
            if t.text == ";":
                self.next()
                return []
            if t.text == "{":
                return self.block()
            if t.text == "(" and self.peek(1).text == "void" and self.peek(2).text == ")":
                self.pos += 3
                e = self.expr(allow_void=True)
                self.expect(";")
                return [ExprStmt(e, line=t.line)]
        if t.kind == "name":
            word = t.text
            if word in _LOOPS:
                raise self.unsupported(_LOOPS[word], t, "loops and jumps are not modelled")
            if word == "if":
                return [self.if_statement()]
            if word == "else":
                raise self.error("'else' without 'if'", t)
            if self.is_type_start():
                return self.declaration()
            if self.peek(1).kind == "name" and word not in self.scope_names():
                raise self.unsupported(f"type {word}", t, "not a type the litmus format supports")
            if self.peek(1).text == "(":
                if word in prims.STORES:
                    return self.store_call()
                if word in prims.FENCES:
                    self.call_args(0)
                    self.expect(";")
                    return [Fence(word, line=t.line)]  # type: ignore[arg-type]
                if word in prims.LOCK_STMTS:
                    (arg,) = self.call_args(1)
                    self.expect(";")
                    lock = self.pointer_arg(word, arg, t)
                    return [Lock(lock, line=t.line) if word == "spin_lock" else Unlock(lock, line=t.line)]
        return [self.expression_statement()]

    def scope_names(self) -> set[str]:
        assert self.scope is not None
        return set(self.scope.regs) | set(self.scope.params)

    def if_statement(self) -> If:
        t = self.expect("if")
        self.expect("(")
        cond = self.expr()
        self.expect(")")
        then = self.body_or_statement()
        orelse: list[Stmt] = []
        if self.accept("else"):
            orelse = self.body_or_statement()
        return If(cond, tuple(then), tuple(orelse), line=t.line)

    def declaration(self) -> list[Stmt]:
        assert self.scope is not None
        first = self.peek()
        base = self.ctype()
        out: list[Stmt] = []
        ct = base
        while True:
            nt = self.expect_name("a variable name")
            if self.at("["):
                raise self.unsupported("array", self.peek(), "arrays are not modelled")
            if nt.text in self.scope.regs or nt.text in self.scope.params:
                raise self.error(f"{nt.text} is already declared in P{self.scope.index}", nt)
            init = None
            if self.accept("="):
                init = self.expr()
            self.scope.regs[nt.text] = ct
            out.append(Decl(nt.text, ct, init, line=first.line))
            if not self.accept(","):
                break
            ct = CType(base.base)
            while self.accept("*"):
                ct = ct.pointer()
        self.expect(";", "after a declaration")
        return out

    def store_call(self) -> list[Stmt]:
        t = self.peek()
        spec = prims.STORES[t.text]
        target, value = self.call_args(2)
        self.expect(";")
        addr = self.address_arg(t.text, spec.style, target, t)
        out: list[Stmt] = [Store(spec.kind, addr, value, self.access_size(addr, t), t.text,  # type: ignore[arg-type]
                                 line=t.line)]
        if spec.then_mb:
            out.append(Fence("smp_mb", line=t.line))
        return out

    def expression_statement(self) -> Stmt:
        assert self.scope is not None
        t = self.peek()
        e = self.expr(allow_void=True)
        op = self.peek()
        if op.text in _COMPOUND and op.kind == "op":
            raise self.unsupported(f"operator {op.text}", op, "write r = r OP v instead")
        if self.accept("="):
            value = self.expr()
            self.expect(";")
            if isinstance(e, Reg):
                return Assign(e.name, value, line=t.line)
            if isinstance(e, Load) and e.kind == "plain":
                return Store("plain", e.addr, value, e.size, line=t.line)
            if isinstance(e, LocAddr):
                raise self.error(f"cannot assign to parameter {e.name} (write *{e.name} = ... to store)", t)
            raise self.error("the left of '=' must be a register or *pointer", t)
        self.expect(";")
        if isinstance(e, (Reg, LocAddr, Const)):
            raise self.error("statement has no effect", t)
        return ExprStmt(e, line=t.line)

    # ---------------------------------------------------------------- expressions

    def expr(self, allow_void: bool = False) -> Expr:
        e = self.binary(0, allow_void)
        if self.at("?"):
            raise self.unsupported("operator ?:", self.peek(), "write an if statement instead")
        return e

    def binary(self, min_level: int, allow_void: bool = False) -> Expr:
        """Precedence climbing over _BINARY_LEVELS; every level left-associative."""
        left = self.unary(allow_void)
        while True:
            t = self.peek()
            level = _PRECEDENCE.get(t.text, -1) if t.kind == "op" else -1
            if level < min_level:
                return left
            self.next()
            left = self.combine(t, left, self.binary(level + 1))

    def combine(self, op: Token, left: Expr, right: Expr) -> Expr:
        for side in (left, right):
            if isinstance(side, Rmw) and side.returns == "void":
                raise self.error(f"{side.func}() returns no value", op)
        lt = self.type_of(left)
        if lt is not None and lt.pointers and op.text in ("+", "-"):
            if not isinstance(right, Const):
                raise self.unsupported("non-constant pointer arithmetic", op)
            size = lt.deref().size
            if size is None:
                raise self.error(f"no arithmetic on a {lt}", op)
            k = right.value * size * (1 if op.text == "+" else -1)
            if isinstance(left, PtrAdd):
                return PtrAdd(left.base, left.offset + k, line=left.line)
            return PtrAdd(left, k, line=left.line)
        return BinOp(op.text, left, right, line=left.line)

    def unary(self, allow_void: bool = False) -> Expr:
        t = self.peek()
        if t.kind == "op":
            if t.text in ("!", "~", "-", "+"):
                self.next()
                operand = self.unary()
                if t.text == "+":
                    return operand
                if t.text == "-" and isinstance(operand, Const):
                    return Const(-operand.value, line=t.line)
                return UnOp(t.text, operand, line=t.line)
            if t.text == "*":
                self.next()
                addr = self.unary()
                return Load("plain", addr, self.access_size(addr, t), line=t.line)
            if t.text == "&":
                raise self.unsupported("address-of operator &", t, "pass the location as a parameter")
            if t.text in ("++", "--"):
                raise self.unsupported(f"operator {t.text}", t, "write r = r + 1 instead")
            if t.text == "(" and self.peek(1).kind == "name" and (
                    self.peek(1).text in BASE_TYPES or self.peek(1).text in ("unsigned", "signed", "void")
                    or self.peek(1).text in _NOT_TYPES or self.peek(1).text in _QUALIFIERS):
                return self.cast()
        e = self.primary(allow_void)
        nt = self.peek()
        if nt.kind == "op" and nt.text in ("[", "->", "."):
            raise self.unsupported("array" if nt.text == "[" else "struct member access", nt,
                                   "not modelled")
        if nt.kind == "op" and nt.text in ("++", "--"):
            raise self.unsupported(f"operator {nt.text}", nt, "write r = r + 1 instead")
        return e

    def cast(self) -> Expr:
        t = self.expect("(")
        if self.at("void"):
            raise self.error("(void) only starts a statement", self.peek())
        ct = self.ctype()
        self.expect(")", "to close the cast")
        if not ct.pointers:
            raise self.unsupported(f"cast to {ct}", t, "only pointer casts (mixed-size accesses) are read")
        operand = self.unary()
        ot = self.type_of(operand)
        if ot is None or not ot.pointers:
            raise self.error(f"cast to {ct} of a non-pointer", t)
        return Cast(ct, operand, line=t.line)

    def primary(self, allow_void: bool = False) -> Expr:
        assert self.scope is not None
        t = self.peek()
        if t.kind == "num":
            self.next()
            return Const(t.value, line=t.line)
        if t.kind == "op" and t.text == "(":
            self.next()
            e = self.expr()
            self.expect(")")
            return e
        if t.kind == "name":
            if self.peek(1).text == "(":
                return self.call(allow_void)
            self.next()
            if t.text in self.scope.regs:
                return Reg(t.text, line=t.line)
            if t.text in self.scope.params:
                return LocAddr(t.text, line=t.line)
            if t.text in ("NULL", "true", "false"):
                raise self.unsupported(t.text, t, "write 0 or 1")
            raise self.error(f"unknown identifier {t.text!r} in P{self.scope.index} "
                             "(declare it, or pass it as a parameter)", t)
        raise self.error(f"expected an expression, found {self.show(t)}", t)

    def call_args(self, n: int) -> list[Expr]:
        t = self.next()
        self.expect("(")
        args: list[Expr] = []
        if not self.at(")"):
            while True:
                args.append(self.expr())
                if not self.accept(","):
                    break
        self.expect(")", f"to close {t.text}(")
        if len(args) != n:
            raise self.error(f"{t.text}() takes {n} argument{'s' if n != 1 else ''}, got {len(args)}", t)
        return args

    def call(self, allow_void: bool) -> Expr:
        t = self.peek()
        name = t.text
        if name in prims.UNSUPPORTED:
            raise self.unsupported(f"{name}()", t, prims.UNSUPPORTED[name])
        if name in prims.STORES or name in prims.FENCES or name in prims.LOCK_STMTS:
            raise self.error(f"{name}() is a statement, not a value", t)
        if name in prims.LOADS:
            spec = prims.LOADS[name]
            (arg,) = self.call_args(1)
            addr = self.address_arg(name, spec.style, arg, t)
            return Load(spec.kind, addr, self.access_size(addr, t), name, line=t.line)  # type: ignore[arg-type]
        if name in prims.RMWS:
            r = prims.RMWS[name]
            if r.returns == "void" and not allow_void:
                raise self.error(f"{name}() returns no value", t)
            if r.value_arg:
                v, p = self.call_args(2)
            else:
                (p,) = self.call_args(1)
                v = Const(1, line=t.line)
            addr = self.pointer_arg(name, p, t)
            return Rmw(name, addr, r.op, v, r.returns, r.order, self.access_size(addr, t),  # type: ignore[arg-type]
                       line=t.line)
        if name in prims.XCHGS:
            p, v = self.call_args(2)
            addr = self.pointer_arg(name, p, t)
            return Xchg(name, addr, v, prims.XCHGS[name].order, self.access_size(addr, t),  # type: ignore[arg-type]
                        line=t.line)
        if name in prims.CMPXCHGS:
            p, old, new = self.call_args(3)
            addr = self.pointer_arg(name, p, t)
            return Cmpxchg(name, addr, old, new, prims.CMPXCHGS[name].order,  # type: ignore[arg-type]
                           self.access_size(addr, t), line=t.line)
        if name in prims.ADD_UNLESS:
            if prims.ADD_UNLESS[name].inc_not_zero:
                (p,) = self.call_args(1)
                a, u = Const(1, line=t.line), Const(0, line=t.line)
            else:
                p, a, u = self.call_args(3)
            addr = self.pointer_arg(name, p, t)
            return AddUnless(name, addr, a, u, "mb", self.access_size(addr, t), line=t.line)
        if name in prims.LOCK_EXPRS:
            (p,) = self.call_args(1)
            lock = self.pointer_arg(name, p, t)
            return TryLock(lock, line=t.line) if name == "spin_trylock" else IsLocked(lock, line=t.line)
        raise self.unsupported(f"{name}()", t, "not a kernel primitive the litmus format supports")

    def address_arg(self, func: str, style: str, arg: Expr, t: Token) -> Expr:
        if style == "lvalue":
            if not (isinstance(arg, Load) and arg.kind == "plain"):
                raise self.error(f"{func}() needs a dereference as its location, e.g. {func}(*x"
                                 f"{', v' if func in prims.STORES else ''})", t)
            return arg.addr
        return self.pointer_arg(func, arg, t)

    def pointer_arg(self, func: str, arg: Expr, t: Token) -> Expr:
        ct = self.type_of(arg)
        if ct is None or not ct.pointers:
            raise self.error(f"{func}() needs a pointer, e.g. {func}(x) for parameter 'int *x'", t)
        return arg

    def type_of(self, e: Expr) -> CType | None:
        """Static type of e, as far as the access sizes need it."""
        assert self.scope is not None
        if isinstance(e, Reg):
            return self.scope.regs.get(e.name)
        if isinstance(e, LocAddr):
            return self.scope.params.get(e.name)
        if isinstance(e, Cast):
            return e.ctype
        if isinstance(e, PtrAdd):
            return self.type_of(e.base)
        if isinstance(e, (Load, Xchg, Cmpxchg)) or (isinstance(e, Rmw) and e.returns in ("new", "old")):
            at = self.type_of(e.addr)
            return at.deref() if at is not None and at.pointers else None
        return INT

    def access_size(self, addr: Expr, t: Token) -> int:
        """Width of an access through `addr`; a cast access must be aligned and inside its location."""
        at = self.type_of(addr)
        if at is None or not at.pointers:
            raise self.error("dereference of a non-pointer (declare it 'int *' or pass it as a parameter)", t)
        size = at.deref().size
        if size is None:
            raise self.error(f"cannot load or store a {at.deref()}", t)
        base, offset = addr, 0
        while isinstance(base, (Cast, PtrAdd)):
            if isinstance(base, PtrAdd):
                offset += base.offset
            base = base.operand if isinstance(base, Cast) else base.base
        if base is not addr and isinstance(base, LocAddr):
            assert self.scope is not None
            whole = self.scope.params[base.name].deref().size or 0
            if offset < 0 or offset + size > whole:
                raise self.error(f"access of {size} bytes at offset {offset} is outside {base.name} "
                                 f"({whole} bytes)", t)
            if offset % size:
                raise self.unsupported("misaligned access", t, "accesses must be aligned to their size")
        return size

    # ---------------------------------------------------------------- shared locations

    def shared_types(self, init: list[InitEntry], processes: list[Process]) -> dict[str, CType]:
        """Every shared location's type: declared in the init block, else by a parameter, else int."""
        shared = {name: ct for name, (ct, _) in self.declared.items()}
        for e in init:
            if e.loc.proc is None:
                shared.setdefault(e.loc.name, INT)
                if isinstance(e.value, Addr) and e.value.name not in shared:
                    raise LitmusSyntaxError(f"{e.value.name} is not a location of this test",
                                            self.filename, e.line, 1)
            elif e.loc.proc >= len(processes):
                raise LitmusSyntaxError(f"{e.loc.key}: there is no P{e.loc.proc}", self.filename, e.line, 1)
        return shared

    # ---------------------------------------------------------------- final condition

    def locations(self, processes: list[Process], shared: dict[str, CType]) -> tuple[Loc, ...]:
        if not self.at("locations"):
            return ()
        self.next()
        self.expect("[")
        out: list[Loc] = []
        while not self.at("]"):
            out.append(self.cond_loc(processes, shared))
            if not self.at("]"):
                self.expect(";", "between locations")
        self.next()
        return tuple(out)

    def condition(self, processes: list[Process], shared: dict[str, CType]) -> Condition:
        t = self.peek()
        if t.text == "exists" and t.kind == "name":
            self.next()
            q = "exists"
        elif t.text == "forall" and t.kind == "name":
            self.next()
            q = "forall"
        elif t.text == "~" and self.peek(1).text == "exists":
            self.pos += 2
            q = "~exists"
        elif t.text == "final" and t.kind == "name":
            self.next()
            q = "exists"
        elif t.text == "(":
            q = "exists"
        elif t.kind == "name" and t.text in ("observed", "cases"):
            raise self.unsupported(t.text, t, "write exists, ~exists or forall")
        else:
            raise self.error(f"expected exists, ~exists or forall, found {self.show(t)}", t)
        return Condition(q, self.prop(processes, shared), line=t.line)  # type: ignore[arg-type]

    def prop(self, processes: list[Process], shared: dict[str, CType]) -> Prop:
        """herd7's precedence, loosest first: \\/, /\\, => (right), ~."""
        def p_or() -> Prop:
            left = p_and()
            while self.at("\\/"):
                self.next()
                left = Or(left, p_and(), line=left.line)
            return left

        def p_and() -> Prop:
            left = p_imp()
            while self.at("/\\"):
                self.next()
                left = And(left, p_imp(), line=left.line)
            return left

        def p_imp() -> Prop:
            left = p_not()
            if self.at("=>"):
                self.next()
                return Implies(left, p_imp(), line=left.line)
            return left

        def p_not() -> Prop:
            t = self.peek()
            if self.accept("~"):
                return Not(p_not(), line=t.line)
            if self.accept("("):
                p = p_or()
                self.expect(")", "to close the condition")
                return p
            if t.kind == "name" and t.text == "true":
                self.next()
                return PTrue(line=t.line)
            if t.kind == "name" and t.text == "false":
                self.next()
                return PFalse(line=t.line)
            return atom()

        def atom() -> Prop:
            loc = self.cond_loc(processes, shared)
            op = self.peek()
            if op.text not in ("=", "==", "!=") or op.kind != "op":
                raise self.error(f"expected '=' or '!=' after {loc.key}, found {self.show(op)}", op)
            self.next()
            rt = self.peek()
            a: Prop
            if rt.kind == "op" and rt.text in ("[", "*") or (
                    rt.kind in ("num", "name") and self.peek(1).text == ":"):
                if rt.text == "*":
                    self.next()
                a = LocEq(loc, self.cond_loc(processes, shared), line=loc.line)
            elif rt.kind == "name":
                self.next()
                if rt.text not in shared:
                    raise self.error(f"{rt.text} is not a location of this test", rt)
                a = Eq(loc, Addr(rt.text, line=rt.line), line=loc.line)
            else:
                a = Eq(loc, self.number("a value"), line=loc.line)
            return Not(a, line=loc.line) if op.text == "!=" else a

        return p_or()

    def cond_loc(self, processes: list[Process], shared: dict[str, CType]) -> Loc:
        t = self.peek()
        if self.accept("["):
            loc = self.cond_loc(processes, shared)
            self.expect("]")
            return loc
        proc: int | None = None
        if t.kind == "num" and self.peek(1).text == ":":
            proc = t.value
        elif t.kind == "name" and _PROC.match(t.text) and self.peek(1).text == ":":
            proc = int(t.text[1:])
        if proc is not None:
            self.pos += 2
            rt = self.expect_name("a register name")
            if proc >= len(processes):
                raise self.error(f"{proc}:{rt.text}: there is no P{proc}", t)
            if rt.text not in processes[proc].registers:
                raise self.error(f"{proc}:{rt.text}: P{proc} declares no register {rt.text}", rt)
            return Loc(rt.text, proc, line=t.line)
        nt = self.expect_name("a location (x or 0:r0)")
        if nt.text not in shared:
            raise self.error(f"{nt.text} is not a location of this test", nt)
        return Loc(nt.text, line=nt.line)
