"""The rate maths (pure): how a lane's rate moves, the accepted rate, the pace and the window."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from syncd.ratemath import RatePolicy, RateState, accepted_rate_per_s, next_send_at, window_for

POLICY = RatePolicy(
    max_rate_per_s=20.0,
    min_rate_per_s=0.5,
    initial_rate_per_s=2.0,
    max_concurrency=2,
    increase_per_s=1.0,
    recovery_share_per_s=0.0,
    probe_per_s=0.1,
    probe_doubling_s=5.0,
    decrease_factor=0.9,
    blind_decrease_factor=0.5,
    window_s=10.0,
    window_headroom=2.0,
    latency_tolerance=2.0,
)


@pytest.mark.parametrize(
    ("state", "policy", "gain"),
    [
        (RateState(4.0, limit_per_s=8.0), POLICY, 1.0),  # below the known limit: increase_per_s
        (RateState(8.0, limit_per_s=8.0), POLICY, 0.1),  # at it: the probe
        (RateState(9.0, limit_per_s=8.0, probe_s=5.0), POLICY, 0.2),  # the probe doubles ...
        (RateState(9.0, limit_per_s=8.0, probe_s=10.0), POLICY, 0.4),  # ... as it holds
        (RateState(9.0, 8.0, probe_s=10.0), replace(POLICY, probe_doubling_s=0.0), 0.1),
        # recovery towards a known limit: a share of it per second, at least increase_per_s
        (RateState(4.0, 40.0), replace(POLICY, recovery_share_per_s=0.25), 10.0),
        (RateState(2.0, 2.0 + 1e-9), replace(POLICY, recovery_share_per_s=0.25), 1.0),
    ],
)
def test_gain_per_s(state: RateState, policy: RatePolicy, gain: float) -> None:
    """Fast up to the known limit, then a probe above it whose gain doubles as it holds."""
    assert state.gain_per_s(policy) == pytest.approx(gain)


@pytest.mark.parametrize("growth", [1.5, 2.0])
@pytest.mark.parametrize(
    ("start", "rtt_s"),
    [(2.0, 0.15), (20.0, 0.15), (40.0, 0.15), (10.0, 0.005), (300.0, 0.3)],
)
def test_slow_start_grows_per_round_trip_of_answers(
    start: float, rtt_s: float, growth: float
) -> None:
    """Before any rate limit, the answers of one round trip (rate x rtt of them) multiply the
    rate by the growth, at any latency; when fewer than one answer arrives per round trip,
    each does."""
    policy = replace(
        POLICY, max_rate_per_s=None, slow_start_growth=growth, limited_slow_start_in_flight=1e9
    )
    state = RateState(start)
    answers = max(1, round(start * rtt_s))
    for _ in range(answers):
        state = state.after_success(policy, sending_s=0.0, rtt_s=rtt_s)
    assert state.rate_per_s == pytest.approx(growth * start, rel=0.01)


@pytest.mark.parametrize(
    ("rate", "rtt_s", "base_rtt_s", "step"),
    [
        (20.0, 0.15, 0.15, 0.5 / 0.15),  # 3 in flight: a round trip x1.5
        (40.0, 0.15, 0.15, math.log(1.3)),  # 6 in flight upstream: held to x1.3 a second
        (40.0, 0.15, None, math.log(1.3)),  # no lowest round trip yet: the smoothed one
        (400.0, 0.03, 0.002, 0.5 / 0.03),  # a near server, this process queueing: not held
    ],
)
def test_limited_slow_start(
    rate: float, rtt_s: float, base_rtt_s: float | None, step: float
) -> None:
    """Once rate x lowest round trip reaches 4 requests in flight, an answer adds ln 1.3 at
    most, so a second of answers (rate of them) multiplies the rate by 1.3, not a round
    trip's."""
    policy = replace(POLICY, max_rate_per_s=None)
    got = RateState(rate).after_success(policy, sending_s=0.0, rtt_s=rtt_s, base_rtt_s=base_rtt_s)
    assert got.rate_per_s - rate == pytest.approx(step)


@pytest.mark.parametrize("growth", [1.3, 2.0])
def test_limited_slow_start_grows_by_its_factor_a_second(growth: float) -> None:
    policy = replace(POLICY, max_rate_per_s=None, limited_growth_per_s=growth)
    state, elapsed = RateState(40.0), 0.0
    while elapsed < 1.0:  # answers of one second, as they come at the growing rate
        elapsed += 1.0 / state.rate_per_s
        state = state.after_success(policy, sending_s=0.0, rtt_s=0.15, base_rtt_s=0.15)
    assert state.rate_per_s == pytest.approx(40.0 * growth, rel=0.05)


@pytest.mark.parametrize(
    ("state", "sending_s", "rate", "probe_s"),
    [
        (RateState(4.0, 8.0), 0.25, 4.25, 0.0),  # one interval at 4/s earns 0.25 s
        (RateState(4.0, 8.0), 60.0, 4.25, 0.0),  # an idle minute earns no more
        (RateState(4.0, 8.0), 0.0, 4.0, 0.0),  # no time spent sending: nothing
        (RateState(10.0, 10.0), 0.1, 10.01, 0.1),  # probing: probe time adds up
        (RateState(10.0, 10.0, probe_s=5.0), 0.1, 10.0 + 0.1 * 2.0 * 0.1, 5.1),
        (RateState(0.5, 8.0), 10.0, 1.0, 0.0),  # one success at most doubles the rate
        (RateState(19.99, 30.0), 1.0, 20.0, 0.0),  # never above the ceiling
        (RateState(19.0), 0.0, 20.0, 0.0),  # slow start too
    ],
)
def test_after_success(state: RateState, sending_s: float, rate: float, probe_s: float) -> None:
    """After slow start each success earns the time it took, at most one request interval."""
    got = state.after_success(POLICY, sending_s=sending_s, rtt_s=0.1)
    assert got.rate_per_s == pytest.approx(rate)
    assert got.probe_s == pytest.approx(probe_s)
    assert got.limit_per_s == state.limit_per_s


@pytest.mark.parametrize("start", [2.0, 5.0, 20.0])
def test_increase_is_per_second_whatever_the_rate(start: float) -> None:
    """One second of sending at the allowed rate adds increase_per_s, at 2/s as at 20/s."""
    policy = replace(POLICY, max_rate_per_s=100.0)
    state = RateState(start, limit_per_s=100.0)
    elapsed = 0.0
    while elapsed < 1.0:
        interval = 1.0 / state.rate_per_s
        elapsed += interval
        state = state.after_success(policy, sending_s=interval, rtt_s=0.1)
    assert (state.rate_per_s - start) / elapsed == pytest.approx(policy.increase_per_s)


@pytest.mark.parametrize(
    ("state", "accepted", "rate", "limit"),
    [
        (RateState(8.0), None, 4.0, 4.0),  # nothing measured: halve the nominal rate
        (RateState(8.0, 6.0), 5.0, 4.5, 5.0),  # below what upstream accepted
        (RateState(8.0, 10.0), 12.0, 7.2, 8.0),  # accepted above nominal: nominal is the basis
        (RateState(50.0, 40.0), 9.0, 8.1, 9.0),  # a nominal rate far above what got through
        (RateState(50.0), 9.0, 4.5, 4.5),  # the first cut (a burst inflated it): deep
        (RateState(0.6), None, 0.5, 0.5),  # never below the floor
    ],
)
def test_after_rate_limited(
    state: RateState, accepted: float | None, rate: float, limit: float
) -> None:
    """The cut starts from min(nominal, accepted), and that becomes the known limit; the
    first one, ending slow start, is the deep one, and only a probe climbs above it."""
    got = replace(state, probe_s=7.0).after_rate_limited(POLICY, accepted)
    assert got.rate_per_s == pytest.approx(rate)
    assert got.limit_per_s == pytest.approx(limit)
    assert got.probe_s == 0.0  # the probe starts over


@pytest.mark.parametrize(
    ("state", "accepted", "fitted", "rate", "limit"),
    [
        (RateState(50.0), 40.0, 25.0, 22.5, 25.0),  # the fitted quota: a measured limit
        (RateState(50.0), 40.0, 10.0, 18.0, 20.0),  # never below the deep cut's basis
        (RateState(50.0), 40.0, 45.0, 36.0, 40.0),  # nor above what got through
        (RateState(50.0), None, 25.0, 25.0, 25.0),  # nothing measured: the blind cut
        (RateState(50.0, 30.0), 28.0, 10.0, 25.2, 28.0),  # a later cut ignores any fit
    ],
)
def test_after_the_first_rate_limit_with_a_fitted_quota(
    state: RateState, accepted: float | None, fitted: float, rate: float, limit: float
) -> None:
    """The quota read off the first rate limit (bucketfit.py) stands in for a measured
    accepted rate, kept between half and all of what was accepted."""
    got = state.after_rate_limited(POLICY, accepted, fitted)
    assert (got.rate_per_s, got.limit_per_s) == (pytest.approx(rate), pytest.approx(limit))


@pytest.mark.parametrize(
    ("times", "since", "now", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 0.0, 4.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 1.0, 5.0, 1.0),  # `since` itself is excluded
        ([1.0, 1.5, 2.0, 2.5, 9.0], 0.0, 5.0, 0.8),  # later ones too
        ([1.0, 2.0, 3.0], 0.0, 3.0, None),  # too few to tell
        ([1.0, 1.0, 1.0, 1.0], 1.0, 1.0, None),  # no time at all
    ],
)
def test_accepted_rate_per_s(
    times: list[float], since: float, now: float, expected: float | None
) -> None:
    """Successes per second in (since, now], None below four."""
    assert accepted_rate_per_s(times, since=since, now=now) == (
        pytest.approx(expected) if expected is not None else None
    )


@pytest.mark.parametrize(
    ("now", "last", "rate", "not_before", "expected"),
    [
        (10.0, None, 2.0, float("-inf"), 10.0),  # first request: now
        (10.0, 9.0, 2.0, float("-inf"), 10.0),  # spacing already elapsed
        (10.0, 9.8, 2.0, float("-inf"), 10.3),  # 1/rate after the last one
        (10.0, 9.8, 0.5, float("-inf"), 11.8),
        (10.0, None, 2.0, 25.0, 25.0),  # the gate wins
        (10.0, 9.8, 2.0, 10.1, 10.3),  # spacing later than the gate
    ],
)
def test_next_send_at(
    now: float, last: float | None, rate: float, not_before: float, expected: float
) -> None:
    """Requests are spaced 1/rate apart and never sent before not_before."""
    got = next_send_at(now=now, last_sent_at=last, rate_per_s=rate, not_before=not_before)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "min_rtt_s", "cap", "window"),
    [
        (10.0, None, 32, 2),  # nothing measured: a small first window
        (10.0, None, 1, 1),
        (25.0, 0.15, 32, 9),  # 2 x 25/s x 150 ms + 1: the far API's in-flight need, doubled
        (100.0, 0.15, 32, 31),
        (1000.0, 0.15, 32, 32),  # never above max_concurrency
        (500.0, 0.002, 32, 3),  # a near server needs few in flight
        (0.1, 0.3, 32, 2),
    ],
)
def test_window_follows_the_rate_and_the_round_trip(
    rate: float, min_rtt_s: float | None, cap: int, window: int
) -> None:
    """Requests in flight = headroom x rate x lowest round trip + 1, within [1, max_concurrency]."""
    policy = replace(POLICY, max_rate_per_s=None, max_concurrency=cap)
    assert window_for(policy, rate, min_rtt_s) == window


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_rate_per_s": 0.0},
        {"initial_rate_per_s": 50.0},
        {"max_concurrency": 0},
        {"decrease_factor": 1.0},
        {"blind_decrease_factor": 0.0},
        {"probe_per_s": -0.1},
        {"window_s": -1.0},
        {"latency_tolerance": 0.5},
        {"window_headroom": 0.0},
    ],
)
def test_invalid_policy(kwargs: dict[str, Any]) -> None:
    """Nonsense limits are refused at construction."""
    with pytest.raises(ValueError):
        replace(POLICY, **kwargs)


def test_default_policy_has_no_ceiling() -> None:
    """By default nothing caps the rate below what upstream grants."""
    policy = RatePolicy()
    assert policy.max_rate_per_s is None and policy.max_concurrency >= 16
