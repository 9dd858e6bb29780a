"""Storing pages: the store half of the interface a cycle and a full scan share.

A `BatchWriter` normalises pages into a `Batch` and stores it in one
transaction, with the scan's checkpoint when there is one; it counts what it
stored in the cycle's report and in /metrics.

    StreamSync / FullScan ──save(report, batch, checkpoint)──> BatchWriter ──save_batch──> Store
"""

from __future__ import annotations

from syncd import metrics
from syncd.cycle import CycleReport, ScanCheckpoint
from syncd.models import Page, Source, StoreResult
from syncd.normalize import Batch
from syncd.storage import PageProgress, Store


class BatchWriter:
    """Normalises and stores batches of one stream's pages."""

    def __init__(self, store: Store, stream: Source) -> None:
        self.store = store
        self.stream = stream

    def batch(self, pages: list[Page] | None = None) -> Batch:
        """A batch of this stream's pages, normalised as they are added."""
        batch = Batch()
        for page in pages or ():
            batch.add(page, self.stream)
        return batch

    async def store_pages(self, report: CycleReport, pages: list[Page]) -> StoreResult:
        """Normalise `pages` and store them as one batch."""
        return await self.save(report, self.batch(pages))

    async def save(
        self,
        report: CycleReport,
        batch: Batch,
        checkpoint: ScanCheckpoint | None = None,
        *,
        skip_known: bool = True,
    ) -> StoreResult:
        """Store a batch of normalised pages in one transaction (with `checkpoint`, if any);
        `skip_known` as `Store.save_batch` takes it."""
        assert batch.observed_at is not None, "a batch holds at least one page"
        result = await self.store.save_batch(
            self.stream,
            batch.staged,
            batch.rejects,
            observed_at=batch.observed_at,
            progress=PageProgress(
                pages=batch.pages, checkpoint=None if checkpoint is None else checkpoint.to_json()
            ),
            seen=batch.items,
            skip_known=skip_known,
        )
        report.pages += batch.pages
        report.result.add(result)
        for outcome in ("seen", "inserted", "updated", "rejected"):
            metrics.ROWS.labels(self.stream.value, outcome).inc(getattr(result, outcome))
        return result
