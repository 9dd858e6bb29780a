"""Soak: the daemon over thousands of cycles -- does RSS, fds, connections or tasks grow?

    python -m bench.soak                          # static, then churn: 1.5 min each
    python -m bench.soak --minutes 10             # the figures worth quoting
    python -m bench.soak --scenarios churn --no-trim    # without the post-scan malloc_trim
    python -m bench.soak --glibc-defaults               # without the image's malloc settings
    python -m bench.soak --env MALLOC_ARENA_MAX=2       # more glibc tuning, for comparison

For each scenario, the simulator (`syncd fake-api`, its own process on
127.0.0.1) serves --runs runs: `static` (nothing changes) or `churn` (new runs
at the head and in-flight runs moving on, every second).  syncd runs as a user
runs it, `python -m syncd run` in a subprocess against a fresh database in an
embedded PostgreSQL, with default settings except the API URL and key, the
database URL, the HTTP port (127.0.0.1) and a --poll-interval-s poll interval
on both streams (SYNCD_POLL_INTERVAL_V1/_V2): about 10 cycles a second per
stream instead of one a minute.  Its log (INFO, JSON) goes to a temp file.
The container image's glibc malloc settings (IMAGE_MALLOC_ENV, as the
Dockerfile sets them) apply unless --glibc-defaults.

Every --sample-s the bench reads, from the daemon's own /metrics:
process_resident_memory_bytes and process_open_fds (prometheus_client's process
collector), syncd_asyncio_tasks and the cycles done (syncd_cycle_duration_seconds_count,
both streams, every outcome); and from pg_stat_activity the connections open to
the daemon's database.  A row is printed every --print-s.

Growth is measured after the first full scan of both streams (the backfill):
the samples from then on are cut into thirds by time, and in each third the
least-squares slope of RSS over cycles gives MB per 1,000 cycles.  A leak grows
as fast in the last third as in the first; allocator warm-up (glibc keeping
freed heap in fragments) slows down and levels off.  Targets (issue 10): last
third < 0.1 MB per 1,000 cycles; fds, connections and tasks flat (work in
flight lifts single samples, a leak lifts the floor: the lowest sample of the
last third is no higher than the highest of the first).  The daemon's
`heap_trimmed` log lines (malloc_trim after each full scan, syncd/memory.py)
are shown with RSS before and after.  --no-trim starts the daemon with that call disabled.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bench.backfill import KEY, simulator
from syncd.logs import configure_logging
from tests.support.postgres import (
    asyncpg_dsn,
    drop_database,
    embedded_postgres,
    migrated_database,
)
from tests.support.processes import SYNCD, user_env

TARGET_MB_PER_1K = 0.1
# The Dockerfile's ENV: a fixed mmap threshold keeps large buffers out of the heap.
IMAGE_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
SCENARIO_FLAGS = {"static": [], "churn": ["--scenario", "churn"]}
# The daemon with release_free_heap() turned into a no-op (--no-trim), else unchanged.
NO_TRIM = (
    "import sys; from syncd import memory; memory.release_free_heap = lambda reason: False; "
    "from syncd.cli import main; sys.exit(main(['run']))"
)


@dataclass(frozen=True)
class Sample:
    t_s: float
    cycles: int
    errors: int
    rss_mb: float
    fds: int
    tasks: int
    conns: int
    cpu_s: float


@dataclass
class Soak:
    scenario: str
    samples: list[Sample] = field(default_factory=list)
    steady_from: int | None = None  # index of the first sample after the backfill
    trims: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def steady(self) -> list[Sample]:
        return [] if self.steady_from is None else self.samples[self.steady_from :]

    def thirds(self) -> list[list[Sample]]:
        steady = self.steady
        if len(steady) < 2:
            return []
        t0, span = steady[0].t_s, steady[-1].t_s - steady[0].t_s
        cuts: list[list[Sample]] = [[], [], []]
        for s in steady:
            cuts[min(2, int(3 * (s.t_s - t0) / span))].append(s)
        return cuts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def slope_per_1k(samples: list[Sample]) -> float | None:
    """Least-squares slope of RSS (MB) over cycles, per 1,000 cycles."""
    if len(samples) < 2:
        return None
    xs, ys = [s.cycles for s in samples], [s.rss_mb for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def parse_metrics(text: str) -> dict[str, float]:
    found: dict[str, float] = {"cycles": 0.0, "errors": 0.0, "ok_v1": 0.0, "ok_v2": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("process_resident_memory_bytes", "process_open_fds",
                          "process_cpu_seconds_total", "syncd_asyncio_tasks"):  # fmt: skip
                found[s.name] = s.value
            elif s.name == "syncd_cycle_duration_seconds_count":
                found["cycles"] += s.value
                if s.labels["outcome"] == "error":
                    found["errors"] += s.value
                elif s.labels["outcome"] == "ok":
                    found[f"ok_{s.labels['stream']}"] += s.value
    return found


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float] | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return parse_metrics(await response.text()) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


def start_daemon(api_url: str, db_url: str, port: int, args: argparse.Namespace,
                 log: IO[str]) -> subprocess.Popen[str]:  # fmt: skip
    env = user_env(api_url, KEY, db_url)  # log level INFO: its logging is part of the soak
    interval = str(args.poll_interval_s)
    env.update(SYNCD_HTTP_HOST="127.0.0.1", SYNCD_HTTP_PORT=str(port),
               SYNCD_POLL_INTERVAL_V1=interval, SYNCD_POLL_INTERVAL_V2=interval)  # fmt: skip
    if not args.glibc_defaults:
        env.update(IMAGE_MALLOC_ENV)
    env.update(dict(pair.split("=", 1) for pair in args.env))
    command = [sys.executable, "-c", NO_TRIM] if args.no_trim else [*SYNCD, "run"]
    return subprocess.Popen(command, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def stop_daemon(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def print_row(s: Sample) -> None:
    print(f"{s.t_s:7.0f} {s.cycles:8,} {s.rss_mb:8.1f} {s.fds:5} {s.conns:6} {s.tasks:6} "
          f"{s.cpu_s:7.1f} {s.errors:6}", flush=True)  # fmt: skip


async def sample_daemon(soak: Soak, proc: subprocess.Popen[str], metrics_url: str,
                        database: str, admin: str, args: argparse.Namespace) -> None:  # fmt: skip
    """Sample every --sample-s until --minutes are over (or the daemon exits)."""
    duration_s = args.minutes * 60
    started = time.monotonic()
    next_print = 0.0
    pg = await asyncpg.connect(asyncpg_dsn(admin))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(int(duration_s / args.sample_s) + 1000):  # bounded; ends on time
                elapsed = time.monotonic() - started
                if elapsed > duration_s or proc.poll() is not None:
                    return
                found = await scrape(http, metrics_url)
                if found is not None:
                    conns = await pg.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
                    )
                    sample = Sample(
                        t_s=elapsed, cycles=int(found["cycles"]), errors=int(found["errors"]),
                        rss_mb=found["process_resident_memory_bytes"] / 1e6,
                        fds=int(found["process_open_fds"]), tasks=int(found["syncd_asyncio_tasks"]),
                        conns=int(conns), cpu_s=found["process_cpu_seconds_total"],
                    )  # fmt: skip
                    soak.samples.append(sample)
                    if soak.steady_from is None and min(found["ok_v1"], found["ok_v2"]) >= 1:
                        soak.steady_from = len(soak.samples) - 1
                        print(f"{'':7} -- both streams backfilled; growth is measured from here",
                              flush=True)  # fmt: skip
                    if elapsed >= next_print or soak.steady_from == len(soak.samples) - 1:
                        print_row(sample)
                        next_print = elapsed + args.print_s
                await asyncio.sleep(args.sample_s - (time.monotonic() - started) % args.sample_s)
    finally:
        await pg.close()


def heap_trims(log_path: Path) -> list[dict[str, Any]]:
    trims = []
    with log_path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"heap_trimmed"' in line:
                try:
                    trims.append(json.loads(line))
                except ValueError:
                    continue
    return trims


async def soak_scenario(admin: str, scenario: str, args: argparse.Namespace) -> Soak:
    database = f"soak_{scenario}"
    db_url = await migrated_database(admin, database)
    soak = Soak(scenario)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp:
        log_path = Path(tmp) / "syncd.log"
        async with simulator(args.runs, *SCENARIO_FLAGS[scenario]) as api_url:
            with log_path.open("w", encoding="utf-8") as log:
                proc = start_daemon(api_url, db_url, port, args, log)
                try:
                    await sample_daemon(soak, proc, f"http://127.0.0.1:{port}/metrics",
                                        database, admin, args)  # fmt: skip
                finally:
                    soak.exit_code = stop_daemon(proc)
        soak.trims = heap_trims(log_path)
        if soak.exit_code != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            print(f"syncd exited with {soak.exit_code}; its log ends:\n{tail}", flush=True)
    await drop_database(admin, database)
    return soak


def spread(values: list[int]) -> str:
    return f"{min(values)}..{max(values)}" if values else "-"


def print_summary(soak: Soak, args: argparse.Namespace) -> None:
    thirds = soak.thirds()
    steady = soak.steady
    print(f"\n{soak.scenario}: exit code {soak.exit_code}", flush=True)
    for trim in soak.trims:
        print(f"  heap_trimmed after {trim.get('reason')}: RSS {trim.get('rss_before_mb')} -> "
              f"{trim.get('rss_after_mb')} MB in {trim.get('took_ms')} ms")  # fmt: skip
    if not soak.trims:
        print("  no heap_trimmed events" + (" (--no-trim)" if args.no_trim else ""))
    if len(thirds) < 3 or not all(len(t) >= 2 for t in thirds):
        print("  too few samples after the backfill for growth figures (run longer)")
        return
    first, last = steady[0], steady[-1]
    cycles = last.cycles - first.cycles
    span = last.t_s - first.t_s
    print(f"  after the backfill: {cycles:,} cycles in {span:.0f} s ({cycles / span:.1f}/s), "
          f"{last.errors - first.errors} failed, CPU {last.cpu_s - first.cpu_s:.0f} s; "
          f"RSS {first.rss_mb:.1f} -> {last.rss_mb:.1f} MB")  # fmt: skip
    print(f"  {'':12}{'cycles':>9}{'RSS MB':>14}{'MB/1k cycles':>14}{'fds':>8}"
          f"{'db conns':>10}{'tasks':>8}")  # fmt: skip
    for name, part in zip(("first third", "middle", "last third"), thirds, strict=True):
        slope = slope_per_1k(part)
        print(f"  {name:12}{part[-1].cycles - part[0].cycles:>9,}"
              f"{f'{part[0].rss_mb:.1f}-{part[-1].rss_mb:.1f}':>14}"
              f"{'-' if slope is None else f'{slope:+.3f}':>14}"
              f"{spread([s.fds for s in part]):>8}{spread([s.conns for s in part]):>10}"
              f"{spread([s.tasks for s in part]):>8}")  # fmt: skip
    early, growth = slope_per_1k(thirds[0]), slope_per_1k(thirds[2])
    verdict = "ok" if growth is not None and growth < TARGET_MB_PER_1K else "OVER TARGET"
    print(f"  RSS growth per 1,000 cycles: first third {fmt_mb(early)}, last third "
          f"{fmt_mb(growth)} MB (target < {TARGET_MB_PER_1K}): {verdict}")  # fmt: skip
    for label, key in (("fds", "fds"), ("db conns", "conns"), ("tasks", "tasks")):
        # Work in flight lifts single samples; a leak lifts the floor.
        ceiling = max(getattr(s, key) for s in thirds[0])
        floor = min(getattr(s, key) for s in thirds[2])
        flat = "flat" if floor <= ceiling else "GREW"
        print(f"  {label}: lowest in the last third {floor}, highest in the first {ceiling}: "
              f"{flat}")  # fmt: skip


def fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


async def main(args: argparse.Namespace) -> None:
    malloc = "glibc's default malloc settings" if args.glibc_defaults else "the image's malloc"
    extra = (" with " + " ".join(args.env)) if args.env else ""
    print(f"syncd run, poll interval {args.poll_interval_s} s, {args.runs:,} runs, "
          f"{args.minutes} min per scenario, {malloc}{', no trim' if args.no_trim else ''}"
          f"{extra}", flush=True)  # fmt: skip
    configure_logging(fmt="console", level="WARNING")  # this process's own migrations
    soaks = []
    with embedded_postgres() as pg:
        admin = pg.admin_url
        for scenario in args.scenarios:
            print(f"\n{scenario}:\n{'t s':>7} {'cycles':>8} {'RSS MB':>8} {'fds':>5} "
                  f"{'conns':>6} {'tasks':>6} {'CPU s':>7} {'failed':>6}", flush=True)  # fmt: skip
            soaks.append(await soak_scenario(admin, scenario, args))
    for soak in soaks:
        print_summary(soak, args)


def scenario_list(value: str) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if unknown := set(names) - set(SCENARIO_FLAGS):
        raise argparse.ArgumentTypeError(f"unknown scenarios {sorted(unknown)}")
    return names


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.5, help="per scenario")
    parser.add_argument("--scenarios", type=scenario_list, default=["static", "churn"],
                        help="comma-separated: static, churn")  # fmt: skip
    parser.add_argument("--runs", type=int, default=2_000, help="the simulator's history")
    parser.add_argument("--poll-interval-s", type=float, default=0.1)
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--print-s", type=float, default=15.0)
    parser.add_argument("--no-trim", action="store_true",
                        help="disable the malloc_trim after full scans")  # fmt: skip
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="without the image's MALLOC_* variables")  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more daemon environment, e.g. MALLOC_ARENA_MAX=2")  # fmt: skip
    asyncio.run(main(parser.parse_args()))
