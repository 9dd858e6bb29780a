"""Every documented reading of v2 `offset` (SPEC "Known ambiguity"), end to end.

The simulator on 127.0.0.1 reads `offset` as items, 0-based pages or 1-based
pages; syncd runs with the default `SYNCD_V2_OFFSET_MODE=auto` and must store
every run, from a cold start, from a resumed checkpoint, and on an account
that grows from too few runs to tell the readings apart to hundreds.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.client import CoreClawClient
from syncd.fakeapi import FakeApiConfig, start_fake_api
from syncd.fakeapi import OffsetMode as Reading
from syncd.models import OffsetMode, Source
from syncd.progress import Progress
from syncd.storage import Store
from syncd.sync import StreamSync
from tests.support.truth import diff, expected_rows, stored_rows
from tests.test_sync_e2e import KEY, settings_for

READINGS: list[Reading] = ["items", "pages0", "pages1"]


def v2_offsets(api_requests: list[object]) -> list[int]:
    return [int(r.params["offset"]) for r in api_requests if r.path == "/api/v2/worker-runs"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("runs", [0, 2, 150, 5000])
@pytest.mark.parametrize("reading", READINGS)
async def test_a_cold_start_stores_every_run_under_each_reading(
    reading: Reading, runs: int, db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """A first v2 sync with offset detection on stores exactly the simulator's runs."""
    api, runner, url = await start_fake_api(
        FakeApiConfig(runs=runs, api_key=KEY, offset_mode=reading)
    )
    try:
        settings = settings_for(url, db_url, page_size_v2=100)
        async with CoreClawClient(settings) as client:
            report = await StreamSync(Source.V2, client, store, settings).run_cycle()
            mode = await client.offset_mode()
    finally:
        await runner.cleanup()
    assert report.completed
    assert diff(expected_rows(api.truth(), "v2"), await stored_rows(engine)) == []
    assert report.result.inserted == runs
    if runs >= 2:  # enough runs for the data to decide
        assert mode.value == reading


@pytest.mark.parametrize("reading", READINGS)
async def test_a_checkpoint_resumes_under_a_fresh_detection(
    reading: Reading, db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """A backfill stopped after its first batch resumes, in a new client that detects the
    reading again, at the checkpoint's page, and ends with every run stored."""
    api, runner, url = await start_fake_api(
        FakeApiConfig(runs=600, api_key=KEY, offset_mode=reading)
    )
    try:
        settings = settings_for(url, db_url, page_size_v2=20, backfill_batch_rows=100)
        stop = asyncio.Event()
        async with CoreClawClient(settings) as client:
            first = StreamSync(Source.V2, client, store, settings)

            def stop_after_first_batch(progress: Progress) -> None:
                stop.set()

            first.on_progress = stop_after_first_batch
            interrupted = await first.run_cycle(stop=stop)
        assert not interrupted.completed
        state = await store.load_state(Source.V2)
        assert state is not None and state["checkpoint"]["next_page"] >= 1
        before = len(api.requests)
        async with CoreClawClient(settings) as client:
            resumed = await StreamSync(Source.V2, client, store, settings).run_cycle()
    finally:
        await runner.cleanup()
    assert resumed.completed and resumed.resumed_from_page == state["checkpoint"]["next_page"]
    assert diff(expected_rows(api.truth(), "v2"), await stored_rows(engine)) == []
    # The resumed pass asked for its first page under the server's reading of `offset`.
    page = resumed.resumed_from_page
    assert page is not None
    expected_offset = {"items": page * 20, "pages0": page, "pages1": page + 1}[reading]
    limit_20 = [r for r in api.requests[before:] if r.params.get("limit") == "20"]
    assert int(limit_20[0].params["offset"]) == expected_offset


@pytest.mark.parametrize("echo", [True, False])
@pytest.mark.parametrize("initial", [1, 2])
@pytest.mark.parametrize("reading", READINGS)
async def test_an_account_that_grows_is_followed_under_each_reading(
    reading: Reading, initial: int, echo: bool, db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """Cycle after cycle on one client, as the daemon runs them, while the account grows from
    `initial` runs to 300: every run ends up stored (a reading one run could not decide is
    detected again once the list grew), whether or not the server echoes page_index."""
    config = FakeApiConfig(
        echo_page_index=echo,
        runs=initial,
        api_key=KEY,
        offset_mode=reading,
        scenarios=frozenset({"churn"}),
        tick_s=0,
        churn_new_per_tick=50,
        in_flight=min(initial, 1),
    )
    api, runner, url = await start_fake_api(config)
    try:
        settings = settings_for(url, db_url, page_size_v2=20, v2_offset_mode=OffsetMode.AUTO)
        async with CoreClawClient(settings) as client:
            sync = StreamSync(Source.V2, client, store, settings)
            for _ in range(7):  # 1 or 2 runs, then 50 more per tick up to 300+
                report = await sync.run_cycle()
                assert report.completed
                if len(api.truth()) < 300:
                    api.tick()
            assert len(api.truth()) >= 300
            report = await sync.run_cycle()
            mode = await client.offset_mode()
    finally:
        await runner.cleanup()
    assert diff(expected_rows(api.truth(), "v2"), await stored_rows(engine)) == []
    assert mode.value == reading
