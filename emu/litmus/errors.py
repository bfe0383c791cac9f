"""The ways a litmus file is refused, each a one-line message."""

from __future__ import annotations


class LitmusError(Exception):
    """Base of the litmus front end's errors."""


class LitmusSyntaxError(LitmusError):
    """Malformed input: `file:line:col: message`."""

    def __init__(self, message: str, filename: str = "<litmus>", line: int = 0, col: int = 0) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        self.col = col
        super().__init__(f"{filename}:{line}:{col}: {message}")


class UnsupportedConstruct(LitmusError):
    """A construct the litmus format has but ksm-emu does not model (RCU, SRCU,
    loops, calls outside the supported list, ...): `file:line: unsupported: NAME (why)`."""

    def __init__(self, name: str, line: int, *, filename: str = "<litmus>", col: int = 0,
                 reason: str = "") -> None:
        self.name = name
        self.line = line
        self.filename = filename
        self.col = col
        self.reason = reason
        where = f"{filename}:{line}:{col}" if col else f"{filename}:{line}"
        super().__init__(f"{where}: unsupported construct {name}" + (f" ({reason})" if reason else ""))


class TooBig(LitmusError):
    """A test whose state space is beyond an engine's bound (operational.MAX_STATES)."""
