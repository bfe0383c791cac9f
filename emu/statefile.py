"""Where a run's machine file goes, what may be replaced there, and the lock
that keeps a live run's file from being replaced.

By default every run gets its own file, `run-PID.state`, in a directory
private to the user (`$KSM_EMU_STATE_DIR`, else /dev/shm/ksm-emu-UID, mode
0700), and the last run's path is recorded there for `kmem` without
arguments. A file is created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, and
locked (flock LOCK_EX) for the whole run: a state file in use is never
replaced. An explicit `--state` that exists is replaced only with `--overwrite`,
only if it is a ksm-emu state file, and only if no run holds it. Symlinks and
special files (FIFO, device, directory) are refused before any open that
could block.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .machfile import MAGIC, MachineError, file_kind

STATE_DIR_ENV = "KSM_EMU_STATE_DIR"
LAST_RUN = "last-run"  # a one-line file in the state directory: the last run's state path
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def state_dir() -> Path:
    """The user's private directory for default state files (created 0700 if missing)."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        d = Path(env)
    else:
        shm = Path("/dev/shm")
        d = (shm if shm.is_dir() else Path(tempfile.gettempdir())) / f"ksm-emu-{os.geteuid()}"
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise MachineError(f"cannot create the state directory {d}: {e.strerror}") from None
    try:
        st = os.lstat(d)
    except OSError as e:
        raise MachineError(f"state directory {d}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise MachineError(f"state directory {d} is not a private directory of yours (a "
                           f"{file_kind(st.st_mode)}, owner uid {st.st_uid}, mode {st.st_mode & 0o777:#o}); "
                           f"remove it or set {STATE_DIR_ENV}")
    return d


@dataclass
class StateFile:
    """A new, empty state file, open and locked for the run (the lock goes with `close`)."""

    path: Path
    fd: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def claim(path: str | os.PathLike | None, overwrite: bool = False) -> StateFile:
    """Create the run's state file: `path`, or a fresh one in the state directory."""
    if path is None:
        d = state_dir()
        sf = _create_unique(d)
        _prune(d, keep={sf.path, last_run(required=False)})
        return sf
    text = os.fspath(path)
    p = Path(os.path.abspath(text))
    if text.endswith(os.sep):
        raise MachineError(f"{text}: names a directory; give a file name for the state file")
    if not p.parent.is_dir():
        raise MachineError(f"{text}: directory {p.parent} does not exist")
    old = _existing(p, overwrite)
    try:
        if old is not None:  # replaced while we hold its lock, so no run can take it meanwhile
            os.unlink(p)
        return _create(p)
    finally:
        if old is not None:
            os.close(old)


def _existing(p: Path, overwrite: bool) -> int | None:
    """What is at `p` now: nothing (None), or an old state file nobody uses,
    opened and locked (its fd); anything else is refused."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise MachineError(f"{p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MachineError(f"{p} is a {file_kind(st.st_mode)}; not replacing it with a state file")
    try:
        fd = os.open(p, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return None  # gone meanwhile
    except OSError as e:
        raise MachineError(f"{p}: {e.strerror}") from None
    try:
        if not _try_lock(fd):  # a live run's, perhaps still being set up (no magic yet)
            raise MachineError(f"{p} is the state file of a live run; not replacing it")
        if os.pread(fd, len(MAGIC), 0) != MAGIC:
            raise MachineError(f"{p} exists and is not a ksm-emu state file; not replacing it")
        if not overwrite:
            raise MachineError(f"{p} exists; pass --overwrite to replace it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _create(p: Path) -> StateFile:
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
    except FileExistsError:
        raise MachineError(f"{p} was created by someone else meanwhile; not replacing it") from None
    except OSError as e:
        raise MachineError(f"cannot create {p}: {e.strerror}") from None
    if not _try_lock(fd):  # another run opened our new file first: leave it to it
        os.close(fd)
        raise MachineError(f"{p} was taken by another run meanwhile")
    return StateFile(p, fd)


def _create_unique(d: Path) -> StateFile:
    """run-PID.state, created and locked under a temporary name first, so the
    pruning of another run never sees it unlocked."""
    fd, tmp = tempfile.mkstemp(prefix=".new-", suffix=".tmp", dir=d)  # O_EXCL|O_NOFOLLOW, 0600
    try:
        _try_lock(fd)
        for n in range(1000):
            p = d / (f"run-{os.getpid()}.state" if n == 0 else f"run-{os.getpid()}-{n}.state")
            try:
                os.link(tmp, p)  # fails if p exists: an older run with this pid
            except FileExistsError:
                continue
            return StateFile(p, fd)
        raise MachineError(f"no free state file name in {d}")
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(tmp)


def _prune(d: Path, keep: set) -> None:
    """Remove default state files no run holds, except the last run's: like the
    one fixed file of old, a run's default file lasts until a later run."""
    for p in d.glob("run-*.state"):
        if p in keep:
            continue
        try:
            fd = os.open(p, os.O_RDONLY | _OPEN_FLAGS)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _try_lock(fd):
                os.unlink(p)
        except OSError:
            pass
        finally:
            os.close(fd)


def record_last_run(path: Path) -> None:
    """Note `path` as the last run's state file, for `kmem` without arguments."""
    try:
        d = state_dir()
        fd, tmp = tempfile.mkstemp(prefix=".last-", dir=d)
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.path.abspath(path)}\n")
        os.replace(tmp, d / LAST_RUN)
    except (OSError, MachineError):
        pass  # a convenience: the summary names the file anyway


def last_run(required: bool = True) -> Path | None:
    """The last run's state file, as recorded."""
    d = state_dir()
    try:
        fd = os.open(d / LAST_RUN, os.O_RDONLY | _OPEN_FLAGS)
        with os.fdopen(fd) as f:
            text = f.read(4096).strip()
    except OSError:
        text = ""
    if not text and required:
        raise MachineError(f"no state file given and no run recorded in {d}; pass STATE")
    return Path(text) if text else None
