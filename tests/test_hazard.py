"""The static analysis of ptl values on page->mapping, and its agreement with the bytes."""

import json

import pytest

from emu.hazard import ALIGNED, WILD, _mapping_bytes, _states, analyse
from emu.kconfig import ARCHES, KERNELS, ConfigError, resolve
from emu.layout_cli import MATRIX_COMBOS, main
from emu.lockword import lock_model
from emu.mm.boot import boot
from emu.mm.ptlock import pte_lock_init
from emu.mm.spinlock import spin_lock, spin_unlock

SEED = dict(arch="ppc64", kernel="2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"])


def test_seed_case_safe_with_the_real_address_map():
    v = analyse(resolve(**SEED))
    assert v.verdict == "safe here" and v.members == ["ptl.magic", "ptl.owner_cpu"]
    cpus = sorted({int(c.state.split("CPU ")[1].split(",")[0]) for c in v.candidates})
    assert cpus == [3, 11, 19, 27, 35, 43, 51, 59]  # owner_cpu = 3 mod 8: key-like and 8-aligned
    assert {c.value for c in v.candidates if "CPU 3," in c.state} == {0xDEAD4EAD00000003}
    assert not any(c.in_direct_map for c in v.candidates)


def test_seed_case_hazard_with_hostile_address_map():
    """The deliberately hostile layout the analysis must flag."""
    v = analyse(resolve(**SEED, page_offset=0xDEAD4EACFF000000), max_mem=1 << 32)
    assert v.verdict == "HAZARD"
    assert any(c.node == 0xDEAD4EAD00000000 and c.in_direct_map for c in v.candidates)


def test_fixed_in_2_6_33():
    assert analyse(resolve(**(SEED | {"kernel": "2.6.33"}))).verdict == "no ptl"


def test_32bit_break_lock_is_never_a_key():
    v = analyse(resolve("ppc32", "2.6.33", enable=["PREEMPT"]))
    assert v.members == ["ptl.rlock.break_lock"] and v.verdict == "safe" and not v.candidates


def test_mips64_owner_cpu_in_high_half_is_never_a_key():
    v = analyse(resolve("mips64", "2.6.32", enable=["DEBUG_SPINLOCK"]))
    assert v.verdict == "safe" and "ptl.owner_cpu" in v.members


def test_whole_matrix_has_no_hazard_with_real_address_maps():
    verdicts = {}
    for kernel in KERNELS:
        for _label, en, dis, kw in MATRIX_COMBOS:
            for arch in ARCHES:
                try:
                    cfg = resolve(arch, kernel, enable=en, disable=dis, **kw)
                except ConfigError:
                    continue
                verdicts[(kernel, arch, _label)] = analyse(cfg).verdict
    assert "HAZARD" not in verdicts.values() and "cannot rule out" not in verdicts.values()
    assert verdicts[("2.6.32", "ppc64", "PREEMPT DEBUG_SPINLOCK")] == "safe here"
    assert verdicts[("2.6.33", "ppc64", "PREEMPT DEBUG_SPINLOCK")] == "no ptl"


CROSS = [SEED, dict(arch="x86_64", kernel="2.6.32", enable=["DEBUG_SPINLOCK"]),
         dict(arch="s390x", kernel="2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"]),
         dict(arch="sparc64", kernel="2.6.32", enable=["PREEMPT", "DEBUG_SPINLOCK"]),
         dict(arch="ppc32", kernel="2.6.33", enable=["PREEMPT"]),
         dict(arch="arm", kernel="2.6.32", enable=["PREEMPT", "CPU_CACHE_VIPT"]),
         dict(arch="mips64", kernel="2.6.32", enable=["DEBUG_SPINLOCK"]),
         dict(arch="i386", kernel="2.6.32", enable=["DEBUG_SPINLOCK"], disable=["SMP"], split_ptlock_cpus=1)]


def _matches(predicted, actual):
    return all(a & 7 == 0 if p is ALIGNED else (p is WILD or p == a) for p, a in zip(predicted, actual))


@pytest.mark.parametrize("kw", CROSS, ids=lambda kw: f"{kw['arch']}-{kw['kernel']}")
def test_predictions_match_the_bytes_spin_lock_writes(tmp_path, kw):
    """Static and dynamic agree: every value spin_lock really leaves on mapping
    (free, and held by several CPUs) is one the analysis enumerated; with the
    debug fields, the very state of that CPU predicts it."""
    cfg = resolve(**kw)
    w = boot(tmp_path / "w", cfg, 64)
    m = w.machine
    page = m.page_layout
    lm = lock_model(cfg, page, "ptl.")
    rel = page.offset("mapping") - page.offset("ptl")
    states = dict(_states(cfg, lm))
    predicted = {name: _mapping_bytes(cfg, fields, rel, []) for name, fields in states.items()}
    pfn = 40
    off = m.page_offset(pfn) + page.offset("mapping")
    ptl = m.page_offset(pfn) + page.offset("ptl")
    pte_lock_init(w.context(cpu=0), pfn)
    for cpu in [None] + [c for c in (0, 3, 5) if c < cfg.nr_cpus]:
        mm = w.context(cpu=cpu or 0, task=0xC0000000 + 0x100 * (cpu or 0))
        if cpu is not None:
            spin_lock(mm, ptl, lm)
        actual = bytes(m.mm[off:off + cfg.word_bytes])
        assert any(_matches(p, actual) for p in predicted.values()), (cpu, actual.hex())
        if cpu is not None and lm.debug:
            own = [p for n, p in predicted.items() if n.startswith(f"held by CPU {cpu},") or n == f"held by CPU {cpu}"]
            assert any(_matches(p, actual) for p in own), (cpu, actual.hex())
        if cpu is not None:
            spin_unlock(mm, ptl, lm)
    w.close()


def test_cli(capsys):
    assert main(["hazard", *("--arch ppc64 --kernel 2.6.32 -e PREEMPT -e DEBUG_SPINLOCK".split())]) == 0
    out = capsys.readouterr().out
    assert "ppc64 2.6.32: safe here" in out and "0xdead4ead00000003" in out
    assert main(["hazard", "--json", "--arch", "ppc64", "--kernel", "2.6.32", "-e", "PREEMPT", "-e",
                 "DEBUG_SPINLOCK", "--page-offset", "0xdead4eacff000000", "--max-mem", "0x100000000"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "HAZARD" and d["key_values"][0]["stable_node"] == "0xdead4ead00000000"
    assert main(["hazard", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) > 100 and {r["verdict"] for r in rows} <= {"safe", "safe here", "no ptl"}
    assert main(["hazard", "--max-mem", "0"]) == 2
