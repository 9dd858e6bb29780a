"""Fault-injection report: every fault syncd claims to survive, injected for real, and what it cost.

Command (from the repository root, venv active)::

    python -m bench.faults

Nothing else is needed: the script starts its own embedded PostgreSQL in a
fresh temporary directory (deleted at the end, also on Ctrl-C) with
one new, migrated database per scenario, and the CoreClaw simulator
(``syncd.fakeapi``) on 127.0.0.1, served by its own event loop in a thread of this
process (so syncd's work in the main loop cannot delay its answers past the short client
timeout used below; its request log and truth are read directly).  Progress goes to stderr;
the report (a table, then notes) is PRINTED on stdout.  Nothing is asserted:
a scenario syncd fails shows up as ``recovered = no`` or ``records lost > 0``.
A typical run takes well under three minutes; every wait is bounded in time
and count, and every process, server and task started here is stopped.

Columns
-------
``fault``            what was injected.
``injected``         how many times (requests that met the fault, bad items served, ...).
``recovered``        ``yes`` when the sync completed (in-process), or the process came back
                     (a restart) and finished; ``no`` otherwise, with the reason in the notes.
``records lost``     differences between the ``runs`` table and the simulator's truth after
                     the scenario, compared by ``tests/support/truth.py`` (``differences``),
                     not capped: runs missing + rows not in the truth +
                     rows with any differing field.  Must be 0.
``time to recover``  request-level faults and rate limits: median / max time from a
                     faulted request to the next successful answer for the *same page* (same
                     path and params): HTTP 200, code 0, and either no fault or a fault syncd
                     rightly takes as data (``count_drift``, ``duplicates``).  Times are
                     arrival times from the simulator's request log (a local answer leaves
                     within milliseconds of its arrival).  A faulted answer syncd used as is,
                     and never asked for again, is counted apart ("k used as is" - expected
                     for ``count_drift`` and ``duplicates``, whose items are all there).
                     Outages (database, kill, SIGTERM): from the fault to the completed sync
                     / the exit.

Rows (the configurations are the constants below)
--------------------------------------------------
1. One per ``FAULT_KINDS`` entry, all from one sync of both streams (concurrently, as the
   daemon does) against ``scenarios={"faults"}``: 5,000 runs, fault_rate 0.2, slow_s 1.0,
   page size 20 (so each kind is met some 10 to 50 times), client ``http_timeout_s`` 0.4
   (below slow_s), max_backoff_s 0.5, max_retries 12.  "records lost" is that one sync's
   and so the same on each of the ten rows.
2. ``ratelimit``: ``scenarios={"ratelimit"}``, 1,500 runs, page 50, with a quota that
   does not hold still (no quota is documented, and other users of the key spend it): the
   token bucket (burst 2) refills at 8 requests/s and 2 requests/s by turns, 2 s each, and
   the client is allowed more (starts at 20/s, ceiling 30/s), so its limiter must keep
   finding the quota.  (With a steady 10/s quota syncd's limiter meets only 2-3 rate limits
   in a whole backfill, too few to see every kind of answer.)  Injected = rate-limited
   answers (429 with / without Retry-After in seconds or as a date, HTTP 200 with 13000 /
   4290; the breakdown is in the notes), plus the ``early`` count: requests that arrived
   while an announced Retry-After was still running (must be 0).
3. ``badrecords``: one bad item after every 25 good runs.  Injected = bad items served.
   Recovered = every unreadable item (no slug, unknown status, ``usage "n/a"``, negative
   timestamps) is in ``sync_rejects`` with its raw payload from both streams, and the ones
   with a slug are in ``runs`` too; the readable ones (string timestamps, a huge err_msg,
   extra fields) are stored in ``runs`` as documented.  Records lost counts good runs only.
4. ``postgres restart``: PostgreSQL stopped (``pg_ctl stop -m fast``) mid-backfill for
   ~2 s and started again, under an in-process sync with ``Store(retry_s=30)``.
5. ``kill -9 sync --once``: ``python -m syncd sync --once`` SIGKILLed mid-backfill, then
   run again.  Also printed: pages the restart fetched, how many of those the killed run
   had already fetched, and the pages of a full pass (it must resume, not start over).
6. ``SIGTERM run``: ``python -m syncd run`` sent SIGTERM mid-backfill.  Recovered = exit 0
   within 10 s and ``sync_state.checkpoint`` matching what is stored: the runs table holds
   exactly the listing's first ``next_page * page_size`` runs (the union over the two
   streams) - a batch without its checkpoint or a checkpoint without its batch would show.
   Then ``sync --once`` resumes; records lost is counted after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.config import Settings
from syncd.database import create_engine
from syncd.fakeapi import FAULT_KINDS, FakeApiConfig, RequestRecord
from syncd.storage import Store
from tests.support.cycles import sync_streams_errors
from tests.support.postgres import EmbeddedPostgres, migrated_database
from tests.support.processes import SyncdProcess, user_env
from tests.support.settings import FAULT_TOLERANT, settings_for
from tests.support.simulator import ThreadedSimulator, rate_limited
from tests.support.tables import table
from tests.support.truth import differences

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

KEY = "bench-faults-key-0123456789"
LIST_PATHS = ("/api/v1/run/list", "/api/v2/worker-runs")
USED_AS_IS = ("count_drift", "duplicates")  # HTTP 200 code 0, every item there: data

# 1. hostile upstream
FAULT_RUNS, FAULT_RATE, FAULT_SLOW_S, FAULT_TIMEOUT_S, FAULT_PAGE = 5000, 0.2, 1.0, 0.4, 20
# 2. rate limits
RL_RUNS, RL_PAGE, RL_BURST, RL_CLIENT_START, RL_CLIENT_MAX = 1500, 50, 2, 20.0, 30.0
RL_QUOTAS, RL_QUOTA_PERIOD_S = (8.0, 2.0), 2.0  # upstream's quota alternates every 2 s
# 3. bad records
BAD_RUNS, BAD_EVERY, BAD_PAGE = 2000, 25, 50
UNREADABLE = ("missing_slug", "unknown_status", "usage_na", "negative_timestamps")
# 4. database restart
PG_RUNS, PG_PAGE, PG_OUTAGE_S = 3000, 20, 2.0
# 5./6. processes
PROC_RUNS, PROC_PAGE, PROC_RPS = 5000, 50, 25
SIGTERM_DEADLINE_S = 10.0

SCENARIO_BUDGET_S = {
    "faults": 90,
    "ratelimit": 60,
    "badrecords": 40,
    "pg": 60,
    "kill": 75,
    "sigterm": 75,
}

# -- output ---------------------------------------------------------------------

EVENTS: list[dict[str, Any]] = []  # syncd's in-process log events, captured, never printed
INTERRUPTED = threading.Event()  # Ctrl-C / SIGTERM: stop the scenario under way, then clean up


def _collect(logger: Any, method: str, event_dict: Any) -> Any:
    if len(EVENTS) < 200_000:
        EVENTS.append(dict(event_dict))
    raise structlog.DropEvent


def progress(message: str) -> None:
    print(f"[faults] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    fault: str
    injected: str
    recovered: str
    lost: str
    ttr: str
    notes: list[str] = field(default_factory=list)


def print_table(rows: list[Row]) -> None:
    head = ("fault", "injected", "recovered", "records lost", "time to recover")
    print(table(head, [(r.fault, r.injected, r.recovered, r.lost, r.ttr) for r in rows]))
    notes = [(r.fault, note) for r in rows for note in r.notes]
    if notes:
        print()
        print("notes")
        for fault, note in notes:
            print(f"  {fault}: {note}")


# -- measuring ---------------------------------------------------------------------


def page_key(rec: RequestRecord) -> tuple[str, str]:
    return rec.path, json.dumps(rec.params, sort_keys=True, default=str)


def clean(rec: RequestRecord) -> bool:
    """An answer with the page's data, untouched."""
    return rec.status == 200 and rec.code == 0 and rec.fault is None


def answered(rec: RequestRecord) -> bool:
    """An answer syncd takes as the page: data, possibly with a drifting count or duplicates
    (a short page is asked for again when `count` says more follow)."""
    return rec.status == 200 and rec.code == 0 and rec.fault in (None, *USED_AS_IS)


def recovery(
    requests: list[RequestRecord], faulted: Callable[[RequestRecord], bool]
) -> tuple[list[float], list[RequestRecord]]:
    """For each faulted request, seconds to the next answer with data for the same page;
    plus the faulted requests no answer for that page ever followed."""
    later: dict[tuple[str, str], list[RequestRecord]] = {}
    times: list[float] = []
    orphans: list[RequestRecord] = []
    for rec in reversed(requests):  # walk backwards: `later` holds what comes after
        key = page_key(rec)
        if faulted(rec):
            nxt = later.get(key)
            if nxt:
                times.append(nxt[-1].time - rec.time)
            else:
                orphans.append(rec)
        if answered(rec):
            later.setdefault(key, []).append(rec)
    return times, orphans


def _page_start(rec: RequestRecord, page_size: int) -> int:
    """Index of the first item a list request asks for (items-mode v2, v1 page_index)."""
    p = rec.params
    if "page_index" in p:
        return (int(p["page_index"]) - 1) * int(p.get("page_size", page_size))
    return int(p.get("offset", 0))


def _met(kind: str) -> Callable[[RequestRecord], bool]:
    return lambda rec: rec.fault == kind


def fmt_times(times: list[float], extra: str = "") -> str:
    if not times:
        return extra or "-"
    out = f"med {statistics.median(times):.2f}s / max {max(times):.2f}s"
    return f"{out} ({extra})" if extra else out


async def count_lost(
    engine: AsyncEngine, truth: list[dict[str, Any]], *, truth_only: bool = False
) -> tuple[int, list[str]]:
    """Runs of `runs` that differ from the truth (uncapped count, a few examples)."""
    found = await differences(engine, truth, truth_only=truth_only)
    return found.runs, found.lines[:5]


# -- infrastructure ----------------------------------------------------------------

ENGINES: list[AsyncEngine] = []  # the scenario's, disposed after it


async def new_database(pg: EmbeddedPostgres, label: str) -> tuple[str, AsyncEngine]:
    url = await migrated_database(pg.admin_url, f"f_{label}_{uuid.uuid4().hex[:6]}")
    ENGINES.append(create_engine(url))
    return url, ENGINES[-1]


async def dispose_engines() -> None:
    for engine in ENGINES:
        with contextlib.suppress(Exception):
            await engine.dispose()
    ENGINES.clear()


def sync_settings(api_url: str, db_url: str, **extra: Any) -> Settings:
    values = {**FAULT_TOLERANT, "http_timeout_s": 5.0, "max_backoff_s": 0.5, "db_retry_s": 30.0}
    return settings_for(api_url, db_url, KEY, **{**values, **extra})


def describe(errors: Iterable[BaseException]) -> str:
    return "; ".join(f"{type(e).__name__}: {e}"[:300] for e in errors)


def env_for(api_url: str, db_url: str, **values: str) -> dict[str, str]:
    return user_env(
        api_url, KEY, db_url, SYNCD_LOG_FORMAT="json",
        SYNCD_PAGE_SIZE_V1=str(PROC_PAGE), SYNCD_PAGE_SIZE_V2=str(PROC_PAGE),
        SYNCD_MAX_REQUESTS_PER_S=str(PROC_RPS), SYNCD_INITIAL_REQUESTS_PER_S=str(PROC_RPS),
        SYNCD_MAX_BACKOFF_S="2", SYNCD_DB_RETRY_S="20", **values,
    )  # fmt: skip


async def sync_states(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT * FROM sync_state"))
            return {r["stream"]: dict(r) for r in rows.mappings()}
    except Exception:
        return {}


def list_pages(requests: Iterable[RequestRecord], page_size: int) -> dict[str, set[int]]:
    """Distinct unfiltered list pages answered cleanly, per stream (probes left out)."""
    out: dict[str, set[int]] = {"v1": set(), "v2": set()}
    for rec in requests:
        if not clean(rec):
            continue
        p = rec.params
        if p.get("status") or p.get("scraper_slug") or p.get("worker_id"):
            continue
        if rec.path == LIST_PATHS[0] and p.get("page_size") == page_size:
            out["v1"].add(int(p["page_index"]) - 1)
        elif rec.path == LIST_PATHS[1] and p.get("limit") == str(page_size):
            out["v2"].add(int(p["offset"]) // page_size)
    return out


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, step_s: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / step_s) + 1):
        if INTERRUPTED.is_set():  # in case a library swallowed our cancellation
            raise asyncio.CancelledError
        if time.monotonic() >= deadline:
            break
        if await condition():
            return True
        await asyncio.sleep(step_s)
    return False


# -- 1. hostile upstream --------------------------------------------------------------


async def scenario_faults(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    db_url, engine = await new_database(pg, "faults")
    config = FakeApiConfig(runs=FAULT_RUNS, api_key=KEY, scenarios=frozenset({"faults"}),
                           fault_rate=FAULT_RATE, slow_s=FAULT_SLOW_S)  # fmt: skip
    api = await ThreadedSimulator.start(config)
    api_url = api.url
    settings = sync_settings(api_url, db_url, page_size_v1=FAULT_PAGE, page_size_v2=FAULT_PAGE,
                            http_timeout_s=FAULT_TIMEOUT_S)  # fmt: skip
    started = time.monotonic()
    try:
        errors = await sync_streams_errors(settings, Store(engine, retry_s=30))
    finally:
        await api.close()
    took = time.monotonic() - started
    lost, examples = await count_lost(engine, await api.truth())
    recovered = "yes" if not errors else "no"
    rows = []
    reqs = api.requests
    for kind in FAULT_KINDS:
        injected = sum(1 for r in reqs if r.fault == kind)
        times, orphans = recovery(reqs, _met(kind))
        extra = f"{len(orphans)} used as is" if kind in USED_AS_IS and orphans else ""
        row = Row(kind, str(injected), recovered, str(lost), fmt_times(times, extra))
        if orphans and kind not in USED_AS_IS:
            inside = [o for o in orphans if _page_start(o, FAULT_PAGE) < FAULT_RUNS]
            row.notes.append(
                f"{len(orphans)} faulted request(s) never followed by an answer for the same"
                f" page, {len(orphans) - len(inside)} of them past the end of the list (fetched"
                f" ahead, cancelled when the list ended)"
                + (f"; inside the list: {[page_key(o)[1] for o in inside[:4]]}" if inside else "")
            )
        if injected == 0:
            row.notes.append("never injected in this run (seeded draw): no evidence either way")
        rows.append(row)
    n_req = len(api.requests)
    n_faults = sum(1 for r in api.requests if r.fault)
    reasons: dict[str, int] = {}
    for event in EVENTS:
        if event.get("event") == "upstream_retry":
            reasons[str(event.get("reason"))] = reasons.get(str(event.get("reason")), 0) + 1
    rows[0].notes.append(
        f"one sync of both streams, {FAULT_RUNS} runs, page {FAULT_PAGE}: {n_req} requests,"
        f" {n_faults} faulted, {took:.1f}s; same sync for all {len(FAULT_KINDS)} rows; syncd's"
        f" retries by reason: {dict(sorted(reasons.items()))}"
    )
    refetched = sum(1 for e in EVENTS if e.get("event") == "short_page_refetched")
    rows[FAULT_KINDS.index("short_page")].notes.append(
        f"syncd logged short_page_refetched {refetched} time(s)"
    )
    in_order = sum(1 for e in EVENTS if e.get("event") == "page_refetched_in_order")
    rows[FAULT_KINDS.index("count_drift")].notes.append(
        f"syncd logged page_refetched_in_order {in_order} time(s): a page answered before its"
        " predecessor with a different `count` is fetched again (fullscan.py FullScan._in_order),"
        " which is what re-asks some count_drift pages"
    )
    if errors:
        rows[0].notes.append(f"sync failed: {describe(errors)}")
    if examples:
        rows[0].notes.append(f"differences ({lost}), e.g. {examples}")
    return rows


# -- 2. rate limits -------------------------------------------------------------------


def _ratelimit_notes(reqs: list[RequestRecord], kinds: dict[str, int], took: float) -> list[str]:
    """The breakdown, the slowest page's story, and where any early request came from."""
    notes = []
    limited = [r for r in reqs if rate_limited(r)]
    early = [r for r in reqs if r.early]
    accepted = sum(1 for r in reqs if clean(r))
    notes.append(
        f"{len(reqs)} requests, {accepted} answered with data, {len(limited)} rate-limited"
        f" ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}); quota"
        f" {'/'.join(f'{q:g}' for q in RL_QUOTAS)} per s by turns, burst {RL_BURST}; client"
        f" start {RL_CLIENT_START:g}/s, ceiling {RL_CLIENT_MAX:g}/s; {took:.1f}s"
    )
    if limited:
        slowest = max(
            limited,
            key=lambda r: next(
                (x.time - r.time for x in reqs if x.time > r.time and answered(x)
                 and page_key(x) == page_key(r)), 0.0),
        )  # fmt: skip
        chain = [
            f"+{x.time - slowest.time:.2f}s {x.status}/{x.code}"
            + (f" RA={x.retry_after}" if x.retry_after else "")
            for x in reqs
            if x.time >= slowest.time and page_key(x) == page_key(slowest)
        ]
        notes.append(f"slowest page {page_key(slowest)[1]}: {', '.join(chain[:8])}")
    if early:
        delays = []
        for rec in early:
            announced = [r for r in reqs if r.retry_after_s is not None and r.time <= rec.time]
            if announced:
                delays.append(rec.time - announced[-1].time)
        notes.append(
            f"early requests arrived {[round(d * 1000) for d in delays[:10]]} ms after the"
            " rate-limited answer that announced the wait (a request already on the wire when"
            " that answer left cannot have known)"
        )
    return notes


async def scenario_ratelimit(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    db_url, engine = await new_database(pg, "ratelimit")
    config = FakeApiConfig(runs=RL_RUNS, api_key=KEY, scenarios=frozenset({"ratelimit"}),
                           rate_limit_rps=RL_QUOTAS[0], rate_limit_burst=RL_BURST)  # fmt: skip
    api = await ThreadedSimulator.start(config)
    api_url = api.url

    async def shift_quota() -> None:
        for turn in range(1, 1000):  # bounded: the scenario's budget ends it long before
            await asyncio.sleep(RL_QUOTA_PERIOD_S)
            api.set_quota(RL_QUOTAS[turn % len(RL_QUOTAS)])

    shifter = asyncio.ensure_future(shift_quota())
    settings = sync_settings(api_url, db_url, page_size_v1=RL_PAGE, page_size_v2=RL_PAGE,
                            initial_requests_per_s=RL_CLIENT_START,
                            max_requests_per_s=RL_CLIENT_MAX, max_backoff_s=10.0,
                            retry_after_floor_s=0.5)  # fmt: skip
    started = time.monotonic()
    try:
        errors = await sync_streams_errors(settings, Store(engine, retry_s=30))
    finally:
        shifter.cancel()
        await asyncio.gather(shifter, return_exceptions=True)
        await api.close()
    took = time.monotonic() - started
    lost, examples = await count_lost(engine, await api.truth())
    reqs = api.requests
    limited = [r for r in reqs if rate_limited(r)]
    early = [r for r in reqs if r.early]
    kinds: dict[str, int] = {}
    for r in limited:
        after = "no Retry-After"
        if r.retry_after:
            after = "Retry-After s" if r.retry_after.strip().isdigit() else "Retry-After date"
        label = f"{r.status}+{r.code} {after}"
        kinds[label] = kinds.get(label, 0) + 1
    times, orphans = recovery(reqs, rate_limited)
    row = Row(
        "ratelimit (429/13000/4290)",
        f"{len(limited)} (early {len(early)})",
        "yes" if not errors else "no",
        str(lost),
        fmt_times(times),
    )
    row.notes += _ratelimit_notes(reqs, kinds, took)
    if orphans:
        row.notes.append(
            f"{len(orphans)} rate-limited request(s) never followed by data for that page"
        )
    if errors:
        row.notes.append(f"sync failed: {describe(errors)}")
    if examples:
        row.notes.append(f"differences ({lost}), e.g. {examples}")
    return [row]


# -- 3. bad records -------------------------------------------------------------------


def _bad_item_problems(
    item: dict[str, Any], raws: set[tuple[str, str]], stored: dict[str, Any]
) -> list[str]:
    """How one bad item served by the simulator was not kept as documented (empty: it was)."""
    kind, slug = item["kind"], item["slug"]
    problems = []
    if kind in UNREADABLE:
        for stream in ("v1", "v2"):
            if (stream, json.dumps(item[stream], sort_keys=True)) not in raws:
                problems.append(f"{kind} {slug} from {stream} not in sync_rejects")
    if kind == "missing_slug":
        return problems
    row = stored.get(slug)
    if row is None:
        problems.append(f"{kind} {slug} not in runs")
    elif kind == "unknown_status" and row.status != "unknown":
        problems.append(f"unknown_status {slug} stored as {row.status!r}")
    elif kind == "usage_na" and row.usage_usd is not None:
        problems.append(f"usage_na {slug} stored usage {row.usage_usd!r}")
    elif kind == "huge_err_msg" and row.err_msg != item["v2"]["err_msg"]:
        problems.append(f"huge_err_msg {slug} err_msg not stored whole")
    elif kind == "string_timestamps" and (
        row.started_at is None or int(row.started_at.timestamp()) != int(item["v2"]["started_at"])
    ):
        problems.append(f"string_timestamps {slug} started_at {row.started_at!r}")
    return problems


async def scenario_badrecords(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    db_url, engine = await new_database(pg, "badrecords")
    config = FakeApiConfig(runs=BAD_RUNS, api_key=KEY, scenarios=frozenset({"badrecords"}),
                           bad_every=BAD_EVERY)  # fmt: skip
    api = await ThreadedSimulator.start(config)
    api_url = api.url
    settings = sync_settings(api_url, db_url, page_size_v1=BAD_PAGE, page_size_v2=BAD_PAGE)
    try:
        errors = await sync_streams_errors(settings, Store(engine, retry_s=30))
        bad = await api.rejects()
    finally:
        await api.close()
    lost, examples = await count_lost(engine, await api.truth(), truth_only=True)
    async with engine.connect() as conn:
        rejects = (await conn.execute(text("SELECT stream, raw FROM sync_rejects"))).all()
        stored = {
            r.slug: r
            for r in await conn.execute(
                text("SELECT slug, status, usage_usd, err_msg, started_at FROM runs")
            )
        }
    raws = {(r.stream, json.dumps(r.raw, sort_keys=True)) for r in rejects}
    per_kind: dict[str, list[int]] = {}
    failures: list[str] = []
    for item in bad:
        kind = item["kind"]
        problems = _bad_item_problems(item, raws, stored)
        failures += problems
        counts = per_kind.setdefault(kind, [0, 0])
        counts[0] += 1
        counts[1] += not problems
    handled = all(c[0] == c[1] for c in per_kind.values())
    row = Row(
        "badrecords",
        f"{len(bad)} items",
        "yes" if handled and not errors and bad else "no",
        str(lost),
        "- (no retry: kept at once)",
    )
    row.notes.append(
        "handled/served per kind: "
        + ", ".join(f"{k} {c[1]}/{c[0]}" for k, c in sorted(per_kind.items()))
        + f"; {len(rejects)} sync_rejects rows (each item is served by both streams)"
    )
    if failures:
        row.notes.append(f"{len(failures)} problem(s), e.g. {failures[:4]}")
    if errors:
        row.notes.append(f"sync failed: {describe(errors)}")
    if examples:
        row.notes.append(f"good runs differing ({lost}), e.g. {examples}")
    return [row]


# -- 4. PostgreSQL stopped mid-backfill ----------------------------------------------


async def scenario_pg_restart(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    db_url, engine = await new_database(pg, "pgrestart")
    api = await ThreadedSimulator.start(FakeApiConfig(runs=PG_RUNS, api_key=KEY))
    api_url = api.url
    settings = sync_settings(api_url, db_url, page_size_v1=PG_PAGE, page_size_v2=PG_PAGE,
                            max_requests_per_s=150.0, initial_requests_per_s=150.0,
                            backfill_batch_rows=100)  # fmt: skip
    row = Row("postgres stop+start mid-backfill", "0", "no", "?", "-")
    first_event = len(EVENTS)
    sync: asyncio.Task[list[BaseException]] | None = None
    try:
        sync = asyncio.ensure_future(sync_streams_errors(settings, Store(engine, retry_s=30)))

        async def under_way() -> bool:
            return sync.done() or sum(1 for r in api.requests if clean(r)) >= 60

        await wait_for(under_way, 20)
        if sync.done():
            row.notes.append("the backfill ended before the database could be stopped")
            return [row]
        served_before = sum(1 for r in api.requests if clean(r))
        t_stop = time.monotonic()
        await asyncio.to_thread(pg.stop)
        t_stopped = time.monotonic()
        await asyncio.sleep(PG_OUTAGE_S)
        await asyncio.to_thread(pg.start)
        t_up = time.monotonic()
        row.injected = "1"
        try:
            errors = await asyncio.wait_for(asyncio.shield(sync), 45)
        except TimeoutError:
            errors = [TimeoutError("sync still running 45 s after the database came back")]
        t_done = time.monotonic()
    finally:
        if sync is not None and not sync.done():
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
        await api.close()
    outage_events = [e for e in EVENTS[first_event:] if e.get("event") == "database_unavailable"]
    failed_events = [e for e in EVENTS[first_event:] if e.get("event") == "cycle_failed"]
    lost, examples = await count_lost(engine, await api.truth())
    states = await sync_states(engine)
    clean_state = len(states) == 2 and all(
        s["checkpoint"] is None and s["last_success_at"] is not None for s in states.values()
    )
    row.recovered = "yes" if not errors else "no"
    row.lost = str(lost)
    row.ttr = f"{t_done - t_stop:.2f}s (stop -> sync done)"
    resumed_at = next((r.time for r in api.requests if clean(r) and r.time > t_up), None)
    row.notes.append(
        f"stopped after {served_before} pages were served; pg_ctl stop -m fast took"
        f" {t_stopped - t_stop:.2f}s, then {PG_OUTAGE_S:g}s down, start took"
        f" {t_up - t_stopped - PG_OUTAGE_S:.2f}s; first page fetched"
        f" {(resumed_at - t_up) if resumed_at else float('nan'):.2f}s after the restart;"
        f" {len(outage_events)} database_unavailable retries logged; afterwards checkpoints"
        f" cleared and last_success_at set: {clean_state}"
    )
    if errors:
        row.notes.append(f"sync failed: {describe(errors)}")
    if failed_events:
        row.notes.append(f"cycle_failed logged: {[e.get('error') for e in failed_events][:2]}")
    if examples:
        row.notes.append(f"differences ({lost}), e.g. {examples}")
    return [row]


# -- 5. kill -9 of sync --once mid-backfill ------------------------------------------


async def scenario_kill(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    db_url, engine = await new_database(pg, "kill")
    api = await ThreadedSimulator.start(FakeApiConfig(runs=PROC_RUNS, api_key=KEY))
    api_url = api.url
    env = env_for(api_url, db_url)
    row = Row("kill -9 of sync --once", "0", "no", "?", "-")
    first, second = SyncdProcess(work, "kill-first"), SyncdProcess(work, "kill-second")
    total_pages = 2 * (PROC_RUNS // PROC_PAGE)
    try:
        await first.start("sync", "--once", env=env)

        async def mid_backfill() -> bool:
            if not first.running:
                return True
            pages = list_pages(api.requests, PROC_PAGE)
            if len(pages["v1"]) + len(pages["v2"]) < total_pages * 0.4:
                return False
            states = await sync_states(engine)
            return all((states.get(s) or {}).get("checkpoint") for s in ("v1", "v2"))

        await wait_for(mid_backfill, 40, 0.05)
        if not first.running:
            row.notes.append(f"sync --once ended (rc {first.proc and first.proc.returncode})"
                             " before it could be killed")  # fmt: skip
            return [row]
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        await first.wait(10)
        n_before = len(api.requests)
        before = list_pages(api.requests, PROC_PAGE)
        checkpoints = {s: (st.get("checkpoint") or {}).get("next_page")
                       for s, st in (await sync_states(engine)).items()}  # fmt: skip
        row.injected = "1"
        await second.start("sync", "--once", env=env)
        rc = await second.wait(50)
        t_done = time.monotonic()
    finally:
        await first.reap()
        await second.reap()
        await api.close()
    truth = await api.truth()
    lost, examples = await count_lost(engine, truth)
    # a full pass: every page holding runs, plus the empty page that ends the list
    in_list = set(range(len(truth) // PROC_PAGE + 1))
    before = {s: pages & in_list for s, pages in before.items()}
    after = {
        s: pages & in_list for s, pages in list_pages(api.requests[n_before:], PROC_PAGE).items()
    }
    full = {s: before[s] | after[s] for s in ("v1", "v2")}
    refetched = {s: before[s] & after[s] for s in ("v1", "v2")}
    n_after = sum(len(after[s]) for s in after)
    n_full = sum(len(full[s]) for s in full)
    n_re = sum(len(refetched[s]) for s in refetched)
    resumed = [
        e.get("resumed_from_page") for e in second.events() if e.get("event") == "cycle_finished"
    ]
    row.recovered = "yes" if rc == 0 else "no"
    row.lost = str(lost)
    row.ttr = f"{t_done - t_kill:.2f}s (kill -> restart done)"
    row.notes.append(
        f"killed after {sum(len(v) for v in before.values())} pages; committed checkpoints"
        f" next_page {checkpoints}; the restart fetched {n_after} pages ({n_re} of them already"
        f" fetched before the kill: v1 {len(refetched['v1'])}, v2 {len(refetched['v2'])}) vs"
        f" {n_full} for a full pass (pages fetched ahead past the end not counted);"
        f" resumed_from_page {resumed}"
    )
    if rc != 0:
        row.notes.append(f"restart rc {rc}: {second.tail()}")
    out = second.stdout.decode(errors="replace").strip().replace("\n", " | ")
    if out:
        row.notes.append(f"restart said: {out}")
    if examples:
        row.notes.append(f"differences ({lost}), e.g. {examples}")
    return [row]


# -- 6. SIGTERM to the daemon mid-cycle ---------------------------------------------


async def checkpoint_vs_stored(
    engine: AsyncEngine, truth: list[dict[str, Any]]
) -> tuple[int, dict[str, Any], int, list[str]]:
    """What the checkpoints promise is stored (the listing's first runs: both streams list the
    same quiet history in the same order) against what is: (runs promised, next_page per
    stream, rows differing, examples)."""
    states = await sync_states(engine)
    prefix = 0
    detail: dict[str, Any] = {}
    for stream in ("v1", "v2"):
        st = states.get(stream) or {}
        cp = st.get("checkpoint") or {}
        if cp.get("kind") == "scan":
            n = int(cp["next_page"]) * int(cp["page_size"])
        elif st.get("last_success_at") is not None:
            n = len(truth)
        else:
            n = 0
        detail[stream] = cp.get("next_page") if cp else ("done" if n else None)
        prefix = max(prefix, n)
    mismatch, examples = await count_lost(engine, truth[:prefix])
    return prefix, detail, mismatch, examples


async def scenario_sigterm(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    db_url, engine = await new_database(pg, "sigterm")
    api = await ThreadedSimulator.start(FakeApiConfig(runs=PROC_RUNS, api_key=KEY))
    api_url = api.url
    env = env_for(api_url, db_url, SYNCD_POLL_INTERVAL_V1="600", SYNCD_POLL_INTERVAL_V2="600")
    row = Row("SIGTERM to syncd run", "0", "no", "?", "-")
    daemon, resume = SyncdProcess(work, "sigterm-run"), SyncdProcess(work, "sigterm-resume")
    total_pages = 2 * (PROC_RUNS // PROC_PAGE)
    match = False
    try:
        await daemon.start("run", env=env)

        async def mid_cycle() -> bool:
            if not daemon.running:
                return True
            pages = list_pages(api.requests, PROC_PAGE)
            if len(pages["v1"]) + len(pages["v2"]) < total_pages * 0.35:
                return False
            states = await sync_states(engine)
            return all((states.get(s) or {}).get("checkpoint") for s in ("v1", "v2"))

        await wait_for(mid_cycle, 40, 0.05)
        if not daemon.running:
            row.notes.append(f"syncd run exited (rc {daemon.proc and daemon.proc.returncode})"
                             f" before SIGTERM: {daemon.tail()}")  # fmt: skip
            return [row]
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        rc = await daemon.wait(SIGTERM_DEADLINE_S + 5)
        t_exit = time.monotonic()
        row.injected = "1"
        exited_in_time = rc is not None and t_exit - t_term <= SIGTERM_DEADLINE_S
        prefix, detail, mismatch, mismatch_examples = await checkpoint_vs_stored(
            engine, await api.truth()
        )
        match = mismatch == 0
        events = [e.get("event") for e in daemon.events()]
        row.notes.append(
            f"SIGTERM after {sum(len(v) for v in list_pages(api.requests, PROC_PAGE).values())}"
            f" pages; exit code {rc} after {t_exit - t_term:.2f}s; checkpoints next_page {detail}"
            f" promise the first {prefix} runs; rows differing from that promise: {mismatch};"
            f" cycle_interrupted logged {events.count('cycle_interrupted')}x,"
            f" daemon_stopped {events.count('daemon_stopped')}x"
        )
        if mismatch_examples:
            row.notes.append(f"checkpoint vs stored, e.g. {mismatch_examples}")
        if rc != 0:
            row.notes.append(f"daemon stderr tail: {daemon.tail()}")
        row.recovered = "yes" if exited_in_time and rc == 0 and match else "no"
        row.ttr = f"{t_exit - t_term:.2f}s (SIGTERM -> exit)"
        # then the next start must finish the job
        await resume.start("sync", "--once", env=env)
        rc2 = await resume.wait(50)
    finally:
        await daemon.reap()
        await resume.reap()
        await api.close()
    lost, examples = await count_lost(engine, await api.truth())
    row.lost = str(lost)
    out = resume.stdout.decode(errors="replace").strip().replace("\n", " | ")
    resumed = [
        e.get("resumed_from_page") for e in resume.events() if e.get("event") == "cycle_finished"
    ]
    row.notes.append(f"then sync --once: rc {rc2}, resumed_from_page {resumed}; {out}")
    if examples:
        row.notes.append(f"differences after the resume ({lost}), e.g. {examples}")
    return [row]


# -- main -------------------------------------------------------------------------------

SCENARIOS: list[tuple[str, str, Callable[[EmbeddedPostgres, Path], Awaitable[list[Row]]]]] = [
    ("faults", "hostile upstream (FAULT_KINDS)", scenario_faults),
    ("ratelimit", "rate limits", scenario_ratelimit),
    ("badrecords", "bad records", scenario_badrecords),
    ("pg", "PostgreSQL stopped mid-backfill", scenario_pg_restart),
    ("kill", "kill -9 of sync --once", scenario_kill),
    ("sigterm", "SIGTERM to syncd run", scenario_sigterm),
]


async def run_all(pg: EmbeddedPostgres, work: Path) -> list[Row]:
    main_task = asyncio.current_task()
    assert main_task is not None

    def interrupt() -> None:
        INTERRUPTED.set()
        main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, interrupt)
    rows: list[Row] = []
    for key, title, scenario in SCENARIOS:
        if INTERRUPTED.is_set():
            raise asyncio.CancelledError
        progress(f"{title} ...")
        started = time.monotonic()
        try:
            rows += await asyncio.wait_for(scenario(pg, work), SCENARIO_BUDGET_S[key])
        except TimeoutError:
            rows.append(Row(title, "?", "no", "?", "-",
                            [f"scenario timed out after {SCENARIO_BUDGET_S[key]}s"]))  # fmt: skip
        except Exception as exc:
            rows.append(Row(title, "?", "no", "?", "-",
                            [f"scenario crashed: {type(exc).__name__}: {exc}"[:500]]))  # fmt: skip
        finally:
            await dispose_engines()
        progress(f"{title}: {time.monotonic() - started:.1f}s")
    return rows


def main() -> int:
    structlog.configure(processors=[_collect], cache_logger_on_first_use=False)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-faults-"))
    pg: EmbeddedPostgres | None = None
    rows: list[Row] = []
    try:
        progress("starting PostgreSQL")
        pg = EmbeddedPostgres("syncd-bench-faults-pg-")
        progress(f"PostgreSQL in {pg.root}")
        rows = asyncio.run(run_all(pg, work))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted: cleaning up")
        return 130
    finally:
        if pg is not None:
            pg.close()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    print()
    print(f"total runtime: {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
