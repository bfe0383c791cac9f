"""ksm-emu run: build the machine, fork the roles, watch them, summarise.

Every role is an OS process (multiprocessing "fork" context) with its own
emulated CPU and task pointer. The launcher polls the children: if one dies,
the run stops, the others are told to exit (then terminated), and the report
says who died and how. Ctrl-C stops the run the same way, with a partial
summary. The state file stays for inspection.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field

import multiprocessing_logging
import numpy as np

from .kconfig import Config
from .layout import Layout
from .machine import MAGIC, Machine, MachineError, create
from .mm.core import MM, ROLE_NAMES, VIOLATION_NAMES
from .mm.page_alloc import alloc_page, freelist_init
from .mm.ptlock import PtLock
from .mm.rmap import PteLocks, vaddr
from .mm.world import (
    COUNTERS,
    CTL_STOP,
    LATENCY_DTYPE,
    PAGETABLE,
    PTRS_PER_GROUP,
    STATE_NAMES,
    VIOLATION_DTYPE,
    W_PTL,
    WRITER_NAMES,
    Geometry,
)
from .roles import allocator, ksmd, reclaim

LOG = logging.getLogger("ksm-emu")
TASK_SIZE = 1024
EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_DIED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class RunSpec:
    cfg: Config
    protocol: str = "keyhole"
    pages: int = 65536
    duration: float = 10.0
    allocators: int = 2
    cpus: dict[str, int] = field(default_factory=dict)  # "ksmd", "reclaim", "allocator.N"
    pages_to_scan: int = 100
    sleep_ms: float = 20.0
    seed: int = 1
    state: str = "/dev/shm/ksm-emu.state"
    window_us: float = 0.0
    ptl_hold_us: float = 20.0
    progress: bool = True

    def roles(self) -> list[tuple[str, int, int]]:
        """(name, role code, cpu) per process."""
        names = [("ksmd", 1), ("reclaim", 2)] + [(f"allocator.{i}", 3) for i in range(self.allocators)]
        return [(n, code, self.cpus[n]) for n, code in names]


def assign_cpus(spec: RunSpec, requested: dict[str, int]) -> dict[str, int]:
    """Default CPU ids 0, 1, 2... in role order; `requested` overrides some."""
    names = ["ksmd", "reclaim"] + [f"allocator.{i}" for i in range(spec.allocators)]
    taken = set(requested.values())
    free = (c for c in range(spec.cfg.nr_cpus) if c not in taken)
    out = {}
    for n in names:
        if n in requested:
            out[n] = requested[n]
        else:
            try:
                out[n] = next(free)
            except StopIteration:
                raise ValueError(f"NR_CPUS={spec.cfg.nr_cpus} is too few CPUs for {len(names)} roles") from None
    return out


# -- setup ---------------------------------------------------------------------

def kmalloc_objects(m: Machine, nalloc: int) -> dict:
    base = m.region("kmalloc").base
    return {"task": [base + i * TASK_SIZE for i in range(nalloc + 3)],
            "anon_vma": [base + (128 << 10) + a * 64 for a in range(nalloc)],
            "address_space": [base + (192 << 10) + a * 256 for a in range(nalloc)],
            "kmem_cache": [base + (256 << 10) + a * 256 for a in range(nalloc)],
            "driver": [base + (320 << 10) + a * 64 for a in range(nalloc)]}


def _prepare_state_path(path: str) -> None:
    """Overwrite an old state file, but never anything that is not one."""
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            magic = f.read(len(MAGIC))
    except OSError as e:
        raise MachineError(f"{path}: {e.strerror}") from None
    if magic != MAGIC:
        raise MachineError(f"{path} exists and is not a ksm-emu state file; not overwriting it")
    os.unlink(path)


def setup(spec: RunSpec) -> tuple[Machine, Geometry, dict]:
    cfg = spec.cfg
    geo = Geometry.for_pages(spec.pages, cfg.nr_cpus)
    k_node, k_item = _struct_sizes(cfg)
    _prepare_state_path(spec.state)
    m = create(spec.state, cfg, spec.pages, protocol=spec.protocol,
               regions=geo.regions(k_node, k_item),
               meta={"geometry": geo.as_dict(), "cpus": spec.cpus, "seed": spec.seed})
    objects = kmalloc_objects(m, spec.allocators)
    mm = MM(m, geo, role=0, cpu=0, task=objects["task"][-1], protocol=spec.protocol)
    freelist_init(mm)
    locks = PteLocks(mm, spec.allocators)
    locks.init_mm_locks()
    ptl = PtLock(m) if cfg["USE_SPLIT_PTLOCKS"] else None
    for g in range(geo.ngroups):  # each group's page-table page, for the whole run
        pfn = alloc_page(mm, PAGETABLE)
        if pfn is None:
            raise MachineError(f"{spec.pages} pages are too few for {geo.ngroups} page tables")
        if ptl is not None:
            mm.sh_set(pfn, "writer", W_PTL)
            ptl.pte_lock_init(pfn)
        mm.h.store(mm.pgtables + 8 * g, 8, pfn + 1)
    items = m.region_array("rmap_items", Layout(m.kernel.rmap_item, cfg.byte_order).dtype)
    slots = np.arange(geo.nslots)
    mms = np.array([locks.mm_struct(i) for i in range(spec.allocators)], dtype=np.uint64)
    items["mm"] = mms[(slots // PTRS_PER_GROUP) % spec.allocators]
    items["address"] = vaddr(mm, 0) + slots.astype(np.uint64) * 4096
    del items
    return m, geo, objects


def _struct_sizes(cfg: Config) -> tuple[int, int]:
    """sizeof(struct stable_node), sizeof(struct rmap_item)."""
    from .structs import kernel_for

    k = kernel_for(cfg)
    return k.stable_node.size, k.rmap_item.size


# -- the children -----------------------------------------------------------------

class _RoleLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {}).update(self.extra)
        return msg, kwargs


def _child(spec: RunSpec, m: Machine, geo: Geometry, objects: dict, name: str, code: int, cpu: int,
           task: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C
    log = _RoleLog(LOG, {"role": name, "cpu": cpu})
    rng = random.Random(f"{spec.seed}:{name}")
    mm = MM(m, geo, role=code, cpu=cpu, task=task, protocol=spec.protocol,
            window_ns=int(spec.window_us * 1000))
    locks = PteLocks(mm, spec.allocators)
    log.info("started, pid %d, task %#x", os.getpid(), task)
    try:
        if code == 1:
            ksmd.run(mm, locks, ksmd.KsmdParams(spec.pages_to_scan, spec.sleep_ms), _noop)
        elif code == 2:
            reclaim.run(mm, locks, reclaim.ReclaimParams(), rng, _noop)
        else:
            i = int(name.split(".")[1])
            obj = {k: objects[k][i] for k in ("anon_vma", "address_space", "kmem_cache", "driver")}
            allocator.run(mm, locks, allocator.AllocatorParams(i, spec.allocators, spec.ptl_hold_us, obj),
                          rng, _noop)
    except Exception:
        log.exception("failed")
        os._exit(1)
    log.info("stopped")
    logging.shutdown()
    os._exit(0)


def _noop() -> None:
    pass


# -- the run ------------------------------------------------------------------------

@dataclass
class Outcome:
    summary: dict
    exit_code: int


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(role)s cpu%(cpu)s pid%(process)d: %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False
    multiprocessing_logging.install_mp_handler(LOG)


def run(spec: RunSpec, log_level: int = logging.WARNING, out=sys.stderr) -> Outcome:
    _setup_logging(log_level)
    log = _RoleLog(LOG, {"role": "launcher", "cpu": "-"})
    m, geo, objects = setup(spec)
    ctx = mp.get_context("fork")
    procs = []
    t_start = time.monotonic()
    for i, (name, code, cpu) in enumerate(spec.roles()):
        p = ctx.Process(target=_child, name=name,
                        args=(spec, m, geo, objects, name, code, cpu, objects["task"][i]), daemon=True)
        p.start()
        procs.append((name, cpu, p))
    mm = MM(m, geo, role=0, cpu=0, task=objects["task"][-1], protocol=spec.protocol)
    died: list[dict] = []
    interrupted = False
    tty = spec.progress and out.isatty()
    try:
        while time.monotonic() - t_start < spec.duration:
            time.sleep(0.1)
            for name, cpu, p in procs:
                if p.exitcode is not None:
                    died.append(_death(name, cpu, p))
            if died:
                log.error("%s", "; ".join(d["how"] for d in died))
                break
            if tty:
                out.write("\r" + _progress_line(mm, time.monotonic() - t_start, spec.duration))
                out.flush()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: stopping the roles")
    if tty:
        out.write("\n")
    elapsed = time.monotonic() - t_start
    mm.h.store(mm.control + CTL_STOP * 4, 4, 1)
    _reap(procs, died)
    summary = summarise(spec, m, mm, geo, elapsed, procs, died, interrupted)
    m.close()
    multiprocessing_logging.uninstall_mp_handler(LOG)
    if died:
        code = EXIT_DIED
    elif summary["violations_total"]:
        code = EXIT_VIOLATION
    elif interrupted:
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_OK
    summary["exit_code"] = code
    return Outcome(summary, code)


def _death(name: str, cpu: int, p) -> dict:
    code = p.exitcode
    if code is not None and code < 0:
        how = f"killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code}"
    return {"role": name, "cpu": cpu, "pid": p.pid, "exitcode": code, "how": f"{name} (pid {p.pid}, CPU {cpu}) {how}"}


def _reap(procs, died: list[dict]) -> None:
    deadline = time.monotonic() + 10
    for _name, _cpu, p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for name, cpu, p in procs:
        if p.is_alive():
            p.terminate()
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join()
        if p.exitcode != 0 and not any(d["pid"] == p.pid for d in died):
            if not died:  # the first failure found after the stop
                died.append(_death(name, cpu, p))


def _progress_line(mm: MM, t: float, total: float) -> str:
    c = {n: mm.counter(n) for n in ("get_ksm_page_ok", "get_ksm_page_stale", "ksm_pages_merged",
                                      "pages_freed", "violations")}
    return (f"[{t:5.1f}/{total:.0f}s] get_ksm_page ok {c['get_ksm_page_ok']} stale "
            f"{c['get_ksm_page_stale']}, merged {c['ksm_pages_merged']}, freed {c['pages_freed']}, "
            f"violations {c['violations']}   ")


def _percentiles(ns: np.ndarray) -> dict:
    if not len(ns):
        return {"p50": None, "p99": None, "max": None, "n": 0}
    us = ns / 1000.0
    return {"p50": round(float(np.percentile(us, 50)), 1), "p99": round(float(np.percentile(us, 99)), 1),
            "max": round(float(us.max()), 1), "n": int(len(us))}


def decode_violation(m: Machine, rec: np.void) -> dict:
    cfg, lay = m.cfg, m.page_layout
    mapping = int(rec["mapping"])
    raw = mapping.to_bytes(cfg.word_bytes, cfg.byte_order)
    writer = int(rec["writer"])
    members = []
    if writer == W_PTL and lay.has("ptl"):
        _, _, bits = lay.overlap("mapping")
        for b in bits:
            lo, hi = b.member_bytes
            value = int.from_bytes(raw[lo:hi + 1], cfg.byte_order)
            members.append(f"{b.other.path}={value:#x}")
    kind = int(rec["kind"])
    detail = int(rec["detail"])
    out = {
        "kind": VIOLATION_NAMES[kind],
        "pfn": int(rec["pfn"]),
        "stable_node": f"{int(rec['node']):#x}" if rec["node"] else None,
        "expected_key": f"{int(rec['expected']):#x}" if rec["expected"] else None,
        "mapping": f"{mapping:#x}",
        "mapping_bytes": raw.hex(" "),
        "written_by": WRITER_NAMES[writer] if writer < len(WRITER_NAMES) else str(writer),
        "union_members": members,
        "role": ROLE_NAMES[int(rec["role"])], "cpu": int(rec["cpu"]),
    }
    if kind in (0, 1):
        out["page_really_is"] = STATE_NAMES[detail] if detail < len(STATE_NAMES) else str(detail)
    elif detail:
        out["detail"] = detail
    return out


def summarise(spec: RunSpec, m: Machine, mm: MM, geo: Geometry, elapsed: float, procs, died,
              interrupted: bool) -> dict:
    counts = {n: mm.counter(n) for n in COUNTERS}
    nlat = min(mm.h.load(mm.lat, 8), geo.latency_capacity)
    lat = m.region_array("latency", np.uint8)[8:8 + nlat * LATENCY_DTYPE.itemsize].view(LATENCY_DTYPE)
    nviol = mm.h.load(mm.viol, 8)
    recs = m.region_array("violations", np.uint8)[8:8 + min(nviol, geo.violation_capacity)
                                                   * VIOLATION_DTYPE.itemsize].view(VIOLATION_DTYPE)
    violations = [decode_violation(m, r) for r in recs]
    out = {
        "config": spec.cfg.as_dict(),
        "protocol": spec.protocol,
        "pages": spec.pages,
        "emulated_bytes": spec.pages * 4096,
        "duration_s": round(elapsed, 2),
        "seed": spec.seed,
        "roles": [{"role": n, "cpu": c, "pid": p.pid, "exitcode": p.exitcode} for n, c, p in procs],
        "counts": counts,
        "reclaim_time_to_free_us": _percentiles(lat["ns"][lat["kind"] == 1]),
        "reclaim_time_to_free_anon_us": _percentiles(lat["ns"][lat["kind"] == 0]),
        "violations": violations,
        "violations_total": counts["violations"],
        "violations_by_kind": {k: v for k, v in mm.violations_by_kind().items() if v},
        "died": died,
        "interrupted": interrupted,
        "state": spec.state,
    }
    del lat, recs
    return out


def render_summary(s: dict) -> str:
    c = s["config"]
    lines = [f"ksm-emu run: {c['arch']} {c['kernel']}, protocol {s['protocol']}, {s['pages']} pages "
             f"({s['emulated_bytes'] >> 20} MiB emulated), {s['duration_s']} s, seed {s['seed']}"
             + (" (interrupted: partial)" if s["interrupted"] else "")]
    lines.append("roles: " + ", ".join(f"{r['role']} cpu{r['cpu']}" for r in s["roles"]))
    k = s["counts"]
    lines.append(f"get_ksm_page: {k['get_ksm_page_ok']} ok, {k['get_ksm_page_stale']} stale; "
                 f"stable nodes removed {k['stable_nodes_removed']}; KSM pages created "
                 f"{k['ksm_pages_created']}, pages merged {k['ksm_pages_merged']}")
    lines.append(f"pages allocated {k['pages_allocated']}, freed {k['pages_freed']}; reclaimed "
                 f"{k['reclaimed']} (ptes unmapped {k['reclaim_unmapped']}); ksmd passes "
                 f"{k['ksmd_passes']}; ptl locks {k['ptl_locks']}")
    for key, what in (("reclaim_time_to_free_us", "KSM pages"), ("reclaim_time_to_free_anon_us", "anon pages")):
        r = s[key]
        if r["n"]:
            lines.append(f"reclaim time to free ({what}): p50 {r['p50']} us, p99 {r['p99']} us, "
                         f"max {r['max']} us, n {r['n']}")
        else:
            lines.append(f"reclaim time to free ({what}): no page reached the free list")
    for d in s["died"]:
        lines.append(f"DIED: {d['how']}")
    if s["violations_total"]:
        lines.append(f"VIOLATIONS: {s['violations_total']} ("
                     + ", ".join(f"{k}: {v}" for k, v in s["violations_by_kind"].items()) + ")")
        for v in s["violations"][:20]:
            extra = f", page really is {v['page_really_is']}" if "page_really_is" in v else ""
            lines.append(f"  {v['kind']}: pfn {v['pfn']}, stable_node {v['stable_node']}, expected key "
                         f"{v['expected_key']}, mapping {v['mapping']} [{v['mapping_bytes']}] written by "
                         f"{v['written_by']}{' (' + ', '.join(v['union_members']) + ')' if v['union_members'] else ''}"
                         f"{extra}; seen by {v['role']} on CPU {v['cpu']}")
        if len(s["violations"]) > 20:
            lines.append(f"  ... {len(s['violations']) - 20} more in --json")
    else:
        lines.append("violations: none")
    lines.append(f"state file: {s['state']}")
    return "\n".join(lines)
