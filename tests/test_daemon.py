"""The daemon's scheduling: both streams polled concurrently on their intervals, failures
retried, a rejected key fatal, a wake running a cycle at once; in process against the simulator."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from syncd.client import CoreClawClient
from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.fakeapi import FakeApi, FakeApiConfig
from syncd.models import Source
from syncd.storage import Store
from syncd.sync import StreamSync
from tests.support.settings import QUICK, settings_for
from tests.support.simulator import serve

KEY = "daemon-key-abcdef"
RUNS = 300


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, str]]:
    async with serve(FakeApiConfig(runs=RUNS, api_key=KEY)) as served:
        yield served


def make_settings(url: str, db_url: str, **extra: Any) -> Settings:
    return settings_for(url, db_url, KEY, **{**QUICK, **extra})


async def run_until(daemon: Daemon, condition: Any, timeout_s: float = 30) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(int(timeout_s / 0.05)):  # bounded in count and so in time
            if condition() or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 15)


async def test_daemon_polls_both_streams_concurrently_and_repeatedly(
    fake: tuple[FakeApi, str], db_url: str, store: Store
) -> None:
    """Both endpoints are polled at the same time, each on its interval, until stopped."""
    api, url = fake
    settings = make_settings(url, db_url)
    async with CoreClawClient(settings) as client:
        syncers = [StreamSync(s, client, store, settings) for s in (Source.V1, Source.V2)]
        daemon = Daemon(syncers, {Source.V1: 0.5, Source.V2: 0.5}, grace_s=5)
        await run_until(
            daemon, lambda: min(daemon.stats.cycles.get(s, 0) for s in ("v1", "v2")) >= 2
        )
    assert daemon.stats.cycles["v1"] >= 2 and daemon.stats.cycles["v2"] >= 2
    v1 = [r.time for r in api.requests if r.path.endswith("/run/list")]
    v2 = [r.time for r in api.requests if r.path.endswith("/worker-runs")]
    # Concurrent: each stream's first request goes out before the other has sent more than
    # its first cycle's requests (a backfill: one request per page).
    pages = math.ceil(RUNS / QUICK["page_size_v1"])
    assert v2[0] < v1[pages] and v1[0] < v2[pages]


async def test_failed_cycle_is_retried_on_the_next_interval(db_url: str, store: Store) -> None:
    """An unreachable API fails cycles, but the daemon keeps running and records the error."""
    settings = make_settings("http://127.0.0.1:9", db_url, max_retries=0)
    async with CoreClawClient(settings) as client:
        daemon = Daemon([StreamSync(Source.V1, client, store, settings)], {Source.V1: 0.2})
        await run_until(daemon, lambda: daemon.stats.failures.get("v1", 0) >= 2, timeout_s=20)
    assert daemon.stats.failures["v1"] >= 2 and daemon.stats.fatal is None
    state = await store.load_state(Source.V1)
    assert state is not None and "UpstreamUnavailable" in state["last_error"]


async def test_bad_key_stops_the_daemon(
    fake: tuple[FakeApi, str], db_url: str, store: Store
) -> None:
    """A rejected API key is fatal: retrying every interval cannot fix it."""
    _, url = fake
    settings = make_settings(url, db_url, api_key=SecretStr("wrong-key-000000"))
    async with CoreClawClient(settings) as client:
        daemon = Daemon([StreamSync(Source.V2, client, store, settings)], {Source.V2: 0.2})
        stats = await asyncio.wait_for(daemon.run(), 20)
    assert stats.fatal is not None and "SYNCD_API_KEY" in str(stats.fatal)


async def test_wake_runs_a_cycle_now_instead_of_after_the_interval(
    fake: tuple[FakeApi, str], db_url: str, store: Store
) -> None:
    """A webhook's wake starts a cycle at once, even mid-cycle, not an interval later."""
    _, url = fake
    settings = make_settings(url, db_url)
    async with CoreClawClient(settings) as client:
        daemon = Daemon([StreamSync(Source.V1, client, store, settings)], {Source.V1: 3600})
        task = asyncio.create_task(daemon.run())
        try:
            for _ in range(200):
                if daemon.stats.cycles.get("v1") == 1:
                    break
                await asyncio.sleep(0.05)
            assert daemon.stats.cycles.get("v1") == 1
            daemon.wake("test")
            for _ in range(200):
                if daemon.stats.cycles.get("v1") == 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            daemon.stop.set()
            await asyncio.wait_for(task, 15)
    assert daemon.stats.cycles["v1"] == 2
