"""The CoreClaw HTTP client: auth, one page per call, the retry loop.

This is the only module that sees aiohttp.  Its errors, and every upstream
answer that is not data, leave here as `syncd.errors` exceptions:

    HTTP 429, or app code 13000/4290 (any status)   -> wait, retry; then RateLimited
    5xx, code 10000, timeouts, resets, bad bodies   -> backoff, retry; then UpstreamUnavailable
    401 or code 12001                               -> AuthError, at once
    other 4xx, redirects, any other non-zero code   -> RequestRejected, at once

What an answer means is decided in `envelope.py` (pure); this module sends,
waits and retries.  The API key never reaches a log event, an exception
message or a repr: errors name the endpoint path, never a URL (in query-auth
mode the URL holds it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from types import SimpleNamespace, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from syncd import metrics
from syncd.backoff import retry_wait_s
from syncd.clock import SYSTEM_CLOCK, Clock
from syncd.config import AuthMode, Settings
from syncd.endpoints import ENDPOINTS, V1_RUN_LIST, V2_WORKER_RUNS, Endpoint, FilterValue
from syncd.envelope import (
    Answer,
    Retryable,
    decode_answer,
    exhausted_rate_limit,
    scrub,
)
from syncd.errors import (
    ConfigError,
    PagingError,
    RateLimited,
    UpstreamUnavailable,
)
from syncd.models import OffsetMode, Page, Source
from syncd.pagination import (
    PROBE_FIRST,
    PROBE_SECOND,
    Detection,
    OffsetReading,
    detect_reading,
)
from syncd.quotascope import QuotaScope
from syncd.ratelimit import RateLimiter, Ticket

log = structlog.get_logger(__name__)

USER_AGENT = "syncd/0.1.0"
BACKOFF_BASE_S = 1.0
RATE_LIMIT_RETRY_FACTOR = 4  # rate limits are expected and cheap to wait out: allow more of them
DETECT_ATTEMPTS = 5  # a hostile upstream may garble a probe page now and then
CA_BUNDLE_HINT = (
    "TLS certificate verification failed; if a private or proxy CA signs the API's"
    " certificate, set SYNCD_CA_BUNDLE to that CA's PEM file"
)


class CoreClawClient:
    """Fetches run-list pages from CoreClaw over one aiohttp session."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        limiter: RateLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        key = settings.resolved_api_key()
        if key is None:
            raise ConfigError("no CoreClaw API key: set SYNCD_API_KEY (or SYNCD_API_KEY_FILE)")
        self._key = key.get_secret_value()
        self._key_forms = _secret_forms(self._key)
        self._settings = settings
        self._session = session
        self._owns_session = session is None
        self._ssl = _ssl_context(settings)
        self._limiter = limiter or RateLimiter(settings.rate_policy(), clock=clock)
        self._clock = clock
        self._rand = rand
        self._headers, self._auth_params = self._auth(settings.auth_mode)
        _warn_if_cleartext(settings.api_url)
        self._reading = OffsetReading.forced(settings.v2_offset_mode)
        self._detection = Detection(self._reading.mode, "setting", settled=True)
        self._logged: Detection | None = None
        self._logged_scope = QuotaScope.UNKNOWN

    def __repr__(self) -> str:
        mode = self._settings.auth_mode.value
        return f"CoreClawClient(api_url={self._settings.api_url!r}, auth_mode={mode!r})"

    def _auth(self, mode: AuthMode) -> tuple[dict[str, str], dict[str, str]]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if mode is AuthMode.QUERY:
            log.warning(
                "api_key_in_query_string",
                hint="tokens in URLs leak into proxy logs; prefer SYNCD_AUTH_MODE=bearer",
            )
            return headers, {"token": self._key}
        if mode is AuthMode.API_KEY:
            return {**headers, "api-key": self._key}, {}
        return {**headers, "Authorization": f"Bearer {self._key}"}, {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it (an injected one belongs to the caller)."""
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp wants a running event loop at construction.
        if self._session is None:
            # No timeout of aiohttp's own: `_send` times each exchange, and stops the
            # clock while a request waits at the gate (see `_hold`).
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                connector=_GatedConnector(self._hold, ssl=self._ssl),
                trace_configs=[self._traces()],
            )
        return self._session

    def _traces(self) -> aiohttp.TraceConfig:
        """New connections are marked (answers may have come in while one was made), and a
        request with a body looks at the gates again as its first byte goes.

        aiohttp holds a request's headers back to go with its body, and before Python
        3.12 writes the body from a task of its own, a turn of the event loop after the
        connector's look: an answer read in that turn may have closed the gates.
        Nothing is on the wire yet when the first chunk is announced, so the whole
        request waits there (v1's POST; v2's GET has no body and goes at once).  A
        request cancelled while it waits is closed by aiohttp, its connection with it.
        """

        async def before_body(_: object, __: SimpleNamespace, ___: object) -> None:
            exchange = _EXCHANGE.get()
            if exchange is not None and not exchange.body_looked:
                exchange.body_looked = True
                exchange.new_connection = False  # the connector's look let answers land
                await self._hold(exchange)

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(_mark_new_connection)
        trace.on_request_chunk_sent.append(before_body)
        return trace

    async def _hold(self, exchange: _Exchange) -> None:
        """A last look at the gates once the request has its connection, just before it is
        written: a new connection takes a few turns of the event loop, in which a rate limit
        read meanwhile may have closed them.  (A session handed in by the caller has no such
        look; the slot's own check still holds.)

        The exchange's timeout is stopped while the request waits here -- a Retry-After
        may be longer than it -- and starts again, whole, when the request goes.  A pooled
        connection comes without a turn of the event loop: the answers the slot let land
        are all there are.
        """
        exchange.deadline.reschedule(None)
        await self._limiter.hold(exchange.ticket, land_answers=exchange.new_connection)
        loop = asyncio.get_running_loop()
        exchange.deadline.reschedule(loop.time() + self._settings.http_timeout_s)

    # -- the two endpoints -------------------------------------------------

    async def list_v2(
        self,
        *,
        offset: int,
        limit: int,
        worker_id: str | None = None,
        status: str | None = None,
    ) -> Page:
        """One page of `GET /api/v2/worker-runs`."""
        cap = V2_WORKER_RUNS.max_page_size
        if not 1 <= limit <= cap:
            raise ValueError(f"limit must be 1-{cap}")
        params = {"offset": offset, "limit": limit, "worker_id": worker_id, "status": status}
        return await self._list(V2_WORKER_RUNS, params)

    async def list_v1(
        self,
        *,
        page_index: int,
        page_size: int,
        status: int = 0,
        scraper_slug: str | None = None,
    ) -> Page:
        """One page of `POST /api/v1/run/list`."""
        params = {"page_index": page_index, "page_size": page_size, "status": status,
                  "scraper_slug": scraper_slug}  # fmt: skip
        return await self._list(V1_RUN_LIST, params)

    async def fetch_page(
        self, source: Source, page_number: int, page_size: int, **filters: FilterValue
    ) -> Page:
        """0-based page `page_number` of one endpoint's list; v2's `offset` reading is
        detected first when it is not known (yet)."""
        endpoint = ENDPOINTS[source]
        if endpoint.offset_reading and not filters and page_number == 0 and self._reading.stale:
            # Page 0 is `offset=0` under every reading (pages1: 0 behaves like 1), and its
            # head is the probe's first read: detection costs a round trip less.
            page = await self._list(endpoint, endpoint.page_params(0, page_size, OffsetMode.ITEMS))
            await self.offset_mode(first=page if _holds_probe_head(page) else None)
        else:
            # A reading the endpoint ignores: page_params needs some value.
            reading = await self.offset_mode() if endpoint.offset_reading else OffsetMode.ITEMS
            params = {**endpoint.page_params(page_number, page_size, reading), **filters}
            page = await self._list(endpoint, params)
        if endpoint.offset_reading and not filters:
            # A filtered list's count says nothing about the whole list.
            self._reading.observe(page.count)
        return page

    async def _list(self, endpoint: Endpoint, params: Mapping[str, FilterValue | None]) -> Page:
        request = endpoint.encode(params)
        return await self._call(
            endpoint.method, endpoint.path, params=request.query, json_body=request.json
        )

    def window(self, source: Source) -> int:
        """How many requests to this endpoint the controller lets fly at once, now."""
        return self._limiter.lane(ENDPOINTS[source].path).window

    # -- offset-mode detection ---------------------------------------------

    @property
    def detection(self) -> Detection:
        """How v2's offset reading was last decided (the setting, or the data)."""
        return self._detection

    async def offset_mode(self, *, first: Page | None = None) -> OffsetMode:
        """What v2's `offset` means on this server (SPEC "Known ambiguity").

        Forced by the setting, or detected from data; an answer the data could
        not decide is used but not kept: it is detected again once the list
        has grown.  `first`: a page fetched at `offset=0` (of at least the
        probe's size), to stand for the probe's first read.
        """
        reading = self._reading
        if reading.stale:
            self._detection = await self._detect(first)
            reading.adopt(self._detection)
        if self._logged != self._detection:
            self._logged = self._detection
            log.info(
                "v2_offset_mode_detected",
                mode=reading.mode.value if reading.mode else None,
                decided_by=self._detection.decided_by,
                settled=self._detection.settled,
                runs_seen=self._detection.known_count,
            )
        if reading.mode is None:
            raise PagingError(
                "cannot tell what v2 `offset` means: the probe pages fit no reading"
                f" ({self._detection.decided_by}); set SYNCD_V2_OFFSET_MODE"
                " to items, pages0 or pages1",
                endpoint=V2_WORKER_RUNS.path,
            )
        return reading.mode

    async def _detect(self, page0: Page | None = None) -> Detection:
        detection = Detection(None, "not_probed", settled=False)
        for _ in range(DETECT_ATTEMPTS):
            if page0 is None:
                first = await self.list_v2(offset=PROBE_FIRST[0], limit=PROBE_FIRST[1])
            else:
                first, page0 = replace(page0, items=page0.items[: PROBE_FIRST[1]]), None
            probe = await self.list_v2(offset=PROBE_SECOND[0], limit=PROBE_SECOND[1])
            reread = await self.list_v2(offset=PROBE_FIRST[0], limit=PROBE_FIRST[1])
            step = None
            if probe.page_index is not None and first.page_index is not None:
                step = probe.page_index - first.page_index
            detection = detect_reading(
                _slugs(first), _slugs(probe), _slugs(reread), echo_step=step, count=reread.count
            )
            if detection.settled or (detection.mode is not None and detection.known_count < 2):
                break  # decided, or as decided as so few runs allow
        return detection

    # -- the retry loop ----------------------------------------------------

    async def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> Page:
        failures = limited = 0
        while True:
            ticket: Ticket | None = None
            try:
                ticket, answer = await self._send(method, endpoint, params, json_body)
                page = decode_answer(endpoint, answer, self._clock.now(), secrets=self._key_forms)
            except RateLimited as exc:
                limited += 1
                assert ticket is not None  # a rate limit is an answer: it came through a slot
                # The gate closes even when giving up: the next request must wait too.
                self._close_gate(exc, limited - 1, ticket)
                if limited > self._settings.max_retries * RATE_LIMIT_RETRY_FACTOR:
                    raise exhausted_rate_limit(exc, limited) from exc
            except Retryable as exc:
                failures += 1
                if failures > self._settings.max_retries:
                    raise UpstreamUnavailable(
                        f"CoreClaw unavailable after {failures} attempts;"
                        f" last problem: {exc.problem}",
                        endpoint=endpoint,
                        http_status=exc.http_status,
                        app_code=exc.app_code,
                    ) from exc
                await self._back_off(exc, failures - 1)
            else:
                self._limiter.record_success(ticket)
                self._publish(endpoint, ticket)
                return page

    def _close_gate(self, exc: RateLimited, attempt: int, ticket: Ticket) -> None:
        """Slow the endpoint down and close the gate for the wait (every endpoint's, when
        upstream announced it).  The retry itself waits in `_send`, at the limiter."""
        wait_s = self._wait_s(exc.retry_after_s, attempt)
        self._limiter.record_rate_limited(ticket, wait_s, announced=exc.retry_after_s is not None)
        metrics.RATE_LIMITED.labels(endpoint=exc.endpoint).inc()
        metrics.RETRIES.labels(endpoint=exc.endpoint, reason="rate_limited").inc()
        metrics.BACKOFF_SECONDS.labels(endpoint=exc.endpoint).inc(wait_s)
        log.warning(
            "upstream_rate_limited",
            endpoint=exc.endpoint,
            http_status=exc.http_status,
            app_code=exc.app_code,
            retry_after_s=exc.retry_after_s,
            wait_s=round(wait_s, 3),
            # honoured in full: cutting a server-requested wait short earns another 429
            long_wait=wait_s > self._settings.max_backoff_s,
            allowed_rate_per_s=round(ticket.lane.rate_per_s, 3),
            window=ticket.lane.window,
        )

    def _publish(self, endpoint: str, ticket: Ticket) -> None:
        """The controller's state for /metrics, and the quota's scope once it is learnt."""
        metrics.ALLOWED_RATE.labels(endpoint=endpoint).set(ticket.lane.rate_per_s)
        metrics.WINDOW.labels(endpoint=endpoint).set(ticket.lane.window)
        scope = self._limiter.scope
        if scope is not self._logged_scope:
            self._logged_scope = scope
            log.info("upstream_quota_scope", scope=scope.value)

    async def _back_off(self, exc: Retryable, attempt: int) -> None:
        """Wait before retrying one failed request (only this request waits)."""
        wait_s = self._wait_s(None, attempt)
        metrics.RETRIES.labels(endpoint=exc.endpoint, reason=exc.reason).inc()
        metrics.BACKOFF_SECONDS.labels(endpoint=exc.endpoint).inc(wait_s)
        log.warning(
            "upstream_retry",
            endpoint=exc.endpoint,
            reason=exc.reason,
            problem=exc.problem,
            attempt=attempt + 1,
            wait_s=round(wait_s, 3),
        )
        await self._clock.sleep(wait_s)

    def _wait_s(self, retry_after_s: float | None, attempt: int) -> float:
        return retry_wait_s(
            retry_after_s,
            attempt,
            base_s=BACKOFF_BASE_S,
            floor_s=self._settings.retry_after_floor_s,
            cap_s=self._settings.max_backoff_s,
            rand=self._rand(),
        )

    async def _send(
        self,
        method: str,
        endpoint: str,
        params: dict[str, str] | None,
        json_body: dict[str, Any] | None,
    ) -> tuple[Ticket, Answer]:
        """One HTTP exchange through the limiter; aiohttp errors become `Retryable`."""
        query = {**(params or {}), **self._auth_params} or None
        try:
            async with (
                self._limiter.slot(endpoint) as ticket,
                asyncio.timeout(self._settings.http_timeout_s) as deadline,
                _exchange(ticket, deadline),
                self._get_session().request(
                    method,
                    self._settings.api_url + endpoint,
                    params=query,
                    json=json_body,
                    headers=self._headers,
                    allow_redirects=False,  # a redirect must not carry the key to another host
                ) as response,
            ):
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.REQUESTS.labels(endpoint=endpoint, http_status="error").inc()
            reason = "timeout" if isinstance(exc, TimeoutError) else "connection"
            problem = scrub(f"{type(exc).__name__}: {exc}".rstrip(": "), *self._key_forms)
            if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                # Retrying cannot fix a certificate: fail the cycle now, loudly.
                raise UpstreamUnavailable(
                    f"{problem} ({CA_BUNDLE_HINT})", endpoint=endpoint
                ) from None
            # The cause is kept for debugging unless its text carries the key,
            # plain or URL-encoded (query-auth URLs appear in some aiohttp messages).
            text = f"{exc!r} {exc}"
            cause = None if any(form in text for form in self._key_forms) else exc
            raise Retryable(problem, endpoint=endpoint, reason=reason) from cause
        metrics.REQUESTS.labels(endpoint=endpoint, http_status=str(response.status)).inc()
        return ticket, Answer(
            status=response.status,
            body=body,
            retry_after=response.headers.get("Retry-After"),
            location=response.headers.get("Location"),
        )


@dataclass(slots=True, eq=False)
class _Exchange:
    """What the last look at the gates needs of a request: its slot, its timeout, and
    whether its connection is new (so answers may have come in while it was made)."""

    ticket: Ticket
    deadline: asyncio.Timeout
    new_connection: bool = False
    body_looked: bool = False  # the look before the body's first byte was taken


# The exchange of the request this task is sending: aiohttp hands its connector nothing
# of the caller's, and a request is connected in the task that sends it.
_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("syncd_exchange", default=None)


@asynccontextmanager
async def _exchange(ticket: Ticket, deadline: asyncio.Timeout) -> AsyncIterator[None]:
    token = _EXCHANGE.set(_Exchange(ticket, deadline))
    try:
        yield
    finally:
        _EXCHANGE.reset(token)


async def _mark_new_connection(_: object, __: SimpleNamespace, ___: object) -> None:
    # Nothing awaited, so nothing can interrupt it: aiohttp leaves a connection open
    # when one of these raises.
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.new_connection = True


class _GatedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, with the client's last look at the gates once a request has its
    connection (new or pooled).  A request cancelled there (a shutdown, or a scan that no
    longer needs the page) closes that connection: left to aiohttp, an exception there
    would leave it open, in neither the pool nor the connections the session closes."""

    def __init__(
        self, hold: Callable[[_Exchange], Awaitable[None]], *, ssl: ssl.SSLContext | bool
    ) -> None:
        super().__init__(ssl=ssl)
        self._hold = hold

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 -- aiohttp's own signature, overridden
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        exchange = _EXCHANGE.get()
        if exchange is not None:
            try:
                await self._hold(exchange)
            except BaseException:
                conn.close()
                raise
        return conn


def _secret_forms(secret: str) -> tuple[str, ...]:
    """The key as sent, and as a query string carries it (longest first, for `_scrub`)."""
    query = URL("http://h/").with_query(token=secret).raw_query_string.partition("=")[2]
    return tuple(sorted({secret, query}, key=len, reverse=True))


def _warn_if_cleartext(api_url: str) -> None:
    """Plain http:// to anything but this machine sends the key in clear text: say so."""
    parts = urlsplit(api_url)
    if parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return
    log.warning(
        "api_url_not_https",
        host=parts.hostname,
        hint="the API key travels in clear text over http://; use https:// (TLS is verified)",
    )


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _holds_probe_head(page0: Page) -> bool:
    """Page 0 holds what the probe's first read would: as many items, or the whole list
    (not a page cut short, which upstream sends now and then, nor a smaller page size)."""
    whole = page0.count is not None and len(page0.items) >= page0.count
    return whole or len(page0.items) >= PROBE_FIRST[1]


def _slugs(page: Page) -> list[object]:
    return [item.get("slug") if isinstance(item, dict) else None for item in page.items]


def _ssl_context(settings: Settings) -> ssl.SSLContext | bool:
    """Verification is always on; a CA bundle only adds trust roots (corporate proxies)."""
    if settings.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"SYNCD_CA_BUNDLE: cannot load {settings.ca_bundle}: {exc}") from exc
