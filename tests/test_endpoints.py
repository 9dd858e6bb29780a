"""The endpoint table: what each stream sends, looked up instead of branched on (pure)."""

from __future__ import annotations

import pytest

from syncd.config import Settings, load_settings
from syncd.endpoints import ENDPOINTS, Request
from syncd.models import IN_FLIGHT_STATUSES, OffsetMode, Source

ITEMS, PAGES0, PAGES1 = OffsetMode.ITEMS, OffsetMode.PAGES0, OffsetMode.PAGES1
V1, V2 = Source.V1, Source.V2


@pytest.mark.parametrize(
    ("source", "number", "size", "mode", "params"),
    [
        (V1, 0, 50, ITEMS, {"page_index": 1, "page_size": 50}),
        (V1, 4, 50, PAGES1, {"page_index": 5, "page_size": 50}),  # v1 ignores the reading
        (V1, 4, 50, PAGES0, {"page_index": 5, "page_size": 50}),
        (V1, 0, 5000, ITEMS, {"page_index": 1, "page_size": 1000}),  # never above the cap
        (V2, 0, 20, ITEMS, {"offset": 0, "limit": 20}),
        (V2, 3, 20, ITEMS, {"offset": 60, "limit": 20}),
        (V2, 0, 20, PAGES0, {"offset": 0, "limit": 20}),
        (V2, 3, 20, PAGES0, {"offset": 3, "limit": 20}),
        (V2, 0, 20, PAGES1, {"offset": 1, "limit": 20}),
        (V2, 3, 20, PAGES1, {"offset": 4, "limit": 20}),
        (V2, 2, 500, ITEMS, {"offset": 200, "limit": 100}),  # v2's limit is capped at 100
        (V2, 2, 500, PAGES0, {"offset": 2, "limit": 100}),
        (V2, 2, 500, PAGES1, {"offset": 3, "limit": 100}),
    ],
)
def test_page_params(
    source: Source, number: int, size: int, mode: OffsetMode, params: dict[str, int]
) -> None:
    """A 0-based page number becomes v1's 1-based page_index or v2's offset under each reading."""
    assert ENDPOINTS[source].page_params(number, size, mode) == params


def test_v2_page_params_need_a_reading() -> None:
    """v2 cannot page before its reading is known; v1 does not depend on one."""
    assert ENDPOINTS[V2].offset_reading and not ENDPOINTS[V1].offset_reading
    with pytest.raises(ValueError):
        ENDPOINTS[V2].page_params(1, 10, OffsetMode.AUTO)


@pytest.mark.parametrize(
    ("source", "params", "request_"),
    [
        (V1, {"page_index": 1, "page_size": 10},
         Request(json={"status": 0, "page_index": 1, "page_size": 10})),
        (V1, {"page_index": 3, "page_size": 50, "status": 2, "scraper_slug": "abc"},
         Request(json={"page_index": 3, "page_size": 50, "status": 2, "scraper_slug": "abc"})),
        (V1, {"page_index": 1, "page_size": 10, "scraper_slug": None},
         Request(json={"status": 0, "page_index": 1, "page_size": 10})),
        (V2, {"offset": 0, "limit": 10}, Request(query={"offset": "0", "limit": "10"})),
        (V2, {"offset": 40, "limit": 20, "worker_id": "acme/news", "status": "running"},
         Request(query={"offset": "40", "limit": "20", "worker_id": "acme~news",
                        "status": "running"})),
        (V2, {"offset": 0, "limit": 10, "worker_id": None, "status": ""},
         Request(query={"offset": "0", "limit": "10"})),
    ],
)  # fmt: skip
def test_encode(source: Source, params: dict[str, int | str | None], request_: Request) -> None:
    """v1 sends a JSON body (status 0: all), v2 a query string (owner/name as owner~name)."""
    assert ENDPOINTS[source].encode(params) == request_


@pytest.mark.parametrize(
    ("source", "path", "method"),
    [(V1, "/api/v1/run/list", "POST"), (V2, "/api/v2/worker-runs", "GET")],
)
def test_paths_are_the_documented_ones(source: Source, path: str, method: str) -> None:
    """SPEC §1: the two run-list requests (the path is what errors, logs and metrics name)."""
    endpoint = ENDPOINTS[source]
    assert (endpoint.source, endpoint.path, endpoint.method) == (source, path, method)


@pytest.mark.parametrize(
    ("source", "filters", "worker_key"),
    [
        (V1, {"ready": 1, "running": 2, "aborting": 2}, "scraper_slug"),
        (V2, {"ready": "ready", "running": "running", "aborting": "aborting"}, "worker_id"),
    ],
)
def test_filters(source: Source, filters: dict[str, int | str], worker_key: str) -> None:
    """Every in-flight status has a status filter (v1 lists aborting under 2); the worker key."""
    endpoint = ENDPOINTS[source]
    assert set(endpoint.status_filter) == set(IN_FLIGHT_STATUSES)
    assert {str(k): v for k, v in endpoint.status_filter.items()} == filters
    assert all(endpoint.status_filter[status] == value for status, value in filters.items())
    assert endpoint.worker_filter == worker_key


@pytest.mark.parametrize("source", list(Source))
def test_every_stream_has_an_endpoint_naming_real_settings(source: Source) -> None:
    """The settings an endpoint names exist, and the page-size setting is bounded by its cap."""
    endpoint = ENDPOINTS[source]
    fields = Settings.model_fields
    assert endpoint.poll_interval_setting in fields
    size_field = fields[endpoint.page_size_setting]
    assert any(getattr(m, "le", None) == endpoint.max_page_size for m in size_field.metadata)


@pytest.mark.parametrize(
    ("overrides", "source", "page_size", "interval_s"),
    [
        ({}, V1, 100, 60.0),
        ({}, V2, 100, 60.0),
        ({"page_size_v1": 40, "poll_interval_v1_s": 5}, V1, 40, 5.0),
        ({"page_size_v2": 20, "poll_interval_v2_s": 7}, V2, 20, 7.0),
        ({"page_size_v1": 40, "poll_interval_v1_s": 5}, V2, 100, 60.0),  # the other stream's
    ],
)
def test_settings_per_stream(
    overrides: dict[str, float], source: Source, page_size: int, interval_s: float
) -> None:
    """Settings.page_size / poll_interval_s read the fields the stream's endpoint names."""
    settings = load_settings(_env_file=None, **overrides)
    assert settings.page_size(source) == page_size
    assert settings.poll_interval_s(source) == interval_s
    assert settings.poll_interval_s(source.value) == interval_s  # a stream name does too
