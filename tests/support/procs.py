"""run_procs: a test's worker processes, each bounded, none outliving the test."""

import multiprocessing as mp

FORK = mp.get_context("fork")


class WorkerError(AssertionError):
    """A worker of run_procs raised, wedged or died; carries its own traceback."""


def run_procs(target, args_list, timeout=60):
    """Start one fork-context process per args tuple; return their results in order.

    Every wait is bounded by one deadline. A worker that raises is reported at
    once with its own traceback (the others are not waited for: they may be
    spinning on something the failed one was to do); a worker that has not
    finished by the deadline is reported with the stack it is stuck in (dumped
    by faulthandler on SIGUSR1). Either way every worker is killed and reaped
    before this returns or raises, so no process outlives the test."""
    import faulthandler
    import os
    import queue
    import signal
    import tempfile
    import time
    import traceback

    q = FORK.Queue()
    stacks = [tempfile.TemporaryFile() for _ in args_list]

    def wrap(i, args):
        faulthandler.register(signal.SIGUSR1, file=stacks[i], all_threads=False)
        try:
            q.put((i, True, target(*args)))
        except BaseException:  # the text, not the object: it may not pickle
            q.put((i, False, traceback.format_exc()))

    procs = [FORK.Process(target=wrap, args=(i, a), daemon=True) for i, a in enumerate(args_list)]
    deadline = time.monotonic() + timeout
    out, failure = {}, None
    try:
        for p in procs:
            p.start()
        while len(out) < len(procs) and failure is None:
            try:
                i, ok, value = q.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in out and p.exitcode not in (None, 0)]
                if dead:
                    failure = f"worker {dead[0]} died with exit code {procs[dead[0]].exitcode}"
                elif time.monotonic() >= deadline:
                    stuck = [i for i in range(len(procs)) if i not in out]
                    for i in stuck:
                        if procs[i].is_alive():
                            os.kill(procs[i].pid, signal.SIGUSR1)
                    time.sleep(0.3)
                    dumps = []
                    for i in stuck:
                        stacks[i].seek(0)
                        dumps.append(f"worker {i} stuck in:\n{stacks[i].read().decode(errors='replace')}")
                    failure = f"{len(stuck)} worker(s) still running after {timeout} s\n" + "\n".join(dumps)
                continue
            if ok:
                out[i] = value
            else:
                failure = f"worker {i} raised:\n{value}"
        if failure is None:  # all returned: let them exit (their queue feeders flush first)
            for i, p in enumerate(procs):
                p.join(max(0.1, deadline - time.monotonic()))
                if p.exitcode != 0:
                    failure = f"worker {i} returned but exited with {p.exitcode} (None: still running)"
                    break
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)
        for f in stacks:
            f.close()
        q.close()
    if failure is not None:
        raise WorkerError(failure)
    return [out[i] for i in range(len(procs))]
