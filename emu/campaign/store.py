"""The results file: one JSON line per finished job, appended as jobs finish,
each line written whole with one write(2) on an O_APPEND descriptor, so a
campaign killed at any moment leaves at most a torn last line, which a
re-run skips (and the job runs again)."""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from .spec import key


def done(path: Path) -> tuple[dict[str, dict], int]:
    """Records already in the file, by job key, and how many lines were unreadable."""
    out: dict[str, dict] = {}
    bad = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return out, 0
    with os.fdopen(fd, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
                if not well_formed(rec):
                    raise ValueError
                out[key(rec["job"])] = rec
            except (ValueError, KeyError, TypeError, RecursionError):
                bad += 1
    return out, bad


# what a replay string may hold (emu.explore.schedule: shell-safe, pastes as one
# argument); a forged one with shell text is not a record of ours
_REPLAY = re.compile(r"ksmx[12]:[A-Za-z0-9_.:,=/+-]*")


def _kind(k: object) -> bool:
    """A finding's kind as explore names it ("stable_node's key in the mapping
    of a page it does not own", "bad_page (free_pages_check)"): printable text
    of one line, never escapes or newlines."""
    return isinstance(k, str) and 0 < len(k) <= 200 and k.isprintable()


def well_formed(rec: object) -> bool:
    """A record as run_job writes it, field by field: anything else in the file
    (a hand edit, another tool's line) is unreadable and its job runs again."""
    if not isinstance(rec, dict) or not isinstance(rec.get("job"), dict):
        return False
    kinds, detail, replay = rec.get("kinds"), rec.get("detail"), rec.get("replay")
    return (rec.get("verdict") in ("clean", "violation", "error")
            and isinstance(kinds, list) and all(_kind(k) for k in kinds)
            and type(rec.get("violations")) is int and rec["violations"] >= 0
            and (replay is None or (isinstance(replay, str) and _REPLAY.fullmatch(replay) is not None))
            and isinstance(detail, dict) and (rec["verdict"] != "error" or isinstance(detail.get("error"), str))
            and isinstance(rec.get("worker"), str) and type(rec.get("elapsed_s")) in (int, float))


class Busy(Exception):
    """Another campaign holds the results file's lock."""


class Appender:
    """The results file, opened for appending and locked (flock LOCK_EX) for
    the whole campaign: a second campaign on it is refused (Busy) instead of
    running every job again and writing each record twice."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise Busy(str(path)) from None
        size = os.fstat(self.fd).st_size
        if size:  # a torn last line from a killed campaign: start ours on a line of its own
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    def add(self, rec: dict) -> None:
        os.write(self.fd, (json.dumps(rec, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)
