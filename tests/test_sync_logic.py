"""The pure parts of the sync cycle: which cycle to run, when a head scan may stop, resuming,
the checkpoint's stored form, refetching pages cut short."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from syncd.cycle import CycleReport, ScanCheckpoint
from syncd.endpoints import ENDPOINTS, FilterValue
from syncd.models import Page, Run, Source, Status
from syncd.pager import Pager, looks_cut_short
from syncd.sync import CycleKind, HeadScanState, choose_kind

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
