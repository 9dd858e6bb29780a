"""The shared limiter: AIMD rate maths as tables, then the async gate on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from syncd.ratelimit import RateLimiter, RatePolicy, RateState, next_send_at

POLICY = RatePolicy(
    max_rate_per_s=4.0,
    min_rate_per_s=0.25,
    initial_rate_per_s=2.0,
    max_concurrency=2,
    increase_per_s=0.5,
    success_streak=3,
    decrease_factor=0.5,
)


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now += delay_s
        await asyncio.sleep(0)


def apply(events: str, state: RateState | None = None) -> RateState:
    """Apply a string of events: s = success, x = rate limited."""
    state = state or RateState.initial(POLICY)
    for event in events:
        state = state.after_success(POLICY) if event == "s" else state.after_rate_limited(POLICY)
    return state


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
def test_aimd(events: str, rate: float, streak: int) -> None:
    """Additive increase after a streak of successes, halving on every 429."""
    state = apply(events)
    assert state.rate_per_s == pytest.approx(rate)
    assert state.streak == streak


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
        {"success_streak": 0},
        {"decrease_factor": 1.0},
    ],
)
def test_invalid_policy(kwargs: dict[str, float]) -> None:
    """Nonsense limits are refused at construction."""
    with pytest.raises(ValueError):
        RatePolicy(**kwargs)  # type: ignore[arg-type]


async def test_requests_are_spaced_by_the_rate() -> None:
    """At 2 requests/s, three requests go out at t=0, 0.5, 1.0."""
    clock = FakeClock()
    limiter = RateLimiter(POLICY, monotonic=clock.monotonic, sleep=clock.sleep)
    sent = []
    for _ in range(3):
        async with limiter.slot():
            sent.append(clock.now)
    assert sent == pytest.approx([0.0, 0.5, 1.0])


async def test_gate_holds_every_request_until_the_wait_is_over() -> None:
    """After record_rate_limited(30), nothing is sent before t=30, and the rate halves."""
    clock = FakeClock()
    limiter = RateLimiter(POLICY, monotonic=clock.monotonic, sleep=clock.sleep)
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
    limiter = RateLimiter(POLICY, monotonic=clock.monotonic, sleep=clock.sleep)
    limiter.record_rate_limited(60.0)
    limiter.record_rate_limited(1.0)
    assert limiter.not_before == 60.0


async def test_concurrency_ceiling() -> None:
    """No more than max_concurrency requests are in flight at once."""
    clock = FakeClock()
    fast = RatePolicy(max_rate_per_s=1000.0, initial_rate_per_s=1000.0, max_concurrency=2)
    limiter = RateLimiter(fast, monotonic=clock.monotonic, sleep=clock.sleep)
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


async def test_success_raises_rate() -> None:
    """record_success feeds the additive increase."""
    limiter = RateLimiter(POLICY)
    for _ in range(3):
        limiter.record_success()
    assert limiter.rate_per_s == 2.5
