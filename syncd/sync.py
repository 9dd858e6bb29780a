"""One stream's sync cycle: pages -> normalise -> store, with a resumable checkpoint.

A cycle pages through one endpoint's list and stores each page in its own
transaction together with a checkpoint naming the next page.  If the process
dies or is stopped mid-cycle, the next cycle resumes from that page instead of
starting over: lists are newest first, so runs that arrive meanwhile only push
older runs further down (re-read, never skipped), and the new head is picked
up by the next cycle, which starts from the top again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from syncd import metrics
from syncd.client import CoreClawClient
from syncd.config import Settings
from syncd.errors import SyncdError
from syncd.models import OffsetMode, Page, Reject, Run, Source, StoreResult
from syncd.normalize import normalize
from syncd.storage import PageProgress, Store

log = structlog.get_logger("syncd.sync")

CHECKPOINT_KIND = "scan"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class CycleReport:
    """What one cycle did; `completed` is False when it was stopped part-way."""

    stream: Source
    pages: int = 0
    result: StoreResult = field(default_factory=StoreResult)
    resumed_from_page: int | None = None
    completed: bool = False
    duration_s: float = 0.0

    def as_log(self) -> dict[str, Any]:
        r = self.result
        return {
            "stream": self.stream.value,
            "pages": self.pages,
            "seen": r.seen,
            "inserted": r.inserted,
            "updated": r.updated,
            "rejected": r.rejected,
            "completed": self.completed,
            "resumed_from_page": self.resumed_from_page,
            "duration_s": round(self.duration_s, 3),
        }


def split_page(page: Page, source: Source) -> tuple[list[Run], list[Reject]]:
    """Normalise a page's items into runs to store and rejects to keep."""
    runs: list[Run] = []
    rejects: list[Reject] = []
    for item in page.items:
        outcome = normalize(item, source)
        if outcome.run is not None:
            runs.append(outcome.run)
        if outcome.reject is not None:
            rejects.append(outcome.reject)
    return runs, rejects


def resume_page(checkpoint: dict[str, Any] | None, page_size: int) -> int | None:
    """The page to resume an interrupted scan from, in today's page size; None to start fresh."""
    if not checkpoint or checkpoint.get("kind") != CHECKPOINT_KIND:
        return None
    next_page, old_size = checkpoint.get("next_page"), checkpoint.get("page_size")
    if not isinstance(next_page, int) or not isinstance(old_size, int) or next_page <= 0:
        return None
    if old_size <= 0:
        return None
    # Round down: re-reading a few runs is harmless, skipping one is not.
    return (next_page * old_size) // page_size


class StreamSync:
    """Runs cycles for one stream (v1 or v2)."""

    def __init__(
        self,
        stream: Source,
        client: CoreClawClient,
        store: Store,
        settings: Settings,
        *,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.stream = stream
        self.client = client
        self.store = store
        self.settings = settings
        self.now = now
        self.page_size = settings.page_size_v1 if stream is Source.V1 else settings.page_size_v2

    async def run_cycle(
        self, *, full: bool = False, stop: asyncio.Event | None = None
    ) -> CycleReport:
        """Page through the list once and store it.  Raises SyncdError on failure."""
        report = CycleReport(self.stream)
        started, clock = self.now(), time.monotonic()
        state = await self.store.load_state(self.stream)
        start_page = 0 if full else resume_page(state and state.get("checkpoint"), self.page_size)
        report.resumed_from_page = start_page or None
        await self.store.start_cycle(self.stream, started)
        log.info(
            "cycle_started",
            stream=self.stream.value,
            full=full,
            resume_from_page=report.resumed_from_page,
        )
        try:
            await self._scan(report, start_page or 0, started, stop)
        except SyncdError as exc:
            report.duration_s = time.monotonic() - clock
            await self._record_failure(report, exc)
            raise
        report.duration_s = time.monotonic() - clock
        if report.completed:
            await self.store.finish_cycle(self.stream, self.now(), clear_checkpoint=True)
            metrics.LAST_SUCCESS.labels(self.stream.value).set(time.time())
        metrics.CYCLE_SECONDS.labels(
            self.stream.value, "ok" if report.completed else "stopped"
        ).observe(report.duration_s)
        log.info("cycle_finished", **report.as_log())
        return report

    async def _scan(
        self, report: CycleReport, start_page: int, started: dt.datetime, stop: asyncio.Event | None
    ) -> None:
        offset_mode = self.settings.v2_offset_mode if self.stream is Source.V2 else OffsetMode.ITEMS
        pages = self.client.pages(
            self.stream, offset_mode=offset_mode, page_size=self.page_size, start_page=start_page
        )
        async for number, page in pages:
            await self._store_page(report, number, page, started)
            if stop is not None and stop.is_set():
                log.info("cycle_interrupted", stream=self.stream.value, next_page=number + 1)
                return
        report.completed = True

    async def _store_page(
        self, report: CycleReport, number: int, page: Page, started: dt.datetime
    ) -> None:
        runs, rejects = split_page(page, self.stream)
        checkpoint = {
            "kind": CHECKPOINT_KIND,
            "next_page": number + 1,
            "page_size": self.page_size,
            "cycle_started_at": started.isoformat(),
        }
        result = await self.store.save_batch(
            self.stream,
            runs,
            rejects,
            observed_at=page.fetched_at,
            progress=PageProgress(checkpoint=checkpoint),
            seen=len(page.items),
        )
        report.pages += 1
        report.result.add(result)
        metrics.BACKFILL_PAGES.labels(self.stream.value).set(report.pages)
        for outcome in ("seen", "inserted", "updated", "rejected"):
            metrics.ROWS.labels(self.stream.value, outcome).inc(getattr(result, outcome))

    async def _record_failure(self, report: CycleReport, exc: SyncdError) -> None:
        metrics.CYCLE_SECONDS.labels(self.stream.value, "error").observe(report.duration_s)
        log.error("cycle_failed", error=str(exc), error_type=type(exc).__name__, **report.as_log())
        try:
            await self.store.finish_cycle(
                self.stream, self.now(), error=f"{type(exc).__name__}: {exc}"
            )
        except SyncdError as store_exc:  # the database may be the thing that failed
            log.error("cycle_failure_not_recorded", error=str(store_exc))
