"""Analyst views (worker_daily_stats, runs_in_flight, run_status_durations) and
COMMENT ON every table, view and column, so BI tools show what each field means.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "worker_daily_stats": """
        SELECT (r.started_at AT TIME ZONE 'UTC')::date AS day,
               r.worker_slug,
               max(w.title) AS worker_title,
               count(*) AS runs,
               count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE r.status = 'failed') AS failed,
               count(*) FILTER (WHERE r.status = 'aborted') AS aborted,
               coalesce(sum(r.usage_usd), 0) AS usage_usd,
               coalesce(sum(r.traffic_bytes), 0)::bigint AS traffic_bytes,
               avg(r.duration_s)::numeric(12, 1) AS avg_duration_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_s) AS p95_duration_s
        FROM runs r LEFT JOIN workers w ON w.slug = r.worker_slug
        WHERE r.started_at IS NOT NULL
        GROUP BY 1, 2
    """,
    "runs_in_flight": """
        SELECT r.slug, r.worker_slug, r.worker_title, r.status, r.started_at,
               now() - coalesce(r.started_at, r.first_seen_at) AS age,
               extract(epoch FROM now() - coalesce(r.started_at, r.first_seen_at))::bigint
                   AS age_s,
               r.last_seen_at, r.source
        FROM runs r
        WHERE r.status IN ('ready', 'running', 'aborting') AND r.vanished_at IS NULL
    """,
    "run_status_durations": """
        SELECT run_slug, status, entered_at, left_at,
               -- a status first seen after the next one (a late, stale observation)
               -- has no knowable duration: NULL rather than negative
               CASE WHEN until >= entered_at
                    THEN extract(epoch FROM until - entered_at)::bigint END AS duration_s
        FROM (
            SELECT h.run_slug, h.status, h.observed_at AS entered_at,
                   lead(h.observed_at) OVER w AS left_at,
                   coalesce(lead(h.observed_at) OVER w,
                            CASE WHEN h.status IN ('ready', 'running', 'aborting')
                                 THEN now() END) AS until
            FROM run_status_history h
            WINDOW w AS (PARTITION BY h.run_slug
                         ORDER BY syncd_status_rank(h.status), h.observed_at)
        ) spans
    """,
}

TABLES = {
    "runs": "One row per CoreClaw run (primary key slug): its latest known state.",
    "run_status_history": "One row per (run, status) observed, with when syncd first saw it.",
    "workers": "One row per CoreClaw worker (scraper) that has runs.",
    "sync_state": "One row per stream (v1, v2): progress, checkpoint and health of the sync.",
    "sync_rejects": "Upstream records that could not be stored as they were, kept raw with why.",
    "alembic_version": "The schema migration syncd's database is at (managed by alembic).",
    "worker_daily_stats": "Per UTC day and worker: runs by outcome, spend, traffic and durations.",
    "runs_in_flight": "Runs not finished yet (ready, running, aborting), with their age.",
    "run_status_durations": "Time each run spent in each status, from run_status_history.",
}

COLUMNS = {
    "runs": {
        "slug": "CoreClaw run id (unique run identifier).",
        "worker_slug": "Worker (scraper) id: upstream scraper_slug.",
        "worker_title": "Worker title as upstream last reported it.",
        "status": "Canonical status: ready running succeeded failed aborting aborted unknown.",
        "status_raw": "Status exactly as upstream sent it (e.g. 3 from v1, running from v2).",
        "err_msg": "Error message from upstream; empty when the run had none.",
        "results": "Number of results the run collected.",
        "usage_usd": "Cost of the run in USD.",
        "traffic_bytes": "Network traffic of the run in bytes.",
        "started_at": "When the run started (UTC).",
        "finished_at": "When the run finished (UTC); NULL while it has not.",
        "duration_s": "Run duration in seconds, as upstream reports it.",
        "origin": "How the run was started: api, web or openapi.",
        "version": "Worker version the run used.",
        "source": "Endpoint (v1 or v2) whose observation last changed this row.",
        "first_seen_at": "When syncd first saw the run (UTC).",
        "last_seen_at": "Time (UTC) of the observation that last changed the row; "
        "sync_state.last_success_at says when all runs were last confirmed.",
        "updated_at": "When the row's content last changed (UTC).",
        "digest_v1": "Internal: hash of the content v1 last reported (stops v1/v2 ping-pong).",
        "digest_v2": "Internal: hash of the content v2 last reported (stops v1/v2 ping-pong).",
        "vanished_at": "When syncd stopped finding this unfinished run in any list (UTC); "
        "NULL normally.",
    },
    "run_status_history": {
        "run_slug": "The run (runs.slug).",
        "status": "A canonical status the run was observed in.",
        "observed_at": "When syncd first observed the run in this status (UTC).",
        "source": "Endpoint (v1 or v2) that reported it.",
    },
    "workers": {
        "slug": "Worker (scraper) id.",
        "title": "Worker title as last reported.",
        "first_seen_at": "When syncd first saw a run of this worker (UTC).",
        "last_seen_at": "When a run of this worker last changed in syncd (UTC).",
    },
    "sync_state": {
        "stream": "v1 (POST /api/v1/run/list) or v2 (GET /api/v2/worker-runs).",
        "last_success_at": "End of the last successful cycle (UTC).",
        "last_error_at": "When the last failed cycle ended (UTC).",
        "last_error": "Why the last failed cycle failed.",
        "checkpoint": "Where an interrupted full scan resumes (JSON); NULL when none is pending.",
        "cycles": "Cycles run so far.",
        "pages_fetched": "Pages stored so far.",
        "rows_seen": "Upstream records processed so far.",
        "rows_changed": "Runs inserted or updated so far.",
        "rows_rejected": "Records sent to sync_rejects so far.",
        "last_cycle_started_at": "When the latest cycle started (UTC).",
        "last_cycle_finished_at": "When the latest cycle ended (UTC).",
        "updated_at": "When this row last changed (UTC).",
        "last_full_scan_at": "End of the last complete backfill or reconciliation (UTC).",
        "last_cycle_kind": "Kind of the latest cycle: backfill, incremental or reconcile.",
        "last_cycle_requests": "API requests the latest cycle made.",
        "last_reconcile_corrected": "Rows the last reconciliation had to insert or fix.",
    },
    "sync_rejects": {
        "id": "Row id.",
        "stream": "Endpoint (v1 or v2) the record came from.",
        "run_slug": "The record's slug, when it had a usable one.",
        "reason": "Why the record could not be stored as it was.",
        "raw": "The record exactly as upstream sent it (JSON).",
        "payload_sha256": "SHA-256 of the raw record, so the same record is kept once.",
        "rejected_at": "When syncd first rejected it (UTC).",
    },
    "alembic_version": {"version_num": "Current migration revision."},
    "worker_daily_stats": {
        "day": "UTC calendar day the runs started on.",
        "worker_slug": "Worker (scraper) id.",
        "worker_title": "Worker title.",
        "runs": "Runs started that day.",
        "succeeded": "Of those, runs that succeeded.",
        "failed": "Of those, runs that failed.",
        "aborted": "Of those, runs that were aborted.",
        "usage_usd": "Total cost in USD.",
        "traffic_bytes": "Total traffic in bytes.",
        "avg_duration_s": "Average run duration in seconds.",
        "p95_duration_s": "95th percentile of run duration in seconds.",
    },
    "runs_in_flight": {
        "slug": "CoreClaw run id.",
        "worker_slug": "Worker (scraper) id.",
        "worker_title": "Worker title.",
        "status": "ready, running or aborting.",
        "started_at": "When the run started (UTC).",
        "age": "How long ago it started (interval; first seen if no start time).",
        "age_s": "The same age in seconds.",
        "last_seen_at": "Time (UTC) of the observation that last changed the row.",
        "source": "Endpoint (v1 or v2) that last changed the row.",
    },
    "run_status_durations": {
        "run_slug": "The run (runs.slug).",
        "status": "A status the run passed through.",
        "entered_at": "When syncd first saw the run in this status (UTC).",
        "left_at": "When syncd first saw its next status (UTC); NULL for the latest.",
        "duration_s": "Seconds spent in the status, as far as polling can tell; "
        "for an unfinished run's current status, until now.",
    },
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")
    for name, comment in TABLES.items():
        kind = "VIEW" if name in VIEWS else "TABLE"
        op.execute(f"COMMENT ON {kind} {name} IS {_literal(comment)}")
    for table, columns in COLUMNS.items():
        for column, comment in columns.items():
            op.execute(f"COMMENT ON COLUMN {table}.{column} IS {_literal(comment)}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    for name in TABLES:
        if name not in VIEWS:
            op.execute(f"COMMENT ON TABLE {name} IS NULL")
