"""The CoreClaw simulator: both endpoints, auth, errors, and each hostile scenario."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from syncd.fakeapi import (
    FAULT_KINDS,
    FakeApi,
    FakeApiConfig,
    RequestRecord,
    add_cli_arguments,
    config_from_args,
    serve_forever,
    start_fake_api,
)
from syncd.fakedata import BAD_KINDS

KEY = "demo-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
V2 = "/api/v2/worker-runs"
V1 = "/api/v1/run/list"
Serve = Callable[..., Awaitable[tuple[FakeApi, str]]]
# Every rate limit announces its wait, in seconds.
ANNOUNCED_WAITS: dict[str, Any] = {
    "scenarios": frozenset({"ratelimit"}),
    "retry_after_ratio": 1.0,
    "retry_after_date_ratio": 0,
}
# ... and the bucket holds one request, refilled only after the test is long over.
ONE_TOKEN_THEN_ANNOUNCED_WAITS = {**ANNOUNCED_WAITS, "rate_limit_rps": 0.01, "rate_limit_burst": 1}


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start simulators on 127.0.0.1 with the given FakeApiConfig fields; clean all up."""
    runners: list[aiohttp.web.AppRunner] = []

    async def start(**config: Any) -> tuple[FakeApi, str]:
        api, runner, url = await start_fake_api(FakeApiConfig(**config), host="127.0.0.1")
        runners.append(runner)
        return api, url

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def as_v2(run: dict[str, Any]) -> dict[str, Any]:
    """A truth() entry as v2 lists it."""
    item = {k: v for k, v in run.items() if k not in ("status_v1", "status_v2")}
    return {**item, "status": run["status_v2"]}


def as_v1(run: dict[str, Any]) -> dict[str, Any]:
    return {**as_v2(run), "status": run["status_v1"]}


async def v2_page(http: aiohttp.ClientSession, url: str, **params: Any) -> dict[str, Any]:
    async with http.get(
        url + V2, params={k: str(v) for k, v in params.items()}, headers=AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        assert body["code"] == 0 and body["message"] == "success"
        assert body["request_id"].startswith("req-")
        return body


async def v1_page(http: aiohttp.ClientSession, url: str, **payload: Any) -> dict[str, Any]:
    async with http.post(url + V1, json=payload, headers=AUTH) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        assert body["code"] == 0, body
        return body


async def all_v2(
    http: aiohttp.ClientSession, url: str, limit: int, offset_mode: str = "items", **filters: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in range(10_000):
        offset = {"items": page * limit, "pages0": page, "pages1": page + 1}[offset_mode]
        data = (await v2_page(http, url, offset=offset, limit=limit, **filters))["data"]
        assert data["page_index"] == page + 1 and data["page_size"] == limit
        items += data["list"]
        if len(data["list"]) < limit:
            assert len(items) == data["count"]
            return items
    raise AssertionError("paging never ended")


async def all_v1(
    http: aiohttp.ClientSession, url: str, size: int, **filters: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for index in range(1, 10_000):
        data = (await v1_page(http, url, page_index=index, page_size=size, **filters))["data"]
        items += data["list"]
        if len(data["list"]) < size:
            assert len(items) == data["count"]
            return items
    raise AssertionError("paging never ended")


async def test_truth_is_newest_first_unique_and_well_formed(serve: Serve) -> None:
    """truth() lists unique ULID-like slugs by started_at desc, ties by slug desc."""
    api, _ = await serve(runs=400, in_flight=10)
    runs = api.truth()
    assert len(runs) == 400 and len({r["slug"] for r in runs}) == 400
    keys = [(r["started_at"], r["slug"]) for r in runs]
    assert keys == sorted(keys, reverse=True)
    assert len({r["started_at"] for r in runs}) < 400, "some runs should share a start second"
    for run in runs:
        assert len(run["slug"]) == 26 and run["slug"].isupper()
        assert isinstance(run["usage"], str) and float(run["usage"]) >= 0
        assert run["origin"] in ("api", "web", "openapi")
        if run["status"] in ("succeeded", "failed", "aborted"):
            assert run["finished_at"] - run["started_at"] == run["duration"] > 0
        else:
            assert run["finished_at"] == 0
    assert sum(r["status"] not in ("succeeded", "failed", "aborted") for r in runs) == 10
    assert len({r["scraper_slug"] for r in runs}) == 12


@pytest.mark.parametrize("limit", [1, 37, 100])
async def test_v2_items_mode_paging_returns_exactly_truth(
    serve: Serve, http: aiohttp.ClientSession, limit: int
) -> None:
    """Paging v2 with item offsets yields truth, in order, page_index = offset // limit + 1."""
    api, url = await serve(runs=250)
    assert await all_v2(http, url, limit) == [as_v2(r) for r in api.truth()]


async def test_v2_items_mode_echoes_page_index_for_unaligned_offset(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """An item offset that is not a multiple of limit still starts at that item."""
    api, url = await serve(runs=100)
    data = (await v2_page(http, url, offset=45, limit=20))["data"]
    assert (data["page_index"], data["page_size"], data["count"]) == (3, 20, 100)
    assert data["list"] == [as_v2(r) for r in api.truth()[45:65]]


@pytest.mark.parametrize("mode", ["pages", "pages0", "pages1"])
async def test_v2_pages_mode_paging_returns_exactly_truth(
    serve: Serve, http: aiohttp.ClientSession, mode: str
) -> None:
    """With a page reading, paging by page numbers (0- or 1-based) yields exactly truth."""
    api, url = await serve(runs=250, offset_mode=mode)
    reading = "pages0" if mode == "pages" else mode
    assert await all_v2(http, url, 30, offset_mode=reading) == [as_v2(r) for r in api.truth()]


@pytest.mark.parametrize(
    ("mode", "starts", "page_indexes"),
    [
        ("items", [0, 1, 2], [1, 1, 1]),
        ("pages0", [0, 10, 20], [1, 2, 3]),
        ("pages", [0, 10, 20], [1, 2, 3]),
        ("pages1", [0, 0, 10], [1, 1, 2]),
    ],
)
async def test_v2_offset_readings_for_offsets_0_1_2(
    serve: Serve,
    http: aiohttp.ClientSession,
    mode: str,
    starts: list[int],
    page_indexes: list[int],
) -> None:
    """Each reading of `offset` serves its own first item and echoes its own page_index."""
    api, url = await serve(runs=100, offset_mode=mode)
    truth = [as_v2(r) for r in api.truth()]
    for offset, start, page_index in zip([0, 1, 2], starts, page_indexes, strict=True):
        data = (await v2_page(http, url, offset=offset, limit=10))["data"]
        assert (data["page_index"], data["page_size"], data["count"]) == (page_index, 10, 100)
        assert data["list"] == truth[start : start + 10], (mode, offset)


async def test_pages_is_an_alias_of_pages0(serve: Serve, http: aiohttp.ClientSession) -> None:
    """offset_mode "pages" normalises to "pages0" and answers byte for byte like it."""
    assert FakeApiConfig(offset_mode="pages").offset_mode == "pages0"
    assert FakeApiConfig(offset_mode="pages1").offset_mode == "pages1"
    with pytest.raises(ValueError, match="offset_mode"):
        FakeApiConfig(offset_mode="page")  # type: ignore[arg-type]
    bodies = []
    for mode in ("pages", "pages0"):
        api, url = await serve(runs=60, offset_mode=mode)
        assert api.config.offset_mode == "pages0"
        bodies.append([await v2_page(http, url, offset=k, limit=7) for k in range(10)])
    assert bodies[0] == bodies[1]


async def test_v1_paging_returns_exactly_truth(serve: Serve, http: aiohttp.ClientSession) -> None:
    """Paging v1 yields truth with integer statuses (aborting shown as 2)."""
    api, url = await serve(runs=250, in_flight=40)
    truth = api.truth()
    assert await all_v1(http, url, 40) == [as_v1(r) for r in truth]
    assert {r["status_v1"] for r in truth if r["status"] == "aborting"} <= {2}


async def test_filters_match_truth_on_both_endpoints(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """worker_id (slug, owner~name, owner/name), v2 status and v1 status filter like truth."""
    api, url = await serve(runs=600, in_flight=60, workers=4)
    truth = api.truth()
    worker = api.data.workers[1]
    mine = [as_v2(r) for r in truth if r["scraper_slug"] == worker.slug]
    for ident in (worker.slug, worker.path, worker.path.replace("~", "/")):
        assert await all_v2(http, url, 50, worker_id=ident) == mine
    for status in ("ready", "running", "succeeded", "failed", "aborting"):
        expected = [as_v2(r) for r in truth if r["status"] == status]
        assert await all_v2(http, url, 50, status=status) == expected, status
    both = [as_v2(r) for r in truth if r["status"] == "failed" and r["scraper_slug"] == worker.slug]
    assert await all_v2(http, url, 7, status="failed", worker_id=worker.slug) == both
    for code, names in {2: {"running", "aborting"}, 5: {"aborted"}, 3: {"succeeded"}}.items():
        expected = [as_v1(r) for r in truth if r["status"] in names]
        assert await all_v1(http, url, 50, status=code) == expected, code
    assert await all_v1(http, url, 50, scraper_slug=worker.slug) == [
        as_v1(r) for r in truth if r["scraper_slug"] == worker.slug
    ]
    assert await all_v1(http, url, 50, scraper_slug="NO-SUCH-WORKER") == []


@pytest.mark.parametrize(
    ("headers", "query"),
    [({"Authorization": f"Bearer {KEY}"}, {}), ({"api-key": KEY}, {}), ({}, {"token": KEY})],
    ids=["bearer", "api-key", "token"],
)
async def test_each_auth_form_is_accepted(
    serve: Serve, http: aiohttp.ClientSession, headers: dict[str, str], query: dict[str, str]
) -> None:
    """Bearer, api-key header and ?token= all authenticate on both endpoints."""
    api, url = await serve(runs=10)
    async with http.get(url + V2, headers=headers, params=query) as resp:
        assert resp.status == 200 and (await resp.json())["code"] == 0
    async with http.post(url + V1, headers=headers, params=query, json={}) as resp:
        assert resp.status == 200 and (await resp.json())["code"] == 0
    assert {r.auth for r in api.requests} == {
        "bearer" if headers.get("Authorization") else "api-key" if headers else "token"
    }


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": "Bearer nope"}, {}),
        ({"api-key": "nope"}, {}),
        ({}, {"token": "nope"}),
        ({}, {}),
        ({"Authorization": f"Basic {KEY}"}, {}),
    ],
    ids=["bearer", "api-key", "token", "none", "basic"],
)
async def test_wrong_or_missing_key_is_401(
    serve: Serve, http: aiohttp.ClientSession, headers: dict[str, str], query: dict[str, str]
) -> None:
    """A wrong or missing key gets HTTP 401 with code 12001 on both endpoints."""
    _, url = await serve(runs=10)
    for method, path in (("GET", V2), ("POST", V1)):
        async with http.request(method, url + path, headers=headers, params=query, json={}) as resp:
            body = await resp.json()
            assert (resp.status, body["code"], body["message"], body["data"]) == (
                401,
                12001,
                "Unauthorized",
                None,
            )


async def test_v2_limit_is_capped_at_100(serve: Serve, http: aiohttp.ClientSession) -> None:
    """limit above 100 is silently capped; page_size echoes the effective limit."""
    _, url = await serve(runs=300)
    data = (await v2_page(http, url, limit=500))["data"]
    assert (len(data["list"]), data["page_size"], data["count"]) == (100, 100, 300)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"limit": "0"}, 400, 11000),
        ({"limit": "abc"}, 400, 11000),
        ({"limit": "2.5"}, 400, 11000),
        ({"offset": "-1"}, 400, 11000),
        ({"offset": "x"}, 400, 11000),
        ({"status": "aborted"}, 422, 11000),
        ({"status": "3"}, 422, 11000),
        ({"worker_id": "nobody~nothing"}, 404, 11004),
    ],
)
async def test_v2_bad_parameters(
    serve: Serve, http: aiohttp.ClientSession, params: dict[str, str], status: int, code: int
) -> None:
    """Bad v2 parameters get the documented HTTP status and app code with data null."""
    _, url = await serve(runs=10)
    async with http.get(url + V2, params=params, headers=AUTH) as resp:
        body = await resp.json()
        assert (resp.status, body["code"], body["data"]) == (status, code, None)


@pytest.mark.parametrize(
    "payload",
    [
        {"page_index": 0, "page_size": 20},
        {"page_index": 1, "page_size": 0},
        {"page_index": 1, "page_size": "20"},
        {"page_index": True, "page_size": 20},
        {"page_index": 1, "page_size": 20, "status": 7},
        {"page_index": 1, "page_size": 20, "status": False},
        {"page_index": 1, "scraper_slug": 5},
        [1, 2],
        "not json",
    ],
)
async def test_v1_bad_parameters_are_http_200_code_4000(
    serve: Serve, http: aiohttp.ClientSession, payload: Any
) -> None:
    """Bad v1 bodies get HTTP 200 with code 4000 and data null."""
    _, url = await serve(runs=10)
    raw = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    async with http.post(url + V1, data=raw, headers=AUTH) as resp:
        body = await resp.json()
        assert (resp.status, body) == (
            200,
            {"code": 4000, "message": "Invalid request parameters", "data": None},
        )


async def test_v1_page_size_is_capped(serve: Serve, http: aiohttp.ClientSession) -> None:
    """v1 page_size above v1_max_page_size is silently capped."""
    _, url = await serve(runs=700, v1_max_page_size=500)
    data = (await v1_page(http, url, page_index=1, page_size=1000))["data"]
    assert (len(data["list"]), data["count"]) == (500, 700)


async def test_unknown_api_path_is_404_11004(serve: Serve, http: aiohttp.ClientSession) -> None:
    _, url = await serve(runs=1)
    async with http.get(url + "/api/v2/nothing", headers=AUTH) as resp:
        assert (resp.status, (await resp.json())["code"]) == (404, 11004)


async def test_churn_tick_shifts_offsets_and_advances_statuses(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """Each churn tick adds runs at the head (shifting offsets) and moves in-flight runs on."""
    api, url = await serve(
        runs=50,
        in_flight=6,
        scenarios=frozenset({"churn"}),
        tick_s=0,
        churn_new_per_tick=3,
        churn_finish_per_tick=2,
    )
    before = (await v2_page(http, url, offset=0, limit=10))["data"]
    async with http.post(url + "/_fake/tick", params={"steps": "1"}) as resp:
        assert (await resp.json())["count"] == 53
    after = (await v2_page(http, url, offset=0, limit=10))["data"]
    assert after["count"] == 53
    assert [i["slug"] for i in after["list"][3:]] == [i["slug"] for i in before["list"][:7]]
    assert {i["status"] for i in after["list"][:3]} <= {"ready", "running"}
    assert [r["slug"] for r in api.truth()[:10]] == [i["slug"] for i in after["list"]]

    rank = {"ready": 0, "running": 1, "aborting": 2, "succeeded": 3, "failed": 3, "aborted": 3}
    seen: dict[str, str] = {r["slug"]: r["status"] for r in api.truth()}
    for _ in range(40):
        api.tick()
        for run in api.truth():
            old = seen.get(run["slug"], "ready")
            assert rank[run["status"]] >= rank[old], (run["slug"], old, run["status"])
            assert old != "aborting" or run["status"] in ("aborting", "aborted")
            seen[run["slug"]] = run["status"]
    statuses = collections.Counter(seen.values())
    assert statuses["succeeded"] > 40 and statuses["failed"] + statuses["aborted"] > 0
    done = [r for r in api.truth()[:60] if r["status"] in ("succeeded", "failed", "aborted")]
    assert done and all(r["finished_at"] - r["started_at"] == r["duration"] > 0 for r in done)
    assert len(api.truth()) == 50 + 3 * 41


async def test_without_churn_only_explicit_ticks_advance(serve: Serve) -> None:
    """Without "churn" a tick moves in-flight runs on but adds none."""
    api, _ = await serve(runs=30, in_flight=5, tick_s=0.01)
    first = api.truth()
    await asyncio.sleep(0.05)
    assert api.truth() == first
    for _ in range(20):
        api.tick()
    assert len(api.truth()) == 30
    assert all(r["status"] in ("succeeded", "failed", "aborted") for r in api.truth())


async def test_churn_background_task_ticks(serve: Serve, http: aiohttp.ClientSession) -> None:
    """With "churn" and tick_s > 0 the history grows by itself while serving."""
    api, url = await serve(runs=20, scenarios=frozenset({"churn"}), tick_s=0.02)
    for _ in range(100):
        if len(api.truth()) >= 26:
            break
        await asyncio.sleep(0.02)
    assert len(api.truth()) >= 26
    assert (await v2_page(http, url))["data"]["count"] >= 26


async def rate_limited_burst(
    api: FakeApi, url: str, http: aiohttp.ClientSession, n: int
) -> list[tuple[int, int, str | None]]:
    """n back-to-back requests alternating endpoints: (HTTP status, code, Retry-After)."""
    seen = []
    for i in range(n):
        method, path = ("GET", V2) if i % 2 else ("POST", V1)
        async with http.request(method, url + path, headers=AUTH, json={}) as resp:
            body = await resp.json()
            seen.append((resp.status, body["code"], resp.headers.get("Retry-After")))
    return seen


async def test_ratelimit_sends_429_with_and_without_retry_after(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """Once the bucket is empty: 429/13000 (some with Retry-After), some HTTP 200 13000/4290."""
    api, url = await serve(
        runs=10,
        scenarios=frozenset({"ratelimit"}),
        rate_limit_rps=0.5,
        rate_limit_burst=4,
        retry_after_ratio=0.5,
    )
    seen = await rate_limited_burst(api, url, http, 60)
    assert [s[:2] for s in seen[:4]] == [(200, 0)] * 4
    limited = seen[4:]
    assert all(code in (13000, 4290) for _, code, _ in limited)
    assert any(s == 429 and ra is not None for s, _, ra in limited)
    assert any(s == 429 and ra is None for s, _, ra in limited)
    assert any(s == 200 and c == 13000 for s, c, _ in limited)
    assert any(s == 200 and c == 4290 for s, c, _ in limited)
    retry_afters = [ra for *_, ra in limited if ra]
    assert any(ra.isdigit() for ra in retry_afters)
    assert any(email.utils.parsedate_to_datetime(ra) for ra in retry_afters if not ra.isdigit())
    log = api.requests
    assert [(r.status, r.code, r.retry_after) for r in log] == seen
    for rec in log:
        assert (rec.retry_after is None) == (rec.retry_after_s is None)
    assert any(r.early for r in log), "ignoring Retry-After must show in the log"


async def test_ratelimit_client_honouring_retry_after_is_never_early(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """A client that waits out every Retry-After (and backs off otherwise) is never early."""
    api, url = await serve(
        runs=10,
        **ANNOUNCED_WAITS,
        rate_limit_rps=4,
        rate_limit_burst=2,
        seed=3,
    )
    ok = 0
    for _ in range(30):
        async with http.get(url + V2, headers=AUTH) as resp:
            body = await resp.json()
            if body["code"] == 0:
                ok += 1
                if ok == 6:
                    break
                continue
            await asyncio.sleep(float(resp.headers.get("Retry-After", "0.3")))
    assert ok == 6
    assert any(r.retry_after for r in api.requests)
    assert not any(r.early for r in api.requests)
    for earlier, later in zip(api.requests, api.requests[1:], strict=False):
        if earlier.retry_after_s is not None:
            assert later.time >= earlier.time + earlier.retry_after_s


async def classify(http: aiohttp.ClientSession, url: str, offset: int) -> str:
    """What a client experiences for one v2 request, as a fault name (or "ok")."""
    timeout = aiohttp.ClientTimeout(total=0.15)
    try:
        async with http.get(
            url + V2, params={"offset": offset, "limit": 20}, headers=AUTH, timeout=timeout
        ) as resp:
            raw = await resp.read()
    except TimeoutError:
        return "slow"
    except aiohttp.ClientPayloadError:
        return "reset"
    if resp.content_type == "text/html":
        return f"html{resp.status}"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "truncated"
    if resp.status != 200:
        return f"http{resp.status}"
    return "ok" if body["code"] == 0 else f"code{body['code']}"


async def test_faults_produce_every_kind(serve: Serve, http: aiohttp.ClientSession) -> None:
    """Over seeded requests every fault kind occurs and the client sees its effect."""
    api, url = await serve(runs=200, scenarios=frozenset({"faults"}), fault_rate=0.9, slow_s=0.4)
    truth_slugs = {r["slug"] for r in api.truth()}
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        if len(api.requests) and set(FAULT_KINDS) <= {r.fault for r in api.requests}:
            break
        experienced = await classify(http, url, offset=40)
        fault = api.requests[-1].fault
        seen[f"{fault}->{experienced}"] += 1
        wire_faults = ("http500", "http503", "html502", "code10000", "slow", "reset", "truncated")
        assert experienced == (fault if fault in wire_faults else "ok")
    assert set(FAULT_KINDS) <= {r.fault for r in api.requests}, seen

    ok_pages: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    body: Any = None
    for _ in range(300):  # list-level faults: served items are still exactly truth's runs
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ValueError):
            async with http.get(
                url + V2,
                params={"offset": 40, "limit": 20},
                headers=AUTH,
                timeout=aiohttp.ClientTimeout(total=0.15),
            ) as resp:
                body = await resp.json()
        fault = api.requests[-1].fault
        if fault in ("count_drift", "short_page", "duplicates"):
            ok_pages[fault].append(body["data"])
        if all(len(ok_pages[k]) >= 3 for k in ("count_drift", "short_page", "duplicates")):
            break
    proper = [r["slug"] for r in api.truth()[40:60]]
    for data in ok_pages["count_drift"]:
        assert data["count"] != 200 and [i["slug"] for i in data["list"]] == proper
    for data in ok_pages["short_page"]:
        assert [i["slug"] for i in data["list"]] == proper[: len(data["list"])] != proper
    for data in ok_pages["duplicates"]:
        slugs = [i["slug"] for i in data["list"]]
        assert len(slugs) > len(set(slugs)) or slugs[0] not in proper
        assert set(proper) <= set(slugs) <= truth_slugs
    assert len(api.truth()) == 200


async def test_faults_are_deterministic_per_seed(serve: Serve, http: aiohttp.ClientSession) -> None:
    """The same seed and the same requests meet the same faults."""
    runs = []
    for _ in range(2):
        api, url = await serve(runs=50, scenarios=frozenset({"faults"}), fault_rate=0.3, slow_s=0.2)
        for _ in range(40):
            await classify(http, url, offset=0)
        runs.append([r.fault for r in api.requests])
    assert runs[0] == runs[1] and any(runs[0])


async def test_badrecords_are_listed_and_rejected_but_not_truth(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """Bad items appear in unfiltered lists and /_fake/rejects, never in truth or filters."""
    api, url = await serve(
        runs=300, in_flight=10, scenarios=frozenset({"badrecords"}), bad_every=20
    )
    truth = api.truth()
    v2 = await all_v2(http, url, 50)
    v1 = await all_v1(http, url, 60)
    good_slugs = {r["slug"] for r in truth}
    for items, convert in ((v2, as_v2), (v1, as_v1)):
        good = [i for i in items if i.get("slug") in good_slugs]
        assert good == [convert(r) for r in truth]
        assert len(items) - len(good) == (300 - 10) // 20  # after every 20 terminal runs
    async with http.get(url + "/_fake/rejects") as resp:
        rejects = (await resp.json())["rejects"]
    assert len(rejects) == 14 and {r["kind"] for r in rejects} == set(BAD_KINDS)
    assert [r["v2"] for r in rejects] == [i for i in v2 if i.get("slug") not in good_slugs]
    assert [r["v1"] for r in rejects] == [i for i in v1 if i.get("slug") not in good_slugs]
    by_kind = {r["kind"]: r for r in rejects}
    assert "slug" not in by_kind["missing_slug"]["v2"]
    assert (
        by_kind["unknown_status"]["v1"]["status"],
        by_kind["unknown_status"]["v2"]["status"],
    ) == (9, "exploded")
    assert by_kind["usage_na"]["v2"]["usage"] == "n/a"
    assert isinstance(by_kind["string_timestamps"]["v2"]["started_at"], str)
    assert by_kind["negative_timestamps"]["v2"]["started_at"] < 0
    assert len(by_kind["huge_err_msg"]["v2"]["err_msg"]) == 100_000
    assert "labels" in by_kind["extra_fields"]["v2"]
    assert all(r["slug"] is None or r["slug"].startswith("BAD") for r in rejects)
    assert not any(r["slug"].startswith("BAD") for r in truth)
    failed = await all_v2(http, url, 50, status="failed")
    assert failed == [as_v2(r) for r in truth if r["status"] == "failed"]


async def test_test_routes_need_no_auth(serve: Serve, http: aiohttp.ClientSession) -> None:
    """/_fake/truth, /_fake/requests and /_fake/tick answer without a key."""
    api, url = await serve(runs=30)
    await v2_page(http, url, limit=5)
    async with http.get(url + "/_fake/truth") as resp:
        assert (await resp.json())["runs"] == api.truth()
    async with http.get(url + "/_fake/truth", params={"offset": "5", "limit": "3"}) as resp:
        assert (await resp.json())["runs"] == api.truth()[5:8]
    async with http.get(url + "/_fake/requests") as resp:
        (logged,) = (await resp.json())["requests"]
    assert logged["path"] == V2 and logged["params"] == {"limit": "5"}
    assert (logged["status"], logged["code"], logged["auth"]) == (200, 0, "bearer")
    async with http.post(url + "/_fake/tick", params={"steps": "x"}) as resp:
        assert resp.status == 400


async def test_million_runs_start_and_serve_a_page(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """A 1,000,000-run history starts at once and serves deep and filtered pages."""
    started = time.perf_counter()
    api, url = await serve(runs=1_000_000)
    startup_s = time.perf_counter() - started
    timings: dict[str, float] = {}
    queries: dict[str, dict[str, Any]] = {
        "head": {},
        "deep": {"offset": 600_000},
        "failed": {"status": "failed", "offset": 20_000},
        "running": {"status": "running"},
        "worker": {"worker_id": api.data.workers[5].path, "offset": 5000},
    }
    for name, params in queries.items():
        started = time.perf_counter()
        data = (await v2_page(http, url, limit=100, **params))["data"]
        timings[name] = time.perf_counter() - started
        assert data["list"] and data["count"] > 0
    started = time.perf_counter()
    v1 = (await v1_page(http, url, page_index=8000, page_size=100, status=3))["data"]
    timings["v1 succeeded"] = time.perf_counter() - started
    assert len(v1["list"]) == 100
    deep = (await v2_page(http, url, offset=999_950, limit=100))["data"]
    assert [i["slug"] for i in deep["list"]] == [r["slug"] for r in api.data.truth(999_950)]
    print(
        f"\n1M runs: startup {startup_s * 1000:.1f} ms; page "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())
    )


async def test_cli_arguments_build_config_and_serve_forever_announces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """add_cli_arguments + serve_forever: options map to FakeApiConfig; one listening line."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--runs",
            "42",
            "--scenario",
            "churn,faults",
            "--scenario",
            "ratelimit",
            "--offset-mode",
            "pages",
            "--api-key",
            "k1",
            "--tick-s",
            "0",
        ]
    )
    config = config_from_args(args)
    assert (config.runs, config.offset_mode, config.api_key) == (42, "pages0", "k1")
    assert (config.latency_ms, config.latency_jitter_ms, config.quota_scope) == (0, 0, "key")
    assert config.scenarios == {"churn", "faults", "ratelimit"}
    all_args = parser.parse_args(["--scenario", "all"])
    assert config_from_args(all_args).scenarios == {"churn", "faults", "ratelimit", "badrecords"}
    task = asyncio.create_task(serve_forever(args))
    out = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if out:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out.startswith("fake-api listening on http://127.0.0.1:")
    assert out.rstrip().endswith("(42 runs, key=k1)") and out.count("\n") == 1


async def test_cli_new_options_map_to_config() -> None:
    """--offset-mode pages1, --latency-ms, --latency-jitter-ms, --quota-scope reach the config."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        [
            "--offset-mode",
            "pages1",
            "--latency-ms",
            "150",
            "--latency-jitter-ms",
            "40.5",
            "--quota-scope",
            "endpoint",
        ]
    )
    config = config_from_args(args)
    assert (config.offset_mode, config.quota_scope) == ("pages1", "endpoint")
    assert (config.latency_ms, config.latency_jitter_ms) == (150, 40.5)
    for bad in (["--offset-mode", "pages2"], ["--quota-scope", "account"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match="quota_scope"):
        FakeApiConfig(quota_scope="account")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency"):
        FakeApiConfig(latency_ms=-1)


# ---- far API: latency --------------------------------------------------------


async def timed(call: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def test_latency_delays_every_api_answer(serve: Serve, http: aiohttp.ClientSession) -> None:
    """With latency_ms, v2, v1, error and unknown-path answers all take at least that long."""
    api, url = await serve(runs=30, latency_ms=200)

    async def status(method: str, path: str, headers: dict[str, str]) -> int:
        async with http.request(method, url + path, headers=headers, json={}) as resp:
            await resp.read()
            return resp.status

    assert await timed(v2_page(http, url, limit=5)) >= 0.9 * 0.2
    assert await timed(v1_page(http, url, page_index=1, page_size=5)) >= 0.9 * 0.2
    assert await timed(status("GET", V2, {})) >= 0.9 * 0.2  # 401
    assert await timed(status("GET", "/api/v2/nothing", AUTH)) >= 0.9 * 0.2  # 404
    assert [r.status for r in api.requests] == [200, 200, 401, 404]
    assert all(r.latency_s == 0.2 for r in api.requests)


async def test_latency_lets_concurrent_requests_overlap(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """Five concurrent 200 ms requests wait side by side, not one after another."""
    _, url = await serve(runs=100, latency_ms=200)
    n, latency = 5, 0.2
    started = time.perf_counter()
    each = await asyncio.gather(
        *(timed(v2_page(http, url, offset=10 * i, limit=10)) for i in range(n))
    )
    elapsed = time.perf_counter() - started
    assert all(t >= 0.9 * latency for t in each)
    assert elapsed < n * latency * 0.6, elapsed


async def test_latency_jitter_is_seeded_and_bounded(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    """Jitter draws vary within latency +- jitter, the same for the same seed."""
    drawn = []
    for seed in (5, 5, 6):
        api, url = await serve(runs=20, latency_ms=30, latency_jitter_ms=20, seed=seed)
        for _ in range(8):
            await v2_page(http, url, limit=2)
        drawn.append([r.latency_s for r in api.requests])
    assert drawn[0] == drawn[1] != drawn[2]
    assert all(0.01 <= s <= 0.05 for s in drawn[0] + drawn[2])
    assert len(set(drawn[0])) > 1


async def test_no_latency_by_default(serve: Serve, http: aiohttp.ClientSession) -> None:
    api, url = await serve(runs=5)
    await v2_page(http, url)
    assert api.config.latency_ms == 0 and api.requests[0].latency_s == 0


# ---- quota scope -------------------------------------------------------------


async def call(http: aiohttp.ClientSession, url: str, endpoint: str) -> int:
    """One request to "v1" or "v2": its app code (0, or 13000/4290 when rate limited)."""
    method, path = ("GET", V2) if endpoint == "v2" else ("POST", V1)
    async with http.request(method, url + path, headers=AUTH, json={}) as resp:
        code: int = (await resp.json())["code"]
        return code


@pytest.mark.parametrize("scope", ["key", "endpoint"])
async def test_quota_scope_decides_whether_v1_exhausts_v2(
    serve: Serve, http: aiohttp.ClientSession, scope: str
) -> None:
    """Emptying the v1 bucket rate limits v2 with one bucket per key, not per endpoint."""
    api, url = await serve(
        runs=10,
        scenarios=frozenset({"ratelimit"}),
        rate_limit_rps=0.01,
        rate_limit_burst=3,
        retry_after_ratio=0,
        quota_scope=scope,
    )
    assert [await call(http, url, "v1") for _ in range(4)][:3] == [0, 0, 0]
    assert api.requests[-1].code in (13000, 4290)
    v2 = [await call(http, url, "v2") for _ in range(4)]
    if scope == "key":
        assert all(code == 13000 for code in v2)
    else:
        assert v2[:3] == [0, 0, 0] and v2[3] == 13000
    assert await call(http, url, "v1") != 0


@pytest.mark.parametrize("scope", ["key", "endpoint"])
async def test_early_is_judged_per_bucket(
    serve: Serve, http: aiohttp.ClientSession, scope: str
) -> None:
    """`early` flags a request that ignores a Retry-After announced for its own bucket."""
    api, url = await serve(
        runs=10,
        **ONE_TOKEN_THEN_ANNOUNCED_WAITS,
        quota_scope=scope,
    )
    sequence = ["v1", "v1", "v2", "v2", "v1", "v2"]
    codes = [await call(http, url, endpoint) for endpoint in sequence]
    early = [r.early for r in api.requests]
    announced = [r.retry_after is not None for r in api.requests]
    if scope == "key":  # the second v1 answer's Retry-After blocks the key everywhere
        assert codes[0] == 0 and all(c != 0 for c in codes[1:])
        assert early == [False, False, True, True, True, True]
    else:  # v2 has its own bucket: first request passes, the next is limited, not early
        assert [c == 0 for c in codes] == [True, False, True, False, False, False]
        assert early == [False, False, False, False, True, True]
    assert announced[1] and not announced[0]


async def test_an_announced_wait_runs_from_when_its_answer_really_left(
    serve: Serve, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy simulator sends a Retry-After answer late: the wait (and what counts as
    early) runs from then, not from when the answer was due, or a client that could not
    have read it yet would be blamed."""
    api, url = await serve(
        runs=10,
        **ONE_TOKEN_THEN_ANNOUNCED_WAITS,
        latency_ms=50,
    )
    assert await call(http, url, "v2") == 0
    round_trip = FakeApi._far_away

    async def stuck(rec: RequestRecord) -> None:
        await round_trip(rec)
        if rec is api.requests[1]:
            time.sleep(0.2)  # noqa: ASYNC251 -- the loop stuck just as the refusal is due

    monkeypatch.setattr(FakeApi, "_far_away", staticmethod(stuck))
    assert await call(http, url, "v2") == 13000
    refused = api.requests[1]
    assert refused.retry_after_s is not None
    (bucket,) = api._buckets.values()
    ((starts, ends),) = bucket.announced
    assert starts >= refused.time + 0.2  # not arrival + 50 ms
    assert ends == pytest.approx(starts + refused.retry_after_s)
    await call(http, url, "v2")  # at once, ignoring the wait: early, and by how much
    ignored = api.requests[2]
    assert ignored.early and ignored.early_after_s is not None
    assert ignored.early_after_s == pytest.approx(ignored.time - starts)
    assert [r.early_after_s for r in api.requests[:2]] == [None, None]
