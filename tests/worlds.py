"""Booted worlds for the tests: the same boot as `ksm-emu run`, small."""

from __future__ import annotations

from emu.check.truth import REPORT
from emu.decode import decode_violation
from emu.kconfig import resolve
from emu.mm.boot import boot
from emu.mm.ksm import StableTree
from emu.mm.ksm_scan import scan_slot
from emu.mm.memory import do_anonymous_page
from emu.mm.pgtable import pte
from emu.mm.protocol import PROTOCOLS
from emu.report import violation_records

# word size x byte order, as drgn's mock platforms cover them
PLATFORMS = {"x86_64": {"arch": "x86_64"}, "ppc64": {"arch": "ppc64"}, "i386": {"arch": "i386"},
             "ppc32": {"arch": "ppc32"}}


class World:
    """A booted machine with ksmd's context and stable tree on CPU 0."""

    def __init__(self, tmp_path, protocol="keyhole", pages=1024, policy=REPORT, **cfg):
        self.w = boot(tmp_path / "w.state", resolve(**cfg), pages, protocol=PROTOCOLS[protocol], nmms=2)
        self.m, self.geo, self.obj = self.w.machine, self.w.geo, self.w.objects
        self.policy = policy
        self.ksmd = self.mm(0, "ksmd")
        self.tree = StableTree(self.geo)

    def mm(self, cpu, role="allocator.0"):
        return self.w.context(cpu=cpu, task=0xC0000000 + cpu * 0x1000, role=role, policy=self.policy)

    def violations(self):
        return [decode_violation(self.m, r).adding(code=int(r["kind"])) for r in violation_records(self.w)]

    def merge_pair(self, s1=0, s2=1, content=7):
        """Two anon pages of one content at slots s1, s2; ksmd merges them."""
        a = self.mm(2)
        for s in (s1, s2):
            assert do_anonymous_page(a, s, self.obj.anon_vma[0], content)
        scan_slot(self.ksmd, self.tree, s1)  # into the unstable tree
        scan_slot(self.ksmd, self.tree, s2)  # merged: a new KSM page and stable_node
        kpfn = pte(self.ksmd, s1)
        assert pte(self.ksmd, s2) == kpfn
        node = int(self.tree.by_content[content]) - 1
        return kpfn, node

    def close(self):
        self.w.close()
