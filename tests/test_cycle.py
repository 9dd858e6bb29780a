"""What a cycle leaves behind: the scan checkpoint's stored form, resuming from it, the report."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from syncd.cycle import CycleKind, CycleReport, ScanCheckpoint
from syncd.models import Source, StoreResult


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
        ({"kind": "scan", "next_page": True, "page_size": 100}, 100, None),
        ({"kind": "scan"}, 100, None),
        ("scan", 100, None),
    ],
)
def test_resume_page_never_skips(checkpoint: Any, page_size: int, page: int | None) -> None:
    """A checkpoint written with another page size resumes at or before the first unread run."""
    saved = ScanCheckpoint.from_json(checkpoint)
    assert (saved.resume_page(page_size) if saved is not None else None) == page


STARTED = dt.datetime(2026, 11, 23, 3, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("stored", "checkpoint"),
    [
        # What syncd has always written: it must still read the same.
        (
            {"kind": "scan", "purpose": "backfill", "next_page": 12, "page_size": 100,
             "cycle_started_at": "2026-11-23T03:30:00+00:00"},
            ScanCheckpoint(CycleKind.BACKFILL, 12, 100, STARTED),
        ),
        (
            {"kind": "scan", "purpose": "reconcile", "next_page": 3, "page_size": 20,
             "cycle_started_at": "2026-11-23T03:30:00+00:00"},
            ScanCheckpoint(CycleKind.RECONCILE, 3, 20, STARTED),
        ),
        # Partly unreadable: still an interrupted scan, resumed from the top.
        ({"kind": "scan", "next_page": 7}, ScanCheckpoint(CycleKind.BACKFILL, 7, 0)),
        (
            {"kind": "scan", "purpose": "incremental", "next_page": "x", "cycle_started_at": 5},
            ScanCheckpoint(CycleKind.BACKFILL, 0, 0),
        ),
        ({"kind": "other", "next_page": 3, "page_size": 20}, None),
        (None, None),
        ([1, 2], None),
    ],
)  # fmt: skip
def test_checkpoint_from_stored_json(stored: Any, checkpoint: ScanCheckpoint | None) -> None:
    """The one reader of sync_state.checkpoint: the stored shape, leniently."""
    assert ScanCheckpoint.from_json(stored) == checkpoint


@pytest.mark.parametrize(
    "checkpoint",
    [
        ScanCheckpoint(CycleKind.BACKFILL, 12, 100, STARTED),
        ScanCheckpoint(CycleKind.RECONCILE, 1, 20, None),
    ],
)
def test_checkpoint_round_trips_in_the_stored_shape(checkpoint: ScanCheckpoint) -> None:
    """The one writer produces exactly the keys older versions wrote, and reads back equal."""
    stored = checkpoint.to_json()
    assert set(stored) == {"kind", "purpose", "next_page", "page_size", "cycle_started_at"}
    assert stored["kind"] == "scan" and stored["purpose"] == checkpoint.purpose.value
    assert ScanCheckpoint.from_json(stored) == checkpoint


@pytest.mark.parametrize("purpose", [["reconcile"], {"kind": "reconcile"}])
def test_checkpoint_with_an_unhashable_purpose_is_read_as_a_backfill(purpose: object) -> None:
    """A purpose that is not a string (here a JSON array or object) is read leniently too."""
    stored = {"kind": "scan", "purpose": purpose, "next_page": 2, "page_size": 10}
    assert ScanCheckpoint.from_json(stored) == ScanCheckpoint(CycleKind.BACKFILL, 2, 10)


def test_report_as_log_names_every_count_and_rounds_the_duration() -> None:
    """The cycle summary line: the stream and kind by value, the batch counts, ms duration."""
    report = CycleReport(Source.V2, CycleKind.RECONCILE, pages=3, requests=4, duration_s=1.23456)
    report.result.add(StoreResult(seen=30, inserted=2, updated=1, rejected=1))
    assert report.as_log() == {
        "stream": "v2", "kind": "reconcile", "pages": 3, "requests": 4, "seen": 30,
        "inserted": 2, "updated": 1, "rejected": 1, "refreshed": 0, "vanished": 0,
        "completed": False, "resumed_from_page": None, "duration_s": 1.235,
    }  # fmt: skip


def test_reports_do_not_share_a_result() -> None:
    """Each report counts into a StoreResult of its own."""
    first, second = CycleReport(Source.V1), CycleReport(Source.V1)
    first.result.add(StoreResult(seen=5))
    assert second.result.seen == 0
