"""The daemon's own HTTP port: /healthz (alive), /readyz (useful), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd.clock import SYSTEM_CLOCK, Clock
from syncd.config import Settings
from syncd.errors import StorageError
from syncd.metrics import refresh_lag, seed_last_success
from syncd.models import Source
from syncd.storage import Store

log = structlog.get_logger("syncd.web")

STALE_AFTER_INTERVALS = 3


async def readiness_problems(
    store: Store, settings: Settings, streams: list[Source], now: dt.datetime
) -> list[str]:
    """Why the daemon is not ready; empty when it is."""
    try:
        await store.ping()
    except StorageError as exc:
        return [f"database unreachable: {exc}"]
    problems = []
    for stream in streams:
        state = await store.load_state(stream)
        last = state.get("last_success_at") if state else None
        limit = dt.timedelta(seconds=STALE_AFTER_INTERVALS * settings.poll_interval_s(stream.value))
        if last is None:
            problems.append(f"stream {stream.value} has not synced successfully yet")
        elif now - last > limit:
            problems.append(
                f"stream {stream.value} last synced {int((now - last).total_seconds())} s ago"
            )
    return problems


async def seed_metrics_from_state(store: Store, streams: list[Source]) -> None:
    """Export each stream's last success from `sync_state`, so a restarted or standby
    replica has the series before (or without) a success of its own."""
    try:
        last = await store.last_successes()
    except StorageError as exc:
        log.warning("last_success_not_seeded", error=str(exc))
        return
    wanted = {s.value for s in streams}
    seed_last_success({k: v.timestamp() for k, v in last.items() if k in wanted})
    log.debug("last_success_seeded", streams=sorted(wanted & last.keys()))


def _seeding(store: Store, streams: list[Source]) -> Any:
    """In the background: the port answers /healthz even while the database is away."""

    async def context(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(seed_metrics_from_state(store, streams))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def webhook_slug(body: Any) -> str | None:
    """The run slug in a callback body, wherever CoreClaw puts it (its shape is undocumented)."""
    if not isinstance(body, dict):
        return None
    for holder in (body, body.get("data"), body.get("run")):
        if isinstance(holder, dict):
            for key in ("slug", "run_slug", "runSlug"):
                value = holder.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return None


def _webhook_handler(token: str, on_run_finished: Callable[[str], None]) -> Any:
    async def webhook(request: web.Request) -> web.Response:
        given = request.headers.get("X-Syncd-Token") or request.query.get("token") or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("webhook_unauthorized", remote=request.remote)
            return web.json_response({"error": "missing or wrong token"}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        slug = webhook_slug(body)
        if slug is None:
            return web.json_response({"error": "no run slug in the body"}, status=400)
        log.info("webhook_received", slug=slug)
        on_run_finished(slug)
        return web.json_response({"status": "refresh queued", "slug": slug}, status=202)

    return webhook


def create_app(
    store: Store,
    settings: Settings,
    streams: list[Source],
    *,
    clock: Clock = SYSTEM_CLOCK,
    on_run_finished: Callable[[str], None] | None = None,
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        problems = await readiness_problems(store, settings, streams, clock.now())
        if problems:
            return web.json_response({"status": "not ready", "reasons": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        refresh_lag(clock.unix_s())
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.cleanup_ctx.append(_seeding(store, streams))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    token = settings.webhook_token.get_secret_value() if settings.webhook_token else ""
    if token and on_run_finished is not None:
        app.router.add_post("/webhook/coreclaw", _webhook_handler(token, on_run_finished))
    return app


async def start_web(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("http_listening", host=host, port=port)
    return runner
