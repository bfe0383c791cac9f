"""ksm-emu litmus: the sc, tso and lkmm engines on the kernel's litmus tests and
our mixed-size ones, a broken lkmm that the agreement test catches, data races,
and the command's output and error table."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from emu.cli import main
from emu.litmus import UnsupportedConstruct, parse_file
from emu.litmus import lkmm as lkmm_engine
from emu.litmus.models import run

LITMUS = Path(__file__).resolve().parent / "litmus"
KERNEL_FILES = sorted((LITMUS / "kernel").glob("*.litmus")) + sorted((LITMUS / "kernel-doc").glob("*.litmus"))
MIXED = LITMUS / "mixed"

# Tests of the kernel's corpus that use a construct ksm-emu does not model:
# name -> the construct the one-line error names.
UNSUPPORTED = {
    "MP+onceassign+derefonce": "rcu_assign_pointer()",
    "RCU+sync+free": "rcu_read_lock()",
    "RCU+sync+read": "rcu_read_lock()",
}
SUPPORTED = [p for p in KERNEL_FILES if p.stem not in UNSUPPORTED]


def ident(p: Path) -> str:
    return f"{p.parent.name}/{p.stem}"


def outcomes(path: Path, model: str, keys: tuple[str, ...], endian: str = "little") -> set[tuple]:
    o = run(parse_file(path), model, endian)
    return {tuple(s[k] for k in keys) for s, _ in o.states}


# ------------------------------------------------------------------ lkmm vs Result


@pytest.mark.parametrize("path", SUPPORTED, ids=ident)
def test_lkmm_agrees_with_result_line(path: Path):
    t = parse_file(path)
    o = run(t, "lkmm")
    assert o.agrees, f"{t.name}: lkmm says {o.verdict.observation} {o.verdict.positive} " \
                     f"{o.verdict.negative}, Result: {t.result}"


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_tests_exit_2_naming_the_construct(name: str, capsys):
    path = next(p for p in KERNEL_FILES if p.stem == name)
    with pytest.raises(UnsupportedConstruct):
        parse_file(path)
    assert main(["litmus", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and UNSUPPORTED[name] in err and "Traceback" not in err


def test_every_kernel_test_is_supported_or_listed():
    assert len(SUPPORTED) + len(UNSUPPORTED) == len(KERNEL_FILES) == 55


# ------------------------------------------------------------------ sc and tso

SC_SETS = {
    # (0:r0, 1:r0): all but (0,0)
    "SB+poonceonces": (("0:r0", "1:r0"), {(0, 1), (1, 0), (1, 1)}),
    # (flag, buf) as P1 reads them: all but (1,0)
    "MP+poonceonces": (("1:r0", "1:r1"), {(0, 0), (0, 1), (1, 1)}),
    # (0:r0, 1:r0): all but (1,1)
    "LB+poonceonces": (("0:r0", "1:r0"), {(0, 0), (0, 1), (1, 0)}),
    # IRIW: every combination but the two readers disagreeing on the order of the writes
    "IRIW+poonceonces+OnceOnce": (("1:r0", "1:r1", "3:r0", "3:r1"),
                                  set(itertools.product((0, 1), repeat=4)) - {(1, 0, 1, 0)}),
}


@pytest.mark.parametrize("name", sorted(SC_SETS))
def test_sc_gives_exactly_the_sc_outcomes(name: str):
    keys, want = SC_SETS[name]
    assert outcomes(LITMUS / "kernel" / f"{name}.litmus", "sc", keys) == want


def test_tso_store_buffering_but_no_message_passing_reorder():
    sb = LITMUS / "kernel" / "SB+poonceonces.litmus"
    assert outcomes(sb, "tso", ("0:r0", "1:r0")) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert run(parse_file(sb), "tso").verdict.observation == "Sometimes"
    # a full barrier drains the buffer: (0,0) is gone again
    assert run(parse_file(LITMUS / "kernel" / "SB+fencembonceonces.litmus"), "tso").verdict.observation == "Never"
    mp = LITMUS / "kernel" / "MP+poonceonces.litmus"
    assert (1, 0) not in outcomes(mp, "tso", ("1:r0", "1:r1"))
    assert outcomes(mp, "tso", ("1:r0", "1:r1")) == SC_SETS["MP+poonceonces"][1]
    # TSO is not weaker than SC anywhere else: LB and IRIW keep their SC sets
    for name in ("LB+poonceonces", "IRIW+poonceonces+OnceOnce"):
        keys, want = SC_SETS[name]
        assert outcomes(LITMUS / "kernel" / f"{name}.litmus", "tso", keys) == want


def test_store_forwarding_under_tso():
    # SB+rfionceonce: each CPU reads its own buffered store (r1, r3 = 1) and still
    # misses the other's: (0,0) for (0:r2, 1:r4)
    o = run(parse_file(LITMUS / "kernel" / "SB+rfionceonce-poonceonces.litmus"), "tso")
    assert all(s["0:r1"] == 1 and s["1:r3"] == 1 for s, _ in o.states)
    assert o.verdict.observation == "Sometimes"


def test_lkmm_is_weaker_than_tso_where_the_kernel_says():
    # LB, MP and IRIW without barriers: allowed by LKMM, not by TSO
    for name in ("LB+poonceonces", "MP+poonceonces", "IRIW+poonceonces+OnceOnce"):
        path = LITMUS / "kernel" / f"{name}.litmus"
        assert run(parse_file(path), "tso").verdict.observation == "Never", name
        assert run(parse_file(path), "lkmm").verdict.observation == "Sometimes", name


def test_locks_deadlock_and_mutual_exclusion_under_every_model():
    for model in ("sc", "tso", "lkmm"):
        rm = run(parse_file(LITMUS / "kernel-doc" / "RM-broken.litmus"), model)
        assert rm.agrees and rm.executions == 0, model  # the filter keeps no execution: DEADLOCK
        polocks = run(parse_file(LITMUS / "kernel" / "MP+polocks.litmus"), model)
        assert polocks.verdict.observation == "Never", model


# ------------------------------------------------------------------ mixed sizes

EXPECTED = json.loads((MIXED / "expected.json").read_text())
MIXED_CASES = [(name, order, model) for name in sorted(k for k in EXPECTED if not k.startswith("_"))
               for order in ("little", "big") for model in ("sc", "tso", "lkmm")]


@pytest.mark.parametrize(("name", "order", "model"), MIXED_CASES, ids=["-".join(c) for c in MIXED_CASES])
def test_mixed_size_outcome_sets(name: str, order: str, model: str):
    """expected.json gives every outcome set by hand, per byte order and model
    (derived in each file's comment)."""
    want_states = EXPECTED[name]["outcomes"][order][model]
    keys = tuple(sorted(want_states[0]))
    want = {tuple(int(s[k], 16) for k in keys) for s in want_states}
    o = run(parse_file(MIXED / f"{name}.litmus"), model, order)
    got = {tuple(s[k] & (2**64 - 1) for k in keys) for s, _ in o.states}
    assert got == want
    assert o.verdict.observation == EXPECTED[name]["verdict"][model]


# ------------------------------------------------------------------ the tests can fail

NEVER_BY_PROPAGATION = ["SB+fencembonceonces", "IRIW+fencembonceonces+OnceOnce", "R+fencembonceonces"]


def test_an_lkmm_without_the_propagation_axiom_fails_the_agreement_test(monkeypatch):
    monkeypatch.setattr(lkmm_engine, "AXIOMS", tuple(a for a in lkmm_engine.AXIOMS if a != "propagation"))
    for name in NEVER_BY_PROPAGATION:
        with pytest.raises(AssertionError, match="lkmm says Sometimes"):
            test_lkmm_agrees_with_result_line(LITMUS / "kernel" / f"{name}.litmus")
    # the axioms left still forbid what hb alone forbids
    test_lkmm_agrees_with_result_line(LITMUS / "kernel" / "MP+pooncerelease+poacquireonce.litmus")


def test_an_lkmm_without_happens_before_allows_mp_with_release_acquire(monkeypatch):
    monkeypatch.setattr(lkmm_engine, "AXIOMS", tuple(a for a in lkmm_engine.AXIOMS if a != "happens-before"))
    with pytest.raises(AssertionError, match="lkmm says Sometimes"):
        test_lkmm_agrees_with_result_line(LITMUS / "kernel" / "MP+pooncerelease+poacquireonce.litmus")


def test_a_naive_per_byte_lkmm_misses_the_one_instant_read(monkeypatch):
    """Checking acyclicity on sub-reads separately (one node per byte group, not
    per access) allows MIXED+wrc+halves+release's (1,H4): the cycle that forbids
    it is a prop edge between two sub-reads of one load (docs/litmus-format.md)."""
    path = MIXED / "MIXED+wrc+halves+release.litmus"
    assert run(parse_file(path), "lkmm").verdict.observation == "Never"

    def per_node(self, r):
        c = lkmm_engine.plus(r)
        return not any(row >> i & 1 for i, row in enumerate(c))

    monkeypatch.setattr(lkmm_engine.Graph, "acyclic", per_node)
    assert run(parse_file(path), "lkmm").verdict.observation == "Sometimes"


# ------------------------------------------------------------------ data races


def _mp(p0: str, p1: str) -> str:
    return (f"C MP-race\n{{}}\nP0(int *x, int *y)\n{{\n\t{p0}\n}}\n"
            f"P1(int *x, int *y)\n{{\n\tint r0;\n\tint r1;\n\t{p1}\n}}\nexists (1:r0=1 /\\ 1:r1=0)\n")


@pytest.mark.parametrize(("p0", "p1", "racy"), [
    ("*x = 1;\n\tWRITE_ONCE(*y, 1);", "r0 = READ_ONCE(*y);\n\tr1 = *x;", True),  # no ordering at all
    ("*x = 1;\n\tsmp_store_release(y, 1);", "r0 = smp_load_acquire(y);\n\tif (r0)\n\t\tr1 = *x;", False),
    ("*x = 1;\n\tsmp_store_release(y, 1);", "r0 = smp_load_acquire(y);\n\tr1 = *x;", True),  # r0=0 races
    ("WRITE_ONCE(*x, 1);\n\tWRITE_ONCE(*y, 1);", "r0 = READ_ONCE(*y);\n\tr1 = READ_ONCE(*x);", False),
])
def test_data_races_as_lkmm_flags_them(p0: str, p1: str, racy: bool, tmp_path, capsys):
    f = tmp_path / "t.litmus"
    f.write_text(_mp(p0, p1))
    assert main(["litmus", "--json", str(f)]) == 0
    [obj] = json.loads(capsys.readouterr().out)
    assert bool(obj["data_races"]) == racy
    if racy:
        assert all("*p" in r and "P0" in r and "P1" in r for r in obj["data_races"])


# ------------------------------------------------------------------ the command


def test_cli_text_and_exit_status(capsys):
    sb = str(LITMUS / "kernel" / "SB+poonceonces.litmus")
    assert main(["litmus", "--model", "tso", sb]) == 0
    out = capsys.readouterr().out
    assert "Test SB+poonceonces Allowed" in out and "Model tso" in out and "States 4" in out
    assert "1     :> 0:r0=0; 1:r0=0;" in out and "\nOk\n" in out
    assert "Observation SB+poonceonces Sometimes 1 3" in out and "Result: Sometimes (agrees)" in out
    mp = str(LITMUS / "kernel" / "MP+poonceonces.litmus")
    assert main(["litmus", "--model", "sc", mp]) == 1  # SC says Never: disagrees with Sometimes
    out = capsys.readouterr().out
    assert "\nNo\n" in out and "Result: Sometimes (DISAGREES)" in out


def test_cli_json(capsys):
    files = [str(LITMUS / "kernel" / n) for n in ("SB+poonceonces.litmus", "MP+polocks.litmus")]
    assert main(["litmus", "--json", *files]) == 0
    objs = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in objs] == ["SB+poonceonces", "MP+polocks"]
    for o in objs:
        assert {"file", "name", "model", "verdict", "states", "executions", "data_races"} <= set(o)
        assert o["model"] == "lkmm" and o["agrees"] is True
    assert objs[0]["verdict"] == "Sometimes" and objs[0]["executions"] == 4
    assert {tuple(s["state"].values()) for s in objs[0]["states"]} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_cli_big_endian_mixed(capsys):
    path = str(MIXED / "MIXED+store32+load64.litmus")
    assert main(["litmus", "--arch", "ppc64", "--model", "sc", path]) == 0
    out = capsys.readouterr().out
    assert "big-endian" in out and "1:r0=0x1020304aabbccdd; 1:r1=0xaabbccdd;" in out


ERRORS = [
    ("missing file", ["litmus", "/nonexistent/x.litmus"], "/nonexistent/x.litmus: No such file"),
    ("bad model", ["litmus", "--model", "pso", "x.litmus"], "invalid choice: 'pso'"),
    ("syntax error", ["litmus", "BAD"], "BAD.litmus:3:"),
    ("unsupported", ["litmus", "RCU"], "unsupported construct rcu_read_lock()"),
    ("a directory", ["litmus", "DIR"], "not a litmus test"),
]


@pytest.mark.parametrize(("case", "argv", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_cli_errors_are_one_line_exit_2(case, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BAD.litmus").write_text("C BAD\n{}\nP0(int *x) { WRITE_ONCE(*x 1); }\nexists (x=1)\n")
    (tmp_path / "RCU.litmus").write_text("C RCU\n{}\nP0(int *x) { rcu_read_lock(); }\nexists (x=1)\n")
    argv = [{"BAD": "BAD.litmus", "RCU": "RCU.litmus", "DIR": str(tmp_path)}.get(a, a) for a in argv]
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    assert status == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_cli_keeps_going_after_a_bad_file(capsys):
    good = str(LITMUS / "kernel" / "SB+poonceonces.litmus")
    assert main(["litmus", "/nonexistent.litmus", good]) == 2
    out, err = capsys.readouterr()
    assert "Observation SB+poonceonces Sometimes" in out and err.count("\n") == 1


# ------------------------------------------------------------------ the benchmark


def test_bench_litmus_json():
    import subprocess
    import sys

    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_litmus.py"
    r = subprocess.run([sys.executable, str(tool), "--json", "--model", "sc", "--model", "tso",
                        "--dir", str(LITMUS / "kernel")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    rows = {row["model"]: row for row in d["models"]}
    assert set(rows) == {"sc", "tso"}
    for row in rows.values():
        assert row["files"] == 43 and row["unsupported"] == 1 and row["seconds"] > 0 and not row["errors"]
        assert row["agree"] + row["disagree"] + row["unsupported"] == 43
    # TSO allows SB (and R) where SC does not: it agrees with LKMM on more tests
    assert rows["tso"]["agree"] > rows["sc"]["agree"]
    assert "SB+poonceonces" in rows["sc"]["disagreeing"] and "SB+poonceonces" not in rows["tso"]["disagreeing"]
    r = subprocess.run([sys.executable, str(tool), "--model", "pso"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ------------------------------------------------------------------ more shapes, answers from explanation.txt

SHAPES = {
    # hb: data ; rfe ; data ; rfe is a cycle (no out-of-thin-air values either)
    "LB+datas": ("{}\nP0(int *x, int *y) { int r0; r0 = READ_ONCE(*x); WRITE_ONCE(*y, r0); }\n"
                 "P1(int *x, int *y) { int r0; r0 = READ_ONCE(*y); WRITE_ONCE(*x, r0); }\n"
                 "exists (0:r0=1 /\\ 1:r0=1)\n", ("Never", "Never", "Never")),
    # an address dependency through a pointer read from memory orders the second load
    "MP+wmb+addr": ("{ int *p=y; int x; int y; }\n"
                    "P0(int *x, int **p) { WRITE_ONCE(*x, 1); smp_wmb(); WRITE_ONCE(*p, x); }\n"
                    "P1(int *x, int **p) { int *r0; int r1; r0 = READ_ONCE(*p); r1 = READ_ONCE(*r0); }\n"
                    "exists (1:r0=x /\\ 1:r1=0)\n", ("Never", "Never", "Never")),
    # ... but not without the writer's smp_wmb()
    "MP+po+addr": ("{ int *p=y; int x; int y; }\n"
                   "P0(int *x, int **p) { WRITE_ONCE(*x, 1); WRITE_ONCE(*p, x); }\n"
                   "P1(int *x, int **p) { int *r0; int r1; r0 = READ_ONCE(*p); r1 = READ_ONCE(*r0); }\n"
                   "exists (1:r0=x /\\ 1:r1=0)\n", ("Never", "Never", "Sometimes")),
    # a control dependency orders later stores, not later loads
    "MP+wmb+ctrl": ("{}\nP0(int *x, int *y) { WRITE_ONCE(*x, 1); smp_wmb(); WRITE_ONCE(*y, 1); }\n"
                    "P1(int *x, int *y) { int r0; int r1; r0 = READ_ONCE(*y); if (r0) r1 = READ_ONCE(*x); }\n"
                    "exists (1:r0=1 /\\ 1:r1=0)\n", ("Never", "Never", "Sometimes")),
    # (prop \ id) & int: coe ; wmb ; rfe comes back to P1, whose data dependency closes an hb cycle
    "S+wmb+data": ("{}\nP0(int *x, int *y) { WRITE_ONCE(*x, 2); smp_wmb(); WRITE_ONCE(*y, 1); }\n"
                   "P1(int *x, int *y) { int r0; r0 = READ_ONCE(*y); WRITE_ONCE(*x, r0); }\n"
                   "exists (x=2 /\\ 1:r0=1)\n", ("Never", "Never", "Never")),
    # SB needs a strong fence on both sides
    "SB+mb+po": ("{}\nP0(int *x, int *y) { int r0; WRITE_ONCE(*x, 1); smp_mb(); r0 = READ_ONCE(*y); }\n"
                 "P1(int *x, int *y) { int r0; WRITE_ONCE(*y, 1); r0 = READ_ONCE(*x); }\n"
                 "exists (0:r0=0 /\\ 1:r0=0)\n", ("Never", "Sometimes", "Sometimes")),
    # xchg() is fully ordered; xchg_relaxed() is not (a locked instruction on x86 all the same)
    "SB+xchgs": ("{}\nP0(int *x, int *y) { int r0; int r1; r1 = xchg(x, 1); r0 = READ_ONCE(*y); }\n"
                 "P1(int *x, int *y) { int r0; int r1; r1 = xchg(y, 1); r0 = READ_ONCE(*x); }\n"
                 "exists (0:r0=0 /\\ 1:r0=0)\n", ("Never", "Never", "Never")),
    "SB+xchg_relaxeds": ("{}\nP0(int *x, int *y) { int r0; int r1; r1 = xchg_relaxed(x, 1); r0 = READ_ONCE(*y); }\n"
                         "P1(int *x, int *y) { int r0; int r1; r1 = xchg_relaxed(y, 1); r0 = READ_ONCE(*x); }\n"
                         "exists (0:r0=0 /\\ 1:r0=0)\n", ("Never", "Never", "Sometimes")),
    # atomics never lose an increment, under any model
    "3incs": ("{}\nP0(atomic_t *v) { int r0; r0 = atomic_inc_return_relaxed(v); }\n"
              "P1(atomic_t *v) { int r0; r0 = atomic_inc_return_relaxed(v); }\nP2(atomic_t *v) { atomic_inc(v); }\n"
              "exists (v=3)\n", ("Always", "Always", "Always")),
    # two successful spin_trylock()s are mutually exclusive: P1 saw P0's store, so it wrote last
    "trylocks": ("{}\nP0(spinlock_t *s, int *x) { int r0; r0 = spin_trylock(s); "
                 "if (r0) { WRITE_ONCE(*x, 1); spin_unlock(s); } }\n"
                 "P1(spinlock_t *s, int *x) { int r0; int r1; r0 = spin_trylock(s); "
                 "if (r0) { r1 = READ_ONCE(*x); WRITE_ONCE(*x, 2); spin_unlock(s); } }\n"
                 "exists (0:r0=1 /\\ 1:r0=1 /\\ 1:r1=1 /\\ x=1)\n", ("Never", "Never", "Never")),
    "trylock-fails": ("{}\nP0(spinlock_t *s) { int r0; spin_lock(s); }\n"
                      "P1(spinlock_t *s) { int r0; r0 = spin_trylock(s); }\n"
                      "exists (1:r0=0)\n", ("Always", "Always", "Always")),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_known_shapes_under_each_model(name: str):
    from emu.litmus import parse

    text, want = SHAPES[name]
    t = parse(f"C {name}\n{text}")
    assert tuple(run(t, m).verdict.observation for m in ("sc", "tso", "lkmm")) == want


def test_tso_spin_unlock_is_a_buffered_store():
    """x86 releases a spinlock with an unlocked store: a load after spin_unlock()
    can pass the stores before it (SB through a critical section), as LKMM also
    allows; spin_lock() is a locked RMW and drains, so the loads inside stay put."""
    from emu.litmus import parse

    t = parse("C SB+unlock\n{}\n"
              "P0(int *x, int *y, spinlock_t *s) { int r0; spin_lock(s); WRITE_ONCE(*x, 1); spin_unlock(s);"
              " r0 = READ_ONCE(*y); }\n"
              "P1(int *x, int *y) { int r0; WRITE_ONCE(*y, 1); smp_mb(); r0 = READ_ONCE(*x); }\n"
              "exists (0:r0=0 /\\ 1:r0=0)\n")
    assert [run(t, m).verdict.observation for m in ("sc", "tso", "lkmm")] == ["Never", "Sometimes", "Sometimes"]


# ------------------------------------------------------------------ the engines checked against each other

ALL_SUPPORTED = SUPPORTED + sorted(MIXED.glob("*.litmus"))


def _state_counts(path: Path, model: str, endian: str) -> dict:
    return {tuple(sorted(s.items())): n for s, n in run(parse_file(path), model, endian).states}


@pytest.mark.parametrize("endian", ["little", "big"])
def test_sc_within_tso_within_lkmm(endian: str):
    """x86-TSO is stronger than LKMM and weaker than SC: on every test, the final
    states each model allows nest."""
    for path in ALL_SUPPORTED:
        sc, tso, lk = (set(_state_counts(path, m, endian)) for m in ("sc", "tso", "lkmm"))
        assert sc <= tso <= lk, path.stem


@pytest.mark.parametrize("endian", ["little", "big"])
def test_operational_sc_equals_axiomatic_sc(endian: str, monkeypatch):
    """The interleaving engine and the candidate-execution engine with SC's one
    axiom (acyclic po | rf | co | fr, RMWs atomic) find the same executions, down
    to the count per final state: two independent routes to the same graphs."""
    sc_states = {p: _state_counts(p, "sc", endian) for p in ALL_SUPPORTED}

    def sc_check(g: lkmm_engine.Graph) -> lkmm_engine.Checked:
        b = g.base()
        atomic = lkmm_engine.is_empty(lkmm_engine.inter(b["rmw"], lkmm_engine.seq(
            lkmm_engine.inter(b["fr"], b["ext"]), lkmm_engine.inter(b["co"], b["ext"]))))
        return lkmm_engine.Checked(atomic and g.acyclic(lkmm_engine.union(b["po"], b["rf"], b["co"], b["fr"])))

    monkeypatch.setattr(lkmm_engine, "check", sc_check)
    for path in ALL_SUPPORTED:
        assert _state_counts(path, "lkmm", endian) == sc_states[path], path.stem


def _tso_check(g: lkmm_engine.Graph) -> lkmm_engine.Checked:
    """x86-TSO axiomatically (Owens, Sarkar, Sewell, TPHOLs 2009; herd's x86tso.cat):
    sc-per-location, atomic RMWs, and acyclic ghb where ghb keeps every program
    order but store->load, adds mfence and locked instructions (RMWs, spin_lock,
    spin_trylock) ordering all around them, rfe, co and fr."""
    L = lkmm_engine
    b = g.base()
    if not L.coherence_ok(g, b):
        return L.Checked(False)
    n = g.n
    R = g.set_of(lambda e: e.kind == "R")
    W = g.set_of(lambda e: e.kind == "W")
    M = R | W
    locked = g.set_of(lambda e: e.rmw_insn or e.lock in ("LKR", "LKW", "LF"))
    mfence = g.set_of(lambda e: e.kind == "F" and e.annot == "smp_mb")
    po = b["po"]

    def I(s: int) -> lkmm_engine.Relation:  # noqa: E743
        return L.ident(n, s)

    po_ghb = L.union(L.seq(I(W), po, I(W)), L.seq(I(R), po, I(M)))
    implied = L.union(L.seq(I(M), po, I(mfence), po, I(M)), L.seq(I(M), po, I(locked)), L.seq(I(locked), po, I(M)))
    ghb = L.union(po_ghb, implied, L.inter(b["rf"], b["ext"]), b["co"], b["fr"])
    return L.Checked(g.acyclic(ghb))


@pytest.mark.parametrize("endian", ["little", "big"])
def test_operational_tso_equals_axiomatic_x86_tso(endian: str, monkeypatch):
    """The store-buffer machine and x86-TSO's axioms find the same executions
    (counts included) on every test: store forwarding is rfi, outside ghb."""
    tso_states = {p: _state_counts(p, "tso", endian) for p in ALL_SUPPORTED}
    monkeypatch.setattr(lkmm_engine, "check", _tso_check)
    for path in ALL_SUPPORTED:
        assert _state_counts(path, "lkmm", endian) == tso_states[path], path.stem


@pytest.mark.parametrize("model", ["sc", "tso", "explore-lkmm"])
def test_an_operational_search_past_its_bound_is_one_line_and_exit_2(model, monkeypatch, capsys):
    """A test beyond MAX_STATES (here lowered to 5) is refused in one line, not run out of memory."""
    from emu.litmus import operational
    monkeypatch.setattr(operational, "MAX_STATES", 5)
    path = LITMUS / "kernel" / "SB+poonceonces.litmus"
    assert main(["litmus", "--model", model, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"more than 5 machine states under {model}" in err
