"""Reading CoreClaw's answers (pure): what each status, code and body means."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from syncd.envelope import Answer, Retryable, decode_answer
from syncd.errors import AuthError, RateLimited, RequestRejected, UpstreamError

V1 = "/api/v1/run/list"
NOW = dt.datetime(2026, 3, 5, 12, 0, 0, tzinfo=dt.UTC)
ITEM = {"slug": "R1", "scraper_slug": "w", "status": 3}
# A body that would be data if the status and code allowed it.
DATA_BODY = {"code": 0, "message": "success", "data": {"count": 1, "list": [ITEM]}}


def answer(status: int = 200, payload: Any = DATA_BODY, *, location: str | None = None) -> Answer:
    return Answer(status=status, body=orjson.dumps(payload), retry_after=None, location=location)


def decode(reply: Answer) -> Any:
    return decode_answer(V1, reply, NOW, secrets=())


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 11000, "message": "Bad worker_id", "data": {"count": 1, "list": [ITEM]}},
        {"code": 4000, "message": "Invalid request parameters", "data": {"list": [ITEM]}},
        {"code": "4000", "message": "Invalid request parameters", "data": {"list": []}},
        {"code": -1, "message": "internal", "data": {"count": 0, "list": []}},
    ],
)
def test_nonzero_code_with_a_well_formed_list_is_never_data(payload: dict[str, Any]) -> None:
    """A 200 whose code is not 0 is rejected even when `data.list` looks like data."""
    with pytest.raises(RequestRejected) as caught:
        decode(answer(200, payload))
    assert caught.value.app_code == int(payload["code"])
    assert payload["message"] in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, Retryable),
        (503, Retryable),
        (408, Retryable),  # Request Timeout is a timeout: retried like one (client.py's table)
        (429, RateLimited),
        (401, AuthError),
        (300, RequestRejected),
        (302, RequestRejected),
        (307, RequestRejected),
        (400, RequestRejected),
        (404, RequestRejected),
        (409, RequestRejected),
    ],
)
def test_the_http_status_decides_before_a_data_body(
    status: int, error: type[UpstreamError]
) -> None:
    """A non-2xx answer is never data, whatever its body: 5xx and 408 are retried, 429 waits,
    401 is an auth error, redirects and other 4xx are rejected."""
    with pytest.raises(error) as caught:
        decode(answer(status, DATA_BODY, location="https://elsewhere.test/"))
    assert caught.value.http_status == status


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"count": 0, "page_index": 0, "page_size": 0}, (0, 0, 0)),
        ({"count": "0"}, (0, None, None)),
        ({"count": -1, "page_index": "-2"}, (None, None, None)),
    ],
)
def test_zero_is_a_count_and_negatives_are_not(
    data: dict[str, Any], expected: tuple[int | None, ...]
) -> None:
    """count/page_index/page_size of 0 are 0 (an empty list is known empty); negatives are None."""
    page = decode(answer(200, {"code": 0, "data": {"list": [], **data}}))
    assert (page.count, page.page_index, page.page_size) == expected


def test_upstream_message_is_cut_to_200_characters() -> None:
    """However long upstream's message, an error carries at most its first 200 characters."""
    message = "m" * 150 + "x" * 350
    with pytest.raises(RequestRejected) as caught:
        decode(answer(200, {"code": 4000, "message": message, "data": None}))
    text = str(caught.value)
    assert message[:200] in text and message[:201] not in text
