"""CoreClawClient against aioresponses: auth, decoding, retries, rate limits, paging, detection.

Time is fake: the client and its limiter sleep on a clock that only moves when
slept on, so no test really waits and every request carries its send time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import CallbackResult, aioresponses
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs
from yarl import URL

from syncd.client import DETECT_ATTEMPTS, CoreClawClient
from syncd.clock import Clock
from syncd.config import AuthMode, Settings
from syncd.errors import (
    AuthError,
    ConfigError,
    PagingError,
    RateLimited,
    RequestRejected,
    UpstreamError,
    UpstreamUnavailable,
)
from syncd.models import OffsetMode, Source
from syncd.pagination import is_last_page
from syncd.ratelimit import RateLimiter, Ticket
from tests.clock import FakeClock

API = "https://api.coreclaw.test"
KEY = "sk-live-7Hq2ZxW9bN4mKp0S"
V1 = "/api/v1/run/list"
V2 = "/api/v2/worker-runs"
NOW = dt.datetime(2026, 3, 5, 12, 0, 0, tzinfo=dt.UTC)


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass aiohttp 3.14's new required `stream_writer`.

    Known upstream: pnuckowski/aioresponses#289.  The response is already
    "sent" (writer=None), so aiohttp only reads `output_size` from it.
    """

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if "stream_writer" in _RESPONSE_PARAMS:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


_RESPONSE_PARAMS = inspect.signature(aiohttp.ClientResponse.__init__).parameters


@dataclass
class Call:
    at: float
    method: str
    url: URL
    kwargs: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.kwargs.get("headers") or {})


Reply = Callable[[URL, dict[str, Any]], CallbackResult]


@dataclass
class Upstream:
    """Scripted CoreClaw: each endpoint answers from its own queue, recording every request."""

    clock: FakeClock
    calls: list[Call] = field(default_factory=list)
    scripts: dict[str, deque[Reply]] = field(default_factory=dict)
    fallback: dict[str, Reply] = field(default_factory=dict)

    def callback(self, method: str, path: str) -> Callable[..., CallbackResult]:
        def answer(url: URL, **kwargs: Any) -> CallbackResult:
            self.calls.append(Call(self.clock.now, method, url, kwargs))
            queue = self.scripts.get(path)
            reply = queue.popleft() if queue else self.fallback[path]
            return reply(url, kwargs)

        return answer

    def then(self, path: str, *replies: Reply) -> None:
        self.scripts.setdefault(path, deque()).extend(replies)

    def to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.url.path == path]


def reply(
    status: int = 200,
    payload: Any = None,
    *,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Reply:
    def build(url: URL, kwargs: dict[str, Any]) -> CallbackResult:
        text = body if body is not None else orjson.dumps(payload).decode()
        return CallbackResult(
            status=status,
            body=text,
            headers=headers,
            content_type=content_type,
            response_class=CompatResponse,
        )

    return build


def fail(exc: BaseException) -> Reply:
    def build(url: URL, kwargs: dict[str, Any]) -> CallbackResult:
        raise exc

    return build


def ok(items: list[Any] | None = None, count: Any = None, **data: Any) -> Reply:
    items = [] if items is None else items
    envelope = {"code": 0, "message": "success", "request_id": "req-1"}
    envelope["data"] = {"list": items, "count": len(items) if count is None else count, **data}
    return reply(200, envelope)


def runs(*slugs: str) -> list[dict[str, Any]]:
    return [{"slug": s, "scraper_slug": "w", "status": "running"} for s in slugs]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_key": SecretStr(KEY),
        "api_url": API,
        "max_retries": 3,
        "max_backoff_s": 120.0,
        "retry_after_floor_s": 0.5,
        "v2_offset_mode": OffsetMode.AUTO,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream(clock: FakeClock) -> Iterator[Upstream]:
    fake = Upstream(clock)
    with aioresponses() as mocked:
        mocked.get(
            re.compile(re.escape(API + V2) + r"(\?.*)?$"),
            callback=fake.callback("GET", V2),
            repeat=True,
        )
        mocked.post(
            re.compile(re.escape(API + V1) + r"(\?.*)?$"),
            callback=fake.callback("POST", V1),
            repeat=True,
        )
        yield fake


MakeClient = Callable[..., CoreClawClient]


@pytest.fixture
async def make_client(clock: FakeClock) -> AsyncIterator[MakeClient]:
    made: list[CoreClawClient] = []

    def build(limiter: RateLimiter | None = None, **overrides: Any) -> CoreClawClient:
        client = CoreClawClient(
            make_settings(**overrides),
            limiter=limiter,
            clock=Clock(now=lambda: NOW, monotonic=clock.monotonic, sleep=clock.sleep),
            rand=lambda: 1.0,
        )
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


@pytest.fixture
def client(make_client: MakeClient) -> CoreClawClient:
    return make_client()


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- requests and auth ---------------------------------------------------------


async def test_bearer_auth_header(client: CoreClawClient, upstream: Upstream) -> None:
    """Default auth sends Authorization: Bearer and keeps the key out of the URL."""
    upstream.then(V2, ok())
    await client.list_v2(offset=0, limit=10)
    (call,) = upstream.calls
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert "api-key" not in call.headers
    assert KEY not in str(call.url)


async def test_api_key_header_auth(make_client: MakeClient, upstream: Upstream) -> None:
    """auth_mode=api-key sends the legacy api-key header only."""
    upstream.then(V1, ok())
    await make_client(auth_mode=AuthMode.API_KEY).list_v1(page_index=1, page_size=10)
    (call,) = upstream.calls
    assert call.headers["api-key"] == KEY
    assert "Authorization" not in call.headers
    assert KEY not in str(call.url)


async def test_query_token_auth_warns_once(make_client: MakeClient, upstream: Upstream) -> None:
    """auth_mode=query puts ?token= in the URL and warns once, at construction."""
    upstream.then(V2, ok(), ok())
    with capture_logs() as logs:
        client = make_client(auth_mode=AuthMode.QUERY)
        await client.list_v2(offset=0, limit=5)
        await client.list_v2(offset=5, limit=5)
    warnings = [e for e in logs if e["event"] == "api_key_in_query_string"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert all(c.url.query["token"] == KEY for c in upstream.calls)
    assert all("Authorization" not in c.headers for c in upstream.calls)


def test_missing_key_is_a_config_error() -> None:
    """No key at all: ConfigError naming SYNCD_API_KEY, before any request."""
    with pytest.raises(ConfigError, match="SYNCD_API_KEY"):
        CoreClawClient(make_settings(api_key=None))


async def test_list_v2_query_parameters(client: CoreClawClient, upstream: Upstream) -> None:
    """v2 sends offset, limit, worker_id as owner~name and the status string."""
    upstream.then(V2, ok())
    await client.list_v2(offset=40, limit=20, worker_id="acme/news", status="running")
    assert dict(upstream.calls[0].url.query) == {
        "offset": "40",
        "limit": "20",
        "worker_id": "acme~news",
        "status": "running",
    }


async def test_list_v2_refuses_limit_over_100(client: CoreClawClient) -> None:
    """limit is 1-100 on v2; asking for more is a programming error."""
    with pytest.raises(ValueError):
        await client.list_v2(offset=0, limit=101)


async def test_list_v1_json_body(client: CoreClawClient, upstream: Upstream) -> None:
    """v1 POSTs page_index, page_size, status and scraper_slug as JSON."""
    upstream.then(V1, ok())
    await client.list_v1(page_index=3, page_size=50, status=2, scraper_slug="abc")
    (call,) = upstream.calls
    assert call.method == "POST"
    assert call.kwargs["json"] == {
        "page_index": 3,
        "page_size": 50,
        "status": 2,
        "scraper_slug": "abc",
    }


# -- decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"count": 106, "page_index": 2, "page_size": 20}, (106, 2, 20)),
        ({"count": "106", "page_index": " 2 ", "page_size": "20"}, (106, 2, 20)),
        ({"count": None}, (None, None, None)),
        ({"count": "many", "page_index": 1.5, "page_size": True}, (None, None, None)),
        ({"count": -1, "page_index": [], "page_size": {}}, (None, None, None)),
        ({}, (None, None, None)),
    ],
)
async def test_envelope_numbers_parsed_defensively(
    client: CoreClawClient,
    upstream: Upstream,
    data: dict[str, Any],
    expected: tuple[int | None, ...],
) -> None:
    """count/page_index/page_size are ints when int or int-like, else None."""
    upstream.then(V2, reply(200, {"code": 0, "request_id": "r-9", "data": {"list": [], **data}}))
    page = await client.list_v2(offset=0, limit=20)
    assert (page.count, page.page_index, page.page_size) == expected
    assert page.request_id == "r-9"


async def test_items_passed_through_raw(client: CoreClawClient, upstream: Upstream) -> None:
    """Items are returned exactly as upstream sent them, even odd ones."""
    items = [*runs("a"), "not-an-object", {"slug": None}]
    upstream.then(V1, ok(items))
    page = await client.list_v1(page_index=1, page_size=10)
    assert page.items == items


@pytest.mark.parametrize(
    ("status", "payload", "app_code"),
    [
        (200, {"code": 11000, "message": "Bad worker_id", "data": None}, 11000),
        (200, {"code": 4000, "message": "Invalid request parameters", "data": None}, 4000),
        (200, {"code": "4000", "message": "Invalid request parameters"}, 4000),
    ],
)
async def test_nonzero_code_on_200_is_never_data(
    client: CoreClawClient,
    upstream: Upstream,
    status: int,
    payload: dict[str, Any],
    app_code: int,
) -> None:
    """A 200 with code != 0 raises RequestRejected with the upstream message, no retry."""
    upstream.then(V1, reply(status, payload))
    with pytest.raises(RequestRejected) as caught:
        await client.list_v1(page_index=1, page_size=10)
    assert payload["message"] in str(caught.value)
    assert caught.value.app_code == app_code
    assert caught.value.endpoint == V1
    assert len(upstream.calls) == 1


@pytest.mark.parametrize(
    "bad",
    [
        reply(200, body="<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
        reply(200, body='{"code": 0, "data": {"list": [{"slug": "a"'),  # truncated
        reply(200, body=""),
        reply(200, [1, 2, 3]),  # JSON, but not an object
        reply(200, {"message": "no code"}),
        reply(200, {"code": 0, "data": None}),
        reply(200, {"code": 0, "data": {"list": {"slug": "a"}}}),
    ],
)
async def test_malformed_body_is_retried(
    client: CoreClawClient, upstream: Upstream, bad: Reply
) -> None:
    """HTML, truncated or shapeless bodies are transient: retried, then data."""
    upstream.then(V2, bad, ok(runs("a")))
    page = await client.list_v2(offset=0, limit=10)
    assert [i["slug"] for i in page.items] == ["a"]
    assert len(upstream.calls) == 2


# -- errors that are not retried ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (400, {"code": 11000, "message": "offset must be >= 0"}),
        (404, {"code": 11004, "message": "worker not found"}),
        (422, {"code": 11000, "message": "status must be one of ready, running"}),
        (403, {"code": 11000, "message": "forbidden"}),
    ],
)
async def test_client_errors_are_not_retried(
    client: CoreClawClient, upstream: Upstream, status: int, payload: dict[str, Any]
) -> None:
    """400/404/422 (and other 4xx) raise RequestRejected at once, with the message."""
    upstream.then(V2, reply(status, payload))
    with pytest.raises(RequestRejected) as caught:
        await client.list_v2(offset=0, limit=10)
    error = caught.value
    assert (error.endpoint, error.http_status) == (V2, status)
    assert payload["message"] in str(error)
    assert len(upstream.calls) == 1


async def test_html_404_is_rejected_clearly(client: CoreClawClient, upstream: Upstream) -> None:
    """A 404 from a proxy (no JSON) is still a clear RequestRejected."""
    upstream.then(V2, reply(404, body="<h1>Not Found</h1>", content_type="text/html"))
    with pytest.raises(RequestRejected, match="HTTP 404"):
        await client.list_v2(offset=0, limit=10)


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (401, {"code": 12001, "message": "Unauthorized"}),
        (401, None),
        (200, {"code": 12001, "message": "Unauthorized"}),
    ],
)
async def test_auth_errors(
    client: CoreClawClient, upstream: Upstream, status: int, payload: Any
) -> None:
    """401 or code 12001: AuthError telling the operator to check SYNCD_API_KEY, no retry."""
    upstream.then(V1, reply(status, payload))
    with pytest.raises(AuthError, match="check SYNCD_API_KEY") as caught:
        await client.list_v1(page_index=1, page_size=10)
    assert caught.value.endpoint == V1
    assert len(upstream.calls) == 1


async def test_redirect_is_not_followed(client: CoreClawClient, upstream: Upstream) -> None:
    """A redirect would carry the key elsewhere: it is rejected, naming SYNCD_API_URL."""
    upstream.then(V2, reply(301, body="", headers={"Location": "https://elsewhere.test/x?a=1"}))
    with pytest.raises(RequestRejected, match="SYNCD_API_URL") as caught:
        await client.list_v2(offset=0, limit=10)
    assert "a=1" not in str(caught.value)
    assert upstream.calls[0].kwargs["allow_redirects"] is False


# -- transient errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "transient",
    [
        reply(500, {"code": 10000, "message": "Internal Server Error"}),
        reply(502, body="bad gateway", content_type="text/plain"),
        reply(503, None),
        reply(200, {"code": 10000, "message": "Internal Server Error"}),
        fail(aiohttp.ServerDisconnectedError()),
        fail(aiohttp.ClientOSError(104, "Connection reset by peer")),
        fail(aiohttp.ClientPayloadError("Response payload is not completed")),
        fail(TimeoutError()),
    ],
)
async def test_transient_then_success(
    client: CoreClawClient, upstream: Upstream, clock: FakeClock, transient: Reply
) -> None:
    """5xx, code 10000, resets, truncated payloads and timeouts are retried with backoff."""
    upstream.then(V2, transient, transient, ok(runs("a")))
    page = await client.list_v2(offset=0, limit=10)
    assert len(page.items) == 1
    assert len(upstream.calls) == 3
    # rand=1.0: full-jitter backoff draws its ceiling, 1 s then 2 s
    assert [c.at for c in upstream.calls] == pytest.approx([0.0, 1.0, 3.0])


async def test_retries_exhausted(client: CoreClawClient, upstream: Upstream) -> None:
    """After max_retries retries: UpstreamUnavailable naming the endpoint and last problem."""
    upstream.fallback[V2] = reply(503, body="down", content_type="text/plain")
    before = counter("syncd_upstream_retries_total", endpoint=V2, reason="server_error")
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.list_v2(offset=0, limit=10)
    assert len(upstream.calls) == 4  # 1 + max_retries=3
    message = str(caught.value)
    assert "HTTP 503" in message and V2 in message and "4 attempts" in message
    after = counter("syncd_upstream_retries_total", endpoint=V2, reason="server_error")
    assert after - before == 3


async def test_backoff_is_capped(make_client: MakeClient, upstream: Upstream) -> None:
    """Exponential backoff never waits longer than max_backoff_s."""
    upstream.fallback[V1] = reply(500, None)
    client = make_client(max_retries=6, max_backoff_s=5.0)
    with pytest.raises(UpstreamUnavailable):
        await client.list_v1(page_index=1, page_size=10)
    gaps = [b.at - a.at for a, b in zip(upstream.calls, upstream.calls[1:], strict=False)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0])


# -- rate limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    "limited",
    [
        reply(429, {"code": 13000, "message": "Too Many Requests"}),
        reply(429, body="<html>slow down</html>", content_type="text/html"),
        reply(200, {"code": 13000, "message": "Too Many Requests"}),
        reply(200, {"code": 4290, "message": "rate limited", "data": None}),
        reply(400, {"code": 13000, "message": "Too Many Requests"}),
    ],
)
async def test_rate_limit_signals_handled_alike(
    client: CoreClawClient, upstream: Upstream, limited: Reply
) -> None:
    """HTTP 429 and app codes 13000/4290 (any status) all mean: wait, retry."""
    upstream.then(V1, limited, ok(runs("a")))
    before = counter("syncd_upstream_rate_limited_total", endpoint=V1)
    with capture_logs() as logs:
        page = await client.list_v1(page_index=1, page_size=10)
    assert len(page.items) == 1
    assert [e["event"] for e in logs if e["event"].startswith("upstream_")] == [
        "upstream_rate_limited"
    ]
    assert counter("syncd_upstream_rate_limited_total", endpoint=V1) - before == 1


@pytest.mark.parametrize(
    ("header", "wait_s"),
    [
        ("7", 7.0),
        ("Thu, 05 Mar 2026 12:00:42 GMT", 42.0),  # HTTP-date, against the injected now
        ("0", 0.5),  # floored: Retry-After: 0 cannot spin
        ("soon", 1.0),  # garbage: backoff (rand=1.0, attempt 0 -> 1 s)
        (None, 1.0),  # absent: backoff
        ("600", 600.0),  # above max_backoff_s: honoured, not cut short
    ],
)
async def test_retry_after_is_honoured(
    client: CoreClawClient, upstream: Upstream, header: str | None, wait_s: float
) -> None:
    """The retry goes out exactly when the Retry-After rule says, and the wait is logged."""
    headers = {"Retry-After": header} if header is not None else None
    upstream.then(V2, reply(429, {"code": 13000}, headers=headers), ok())
    with capture_logs() as logs:
        await client.list_v2(offset=0, limit=10)
    first, retry = upstream.calls
    # The 429 also halved the endpoint's rate (10/s -> 5/s): requests are >= 0.2 s apart.
    assert retry.at - first.at == pytest.approx(max(wait_s, 0.2))
    (event,) = [e for e in logs if e["event"] == "upstream_rate_limited"]
    assert event["endpoint"] == V2 and event["wait_s"] == pytest.approx(wait_s)
    assert event["long_wait"] is (wait_s > 120.0)


async def test_backoff_grows_without_retry_after(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """Repeated header-less 429s back off exponentially (rand=1.0: 1, 2, 4 s)."""
    upstream.then(V2, *[reply(429, None)] * 3, ok())
    await client.list_v2(offset=0, limit=10)
    gaps = [b.at - a.at for a, b in zip(upstream.calls, upstream.calls[1:], strict=False)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0])


async def test_rate_limit_retries_are_bounded(client: CoreClawClient, upstream: Upstream) -> None:
    """Rate limits are retried generously (max_retries*4), then RateLimited is raised."""
    upstream.fallback[V2] = reply(429, {"code": 13000}, headers={"Retry-After": "1"})
    with pytest.raises(RateLimited) as caught:
        await client.list_v2(offset=0, limit=10)
    assert len(upstream.calls) == 13  # 1 + 3*4
    assert caught.value.retry_after_s == 1.0
    assert caught.value.endpoint == V2


async def test_rate_limit_slows_the_shared_limiter(
    make_client: MakeClient, upstream: Upstream, clock: FakeClock
) -> None:
    """Every 429 cuts the rate of the endpoint that got it (AIMD); the other keeps its own."""
    limiter = RateLimiter(clock=clock.clock())
    client = make_client(limiter=limiter)
    start = limiter.lane(V2).rate_per_s
    upstream.then(V2, reply(429, None), reply(429, None), ok())
    await client.list_v2(offset=0, limit=10)
    assert limiter.lane(V2).rate_per_s == pytest.approx(start / 4)
    assert limiter.lane(V1).rate_per_s == start
    # ... and /metrics shows it
    assert counter("syncd_upstream_allowed_rate_per_second", endpoint=V2) == pytest.approx(
        limiter.lane(V2).rate_per_s
    )
    assert counter("syncd_upstream_window_requests", endpoint=V2) == limiter.lane(V2).window


async def test_a_wait_syncd_chose_holds_only_the_limited_endpoint(
    make_client: MakeClient, upstream: Upstream, clock: FakeClock
) -> None:
    """A 429 without Retry-After closes v2's own gate for its backoff; v1 and the key stay open."""
    limiter = RateLimiter(clock=clock.clock())
    client = make_client(limiter=limiter)
    upstream.then(V2, reply(429, {"code": 13000}), ok())
    await client.list_v2(offset=0, limit=10)
    assert limiter.lane(V2).not_before == pytest.approx(1.0)  # rand=1.0: a 1 s backoff
    assert limiter.not_before == float("-inf")
    assert limiter.lane(V1).not_before == float("-inf")


class SignallingLimiter(RateLimiter):
    """A limiter that tells the test when a rate limit has closed its gate."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock.clock())
        self.gate_closed = asyncio.Event()

    def record_rate_limited(self, ticket: Ticket, wait_s: float, *, announced: bool) -> float:
        reopens = super().record_rate_limited(ticket, wait_s, announced=announced)
        self.gate_closed.set()
        return reopens


async def test_no_request_to_either_stream_before_retry_after(
    make_client: MakeClient, upstream: Upstream, clock: FakeClock
) -> None:
    """After a 429 with Retry-After: 30 on v2, neither v2 nor v1 sends before t=30."""
    limiter = SignallingLimiter(clock)
    client = make_client(limiter=limiter)
    upstream.then(V2, reply(429, {"code": 13000}, headers={"Retry-After": "30"}), ok())
    upstream.then(V1, ok(), ok())

    async def v1_after_the_429() -> None:
        await limiter.gate_closed.wait()
        await client.list_v1(page_index=1, page_size=10)
        await client.list_v1(page_index=2, page_size=10)

    await asyncio.gather(client.list_v2(offset=0, limit=10), v1_after_the_429())
    rate_limited_at = upstream.calls[0].at
    later = upstream.calls[1:]
    assert len(later) == 3
    assert all(c.at >= rate_limited_at + 30.0 for c in later)


# -- secrets -------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(AuthMode))
async def test_key_never_in_logs_or_errors(
    make_client: MakeClient, upstream: Upstream, mode: AuthMode
) -> None:
    """Across every failure path the key appears in no log event, message, repr or cause."""
    echo = f"invalid token {KEY}"
    upstream.then(
        V2,
        reply(429, {"code": 13000}, headers={"Retry-After": "1"}),
        fail(aiohttp.ClientConnectionError(f"Connection refused: GET {API}{V2}?token={KEY}")),
        reply(502, body=f"<p>{KEY}</p>", content_type="text/html"),
        reply(400, {"code": 11000, "message": echo}),
    )
    upstream.then(V1, reply(401, {"code": 12001, "message": echo}))
    upstream.fallback[V2] = reply(500, None)
    errors: list[BaseException] = []
    with capture_logs() as logs:
        client = make_client(auth_mode=mode, max_retries=2)
        for endpoint in (V2, V1, V2):
            with pytest.raises(UpstreamError) as caught:
                if endpoint == V1:
                    await client.list_v1(page_index=1, page_size=10)
                else:
                    await client.list_v2(offset=0, limit=10)
            errors.append(caught.value)
    assert len(upstream.calls) == 8
    assert logs
    assert KEY not in repr(logs)
    assert KEY not in repr(client)
    for error in errors:
        assert_key_not_in_traceback(error)


def assert_key_not_in_traceback(error: BaseException) -> None:
    """Walk the chain a printed traceback shows: causes, and contexts not suppressed."""
    chain: BaseException | None = error
    while chain is not None:
        assert KEY not in str(chain) and KEY not in repr(chain)
        context = None if chain.__suppress_context__ else chain.__context__
        chain = chain.__cause__ or context


async def test_key_in_a_library_error_is_kept_out(
    make_client: MakeClient, upstream: Upstream
) -> None:
    """A connection error whose text holds the token URL is scrubbed and not chained."""
    leaky = aiohttp.ClientConnectionError(f"Connection refused: GET {API}{V2}?token={KEY}")
    upstream.fallback[V2] = fail(leaky)
    client = make_client(auth_mode=AuthMode.QUERY, max_retries=1)
    with capture_logs() as logs, pytest.raises(UpstreamUnavailable) as caught:
        await client.list_v2(offset=0, limit=10)
    assert "Connection refused" in str(caught.value)
    assert "token=***" in str(caught.value)
    assert_key_not_in_traceback(caught.value)
    assert KEY not in repr(logs)


# -- paging ----------------------------------------------------------------------


def start_of(offset: int, limit: int, mode: OffsetMode) -> int:
    """The first item a server with reading `mode` answers for `offset`."""
    if mode is OffsetMode.ITEMS:
        return offset
    if mode is OffsetMode.PAGES0:
        return offset * limit
    return (max(offset, 1) - 1) * limit  # PAGES1: 1-based, 0 behaves like 1


def served(slugs: list[str], mode: OffsetMode, *, echo_page_index: bool = True) -> Reply:
    """A v2 server that really pages a list, reading `offset` as `mode` says.

    `slugs` is read at every request, so a test can grow the list in place.
    """

    def build(url: URL, kwargs: dict[str, Any]) -> CallbackResult:
        offset, limit = int(url.query["offset"]), int(url.query["limit"])
        start = start_of(offset, limit, mode)
        data: dict[str, Any] = {"count": len(slugs), "list": runs(*slugs[start : start + limit])}
        if echo_page_index:
            data |= {"page_index": start // limit + 1, "page_size": limit}
        body = orjson.dumps({"code": 0, "data": data}).decode()
        return CallbackResult(status=200, body=body, response_class=CompatResponse)

    return build


SLUGS = [f"run-{i:02d}" for i in range(11)]
READINGS = [OffsetMode.ITEMS, OffsetMode.PAGES0, OffsetMode.PAGES1]


async def walk(client: CoreClawClient, source: Source, page_size: int) -> list[str]:
    """Every slug of a list, paged with fetch_page until the end rule says stop."""
    slugs: list[str] = []
    for number in range(50):
        page = await client.fetch_page(source, number, page_size)
        slugs += [item["slug"] for item in page.items]
        if is_last_page(len(page.items), page_size=page_size, count=page.count, seen=len(slugs)):
            return slugs
    raise AssertionError("the list did not end")


@pytest.mark.parametrize("mode", READINGS)
async def test_v2_pages_walk_the_whole_list_under_each_reading(
    make_client: MakeClient, upstream: Upstream, mode: OffsetMode
) -> None:
    """Each forced reading, against a server with that meaning, yields every run once, in order."""
    upstream.fallback[V2] = served(SLUGS, mode)
    assert await walk(make_client(v2_offset_mode=mode), Source.V2, 4) == SLUGS
    offsets = [int(c.url.query["offset"]) for c in upstream.calls]
    assert (
        offsets
        == {
            OffsetMode.ITEMS: [0, 4, 8],
            OffsetMode.PAGES0: [0, 1, 2],
            OffsetMode.PAGES1: [1, 2, 3],
        }[mode]
    )


async def test_v1_pages_are_one_based(client: CoreClawClient, upstream: Upstream) -> None:
    """v1: page number n is sent as page_index n + 1 with the page size."""
    upstream.then(V1, ok(runs("a", "b"), count=5), ok(runs("c", "d"), count=5))
    upstream.then(V1, ok(runs("e"), count=5))
    assert await walk(client, Source.V1, 2) == ["a", "b", "c", "d", "e"]
    assert [c.kwargs["json"]["page_index"] for c in upstream.calls] == [1, 2, 3]
    assert {c.kwargs["json"]["page_size"] for c in upstream.calls} == {2}


async def test_fetch_page_filters_reach_the_query(
    make_client: MakeClient, upstream: Upstream
) -> None:
    """Filters reach the endpoint's query next to the page's offset."""
    upstream.then(V2, ok(runs("x"), count=41))
    client = make_client(v2_offset_mode=OffsetMode.ITEMS)
    await client.fetch_page(Source.V2, 4, 10, worker_id="acme/news", status="failed")
    query = upstream.calls[0].url.query
    assert (query["offset"], query["worker_id"], query["status"]) == ("40", "acme~news", "failed")


# -- offset-mode detection -------------------------------------------------------


def detections(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str | None, str, bool]]:
    return [
        (e["mode"], e["decided_by"], e["settled"])
        for e in logs
        if e["event"] == "v2_offset_mode_detected"
    ]


@pytest.mark.parametrize("mode", READINGS)
async def test_detect_offset_mode_from_data(
    client: CoreClawClient, upstream: Upstream, mode: OffsetMode
) -> None:
    """Three probe requests tell all three readings apart; the answer is logged once and kept."""
    upstream.fallback[V2] = served(SLUGS, mode, echo_page_index=False)
    with capture_logs() as logs:
        assert await client.offset_mode() is mode
        assert await client.offset_mode() is mode
    assert len(upstream.calls) == 3
    assert detections(logs) == [(mode.value, "probe_slugs", True)]


@pytest.mark.parametrize("mode", READINGS)
@pytest.mark.parametrize("size", [0, 1, 2, 3, 11])
async def test_auto_mode_pages_every_run_under_each_reading(
    client: CoreClawClient, upstream: Upstream, mode: OffsetMode, size: int
) -> None:
    """AUTO detects first, then walks the list without gaps or repeats, on any account size."""
    upstream.fallback[V2] = served(SLUGS[:size], mode)
    assert await walk(client, Source.V2, 4) == SLUGS[:size]


@pytest.mark.parametrize("mode", READINGS)
async def test_an_undecided_reading_is_detected_again_once_the_list_grew(
    client: CoreClawClient, upstream: Upstream, mode: OffsetMode
) -> None:
    """An account with one run cannot tell ITEMS from PAGES0; once it has 11 runs, syncd
    decides from data and pages every run (the undecided answer was never pinned)."""
    slugs = SLUGS[:1]
    upstream.fallback[V2] = served(slugs, mode, echo_page_index=False)
    with capture_logs() as logs:
        assert await walk(client, Source.V2, 5) == slugs
        slugs += SLUGS[1:]  # the account grows
        assert await walk(client, Source.V2, 5) == SLUGS  # sees count 11: detects again
        assert await walk(client, Source.V2, 5) == SLUGS
    found = detections(logs)
    assert found[-1] == (mode.value, "probe_slugs", True)
    assert all(settled is False for _, _, settled in found[:-1])
    probes = [c for c in upstream.calls if c.url.query["limit"] in {"2", "4"}]
    # two detections of three requests each, the first read of the first one being the
    # walk's page 0 (limit 5); one run already tells PAGES1 apart
    assert len(probes) == (2 if mode is OffsetMode.PAGES1 else 5)


@pytest.mark.parametrize("mode", READINGS)
async def test_page_0_is_the_first_read_of_detection(
    client: CoreClawClient, upstream: Upstream, mode: OffsetMode
) -> None:
    """A cold v2 walk asks for page 0 (`offset=0` under every reading) before it knows the
    reading, and detection takes that page's head as its first read: the probe and the
    re-read follow, then page 1 under the reading detected -- three requests before page
    1, not four -- and every run comes once."""
    upstream.fallback[V2] = served(SLUGS, mode)
    with capture_logs() as logs:
        assert await walk(client, Source.V2, 5) == SLUGS
    asked = [(c.url.query["offset"], c.url.query["limit"]) for c in upstream.calls[:4]]
    page1 = {OffsetMode.ITEMS: "5", OffsetMode.PAGES0: "1", OffsetMode.PAGES1: "2"}[mode]
    assert asked == [("0", "5"), ("1", "2"), ("0", "4"), (page1, "5")]
    assert detections(logs) == [(mode.value, "probe_slugs", True)]


async def test_a_page_0_cut_short_is_not_taken_for_the_probe(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """Page 0 came back with 2 items of a list of 6 (upstream cuts pages short now and then):
    detection reads the probe's first page itself rather than take 2 items for 4."""
    upstream.then(V2, ok(runs("f", "e"), count=6))
    upstream.fallback[V2] = served(["f", "e", "d", "c", "b", "a"], OffsetMode.PAGES0)
    await client.fetch_page(Source.V2, 0, 5)
    asked = [(c.url.query["offset"], c.url.query["limit"]) for c in upstream.calls]
    assert asked == [("0", "5"), ("0", "4"), ("1", "2"), ("0", "4")]
    assert client.detection.mode is OffsetMode.PAGES0 and client.detection.settled


async def test_a_filtered_page_0_is_not_taken_for_the_probe(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """A status-filtered page 0 starts another list: detection reads the whole list's head."""
    upstream.fallback[V2] = served(SLUGS, OffsetMode.PAGES0)
    await client.fetch_page(Source.V2, 0, 5, status="running")
    asked = [(c.url.query["offset"], c.url.query["limit"]) for c in upstream.calls]
    assert asked[:3] == [("0", "4"), ("1", "2"), ("0", "4")]
    assert upstream.calls[3].url.query["status"] == "running"


async def test_a_run_arriving_during_the_probe_does_not_fool_detection(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """On a 0-based page server, a run arriving before the probe makes it look like ITEMS;
    the re-read shows the head moved, so syncd asks again instead of settling on ITEMS."""
    upstream.then(
        V2,
        ok(runs("d", "c", "b", "a")),
        ok(runs("c", "b")),  # PAGES0 after `new` arrived: items 2-3 of new,d,c,b,a = c,b
        ok(runs("new", "d", "c", "b")),
        ok(runs("new", "d", "c", "b")),  # the second try: the head holds still
        ok(runs("c", "b")),
        ok(runs("new", "d", "c", "b")),
    )
    with capture_logs() as logs:
        assert await client.offset_mode() is OffsetMode.PAGES0
    assert len(upstream.calls) == 6
    assert detections(logs) == [("pages0", "probe_slugs", True)]


async def test_a_probe_that_fits_no_reading_fails_with_what_to_set(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """Probes that never fit a reading: a PagingError naming SYNCD_V2_OFFSET_MODE, no guess."""
    upstream.fallback[V2] = ok(runs("a", "b", "c", "d"))  # the probe (limit 2) returns 4 items
    with pytest.raises(PagingError, match="SYNCD_V2_OFFSET_MODE") as caught:
        await client.offset_mode()
    assert caught.value.endpoint == V2
    assert len(upstream.calls) == 3 * DETECT_ATTEMPTS


@pytest.mark.parametrize(
    ("first_index", "probe_index", "mode", "how"),
    [
        (1, 2, OffsetMode.PAGES0, "echoed_page_index"),
        (1, 1, OffsetMode.ITEMS, "echoed_page_index"),
        (None, None, OffsetMode.ITEMS, "too_few_runs"),
    ],
)
async def test_detect_with_one_run_breaks_the_tie_with_the_echo(
    client: CoreClawClient,
    upstream: Upstream,
    first_index: int | None,
    probe_index: int | None,
    mode: OffsetMode,
    how: str,
) -> None:
    """With one run ITEMS and PAGES0 both answer the probe empty: the echoed page_index
    breaks the tie, provisionally (not settled)."""
    upstream.then(
        V2,
        ok(runs("a"), count=1, page_index=first_index),
        ok([], count=1, page_index=probe_index),
        ok(runs("a"), count=1, page_index=first_index),
    )
    with capture_logs() as logs:
        assert await client.offset_mode() is mode
    assert len(upstream.calls) == 3  # no point asking again with so few runs
    assert detections(logs) == [(mode.value, how, False)]


async def test_a_filtered_list_count_does_not_trigger_detection(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """A filtered page's count says nothing about the whole list: it never reopens detection."""
    upstream.fallback[V2] = served(SLUGS[:1], OffsetMode.ITEMS, echo_page_index=False)
    await client.fetch_page(Source.V2, 0, 5)  # one run: a provisional reading
    upstream.then(V2, ok(runs("x"), count=500))
    await client.fetch_page(Source.V2, 0, 5, status="running")
    await client.fetch_page(Source.V2, 0, 5)
    limits = [c.url.query["limit"] for c in upstream.calls]
    # one detection only: page 0 as its first read, the probe, the re-read
    assert limits == ["5", "2", "4", "5", "5"]


@pytest.mark.parametrize("forced", [*READINGS, "pages"])
async def test_forced_offset_mode_skips_detection(
    make_client: MakeClient, upstream: Upstream, forced: OffsetMode | str
) -> None:
    """SYNCD_V2_OFFSET_MODE other than auto is used as is, with no probe requests
    ("pages" is the old name of pages0)."""
    expected = OffsetMode.PAGES0 if forced == "pages" else forced
    assert await make_client(v2_offset_mode=forced).offset_mode() is expected
    assert upstream.calls == []


# -- session -------------------------------------------------------------------


async def test_owned_session_is_closed_by_close(client: CoreClawClient) -> None:
    """The client's own session is closed by close() (its timeouts: test_gate_before_write)."""
    session = client._get_session()
    await client.close()
    assert session.closed


async def test_injected_session_is_left_open() -> None:
    """A session passed in belongs to the caller: close() leaves it open."""
    async with aiohttp.ClientSession() as session:
        async with CoreClawClient(make_settings(), session=session):
            pass
        assert not session.closed


def test_bad_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable SYNCD_CA_BUNDLE fails at construction, naming the variable."""
    with pytest.raises(ConfigError, match="SYNCD_CA_BUNDLE"):
        CoreClawClient(make_settings(ca_bundle=tmp_path / "missing.pem"))


def test_ca_bundle_keeps_verification_on() -> None:
    """A CA bundle adds trust roots; certificate and hostname checks stay on."""
    bundle = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        pytest.skip("no system CA file to load")
    client = CoreClawClient(make_settings(ca_bundle=bundle))
    context = client._ssl
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


async def test_request_metrics(client: CoreClawClient, upstream: Upstream) -> None:
    """Every request is counted by endpoint and status ("error" when none arrived)."""
    upstream.then(V1, fail(aiohttp.ServerDisconnectedError()), reply(500, None), ok())
    labels = {"endpoint": V1}
    before = {
        s: counter("syncd_upstream_requests_total", **labels, http_status=s)
        for s in ("error", "500", "200")
    }
    await client.list_v1(page_index=1, page_size=10)
    for status, value in before.items():
        now = counter("syncd_upstream_requests_total", **labels, http_status=status)
        assert now - value == 1
    backoff = counter("syncd_upstream_backoff_seconds_total", endpoint=V1)
    assert backoff >= 3.0  # 1 s + 2 s of backoff, plus whatever earlier tests added


# -- over a real socket ------------------------------------------------------------
# aioresponses replaces the transport, so it cannot show what goes on the wire,
# cut a body short or stall.  A raw asyncio server on 127.0.0.1:0 can.

GOOD_BODY = b'{"code":0,"data":{"count":1,"list":[{"slug":"a"}]}}'


@dataclass
class RawServer:
    """Answers request n with `answers[n]`: raw bytes, or "stall" (then the good answer)."""

    answers: list[bytes | str]
    requests: list[bytes] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        except ConnectionError:
            pass  # the client gave up on a stalled answer
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
        self.requests.append(head + body)
        n = len(self.requests) - 1
        answer = self.answers[n] if n < len(self.answers) else b""
        if answer == "stall":
            await self.release.wait()  # until the test ends: the client must time out
        writer.write(answer if isinstance(answer, bytes) and answer else http_200(GOOD_BODY))
        await writer.drain()

    async def stop(self) -> None:
        self.release.set()
        await asyncio.gather(*self.handlers, return_exceptions=True)


def http_200(body: bytes, *, claimed_length: int | None = None) -> bytes:
    length = len(body) if claimed_length is None else claimed_length
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


StartServer = Callable[[list[bytes | str]], Awaitable[tuple[RawServer, str]]]


@pytest.fixture
async def raw_server() -> AsyncIterator[StartServer]:
    started: list[tuple[asyncio.Server, RawServer]] = []

    async def start(answers: list[bytes | str]) -> tuple[RawServer, str]:
        fake = RawServer(answers)
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        started.append((server, fake))
        port = server.sockets[0].getsockname()[1]
        return fake, f"http://127.0.0.1:{port}"

    yield start
    for server, fake in started:
        server.close()
        await fake.stop()
        await server.wait_closed()


async def test_on_the_wire_auth_and_body(raw_server: StartServer, clock: FakeClock) -> None:
    """On the wire: v1 POSTs JSON with the bearer header; query mode puts the token in the URL."""
    fake, url = await raw_server([b"", b""])
    settings = make_settings(api_url=url)
    async with CoreClawClient(settings, clock=clock.clock()) as client:
        page = await client.list_v1(page_index=2, page_size=5)
    assert page.items == [{"slug": "a"}]
    sent = fake.requests[0]
    assert sent.startswith(b"POST /api/v1/run/list HTTP/1.1")
    assert f"Authorization: Bearer {KEY}".encode() in sent
    body = sent.split(b"\r\n\r\n", 1)[1]
    assert orjson.loads(body) == {"page_index": 2, "page_size": 5, "status": 0}
    query = make_settings(api_url=url, auth_mode=AuthMode.QUERY)
    with capture_logs():
        client = CoreClawClient(query, clock=clock.clock())
    async with client:
        await client.list_v2(offset=0, limit=5)
    assert fake.requests[1].startswith(
        f"GET /api/v2/worker-runs?offset=0&limit=5&token={KEY} ".encode()
    )


async def test_truncated_body_and_timeout_are_retried(
    raw_server: StartServer, clock: FakeClock
) -> None:
    """A body cut short of its Content-Length, then a stalled answer, then data."""
    truncated = http_200(GOOD_BODY[:20], claimed_length=len(GOOD_BODY))
    _, url = await raw_server([truncated, "stall", b""])
    settings = make_settings(api_url=url, http_timeout_s=0.2)
    with capture_logs() as logs:
        async with CoreClawClient(settings, clock=clock.clock()) as client:
            page = await client.list_v2(offset=0, limit=5)
    assert page.items == [{"slug": "a"}]
    reasons = [e["reason"] for e in logs if e["event"] == "upstream_retry"]
    assert reasons == ["connection", "timeout"]


async def test_lone_surrogate_does_not_make_a_page_unreadable(
    client: CoreClawClient, upstream: Upstream
) -> None:
    """JSON orjson refuses (a lone UTF-16 surrogate) is still read, the character replaced."""
    body = '{"code": 0, "data": {"count": 1, "list": [{"slug": "a", "err_msg": "x\\ud800y"}]}}'
    upstream.then(V2, reply(200, body=body))
    page = await client.list_v2(offset=0, limit=10)
    assert page.items == [{"slug": "a", "err_msg": "x\ufffdy"}]
    assert len(upstream.calls) == 1
