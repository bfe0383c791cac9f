"""The Linux-kernel memory model, axiomatically, in herd7's style.

1. Each process is executed symbolically (events.Thread) with every value its
   reads might return: values come from a fixpoint over the bytes that stores
   can write, so each process yields a set of paths (its events with values).
2. For one path per process, the candidate executions are every choice of
   rf (for each read byte, a write of that byte with that value) and co (per
   byte, an order of the writes to it): herd7's candidates, per byte.
3. A candidate is kept when it satisfies the axioms of
   tools/memory-model/linux-kernel.cat (with linux-kernel.bell's sets and
   carry-dep, and lock.cat's lock events, see events.py): coherence,
   atomicity, happens-before, propagation, plain-coherence.  The data-race
   flag is computed on each kept execution.  RCU (rb, gp, rcu-fence) is left
   out: tests that use it are refused by the parser.

Why axiomatic: LKMM is defined by these axioms; an operational model of it
(promises, views) would be a second definition to trust.  Enumerating
candidates is exponential but litmus tests are tiny.

Mixed sizes (docs/litmus-format.md): rf and co are per byte, and a read
whose bytes come from several writes becomes one node per source write (a
"sub-read") for the relations; every acyclicity axiom is checked on the
graph where the sub-reads of one access are one node, so the access reads
all its bytes at one instant.  `prop \\ id` in hb removes identity on nodes,
so a prop path from one sub-read to another of the same access survives and
closes a cycle (tests/litmus/mixed/MIXED+wrc+halves+release).  Coherence and
atomicity only relate accesses to overlapping bytes of one location, so they
are checked per location first, which prunes the product of choices.
Relations are lists of bitmasks over nodes; each one is named as in the .cat.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .ast import AddUnless, Cmpxchg, LitmusTest, Lock, Rmw, Store, TryLock, Unlock, Xchg
from .events import (
    Byte,
    Choice,
    Event,
    Infeasible,
    Layout,
    Thread,
    ThreadRun,
    decode,
    final_state,
    walk,
)

# ------------------------------------------------------------------ relations
# A relation over n nodes is a list of n ints: bit j of rel[i] says (i, j).

Relation = list[int]


def _bits(x: int) -> Iterator[int]:
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def empty(n: int) -> Relation:
    return [0] * n


def ident(n: int, s: int) -> Relation:
    """[S]: the identity on set s (a bitmask)."""
    return [(1 << i) if s >> i & 1 else 0 for i in range(n)]


def union(*rs: Relation) -> Relation:
    out = list(rs[0])
    for r in rs[1:]:
        out = [a | b for a, b in zip(out, r, strict=True)]
    return out


def inter(a: Relation, b: Relation) -> Relation:
    return [x & y for x, y in zip(a, b, strict=True)]


def minus(a: Relation, b: Relation) -> Relation:
    return [x & ~y for x, y in zip(a, b, strict=True)]


def seq(*rs: Relation) -> Relation:
    """r1 ; r2 ; ... (composition)."""
    out = rs[0]
    for r in rs[1:]:
        nxt = []
        for row in out:
            acc = 0
            for j in _bits(row):
                acc |= r[j]
            nxt.append(acc)
        out = nxt
    return out


def inv(r: Relation) -> Relation:
    out = [0] * len(r)
    for i, row in enumerate(r):
        for j in _bits(row):
            out[j] |= 1 << i
    return out


def opt(r: Relation) -> Relation:
    """r? (reflexive closure)."""
    return [row | (1 << i) for i, row in enumerate(r)]


def plus(r: Relation) -> Relation:
    """r+ (transitive closure, Warshall)."""
    out = list(r)
    n = len(out)
    for k in range(n):
        bk = 1 << k
        rk = out[k]
        for i in range(n):
            if out[i] & bk:
                out[i] |= rk
    return out


def star(r: Relation) -> Relation:
    """r* (reflexive-transitive closure)."""
    return opt(plus(r))


def cross(n: int, a: int, b: int) -> Relation:
    """A * B."""
    return [b if a >> i & 1 else 0 for i in range(n)]


def is_empty(r: Relation) -> bool:
    return not any(r)


# ------------------------------------------------------------------ graph


@dataclass
class Access:
    """A node's access: a thread event, or the initial write of a location (proc -1)."""

    ev: Event
    pos: int  # program-order position in its thread (-1 for an initial write)

    @property
    def proc(self) -> int:
        return self.ev.proc


RfChoice = tuple[tuple[int, frozenset], ...]  # (writer access index, cells) per source


@dataclass
class Graph:
    """One candidate execution as relations over nodes (sub-reads split out)."""

    accesses: list[Access]
    rf: dict[int, RfChoice]  # read access -> its sources
    co: dict[tuple[str, int], tuple[int, ...]]  # cell -> writer accesses in coherence order
    nodes: list[int] = field(default_factory=list)  # node -> access
    node_cells: list[frozenset] = field(default_factory=list)
    node_src: list[int] = field(default_factory=list)  # sub-read -> writer access; -1 otherwise

    def __post_init__(self) -> None:
        self.first: dict[int, list[int]] = {}  # access -> its nodes
        for a, acc in enumerate(self.accesses):
            if acc.ev.kind == "R":
                groups = self.rf[a]
            else:
                groups = ((-1, acc.ev.cells),)
            for src, cells in groups:
                self.first.setdefault(a, []).append(len(self.nodes))
                self.nodes.append(a)
                self.node_cells.append(frozenset(cells))
                self.node_src.append(src)
        self.n = len(self.nodes)

    def nodes_of(self, a: int) -> int:
        m = 0
        for k in self.first.get(a, ()):
            m |= 1 << k
        return m

    def set_of(self, pred: Callable[[Event], bool]) -> int:
        """The nodes whose event satisfies `pred`, as a bitmask."""
        m = 0
        for k, a in enumerate(self.nodes):
            if pred(self.accesses[a].ev):
                m |= 1 << k
        return m

    def base(self) -> dict[str, Relation]:
        """po, loc, int, ext, rf, co, fr, rmw and the raw addr/data/ctrl."""
        n = self.n
        acc = [self.accesses[a] for a in self.nodes]
        po, loc, intr = empty(n), empty(n), empty(n)
        for i in range(n):
            for j in range(n):
                ai, aj = acc[i], acc[j]
                if ai.proc >= 0 and ai.proc == aj.proc:
                    intr[i] |= 1 << j
                    if ai.pos < aj.pos:
                        po[i] |= 1 << j
                if i != j and self.node_cells[i] & self.node_cells[j]:
                    loc[i] |= 1 << j
        full = (1 << n) - 1
        ext = [full & ~row for row in intr]
        rf, co, fr, rmw = empty(n), empty(n), empty(n), empty(n)
        wnode = {a: self.first[a][0] for a in range(len(self.accesses)) if self.accesses[a].ev.kind == "W"}
        for order in self.co.values():
            for x, y in itertools.combinations(order, 2):
                co[wnode[x]] |= 1 << wnode[y]
        for k, src in enumerate(self.node_src):
            if src < 0:
                continue
            rf[wnode[src]] |= 1 << k
            for cell in self.node_cells[k]:
                order = self.co[cell]
                for later in order[order.index(src) + 1:]:
                    fr[k] |= 1 << wnode[later]
        # events by (proc, id), for rmw and the dependencies
        by_id: dict[tuple[int, int], int] = {}
        for a, x in enumerate(self.accesses):
            if x.proc >= 0:
                by_id[(x.proc, x.ev.id)] = a
        addr, data, ctrl = empty(n), empty(n), empty(n)
        for a, x in enumerate(self.accesses):
            ev = x.ev
            tgt = self.nodes_of(a)
            if ev.rmw_pair is not None:
                for k in self.first[by_id[(ev.proc, ev.rmw_pair)]]:
                    rmw[k] |= tgt
            for rel, taint in ((addr, ev.addr), (data, ev.data), (ctrl, ev.ctrl)):
                for rid in taint:
                    src = by_id.get((ev.proc, rid))  # absent from a one-location sub-graph
                    for k in self.first.get(src, ()) if src is not None else ():
                        rel[k] |= tgt
        return {"po": po, "loc": loc, "int": intr, "ext": ext, "rf": rf, "co": co, "fr": fr,
                "rmw": rmw, "addr": addr, "data": data, "ctrl": ctrl}

    def acyclic(self, r: Relation) -> bool:
        """No cycle once the sub-reads of each access are one node (one instant)."""
        groups: dict[int, int] = {}
        for k, a in enumerate(self.nodes):
            groups[a] = groups.get(a, 0) | (1 << k)
        index = {a: i for i, a in enumerate(groups)}
        q = [0] * len(groups)
        for k, row in enumerate(r):
            qi = index[self.nodes[k]]
            for j in _bits(row):
                q[qi] |= 1 << index[self.nodes[j]]
        c = plus(q)
        return not any(row >> i & 1 for i, row in enumerate(c))


def coherence_ok(g: Graph, b: dict[str, Relation]) -> bool:
    """linux-kernel.cat's `acyclic po-loc | com as coherence` and
    `empty rmw & (fre ; coe) as atomic` (those of them in AXIOMS)."""
    if "coherence" in AXIOMS:
        po_loc = inter(b["po"], b["loc"])  # po-loc
        com = union(b["rf"], b["co"], b["fr"])  # com = rf | co | fr
        if not g.acyclic(union(po_loc, com)):
            return False
    if "atomic" in AXIOMS:
        fre = inter(b["fr"], b["ext"])
        coe = inter(b["co"], b["ext"])
        return is_empty(inter(b["rmw"], seq(fre, coe)))
    return True


@dataclass
class Checked:
    """The verdict of linux-kernel.cat on one candidate."""

    ok: bool
    races: list[tuple[int, int]] = field(default_factory=list)  # access pairs flagged data-race


#: The axioms checked; a test monkeypatches this to prove the tests can fail.
AXIOMS = ("coherence", "atomic", "happens-before", "propagation", "plain-coherence")


def check(g: Graph) -> Checked:
    """Transcription of linux-kernel.cat (and the .bell's sets) on one candidate."""
    b = g.base()
    n = g.n
    R = g.set_of(lambda e: e.kind == "R")
    W = g.set_of(lambda e: e.kind == "W")
    M = R | W
    IW = g.set_of(lambda e: e.proc < 0)
    # linux-kernel.bell: FailedRMW, Acquire, Release, Noreturn, Marked, Plain
    rmw = b["rmw"]
    in_rmw = 0
    for k, row in enumerate(rmw):
        if row:
            in_rmw |= (1 << k) | row
    RMW = g.set_of(lambda e: e.rmw_insn)
    FailedRMW = RMW & ~in_rmw
    Acquire = (g.set_of(lambda e: e.annot == "acquire") & ~W & ~FailedRMW) | g.set_of(lambda e: e.lock == "LKR")
    Release = (g.set_of(lambda e: e.annot == "release") & ~R & ~FailedRMW) | g.set_of(lambda e: e.lock == "UL")
    Noreturn = g.set_of(lambda e: e.annot == "noreturn") & ~W
    Plain = g.set_of(lambda e: e.kind != "F" and e.annot == "plain")
    Marked = ((1 << n) - 1) & ~Plain
    LKW = g.set_of(lambda e: e.lock == "LKW")
    LKR = g.set_of(lambda e: e.lock == "LKR")
    UL = g.set_of(lambda e: e.lock == "UL")

    def F(name: str) -> int:
        return g.set_of(lambda e: e.kind == "F" and e.annot == name)

    po, rf, co, fr, int_, ext = b["po"], b["rf"], b["co"], b["fr"], b["int"], b["ext"]

    def fencerel(s: int) -> Relation:  # fencerel(S) = po ; [S] ; po
        return seq(po, ident(n, s), po)

    def I(s: int) -> Relation:  # noqa: E743 - [S]
        return ident(n, s)

    # .bell: carry-dep = (data ; rfi)* ; addr/ctrl/data = carry-dep ; addr/ctrl/data
    rfi = inter(rf, int_)
    rfe = inter(rf, ext)
    carry_dep = star(seq(b["data"], rfi))
    addr = seq(carry_dep, b["addr"])
    ctrl = seq(carry_dep, b["ctrl"])
    data = seq(carry_dep, b["data"])

    if not coherence_ok(g, b):  # coherence, atomic
        return Checked(False)

    # Release Acquire
    acq_po = seq(I(Acquire), po, I(M))  # acq-po = [Acquire] ; po ; [M]
    po_rel = seq(I(M), po, I(Release))  # po-rel = [M] ; po ; [Release]
    # po-unlock-lock-po = po ; [UL] ; (po|rf) ; [LKR] ; po
    po_unlock_lock_po = seq(po, I(UL), union(po, rf), I(LKR), po)
    # Fences
    R4rmb = R & ~Noreturn  # R4rmb = R \ Noreturn
    rmb = seq(I(R4rmb), fencerel(F("smp_rmb")), I(R4rmb))
    wmb = seq(I(W), fencerel(F("smp_wmb")), I(W))
    mb = union(
        seq(I(M), fencerel(F("smp_mb")), I(M)),
        seq(I(M), fencerel(F("smp_mb__before_atomic")), I(RMW), opt(po), I(M)),
        seq(I(M), opt(po), I(RMW), fencerel(F("smp_mb__after_atomic")), I(M)),
        seq(I(M), opt(po), I(LKW), fencerel(F("smp_mb__after_spinlock")), I(M)),
        seq(I(M), po, I(UL), union(co, po), I(LKW), fencerel(F("smp_mb__after_unlock_lock")), I(M)),
    )
    strong_fence = mb  # strong-fence = mb | gp (gp: RCU grace periods, not modelled)
    nonrw_fence = union(strong_fence, po_rel, acq_po)  # nonrw-fence
    fence = union(nonrw_fence, wmb, rmb)  # fence = nonrw-fence | wmb | rmb

    # Preserved Program Order
    dep = union(addr, data)  # dep = addr | data
    rwdep = seq(union(dep, ctrl), I(W))  # rwdep = (dep | ctrl) ; [W]
    overwrite = union(co, fr)  # overwrite = co | fr
    to_w = union(rwdep, inter(overwrite, int_), seq(addr, I(Plain), wmb))  # to-w
    to_r = union(addr, seq(dep, I(Marked), rfi))  # to-r = addr | (dep ; [Marked] ; rfi)
    ppo = union(to_r, to_w, fence, inter(po_unlock_lock_po, int_))  # ppo

    # Propagation: A-cumul(r) = (rfe ; [Marked])? ; r
    def a_cumul(r: Relation) -> Relation:
        return seq(opt(seq(rfe, I(Marked))), r)

    # cumul-fence = [Marked] ; (A-cumul(strong-fence | po-rel) | wmb | po-unlock-lock-po) ; [Marked]
    cumul_fence = seq(I(Marked), union(a_cumul(union(strong_fence, po_rel)), wmb, po_unlock_lock_po), I(Marked))
    # prop = [Marked] ; (overwrite & ext)? ; cumul-fence* ; [Marked] ; rfe? ; [Marked]
    prop = seq(I(Marked), opt(inter(overwrite, ext)), star(cumul_fence), I(Marked), opt(rfe), I(Marked))
    # hb = [Marked] ; (ppo | rfe | ((prop \ id) & int)) ; [Marked]
    hb = seq(I(Marked), union(ppo, rfe, inter(minus(prop, ident(n, (1 << n) - 1)), int_)), I(Marked))
    if "happens-before" in AXIOMS and not g.acyclic(hb):
        return Checked(False)
    # pb = prop ; strong-fence ; hb* ; [Marked]
    hb_star = star(hb)
    pb = seq(prop, strong_fence, hb_star, I(Marked))
    if "propagation" in AXIOMS and not g.acyclic(pb):
        return Checked(False)

    # Plain accesses and data races (rb, the RCU relation, is empty here)
    xbstar = star(union(hb, pb))  # xbstar = (hb | pb | rb)*
    # vis = cumul-fence* ; rfe? ; [Marked] ; ((strong-fence ; [Marked] ; xbstar) | (xbstar & int))
    vis = seq(star(cumul_fence), opt(rfe), I(Marked),
              union(seq(strong_fence, I(Marked), xbstar), inter(xbstar, int_)))
    not_noreturn = ((1 << n) - 1) & ~Noreturn
    w_pre_bounded = seq(I(Marked), opt(union(addr, fence)))  # [Marked] ; (addr | fence)?
    # r-pre-bounded = [Marked] ; (addr | nonrw-fence | ([R4rmb] ; fencerel(Rmb) ; [~Noreturn]))?
    r_pre_bounded = seq(I(Marked), opt(union(addr, nonrw_fence,
                                             seq(I(R4rmb), fencerel(F("smp_rmb")), I(not_noreturn)))))
    w_post_bounded = seq(opt(fence), I(Marked))  # fence? ; [Marked]
    # r-post-bounded = (nonrw-fence | ([~Noreturn] ; fencerel(Rmb) ; [R4rmb]))? ; [Marked]
    r_post_bounded = seq(opt(union(nonrw_fence, seq(I(not_noreturn), fencerel(F("smp_rmb")), I(R4rmb)))),
                         I(Marked))
    sf_xb = seq(strong_fence, xbstar)
    ww_vis = union(fence, seq(sf_xb, w_pre_bounded), seq(w_post_bounded, vis, w_pre_bounded))
    wr_vis = union(fence, seq(sf_xb, r_pre_bounded), seq(w_post_bounded, vis, r_pre_bounded))
    rw_xbstar = union(fence, seq(r_post_bounded, xbstar, w_pre_bounded))
    # pre-race = ext & ((Plain * M) | ((M \ IW) * Plain))
    pre_race = inter(ext, union(cross(n, Plain, M), cross(n, M & ~IW, Plain)))
    wr_incoh = inter(inter(pre_race, rf), inv(rw_xbstar))
    rw_incoh = inter(inter(pre_race, fr), inv(wr_vis))
    ww_incoh = inter(inter(pre_race, co), inv(ww_vis))
    if "plain-coherence" in AXIOMS and not is_empty(union(wr_incoh, rw_incoh, ww_incoh)):
        return Checked(False)
    # ww-nonrace = ww-vis & ((Marked * W) | rw-xbstar) & ((W * Marked) | wr-vis)
    ww_nonrace = inter(inter(ww_vis, union(cross(n, Marked, W), rw_xbstar)), union(cross(n, W, Marked), wr_vis))
    ww_race = minus(inter(pre_race, co), ww_nonrace)
    wr_race = minus(minus(inter(pre_race, seq(opt(co), rf)), wr_vis), inv(rw_xbstar))
    rw_race = minus(inter(pre_race, fr), rw_xbstar)
    races = union(ww_race, wr_race, rw_race)
    pairs = sorted({(g.nodes[i], g.nodes[j]) for i, row in enumerate(races) for j in _bits(row)})
    return Checked(True, pairs)


# ------------------------------------------------------------------ candidates


def _write_sites(test: LitmusTest) -> int:
    return sum(isinstance(x, (Store, Rmw, Xchg, Cmpxchg, AddUnless, Lock, Unlock, TryLock))
               for x in walk(test.processes))


class Domain:
    """For each location, the writes (offset, bytes) that some path can make."""

    def __init__(self, layout: Layout) -> None:
        self.atoms: dict[str, set[tuple[int, tuple[Byte, ...]]]] = {
            loc: {(0, data)} for loc, data in layout.init.items()}

    def values(self, loc: str, off: int, size: int) -> list[tuple[Byte, ...]]:
        """Every value a read of [off, off+size) could take: each segment between
        write boundaries from some write covering it."""
        atoms = self.atoms[loc]
        cuts = {off, off + size}
        for a_off, data in atoms:
            for c in (a_off, a_off + len(data)):
                if off < c < off + size:
                    cuts.add(c)
        bounds = sorted(cuts)
        segs = []
        for s, e in itertools.pairwise(bounds):
            segs.append(sorted({data[s - a_off:e - a_off] for a_off, data in atoms
                                if a_off <= s and e <= a_off + len(data)}, key=repr))
        return [tuple(itertools.chain.from_iterable(p)) for p in itertools.product(*segs)]

    def add(self, ev: Event) -> bool:
        item = (ev.off, ev.value)
        if item in self.atoms[ev.loc]:
            return False
        self.atoms[ev.loc].add(item)
        return True


def _paths(test: LitmusTest, layout: Layout, proc_index: int, domain: Domain) -> list[Thread]:
    """Every path of one process, its reads answered from `domain`."""
    out: list[Thread] = []
    stack = [ThreadRun(test.processes[proc_index], layout)]
    while stack:
        r = stack.pop()
        a = r.pending
        if a is None:
            out.append(r.thread)
            continue
        if isinstance(a, Choice):
            replies: list[object] = list(range(a.n))
        elif a.kind == "R":
            replies = domain.values(a.loc, a.off, a.size)
            if a.need is not None:
                replies = [v for v in replies if decode(v, layout.endian) == a.need]
        else:
            replies = [None]
        for reply in replies:
            try:
                stack.append(r.step(reply))
            except Infeasible:
                pass
    return out


def all_paths(test: LitmusTest, layout: Layout) -> list[list[Thread]]:
    """Each process's paths, with the value domain at its fixpoint.  A value no
    execution can produce needs a chain of rf through more writes than the test
    has, so the iteration stops after that many rounds (atomic_inc on two CPUs
    would otherwise count up for ever)."""
    domain = Domain(layout)
    rounds = _write_sites(test) + 1
    while True:
        paths = [_paths(test, layout, p, domain) for p in range(len(test.processes))]
        grew = False
        for ps in paths:
            for t in ps:
                for ev in t.events:
                    if ev.kind == "W":
                        grew |= domain.add(ev)
        rounds -= 1
        if not grew or rounds <= 0:
            return paths


def _initial_writes(layout: Layout) -> list[Access]:
    out = []
    for k, (loc, data) in enumerate(sorted(layout.init.items())):
        ev = Event(-1 - k, -1, "W", "once", loc=loc, off=0, size=len(data), value=data, text="init")
        out.append(Access(ev, -1))
    return out


def _rf_options(accesses: list[Access], r: int, writers: list[int]) -> list[RfChoice]:
    """Every way read `r` can take its bytes: per byte a write with that byte value;
    a (non-initial) write shares all its bytes with the read or none (single-copy
    atomicity); initial values are per byte."""
    rd = accesses[r].ev
    cells = sorted(rd.cells)
    out: list[RfChoice] = []

    def byte(ev: Event, cell: tuple[str, int]) -> Byte:
        return ev.value[cell[1] - ev.off]

    cands = []
    for w in writers:
        wa = accesses[w]
        if not (wa.ev.cells & rd.cells):
            continue
        if wa.proc == rd.proc and wa.pos > accesses[r].pos:
            continue  # a po-later write of its own: coherence forbids it
        cands.append(w)

    def rec(assigned: dict) -> None:
        todo = next((c for c in cells if c not in assigned), None)
        if todo is None:
            groups: dict[int, set] = {}
            for c, w in assigned.items():
                groups.setdefault(w, set()).add(c)
            out.append(tuple(sorted((w, frozenset(cs)) for w, cs in groups.items())))
            return
        for w in cands:
            wev = accesses[w].ev
            if todo not in wev.cells:
                continue
            shared = [todo] if wev.proc < 0 else [c for c in cells if c in wev.cells]
            if any(c in assigned for c in shared):
                continue
            if all(byte(wev, c) == byte(rd, c) for c in shared):
                rec({**assigned, **{c: w for c in shared}})

    rec({})
    return out


def _co_options(accesses: list[Access], writers: list[int], iw: int) -> list[dict]:
    """Every coherence order of one location's writes, as per-byte orders (the
    initial write first; a thread's overlapping writes in program order)."""
    seen: set = set()
    out: list[dict] = []
    ws = [w for w in writers if w != iw]
    for perm in itertools.permutations(ws):
        bad = False
        for i, x in enumerate(perm):
            for y in perm[i + 1:]:
                ax, ay = accesses[x], accesses[y]
                if ax.proc == ay.proc and ay.pos < ax.pos and ax.ev.cells & ay.ev.cells:
                    bad = True
                    break
            if bad:
                break
        if bad:
            continue
        order = {c: (iw,) + tuple(w for w in perm if c in accesses[w].ev.cells) for c in accesses[iw].ev.cells}
        key = tuple(sorted(order.items()))
        if key not in seen:
            seen.add(key)
            out.append(order)
    return out


@dataclass
class Execution:
    """One execution linux-kernel.cat allows: its final state and its data races."""

    state: dict[str, object]
    races: list[tuple[Event, Event]]


def executions(test: LitmusTest, layout: Layout) -> Iterator[Execution]:
    """Every execution of `test` that linux-kernel.cat allows."""
    paths = all_paths(test, layout)
    iws = _initial_writes(layout)
    cache: dict = {}
    for combo in itertools.product(*paths):
        accesses = list(iws)
        for t in combo:
            accesses.extend(Access(ev, pos) for pos, ev in enumerate(t.events))
        yield from _candidates(layout, accesses, list(combo), cache)


def _location_choices(accesses: list[Access], idx: list[int]) -> list[tuple[dict, dict]]:
    """The (rf, co) choices for one location's accesses `idx` that pass coherence
    and atomicity, which relate one location's accesses only; in local indices."""
    sub = [accesses[a] for a in idx]
    local = list(range(len(sub)))
    iw = next(k for k in local if sub[k].proc < 0)
    writers = [k for k in local if sub[k].ev.kind == "W"]
    reads = [k for k in local if sub[k].ev.kind == "R"]
    rf_opts = [_rf_options(sub, r, writers) for r in reads]
    out = []
    for co in _co_options(sub, writers, iw):
        for rfs in itertools.product(*rf_opts):
            rf = dict(zip(reads, rfs, strict=True))
            g = Graph(sub, rf, co)
            if coherence_ok(g, g.base()):
                out.append((rf, co))
    return out


def _candidates(layout: Layout, accesses: list[Access], threads: list[Thread], cache: dict
                ) -> Iterator[Execution]:
    per_loc: list[list[tuple[dict, dict]]] = []
    for loc in sorted(layout.sizes):
        idx = [a for a, x in enumerate(accesses) if x.ev.kind != "F" and x.ev.loc == loc]
        # many path combinations share one location's accesses: check those once
        key = tuple((accesses[a].proc, accesses[a].pos, x.kind, x.id, x.off, x.size, x.value, x.rmw_pair)
                    for a in idx for x in (accesses[a].ev,))
        if key not in cache:
            cache[key] = _location_choices(accesses, idx)
        if not cache[key]:
            return
        per_loc.append([({idx[r]: tuple((idx[w], c) for w, c in ch) for r, ch in rf.items()},
                         {c: tuple(idx[w] for w in o) for c, o in co.items()}) for rf, co in cache[key]])
    for choice in itertools.product(*per_loc):
        rf: dict = {}
        co: dict = {}
        for r, c in choice:
            rf.update(r)
            co.update(c)
        g = Graph(accesses, rf, co)
        res = check(g)
        if not res.ok:
            continue
        memory = {}
        for loc, size in layout.sizes.items():
            memory[loc] = tuple(accesses[co[(loc, k)][-1]].ev.value[k - accesses[co[(loc, k)][-1]].ev.off]
                                for k in range(size))
        yield Execution(final_state(layout, threads, memory),
                        [(accesses[a].ev, accesses[b].ev) for a, b in res.races])
