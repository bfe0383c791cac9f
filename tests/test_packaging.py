"""Every package under emu/ is in pyproject's list: a non-editable install
(`pip install .`, the README's first command) ships only what is listed, and
twice a new package was missing from it."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (CI's); 3.10 has no TOML reader

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "emu").rglob("__init__.py")}
    assert found == listed
