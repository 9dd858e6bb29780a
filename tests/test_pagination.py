"""Pure page state: request parameters, the end rule, the page cap, offset-mode detection."""

from __future__ import annotations

import pytest

from syncd.errors import PagingError
from syncd.models import OffsetMode, Page, Source
from syncd.pagination import (
    PageCursor,
    is_last_page,
    offset_mode_from_page_index,
    offset_mode_from_slugs,
    v2_offset,
)


def page(n: int, count: int | None = None) -> Page:
    return Page(items=[{"slug": f"r{i}"} for i in range(n)], count=count)


def walk(cursor: PageCursor, sizes: list[int], counts: list[int | None]) -> list[int]:
    """Feed pages of the given sizes; return the page numbers requested before the end."""
    requested = []
    for size, count in zip(sizes, counts, strict=True):
        request = cursor.next_request()
        if request is None:
            break
        requested.append(request.page_number)
        cursor.update(page(size, count))
    return requested


@pytest.mark.parametrize(
    ("n_items", "count", "seen", "last"),
    [
        (0, None, 0, True),  # empty page ends
        (0, 500, 40, True),  # empty ends even when count promises more
        (20, None, 20, False),  # full page: keep going
        (20, 20, 20, False),  # full page with count reached: count may be stale, keep going
        (7, None, 47, False),  # short, count unknown: the next (empty) page decides
        (7, 47, 47, True),  # short and count agrees: done
        (7, 40, 47, True),  # count shrank below what we saw: done
        (7, 60, 47, False),  # count says more exist (short page mid-list): keep going
    ],
)
def test_end_rule(n_items: int, count: int | None, seen: int, last: bool) -> None:
    """Empty ends; short ends only when a known count is reached; full never ends."""
    assert is_last_page(n_items, page_size=20, count=count, seen=seen) is last


@pytest.mark.parametrize(
    ("sizes", "counts", "expected_pages"),
    [
        ([10, 10, 3, 0], [23, 23, 23, 23], [0, 1, 2]),  # short page, count agrees
        ([10, 10, 3, 0], [None, None, None, None], [0, 1, 2, 3]),  # no count: empty page ends
        ([10, 10, 0], [20, 20, 20], [0, 1, 2]),  # exact multiple: one empty page
        ([10, 4, 10, 2, 0], [50, 50, 50, 50, 50], [0, 1, 2, 3, 4]),  # mid-list short page
        ([10, 10, 5, 0], [25, 30, 30, 30], [0, 1, 2, 3]),  # count grew while paging
        ([10, 10, 5, 0], [40, 25, 25, 25], [0, 1, 2]),  # count shrank while paging
        ([0], [0], [0]),  # empty list
    ],
)
def test_walk_ends(sizes: list[int], counts: list[int | None], expected_pages: list[int]) -> None:
    """A whole walk requests exactly the pages the end rule allows."""
    cursor = PageCursor(Source.V1, 10)
    assert walk(cursor, sizes, counts) == expected_pages
    assert cursor.next_request() is None


def test_v1_params_are_one_based() -> None:
    """v1 sends page_index from 1 and the page size."""
    cursor = PageCursor(Source.V1, 50)
    first = cursor.next_request()
    assert first is not None and first.params == {"page_index": 1, "page_size": 50}
    cursor.update(page(50))
    second = cursor.next_request()
    assert second is not None
    assert (second.page_number, second.params) == (1, {"page_index": 2, "page_size": 50})


@pytest.mark.parametrize(
    ("mode", "start", "expected"),
    [
        (OffsetMode.ITEMS, 0, [0, 20, 40]),
        (OffsetMode.PAGES, 0, [0, 1, 2]),
        (OffsetMode.ITEMS, 5, [100, 120, 140]),
        (OffsetMode.PAGES, 5, [5, 6, 7]),
    ],
)
def test_v2_offsets(mode: OffsetMode, start: int, expected: list[int]) -> None:
    """offset = page*limit for ITEMS, = page for PAGES, from any start page."""
    cursor = PageCursor(Source.V2, 20, offset_mode=mode, start_page=start)
    offsets = []
    for _ in expected:
        request = cursor.next_request()
        assert request is not None
        offsets.append(request.params["offset"])
        assert request.params["limit"] == 20
        cursor.update(page(20))
    assert offsets == expected


def test_v2_limit_capped_at_100() -> None:
    """v2 never asks for more than 100 per page."""
    cursor = PageCursor(Source.V2, 500, offset_mode=OffsetMode.ITEMS)
    request = cursor.next_request()
    assert request is not None and request.params == {"offset": 0, "limit": 100}


def test_resume_counts_skipped_pages_towards_count() -> None:
    """Resuming at page 3 of size 10 with count 35: a 5-item page is the last."""
    cursor = PageCursor(Source.V1, 10, start_page=3)
    request = cursor.next_request()
    assert request is not None and request.params["page_index"] == 4
    cursor.update(page(5, count=35))
    assert cursor.next_request() is None


def test_page_cap_raises_after_the_last_allowed_page() -> None:
    """max_pages full pages without an end raise PagingError naming the endpoint."""
    cursor = PageCursor(Source.V2, 10, offset_mode=OffsetMode.ITEMS, max_pages=3)
    for _ in range(3):
        assert cursor.next_request() is not None
        cursor.update(page(10))
    with pytest.raises(PagingError, match="3 pages") as caught:
        cursor.next_request()
    assert caught.value.endpoint == "/api/v2/worker-runs"


def test_page_cap_not_hit_when_list_ends_on_the_last_page() -> None:
    """Ending exactly at the cap is not an error."""
    cursor = PageCursor(Source.V1, 10, max_pages=2)
    assert walk(cursor, [10, 0], [None, None]) == [0, 1]
    assert cursor.next_request() is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": Source.V2, "page_size": 10, "offset_mode": OffsetMode.AUTO},
        {"source": Source.V1, "page_size": 0},
        {"source": Source.V1, "page_size": 10, "start_page": -1},
    ],
)
def test_invalid_cursor(kwargs: dict[str, object]) -> None:
    """AUTO must be resolved first; sizes and start pages must make sense."""
    with pytest.raises(ValueError):
        PageCursor(**kwargs)  # type: ignore[arg-type]


def test_v2_offset_refuses_auto() -> None:
    """AUTO has no offset."""
    with pytest.raises(ValueError):
        v2_offset(1, 10, OffsetMode.AUTO)


@pytest.mark.parametrize(
    ("first", "probe", "mode"),
    [
        (["a", "b", "c", "d"], ["b", "c"], OffsetMode.ITEMS),
        (["a", "b", "c", "d"], ["c", "d"], OffsetMode.PAGES),
        (["a", "b", "c"], ["b", "c"], OffsetMode.ITEMS),
        (["a", "b", "c"], ["c"], OffsetMode.PAGES),
        (["a", "b"], ["b"], None),  # too few runs to tell
        ([], [], None),
        (["a", "b", "c", "d"], [], None),  # probe empty but runs exist: inconsistent
        (["a", "b", "c", "d"], ["x", "a"], None),  # new runs arrived in between
        (["a", "b", "c", "d"], ["b", "d"], None),  # fits neither
    ],
)
def test_offset_mode_from_slugs(
    first: list[str], probe: list[str], mode: OffsetMode | None
) -> None:
    """Where the offset=1&limit=2 probe lands in the offset=0&limit=4 page."""
    assert offset_mode_from_slugs(first, probe) is mode


@pytest.mark.parametrize(
    ("first", "probe", "mode"),
    [
        (1, 2, OffsetMode.PAGES),
        (0, 1, OffsetMode.PAGES),
        (1, 1, OffsetMode.ITEMS),
        (0, 0, OffsetMode.ITEMS),
        (1, 5, None),
        (None, 2, None),
        (1, None, None),
    ],
)
def test_offset_mode_from_page_index(
    first: int | None, probe: int | None, mode: OffsetMode | None
) -> None:
    """The echoed page_index moves by one only when offset counts pages."""
    assert offset_mode_from_page_index(first, probe) is mode
