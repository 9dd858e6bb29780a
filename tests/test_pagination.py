"""Pure paging rules: the end rule, v2's offset, detecting its reading (params: test_endpoints)."""

from __future__ import annotations

import pytest

from syncd.models import OffsetMode
from syncd.pagination import (
    Detection,
    OffsetReading,
    detect_reading,
    is_last_page,
    readings_fitting,
    v2_offset,
)

ITEMS, PAGES0, PAGES1 = OffsetMode.ITEMS, OffsetMode.PAGES0, OffsetMode.PAGES1


def walk(page_size: int, sizes: list[int], counts: list[int | None]) -> list[int]:
    """Feed pages of the given sizes through the end rule; return the pages read."""
    read, seen = [], 0
    for number, (size, count) in enumerate(zip(sizes, counts, strict=True)):
        read.append(number)
        seen += size
        if is_last_page(size, page_size=page_size, count=count, seen=seen):
            break
    return read


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
    assert walk(10, sizes, counts) == expected_pages


def test_v2_offset_refuses_auto() -> None:
    """AUTO has no offset."""
    with pytest.raises(ValueError):
        v2_offset(1, 10, OffsetMode.AUTO)


ABCD = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("first", "probe", "reread", "fitting"),
    [
        (ABCD, ["b", "c"], ABCD, {ITEMS}),
        (ABCD, ["c", "d"], ABCD, {PAGES0}),
        (ABCD, ["a", "b"], ABCD, {PAGES1}),
        (["a"], [], ["a"], set()),  # count says 9: a one-run page cannot be the whole list
        (ABCD, ["b", "d"], ABCD, set()),  # fits no reading
        # A run `x` arrived between the first read and the re-read: the probe may
        # have been answered before it (PAGES0 -> c,d) or after it (PAGES0 -> b,c,
        # which is also what ITEMS gives before it): both readings stay possible.
        (ABCD, ["b", "c"], ["x", "a", "b", "c"], {ITEMS, PAGES0}),
        (ABCD, ["c", "d"], ["x", "a", "b", "c"], {PAGES0}),
        (ABCD, ["a", "b"], ["x", "a", "b", "c"], {ITEMS, PAGES1}),
        (ABCD, ["x", "a"], ["x", "a", "b", "c"], {PAGES1}),
        (ABCD, ["b", "c"], ["x", "y", "z", "w"], None),  # moved past the first page
        (ABCD, ["b", "c"], ["a", "c", "d", "e"], None),  # a deletion, not a push-down
        ([], [], ["a"], None),  # runs arrived at an empty list: the shift is unknown
        (["a", "b", "b", "c", "d"], ["b", "c"], ABCD, {ITEMS}),  # a run repeated in a page
        # a first page cut short although `count` says more follow is not the whole list
        (["a", "b"], ["b", "c"], ABCD, set()),
    ],
)
def test_readings_fitting(
    first: list[str], probe: list[str], reread: list[str], fitting: set[OffsetMode] | None
) -> None:
    """Which readings explain the offset=1&limit=2 probe, for every shift the re-read allows."""
    got = readings_fitting(first, probe, reread, count=9)
    assert (None if got is None else set(got)) == fitting


@pytest.mark.parametrize(
    ("first", "probe", "fitting"),
    [
        (["a", "b", "c"], ["c"], {PAGES0}),
        (["a", "b"], ["b"], {ITEMS}),  # two runs tell all three apart
        (["a", "b"], [], {PAGES0}),
        (["a", "b"], ["a", "b"], {PAGES1}),
        (["a"], [], {ITEMS, PAGES0}),  # one run: only PAGES1 stands out
        (["a"], ["a"], {PAGES1}),
        ([], [], {ITEMS, PAGES0, PAGES1}),
    ],
)
@pytest.mark.parametrize("count", [None, "exact"])
def test_readings_fitting_on_a_short_list(
    first: list[str], probe: list[str], fitting: set[OffsetMode], count: str | None
) -> None:
    """A short first page is the whole list (with no count, or a count that agrees)."""
    n = None if count is None else len(first)
    got = readings_fitting(first, probe, first, n)
    assert got is not None and set(got) == fitting


@pytest.mark.parametrize(
    ("first", "probe", "reread", "echo", "count", "expected"),
    [
        (ABCD, ["b", "c"], ABCD, 0, 9, Detection(ITEMS, "probe_slugs", True, 9)),
        (ABCD, ["c", "d"], ABCD, 1, 9, Detection(PAGES0, "probe_slugs", True, 9)),
        (ABCD, ["a", "b"], ABCD, 0, 9, Detection(PAGES1, "probe_slugs", True, 9)),
        # the echo never overrules the data
        (ABCD, ["c", "d"], ABCD, 0, 9, Detection(PAGES0, "probe_slugs", True, 9)),
        # too few runs: the echo breaks the tie, provisionally
        (["a"], [], ["a"], 1, 1, Detection(PAGES0, "echoed_page_index", False, 1)),
        (["a"], [], ["a"], 0, 1, Detection(ITEMS, "echoed_page_index", False, 1)),
        ([], [], [], 1, 0, Detection(PAGES0, "echoed_page_index", False, 0)),
        ([], [], [], 0, 0, Detection(ITEMS, "too_few_runs", False, 0)),  # ITEMS or PAGES1
        ([], [], [], None, None, Detection(ITEMS, "too_few_runs", False, 0)),
        # churn between the requests
        (
            ABCD,
            ["b", "c"],
            ["x", "a", "b", "c"],
            0,
            9,
            Detection(ITEMS, "echoed_page_index", False, 9),
        ),
        (
            ABCD,
            ["b", "c"],
            ["x", "a", "b", "c"],
            None,
            9,
            Detection(ITEMS, "too_few_runs", False, 9),
        ),
        (
            ABCD,
            ["c", "d"],
            ["x", "a", "b", "c"],
            None,
            9,
            Detection(PAGES0, "probe_slugs", True, 9),
        ),
        (ABCD, ["b", "c"], ["w", "x", "y", "z"], 0, 9, Detection(None, "list_moved", False, 9)),
        (ABCD, ["b", "d"], ABCD, 0, 9, Detection(None, "no_reading_fits", False, 9)),
    ],
)
def test_detect_reading(
    first: list[str],
    probe: list[str],
    reread: list[str],
    echo: int | None,
    count: int | None,
    expected: Detection,
) -> None:
    """Data decides and settles; the echoed page_index only breaks ties, and never settles."""
    assert detect_reading(first, probe, reread, echo_step=echo, count=count) == expected


def test_forced_reading_is_settled_and_never_detected() -> None:
    """A reading set by SYNCD_V2_OFFSET_MODE is used as is, whatever the list grows to."""
    reading = OffsetReading.forced(PAGES1)
    assert (reading.mode, reading.settled, reading.stale) == (PAGES1, True, False)
    reading.observe(10_000)
    assert not reading.stale
    assert OffsetReading.forced(OffsetMode.AUTO).stale


def test_settled_reading_is_kept() -> None:
    """A reading the data decided is never detected again."""
    reading = OffsetReading()
    reading.adopt(Detection(PAGES0, "probe_slugs", settled=True, known_count=5))
    reading.observe(50_000)
    assert (reading.mode, reading.stale) == (PAGES0, False)


@pytest.mark.parametrize(
    ("known", "counts", "stale_after"),
    [
        (0, [0, 1, 1, 2], 3),  # an empty account: asked again at two runs
        (1, [1, 1, 2], 2),
        (0, [None, 300], 1),  # a filtered page (no count) says nothing
        (4, [5, 7, 8], 2),  # after a failed probe on 4 runs: again at 8
    ],
)
def test_provisional_reading_is_detected_again_once_the_list_grew(
    known: int, counts: list[int | None], stale_after: int
) -> None:
    """An undecided reading is used, not pinned: it goes stale when the list has grown enough."""
    reading = OffsetReading()
    reading.adopt(Detection(ITEMS, "too_few_runs", settled=False, known_count=known))
    assert not reading.stale
    for i, count in enumerate(counts):
        reading.observe(count)
        assert reading.stale is (i >= stale_after)


def test_a_detection_that_decides_nothing_keeps_the_reading_in_use() -> None:
    """A probe defeated by churn does not throw away a provisional reading."""
    reading = OffsetReading()
    reading.adopt(Detection(PAGES0, "echoed_page_index", settled=False, known_count=1))
    reading.adopt(Detection(None, "list_moved", settled=False, known_count=6))
    assert (reading.mode, reading.stale, reading.known_count) == (PAGES0, False, 6)
    fresh = OffsetReading()
    fresh.adopt(Detection(None, "list_moved", settled=False, known_count=6))
    assert fresh.mode is None and fresh.stale
