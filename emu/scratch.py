"""Our temporary directories, and the one place that removes them.

`scratch_dir("explore")` makes /dev/shm/ksm-explore-PID-XXXXXXXX (or one under
$TMPDIR without /dev/shm) and removes it when its block ends, however it
ends. For the ends where no `finally` runs (SIGKILL; a pool worker ended by
Pool.terminate's SIGTERM), a janitor: a small process started with the first
directory, told each directory's path through a pipe whose write end this
process and the children it forks hold. When the last of them is gone,
however it died, the pipe reads EOF and the janitor removes every directory
it was told about and not told was already removed, then exits.

Children tied to their parent's death (`die_with_parent`) are the other half:
a SIGKILLed command leaves neither processes nor directories.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1

# Run with -I -S: no site, no user paths, starts in a few ms. Removes what it
# was told to once every holder of the pipe's write end is gone.
_JANITOR = r"""
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
live = set()
for line in sys.stdin.buffer:
    op, path = line[:1], os.fsdecode(line[1:].rstrip(b"\n"))
    (live.add if op == b"+" else live.discard)(path)
for p in live:
    shutil.rmtree(p, ignore_errors=True)
"""

_lock = threading.Lock()
_janitor: subprocess.Popen | None = None  # started by this process or inherited over fork


def _start() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", _JANITOR], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # Ctrl-C at the terminal is not for it


def _tell(line: str) -> None:
    """One line to the janitor, started on first use. A line is one write(2)
    below PIPE_BUF, so forked children writing at once do not interleave."""
    global _janitor
    data = os.fsencode(line) + b"\n"
    with _lock:
        for _attempt in range(2):
            if _janitor is None:
                _janitor = _start()
            try:
                os.write(_janitor.stdin.fileno(), data)
                return
            except OSError:  # the janitor is gone (killed): a new one, once
                _janitor = None


ROOT_ENV = "KSM_EMU_SCRATCH_DIR"  # where they go instead of /dev/shm (tests: a directory of their own)


def scratch_root() -> str | None:
    return os.environ.get(ROOT_ENV) or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


class ScratchDir:
    """A private directory (mode 0700) of ours, removed by `cleanup()`, at the
    end of a with-block, or by the janitor if this process dies first."""

    def __init__(self, kind: str) -> None:
        self.name = tempfile.mkdtemp(prefix=f"ksm-{kind}-{os.getpid()}-", dir=scratch_root())
        self._pid = os.getpid()
        _tell("+" + self.name)

    @property
    def path(self) -> Path:
        return Path(self.name)

    def cleanup(self) -> None:
        if self.name and os.getpid() == self._pid:  # a forked child never removes its parent's
            shutil.rmtree(self.name, ignore_errors=True)
            _tell("-" + self.name)
            self.name = ""

    def __enter__(self) -> ScratchDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def scratch_dir(kind: str) -> ScratchDir:
    return ScratchDir(kind)


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child: ask the kernel for `sig` when the process that forked it
    dies (PR_SET_PDEATHSIG), and exit now if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: the caller's own parent checks still end it
    if os.getppid() != parent:
        os._exit(0)


def preexec_die_with_parent() -> Callable[[], None]:
    """A subprocess preexec_fn: the command is SIGKILLed when we die. (The
    death signal follows the forking thread; callers fork from the thread
    that waits for the child.)"""
    parent = os.getpid()
    return lambda: die_with_parent(parent)
