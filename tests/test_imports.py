"""emu's import graph goes one way down: no cycle among its modules, and the
emulated kernel (emu/mm) and its checkers (emu/check) import nothing of the
tools built on them (report, cli, explore, campaign, trace).

Read from the source with `ast`, so a cycle hidden in a function-level
(lazy) import counts as one too; `if TYPE_CHECKING:` imports do not, since
they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMU = ROOT / "emu"
LOW_FLOORS = ("emu.mm", "emu.check")
HIGHER = ("emu.report", "emu.cli", "emu.explore", "emu.campaign", "emu.trace")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> dict[str, set[str]]:
    """module -> the emu modules it imports (anywhere in its body, TYPE_CHECKING aside)."""
    files = {_module(p): p for p in EMU.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(tree):
            if _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                names = subs + ([base] if len(subs) < len(node.names) else [])
            else:
                continue
            for name in names:
                # the longest prefix that is one of emu's modules
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_kernel_and_checkers_import_nothing_above_them():
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() if _is(m, LOW_FLOORS)
                 for d in deps if _is(d, HIGHER))
    assert bad == []


def test_cycles_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_cli_pattern():
    """ksm-emu's commands each come from their package's cli.add_parsers; emu/cli.py
    only assembles them (ksm-layout, a program of its own, keeps emu/layout_cli.py)."""
    from emu.cli import build_parser

    root = (EMU / "cli.py").read_text()
    assert "add_parser(" not in root
    assert sorted(p.name for p in EMU.glob("*_cli.py")) == ["layout_cli.py"]
    packages = ("run", "kmem", "explore", "experiment", "campaign", "litmus")
    for pkg in packages:
        assert "def add_parsers(" in (EMU / pkg / "cli.py").read_text(), pkg
        assert f"from .{pkg}.cli import add_parsers" in root, pkg
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    assert set(sub.choices) == {"run", "kmem", "explore", "replay", "experiment", "campaign", "litmus"}
