"""ksm-emu run: boot the machine, fork a process per role, watch them, stop them.

Every role is an OS process (multiprocessing "fork" context) with its own
emulated CPU and task pointer, driving its role object until told to stop.
Each role dies with the launcher, whatever kills it: PR_SET_PDEATHSIG, and a
check of its parent in the loop (for a launcher that died before the prctl).
The launcher polls the children: if one dies, the run stops, the others are
told to exit (then killed), and the report says who died and how, with a
failed role's exception. Ctrl-C or SIGTERM stops the run the same way, with a
partial summary. Once the roles run, the launcher reads the state file only
through a RunView (pread, never mapped): a file truncated under the run ends
it with one line, not a SIGBUS. The state file stays for inspection.
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
from .mm.protocol import protocol_named
from .roles import ROLES, drive
from .roles.allocator import AllocatorParams
from .roles.ksmd import KsmdParams
from .roles.reclaim import ReclaimParams
from .runspec import RunSpec
from .runview import RunView, StateTruncated
from .scratch import die_with_parent
from .statefile import StateFile, claim, record_last_run
from .trace import run as trace_run

LOG = logging.getLogger("ksm-emu")
EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_DIED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Test-only: the role named here raises at its first step, to show that a role's
# exception reaches the report (tests/test_supervise.py).
TEST_RAISE_ENV = "KSM_EMU_TEST_ROLE_RAISES"
STOP_GRACE_S = 5.0  # how long stopped roles get to finish before they are killed


def setup(spec: RunSpec) -> tuple[World, StateFile]:
    """Claim the state file (created and locked) and boot the machine in it;
    on any failure, the file is removed again."""
    sf = claim(spec.state, spec.overwrite)
    try:
        extra, meta = trace_run.region_and_meta(spec)
        world = boot(sf.path, spec.cfg, spec.pages, protocol=protocol_named(spec.protocol), nmms=spec.allocators,
                     meta={"cpus": spec.cpus, "seed": spec.seed, "pid": spec.pid, **meta}, extra=extra, fd=sf.fd)
    except BaseException:
        os.unlink(sf.path)
        sf.close()
        raise
    spec.state = str(sf.path)
    return world, sf


def make_role(spec: RunSpec, world: World, name: str, cpu: int, task: int):
    """The role object `name` ("ksmd", "reclaim", "allocator.N") on its CPU's context."""
    kind, _, index = name.partition(".")
    mm = world.context(cpu=cpu, task=task, role=name, window_ns=int(spec.window_us * 1000), checks=spec.checks)
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


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the launcher dies; exit now if it already has
    (without prctl, the loop's parent check still ends the role)."""
    die_with_parent(parent)


def _flush_logs() -> None:
    """Push this process's queued log records to the launcher before os._exit
    (the queue's feeder thread would die with them)."""
    for h in LOG.handlers:
        if isinstance(h, multiprocessing_logging.MultiProcessingHandler):
            h.queue.close()
            h.queue.join_thread()


def _child(spec: RunSpec, world: World, name: str, cpu: int, task: int, parent: int, report_to) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log = _RoleLog(LOG, {"role": name, "cpu": cpu})
    log.info("started, pid %d, task %#x", os.getpid(), task)
    try:
        trace_run.start_role(spec, world)
        role, mm = make_role(spec, world, name, cpu, task)
        if os.environ.get(TEST_RAISE_ENV) == name:
            raise RuntimeError(f"{TEST_RAISE_ENV} asked {name} to fail")
        finished = drive(role, mm, alive=lambda: os.getppid() == parent)
    except Exception as e:
        failure = f"{type(e).__name__}: {e}"
        report_to.send(failure)
        log.error("failed: %s", failure, exc_info=LOG.isEnabledFor(logging.INFO))
        _flush_logs()
        os._exit(1)
    log.info("stopped" if finished else "stopped: the launcher is gone")
    _flush_logs()
    os._exit(0)


@dataclass
class Outcome:
    summary: dict | None  # None: no summary could be read (error says why)
    exit_code: int
    error: str | None = None


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(role)s cpu%(cpu)s pid%(process)d: %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False
    multiprocessing_logging.install_mp_handler(LOG)


def _drain_logs(timeout: float = 1.0) -> None:
    """Let the launcher's log thread print what the roles sent, then unhook it."""
    deadline = time.monotonic() + timeout
    for h in LOG.handlers:
        if isinstance(h, multiprocessing_logging.MultiProcessingHandler):
            while h.queue.qsize() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # the record being emitted
    multiprocessing_logging.uninstall_mp_handler(LOG)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Signals:
    """SIGINT and SIGTERM while the roles run: remember the first, stop cleanly.
    A second signal changes nothing (the partial summary still comes)."""

    def __init__(self) -> None:
        self.got: str | None = None
        self.old = {s: signal.signal(s, self._on) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on(self, signum, frame) -> None:
        if self.got is None:
            self.got = signal.Signals(signum).name

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def run(spec: RunSpec, log_level: int = logging.WARNING, out=sys.stderr) -> Outcome:
    spec.pid = os.getpid()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)  # during setup, as Ctrl-C
    try:
        _setup_logging(log_level)
        world, sf = setup(spec)
    except BaseException:
        signal.signal(signal.SIGTERM, old_term)
        multiprocessing_logging.uninstall_mp_handler(LOG)
        raise
    sigs = _Signals()
    signal.signal(signal.SIGTERM, sigs._on)
    try:
        return _supervise(spec, world, sf, out, sigs)
    finally:
        sigs.restore()
        signal.signal(signal.SIGTERM, old_term)
        sf.close()


def _supervise(spec: RunSpec, world: World, sf: StateFile, out, sigs: _Signals) -> Outcome:
    log = _RoleLog(LOG, {"role": "launcher", "cpu": "-"})
    ctx = mp.get_context("fork")
    procs = []
    t_start = time.monotonic()
    for i, (name, cpu) in enumerate(spec.roles()):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, name=name, daemon=True,
                        args=(spec, world, name, cpu, world.objects.task[i], os.getpid(), send))
        p.start()
        send.close()
        procs.append((name, cpu, p, recv))
    view = RunView(sf.fd, world)
    tracing = trace_run.Export.before_close(spec, world)
    world.close()  # from here on, only the view: no mapping to fault on
    record_last_run(sf.path)
    died: list[dict] = []
    truncated = None
    tty = spec.progress and out.isatty()
    while time.monotonic() - t_start < spec.duration and sigs.got is None:
        time.sleep(0.1)
        truncated = view.truncated()
        if truncated:
            break
        for name, cpu, p, recv in procs:
            if p.exitcode is not None:
                died.append(_death(name, cpu, p, recv))
        if died:
            truncated = view.truncated()  # a role's SIGBUS: the file, not the role
            if not truncated:
                log.error("%s", "; ".join(d["how"] for d in died))
            break
        if tty:
            out.write("\r" + report.progress_line(view.counts(), time.monotonic() - t_start, spec.duration))
            out.flush()
    if tty:
        out.write("\n")
    if sigs.got:
        log.warning("interrupted by %s: stopping the roles", sigs.got)
    elapsed = time.monotonic() - t_start
    view.stop()
    notes = _reap(procs, died)
    _drain_logs()
    truncated = truncated or view.truncated()
    if truncated:
        return Outcome(None, EXIT_DIED, truncated)
    roles = [{"role": n, "cpu": c, "pid": p.pid, "exitcode": p.exitcode} for n, c, p, _ in procs]
    try:
        summary = report.summarise(spec, view, elapsed, roles, died, sigs.got, notes)
    except StateTruncated as e:
        return Outcome(None, EXIT_DIED, str(e))
    if tracing is not None:
        if tty:  # decoding and writing takes seconds: say what is happening
            out.write(f"writing the trace to {spec.trace} ...\n")
            out.flush()
        summary["trace"] = tracing.write(spec, view, summary)
    if died:
        code = EXIT_DIED
    elif summary["violations_total"] or summary["checks"]["lockdep_total"]:
        code = EXIT_VIOLATION
    elif sigs.got:
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_OK
    summary["exit_code"] = code
    return Outcome(summary, code)


def _failure(recv) -> str | None:
    """What a failed role sent before it exited (its exception), if anything."""
    try:
        return recv.recv() if recv.poll() else None
    except (EOFError, OSError):
        return None


def _death(name: str, cpu: int, p, recv, how: str | None = None) -> dict:
    code = p.exitcode
    failure = _failure(recv)
    if how is None:
        if failure:
            how = f"failed: {failure}"
        elif code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
    return {"role": name, "cpu": cpu, "pid": p.pid, "exitcode": code, "failure": failure,
            "how": f"{name} (pid {p.pid}, CPU {cpu}) {how}"}


def _proc_state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped, t: traced), or '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _reap(procs, died: list[dict]) -> list[str]:
    """Wait for the told-to-stop roles; a stopped (SIGSTOP) one is continued
    first, one that does not finish in STOP_GRACE_S is killed. Notes on both."""
    notes = []
    for name, _cpu, p, _ in procs:
        if p.exitcode is None and _proc_state(p.pid) in ("T", "t"):
            notes.append(f"{name} (pid {p.pid}) was stopped (SIGSTOP) when the run ended; continued it")
        if p.exitcode is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE_S
    for _name, _cpu, p, _ in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for name, cpu, p, recv in procs:
        if p.is_alive():
            p.kill()
            p.join()
            how = f"did not stop within {STOP_GRACE_S:g} s of the stop flag; killed by the launcher"
            died.append(_death(name, cpu, p, recv, how))
        elif p.exitcode != 0 and not any(d["pid"] == p.pid for d in died):
            died.append(_death(name, cpu, p, recv))
    return notes
