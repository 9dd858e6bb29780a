"""The long-running service: one APScheduler job per stream, concurrent, never overlapping itself.

Shutdown (SIGTERM/SIGINT, or the `stop` event): no new cycles start; running
cycles finish the page they are on (each page is one transaction, so it is
committed or rolled back whole) and return; after `grace_s` whatever is still
running is cancelled, which rolls its open transaction back.  Then one summary
line is logged and the caller closes the HTTP client and the engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd import metrics
from syncd.endpoints import ENDPOINTS
from syncd.errors import AuthError, ConfigError, SyncdError
from syncd.models import Source
from syncd.storage import StreamLease
from syncd.sync import CycleReport, StreamSync

log = structlog.get_logger("syncd.daemon")

FATAL_ERRORS = (AuthError, ConfigError)


@dataclass
class DaemonStats:
    cycles: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    rows_changed: dict[str, int] = field(default_factory=dict)
    fatal: SyncdError | None = None


class Daemon:
    """Schedules `StreamSync` cycles until told to stop."""

    def __init__(
        self,
        syncers: list[StreamSync],
        intervals_s: dict[Source, float],
        *,
        grace_s: float = 8.0,
        lease: StreamLease | None = None,
    ) -> None:
        self.syncers = syncers
        self.intervals_s = intervals_s
        self.grace_s = grace_s
        self.lease = lease
        self._standby: set[Source] = set()
        self.stop = asyncio.Event()
        self.stats = DaemonStats()
        self._running: set[asyncio.Task[None]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._wakes: dict[Source, int] = {s.stream: 0 for s in syncers}

    def wake(self, reason: str) -> None:
        """Start a cycle of every stream now (e.g. a run-finished webhook arrived).

        A stream busy with a cycle runs another one right after it, so the
        news is never dropped; polling stays the source of truth.
        """
        log.info("wake_requested", reason=reason)
        for stream in self._wakes:
            self._wakes[stream] += 1
            self._run_soon(stream)

    def _run_soon(self, stream: Source) -> None:
        if self._scheduler is None or self.stop.is_set():
            return
        job = self._scheduler.get_job(f"sync-{stream.value}")
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.UTC))

    async def run(self) -> DaemonStats:
        metrics.declare_streams(
            {s.stream.value: self.intervals_s[s.stream] for s in self.syncers},
            [ENDPOINTS[s.stream].path for s in self.syncers],
        )
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        for syncer in self.syncers:
            scheduler.add_job(
                self._cycle,
                "interval",
                seconds=self.intervals_s[syncer.stream],
                args=[syncer],
                id=f"sync-{syncer.stream.value}",
                next_run_time=now,
                max_instances=1,  # a slow cycle delays the next one, never overlaps it
                coalesce=True,
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "daemon_started",
            streams=[s.stream.value for s in self.syncers],
            intervals_s={k.value: v for k, v in self.intervals_s.items()},
        )
        try:
            await self.stop.wait()
        finally:
            # pause, drain, then shut down: APScheduler's shutdown cancels running
            # jobs outright, which would throw away the page in flight.
            scheduler.pause()
            await self._drain()
            scheduler.shutdown(wait=False)
            if self.lease is not None:
                await self.lease.release()
            for syncer in self.syncers:
                metrics.LEASE_HELD.labels(syncer.stream.value).set(0)
        log.info(
            "daemon_stopped",
            cycles=self.stats.cycles,
            failures=self.stats.failures,
            rows_changed=self.stats.rows_changed,
        )
        return self.stats

    async def _cycle(self, syncer: StreamSync) -> None:
        if self.stop.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        name = syncer.stream.value
        wakes_at_start = self._wakes[syncer.stream]
        try:
            if not await self._may_poll(syncer.stream):
                return
            report: CycleReport = await syncer.run_cycle(stop=self.stop)
            self.stats.cycles[name] = self.stats.cycles.get(name, 0) + 1
            self.stats.rows_changed[name] = (
                self.stats.rows_changed.get(name, 0) + report.result.changed
            )
        except FATAL_ERRORS as exc:
            self.stats.fatal = exc
            log.error("daemon_fatal", stream=name, error=str(exc))
            self.stop.set()
        except SyncdError:
            # Already logged by the cycle; the next interval retries.
            self.stats.failures[name] = self.stats.failures.get(name, 0) + 1
        finally:
            self._running.discard(task)
            if self._wakes[syncer.stream] != wakes_at_start:
                self._run_soon(syncer.stream)

    async def _may_poll(self, stream: Source) -> bool:
        """Another replica polling this stream makes this one a standby for it."""
        held = self.lease is None or await self.lease.acquire(stream)
        metrics.LEASE_HELD.labels(stream.value).set(1 if held else 0)
        if held:
            if stream in self._standby:
                self._standby.discard(stream)
                log.info("stream_taken_over", stream=stream.value)
            return True
        if stream not in self._standby:
            self._standby.add(stream)
            log.info(
                "stream_standby",
                stream=stream.value,
                hint="another syncd process polls this stream; retrying every interval",
            )
        return False

    async def _drain(self) -> None:
        if not self._running:
            return
        pending = set(self._running)
        _, still = await asyncio.wait(pending, timeout=self.grace_s)
        for task in still:
            task.cancel()
        if still:
            log.warning("cycles_cancelled", count=len(still))
            await asyncio.wait(still, timeout=self.grace_s)
