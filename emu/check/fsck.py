"""An end-state check of a quiet machine (no CPU inside a kernel function):
every pte's page, every free page and every KSM page must add up.

  a page mapped by n ptes is anon or KSM, with _mapcount n - 1 and _count n
      (+1 while a stable_node holds a reference, under the refcount protocol)
  a free page has _count 0, _mapcount -1 and (where the protocol clears it)
      mapping NULL
  a KSM page no pte maps is held only by its stable_node (refcount), and
      under the keyhole nothing holds one
  a live stable_node's KSM page carries its key
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..records import SHADOW_DTYPE
from .shadow import ANON, FREE, KSM, STATE_NAMES

if TYPE_CHECKING:
    from ..mm.boot import World


def fsck(world: World, live_nodes: dict[int, int] | None = None) -> list[str]:
    """Problems found; `live_nodes` maps each live stable_node's index to its kpfn."""
    m, o, geo = world.machine, world.offsets, world.geo
    k, word = world.kernel_mem, o["word"]
    protocol = world.protocol
    shadow = m.region_array("shadow", SHADOW_DTYPE)
    ptes = [k.load(o["ptes"] + word * s, word) - 1 for s in range(geo.nslots)]
    mapped = Counter(p for p in ptes if p >= 0)
    live_nodes = live_nodes or {}
    held = {kpfn for kpfn in live_nodes.values()} if protocol.holds_ref else set()
    key_of = {kpfn: o["sn_base"] + idx * o["sn_size"] + 3 for idx, kpfn in live_nodes.items()}
    out = []
    for pfn in range(geo.nr_pages):
        page = m.page_offset(pfn)
        state = int(shadow[pfn]["state"])
        count = k.load(page + o["count_rel"], 4, True)
        mapcount = k.load(page + o["mapcount_rel"], 4, True)
        mapping = k.load(page + o["mapping_rel"], word)
        n = mapped.get(pfn, 0)
        what = f"pfn {pfn} ({STATE_NAMES[state] if state < len(STATE_NAMES) else state})"
        if n:
            expect = n + (pfn in held)
            if state not in (ANON, KSM):
                out.append(f"{what} is mapped by {n} ptes")
            if mapcount != n - 1 or count != expect:
                out.append(f"{what}: mapped by {n} ptes, _mapcount {mapcount} _count {count} "
                           f"(want {n - 1} and {expect})")
        elif state == FREE:
            if count != 0 or mapcount != -1 or (mapping and protocol.clear_on_free):
                out.append(f"{what}: free with _count {count} _mapcount {mapcount} mapping {mapping:#x}")
        elif state == KSM and count != (pfn in held):
            out.append(f"{what}: no pte maps it, yet _count is {count}")
        if pfn in key_of and state == KSM and mapping != key_of[pfn]:
            out.append(f"{what}: its live stable_node's key {key_of[pfn]:#x} is not in mapping {mapping:#x}")
    del shadow
    return out
