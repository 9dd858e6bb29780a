"""One stream's sync cycle.  Three kinds of cycle, chosen by `choose_kind`:

* **backfill** — the first pass over a stream's whole history.  Pages are
  fetched a few at a time once the first page has told us `count`, stored in
  order in batches, each batch in one transaction with a checkpoint naming the
  next page.  A killed or stopped backfill resumes from its checkpoint.
* **incremental** — the steady state.  A *head scan* pages from the newest run
  and stops once `head_overlap` runs in a row were already stored, terminal and
  unchanged.  Then an *in-flight refresh* re-reads every stored run that is not
  terminal yet (and was not on those head pages) through the endpoint's status
  filter, and, for the ones no longer listed under their old status, through
  the worker filter.  A run no list shows any more is marked `vanished_at`.
* **reconcile** — a periodic full scan (like a backfill) that catches anything
  the incremental path could not see; it reports how many rows it corrected.

Lists are newest first, so runs arriving while we page only push older runs
further down: they are re-read, never skipped (full scans: see fullscan.py).
If a list turns out not to be newest first, the head scan does not stop early
(and says so).

Data flows one way: `StreamSync` chooses the kind, then drives a `Pager`
(pager.py: the endpoint's pages through the client) and a `BatchWriter`
(writer.py: normalise, store, checkpoint), itself or through a `FullScan`
(fullscan.py), which gets the same two.  The checkpoint a scan leaves is a
`ScanCheckpoint` (cycle.py), read back here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field

import structlog

from syncd import metrics
from syncd.client import CoreClawClient
from syncd.clock import SYSTEM_CLOCK, Clock
from syncd.config import Settings
from syncd.cycle import CycleKind, CycleReport, ScanCheckpoint
from syncd.endpoints import ENDPOINTS, FilterValue
from syncd.errors import PagingError, SyncdError
from syncd.fullscan import FullScan
from syncd.models import TERMINAL_STATUSES, Run, Source
from syncd.normalize import split_page
from syncd.pager import Pager
from syncd.progress import Progress
from syncd.storage import InFlightRun, Store
from syncd.writer import BatchWriter

# Re-exported: what callers of a cycle name (split_page: benchmarks and tests).
__all__ = [
    "CycleKind",
    "CycleReport",
    "HeadScanState",
    "StreamSync",
    "choose_kind",
    "split_page",
]

log = structlog.get_logger("syncd.sync")


def choose_kind(
    last_full_scan_at: dt.datetime | None,
    checkpoint: ScanCheckpoint | None,
    *,
    full: bool,
    now: dt.datetime,
    reconcile_interval_s: float,
    reconcile_hour_utc: int | None,
) -> CycleKind:
    """Which kind of cycle to run now (pure)."""
    if full:  # asked for a pass from the top, whatever was saved
        return CycleKind.BACKFILL if last_full_scan_at is None else CycleKind.RECONCILE
    if checkpoint is not None:
        # An interrupted full scan is finished before anything else.
        return checkpoint.purpose
    if last_full_scan_at is None:
        return CycleKind.BACKFILL
    if reconcile_interval_s <= 0:
        return CycleKind.INCREMENTAL
    due = (now - last_full_scan_at).total_seconds() >= reconcile_interval_s
    in_window = reconcile_hour_utc is None or now.hour == reconcile_hour_utc
    return CycleKind.RECONCILE if due and in_window else CycleKind.INCREMENTAL


@dataclass(slots=True)
class HeadScanState:
    """Early-stop bookkeeping of one head scan (pure)."""

    overlap: int
    streak: int = 0
    newest_first: bool = True
    last_started: dt.datetime | None = None
    seen: set[str] = field(default_factory=set)

    def observe(self, runs: Iterable[Run], changed: frozenset[str]) -> None:
        for run in runs:
            self.seen.add(run.slug)
            if run.started_at is not None:
                if self.last_started is not None and run.started_at > self.last_started:
                    self.newest_first = False
                self.last_started = run.started_at
            if run.slug in changed:
                self.streak = 0
            elif run.status in TERMINAL_STATUSES:
                self.streak += 1
            # an unchanged in-flight run neither extends nor breaks the streak:
            # the in-flight refresh looks after it

    @property
    def can_stop(self) -> bool:
        return self.newest_first and self.streak >= self.overlap


class StreamSync:
    """Runs cycles for one stream (v1 or v2).

    `pager` and `writer` default to the endpoint's pages through `client` and
    batches into `store`; the full scans it starts get the same two.
    """

    def __init__(
        self,
        stream: Source,
        client: CoreClawClient,
        store: Store,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        pager: Pager | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.stream = stream
        self.client = client
        self.store = store
        self.settings = settings
        self.clock = clock
        self.endpoint = ENDPOINTS[stream]
        self.pager = pager or Pager(client, self.endpoint, settings.page_size(stream))
        self.writer = writer or BatchWriter(store, stream)
        # Called after every stored batch of a full scan (the CLI draws a progress bar).
        self.on_progress: Callable[[Progress], None] | None = None
        self._warned_order = False

    @property
    def page_size(self) -> int:
        return self.pager.page_size

    # -- the cycle -----------------------------------------------------------

    async def run_cycle(
        self, *, full: bool = False, stop: asyncio.Event | None = None
    ) -> CycleReport:
        """Run one cycle of the kind that is due.  Raises SyncdError on failure."""
        started, began_s = self.clock.now(), self.clock.monotonic()
        state = await self.store.load_state(self.stream) or {}
        saved = ScanCheckpoint.from_json(state.get("checkpoint"))
        kind = choose_kind(
            state.get("last_full_scan_at"),
            saved,
            full=full,
            now=started,
            reconcile_interval_s=self.settings.reconcile_interval_s,
            reconcile_hour_utc=self.settings.reconcile_hour_utc,
        )
        report = CycleReport(self.stream, kind=kind)
        await self.store.start_cycle(self.stream, started)
        log.info("cycle_started", stream=self.stream.value, kind=kind.value)
        try:
            if kind is CycleKind.INCREMENTAL:
                await self._incremental(report, started, stop)
            else:
                start = None if full or saved is None else saved.resume_page(self.page_size)
                report.resumed_from_page = start or None
                await self._full_scan(report, start or 0, started, stop)
                if report.completed and start:
                    # A resumed pass never went back to the top: runs that arrived
                    # while it was stopped are above where it started.
                    await self._head_scan(report)
        except SyncdError as exc:
            report.duration_s = self.clock.monotonic() - began_s
            await self._record_failure(report, exc)
            raise
        report.duration_s = self.clock.monotonic() - began_s
        await self._record_end(report)
        return report

    async def _record_end(self, report: CycleReport) -> None:
        full = report.kind is not CycleKind.INCREMENTAL
        if report.completed:
            await self.store.finish_cycle(
                self.stream,
                self.clock.now(),
                clear_checkpoint=full,
                kind=report.kind.value,
                requests=report.requests,
                full_scan=full,
                corrected=report.result.changed if report.kind is CycleKind.RECONCILE else None,
            )
            metrics.LAST_SUCCESS.labels(self.stream.value).set(self.clock.unix_s())
        outcome = "ok" if report.completed else "stopped"
        metrics.CYCLE_SECONDS.labels(self.stream.value, outcome).observe(report.duration_s)
        log.info("cycle_finished", **report.as_log())
        if report.kind is CycleKind.RECONCILE and report.completed:
            log.info(
                "reconcile_finished", stream=self.stream.value, corrected=report.result.changed
            )

    async def _record_failure(self, report: CycleReport, exc: SyncdError) -> None:
        metrics.CYCLE_SECONDS.labels(self.stream.value, "error").observe(report.duration_s)
        log.error("cycle_failed", error=str(exc), error_type=type(exc).__name__, **report.as_log())
        try:
            await self.store.finish_cycle(
                self.stream,
                self.clock.now(),
                error=f"{type(exc).__name__}: {exc}",
                kind=report.kind.value,
                requests=report.requests,
            )
        except SyncdError as store_exc:  # the database may be the thing that failed
            log.error("cycle_failure_not_recorded", error=str(store_exc))

    # -- full scans (backfill, reconcile) -----------------------------------

    async def _full_scan(
        self, report: CycleReport, start: int, started: dt.datetime, stop: asyncio.Event | None
    ) -> None:
        scan = FullScan(
            self.pager,
            self.writer,
            report,
            start=start,
            started=started,
            max_pages=self.settings.max_pages,
            batch_rows=self.settings.backfill_batch_rows,
            on_progress=self.on_progress,
            monotonic=self.clock.monotonic,
        )
        try:
            await scan.run(stop)
        finally:
            await scan.cancel_pending()

    # -- incremental -----------------------------------------------------------

    async def _incremental(
        self, report: CycleReport, started: dt.datetime, stop: asyncio.Event | None
    ) -> None:
        head = await self._head_scan(report)
        if stop is not None and stop.is_set():
            return
        await self._refresh_in_flight(report, frozenset(head.seen), started)
        report.completed = True

    async def _head_scan(self, report: CycleReport) -> HeadScanState:
        head = HeadScanState(overlap=self.settings.head_overlap)
        seen_items = 0
        for number in range(self.settings.max_pages):
            page = await self.pager.fetch(report, number)
            batch = self.writer.batch([page])
            result = await self.writer.save(report, batch)
            head.observe(batch.runs, result.changed_slugs)
            seen_items += len(page.items)
            if head.can_stop or self.pager.is_last(page, seen=seen_items):
                break
        else:
            raise PagingError(
                f"head scan did not end within {self.settings.max_pages} pages",
                endpoint=self.endpoint.path,
            )
        if not head.newest_first and not self._warned_order:
            self._warned_order = True
            log.warning(
                "list_not_newest_first",
                stream=self.stream.value,
                hint="early stop disabled; every incremental cycle pages the whole list",
            )
        return head

    async def _refresh_in_flight(
        self, report: CycleReport, seen: frozenset[str], started: dt.datetime
    ) -> None:
        pending = await self.store.in_flight_runs(exclude=seen)
        if not pending:
            return
        found = await self._scan_status_filters(report, pending)
        missing = [r for r in pending if r.slug not in found]
        if missing:
            found |= await self._scan_workers(report, missing)
        report.refreshed = sum(1 for r in pending if r.slug in found)
        vanished = [r.slug for r in pending if r.slug not in found]
        if vanished:
            report.vanished = await self.store.mark_vanished(vanished, started)
            log.warning(
                "runs_vanished", stream=self.stream.value, count=len(vanished), slugs=vanished[:20]
            )

    async def _scan_status_filters(
        self, report: CycleReport, pending: list[InFlightRun]
    ) -> set[str]:
        """Page each needed status-filtered list; return the slugs listed under their old status."""
        table = self.endpoint.status_filter
        wanted = {r.slug: table[r.status] for r in pending}
        listed: set[str] = set()
        for value in sorted(set(wanted.values()), key=str):
            async with aclosing(self._filtered_pages(report, status=value)) as pages:
                async for runs in pages:
                    listed.update(r.slug for r in runs)
        # A run listed under *another* in-flight filter was still found (e.g. ready -> running).
        return {slug for slug in wanted if slug in listed}

    async def _scan_workers(self, report: CycleReport, missing: list[InFlightRun]) -> set[str]:
        """Find runs that left their status list by paging their worker's runs, newest first,
        down to the oldest of them."""
        key = self.endpoint.worker_filter
        found: set[str] = set()
        by_worker: dict[str, list[InFlightRun]] = {}
        for run in missing:
            by_worker.setdefault(run.worker_slug, []).append(run)
        for worker, runs in sorted(by_worker.items()):
            wanted = {r.slug for r in runs}
            starts = [r.started_at for r in runs if r.started_at is not None]
            oldest = min(starts) if len(starts) == len(runs) else None
            async with aclosing(self._filtered_pages(report, **{key: worker})) as pages:
                async for page_runs in pages:
                    found.update(wanted.intersection(r.slug for r in page_runs))
                    if wanted <= found or _past(page_runs, oldest):
                        break
        return found

    async def _filtered_pages(
        self, report: CycleReport, **filters: FilterValue
    ) -> AsyncGenerator[list[Run], None]:
        """Yield the normalised runs of each page of a filtered list, storing every page."""
        seen_items = 0
        for number in range(self.settings.max_pages):
            page = await self.pager.fetch(report, number, **filters)
            batch = self.writer.batch([page])
            await self.writer.save(report, batch)
            yield batch.runs
            seen_items += len(page.items)
            if self.pager.is_last(page, seen=seen_items):
                return
        raise PagingError(
            f"filtered list {filters} did not end within {self.settings.max_pages} pages",
            endpoint=self.endpoint.path,
        )


def _past(runs: list[Run], oldest: dt.datetime | None) -> bool:
    """True once a newest-first page has gone older than `oldest`."""
    if oldest is None or not runs:
        return False
    last = runs[-1].started_at
    return last is not None and last < oldest
