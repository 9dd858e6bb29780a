"""The exception tree: what each error says about itself, and library errors in one line."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from syncd.errors import (
    AuthError,
    BadRecord,
    ConfigError,
    PagingError,
    RateLimited,
    RequestRejected,
    StorageError,
    SyncdError,
    UpstreamError,
    UpstreamUnavailable,
    describe_cause,
)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            UpstreamError("boom", endpoint="/api/v2/worker-runs", http_status=503, app_code=10000),
            "boom endpoint=/api/v2/worker-runs http_status=503 app_code=10000",
        ),
        (UpstreamError("reset", endpoint="/api/v1/run/list"), "reset endpoint=/api/v1/run/list"),
        (
            RequestRejected("no", endpoint="/api/v1/run/list", http_status=200, app_code=0),
            "no endpoint=/api/v1/run/list http_status=200 app_code=0",
        ),
        (
            RateLimited("slow", endpoint="/e", app_code=13000, retry_after_s=2.0),
            "slow endpoint=/e app_code=13000",
        ),
    ],
)
def test_upstream_error_text_carries_endpoint_status_and_code(
    error: UpstreamError, text: str
) -> None:
    """str() of an upstream error names the endpoint, and the status and code when known
    (a code 0 included)."""
    assert str(error) == text


def test_upstream_errors_keep_their_context_as_attributes() -> None:
    """endpoint, http_status, app_code (and retry_after_s) stay readable for the caller."""
    err = RateLimited("slow", endpoint="/e", http_status=429, app_code=13000, retry_after_s=1.5)
    assert (err.endpoint, err.http_status, err.app_code, err.retry_after_s) == (
        "/e",
        429,
        13000,
        1.5,
    )
    assert RateLimited("slow", endpoint="/e").retry_after_s is None


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (ConfigError, SyncdError),
        (UpstreamError, SyncdError),
        (AuthError, UpstreamError),
        (RequestRejected, UpstreamError),
        (RateLimited, UpstreamError),
        (UpstreamUnavailable, UpstreamError),
        (PagingError, UpstreamError),
        (BadRecord, SyncdError),
        (StorageError, SyncdError),
    ],
)
def test_the_tree_is_as_drawn(cls: type[Exception], parent: type[Exception]) -> None:
    """Each error sits where the module docstring draws it."""
    assert issubclass(cls, parent)


def test_bad_record_keeps_its_reason() -> None:
    """A rejected item's reason is its message and an attribute."""
    err = BadRecord("no slug")
    assert (str(err), err.reason) == ("no slug", "no slug")


class DriverError(Exception):
    """Stands in for an asyncpg exception."""


def test_describe_cause_names_the_driver_error_without_sql() -> None:
    """A SQLAlchemy error is described by the driver's own exception and first line: no SQL,
    no parameters."""
    orig = DriverError('duplicate key value violates "runs_pkey"\nDETAIL: Key (slug)=(r1)')
    exc = DBAPIError("INSERT INTO runs VALUES ($1)", {"slug": "secret-ish"}, orig)
    described = describe_cause(exc)
    assert described == 'DriverError: duplicate key value violates "runs_pkey"'
    assert "INSERT" not in described and "secret-ish" not in described and "\n" not in described


@pytest.mark.parametrize(
    ("exc", "described"),
    [
        (
            OSError(111, "Connect call failed"),
            "ConnectionRefusedError: [Errno 111] Connect call failed",
        ),
        (TimeoutError(), "TimeoutError:"),
        (ValueError("first\nsecond"), "ValueError: first"),
    ],
)
def test_describe_cause_of_other_errors_is_their_first_line(
    exc: BaseException, described: str
) -> None:
    """Without `orig`, the exception itself: its type and first line (just the type if empty)."""
    assert describe_cause(exc) == described
