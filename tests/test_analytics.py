"""What analysts and BI tools get: the views on known data, comments everywhere.

Read-only access for them (`grant_read`) is in test_database.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.models import Run, Source, Status
from syncd.storage import Store

DAY1 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 2, 23, 30, tzinfo=dt.UTC)


def run(slug: str, worker: str, status: Status, started: dt.datetime, **extra: Any) -> Run:
    values: dict[str, Any] = {
        "slug": slug, "worker_slug": worker, "worker_title": f"{worker} title",
        "status": status, "status_raw": status.value, "err_msg": "", "results": 1,
        "usage_usd": Decimal("1.00"), "traffic_bytes": 100, "started_at": started,
        "finished_at": None, "duration_s": 10, "origin": "api", "version": "v1",
        "source": Source.V2,
    }  # fmt: skip
    values.update(extra)
    return Run(**values)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]


async def test_worker_daily_stats(store: Store, engine: AsyncEngine) -> None:
    """Per UTC day and worker: counts by outcome, spend, traffic, average and p95 duration."""
    batch = [
        run("a1", "wa", Status.SUCCEEDED, DAY1, duration_s=10, usage_usd=Decimal("0.50")),
        run("a2", "wa", Status.FAILED, DAY1, duration_s=20, usage_usd=Decimal("0.25")),
        run("a3", "wa", Status.ABORTED, DAY1, duration_s=30, traffic_bytes=1000),
        run("a4", "wa", Status.RUNNING, DAY2, duration_s=0),
        run("b1", "wb", Status.SUCCEEDED, DAY2, duration_s=100),
    ]
    await store.save_batch(Source.V2, batch, observed_at=DAY2)
    stats = await rows(engine, "SELECT * FROM worker_daily_stats ORDER BY day, worker_slug")
    assert [(r["day"], r["worker_slug"], r["runs"]) for r in stats] == [
        (dt.date(2026, 11, 1), "wa", 3),
        (dt.date(2026, 11, 2), "wa", 1),
        (dt.date(2026, 11, 2), "wb", 1),
    ]
    first = stats[0]
    assert (first["succeeded"], first["failed"], first["aborted"]) == (1, 1, 1)
    assert first["usage_usd"] == Decimal("1.75") and first["traffic_bytes"] == 1200
    assert first["avg_duration_s"] == Decimal("20.0")
    assert first["p95_duration_s"] == pytest.approx(29.0)
    assert first["worker_title"] == "wa title"


async def test_runs_in_flight_lists_unfinished_runs_with_their_age(
    store: Store, engine: AsyncEngine
) -> None:
    """Only ready/running/aborting runs that have not vanished, with a positive age."""
    now = dt.datetime.now(dt.UTC)
    batch = [
        run("r1", "w", Status.RUNNING, now - dt.timedelta(hours=2)),
        run("r2", "w", Status.READY, now - dt.timedelta(minutes=1)),
        run("r3", "w", Status.SUCCEEDED, now - dt.timedelta(hours=3)),
        run("r4", "w", Status.ABORTING, now - dt.timedelta(minutes=5)),
    ]
    await store.save_batch(Source.V2, batch, observed_at=now)
    await store.mark_vanished(["r4"], now)
    flight = await rows(engine, "SELECT slug, status, age_s FROM runs_in_flight ORDER BY slug")
    assert [(r["slug"], r["status"]) for r in flight] == [("r1", "running"), ("r2", "ready")]
    assert 7100 < flight[0]["age_s"] < 7300


async def test_run_status_durations_from_history(store: Store, engine: AsyncEngine) -> None:
    """Time in each status is the gap to the next status first seen; a finished run's last
    status has no duration; a stale late sighting gets NULL, not a negative number."""
    t0 = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC)
    steps = [(Status.READY, 0), (Status.RUNNING, 60), (Status.SUCCEEDED, 300)]
    for status, seconds in steps:
        await store.save_batch(Source.V2, [run("d1", "w", status, t0)],
                               observed_at=t0 + dt.timedelta(seconds=seconds))  # fmt: skip
    # a run seen finished first, then (stale) as running
    await store.save_batch(Source.V1, [run("d2", "w", Status.FAILED, t0)], observed_at=t0)
    late = t0 + dt.timedelta(seconds=30)
    await store.save_batch(Source.V1, [run("d2", "w", Status.RUNNING, t0)], observed_at=late)
    spans = await rows(engine, "SELECT run_slug, status, duration_s FROM run_status_durations "
                               "ORDER BY run_slug, entered_at")  # fmt: skip
    assert [(s["run_slug"], s["status"], s["duration_s"]) for s in spans] == [
        ("d1", "ready", 60),
        ("d1", "running", 240),
        ("d1", "succeeded", None),
        ("d2", "failed", None),
        ("d2", "running", None),
    ]


UNITS = {"_usd": "usd", "_bytes": "bytes", "_s": "seconds"}


async def test_every_table_view_and_column_is_described(engine: AsyncEngine) -> None:
    """BI tools show a comment for every relation and column, with units where they apply."""
    missing = await rows(engine, """
        SELECT c.relname, a.attname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'v') AND col_description(c.oid, a.attnum) IS NULL
    """)  # fmt: skip
    assert missing == []
    bare = await rows(engine, """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')
          AND obj_description(c.oid, 'pg_class') IS NULL
    """)  # fmt: skip
    assert bare == []
    described = await rows(engine, """
        SELECT c.relname, a.attname, col_description(c.oid, a.attnum) AS comment,
               format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'v')
    """)  # fmt: skip
    assert len(described) > 60
    for col in described:
        where = f"{col['relname']}.{col['attname']}"
        for suffix, unit in UNITS.items():
            if col["attname"].endswith(suffix):
                assert unit in col["comment"].lower(), where
        if col["type"] == "timestamp with time zone":
            assert "UTC" in col["comment"], where
