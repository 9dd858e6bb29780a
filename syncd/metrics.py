"""Prometheus metrics, defined once.  Labels never carry secrets or URLs with tokens."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram, Info

from syncd import __version__

# RSS and open fds come from prometheus_client's default process collector
# (process_resident_memory_bytes, process_open_fds), served with these.

REQUESTS = Counter(
    "syncd_upstream_requests_total",
    "HTTP requests sent to the CoreClaw API",
    ["endpoint", "http_status"],  # http_status is "error" when no response arrived
)
RATE_LIMITED = Counter(
    "syncd_upstream_rate_limited_total",
    "Responses that asked syncd to slow down (HTTP 429 or app code 13000/4290)",
    ["endpoint"],
)
RETRIES = Counter(
    "syncd_upstream_retries_total",
    "Requests retried after a rate limit, 5xx, timeout or bad body",
    ["endpoint", "reason"],
)
BACKOFF_SECONDS = Counter(
    "syncd_upstream_backoff_seconds_total",
    "Seconds spent waiting before retries and after rate limits",
    ["endpoint"],
)
ALLOWED_RATE = Gauge(
    "syncd_upstream_allowed_rate_per_second",
    "Request rate the controller currently allows, per endpoint",
    ["endpoint"],
)
WINDOW = Gauge(
    "syncd_upstream_window_requests",
    "Requests the controller currently lets be in flight at once, per endpoint",
    ["endpoint"],
)
ROWS = Counter(
    "syncd_rows_total",
    "Run records processed, by outcome (seen, inserted, updated, rejected)",
    ["stream", "outcome"],
)
CYCLE_SECONDS = Histogram(
    "syncd_cycle_duration_seconds",
    "Wall time of one sync cycle",
    ["stream", "outcome"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
LAST_SUCCESS = Gauge(
    "syncd_last_success_timestamp_seconds",
    "Unix time of the last successful cycle",
    ["stream"],
)
BACKFILL_PAGES = Gauge(
    "syncd_backfill_pages_done",
    "Pages stored in the current or last full scan (backfill or reconciliation)",
    ["stream"],
)
BACKFILL_TOTAL_PAGES = Gauge(
    "syncd_backfill_pages_total",
    "Pages the current or last full scan expects, from upstream's count",
    ["stream"],
)
LAG = Gauge(
    "syncd_sync_lag_seconds",
    "Seconds since the stream's last successful cycle (updated when scraped)",
    ["stream"],
)

LEASE_HELD = Gauge(
    "syncd_stream_lease_held",
    "1 while this process holds the stream's lease and polls it, 0 while it stands by",
    ["stream"],
)
POLL_INTERVAL = Gauge(
    "syncd_poll_interval_seconds",
    "Seconds between the stream's cycles (SYNCD_POLL_INTERVAL_V1 / _V2)",
    ["stream"],
)
BUILD = Info("syncd_build", "The running syncd: its version and the Python that runs it")
BUILD.info(
    {
        "version": __version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
)

TASKS = Gauge(
    "syncd_asyncio_tasks",
    "asyncio tasks alive in the daemon's event loop (counted when scraped)",
)


def count_tasks() -> int:
    """Tasks of the running event loop; 0 when called outside one."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0


TASKS.set_function(count_tasks)

CYCLE_OUTCOMES = ("ok", "stopped", "error")
ROW_OUTCOMES = ("seen", "inserted", "updated", "rejected")


def declare_streams(intervals_s: Mapping[str, float], endpoints: Iterable[str]) -> None:
    """Create every per-stream series at 0 when the daemon starts.

    A counter that first appears at 1 hides that increment from `rate()` and
    `increase()`, and an alert cannot compare a series that does not exist yet.
    A stream's lease counts as not held until the daemon has taken it.
    """
    for stream, interval_s in intervals_s.items():
        POLL_INTERVAL.labels(stream).set(interval_s)
        LEASE_HELD.labels(stream).set(0)
        for outcome in CYCLE_OUTCOMES:
            CYCLE_SECONDS.labels(stream, outcome)
        for outcome in ROW_OUTCOMES:
            ROWS.labels(stream, outcome)
    for endpoint in endpoints:
        RATE_LIMITED.labels(endpoint)


def seed_last_success(last_success_s: Mapping[str, float]) -> None:
    """Start the last-success gauges from the database (`sync_state.last_success_at`).

    A restarted or standby process then exports when each stream last synced,
    not nothing; a value this process already set (a newer success) is kept.
    """
    current = {
        sample.labels["stream"]: sample.value
        for metric in LAST_SUCCESS.collect()
        for sample in metric.samples
    }
    for stream, at_s in last_success_s.items():
        if at_s > current.get(stream, 0.0):
            LAST_SUCCESS.labels(stream).set(at_s)


def refresh_lag(now_s: float) -> None:
    """Derive the lag gauges from the last-success gauges, just before a scrape."""
    for metric in LAST_SUCCESS.collect():
        for sample in metric.samples:
            if sample.value > 0:
                LAG.labels(sample.labels["stream"]).set(max(0.0, now_s - sample.value))
