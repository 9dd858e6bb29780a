"""The daemon's scheduling and its HTTP endpoints, in process against the simulator."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from syncd.client import CoreClawClient
from syncd.clock import Clock
from syncd.config import Settings, load_settings
from syncd.daemon import Daemon
from syncd.fakeapi import FakeApi, FakeApiConfig, start_fake_api
from syncd.models import Source
from syncd.storage import Store
from syncd.sync import StreamSync
from syncd.web import create_app

KEY = "daemon-key-abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, str]]:
    api, runner, url = await start_fake_api(FakeApiConfig(runs=300, api_key=KEY))
    yield api, url
    await runner.cleanup()


def make_settings(url: str, db_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "api_url": url, "api_key": SecretStr(KEY), "database_url": SecretStr(db_url),
        "page_size_v1": 25, "page_size_v2": 25, "poll_interval_v1_s": 0.5,
        "poll_interval_v2_s": 0.5, "max_requests_per_s": 100.0, "initial_requests_per_s": 50.0,
    }  # fmt: skip
    values.update(extra)
    return load_settings(**values)


async def sync_both_once(settings: Settings, store: Store) -> None:
    async with CoreClawClient(settings) as client:
        for stream in (Source.V1, Source.V2):
            await StreamSync(stream, client, store, settings).run_cycle()


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
    # Concurrent: each stream's first cycle starts before the other's first cycle ends.
    assert v2[0] < v1[12] and v1[0] < v2[12]


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


async def test_health_readiness_and_metrics(
    fake: tuple[FakeApi, str], db_url: str, store: Store
) -> None:
    """/healthz is up; /readyz is 503 until both streams synced, then 200; /metrics counts."""
    _, url = fake
    settings = make_settings(url, db_url)
    app = create_app(store, settings, [Source.V1, Source.V2])
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        assert (await http.get("/healthz")).status == 200
        response = await http.get("/readyz")
        assert response.status == 503
        assert "has not synced successfully yet" in " ".join((await response.json())["reasons"])
        await sync_both_once(settings, store)
        assert (await http.get("/readyz")).status == 200
        metrics = await (await http.get("/metrics")).text()
    assert 'syncd_rows_total{outcome="inserted",stream="v1"}' in metrics
    assert (
        'syncd_upstream_requests_total{endpoint="/api/v2/worker-runs",http_status="200"}' in metrics
    )
    assert KEY not in metrics


async def test_metrics_show_rss_open_fds_and_asyncio_tasks(store: Store) -> None:
    """/metrics serves the process's RSS and open fds and the event loop's task count."""
    app = create_app(store, load_settings(api_key="k"), [Source.V1])
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        text = await (await http.get("/metrics")).text()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert values["process_resident_memory_bytes"] > 1_000_000
    assert values["process_open_fds"] > 0
    assert values["syncd_asyncio_tasks"] >= 1  # at least the task serving this request


async def test_readyz_reports_a_stale_stream(
    fake: tuple[FakeApi, str], db_url: str, store: Store
) -> None:
    """A stream whose last success is older than three intervals makes /readyz 503."""
    _, url = fake
    settings = make_settings(url, db_url)
    await sync_both_once(settings, store)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    app = create_app(store, settings, [Source.V1, Source.V2], clock=Clock(now=lambda: later))
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        response = await http.get("/readyz")
        body = await response.json()
    assert response.status == 503
    assert any("stream v1 last synced" in r for r in body["reasons"])


async def test_readyz_reports_an_unreachable_database(fake: tuple[FakeApi, str]) -> None:
    """With the database gone, /readyz is 503 and says so."""
    from syncd.database import create_engine

    _, url = fake
    dead = "postgresql+asyncpg://nobody:pw@127.0.0.1:9/none"
    settings = make_settings(url, dead)
    engine = create_engine(dead)
    try:
        app = create_app(Store(engine), settings, [Source.V1])
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            response = await http.get("/readyz")
            body = await response.json()
    finally:
        await engine.dispose()
    assert response.status == 503
    assert body["reasons"][0].startswith("database unreachable")


WEBHOOK_TOKEN = "hook-token-123456"


@pytest.mark.parametrize(
    ("headers", "query", "body", "status"),
    [
        ({"X-Syncd-Token": WEBHOOK_TOKEN}, "", {"slug": "R1"}, 202),
        ({}, f"?token={WEBHOOK_TOKEN}", {"data": {"slug": "R1"}}, 202),
        ({}, "", {"slug": "R1"}, 401),
        ({"X-Syncd-Token": "wrong"}, "", {"slug": "R1"}, 401),
        ({}, "?token=wrong", {"slug": "R1"}, 401),
        ({"X-Syncd-Token": WEBHOOK_TOKEN}, "", {"status": 3}, 400),
        ({"X-Syncd-Token": WEBHOOK_TOKEN}, "", "not json", 400),
    ],
)
async def test_webhook_requires_token_and_a_slug(
    store: Store, headers: dict[str, str], query: str, body: Any, status: int
) -> None:
    """Only an authenticated callback naming a run triggers a refresh; others get 4xx."""
    settings = load_settings(webhook_token=WEBHOOK_TOKEN, api_key="k")
    woken: list[str] = []
    app = create_app(store, settings, [Source.V1], on_run_finished=woken.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        data = body if isinstance(body, str) else None
        response = await http.post(
            f"/webhook/coreclaw{query}", headers=headers, json=None if data else body, data=data
        )
        assert response.status == status
    assert woken == (["R1"] if status == 202 else [])


async def test_webhook_is_off_without_a_token(store: Store) -> None:
    """With no SYNCD_WEBHOOK_TOKEN configured the endpoint does not exist."""
    app = create_app(store, load_settings(api_key="k"), [Source.V1], on_run_finished=print)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        response = await http.post("/webhook/coreclaw", json={"slug": "R1"})
    assert response.status == 404


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
