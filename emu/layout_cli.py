"""ksm-layout: a pahole for the emulated kernel's structs."""

from __future__ import annotations

import argparse
import shutil
import sys

from . import layout_report, pahole
from .cliutil import (
    Parser,
    UserError,
    add_config_args,
    config_from_args,
    json_config,
    number,
    overrides,
    print_json,
    run_main,
)
from .hazard import DirectMapError, analyse
from .kconfig import ARCHES, KERNELS, Config, ConfigError, resolve
from .layout import Layout, LayoutError
from .structs import kernel_for

# Representative option sets for `matrix`: (label, enable, disable, extra kwargs)
MATRIX_COMBOS: list[tuple[str, tuple[str, ...], tuple[str, ...], dict]] = [
    ("SMP", (), (), {}),
    ("SMP PREEMPT", ("PREEMPT",), (), {}),
    ("DEBUG_SPINLOCK", ("DEBUG_SPINLOCK",), (), {}),
    ("PREEMPT DEBUG_SPINLOCK", ("PREEMPT", "DEBUG_SPINLOCK"), (), {}),
    ("DEBUG_LOCK_ALLOC", ("DEBUG_LOCK_ALLOC",), (), {}),
    ("PREEMPT LOCK_STAT", ("PREEMPT", "LOCK_STAT"), (), {}),
    ("PREEMPT DEBUG_SPINLOCK split=4", ("PREEMPT", "DEBUG_SPINLOCK"), (), {"split_ptlock_cpus": 4}),
    ("UP", (), ("SMP",), {}),
    ("UP DEBUG_SPINLOCK split=1", ("DEBUG_SPINLOCK",), ("SMP",), {"split_ptlock_cpus": 1}),
]


def layout_of(cfg: Config, struct_name: str) -> Layout:
    name = struct_name.removeprefix("struct ").strip()
    structs = kernel_for(cfg).structs
    if name not in structs:
        raise UserError(f"unknown struct {struct_name!r} for kernel {cfg.kernel}; "
                        f"choose from {', '.join(structs)}")
    return Layout(structs[name], cfg.byte_order, name)


def _parse_at(text: str) -> tuple[int, int]:
    off, _, size = text.partition(":")
    try:
        return int(off, 0), (int(size, 0) if size else 1)
    except ValueError:
        raise UserError(f"bad --at {text!r}: want OFFSET or OFFSET:SIZE, decimal or 0x hex") from None


def cmd_show(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    lay = layout_of(cfg, args.struct)
    if args.at is None:
        if args.json:
            print_json(pahole.to_json(lay, json_config(cfg)))
        else:
            print(pahole.render(lay, cfg.summary()))
        return
    start, size = _parse_at(args.at)
    try:
        covers = lay.covers(start, size)
        holes = lay.holes_at(start, size)
    except LayoutError as e:
        raise UserError(str(e)) from None
    if args.json:
        print_json(layout_report.at_json(lay, cfg, start, size, covers, holes))
    else:
        print(layout_report.at_text(lay, cfg, start, size, covers, holes))


def cmd_overlap(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    lay = layout_of(cfg, args.struct)
    try:
        lay.field(args.member)
    except LayoutError as e:
        raise UserError(str(e)) from None
    if args.json:
        print_json(pahole.overlap_json(lay, args.member, json_config(cfg)))
    else:
        print(layout_report.config_comment(cfg))
        print(pahole.overlap_text(lay, args.member))


def combos(args: argparse.Namespace):
    """(kernel, options label, arch, Config or the ConfigError) over the matrix:
    every arch (or --arch's), each option set plus the user's flags and overrides."""
    kernels = [args.kernel] if args.kernel else list(KERNELS)
    arches = [args.arch] if args.arch else list(ARCHES)
    for kernel in kernels:
        for label, en, dis, extra in MATRIX_COMBOS:
            for arch in arches:
                try:
                    cfg = resolve(arch, kernel, enable=[*en, *args.enable], disable=[*dis, *args.disable],
                                  **{**extra, **overrides(args)})
                except ConfigError as e:
                    yield kernel, label, arch, e
                    continue
                yield kernel, label, arch, cfg


def matrix_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for kernel, label, arch, cfg in combos(args):
        row = {"kernel": kernel, "options": label, "arch": arch}
        if isinstance(cfg, ConfigError):
            row["error"] = str(cfg)
            rows.append(row)
            continue
        lay = layout_of(cfg, args.struct)
        row.update(size=lay.size, use_split_ptlocks=cfg["USE_SPLIT_PTLOCKS"],
                   mapping=lay.offset("mapping") if lay.has("mapping") else None,
                   ptl=lay.offset("ptl") if lay.has("ptl") else None,
                   ptl_size=lay.field("ptl").size if lay.has("ptl") else None)
        rows.append(row)
    return rows


def cmd_matrix(args: argparse.Namespace) -> None:
    # Validate the user's extra flags once, so a typo is an error, not n/a cells.
    config_from_args(args, kernel=args.kernel or KERNELS[-1])
    layout_of(resolve(), args.struct)
    rows = matrix_rows(args)
    if args.json:
        print_json({"struct": args.struct, "rows": rows})
        return
    print(layout_report.matrix_text(args.struct, rows, shutil.get_terminal_size((100, 24)).columns))


def cmd_hazard(args: argparse.Namespace) -> None:
    if args.max_mem is not None and args.max_mem < 1:
        raise UserError(f"--max-mem {args.max_mem}: want a positive number of bytes")
    if not args.all:
        cfg = config_from_args(args, kernel=args.kernel or KERNELS[-1])
        try:
            v = analyse(cfg, args.max_mem)
        except DirectMapError as e:
            raise UserError(str(e)) from None
        if args.json:
            print_json({**v.as_dict(), "config": json_config(v.config)})
        else:
            print(layout_report.hazard_text(v))
        return
    config_from_args(args, kernel=args.kernel or KERNELS[-1])  # a typo is an error, not n/a cells
    results, skipped = [], []
    for kernel, label, arch, cfg in combos(args):
        try:
            if isinstance(cfg, ConfigError):
                raise cfg
            results.append((label, analyse(cfg, args.max_mem)))
        except (ConfigError, DirectMapError) as e:
            skipped.append({"kernel": kernel, "options": label, "arch": arch, "error": str(e)})
    if not results:
        raise UserError(f"no configuration of the matrix exists with these flags (e.g. {skipped[0]['arch']} "
                        f"{skipped[0]['options']}: {skipped[0]['error']})")
    if args.json:
        print_json({"rows": [{"options": label, **v.as_dict(), "config": json_config(v.config)} for label, v in results], "skipped": skipped})
        return
    print(layout_report.hazard_table(results, skipped))


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ksm-layout", description=(
        "Show the byte layout of Linux 2.6.32/2.6.33 struct page, spinlock_t and KSM's "
        "structs for any arch and Kconfig, and which union members overlap page->mapping."))
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    s = sub.add_parser("show", help="pahole-style layout of a struct (or what covers --at bytes)")
    s.add_argument("struct", metavar="STRUCT", help="page, spinlock_t, stable_node, rmap_item, ...")
    s.add_argument("--at", metavar="OFFSET[:SIZE]", help="list the members covering these bytes")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_args(s)
    s.set_defaults(func=cmd_show)

    o = sub.add_parser("overlap", help="which members lie on MEMBER's bytes, and in which bits")
    o.add_argument("struct", metavar="STRUCT")
    o.add_argument("member", metavar="MEMBER", help="dotted member path, e.g. mapping")
    o.add_argument("--json", action="store_true")
    add_config_args(o)
    o.set_defaults(func=cmd_overlap)

    m = sub.add_parser("matrix", help="size and mapping/ptl offsets across all arches (or --arch's), "
                                      "with the option sets plus any flags given")
    m.add_argument("struct", metavar="STRUCT", nargs="?", default="page")
    m.add_argument("--json", action="store_true")
    add_config_args(m, kernel_default=None, arch_help="all")
    m.set_defaults(func=cmd_matrix)

    h = sub.add_parser("hazard", help="can page->ptl ever put a stable_node's key into page->mapping?")
    h.add_argument("--all", action="store_true",
                   help="every arch (or --arch's) x the matrix's option sets, each with the flags given "
                        "(--page-offset, --mem-map, --nr-cpus, --split-ptlock-cpus, -e, -d)")
    h.add_argument("--max-mem", type=number, metavar="BYTES",
                   help="size of the direct map (default 896 MiB on 32-bit, 1 TiB on 64-bit)")
    h.add_argument("--json", action="store_true")
    add_config_args(h, kernel_default=None, kernel_help="both with --all, else 2.6.33",
                    arch_help="all with --all, else x86_64")
    h.set_defaults(func=cmd_hazard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("ksm-layout", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
