"""A scenario: a setup on the boot CPU and a finite script per role, and what
its scripts see (Env). Apart from the explorer (api.py) so that the built-in
scenarios can be written against it while the explorer's replay knows them."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

from ..machfile import RegionSpec
from ..mm.boot import World
from ..mm.context import MM


@dataclass
class Env:
    """What a scenario's scripts and checks see: the world and the setup's data
    (a fresh copy for every execution, so scripts may change it)."""

    world: World
    data: dict
    cpus: dict[str, int]


@dataclass(frozen=True)
class Scenario:
    name: str
    roles: tuple[tuple[str, Callable[[MM, Env], None]], ...]
    summary: str = ""
    setup: Callable[[World], dict] | None = None
    check: Callable[[Env], str | None] | None = None
    observe: Callable[[Env], Hashable] | None = None
    pages: int = 48
    extra: tuple[RegionSpec, ...] = ()

    def __init__(self, name: str, roles: Mapping[str, Callable] | Iterable[tuple[str, Callable]], *,
                 summary: str = "", setup: Callable | None = None, check: Callable | None = None,
                 observe: Callable | None = None, pages: int = 48, extra: Iterable[RegionSpec] = ()) -> None:
        items = tuple(roles.items() if isinstance(roles, Mapping) else roles)
        if not items:
            raise ValueError("a scenario needs at least one role")
        for attr, value in (("name", name), ("roles", items), ("summary", summary), ("setup", setup),
                            ("check", check), ("observe", observe), ("pages", pages), ("extra", tuple(extra))):
            object.__setattr__(self, attr, value)

    @property
    def role_names(self) -> list[str]:
        return [r for r, _ in self.roles]
