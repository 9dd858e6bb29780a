"""CoreClaw simulator: the two run-list endpoints, at least as hostile as upstream may be.

Routes (the API ones need the key as ``Authorization: Bearer``, ``api-key`` or ``?token=``):

    GET  /api/v2/worker-runs   offset/limit/worker_id/status  -> {code, message, request_id, data}
    POST /api/v1/run/list      {page_index, page_size, status, scraper_slug} -> {code, ..., data}
    GET  /_fake/truth          {"count", "runs": truth()}   (optional ?offset=&limit=)
    POST /_fake/tick?steps=N   advance churn N steps
    GET  /_fake/requests       {"requests": [RequestRecord, ...]}
    GET  /_fake/rejects        {"rejects": [bad items served so far]}
    POST /_fake/revoke-key     from now on every API request is answered 401 (key revoked)

A request passes, in order: auth (401/12001), the rate limiter ("ratelimit"),
parameter checks (v2 400/404/422, v1 HTTP 200 code 4000), then at most one
fault ("faults").  Everything random is drawn from RNGs seeded by
``FakeApiConfig.seed``, so the same requests in the same order meet the same
answers.  The dataset itself lives in :mod:`syncd.fakedata`.

Upstream's open questions (SPEC section 1) are settings, so a client can be tried
against each answer:

* ``offset_mode`` -- what v2 ``offset`` counts.  ``items``: an item offset from 0
  (``page_index`` echoes ``offset // limit + 1``).  ``pages0``: a 0-based page
  number, offset=k serves items ``k*limit..`` and echoes ``page_index`` k+1 (the
  vendor's CLI; ``pages`` is an alias).  ``pages1``: a 1-based page number (the
  vendor's public docs), offset=0 behaves like 1, offset=k serves items
  ``(k-1)*limit..`` and echoes ``page_index`` ``max(k, 1)``.
* ``quota_scope`` -- what the "ratelimit" token bucket (``rate_limit_rps``,
  ``rate_limit_burst``) and its Retry-After blocking belong to: ``key`` (one
  bucket per API key, shared by both endpoints) or ``endpoint`` (one per key and
  endpoint).  ``RequestRecord.early`` means the request arrived after an answer
  with Retry-After for the same bucket had left for the client (after its round
  trip, when it was really sent) and before that wait was over.
* ``latency_ms`` / ``latency_jitter_ms`` -- a far API: every ``/api/`` answer is
  held back that long (plus or minus a seeded uniform jitter), computed on
  arrival and then delivered after an ``asyncio.sleep``, so concurrent requests
  overlap like network round trips and the rate limiter counts arrivals.  The
  ``/_fake/`` routes answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import orjson
from aiohttp import web

from syncd.endpoints import V1_RUN_LIST, V2_WORKER_RUNS
from syncd.fakedata import Api, Dataset, Listing, mix

SCENARIOS = frozenset({"churn", "ratelimit", "faults", "badrecords"})
OffsetMode = Literal["items", "pages0", "pages1"]
OFFSET_MODES: tuple[OffsetMode, ...] = ("items", "pages0", "pages1")
OFFSET_MODE_ALIASES: dict[str, OffsetMode] = {"pages": "pages0"}
QuotaScope = Literal["key", "endpoint"]
QUOTA_SCOPES: tuple[QuotaScope, ...] = ("key", "endpoint")
FAULT_KINDS = (
    "http500",  # HTTP 500 code 10000, sometimes for 1-3 requests in a row
    "http503",  # the same with 503
    "slow",  # answers correctly after slow_s seconds (longer than a sane client timeout)
    "reset",  # sends headers and half the body, then aborts the connection
    "truncated",  # HTTP 200, JSON cut short (Content-Length matches the cut body)
    "html502",  # a proxy's HTML error page with HTTP 502
    "code10000",  # HTTP 200 with code 10000 and data null
    "count_drift",  # the page is right but `count` is off by a few
    "short_page",  # fewer items than the limit although more follow
    "duplicates",  # an item repeated within the page, or the previous page's tail repeated
)
V2_FILTERS = frozenset({"ready", "running", "succeeded", "failed", "aborting"})
V1_FILTERS: dict[int, frozenset[str] | None] = {
    0: None,
    1: frozenset({"ready"}),
    2: frozenset({"running", "aborting"}),  # v1 shows aborting runs as 2
    3: frozenset({"succeeded"}),
    4: frozenset({"failed"}),
    5: frozenset({"aborted"}),
}
_INT = re.compile(r"-?\d+")
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclass
class FakeApiConfig:
    runs: int = 500  # initial history size
    seed: int = 1
    api_key: str = "demo-key"
    # what v2 `offset` counts: "items" (item offset from 0), "pages0" (0-based page number,
    # the vendor CLI's reading) or "pages1" (1-based, the public docs'); "pages" = "pages0"
    offset_mode: Literal["items", "pages0", "pages1", "pages"] = "items"
    echo_page_index: bool = True  # v2 echoes page_index/page_size (nothing promises it)
    workers: int = 12  # distinct scraper_slugs
    in_flight: int = 10  # newest runs that start non-terminal
    scenarios: frozenset[str] = frozenset()  # subset of SCENARIOS
    rate_limit_rps: float = 10.0  # "ratelimit": token bucket refill rate per quota_scope
    rate_limit_burst: int = 10  # ... and its size
    quota_scope: QuotaScope = "key"  # one bucket per "key" (both endpoints) or per key+"endpoint"
    retry_after_ratio: float = 0.5  # share of rate-limit answers carrying Retry-After
    retry_after_date_ratio: float = 0.25  # share of those Retry-After values sent as HTTP-date
    ratelimit_http200_ratio: float = 0.2  # share of rate-limit answers sent as HTTP 200
    churn_new_per_tick: int = 2  # "churn": runs added at the head per tick
    churn_finish_per_tick: int = 2  # in-flight runs that move one stage on per tick
    tick_s: float = 1.0  # "churn": background tick period (0 = manual ticks only)
    fault_rate: float = 0.1  # "faults": probability a request meets a fault
    slow_s: float = 5.0  # "faults": how long a slow response takes
    bad_every: int = 25  # "badrecords": one bad item after this many good runs
    v1_max_page_size: int = 500  # v1 page_size above this is silently capped
    latency_ms: float = 0.0  # far API: every /api/ answer is delivered this much later
    latency_jitter_ms: float = 0.0  # ... plus or minus up to this (seeded uniform), never < 0

    def __post_init__(self) -> None:
        self.scenarios = frozenset(self.scenarios)
        if unknown := self.scenarios - SCENARIOS:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {sorted(SCENARIOS)}")
        self.offset_mode = normalise_offset_mode(self.offset_mode)
        if self.quota_scope not in QUOTA_SCOPES:
            raise ValueError(f"quota_scope must be 'key' or 'endpoint', not {self.quota_scope!r}")
        if self.runs < 0 or self.workers < 1 or self.bad_every < 1:
            raise ValueError("runs must be >= 0, workers and bad_every >= 1")
        if not (self.latency_ms >= 0 and self.latency_jitter_ms >= 0):
            raise ValueError("latency_ms and latency_jitter_ms must be >= 0")


def normalise_offset_mode(value: str) -> OffsetMode:
    """The canonical offset_mode of a name or alias ("pages" -> "pages0"); ValueError if none."""
    name = OFFSET_MODE_ALIASES.get(str(value), str(value))  # a str enum becomes its plain value
    for mode in OFFSET_MODES:
        if name == mode:
            return mode
    known = ", ".join([*OFFSET_MODES, *OFFSET_MODE_ALIASES])
    raise ValueError(f"offset_mode must be one of {known}, not {value!r}")


@dataclass
class RequestRecord:
    """One API request as the simulator saw it (appended on arrival, completed on answer)."""

    time: float  # time.monotonic() on arrival
    method: str
    path: str
    params: dict[str, Any]  # query (GET) or JSON body (POST)
    auth: str | None = None  # "bearer" | "api-key" | "token" | None: the form tried
    status: int | None = None  # HTTP status sent (None: never answered, e.g. client gave up)
    code: int | None = None  # app code sent in a JSON body
    retry_after: str | None = None  # Retry-After header sent, verbatim
    retry_after_s: float | None = None  # ... and the wait it enforces (an HTTP-date is later)
    early: bool = False  # sent while a Retry-After the client had received for its bucket ran
    early_after_s: float | None = None  # ... this long after that answer left (crossings: ~0)
    fault: str | None = None  # the FAULT_KINDS entry applied
    latency_s: float = 0.0  # the far-API delay drawn for this answer (latency_ms +- jitter)


class _ApiError(Exception):
    def __init__(
        self, http_status: int, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message = http_status, code, message
        self.headers = dict(headers or {})


_UNAUTHORIZED = (401, 12001, "Unauthorized")
_V1_INVALID = (200, 4000, "Invalid request parameters")


@dataclass
class _Bucket:
    tokens: float
    updated: float
    blocked_until: float = 0.0
    # (from, until) of each announced wait as the client sees it: from the moment the
    # answer carrying Retry-After reaches it (after the round trip) for that long.
    announced: list[tuple[float, float]] = field(default_factory=list)

    def announced_for(self, now: float) -> float | None:
        """How long ago the earliest announced wait still running at `now` reached the
        client (None: no such wait, the request is not early)."""
        self.announced = [(a, b) for a, b in self.announced if b > now]
        started = [a for a, _ in self.announced if a <= now]
        return now - min(started) if started else None


@dataclass(frozen=True)
class _Page:
    listing: Listing
    start: int
    size: int
    page_index: int


@dataclass
class _Faults:
    rng: random.Random
    burst_kind: str | None = None
    burst_left: int = 0


class FakeApi:
    """The simulator's state and routes; serve ``app`` with any aiohttp runner."""

    def __init__(self, config: FakeApiConfig) -> None:
        self.config = config
        self.data = Dataset(
            runs=config.runs,
            seed=config.seed,
            workers=config.workers,
            in_flight=config.in_flight,
            bad_every=config.bad_every if "badrecords" in config.scenarios else 0,
        )
        self.requests: list[RequestRecord] = []
        self._rejects: dict[int, dict[str, Any]] = {}
        self._buckets: dict[tuple[str, Api | None], _Bucket] = {}
        self._announcing: dict[int, tuple[_Bucket, float]] = {}  # Retry-Afters on their way
        self._rate_rng = random.Random(mix(config.seed, 1, 200))
        self._faults = _Faults(random.Random(mix(config.seed, 2, 200)))
        self._latency_rng = random.Random(mix(config.seed, 3, 200))
        self._seq = 0
        self.key_revoked = False
        self.app = web.Application()
        self.app.add_routes(
            [
                web.route(V2_WORKER_RUNS.method, V2_WORKER_RUNS.path, self._v2),
                web.route(V1_RUN_LIST.method, V1_RUN_LIST.path, self._v1),
                web.route("*", "/api/{tail:.*}", self._not_found),
                web.get("/_fake/truth", self._truth_route),
                web.post("/_fake/tick", self._tick_route),
                web.get("/_fake/requests", self._requests_route),
                web.get("/_fake/rejects", self._rejects_route),
                web.post("/_fake/revoke-key", self._revoke_key_route),
            ]
        )
        self.app.cleanup_ctx.append(self._churn_task)

    # ---- public --------------------------------------------------------------

    def truth(self) -> list[dict[str, Any]]:
        """Every good run, newest first, with `status` canonical plus `status_v1`/`status_v2`."""
        return self.data.truth()

    def tick(self, steps: int = 1) -> None:
        """Advance the simulation: new head runs (with "churn") and in-flight runs moving on."""
        add = self.config.churn_new_per_tick if "churn" in self.config.scenarios else 0
        for _ in range(steps):
            self.data.tick(add=add, advance=self.config.churn_finish_per_tick)

    def rejects(self) -> list[dict[str, Any]]:
        """Bad items served so far ("badrecords"): id, kind, slug (or None), v1 and v2 forms."""
        return [self._rejects[j] for j in sorted(self._rejects)]

    # ---- API routes ----------------------------------------------------------

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "v2", dict(request.query))

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")[:1000]
        return await self._handle(request, "v1", body)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        rec = self._arrive(request, dict(request.query))
        not_found = _ApiError(404, 11004, "Not Found")
        resp = self._error_response(rec, "v2", not_found)
        await self._far_away(rec)
        return self._finish(rec, resp)

    async def _handle(self, request: web.Request, api: Api, params: Any) -> web.StreamResponse:
        rec = self._arrive(request, params if isinstance(params, dict) else {"_body": params})
        answer: web.Response | bytes
        try:
            answer = await self._answer(request, api, rec, params)
        except _ApiError as err:
            answer = self._error_response(rec, api, err)
        try:
            await self._far_away(rec)
        except BaseException:
            self._announcing.pop(id(rec), None)  # the client went: nothing was announced
            raise
        self._announce(rec)
        if isinstance(answer, bytes):  # "reset": half of this body, then a dropped connection
            return self._finish(rec, await _reset_midway(request, answer))
        return self._finish(rec, answer)

    def _arrive(self, request: web.Request, params: dict[str, Any]) -> RequestRecord:
        rec = RequestRecord(time.monotonic(), request.method, request.path, params)
        cfg = self.config
        if cfg.latency_ms > 0 or cfg.latency_jitter_ms > 0:  # drawn in arrival order
            jitter = self._latency_rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
            rec.latency_s = max(0.0, cfg.latency_ms + jitter) / 1000
        self.requests.append(rec)
        return rec

    def _announce(self, rec: RequestRecord) -> None:
        """A Retry-After leaves now: the wait it announces runs, for the client, from here.

        Now, not when the answer was computed plus its round trip: on a busy machine
        the answer goes out late, and the client cannot honour what it has not got.
        """
        announcing = self._announcing.pop(id(rec), None)
        if announcing is not None:
            bucket, wait_s = announcing
            delivered = time.monotonic()
            bucket.announced.append((delivered, delivered + wait_s))

    @staticmethod
    async def _far_away(rec: RequestRecord) -> None:
        """Hold a computed answer back for the request's round trip (the loop serves others)."""
        if rec.latency_s > 0:
            await asyncio.sleep(rec.latency_s)

    @staticmethod
    def _finish(rec: RequestRecord, resp: web.StreamResponse) -> web.StreamResponse:
        rec.status = resp.status
        return resp

    async def _answer(
        self, request: web.Request, api: Api, rec: RequestRecord, params: Any
    ) -> web.Response | bytes:
        """The answer to send (bytes: a body to cut by a "reset"); _ApiError for error answers."""
        key = self._authenticate(request, rec)
        if key != self.config.api_key or self.key_revoked:
            raise _ApiError(*_UNAUTHORIZED)
        if "ratelimit" in self.config.scenarios:
            self._rate_limit(rec, api, key)
        page = _WIRE[api].parse(self, params)
        fault = rec.fault = self._draw_fault()
        if fault in ("http500", "http503", "code10000"):
            status = {"http500": 500, "http503": 503}.get(fault, 200)
            message = "Service Unavailable" if status == 503 else "Internal Server Error"
            raise _ApiError(status, 10000, message)
        if fault == "html502":
            return web.Response(status=502, body=_HTML_502, content_type="text/html")
        if fault == "slow":
            await asyncio.sleep(self.config.slow_s)
        body = self._page_body(api, page, fault)
        rec.code = 0
        rng = self._faults.rng
        if fault == "truncated":
            return web.Response(
                body=body[: rng.randrange(1, len(body))], content_type="application/json"
            )
        if fault == "reset":
            return body
        return web.Response(body=body, content_type="application/json")

    def _error_response(self, rec: RequestRecord, api: Api, err: _ApiError) -> web.Response:
        rec.code = err.code
        payload: dict[str, Any] = {"code": err.code, "message": err.message, "data": None}
        if _WIRE[api].request_id:
            payload["request_id"] = self._request_id()
        return web.Response(
            status=err.http_status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=err.headers,
        )

    def _request_id(self) -> str:
        self._seq += 1
        return f"req-{mix(self.config.seed, self._seq, 300):016x}"

    # ---- auth and rate limit -------------------------------------------------

    def _authenticate(self, request: web.Request, rec: RequestRecord) -> str | None:
        """The key offered in the first auth form present (Bearer, api-key, token)."""
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            rec.auth = "bearer"
            return bearer.strip()
        if "api-key" in request.headers:
            rec.auth = "api-key"
            return request.headers["api-key"]
        if "token" in request.query:
            rec.auth = "token"
            return request.query["token"]
        return None

    def _rate_limit(self, rec: RequestRecord, api: Api, key: str) -> None:
        """Spend a token of this key's (or key and endpoint's) bucket, or raise a seeded 429."""
        cfg, rng, now = self.config, self._rate_rng, rec.time
        scope = (key, api if cfg.quota_scope == "endpoint" else None)
        bucket = self._buckets.setdefault(scope, _Bucket(float(cfg.rate_limit_burst), now))
        rps = max(cfg.rate_limit_rps, 1e-6)
        bucket.tokens = min(
            float(cfg.rate_limit_burst), bucket.tokens + (now - bucket.updated) * rps
        )
        bucket.updated = now
        # Early: sent after an announced wait reached the client and before it was over.
        # (Requests already under way when the answer arrived cannot have known.)
        rec.early_after_s = bucket.announced_for(now)
        rec.early = rec.early_after_s is not None
        if now >= bucket.blocked_until and bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        headers: dict[str, str] = {}
        if rng.random() < cfg.retry_after_ratio:
            wait_s = max(1, math.ceil(max(bucket.blocked_until - now, (1 - bucket.tokens) / rps)))
            bucket.blocked_until = max(bucket.blocked_until, now + wait_s)
            self._announcing[id(rec)] = (bucket, float(wait_s))
            if rng.random() < cfg.retry_after_date_ratio:  # whole seconds: round up, plus margin
                value = email.utils.formatdate(math.floor(time.time() + wait_s) + 2, usegmt=True)
            else:
                value = str(wait_s)
            headers["Retry-After"] = rec.retry_after = value
            rec.retry_after_s = float(wait_s)
        as_200 = rng.random() < cfg.ratelimit_http200_ratio
        code = _WIRE[api].rate_limited_200_code if as_200 else 13000
        raise _ApiError(200 if as_200 else 429, code, "Too Many Requests", headers)

    # ---- parameters ----------------------------------------------------------

    def _parse_v2(self, query: dict[str, str]) -> _Page:
        offset, limit = _int_arg(query.get("offset"), 0), _int_arg(query.get("limit"), 20)
        if offset is None or offset < 0 or limit is None or limit < 1:
            raise _ApiError(400, 11000, "Bad Request")
        limit = min(limit, 100)
        worker = None
        if worker_id := query.get("worker_id"):
            worker = self.data.find_worker(worker_id, paths=True)
            if worker is None:
                raise _ApiError(404, 11004, "Not Found")
        statuses = None
        if status := query.get("status"):
            if status not in V2_FILTERS:
                raise _ApiError(422, 11000, "Unprocessable Entity")
            statuses = frozenset({status})
        listing = self.data.select(worker, statuses)
        if self.config.offset_mode == "pages0":
            return _Page(listing, offset * limit, limit, offset + 1)
        if self.config.offset_mode == "pages1":
            page = max(offset, 1)
            return _Page(listing, (page - 1) * limit, limit, page)
        return _Page(listing, offset, limit, offset // limit + 1)

    def _parse_v1(self, body: Any) -> _Page:
        if not isinstance(body, dict):
            raise _ApiError(*_V1_INVALID)
        index, size = body.get("page_index", 1), body.get("page_size", 20)
        status = 0 if body.get("status") is None else body["status"]
        slug = body.get("scraper_slug")
        ints_ok = all(type(v) is int for v in (index, size, status))  # bools are not ints here
        if not ints_ok or index < 1 or size < 1 or status not in V1_FILTERS:
            raise _ApiError(*_V1_INVALID)
        if slug is not None and not isinstance(slug, str):
            raise _ApiError(*_V1_INVALID)
        size = min(size, self.config.v1_max_page_size)
        worker = self.data.find_worker(slug, paths=False) if slug else None
        if slug and worker is None:  # v1 answers an unknown worker with an empty list
            listing = Listing([], 0, None, 0)
        else:
            listing = self.data.select(worker, V1_FILTERS[status])
        return _Page(listing, (index - 1) * size, size, index)

    # ---- bodies and faults ---------------------------------------------------

    def _page_body(self, api: Api, page: _Page, fault: str | None) -> bytes:
        entries = page.listing.entries(page.start, page.start + page.size)
        count = page.listing.count
        rng = self._faults.rng
        if fault == "count_drift":
            count = max(0, count + rng.choice((-7, -2, -1, 1, 3, 11)))
        elif fault == "short_page" and len(entries) >= 2:
            entries = entries[: rng.randrange(1, len(entries))]
        elif fault == "duplicates":
            entries = self._duplicate(page, entries)
        for entry in entries:
            if entry < 0:
                self._note_reject(-entry - 1)
        items = b",".join(self.data.item(e, api) for e in entries)
        return _WIRE[api].body(self, page, count, items)

    def _v1_body(self, _page: _Page, count: int, items: bytes) -> bytes:
        return b'{"code":0,"message":"success","data":{"count":%d,"list":[%b]}}' % (count, items)

    def _v2_body(self, page: _Page, count: int, items: bytes) -> bytes:
        echo = b""
        if self.config.echo_page_index:
            echo = b',"page_index":%d,"page_size":%d' % (page.page_index, page.size)
        return (
            b'{"code":0,"message":"success","request_id":"%b","data":{"count":%d,"list":[%b]%b}}'
        ) % (self._request_id().encode(), count, items, echo)

    def _duplicate(self, page: _Page, entries: list[int]) -> list[int]:
        rng = self._faults.rng
        if page.start > 0 and rng.random() < 0.5:  # the previous page's tail, again
            back = rng.randint(1, min(3, page.start))
            return page.listing.entries(page.start - back, page.start) + entries
        if not entries:
            return entries
        i = rng.randrange(len(entries))
        return [*entries[: i + 1], entries[i], *entries[i + 1 :]]

    def _draw_fault(self) -> str | None:
        faults = self._faults
        if "faults" not in self.config.scenarios:
            return None
        if faults.burst_left:
            faults.burst_left -= 1
            kind: str | None = faults.burst_kind
        elif faults.rng.random() < self.config.fault_rate:
            kind = faults.rng.choice(FAULT_KINDS)
            if kind in ("http500", "http503"):
                faults.burst_kind, faults.burst_left = kind, faults.rng.randint(0, 2)
        else:
            kind = None
        return kind

    def _note_reject(self, j: int) -> None:
        if j not in self._rejects:
            v2 = self.data.bad_item(j, "v2")
            self._rejects[j] = {
                "id": j,
                "kind": self.data.bad_kind(j),
                "slug": v2.get("slug"),
                "v1": self.data.bad_item(j, "v1"),
                "v2": v2,
            }

    # ---- test routes and churn -----------------------------------------------

    async def _truth_route(self, request: web.Request) -> web.Response:
        start = _int_arg(request.query.get("offset"), 0) or 0
        limit = _int_arg(request.query.get("limit"), self.data.total)
        stop = None if limit is None else start + limit
        return _json({"count": self.data.total, "runs": self.data.truth(start, stop)})

    async def _tick_route(self, request: web.Request) -> web.Response:
        steps = _int_arg(request.query.get("steps"), 1)
        if steps is None or steps < 0:
            return _json({"error": "steps must be a non-negative integer"}, status=400)
        self.tick(steps)
        return _json({"steps": steps, "count": self.data.total})

    async def _requests_route(self, request: web.Request) -> web.Response:
        return _json({"requests": [asdict(r) for r in self.requests]})

    async def _rejects_route(self, request: web.Request) -> web.Response:
        return _json({"rejects": self.rejects()})

    async def _revoke_key_route(self, request: web.Request) -> web.Response:
        self.key_revoked = True
        return _json({"key_revoked": True})

    async def _churn_task(self, app: web.Application) -> AsyncIterator[None]:
        task = None
        if "churn" in self.config.scenarios and self.config.tick_s > 0:
            task = asyncio.create_task(self._churn_loop())
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _churn_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            self.tick()


@dataclass(frozen=True, slots=True)
class _Wire:
    """How the simulator answers on one endpoint: the server's side of `syncd.endpoints`."""

    parse: Callable[[FakeApi, Any], _Page]  # request parameters -> the page asked for
    body: Callable[[FakeApi, _Page, int, bytes], bytes]  # (page, count, items) -> envelope
    request_id: bool  # the envelope carries a request_id
    rate_limited_200_code: int  # the app code of a rate limit sent with HTTP 200


_WIRE: dict[Api, _Wire] = {
    # Older v1 docs name 4290 for a rate limit; it arrives with HTTP 200 there.
    "v1": _Wire(FakeApi._parse_v1, FakeApi._v1_body, request_id=False, rate_limited_200_code=4290),
    "v2": _Wire(FakeApi._parse_v2, FakeApi._v2_body, request_id=True, rate_limited_200_code=13000),
}


def _int_arg(raw: str | None, default: int) -> int | None:
    """A query integer: the default when absent or empty, None when malformed."""
    if raw is None or raw == "":
        return default
    return int(raw) if _INT.fullmatch(raw) else None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


async def _reset_midway(request: web.Request, body: bytes) -> web.StreamResponse:
    """Announce the whole body, send half of it, then drop the connection."""
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return resp


# ---- running it --------------------------------------------------------------


async def start_fake_api(
    config: FakeApiConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[FakeApi, web.AppRunner, str]:
    """Serve a new simulator on host:port (0 = any free port); the caller cleans the runner up."""
    api = FakeApi(config)
    runner = web.AppRunner(
        api.app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    return api, runner, f"http://{url_host}:{bound_port}"


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The `syncd fake-api` options; defaults are FakeApiConfig's."""
    d = FakeApiConfig()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="port (0 = any free port)")
    parser.add_argument("--runs", type=int, default=d.runs, help="initial history size")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--api-key", default=d.api_key)
    parser.add_argument(
        "--offset-mode",
        type=_offset_mode_arg,
        choices=OFFSET_MODES,
        default=d.offset_mode,
        help="what v2 `offset` counts: items (from 0), pages0 (0-based page number), "
        "pages1 (1-based, the vendor docs); pages = pages0",
    )
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--in-flight", type=int, default=d.in_flight)
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help=f"repeatable or comma-separated: {', '.join(sorted(SCENARIOS))}, all",
    )
    parser.add_argument("--rate-limit-rps", type=float, default=d.rate_limit_rps)
    parser.add_argument("--rate-limit-burst", type=int, default=d.rate_limit_burst)
    parser.add_argument("--retry-after-ratio", type=float, default=d.retry_after_ratio)
    parser.add_argument(
        "--quota-scope",
        choices=QUOTA_SCOPES,
        default=d.quota_scope,
        help="ratelimit bucket per API key (both endpoints) or per key and endpoint",
    )
    parser.add_argument("--churn-new-per-tick", type=int, default=d.churn_new_per_tick)
    parser.add_argument("--churn-finish-per-tick", type=int, default=d.churn_finish_per_tick)
    parser.add_argument("--tick-s", type=float, default=d.tick_s)
    parser.add_argument("--fault-rate", type=float, default=d.fault_rate)
    parser.add_argument("--slow-s", type=float, default=d.slow_s)
    parser.add_argument("--v1-max-page-size", type=int, default=d.v1_max_page_size)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        help="far API: delay every /api/ answer by this many ms (concurrent requests overlap)",
    )
    parser.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=d.latency_jitter_ms,
        help="plus or minus up to this many ms on each delay (seeded)",
    )


def _offset_mode_arg(value: str) -> OffsetMode:
    try:
        return normalise_offset_mode(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def config_from_args(args: argparse.Namespace) -> FakeApiConfig:
    """The FakeApiConfig that add_cli_arguments' options describe."""
    names = {n.strip() for item in args.scenario for n in item.split(",") if n.strip()}
    scenarios = frozenset(SCENARIOS if "all" in names else names)
    known = {f.name for f in fields(FakeApiConfig)} - {"scenarios"}
    values = {k: v for k, v in vars(args).items() if k in known}
    return FakeApiConfig(scenarios=scenarios, **values)


async def serve_forever(args: argparse.Namespace) -> None:
    """Run the simulator until cancelled (SIGINT under asyncio.run)."""
    config = config_from_args(args)
    api, runner, url = await start_fake_api(config, args.host, args.port)
    print(f"fake-api listening on {url} ({api.data.total} runs, key={config.api_key})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
