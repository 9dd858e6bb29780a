"""The HTTP endpoints: /healthz, /readyz, /metrics and the webhook, in process against the
simulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from syncd.clock import Clock
from syncd.config import Settings, load_settings
from syncd.fakeapi import FakeApi, FakeApiConfig
from syncd.models import Source
from syncd.storage import Store
from syncd.web import create_app
from tests.support.cycles import sync_streams
from tests.support.settings import QUICK, settings_for
from tests.support.simulator import serve

KEY = "web-key-abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, str]]:
    async with serve(FakeApiConfig(runs=300, api_key=KEY)) as served:
        yield served


def make_settings(url: str, db_url: str) -> Settings:
    return settings_for(url, db_url, KEY, **QUICK)


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
        await sync_streams(settings, store)
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
    await sync_streams(settings, store)
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
