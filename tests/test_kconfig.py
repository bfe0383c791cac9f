"""Kconfig rules of docs/KERNEL.md: selects, GENERIC_LOCKBREAK, SPLIT_PTLOCK_CPUS, USE_SPLIT_PTLOCKS."""

import argparse
import json

import pytest

from emu.cliutil import add_config_args, config_from_args
from emu.kconfig import ARCHES, CONFIG_KEYS, OVERRIDES, ConfigError, ConfigRequest, from_dict, resolve


def test_defaults():
    c = resolve()
    assert (c.arch.name, c.kernel, c.nr_cpus) == ("x86_64", "2.6.33", 64)
    assert c["SMP"] and not c["PREEMPT"] and c["USE_SPLIT_PTLOCKS"]
    assert c.split_ptlock_cpus == 4


@pytest.mark.parametrize("opt,implied", [
    ("LOCK_STAT", {"DEBUG_LOCK_ALLOC", "DEBUG_SPINLOCK"}),
    ("DEBUG_LOCK_ALLOC", {"DEBUG_SPINLOCK"}),
])
def test_selects(opt, implied):
    c = resolve(enable=[opt])
    assert all(c[o] for o in implied)


def test_select_cannot_be_overridden():
    with pytest.raises(ConfigError, match="LOCK_STAT selects DEBUG_LOCK_ALLOC"):
        resolve(enable=["LOCK_STAT"], disable=["DEBUG_LOCK_ALLOC"])


@pytest.mark.parametrize("arch", list(ARCHES))
@pytest.mark.parametrize("smp,preempt", [(True, True), (True, False), (False, True)])
def test_generic_lockbreak(arch, smp, preempt):
    c = resolve(arch, enable=["PREEMPT"] if preempt else [], disable=[] if smp else ["SMP"])
    expected = arch not in ("i386", "x86_64", "mips64") and smp and preempt
    assert c["GENERIC_LOCKBREAK"] is expected


@pytest.mark.parametrize("kernel,opts,arch,split", [
    ("2.6.32", [], "x86_64", 4),
    ("2.6.32", ["DEBUG_SPINLOCK"], "ppc64", 4),
    ("2.6.33", ["DEBUG_SPINLOCK"], "ppc64", 999999),
    ("2.6.33", ["LOCK_STAT"], "x86_64", 999999),
    ("2.6.33", [], "ppc64", 4),
    ("2.6.32", [], "arm", 4096),
    ("2.6.32", ["CPU_CACHE_VIPT"], "arm", 4),
    ("2.6.33", [], "arm", 999999),
    ("2.6.33", ["CPU_CACHE_VIPT", "DEBUG_SPINLOCK"], "arm", 999999),
])
def test_split_ptlock_cpus(kernel, opts, arch, split):
    c = resolve(arch, kernel, enable=opts)
    assert c.split_ptlock_cpus == split
    assert c["USE_SPLIT_PTLOCKS"] is (c.nr_cpus >= split)


def test_up_has_one_cpu_and_no_split_locks():
    c = resolve(disable=["SMP"])
    assert c.nr_cpus == 1 and not c["USE_SPLIT_PTLOCKS"]
    assert resolve(disable=["SMP"], split_ptlock_cpus=1)["USE_SPLIT_PTLOCKS"]


def test_override_and_nr_cpus():
    assert resolve(nr_cpus=2)["USE_SPLIT_PTLOCKS"] is False
    assert resolve(nr_cpus=4)["USE_SPLIT_PTLOCKS"] is True
    assert not resolve(split_ptlock_cpus=128)["USE_SPLIT_PTLOCKS"]
    assert resolve("ppc64", enable=["DEBUG_SPINLOCK"], split_ptlock_cpus=4)["USE_SPLIT_PTLOCKS"]


@pytest.mark.parametrize("kwargs,msg", [
    ({"arch": "vax"}, "unknown arch 'vax'; choose from i386"),
    ({"kernel": "2.6.34"}, "unknown kernel"),
    ({"enable": ["FOO"]}, "unknown option 'FOO'; choose from SMP"),
    ({"enable": ["GENERIC_LOCKBREAK"]}, "derived by Kconfig"),
    ({"enable": ["USE_SPLIT_PTLOCKS"]}, "derived by Kconfig"),
    ({"enable": ["PREEMPT"], "disable": ["PREEMPT"]}, "both enabled and disabled"),
    ({"enable": ["KMEMCHECK"], "arch": "ppc64"}, "does not exist on ppc64"),
    ({"enable": ["CPU_CACHE_VIPT"]}, "does not exist on x86_64"),
    ({"disable": ["SMP"], "nr_cpus": 4}, "NR_CPUS is 1"),
    ({"nr_cpus": 1}, "out of range"),
    ({"split_ptlock_cpus": 0}, "at least 1"),
    ({"arch": "i386", "page_offset": 1 << 32}, "does not fit a 32-bit address"),
])
def test_errors(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve(**kwargs)


@pytest.mark.parametrize("arch", list(ARCHES))
def test_roundtrip(arch):
    c = resolve(arch, "2.6.32", enable=["LOCK_STAT", "PREEMPT"], nr_cpus=8)
    assert from_dict(c.as_dict()).as_dict() == c.as_dict()


def test_from_dict_rejects_tampering():
    d = resolve().as_dict()
    d["USE_SPLIT_PTLOCKS"] = False  # derived value inconsistent with NR_CPUS/SPLIT_PTLOCK_CPUS
    with pytest.raises(ConfigError, match="inconsistent"):
        from_dict(d)
    del d["SMP"]
    with pytest.raises(ConfigError, match="lacks SMP"):
        from_dict(d)


# -- the config request: one codec for the campaign's objects, the flags, replay strings, labels ------
REQUESTS = [
    ConfigRequest(),
    ConfigRequest("ppc64", "2.6.32", (("PREEMPT", True), ("DEBUG_SPINLOCK", True)), page_offset=0xDEAD4EAD00000000),
    ConfigRequest("x86_64", "2.6.33", (("SMP", False), ("DEBUG_SPINLOCK", True)), split_ptlock_cpus=1),
    ConfigRequest("arm", "2.6.32", (("CPU_CACHE_VIPT", True),), nr_cpus=8, split_ptlock_cpus=4,
                  mem_map=0xC2000000),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.label())
def test_request_forms_resolve_alike(req):
    cfg = req.resolve()
    assert ConfigRequest.decode(req.encode()).resolve() == cfg
    assert ConfigRequest.of(cfg).resolve() == cfg and ConfigRequest.of(cfg) == ConfigRequest.decode(
        ConfigRequest.of(cfg).encode())
    assert ConfigRequest.from_dict(req.as_dict()).resolve() == cfg
    assert ConfigRequest.from_dict(json.loads(json.dumps(req.as_dict()))).as_dict() == req.as_dict()
    p = argparse.ArgumentParser()
    add_config_args(p)
    args = p.parse_args(["--arch", req.arch, "--kernel", req.kernel, *req.flags()])
    assert config_from_args(args) == cfg  # the flags mean to ksm-emu what the request means


def test_request_spellings():
    req = ConfigRequest.from_dict({"arch": "ppc64", "kernel": "2.6.32", "enable": ["preempt", "CONFIG_DEBUG_SPINLOCK"],
                                   "page_offset": 0xDEAD4EAD00000000, "nr_cpus": 8})
    assert req.as_dict() == {"arch": "ppc64", "kernel": "2.6.32", "enable": ["DEBUG_SPINLOCK", "PREEMPT"],
                             "nr_cpus": 8, "page_offset": 0xDEAD4EAD00000000}
    assert req.encode() == "ppc64/2.6.32/+PREEMPT/+DEBUG_SPINLOCK/nr=8/po=0xdead4ead00000000"
    assert req.label() == "ppc64 2.6.32 +PREEMPT +DEBUG_SPINLOCK nr=8 po=0xdead4ead00000000"
    assert req.flags() == ["-e", "PREEMPT", "-e", "DEBUG_SPINLOCK", "--nr-cpus", "0x8",
                           "--page-offset", "0xdead4ead00000000"]
    # a replay string lists what differs from the defaults in Kconfig's option order
    assert ConfigRequest.of(resolve(enable=["DEBUG_SPINLOCK"], disable=["SMP"])).encode() == \
        "x86_64/2.6.33/-SMP/+DEBUG_SPINLOCK"
    assert set(OVERRIDES) | {"arch", "kernel", "enable", "disable"} == CONFIG_KEYS


@pytest.mark.parametrize("text,msg", [
    ("vax/2.6.33", "bad config 'vax/2.6.33'"),
    ("x86_64", "bad config"),
    ("x86_64/2.6.33/frob=1", "bad config item 'frob=1'"),
    ("x86_64/2.6.33/nr=four", "bad number 'four'"),
])
def test_request_decode_errors(text, msg):
    with pytest.raises(ValueError, match=msg) as e:
        ConfigRequest.decode(text)
    assert not isinstance(e.value, ConfigError)  # a malformed string; Kconfig's rules are resolve()'s
