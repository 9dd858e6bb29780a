"""End to end, in process: the simulator on 127.0.0.1, the real client, a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.client import CoreClawClient
from syncd.config import Settings
from syncd.errors import AuthError
from syncd.fakeapi import FakeApi, FakeApiConfig, start_fake_api
from syncd.models import OffsetMode, Source
from syncd.storage import Store
from syncd.sync import StreamSync
from tests.support.cycles import sync_streams
from tests.support.settings import settings_for as support_settings
from tests.support.truth import diff, expected_rows, stored_rows

KEY = "e2e-secret-key"


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeApi, str]]:
    config: FakeApiConfig = getattr(request, "param", FakeApiConfig(runs=230, api_key=KEY))
    api, runner, url = await start_fake_api(config)
    yield api, url
    await runner.cleanup()


def settings_for(url: str, db_url: str, **overrides: Any) -> Settings:
    values = {"page_size_v1": 40, "page_size_v2": 50, "max_retries": 3,
              "max_requests_per_s": 200.0, "initial_requests_per_s": 100.0}  # fmt: skip
    return support_settings(url, db_url, KEY, **{**values, **overrides})


async def test_both_streams_concurrently_equal_truth(
    fake: tuple[FakeApi, str], db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """One concurrent cycle of v1 and v2 makes `runs` equal the simulator's data."""
    api, url = fake
    reports = await sync_streams(settings_for(url, db_url), store, [Source.V1, Source.V2])
    assert all(r.completed for r in reports)
    assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []
    paths = {r.path for r in api.requests}
    assert paths == {"/api/v1/run/list", "/api/v2/worker-runs"}


@pytest.mark.parametrize("mode", ["items", "pages"])
async def test_v2_offset_meaning_is_detected(
    mode: Literal["items", "pages"], db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """Whichever meaning the server gives `offset`, v2 alone syncs every run exactly once."""
    api, runner, url = await start_fake_api(FakeApiConfig(runs=180, api_key=KEY, offset_mode=mode))
    try:
        settings = settings_for(url, db_url, v2_offset_mode=OffsetMode.AUTO)
        (report,) = await sync_streams(settings, store, [Source.V2])
    finally:
        await runner.cleanup()
    assert diff(expected_rows(api.truth(), "v2"), await stored_rows(engine)) == []
    assert report.result.seen == 180 and report.result.inserted == 180


async def test_second_cycle_writes_nothing(
    fake: tuple[FakeApi, str], db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """A re-sync of unchanged upstream data inserts and updates no row."""
    _, url = fake
    settings = settings_for(url, db_url)
    await sync_streams(settings, store, [Source.V1, Source.V2])
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT sum(xmin::text::bigint) FROM runs"))).scalar()
    reports = await sync_streams(settings, store, [Source.V1, Source.V2], full=True)
    assert [r.result.changed for r in reports] == [0, 0]
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT sum(xmin::text::bigint) FROM runs"))).scalar()
    assert after == before


async def test_status_changes_upstream_reach_the_database(
    fake: tuple[FakeApi, str], db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """After runs move on upstream, the next cycle stores their new state and history."""
    api, url = fake
    settings = settings_for(url, db_url)
    await sync_streams(settings, store, [Source.V1, Source.V2])
    api.tick(5)
    await sync_streams(settings, store, [Source.V1, Source.V2], full=True)
    assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []
    async with engine.connect() as conn:
        multi = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT run_slug FROM run_status_history "
                    "GROUP BY run_slug HAVING count(*) > 1) x"
                )
            )
        ).scalar()
    assert multi and multi > 0


async def test_interrupted_cycle_resumes_from_checkpoint(
    fake: tuple[FakeApi, str], db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """A backfill stopped part-way resumes at its checkpoint page, not at the top."""
    api, url = fake
    # One page per stored batch, so the second save is the second page whatever the timing
    # (by default pages are batched by rows, and a quick server fills one batch with all 12).
    settings = settings_for(url, db_url, page_size_v1=20, backfill_batch_rows=20)
    stop = asyncio.Event()
    async with CoreClawClient(settings) as client:
        syncer = StreamSync(Source.V1, client, store, settings)
        original = store.save_batch
        calls = 0

        async def save_and_stop(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                stop.set()
            return await original(*args, **kwargs)

        store.save_batch = save_and_stop  # type: ignore[method-assign]
        first = await syncer.run_cycle(stop=stop)
        store.save_batch = original  # type: ignore[method-assign]
        assert first.completed is False and 2 <= first.pages < 12
        state = await store.load_state(Source.V1)
        assert state is not None
        next_page = state["checkpoint"]["next_page"]
        assert next_page == first.pages
        before = len(api.requests)
        second = await syncer.run_cycle()
    assert second.completed and second.resumed_from_page == next_page
    pages = [int(r.params["page_index"]) for r in api.requests[before:]]
    assert pages[0] == next_page + 1, "the resumed cycle must start at its checkpoint"
    # stored pages read again: only the head, checked at the end for newcomers
    again = [p for p in pages if p <= next_page]
    assert again == list(range(1, len(again) + 1)) and len(again) <= 3
    assert diff(expected_rows(api.truth(), "v1"), await stored_rows(engine)) == []
    state = await store.load_state(Source.V1)
    assert state is not None and state["checkpoint"] is None and state["last_success_at"]
    assert state["last_full_scan_at"] is not None


async def test_wrong_key_fails_clearly_and_is_recorded(
    fake: tuple[FakeApi, str], db_url: str, store: Store
) -> None:
    """A rejected key raises AuthError naming the setting; sync_state keeps the error."""
    _, url = fake
    settings = settings_for(url, db_url, api_key=SecretStr("not-the-key"))
    with pytest.raises(AuthError) as info:
        await sync_streams(settings, store, [Source.V2])
    assert "SYNCD_API_KEY" in str(info.value) and "not-the-key" not in str(info.value)
    state = await store.load_state(Source.V2)
    assert state is not None and "AuthError" in state["last_error"]
    assert state["last_success_at"] is None


@pytest.mark.parametrize(
    "fake",
    [
        FakeApiConfig(
            runs=150,
            api_key=KEY,
            scenarios=frozenset({"ratelimit"}),
            rate_limit_rps=5.0,
            rate_limit_burst=2,
        )
    ],
    indirect=True,
)
async def test_rate_limited_sync_completes_and_honours_retry_after(
    fake: tuple[FakeApi, str], db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """Under a tight rate limit the sync still completes, never early after a Retry-After."""
    api, url = fake
    settings = settings_for(url, db_url, page_size_v1=10, page_size_v2=10, max_retries=6)
    await sync_streams(settings, store, [Source.V1, Source.V2])
    assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []
    limited = [r for r in api.requests if r.status == 429 or r.code in (13000, 4290)]
    assert limited, "the scenario should have rate limited at least once"
    assert any(r.retry_after is not None for r in limited)
    # The simulator marks a request that arrived before an announced Retry-After passed.
    assert [r for r in api.requests if r.early] == []
    for i, req in enumerate(api.requests):
        if req.retry_after_s is None:
            continue
        resume_at = req.time + req.retry_after_s
        early = [r for r in api.requests[i + 1 :] if r.time < resume_at - 0.05]
        assert early == [], f"request sent {resume_at - early[0].time:.2f}s before Retry-After"


@pytest.mark.parametrize(("runs", "requests"), [(1000, 11), (1050, 11), (40, 1)])
async def test_full_scan_fetches_nothing_past_the_end(
    runs: int, requests: int, db_url: str, store: Store
) -> None:
    """Pages fetched ahead stop at the end `count` promises: a full page count needs the
    empty page after it, a short last page does not."""
    api, runner, url = await start_fake_api(FakeApiConfig(runs=runs, api_key=KEY))
    try:
        settings = settings_for(url, db_url, page_size_v1=100)
        (report,) = await sync_streams(settings, store, [Source.V1])
    finally:
        await runner.cleanup()
    assert report.completed and report.result.seen == runs
    assert report.requests == requests == len(api.requests)
