"""The pure parts of the incremental cycle: which cycle to run, when a head scan may stop."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from syncd.cycle import ScanCheckpoint
from syncd.models import Run, Source, Status
from syncd.sync import CycleKind, HeadScanState, _past, choose_kind

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
    state = state or {}
    checkpoint = ScanCheckpoint.from_json(state.get("checkpoint"))
    got = choose_kind(
        state.get("last_full_scan_at"),
        checkpoint,
        full=full,
        now=NOW,
        reconcile_interval_s=DAY,
        reconcile_hour_utc=hour,
    )
    assert got is kind


def test_reconcile_interval_zero_never_reconciles() -> None:
    """SYNCD_RECONCILE_INTERVAL_S=0 turns periodic reconciliation off."""
    got = choose_kind(
        ago(24 * 365), None, full=False, now=NOW, reconcile_interval_s=0, reconcile_hour_utc=None
    )
    assert got is CycleKind.INCREMENTAL


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
