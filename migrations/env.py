"""Alembic environment: runs on a connection syncd hands over, or on its own.

`syncd migrate` passes an open connection in `config.attributes["connection"]`.
Plain `alembic upgrade head` (from the repo root) resolves the database the
same way syncd does: SYNCD_DATABASE_URL, else the embedded server.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from syncd.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    from syncd.config import load_settings
    from syncd.database import open_database

    async with open_database(load_settings()) as db, db.engine.begin() as conn:
        await conn.run_sync(_run)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_standalone())


if context.is_offline_mode():
    raise SystemExit("syncd's migrations run online only: use `syncd migrate`")
run_migrations_online()
