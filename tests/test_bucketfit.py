"""Reading upstream's quota off the first rate limit: a token bucket's rate, fitted (pure)."""

from __future__ import annotations

import pytest

from syncd.bucketfit import bucket_level, fitted_rate_per_s


def first_refusal(
    quota_per_s: float, burst: float, start_per_s: float, growth_per_s: float
) -> tuple[list[float], float]:
    """A client sending ever faster (x `growth_per_s` a second) into a token bucket:
    the accepted requests' times, and when the first one was refused."""
    tokens, now, rate, accepted = burst, 0.0, start_per_s, []
    for _ in range(100_000):
        if tokens < 1:
            return accepted, now
        tokens -= 1
        accepted.append(now)
        step = 1 / rate
        now += step
        rate *= growth_per_s**step
        tokens = min(burst, tokens + quota_per_s * step)
    raise AssertionError("the bucket never ran dry")


@pytest.mark.parametrize(
    ("accepted", "at", "rate", "burst_s", "level"),
    [
        ([0.0, 0.0, 0.0], 0.0, 4.0, 1.0, 1.0),  # 4 tokens, 3 spent at once
        ([0.0, 0.0, 0.0], 0.5, 4.0, 1.0, 3.0),  # and half a second refills 2
        ([0.0, 0.0], 10.0, 4.0, 1.0, 4.0),  # never above the burst
        ([0.0, 1.0, 2.0], 3.0, 1.0, 2.0, 2.0),  # one a second at 1/s: full again each time
    ],
)
def test_bucket_level(
    accepted: list[float], at: float, rate: float, burst_s: float, level: float
) -> None:
    assert bucket_level(accepted, at, rate, burst_s) == pytest.approx(level)


@pytest.mark.parametrize(
    ("quota", "start", "growth"),
    [(25.0, 10.0, 1.5), (25.0, 27.0, 2.0), (5.0, 2.0, 1.5), (100.0, 27.0, 1.5), (100.0, 90.0, 3.0)],
)
def test_a_bucket_with_a_second_of_burst_is_read_back(
    quota: float, start: float, growth: float
) -> None:
    """Whatever the quota and the climb, a bucket of a second's burst gives its rate back."""
    accepted, refused_at = first_refusal(quota, quota, start, growth)
    fitted = fitted_rate_per_s(accepted, refused_at, burst_s=1.0, upper_per_s=10 * quota)
    assert fitted == pytest.approx(quota, rel=0.05)


@pytest.mark.parametrize(("real_burst_s", "reads"), [(2.0, "high"), (0.5, "low")])
def test_another_burst_reads_high_or_low(real_burst_s: float, reads: str) -> None:
    """A burst larger than the second assumed reads as a higher quota (the next rate limit
    measures again); a smaller one as a lower quota."""
    accepted, refused_at = first_refusal(25.0, 25.0 * real_burst_s, 10.0, 1.5)
    fitted = fitted_rate_per_s(accepted, refused_at, burst_s=1.0, upper_per_s=1000.0)
    assert fitted is not None
    assert (fitted > 25.0 * 1.05) if reads == "high" else (fitted < 25.0 * 0.95)


def test_the_fit_stays_within_its_range() -> None:
    accepted, refused_at = first_refusal(25.0, 25.0, 10.0, 1.5)
    assert fitted_rate_per_s(accepted, refused_at, burst_s=1.0, upper_per_s=20.0) == 20.0


@pytest.mark.parametrize("accepted", [[], [0.0, 0.1, 0.2]])
def test_too_few_accepted_requests_tell_nothing(accepted: list[float]) -> None:
    assert fitted_rate_per_s(accepted, 1.0, burst_s=1.0, upper_per_s=100.0) is None
