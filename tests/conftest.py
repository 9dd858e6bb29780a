"""Shared fixtures: one real PostgreSQL per test run, a fresh database per test that needs one.

By default an embedded PostgreSQL is started in a temporary directory and
deleted at the end.  Set SYNCD_TEST_DATABASE_URL to use another server (the
role needs CREATEDB).  A migrated template database makes per-test databases
cheap (CREATE DATABASE … TEMPLATE).

Under pytest-xdist (`-n`), the controller starts that one server before the
workers and stops it after them; each worker keeps a template of its own.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.config import normalise_database_url
from syncd.database import create_engine, migrate
from syncd.storage import Store
from tests.support.postgres import EmbeddedPostgres, create_database, drop_database

# The run's server, for the workers (they inherit the controller's environment).
SHARED_SERVER_ENV = "SYNCD_TEST_SHARED_SERVER_URL"
TEMPLATE_DB = f"syncd_test_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
_SHARED_SERVER = pytest.StashKey[EmbeddedPostgres]()


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a distributed run starts the server its workers share."""
    distributed = bool(config.getoption("numprocesses", None))
    worker = hasattr(config, "workerinput")
    if not distributed or worker or os.environ.get("SYNCD_TEST_DATABASE_URL"):
        return
    server = config.stash[_SHARED_SERVER] = EmbeddedPostgres()
    os.environ[SHARED_SERVER_ENV] = server.admin_url


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SHARED_SERVER, None)
    if server is not None:
        os.environ.pop(SHARED_SERVER_ENV, None)
        server.close()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """Admin URL of the PostgreSQL server the tests use."""
    external = os.environ.get("SYNCD_TEST_DATABASE_URL") or os.environ.get(SHARED_SERVER_ENV)
    if external:
        yield normalise_database_url(external)
        return
    server = EmbeddedPostgres()
    yield server.admin_url
    server.close()


async def _build_template(server_url: str) -> None:
    await drop_database(server_url, TEMPLATE_DB)
    engine = create_engine(await create_database(server_url, TEMPLATE_DB))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def migrated_template(pg_server_url: str) -> str:
    asyncio.run(_build_template(pg_server_url))
    return TEMPLATE_DB


def _fresh_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def empty_db_url(pg_server_url: str) -> AsyncIterator[str]:
    """A brand-new, unmigrated database; dropped afterwards."""
    name = _fresh_name()
    yield await create_database(pg_server_url, name)
    await drop_database(pg_server_url, name)


@pytest.fixture
async def db_url(pg_server_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh database at the head migration; dropped afterwards."""
    name = _fresh_name()
    yield await create_database(pg_server_url, name, template=migrated_template)
    await drop_database(pg_server_url, name)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> Store:
    return Store(engine)


@pytest.fixture
async def engine_for() -> AsyncIterator[Callable[[str], AsyncEngine]]:
    """Make engines for given URLs; all disposed at the end of the test."""
    made: list[AsyncEngine] = []

    def make(url: str) -> AsyncEngine:
        made.append(create_engine(url))
        return made[-1]

    yield make
    for eng in made:
        await eng.dispose()


@pytest.fixture
async def make_db(
    pg_server_url: str, migrated_template: str
) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Make more fresh migrated databases (for processes that must not share one)."""
    names: list[str] = []

    async def make() -> str:
        names.append(_fresh_name())
        return await create_database(pg_server_url, names[-1], template=migrated_template)

    yield make
    for name in names:
        await drop_database(pg_server_url, name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SYNCD_* from the outer environment, and no stray .env (here or for subprocesses)."""
    for name in list(os.environ):
        if name.startswith("SYNCD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
