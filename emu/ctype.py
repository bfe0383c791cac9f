"""A small C type model: scalars, pointers, arrays, structs and unions.

Sizes and alignments follow the target ABI (`Abi`); struct and union layout
follows the C rules every Linux ABI here uses: each member at the next offset
aligned to its alignment, a union's arms all at offset 0, the aggregate's size
rounded up to its alignment, an empty struct of size 0 (a GNU C extension the
kernel relies on for the uniprocessor lock).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Abi:
    word_bytes: int
    byte_order: str  # "little" / "big"
    align8: int = 8  # alignment of an 8-byte scalar inside a struct (i386 SysV: 4)

    def scalar(self, c_name: str, size: int, signed: bool = False) -> Scalar:
        return Scalar(c_name, size, self.align8 if size == 8 else size, signed)

    @property
    def ulong(self) -> Scalar:
        return Scalar("unsigned long", self.word_bytes, self.word_bytes, False)

    def pointer(self, target: str) -> Scalar:
        return Scalar(f"{target} *", self.word_bytes, self.word_bytes, False, pointer=True)


class CType:
    size: int
    align: int
    c_name: str

    def decl(self, name: str) -> str:
        """C declaration of a member `name` of this type."""
        return f"{self.c_name} {name}"


@dataclass(frozen=True)
class Scalar(CType):
    c_name: str
    size: int
    align: int
    signed: bool
    pointer: bool = False

    def decl(self, name: str) -> str:
        if self.pointer:
            return f"{self.c_name}{name}"
        return f"{self.c_name} {name}"


@dataclass(frozen=True)
class Array(CType):
    elem: CType
    count: int

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.elem.size * self.count

    @property
    def align(self) -> int:  # type: ignore[override]
        return self.elem.align

    @property
    def c_name(self) -> str:  # type: ignore[override]
        return f"{self.elem.c_name}[{self.count}]"

    def decl(self, name: str) -> str:
        return f"{self.elem.c_name} {name}[{self.count}]"


@dataclass(frozen=True)
class Member:
    name: str | None  # None: anonymous struct/union, adds no path component
    type: CType


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Record(CType):
    """A struct or union. `tag` is the C tag (None for an anonymous/typedef'd one)."""

    kind: str  # "struct" / "union"
    tag: str | None
    members: tuple[Member, ...]
    min_align: int = 1  # __attribute__((aligned(N)))
    typedef: str | None = None
    offsets: tuple[int, ...] = field(init=False, compare=False)
    size: int = field(init=False, compare=False)  # type: ignore[misc]
    align: int = field(init=False, compare=False)  # type: ignore[misc]

    def __post_init__(self) -> None:
        align = max([self.min_align, *(m.type.align for m in self.members)])
        offs, end = [], 0
        for m in self.members:
            off = 0 if self.kind == "union" else _align_up(end, m.type.align)
            offs.append(off)
            end = max(end, off + m.type.size) if self.kind == "union" else off + m.type.size
        object.__setattr__(self, "offsets", tuple(offs))
        object.__setattr__(self, "align", align)
        object.__setattr__(self, "size", _align_up(end, align))

    @property
    def c_name(self) -> str:  # type: ignore[override]
        if self.typedef:
            return self.typedef
        return f"{self.kind} {self.tag}" if self.tag else f"{self.kind} <anon>"

    def member(self, name: str) -> tuple[int, Member]:
        for off, m in zip(self.offsets, self.members):
            if m.name == name:
                return off, m
        raise KeyError(name)


def struct(tag: str | None, members: Sequence[tuple[str | None, CType]], *, align: int = 1,
           typedef: str | None = None) -> Record:
    return Record("struct", tag, tuple(Member(n, t) for n, t in members), align, typedef)


def union(tag: str | None, members: Sequence[tuple[str | None, CType]]) -> Record:
    return Record("union", tag, tuple(Member(n, t) for n, t in members))


@dataclass(frozen=True)
class Field:
    """One member at one nesting level, flattened with its absolute offset."""

    path: str  # C member names joined by dots; anonymous levels add nothing
    offset: int
    type: CType
    depth: int
    anonymous: bool  # an anonymous struct/union (path repeats its parent's)
    arm: tuple[int, ...]  # union-arm choices on the way here, to tell overlaps apart

    @property
    def size(self) -> int:
        return self.type.size

    @property
    def end(self) -> int:
        return self.offset + self.type.size

    @property
    def is_leaf(self) -> bool:
        return not isinstance(self.type, Record)


def walk(rec: Record, base: int = 0, prefix: str = "", depth: int = 0,
         arm: tuple[int, ...] = ()) -> Iterator[Field]:
    """Every member of `rec` at every level, in declaration order (pre-order)."""
    for i, (off, m) in enumerate(zip(rec.offsets, rec.members)):
        path = prefix if m.name is None else (f"{prefix}.{m.name}" if prefix else m.name)
        sub_arm = arm + ((id(rec), i),) if rec.kind == "union" else arm
        yield Field(path, base + off, m.type, depth, m.name is None, sub_arm)  # type: ignore[arg-type]
        if isinstance(m.type, Record):
            yield from walk(m.type, base + off, path, depth + 1, sub_arm)  # type: ignore[arg-type]


def same_arm(a: Field, b: Field) -> bool:
    """True when a and b can hold values at once (no union separates them)."""
    da, db = dict(a.arm), dict(b.arm)
    return all(da[k] == db[k] for k in da.keys() & db.keys())
