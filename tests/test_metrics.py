"""The metrics' own logic: series declared at 0, last success seeded without going back,
lag derived just before a scrape, the task count.  (The monitoring pack that reads them is
tested in test_monitoring.py.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from syncd import metrics

STREAM = "t-metrics"  # a stream label no other test uses


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture(autouse=True)
def forget_the_stream() -> Iterator[None]:
    yield
    for gauge in (metrics.LAST_SUCCESS, metrics.LAG, metrics.POLL_INTERVAL, metrics.LEASE_HELD):
        with contextlib.suppress(KeyError):  # not every test makes every series
            gauge.remove(STREAM)


def test_declared_streams_export_every_series_at_zero() -> None:
    """After declare_streams every per-stream series exists (counters at 0, the interval set,
    the lease not held)."""
    metrics.declare_streams({STREAM: 30.0}, ["/api/test"])
    assert sample("syncd_poll_interval_seconds", stream=STREAM) == 30.0
    assert sample("syncd_stream_lease_held", stream=STREAM) == 0
    for outcome in metrics.ROW_OUTCOMES:
        assert sample("syncd_rows_total", stream=STREAM, outcome=outcome) == 0
    for outcome in metrics.CYCLE_OUTCOMES:
        assert sample("syncd_cycle_duration_seconds_count", stream=STREAM, outcome=outcome) == 0


def test_seeding_last_success_never_goes_back() -> None:
    """A seeded value is taken when newer than what this process has, ignored when older."""
    metrics.seed_last_success({STREAM: 1000.0})
    assert sample("syncd_last_success_timestamp_seconds", stream=STREAM) == 1000.0
    metrics.seed_last_success({STREAM: 900.0})
    assert sample("syncd_last_success_timestamp_seconds", stream=STREAM) == 1000.0
    metrics.seed_last_success({STREAM: 1100.0})
    assert sample("syncd_last_success_timestamp_seconds", stream=STREAM) == 1100.0


@pytest.mark.parametrize(("now_s", "lag_s"), [(1060.0, 60.0), (1000.0, 0.0), (990.0, 0.0)])
def test_lag_is_now_minus_last_success_never_negative(now_s: float, lag_s: float) -> None:
    """The lag gauge is the time since the last success; a clock behind it reads 0, not less."""
    metrics.LAST_SUCCESS.labels(STREAM).set(1000.0)
    metrics.refresh_lag(now_s)
    assert sample("syncd_sync_lag_seconds", stream=STREAM) == lag_s


def test_no_lag_for_a_stream_that_never_succeeded() -> None:
    """A last-success of 0 (never) derives no lag series."""
    metrics.LAST_SUCCESS.labels(STREAM).set(0)
    metrics.refresh_lag(5000.0)
    assert sample("syncd_sync_lag_seconds", stream=STREAM) is None


def test_task_count_is_zero_outside_an_event_loop() -> None:
    """Scraped from a thread with no running loop, the task gauge reads 0."""
    assert metrics.count_tasks() == 0


async def test_task_count_counts_the_running_loops_tasks() -> None:
    """Inside the loop it counts the live tasks (at least the current one)."""
    assert metrics.count_tasks() >= 1
