"""How a stable_node refers to its KSM page: the protocols, as data.

Each is the kernel's code with switches set: the keyhole of 2.6.33, the page
reference it replaced, and deliberately broken variants that drop one kernel
line each, which the checks must catch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    holds_ref: bool  # the stable_node holds a reference on its page until its last rmap_item goes
    recheck: bool  # get_ksm_page checks page->mapping again after get_page_unless_zero
    clear_on_free: bool  # free_hot_cold_page resets an anon (and so KSM) page's mapping to NULL
    summary: str
    drops: str = ""  # a broken variant: the kernel line it leaves out

    @property
    def broken(self) -> bool:
        return bool(self.drops)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("keyhole", holds_ref=False, recheck=True, clear_on_free=True,
             summary="2.6.33: no page reference; get_ksm_page peeps through the keyhole"),
    Protocol("refcount", holds_ref=True, recheck=True, clear_on_free=True,
             summary="before 2.6.33: the stable_node holds a page reference until ksmd drops it"),
    Protocol("keyhole-no-recheck", holds_ref=False, recheck=False, clear_on_free=True,
             summary="broken: get_ksm_page trusts its first look at page->mapping",
             drops="get_ksm_page: the second `if (page->mapping != expected_mapping)` after "
                   "get_page_unless_zero"),
    Protocol("keyhole-no-clear", holds_ref=False, recheck=True, clear_on_free=False,
             summary="broken: freeing a page leaves its mapping",
             drops="free_hot_cold_page: `if (PageAnon(page)) page->mapping = NULL`"),
)}
