"""Benchmark: syncd's shared rate limiter against a rate-limited CoreClaw simulator.

For each policy, starts a fresh simulator in-process on 127.0.0.1 (scenario
"ratelimit": a token bucket of --server-rps per API key with --burst, 429s and
HTTP-200/13000 answers, Retry-After on half of them), then drives ONE
CoreClawClient from two tasks paging v1 and v2 over and over, like the
daemon's two streams, for --seconds.  From the simulator's request log it
prints, per policy:

    utilisation   accepted requests/s / server rps      target >= 90 %
    429 share     rate-limited answers / requests        target < 2 %
    early         requests sent before an announced Retry-After had passed: target 0
    requests      everything the simulator received in the window

Policies: `fixed` (the ceiling, no adaptation: a naive client that still
honours Retry-After), `legacy` (`RatePolicy.legacy()`, the limiter before
adaptive recovery) and `adaptive` (`Settings.rate_policy()`, what the daemon
runs).  Every policy meets the same simulator (same seed, full bucket).  The
figures are printed, never asserted: wall-clock timing makes them vary a
little from run to run.

    python bench/ratelimit.py [--seconds 30] [--server-rps 10] [--burst 10]
                              [--ceiling 50] [--concurrency 4] [--policies legacy,adaptive]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from syncd.client import RATE_LIMIT_CODES, CoreClawClient
from syncd.config import Settings, load_settings
from syncd.errors import UpstreamError
from syncd.fakeapi import FakeApiConfig, RequestRecord, start_fake_api
from syncd.logs import configure_logging
from syncd.models import OffsetMode, Source
from syncd.ratelimit import RateLimiter, RatePolicy

PAGE_SIZE = 20  # 500 runs: 25 pages per pass, then the stream starts over
SEED = 1


def _fixed(settings: Settings) -> RatePolicy:
    ceiling = settings.max_requests_per_s
    return RatePolicy(
        max_rate_per_s=ceiling,
        min_rate_per_s=ceiling,  # a floor at the ceiling: no adaptation at all
        initial_rate_per_s=ceiling,
        max_concurrency=settings.max_concurrency,
    )


def _legacy(settings: Settings) -> RatePolicy:
    ceiling = settings.max_requests_per_s
    return RatePolicy.legacy(
        max_rate_per_s=ceiling,
        initial_rate_per_s=min(settings.initial_requests_per_s, ceiling),
        min_rate_per_s=min(0.1, ceiling),
        max_concurrency=settings.max_concurrency,
    )


POLICIES: dict[str, Callable[[Settings], RatePolicy]] = {
    "fixed": _fixed,
    "legacy": _legacy,
    "adaptive": Settings.rate_policy,
}


@dataclass(frozen=True)
class Result:
    policy: str
    seconds: float
    server_rps: float
    requests: int
    accepted: int
    limited: int
    early: int
    client_errors: int
    rate_at_end: float
    limit_at_end: float | None

    @property
    def utilisation(self) -> float:
        return self.accepted / self.seconds / self.server_rps

    @property
    def limited_share(self) -> float:
        return self.limited / self.requests if self.requests else 0.0


def _is_rate_limited(rec: RequestRecord) -> bool:
    return rec.status == 429 or rec.code in RATE_LIMIT_CODES


async def _page_forever(client: CoreClawClient, source: Source, errors: list[str]) -> None:
    while True:
        try:
            async for _ in client.pages(source, offset_mode=OffsetMode.ITEMS, page_size=PAGE_SIZE):
                pass
        except UpstreamError as exc:  # e.g. still rate limited after every retry
            errors.append(f"{source.value}: {exc}")


async def measure(name: str, args: argparse.Namespace) -> Result:
    """One policy, one fresh simulator, two streams on one client for args.seconds."""
    config = FakeApiConfig(
        scenarios=frozenset({"ratelimit"}),
        rate_limit_rps=args.server_rps,
        rate_limit_burst=args.burst,
        seed=SEED,
    )
    api, runner, url = await start_fake_api(config, host="127.0.0.1")
    settings = load_settings(
        api_key=config.api_key,
        api_url=url,
        max_requests_per_s=args.ceiling,
        max_concurrency=args.concurrency,
        v2_offset_mode=OffsetMode.ITEMS,
    )
    limiter = RateLimiter(POLICIES[name](settings))
    client = CoreClawClient(settings, limiter=limiter, rand=random.Random(SEED).random)
    errors: list[str] = []
    started = time.monotonic()
    tasks = [
        asyncio.create_task(_page_forever(client, source, errors))
        for source in (Source.V1, Source.V2)
    ]
    try:
        await asyncio.sleep(args.seconds)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.close()
        await runner.cleanup()
    window = [r for r in api.requests if started <= r.time < started + args.seconds]
    return Result(
        policy=name,
        seconds=args.seconds,
        server_rps=args.server_rps,
        requests=len(window),
        accepted=sum(1 for r in window if r.status == 200 and r.code == 0),
        limited=sum(1 for r in window if _is_rate_limited(r)),
        early=sum(1 for r in window if r.early),
        client_errors=len(errors),
        rate_at_end=limiter.rate_per_s,
        limit_at_end=limiter.limit_per_s,
    )


def render(results: Sequence[Result]) -> str:
    head = (
        f"{'policy':<9}| {'utilisation':>11} | {'429 share':>9} | {'early':>5} | "
        f"{'requests':>8} | {'accepted/s':>10} | {'rate at end':>11} | {'gave up':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.policy:<9}| {r.utilisation:>11.1%} | {r.limited_share:>9.2%} | {r.early:>5} | "
            f"{r.requests:>8} | {r.accepted / r.seconds:>10.2f} | "
            f"{r.rate_at_end:>9.2f}/s | {r.client_errors:>7}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="per policy (default 30)")
    parser.add_argument("--server-rps", type=float, default=10.0, help="simulator's limit")
    parser.add_argument("--burst", type=int, help="simulator's bucket size (default: 1 s worth)")
    parser.add_argument("--ceiling", type=float, default=50.0, help="SYNCD_MAX_REQUESTS_PER_S")
    parser.add_argument("--concurrency", type=int, default=4, help="SYNCD_MAX_CONCURRENCY")
    parser.add_argument(
        "--policies",
        default="fixed,legacy,adaptive",
        help=f"comma-separated, from {', '.join(POLICIES)} (default: all)",
    )
    args = parser.parse_args(argv)
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if unknown := [p for p in args.policies if p not in POLICIES]:
        parser.error(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    if args.burst is None:
        args.burst = max(1, round(args.server_rps))
    if args.seconds <= 0 or args.server_rps <= 0 or args.burst < 1:
        parser.error("--seconds and --server-rps must be > 0, --burst >= 1")
    return args


async def run(args: argparse.Namespace) -> list[Result]:
    results = []
    for name in args.policies:
        print(f"  {name}: {args.seconds:g} s ...", file=sys.stderr, flush=True)
        results.append(await measure(name, args))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(fmt="console", level="ERROR")  # one warning per 429 would drown the table
    initial = load_settings(api_key="x").initial_requests_per_s
    print(
        f"server: token bucket {args.server_rps:g} req/s, burst {args.burst} (scenario ratelimit)\n"
        f"client: one CoreClawClient, streams v1 + v2, ceiling {args.ceiling:g} req/s, "
        f"concurrency {args.concurrency}, initial {initial:g} req/s; "
        f"{args.seconds:g} s per policy",
        flush=True,
    )
    results = asyncio.run(run(args))
    print(render(results))
    print("targets: utilisation >= 90 %, 429 share < 2 %, early = 0")


if __name__ == "__main__":
    main()
