"""Text and JSON for ksm-layout's answers that are not a struct's layout
(pahole.py renders those): the bytes at an offset, the matrix across arches,
the hazard verdicts."""

from __future__ import annotations

from .hazard import Verdict
from .kconfig import ARCHES, Config
from .layout import Cover, Layout


def config_comment(cfg: Config) -> str:
    return "\n".join(f"/* {s} */" for s in cfg.summary().splitlines())


def at_json(lay: Layout, cfg: Config, start: int, size: int, covers: list[Cover], holes: list[int]) -> dict:
    return {"struct": lay.name, "offset": start, "size": size, "config": cfg.as_dict(),
            "covered_by": [{"path": c.field.path, "offset": c.field.offset, "size": c.field.size,
                            "byte": c.delta, "bytes": c.end - c.start, "type": c.field.type.c_name}
                           for c in covers],
            "uncovered": holes}


def at_text(lay: Layout, cfg: Config, start: int, size: int, covers: list[Cover], holes: list[int]) -> str:
    rng = f"{start:#x}" if size == 1 else f"{start:#x}..{start + size - 1:#x}"
    lines = [f"{lay.name} bytes {rng} ({start}:{size}), {cfg.arch.name} {cfg.kernel}:",
             "  " + (" / ".join(c.label() for c in covers) or "(no member)")]
    if holes:
        lines.append(f"  padding or hole at: {', '.join(str(b) for b in holes)}")
    return "\n".join(lines)


def matrix_text(struct: str, rows: list[dict]) -> str:
    lines = [f"struct {struct}: size[ mapping@off][ ptl@off+size]  ('-' = no split ptlock)"]
    width = 20
    lines.append(f"{'kernel':7} {'options':32}" + "".join(f"{a:>{width}}" for a in ARCHES))
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["kernel"], r["options"]), {})[r["arch"]] = r
    for (kernel, label), cells in by_key.items():
        texts = []
        for a in ARCHES:
            r = cells[a]
            if "error" in r:
                texts.append("n/a")
                continue
            t = str(r["size"])
            if r.get("mapping") is not None:
                t += f" m@{r['mapping']}"
            t += f" ptl@{r['ptl']}+{r['ptl_size']}" if r.get("ptl") is not None else " -"
            texts.append(t)
        lines.append(f"{kernel:7} {label:32}" + "".join(f"{t:>{width}}" for t in texts))
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


def hazard_table(results: list[tuple[str, Verdict]]) -> str:
    lines = [f"{'kernel':7} {'options':32} {'arch':8} verdict"]
    for label, v in results:
        lines.append(f"{v.config.kernel:7} {label:32} {v.config.arch.name:8} {v.verdict}"
                     + (f": {len(v.candidates)} key-like states" if v.candidates else ""))
    return "\n".join(lines)
