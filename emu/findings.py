"""What the checkers find, one type for all of them, and its one rendering.

Every kind of finding is a member of `Kind`, the one place its words are
spelled: the ground truth's violations (emu/check/truth.py records them by
index), lockdep's findings, kcsan's data races, and what an explored
execution can end in (a deadlock, an exception in a role, a scenario's
invariant). `Kind` is a str enum, so a finding's JSON is what it was before
(the kind's words) and a kind compares equal to its words.

A `Finding` is a kind and the fields that go with it: what decoding a
violation or lockdep record gives (emu.decode, emu.check.lockdep), what kcsan
reports, what explore adds for an execution's end. It reads like the dict its
JSON is (`f["kind"]`, `f.get("pfn")`, `{**f}`), so the API's users and the
JSON see one shape; `as_dict` is that dict. The renderings below are the only
ones: explore's and replay's lines, run's summary lines, kmem's history line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum


class Kind(str, Enum):
    # the ground truth (emu/check/truth.py), in the order its records store them
    KEYHOLE_FALSE_OPEN = "keyhole false open"
    CHANGED_WHILE_REFERENCED = "KSM page changed while referenced"
    COUNT_NEGATIVE = "page count below zero"
    BAD_PAGE = "bad_page (free_pages_check)"
    NODE_FREED_WITH_KEY = "stable_node freed while its page carries its key"
    DOUBLE_ALLOC = "pfn allocated twice"
    SPIN_BUG = "spin_bug"
    KEY_FORGED = "stable_node's key in the mapping of a page it does not own"
    # lockdep (emu/check/lockdep.py), in the order its records store them
    LOCK_NOT_HELD = "lock not held"
    LOCK_ORDER = "lock order"
    LOCK_RECURSION = "lock recursion"
    # kcsan (emu/check/kcsan.py)
    DATA_RACE = "data race"
    # how an explored execution ended (emu/explore/sched.py), and a scenario's own check
    DEADLOCK = "deadlock"
    EXCEPTION = "exception"
    STEP_LIMIT = "step limit"
    BLOCKED = "blocked"
    INVARIANT = "invariant"

    # the words, wherever a kind is printed (a str mix-in enum would print Kind.X)
    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def of(cls, words: str) -> Kind | str:
        """The kind these words name; words no kind has stay words."""
        try:
            return cls(words)
        except ValueError:
            return words


VIOLATION_KINDS = (Kind.KEYHOLE_FALSE_OPEN, Kind.CHANGED_WHILE_REFERENCED, Kind.COUNT_NEGATIVE, Kind.BAD_PAGE,
                   Kind.NODE_FREED_WITH_KEY, Kind.DOUBLE_ALLOC, Kind.SPIN_BUG, Kind.KEY_FORGED)
LOCKDEP_KINDS = (Kind.LOCK_NOT_HELD, Kind.LOCK_ORDER, Kind.LOCK_RECURSION)
# the keyhole opened on a page that is not the node's: the false opens the explorer looks for
KEYHOLE_KINDS = frozenset({Kind.KEYHOLE_FALSE_OPEN, Kind.CHANGED_WHILE_REFERENCED, Kind.KEY_FORGED})
OPENED_KINDS = (Kind.KEYHOLE_FALSE_OPEN, Kind.CHANGED_WHILE_REFERENCED)  # found where the keyhole opened
SHORT = {Kind.KEY_FORGED: "key forged", Kind.NODE_FREED_WITH_KEY: "node freed with its key",
         Kind.CHANGED_WHILE_REFERENCED: "changed while referenced"}  # for a table column


@dataclass(frozen=True, eq=False)  # Mapping's equality: a finding equals the dict of its JSON
class Finding(Mapping[str, object]):
    kind: Kind | str
    fields: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, d: Mapping[str, object]) -> Finding:
        """A finding from its dict (a run summary's, a results file's); a Finding stays itself."""
        if isinstance(d, Finding):
            return d
        return cls(Kind.of(str(d["kind"])), {k: v for k, v in d.items() if k != "kind"})

    def adding(self, **more: object) -> Finding:
        """This finding with more fields (explore's step, the members on mapping)."""
        return Finding(self.kind, {**self.fields, **more})

    def as_dict(self) -> dict:
        return {"kind": self.kind, **self.fields}

    def __getitem__(self, key: str) -> object:
        return self.kind if key == "kind" else self.fields[key]

    def __iter__(self) -> Iterator[str]:
        yield "kind"
        yield from self.fields

    def __len__(self) -> int:
        return 1 + len(self.fields)


def line(f: Mapping[str, object]) -> str:
    """One finding as one line of text: explore's and replay's answer, run's lockdep lines."""
    f = Finding.of(f)
    k, v = f.kind, f.fields
    if k == Kind.LOCK_NOT_HELD:
        return (f"{k}: {v['function']} on CPU {v['cpu']} ({v['role']}): {v['access']} bytes at "
                f"{v['address']} ({v['bytes']}) without {v['expected']}; held: {', '.join(v['held']) or 'none'}")
    if k in LOCKDEP_KINDS:
        return f"{k}: {v['function']} on CPU {v['cpu']} ({v['role']}) taking {v['taking']}: {v['detail']}"
    if k == Kind.DATA_RACE:
        a, b = v["accesses"]
        return f"{k} on {v['overlap']}: {_access(a)} and {_access(b)}, neither ordered before the other"
    if "pfn" not in v:
        return f"{k}: {v.get('detail', '')}"
    extra = f", page really is {v['page_really_is']}" if v.get("page_really_is") else ""
    members = f" ({', '.join(v['members_on_mapping'])})" if v.get("members_on_mapping") else ""
    return (f"{k}: pfn {v['pfn']}, stable_node {v['stable_node'] or '-'}, expected key "
            f"{v['expected'] or '-'}, mapping {v['mapping']} [{v['mapping_bytes']}]{members}{extra}; "
            f"seen by {v['role']} on CPU {v['cpu']}")


def _access(a: Mapping) -> str:
    return (f"{a['marking']} {a['access']} {a['size']} by {a['role']} on CPU {a['cpu']} in "
            f"{a['function'] or '?'} (step {a['step']}, {a['bytes']})")


def run_violation_line(f: Mapping[str, object]) -> str:
    """A run's violation record as run's summary shows it: who wrote mapping, and
    the record's detail (what the page really was, free_pages_check's findings)."""
    f = Finding.of(f)
    return f"{f.kind}: {_violation(f.fields)}; seen by {f.fields['role']} on CPU {f.fields['cpu']}"


def _violation(v: Mapping) -> str:
    parts = [f"pfn {v['pfn']}"]
    if v["stable_node"]:
        parts.append(f"stable_node {v['stable_node']}")
    if v["expected_key"]:
        parts.append(f"expected key {v['expected_key']}")
    members = f" ({', '.join(v['union_members'])})" if v["union_members"] else ""
    parts.append(f"mapping {v['mapping']} [{v['mapping_bytes']}] written by {v['written_by']}{members}")
    if "page_really_is" in v:
        parts.append(f"page really is {v['page_really_is']}")
    if v.get("free_pages_check"):
        parts.append("free_pages_check: " + ", ".join(v["free_pages_check"]))
    if "page_count" in v:
        parts.append(f"page _count {v['page_count']}")
    return ", ".join(parts)


def history_line(f: Mapping[str, object]) -> str:
    """A violation as kmem --history shows it among a pfn's events."""
    f = Finding.of(f)
    v = f.fields
    if "mapping" not in v:
        return str(f.kind)
    members = f" ({', '.join(v['members_on_mapping'])})" if v.get("members_on_mapping") else ""
    really = f", page really is {v['page_really_is']}" if v.get("page_really_is") else ""
    node = f" of stable_node {v['stable_node']}" if v.get("stable_node") else ""
    return f"VIOLATION {f.kind}{node}: mapping {v['mapping']} [{v['mapping_bytes']}]{members}{really}"


def brief(f: Mapping[str, object]) -> str:
    """A finding's kind and where, in one short line (an error message's)."""
    return ", ".join(f"{k}={v}" for k, v in Finding.of(f).items() if k in ("kind", "pfn", "stable_node", "mapping"))
