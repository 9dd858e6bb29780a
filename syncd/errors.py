"""Every exception syncd raises, arranged by what the operator should do.

    SyncdError                  anything syncd reports on purpose
    ├── ConfigError             fix the environment / .env and restart
    ├── UpstreamError           about the CoreClaw API (carries the endpoint)
    │   ├── AuthError           the API key is wrong or revoked: replace it
    │   ├── RequestRejected     400/404/422 or a non-zero code: a bug or a bad filter
    │   ├── RateLimited         429 / 13000 / 4290; retried internally first
    │   ├── UpstreamUnavailable 5xx, timeouts, resets, garbage bodies, after retries
    │   └── PagingError         the list ran past the hard page cap: server misbehaving
    ├── BadRecord               one list item could not be parsed (kept in sync_rejects)
    └── StorageError            the database is unreachable or refused: check PostgreSQL

Library errors (aiohttp, asyncpg, SQLAlchemy) are translated into these at one
boundary each: `client.py` for HTTP, `storage.py` for the database.
"""

from __future__ import annotations

# What every command exits with: what went wrong, as the operator's next step.
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_AUTH = 0, 1, 2, 3


class SyncdError(Exception):
    """Base class for errors syncd raises deliberately."""


class ConfigError(SyncdError):
    """A setting is missing or invalid; the message names the variable."""


class UpstreamError(SyncdError):
    """The CoreClaw API failed us.

    `endpoint` is the API path (never a URL with a token in it), `http_status`
    and `app_code` what upstream sent when it sent anything.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        http_status: int | None = None,
        app_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.http_status = http_status
        self.app_code = app_code

    def __str__(self) -> str:
        parts = [super().__str__(), f"endpoint={self.endpoint}"]
        if self.http_status is not None:
            parts.append(f"http_status={self.http_status}")
        if self.app_code is not None:
            parts.append(f"app_code={self.app_code}")
        return " ".join(parts)


class AuthError(UpstreamError):
    """401/12001: the API key is wrong, expired or revoked."""


class RequestRejected(UpstreamError):
    """400/404/422 or a non-zero app code: retrying will not help."""


class RateLimited(UpstreamError):
    """429 / app code 13000 / 4290. `retry_after_s` is what upstream asked for, if anything."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        http_status: int | None = None,
        app_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, http_status=http_status, app_code=app_code)
        self.retry_after_s = retry_after_s


class UpstreamUnavailable(UpstreamError):
    """5xx, timeouts, connection resets or unparseable bodies, after retries ran out."""


class PagingError(UpstreamError):
    """The list did not end within the hard page cap."""


class BadRecord(SyncdError):
    """One upstream list item cannot be turned into a run; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageError(SyncdError):
    """The database is unreachable or rejected a statement."""


def describe_cause(exc: BaseException) -> str:
    """A library error in one line: the driver's own exception (SQLAlchemy keeps it in
    `orig`) and its first line, without SQL text or parameters (they may hold upstream
    data, never secrets)."""
    orig = getattr(exc, "orig", None)
    base = orig if orig is not None else exc
    first = str(base).splitlines()[0] if str(base) else ""
    return f"{type(base).__name__}: {first}".strip()


def exit_code_for(exc: BaseException) -> int:
    """The one table from what went wrong to the exit code (an unknown error is a bug)."""
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, SyncdError):
        return EXIT_FAILED
    raise exc
