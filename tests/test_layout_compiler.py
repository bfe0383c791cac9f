"""Every member's offset and size, and every struct's size, against real compilers.

gcc -m64 / -m32 for x86_64 / i386, and Debian's cross gcc for arm (EABI),
ppc32, ppc64, s390x, sparc64 and mips64; .ci/run installs them.  A missing
compiler fails the test: a layout nobody checked is not a layout.
"""

from __future__ import annotations

import itertools
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from ccheck import compile_layout

from emu.ctype import walk
from emu.kconfig import ARCHES, KERNELS, ConfigError, resolve
from emu.layout_cli import MATRIX_COMBOS
from emu.structs import kernel_for

EXTRA = [
    ("PAGE_DEBUG_FLAGS VIRTUAL", ("WANT_PAGE_DEBUG_FLAGS", "WANT_PAGE_VIRTUAL"), (), {}),
    ("KMEMCHECK PREEMPT LOCK_STAT split=2", ("KMEMCHECK", "PREEMPT", "LOCK_STAT"), (), {"split_ptlock_cpus": 2}),
    ("CPU_CACHE_VIPT PREEMPT DEBUG_LOCK_ALLOC", ("CPU_CACHE_VIPT", "PREEMPT", "DEBUG_LOCK_ALLOC"), (), {}),
    ("NR_CPUS=256 PREEMPT", ("PREEMPT",), (), {"nr_cpus": 256}),
    ("UP LOCK_STAT split=1", ("LOCK_STAT",), ("SMP",), {"split_ptlock_cpus": 1}),
    ("PREEMPT DEBUG_LOCK_ALLOC split=4", ("PREEMPT", "DEBUG_LOCK_ALLOC"), (), {"split_ptlock_cpus": 4}),
    ("NR_CPUS=4 DEBUG_SPINLOCK", ("DEBUG_SPINLOCK",), (), {"nr_cpus": 4}),
]


def cases():
    out = []
    for kernel, (_label, en, dis, kw), arch in itertools.product(KERNELS, MATRIX_COMBOS + EXTRA, ARCHES):
        try:
            out.append(resolve(arch, kernel, enable=en, disable=dis, **kw))
        except ConfigError:
            continue  # option not on this arch (KMEMCHECK off x86, CPU_CACHE_VIPT off arm)
    return out


CASES = cases()


def compare(cfg, measured) -> list[str]:
    """Mismatches between the engine's layout of cfg and a compiler's numbers."""
    bad = []
    k = kernel_for(cfg)
    if measured[("", "long", "size")] != cfg.word_bytes:
        bad.append(f"sizeof(long) {measured[('', 'long', 'size')]} != {cfg.word_bytes}")
    if measured[("", "big_endian", "flag")] != (cfg.byte_order == "big"):
        bad.append("byte order differs")
    for sname, rec in k.structs.items():
        if measured[(sname, "", "size")] != rec.size:
            bad.append(f"sizeof {sname}: compiler {measured[(sname, '', 'size')]} engine {rec.size}")
        for f in walk(rec):
            if f.anonymous:
                continue
            for what, mine in (("offset", f.offset), ("size", f.size)):
                theirs = measured[(sname, f.path, what)]
                if theirs != mine:
                    bad.append(f"{sname}.{f.path} {what}: compiler {theirs} engine {mine}")
    return bad


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    for arch in ARCHES.values():
        assert shutil.which(arch.gcc[0]), f"compiler {arch.gcc[0]} missing: run .ci/run's install step"
    d = tmp_path_factory.mktemp("cc")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: compile_layout(c, d), CASES))
    return dict(enumerate(results))


def test_case_count():
    # every arch, both kernels, many option sets
    assert {c.arch.name for c in CASES} == set(ARCHES)
    assert {c.kernel for c in CASES} == set(KERNELS)
    assert len(CASES) >= 200


def test_all_layouts_match_compiler(measured):
    failures = {}
    members = 0
    for i, cfg in enumerate(CASES):
        bad = compare(cfg, measured[i])
        members += sum(1 for k in measured[i] if k[2] == "offset")
        if bad:
            failures[f"{cfg.arch.name} {cfg.kernel} {cfg.summary()}"] = bad[:5]
    assert not failures, failures
    assert members > 10000


def test_comparison_catches_a_wrong_config(tmp_path):
    """Broken variant: engine told PREEMPT (so GENERIC_LOCKBREAK's break_lock),
    compiler not: the check must see the shifted debug fields."""
    engine = resolve("ppc64", "2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"])
    compiled = compile_layout(resolve("ppc64", "2.6.32", enable=["DEBUG_SPINLOCK"]), tmp_path)
    compiled_keys = {k for k in compiled}
    bad = compare(engine, {k: compiled.get(k, -1) for k in compiled_keys | _keys(engine)})
    assert any("ptl.magic offset" in b for b in bad), bad


def test_comparison_catches_a_wrong_abi(tmp_path):
    """Broken variant: the i386 engine layout measured by the 64-bit compiler."""
    i386 = resolve("i386")
    wrong = compile_layout(resolve("i386").with_options(arch=ARCHES["x86_64"]), tmp_path)
    bad = compare(i386, wrong)
    assert any("sizeof page" in b for b in bad) and any("sizeof(long)" in b for b in bad)


def _keys(cfg):
    return {(s, f.path, w) for s, rec in kernel_for(cfg).structs.items()
            for f in walk(rec) if not f.anonymous for w in ("offset", "size")}


@pytest.mark.parametrize("arch", list(ARCHES))
def test_eight_byte_alignment_rule(tmp_path, arch):
    """i386 aligns 8-byte scalars to 4 inside structs; the others to 8 (arm EABI included)."""
    import subprocess

    from ccheck import SIZE_RE

    from emu.ctype import Abi, struct

    a = ARCHES[arch]
    abi = Abi(a.word_bytes, a.byte_order, a.align8)
    rec = struct("p", [("c", abi.scalar("char", 1)), ("x", abi.scalar("unsigned long long", 8))])
    src = tmp_path / "p.c"
    src.write_text("struct p { char c; unsigned long long x; };\n"
                   "char o[__builtin_offsetof(struct p, x) + 1] = {1};\n"
                   "char s[sizeof(struct p) + 1] = {1};\n")
    out = subprocess.run([*a.gcc, "-S", "-o", "-", str(src)], capture_output=True, text=True, check=True).stdout
    sizes = {m.group(1): int(m.group(2)) - 1 for m in SIZE_RE.finditer(out)}
    assert (sizes["o"], sizes["s"]) == (rec.offsets[1], rec.size)
