"""Paging one endpoint's list: the fetch half of the interface a cycle and a full scan share.

A `Pager` owns what paging one endpoint needs: the endpoint, the page size in
force, the client that sends the requests, and the two rules about pages that
do not depend on who asks (a page cut short is asked for again; the end rule of
pagination.py).  Each request is counted in the cycle's report.

    StreamSync / FullScan ──fetch(report, n)──> Pager ──fetch_page──> CoreClawClient
"""

from __future__ import annotations

from typing import Protocol

import structlog

from syncd.cycle import CycleReport
from syncd.endpoints import Endpoint, FilterValue
from syncd.models import Page, Source
from syncd.pagination import is_last_page

log = structlog.get_logger("syncd.pager")

SHORT_PAGE_REFETCHES = 2


class PageClient(Protocol):
    """What a pager needs of the HTTP client (CoreClawClient)."""

    async def fetch_page(
        self, source: Source, page_number: int, page_size: int, **filters: FilterValue
    ) -> Page: ...

    def window(self, source: Source) -> int: ...


def looks_cut_short(page: Page, number: int, page_size: int) -> bool:
    """Fewer items than asked for, yet `count` says this page should hold more (pure).

    That includes the last full page of a list whose length is a multiple of
    the page size: cut short there, the next page (empty) would end the list.
    """
    if len(page.items) >= page_size or page.count is None:
        return False
    return number * page_size + len(page.items) < page.count


class Pager:
    """Fetches 0-based pages of one endpoint's list (optionally filtered)."""

    def __init__(self, client: PageClient, endpoint: Endpoint, page_size: int) -> None:
        self.client = client
        self.endpoint = endpoint
        self.page_size = min(page_size, endpoint.max_page_size)

    @property
    def stream(self) -> Source:
        return self.endpoint.source

    async def fetch(self, report: CycleReport, number: int, **filters: FilterValue) -> Page:
        """One page; a page cut short although `count` says more follow is asked for again.

        Upstream does not promise full pages before the end.  A short page is
        usually a hiccup, and moving on would skip the runs it left out.
        """
        for _ in range(SHORT_PAGE_REFETCHES):
            page = await self._fetch_once(report, number, filters)
            if not looks_cut_short(page, number, self.page_size):
                return page
            log.info(
                "short_page_refetched",
                stream=self.stream.value,
                page=number,
                items=len(page.items),
                count=page.count,
            )
        return await self._fetch_once(report, number, filters)

    async def _fetch_once(
        self, report: CycleReport, number: int, filters: dict[str, FilterValue]
    ) -> Page:
        report.requests += 1
        return await self.client.fetch_page(self.stream, number, self.page_size, **filters)

    def is_last(self, page: Page, *, seen: int) -> bool:
        """The end rule for `page`, after `seen` items of the list in all."""
        return is_last_page(len(page.items), page_size=self.page_size, count=page.count, seen=seen)

    def window(self) -> int:
        """How many requests to this endpoint may fly at once, now."""
        return self.client.window(self.stream)
