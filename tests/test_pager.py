"""The pager: refetching pages cut short, and the page size an endpoint can serve."""

from __future__ import annotations

import datetime as dt

import pytest

from syncd.cycle import CycleReport
from syncd.endpoints import ENDPOINTS, FilterValue
from syncd.models import Page, Source
from syncd.pager import Pager, looks_cut_short

NOW = dt.datetime(2026, 11, 23, 3, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("n_items", "count", "number", "cut_short"),
    [
        (100, 1000, 0, False),  # full page
        (40, 1000, 0, True),  # short, 900 more promised
        (0, 1000, 3, True),  # empty, yet count says more
        (40, 340, 3, False),  # the genuine last page
        (13, 400, 3, True),  # the last page of a list of 400, cut short: 87 would be lost
        (0, 300, 3, False),  # past the end
        (40, None, 0, False),  # no count: cannot tell, the end rule decides
    ],
)
def test_looks_cut_short(n_items: int, count: int | None, number: int, cut_short: bool) -> None:
    """A page is refetched only when `count` says it should have been fuller."""
    page = Page(items=[{}] * n_items, count=count, fetched_at=NOW)
    assert looks_cut_short(page, number, 100) is cut_short


class ScriptedClient:
    """A PageClient answering each request with the next page of a script."""

    def __init__(self, *pages: Page) -> None:
        self.pages = list(pages)
        self.asked: list[tuple[Source, int, int, dict[str, FilterValue]]] = []

    async def fetch_page(
        self, source: Source, page_number: int, page_size: int, **filters: FilterValue
    ) -> Page:
        self.asked.append((source, page_number, page_size, filters))
        return self.pages.pop(0)

    def window(self, source: Source) -> int:
        return 1


def items(n: int) -> list[dict[str, str]]:
    return [{"slug": f"r{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("answers", "requests", "kept"),
    [
        ([10], 1, 10),  # full: taken
        ([4, 10], 2, 10),  # cut short once, then full
        ([4, 4, 4], 3, 4),  # cut short every time: the third answer stands
        ([0, 0, 0], 3, 0),
    ],
)
async def test_pager_refetches_pages_cut_short(
    answers: list[int], requests: int, kept: int
) -> None:
    """A page shorter than `count` promises is asked for again (twice at most); every
    request counts in the cycle's report; filters and the page size reach the client."""
    client = ScriptedClient(*(Page(items=items(n), count=100, fetched_at=NOW) for n in answers))
    pager = Pager(client, ENDPOINTS[Source.V1], page_size=10)
    report = CycleReport(Source.V1)
    page = await pager.fetch(report, 3, status=2)
    assert len(page.items) == kept and report.requests == requests
    assert client.asked == [(Source.V1, 3, 10, {"status": 2})] * requests


@pytest.mark.parametrize(("source", "asked", "size"), [(Source.V2, 500, 100), (Source.V1, 40, 40)])
def test_pager_page_size_is_capped_by_the_endpoint(source: Source, asked: int, size: int) -> None:
    """The end rule and the requests use the size the endpoint can serve."""
    assert Pager(ScriptedClient(), ENDPOINTS[source], asked).page_size == size
