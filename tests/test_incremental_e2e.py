"""The incremental engine end to end: steady state, in-flight refresh, reconcile, daemon, kill -9.

The simulator runs on 127.0.0.1 (in process, or as `syncd fake-api`), the
database is a real PostgreSQL; every loop is bounded in count and time and
every server or process a test starts is stopped by that test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.client import CoreClawClient
from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.fakeapi import FakeApi, FakeApiConfig, RequestRecord
from syncd.models import CONTENT_FIELDS, STATUS_RANK, Source, Status
from syncd.normalize import normalize
from syncd.storage import Store
from syncd.sync import CycleKind, CycleReport, StreamSync
from tests import test_client
from tests.support.processes import SYNCD, env_for, get_json
from tests.support.settings import LOCAL_RATE
from tests.support.settings import settings_for as support_settings
from tests.support.simulator import serve, simulator_process
from tests.support.truth import diff, expected_rows, stored_rows
from tests.test_client import V1, MakeClient, Upstream, ok

# The scripted upstream and its client, for cycles that need an exact list.
clock, upstream, make_client = test_client.clock, test_client.upstream, test_client.make_client

KEY = "incremental-e2e-key"
BOTH = [Source.V1, Source.V2]
PATHS = {Source.V1: "/api/v1/run/list", Source.V2: "/api/v2/worker-runs"}
WORKER_FILTER = {Source.V1: "scraper_slug", Source.V2: "worker_id"}
RUNNING_RAW = {Source.V1: "2", Source.V2: "running"}


# ---- helpers -----------------------------------------------------------------


def settings_for(url: str, db_url: str, **overrides: Any) -> Settings:
    values = {"page_size_v1": 100, "page_size_v2": 100, "max_retries": 3, **LOCAL_RATE}
    return support_settings(url, db_url, KEY, **{**values, **overrides})


@asynccontextmanager
async def stream_syncs(
    settings: Settings, store: Store, streams: Iterable[Source]
) -> AsyncIterator[dict[Source, StreamSync]]:
    """One StreamSync per stream, kept across cycles (v2 probes its offset mode once)."""
    async with CoreClawClient(settings) as client:
        yield {s: StreamSync(s, client, store, settings) for s in streams}


async def cycle(syncs: dict[Source, StreamSync], **kw: Any) -> dict[Source, CycleReport]:
    """One cycle of every stream, concurrently."""
    reports = await asyncio.gather(*(s.run_cycle(**kw) for s in syncs.values()))
    return dict(zip(syncs, reports, strict=True))


def requests_of(api: FakeApi, since: int, stream: Source) -> list[RequestRecord]:
    return [r for r in api.requests[since:] if r.path == PATHS[stream]]


def request_kind(record: RequestRecord, stream: Source) -> str:
    """'head' (the unfiltered list), 'status' or 'worker' (a filtered list)."""
    if record.params.get(WORKER_FILTER[stream]):
        return "worker"
    if record.params.get("status"):  # v1 sends 0 for "all"
        return "status"
    return "head"


async def fetch_all(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def write_marks(engine: AsyncEngine) -> tuple[Any, ...]:
    """Row versions of the run tables: equal before and after only if nothing was written."""
    (row,) = await fetch_all(
        engine,
        "SELECT (SELECT sum(xmin::text::bigint) FROM runs),"
        " (SELECT count(*) FROM run_status_history),"
        " (SELECT sum(xmin::text::bigint) FROM workers)",
    )
    return tuple(row)


async def make_running(engine: AsyncEngine, slug: str, stream: Source) -> None:
    """Turn a stored run back into what `stream` stored while it was running."""
    await execute(
        engine,
        "UPDATE runs SET status = 'running', status_raw = :raw, err_msg = '', results = 0,"
        " usage_usd = 0, traffic_bytes = 0, finished_at = NULL, duration_s = 0"
        " WHERE slug = :slug",
        slug=slug,
        raw=RUNNING_RAW[stream],
    )
    # ... including the digest of that observation, as the merge would have left it.
    await execute(
        engine,
        f"UPDATE runs SET digest_{stream.value} = md5(ROW({', '.join(CONTENT_FIELDS)})::text)"
        " WHERE slug = :slug",
        slug=slug,
    )


async def insert_ghost(engine: AsyncEngine, slug: str, worker: str, started_at: int) -> None:
    """A stored in-flight run that no upstream list shows."""
    await execute(
        engine,
        "INSERT INTO runs (slug, worker_slug, status, status_raw, started_at, source,"
        " first_seen_at, last_seen_at, updated_at)"
        " VALUES (:slug, :worker, 'running', 'running', :started, 'v2', now(), now(), now())",
        slug=slug,
        worker=worker,
        started=dt.datetime.fromtimestamp(started_at, dt.UTC),
    )


async def sync_state(engine: AsyncEngine, stream: Source) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT * FROM sync_state WHERE stream = :s"), {"s": stream.value}
        )
        return dict(result.mappings().one())


# ---- 1. steady state -----------------------------------------------------------


async def test_steady_state_is_cheap_and_churn_lands_in_one_cycle(
    db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """After a backfill, a quiet incremental cycle costs <= 2 requests per stream and writes
    nothing; after churn, one cheap incremental cycle makes the database equal the truth."""
    config = FakeApiConfig(runs=3000, api_key=KEY, scenarios=frozenset({"churn"}), tick_s=0)
    async with (
        serve(config) as (api, url),
        stream_syncs(settings_for(url, db_url), store, BOTH) as syncs,
    ):
        backfill = await cycle(syncs)
        assert {r.kind for r in backfill.values()} == {CycleKind.BACKFILL}
        assert all(r.completed for r in backfill.values())
        assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []

        marks, since = await write_marks(engine), len(api.requests)
        quiet = await cycle(syncs)
        for stream, report in quiet.items():
            assert report.kind is CycleKind.INCREMENTAL and report.completed
            assert report.requests <= 2, report.as_log()
            assert len(requests_of(api, since, stream)) <= 2
            assert report.result.changed == 0 and report.result.history_added == 0
        assert await write_marks(engine) == marks, "a no-op cycle rewrote rows"

        api.tick(5)  # 10 new runs at the head, 10 in-flight runs one stage on
        since = len(api.requests)
        churned = await cycle(syncs)
        assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []
        for stream, report in churned.items():
            assert report.kind is CycleKind.INCREMENTAL and report.completed
            assert report.requests <= 4, report.as_log()
            assert len(requests_of(api, since, stream)) <= 4
        assert sum(r.result.inserted for r in churned.values()) == 10


# ---- 2. in-flight refresh ------------------------------------------------------


@pytest.mark.parametrize("stream", BOTH, ids=lambda s: s.value)
async def test_old_run_finishing_is_caught_without_a_full_scan(
    stream: Source, db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """A stored running run deep in the history that finished upstream is refreshed through
    the status filter then the worker filter; a stored in-flight run that no list shows is
    marked vanished once and not looked for again."""
    async with (
        serve(FakeApiConfig(runs=3000, api_key=KEY)) as (api, url),
        stream_syncs(settings_for(url, db_url), store, [stream]) as syncs,
    ):
        (full,) = (await cycle(syncs)).values()
        assert full.kind is CycleKind.BACKFILL and full.completed
        truth = api.truth()
        old = truth[1499]
        assert old["status"] in {"succeeded", "failed", "aborted"}
        await make_running(engine, old["slug"], stream)
        store.recent.forget([old["slug"]])  # as stored by an earlier syncd: this one recalls none
        other = next(t["scraper_slug"] for t in truth if t["scraper_slug"] != old["scraper_slug"])
        ghost = "GHOST0000000000000000000000"
        await insert_ghost(engine, ghost, other, truth[0]["started_at"] - 15)

        since = len(api.requests)
        (report,) = (await cycle(syncs)).values()
        sent = requests_of(api, since, stream)
        assert report.kind is CycleKind.INCREMENTAL and report.completed
        assert (report.refreshed, report.vanished) == (1, 1)
        assert len(sent) == report.requests <= full.requests // 3, [r.params for r in sent]
        kinds = [request_kind(r, stream) for r in sent]
        assert kinds[0] == "head" and "status" in kinds and "worker" in kinds, kinds
        assert kinds.index("status") < kinds.index("worker"), kinds
        asked = {
            str(r.params[WORKER_FILTER[stream]])
            for r in sent
            if request_kind(r, stream) == "worker"
        }
        assert asked == {old["scraper_slug"], other}

        stored = await stored_rows(engine)
        assert stored.pop(ghost)["status"] == "running"
        assert diff(expected_rows(truth, stream.value), stored) == []
        ((vanished_at,),) = await fetch_all(
            engine, "SELECT vanished_at FROM runs WHERE slug = :s", s=ghost
        )
        assert vanished_at is not None

        since = len(api.requests)
        (again,) = (await cycle(syncs)).values()
        assert again.completed and (again.refreshed, again.vanished) == (0, 0)
        assert again.requests == len(requests_of(api, since, stream)) == 1
        assert await fetch_all(engine, "SELECT vanished_at FROM runs WHERE slug = :s", s=ghost) == [
            (vanished_at,)
        ]


async def test_a_workers_list_is_paged_until_every_missing_run_is_found(
    make_client: MakeClient, upstream: Upstream, store: Store, engine: AsyncEngine
) -> None:
    """Two in-flight runs of one worker left their status lists: its list is paged past the
    first one found and past the oldest start time, because the other was stored while ready
    (no started_at) and may be anywhere below."""
    now = int(time.time())
    item = {"scraper_slug": "w", "status": 3, "started_at": now - 600, "finished_at": now - 60}
    worker_pages = {
        1: [{**item, "slug": "A"}, {**item, "slug": "X", "started_at": now - 900}],
        2: [{**item, "slug": "B", "started_at": now - 1200}],
    }

    def served(url: Any, kwargs: dict[str, Any]) -> Any:
        body = kwargs["json"]
        found = worker_pages.get(body["page_index"], []) if body.get("scraper_slug") else []
        return ok(found, count=3 if body.get("scraper_slug") else 0)(url, kwargs)

    upstream.fallback[V1] = served
    in_flight = [
        {"slug": "A", "scraper_slug": "w", "status": 2, "started_at": now - 600},
        {"slug": "B", "scraper_slug": "w", "status": 1},  # ready: not started yet
    ]
    stored = [run for i in in_flight if (run := normalize(i, Source.V1).run) is not None]
    backfilled_at = dt.datetime.now(dt.UTC)
    await store.save_batch(Source.V1, stored, observed_at=backfilled_at)
    await store.finish_cycle(Source.V1, backfilled_at, full_scan=True, kind="backfill")
    client = make_client(page_size_v1=2)
    report = await StreamSync(Source.V1, client, store, client._settings).run_cycle()
    assert report.kind is CycleKind.INCREMENTAL and report.completed
    assert (report.refreshed, report.vanished) == (2, 0)
    rows = await fetch_all(engine, "SELECT slug, status, vanished_at FROM runs ORDER BY slug")
    assert rows == [("A", "succeeded", None), ("B", "succeeded", None), ("X", "succeeded", None)]
    worker = [
        c.kwargs["json"]["page_index"]
        for c in upstream.to(V1)
        if "scraper_slug" in c.kwargs["json"]
    ]
    assert worker == [1, 2]


# ---- 3. reconciliation ---------------------------------------------------------


async def test_reconcile_restores_rows_the_incremental_path_cannot_see(
    db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """Deep rows lost after a backfill stay lost through incremental cycles; a reconcile
    (asked for, or due) restores them and records how many it corrected."""
    async with serve(FakeApiConfig(runs=3000, api_key=KEY)) as (api, url):
        truth = api.truth()
        lost = [truth[i]["slug"] for i in (700, 1400, 2100, 2800)]
        async with stream_syncs(settings_for(url, db_url), store, BOTH) as syncs:
            await cycle(syncs)
            await execute(engine, "DELETE FROM runs WHERE slug = ANY(:s)", s=lost)
            incremental = await cycle(syncs)
            assert {r.kind for r in incremental.values()} == {CycleKind.INCREMENTAL}
            assert sum(r.result.changed for r in incremental.values()) == 0
            assert (await stored_rows(engine)).keys().isdisjoint(lost)

            asked = await syncs[Source.V1].run_cycle(full=True)
        assert asked.kind is CycleKind.RECONCILE and asked.completed
        assert (asked.result.inserted, asked.result.changed) == (4, 4)
        state = await sync_state(engine, Source.V1)
        assert state["last_reconcile_corrected"] == 4 and state["checkpoint"] is None
        assert state["last_cycle_kind"] == "reconcile"
        assert diff(expected_rows(truth), await stored_rows(engine)) == []

        lost = [truth[i]["slug"] for i in (1000, 2500)]
        await execute(engine, "DELETE FROM runs WHERE slug = ANY(:s)", s=lost)
        due = settings_for(url, db_url, reconcile_interval_s=0.001)
        async with stream_syncs(due, store, [Source.V2]) as syncs:
            (report,) = (await cycle(syncs)).values()
        assert report.kind is CycleKind.RECONCILE and report.completed
        assert (await sync_state(engine, Source.V2))["last_reconcile_corrected"] == 2
        assert diff(expected_rows(truth), await stored_rows(engine)) == []


async def test_full_cycle_ignores_a_saved_checkpoint(
    db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--full` after an interrupted backfill pages from the top: page_index 1 comes first."""
    async with (
        serve(FakeApiConfig(runs=600, api_key=KEY)) as (api, url),
        stream_syncs(settings_for(url, db_url), store, [Source.V1]) as syncs,
    ):
        stop = asyncio.Event()
        save_batch = store.save_batch

        async def save_then_stop(*args: Any, **kwargs: Any) -> Any:
            stop.set()
            return await save_batch(*args, **kwargs)

        monkeypatch.setattr(store, "save_batch", save_then_stop)
        (first,) = (await cycle(syncs, stop=stop)).values()
        monkeypatch.setattr(store, "save_batch", save_batch)
        assert not first.completed
        assert (await store.load_state(Source.V1) or {})["checkpoint"]["next_page"] >= 1

        since = len(api.requests)
        (full,) = (await cycle(syncs, full=True)).values()
        assert full.completed
        pages = [r.params["page_index"] for r in requests_of(api, since, Source.V1)]
        assert pages[0] == 1, f"--full resumed at page_index {pages[0]}"


async def test_backfill_under_churn_skips_no_run(
    db_url: str, store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill whose pages are answered out of order while runs arrive at the head still
    stores every run (after one incremental cycle for the newest ones)."""
    config = FakeApiConfig(runs=300, api_key=KEY, scenarios=frozenset({"churn"}), tick_s=0)
    async with (
        serve(config) as (api, url),
        stream_syncs(settings_for(url, db_url, page_size_v1=20), store, [Source.V1]) as syncs,
    ):
        client = syncs[Source.V1].client
        fetch_page = client.fetch_page
        page_3_answered = asyncio.Event()
        held_back: list[int] = []

        async def page_2_answered_late(source: Source, number: int, *args: Any, **kw: Any) -> Any:
            # As when page 2 (0-based 1) meets a 429 and is retried after pages 3-5 went through.
            if number == 1 and not held_back:
                held_back.append(number)
                await asyncio.wait_for(page_3_answered.wait(), 10)
                api.tick()  # meanwhile two runs start at the head
            page = await fetch_page(source, number, *args, **kw)
            if number == 2:
                page_3_answered.set()
            return page

        monkeypatch.setattr(client, "fetch_page", page_2_answered_late)
        (backfill,) = (await cycle(syncs)).values()
        monkeypatch.setattr(client, "fetch_page", fetch_page)
        assert backfill.kind is CycleKind.BACKFILL and backfill.completed
        assert page_3_answered.is_set()
        (incremental,) = (await cycle(syncs)).values()
        assert incremental.completed
        assert diff(expected_rows(api.truth(), "v1"), await stored_rows(engine)) == []


# ---- 4. the daemon under churn and rate limits ----------------------------------


async def history_problems(engine: AsyncEngine) -> list[str]:
    """Runs whose history holds a status later in the lifecycle than their current one,
    or lacks their current status."""
    rows = await fetch_all(
        engine,
        "SELECT r.slug, r.status, array_agg(h.status) FROM runs r"
        " LEFT JOIN run_status_history h ON h.run_slug = r.slug GROUP BY r.slug, r.status",
    )
    problems = []
    for slug, status, history in rows:
        rank = STATUS_RANK[Status(status)]
        ahead = [h for h in history if h is not None and STATUS_RANK[Status(h)] > rank]
        if ahead or status not in history:
            problems.append(f"{slug}: status {status}, history {sorted(filter(None, history))}")
    return problems[:20]


async def wait_for_cycles(
    daemon: Daemon, task: asyncio.Task[Any], wanted: dict[str, int], deadline_s: float
) -> None:
    """Wait until each stream has returned from `wanted[stream]` cycles in all."""
    deadline = time.monotonic() + deadline_s
    while any(daemon.stats.cycles.get(s, 0) < n for s, n in wanted.items()):
        assert not task.done(), f"the daemon stopped on its own: {daemon.stats}"
        assert time.monotonic() < deadline, f"cycles {daemon.stats.cycles}, wanted {wanted}"
        await asyncio.sleep(0.05)


async def test_daemon_under_churn_and_rate_limits_ends_equal_to_truth(
    db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """The daemon keeps up with churn under a rate limit: once upstream is quiet and each
    stream has run another cycle, the database equals the truth, no request came early
    and every run's history is consistent with its status."""
    config = FakeApiConfig(
        runs=400,
        api_key=KEY,
        scenarios=frozenset({"churn", "ratelimit"}),
        tick_s=0,
        rate_limit_rps=20.0,
        rate_limit_burst=4,
    )
    async with serve(config) as (api, url):
        settings = settings_for(
            url,
            db_url,
            page_size_v1=20,
            page_size_v2=20,
            max_requests_per_s=80.0,
            initial_requests_per_s=40.0,
            max_retries=8,
            max_backoff_s=2.0,
        )
        async with CoreClawClient(settings) as client:
            daemon = Daemon(
                [StreamSync(s, client, store, settings) for s in BOTH],
                {s: 0.3 for s in BOTH},
                grace_s=5.0,
            )
            task = asyncio.create_task(daemon.run())
            try:
                for _ in range(15):  # ~3 s of churn, from the first backfill on
                    api.tick()
                    await asyncio.sleep(0.2)
                # +2: the first cycle to end may have started before the last tick
                wanted = {s.value: daemon.stats.cycles.get(s.value, 0) + 2 for s in BOTH}
                await wait_for_cycles(daemon, task, wanted, deadline_s=20)
            finally:
                daemon.stop.set()
                stats = await asyncio.wait_for(task, 15)
    assert stats.fatal is None
    assert diff(expected_rows(api.truth()), await stored_rows(engine)) == []
    limited = [r for r in api.requests if r.status == 429 or r.code in (13000, 4290)]
    assert limited, "the scenario should have rate limited at least once"
    assert [r for r in api.requests if r.early] == []
    assert await history_problems(engine) == []
    moved = await fetch_all(
        engine,
        "SELECT count(*) FROM (SELECT run_slug FROM run_status_history"
        " GROUP BY run_slug HAVING count(*) > 1) x",
    )
    assert moved[0][0] > 0, "churn should have moved some runs through several statuses"


# ---- 5. kill -9 mid-backfill ----------------------------------------------------


async def wait_for_checkpoint(
    engine: AsyncEngine, at_least: int, deadline_s: float, alive: Callable[[], bool]
) -> int:
    """Poll v1's checkpoint until its next_page reaches `at_least`."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and alive():
        try:
            rows = await fetch_all(engine, "SELECT checkpoint FROM sync_state WHERE stream = 'v1'")
        except SQLAlchemyError:  # not migrated yet
            rows = []
        if rows and rows[0][0] and rows[0][0].get("next_page", 0) >= at_least:
            return int(rows[0][0]["next_page"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no v1 checkpoint >= {at_least} (process alive: {alive()})")


async def test_kill_9_mid_backfill_resumes_instead_of_restarting(
    empty_db_url: str, engine_for: Callable[[str], AsyncEngine], tmp_path: Path
) -> None:
    """`sync --once` killed with SIGKILL mid-backfill leaves only whole, checkpointed pages;
    the next `sync --once --stream v1` resumes at the checkpoint and ends equal to the truth."""
    pages = 200  # 20000 runs, 100 per page; one pass also asks for the empty page 201
    async with simulator_process(KEY, "--runs", "20000", "--in-flight", "0") as base:
        env = env_for(
            SYNCD_API_URL=base,
            SYNCD_API_KEY=KEY,
            SYNCD_DATABASE_URL=empty_db_url,
            SYNCD_PAGE_SIZE_V1="100",
            SYNCD_PAGE_SIZE_V2="100",
            SYNCD_MAX_REQUESTS_PER_S="60",
            SYNCD_INITIAL_REQUESTS_PER_S="60",
        )
        engine = engine_for(empty_db_url)
        log_path = tmp_path / "killed.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *SYNCD, "sync", "--once", env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
            )  # fmt: skip
            try:
                await wait_for_checkpoint(engine, 20, 30, lambda: proc.returncode is None)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log_path.read_text()[-3000:]}") from None
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the backfill ended before the kill"

        # Only whole batches landed: the runs stored are exactly the checkpointed pages.
        truth = (await asyncio.to_thread(get_json, f"{base}/_fake/truth"))["runs"]
        # One statement, one snapshot: a commit the killed process sent before it died
        # may still be applied between two separate reads.
        ((checkpoints, slugs),) = await fetch_all(
            engine,
            "SELECT (SELECT json_object_agg(stream, checkpoint) FROM sync_state),"
            " ARRAY(SELECT slug FROM runs)",
        )
        states = {k: v for k, v in checkpoints.items() if v is not None}
        assert states["v1"]["page_size"] == 100
        v1_next = states["v1"]["next_page"]
        v2_next = (states.get("v2") or {}).get("next_page", 0)
        assert 20 <= v1_next < pages
        covered = 100 * max(v1_next, v2_next)
        stored = set(slugs)
        assert stored == {t["slug"] for t in truth[:covered]}

        before = len((await asyncio.to_thread(get_json, f"{base}/_fake/requests"))["requests"])
        proc = await asyncio.create_subprocess_exec(
            *SYNCD, "sync", "--once", "--stream", "v1",
            env={**env, "SYNCD_MAX_REQUESTS_PER_S": "300", "SYNCD_INITIAL_REQUESTS_PER_S": "300"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-3000:]
        log = (await asyncio.to_thread(get_json, f"{base}/_fake/requests"))["requests"]

    v1 = PATHS[Source.V1]
    killed = [r["params"]["page_index"] for r in log[:before] if r["path"] == v1]
    resumed = [r["params"]["page_index"] for r in log[before:] if r["path"] == v1]
    assert resumed[0] == v1_next + 1, "the restart must resume at the checkpoint"
    # ... and, once through, look at the head once for runs that arrived meanwhile
    assert [p for p in resumed if p <= v1_next] == [1]
    assert pages + 1 in resumed
    overlap = len(killed) - v1_next  # fetched by the killed process but never stored
    assert 0 <= overlap <= 8, killed[-10:]
    assert len(killed) + len(resumed) <= pages + 1 + 8 + 4, "more than one pass + a small overlap"
    assert diff(expected_rows(truth, "v1"), await stored_rows(engine)) == []
    state = await sync_state(engine, Source.V1)
    assert state["checkpoint"] is None and state["last_full_scan_at"] is not None
    assert state["last_cycle_kind"] == "backfill"
    assert "v1:" in out.decode()


async def test_sigterm_mid_backfill_exits_0_quickly_with_nothing_half_written(
    empty_db_url: str, engine_for: Callable[[str], AsyncEngine], tmp_path: Path
) -> None:
    """`syncd run` sent SIGTERM in the middle of a backfill exits 0 within 10 s; what it
    stored is exactly the checkpointed pages, and the checkpoint stays for the next start."""
    async with simulator_process(KEY, "--runs", "20000", "--in-flight", "0") as base:
        env = env_for(SYNCD_API_URL=base, SYNCD_API_KEY=KEY, SYNCD_DATABASE_URL=empty_db_url,
                      SYNCD_PAGE_SIZE_V1="100", SYNCD_PAGE_SIZE_V2="100",
                      SYNCD_MAX_REQUESTS_PER_S="60", SYNCD_INITIAL_REQUESTS_PER_S="60")  # fmt: skip
        engine = engine_for(empty_db_url)
        log_path = tmp_path / "run.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *SYNCD, "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log_file
            )
            try:
                await wait_for_checkpoint(engine, 10, 30, lambda: proc.returncode is None)
                proc.send_signal(signal.SIGTERM)
                started = time.monotonic()
                await asyncio.wait_for(proc.wait(), 10)
                took = time.monotonic() - started
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 0, log_path.read_text()[-3000:]
        assert took < 10
        truth = (await asyncio.to_thread(get_json, f"{base}/_fake/truth"))["runs"]
    states = dict(await fetch_all(engine, "SELECT stream, checkpoint FROM sync_state"))
    next_pages = [(states.get(s) or {}).get("next_page", 0) for s in ("v1", "v2")]
    assert 10 <= next_pages[0] < 200, "the backfill must have been stopped part-way"
    stored = {slug for (slug,) in await fetch_all(engine, "SELECT slug FROM runs")}
    assert stored == {t["slug"] for t in truth[: 100 * max(next_pages)]}
    assert "daemon_stopped" in log_path.read_text()
