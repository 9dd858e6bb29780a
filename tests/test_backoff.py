"""Pure waiting rules: Retry-After parsing, full-jitter backoff, the rate-limit wait."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.backoff import backoff_delay_s, parse_retry_after, retry_wait_s

NOW = dt.datetime(2026, 3, 5, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("5", 5.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-1", None),
        ("-0.5", None),
        ("inf", None),
        ("nan", None),
        ("1e400", None),
        ("soon", None),
        ("5 seconds", None),
        ("Thu, 05 Mar 2026 12:00:30 GMT", 30.0),
        ("Thu, 05 Mar 2026 12:02:00 GMT", 120.0),
        ("Thursday, 05-Mar-26 12:00:10 GMT", 10.0),
        ("Thu Mar  5 12:00:07 2026", 7.0),
        ("Thu, 05 Mar 2026 11:59:00 GMT", 0.0),  # in the past: a skewed clock means "now"
        ("Thu, 99 Foo 2026 12:00:00 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP-dates become seconds; negative or garbage is None."""
    assert parse_retry_after(header, NOW) == expected


def test_parse_retry_after_naive_now_is_utc() -> None:
    """A naive `now` is read as UTC rather than crashing on the comparison."""
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Thu, 05 Mar 2026 12:00:30 GMT", naive) == 30.0


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 1.0, 1.0),
        (0, 0.5, 0.5),
        (1, 1.0, 2.0),
        (3, 1.0, 8.0),
        (3, 0.25, 2.0),
        (10, 1.0, 60.0),  # capped
        (10, 0.5, 30.0),
        (0, 0.0, 0.0),  # full jitter can draw zero; retry_wait_s floors it
        (-3, 1.0, 1.0),  # negative attempts count as the first
        (10_000, 1.0, 60.0),  # no float overflow
        (2, 7.0, 4.0),  # rand clamped to [0, 1]
    ],
)
def test_backoff_delay_full_jitter(attempt: int, rand: float, expected: float) -> None:
    """rand * min(cap, base * 2**attempt)."""
    assert backoff_delay_s(attempt, base_s=1.0, cap_s=60.0, rand=rand) == expected


@given(attempt=st.integers(0, 2_000), rand=st.floats(0, 1))
def test_backoff_delay_stays_within_cap(attempt: int, rand: float) -> None:
    """Whatever the attempt and the draw, 0 <= delay <= cap."""
    assert 0.0 <= backoff_delay_s(attempt, base_s=0.5, cap_s=120.0, rand=rand) <= 120.0


@pytest.mark.parametrize(
    ("retry_after_s", "attempt", "rand", "expected"),
    [
        (5.0, 0, 0.9, 5.0),  # Retry-After wins over backoff
        (0.0, 0, 0.9, 0.5),  # Retry-After: 0 is floored: no tight loop
        (0.2, 4, 0.9, 0.5),
        (300.0, 0, 0.9, 300.0),  # above the cap: honoured in full, never cut short
        (None, 0, 0.0, 0.5),  # jitter drew 0: floored
        (None, 0, 1.0, 1.0),
        (None, 3, 0.5, 4.0),
        (None, 20, 1.0, 120.0),  # backoff is capped
        (None, 20, 0.001, 0.5),
    ],
)
def test_retry_wait(
    retry_after_s: float | None, attempt: int, rand: float, expected: float
) -> None:
    """Retry-After (floored, uncapped), else floored and capped full-jitter backoff."""
    wait = retry_wait_s(retry_after_s, attempt, base_s=1.0, floor_s=0.5, cap_s=120.0, rand=rand)
    assert wait == pytest.approx(expected)
