"""Where a campaign's jobs run: a local process pool, or a Dask cluster
(dask.distributed, the optional extra `pip install .[dask]`). Both yield
records as jobs finish, in whatever order they finish."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator

from ..scratch import die_with_parent
from .jobs import run_job

CONNECT_TIMEOUT_S = 5


class SchedulerError(ValueError):
    """No Dask here, or no scheduler at the address; one line."""


def _pool_worker(parent: int, close: tuple[int, ...]) -> None:
    die_with_parent(parent)  # a SIGKILLed campaign leaves no workers behind
    for fd in close:  # the results file: its flock is the campaign's, not held on by a worker
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the campaign's to handle
    for s in (signal.SIGTERM, signal.SIGHUP):  # Pool.terminate's SIGTERM ends a worker, quietly
        signal.signal(s, signal.SIG_DFL)


def local(jobs: list[dict], n: int, close: tuple[int, ...] = ()) -> Iterator[dict]:
    """`n` worker processes (fork), which close the descriptors `close`; on any
    exit from the loop, they are ended."""
    from ..explore import api, scenarios  # noqa: F401  (imported once here, not in every forked worker)

    pool = mp.get_context("fork").Pool(n, initializer=_pool_worker, initargs=(os.getpid(), close))
    try:
        yield from pool.imap_unordered(run_job, jobs)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


def connect(address: str):
    """A Client of the scheduler at `address` (tcp://HOST:PORT)."""
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerError("--scheduler needs Dask: pip install 'ksm-emu[dask]' "
                             "(or: pip install 'dask[distributed]')") from None
    # tcp only: tls:// needs certificates we take no flags for, ucx:// a
    # package few have, inproc:// is this process (both raised TypeError)
    if not address.startswith("tcp://") or len(address) <= len("tcp://"):
        raise SchedulerError(f"--scheduler {address}: want tcp://HOST:PORT")
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, TypeError, ImportError) as e:
        raise SchedulerError(f"--scheduler {address}: cannot reach it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'no answer'})") from None


def dask(jobs: list[dict], client) -> Iterator[dict]:
    """Each job a Dask task (pure=False: a job is run, never taken from a cache);
    the unfinished ones are cancelled when the loop is left."""
    from distributed import as_completed

    futures = [client.submit(run_job, job, pure=False) for job in jobs]
    try:
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.cancel([f for f in futures if not f.done()])
