"""One request limiter per API key, shared by every request of both streams.

CoreClaw documents no quota, so syncd discovers one, the way TCP does:

* **start**: until the first rate-limit answer, the allowed rate doubles every
  `start_doubling_s` of sending, so a fresh daemon finds the limit in seconds.
  The first rate limit halves the rate (`blind_decrease_factor`): nothing
  measured yet says by how much the start overshot.
* **decrease**: every later rate limit drops the rate to `decrease_factor`
  times the rate upstream actually *accepted* since the previous one, not the
  nominal rate (halving a nominal 50/s does nothing when 8/s get through).
  Right after a rate limit upstream's budget is spent, so what it accepts
  from then to the next one is what it grants; that rate is remembered as
  the known limit.
* **increase**: additive per second of sending, not per N successes, so
  recovery takes as long at 2 requests/s as at 20: `increase_per_s` up to the
  known limit, then a slow probe above it (`probe_per_s`, speeding up the
  longer it holds).  A token bucket upstream hides an overshoot until its
  burst is spent: the slower the probe, the smaller that overshoot, and the
  rarer the 429s.  Nothing is gained while requests do not wait for the rate.

On top of that, a `not_before` gate: once upstream says "slow down", nothing
is sent to the API (either stream) until the wait is over.  Answers arriving
while the gate is closed belong to requests sent before it closed: they
extend the gate but do not cut the rate again.  Concurrency is capped
separately, and the rate never leaves [`min_rate_per_s`, `max_rate_per_s`].

The rate maths (`RateState`, `accepted_rate_per_s`, `next_send_at`) is pure
and tested with tables; `RateLimiter` is the thin async shell around it, with
time injected.  `RatePolicy.legacy()` is the limiter syncd shipped first
(halve on every 429, +0.25/s per 10 successes), kept for `bench/ratelimit.py`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]

# Fewer accepted requests than this in the window say nothing about upstream's limit.
MIN_MEASURED = 4
# While syncd waits out a rate limit, upstream's bucket refills, but only up to
# its burst; a second's worth is the usual size.  So at most this much of a
# wait counts in the accepted rate's window: a 3 s Retry-After would otherwise
# read as a limit a third too low.
GATE_CREDIT_S = 1.0


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """Limits, and how the allowed rate moves between them.  Rates in requests/s."""

    max_rate_per_s: float = 5.0
    min_rate_per_s: float = 0.1
    initial_rate_per_s: float = 2.0
    max_concurrency: int = 4
    start_doubling_s: float = 1.0  # until the first rate limit (0: no start phase)
    increase_per_s: float = 1.0  # requests/s gained per second, up to the known limit
    probe_per_s: float = 0.05  # ... above it, at first
    probe_speedup_s: float = 5.0  # the probe gains another probe_per_s this often (0: never)
    decrease_factor: float = 0.9  # share of the accepted rate to drop to
    blind_decrease_factor: float = 0.5  # share of the nominal rate, when nothing was measured
    window_s: float = 10.0  # the accepted rate looks back at most this far (0: never measure)
    success_streak: int = 0  # > 0: legacy law, +increase_per_s per this many successes
    cut_once_per_gate: bool = True  # answers arriving while the gate is closed: no new cut

    def __post_init__(self) -> None:
        if not 0 < self.min_rate_per_s <= self.initial_rate_per_s <= self.max_rate_per_s:
            raise ValueError("need 0 < min_rate_per_s <= initial_rate_per_s <= max_rate_per_s")
        if self.max_concurrency < 1 or self.success_streak < 0:
            raise ValueError("max_concurrency must be >= 1 and success_streak >= 0")
        if not (0 < self.decrease_factor < 1 and 0 < self.blind_decrease_factor < 1):
            raise ValueError("decrease factors must be between 0 and 1")
        steps = (self.start_doubling_s, self.increase_per_s, self.probe_per_s)
        if min(*steps, self.probe_speedup_s, self.window_s) < 0:
            raise ValueError("increases, doubling/speed-up times and window_s must be >= 0")

    @classmethod
    def legacy(
        cls,
        *,
        max_rate_per_s: float = 5.0,
        min_rate_per_s: float = 0.1,
        initial_rate_per_s: float = 2.0,
        max_concurrency: int = 4,
    ) -> RatePolicy:
        """The first limiter: halve the nominal rate on every 429, +0.25/s per 10 successes."""
        return cls(
            max_rate_per_s=max_rate_per_s,
            min_rate_per_s=min_rate_per_s,
            initial_rate_per_s=initial_rate_per_s,
            max_concurrency=max_concurrency,
            start_doubling_s=0.0,
            increase_per_s=0.25,
            probe_per_s=0.25,
            probe_speedup_s=0.0,
            decrease_factor=0.5,
            blind_decrease_factor=0.5,
            window_s=0.0,
            success_streak=10,
            cut_once_per_gate=False,
        )


@dataclass(frozen=True, slots=True)
class RateState:
    """The allowed rate and the last known limit (None: no rate limit seen yet).

    `probe_s` is the sending time spent at or above the known limit since the
    last cut (the probe speeds up with it); `streak` serves the legacy law.
    """

    rate_per_s: float
    limit_per_s: float | None = None
    probe_s: float = 0.0
    streak: int = 0

    @classmethod
    def initial(cls, policy: RatePolicy) -> RateState:
        return cls(rate_per_s=policy.initial_rate_per_s)

    def gain_per_s(self, policy: RatePolicy) -> float:
        """How fast the rate grows now, in requests/s per second of sending."""
        if self.limit_per_s is None:
            if policy.start_doubling_s > 0:
                return self.rate_per_s * math.log(2) / policy.start_doubling_s
            return policy.increase_per_s
        if self.rate_per_s < self.limit_per_s:
            return policy.increase_per_s
        if policy.probe_speedup_s <= 0:
            return policy.probe_per_s
        return policy.probe_per_s * (1.0 + self.probe_s / policy.probe_speedup_s)

    def after_success(self, policy: RatePolicy, sending_s: float) -> RateState:
        """Additive increase for `sending_s` seconds of sending at the allowed rate.

        Those seconds count for at most one request interval (`1 / rate`), so
        an idle spell earns nothing, and one success never more than doubles
        the rate.  (The legacy law ignores them and counts successes.)
        """
        if policy.success_streak:
            return self._after_success_legacy(policy)
        credit_s = min(max(sending_s, 0.0), 1.0 / self.rate_per_s)
        step = min(self.gain_per_s(policy) * credit_s, self.rate_per_s)
        probing = self.limit_per_s is not None and self.rate_per_s >= self.limit_per_s
        return replace(
            self,
            rate_per_s=min(policy.max_rate_per_s, self.rate_per_s + step),
            probe_s=self.probe_s + credit_s if probing else self.probe_s,
        )

    def _after_success_legacy(self, policy: RatePolicy) -> RateState:
        streak = self.streak + 1
        if streak < policy.success_streak:
            return replace(self, streak=streak)
        rate = min(policy.max_rate_per_s, self.rate_per_s + policy.increase_per_s)
        return replace(self, rate_per_s=rate, streak=0)

    def after_rate_limited(self, policy: RatePolicy, accepted_per_s: float | None) -> RateState:
        """Multiplicative decrease below what upstream accepted, never below the floor.

        `accepted_per_s` is upstream's accepted rate since the previous rate
        limit (None: unknown, so the nominal rate is cut blind).  The rate the
        cut starts from becomes the known limit.
        """
        if accepted_per_s is None:
            basis, factor = self.rate_per_s, policy.blind_decrease_factor
        else:
            basis, factor = min(self.rate_per_s, accepted_per_s), policy.decrease_factor
        rate = max(policy.min_rate_per_s, basis * factor)
        return RateState(rate_per_s=rate, limit_per_s=basis)


def accepted_rate_per_s(
    success_times: Iterable[float], *, since: float, now: float
) -> float | None:
    """Successes per second in `(since, now]`, or None when too few to mean anything."""
    span_s = now - since
    count = sum(1 for t in success_times if since < t <= now)
    if count < MIN_MEASURED or span_s <= 0:
        return None
    return count / span_s


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
        self._paced = False  # the last request waited for the rate, not just the gate
        self._successes: deque[float] = deque()  # times, at most window_s back
        self._last_success_at: float | None = None
        self._last_cut_at: float | None = None
        self._measure_from: float | None = None  # start of the accepted rate's window

    @property
    def rate_per_s(self) -> float:
        return self._state.rate_per_s

    @property
    def limit_per_s(self) -> float | None:
        """The rate the last cut started from (None before the first rate limit)."""
        return self._state.limit_per_s

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
        paced = False
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
                self._paced = paced
                return
            paced = paced or send_at > self._not_before
            await self._sleep(send_at - now)

    def record_success(self) -> None:
        """An accepted request: remember when, and raise the rate if requests wait for it."""
        now = self._monotonic()
        sending_s = 0.0
        if self._paced and self._last_success_at is not None:
            sending_s = now - self._last_success_at
        self._last_success_at = now
        if self.policy.window_s > 0:
            self._successes.append(now)
            while self._successes[0] <= now - self.policy.window_s:
                self._successes.popleft()
        self._state = self._state.after_success(self.policy, sending_s)

    def record_rate_limited(self, wait_s: float) -> float:
        """Slow down and close the gate for `wait_s`; returns the monotonic reopening time."""
        now = self._monotonic()
        if not (self.policy.cut_once_per_gate and now < self._not_before):
            self._state = self._state.after_rate_limited(self.policy, self._accepted_per_s(now))
            self._last_cut_at = now
        self._not_before = max(self._not_before, now + wait_s)
        if self._last_cut_at is not None:
            self._measure_from = max(self._last_cut_at, self._not_before - GATE_CREDIT_S)
        return self._not_before

    def _accepted_per_s(self, now: float) -> float | None:
        if self.policy.window_s <= 0 or self._measure_from is None:
            return None
        since = max(self._measure_from, now - self.policy.window_s)
        return accepted_rate_per_s(self._successes, since=since, now=now)
