"""`syncd check`: reports what a sync would meet, and changes nothing on the way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.check import EXIT_AUTH, EXIT_CONFIG, EXIT_OK, CheckReport, Finding, run_check
from syncd.config import Settings, load_settings
from syncd.database import head_revision
from syncd.fakeapi import FakeApi, FakeApiConfig, start_fake_api
from tests.support.processes import env_for, run_syncd
from tests.support.settings import settings_for as support_settings

KEY = "check-secret-key-0123"


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeApi, str]]:
    config = getattr(request, "param", FakeApiConfig(runs=40, api_key=KEY, offset_mode="pages1"))
    api, runner, url = await start_fake_api(config)
    yield api, url
    await runner.cleanup()


def settings_for(url: str, db_url: str | None, **overrides: Any) -> Settings:
    return support_settings(url, db_url, KEY, **overrides)


def finding(report: CheckReport, name: str) -> Finding:
    return next(f for f in report.findings if f.name == name)


async def test_ready_configuration_reports_reading_revision_and_round_trips(
    fake: tuple[FakeApi, str], db_url: str
) -> None:
    """Against a 1-based-offset server and a migrated database: exit 0, the reading found
    by data, the schema at head, one list request to v1 and v2's probe requests."""
    api, url = fake
    report = await run_check(settings_for(url, db_url))
    assert report.exit_code == EXIT_OK, report.render()
    db = finding(report, "database").data
    assert db["revision"] == db["head"] == head_revision()
    v2 = finding(report, "api v2").data
    assert v2["offset_reading"] == "pages1" and v2["settled"] is True
    assert finding(report, "api v1").data["runs"] == 40
    assert finding(report, "api v1").data["round_trip_ms"] >= 0
    paths = [r.path for r in api.requests]
    assert paths.count("/api/v1/run/list") == 1
    assert 1 <= paths.count("/api/v2/worker-runs") <= 4  # the probe (3) and the page (1)


async def test_unmigrated_database_is_reported_and_left_unmigrated(
    fake: tuple[FakeApi, str], empty_db_url: str, engine_for: Any
) -> None:
    """An empty database is news, not an error, and check creates no table in it."""
    _, url = fake
    report = await run_check(settings_for(url, empty_db_url))
    assert report.exit_code == EXIT_OK
    database = finding(report, "database")
    assert database.data["revision"] is None and "not migrated" in database.summary
    engine: AsyncEngine = engine_for(empty_db_url)
    async with engine.connect() as conn:
        tables = await conn.scalar(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        )
    assert tables == 0


async def test_rejected_key_is_exit_3_and_stops_at_the_first_endpoint(
    fake: tuple[FakeApi, str], db_url: str
) -> None:
    """A wrong key: exit 3 as for `sync`, and no second request with the same bad key."""
    api, url = fake
    report = await run_check(settings_for(url, db_url, api_key=SecretStr("wrong-key-abcdef")))
    assert report.exit_code == EXIT_AUTH
    assert [f.name for f in report.findings][-1] == "api v1"
    assert all(r.path == "/api/v1/run/list" for r in api.requests)


async def test_missing_key_and_absent_embedded_database_create_nothing(tmp_path: Path) -> None:
    """No key: exit 2 naming the variable; an embedded database not set up yet is said
    so, and no server is started nor directory made for it."""
    settings = load_settings(data_dir=tmp_path / "data", http_port=0)
    report = await run_check(settings)
    assert report.exit_code == EXIT_CONFIG
    assert "SYNCD_API_KEY" in finding(report, "api").summary
    assert finding(report, "database").data == {"embedded": True, "exists": False}
    assert not (tmp_path / "data").exists()


async def test_cli_json_output_and_exit_code(fake: tuple[FakeApi, str], db_url: str) -> None:
    """`syncd check --json` prints one document with every finding, and exits as it says."""
    _, url = fake
    env = env_for(SYNCD_API_URL=url, SYNCD_API_KEY=KEY, SYNCD_DATABASE_URL=db_url)
    code, out, err = await run_syncd("check", "--json", env=env)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True and doc["exit_code"] == 0
    names = [c["name"] for c in doc["checks"]]
    assert names == ["settings", "database", "api v1", "api v2"]
    assert KEY not in out + err
    code, out, _ = await run_syncd("check", env={**env, "SYNCD_API_KEY": "wrong-key-abcdef"})
    assert code == 3
    assert "FAIL api v1" in out and out.strip().endswith("not ready (exit 3)")
