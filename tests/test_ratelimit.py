"""The shared limiter: rate maths as tables, then the async gate on a fake clock."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import pytest

from syncd.ratelimit import (
    RateLimiter,
    RatePolicy,
    RateState,
    accepted_rate_per_s,
    next_send_at,
)
from tests.clock import FakeClock

POLICY = RatePolicy(
    max_rate_per_s=20.0,
    min_rate_per_s=0.5,
    initial_rate_per_s=2.0,
    max_concurrency=2,
    start_doubling_s=1.0,
    increase_per_s=1.0,
    probe_per_s=0.1,
    probe_speedup_s=5.0,
    decrease_factor=0.9,
    blind_decrease_factor=0.5,
    window_s=10.0,
)
# The legacy law with small numbers: +0.5/s per 3 successes, halving, 0.25..4/s.
LEGACY = replace(
    RatePolicy.legacy(
        max_rate_per_s=4.0, min_rate_per_s=0.25, initial_rate_per_s=2.0, max_concurrency=2
    ),
    increase_per_s=0.5,
    success_streak=3,
)


def limiter_on(clock: FakeClock, policy: RatePolicy = POLICY) -> RateLimiter:
    return RateLimiter(policy, monotonic=clock.monotonic, sleep=clock.sleep)


# -- the rate maths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "policy", "gain"),
    [
        (RateState(2.0), POLICY, 2.0 * math.log(2)),  # start: doubling every second
        (RateState(8.0), POLICY, 8.0 * math.log(2)),
        (RateState(2.0), replace(POLICY, start_doubling_s=0.0), 1.0),  # no start phase
        (RateState(4.0, limit_per_s=8.0), POLICY, 1.0),  # below the known limit: increase_per_s
        (RateState(8.0, limit_per_s=8.0), POLICY, 0.1),  # at it: the probe
        (RateState(9.0, limit_per_s=8.0, probe_s=5.0), POLICY, 0.2),  # probe speeds up ...
        (RateState(9.0, limit_per_s=8.0, probe_s=10.0), POLICY, 0.3),  # ... with time held
        (RateState(9.0, 8.0, probe_s=10.0), replace(POLICY, probe_speedup_s=0.0), 0.1),
    ],
)
def test_gain_per_s(state: RateState, policy: RatePolicy, gain: float) -> None:
    """Doubling before any limit, fast up to the known limit, a slow, speeding probe above."""
    assert state.gain_per_s(policy) == pytest.approx(gain)


@pytest.mark.parametrize(
    ("state", "sending_s", "rate", "probe_s"),
    [
        (RateState(4.0, 8.0), 0.25, 4.25, 0.0),  # one interval at 4/s earns 0.25 s
        (RateState(4.0, 8.0), 60.0, 4.25, 0.0),  # an idle minute earns no more
        (RateState(4.0, 8.0), 0.0, 4.0, 0.0),  # not waiting for the rate: nothing
        (RateState(2.0), 0.5, 2.0 + math.log(2), 0.0),  # start phase
        (RateState(10.0, 10.0), 0.1, 10.01, 0.1),  # probing: probe time adds up
        (RateState(10.0, 10.0, probe_s=2.0), 0.1, 10.0 + 0.1 * 1.4 * 0.1, 2.1),
        (RateState(0.5, 8.0), 10.0, 1.0, 0.0),  # one success at most doubles the rate
        (RateState(19.9), 1.0, 20.0, 0.0),  # never above the ceiling
    ],
)
def test_after_success(state: RateState, sending_s: float, rate: float, probe_s: float) -> None:
    """Each success earns the time it took, at most one request interval."""
    got = state.after_success(POLICY, sending_s)
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
        state = state.after_success(policy, interval)
    assert (state.rate_per_s - start) / elapsed == pytest.approx(policy.increase_per_s)


@pytest.mark.parametrize(
    ("state", "accepted", "rate", "limit"),
    [
        (RateState(8.0), None, 4.0, 8.0),  # nothing measured: halve the nominal rate
        (RateState(8.0, 6.0), 5.0, 4.5, 5.0),  # below what upstream accepted
        (RateState(8.0), 12.0, 7.2, 8.0),  # accepted above nominal: nominal is the basis
        (RateState(50.0), 9.0, 8.1, 9.0),  # a nominal rate far above what got through
        (RateState(0.6), None, 0.5, 0.6),  # never below the floor
    ],
)
def test_after_rate_limited(
    state: RateState, accepted: float | None, rate: float, limit: float
) -> None:
    """The cut starts from min(nominal, accepted), and that becomes the known limit."""
    got = replace(state, probe_s=7.0).after_rate_limited(POLICY, accepted)
    assert got.rate_per_s == pytest.approx(rate)
    assert got.limit_per_s == pytest.approx(limit)
    assert got.probe_s == 0.0  # the probe starts over


@pytest.mark.parametrize(
    ("events", "rate", "streak"),
    [
        ("", 2.0, 0),
        ("ss", 2.0, 2),  # below the streak: no change yet
        ("sss", 2.5, 0),  # one additive step
        ("ssssss", 3.0, 0),
        ("s" * 30, 4.0, 0),  # never above the ceiling
        ("x", 1.0, 0),  # multiplicative decrease
        ("xx", 0.5, 0),  # on every rate-limit answer
        ("xxxxxx", 0.25, 0),  # never below the floor
        ("ssx", 1.0, 0),  # a 429 resets the streak
        ("ssxsss", 1.5, 0),
    ],
)
def test_legacy_law(events: str, rate: float, streak: int) -> None:
    """The legacy preset: a step per streak of successes, halving on every 429."""
    state = RateState.initial(LEGACY)
    for event in events:
        if event == "s":
            state = state.after_success(LEGACY, 0.0)
        else:
            state = state.after_rate_limited(LEGACY, None)
    assert state.rate_per_s == pytest.approx(rate)
    assert state.streak == streak


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
    "kwargs",
    [
        {"min_rate_per_s": 0.0},
        {"initial_rate_per_s": 50.0},
        {"max_concurrency": 0},
        {"success_streak": -1},
        {"decrease_factor": 1.0},
        {"blind_decrease_factor": 0.0},
        {"probe_per_s": -0.1},
        {"window_s": -1.0},
    ],
)
def test_invalid_policy(kwargs: dict[str, Any]) -> None:
    """Nonsense limits are refused at construction."""
    with pytest.raises(ValueError):
        RatePolicy(**kwargs)


def test_default_policy_is_adaptive_and_legacy_is_reachable() -> None:
    """The defaults are the adaptive policy; the first limiter stays available by name."""
    assert RatePolicy().decrease_factor == 0.9 and RatePolicy().window_s > 0
    legacy = RatePolicy.legacy(max_rate_per_s=50.0, max_concurrency=3)
    assert (legacy.max_rate_per_s, legacy.max_concurrency) == (50.0, 3)
    assert (legacy.success_streak, legacy.increase_per_s, legacy.decrease_factor) == (10, 0.25, 0.5)


# -- the async limiter on a fake clock -----------------------------------------


async def test_requests_are_spaced_by_the_rate() -> None:
    """At 2 requests/s, three requests go out at t=0, 0.5, 1.0."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    sent = []
    for _ in range(3):
        async with limiter.slot():
            sent.append(clock.now)
    assert sent == pytest.approx([0.0, 0.5, 1.0])


async def test_gate_holds_every_request_until_the_wait_is_over() -> None:
    """After record_rate_limited(30), nothing is sent before t=30; the first cut halves."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    async with limiter.slot():
        pass
    assert limiter.record_rate_limited(30.0) == 30.0
    assert limiter.rate_per_s == 1.0
    sent: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            sent.append(clock.now)

    await asyncio.gather(*(request() for _ in range(3)))
    assert len(sent) == 3
    assert min(sent) >= 30.0
    assert sorted(sent) == sent  # spacing still applies after the gate opens
    assert sent[1] - sent[0] >= 1.0


async def test_gate_only_moves_forward() -> None:
    """A shorter wait reported later does not reopen a gate closed for longer."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    limiter.record_rate_limited(60.0)
    limiter.record_rate_limited(1.0)
    assert limiter.not_before == 60.0


@pytest.mark.parametrize(("policy", "rate"), [(POLICY, 1.0), (LEGACY, 0.5)])
async def test_answers_while_the_gate_is_closed_cut_once(policy: RatePolicy, rate: float) -> None:
    """A second 429 from a request sent before the gate closed extends it, no second cut."""
    clock = FakeClock()
    limiter = limiter_on(clock, policy)
    limiter.record_rate_limited(2.0)
    clock.now = 0.1
    assert limiter.record_rate_limited(5.0) == pytest.approx(5.1)
    assert limiter.rate_per_s == rate  # the legacy preset cuts on every answer


async def test_cut_from_what_upstream_accepted() -> None:
    """A later 429 cuts to 0.9 x accepted rate since the previous one (wait counted <= 1 s)."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, initial_rate_per_s=16.0))
    limiter.record_rate_limited(3.0)  # blind: 16 -> 8, gate until t=3
    assert (limiter.rate_per_s, limiter.limit_per_s) == (8.0, 16.0)
    for t in (3.0, 3.5, 4.0, 4.5, 5.0, 5.5):  # 6 accepted, not paced: no increase
        clock.now = t
        limiter.record_success()
    clock.now = 6.0
    limiter.record_rate_limited(0.5)
    # measured from t=2 (1 s before the gate reopened), not t=0: 6 / 4 s
    assert limiter.limit_per_s == pytest.approx(1.5)
    assert limiter.rate_per_s == pytest.approx(1.35)


async def test_paced_requests_raise_the_rate_idle_ones_do_not() -> None:
    """The rate grows only while requests wait for it, by increase_per_s per second."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, start_doubling_s=0.0))
    for _ in range(3):  # t = 0, 0.5, ~0.9: the first success earns nothing
        async with limiter.slot():
            pass
        limiter.record_success()
    assert limiter.rate_per_s == pytest.approx(2.0 + 0.5 + 1 / 2.5)
    before = limiter.rate_per_s
    clock.now += 60.0  # idle: the next request does not wait
    async with limiter.slot():
        pass
    limiter.record_success()
    assert limiter.rate_per_s == before


async def test_rate_stays_between_floor_and_ceiling() -> None:
    """Endless successes stop at the ceiling, endless 429s at the floor."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    for _ in range(500):
        async with limiter.slot():
            pass
        limiter.record_success()
    assert limiter.rate_per_s == POLICY.max_rate_per_s
    for _ in range(50):
        limiter.record_rate_limited(0.0)
        clock.now += 1.0
    assert limiter.rate_per_s == POLICY.min_rate_per_s


async def test_concurrency_ceiling() -> None:
    """No more than max_concurrency requests are in flight at once."""
    clock = FakeClock()
    fast = RatePolicy(max_rate_per_s=1000.0, initial_rate_per_s=1000.0, max_concurrency=2)
    limiter = limiter_on(clock, fast)
    in_flight = peak = 0

    async def request() -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            in_flight -= 1

    await asyncio.gather(*(request() for _ in range(6)))
    assert peak == 2


async def test_legacy_preset_through_the_limiter() -> None:
    """RatePolicy.legacy(): +0.25/s after 10 successes, halved by each 429."""
    clock = FakeClock()
    limiter = limiter_on(clock, RatePolicy.legacy())
    for _ in range(10):
        limiter.record_success()
    assert limiter.rate_per_s == 2.25
    limiter.record_rate_limited(1.0)
    clock.now = 1.0
    limiter.record_rate_limited(1.0)
    assert limiter.rate_per_s == pytest.approx(2.25 / 4)
