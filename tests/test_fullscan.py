"""Full scans against a scripted upstream and a real PostgreSQL: what the end rule must not miss,
resuming a stored checkpoint, the pager/writer interface a scan drives."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from syncd import memory
from syncd.cycle import CycleReport, ScanCheckpoint
from syncd.endpoints import ENDPOINTS, FilterValue
from syncd.errors import RequestRejected
from syncd.fullscan import FullScan
from syncd.models import Page, Source
from syncd.pager import Pager
from syncd.storage import Store
from syncd.sync import CycleKind, StreamSync
from syncd.writer import BatchWriter
from tests import test_client
from tests.clock import FakeClock
from tests.test_client import V1, MakeClient, Upstream, ok, reply, runs

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
        self.gc_thresholds: set[tuple[int, int, int]] = set()  # while it was asked

    async def fetch_page(
        self, source: Source, page_number: int, page_size: int, **filters: FilterValue
    ) -> Page:
        self.asked.append(page_number)
        self.gc_thresholds.add(gc.get_threshold())
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


async def test_a_full_scan_collects_cycles_less_often_while_it_runs(store: Store) -> None:
    """Every page of a scan is fetched with the collector's young generation raised
    (memory.GC_THRESHOLDS); once the scan is over the thresholds are as before."""
    before = gc.get_threshold()
    client = ListClient(SLUGS)
    report = CycleReport(Source.V2, kind=CycleKind.BACKFILL)
    scan = FullScan(Pager(client, ENDPOINTS[Source.V2], page_size=10),
                    BatchWriter(store, Source.V2), report, start=0,
                    started=dt.datetime.now(dt.UTC), max_pages=100, batch_rows=20)  # fmt: skip
    try:
        await scan.run(None)
    finally:
        await scan.cancel_pending()
    assert report.completed and len(client.asked) >= 5
    assert client.gc_thresholds == {memory.GC_THRESHOLDS} != {before}
    assert gc.get_threshold() == before


def v1_list(slugs: list[str], *, count: Any = None) -> Any:
    """A v1 server paging `slugs`; `count` is what it claims (default: the truth; a callable
    gets the page_index)."""

    def served(url: URL, kwargs: dict[str, Any]) -> Any:
        index, size = kwargs["json"]["page_index"], kwargs["json"]["page_size"]
        start = (index - 1) * size
        claimed = count(index) if callable(count) else (len(slugs) if count is None else count)
        data = {"list": runs(*slugs[start : start + size]), "count": claimed}
        return reply(200, {"code": 0, "data": data})(url, kwargs)

    return served


async def stored_slugs(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text("SELECT slug FROM runs"))}


def pages_asked(upstream: Upstream) -> list[int]:
    return [c.kwargs["json"]["page_index"] for c in upstream.to(V1)]


async def test_a_list_longer_than_its_count_is_followed_to_the_end(
    make_client: MakeClient, upstream: Upstream, store: Store, engine: AsyncEngine
) -> None:
    """65 runs under a stale `count` of 40: full pages past the promised end are followed, page
    by page, until the list really ends."""
    slugs = [f"run-{i:02d}" for i in range(65)]
    upstream.fallback[V1] = v1_list(slugs, count=40)
    client = make_client(page_size_v1=20)
    report = await StreamSync(Source.V1, client, store, client._settings).run_cycle()
    assert report.completed and await stored_slugs(engine) == set(slugs)
    assert pages_asked(upstream) == [1, 2, 3, 4]


async def test_a_count_seen_once_bounds_the_pages_fetched_ahead(
    make_client: MakeClient, upstream: Upstream, store: Store, clock: FakeClock
) -> None:
    """On a far API (many pages in flight), pages that omit `count` do not make the scan forget
    the one it was given: nothing is fetched past the end it promised."""
    served = v1_list(SLUGS[:25], count=lambda index: 25 if index == 1 else None)

    def far(url: URL, kwargs: dict[str, Any]) -> Any:
        clock.now += 0.5  # a 0.5 s round trip: the controller lets several requests fly
        return served(url, kwargs)

    upstream.fallback[V1] = far
    client = make_client(page_size_v1=10)
    report = await StreamSync(Source.V1, client, store, client._settings).run_cycle()
    assert report.completed and report.result.seen == 25 and client.window(Source.V1) > 2
    assert pages_asked(upstream) == [1, 2, 3, 4]  # the short page 3 (no count) needs page 4


async def test_a_resumed_scan_counts_the_pages_before_its_checkpoint(
    make_client: MakeClient, upstream: Upstream, store: Store
) -> None:
    """Resumed at page 2 of 50 runs (pages of 20), the short page 2 reaches `count`: the scan
    ends there without asking for the empty page after it (then the head is checked)."""
    upstream.fallback[V1] = v1_list(SLUGS + [f"run-{i}" for i in range(40, 50)])
    checkpoint = {"kind": "scan", "purpose": "backfill", "next_page": 2, "page_size": 20}
    await store.finish_cycle(Source.V1, dt.datetime.now(dt.UTC), checkpoint=checkpoint)
    client = make_client(page_size_v1=20)
    report = await StreamSync(Source.V1, client, store, client._settings).run_cycle()
    assert report.completed and report.resumed_from_page == 2
    assert pages_asked(upstream)[:2] == [3, 1]  # page 3 (0-based 2), then the head


async def test_pages_fetched_before_a_failure_are_stored(
    make_client: MakeClient, upstream: Upstream, store: Store, engine: AsyncEngine
) -> None:
    """A page waiting in the batch when a later page fails is stored, with its checkpoint,
    before the error ends the cycle."""
    slugs = [f"run-{i:02d}" for i in range(80)]
    served = v1_list(slugs)

    def failing_page_4(url: URL, kwargs: dict[str, Any]) -> Any:
        if kwargs["json"]["page_index"] == 4:
            return reply(400, {"code": 11000, "message": "page_index out of range"})(url, kwargs)
        return served(url, kwargs)

    upstream.fallback[V1] = failing_page_4
    client = make_client(page_size_v1=20)
    syncer = StreamSync(Source.V1, client, store, client._settings)
    page_3_failed, fetch = asyncio.Event(), syncer.pager.fetch

    async def fetch_page_2_after_page_3(report: Any, number: int, **filters: Any) -> Page:
        # Page 2 (0-based) is answered only once page 3 has failed, so it is still in the
        # batch (the next page is in) when the scan meets the failure.
        if number == 2:
            await page_3_failed.wait()
        try:
            return await fetch(report, number, **filters)
        finally:
            if number == 3:
                page_3_failed.set()

    syncer.pager.fetch = fetch_page_2_after_page_3  # type: ignore[method-assign]
    with pytest.raises(RequestRejected):
        await syncer.run_cycle()
    assert await stored_slugs(engine) == set(slugs[:60])
    state = await store.load_state(Source.V1)
    assert state is not None and state["checkpoint"]["next_page"] == 3


async def test_a_stopped_scan_stores_the_page_it_was_on(
    make_client: MakeClient, upstream: Upstream, store: Store, engine: AsyncEngine
) -> None:
    """A stop arriving with a page in hand stores that page and its checkpoint before it
    returns, even when the next page is already in."""
    slugs = [f"run-{i:02d}" for i in range(80)]
    upstream.fallback[V1] = v1_list(slugs)
    client = make_client(page_size_v1=20)
    syncer = StreamSync(Source.V1, client, store, client._settings)
    stop, page_2_in, fetch = asyncio.Event(), asyncio.Event(), syncer.pager.fetch

    async def stop_after_page_1(report: Any, number: int, **filters: Any) -> Page:
        # Page 1 (0-based) is answered after page 2, and the stop comes with it.
        if number == 1:
            await page_2_in.wait()
        page = await fetch(report, number, **filters)
        if number == 2:
            page_2_in.set()
        if number == 1:
            stop.set()
        return page

    syncer.pager.fetch = stop_after_page_1  # type: ignore[method-assign]
    report = await syncer.run_cycle(stop=stop)
    assert not report.completed
    assert await stored_slugs(engine) == set(slugs[:40])
    state = await store.load_state(Source.V1)
    assert state is not None and state["checkpoint"]["next_page"] == 2
