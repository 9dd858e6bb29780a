"""Benchmark: how much of a far API's rate budget a default first sync uses.

    python -m bench.ratelimit                       # 20,000 runs, 150 ms, 25 req/s per endpoint
    python -m bench.ratelimit --scopes endpoint,key --latency-ms 150 --quota 25 --runs 20000

For each quota scope, a fresh simulator (`syncd fake-api`, its own process on
127.0.0.1) serves N runs with a round trip of --latency-ms (+- 10 % jitter)
and the "ratelimit" scenario: a token bucket of --quota requests/s and a
burst of --burst, per endpoint (`endpoint`) or shared by both (`key`); half
its rate-limit answers carry Retry-After (whole seconds), a fifth come as
HTTP 200 with code 13000/4290.  Then:

  syncd      `python -m syncd sync --once` (both streams) into an empty
             embedded PostgreSQL, exactly as a user runs it: the API URL, key
             and database URL are the only settings;
  baseline   the simple way: each endpoint paged one request at a time (both
             endpoints at once), waiting Retry-After, or 1 s, after a rate limit.

Printed per client, from the simulator's own request log:

  quota used   accepted requests / (quota x span), span = first request to
               last answer; the burst lets a short run exceed 100 %   target >= 90 %
  429 share    rate-limited answers / requests                         target < 2 %
  early        requests sent before an announced Retry-After was over  target 0
  after ms     the latest of those, in ms after the answer announcing the wait
               left the simulator (about 0: the request crossed that answer, sent
               before the client could have read it)
  span / min   span vs the quota-bound minimum, (accepted - burst) / quota
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.backfill import KEY, simulator
from syncd.envelope import RATE_LIMIT_CODES
from tests.support.postgres import embedded_postgres, migrated_database
from tests.support.processes import SYNCD, user_env


@dataclass(frozen=True)
class Outcome:
    client: str
    scope: str
    quota_per_s: float  # over both endpoints
    burst: int  # over both endpoints
    wall_s: float
    span_s: float
    requests: int
    accepted: int
    limited: int
    early: int
    early_after_ms: float  # the latest of them, after the answer announcing the wait left
    failed: bool

    @property
    def quota_used(self) -> float:
        return self.accepted / (self.quota_per_s * self.span_s) if self.span_s else 0.0

    @property
    def limited_share(self) -> float:
        return self.limited / self.requests if self.requests else 0.0

    @property
    def minimum_s(self) -> float:
        return max(0.0, self.accepted - self.burst) / self.quota_per_s


@asynccontextmanager
async def far_simulator(args: argparse.Namespace, scope: str) -> AsyncIterator[str]:
    async with simulator(
        args.runs, "--scenario", "ratelimit",
        "--rate-limit-rps", str(args.quota), "--rate-limit-burst", str(args.burst),
        "--quota-scope", scope, "--latency-ms", str(args.latency_ms),
        "--latency-jitter-ms", str(args.latency_ms / 10),
    ) as url:  # fmt: skip
        yield url


async def request_log(api_url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{api_url}/_fake/requests") as resp:
        records: list[dict[str, Any]] = orjson.loads(await resp.read())["requests"]
    return [r for r in records if r["path"].startswith("/api/")]


def save_log(path: Path, log: list[dict[str, Any]]) -> None:
    """The simulator's request log, for `python -m bench.timeline PATH`."""
    path.write_bytes(orjson.dumps(log))


def outcome(
    client: str, scope: str, args: argparse.Namespace, wall_s: float, log: list[dict[str, Any]],
    *, failed: bool,
) -> Outcome:  # fmt: skip
    lanes = 2 if scope == "endpoint" else 1
    times = [r["time"] for r in log]
    span = (max(times) - min(times) + args.latency_ms / 1000) if times else 0.0
    return Outcome(
        client=client,
        scope=scope,
        quota_per_s=args.quota * lanes,
        burst=args.burst * lanes,
        wall_s=wall_s,
        span_s=span,
        requests=len(log),
        accepted=sum(1 for r in log if r["status"] == 200 and r["code"] == 0),
        limited=sum(1 for r in log if r["status"] == 429 or r["code"] in RATE_LIMIT_CODES),
        early=sum(1 for r in log if r["early"]),
        early_after_ms=max((1000 * r["early_after_s"] for r in log if r["early"]), default=0.0),
        failed=failed,
    )


async def run_syncd(api_url: str, admin_url: str, name: str) -> tuple[float, bool]:
    db_url = await migrated_database(admin_url, name)
    env = user_env(api_url, KEY, db_url, SYNCD_LOG_LEVEL="ERROR")
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, "sync", "--once", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"  syncd exited {proc.returncode}: {err.decode()[-800:]}", file=sys.stderr)
    return wall, proc.returncode != 0


async def baseline(api_url: str) -> tuple[float, bool]:
    """Each endpoint paged one request at a time; Retry-After (or 1 s) after a rate limit."""
    headers = {"Authorization": f"Bearer {KEY}"}
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(_page_v1(http, api_url), _page_v2(http, api_url))
    return time.perf_counter() - started, False


async def _page_v1(http: aiohttp.ClientSession, api_url: str) -> None:
    for number in range(100_000):
        body = {"page_index": number + 1, "page_size": 100}
        items = await _sequential(http, "POST", f"{api_url}/api/v1/run/list", json=body)
        if not items:
            return


async def _page_v2(http: aiohttp.ClientSession, api_url: str) -> None:
    for number in range(100_000):
        params = {"offset": str(number * 100), "limit": "100"}
        items = await _sequential(http, "GET", f"{api_url}/api/v2/worker-runs", params=params)
        if not items:
            return


async def _sequential(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> list[Any]:
    for _ in range(1000):
        async with http.request(method, url, **kw) as resp:
            payload = orjson.loads(await resp.read())
            retry_after = resp.headers.get("Retry-After", "")
        if resp.status != 429 and payload.get("code") not in RATE_LIMIT_CODES:
            items: list[Any] = payload["data"]["list"]
            return items
        await asyncio.sleep(float(retry_after) if retry_after.isdigit() else 1.0)
    raise RuntimeError("still rate limited after 1000 tries")


def render(results: list[Outcome]) -> str:
    head = (
        f"{'client':<9}{'scope':<10}| {'quota used':>10} | {'429 share':>9} | {'early':>5} | "
        f"{'after ms':>8} | {'requests':>8} | {'span s':>7} | {'min s':>6} | {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.client:<9}{r.scope:<10}| {r.quota_used:>10.1%} | {r.limited_share:>9.2%} | "
            f"{r.early:>5} | {r.early_after_ms:>8.1f} | {r.requests:>8} | {r.span_s:>7.1f} | "
            f"{r.minimum_s:>6.1f} | "
            f"{r.wall_s:>7.1f}{'  FAILED' if r.failed else ''}"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    print(
        f"far API: {args.runs:,} runs, round trip {args.latency_ms:g} ms (+-10 %), "
        f"quota {args.quota:g} req/s, burst {args.burst}, per scope below; "
        "syncd with its default settings",
        flush=True,
    )
    results: list[Outcome] = []
    with embedded_postgres() as pg:
        for scope in args.scopes:
            for client in args.clients:
                async with far_simulator(args, scope) as api_url:
                    print(f"  {client} against a {scope}-scoped quota ...", flush=True)
                    if client == "syncd":
                        wall, failed = await run_syncd(api_url, pg.admin_url, f"bench_{scope}")
                    else:
                        wall, failed = await baseline(api_url)
                    log = await request_log(api_url)
                if args.log:
                    save_log(Path(f"{args.log}.{client}.{scope}.json"), log)
                results.append(outcome(client, scope, args, wall, log, failed=failed))
    print(render(results))
    print("targets (syncd): quota used >= 90 %, 429 share < 2 %, early = 0")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--quota", type=float, default=25.0, help="requests/s per bucket")
    parser.add_argument("--burst", type=int, help="bucket size (default: one second's worth)")
    parser.add_argument("--scopes", default="endpoint,key", help="endpoint, key or both")
    parser.add_argument("--clients", default="syncd,baseline", help="syncd, baseline or both")
    parser.add_argument(
        "--log", metavar="PREFIX", help="write each request log to PREFIX.CLIENT.SCOPE.json"
    )
    args = parser.parse_args()
    args.scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if args.burst is None:
        args.burst = max(1, round(args.quota))
    if set(args.scopes) - {"endpoint", "key"} or set(args.clients) - {"syncd", "baseline"}:
        parser.error("--scopes takes endpoint/key, --clients syncd/baseline")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
