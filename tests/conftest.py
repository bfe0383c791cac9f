import multiprocessing as mp

import pytest

from emu.kconfig import resolve
from emu.machine import RegionSpec, create

FORK = mp.get_context("fork")
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


def run_procs(target, args_list, timeout=60):
    """Start one fork-context process per args tuple; wait; return results in order."""
    q = FORK.Queue()

    def wrap(i, args):
        try:
            q.put((i, target(*args)))
        except BaseException as e:  # report, do not hang the parent
            q.put((i, e))

    procs = [FORK.Process(target=wrap, args=(i, a)) for i, a in enumerate(args_list)]
    for p in procs:
        p.start()
    out = dict(q.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"child exit {p.exitcode}"
    results = [out[i] for i in range(len(procs))]
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results
