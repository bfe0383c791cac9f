"""The compiled extensions' test harness.

Every call that could reach memory outside its buffer runs in a forked child
(`forked`): a segfault or bus error fails that one test, naming the signal,
instead of killing the test run. The buffers lie between inaccessible guard
pages (`guarded`), so an access even one byte before or after them faults at
once instead of silently touching a neighbouring allocation."""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import select
import signal
import time
import traceback

import pytest
from hypothesis import strategies as st

PAGE = mmap.PAGESIZE
I64_MIN, I64_MAX, U64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
CHILD_TIMEOUT = 60.0
OUT_OF_RANGE = (ValueError, IndexError, OverflowError)


def forked(fn):
    """Run the test body in a forked child; its exception, exit or signal fails the test."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            code = 0
            try:
                os.close(r)
                fn(*args, **kwargs)
            except BaseException:
                code = 1
                os.write(w, traceback.format_exc().encode()[-60000:])  # fits the pipe: never blocks
            os._exit(code)
        os.close(w)
        out = b""
        deadline = time.monotonic() + CHILD_TIMEOUT
        try:
            while True:
                ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail(f"child hung for {CHILD_TIMEOUT:.0f} s", pytrace=False)
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            pytest.fail(f"child killed by {signal.Signals(os.WTERMSIG(status)).name}", pytrace=False)
        if os.WEXITSTATUS(status):
            pytest.fail("in the child:\n" + out.decode(errors="replace"), pytrace=False)

    return run


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def guarded(npages: int) -> memoryview:
    """A writable, page-aligned buffer of npages pages with a PROT_NONE page on each side."""
    m = mmap.mmap(-1, (npages + 2) * PAGE)
    pin = ctypes.c_char.from_buffer(m)  # the mapping's address; pins it while the view lives
    addr = ctypes.addressof(pin)
    for a in (addr, addr + (npages + 1) * PAGE):
        if _libc.mprotect(a, PAGE, 0):  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")
    del pin
    return memoryview(m)[PAGE:(npages + 1) * PAGE]


def readonly_buffer() -> memoryview:
    return memoryview(mmap.mmap(-1, PAGE, prot=mmap.PROT_READ))



def ints(lo: int, hi: int, edges: list[int]):
    return st.one_of(st.integers(lo, hi), st.sampled_from(edges), st.integers(I64_MIN, I64_MAX))
