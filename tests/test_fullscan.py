"""Full scans against a scripted upstream and a real PostgreSQL: what the end rule must not miss,
resuming a stored checkpoint, the pager/writer interface a scan drives."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from syncd.cycle import CycleReport, ScanCheckpoint
from syncd.endpoints import ENDPOINTS, FilterValue
from syncd.fullscan import FullScan
from syncd.models import Page, Source
from syncd.pager import Pager
from syncd.storage import Store
from syncd.sync import CycleKind, StreamSync
from syncd.writer import BatchWriter
from tests import test_client
from tests.test_client import V1, MakeClient, Upstream, ok, runs

# The scripted upstream and its client, shared with the client's tests.
clock, upstream, make_client = test_client.clock, test_client.upstream, test_client.make_client

SLUGS = [f"run-{i:02d}" for i in range(40)]


async def test_a_cut_short_last_full_page_is_fetched_again(
    make_client: MakeClient, upstream: Upstream, store: Store, engine: AsyncEngine
) -> None:
    """40 runs in pages of 20: the second (last full) page answered with 13 items while
    `count` says 40 is asked for again, not taken for the end of the list."""
    answered: dict[int, int] = {}

    def served(url: URL, kwargs: dict[str, Any]) -> Any:
        index = kwargs["json"]["page_index"]
        answered[index] = answered.get(index, 0) + 1
        start = (index - 1) * 20
        page = SLUGS[start : start + 20]
        if index == 2 and answered[index] == 1:
            page = page[:13]  # cut short once
        return ok(runs(*page), count=40)(url, kwargs)

    upstream.fallback[V1] = served
    client = make_client(page_size_v1=20)
    report = await StreamSync(Source.V1, client, store, client._settings).run_cycle()
    assert report.kind is CycleKind.BACKFILL and report.completed
    async with engine.connect() as conn:
        stored = {row[0] for row in await conn.execute(text("SELECT slug FROM runs"))}
    assert stored == set(SLUGS)
    assert answered[2] == 2


async def test_a_checkpoint_stored_by_an_earlier_version_resumes(
    make_client: MakeClient, upstream: Upstream, store: Store, engine: AsyncEngine
) -> None:
    """A checkpoint already in sync_state, in the stored JSON shape syncd has always written,
    resumes the interrupted backfill at its page (then the head is read again) and is cleared."""
    stored = {"kind": "scan", "purpose": "backfill", "next_page": 1, "page_size": 20,
              "cycle_started_at": "2026-11-23T03:30:00+00:00"}  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO sync_state (stream, checkpoint) VALUES ('v1', CAST(:c AS jsonb))"),
            {"c": json.dumps(stored)},
        )

    def served(url: URL, kwargs: dict[str, Any]) -> Any:
        start = (kwargs["json"]["page_index"] - 1) * 20
        return ok(runs(*SLUGS[start : start + 20]), count=40)(url, kwargs)

    upstream.fallback[V1] = served
    client = make_client(page_size_v1=20)
    report = await StreamSync(Source.V1, client, store, client._settings).run_cycle()
    assert report.kind is CycleKind.BACKFILL and report.completed
    assert report.resumed_from_page == 1
    asked = [call.kwargs["json"]["page_index"] for call in upstream.to(V1)]
    assert asked[0] == 2 and 1 in asked[1:]  # resumed at page 2, then the head again
    state = await store.load_state(Source.V1) or {}
    assert state["checkpoint"] is None and state["last_full_scan_at"] is not None


class ListClient:
    """A PageClient serving one in-memory list: a full scan needs nothing else upstream."""

    def __init__(self, slugs: list[str]) -> None:
        self.slugs = slugs
        self.asked: list[int] = []

    async def fetch_page(
        self, source: Source, page_number: int, page_size: int, **filters: FilterValue
    ) -> Page:
        self.asked.append(page_number)
        start = page_number * page_size
        return Page(
            items=runs(*self.slugs[start : start + page_size]),
            count=len(self.slugs),
            fetched_at=dt.datetime.now(dt.UTC),
        )

    def window(self, source: Source) -> int:
        return 3


async def test_a_full_scan_needs_only_a_pager_and_a_writer(
    store: Store, engine: AsyncEngine
) -> None:
    """FullScan drives the shared Pager/BatchWriter interface (no StreamSync): every page
    stored in order, each batch with its typed checkpoint, progress reported per batch."""
    client = ListClient(SLUGS)
    pager = Pager(client, ENDPOINTS[Source.V2], page_size=10)
    writer = BatchWriter(store, Source.V2)
    report = CycleReport(Source.V2, kind=CycleKind.BACKFILL)
    started = dt.datetime(2026, 11, 23, 3, 30, tzinfo=dt.UTC)
    progress: list[int] = []
    scan = FullScan(pager, writer, report, start=0, started=started, max_pages=100,
                    batch_rows=20, on_progress=lambda p: progress.append(p.done))  # fmt: skip
    try:
        await scan.run(None)
    finally:
        await scan.cancel_pending()
    assert report.completed and report.result.inserted == len(SLUGS)
    assert sorted(set(client.asked)) == [0, 1, 2, 3, 4]  # four full pages, then the empty one
    assert report.requests == len(client.asked) and progress[-1] == len(SLUGS)
    state = await store.load_state(Source.V2) or {}
    assert ScanCheckpoint.from_json(state["checkpoint"]) == ScanCheckpoint(
        CycleKind.BACKFILL, next_page=5, page_size=10, cycle_started_at=started
    )
