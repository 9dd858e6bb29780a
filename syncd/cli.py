"""The `syncd` command: run, sync --once, migrate, status, fake-api, demo.

Exit codes: 0 success, 1 sync failed (upstream or database), 2 bad
configuration or usage, 3 the API key was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from pydantic import SecretStr

from syncd import __version__
from syncd.client import CoreClawClient
from syncd.config import Settings, load_settings
from syncd.daemon import Daemon
from syncd.database import Database, grant_read, migrate, open_database
from syncd.errors import AuthError, ConfigError, SyncdError
from syncd.logs import configure_logging
from syncd.models import Source
from syncd.progress import Progress, render
from syncd.storage import Store, StreamLease
from syncd.sync import CycleReport, StreamSync

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("syncd.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_AUTH = 0, 1, 2, 3
DEMO_KEY = "demo-key"
DEMO_POLL_INTERVAL_S = 5.0


@dataclass
class Services:
    settings: Settings
    db: Database
    store: Store
    client: CoreClawClient


class ProgressLine:
    """A progress bar per stream on one terminal line, redrawn at most a few times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.progress: dict[str, Progress] = {}
        self.drawn_s = 0.0

    def update(self, progress: Progress) -> None:
        self.progress[progress.stream] = progress
        now_s = time.monotonic()
        if now_s - self.drawn_s >= 0.2 or progress.finished:
            self.drawn_s = now_s
            line = render(sorted(self.progress.values(), key=lambda p: p.stream), now_s)
            self.stream.write("\r\033[K" + line)
            self.stream.flush()

    def close(self) -> None:
        if self.progress:
            self.stream.write("\n")
            self.stream.flush()


def _streams(choice: str | None) -> list[Source]:
    return [Source(choice)] if choice else [Source.V1, Source.V2]


@asynccontextmanager
async def _demo_upstream(settings: Settings, runs: int = 500) -> AsyncIterator[Settings]:
    """With no API key and no database URL, sync from the built-in simulator."""
    if settings.resolved_api_key() is not None or settings.database_url is not None:
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
    for field in ("poll_interval_v1_s", "poll_interval_v2_s"):
        if field not in settings.model_fields_set:
            update[field] = DEMO_POLL_INTERVAL_S
    try:
        yield settings.model_copy(update=update)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _services(settings: Settings, *, migrate_first: bool) -> AsyncIterator[Services]:
    async with open_database(settings) as db:
        if migrate_first:
            await migrate(db.engine)
        async with CoreClawClient(settings) as client:
            yield Services(settings, db, Store(db.engine, retry_s=settings.db_retry_s), client)


def _syncers(services: Services, streams: list[Source]) -> list[StreamSync]:
    return [StreamSync(s, services.client, services.store, services.settings) for s in streams]


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    async with (
        _demo_upstream(settings) as settings,
        _services(settings, migrate_first=True) as services,
    ):
        streams = _streams(None)
        daemon = Daemon(
            _syncers(services, streams),
            {s: settings.poll_interval_s(s.value) for s in streams},
            lease=StreamLease(services.db.engine),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop.set)
        web_runner = None
        if settings.http_port:
            from syncd.web import create_app

            app = create_app(
                services.store,
                settings,
                streams,
                on_run_finished=lambda slug: daemon.wake(f"webhook:{slug}"),
            )
            web_runner = await _listen(app, settings)
        try:
            stats = await daemon.run()
        finally:
            if web_runner is not None:
                await web_runner.cleanup()
        if stats.fatal is not None:
            print(f"syncd: {stats.fatal}", file=sys.stderr)
            return EXIT_AUTH if isinstance(stats.fatal, AuthError) else EXIT_CONFIG
    return EXIT_OK


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


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _leased(lease: StreamLease, wanted: list[Source]) -> list[Source]:
    """The streams no other syncd process is syncing right now (the rest are reported)."""
    free = []
    for stream in wanted:
        if await lease.acquire(stream):
            free.append(stream)
        else:
            print(f"syncd: {stream.value}: another syncd process is syncing this stream; "
                  "skipped", file=sys.stderr)  # fmt: skip
    return free


def _report_outcomes(outcomes: list[CycleReport | BaseException]) -> int:
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            print(f"syncd: sync failed: {outcome}", file=sys.stderr)
            continue
        r = outcome.result
        note = "" if outcome.completed else " (stopped early; the next run resumes)"
        print(
            f"{outcome.stream.value}: {outcome.kind.value}, {outcome.pages} pages, "
            f"{outcome.requests} requests, {r.seen} seen, {r.inserted} inserted, "
            f"{r.updated} updated, {r.rejected} rejected{note}"
        )
    if any(isinstance(o, AuthError) for o in failed):
        return EXIT_AUTH
    for exc in failed:
        if not isinstance(exc, SyncdError):
            raise exc
    return EXIT_FAILED if failed else EXIT_OK


async def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    # Finish the page in flight, keep the checkpoint, exit: the next run resumes.
    _stop_on_signals(stop)
    wanted = _streams(args.stream)
    async with _services(settings, migrate_first=True) as services:
        lease = StreamLease(services.db.engine)
        syncers = _syncers(services, await _leased(lease, wanted))
        bar = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
        for syncer in syncers:
            syncer.on_progress = bar.update if bar is not None else None
        outcomes = await asyncio.gather(
            *(s.run_cycle(full=args.full, stop=stop) for s in syncers), return_exceptions=True
        )
        await lease.release()
        if bar is not None:
            bar.close()
    code = _report_outcomes(list(outcomes))
    return code if code != EXIT_OK or len(syncers) == len(wanted) else EXIT_FAILED


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async with open_database(settings) as db:
        revision = await migrate(db.engine, args.revision)
    print(f"database at revision {revision}")
    return EXIT_OK


async def cmd_grant_read(settings: Settings, args: argparse.Namespace) -> int:
    async with open_database(settings) as db:
        await grant_read(db.engine, args.role)
    print(f"role {args.role} can now read every syncd table and view (and future ones)")
    return EXIT_OK


def _age(value: Any, now: dt.datetime) -> str:
    if not isinstance(value, dt.datetime):
        return "never"
    seconds = int((now - value).total_seconds())
    return (
        f"{seconds}s ago"
        if seconds < 3600
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m ago"
    )


def format_status(report: dict[str, Any], now: dt.datetime) -> str:
    lines = [
        f"{'stream':<7}{'last success':<22}{'age':<12}{'pages':>8}{'seen':>10}"
        f"{'changed':>10}{'rejected':>10}  last error"
    ]
    for s in report["streams"]:
        last = s["last_success_at"]
        stamp = last.strftime("%Y-%m-%d %H:%M:%SZ") if last else "-"
        error = (s["last_error"] or "-").splitlines()[0][:60]
        lines.append(
            f"{s['stream']:<7}{stamp:<22}{_age(last, now):<12}{s['pages_fetched']:>8}"
            f"{s['rows_seen']:>10}{s['rows_changed']:>10}{s['rows_rejected']:>10}  {error}"
        )
    counts = ", ".join(f"{name}={n}" for name, n in report["counts"].items())
    lines.append(f"rows: {counts}")
    return "\n".join(lines)


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    async with open_database(settings) as db:
        report = await Store(db.engine, retry_s=0).status_report()  # a question: answer now
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print(format_status(report, dt.datetime.now(dt.UTC)))
    return EXIT_OK


async def cmd_fake_api(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.fakeapi import serve_forever

    task = asyncio.create_task(serve_forever(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return EXIT_OK


async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Simulator + embedded database + daemon for a while, then a summary."""
    settings = settings.model_copy(
        update={
            "api_key": None,
            "database_url": None,
            "poll_interval_v1_s": 3.0,
            "poll_interval_v2_s": 3.0,
        }
    )
    async with (
        _demo_upstream(settings, runs=args.runs) as settings,
        _services(settings, migrate_first=True) as services,
    ):
        streams = _streams(None)
        daemon = Daemon(
            _syncers(services, streams),
            {s: 3.0 for s in streams},
            lease=StreamLease(services.db.engine),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop.set)
        loop.call_later(args.seconds, daemon.stop.set)
        await daemon.run()
        report = await services.store.status_report()
        print(format_status(report, dt.datetime.now(dt.UTC)))
        print(f"database: {services.db.url_redacted}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the daemon: migrate, then poll both endpoints until stopped")
    sync = sub.add_parser("sync", help="one sync cycle, then exit")
    sync.add_argument(
        "--once", action="store_true", help="one cycle (the only mode; accepted for clarity)"
    )
    sync.add_argument("--stream", choices=[s.value for s in Source], help="only this endpoint")
    sync.add_argument(
        "--full", action="store_true", help="ignore any checkpoint: page from the top"
    )
    mig = sub.add_parser("migrate", help="alembic upgrade head")
    mig.add_argument("--revision", default="head")
    status = sub.add_parser("status", help="per-stream sync state and row counts")
    status.add_argument("--json", action="store_true")
    fake = sub.add_parser("fake-api", help="a local CoreClaw-compatible simulator")
    from syncd.fakeapi import add_cli_arguments

    add_cli_arguments(fake)
    grant = sub.add_parser("grant-read", help="give a database role read-only access (for BI)")
    grant.add_argument("role", help="an existing PostgreSQL role, e.g. metabase")
    demo = sub.add_parser("demo", help="simulator + embedded database + daemon for a while")
    demo.add_argument("--seconds", type=float, default=15.0)
    demo.add_argument("--runs", type=int, default=500)
    return parser


COMMANDS = {
    "run": cmd_run,
    "sync": cmd_sync,
    "migrate": cmd_migrate,
    "status": cmd_status,
    "fake-api": cmd_fake_api,
    "demo": cmd_demo,
    "grant-read": cmd_grant_read,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(
        fmt=settings.log_format.value, level=settings.log_level, secrets=settings.secrets()
    )
    # Everything imported and built so far lives as long as the process: out of the
    # collector's sight, full collections during a backfill stop re-walking it.
    gc.freeze()
    try:
        return asyncio.run(COMMANDS[args.command](settings, args))
    except ConfigError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AuthError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
