"""Every command the README and docs/ show with its output runs here, and its
output is compared with what they show, so the samples cannot go stale.

A sample is a fenced block with no language whose lines start with `$ `
(a command, `\\` continuing it) followed by that command's output. In the
shown output a line `...` stands for any number of lines, and `...` within a
line for any text; elapsed times and rates are compared as numbers of any
value. The blocks of one file run in order in one scratch directory (so
`--state F` in one block is `F` in the next), with a private state directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Commands that take more than a few seconds: left to the full suite.
SLOW = re.compile(r"--all\b|ksm-emu run\b|ksm-emu campaign [^-]")
# What differs between two runs of one deterministic command: wall time.
VARIABLE = [
    (re.compile(r"in \d+(\.\d+)? s \([\d,]+ steps/s\)"), "in T s (R steps/s)"),
    (re.compile(r"\d+(\.\d+)? s \((\d+(\.\d+)?|[\d,]+) (jobs|steps)/s\)"), "T s (R)"),
]


def samples(path: Path) -> list[tuple[int, list[tuple[str, str]]]]:
    """(line number, [(command, shown output)]) per sample block of a file."""
    out = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i] == "```" and i + 1 < len(lines) and lines[i + 1].startswith("$ "):
            start, i = i + 1, i + 1
            pairs: list[tuple[str, str]] = []
            while lines[i] != "```":
                cmd = lines[i][2:]
                while cmd.endswith("\\"):
                    i += 1
                    cmd = cmd[:-1] + " " + lines[i].strip()
                i += 1
                shown = []
                while lines[i] != "```" and not lines[i].startswith("$ "):
                    shown.append(lines[i])
                    i += 1
                while shown and not shown[-1].strip():
                    shown.pop()
                pairs.append((cmd.strip(), "\n".join(shown)))
            out.append((start, pairs))
        elif lines[i].startswith("```"):  # skip other fences whole: a `$` inside is not a sample
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
        i += 1
    return out


def _normal(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.splitlines())
    for pattern, repl in VARIABLE:
        text = pattern.sub(repl, text)
    return text


def matches(shown: str, got: str) -> bool:
    parts = []
    for line in _normal(shown).split("\n"):
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(p) for p in line.split("...")) + r"\n")
    return re.fullmatch("".join(parts), _normal(got) + "\n", re.S) is not None


CASES = [pytest.param(path, line, pairs, id=f"{path.relative_to(ROOT)}:{line}",
                      marks=[pytest.mark.slow] if any(SLOW.search(c) for c, _ in pairs) else [])
         for path in FILES for line, pairs in samples(path)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One scratch directory per file, with a private state directory in it."""
    made: dict[Path, Path] = {}

    def get(path: Path) -> Path:
        if path not in made:
            made[path] = tmp_path_factory.mktemp(f"doc-{path.stem}")
            (made[path] / "state").mkdir(mode=0o700)
        return made[path]

    return get


@pytest.mark.parametrize("path,line,pairs", CASES)
def test_doc_sample_output(path, line, pairs, workdir):
    cwd = workdir(path)
    env = dict(os.environ, KSM_EMU_STATE_DIR=str(cwd / "state"), COLUMNS="200",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for cmd, shown in pairs:
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=900)
        assert r.returncode in (0, 1), f"{cmd}: exit {r.returncode}\n{r.stdout}"
        assert matches(shown, r.stdout), f"{path.name}:{line}: `{cmd}` printed\n{r.stdout}\n--- shown ---\n{shown}"


def test_samples_found():
    """The README keeps its tour; a parser that finds nothing would pass everything."""
    cmds = [c for _, pairs in samples(ROOT / "README.md") for c, _ in pairs]
    assert [c.split()[:2] for c in cmds] == [["ksm-layout", "overlap"], ["ksm-emu", "explore"],
                                            ["ksm-emu", "replay"], ["ksm-emu", "kmem"]]


def test_matches():
    assert matches("a\n...\nd", "a\nb\nc\nd")
    assert matches("a ... z", "a b c z")
    assert not matches("a\nd", "a\nb\nd")
    assert matches("no violation in 5 schedules, 10 steps in 0.10 s (100 steps/s)",
                   "no violation in 5 schedules, 10 steps in 9.93 s (66,752 steps/s)")
