"""Every package under emu/ is in pyproject's list: a non-editable install
(`pip install .`, the README's first command) ships only what is listed, and
twice a new package was missing from it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "emu").rglob("__init__.py")}
    assert found == listed
