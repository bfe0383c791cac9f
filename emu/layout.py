"""Layouts of the kernel structs: numpy dtypes, reverse lookup, overlap analysis.

`Layout(record, byte_order)` flattens a Record once; everything else reads
that flat table: which leaf members cover a byte (`member_at`), which bits of
a member's value other union arms form (`overlap`), and a numpy structured
dtype whose fields are the leaves at their offsets with the arch's byte order
(union arms overlap, as they do in C).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .ctype import Array, Field, Record, Scalar, same_arm, walk


class LayoutError(ValueError):
    """A request the layout cannot answer (unknown member, offset out of range)."""


@dataclass(frozen=True)
class Cover:
    """Bytes [start, end) of the struct lie on bytes [start-field.offset, ...) of field."""

    field: Field
    start: int
    end: int

    @property
    def delta(self) -> int:
        return self.start - self.field.offset

    def label(self) -> str:
        d, n = self.delta, self.end - self.start
        tail = f"+{d:#x}" if d else ""
        part = "" if (d == 0 and n == self.field.size) else f" [{d}:{d + n}]"
        return f"{self.field.path}{tail}{part}" if n > 1 else f"{self.field.path}{tail}"


@dataclass(frozen=True)
class Bits:
    """Bytes of `other` that lie on `member`, as bit ranges of both values."""

    other: Field
    member_bytes: tuple[int, int]  # [lo, hi] byte indices within member
    member_bits: tuple[int, int]  # (high, low) bit numbers in member's value
    other_bits: tuple[int, int]  # (high, low) bit numbers in other's value


def value_bits(byte_lo: int, byte_hi: int, size: int, big: bool) -> tuple[int, int]:
    """Bit range (high, low) of the value that bytes [lo..hi] of a `size`-byte field form."""
    sig = [(size - 1 - i) if big else i for i in (byte_lo, byte_hi)]
    return 8 * max(sig) + 7, 8 * min(sig)


class Layout:
    def __init__(self, record: Record, byte_order: str, name: str | None = None) -> None:
        self.record = record
        self.name = name or (record.tag or record.c_name)
        self.byte_order = byte_order
        self.fields: list[Field] = list(walk(record))
        self.leaves: list[Field] = [f for f in self.fields if f.is_leaf and f.size > 0]
        self._by_path = {f.path: f for f in self.fields if not f.anonymous}

    @property
    def size(self) -> int:
        return self.record.size

    @property
    def big(self) -> bool:
        return self.byte_order == "big"

    def field(self, path: str) -> Field:
        try:
            return self._by_path[path]
        except KeyError:
            raise LayoutError(
                f"struct {self.name} has no member {path!r}; members: {', '.join(self.paths())}"
            ) from None

    def has(self, path: str) -> bool:
        return path in self._by_path

    def offset(self, path: str) -> int:
        return self.field(path).offset

    def paths(self) -> list[str]:
        return list(self._by_path)

    # -- numpy -------------------------------------------------------------
    @cached_property
    def dtype(self) -> np.dtype:
        """Leaves at their offsets, each in the arch's byte order."""
        names, formats, offsets = [], [], []
        order = ">" if self.big else "<"
        for f in self.leaves:
            names.append(f.path)
            formats.append(_np_format(f.type, order))
            offsets.append(f.offset)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": self.size})

    # -- reverse lookup ----------------------------------------------------
    def covers(self, start: int, size: int = 1) -> list[Cover]:
        """Every leaf, in every union arm, lying on bytes [start, start+size)."""
        if size < 1:
            raise LayoutError(f"size must be at least 1, not {size}")
        if start < 0 or start + size > self.size:
            raise LayoutError(
                f"bytes {start}..{start + size - 1} out of range: struct {self.name} is "
                f"{self.size} bytes (offsets 0..{self.size - 1})")
        end = start + size
        return [Cover(f, max(start, f.offset), min(end, f.end))
                for f in self.leaves if f.offset < end and f.end > start]

    def member_at(self, offset: int) -> list[Cover]:
        return self.covers(offset, 1)

    def holes_at(self, start: int, size: int) -> list[int]:
        """Bytes in [start, start+size) that no leaf covers (padding and holes)."""
        covered = set()
        for c in self.covers(start, size):
            covered.update(range(c.start, c.end))
        return [b for b in range(start, start + size) if b not in covered]

    def holes_in_other_arms(self, path: str, offset: int) -> list[str]:
        """Named aggregates of other union arms than `path`'s whose hole or padding
        contains `offset`: bytes their user leaves as the previous user left them."""
        m = self.field(path)
        leaves = [f for f in self.leaves if f.offset <= offset < f.end]
        return [f.path for f in self.fields
                if not f.is_leaf and not f.anonymous and f.offset <= offset < f.end
                and not same_arm(f, m) and not m.path.startswith(f.path + ".")
                and not any(lf.path.startswith(f.path + ".") for lf in leaves)]

    # -- overlap analysis --------------------------------------------------
    def overlap(self, path: str) -> tuple[Field, list[tuple[int, list[Cover]]], list[Bits]]:
        """For each byte of member `path`: the other members' bytes on it, and per
        other member, which bits of `path`'s value they form."""
        m = self.field(path)
        per_byte: list[tuple[int, list[Cover]]] = []
        spans: dict[str, list[int]] = {}
        others: dict[str, Field] = {}
        for i in range(m.size):
            cov = [c for c in self.covers(m.offset + i, 1)
                   if not same_arm(c.field, m) and not c.field.path.startswith(m.path + ".")]
            per_byte.append((i, cov))
            for c in cov:
                spans.setdefault(c.field.path, []).append(i)
                others[c.field.path] = c.field
        bits = []
        for p, idx in spans.items():
            o = others[p]
            lo, hi = min(idx), max(idx)
            olo, ohi = m.offset + lo - o.offset, m.offset + hi - o.offset
            bits.append(Bits(o, (lo, hi), value_bits(lo, hi, m.size, self.big),
                             value_bits(olo, ohi, o.size, self.big)))
        return m, per_byte, bits


def _np_format(t: object, order: str) -> object:
    if isinstance(t, Array):
        return (_np_format(t.elem, order), (t.count,))
    assert isinstance(t, Scalar)
    kind = "i" if t.signed else "u"
    return f"|{kind}1" if t.size == 1 else f"{order}{kind}{t.size}"
