"""Migrations on a real PostgreSQL: up, down, up again; and schema.py matches them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.database import create_engine, downgrade, head_revision, migrate
from syncd.schema import metadata

CONTRACT = {
    "runs": {
        "slug", "worker_slug", "worker_title", "status", "status_raw", "err_msg", "results",
        "usage_usd", "traffic_bytes", "started_at", "finished_at", "duration_s", "origin",
        "version", "source", "first_seen_at", "last_seen_at", "updated_at",
    },
    "run_status_history": {"run_slug", "status", "observed_at", "source"},
    "workers": {"slug", "title", "first_seen_at", "last_seen_at"},
    "sync_state": {"stream", "last_success_at", "last_error", "checkpoint"},
    "sync_rejects": {"stream", "raw", "reason", "rejected_at"},
}  # fmt: skip


@pytest.fixture
async def bare_engine(empty_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_db_url)
    yield engine
    await engine.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _columns(conn: Connection) -> dict[str, set[str]]:
    insp = inspect(conn)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


def _indexes(conn: Connection) -> dict[str, list[str]]:
    indexes = inspect(conn).get_indexes("runs")
    return {str(i["name"]): [str(c) for c in i["column_names"]] for i in indexes}


async def test_upgrade_creates_the_contract(bare_engine: AsyncEngine) -> None:
    """upgrade head creates every SPEC table and column, and the analyst indexes."""
    assert await migrate(bare_engine) == head_revision()
    async with bare_engine.connect() as conn:
        columns = await conn.run_sync(_columns)
        indexes = await conn.run_sync(_indexes)
    for table, wanted in CONTRACT.items():
        assert wanted <= columns[table], (table, wanted - columns[table])
    assert indexes["ix_runs_status"] == ["status"]
    assert indexes["ix_runs_worker_started"][0] == "worker_slug"


async def test_downgrade_removes_everything_and_upgrade_again(bare_engine: AsyncEngine) -> None:
    """downgrade base drops all syncd tables; upgrade head brings them back."""
    await migrate(bare_engine)
    await downgrade(bare_engine, "base")
    async with bare_engine.connect() as conn:
        assert await conn.run_sync(_tables) == {"alembic_version"}
    await migrate(bare_engine)
    async with bare_engine.connect() as conn:
        assert set(CONTRACT) <= await conn.run_sync(_tables)


async def test_migrate_twice_is_a_no_op(bare_engine: AsyncEngine) -> None:
    """Running migrate on an up-to-date database changes nothing and succeeds."""
    first = await migrate(bare_engine)
    assert await migrate(bare_engine) == first


# Comments live in the migrations only (tests/test_analytics.py checks every one is there).
COMMENT_OPS = {"modify_comment", "add_table_comment", "remove_table_comment"}


def _op_name(diff: object) -> str:
    first = diff[0] if isinstance(diff, list) else diff
    return str(first[0]) if isinstance(first, tuple) else ""


def _diff(conn: Connection) -> list[object]:
    diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    return [d for d in diffs if _op_name(d) not in COMMENT_OPS]


async def test_schema_module_matches_migrations(bare_engine: AsyncEngine) -> None:
    """schema.py (used to build statements) describes exactly what the migrations create."""
    await migrate(bare_engine)
    async with bare_engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
