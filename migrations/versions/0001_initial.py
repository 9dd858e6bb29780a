"""Initial schema: runs, run_status_history, workers, sync_state, sync_rejects.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)

# Mirrors syncd.models.STATUS_RANK; a test checks the two agree.
STATUS_RANK_FUNCTION = """
CREATE FUNCTION syncd_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE status
        WHEN 'ready' THEN 0
        WHEN 'running' THEN 1
        WHEN 'aborting' THEN 2
        WHEN 'succeeded' THEN 3
        WHEN 'failed' THEN 3
        WHEN 'aborted' THEN 3
        ELSE -1
    END
$$
"""


def upgrade() -> None:
    op.execute(STATUS_RANK_FUNCTION)
    op.create_table(
        "runs",
        sa.Column("slug", sa.Text, primary_key=True),
        sa.Column("worker_slug", sa.Text, nullable=False),
        sa.Column("worker_title", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_raw", sa.Text),
        sa.Column("err_msg", sa.Text),
        sa.Column("results", sa.Integer),
        sa.Column("usage_usd", sa.Numeric),
        sa.Column("traffic_bytes", sa.BigInteger),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("duration_s", sa.Integer),
        sa.Column("origin", sa.Text),
        sa.Column("version", sa.Text),
        sa.Column("source", sa.Text),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.Column("last_seen_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("digest_v1", sa.Text),
        sa.Column("digest_v2", sa.Text),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_worker_started", "runs", ["worker_slug", sa.text("started_at DESC")])
    # BRIN: date-range scans for analysts at a fraction of a btree's cost per insert.
    op.create_index("ix_runs_started_at", "runs", ["started_at"], postgresql_using="brin")
    op.create_index(
        "ix_runs_in_flight",
        "runs",
        ["slug"],
        postgresql_where=sa.text("status IN ('ready', 'running', 'aborting')"),
    )
    op.create_table(
        "run_status_history",
        sa.Column("run_slug", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("observed_at", TZ, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("run_slug", "status", name="pk_run_status_history"),
    )
    op.create_table(
        "workers",
        sa.Column("slug", sa.Text, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.Column("last_seen_at", TZ, nullable=False),
    )
    op.create_table(
        "sync_state",
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("last_success_at", TZ),
        sa.Column("last_error_at", TZ),
        sa.Column("last_error", sa.Text),
        sa.Column("checkpoint", JSONB),
        sa.Column("cycles", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("pages_fetched", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("rows_seen", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("rows_changed", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("last_cycle_started_at", TZ),
        sa.Column("last_cycle_finished_at", TZ),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.text("now()")),
    )
    op.create_table(
        "sync_rejects",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("run_slug", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", JSONB, nullable=False),
        sa.Column("payload_sha256", sa.Text, nullable=False),
        sa.Column("rejected_at", TZ, nullable=False),
        sa.UniqueConstraint("stream", "payload_sha256", name="uq_sync_rejects_payload"),
    )
    op.create_index("ix_sync_rejects_rejected_at", "sync_rejects", ["rejected_at"])


def downgrade() -> None:
    op.drop_table("sync_rejects")
    op.drop_table("sync_state")
    op.drop_table("workers")
    op.drop_table("run_status_history")
    op.drop_table("runs")
    op.execute("DROP FUNCTION syncd_status_rank(text)")
