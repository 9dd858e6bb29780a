"""The records that flow between modules: upstream pages, unified runs, rejects."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, overload


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

    A NamedTuple on purpose: it may be built once per upstream item (millions in
    a backfill), and its fields are the stage's columns (storage.STAGE_COLUMNS).
    A full scan's batches skip it: normalize builds their runs as `StageRow`s.
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


# What "changed" compares: not status_raw or source, since v1 says 3 where v2 says
# "succeeded", and that alone must not rewrite a row (storage's merge, recent.py).
CONTENT_FIELDS = tuple(f for f in Run._fields if f not in ("slug", "status_raw", "source"))


# A run as COPY sends it to the merge's stage (storage.py): Run's fields in order,
# but usage as its decimal text and the two times as microseconds since the epoch.
# asyncpg encodes those cheaply; its numeric and timestamptz encoders cost about
# 2 us a value, which was most of a row's COPY.  normalize builds these straight
# from the upstream values; the two functions below convert exactly.
StageRow = tuple[Any, ...]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def stage_row(run: Run) -> StageRow:
    """`run` in the stage's shape."""
    usage, started, finished = run[7], run[9], run[10]
    return (*run[:7], None if usage is None else str(usage), run[8],
            None if started is None else (started - _EPOCH) // _MICROSECOND,
            None if finished is None else (finished - _EPOCH) // _MICROSECOND,
            *run[11:])  # fmt: skip


def run_from_stage(row: StageRow) -> Run:
    """The Run a stage row holds (times in UTC)."""
    usage, started, finished = row[7], row[9], row[10]
    return Run._make((*row[:7], None if usage is None else Decimal(usage), row[8],
                      None if started is None else _EPOCH + started * _MICROSECOND,
                      None if finished is None else _EPOCH + finished * _MICROSECOND,
                      *row[11:]))  # fmt: skip


class StagedRuns(Sequence[Run]):
    """Runs held as stage rows: the store COPYs `rows` as they are; anyone else reads Runs."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[StageRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Run]:
        return map(run_from_stage, self.rows)

    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> list[Run]: ...
    def __getitem__(self, index: int | slice) -> Run | list[Run]:
        if isinstance(index, slice):
            return [run_from_stage(row) for row in self.rows[index]]
        return run_from_stage(self.rows[index])


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
