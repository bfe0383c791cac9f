"""One home for a run's limits (emu.runspec) and explore's strategies
(emu.explore.strategies): the campaign SPEC and the API check against them."""

from __future__ import annotations

import json

import pytest

from emu.campaign.spec import SpecError, parse
from emu.explore import strategies, validate
from emu.kconfig import resolve
from emu.runspec import (
    LOWMEM_PAGES,
    MAX_ALLOCATORS,
    MAX_PAGES,
    MIN_PAGES,
    LimitError,
    check_allocators,
    check_pages,
)


def test_page_and_allocator_limits():
    check_pages(MIN_PAGES)
    check_pages(MAX_PAGES, resolve())
    check_pages(LOWMEM_PAGES, resolve("i386"))
    for pages, cfg, want in ((MIN_PAGES - 1, None, f"want {MIN_PAGES}..{MAX_PAGES}"),
                             (MAX_PAGES + 1, None, f"want {MIN_PAGES}..{MAX_PAGES}"),
                             (LOWMEM_PAGES + 1, resolve("i386"), "a 32-bit lowmem direct map holds at most")):
        with pytest.raises(LimitError) as e:
            check_pages(pages, cfg)
        assert e.value.name == "pages" and e.value.want.startswith(want) and isinstance(e.value, ValueError)
    check_allocators(MAX_ALLOCATORS)
    with pytest.raises(LimitError, match=f"allocators 0: want 1..{MAX_ALLOCATORS}"):
        check_allocators(0)


@pytest.mark.parametrize("run,msg", [
    ({"pages": 1}, f"run.pages: want {MIN_PAGES}..{MAX_PAGES}"),
    ({"allocators": MAX_ALLOCATORS + 1}, f"run.allocators: want 1..{MAX_ALLOCATORS}"),
    ({"configs": [{"arch": "i386"}], "pages": LOWMEM_PAGES + 1},
     "run.pages: a 32-bit lowmem direct map holds at most .* in {'arch': 'i386'"),
])
def test_campaign_checks_runs_against_the_runspec(run, msg):
    with pytest.raises(SpecError, match=msg):
        parse(json.dumps({"run": run}))


def test_strategies_and_their_bounds_live_in_strategies():
    assert validate.STRATEGIES is strategies.STRATEGIES and validate.MAX_DEPTH is strategies.MAX_DEPTH
    with pytest.raises(SpecError, match=f"explore.depth: want 1..{strategies.MAX_DEPTH}"):
        parse(json.dumps({"explore": {"strategy": "pct", "schedules": 1, "depth": strategies.MAX_DEPTH + 1}}))
    for s in strategies.SAMPLING:
        with pytest.raises(SpecError, match="never runs out of schedules"):
            parse(json.dumps({"explore": {"strategy": s}}))
    for s in set(strategies.STRATEGIES) - set(strategies.SAMPLING):
        with pytest.raises(SpecError, match="is deterministic"):
            parse(json.dumps({"explore": {"strategy": s, "seeds": [1, 2]}}))
