"""What ksm-layout and ksm-emu share: the config flags and one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .kconfig import ARCHES, KERNELS, USER_OPTIONS, Config, ConfigError, resolve


class UserError(Exception):
    """A mistake in the user's input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def number(text: str) -> int:
    """An integer in decimal or 0x hex, for argparse."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (decimal or 0x hex)") from None


def add_config_args(p: argparse.ArgumentParser, kernel_default: str | None = "2.6.33",
                    kernel_help: str | None = None, arch_help: str = "x86_64") -> None:
    """The config flags; --arch defaults to None (x86_64 in config_from_args), so a
    command that covers every arch can tell whether one was asked for."""
    g = p.add_argument_group("kernel configuration")
    g.add_argument("--arch", default=None, choices=list(ARCHES), metavar="ARCH",
                   help=f"architecture preset: {', '.join(ARCHES)} (default: {arch_help})")
    g.add_argument("--kernel", default=kernel_default, choices=list(KERNELS),
                   help=f"Kconfig rules of {' or '.join(KERNELS)} "
                        f"(default: {kernel_help or kernel_default or 'both'})")
    opts = ", ".join(USER_OPTIONS)
    g.add_argument("-e", "--enable", action="append", default=[], metavar="OPTION",
                   help=f"turn a Kconfig option on (repeatable): {opts}")
    g.add_argument("-d", "--disable", action="append", default=[], metavar="OPTION",
                   help="turn a Kconfig option off (repeatable), e.g. -d SMP")
    g.add_argument("--nr-cpus", type=number, metavar="N", help="CONFIG_NR_CPUS (default 64; 1 without SMP)")
    g.add_argument("--split-ptlock-cpus", type=number, metavar="N",
                   help="override CONFIG_SPLIT_PTLOCK_CPUS (default: the kernel's mm/Kconfig rule)")
    g.add_argument("--page-offset", type=number, metavar="ADDR",
                   help="override the direct map base where stable_nodes live (PAGE_OFFSET)")
    g.add_argument("--mem-map", type=number, metavar="ADDR",
                   help="override the address of the struct page array (vmemmap/mem_map)")


def _option(name: str) -> str:
    name = name.upper()
    return name[len("CONFIG_"):] if name.startswith("CONFIG_") else name


def config_from_args(args: argparse.Namespace, kernel: str | None = None) -> Config:
    try:
        return resolve(
            args.arch or "x86_64", kernel or args.kernel,
            enable=[_option(o) for o in args.enable], disable=[_option(o) for o in args.disable],
            nr_cpus=args.nr_cpus, split_ptlock_cpus=args.split_ptlock_cpus,
            page_offset=args.page_offset, mem_map=args.mem_map,
        )
    except ConfigError as e:
        raise UserError(str(e)) from None


def overrides(args: argparse.Namespace) -> dict:
    """The address-map and CPU flags the user gave, as resolve() keywords."""
    from .kconfig import OVERRIDES

    out = {}
    for key in OVERRIDES:
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


def read_regular_file(path: str, limit: int, what: str) -> bytes:
    """A small regular file's bytes, or a one-line UserError. Opened without
    blocking (a FIFO would hang open()) and read only if it is a regular file
    of at most `limit` bytes; `what` names what it should be, for the message."""
    from .machfile import file_kind

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path} is a {file_kind(st.st_mode)}, not {what}")
        if st.st_size > limit:
            raise UserError(f"{path}: {st.st_size} bytes; too big for {what}")
        return os.read(fd, limit + 1)
    except OSError as e:
        raise UserError(f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)


def live_state(path: str | os.PathLike) -> bool:
    """True if `path` is a state file a live run or exploration holds (its
    flock); such a file is never replaced, whichever flag names it."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # drops our shared lock too
    return False


def _held(path: str | os.PathLike) -> str:
    """What holds a locked file: a run (its state file) or a campaign (its results)."""
    from .machfile import MAGIC

    try:
        with open(path, "rb") as f:
            state = f.read(len(MAGIC)) == MAGIC
    except OSError:
        state = True
    return "the state file of a live run" if state else "the results file of a campaign still running"


def check_output_path(path: Path, flag: str, overwrite: bool | None = None) -> None:
    """An output file we may create or replace: its directory exists and is
    writable, and it is not there or is a regular file no live run holds.
    With `overwrite` False an existing file is refused; None leaves that to
    the caller (an append)."""
    text = str(path)
    if not text or text.endswith(os.sep):
        raise UserError(f"{flag} {text!r}: want a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: no directory {parent}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UserError(f"{flag} {path}: {e.strerror}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        from .machfile import file_kind

        raise UserError(f"{flag} {path} is a {file_kind(st.st_mode)}, not a regular file")
    if st is not None and live_state(path):
        raise UserError(f"{flag} {path} is {_held(path)}; not {'appending to' if overwrite is None else 'replacing'} it")
    if st is not None and overwrite is False:
        raise UserError(f"{flag} {path}: exists; pass --overwrite to replace it")
    if not os.access(parent, os.W_OK | os.X_OK) or (st is not None and not os.access(path, os.R_OK | os.W_OK)):
        raise UserError(f"{flag} {path}: not writable here")


def write_beside(path: Path, flag: str, overwrite: bool, write: Callable[[object], None]) -> None:
    """Write a file through a temporary one beside it, then put it in place:
    a reader never sees half of it, a failed write loses no old file, and a
    symlink planted at either name meanwhile is never followed (the temporary
    is created O_EXCL|O_NOFOLLOW; rename and link act on the name itself).
    Without `overwrite`, a file that appeared meanwhile is not replaced.
    `write` gets the open binary file. Failures are a UserError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create {tmp.name}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        if live_state(path):
            raise UserError(f"{flag} {path} is now {_held(path)}; not replacing it")
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails rather than replace a file that appeared meanwhile
    except OSError as e:
        raise UserError(f"{flag} {path}: {e.strerror}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def stop_signals_interrupt() -> None:
    """SIGTERM and SIGHUP stop a long command as Ctrl-C does (KeyboardInterrupt,
    so its temporary files go); a run in progress handles SIGTERM itself (a
    clean stop with a partial summary), and SIGHUP is passed on as SIGTERM."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))


def printable(text: object, limit: int = 500) -> str:
    """`text` safe for a terminal line or a Markdown cell: control characters
    (ANSI escapes, newlines) shown escaped, "|" escaped, at most `limit` chars."""
    s = str(text)[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s).replace("|", "\\|")


def json_config(cfg: Config) -> dict:
    """A config for JSON output: addresses as "0x..." strings, as violations,
    histories and traces give them (a decimal above 2**53 is rounded by jq)."""
    return {**cfg.as_dict(), "PAGE_OFFSET": f"{cfg.page_offset:#x}", "MEM_MAP": f"{cfg.mem_map:#x}"}


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run `body()`, turning user mistakes into one line on stderr and exit 2."""
    try:
        return body() or 0
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 2
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        # and no second one when the interpreter flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130



def cpu_arg(text: str) -> tuple[str, int]:
    """--cpu ROLE=ID, for run and explore alike."""
    role, sep, cpu = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"bad --cpu {text!r}: want ROLE=ID, e.g. allocator=3")
    try:
        return role.strip(), int(cpu, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --cpu {text!r}: {cpu!r} is not a CPU number") from None


def checks_arg(text: str) -> frozenset:
    """--checks: a comma-separated list of emu.check's checkers, or none."""
    from .check import CHECKS  # here, not at the top: ksm-layout imports this module and needs no emu.check
    from .explore.validate import checks_of  # the API's own check

    try:
        return checks_of(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want a comma-separated list of {', '.join(CHECKS)}, "
                                         "or none") from None


def distinct_outputs(*named: tuple[str, str | None]) -> None:
    """Two of a command's files (its --state, its --trace, an input it reads)
    must not be one file: one would overwrite the other."""
    seen: dict[str, str] = {}
    for flag, path in named:
        if not path:  # every name is a path here: a replay string is left out by its caller
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise UserError(f"{flag} {path}: the same file as {seen[real]}")
        seen[real] = f"{flag} {path}"
