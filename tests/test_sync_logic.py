"""The pure parts of the sync cycle: which cycle to run, when a head scan may stop, resuming."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from syncd.models import Run, Source, Status
from syncd.sync import CycleKind, HeadScanState, _past, choose_kind, resume_page

NOW = dt.datetime(2026, 11, 23, 3, 30, tzinfo=dt.UTC)
DAY = 86_400.0


def ago(hours: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=hours)


@pytest.mark.parametrize(
    ("state", "full", "hour", "kind"),
    [
        (None, False, None, CycleKind.BACKFILL),
        ({"last_full_scan_at": None}, True, None, CycleKind.BACKFILL),
        ({"last_full_scan_at": ago(1)}, False, None, CycleKind.INCREMENTAL),
        ({"last_full_scan_at": ago(1)}, True, None, CycleKind.RECONCILE),
        ({"last_full_scan_at": ago(24)}, False, None, CycleKind.RECONCILE),  # due on the dot
        ({"last_full_scan_at": ago(23.9)}, False, None, CycleKind.INCREMENTAL),
        ({"last_full_scan_at": ago(25)}, False, None, CycleKind.RECONCILE),
        ({"last_full_scan_at": ago(25)}, False, 3, CycleKind.RECONCILE),
        ({"last_full_scan_at": ago(25)}, False, 4, CycleKind.INCREMENTAL),
        (
            {"last_full_scan_at": ago(1), "checkpoint": {"kind": "scan", "purpose": "reconcile"}},
            False, None, CycleKind.RECONCILE,
        ),
        (
            {"last_full_scan_at": None, "checkpoint": {"kind": "scan", "next_page": 7}},
            False, None, CycleKind.BACKFILL,
        ),
        (
            {"last_full_scan_at": ago(1), "checkpoint": {"kind": "scan", "purpose": "backfill"}},
            True, None, CycleKind.RECONCILE,
        ),
    ],
)  # fmt: skip
def test_choose_kind(state: Any, full: bool, hour: int | None, kind: CycleKind) -> None:
    """Backfill first, resume interrupted scans, reconcile when due (in its hour), else go on."""
    got = choose_kind(state, full=full, now=NOW, reconcile_interval_s=DAY, reconcile_hour_utc=hour)
    assert got is kind


def test_reconcile_interval_zero_never_reconciles() -> None:
    """SYNCD_RECONCILE_INTERVAL_S=0 turns periodic reconciliation off."""
    state = {"last_full_scan_at": ago(24 * 365)}
    got = choose_kind(state, full=False, now=NOW, reconcile_interval_s=0, reconcile_hour_utc=None)
    assert got is CycleKind.INCREMENTAL


@pytest.mark.parametrize(
    ("checkpoint", "page_size", "page"),
    [
        (None, 100, None),
        ({"kind": "other"}, 100, None),
        ({"kind": "scan", "next_page": 12, "page_size": 100}, 100, 12),
        ({"kind": "scan", "next_page": 12, "page_size": 100}, 50, 24),
        ({"kind": "scan", "next_page": 3, "page_size": 100}, 40, 7),
        ({"kind": "scan", "next_page": 0, "page_size": 100}, 100, None),
        ({"kind": "scan", "next_page": "x", "page_size": 100}, 100, None),
        ({"kind": "scan", "next_page": 5, "page_size": 0}, 100, None),
    ],
)
def test_resume_page_never_skips(checkpoint: Any, page_size: int, page: int | None) -> None:
    """A checkpoint written with another page size resumes at or before the first unread run."""
    assert resume_page(checkpoint, page_size) == page


def run(slug: str, status: Status, minute: int) -> Run:
    return Run(
        slug=slug, worker_slug="w", worker_title=None, status=status, status_raw=status.value,
        err_msg=None, results=None, usage_usd=Decimal(0), traffic_bytes=None,
        started_at=NOW - dt.timedelta(minutes=minute), finished_at=None, duration_s=None,
        origin=None, version=None, source=Source.V2,
    )  # fmt: skip


def test_head_scan_stops_after_overlap_of_unchanged_terminal_runs() -> None:
    """Changed runs reset the streak; unchanged in-flight runs neither count nor reset it."""
    head = HeadScanState(overlap=3)
    page = [
        run("new", Status.RUNNING, 0),
        run("a", Status.SUCCEEDED, 1),
        run("b", Status.RUNNING, 2),
        run("c", Status.FAILED, 3),
    ]
    head.observe(page, changed=frozenset({"new"}))
    assert (head.streak, head.can_stop) == (2, False)
    head.observe([run("d", Status.ABORTED, 4)], changed=frozenset())
    assert head.can_stop and head.seen == {"new", "a", "b", "c", "d"}
    head.observe([run("e", Status.SUCCEEDED, 5)], changed=frozenset({"e"}))
    assert (head.streak, head.can_stop) == (0, False)


def test_head_scan_never_stops_early_on_a_list_that_is_not_newest_first() -> None:
    """If started_at goes up along the list, early stop is off for the cycle."""
    head = HeadScanState(overlap=1)
    head.observe([run("a", Status.SUCCEEDED, 10), run("b", Status.SUCCEEDED, 5)], frozenset())
    assert head.newest_first is False and head.can_stop is False


def test_runs_started_in_the_same_second_are_still_newest_first() -> None:
    """Equal started_at along the list (runs started together) keeps early stop on."""
    head = HeadScanState(overlap=3)
    head.observe([run(s, Status.SUCCEEDED, 4) for s in "abc"], changed=frozenset())
    assert head.newest_first and head.can_stop


@pytest.mark.parametrize(
    ("minutes", "oldest", "past"),
    [
        ([1, 2, 6], 5, True),  # the page ends older than the oldest wanted run
        ([1, 2, 5], 5, False),  # ends at its start time: more runs of that second may follow
        ([1, 2, 3], 5, False),
        ([1, 2, 6], None, False),  # no bound known
        ([], 5, False),
    ],
)
def test_past_the_oldest_wanted_run(minutes: list[int], oldest: int | None, past: bool) -> None:
    """A worker's newest-first list is left only once a page ends strictly older than `oldest`."""
    page = [run(f"r{m}", Status.SUCCEEDED, m) for m in minutes]
    bound = None if oldest is None else NOW - dt.timedelta(minutes=oldest)
    assert _past(page, bound) is past


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
    from syncd.models import Page
    from syncd.sync import looks_cut_short

    page = Page(items=[{}] * n_items, count=count)
    assert looks_cut_short(page, number, 100) is cut_short
