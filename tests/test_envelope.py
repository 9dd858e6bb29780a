"""What an answer means: HTTP status and body in, a Page or the error it stands for out."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest

from syncd.envelope import (
    Answer,
    Retryable,
    decode_answer,
    decode_ok,
    exhausted_rate_limit,
    scrub,
)
from syncd.errors import (
    AuthError,
    RateLimited,
    RequestRejected,
    UpstreamError,
    UpstreamUnavailable,
)
from syncd.models import Page

NOW = dt.datetime(2026, 11, 23, 3, 30, tzinfo=dt.UTC)
ENDPOINT = "/api/v2/worker-runs"
SECRET = "sk-live-0123456789abcdef"
LIST = {"list": [{"slug": "r1"}, {"slug": "r2"}], "count": 2}


def answer(
    status: int,
    body: Any,
    *,
    retry_after: str | None = None,
    location: str | None = None,
) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status=status, body=raw, retry_after=retry_after, location=location)


def decode(status: int, body: Any, **kw: Any) -> Page:
    return decode_answer(ENDPOINT, answer(status, body, **kw), NOW, secrets=(SECRET,))


def test_200_code_0_is_a_page_stamped_with_the_given_now() -> None:
    """HTTP 200 and code 0: the items as sent, the counts read, fetched_at = the caller's now."""
    body = {"code": 0, "request_id": "req-9", "data": {**LIST, "page_index": 1, "page_size": 20}}
    page = decode(200, body)
    assert page == Page(
        items=[{"slug": "r1"}, {"slug": "r2"}],
        count=2,
        fetched_at=NOW,
        page_index=1,
        page_size=20,
        request_id="req-9",
    )


@pytest.mark.parametrize(
    ("data", "count", "page_index"),
    [
        ({"list": [], "count": "7", "page_index": " 2 "}, 7, 2),  # int-like strings
        ({"list": [], "count": -1, "page_index": 1.5}, None, None),  # negative, float
        ({"list": [], "count": True, "page_index": "two"}, None, None),  # bool, junk
        ({"list": []}, None, None),  # omitted
    ],
)
def test_page_numbers_are_read_defensively(
    data: dict[str, Any], count: int | None, page_index: int | None
) -> None:
    """count / page_index are ints, int-like strings or None; never a bool, float or junk."""
    page = decode(200, {"code": 0, "data": data})
    assert (page.count, page.page_index) == (count, page_index)


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "app_code", "retry_after_s"),
    [
        (429, {"code": 13000, "message": "slow down"}, "2", 13000, 2.0),
        (429, b"Too Many Requests", None, None, None),
        (200, {"code": 13000, "data": LIST}, "1.5", 13000, 1.5),  # v2 spelling, with HTTP 200
        (200, {"code": 4290, "data": LIST}, None, 4290, None),  # legacy v1 spelling
        (200, {"code": "13000"}, "Mon, 23 Nov 2026 03:30:05 GMT", 13000, 5.0),  # an HTTP-date
        (503, {"code": 4290}, "garbage", 4290, None),  # the code wins over a 5xx
    ],
)
def test_rate_limits_carry_retry_after(
    status: int, body: Any, retry_after: str | None, app_code: int | None, retry_after_s: float
) -> None:
    """429, or code 13000 / 4290 whatever the status, is RateLimited with Retry-After in seconds."""
    with pytest.raises(RateLimited) as caught:
        decode(status, body, retry_after=retry_after)
    err = caught.value
    assert (err.endpoint, err.http_status, err.app_code) == (ENDPOINT, status, app_code)
    assert err.retry_after_s == retry_after_s


@pytest.mark.parametrize(
    ("status", "body"),
    [(401, {"code": 12001, "message": "bad key"}), (401, b""), (200, {"code": 12001})],
)
def test_rejected_key_is_an_auth_error_naming_the_setting(status: int, body: Any) -> None:
    """HTTP 401 or code 12001 is AuthError, telling the operator to check SYNCD_API_KEY."""
    with pytest.raises(AuthError, match="check SYNCD_API_KEY"):
        decode(status, body)


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [
        (500, {"code": 10000}, "HTTP 500 code 10000"),
        (502, b"<html>Bad Gateway</html>", "HTTP 502"),
        (504, {"code": 0, "data": LIST}, "HTTP 504"),  # data in a 5xx is not taken
        (408, b"", "HTTP 408"),
        (200, {"code": 10000, "data": LIST}, "HTTP 200 code 10000"),  # the server-error code
    ],
)
def test_server_errors_are_retryable(status: int, body: Any, problem: str) -> None:
    """5xx, 408 and code 10000 are worth another attempt (labelled server_error)."""
    with pytest.raises(Retryable) as caught:
        decode(status, body)
    assert caught.value.problem == problem and caught.value.reason == "server_error"
    assert isinstance(caught.value, UpstreamUnavailable)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"code": 4000, "message": f"bad offset for key {SECRET}"}),
        (404, {"code": 11004, "message": f"no such path ?token={SECRET}"}),
        (422, {"code": 0, "message": f"{SECRET} is not a number", "data": LIST}),
        (200, {"code": 4000, "message": f"page_size too large (key {SECRET})", "data": LIST}),
        (200, {"code": 99, "message": SECRET, "data": {"list": [{"slug": "r1"}]}}),
    ],
)
def test_client_errors_and_nonzero_codes_are_rejected_and_scrubbed(status: int, body: Any) -> None:
    """400/404/422 and any non-zero code are RequestRejected, quoting upstream without the key;
    a 200 with a non-zero code and a well-formed data.list is not taken as data."""
    with pytest.raises(RequestRejected) as caught:
        decode(status, body)
    message = str(caught.value)
    assert SECRET not in message and "***" in message
    assert caught.value.http_status == status and caught.value.app_code == body["code"]


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (404, b"Not Found", "no JSON body"),
        (400, {"code": 4000}, "no message"),
        (400, {"code": 4000, "message": "   "}, "no message"),
        (400, {"code": 4000, "message": "x" * 500}, "x" * 200),
    ],
)
def test_rejection_messages_are_one_bounded_line(status: int, body: Any, needle: str) -> None:
    """A rejection says what upstream said (at most 200 characters), or that it said nothing."""
    with pytest.raises(RequestRejected) as caught:
        decode(status, body)
    assert needle in str(caught.value) and "x" * 201 not in str(caught.value)


def test_redirect_names_the_target_without_its_query() -> None:
    """A 3xx is rejected, naming where it points (no query string: a token could be there)."""
    location = f"https://login.example.com/sso?next=/api&token={SECRET}"
    with pytest.raises(RequestRejected, match="check SYNCD_API_URL") as caught:
        decode(302, b"", location=location)
    message = str(caught.value)
    assert "https://login.example.com/sso" in message and "token" not in message


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway</html>",
        b"",
        b"[1, 2, 3]",
        b'"a string"',
        {"message": "no code at all", "data": LIST},
        {"code": None, "data": LIST},
        {"code": 1.0, "data": LIST},
        {"code": True, "data": LIST},
        {"code": 0},
        {"code": 0, "data": {"count": 3}},
        {"code": 0, "data": {"list": {"slug": "r1"}}},
        {"code": 0, "data": [{"slug": "r1"}]},
    ],
)
def test_unreadable_200_bodies_are_retryable(body: Any) -> None:
    """A 200 that is not JSON, has no integer code, or has code 0 but no data.list array."""
    with pytest.raises(Retryable) as caught:
        decode(200, body)
    assert caught.value.reason == "bad_body"


def test_lone_surrogates_do_not_make_a_page_unreadable() -> None:
    """A string orjson refuses (a lone UTF-16 surrogate) is read with a replacement character."""
    body = b'{"code": 0, "data": {"list": [{"slug": "r1", "title": "bad \\ud800 char"}]}}'
    page = decode(200, body)
    assert page.items == [{"slug": "r1", "title": "bad \ufffd char"}]


def test_decode_ok_takes_the_already_parsed_envelope() -> None:
    """decode_ok reads an envelope already parsed (as a 2xx body), stamping the given now."""
    page = decode_ok(ENDPOINT, 200, {"code": 0, "data": LIST}, 0, (SECRET,), NOW)
    assert (len(page.items), page.count, page.fetched_at) == (2, 2, NOW)
    with pytest.raises(RequestRejected):
        decode_ok(ENDPOINT, 200, {"code": 7, "data": LIST}, 7, (SECRET,), NOW)
    with pytest.raises(Retryable):
        decode_ok(ENDPOINT, 200, None, None, (SECRET,), NOW)


def test_exhausted_rate_limit_keeps_the_context() -> None:
    """After the retries run out, the error still carries endpoint, status, code and Retry-After."""
    first = RateLimited("x", endpoint=ENDPOINT, http_status=429, app_code=13000, retry_after_s=3.0)
    final = exhausted_rate_limit(first, 5)
    assert "after 5 attempts" in str(final)
    assert (final.endpoint, final.http_status, final.app_code, final.retry_after_s) == (
        ENDPOINT,
        429,
        13000,
        3.0,
    )
    assert isinstance(final, UpstreamError)


@pytest.mark.parametrize(
    ("text", "secrets", "scrubbed"),
    [
        ("key sk-1 and sk-1 again", ("sk-1",), "key *** and *** again"),
        ("two: a1 b2", ("a1", "b2"), "two: *** ***"),
        ("nothing to hide", ("", "zz"), "nothing to hide"),
    ],
)
def test_scrub_replaces_every_secret(text: str, secrets: tuple[str, ...], scrubbed: str) -> None:
    """Each non-empty secret is replaced wherever it occurs; an empty one changes nothing."""
    assert scrub(text, *secrets) == scrubbed


# -- rules pinned by mutation testing (a mutant of envelope.py survived without them) --

M_V1 = "/api/v1/run/list"
M_NOW = dt.datetime(2026, 3, 5, 12, 0, 0, tzinfo=dt.UTC)
M_ITEM = {"slug": "R1", "scraper_slug": "w", "status": 3}
# A body that would be data if the status and code allowed it.
M_DATA_BODY = {"code": 0, "message": "success", "data": {"count": 1, "list": [M_ITEM]}}


def m_answer(
    status: int = 200, payload: Any = M_DATA_BODY, *, location: str | None = None
) -> Answer:
    return Answer(status=status, body=orjson.dumps(payload), retry_after=None, location=location)


def m_decode(reply: Answer) -> Any:
    return decode_answer(M_V1, reply, M_NOW, secrets=())


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 11000, "message": "Bad worker_id", "data": {"count": 1, "list": [M_ITEM]}},
        {"code": 4000, "message": "Invalid request parameters", "data": {"list": [M_ITEM]}},
        {"code": "4000", "message": "Invalid request parameters", "data": {"list": []}},
        {"code": -1, "message": "internal", "data": {"count": 0, "list": []}},
    ],
)
def test_nonzero_code_with_a_well_formed_list_is_never_data(payload: dict[str, Any]) -> None:
    """A 200 whose code is not 0 is rejected even when `data.list` looks like data."""
    with pytest.raises(RequestRejected) as caught:
        m_decode(m_answer(200, payload))
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
        m_decode(m_answer(status, M_DATA_BODY, location="https://elsewhere.test/"))
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
    page = m_decode(m_answer(200, {"code": 0, "data": {"list": [], **data}}))
    assert (page.count, page.page_index, page.page_size) == expected


def test_upstream_message_is_cut_to_200_characters() -> None:
    """However long upstream's message, an error carries at most its first 200 characters."""
    message = "m" * 150 + "x" * 350
    with pytest.raises(RequestRejected) as caught:
        m_decode(m_answer(200, {"code": 4000, "message": message, "data": None}))
    text = str(caught.value)
    assert message[:200] in text and message[:201] not in text
