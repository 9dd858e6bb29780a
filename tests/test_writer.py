"""The writer: pages normalised into one batch, stored in one transaction with its checkpoint,
counted in the cycle's report and in /metrics."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prometheus_client import REGISTRY

from syncd.cycle import CycleKind, CycleReport, ScanCheckpoint
from syncd.models import Page, Source
from syncd.storage import Store
from syncd.writer import BatchWriter

T0 = dt.datetime(2026, 11, 23, 3, 30, tzinfo=dt.UTC)


def item(slug: str, status: str = "running") -> dict[str, Any]:
    return {"slug": slug, "scraper_slug": "w", "status": status, "started_at": 1782091200}


def page(*items: Any, at: dt.datetime = T0) -> Page:
    return Page(items=list(items), count=None, fetched_at=at)


def rows(stream: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("syncd_rows_total", {"stream": stream, "outcome": outcome})
    return value or 0.0


def test_batch_normalises_pages_as_they_are_added(store: Store) -> None:
    """A batch holds the runs and rejects of its pages, counts items, and is observed at the
    last page's fetch time."""
    later = T0 + dt.timedelta(seconds=5)
    batch = BatchWriter(store, Source.V2).batch(
        [page(item("a"), item("b")), page(item("c"), {"no": "slug"}, at=later)]
    )
    assert [r.slug for r in batch.runs] == ["a", "b", "c"] and len(batch.rejects) == 1
    assert (batch.pages, batch.items, batch.observed_at) == (2, 4, later)
    assert all(r.source is Source.V2 for r in batch.runs)


async def test_store_pages_counts_in_the_report_and_the_metrics(store: Store) -> None:
    """What a batch did is added to the cycle's report and to syncd_rows_total."""
    writer, report = BatchWriter(store, Source.V1), CycleReport(Source.V1)
    before = {o: rows("v1", o) for o in ("seen", "inserted", "updated", "rejected")}
    first = await writer.store_pages(report, [page(item("a"), item("b")), page({"x": 1})])
    assert (first.seen, first.inserted, first.rejected) == (3, 2, 1)
    later = T0 + dt.timedelta(minutes=1)
    await writer.store_pages(report, [page(item("a", "succeeded"), at=later)])
    assert report.pages == 3
    assert (report.result.seen, report.result.inserted, report.result.updated) == (4, 2, 1)
    after = {o: rows("v1", o) - before[o] for o in before}
    assert after == {"seen": 4.0, "inserted": 2.0, "updated": 1.0, "rejected": 1.0}


async def test_save_stores_the_checkpoint_with_the_batch(store: Store) -> None:
    """A full scan's batch is stored with its checkpoint, in the stored JSON shape."""
    writer, report = BatchWriter(store, Source.V2), CycleReport(Source.V2, CycleKind.BACKFILL)
    checkpoint = ScanCheckpoint(CycleKind.BACKFILL, next_page=4, page_size=20, cycle_started_at=T0)
    await writer.save(report, writer.batch([page(item("a"))]), checkpoint)
    state = await store.load_state(Source.V2) or {}
    assert state["checkpoint"] == checkpoint.to_json()
    assert ScanCheckpoint.from_json(state["checkpoint"]) == checkpoint
