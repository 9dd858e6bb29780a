"""Benchmark: syncd's incremental cycles against a naive full scan of the whole list.

Command (from the repository root, venv active)::

    python -m bench.incremental [--runs 100000] [--changes 50] [--interval 2] [--seconds 20]

(``--help`` lists the other knobs: ``--tick``, ``--cycles``, ``--naive-runs``,
``--rl-*``, ``--log-level``.)  Everything is local and self-contained: an
embedded PostgreSQL in a temporary directory (deleted at the end), and the
CoreClaw simulator (``syncd.fakeapi``) served in this process on 127.0.0.1.
Each figure is PRINTED next to the same figure for a *naive* cycle measured in
the same run; nothing is asserted.  The naive cycle is
``StreamSync.run_cycle(full=True)``: page the whole list every cycle (a
reconcile scan).

Setup (not a target): migrate, then back-fill both streams of a ``--runs``
history once, concurrently; its duration and request count are printed.
Unless said otherwise the client's rate ceiling is lifted (1000 requests/s) so
that request counts and wall times measure syncd and not the limiter.

Figures
-------
1. **Steady state, no changes** (``--runs`` history, nothing changes upstream):
   requests per stream per incremental cycle (target <= 2; mean and max over
   ``--cycles`` cycles of both streams run concurrently, as the daemon does),
   wall time per stream cycle (``CycleReport.duration_s``), and rows written
   (target 0).  "Rows written" is counted by PostgreSQL itself: rows of
   ``runs``, ``run_status_history``, ``workers`` and ``sync_rejects`` whose
   ``xmin`` is newer than a transaction id taken before the cycles (inserts
   and updates, whatever syncd's own counters say; ``sync_state`` is left
   out, it is meant to change every cycle).  Also printed, for the storage
   cost behind "0 rows written": WAL bytes per cycle (``pg_current_wal_lsn``
   before/after) and how many ``runs`` rows the cycles row-locked without
   rewriting them (``xmax`` newer than that transaction id: a merge
   ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that skips an unchanged row
   still locks it, which dirties its page and writes a WAL record).
2. **With ~``--changes`` changed runs**: the simulator is ticked with churn
   settings (``api.tick()``, 2 new runs and 2 in-flight runs moving on per
   tick) until at least ``--changes`` runs differ from before (the exact
   number, new vs. status changes, is printed); then one cycle per stream.
   Target: <= 4 requests per stream plus the in-flight pages; printed as
   head + status-filtered + worker-filtered requests per stream.  The naive
   side gets its own, fresh ~``--changes`` changes before its full scan.
3. **Freshness**: the real ``syncd.daemon.Daemon`` (both streams, poll
   interval ``--interval`` s) runs for ``--seconds`` while a task ticks the
   simulator every ``--tick`` s (1 new run, 2 in-flight runs moving on).
   After each tick the changed runs are found by diffing the simulator's
   truth before/after the tick (only the head slice of ``truth()`` that can
   change - the live region - is diffed, which is exact and cheap), stamped
   with ``time.monotonic()``; a poller reads ``runs`` every 0.1 s and notes
   when each (run, status) lands (the stored status is that one or later in
   the lifecycle).  New runs count as changes (their first status).  Printed:
   p50 / p95 / max of (db time - change time), target p95 <= interval + 2 s;
   a change that never lands counts as infinite.  The naive daemon (every
   cycle a full scan: ``NaiveSync`` forces ``full=True``) runs the same test
   on a ``--naive-runs`` history (default 10,000: on the full history one
   naive cycle takes most of the window); its projected latency on the full
   history (one full scan + interval) is printed too.
4. **Rate budget**: the same daemon against a simulator with the
   ``ratelimit`` scenario (token bucket 10 requests/s, burst 10) and a
   ``--runs`` history still to back-fill, so there is always work.  Measured
   from the simulator's request log over the window: accepted requests/s / 10
   = share of the budget used (the bucket's initial burst of 10 lets it go a
   little over 100 %); share of requests answered 429 / 13000 / 4290 (target
   < 2 %); requests that arrived while an announced Retry-After was still
   running (``early``, target 0; each is shown with its delay after the 429
   that announced it, since a request already on the wire then could not have
   known).  Run twice: with syncd's shipped rate settings (``Settings``
   defaults: no ceiling and start 10/s at the time of writing;
   ``--rl-shipped-seconds``, default 10) and with the ceiling above the quota
   (``--rl-max-rps`` 20, start ``--rl-initial-rps`` 10; ``--rl-seconds``,
   default 20), so that the limiter has to find the quota.  That run pays a
   429 or two in its first seconds whatever the window (the burst hides the
   quota at first), so a short window overstates its 429 share; over 30-60 s
   windows it was about 1 %.  The naive column is "same": a backfill is
   already a full scan.
5. **Exactness**: after the simulator stops changing and one more cycle per
   stream has run, is ``runs`` equal to ``truth()`` (compared like
   ``tests/support/truth.py``: ``expected_rows`` / ``stored_rows``; the number
   of missing, unexpected and differing fields is printed)?  For "churn": the
   databases of figure 3 (syncd, and the naive daemon).  For "ratelimit": a
   ``--rl-exact-runs`` history synced by the daemon under the ratelimit +
   churn scenarios (limiter as in 4's second run) while it is ticked for
   ``--rl-exact-seconds`` - and on, up to 3x that, until each stream has
   finished its backfill and one incremental cycle, so that the "one more
   cycle" is an ordinary incremental one, not the tail of a backfill.

The final table is ``figure | target | syncd | naive``; a missed target is
marked ``MISS`` in the syncd column.  The default run takes 2.5-3.5 minutes on
a 2-core machine (most of it: the back-fill and the two naive full scans of
the 100k history, 15-35 s each depending on the storage code).  Every loop is
bounded in time and count; every server and task started here is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.client import CoreClawClient
from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.database import create_engine
from syncd.errors import SyncdError
from syncd.fakeapi import FakeApi, FakeApiConfig, RequestRecord
from syncd.logs import configure_logging
from syncd.models import STATUS_RANK, Source, Status
from syncd.storage import Store
from syncd.sync import CycleReport, StreamSync
from tests.support.postgres import EmbeddedPostgres, migrated_database
from tests.support.settings import UNLIMITED_RATE, settings_for
from tests.support.simulator import accepted, rate_limited, serve
from tests.support.tables import table
from tests.support.truth import compare, expected_rows, stored_rows

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
STREAMS = [Source.V1, Source.V2]
LIST_PATHS = ("/api/v1/run/list", "/api/v2/worker-runs")  # the limiter's lanes
RATE_QUOTA = 10.0  # the simulator's token bucket in figure 4
WAL_POS_SQL = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
WRITTEN_TABLES = ("runs", "run_status_history", "workers", "sync_rejects")
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- syncers


class RecordingSync(StreamSync):
    """A StreamSync that keeps every cycle's report (and can be told to always scan fully)."""

    def __init__(self, *args: Any, force_full: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.force_full = force_full
        self.reports: list[tuple[float, float, CycleReport]] = []
        self.errors: list[str] = []

    async def run_cycle(
        self, *, full: bool = False, stop: asyncio.Event | None = None
    ) -> CycleReport:
        started = time.monotonic()
        try:
            report = await super().run_cycle(full=full or self.force_full, stop=stop)
        except SyncdError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            raise
        self.reports.append((started, time.monotonic(), report))
        return report


def NaiveSync(*args: Any, **kwargs: Any) -> RecordingSync:
    """Every cycle a full scan: `run_cycle(full=True)`."""
    return RecordingSync(*args, force_full=True, **kwargs)


# --------------------------------------------------------------------------- plumbing


def make_settings(url: str, db_url: str, interval: float, **overrides: Any) -> Settings:
    values = {"poll_interval_v1_s": interval, "poll_interval_v2_s": interval, **UNLIMITED_RATE}
    return settings_for(url, db_url, KEY, **{**values, **overrides})


@contextlib.asynccontextmanager
async def database(pg: EmbeddedPostgres, name: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = await migrated_database(pg.admin_url, name)
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        await engine.dispose()


def stream_of(rec: RequestRecord) -> str:
    if rec.path.endswith("/run/list"):
        return "v1"
    if rec.path.endswith("/worker-runs"):
        return "v2"
    return "other"


def kind_of(rec: RequestRecord, page_size: int = 100) -> str:
    """head (unfiltered list), status / worker (filtered: in-flight refresh), probe (v2 offset)."""
    p = rec.params
    if stream_of(rec) == "v2":
        if p.get("status"):
            return "status"
        if p.get("worker_id"):
            return "worker"
        return "head" if p.get("limit") == str(page_size) else "probe"
    if p.get("scraper_slug"):
        return "worker"
    if p.get("status") not in (None, 0):
        return "status"
    return "head"


@dataclass
class Counts:
    by: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def of(cls, recs: Iterable[RequestRecord]) -> Counts:
        c = cls()
        for r in recs:
            key = (stream_of(r), kind_of(r))
            c.by[key] = c.by.get(key, 0) + 1
        return c

    def stream(self, s: str, kinds: Iterable[str] | None = None) -> int:
        return sum(n for (st, k), n in self.by.items() if st == s and (kinds is None or k in kinds))


async def xid_now(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return int(await conn.scalar(text("SELECT pg_current_xact_id()::text::bigint")))


async def rows_written_since(engine: AsyncEngine, xid: int) -> dict[str, int]:
    """Rows inserted or updated by transactions after `xid` (fresh cluster: no wraparound)."""
    out = {}
    async with engine.connect() as conn:
        for table in WRITTEN_TABLES:
            out[table] = int(
                await conn.scalar(
                    text(f"SELECT count(*) FROM {table} WHERE xmin::text::bigint > :x"),
                    {"x": xid % (1 << 32)},
                )
            )
    return out


async def wal_pos(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(WAL_POS_SQL)))


async def storage_since(engine: AsyncEngine, xid: int, wal0: int) -> tuple[int, int]:
    """WAL bytes written since `wal0`, and `runs` rows that transactions after `xid` locked
    without rewriting them: INSERT ... ON CONFLICT DO UPDATE ... WHERE <false> still
    row-locks the row it skips (a lower bound: a row locked by two transactions at once
    carries a MultiXactId instead and is not counted)."""
    async with engine.connect() as conn:
        wal = int(await conn.scalar(text(WAL_POS_SQL))) - wal0
        locked = int(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM runs WHERE xmax::text::bigint > :x"
                    " AND xmin::text::bigint <= :x"
                ),
                {"x": xid % (1 << 32)},
            )
        )
    return wal, locked


async def cycle_both(syncers: list[RecordingSync], *, full: bool = False) -> list[CycleReport]:
    return list(await asyncio.gather(*(s.run_cycle(full=full) for s in syncers)))


def live_snapshot(api: FakeApi) -> dict[str, dict[str, Any]]:
    """The runs that can still change (the simulator's live region), newest first, by slug."""
    data = api.data
    return {r["slug"]: r for r in data.truth(0, data.total - data.static_count)}


def make_changes(
    api: FakeApi, n: int, *, new: int, finish: int, max_ticks: int = 500
) -> dict[str, int]:
    """Tick with churn settings until at least `n` runs differ from now; say what changed."""
    before = live_snapshot(api)
    api.config.churn_new_per_tick, api.config.churn_finish_per_tick = new, finish
    changed: set[str] = set()
    ticks = 0
    while ticks < max_ticks and len(changed) < n:
        api.tick()
        ticks += 1
        after = live_snapshot(api)
        changed = {s for s, r in after.items() if before.get(s) != r}
    added = sum(1 for s in changed if s not in before)
    return {"changed": len(changed), "new": added, "status": len(changed) - added, "ticks": ticks}


async def exactness(api: FakeApi, engine: AsyncEngine) -> dict[str, Any]:
    expected = expected_rows(api.truth())
    found = compare(expected, await stored_rows(engine))
    return {
        "equal": found.equal,
        "runs": len(expected),
        "missing": len(found.missing),
        "unexpected": len(found.unexpected),
        "rows_differing": len(found.fields),
        "fields_differing": sum(len(f) for f in found.fields.values()),
        "differences": found.count,
        "examples": found.lines[:5],
    }


def fmt_exact(e: dict[str, Any]) -> str:
    if e["equal"]:
        return f"yes (0 differences, {e['runs']} runs)"
    return (
        f"no ({e['differences']} differences: {e['missing']} missing, {e['unexpected']} "
        f"unexpected, {e['fields_differing']} fields in {e['rows_differing']} rows)"
    )


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; inf counts as a value (an unlanded change)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --------------------------------------------------------------------------- freshness


@dataclass
class Change:
    slug: str
    status: str
    at: float
    landed: float | None = None


class FreshnessProbe:
    """Ticks the simulator at a steady pace, records each change, and polls the database."""

    def __init__(self, api: FakeApi, engine: AsyncEngine, tick_s: float) -> None:
        self.api, self.engine, self.tick_s = api, engine, tick_s
        self.changes: list[Change] = []
        self.snapshot = live_snapshot(api)
        self.ticking = True
        self.polls = 0

    def tick(self) -> None:
        self.api.tick()
        at = time.monotonic()
        now = live_snapshot(self.api)
        for slug, rec in now.items():
            old = self.snapshot.get(slug)
            if old is None or old["status"] != rec["status"]:
                self.changes.append(Change(slug, rec["status"], at))
        self.snapshot = now

    async def ticker(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        for _ in range(int(seconds / self.tick_s) + 2):
            if time.monotonic() >= end:
                break
            await asyncio.sleep(self.tick_s)
            self.tick()
        self.ticking = False

    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.landed is None]

    async def poller(self, deadline: float, period: float = 0.1) -> None:
        """Poll until every change has landed after the ticker stopped, or the deadline."""
        for _ in range(int((deadline - time.monotonic()) / period) + 10):
            if time.monotonic() >= deadline or (not self.ticking and not self.pending()):
                return
            waiting = self.pending()
            if waiting:
                slugs = sorted({c.slug for c in waiting})
                async with self.engine.connect() as conn:
                    rows = await conn.execute(
                        text("SELECT slug, status FROM runs WHERE slug = ANY(:s)"), {"s": slugs}
                    )
                    stored: dict[str, str] = {r[0]: r[1] for r in rows.all()}
                seen_at = time.monotonic()
                self.polls += 1
                for c in waiting:
                    have = stored.get(c.slug)
                    if (
                        have is not None
                        and STATUS_RANK[Status(have)] >= STATUS_RANK[Status(c.status)]
                    ):
                        c.landed = seen_at
            await asyncio.sleep(period)

    def latencies(self) -> list[float]:
        return [(c.landed - c.at) if c.landed is not None else math.inf for c in self.changes]


async def run_daemon_with(
    syncers: list[RecordingSync],
    interval: float,
    body: Any,
) -> Any:
    """Run a Daemon over `syncers` while `body()` runs; stop it and wait for it afterwards."""
    daemon = Daemon(list[StreamSync](syncers), {s.stream: interval for s in syncers}, grace_s=8.0)
    task = asyncio.create_task(daemon.run())
    try:
        return await body()
    finally:
        daemon.stop.set()
        try:
            await asyncio.wait_for(task, timeout=30)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def freshness(
    api: FakeApi,
    engine: AsyncEngine,
    settings: Settings,
    *,
    naive: bool,
    seconds: float,
    tick_s: float,
    settle_s: float,
) -> dict[str, Any]:
    """Figure 3 on `api`/`engine`, then figure 5 (one more cycle per stream, compare)."""
    probe = FreshnessProbe(api, engine, tick_s)
    make = NaiveSync if naive else RecordingSync
    async with CoreClawClient(settings) as client:
        store = Store(engine)
        syncers = [make(s, client, store, settings) for s in STREAMS]
        req0 = len(api.requests)
        start = time.monotonic()

        async def body() -> None:
            deadline = start + seconds + settle_s
            await asyncio.gather(probe.ticker(seconds), probe.poller(deadline))

        await run_daemon_with(syncers, settings.poll_interval_v1_s, body)
        elapsed = time.monotonic() - start
        recs = api.requests[req0:]
        # figure 5: the simulator has stopped changing; one more cycle per stream
        last = await cycle_both(syncers)
        exact = await exactness(api, engine)
    lat = probe.latencies()
    cycles = {s.stream.value: len(s.reports) for s in syncers}
    durations = [r.duration_s for s in syncers for (_, _, r) in s.reports]
    return {
        "changes": len(lat),
        "unlanded": sum(1 for x in lat if math.isinf(x)),
        "p50": pct(lat, 0.50),
        "p95": pct(lat, 0.95),
        "max": max(lat) if lat else float("nan"),
        "cycles": cycles,
        "cycle_s_mean": statistics.fmean(durations) if durations else float("nan"),
        "cycle_s_max": max(durations) if durations else float("nan"),
        "errors": [e for s in syncers for e in s.errors],
        "requests_per_s": len(recs) / elapsed if elapsed else 0.0,
        "final_kinds": [r.kind.value for r in last],
        "exact": exact,
        "polls": probe.polls,
    }


# --------------------------------------------------------------------------- rate budget


def rate_figures(recs: list[RequestRecord], window_s: float) -> dict[str, Any]:
    api_recs = [r for r in recs if stream_of(r) != "other"]
    total = len(api_recs)
    n_accepted = sum(1 for r in api_recs if accepted(r))
    limited = [r for r in api_recs if rate_limited(r)]
    early = [r for r in api_recs if r.early]
    # For each early request: the time since the most recent Retry-After 429 before it.
    announced = [r.time for r in api_recs if rate_limited(r) and r.retry_after is not None]
    delays = []
    for r in early:
        prior = [t for t in announced if t < r.time]
        delays.append(r.time - max(prior) if prior else math.inf)
    return {
        "window_s": window_s,
        "requests": total,
        "accepted": n_accepted,
        "accepted_per_s": n_accepted / window_s if window_s else 0.0,
        "share": n_accepted / window_s / RATE_QUOTA if window_s else 0.0,
        "limited": len(limited),
        "limited_share": len(limited) / total if total else 0.0,
        "limited_with_retry_after": sum(1 for r in limited if r.retry_after is not None),
        "early": len(early),
        "early_delays_ms": [round(d * 1000, 1) for d in delays],
        "other_errors": total - n_accepted - len(limited),
    }


async def rate_budget(
    pg: EmbeddedPostgres, db_name: str, runs: int, seconds: float, **rate: Any
) -> dict[str, Any]:
    """Figure 4: the daemon back-filling a big history under a 10 req/s token bucket."""
    config = FakeApiConfig(
        runs=runs,
        api_key=KEY,
        scenarios=frozenset({"ratelimit"}),
        rate_limit_rps=RATE_QUOTA,
        rate_limit_burst=10,
        tick_s=0,
    )
    async with serve(config) as (api, url), database(pg, db_name) as (db_url, engine):
        settings = make_settings(url, db_url, 2.0, **rate)
        async with CoreClawClient(settings) as client:
            store = Store(engine)
            syncers = [RecordingSync(s, client, store, settings) for s in STREAMS]
            start = time.monotonic()
            window_end: list[float] = []

            async def body() -> None:
                # Work lasts as long as the backfill: stop measuring if both finished early.
                end = start + seconds
                while time.monotonic() < end:
                    if all(
                        any(r.kind.value == "backfill" and r.completed for _, _, r in s.reports)
                        for s in syncers
                    ):
                        break
                    await asyncio.sleep(0.2)
                window_end.append(time.monotonic())

            await run_daemon_with(syncers, 2.0, body)
            stop_t = window_end[0]
            recs = [r for r in api.requests if start <= r.time <= stop_t]
            out = rate_figures(recs, stop_t - start)
            after = [r for r in api.requests if r.time > stop_t]
            out["drain"] = rate_figures(after, 1.0) if after else None
            out["settings"] = {
                k: getattr(settings, k)
                for k in ("max_requests_per_s", "initial_requests_per_s", "max_concurrency")
            }
            out["final_rate"] = sum(client._limiter.lane(p).rate_per_s for p in LIST_PATHS)
            out["errors"] = [e for s in syncers for e in s.errors]
    return out


async def ratelimit_exactness(
    pg: EmbeddedPostgres, db_name: str, runs: int, seconds: float, tick_s: float, **rate: Any
) -> dict[str, Any]:
    """Figure 5 under the ratelimit (+ churn) scenario, on a smaller history."""
    config = FakeApiConfig(
        runs=runs,
        api_key=KEY,
        scenarios=frozenset({"ratelimit", "churn"}),
        rate_limit_rps=RATE_QUOTA,
        rate_limit_burst=10,
        tick_s=0,
    )
    async with serve(config) as (api, url), database(pg, db_name) as (db_url, engine):
        settings = make_settings(url, db_url, 2.0, **rate)
        async with CoreClawClient(settings) as client:
            store = Store(engine)
            syncers = [RecordingSync(s, client, store, settings) for s in STREAMS]
            ticks = 0

            async def body() -> None:
                # Tick for `seconds`, and on until each stream has finished its backfill and
                # one incremental cycle after it (capped at 3 x `seconds`): "one more cycle"
                # below must then be an ordinary incremental cycle, not the tail of a backfill.
                nonlocal ticks
                start = time.monotonic()
                for _ in range(int(3 * seconds / tick_s) + 2):
                    now = time.monotonic()
                    caught_up = all(
                        any(r.kind.value == "incremental" and r.completed for _, _, r in s.reports)
                        for s in syncers
                    )
                    if now >= start + 3 * seconds or (now >= start + seconds and caught_up):
                        break
                    await asyncio.sleep(tick_s)
                    api.tick()
                    ticks += 1

            await run_daemon_with(syncers, 2.0, body)
            kinds = {s.stream.value: [r.kind.value for _, _, r in s.reports] for s in syncers}
            last = await cycle_both(syncers)
            exact = await exactness(api, engine)
            recs = api.requests
    limited = sum(1 for r in recs if rate_limited(r))
    return {
        "exact": exact,
        "ticks": ticks,
        "kinds": kinds,
        "final_kinds": [r.kind.value for r in last],
        "final_completed": [r.completed for r in last],
        "requests": len(recs),
        "limited": limited,
        "early": sum(1 for r in recs if r.early),
        "errors": [e for s in syncers for e in s.errors],
    }


# --------------------------------------------------------------------------- main


@dataclass
class Row:
    figure: str
    target: str
    syncd: str
    naive: str


def drain_summary(d: dict[str, Any] | None) -> str:
    if d is None:
        return "no requests"
    return f"{d['requests']} requests, {d['limited']} limited, {d['early']} early"


def f2(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def git_state() -> str:
    """The commit measured, and whether the work tree differs from it."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "syncd").splitlines() if line]
    return git("rev-parse", "--short", "HEAD").strip() + (
        f" + uncommitted {dirty}" if dirty else ""
    )


async def main(args: argparse.Namespace) -> int:
    for name in [k for k in os.environ if k.startswith("SYNCD_")]:
        os.environ.pop(name)  # the bench sets what it needs; nothing leaks in from outside
    configure_logging(fmt="console", level=args.log_level)
    rows: list[Row] = []
    say(f"syncd at {git_state()}")
    say(f"runs={args.runs} changes={args.changes} interval={args.interval}s seconds={args.seconds}")
    failed = False
    pg = await asyncio.to_thread(EmbeddedPostgres, "syncd-bench-")
    try:
        say(f"embedded PostgreSQL up in {pg.root}")
        await main_history(pg, args, rows)
        await naive_freshness(pg, args, rows)
        await rate_section(pg, args, rows)
    except Exception as exc:  # report what was measured, then the failure
        failed = True
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
    finally:
        await asyncio.to_thread(pg.close)
    print_table(rows)
    say("failed part-way: the table is incomplete" if failed else "done")
    return 1 if failed else 0


async def main_history(pg: EmbeddedPostgres, args: argparse.Namespace, rows: list[Row]) -> None:
    """The setup and figures 1, 2, 3 and 5 (churn) for syncd, on one `--runs` history."""
    config = FakeApiConfig(
        runs=args.runs, api_key=KEY, scenarios=frozenset({"churn"}), tick_s=0, in_flight=10
    )
    async with serve(config) as (api, url), database(pg, "bench_main") as (db_url, engine):
        settings = make_settings(url, db_url, args.interval)
        async with CoreClawClient(settings) as client:
            store = Store(engine)
            syncers = [RecordingSync(s, client, store, settings) for s in STREAMS]
            await setup_backfill(api, syncers, args, rows)
            args._full_scan_s = await steady_state(api, engine, syncers, args, rows)
            await with_changes(api, engine, syncers, args, rows)
        await churn_freshness(api, engine, url, db_url, args)


async def setup_backfill(
    api: FakeApi, syncers: list[RecordingSync], args: argparse.Namespace, rows: list[Row]
) -> None:
    t = time.monotonic()
    req0 = len(api.requests)
    reports = await cycle_both(syncers)
    backfill_s = time.monotonic() - t
    n_req = len(api.requests) - req0
    say(
        f"backfill of {args.runs} runs, both streams concurrently: {backfill_s:.1f}s, "
        f"{n_req} requests, kinds {[r.kind.value for r in reports]}, "
        f"completed {[r.completed for r in reports]}"
    )
    rows.append(
        Row(
            "setup: backfill both streams (s, not a target)",
            "-",
            f"{backfill_s:.1f} s / {n_req} req",
            "-",
        )
    )


async def steady_state(
    api: FakeApi,
    engine: AsyncEngine,
    syncers: list[RecordingSync],
    args: argparse.Namespace,
    rows: list[Row],
) -> float:
    """Figure 1; returns the naive full scan's wall time per stream cycle."""
    xid = await xid_now(engine)
    wal0 = await wal_pos(engine)
    per_cycle: list[Counts] = []
    durations: list[float] = []
    reported_changed = 0
    kinds: set[str] = set()
    for _ in range(args.cycles):
        before = len(api.requests)
        reps = await cycle_both(syncers)
        per_cycle.append(Counts.of(api.requests[before:]))
        durations += [r.duration_s for r in reps]
        reported_changed += sum(r.result.changed for r in reps)
        kinds |= {r.kind.value for r in reps}
    written = await rows_written_since(engine, xid)
    inc_wal, inc_locked = await storage_since(engine, xid, wal0)
    req_per = [c.stream(s) for c in per_cycle for s in ("v1", "v2")]
    inc_req = statistics.fmean(req_per)
    inc_s = statistics.fmean(durations)
    inc_written = sum(written.values())
    say(
        f"1. incremental x{args.cycles} (kinds {sorted(kinds)}): requests/stream/cycle "
        f"mean {inc_req:.2f} max {max(req_per)}; wall/stream-cycle {inc_s * 1000:.0f} ms; "
        f"rows written {written} (syncd's own count {reported_changed}); "
        f"WAL {inc_wal / args.cycles / 1024:.1f} KiB/cycle, runs rows locked, not "
        f"rewritten {inc_locked}"
    )

    xid = await xid_now(engine)
    wal0 = await wal_pos(engine)
    before = len(api.requests)
    t = time.monotonic()
    reps = await cycle_both(syncers, full=True)
    naive_wall = time.monotonic() - t
    c = Counts.of(api.requests[before:])
    naive_req = statistics.fmean([c.stream("v1"), c.stream("v2")])
    naive_s = statistics.fmean([r.duration_s for r in reps])
    naive_written = await rows_written_since(engine, xid)
    naive_wal, naive_locked = await storage_since(engine, xid, wal0)
    say(
        f"1. naive full scan (kinds {[r.kind.value for r in reps]}): requests/stream "
        f"v1={c.stream('v1')} v2={c.stream('v2')}; wall/stream-cycle {naive_s:.2f}s "
        f"(both together {naive_wall:.2f}s); rows written {naive_written}; WAL "
        f"{naive_wal / 1024:.0f} KiB/cycle, runs rows locked, not rewritten "
        f"{naive_locked}"
    )
    rows += [
        Row(
            "1. no changes: requests/stream/cycle",
            "<= 2",
            f"{inc_req:.2f} (max {max(req_per)})" + verdict(max(req_per) <= 2),
            f"{naive_req:.0f}",
        ),
        Row(
            "1. no changes: wall time/stream cycle",
            "-",
            f"{inc_s * 1000:.0f} ms",
            f"{naive_s * 1000:.0f} ms",
        ),
        Row(
            "1. no changes: rows written",
            "0",
            f"{inc_written}" + verdict(inc_written == 0),
            f"{sum(naive_written.values())}",
        ),
        Row(
            "1. no changes: WAL per cycle (both streams)",
            "-",
            f"{inc_wal / args.cycles / 1024:.1f} KiB",
            f"{naive_wal / 1024:.0f} KiB",
        ),
        Row(
            "1. no changes: runs rows locked (not rewritten)",
            "-",
            f"{inc_locked} (after {args.cycles} cycles)",
            f"{naive_locked}",
        ),
    ]
    return naive_s


async def with_changes(
    api: FakeApi,
    engine: AsyncEngine,
    syncers: list[RecordingSync],
    args: argparse.Namespace,
    rows: list[Row],
) -> None:
    """Figure 2."""
    ch = make_changes(api, args.changes, new=2, finish=2)
    xid = await xid_now(engine)
    before = len(api.requests)
    reps = await cycle_both(syncers)
    c = Counts.of(api.requests[before:])
    written = await rows_written_since(engine, xid)
    per_stream = {
        s: (
            c.stream(s, ["head", "probe"]),
            c.stream(s, ["status"]),
            c.stream(s, ["worker"]),
        )
        for s in ("v1", "v2")
    }
    ok2 = all(h <= 4 for h, _, _ in per_stream.values())
    say(
        f"2. {ch['changed']} runs changed ({ch['new']} new, {ch['status']} status, "
        f"{ch['ticks']} ticks); incremental: requests per stream (head, status-filter, "
        f"worker-filter) {per_stream}; rows written {written}; "
        f"changed per syncd {[r.result.changed for r in reps]}"
    )
    ch2 = make_changes(api, args.changes, new=2, finish=2)
    xid = await xid_now(engine)
    before = len(api.requests)
    reps = await cycle_both(syncers, full=True)
    cn = Counts.of(api.requests[before:])
    naive_w2 = await rows_written_since(engine, xid)
    naive_s2 = statistics.fmean([r.duration_s for r in reps])
    say(
        f"2. naive after {ch2['changed']} more changes: requests v1={cn.stream('v1')} "
        f"v2={cn.stream('v2')}; wall/stream-cycle {naive_s2:.2f}s; rows written {naive_w2}"
    )

    def cell(s: str) -> str:
        h, st, w = per_stream[s]
        return f"{s}: {h}+{st}+{w}"

    rows += [
        Row(
            f"2. {ch['changed']} changed: requests/stream (head+status+worker)",
            "<= 4 + in-flight",
            f"{cell('v1')}, {cell('v2')}" + verdict(ok2),
            f"v1: {cn.stream('v1')}, v2: {cn.stream('v2')}",
        ),
        Row(
            "2. changed: rows written (runs/history/workers)",
            "~changes",
            f"{written['runs']}/{written['run_status_history']}/{written['workers']}",
            f"{naive_w2['runs']}/{naive_w2['run_status_history']}/{naive_w2['workers']}",
        ),
    ]


async def churn_freshness(
    api: FakeApi, engine: AsyncEngine, url: str, db_url: str, args: argparse.Namespace
) -> None:
    """Figures 3 and 5 (churn) for syncd; printed in the table by `naive_freshness`."""
    settings = make_settings(url, db_url, args.interval)
    api.config.churn_new_per_tick, api.config.churn_finish_per_tick = 1, 2
    say(
        f"3. freshness: daemon (interval {args.interval}s) for {args.seconds}s, "
        f"tick every {args.tick}s"
    )
    fr = await freshness(
        api,
        engine,
        settings,
        naive=False,
        seconds=args.seconds,
        tick_s=args.tick,
        settle_s=args.interval * 2 + 5,
    )
    say(
        f"3. syncd: {fr['changes']} changes, unlanded {fr['unlanded']}, p50 {f2(fr['p50'])}s "
        f"p95 {f2(fr['p95'])}s max {f2(fr['max'])}s; cycles {fr['cycles']}, cycle mean "
        f"{fr['cycle_s_mean']:.2f}s max {fr['cycle_s_max']:.2f}s; errors {fr['errors'][:3]}"
    )
    say(
        f"5. churn, syncd: final cycles {fr['final_kinds']}; "
        f"db == truth: {fmt_exact(fr['exact'])}"
        + (f" e.g. {fr['exact']['examples']}" if not fr["exact"]["equal"] else "")
    )
    args._fresh = fr


async def naive_freshness(pg: EmbeddedPostgres, args: argparse.Namespace, rows: list[Row]) -> None:
    fr = args._fresh
    target = args.interval + 2
    runs = min(args.naive_runs, args.runs)
    config = FakeApiConfig(
        runs=runs, api_key=KEY, scenarios=frozenset({"churn"}), tick_s=0, in_flight=10
    )
    async with serve(config) as (api, url), database(pg, "bench_naive") as (db_url, engine):
        settings = make_settings(url, db_url, args.interval)
        async with CoreClawClient(settings) as client:
            syncers = [RecordingSync(s, client, Store(engine), settings) for s in STREAMS]
            t = time.monotonic()
            await cycle_both(syncers)
            say(
                f"3. naive: backfilled a {runs}-run history in {time.monotonic() - t:.1f}s "
                "(not timed as a target)"
            )
        api.config.churn_new_per_tick, api.config.churn_finish_per_tick = 1, 2
        nf = await freshness(
            api,
            engine,
            settings,
            naive=True,
            seconds=args.seconds,
            tick_s=args.tick,
            settle_s=args.interval * 2 + 10,
        )
    projected = args._full_scan_s + args.interval
    say(
        f"3. naive ({runs} runs): {nf['changes']} changes, unlanded {nf['unlanded']}, p50 "
        f"{f2(nf['p50'])}s p95 {f2(nf['p95'])}s max {f2(nf['max'])}s; cycles {nf['cycles']}, "
        f"cycle mean {nf['cycle_s_mean']:.2f}s; projected on {args.runs} runs: about "
        f"{projected:.1f}s (one full scan {args._full_scan_s:.1f}s + interval)"
    )
    say(f"5. churn, naive: db == truth: {fmt_exact(nf['exact'])}")
    rows += [
        Row(
            "3. freshness p50 / p95 / max (s)",
            f"p95 <= {target:g}",
            f"{f2(fr['p50'])} / {f2(fr['p95'])} / {f2(fr['max'])}" + verdict(fr["p95"] <= target),
            f"{f2(nf['p50'])} / {f2(nf['p95'])} / {f2(nf['max'])} ({runs} runs)",
        ),
        Row(
            "3. freshness: changes measured (unlanded)",
            "-",
            f"{fr['changes']} ({fr['unlanded']})",
            f"{nf['changes']} ({nf['unlanded']})",
        ),
        Row(
            "3. naive p95 projected on full history (s)",
            "-",
            "-",
            f"~{projected:.1f} ({args.runs} runs)",
        ),
        Row(
            "5. churn: db == truth after one more cycle",
            "yes",
            fmt_exact(fr["exact"]) + verdict(fr["exact"]["equal"]),
            fmt_exact(nf["exact"]),
        ),
    ]


async def rate_section(pg: EmbeddedPostgres, args: argparse.Namespace, rows: list[Row]) -> None:
    above = {"max_requests_per_s": args.rl_max_rps, "initial_requests_per_s": args.rl_initial_rps}
    defaults = Settings.model_fields
    shipped = {k: defaults[k].default for k in ("max_requests_per_s", "initial_requests_per_s")}
    results = []
    ceiling = shipped["max_requests_per_s"]
    shipped_label = "shipped, " + (f"ceiling {ceiling:g}/s" if ceiling else "no ceiling")
    for label, rate in ((shipped_label, shipped), (f"ceiling {args.rl_max_rps:g}/s", above)):
        name = "bench_rl_" + ("a" if rate is shipped else "b")
        window = args.rl_shipped_seconds if rate is shipped else args.rl_seconds
        say(
            f"4. rate budget ({label}, start {rate['initial_requests_per_s']:g}/s): daemon "
            f"back-filling {args.runs} runs for {window:g}s at {RATE_QUOTA:g} req/s quota"
        )
        rb = await rate_budget(pg, name, args.runs, window, **rate)
        results.append((label, rb))
        say(
            f"4. {label}: window {rb['window_s']:.1f}s, {rb['requests']} requests, "
            f"{rb['accepted']} accepted = {rb['accepted_per_s']:.2f}/s = {rb['share']:.0%} of "
            f"budget; limited {rb['limited']} ({rb['limited_share']:.1%}, "
            f"{rb['limited_with_retry_after']} with Retry-After); early {rb['early']} "
            f"(ms after the announcing 429: {rb['early_delays_ms'][:10]}); other errors "
            f"{rb['other_errors']}; limiter rate at the end {rb['final_rate']:.2f}/s; "
            f"after the window (drain): {drain_summary(rb['drain'])}"
        )
    for label, rb in results:
        rows += [
            Row(
                f"4. [{label}] budget used (accepted/s / 10)",
                "-",
                f"{rb['share']:.0%} ({rb['accepted_per_s']:.2f}/s)",
                "same (backfill = full scan)",
            ),
            Row(
                f"4. [{label}] answered 429/13000/4290",
                "< 2 %",
                f"{rb['limited_share']:.1%} ({rb['limited']}/{rb['requests']})"
                + verdict(rb["limited_share"] < 0.02),
                "same",
            ),
            Row(
                f"4. [{label}] early (before Retry-After)",
                "0",
                f"{rb['early']}" + verdict(rb["early"] == 0),
                "same",
            ),
        ]
    say(
        f"5. ratelimit: daemon on a {args.rl_exact_runs}-run history, ratelimit + churn, "
        f"for {args.rl_exact_seconds}s"
    )
    rx = await ratelimit_exactness(
        pg,
        "bench_rlx",
        args.rl_exact_runs,
        args.rl_exact_seconds,
        args.tick,
        max_requests_per_s=args.rl_max_rps,
        initial_requests_per_s=args.rl_initial_rps,
    )
    say(
        f"5. ratelimit: {rx['ticks']} ticks, cycle kinds {rx['kinds']}, final {rx['final_kinds']} "
        f"completed {rx['final_completed']}; {rx['requests']} requests, {rx['limited']} limited, "
        f"{rx['early']} early; errors {rx['errors'][:3]}; db == truth: {fmt_exact(rx['exact'])}"
        + (f" e.g. {rx['exact']['examples']}" if not rx["exact"]["equal"] else "")
    )
    rows.append(
        Row(
            "5. ratelimit: db == truth after one more cycle",
            "yes",
            fmt_exact(rx["exact"]) + verdict(rx["exact"]["equal"]),
            "-",
        )
    )


def print_table(rows: list[Row]) -> None:
    head = ("figure", "target", "syncd", "naive")
    print()
    print(table(head, [(r.figure, r.target, r.syncd, r.naive) for r in rows], markdown=True))
    print(flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100_000, help="history size (default 100000)")
    p.add_argument("--changes", type=int, default=50, help="changed runs in figure 2")
    p.add_argument("--interval", type=float, default=2.0, help="daemon poll interval, s")
    p.add_argument("--seconds", type=float, default=20.0, help="freshness window, s")
    p.add_argument("--tick", type=float, default=0.5, help="simulator tick period, s")
    p.add_argument("--cycles", type=int, default=5, help="steady-state cycles to average")
    p.add_argument("--naive-runs", type=int, default=10_000, help="history for naive freshness")
    p.add_argument("--rl-seconds", type=float, default=20.0, help="rate-budget window, s")
    p.add_argument(
        "--rl-shipped-seconds", type=float, default=10.0, help="... with the shipped settings"
    )
    p.add_argument("--rl-max-rps", type=float, default=20.0, help="ceiling above the quota")
    p.add_argument("--rl-initial-rps", type=float, default=10.0, help="start rate then")
    p.add_argument("--rl-exact-runs", type=int, default=3000, help="ratelimit exactness history")
    p.add_argument("--rl-exact-seconds", type=float, default=10.0)
    p.add_argument("--log-level", default="ERROR", help="syncd's log level (stderr)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
