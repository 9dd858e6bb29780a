"""The database tables as SQLAlchemy Core objects.

The names in SPEC §3 are a public contract for analysts: add, never rename.
Migrations create and evolve the real schema; this module mirrors it so the
storage code can build statements, and a test checks the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

TZ = DateTime(timezone=True)

runs = Table(
    "runs",
    metadata,
    Column("slug", Text, primary_key=True),
    Column("worker_slug", Text, nullable=False),
    Column("worker_title", Text),
    Column("status", Text, nullable=False),
    Column("status_raw", Text),
    Column("err_msg", Text),
    Column("results", Integer),
    Column("usage_usd", Numeric),
    Column("traffic_bytes", BigInteger),
    Column("started_at", TZ),
    Column("finished_at", TZ),
    Column("duration_s", Integer),
    Column("origin", Text),
    Column("version", Text),
    Column("source", Text),
    Column("first_seen_at", TZ, nullable=False),
    Column("last_seen_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    # md5 of the content each endpoint last reported; stops v1 and v2 from
    # rewriting a row back and forth when they spell the same run differently.
    Column("digest_v1", Text),
    Column("digest_v2", Text),
    # set when an in-flight run could no longer be found upstream; cleared if it reappears
    Column("vanished_at", TZ),
    Index("ix_runs_status", "status"),
    Index("ix_runs_worker_started", "worker_slug", text("started_at DESC")),
    Index("ix_runs_started_at", "started_at", postgresql_using="brin"),
    Index(
        "ix_runs_in_flight",
        "slug",
        postgresql_where=text("status IN ('ready', 'running', 'aborting')"),
    ),
)

run_status_history = Table(
    "run_status_history",
    metadata,
    Column("run_slug", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("observed_at", TZ, nullable=False),
    Column("source", Text, nullable=False),
    PrimaryKeyConstraint("run_slug", "status", name="pk_run_status_history"),
)

workers = Table(
    "workers",
    metadata,
    Column("slug", Text, primary_key=True),
    Column("title", Text),
    Column("first_seen_at", TZ, nullable=False),
    Column("last_seen_at", TZ, nullable=False),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("last_success_at", TZ),
    Column("last_error_at", TZ),
    Column("last_error", Text),
    Column("checkpoint", JSONB),
    Column("cycles", BigInteger, nullable=False, server_default=text("0")),
    Column("pages_fetched", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_seen", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_changed", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("last_cycle_started_at", TZ),
    Column("last_cycle_finished_at", TZ),
    Column("updated_at", TZ, nullable=False, server_default=text("now()")),
    Column("last_full_scan_at", TZ),
    Column("last_cycle_kind", Text),  # backfill | incremental | reconcile
    Column("last_cycle_requests", Integer),
    Column("last_reconcile_corrected", BigInteger),
)

sync_rejects = Table(
    "sync_rejects",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("stream", Text, nullable=False),
    Column("run_slug", Text),
    Column("reason", Text, nullable=False),
    Column("raw", JSONB, nullable=False),
    Column("payload_sha256", Text, nullable=False),
    Column("rejected_at", TZ, nullable=False),
    UniqueConstraint("stream", "payload_sha256", name="uq_sync_rejects_payload"),
    Index("ix_sync_rejects_rejected_at", "rejected_at"),
)
