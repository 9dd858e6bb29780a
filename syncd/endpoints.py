"""The facts of CoreClaw's two run-list endpoints, one `Endpoint` value per stream (pure).

Everything that differs between v1 and v2 on the way out is here: the path and
method, how a 0-based page number becomes request parameters, the filter values
and keys, the page-size cap and the settings that configure the stream.  Code
elsewhere looks an endpoint up (`ENDPOINTS[stream]`) instead of branching on
the stream.  What an *answer* means (envelopes, status values) is decided in
`envelope.py` and `normalize.py`, which accept either shape from either side.

    Source ──ENDPOINTS──> Endpoint ──page_params(page, size, reading)──> request parameters
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from syncd.models import OffsetMode, Source, Status
from syncd.pagination import v2_offset

FilterValue = int | str
PageParams = Callable[[int, int, OffsetMode], dict[str, int]]


@dataclass(frozen=True, slots=True)
class Request:
    """What one list request sends: a query string (GET) or a JSON body (POST)."""

    query: dict[str, str] | None = None
    json: dict[str, FilterValue] | None = None


Encode = Callable[[Mapping[str, FilterValue | None]], Request]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One run-list endpoint, as syncd calls it.

    `page_params(page_number, page_size, reading)` gives the paging parameters
    of 0-based page `page_number` (the page size capped at `max_page_size`);
    `offset_reading` says whether they depend on the reading of v2's `offset`
    (it must then be known before the first request).  `status_filter` maps a
    stored in-flight status to the filter value listing such runs;
    `worker_filter` is the parameter that lists one worker's runs.
    `page_size_setting` and `poll_interval_setting` name the stream's fields of
    `Settings` (whose bounds come from here).  `encode` turns paging parameters
    and filters into what goes on the wire (unset filters are left out).
    """

    source: Source
    path: str
    method: str
    encode: Encode
    page_params: PageParams
    offset_reading: bool
    status_filter: Mapping[str, FilterValue]
    worker_filter: str
    max_page_size: int
    page_size_setting: str
    poll_interval_setting: str


def _v1_page_params(page_number: int, page_size: int, _reading: OffsetMode) -> dict[str, int]:
    """v1 counts pages from 1 and knows no other reading."""
    return {"page_index": page_number + 1, "page_size": min(page_size, V1_MAX_PAGE_SIZE)}


def _v2_page_params(page_number: int, page_size: int, reading: OffsetMode) -> dict[str, int]:
    """v2's `offset` under the reading in force; `limit` is capped by the API."""
    limit = min(page_size, V2_MAX_LIMIT)
    return {"offset": v2_offset(page_number, limit, reading), "limit": limit}


def _given(params: Mapping[str, FilterValue | None]) -> dict[str, FilterValue]:
    return {key: value for key, value in params.items() if value is not None and value != ""}


def _v1_encode(params: Mapping[str, FilterValue | None]) -> Request:
    """A JSON body; status 0 lists every status."""
    return Request(json={"status": 0, **_given(params)})


def _v2_encode(params: Mapping[str, FilterValue | None]) -> Request:
    """A query string; a worker named `owner/name` is sent as `owner~name`."""
    query = {key: str(value) for key, value in _given(params).items()}
    if "worker_id" in query:
        query["worker_id"] = query["worker_id"].replace("/", "~")
    return Request(query=query)


V1_MAX_PAGE_SIZE = 1000  # undocumented; syncd asks for no more
V2_MAX_LIMIT = 100  # documented: "limit is capped at 100 on list and result endpoints"

V1_RUN_LIST = Endpoint(
    source=Source.V1,
    path="/api/v1/run/list",
    method="POST",
    encode=_v1_encode,
    page_params=_v1_page_params,
    offset_reading=False,
    # v1 lists aborting runs under 2 (Running): it has no status of its own for them.
    status_filter=MappingProxyType({Status.READY: 1, Status.RUNNING: 2, Status.ABORTING: 2}),
    worker_filter="scraper_slug",
    max_page_size=V1_MAX_PAGE_SIZE,
    page_size_setting="page_size_v1",
    poll_interval_setting="poll_interval_v1_s",
)
V2_WORKER_RUNS = Endpoint(
    source=Source.V2,
    path="/api/v2/worker-runs",
    method="GET",
    encode=_v2_encode,
    page_params=_v2_page_params,
    offset_reading=True,
    status_filter=MappingProxyType(
        {Status.READY: "ready", Status.RUNNING: "running", Status.ABORTING: "aborting"}
    ),
    worker_filter="worker_id",
    max_page_size=V2_MAX_LIMIT,
    page_size_setting="page_size_v2",
    poll_interval_setting="poll_interval_v2_s",
)

ENDPOINTS: Mapping[Source, Endpoint] = MappingProxyType(
    {Source.V1: V1_RUN_LIST, Source.V2: V2_WORKER_RUNS}
)
