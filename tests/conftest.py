"""Fixtures only; the tests' helpers are in tests/support/."""

import pytest

from emu.kconfig import resolve
from emu.machine import RegionSpec, create

SCRATCH = (RegionSpec("scratch", 1 << 16),)


@pytest.fixture
def make_machine(tmp_path):
    """make_machine(cfg=None, nr_pages=64, regions=()) -> (machine, path)."""
    made = []

    def make(cfg=None, nr_pages=64, regions=SCRATCH, **kw):
        path = tmp_path / f"m{len(made)}.ksm"
        m = create(path, cfg or resolve(), nr_pages, regions=regions, **kw)
        made.append(m)
        return m, path

    yield make
    for m in made:
        m.close()
