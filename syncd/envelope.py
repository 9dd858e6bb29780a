"""Reading CoreClaw's answers: HTTP status and body in, a Page or an exception out.

Pure (no I/O, no aiohttp): the client hands over what it received, this module
says what it means.  Nothing is promised about upstream bodies (SPEC §1), so
every field is checked, and a 200 whose `code` is not 0 is never data.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import orjson

from syncd.backoff import parse_retry_after
from syncd.errors import (
    AuthError,
    RateLimited,
    RequestRejected,
    UpstreamUnavailable,
)
from syncd.models import Page

RATE_LIMIT_CODES = frozenset({13000, 4290})  # v2 and legacy v1 spelling
AUTH_CODES = frozenset({12001})
SERVER_ERROR_CODES = frozenset({10000})
_MESSAGE_MAX = 200


class Retryable(UpstreamUnavailable):
    """A failed attempt worth retrying; `reason` labels the retry metric."""

    def __init__(self, problem: str, *, endpoint: str, reason: str, **kw: Any) -> None:
        super().__init__(problem, endpoint=endpoint, **kw)
        self.problem = problem
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None
    location: str | None


def decode_answer(
    endpoint: str, answer: Answer, now: dt.datetime, *, secrets: tuple[str, ...]
) -> Page:
    """Turn one HTTP answer into a Page, or raise what it means."""
    envelope = _json_object(answer.body)
    code = _as_int(envelope.get("code")) if envelope is not None else None
    status = answer.status
    if status == 429 or code in RATE_LIMIT_CODES:
        raise RateLimited(
            "CoreClaw asked us to slow down",
            endpoint=endpoint,
            http_status=status,
            app_code=code,
            retry_after_s=parse_retry_after(answer.retry_after, now),
        )
    if status == 401 or code in AUTH_CODES:
        raise AuthError(
            f"CoreClaw rejected the API key (HTTP {status}): check SYNCD_API_KEY",
            endpoint=endpoint,
            http_status=status,
            app_code=code,
        )
    # 408 is a timeout the server reports (RFC 9110: the request may be repeated), not a
    # request that is wrong: it is retried like the timeouts this side sees.
    if status >= 500 or status == 408 or code in SERVER_ERROR_CODES:
        raise Retryable(
            f"HTTP {status}" + (f" code {code}" if code else ""),
            endpoint=endpoint,
            reason="server_error",
            http_status=status,
            app_code=code,
        )
    if status >= 300:
        raise _rejected(endpoint, answer, envelope, code, secrets)
    return decode_ok(endpoint, status, envelope, code, secrets, now)


def decode_ok(
    endpoint: str,
    status: int,
    envelope: dict[str, Any] | None,
    code: int | None,
    secrets: tuple[str, ...],
    now: dt.datetime,
) -> Page:
    if envelope is None:
        raise Retryable(
            f"HTTP {status} with a body that is not a JSON object",
            endpoint=endpoint,
            reason="bad_body",
            http_status=status,
        )
    if code is None:
        raise Retryable(
            f"HTTP {status} with no integer `code` in the body",
            endpoint=endpoint,
            reason="bad_body",
            http_status=status,
        )
    if code != 0:
        # A 200 with a non-zero code is never data (v1 reports errors this way).
        raise RequestRejected(
            f"CoreClaw rejected the request: {_message(envelope, secrets)}",
            endpoint=endpoint,
            http_status=status,
            app_code=code,
        )
    data = envelope.get("data")
    items = data.get("list") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(items, list):
        raise Retryable(
            f"HTTP {status} with code 0 but no `data.list` array",
            endpoint=endpoint,
            reason="bad_body",
            http_status=status,
            app_code=0,
        )
    request_id = envelope.get("request_id")
    return Page(
        items=items,
        fetched_at=now,
        count=_as_count(data.get("count")),
        page_index=_as_count(data.get("page_index")),
        page_size=_as_count(data.get("page_size")),
        request_id=request_id if isinstance(request_id, str) else None,
    )


def _rejected(
    endpoint: str,
    answer: Answer,
    envelope: dict[str, Any] | None,
    code: int | None,
    secrets: tuple[str, ...],
) -> RequestRejected:
    if answer.status < 400:
        # Location is shown without its query: that is where a query token would be.
        target = (answer.location or "?").split("?", 1)[0]
        detail = f"unexpected redirect to {scrub(target, *secrets)}: check SYNCD_API_URL"
    else:
        detail = _message(envelope, secrets) if envelope is not None else "no JSON body"
    return RequestRejected(
        f"CoreClaw rejected the request (HTTP {answer.status}): {detail}",
        endpoint=endpoint,
        http_status=answer.status,
        app_code=code,
    )


def exhausted_rate_limit(exc: RateLimited, attempts: int) -> RateLimited:
    return RateLimited(
        f"CoreClaw still rate limiting after {attempts} attempts",
        endpoint=exc.endpoint,
        http_status=exc.http_status,
        app_code=exc.app_code,
        retry_after_s=exc.retry_after_s,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _lenient_json(body)
    return value if isinstance(value, dict) else None


def _lenient_json(body: bytes) -> Any:
    """The stdlib parser accepts what orjson refuses (lone UTF-16 surrogates in strings);
    one such character must not make a whole page unreadable forever."""
    try:
        return _replace_surrogates(json.loads(body))
    except (ValueError, RecursionError):
        return None


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def _as_int(value: object) -> int | None:
    """An int, or an int-like string; anything else (bool, float, junk) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    return None


def _as_count(value: object) -> int | None:
    number = _as_int(value)
    return number if number is not None and number >= 0 else None


def _message(envelope: dict[str, Any] | None, secrets: tuple[str, ...]) -> str:
    raw = envelope.get("message") if envelope is not None else None
    text = raw if isinstance(raw, str) and raw.strip() else "no message"
    # Scrub before cutting: a cut could leave a prefix of the key that no longer matches.
    return scrub(text.strip(), *secrets)[:_MESSAGE_MAX]


def scrub(text: str, *secrets: str) -> str:
    """Upstream text is echoed into errors; make sure it cannot echo the key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
