"""ksm-emu kmem streams: rows come lazily, a chunk at a time, and a big state
file is printed in bounded memory."""

import subprocess
import sys
import tracemalloc
import types

import pytest

from emu import kmem
from emu.kconfig import resolve
from emu.machine import RegionSpec, attach, create
from emu.records import SHADOW_DTYPE

MIB = 1 << 20
# the child's peak RSS, measured by a parent that runs only it
PEAK_RSS = ("import resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


@pytest.fixture(scope="module")
def big_state(tmp_path_factory):
    """A 1M-page machine (64 MiB of struct pages, 32 MiB of shadow)."""
    n = 1 << 20
    path = tmp_path_factory.mktemp("kmem") / "big.state"
    create(path, resolve(), n, regions=[RegionSpec("shadow", n * SHADOW_DTYPE.itemsize)]).close()
    return path


def test_rows_are_lazy(big_state):
    m = attach(big_state, readonly=True)
    tracemalloc.start()
    rows = kmem.rows(m, 0, m.nr_pages, None)
    assert isinstance(rows, types.GeneratorType)
    first = [next(rows) for _ in range(10)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [r["pfn"] for r in first] == list(range(10)) and first[0]["is"] == "free"
    assert peak < 8 * MIB, peak  # one chunk's columns, not a million rows
    rows.close()
    m.close()


@pytest.mark.slow  # kmem over a 1M-page file, twice
@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_rss_stays_bounded(big_state, fmt):
    """Every row of the 1M-page file printed; the peak RSS stays below the
    96 MiB the struct pages and shadow alone would take if kept resident."""
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "emu.cli", "kmem",
                        str(big_state), *fmt], capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, r.stdout.split())
    assert code == 0, r.stderr
    assert peak_kib * 1024 < 70 * MIB, peak_kib


def test_kmem_reads_a_file_it_may_not_write(big_state, monkeypatch, capsys):
    """kmem opens read-only: any open for writing is refused here (as for a
    0400 file of another user), and kmem still prints."""
    import os

    from emu import cli, machfile

    real = os.open

    def no_writes(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied")
        return real(path, flags, *a, **kw)

    monkeypatch.setattr(machfile.os, "open", no_writes)
    assert cli.main(["kmem", str(big_state), "--pfn", "7:2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].split()[1] == "7000"
