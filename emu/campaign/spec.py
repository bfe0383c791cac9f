"""A campaign's SPEC (JSON): which jobs to run, expanded to one object per job.

    {"explore": {"configs": [CONFIG, ...], "protocols": [...], "scenarios": [...],
                 "memory_models": ["sc", "tso", "tso/-zone_lock"],
                 "seeds": [...], "strategy": "pct", "schedules": 200, "depth": 3, "cpus": {...}},
     "run":     {"configs": [CONFIG, ...], "protocols": [...], "seeds": [...],
                 "pages": 1024, "duration": 2}}

CONFIG is {"arch", "kernel", "enable": [...], "disable": [...], "nr_cpus",
"split_ptlock_cpus", "page_offset", "mem_map"}, each optional (numbers may be
"0x..." strings). Either section may be left out; each is the product of its
lists. A job is a plain, canonical dict: the same job is the same object on
any executor and in the results file, which is how a re-run knows it is done.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from ..kconfig import CONFIG_KEYS, OVERRIDES, Config, ConfigError, ConfigRequest
from ..mm.protocol import PROTOCOLS
from ..runspec import LimitError, check_allocators, check_pages

SECTION_KEYS = {
    "explore": {"configs", "protocols", "scenarios", "memory_models", "seeds", "strategy", "schedules", "depth",
                "cpus", "time_limit"},
    "run": {"configs", "protocols", "seeds", "pages", "duration", "allocators"},
}
MAX_JOBS = 100_000


class SpecError(ValueError):
    """A malformed SPEC; the message is one line."""


def _num(where: str, v: Any) -> int:
    if isinstance(v, bool):
        raise SpecError(f"{where}: want an integer, not {json.dumps(v)}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            pass
    raise SpecError(f"{where}: want an integer (or a \"0x...\" string), not {json.dumps(v)}")


def _list(where: str, v: Any, default: list | None = None) -> list:
    if v is None and default is not None:
        return default
    if not isinstance(v, list) or not v:
        raise SpecError(f"{where}: want a non-empty list")
    return v


def config_of(job_config: dict) -> Config:
    """The kernel config a job's "config" object names."""
    return ConfigRequest.from_dict(job_config).resolve()


def _config(where: str, c: Any) -> dict:
    if not isinstance(c, dict):
        raise SpecError(f"{where}: want an object like {{\"arch\": \"ppc64\", \"kernel\": \"2.6.32\"}}")
    unknown = set(c) - CONFIG_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(CONFIG_KEYS))}")
    for key in ("enable", "disable"):
        opts = c.get(key, [])
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            raise SpecError(f"{where}.{key}: want a list of option names")
    numbers = {key: _num(f"{where}.{key}", c[key]) for key in OVERRIDES if c.get(key) is not None}
    out = ConfigRequest.from_dict({**c, **numbers}).as_dict()
    if not isinstance(out["arch"], str) or not isinstance(out["kernel"], str):
        raise SpecError(f"{where}: arch and kernel are strings")
    from ..hazard import DirectMapError, analyse

    try:
        analyse(config_of(out))  # as explore checks it: a direct map that cannot fit fails here, not as a job
    except (ConfigError, DirectMapError) as e:
        raise SpecError(f"{where}: {e}") from None
    return out


def _choices(where: str, v: Any, known: list[str] | tuple[str, ...]) -> list[str]:
    items = _list(where, v)
    for x in items:
        if x not in known:
            raise SpecError(f"{where}: unknown {json.dumps(x)}; choose from {', '.join(known)}")
    return list(dict.fromkeys(items))


def _explore_jobs(sec: dict) -> list[dict]:
    from ..explore.agree import allocator_cpu
    from ..explore.api import _cpus as role_cpus
    from ..explore.scenarios import SCENARIOS
    from ..explore.strategies import MAX_DEPTH, SAMPLING, STRATEGIES
    from ..explore.tso import check_cpus, for_arch, parse_model

    configs = [_config(f"explore.configs[{i}]", c) for i, c in enumerate(_list("explore.configs", sec.get("configs"),
                                                                                 [{}]))]
    protocols = _choices("explore.protocols", sec.get("protocols", ["keyhole"]), list(PROTOCOLS))
    scenarios = _choices("explore.scenarios", sec.get("scenarios", ["stale-node"]), list(SCENARIOS))
    models = _memory_models(sec.get("memory_models", ["sc"]))
    seeds = [_num(f"explore.seeds[{i}]", s) for i, s in enumerate(_list("explore.seeds", sec.get("seeds"), [0]))]
    strategy = sec.get("strategy", "dpor")
    if strategy not in STRATEGIES:
        raise SpecError(f"explore.strategy: unknown {json.dumps(strategy)}; choose from {', '.join(STRATEGIES)}")
    schedules = _num("explore.schedules", sec["schedules"]) if sec.get("schedules") is not None else None
    if schedules is not None and schedules < 1:
        raise SpecError("explore.schedules: want at least 1")
    depth = _num("explore.depth", sec.get("depth", 3))
    if not 1 <= depth <= MAX_DEPTH:
        raise SpecError(f"explore.depth: want 1..{MAX_DEPTH}")
    cpus = sec.get("cpus", {})
    if not isinstance(cpus, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                             for v in cpus.values()):
        raise SpecError("explore.cpus: want an object of role: CPU id, e.g. {\"allocator\": 3}")
    if strategy not in SAMPLING and len(seeds) > 1:
        raise SpecError(f"explore.seeds: strategy {strategy} is deterministic; seeds go with pct or random")
    time_limit = sec.get("time_limit")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not 0 < time_limit <= 86400):
        raise SpecError("explore.time_limit: want seconds, > 0 and <= 86400")
    if strategy in SAMPLING and schedules is None and time_limit is None:
        raise SpecError(f"explore: strategy {strategy} never runs out of schedules; give schedules or time_limit")
    _bounded("explore", len(configs) * len(protocols) * len(scenarios) * len(models) * len(seeds))
    jobs, seen = [], {}
    for c, p, sc, model, seed in itertools.product(configs, protocols, scenarios, models, seeds):
        roles = SCENARIOS[sc].role_names
        bad = set(cpus) - set(roles)
        if bad:
            raise SpecError(f"explore.cpus: scenario {sc} has no role {sorted(bad)[0]!r} (roles: {', '.join(roles)})")
        cfg = config_of(c)
        job_cpus = dict(cpus)
        if sc == "pagetable-reuse" and "allocator" not in job_cpus:  # as explore --all: the key-like CPU
            job_cpus["allocator"] = allocator_cpu(cfg, None)
        for role, cpu in job_cpus.items():
            if cpu >= cfg.nr_cpus:
                raise SpecError(f"explore.cpus: {role}={cpu} but NR_CPUS={cfg.nr_cpus} in {c}")
        job = {"kind": "explore", "config": c, "protocol": p, "scenario": sc, "strategy": strategy,
               "seed": seed, "schedules": schedules, "cpus": dict(sorted(job_cpus.items()))}
        if strategy == "pct":
            job["depth"] = depth
        if time_limit is not None:  # only when given: a job's identity is unchanged otherwise
            job["time_limit"] = time_limit
        resolved = for_arch(model, cfg.arch)  # "arch": the port's own, per config
        try:
            base = parse_model(resolved)[0]
        except ValueError as e:
            raise SpecError(f"explore.memory_models: {model} on {json.dumps(c)} is {resolved}: {e}") from None
        try:
            check_cpus(base, role_cpus(SCENARIOS[sc], cfg, job_cpus))
        except ValueError as e:
            raise SpecError(f"explore: {sc} on {json.dumps(c)}: {e}") from None
        if resolved != "sc":  # likewise: an sc job is the same job as before memory models
            job["memory_model"] = resolved
        key = json.dumps(job, sort_keys=True)
        if key in seen and "arch" in (model.split("/")[0], seen[key].split("/")[0]):
            continue  # "arch" and the model it is on this config: one job (other repeats are refused below)
        seen.setdefault(key, model)
        jobs.append(job)
    return jobs


def _memory_models(v: Any) -> list[str]:
    """Each as explore --memory-model takes it ("sc", "tso", "tso/-zone_lock", "arch"), in its canonical spelling."""
    from ..explore.tso import model_name, parse_model

    out = []
    for i, m in enumerate(_list("explore.memory_models", v, ["sc"])):
        if not isinstance(m, str):
            raise SpecError(f"explore.memory_models[{i}]: want a string such as \"tso\", not {json.dumps(m)}")
        try:
            name = model_name(*parse_model(m, allow_arch=True))
        except ValueError as e:
            raise SpecError(f"explore.memory_models[{i}]: {e}") from None
        if name not in out:
            out.append(name)
    return out


def _within(check: Callable[..., None], *args: Any, where: str = "") -> None:
    """A run's limit (emu.runspec), as a SpecError naming the SPEC's key."""
    try:
        check(*args)
    except LimitError as e:
        raise SpecError(f"run.{e.name}: {e.want}{where}") from None


def _run_jobs(sec: dict) -> list[dict]:
    configs = [_config(f"run.configs[{i}]", c) for i, c in enumerate(_list("run.configs", sec.get("configs"), [{}]))]
    protocols = _choices("run.protocols", sec.get("protocols", ["keyhole"]), list(PROTOCOLS))
    seeds = [_num(f"run.seeds[{i}]", s) for i, s in enumerate(_list("run.seeds", sec.get("seeds"), [1]))]
    pages = _num("run.pages", sec.get("pages", 1024))
    _within(check_pages, pages)
    duration = sec.get("duration", 2)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 3600:
        raise SpecError("run.duration: want seconds, > 0 and <= 3600")
    allocators = _num("run.allocators", sec.get("allocators", 2))
    _within(check_allocators, allocators)
    _bounded("run", len(configs) * len(protocols) * len(seeds))
    for c in configs:  # ksmd, reclaim and the allocators each need a CPU of their own
        _within(check_pages, pages, config_of(c), where=f" in {c}")
        if config_of(c).nr_cpus < 2 + allocators:
            raise SpecError(f"run.configs: NR_CPUS={config_of(c).nr_cpus} in {c} is too few CPUs for "
                            f"{2 + allocators} roles (ksmd, reclaim, {allocators} allocator(s))")
    return [{"kind": "run", "config": c, "protocol": p, "seed": seed, "pages": pages, "duration": duration,
             "allocators": allocators}
            for c, p, seed in itertools.product(configs, protocols, seeds)]


def _bounded(section: str, n: int) -> None:
    """Refuse a product too large before building it (a small SPEC can ask for millions)."""
    if n > MAX_JOBS:
        raise SpecError(f"{section}: {n} jobs; at most {MAX_JOBS}")


def parse(text: str) -> list[dict]:
    """The jobs of a SPEC's text, in a stable order; SpecError if malformed."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise SpecError(f"not JSON: {e}") from None
    except RecursionError:
        raise SpecError("not JSON: nested too deeply") from None
    if not isinstance(spec, dict) or not spec:
        raise SpecError('want an object with "explore" and/or "run" (see ksm-emu campaign --example)')
    unknown = set(spec) - set(SECTION_KEYS)
    if unknown:
        raise SpecError(f"unknown section {sorted(unknown)[0]!r}; want \"explore\" and/or \"run\"")
    jobs: list[dict] = []
    for name, make in (("explore", _explore_jobs), ("run", _run_jobs)):
        if name not in spec:
            continue
        sec = spec[name]
        if not isinstance(sec, dict):
            raise SpecError(f"{name}: want an object")
        bad = set(sec) - SECTION_KEYS[name]
        if bad:
            raise SpecError(f"{name}: unknown key {sorted(bad)[0]!r}; known: {', '.join(sorted(SECTION_KEYS[name]))}")
        jobs += make(sec)
        if len(jobs) > MAX_JOBS:
            raise SpecError(f"more than {MAX_JOBS} jobs")
    seen: set[str] = set()
    for j in jobs:  # "seeds": [1, 1, "0x1"] or a config given twice: one job, asked for again
        k = key(j)
        if k in seen:
            what = {f: j[f] for f in ("kind", "protocol", "scenario", "seed") if f in j}
            raise SpecError(f"the same job twice ({json.dumps(what)} on {json.dumps(j['config'])}); "
                            "each seed and config once")
        seen.add(k)
    return jobs


def key(job: dict) -> str:
    """A job's identity: its canonical JSON."""
    return json.dumps(job, sort_keys=True, separators=(",", ":"))


EXAMPLE = {
    "explore": {
        "configs": [
            {"arch": "x86_64", "kernel": "2.6.33"},
            {"arch": "ppc64", "kernel": "2.6.32", "enable": ["PREEMPT", "DEBUG_SPINLOCK"],
             "page_offset": "0xdead4ead00000000"},
        ],
        "protocols": ["keyhole", "keyhole-no-recheck"],
        "scenarios": ["stale-node", "pagetable-reuse"],
        "strategy": "dpor",
        "schedules": 2000,
    },
    "run": {"configs": [{"arch": "x86_64", "kernel": "2.6.33"}], "protocols": ["keyhole", "refcount"],
            "seeds": [1], "pages": 1024, "duration": 2},
}


def example() -> str:
    return json.dumps(EXAMPLE, indent=2) + "\n"
