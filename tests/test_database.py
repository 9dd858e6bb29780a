"""Where the database is and how it is set up: the embedded server's data directory and stale
lock, creating a database, choosing the URL, migration failures, read-only access.

The migrations themselves (what they create, down and up again) are in test_migrations.py;
starting a real embedded server from `syncd` is in test_startup_errors.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from syncd.config import load_settings
from syncd.database import (
    _server_log_tail,
    clear_stale_lock,
    create_engine,
    current_revision,
    embedded_exists,
    ensure_database,
    grant_read,
    migrate,
    migrations_dir,
    prepare_data_dir,
    resolve_url,
)
from syncd.errors import ConfigError, StorageError
from tests.support.postgres import drop_database

DEAD_URL = "postgresql+asyncpg://nobody:s3cret-pw@127.0.0.1:9/none"


# The embedded server's data directory


def test_prepare_data_dir_creates_missing_parents(tmp_path: Path) -> None:
    """A data directory that does not exist yet is created, parents and all."""
    prepare_data_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_prepare_data_dir_under_a_file_names_the_setting(tmp_path: Path) -> None:
    """A data directory that cannot be created is a ConfigError naming SYNCD_DATA_DIR."""
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"SYNCD_DATA_DIR=.*a-file/data cannot be created"):
        prepare_data_dir(tmp_path / "a-file" / "data")


def test_embedded_exists_only_with_a_pg_version(tmp_path: Path) -> None:
    """An embedded database exists once its pgdata holds PG_VERSION, not before."""
    assert not embedded_exists(tmp_path)
    (tmp_path / "pgdata").mkdir()
    assert not embedded_exists(tmp_path)
    (tmp_path / "pgdata" / "PG_VERSION").write_text("16\n")
    assert embedded_exists(tmp_path)


def test_server_log_tail_is_the_last_two_lines(tmp_path: Path) -> None:
    """Why the server would not start: its log's last two non-blank lines, or that there is none."""
    assert _server_log_tail(tmp_path) == "no server log"
    (tmp_path / "log").write_text("starting\nFATAL: bad value\n\n  the end  \n\n")
    assert _server_log_tail(tmp_path) == f"server log {tmp_path / 'log'}: FATAL: bad value; the end"
    (tmp_path / "log").write_text("\n\n")
    assert _server_log_tail(tmp_path).endswith(": empty")


def test_migrations_are_found_in_the_checkout() -> None:
    """The alembic scripts are found next to the package."""
    assert (migrations_dir() / "env.py").is_file()


# The stale postmaster.pid


def write_pid_file(pgdata: Path, pid: str) -> Path:
    pgdata.mkdir(parents=True, exist_ok=True)
    pid_file = pgdata / "postmaster.pid"
    pid_file.write_text(f"{pid}\n{pgdata}\n1700000000\n5432\n")
    return pid_file


@contextlib.contextmanager
def sleeping(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A live process (a Python sleep) whose command line ends with `args`."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        for _ in range(200):  # until it has exec'd: a fork reads as an empty command line
            if b"time.sleep" in cmdline.read_bytes():
                break
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is no postgres."""
    with sleeping() as proc:
        yield proc


def test_no_pid_file_is_left_alone(tmp_path: Path) -> None:
    """Without a postmaster.pid there is nothing to clear."""
    clear_stale_lock(tmp_path / "pgdata")
    assert not (tmp_path / "pgdata").exists()


def test_lock_naming_someone_elses_process_is_removed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A pid now used by a process that is not a postgres on this directory: the lock goes,
    the process stays."""
    pid_file = write_pid_file(tmp_path / "pgdata", str(sleeper.pid))
    with capture_logs() as logs:
        clear_stale_lock(tmp_path / "pgdata")
    assert not pid_file.exists() and sleeper.poll() is None
    assert [e["event"] for e in logs] == ["embedded_postgres_stale_lock_removed"]
    assert logs[0]["pid"] == sleeper.pid


def test_lock_naming_a_zombie_is_removed(tmp_path: Path) -> None:
    """A pid whose process has exited but is not reaped yet (an empty command line) is
    no server either: the lock goes."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        status = Path(f"/proc/{zombie.pid}/status")
        for _ in range(500):  # until it has exited (not reaped: no wait() yet)
            if "zombie" in status.read_text():
                break
            time.sleep(0.01)
        assert Path(f"/proc/{zombie.pid}/cmdline").read_bytes() == b""
        pid_file = write_pid_file(tmp_path / "pgdata", str(zombie.pid))
        clear_stale_lock(tmp_path / "pgdata")
        assert not pid_file.exists()
    finally:
        zombie.wait()


def test_lock_of_a_live_server_on_this_directory_is_kept(tmp_path: Path) -> None:
    """A pid whose command line is a postgres on this data directory holds the lock."""
    pgdata = tmp_path / "pgdata"
    with sleeping("postgres", "-D", str(pgdata)) as server:
        pid_file = write_pid_file(pgdata, str(server.pid))
        clear_stale_lock(pgdata)
    assert pid_file.exists()


def test_lock_of_a_dead_process_is_left_to_postgresql(tmp_path: Path) -> None:
    """A pid nobody has any more: PostgreSQL replaces such a file itself."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid_file = write_pid_file(tmp_path / "pgdata", str(gone.pid))
    clear_stale_lock(tmp_path / "pgdata")
    assert pid_file.exists()


@pytest.mark.parametrize("first_line", ["", "not-a-pid", "0", "-12"])
def test_lock_without_a_usable_pid_is_removed(tmp_path: Path, first_line: str) -> None:
    """A postmaster.pid whose first line is no pid names no server."""
    pid_file = write_pid_file(tmp_path / "pgdata", first_line)
    clear_stale_lock(tmp_path / "pgdata")
    assert not pid_file.exists()


# Creating the database and choosing the URL


@pytest.fixture
async def new_name(pg_server_url: str) -> AsyncIterator[str]:
    name = f"t_ensure_{uuid.uuid4().hex[:8]}"
    yield name
    await drop_database(pg_server_url, name)


async def test_ensure_database_creates_once_and_returns_its_url(
    pg_server_url: str, new_name: str
) -> None:
    """A missing database is created; asking again finds it; the URL names it."""
    url = await ensure_database(pg_server_url, new_name)
    assert await ensure_database(pg_server_url, new_name) == url
    assert make_url(url).database == new_name
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_database()")) == new_name
    finally:
        await engine.dispose()


async def test_ensure_database_on_an_unreachable_server_hides_the_password() -> None:
    """A server that cannot be reached is a StorageError naming the database, not the password."""
    with pytest.raises(StorageError, match="cannot create database 'syncd'") as caught:
        await ensure_database(DEAD_URL, "syncd")
    assert "s3cret-pw" not in str(caught.value)


async def test_resolve_url_prefers_the_configured_url(tmp_path: Path) -> None:
    """With SYNCD_DATABASE_URL set, that URL is used and no embedded server is started."""
    settings = load_settings(api_key="k", database_url=DEAD_URL, data_dir=tmp_path)
    assert await resolve_url(settings) == (DEAD_URL, False)  # a dead URL: never connected


async def test_resolve_url_for_reading_does_not_create_an_embedded_database(
    tmp_path: Path,
) -> None:
    """A command that only reads says there is no database yet rather than create one."""
    settings = load_settings(api_key="k", data_dir=tmp_path / "data")
    with pytest.raises(StorageError, match=r"no embedded database in SYNCD_DATA_DIR=.*`syncd run`"):
        await resolve_url(settings, create=False)
    assert not (tmp_path / "data").exists()


# Migrations, seen from database.py


async def test_migrate_on_an_unreachable_database_is_a_storage_error() -> None:
    """A migration that cannot connect is one StorageError, without the password."""
    engine = create_engine(DEAD_URL)
    try:
        with pytest.raises(StorageError, match=r"^migration failed: ") as caught:
            await migrate(engine)
    finally:
        await engine.dispose()
    assert "s3cret-pw" not in str(caught.value)


async def test_current_revision_of_an_empty_database_is_none(empty_db_url: str) -> None:
    """A database syncd has not migrated is at no revision."""
    engine = create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(current_revision) is None
    finally:
        await engine.dispose()


# Read-only access


async def test_grant_read_gives_select_and_nothing_more(db_url: str, engine: AsyncEngine) -> None:
    """A role given read access can query tables and views but cannot write; granting twice
    is fine; an unknown role is a clear error."""
    role = f"bi_{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        await conn.commit()
    try:
        await grant_read(engine, role)
        await grant_read(engine, role)
        reader = create_engine(
            make_url(db_url).set(username=role, password=None).render_as_string(hide_password=False)
        )
        try:
            async with reader.connect() as conn:
                assert await conn.scalar(text("SELECT count(*) FROM runs")) == 0
                assert await conn.scalar(text("SELECT count(*) FROM worker_daily_stats")) == 0
            with pytest.raises(DBAPIError, match="permission denied"):
                async with reader.begin() as conn:
                    await conn.execute(text("DELETE FROM runs"))
            with pytest.raises(DBAPIError, match="permission denied"):
                async with reader.begin() as conn:
                    insert = "INSERT INTO workers VALUES ('x', NULL, now(), now())"
                    await conn.execute(text(insert))
        finally:
            await reader.dispose()
    finally:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP OWNED BY "{role}"'))
            await conn.execute(text(f'DROP ROLE "{role}"'))
            await conn.commit()
    with pytest.raises(StorageError, match="does not exist"):
        await grant_read(engine, "no_such_role_xyz")
