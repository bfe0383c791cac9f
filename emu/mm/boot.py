"""Booting the emulated kernel: the machine file with every region, the free
list, the KSM area's page tables with their locks initialised, the rmap_items;
and the `World` every CPU context is made from, in a run, a test or a
controlled schedule alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .._atomics import Atomics
from ..check.shadow import PAGETABLE
from ..kconfig import Config
from ..layout import Layout
from ..lockword import lock_model, ptl_model
from ..machine import Machine, MachineError, RegionSpec, attach, create
from ..records import CONTROL_DTYPE
from .context import MM
from .mem import KernelAtomics
from .page_alloc import alloc_page, freelist_init
from .pgtable import set_pmd, vaddr
from .protocol import KEYHOLE, Protocol, protocol_named
from .ptlock import mm_locks_init, pte_lock_init
from .regions import PTRS_PER_GROUP, Geometry, Objects


def offsets(m: Machine, geo: Geometry) -> dict[str, int | object]:
    """Every offset the hot paths need, from the layouts and the region table."""
    cfg, lay, k = m.cfg, m.page_layout, m.kernel
    ri = Layout(k.rmap_item, cfg.byte_order, "rmap_item")
    r = m.regions
    split = bool(cfg["USE_SPLIT_PTLOCKS"])
    ptl_on_mapping = split and bool([c for c in lay.covers(lay.offset("mapping"), cfg.word_bytes)
                                     if c.field.path.startswith("ptl.")])
    o: dict = {
        "word": cfg.word_bytes, "psize": m.page_size, "mem_map": m.mem_map_offset, "mem_map_addr": cfg.mem_map,
        "count_rel": lay.offset("_count.counter"), "mapcount_rel": lay.offset("_mapcount.counter"),
        "mapping_rel": lay.offset("mapping"), "flags_rel": lay.offset("flags"),
        "index_rel": lay.offset("index"), "private_rel": lay.offset("private"),
        "sn_off": r["stable_nodes"].offset, "sn_base": r["stable_nodes"].base, "sn_size": k.stable_node.size,
        "sn_kpfn": k.stable_node.member("kpfn")[0], "sn_hlist": k.stable_node.member("hlist")[0],
        "ri_off": r["rmap_items"].offset, "ri_base": r["rmap_items"].base, "ri_size": k.rmap_item.size,
        "ri_address": ri.offset("address"), "ri_oldchecksum": ri.offset("oldchecksum"),
        "ri_head": ri.offset("head"), "ri_hlist": ri.offset("hlist"), "ri_pprev": ri.offset("hlist.pprev"),
        "split_ptlocks": split, "ptl_on_mapping": ptl_on_mapping,
        "ptl_rel": lay.offset("ptl") if split else -1,
        "ptl_model": ptl_model(cfg, lay) if split else None,
        "mm_lock_model": lock_model(cfg, Layout(k.spinlock, cfg.byte_order, "spinlock_t")),
    }
    o["pte_lock_model"] = o["ptl_model"] if split else o["mm_lock_model"]
    for name in ("shadow", "ptes", "pgtables", "freelist", "counters", "percpu", "violations", "latency",
                 "page_data"):
        o[name] = r[name].offset
    ctl = r["control"].offset
    for name, key in (("stop", "ctl_stop"), ("nr_free", "ctl_nr_free"), ("nr_violations", "ctl_nviol"),
                      ("nr_latencies", "ctl_nlat"), ("violations_by_kind", "ctl_by_kind")):
        o[key] = ctl + CONTROL_DTYPE.fields[name][1]
    return o


@dataclass
class World:
    """A booted machine and what every CPU context over it shares."""

    machine: Machine
    geo: Geometry
    protocol: Protocol
    objects: Objects
    offsets: dict = field(repr=False)
    kernel_mem: KernelAtomics = field(repr=False)
    host_mem: Atomics = field(repr=False)
    trace: object = field(default=None, repr=False)  # emu.mm.trace.TraceRings while traced

    @classmethod
    def over(cls, m: Machine, protocol: Protocol | None = None) -> World:
        """The world of a machine booted by `boot` (its meta says how), whose
        contexts run `protocol`: by default the one the meta records it was
        booted with (a file attached afterwards, by kmem or another process)."""
        meta = m.meta
        try:
            geo = Geometry(**meta["geometry"])
            if protocol is None:
                protocol = protocol_named(meta["protocol"])
        except (KeyError, TypeError) as e:
            raise MachineError(f"{m.path}: not a ksm-emu world (meta lacks {e})") from None
        except ValueError as e:  # a protocol this program does not know
            raise MachineError(f"{m.path}: {e}") from None
        return cls(m, geo, protocol, Objects.at(m.region("kmalloc").base, geo.nmms), offsets(m, geo),
                   KernelAtomics(m.mm, m.cfg.byte_order), Atomics(m.mm, "little"))

    def context(self, *, cpu: int, task: int | None = None, role: str = "launcher", **kw: object) -> MM:
        """A CPU's context (task defaults to the launcher's task_struct)."""
        return MM(self, cpu=cpu, task=self.objects.task[-1] if task is None else task, role=role, **kw)

    def close(self) -> None:
        self.kernel_mem.release()
        self.host_mem.release()
        self.machine.close()


def boot(path: str | os.PathLike, cfg: Config, nr_pages: int, *, protocol: Protocol = KEYHOLE,
         nmms: int = 2, geo: Geometry | None = None, meta: dict | None = None,
         extra: Iterable[RegionSpec] = (), bases: dict[str, int] | None = None,
         overwrite: bool = False, fd: int | None = None) -> World:
    """Create the machine file and bring the kernel up on CPU 0: the free list,
    every mm's page_table_lock, each group's page-table page (pte_lock_init),
    the rmap_items of the KSM area. `extra` regions are the caller's own
    (a test's or a scenario's variables); `bases` places regions at chosen
    addresses (a scenario putting stable_nodes where a key could collide).
    `fd`: the file, already created and locked at `path` by the caller
    (emu.statefile)."""
    geo = geo or Geometry.for_pages(nr_pages, cfg.nr_cpus, nmms)
    m = create(path, cfg, nr_pages, regions=[*geo.regions(cfg, bases), *extra], overwrite=overwrite, fd=fd,
               meta={"geometry": geo.as_dict(), "protocol": protocol.name, **(meta or {})})
    world = World.over(m, protocol)
    mm = world.context(cpu=0)
    freelist_init(mm)
    mm_locks_init(mm)
    for g in range(geo.ngroups):  # each group's page-table page, for the whole run
        pfn = alloc_page(mm, PAGETABLE)
        if pfn is None:
            world.close()
            raise MachineError(f"{nr_pages} pages are too few for {geo.ngroups} page tables")
        pte_lock_init(mm, pfn)
        set_pmd(mm, g, pfn)
    items = m.region_array("rmap_items", Layout(m.kernel.rmap_item, cfg.byte_order).dtype)
    slots = np.arange(geo.nslots)
    mms = np.array(world.objects.mm_struct, dtype=np.uint64)
    items["mm"] = mms[(slots // PTRS_PER_GROUP) % geo.nmms]
    items["address"] = vaddr(mm, 0) + slots.astype(np.uint64) * 4096
    del items
    return world


def attach_world(path: str | os.PathLike) -> World:
    return World.over(attach(path))
