"""Storage on a real PostgreSQL: upsert, no-op suppression, lifecycle, history, rejects."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.clock import Clock
from syncd.models import STATUS_RANK, Reject, Run, Source, Status
from syncd.recent import TTL_S
from syncd.storage import PageProgress, Store

T0 = dt.datetime(2026, 3, 12, 8, 0, tzinfo=dt.UTC)


def make_run(slug: str = "R1", **changes: Any) -> Run:
    base = Run(
        slug=slug,
        worker_slug="w-1",
        worker_title="Worker One",
        status=Status.RUNNING,
        status_raw="running",
        err_msg="",
        results=0,
        usage_usd=Decimal("0.010"),
        traffic_bytes=100,
        started_at=T0,
        finished_at=None,
        duration_s=0,
        origin="api",
        version="v1.0.0",
        source=Source.V2,
    )
    return base._replace(**changes)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


async def fetch(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]


async def execute(engine: AsyncEngine, sql: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql))


async def run_row(engine: AsyncEngine, slug: str = "R1") -> dict[str, Any]:
    rows = await fetch(engine, "SELECT *, xmin::text AS xmin FROM runs WHERE slug = :s", s=slug)
    assert len(rows) == 1
    return rows[0]


async def test_insert_creates_run_history_and_worker(store: Store, engine: AsyncEngine) -> None:
    """A new run lands with every field, one history row and its worker."""
    result = await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    assert (result.inserted, result.updated, result.history_added) == (1, 0, 1)
    row = await run_row(engine)
    assert row["worker_slug"] == "w-1" and row["status"] == "running"
    assert row["usage_usd"] == Decimal("0.010") and row["started_at"] == T0
    assert row["first_seen_at"] == row["last_seen_at"] == row["updated_at"] == at(0)
    assert row["source"] == "v2"
    history = await fetch(
        engine, "SELECT run_slug, status, observed_at, source FROM run_status_history"
    )
    assert history == [
        {"run_slug": "R1", "status": "running", "observed_at": at(0), "source": "v2"}
    ]
    assert await fetch(engine, "SELECT slug, title FROM workers") == [
        {"slug": "w-1", "title": "Worker One"}
    ]


@pytest.mark.parametrize(
    ("usage", "started"),
    [
        (Decimal("1E+2"), dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)),
        (Decimal("0.000"), dt.datetime(1969, 7, 20, 20, 17, 40, 500_001, tzinfo=dt.UTC)),
        (Decimal("-12345678901234567890.123456789"), dt.datetime(1, 1, 1, tzinfo=dt.UTC)),
        (None, dt.datetime(2026, 3, 12, 8, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))),
    ],
)
async def test_staged_values_arrive_exactly(
    store: Store, engine: AsyncEngine, usage: Decimal | None, started: dt.datetime
) -> None:
    """Usage and times travel through the stage as text and epoch microseconds, unchanged."""
    await store.save_batch(
        Source.V2, [make_run(usage_usd=usage, started_at=started)], observed_at=at(0)
    )
    row = await run_row(engine)
    assert row["usage_usd"] == usage and row["started_at"] == started
    # The scale too: as a numeric parameter (asyncpg's binary encoding) would store it.
    [stored] = await fetch(engine, "SELECT usage_usd::text AS t FROM runs")
    [direct] = await fetch(engine, "SELECT CAST(:u AS numeric)::text AS t", u=usage)
    assert stored == direct
    assert row["finished_at"] is None


async def test_unchanged_observation_writes_nothing(store: Store, engine: AsyncEngine) -> None:
    """Re-saving identical content leaves the row's xmin and timestamps untouched."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    before = await run_row(engine)
    result = await store.save_batch(Source.V2, [make_run()], observed_at=at(5))
    after = await run_row(engine)
    assert (result.inserted, result.updated, result.history_added) == (0, 0, 0)
    assert after["xmin"] == before["xmin"]
    assert after["updated_at"] == at(0)


async def test_changed_observation_updates_row(store: Store, engine: AsyncEngine) -> None:
    """A status change rewrites the row, bumps updated_at and appends history."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    done = make_run(status=Status.SUCCEEDED, status_raw="succeeded", finished_at=at(3), results=7)
    result = await store.save_batch(Source.V2, [done], observed_at=at(5))
    assert (result.inserted, result.updated, result.history_added) == (0, 1, 1)
    row = await run_row(engine)
    assert (row["status"], row["results"], row["finished_at"]) == ("succeeded", 7, at(3))
    assert row["first_seen_at"] == at(0) and row["updated_at"] == at(5)
    statuses = await fetch(engine, "SELECT status FROM run_status_history ORDER BY observed_at")
    assert [r["status"] for r in statuses] == ["running", "succeeded"]


@pytest.mark.parametrize(
    ("stored", "incoming", "expected"),
    [
        (Status.SUCCEEDED, Status.RUNNING, Status.SUCCEEDED),
        (Status.ABORTING, Status.RUNNING, Status.ABORTING),
        (Status.RUNNING, Status.READY, Status.RUNNING),
        (Status.ABORTING, Status.ABORTED, Status.ABORTED),
        (Status.READY, Status.FAILED, Status.FAILED),
        (Status.RUNNING, Status.UNKNOWN, Status.RUNNING),
        (Status.UNKNOWN, Status.READY, Status.READY),
    ],
)
async def test_lifecycle_never_moves_backwards_across_sources(
    store: Store, engine: AsyncEngine, stored: Status, incoming: Status, expected: Status
) -> None:
    """An observation from the other endpoint cannot move a run back in its lifecycle."""
    await store.save_batch(
        Source.V2, [make_run(status=stored, status_raw=stored.value)], observed_at=at(0)
    )
    await store.save_batch(
        Source.V1, [make_run(status=incoming, status_raw="x", source=Source.V1)], observed_at=at(1)
    )
    row = await run_row(engine)
    assert row["status"] == expected.value
    history = {r["status"] for r in await fetch(engine, "SELECT status FROM run_status_history")}
    assert history == {stored.value, incoming.value}


async def test_sources_spelling_a_run_differently_do_not_ping_pong(
    store: Store, engine: AsyncEngine
) -> None:
    """v1 and v2 disagreeing on a field write once each, then never again."""
    v1 = make_run(origin="api", source=Source.V1, status_raw="2")
    v2 = make_run(origin="openapi", source=Source.V2)
    assert (await store.save_batch(Source.V1, [v1], observed_at=at(0))).changed == 1
    assert (await store.save_batch(Source.V2, [v2], observed_at=at(1))).changed == 1
    settled = await run_row(engine)
    for minute in range(2, 8):
        source, run = (Source.V1, v1) if minute % 2 == 0 else (Source.V2, v2)
        result = await store.save_batch(source, [run], observed_at=at(minute))
        assert result.changed == 0
    assert (await run_row(engine))["xmin"] == settled["xmin"]


async def test_batch_with_duplicate_slugs_keeps_most_advanced(
    store: Store, engine: AsyncEngine
) -> None:
    """Duplicates within one batch collapse to the furthest status; history keeps both."""
    batch = [make_run(status=Status.SUCCEEDED, status_raw="succeeded"), make_run()]
    result = await store.save_batch(Source.V2, batch, observed_at=at(0))
    assert result.inserted == 1
    assert (await run_row(engine))["status"] == "succeeded"
    assert result.history_added == 2


async def test_rejects_are_kept_once_with_raw_payload(store: Store, engine: AsyncEngine) -> None:
    """A reject stores its raw JSON and reason; the same payload again adds no row."""
    bad = {"slug": None, "status": 9, "note": "nul\x00byte"}
    reject = Reject(Source.V1, bad, "slug is missing")
    await store.save_batch(Source.V1, [make_run()], [reject], observed_at=at(0), seen=2)
    await store.save_batch(Source.V1, [], [reject], observed_at=at(1), seen=1)
    rows = await fetch(engine, "SELECT stream, reason, raw FROM sync_rejects")
    assert len(rows) == 1
    assert rows[0]["stream"] == "v1" and rows[0]["reason"] == "slug is missing"
    assert rows[0]["raw"]["status"] == 9 and rows[0]["raw"]["note"] == "nul\\u0000byte"
    assert len(await fetch(engine, "SELECT slug FROM runs")) == 1


async def test_progress_counters_and_checkpoint(store: Store, engine: AsyncEngine) -> None:
    """sync_state accumulates pages and rows and keeps the latest checkpoint."""
    runs = [make_run(f"R{i}") for i in range(3)]
    await store.save_batch(
        Source.V2, runs, observed_at=at(0), progress=PageProgress(checkpoint={"next_page": 1})
    )
    await store.save_batch(
        Source.V2, runs, observed_at=at(1), progress=PageProgress(checkpoint={"next_page": 2})
    )
    state = await store.load_state(Source.V2)
    assert state is not None
    assert (state["pages_fetched"], state["rows_seen"], state["rows_changed"]) == (2, 6, 3)
    assert state["checkpoint"] == {"next_page": 2}


async def test_progress_without_checkpoint_keeps_the_stored_one(store: Store) -> None:
    """A batch with no checkpoint adds its counters and leaves the saved checkpoint alone."""
    await store.save_batch(
        Source.V1, [make_run()], observed_at=at(0), progress=PageProgress(checkpoint={"p": 1})
    )
    reject = Reject(Source.V1, {"slug": None}, "slug is missing")
    await store.save_batch(
        Source.V1, [make_run("R2")], [reject], observed_at=at(1), progress=PageProgress(pages=2),
        seen=2,
    )  # fmt: skip
    state = await store.load_state(Source.V1)
    assert state is not None
    assert state["checkpoint"] == {"p": 1}
    assert (state["pages_fetched"], state["rows_seen"], state["rows_changed"]) == (3, 3, 2)
    assert state["rows_rejected"] == 1 and state["cycles"] == 0
    assert await store.load_state(Source.V2) is None


async def test_copy_sends_runs_field_for_field(store: Store, engine: AsyncEngine) -> None:
    """Every Run field lands in its column, NULLs included (COPY sends the tuple as is)."""
    run = make_run(
        worker_title=None, err_msg="boom", results=None, usage_usd=None, traffic_bytes=2**40,
        started_at=None, finished_at=at(2), duration_s=None, origin=None, version=None,
        status_raw="2", source=Source.V1,
    )  # fmt: skip
    await store.save_batch(Source.V1, [run], observed_at=at(3))
    row = await run_row(engine)
    for field in Run._fields:
        assert row[field] == getattr(run, field), field


async def test_sql_status_rank_matches_python(engine: AsyncEngine) -> None:
    """syncd_status_rank() in the database agrees with models.STATUS_RANK."""
    for status, rank in STATUS_RANK.items():
        rows = await fetch(engine, "SELECT syncd_status_rank(:s) AS r", s=status.value)
        assert rows[0]["r"] == rank, status


@pytest.mark.parametrize(
    ("stored", "observed"),
    [
        ({"results": None}, {"results": 3}),
        ({"usage_usd": None}, {"usage_usd": Decimal("0.065")}),  # usage "n/a" -> a value
        ({"err_msg": None}, {"err_msg": "worker crashed"}),
        ({"finished_at": None}, {"finished_at": T0}),
        ({"results": 3}, {"results": None}),
    ],
)
async def test_a_change_of_only_a_null_field_is_written(
    store: Store, engine: AsyncEngine, stored: dict[str, Any], observed: dict[str, Any]
) -> None:
    """A field going from or to NULL, nothing else changing, rewrites the row (IS DISTINCT FROM)."""
    await store.save_batch(Source.V2, [make_run(**stored)], observed_at=at(0))
    result = await store.save_batch(Source.V2, [make_run(**observed)], observed_at=at(5))
    assert (result.inserted, result.updated) == (0, 1)
    row = await run_row(engine)
    assert {field: row[field] for field in observed} == observed
    assert row["updated_at"] == at(5)


async def test_a_same_rank_change_observed_at_the_stored_instant_is_written(
    store: Store, engine: AsyncEngine
) -> None:
    """An observation made no earlier than the stored one (here: at the same instant) applies."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    v1 = make_run(results=5, source=Source.V1, status_raw="2")
    result = await store.save_batch(Source.V1, [v1], observed_at=at(0))
    assert result.updated == 1
    row = await run_row(engine)
    assert (row["results"], row["source"]) == (5, "v1")


async def test_an_older_observation_of_the_same_rank_changes_nothing(
    store: Store, engine: AsyncEngine
) -> None:
    """A page fetched before the stored observation but committed after it is not applied."""
    await store.save_batch(Source.V2, [make_run(results=7)], observed_at=at(5))
    v1 = make_run(results=3, source=Source.V1, status_raw="2")
    result = await store.save_batch(Source.V1, [v1], observed_at=at(2))
    assert result.changed == 0
    row = await run_row(engine)
    assert (row["results"], row["source"], row["last_seen_at"]) == (7, "v2", at(5))


async def test_seen_times_never_move_backwards(store: Store, engine: AsyncEngine) -> None:
    """A further status observed earlier than the stored one applies; the times keep the later."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(10))
    done = make_run(status=Status.SUCCEEDED, status_raw="3", source=Source.V1)
    result = await store.save_batch(Source.V1, [done], observed_at=at(4))
    assert result.updated == 1
    row = await run_row(engine)
    assert row["status"] == "succeeded"
    assert (row["last_seen_at"], row["updated_at"]) == (at(10), at(10))


@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed"])
async def test_a_vanished_run_listed_again_is_no_longer_vanished(
    store: Store, engine: AsyncEngine, changed: bool
) -> None:
    """A run marked vanished that a list shows again, changed or not, has vanished_at cleared."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    assert await store.mark_vanished(["R1"], at(1)) == 1
    assert await store.in_flight_runs() == []
    again = make_run(results=4) if changed else make_run()
    result = await store.save_batch(Source.V2, [again], observed_at=at(2))
    assert result.updated == 1
    row = await run_row(engine)
    assert (row["vanished_at"], row["last_seen_at"]) == (None, at(2))
    assert [r.slug for r in await store.in_flight_runs()] == ["R1"]


async def test_marking_a_run_vanished_again_keeps_the_first_time(
    store: Store, engine: AsyncEngine
) -> None:
    """mark_vanished leaves runs already vanished alone (and does not count them)."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    assert await store.mark_vanished(["R1"], at(1)) == 1
    assert await store.mark_vanished(["R1"], at(2)) == 0
    assert (await run_row(engine))["vanished_at"] == at(1)


async def test_batch_duplicates_of_one_rank_keep_the_last_observation(
    store: Store, engine: AsyncEngine
) -> None:
    """Of two observations of a run at one rank in one batch, the later (batch order) is stored."""
    batch = [make_run(results=1), make_run(results=2)]
    await store.save_batch(Source.V2, batch, observed_at=at(0))
    assert (await run_row(engine))["results"] == 2


async def test_a_run_without_a_title_keeps_its_workers_title(
    store: Store, engine: AsyncEngine
) -> None:
    """A worker's known title is not blanked by a run that carries none."""
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    await store.save_batch(Source.V2, [make_run("R2", worker_title=None)], observed_at=at(1))
    assert await fetch(engine, "SELECT slug, title FROM workers") == [
        {"slug": "w-1", "title": "Worker One"}
    ]


async def test_a_failed_full_scan_is_not_recorded_as_one(store: Store) -> None:
    """A full-scan cycle that ends in an error records the error, not last_full_scan_at."""
    await store.finish_cycle(Source.V1, at(1), error="boom", full_scan=True, kind="backfill")
    state = await store.load_state(Source.V1)
    assert state is not None
    assert (state["last_full_scan_at"], state["last_success_at"]) == (None, None)
    assert (state["last_error"], state["last_error_at"]) == ("boom", at(1))
    await store.finish_cycle(Source.V1, at(2), full_scan=True, kind="backfill")
    state = await store.load_state(Source.V1)
    assert state is not None
    assert state["last_full_scan_at"] == state["last_success_at"] == at(2)


# -- runs stored just so are not sent again (recent.py) ---------------------------


def merged_rows(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The slugs each merge sent to PostgreSQL, batch by batch (the real merge runs)."""
    sent: list[list[str]] = []
    merge = store._merge

    async def counting(conn: Any, rows: list[Any], *args: Any) -> None:
        sent.append([r[0] for r in rows])
        await merge(conn, rows, *args)

    monkeypatch.setattr(store, "_merge", counting)
    return sent


async def test_the_other_endpoints_copy_of_a_stored_run_is_not_sent(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2 then v1 report a run alike (v1 spells the status 2): the second batch sends only
    the run that is new and writes nothing else -- as the merge would have decided."""
    sent = merged_rows(store, monkeypatch)
    first = [make_run("R1"), make_run("R2")]
    await store.save_batch(Source.V2, first, observed_at=at(0), progress=PageProgress())
    before = await run_row(engine, "R1")
    v1 = make_run("R1", status_raw="2", source=Source.V1)
    result = await store.save_batch(
        Source.V1, [v1, make_run("R3")], observed_at=at(1), progress=PageProgress()
    )
    assert sent == [["R1", "R2"], ["R3"]]
    assert (result.seen, result.inserted, result.updated, result.history_added) == (2, 1, 0, 1)
    assert await run_row(engine, "R1") == before
    counts = await fetch(engine, "SELECT rows_seen, rows_changed FROM sync_state ORDER BY stream")
    assert counts == [{"rows_seen": 2, "rows_changed": 1}, {"rows_seen": 2, "rows_changed": 2}]


async def test_both_endpoints_saving_the_same_runs_at_once_merge_them_once(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of the two streams that carry the same runs, saved concurrently: the second
    waits for the first and sends what that one did not store."""
    sent = merged_rows(store, monkeypatch)
    batch = [make_run(f"R{i}") for i in range(50)]
    newer = [*batch[:10], make_run("R10", results=3), *batch[11:]]
    await asyncio.gather(
        store.save_batch(Source.V2, batch, observed_at=at(0)),
        store.save_batch(Source.V1, newer, observed_at=at(1)),
    )
    assert sent == [[r.slug for r in batch], ["R10"]]
    rows = await fetch(engine, "SELECT slug, results, updated_at FROM runs ORDER BY slug")
    assert len(rows) == 50
    assert {r["slug"]: (r["results"], r["updated_at"]) for r in rows}["R10"] == (3, at(1))


async def test_a_reconcile_sends_every_run_and_restores_one_deleted_behind_syncds_back(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row deleted by someone else is not restored by a batch that trusts what this
    process stored -- until that memory expires -- but a reconcile's batch restores it."""
    now = [0.0]
    store = Store(engine, clock=Clock(monotonic=lambda: now[0]))
    sent = merged_rows(store, monkeypatch)
    await store.save_batch(Source.V2, [make_run()], observed_at=at(0))
    await execute(engine, "DELETE FROM runs")
    await store.save_batch(Source.V2, [make_run()], observed_at=at(1))
    assert await fetch(engine, "SELECT slug FROM runs") == []
    await store.save_batch(Source.V2, [make_run()], observed_at=at(2), skip_known=False)
    assert await fetch(engine, "SELECT slug FROM runs") == [{"slug": "R1"}]

    await execute(engine, "DELETE FROM runs")
    now[0] = TTL_S  # what this process stored is forgotten after ttl_s at the latest
    await store.save_batch(Source.V2, [make_run()], observed_at=at(3))
    assert await fetch(engine, "SELECT slug FROM runs") == [{"slug": "R1"}]
    assert sent == [["R1"], ["R1"], ["R1"]]
