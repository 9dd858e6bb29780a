"""Backfill: syncd's default configuration against a simple sequential syncer.

    python -m bench.backfill                   # N = 200,000; RSS sizes 100,000 and 1,000,000
    python -m bench.backfill --runs 20000 --rss-runs 20000    # a quick check
    python -m bench.backfill --ceiling         # also the COPY + merge reference

(from the repository root, venv active.)

Everything runs on this machine: an embedded PostgreSQL in a temp dir, the
simulator (`syncd fake-api`: no latency, no rate limit) as its own process, and
syncd as the real command (`python -m syncd sync --once`, both streams) exactly
as a user runs it: only the API URL and key, the database URL, a free HTTP port
and log level WARNING are set.  No page sizes, rates, concurrency or offset
reading: whatever syncd's defaults do is what is measured.  Each measurement
starts from a fresh, migrated database.

Printed figures (never asserted; the machines are shared and noisy):
  syncd      wall time of `sync --once` on an empty database (the whole process,
             interpreter start included), runs/s (N / wall), CPU seconds of the
             syncd process alone (user + system, from wait4) and CPU-µs per row
             observation (2 N of them: every run arrives on both streams), peak
             RSS of the syncd process alone, upstream requests, rows in `runs`
             (must equal N), and a second `sync --once --full` of the unchanged
             history: rows it wrote (must be 0).
  baseline   a simple sequential syncer at the same N, against the same
             simulator: v1 then v2, one page at a time with aiohttp (syncd's
             default page sizes), each page normalised with syncd's own
             `split_page` and written with asyncpg `executemany` of
             INSERT ... ON CONFLICT (slug) DO UPDATE (every column, no WHERE),
             one transaction per page.
             Its CPU is this bench process's `time.process_time()` around it.
  ceiling    (--ceiling) the same 2 N records, fetched and parsed beforehand, loaded
             with COPY into syncd's staging table + syncd's merge statement, 2,000
             at a time: database seconds only, the fastest this database takes them.
Then syncd alone, default config, at each --rss-runs size: whether peak RSS
stays flat in N.  Targets (the issue): syncd >= 1.5x the baseline's speed at
200,000 runs (aim 2x); 1,000,000 runs in < 60 s; peak RSS < 200 MB, flat in N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
from sqlalchemy import text

from syncd.config import Settings
from syncd.database import create_engine
from syncd.logs import configure_logging
from syncd.models import Page, Run, Source, stage_row
from syncd.normalize import split_page
from syncd.storage import CREATE_STAGE_SQL, MERGE, STAGE_COLUMNS, STAGE_TABLE
from tests.support.postgres import asyncpg_dsn, drop_database, embedded_postgres, migrated_database
from tests.support.processes import measure_syncd, user_env
from tests.support.simulator import simulator_process

KEY = "bench-key"
# syncd's defaults, which the baseline pages with too.
PAGE_SIZE: dict[Source, int] = {
    Source.V1: Settings.model_fields["page_size_v1"].default,
    Source.V2: Settings.model_fields["page_size_v2"].default,
}
SIM_V1_MAX_PAGE_SIZE = 500  # the simulator's v1 cap; must not cut syncd's default pages
TARGET_RATIO, AIM_RATIO = 1.5, 2.0
TARGET_1M_S = 60.0
TARGET_RSS_MB = 200.0


def simulator(runs: int, *extra: str) -> contextlib.AbstractAsyncContextManager[str]:
    """`syncd fake-api` in its own process (`extra`: more fake-api flags); its base URL."""
    return simulator_process(
        KEY, "--runs", str(runs), "--v1-max-page-size", str(SIM_V1_MAX_PAGE_SIZE), *extra
    )


async def scalar(db_url: str, sql: str) -> Any:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql))
    finally:
        await engine.dispose()


def requests_made(out: str) -> int:
    return sum(int(part.split()[0]) for line in out.splitlines() for part in line.split(", ")
               if part.endswith(" requests"))  # fmt: skip


def written(out: str) -> int:
    total = 0
    for line in out.splitlines():
        for part in line.split(", "):
            if part.endswith(" inserted") or part.endswith(" updated"):
                total += int(part.split()[0])
    return total


# -- syncd --------------------------------------------------------------------


async def measure(admin: str, api_url: str, runs: int) -> dict[str, Any]:
    name = f"syncd_{runs}"
    db_url = await migrated_database(admin, name)
    env = user_env(api_url, KEY, db_url, SYNCD_LOG_LEVEL="WARNING")
    first = await asyncio.to_thread(measure_syncd, ["sync", "--once"], env)
    rows = await scalar(db_url, "SELECT count(*) FROM runs")
    mark = await scalar(db_url, "SELECT now()")
    again = await asyncio.to_thread(measure_syncd, ["sync", "--once", "--full"], env)
    rewritten = await scalar(db_url, f"SELECT count(*) FROM runs WHERE updated_at >= '{mark}'")
    await drop_database(admin, name)  # a 1M-run database is not small
    return {
        "runs": runs, "wall_s": first.wall_s, "cpu_s": first.cpu_s,
        "rss_mb": first.rss_kib * 1024 / 1e6, "rows": rows,
        "requests": requests_made(first.out),
        "resync_wall_s": again.wall_s, "resync_written": written(again.out),
        "resync_rewritten": rewritten,
    }  # fmt: skip


# -- references -----------------------------------------------------------------


async def fetch_pages(
    http: aiohttp.ClientSession, api_url: str, source: Source, runs: int
) -> AsyncIterator[list[Any]]:
    """A stream's pages, one request at a time, up to the first short one (maybe empty)."""
    size = PAGE_SIZE[source]
    for number in range(runs // size + 2):
        if source is Source.V1:
            body = {"page_index": number + 1, "page_size": size}
            response = await http.post(f"{api_url}/api/v1/run/list", json=body)
        else:  # the simulator's default reading: offset counts items
            params = {"offset": str(number * size), "limit": str(size)}
            response = await http.get(f"{api_url}/api/v2/worker-runs", params=params)
        async with response:
            response.raise_for_status()
            items = orjson.loads(await response.read())["data"]["list"]
        yield items
        if len(items) < size:
            return
    raise RuntimeError(f"{source}: more pages than {runs} runs need")


_COLUMNS = ", ".join(Run._fields)
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in Run._fields if c != "slug")
_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(Run._fields) + 1))
BASELINE_UPSERT = f"""
INSERT INTO runs ({_COLUMNS}, first_seen_at, last_seen_at, updated_at)
VALUES ({_PLACEHOLDERS}, now(), now(), now())
ON CONFLICT (slug) DO UPDATE SET {_UPDATES}, last_seen_at = now(), updated_at = now()
"""


async def baseline(api_url: str, db_url: str, runs: int) -> dict[str, Any]:
    """The simple sequential syncer: wall and CPU seconds, requests, rows."""
    requests = 0
    cpu_started, started = time.process_time(), time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
            for source in (Source.V1, Source.V2):
                async for items in fetch_pages(http, api_url, source, runs):
                    requests += 1
                    page_runs, _ = split_page(
                        Page(items=items, count=None, fetched_at=dt.datetime.now(dt.UTC)), source
                    )
                    if not page_runs:
                        continue
                    async with conn.transaction():
                        await conn.executemany(BASELINE_UPSERT, [tuple(r) for r in page_runs])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        rows = await conn.fetchval("SELECT count(*) FROM runs")
    finally:
        await conn.close()
    return {"runs": runs, "wall_s": wall, "cpu_s": cpu, "requests": requests, "rows": rows}


async def ceiling(api_url: str, db_url: str, runs: int) -> dict[str, Any]:
    """Database seconds to COPY + merge every record of both streams."""
    batches: list[list[Run]] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
        for source in (Source.V1, Source.V2):
            batch: list[Run] = []
            async for items in fetch_pages(http, api_url, source, runs):
                batch += split_page(
                    Page(items=items, count=None, fetched_at=dt.datetime.now(dt.UTC)), source
                )[0]
                if len(batch) >= 2000:
                    batches.append(batch)
                    batch = []
            if batch:
                batches.append(batch)
    engine = create_engine(db_url)
    at = dt.datetime.now(dt.UTC)
    spent = 0.0
    try:
        for batch in batches:
            started = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(text(CREATE_STAGE_SQL))
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                await raw.copy_records_to_table(
                    STAGE_TABLE, records=map(stage_row, batch), columns=STAGE_COLUMNS
                )
                await conn.execute(MERGE, {"observed_at": at})
            spent += time.perf_counter() - started
        async with engine.connect() as conn:
            rows = await conn.scalar(text("SELECT count(*) FROM runs"))
    finally:
        await engine.dispose()
    return {"runs": runs, "wall_s": spent, "rows": rows}


# -- the run ------------------------------------------------------------------


def check(rows: int, runs: int) -> str:
    return "ok" if rows == runs else "MISMATCH"


def cpu_us_per_obs(cpu_s: float, runs: int) -> float:
    return cpu_s * 1e6 / (2 * runs)


def print_comparison(s: dict[str, Any], b: dict[str, Any], c: dict[str, Any] | None) -> None:
    n = s["runs"]
    cols = ["syncd", "baseline"] + (["ceiling"] if c else [])
    dash = "-"

    def row(label: str, *cells: str) -> None:
        print(f"{label:30}" + "".join(f"{cell:>14}" for cell in cells[: len(cols)]))

    print(f"\nFirst sync of N = {n:,} runs ({2 * n:,} row observations: both streams)")
    row("", *cols)
    row("wall s", *(f"{r['wall_s']:.1f}" for r in (s, b, c) if r))
    row("runs/s (N / wall)", *(f"{n / r['wall_s']:,.0f}" for r in (s, b, c) if r))
    row("client CPU s", f"{s['cpu_s']:.1f}", f"{b['cpu_s']:.1f}", dash)
    row("client CPU-us / row obs.", f"{cpu_us_per_obs(s['cpu_s'], n):.1f}",
        f"{cpu_us_per_obs(b['cpu_s'], n):.1f}", dash)  # fmt: skip
    row("requests", f"{s['requests']:,}", f"{b['requests']:,}", dash)
    row("peak RSS MB", f"{s['rss_mb']:.0f}", dash, dash)
    row("rows (== N)", *(f"{r['rows']:,} {check(r['rows'], n)}" for r in (s, b, c) if r))
    ratio = b["wall_s"] / s["wall_s"]
    print(f"syncd / baseline speed = {ratio:.2f}x  (target >= {TARGET_RATIO}x, aim {AIM_RATIO}x)")
    if c:
        print(f"syncd / ceiling speed  = {c['wall_s'] / s['wall_s']:.2f}  "
              "(ceiling: database time only)")  # fmt: skip


def print_size(r: dict[str, Any]) -> None:
    n = r["runs"]
    print(f"N={n:>9,}: wall {r['wall_s']:6.1f} s, {n / r['wall_s']:,.0f} runs/s, "
          f"CPU {r['cpu_s']:.1f} s ({cpu_us_per_obs(r['cpu_s'], n):.1f} us/row obs.), "
          f"peak RSS {r['rss_mb']:.0f} MB, {r['requests']:,} requests, "
          f"rows {r['rows']:,} ({check(r['rows'], n)}); "
          f"re-sync {r['resync_wall_s']:.1f} s wrote {r['resync_written']} rows "
          f"({r['resync_rewritten']} rows with a newer updated_at)", flush=True)  # fmt: skip


def print_targets(results: list[dict[str, Any]]) -> None:
    million = next((r for r in results if r["runs"] == 1_000_000), None)
    if million:
        print(f"1,000,000 runs: {million['wall_s']:.1f} s  (target < {TARGET_1M_S:.0f} s)")
    else:
        print("1,000,000 runs: not measured (add it to --rss-runs)")
    rss = [r["rss_mb"] for r in results]
    print(f"peak RSS: max {max(rss):.0f} MB (target < {TARGET_RSS_MB:.0f} MB), "
          f"max/min over N = {max(rss) / min(rss):.2f} (flat: close to 1)")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    if PAGE_SIZE[Source.V1] > SIM_V1_MAX_PAGE_SIZE:
        raise SystemExit("the simulator's v1 page cap is below syncd's default v1 page size")
    configure_logging(fmt="console", level="WARNING")  # this process's own migrations
    sizes = sorted(set(args.rss_runs) | {args.runs})
    results: dict[int, dict[str, Any]] = {}
    with embedded_postgres() as pg:
        admin = pg.admin_url
        async with simulator(args.runs) as api_url:
            print(f"syncd: first sync of {args.runs:,} runs (default config) ...", flush=True)
            results[args.runs] = await measure(admin, api_url, args.runs)
            print(f"baseline: simple sequential syncer, {args.runs:,} runs ...", flush=True)
            base = await baseline(api_url, await migrated_database(admin, "baseline"), args.runs)
            await drop_database(admin, "baseline")
            ceil = None
            if args.ceiling:
                print("ceiling: COPY + merge of the same records ...", flush=True)
                ceil = await ceiling(api_url, await migrated_database(admin, "ceiling"), args.runs)
                await drop_database(admin, "ceiling")
        print_comparison(results[args.runs], base, ceil)
        print("\nsyncd, default config, by N:")
        for runs in sizes:
            if runs not in results:
                async with simulator(runs) as api_url:
                    results[runs] = await measure(admin, api_url, runs)
            print_size(results[runs])
    print_targets([results[n] for n in sizes])


def size_list(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=200_000, help="N for syncd against the baseline"
    )
    parser.add_argument(
        "--rss-runs",
        type=size_list,
        default=[100_000, 1_000_000],
        help="comma-separated N for syncd alone (RSS flat in N, the 1M wall time)",
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="also time the COPY + merge reference"
    )
    asyncio.run(main(parser.parse_args()))
