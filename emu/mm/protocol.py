"""How a stable_node refers to its KSM page: the protocols, as data.

Each is the kernel's code with switches set: the keyhole of 2.6.33, the page
reference it replaced, and deliberately broken variants that drop one kernel
line each, which the checks must catch. A protocol is resolved from its name
once, where a command or an API call names it (`protocol_named`), and passed
in as this value: to `boot`, the World and every CPU context made from it.
"""

from __future__ import annotations

from dataclasses import dataclass

# get_ksm_page's variants: emu.mm.ksm implements each, and so does the nogil
# sweep (emu._ksm_sweep), which refuses a name it does not know
GET_KSM_PAGE = (
    "keyhole",  # 2.6.33: look at mapping, get_page_unless_zero, look again
    "keyhole-no-recheck",  # the same without the second look
    "refcount",  # before 2.6.33: get_page, the node's own reference keeps the page
)


@dataclass(frozen=True)
class Protocol:
    name: str
    holds_ref: bool  # the stable_node holds a reference on its page until its last rmap_item goes
    get_ksm_page: str  # its variant of get_ksm_page, one of GET_KSM_PAGE
    clear_on_free: bool  # free_hot_cold_page resets an anon (and so KSM) page's mapping to NULL
    summary: str
    drops: str = ""  # a broken variant: the kernel line it leaves out

    def __post_init__(self) -> None:
        # the refcount variant takes no keyhole: it relies on the node's own reference, and only on it
        if self.get_ksm_page not in GET_KSM_PAGE or self.holds_ref != (self.get_ksm_page == "refcount"):
            raise ValueError(f"protocol {self.name}: get_ksm_page {self.get_ksm_page!r} does not go with "
                             f"holds_ref={self.holds_ref}")

    @property
    def broken(self) -> bool:
        return bool(self.drops)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("keyhole", holds_ref=False, get_ksm_page="keyhole", clear_on_free=True,
             summary="2.6.33: no page reference; get_ksm_page peeps through the keyhole"),
    Protocol("refcount", holds_ref=True, get_ksm_page="refcount", clear_on_free=True,
             summary="before 2.6.33: the stable_node holds a page reference until ksmd drops it"),
    Protocol("keyhole-no-recheck", holds_ref=False, get_ksm_page="keyhole-no-recheck", clear_on_free=True,
             summary="broken: get_ksm_page trusts its first look at page->mapping",
             drops="get_ksm_page: the second `if (page->mapping != expected_mapping)` after "
                   "get_page_unless_zero"),
    Protocol("keyhole-no-clear", holds_ref=False, get_ksm_page="keyhole", clear_on_free=False,
             summary="broken: freeing a page leaves its mapping",
             drops="free_hot_cold_page: `if (PageAnon(page)) page->mapping = NULL`"),
)}
KEYHOLE = PROTOCOLS["keyhole"]


def protocol_named(name: str) -> Protocol:
    """The protocol called `name`; ValueError naming the choices for any other."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):  # TypeError: a name that is not even hashable
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}") from None
