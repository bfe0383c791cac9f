"""pahole-style text and JSON for a Layout."""

from __future__ import annotations

from .ctype import Record
from .layout import Layout, value_bits

CACHELINE = 64


def render(lay: Layout, config_summary: str, mark: str | None = "mapping") -> str:
    """Nested unions expanded, offset/size on every line, holes, padding,
    cacheline marks and a size footer. Leaves of other union arms that lie on
    `mark` (page->mapping) say which bits of it they form."""
    marks: dict[str, str] = {}
    if mark and lay.has(mark):
        _, _, bits = lay.overlap(mark)
        for b in bits:
            marks[b.other.path] = f"on {mark} bits {b.member_bits[0]}..{b.member_bits[1]}"
    out = ["/* " + line + " */" for line in config_summary.splitlines()]
    holes = {"n": 0, "bytes": 0}
    seen = {"line": 0}
    sum_members = 0
    ind = "\t"

    def line(depth: int, text: str, off: int, size: int, note: str = "") -> None:
        pad = max(1, 72 - 8 * depth - len(text))
        tail = f" {note}" if note else ""
        out.append(f"{ind * depth}{text}{' ' * pad}/* {off:5d} {size:5d} */{tail}")

    def body(rec: Record, base: int, prefix: str, depth: int) -> None:
        nonlocal sum_members
        end = base
        for off, m in zip(rec.offsets, rec.members):
            start = base + off
            if rec.kind == "struct":
                if start > end:
                    out.append(f"{ind * depth}/* XXX {start - end} bytes hole, try to pack */")
                    holes["n"] += 1
                    holes["bytes"] += start - end
            if start // CACHELINE > seen["line"]:
                seen["line"] = start // CACHELINE
                out.append(f"{ind * depth}/* --- cacheline {seen['line']} boundary "
                           f"({seen['line'] * CACHELINE} bytes) --- */")
            path = prefix if m.name is None else (f"{prefix}.{m.name}" if prefix else m.name)
            if depth == 1:
                sum_members += m.type.size
            if isinstance(m.type, Record) and m.type.members:
                t = m.type
                head = f"{t.kind} {t.tag}" if t.tag else t.kind
                note = f"\t/* typedef {t.typedef} */" if t.typedef else ""
                out.append(f"{ind * depth}{head} {{{note}")
                body(m.type, start, path, depth + 1)
                line(depth, "}" + (f" {m.name};" if m.name else ";"), start, m.type.size)
            else:
                decl = m.type.decl(m.name or "") + ";"
                line(depth, decl, start, m.type.size, f"/* {marks[path]} */" if path in marks else "")
            end = max(end, start + m.type.size)
        if rec.kind == "struct" and base + rec.size > end and depth > 1:
            out.append(f"{ind * depth}/* XXX {base + rec.size - end} bytes padding */")

    rec = lay.record
    out.append(f"{rec.c_name} {{")
    body(rec, 0, "", 1)
    last = max((f.end for f in lay.fields if f.depth == 0), default=0)
    padding = rec.size - last
    out.append("")
    out.append(f"\t/* size: {rec.size}, cachelines: {-(-rec.size // CACHELINE)}, "
               f"members: {len(rec.members)} */")
    if holes["n"]:
        out.append(f"\t/* sum members: {sum_members}, holes: {holes['n']}, "
                   f"sum holes: {holes['bytes']} */")
    if padding:
        out.append(f"\t/* padding: {padding} */")
    if rec.size % CACHELINE:
        out.append(f"\t/* last cacheline: {rec.size % CACHELINE} bytes */")
    out.append("};")
    return "\n".join(out)


def holes(lay: Layout) -> list[dict]:
    """Holes between members and tail padding of every struct, at every level."""
    found = []

    def visit(rec: Record, base: int, prefix: str) -> None:
        end = base
        for off, m in zip(rec.offsets, rec.members):
            start = base + off
            if rec.kind == "struct" and start > end:
                found.append({"in": prefix or lay.name, "offset": end, "size": start - end,
                              "kind": "hole"})
            path = prefix if m.name is None else (f"{prefix}.{m.name}" if prefix else m.name)
            if isinstance(m.type, Record):
                visit(m.type, start, path)
            end = max(end, start + m.type.size)
        if rec.kind == "struct" and base + rec.size > end:
            found.append({"in": prefix or lay.name, "offset": end, "size": base + rec.size - end,
                          "kind": "padding"})

    visit(lay.record, 0, "")
    return found


def to_json(lay: Layout, config: dict) -> dict:
    return {
        "struct": lay.name,
        "size": lay.size,
        "align": lay.record.align,
        "byte_order": lay.byte_order,
        "word_bits": config["word_bits"],
        "config": config,
        "members": [
            {"path": f.path, "offset": f.offset, "size": f.size, "type": f.type.c_name}
            for f in lay.fields if not f.anonymous
        ],
        "holes": holes(lay),
    }


def overlap_text(lay: Layout, path: str) -> str:
    m, per_byte, bits = lay.overlap(path)
    out = [f"{lay.name}.{path}: offset {m.offset}, size {m.size}, {lay.byte_order}-endian "
           f"(byte 0 holds bits {f'{8 * m.size - 1}..{8 * m.size - 8}' if lay.big else '7..0'})"]
    for i, cov in per_byte:
        bit_hi, bit_lo = value_bits(i, i, m.size, lay.big)
        gaps = [f"hole in {p} (keeps the previous user's byte)" for p in lay.holes_in_other_arms(path, m.offset + i)]
        what = ", ".join([c.label() for c in cov] + gaps) or "(nothing else)"
        out.append(f"  byte {i} (offset {m.offset + i:3d}, value bits {bit_hi:2d}..{bit_lo:2d}): {what}")
    if bits:
        out.append("summary:")
        for b in bits:
            o = b.other
            full = (b.other_bits[0] - b.other_bits[1] + 1) == 8 * o.size
            of = "all of" if full else f"bits {b.other_bits[0]}..{b.other_bits[1]} of"
            out.append(f"  {o.path} ({o.type.c_name}, offset {o.offset}, size {o.size}): "
                       f"{of} it forms bits {b.member_bits[0]}..{b.member_bits[1]} of {path}")
    else:
        out.append(f"summary: no other member lies on {path}")
    return "\n".join(out)


def overlap_json(lay: Layout, path: str, config: dict) -> dict:
    m, per_byte, bits = lay.overlap(path)
    return {
        "struct": lay.name, "member": path, "offset": m.offset, "size": m.size,
        "byte_order": lay.byte_order, "config": config,
        "bytes": [{"index": i, "offset": m.offset + i,
                   "value_bits": list(value_bits(i, i, m.size, lay.big)),
                   "covered_by": [{"path": c.field.path, "byte": c.delta} for c in cov],
                   "hole_in": lay.holes_in_other_arms(path, m.offset + i)}
                  for i, cov in per_byte],
        "members": [{"path": b.other.path, "type": b.other.type.c_name,
                     "member_bytes": list(b.member_bytes),
                     "member_bits": list(b.member_bits), "other_bits": list(b.other_bits)}
                    for b in bits],
    }

