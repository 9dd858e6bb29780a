"""The composition root: where syncd's services are built, wired and run.

Settings in, then the database (migrated), the CoreClaw client, the store,
one `StreamSync` per stream; `serve` adds the daemon, its HTTP server, the
stream leases and signal handling.  The CLI's `run`, `demo` and `sync` are
short adapters over these.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr

from syncd.client import CoreClawClient
from syncd.clock import SYSTEM_CLOCK, Clock
from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.database import Database, migrate, open_database
from syncd.endpoints import ENDPOINTS
from syncd.errors import ConfigError
from syncd.models import Source
from syncd.storage import Store, StreamLease
from syncd.sync import StreamSync

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("syncd.app")

DEMO_KEY = "demo-key"
DEMO_POLL_INTERVAL_S = 5.0


def all_streams(choice: str | None = None) -> list[Source]:
    return [Source(choice)] if choice else list(ENDPOINTS)


@dataclass
class Services:
    settings: Settings
    db: Database
    store: Store
    client: CoreClawClient
    clock: Clock


def is_demo(settings: Settings) -> bool:
    """No API key and no database: `run` syncs the built-in simulator into the embedded server."""
    return settings.resolved_api_key() is None and settings.database_url is None


@asynccontextmanager
async def demo_upstream(settings: Settings, runs: int = 500) -> AsyncIterator[Settings]:
    """With no API key and no database URL, sync from the built-in simulator."""
    if not is_demo(settings):
        yield settings
        return
    from syncd.fakeapi import FakeApiConfig, start_fake_api

    config = FakeApiConfig(runs=runs, api_key=DEMO_KEY, scenarios=frozenset({"churn"}), tick_s=2.0)
    _, runner, base_url = await start_fake_api(config)
    log.warning(
        "demo_mode",
        api_url=base_url,
        hint="no SYNCD_API_KEY and no SYNCD_DATABASE_URL: syncing the built-in fake API",
    )
    update: dict[str, Any] = {"api_url": base_url, "api_key": SecretStr(DEMO_KEY)}
    # The simulator changes every few seconds; a demo should show that, not a minute's wait.
    for name in ("poll_interval_v1_s", "poll_interval_v2_s"):
        if name not in settings.model_fields_set:
            update[name] = DEMO_POLL_INTERVAL_S
    try:
        yield settings.model_copy(update=update)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def open_services(
    settings: Settings, *, migrate_first: bool, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[Services]:
    """Database (migrated if asked), client and store, all on one clock."""
    async with open_database(settings) as db:
        if migrate_first:
            await migrate(db.engine)
        store = Store(db.engine, retry_s=settings.db_retry_s, clock=clock)
        async with CoreClawClient(settings, clock=clock) as client:
            yield Services(settings, db, store, client, clock)


def syncers_for(services: Services, streams: list[Source]) -> list[StreamSync]:
    return [
        StreamSync(s, services.client, services.store, services.settings, clock=services.clock)
        for s in streams
    ]


def stop_on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def _listen(app: web.Application, settings: Settings) -> web.AppRunner:
    from syncd.web import start_web

    try:
        return await start_web(app, settings.http_host, settings.http_port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"cannot listen on {settings.http_host}:{settings.http_port} ({reason}): "
            "set SYNCD_HTTP_PORT to a free port, or 0 for no HTTP server"
        ) from exc


async def serve(
    services: Services,
    *,
    intervals_s: dict[Source, float] | None = None,
    stop_after_s: float | None = None,
    http: bool = True,
) -> None:
    """The daemon (both streams, leased), its HTTP server and signals, until stopped;
    raises what ended it fatally (a rejected key, bad settings)."""
    settings, streams = services.settings, all_streams()
    daemon = Daemon(
        syncers_for(services, streams),
        intervals_s or {s: settings.poll_interval_s(s.value) for s in streams},
        lease=StreamLease(services.db.engine),
    )
    stop_on_signals(daemon.stop.set)
    if stop_after_s is not None:
        asyncio.get_running_loop().call_later(stop_after_s, daemon.stop.set)
    web_runner = None
    if http and settings.http_port:
        from syncd.web import create_app

        app = create_app(
            services.store,
            settings,
            streams,
            on_run_finished=lambda slug: daemon.wake(f"webhook:{slug}"),
            clock=services.clock,
        )
        web_runner = await _listen(app, settings)
    try:
        stats = await daemon.run()
    finally:
        if web_runner is not None:
            await web_runner.cleanup()
    if stats.fatal is not None:
        raise stats.fatal


async def leased_streams(lease: StreamLease, wanted: list[Source]) -> list[Source]:
    """The streams no other syncd process is syncing right now (the rest are reported)."""
    free = []
    for stream in wanted:
        if await lease.acquire(stream):
            free.append(stream)
        else:
            log.warning("stream_skipped", stream=stream.value,
                        reason="another syncd process is syncing this stream")  # fmt: skip
    return free
