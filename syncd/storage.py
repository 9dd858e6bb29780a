"""Writing runs, history, workers, rejects and sync state to PostgreSQL.

One batch is one transaction: rows are COPYed into a temporary staging table
and merged into the real tables by a single statement, so a page lands whole
or not at all.  The merge rules (all in `MERGE_SQL`):

* one row per run, keyed by slug;
* an observation whose status ranks below the stored one (ready < running <
  aborting < terminal, `syncd_status_rank()`) never touches the row, and one of
  the same rank only when it was made no earlier than the stored one (two
  streams' cycles overlap, so an older page can commit after a newer one);
* a row is rewritten only when its content differs from what is stored *and*
  from what the same endpoint reported last time (`digest_v1`/`digest_v2`),
  so no-op polls write nothing and v1 and v2 cannot ping-pong a row;
* `first_seen_at` is set once; `last_seen_at` and `updated_at` move only when
  the row is written (a no-op poll would otherwise rewrite every row: the time
  a stream last confirmed everything is `sync_state.last_success_at`);
* every (run, status) pair observed gets one `run_status_history` row, even
  when the observation was too old to change the run;
* workers are upserted from the runs that changed.

Nothing above this module sees SQLAlchemy or asyncpg errors: they become
`StorageError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog
from sqlalchemy import DateTime, TextClause, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from syncd.clock import SYSTEM_CLOCK, Clock
from syncd.errors import StorageError, describe_cause
from syncd.models import (
    CONTENT_FIELDS,
    IN_FLIGHT_STATUSES,
    Reject,
    Run,
    Source,
    StagedRuns,
    StageRow,
    StoreResult,
    stage_row,
)
from syncd.recent import PendingWrites, RecentlyStored
from syncd.schema import run_status_history, runs, sync_rejects, sync_state, workers

log = structlog.get_logger("syncd.storage")

T = TypeVar("T")
# COPY goes to asyncpg directly: its errors arrive unwrapped by SQLAlchemy.
DB_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
DB_RETRY_FIRST_S = 0.5
DB_RETRY_MAX_S = 10.0
# asyncpg errors that mean "the server went away", whatever SQLAlchemy wraps them in.
_DISCONNECT_MARKERS = (
    "ConnectionDoesNotExistError",
    "CannotConnectNowError",
    "AdminShutdownError",
    "ConnectionFailureError",
    "connection was closed",
    "the database system is",
)

STAGE_TABLE = "_syncd_stage"
# The stage holds Run records field for field (models.StageRow); batch order
# survives in ctid, the observation time is a parameter.
STAGE_COLUMNS = Run._fields

# Usage arrives as text and times as microseconds since the epoch (cheap for
# asyncpg to encode, see models.StageRow); `incoming` turns them back exactly,
# so the merge and the digests see the same values as with the stored types.
CREATE_STAGE_SQL = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} (
    slug text, worker_slug text, worker_title text, status text, status_raw text,
    err_msg text, results integer, usage_usd text, traffic_bytes bigint,
    started_at bigint, finished_at bigint, duration_s integer, origin text,
    version text, source text
) ON COMMIT DELETE ROWS
"""


def _from_epoch_us(column: str) -> str:
    # Whole seconds and the rest apart: float8 * interval is exact for both parts
    # (seconds * 10**6 fits a double's 53 bits up to the year 20000), and an
    # interval without days adds the same instant in every session time zone.
    return (
        f"timestamptz 'epoch' + ({column} / 1000000) * interval '1 second'"
        f" + ({column} % 1000000) * interval '1 microsecond'"
    )


# What the merge reads of a stored run besides its content.
STORED_READ = ("slug", "last_seen_at", "vanished_at")


def _staged_columns() -> str:
    """The stage's columns with their stored types back, and the run stored under each slug."""
    converted = {
        "usage_usd": "s.usage_usd::numeric",
        "started_at": _from_epoch_us("s.started_at"),
        "finished_at": _from_epoch_us("s.finished_at"),
    }
    staged = [f"{converted.get(c, f's.{c}')} AS {c}" for c in STAGE_COLUMNS]
    stored = [f"r.{c} AS r_{c}" for c in (*STORED_READ, *CONTENT_FIELDS)]
    return ", ".join(["s.ctid AS pos", *staged, *stored])


def _merge_sql() -> str:
    """The merge (its rules: this module's docstring)."""
    content = ", ".join(CONTENT_FIELDS)
    excluded = ", ".join(f"EXCLUDED.{c}" for c in CONTENT_FIELDS)
    stored = ", ".join(f"r.{c}" for c in CONTENT_FIELDS)
    was = ", ".join(f"i.r_{c}" for c in CONTENT_FIELDS)
    incoming = ", ".join(f"i.{c}" for c in CONTENT_FIELDS)
    set_content = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in (*CONTENT_FIELDS, "status_raw", "source")
    )
    # One join against the stored rows (the statement's snapshot) sorts the batch
    # into rows that may change and rows that cannot; the second kind -- nearly
    # all of them in steady state -- is never locked, hashed or re-inserted.  The
    # history reads the same join: one index probe per staged row in all.
    return f"""
WITH staged AS MATERIALIZED (
    SELECT {_staged_columns()}
    FROM {STAGE_TABLE} s
    -- LATERAL ... LIMIT 1 keeps this an index probe per staged row: a hash
    -- join would read the whole runs table for every batch.
    LEFT JOIN LATERAL (SELECT * FROM runs WHERE runs.slug = s.slug LIMIT 1) r ON true
),
incoming AS (
    SELECT DISTINCT ON (slug) *
    FROM staged
    ORDER BY slug, syncd_status_rank(status) DESC, pos DESC
),
candidates AS (
    SELECT i.*,
           -- hashes the values themselves (no text rendering): cheap enough for every row
           hash_record_extended(ROW({incoming}), 0)::text AS digest
    FROM incoming i
    WHERE i.r_slug IS NULL
       OR ((syncd_status_rank(i.status) > syncd_status_rank(i.r_status)
            OR (syncd_status_rank(i.status) = syncd_status_rank(i.r_status)
                AND :observed_at >= i.r_last_seen_at))
           AND (ROW({was}) IS DISTINCT FROM ROW({incoming}) OR i.r_vanished_at IS NOT NULL))
),
upserted AS (
    INSERT INTO runs AS r ({content}, slug, status_raw, source,
                           first_seen_at, last_seen_at, updated_at, digest_v1, digest_v2)
    SELECT {content}, slug, status_raw, source, :observed_at, :observed_at, :observed_at,
           CASE WHEN source = 'v1' THEN digest END, CASE WHEN source = 'v2' THEN digest END
    FROM candidates
    ON CONFLICT (slug) DO UPDATE SET
        {set_content},
        last_seen_at = GREATEST(r.last_seen_at, EXCLUDED.last_seen_at),
        updated_at = GREATEST(r.updated_at, EXCLUDED.updated_at),
        digest_v1 = COALESCE(EXCLUDED.digest_v1, r.digest_v1),
        digest_v2 = COALESCE(EXCLUDED.digest_v2, r.digest_v2),
        vanished_at = NULL
    WHERE (syncd_status_rank(EXCLUDED.status) > syncd_status_rank(r.status)
           OR (syncd_status_rank(EXCLUDED.status) = syncd_status_rank(r.status)
               AND EXCLUDED.last_seen_at >= r.last_seen_at))
      AND ((ROW({stored}) IS DISTINCT FROM ROW({excluded})
            AND (COALESCE(EXCLUDED.digest_v1, EXCLUDED.digest_v2) IS NULL
                 OR COALESCE(EXCLUDED.digest_v1, EXCLUDED.digest_v2) IS DISTINCT FROM
                    CASE WHEN EXCLUDED.source = 'v1' THEN r.digest_v1 ELSE r.digest_v2 END))
           OR r.vanished_at IS NOT NULL)
    RETURNING r.slug, r.worker_slug, r.worker_title, r.updated_at, (r.xmax = 0) AS inserted
),
history AS (
    -- A pair equal to a run's stored status was recorded when it was stored.
    INSERT INTO run_status_history (run_slug, status, observed_at, source)
    SELECT DISTINCT ON (slug, status) slug, status, CAST(:observed_at AS timestamptz), source
    FROM staged
    WHERE r_status IS NULL OR r_status <> status
    ORDER BY slug, status, pos
    ON CONFLICT (run_slug, status) DO NOTHING
    RETURNING 1
),
touched_workers AS (
    INSERT INTO workers AS w (slug, title, first_seen_at, last_seen_at)
    SELECT DISTINCT ON (worker_slug) worker_slug, worker_title, updated_at, updated_at
    FROM upserted
    ORDER BY worker_slug, updated_at DESC
    ON CONFLICT (slug) DO UPDATE SET
        title = COALESCE(EXCLUDED.title, w.title),
        last_seen_at = GREATEST(w.last_seen_at, EXCLUDED.last_seen_at)
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM upserted WHERE inserted) AS inserted,
    (SELECT count(*) FROM upserted WHERE NOT inserted) AS updated,
    (SELECT count(*) FROM history) AS history_added,
    (SELECT count(*) FROM touched_workers) AS workers_touched,
    (SELECT array_agg(slug) FROM upserted) AS changed_slugs
"""


MERGE_SQL = _merge_sql()
MERGE = text(MERGE_SQL).bindparams(bindparam("observed_at", type_=DateTime(timezone=True)))
# The merge as save_batch runs it, on asyncpg itself: SQLAlchemy's statement and
# result handling cost more per batch than the rest of the client's share of it.
_DRIVER_MERGE = MERGE_SQL.replace(":observed_at", "$1::timestamptz")


SYNC_COMMIT_OFF = text("SET LOCAL synchronous_commit = off")


def _advance_state_sql(*, checkpoint: bool) -> TextClause:
    # One fixed text statement per batch: building a Core insert and update (and
    # their cache keys) for every batch cost syncd more CPU than the merge did.
    # The insert branch starts the counters from their defaults (0), so it ends
    # where "insert the row if missing, then add" would.
    column, value, assign = (
        (", checkpoint", ", :checkpoint", ", checkpoint = EXCLUDED.checkpoint")
        if checkpoint
        else ("", "", "")
    )
    sql = f"""
INSERT INTO sync_state AS s (stream, pages_fetched, rows_seen, rows_changed, rows_rejected,
                             updated_at{column})
VALUES (:stream, :pages, :seen, :changed, :rejected, now(){value})
ON CONFLICT (stream) DO UPDATE SET
    pages_fetched = s.pages_fetched + EXCLUDED.pages_fetched,
    rows_seen = s.rows_seen + EXCLUDED.rows_seen,
    rows_changed = s.rows_changed + EXCLUDED.rows_changed,
    rows_rejected = s.rows_rejected + EXCLUDED.rows_rejected,
    updated_at = now(){assign}
"""
    if not checkpoint:
        return text(sql)
    return text(sql).bindparams(bindparam("checkpoint", type_=sync_state.c.checkpoint.type))


# A batch's counters and checkpoint (a None checkpoint leaves the stored one alone).
ADVANCE_STATE = _advance_state_sql(checkpoint=False)
ADVANCE_STATE_AND_CHECKPOINT = _advance_state_sql(checkpoint=True)


def _reject_row(reject: Reject, at: dt.datetime) -> dict[str, Any]:
    # jsonb cannot hold \u0000: keep it visible as text instead of failing the page.
    payload = orjson.dumps(reject.raw, option=orjson.OPT_SORT_KEYS, default=str)
    payload = payload.replace(b"\\u0000", b"\\\\u0000")
    return {
        "stream": reject.source.value,
        "run_slug": reject.slug,
        "reason": reject.reason,
        "raw": orjson.loads(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "rejected_at": at,
    }


@dataclass(frozen=True, slots=True)
class InFlightRun:
    slug: str
    status: str
    worker_slug: str
    started_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PageProgress:
    """Counters and checkpoint that go with a stored batch, in the same transaction."""

    pages: int = 1
    checkpoint: dict[str, Any] | None = None


class Store:
    """All reads and writes syncd makes.  One per process, shared by both streams."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retry_s: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.engine = engine
        self.retry_s = retry_s
        self._clock = clock
        # Runs as this process last wrote them: a batch leaves out the ones unchanged,
        # once the batches in flight that carry its runs are stored.
        self.recent = RecentlyStored()
        self._pending = PendingWrites()

    async def _run(self, what: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one transaction; if the connection is lost, retry it whole.

        Every unit of work here is idempotent (merges, upserts, absolute
        updates), so replaying a transaction that may or may not have committed
        is safe.  A database that stays away longer than `retry_s` fails the
        cycle with StorageError; other errors fail at once.
        """
        deadline = self._clock.monotonic() + self.retry_s
        delay_s = DB_RETRY_FIRST_S
        while True:
            try:
                async with self.engine.begin() as conn:
                    return await work(conn)
            except DB_ERRORS as exc:
                if not _is_disconnect(exc) or self._clock.monotonic() + delay_s > deadline:
                    raise StorageError(f"{what} failed: {describe_cause(exc)}") from exc
                log.warning(
                    "database_unavailable", what=what, error=describe_cause(exc), retry_in_s=delay_s
                )
                await self._clock.sleep(delay_s)
                delay_s = min(delay_s * 2, DB_RETRY_MAX_S)

    async def ping(self) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT 1"))

        try:
            async with self.engine.begin() as conn:
                await work(conn)
        except DB_ERRORS as exc:  # a probe: no retries
            raise StorageError(f"database ping failed: {describe_cause(exc)}") from exc

    async def save_batch(
        self,
        stream: Source,
        batch: Sequence[Run],
        rejects: Sequence[Reject] = (),
        *,
        observed_at: dt.datetime,
        progress: PageProgress | None = None,
        seen: int | None = None,
        skip_known: bool = True,
    ) -> StoreResult:
        """Merge one batch of runs (and its rejects, counters, checkpoint) atomically.

        `seen` is how many upstream items the batch came from (default: the runs).
        Runs this process stored exactly as they are now are not sent (recent.py): the
        merge would leave them as they are.  `skip_known` False sends them all, for a
        reconcile: it is there to find rows changed or lost behind syncd's back.
        """
        rows = batch.rows if isinstance(batch, StagedRuns) else [stage_row(r) for r in batch]
        await self._pending.wait_for({row[0] for row in rows})
        send = self.recent.to_send(rows, self._clock.monotonic()) if skip_known else rows
        if not skip_known:
            self.recent.forget(row[0] for row in rows)

        async def work(conn: AsyncConnection) -> StoreResult:
            # Not waiting for the WAL flush is safe here: a batch and its
            # checkpoint commit together, so a crash that loses the last few
            # commits loses their checkpoints too, and those pages are re-read.
            # (Through SQLAlchemy: it opens the transaction the rest runs in.)
            await conn.execute(SYNC_COMMIT_OFF)
            result = StoreResult(seen=len(rows) if seen is None else seen)
            if send:
                await self._merge(conn, send, observed_at, result)
            if rejects:
                result.rejected = await self._save_rejects(conn, rejects, observed_at)
            if progress is not None:
                await self._advance_state(conn, stream, progress, result)
            return result

        with self._pending.writing({row[0] for row in send}):
            result = await self._run(f"saving a {stream} batch", work)
            self.recent.remember(send, result.changed_slugs, self._clock.monotonic())
        return result

    async def _merge(
        self, conn: AsyncConnection, rows: list[StageRow], at: dt.datetime, result: StoreResult
    ) -> None:
        # On asyncpg directly, inside the transaction that save_batch's first
        # statement (through SQLAlchemy) opened: a COPY before it would
        # autocommit, and ON COMMIT DELETE ROWS would empty the stage.
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.execute(CREATE_STAGE_SQL)
        await driver.copy_records_to_table(STAGE_TABLE, records=rows, columns=STAGE_COLUMNS)
        row = await driver.fetchrow(_DRIVER_MERGE, at)
        result.inserted, result.updated, result.history_added = row[0], row[1], row[2]
        result.changed_slugs = frozenset(row[4] or ())

    async def _save_rejects(
        self, conn: AsyncConnection, rejects: Sequence[Reject], at: dt.datetime
    ) -> int:
        rows = [_reject_row(r, at) for r in rejects]
        stmt = pg_insert(sync_rejects).values(rows).on_conflict_do_nothing()
        await conn.execute(stmt)
        for reject in rejects:
            log.warning(
                "record_rejected",
                stream=reject.source.value,
                slug=reject.slug,
                reason=reject.reason[:500],
            )
        return len(rows)

    async def _advance_state(
        self, conn: AsyncConnection, stream: Source, progress: PageProgress, result: StoreResult
    ) -> None:
        params: dict[str, Any] = {
            "stream": stream.value,
            "pages": progress.pages,
            "seen": result.seen,
            "changed": result.changed,
            "rejected": result.rejected,
        }
        if progress.checkpoint is None:
            await conn.execute(ADVANCE_STATE, params)
        else:
            params["checkpoint"] = progress.checkpoint
            await conn.execute(ADVANCE_STATE_AND_CHECKPOINT, params)

    @staticmethod
    async def _ensure_state(conn: AsyncConnection, stream: Source) -> None:
        await conn.execute(
            pg_insert(sync_state).values(stream=stream.value).on_conflict_do_nothing()
        )

    async def start_cycle(self, stream: Source, at: dt.datetime) -> None:
        await self._update_state(stream, {"last_cycle_started_at": at}, "recording a cycle start")

    async def finish_cycle(
        self,
        stream: Source,
        at: dt.datetime,
        *,
        error: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        clear_checkpoint: bool = False,
        kind: str | None = None,
        requests: int | None = None,
        full_scan: bool = False,
        corrected: int | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "last_cycle_finished_at": at,
            "cycles": sync_state.c.cycles + 1,
            "last_cycle_kind": kind,
            "last_cycle_requests": requests,
        }
        if full_scan and error is None:
            values["last_full_scan_at"] = at
        if corrected is not None:
            values["last_reconcile_corrected"] = corrected
        if error is None:
            values["last_success_at"] = at
        else:
            values.update(last_error=error[:2000], last_error_at=at)
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        elif clear_checkpoint:
            values["checkpoint"] = None
        await self._update_state(stream, values, "recording a cycle end")

    async def _update_state(self, stream: Source, values: dict[str, Any], what: str) -> None:
        async def work(conn: AsyncConnection) -> None:
            await self._ensure_state(conn, stream)
            await conn.execute(
                sync_state.update()
                .where(sync_state.c.stream == stream.value)
                .values(updated_at=func.now(), **values)
            )

        await self._run(what, work)

    async def load_state(self, stream: Source) -> dict[str, Any] | None:
        query = select(sync_state).where(sync_state.c.stream == stream.value)

        async def work(conn: AsyncConnection) -> dict[str, Any] | None:
            row = (await conn.execute(query)).mappings().first()
            return dict(row) if row is not None else None

        return await self._run("reading sync state", work)

    async def last_successes(self) -> dict[str, dt.datetime]:
        """Each stream's `sync_state.last_success_at`, for the streams that have one."""
        query = select(sync_state.c.stream, sync_state.c.last_success_at).where(
            sync_state.c.last_success_at.is_not(None)
        )

        async def work(conn: AsyncConnection) -> dict[str, dt.datetime]:
            return {row.stream: row.last_success_at for row in await conn.execute(query)}

        return await self._run("reading last successes", work)

    async def in_flight_runs(self, exclude: frozenset[str] = frozenset()) -> list[InFlightRun]:
        """Stored runs not yet terminal (and not given up on), minus `exclude`."""
        query = (
            select(runs.c.slug, runs.c.status, runs.c.worker_slug, runs.c.started_at)
            .where(runs.c.status.in_([s.value for s in IN_FLIGHT_STATUSES]))
            .where(runs.c.vanished_at.is_(None))
        )

        async def work(conn: AsyncConnection) -> list[InFlightRun]:
            rows = (await conn.execute(query)).all()
            return [InFlightRun(*row) for row in rows if row[0] not in exclude]

        return await self._run("reading in-flight runs", work)

    async def mark_vanished(self, slugs: Sequence[str], at: dt.datetime) -> int:
        """Flag in-flight runs that no list shows any more, so they stop being refreshed."""
        if not slugs:
            return 0
        self.recent.forget(slugs)  # their next observation clears vanished_at: let it through
        update = (
            runs.update()
            .where(runs.c.slug.in_(list(slugs)))
            .where(runs.c.vanished_at.is_(None))
            .values(vanished_at=at)
        )

        async def work(conn: AsyncConnection) -> int:
            return int((await conn.execute(update)).rowcount)

        return await self._run("marking vanished runs", work)

    async def status_report(self) -> dict[str, Any]:
        """Per-stream state and table row counts, for `syncd status`."""

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            states = await conn.execute(select(sync_state).order_by(sync_state.c.stream))
            streams = [dict(r) for r in states.mappings()]
            counts = {}
            for table in (runs, run_status_history, workers, sync_rejects):
                counts[table.name] = await conn.scalar(select(func.count()).select_from(table))
            return {"streams": streams, "counts": counts}

        return await self._run("reading status", work)


def _is_disconnect(exc: BaseException) -> bool:
    """Did the connection (rather than the statement) fail?  Only then is a retry useful."""
    if isinstance(exc, OSError | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None) or exc
    text_ = f"{type(orig).__name__} {orig}"
    return any(marker in text_ for marker in _DISCONNECT_MARKERS)


# pg_advisory_lock keys, one per stream (advisory locks are scoped to the database).
STREAM_LOCK_KEYS = {Source.V1: 72_617_101, Source.V2: 72_617_102}


class StreamLease:
    """Which streams this process may poll: at most one process per stream at a time.

    Session-level advisory locks on one dedicated autocommit connection.  The
    holder keeps a stream's lock for as long as it lives; when it dies its
    connection closes, PostgreSQL drops the lock, and a standby's next try
    (every cycle) takes the stream over.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self._held: set[Source] = set()
        self._guard = asyncio.Lock()  # one connection: one statement at a time

    async def acquire(self, stream: Source) -> bool:
        """True when this process holds `stream` (already, or from now on)."""
        async with self._guard:
            try:
                conn = await self._connection()
                if stream in self._held:
                    await conn.execute(text("SELECT 1"))  # alive, so the lock still is
                    return True
                key = STREAM_LOCK_KEYS[stream]
                got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            except DB_ERRORS as exc:
                # The connection, and with it every lock, is gone: start over next time.
                log.warning("stream_lease_lost", error=describe_cause(exc))
                await self._drop()
                return False
            if got:
                self._held.add(stream)
                log.info("stream_lease_acquired", stream=stream.value)
            return bool(got)

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self.engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(*DB_ERRORS):
                await conn.invalidate()
                await conn.close()

    async def release(self) -> None:
        """Let every stream go (closing the connection releases its locks)."""
        async with self._guard:
            conn, self._conn = self._conn, None
            self._held.clear()
            if conn is not None:
                with contextlib.suppress(*DB_ERRORS):
                    await conn.close()
