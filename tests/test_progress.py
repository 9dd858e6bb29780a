"""Backfill progress: rate/ETA maths, the terminal line, the log cadence and the metrics."""

from __future__ import annotations

import io
from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from syncd.client import CoreClawClient
from syncd.config import load_settings
from syncd.fakeapi import FakeApiConfig, start_fake_api
from syncd.logs import TerminalSink
from syncd.models import Source
from syncd.progress import Progress, ProgressLine, render
from syncd.storage import Store
from syncd.sync import StreamSync


@pytest.mark.parametrize(
    ("start", "done", "total", "now", "rate", "eta", "fraction"),
    [
        (0, 0, None, 0.0, 0.0, None, None),
        (0, 500, 1000, 10.0, 50.0, 10.0, 0.5),
        (400, 600, 1000, 10.0, 20.0, 20.0, 0.6),  # a resumed scan's rate counts new items only
        (0, 1200, 1000, 10.0, 120.0, 0.0, 1.0),  # count moved: never negative or over 100 %
    ],
)
def test_rate_eta_fraction(
    start: int, done: int, total: int | None, now: float, rate: float, eta: float | None,
    fraction: float | None,
) -> None:  # fmt: skip
    """Rate is items this run per second; ETA is what is left at that rate."""
    p = Progress("v1", 0.0, start_items=start, done=done, total=total)
    assert p.rate(now) == rate and p.eta_s(now) == eta and p.fraction() == fraction


def test_log_cadence() -> None:
    """At most one progress log per interval, whatever the batch rate."""
    p = Progress("v1", 0.0)
    assert [p.due_for_log(t, 10.0) for t in (1.0, 5.0, 10.9, 11.0, 15.0, 21.5)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip


def test_render_and_progress_line() -> None:
    """One line, one bar per stream, redrawn in place."""
    v1 = Progress("v1", 0.0, done=520_000, total=1_000_000)
    v2 = Progress("v2", 0.0, done=100, total=None)
    line = render([v1, v2], 26.0, width=10)
    assert line == (
        "v1 [#####-----]  52% 520.0k/1.0M 20.0k/s ETA 24s | v2 [----------]   ?% 100/? 4/s ETA ?"
    )
    out = io.StringIO()
    bar = ProgressLine(TerminalSink(out))
    bar.update(Progress("v1", 0.0, done=10, total=10, finished=True))
    bar.close()
    assert out.getvalue().startswith("\r\x1b[K") and "100%" in out.getvalue()
    assert out.getvalue().endswith("\n")


async def test_backfill_reports_progress_to_logs_callback_and_metrics(
    db_url: str, store: Store
) -> None:
    """A backfill logs backfill_progress, calls on_progress per batch, sets the page gauges."""
    _, runner, url = await start_fake_api(FakeApiConfig(runs=900, api_key="k-123456"))
    settings = load_settings(api_url=url, api_key=SecretStr("k-123456"),
                             database_url=SecretStr(db_url), page_size_v1=100,
                             max_requests_per_s=500.0, initial_requests_per_s=500.0)  # fmt: skip
    seen: list[tuple[int, int | None, bool]] = []
    try:
        async with CoreClawClient(settings) as client:
            syncer = StreamSync(Source.V1, client, store, settings)
            syncer.on_progress = lambda p: seen.append((p.done, p.total, p.finished))
            with capture_logs() as logs:
                await syncer.run_cycle()
    finally:
        await runner.cleanup()
    progress_logs: list[MutableMapping[str, Any]] = [
        e for e in logs if e["event"] == "backfill_progress"
    ]
    assert progress_logs and progress_logs[0]["total"] == 900
    assert seen[-1] == (900, 900, True)
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)
    assert REGISTRY.get_sample_value("syncd_backfill_pages_total", {"stream": "v1"}) == 9
    assert REGISTRY.get_sample_value("syncd_backfill_pages_done", {"stream": "v1"}) == 10
