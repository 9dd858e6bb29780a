"""Full scans against a scripted upstream and a real PostgreSQL: what the end rule must not miss."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from syncd.models import Source
from syncd.storage import Store
from syncd.sync import CycleKind, StreamSync
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
