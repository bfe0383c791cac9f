"""Where --trace FILE goes: checked before anything runs (a directory that
exists, no symlink, no FIFO or device, an existing file only with
--overwrite), written at the end through a temporary file beside it, so a
reader never sees half a trace and an existing file is never lost to a
failed write."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..machfile import file_kind


class TraceFileError(Exception):
    """The trace cannot go there; the message says why, in one line."""


def check_trace_path(path: str, overwrite: bool = False) -> Path:
    """The path --trace names, if a trace may be written there."""
    p = Path(path)
    if not path or path.endswith("/"):
        raise TraceFileError(f"--trace {path!r}: want a file name")
    parent = p.parent
    try:
        pst = os.stat(parent)
    except OSError as e:
        raise TraceFileError(f"--trace {path}: directory {parent}: {e.strerror}") from None
    if not stat.S_ISDIR(pst.st_mode):
        raise TraceFileError(f"--trace {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TraceFileError(f"--trace {path}: cannot write in {parent}")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    except OSError as e:
        raise TraceFileError(f"--trace {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TraceFileError(f"--trace {path} is a {file_kind(st.st_mode)}, not a regular file")
    from ..cliutil import live_state

    if live_state(p):  # the output-path rule every flag shares (emu.cliutil)
        raise TraceFileError(f"--trace {path} is the state file of a live run; not replacing it")
    if not overwrite:
        raise TraceFileError(f"--trace {path} exists; not replacing it (--overwrite replaces it)")
    return p


def write_trace(path: Path, trace: dict, overwrite: bool = False) -> None:
    """Write the JSON beside `path`, then put it in place (never over a file
    that appeared meanwhile, unless `overwrite`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise TraceFileError(f"--trace {path}: cannot create {tmp.name}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(trace, f, separators=(",", ":"))
            f.write("\n")
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails rather than replace a file that appeared meanwhile
    except OSError as e:
        raise TraceFileError(f"--trace {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
