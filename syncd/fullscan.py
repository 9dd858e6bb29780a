"""A whole-list pass (backfill or reconciliation) for one stream.

Three stages overlap, so the slowest sets the pace, not their sum: once the
first page has given `count`, pages are fetched ahead (as many as the request
controller lets fly); the loop takes them in order and gathers them into
batches; one writer task stores the batches, strictly in order, each in one
transaction with a checkpoint naming the next page.  While PostgreSQL merges
one batch, the next pages arrive, are decoded and normalised.  Pages answered out of order
while runs arrive at the head are fetched again in order (`_in_order`), so no
run slips between two pages.

It drives the same fetch/store interface as the incremental cycle: a `Pager`
for the endpoint's pages and a `BatchWriter` for the batches, both handed in
by the cycle (sync.py), which never looks inside a scan, nor a scan inside it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from syncd import memory, metrics
from syncd.cycle import CycleKind, CycleReport, ScanCheckpoint
from syncd.errors import PagingError, SyncdError
from syncd.models import Page
from syncd.normalize import Batch
from syncd.pager import Pager
from syncd.progress import Progress
from syncd.writer import BatchWriter

log = structlog.get_logger("syncd.fullscan")

ORDER_REFETCHES = 3
PROGRESS_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class _Handover:
    """A batch for the writer, with where the scan stood when it was gathered."""

    batch: Batch
    checkpoint: ScanCheckpoint
    items_seen: int
    last_number: int
    count: int | None


class FullScan:
    """A whole-list pass: pages fetched ahead with bounded concurrency, stored in order."""

    def __init__(
        self,
        pager: Pager,
        writer: BatchWriter,
        report: CycleReport,
        *,
        start: int,
        started: dt.datetime,
        max_pages: int,
        batch_rows: int,
        on_progress: Callable[[Progress], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pager = pager
        self.writer = writer
        self.report = report
        self.start = start
        self.started = started
        self.max_pages = max_pages
        self.batch_rows = batch_rows
        self.on_progress = on_progress
        self._monotonic = monotonic
        self.stream = pager.stream.value
        # A reconcile looks for rows changed or lost behind syncd's back: it sends every
        # run to the merge, even one this process stored just so (recent.py).
        self._skip_known = report.kind is not CycleKind.RECONCILE
        self.pending: dict[int, asyncio.Task[tuple[int, Page]]] = {}
        self.answers = 0  # answer order: pages are numbered as their responses arrive
        self.previous: tuple[int, int | None] | None = None  # (answer no., count) of the last page
        self.next_to_fetch = start
        self.count_known = False
        self.last_count: int | None = None
        # Items before `start` are counted as if read, so the end rule can use `count`.
        self.items_seen = start * pager.page_size
        self.batch = writer.batch()
        self.last_number = start - 1
        # One batch being written and one waiting: enough to overlap, bounded in memory.
        self.to_write: asyncio.Queue[_Handover | None] = asyncio.Queue(maxsize=1)
        self.write_task: asyncio.Task[None] | None = None
        self.progress = Progress(
            self.stream, monotonic(), start_items=self.items_seen, done=self.items_seen
        )

    def _top_up(self, number: int) -> None:
        """Have page `number` on its way, and a few after it -- not past the promised end.

        As many as the controller lets fly, plus one queued so a freed place is
        taken at once: more would only wait, and be lost if the process dies.
        """
        ahead = self.pager.window() + 1 if self.count_known else 1
        limit = self.start + self.max_pages
        if self.last_count is not None:
            # Up to the page holding the last item -- or, when count is a multiple of
            # the page size, the empty page after it that ends the list.  A list that
            # grows meanwhile is still followed, page by page.
            limit = min(limit, max(self.last_count // self.pager.page_size + 1, number + 1))
        # Pages are consumed in order, so when `number` is not pending yet it is the
        # next to fetch and the pending set is empty: the loop below sends it.
        while len(self.pending) < ahead and self.next_to_fetch < limit:
            self.pending[self.next_to_fetch] = asyncio.ensure_future(
                self._fetch(self.next_to_fetch)
            )
            self.next_to_fetch += 1

    async def _fetch(self, number: int) -> tuple[int, Page]:
        page = await self.pager.fetch(self.report, number)
        self.answers += 1
        return self.answers, page

    async def _in_order(self, number: int, answered: int, page: Page) -> Page:
        """Page `number`, as answered after page `number - 1` or from an unchanged list.

        Runs arriving at the head push everything down.  Pages answered in
        order then overlap (harmless); but a page answered *before* its
        predecessor, with runs arriving in between, leaves a gap at their
        boundary.  Such a page is fetched again, now strictly after.
        """
        for _ in range(ORDER_REFETCHES):
            if self.previous is None:
                break
            before, before_count = self.previous
            if answered > before or (page.count is not None and page.count == before_count):
                break
            log.info(
                "page_refetched_in_order",
                stream=self.stream,
                page=number,
                count=page.count,
                previous_count=before_count,
            )
            answered, page = await self._fetch(number)
        self.previous = (answered, page.count)
        return page

    async def run(self, stop: asyncio.Event | None) -> None:
        with memory.during_full_scan():  # a dict per item, a tuple per row (memory.py)
            self.write_task = asyncio.ensure_future(self._write_batches())
            try:
                await self._scan(stop)
            finally:
                await self._drain()
        if self.report.completed:  # the scan's pages and batches are garbage now
            memory.release_free_heap(f"{self.report.kind.value} {self.stream}")

    async def _scan(self, stop: asyncio.Event | None) -> None:
        number = self.start
        try:
            while True:
                self._top_up(number)
                task = self.pending.pop(number, None)
                if task is None:
                    raise PagingError(
                        f"list did not end within {self.max_pages} pages",
                        endpoint=self.pager.endpoint.path,
                    )
                answered, page = await task
                page = await self._in_order(number, answered, page)
                self.count_known = self.count_known or page.count is not None
                self.last_count = page.count if page.count is not None else self.last_count
                self.items_seen += len(page.items)
                # Normalised here, while the writer waits on PostgreSQL for the last batch.
                self.batch.add(page, self.pager.stream)
                self.last_number = number
                last = self.pager.is_last(page, seen=self.items_seen)
                stopping = stop is not None and stop.is_set()
                if last or stopping or self._should_flush(number + 1):
                    await self._flush()
                if last:
                    await self._drain()  # completed means stored
                    self.report.completed = True
                    self.progress.finished = True
                    self._report_progress(page.count, self.items_seen, self.last_number)
                    return
                if stopping:
                    log.info("cycle_interrupted", stream=self.stream, next_page=number + 1)
                    return
                number += 1
        except SyncdError:
            # Whatever was fetched in order is worth keeping before giving up.
            if self.batch.pages:
                await self._flush()
            raise

    def _should_flush(self, next_number: int) -> bool:
        if self.batch.items >= self.batch_rows:
            return True
        if not self.to_write.empty():
            return False  # the writer has work queued: let this batch grow meanwhile
        nxt = self.pending.get(next_number)
        # Hand over now unless the next page is already here to join the batch.
        return nxt is None or not nxt.done()

    async def _flush(self) -> None:
        """Hand the batch to the writer (waits only while it is a batch behind)."""
        batch, self.batch = self.batch, self.writer.batch()
        checkpoint = ScanCheckpoint(
            purpose=self.report.kind,
            next_page=self.last_number + 1,
            page_size=self.pager.page_size,
            cycle_started_at=self.started,
        )
        assert self.write_task is not None
        handover = _Handover(batch, checkpoint, self.items_seen, self.last_number, self.last_count)
        put = asyncio.ensure_future(self.to_write.put(handover))
        # A writer that failed takes no more batches: its error is the scan's.
        await asyncio.wait({put, self.write_task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
        if self.write_task.done():
            self.write_task.result()

    async def _write_batches(self) -> None:
        while (item := await self.to_write.get()) is not None:
            # A scan stops on its checkpoint and the list's end, never on what changed.
            await self.writer.save(
                self.report, item.batch, item.checkpoint, skip_known=self._skip_known
            )
            self._report_progress(item.count, item.items_seen, item.last_number)

    async def _drain(self) -> None:
        """Wait until every batch handed over is stored; raise the writer's error if any."""
        task = self.write_task
        if task is None:
            return
        if not task.done():
            put = asyncio.ensure_future(self.to_write.put(None))
            await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                put.cancel()
            await asyncio.wait({task})
        self.write_task = None
        task.result()

    def _report_progress(self, count: int | None, items_seen: int, last_number: int) -> None:
        stream, now_s = self.stream, self._monotonic()
        progress = self.progress
        progress.done, progress.pages = items_seen, last_number + 1
        progress.total = count if count is not None else progress.total
        metrics.BACKFILL_PAGES.labels(stream).set(progress.pages)
        if progress.total is not None:
            total_pages = -(-progress.total // self.pager.page_size)
            metrics.BACKFILL_TOTAL_PAGES.labels(stream).set(total_pages)
        if progress.due_for_log(now_s, PROGRESS_LOG_EVERY_S):
            eta = progress.eta_s(now_s)
            log.info("backfill_progress", stream=stream, kind=self.report.kind.value,
                     pages=progress.pages, rows=progress.done, total=progress.total,
                     rows_per_s=round(progress.rate(now_s)),
                     eta_s=None if eta is None else round(eta))  # fmt: skip
        if self.on_progress is not None:
            self.on_progress(progress)

    async def cancel_pending(self) -> None:
        tasks: list[asyncio.Future[Any]] = [*self.pending.values()]
        if self.write_task is not None:  # a drain cut short by a second cancellation
            tasks.append(self.write_task)
            self.write_task = None
        self.pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
