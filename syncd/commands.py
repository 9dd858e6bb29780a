"""What each `syncd` command does, once `cli.py` has parsed its arguments.

Imported only after parsing, so `syncd --help` and a usage error answer at
once, without aiohttp, SQLAlchemy and alembic; `cli.main` imports it before
freezing the collector's view of what lives as long as the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from syncd.app import (
    all_streams,
    demo_upstream,
    is_demo,
    leased_streams,
    open_services,
    serve,
    stop_on_signals,
    syncers_for,
)
from syncd.config import Settings
from syncd.database import Database, grant_read, migrate, open_database
from syncd.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    StorageError,
    describe_cause,
    exit_code_for,
)
from syncd.logs import report_error, sink
from syncd.progress import ProgressLine
from syncd.storage import Store, StreamLease
from syncd.sync import CycleReport

LOOK_HINT = (
    'look at it: `syncd psql`, or `syncd sql "SELECT status, count(*) FROM runs GROUP BY 1"`'
)


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    demo = is_demo(settings)
    async with (
        demo_upstream(settings) as settings,
        open_services(settings, migrate_first=True) as services,
    ):
        await serve(services)
    if demo:
        print(f"synced into the embedded database; {LOOK_HINT}", file=sys.stderr)
    return EXIT_OK


async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Simulator + embedded database + daemon for a while, then a summary."""
    settings = settings.model_copy(update={"api_key": None, "database_url": None})
    async with (
        demo_upstream(settings, runs=args.runs) as settings,
        open_services(settings, migrate_first=True) as services,
    ):
        intervals = {s: 3.0 for s in all_streams()}
        await serve(services, intervals_s=intervals, stop_after_s=args.seconds, http=False)
        report = await services.store.status_report()
        print(format_status(report, dt.datetime.now(dt.UTC)))
        print(f"database: {services.db.url_redacted}")
        print(LOOK_HINT)
    return EXIT_OK


def _report_outcomes(outcomes: list[CycleReport | BaseException]) -> int:
    codes = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            codes.append(exit_code_for(outcome))
            report_error(f"sync failed: {outcome}")
            continue
        r = outcome.result
        note = "" if outcome.completed else " (stopped early; the next run resumes)"
        print(
            f"{outcome.stream.value}: {outcome.kind.value}, {outcome.pages} pages, "
            f"{outcome.requests} requests, {r.seen} seen, {r.inserted} inserted, "
            f"{r.updated} updated, {r.rejected} rejected{note}"
        )
    return max(codes, key=(EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_AUTH).index, default=EXIT_OK)


async def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    # Finish the page in flight, keep the checkpoint, exit: the next run resumes.
    stop_on_signals(stop.set)
    wanted = all_streams(args.stream)
    async with open_services(settings, migrate_first=True) as services:
        lease = StreamLease(services.db.engine)
        syncers = syncers_for(services, await leased_streams(lease, wanted))
        bar = ProgressLine(sink()) if sink().isatty() else None
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


async def _require_schema(db: Database) -> None:
    from syncd.database import current_revision

    try:
        async with db.engine.connect() as conn:
            revision = await conn.run_sync(current_revision)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"reading status failed: {describe_cause(exc)}") from exc
    if revision is None:
        raise StorageError(
            f"{db.url_redacted} has no syncd tables yet: run `syncd migrate` (or `syncd run`)"
        )


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    async with open_database(settings, create=False) as db:
        await _require_schema(db)
        report = await Store(db.engine, retry_s=0).status_report()  # a question: answer now
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print(format_status(report, dt.datetime.now(dt.UTC)))
    return EXIT_OK


async def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.check import run_check

    report = await run_check(settings)
    print(json.dumps(report.as_json(), default=str, indent=2) if args.json else report.render())
    return report.exit_code


async def cmd_psql(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.database import resolve_url
    from syncd.sqlshell import run_psql

    url, embedded = await resolve_url(settings, create=False)
    # In this thread (signal handling needs the main one); nothing else runs meanwhile.
    return run_psql(url, args.psql_args, embedded=embedded)


async def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.database import resolve_url
    from syncd.sqlshell import query, render_csv, render_table

    url, _ = await resolve_url(settings, create=False)
    columns, rows = await query(url, args.query)
    if args.csv:
        sys.stdout.write(render_csv(columns, rows))
    elif columns:
        print(render_table(columns, rows))
    return EXIT_OK


async def cmd_fake_api(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.fakeapi import serve_forever

    task = asyncio.create_task(serve_forever(args))

    def cancel() -> None:
        task.cancel()

    stop_on_signals(cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return EXIT_OK


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def needs_api_key(command: str, settings: Settings) -> bool:
    """Commands that talk to CoreClaw and cannot without a key (checked before anything runs)."""
    return command == "sync" or (command == "run" and not is_demo(settings))


COMMANDS: dict[str, Command] = {
    "run": cmd_run,
    "sync": cmd_sync,
    "check": cmd_check,
    "migrate": cmd_migrate,
    "status": cmd_status,
    "psql": cmd_psql,
    "sql": cmd_sql,
    "fake-api": cmd_fake_api,
    "demo": cmd_demo,
    "grant-read": cmd_grant_read,
}
