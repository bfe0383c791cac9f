"""Text and JSON for ksm-layout's answers that are not a struct's layout
(pahole.py renders those): the bytes at an offset, the matrix across arches,
the hazard verdicts."""

from __future__ import annotations

from .cliutil import json_config
from .hazard import Verdict
from .kconfig import ARCHES, Config
from .layout import Cover, Layout


def config_comment(cfg: Config) -> str:
    return "\n".join(f"/* {s} */" for s in cfg.summary().splitlines())


def at_json(lay: Layout, cfg: Config, start: int, size: int, covers: list[Cover], holes: list[int]) -> dict:
    return {"struct": lay.name, "offset": start, "size": size, "config": json_config(cfg),
            "covered_by": [{"path": c.field.path, "offset": c.field.offset, "size": c.field.size,
                            "byte": c.delta, "bytes": c.end - c.start, "type": c.field.type.c_name}
                           for c in covers],
            "uncovered": holes}


def at_text(lay: Layout, cfg: Config, start: int, size: int, covers: list[Cover], holes: list[int]) -> str:
    rng = f"{start:#x}" if size == 1 else f"{start:#x}..{start + size - 1:#x}"
    lines = [f"{lay.name} bytes {rng} (offset {start}, size {size}), {cfg.arch.name} {cfg.kernel}:",
             "  " + (" / ".join(c.label() for c in covers) or "(no member)")]
    if holes:
        lines.append(f"  padding or hole at: {', '.join(str(b) for b in holes)}")
    if covers:
        lines.append("  (MEMBER+0xN: starting N bytes into MEMBER; [A:B]: MEMBER's bytes A..B-1 lie there)")
    return "\n".join(lines)


def _matrix_cell(r: dict, page: bool) -> str:
    if "error" in r:
        return "n/a"
    t = str(r["size"])
    if not page:
        return t
    if r.get("mapping") is not None:
        t += f" m@{r['mapping']}"
    return t + (f" ptl@{r['ptl']}+{r['ptl_size']}" if r.get("ptl") is not None else " -")


def matrix_text(struct: str, rows: list[dict], width: int = 100) -> str:
    """The matrix, its arch columns split into blocks that fit `width` columns."""
    page = struct.removeprefix("struct ").strip() == "page"
    lines = [f"struct {struct}: size m@mapping offset ptl@offset+size ('-': no split ptlock)" if page
             else f"struct {struct}: size in bytes"]
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["kernel"], r["options"]), {})[r["arch"]] = r
    arches = [a for a in ARCHES if any(a in cells for cells in by_key.values())]
    cells = {k: {a: _matrix_cell(c[a], page) for a in arches} for k, c in by_key.items()}
    col = 2 + max([len(a) for a in arches] + [len(t) for c in cells.values() for t in c.values()])
    label = max([len("options")] + [len(label) for _, label in by_key]) + 1
    per_block = max(1, (width - 8 - label) // col)
    for b in range(0, len(arches), per_block):
        block = arches[b:b + per_block]
        lines.append("")
        lines.append(f"{'kernel':7} {'options':{label}}" + "".join(f"{a:>{col}}" for a in block))
        for (kernel, opts), texts in cells.items():
            lines.append(f"{kernel:7} {opts:{label}}" + "".join(f"{texts[a]:>{col}}" for a in block))
    return "\n".join(lines)


def hazard_text(v: Verdict) -> str:
    c = v.config
    lines = [config_comment(c), f"{c.arch.name} {c.kernel}: {v.verdict}", f"  {v.reason}"]
    if v.members:
        lines.append(f"  on mapping: {', '.join(v.members)}; {v.states} lock states examined")
    for cand in v.candidates[:8]:
        where = "INSIDE" if cand.in_direct_map else "outside"
        lines.append(f"  {cand.state}: mapping {cand.value:#x} = key of a node at {cand.node:#x} "
                     f"({where} the direct map)")
    if len(v.candidates) > 8:
        lines.append(f"  ... {len(v.candidates) - 8} more key-like states")
    return "\n".join(lines)


def hazard_table(results: list[tuple[str, Verdict]], skipped: list[dict] = ()) -> str:
    lines = [f"{'kernel':7} {'options':32} {'arch':8} verdict"]
    for label, v in results:
        lines.append(f"{v.config.kernel:7} {label:32} {v.config.arch.name:8} {v.verdict}"
                     + (f": {len(v.candidates)} key-like states" if v.candidates else ""))
    if skipped:
        lines.append(f"({len(skipped)} combinations do not exist with these flags, e.g. {skipped[0]['kernel']} "
                     f"{skipped[0]['options']} {skipped[0]['arch']}: {skipped[0]['error']})")
    return "\n".join(lines)
