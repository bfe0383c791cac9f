"""The benchmark tools run and emit the figures they promise (not timings)."""

import json
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def test_bench_atomics_json():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_atomics.py"), "--json", "--loop-n", "1000",
                        "--repeats", "1", "--skip-machine"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d["python_ops"]) == {"load", "fetch_add", "cas"}
    for row in d["python_ops"].values():
        assert row["emu_ns"] > 0 and row["numpy_lock_ns"] > 0 and row["atomics_pypi_ns"] > 0
    assert d["loops"]["n"] == 1000 and d["loops"]["plain_c_ns"] > 0


def test_bench_atomics_bad_args():
    r = subprocess.run([sys.executable, str(TOOLS / "bench_atomics.py"), "--repeats", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "must be positive" in r.stderr
