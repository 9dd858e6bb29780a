"""Prometheus metrics, defined once.  Labels never carry secrets or URLs with tokens."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "Pages fetched in the current or last full scan",
    ["stream"],
)
