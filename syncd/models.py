"""The records that flow between modules: upstream pages, unified runs, rejects."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple


class Source(StrEnum):
    """Which run-list endpoint a record came from (also the stream name)."""

    V1 = "v1"
    V2 = "v2"


class Status(StrEnum):
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTING = "aborting"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ABORTED})
IN_FLIGHT_STATUSES = frozenset({Status.READY, Status.RUNNING, Status.ABORTING})

# Lifecycle order: an observation may only move a run forward (or sideways
# between terminal states).  `unknown` ranks lowest so a value we cannot read
# never overwrites one we can.  The same table lives in SQL as
# syncd_status_rank() (see migrations); tests check that they agree.
STATUS_RANK: dict[Status, int] = {
    Status.UNKNOWN: -1,
    Status.READY: 0,
    Status.RUNNING: 1,
    Status.ABORTING: 2,
    Status.SUCCEEDED: 3,
    Status.FAILED: 3,
    Status.ABORTED: 3,
}


class OffsetMode(StrEnum):
    """What v2's `offset` counts (SPEC "Known ambiguity"), for `limit=20`:

    * ITEMS  -- an item offset from 0 (the seed page): offset=40 is the 3rd page;
    * PAGES0 -- a 0-based page number (the vendor's CLI): offset=2 is the 3rd page;
    * PAGES1 -- a 1-based page number (the vendor's docs): offset=3 is the 3rd
      page, and offset=0 behaves like 1.
    """

    AUTO = "auto"
    ITEMS = "items"
    PAGES0 = "pages0"
    PAGES1 = "pages1"


@dataclass(frozen=True, slots=True)
class Page:
    """One decoded list page, before normalisation.

    `items` are the raw JSON objects exactly as upstream sent them; `count`,
    `page_index` and `page_size` are None when upstream omitted them or sent
    something that is not an integer.
    """

    items: list[Any]
    count: int | None
    fetched_at: dt.datetime  # when the answer arrived, by the client's clock (orders merges)
    page_index: int | None = None
    page_size: int | None = None
    request_id: str | None = None


class Run(NamedTuple):
    """One run as stored in `runs`: both upstream shapes normalised into this.

    A NamedTuple on purpose: it is built once per upstream item (millions in a
    backfill), and it is the record COPY sends, field for field
    (storage.STAGE_COLUMNS): only the tuple is copied on the way to PostgreSQL,
    never a value.
    """

    slug: str
    worker_slug: str
    worker_title: str | None
    status: Status
    status_raw: str
    err_msg: str | None
    results: int | None
    usage_usd: Decimal | None
    traffic_bytes: int | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_s: int | None
    origin: str | None
    version: str | None
    source: Source


@dataclass(frozen=True, slots=True)
class Reject:
    """An item that could not be normalised: kept with its raw payload and why."""

    source: Source
    raw: Any
    reason: str
    slug: str | None = None


@dataclass(slots=True)
class StoreResult:
    """What one batch did to the database."""

    seen: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    history_added: int = 0
    changed_slugs: frozenset[str] = frozenset()  # this batch's inserted or updated runs

    @property
    def changed(self) -> int:
        return self.inserted + self.updated

    def add(self, other: StoreResult) -> None:
        self.seen += other.seen
        self.inserted += other.inserted
        self.updated += other.updated
        self.rejected += other.rejected
        self.history_added += other.history_added
        # changed_slugs stays per batch: a backfill would otherwise hold every slug.
