"""Fault injection against a real PostgreSQL: hostile upstream, bad records, a database restart.

Each test ends by comparing the database with the simulator's truth: a fault
may cost time and retries, never a run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from syncd.config import Settings
from syncd.database import create_engine, migrate
from syncd.fakeapi import FAULT_KINDS, FakeApiConfig, start_fake_api
from syncd.models import Source
from syncd.storage import Store
from tests.support.cycles import sync_streams
from tests.support.postgres import EmbeddedPostgres, create_database
from tests.support.settings import FAULT_TOLERANT
from tests.support.settings import settings_for as support_settings
from tests.support.truth import diff, expected_rows, stored_rows

KEY = "faults-key-0123456789"


def settings_for(url: str, db_url: str, **extra: Any) -> Settings:
    values = {**FAULT_TOLERANT, "http_timeout_s": 0.4, "max_backoff_s": 0.05, **extra}
    return support_settings(url, db_url, KEY, **values)


async def test_hostile_upstream_loses_nothing(
    db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """5xx bursts, timeouts, resets, truncated and HTML bodies, code 10000, drifting counts,
    short pages and duplicates: the database still equals the simulator."""
    config = FakeApiConfig(
        runs=1500, api_key=KEY, scenarios=frozenset({"faults"}), fault_rate=0.3, slow_s=1.0
    )
    api, runner, url = await start_fake_api(config)
    try:
        settings = settings_for(url, db_url, page_size_v1=20, page_size_v2=20)
        await sync_streams(settings, store)
        # a second, incremental cycle under the same faults must not break anything either
        await sync_streams(settings, store)
    finally:
        await runner.cleanup()
    seen_faults = {r.fault for r in api.requests if r.fault}
    assert seen_faults == set(FAULT_KINDS), f"not injected: {set(FAULT_KINDS) - seen_faults}"
    assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []


async def test_bad_records_are_kept_and_good_ones_land(
    db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """Every bad item lands in sync_rejects with its raw payload; every good run lands."""
    config = FakeApiConfig(runs=400, api_key=KEY, scenarios=frozenset({"badrecords"}), bad_every=10)
    api, runner, url = await start_fake_api(config)
    try:
        await sync_streams(settings_for(url, db_url, page_size_v1=50, page_size_v2=50), store)
        bad = api.rejects()
    finally:
        await runner.cleanup()
    kinds = {b["kind"] for b in bad}
    assert {"missing_slug", "unknown_status", "usage_na", "negative_timestamps"} <= kinds
    async with engine.connect() as conn:
        rejects = await conn.execute(text("SELECT stream, run_slug, raw, reason FROM sync_rejects"))
        rows = [dict(r) for r in rejects.mappings()]
    raws = {(r["stream"], str(sorted(r["raw"].items())) if isinstance(r["raw"], dict) else "")
            for r in rows}  # fmt: skip
    for item in bad:
        if item["kind"] in ("extra_fields", "string_timestamps", "huge_err_msg"):
            continue  # readable: stored as runs, nothing to reject
        for stream in ("v1", "v2"):
            key = (stream, str(sorted(item[stream].items())))
            assert key in raws, f"{item['kind']} from {stream} not in sync_rejects"
    stored = await stored_rows(engine)
    truth = expected_rows(api.truth())
    assert diff(truth, {slug: row for slug, row in stored.items() if slug in truth}) == []
    # bad items that still had an identity were stored too (the anomaly noted in rejects)
    unknown = [b["slug"] for b in bad if b["kind"] == "unknown_status"]
    assert unknown and all(stored[s]["status"] == "unknown" for s in unknown)
    huge = [b for b in bad if b["kind"] == "huge_err_msg"]
    assert huge and all(stored[b["slug"]]["err_msg"] == b["v2"]["err_msg"] for b in huge)


# -- the database going away -------------------------------------------------


@pytest.fixture
async def restart_db() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A database on a PostgreSQL of this test's own, so stopping it cannot disturb others."""
    server = await asyncio.to_thread(EmbeddedPostgres, "syncd-restart-")
    try:
        yield server, await create_database(server.admin_url, f"r_{uuid.uuid4().hex[:8]}")
    finally:
        await asyncio.to_thread(server.close)


async def test_database_restart_mid_backfill_is_survived(
    restart_db: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """PostgreSQL stopped and started during a backfill: the sync reconnects and completes,
    and no page is lost or half-written."""
    server, url = restart_db
    engine = create_engine(url)
    try:
        await migrate(engine)
        store = Store(engine, retry_s=30)
        api, runner, api_url = await start_fake_api(FakeApiConfig(runs=1500, api_key=KEY))
        settings = settings_for(api_url, url, page_size_v1=20, page_size_v2=20,
                                max_requests_per_s=150.0, initial_requests_per_s=150.0,
                                backfill_batch_rows=100)  # fmt: skip
        try:
            with capture_logs() as logs:
                sync = asyncio.create_task(sync_streams(settings, store))
                for _ in range(300):  # wait for the backfill to be well under way
                    if sum(1 for r in api.requests if r.status == 200) >= 30 or sync.done():
                        break
                    await asyncio.sleep(0.02)
                assert not sync.done(), "the backfill ended before the database could be stopped"
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(1.5)
                await asyncio.to_thread(server.start)
                await asyncio.wait_for(sync, 120)
        finally:
            await runner.cleanup()
        assert any(e["event"] == "database_unavailable" for e in logs), "the outage went unseen"
        assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []
        async with engine.connect() as conn:
            states = (
                await conn.execute(
                    text("SELECT stream, checkpoint, last_success_at FROM sync_state")
                )
            ).all()
        assert all(s.checkpoint is None and s.last_success_at is not None for s in states)
    finally:
        await engine.dispose()


async def test_readiness_follows_the_database_down_and_up(
    restart_db: tuple[EmbeddedPostgres, str],
) -> None:
    """/readyz: 200 when synced, 503 naming the database while it is down, 200 once it is back;
    /healthz stays 200 throughout (the process is fine)."""
    from aiohttp.test_utils import TestClient, TestServer

    from syncd.web import create_app

    server, url = restart_db
    engine = create_engine(url)
    _, runner, api_url = await start_fake_api(FakeApiConfig(runs=100, api_key=KEY))
    try:
        await migrate(engine)
        store = Store(engine, retry_s=0)
        settings = settings_for(api_url, url)
        await sync_streams(settings, store)
        app = create_app(store, settings, [Source.V1, Source.V2])
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            assert (await http.get("/readyz")).status == 200
            await asyncio.to_thread(server.stop)
            down = await http.get("/readyz")
            body = await down.json()
            assert down.status == 503 and body["reasons"][0].startswith("database unreachable")
            assert (await http.get("/healthz")).status == 200
            await asyncio.to_thread(server.start)
            statuses = []
            for _ in range(50):  # the pool reconnects on its own (pre-ping), bounded wait
                statuses.append((await http.get("/readyz")).status)
                if statuses[-1] == 200:
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 200, statuses
    finally:
        await runner.cleanup()
        await engine.dispose()
