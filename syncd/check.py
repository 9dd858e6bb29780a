"""`syncd check`: is this configuration ready to sync?  Looked at, never changed.

It reaches the database (without migrating or creating anything; the embedded
server is started only when it is the configured database and exists
already), makes one authenticated request per endpoint plus v2's offset-
reading probe, and says what it found.  Each finding carries the exit code it
would end a `syncd sync` with.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from syncd.client import CoreClawClient
from syncd.config import Settings, redact_url
from syncd.database import (
    EMBEDDED_DB_NAME,
    current_revision,
    database_exists,
    embedded_exists,
    head_revision,
    start_embedded_server,
    url_for_database,
)
from syncd.endpoints import ENDPOINTS
from syncd.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    AuthError,
    ConfigError,
    SyncdError,
    describe_cause,
)
from syncd.models import Source


@dataclass(frozen=True)
class Finding:
    """One thing looked at: `exit_code` 0 when it is fine (a `note` may still say more)."""

    name: str
    summary: str
    exit_code: int = EXIT_OK
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK


@dataclass(frozen=True)
class CheckReport:
    findings: list[Finding]

    @property
    def exit_code(self) -> int:
        """The gravest finding's code: a rejected key over bad settings over failures."""
        codes = {f.exit_code for f in self.findings}
        for code in (EXIT_AUTH, EXIT_CONFIG, EXIT_FAILED):
            if code in codes:
                return code
        return EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "checks": [
                {"name": f.name, "ok": f.ok, "summary": f.summary, **f.data} for f in self.findings
            ],
        }

    def render(self) -> str:
        lines = [f"{'ok' if f.ok else 'FAIL':<5}{f.name:<10}{f.summary}" for f in self.findings]
        verdict = "ready to sync" if self.exit_code == EXIT_OK else "not ready"
        lines.append(f"syncd check: {verdict} (exit {self.exit_code})")
        return "\n".join(lines)


async def run_check(settings: Settings) -> CheckReport:
    findings = [_settings_finding(settings), await check_database(settings)]
    findings.extend(await check_upstream(settings))
    return CheckReport(findings)


def _settings_finding(settings: Settings) -> Finding:
    database = (
        redact_url(settings.database_url.get_secret_value())
        if settings.database_url is not None
        else f"embedded PostgreSQL in {settings.data_dir}"
    )
    return Finding(
        "settings",
        f"valid; API {settings.api_url}, database {database}",
        data={"api_url": settings.api_url, "database": database},
    )


async def check_database(settings: Settings) -> Finding:
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        where = redact_url(url)
    else:
        if not embedded_exists(settings.data_dir):
            return Finding(
                "database",
                f"embedded PostgreSQL not created yet in {settings.data_dir} "
                "(the first `syncd run` or `syncd migrate` creates it)",
                data={"embedded": True, "exists": False},
            )
        try:
            admin = await asyncio.to_thread(start_embedded_server, settings.data_dir)
            exists = await database_exists(admin, EMBEDDED_DB_NAME)
        except SyncdError as exc:
            return Finding("database", str(exc), EXIT_FAILED, {"embedded": True})
        if not exists:
            return Finding(
                "database",
                f"embedded PostgreSQL running, database {EMBEDDED_DB_NAME!r} not created yet",
                data={"embedded": True, "exists": False},
            )
        url = url_for_database(admin, EMBEDDED_DB_NAME)
        where = f"embedded PostgreSQL in {settings.data_dir}"
    return await _schema_finding(url, where, embedded=settings.database_url is None)


async def _schema_finding(url: str, where: str, *, embedded: bool) -> Finding:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            version = await conn.scalar(text("SHOW server_version"))
            revision = await conn.run_sync(current_revision)
    except (SQLAlchemyError, OSError) as exc:
        return Finding(
            "database", f"{where}: unreachable: {describe_cause(exc)}", EXIT_FAILED,
            {"embedded": embedded},
        )  # fmt: skip
    finally:
        await engine.dispose()
    head = head_revision()
    data = {"embedded": embedded, "server_version": version, "revision": revision, "head": head}
    if revision is None:
        state = f"not migrated (head is {head}): `syncd migrate` or `syncd run` creates the tables"
    elif revision != head:
        state = f"schema at {revision}, head is {head}: `syncd migrate` upgrades it"
    else:
        state = f"schema at head {head}"
    return Finding("database", f"{where}, PostgreSQL {version}, {state}", data=data)


async def check_upstream(settings: Settings) -> list[Finding]:
    # A question deserves a prompt answer: one retry, short waits.
    quick = settings.model_copy(update={"max_retries": 1, "max_backoff_s": 2.0})
    try:
        client = CoreClawClient(quick)
    except ConfigError as exc:
        return [Finding("api", str(exc), EXIT_CONFIG)]
    findings = []
    async with client:
        for source in ENDPOINTS:
            findings.append(await _endpoint_finding(client, source))
            if findings[-1].exit_code == EXIT_AUTH:
                break  # the same key: the other endpoint would say the same
    return findings


async def _endpoint_finding(client: CoreClawClient, source: Source) -> Finding:
    name = f"api {source.value}"
    started = time.perf_counter()
    try:
        page = await client.fetch_page(source, 0, 1)
    except AuthError as exc:
        return Finding(name, str(exc), EXIT_AUTH)
    except SyncdError as exc:
        return Finding(name, str(exc), EXIT_FAILED)
    rtt_ms = round((time.perf_counter() - started) * 1000)
    data: dict[str, Any] = {"runs": page.count, "round_trip_ms": rtt_ms}
    summary = f"key accepted, {page.count if page.count is not None else '?'} runs"
    if ENDPOINTS[source].offset_reading:
        detection = client.detection
        data.update(offset_reading=detection.mode.value if detection.mode else None,
                    decided_by=detection.decided_by, settled=detection.settled)  # fmt: skip
        reading = detection.mode.value if detection.mode else "unknown"
        summary += f", offset reading {reading} ({detection.decided_by})"
        summary += f", {rtt_ms} ms incl. the reading's probe"
    else:
        summary += f", round trip {rtt_ms} ms"
    return Finding(name, summary, data=data)
