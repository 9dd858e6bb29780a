"""Incremental sync: full-scan bookkeeping in sync_state, vanished runs in runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("sync_state", sa.Column("last_full_scan_at", TZ))
    op.add_column("sync_state", sa.Column("last_cycle_kind", sa.Text))
    op.add_column("sync_state", sa.Column("last_cycle_requests", sa.Integer))
    op.add_column("sync_state", sa.Column("last_reconcile_corrected", sa.BigInteger))
    op.add_column("runs", sa.Column("vanished_at", TZ))


def downgrade() -> None:
    op.drop_column("runs", "vanished_at")
    op.drop_column("sync_state", "last_reconcile_corrected")
    op.drop_column("sync_state", "last_cycle_requests")
    op.drop_column("sync_state", "last_cycle_kind")
    op.drop_column("sync_state", "last_full_scan_at")
