"""Pure page state for the two run-list endpoints (dlt-paginator style).

A `PageCursor` answers "what do I request next?" (`next_request()`) and is
told what came back (`update(page)`).  It never sends anything: the client's
thin loop does.  Page numbers are 0-based for both endpoints; v1's 1-based
`page_index` is derived from them, so a checkpoint means the same thing on
either stream.

End rule (SPEC: `count` is not promised exact or stable, pages may be short
before the end):
  * an empty page ends the walk;
  * a short page ends it only when `count` is known and the items seen so far
    reach it;
  * otherwise keep going: the next page, empty, ends it;
  * `max_pages` pages without an end raises `PagingError` (a misbehaving
    server must not keep us paging forever).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from syncd.errors import PagingError
from syncd.models import OffsetMode, Page, Source

V1_ENDPOINT = "/api/v1/run/list"
V2_ENDPOINT = "/api/v2/worker-runs"
V2_MAX_LIMIT = 100  # documented: "limit is capped at 100 on list and result endpoints"

ENDPOINTS: dict[Source, str] = {Source.V1: V1_ENDPOINT, Source.V2: V2_ENDPOINT}


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page to fetch: its 0-based number and the paging parameters to send."""

    page_number: int
    params: dict[str, int]


@dataclass(slots=True)
class PageCursor:
    """Paging state of one walk through one endpoint's list."""

    source: Source
    page_size: int
    offset_mode: OffsetMode = OffsetMode.ITEMS
    start_page: int = 0
    max_pages: int | None = None
    pages_fetched: int = field(default=0, init=False)
    items_seen: int = field(default=0, init=False)
    done: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if self.start_page < 0:
            raise ValueError("start_page must be >= 0")
        if self.source is Source.V2:
            if self.offset_mode is OffsetMode.AUTO:
                raise ValueError("resolve OffsetMode.AUTO (detect_offset_mode) before paging v2")
            self.page_size = min(self.page_size, V2_MAX_LIMIT)
        # Pages skipped by a resume were full when they were fetched, so they
        # count towards `count` as full pages.
        self.items_seen = self.start_page * self.page_size

    @property
    def page_number(self) -> int:
        """The 0-based number of the next page to fetch."""
        return self.start_page + self.pages_fetched

    def next_request(self) -> PageRequest | None:
        """The next page to fetch, or None when the list has ended."""
        if self.done:
            return None
        if self.max_pages is not None and self.pages_fetched >= self.max_pages:
            raise PagingError(
                f"list did not end within {self.max_pages} pages",
                endpoint=ENDPOINTS[self.source],
            )
        return PageRequest(self.page_number, self._params(self.page_number))

    def update(self, page: Page) -> None:
        """Record a fetched page and decide whether the list has ended."""
        self.pages_fetched += 1
        self.items_seen += len(page.items)
        self.done = is_last_page(
            len(page.items), page_size=self.page_size, count=page.count, seen=self.items_seen
        )

    def _params(self, page_number: int) -> dict[str, int]:
        if self.source is Source.V1:
            return {"page_index": page_number + 1, "page_size": self.page_size}
        return {
            "offset": v2_offset(page_number, self.page_size, self.offset_mode),
            "limit": self.page_size,
        }


def is_last_page(n_items: int, *, page_size: int, count: int | None, seen: int) -> bool:
    """The end rule, on its own so it can be tested as a table."""
    if n_items == 0:
        return True
    if n_items >= page_size:
        # A full page says nothing: `count` may be stale while new runs arrive.
        return False
    return count is not None and seen >= count


def v2_offset(page_number: int, limit: int, mode: OffsetMode) -> int:
    """v2's `offset` for a 0-based page number, under either reading of `offset`."""
    if mode is OffsetMode.PAGES:
        return page_number
    if mode is OffsetMode.ITEMS:
        return page_number * limit
    raise ValueError("OffsetMode.AUTO has no offset; detect the mode first")


# The detection probe: a first page `offset=0&limit=4` and a probe page
# `offset=1&limit=2`.  Under ITEMS the probe starts at item 1, under PAGES it
# is the second page of two, starting at item 2.
# Both are (offset, limit).
PROBE_FIRST = (0, 4)
PROBE_SECOND = (1, 2)


def offset_mode_from_slugs(first: Sequence[object], probe: Sequence[object]) -> OffsetMode | None:
    """Decide the offset mode by where the probe's items sit in the first page.

    None when the data cannot tell: too few runs, or neither reading fits
    (new runs arrived between the two requests and shifted the list).
    """
    if len(first) < 3 or not probe:
        return None
    fits_items = list(probe) == list(first[1 : 1 + len(probe)])
    fits_pages = list(probe) == list(first[2 : 2 + len(probe)])
    if fits_items == fits_pages:
        return None
    return OffsetMode.ITEMS if fits_items else OffsetMode.PAGES


def offset_mode_from_page_index(
    first_index: int | None, probe_index: int | None
) -> OffsetMode | None:
    """Decide from the `page_index` the server echoes for the two probe requests.

    Comparing the two echoes cancels out whether the server counts from 0 or
    1: a PAGES server moves one page for `offset=1`, an ITEMS server
    (1 // 2 == 0) stays on the first page.
    """
    if first_index is None or probe_index is None:
        return None
    step = probe_index - first_index
    if step == 1:
        return OffsetMode.PAGES
    if step == 0:
        return OffsetMode.ITEMS
    return None
