"""One request limiter per API key, shared by every request of both streams.

CoreClaw documents no quota, so syncd discovers one: AIMD, as TCP does.  The
allowed rate grows by a small step after a streak of successes and is cut by
a factor on every rate-limit answer.  On top of that, a `not_before` gate:
once upstream says "slow down", nothing is sent to the API (either stream)
until the wait is over.  Concurrency is capped separately.

The rate maths (`RateState`, `next_send_at`) is pure and tested with tables;
`RateLimiter` is the thin async shell around it, with time injected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """Limits and AIMD steps.  Defaults are gentle: two streams polling every minute."""

    max_rate_per_s: float = 5.0
    min_rate_per_s: float = 0.1
    initial_rate_per_s: float = 2.0
    max_concurrency: int = 4
    increase_per_s: float = 0.25  # additive step
    success_streak: int = 10  # successes in a row before one step up
    decrease_factor: float = 0.5  # multiplicative cut on every rate-limit answer

    def __post_init__(self) -> None:
        if not 0 < self.min_rate_per_s <= self.initial_rate_per_s <= self.max_rate_per_s:
            raise ValueError("need 0 < min_rate_per_s <= initial_rate_per_s <= max_rate_per_s")
        if self.max_concurrency < 1 or self.success_streak < 1:
            raise ValueError("max_concurrency and success_streak must be >= 1")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class RateState:
    """The currently allowed rate and the success streak towards the next increase."""

    rate_per_s: float
    streak: int = 0

    @classmethod
    def initial(cls, policy: RatePolicy) -> RateState:
        return cls(rate_per_s=policy.initial_rate_per_s)

    def after_success(self, policy: RatePolicy) -> RateState:
        """Additive increase, once per `success_streak` successes, up to the ceiling."""
        streak = self.streak + 1
        if streak < policy.success_streak:
            return replace(self, streak=streak)
        rate = min(policy.max_rate_per_s, self.rate_per_s + policy.increase_per_s)
        return RateState(rate_per_s=rate, streak=0)

    def after_rate_limited(self, policy: RatePolicy) -> RateState:
        """Multiplicative decrease, never below the floor; the streak starts over."""
        rate = max(policy.min_rate_per_s, self.rate_per_s * policy.decrease_factor)
        return RateState(rate_per_s=rate, streak=0)


def next_send_at(
    *, now: float, last_sent_at: float | None, rate_per_s: float, not_before: float
) -> float:
    """The earliest time the next request may go out.

    Requests are spaced `1 / rate` apart, and none goes before `not_before`.
    """
    earliest = max(now, not_before)
    if last_sent_at is None:
        return earliest
    return max(earliest, last_sent_at + 1.0 / rate_per_s)


class RateLimiter:
    """The async gate every CoreClaw request passes through.

    Build one per API key and hand it to every client using that key (the
    client builds its own when given none).  The same instance must serve
    both streams, or each would be rate limited without the other knowing.
    """

    def __init__(
        self,
        policy: RatePolicy | None = None,
        *,
        monotonic: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.policy = policy or RatePolicy()
        self._state = RateState.initial(self.policy)
        self._monotonic = monotonic
        self._sleep = sleep
        self._slots = asyncio.Semaphore(self.policy.max_concurrency)
        self._last_sent_at: float | None = None
        self._not_before = float("-inf")

    @property
    def rate_per_s(self) -> float:
        return self._state.rate_per_s

    @property
    def not_before(self) -> float:
        """Monotonic time before which no request may be sent."""
        return self._not_before

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one concurrency slot, entered only when the rate and the gate allow."""
        async with self._slots:
            await self._wait_turn()
            yield

    async def _wait_turn(self) -> None:
        # Re-check after every sleep: a 429 seen by another request while we
        # slept may have pushed `not_before` (or another waiter took the slot).
        while True:
            now = self._monotonic()
            send_at = next_send_at(
                now=now,
                last_sent_at=self._last_sent_at,
                rate_per_s=self._state.rate_per_s,
                not_before=self._not_before,
            )
            if send_at <= now:
                self._last_sent_at = now
                return
            await self._sleep(send_at - now)

    def record_success(self) -> None:
        self._state = self._state.after_success(self.policy)

    def record_rate_limited(self, wait_s: float) -> float:
        """Slow down and close the gate for `wait_s`; returns the monotonic reopening time."""
        self._state = self._state.after_rate_limited(self.policy)
        self._not_before = max(self._not_before, self._monotonic() + wait_s)
        return self._not_before
