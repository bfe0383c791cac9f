"""ksm-emu run: boot the machine, fork a process per role, watch them, stop them.

Every role is an OS process (multiprocessing "fork" context) with its own
emulated CPU and task pointer, driving its role object until told to stop.
The launcher polls the children: if one dies, the run stops, the others are
told to exit (then terminated), and the report says who died and how. Ctrl-C
stops the run the same way, with a partial summary. The state file stays for
inspection.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from dataclasses import dataclass

import multiprocessing_logging

from . import report
from .mm.boot import World, boot
from .roles import ROLES, drive
from .roles.allocator import AllocatorParams
from .roles.ksmd import KsmdParams
from .roles.reclaim import ReclaimParams
from .runspec import RunSpec
from .statefile import prepare_state_path

LOG = logging.getLogger("ksm-emu")
EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_DIED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def setup(spec: RunSpec) -> World:
    prepare_state_path(spec.state)
    return boot(spec.state, spec.cfg, spec.pages, protocol=spec.protocol, nmms=spec.allocators,
                meta={"cpus": spec.cpus, "seed": spec.seed})


def make_role(spec: RunSpec, world: World, name: str, cpu: int, task: int):
    """The role object `name` ("ksmd", "reclaim", "allocator.N") on its CPU's context."""
    kind, _, index = name.partition(".")
    mm = world.context(cpu=cpu, task=task, role=name, window_ns=int(spec.window_us * 1000))
    rng = random.Random(f"{spec.seed}:{name}")
    if kind == "ksmd":
        return ROLES[kind](mm, KsmdParams(spec.pages_to_scan, spec.sleep_ms)), mm
    if kind == "reclaim":
        return ROLES[kind](mm, ReclaimParams(), rng), mm
    i = int(index)
    params = AllocatorParams(i, spec.allocators, spec.ptl_hold_us, world.objects.of_allocator(i))
    return ROLES[kind](mm, params, rng), mm


class _RoleLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {}).update(self.extra)
        return msg, kwargs


def _child(spec: RunSpec, world: World, name: str, cpu: int, task: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C
    log = _RoleLog(LOG, {"role": name, "cpu": cpu})
    log.info("started, pid %d, task %#x", os.getpid(), task)
    try:
        role, mm = make_role(spec, world, name, cpu, task)
        drive(role, mm)
    except Exception:
        log.exception("failed")
        os._exit(1)
    log.info("stopped")
    logging.shutdown()
    os._exit(0)


@dataclass
class Outcome:
    summary: dict
    exit_code: int


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(role)s cpu%(cpu)s pid%(process)d: %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False
    multiprocessing_logging.install_mp_handler(LOG)


def run(spec: RunSpec, log_level: int = logging.WARNING, out=sys.stderr) -> Outcome:
    _setup_logging(log_level)
    log = _RoleLog(LOG, {"role": "launcher", "cpu": "-"})
    world = setup(spec)
    ctx = mp.get_context("fork")
    procs = []
    t_start = time.monotonic()
    for i, (name, cpu) in enumerate(spec.roles()):
        p = ctx.Process(target=_child, name=name, args=(spec, world, name, cpu, world.objects.task[i]),
                        daemon=True)
        p.start()
        procs.append((name, cpu, p))
    mm = world.context(cpu=0)
    died: list[dict] = []
    interrupted = False
    tty = spec.progress and out.isatty()
    try:
        while time.monotonic() - t_start < spec.duration:
            time.sleep(0.1)
            for name, cpu, p in procs:
                if p.exitcode is not None:
                    died.append(_death(name, cpu, p))
            if died:
                log.error("%s", "; ".join(d["how"] for d in died))
                break
            if tty:
                out.write("\r" + report.progress_line(report.counts(world), time.monotonic() - t_start,
                                                      spec.duration))
                out.flush()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: stopping the roles")
    if tty:
        out.write("\n")
    elapsed = time.monotonic() - t_start
    mm.h.store(mm.ctl_stop, 4, 1)
    _reap(procs, died)
    roles = [{"role": n, "cpu": c, "pid": p.pid, "exitcode": p.exitcode} for n, c, p in procs]
    summary = report.summarise(spec, world, elapsed, roles, died, interrupted)
    world.close()
    multiprocessing_logging.uninstall_mp_handler(LOG)
    if died:
        code = EXIT_DIED
    elif summary["violations_total"]:
        code = EXIT_VIOLATION
    elif interrupted:
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_OK
    summary["exit_code"] = code
    return Outcome(summary, code)


def _death(name: str, cpu: int, p) -> dict:
    code = p.exitcode
    if code is not None and code < 0:
        how = f"killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code}"
    return {"role": name, "cpu": cpu, "pid": p.pid, "exitcode": code, "how": f"{name} (pid {p.pid}, CPU {cpu}) {how}"}


def _reap(procs, died: list[dict]) -> None:
    deadline = time.monotonic() + 10
    for _name, _cpu, p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for name, cpu, p in procs:
        if p.is_alive():
            p.terminate()
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join()
        if p.exitcode != 0 and not any(d["pid"] == p.pid for d in died):
            if not died:  # the first failure found after the stop
                died.append(_death(name, cpu, p))
