"""Where --trace FILE goes: checked before anything runs and written at the
end by the output-path rule every file flag shares (emu.cliutil: a directory
that exists, no symlink, FIFO or device, never a live run's state file, an
existing file only with --overwrite; written through a temporary file beside
it and renamed, so a reader never sees half a trace and an existing file is
never lost to a failed write)."""

from __future__ import annotations

import io
import json
from pathlib import Path


class TraceFileError(Exception):
    """The trace cannot go there; the message says why, in one line."""


def check_trace_path(path: str, overwrite: bool = False) -> Path:
    """The path --trace names, if a trace may be written there."""
    from ..cliutil import UserError, check_output_path

    if not path or path.endswith("/"):
        raise TraceFileError(f"--trace {path!r}: want a file name")
    try:
        check_output_path(Path(path), "--trace", overwrite)
    except UserError as e:
        raise TraceFileError(str(e)) from None
    return Path(path)


def write_trace(path: Path, trace: dict, overwrite: bool = False) -> None:
    """Write the JSON beside `path`, then put it in place (never over a file
    that appeared meanwhile, unless `overwrite`; never over a live run's state)."""
    from ..cliutil import UserError, write_beside

    def dump(f: io.BufferedWriter) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8")
        json.dump(trace, text, separators=(",", ":"))
        text.write("\n")
        text.flush()
        text.detach()  # the file is write_beside's to close

    try:
        write_beside(Path(path), "--trace", overwrite, dump)
    except UserError as e:
        raise TraceFileError(str(e)) from None
